//! `is-valid-openai-tools-call` and `is-valid-openai-function-call`: the
//! output (OpenAI's `tool_calls` or `function_call`, as JSON text) must call
//! declared functions with arguments that match their parameter schemas.
//! promptfoo reads the declarations from the provider's `tools`/`functions`
//! config; graders here see no provider, so the assertion's value carries
//! them: `{tools: [...]}` / `{functions: [...]}` or the bare list.

use serde_json::{Map, Value};

use super::schema;

/// The function declarations in an assertion value: `(name, parameters)`.
pub(crate) fn declarations(
    value: Option<&Value>,
    tools: bool,
) -> Result<Vec<(String, Option<Value>)>, String> {
    let key = if tools { "tools" } else { "functions" };
    let list = match value {
        Some(Value::Array(items)) => items,
        Some(Value::Object(map)) => match map.get(key) {
            Some(Value::Array(items)) => items,
            _ => return Err(format!("the value needs a `{key}` list")),
        },
        _ => {
            return Err(format!(
                "needs the provider's `{key}` as its value (a list, or `{{{key}: [...]}}`)"
            ));
        }
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let function = if tools {
            // promptfoo keeps only `{type: function, function: {...}}` tools.
            if item.get("type").and_then(Value::as_str) != Some("function") {
                continue;
            }
            match item.get("function") {
                Some(f @ Value::Object(_)) => f,
                _ => continue,
            }
        } else {
            item
        };
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{key}[{i}] has no `name`"))?;
        let parameters = function.get("parameters").cloned();
        if let Some(p) = &parameters {
            schema::check(p).map_err(|err| {
                format!("{key}[{i}] `{name}`: unsupported parameters schema: {err}")
            })?;
        }
        out.push((name.to_owned(), parameters));
    }
    Ok(out)
}

fn validate_call(
    call: &Map<String, Value>,
    declared: &[(String, Option<Value>)],
) -> Result<(), String> {
    let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
    let arguments = call
        .get("arguments")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let args: Value = serde_json::from_str(arguments)
        .map_err(|err| format!("Call to \"{name}\" has arguments that are not JSON: {err}"))?;
    let Some(schema) = declared
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, p)| p.as_ref())
    else {
        return Err(format!(
            "Called \"{name}\", but there is no function with that name"
        ));
    };
    schema::validate(schema, &args)
        .map_err(|errors| format!("Call to \"{name}\" does not match schema: {errors}"))
}

fn looks_like_call(v: &Value) -> Option<&Map<String, Value>> {
    let map = v.as_object()?;
    (map.get("name").is_some_and(Value::is_string)
        && map.get("arguments").is_some_and(Value::is_string))
    .then_some(map)
}

/// `Ok(())` or promptfoo's reason the tool calls are not valid.
pub(crate) fn check_tools_call(
    text: &str,
    declared: &[(String, Option<Value>)],
) -> Result<(), String> {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let calls = match parsed {
        Some(Value::Object(mut map)) if map.contains_key("tool_calls") => {
            map.remove("tool_calls").unwrap_or(Value::Null)
        }
        Some(other) => other,
        None => Value::String(text.to_owned()),
    };
    let functions: Option<Vec<&Map<String, Value>>> = calls.as_array().and_then(|items| {
        (!items.is_empty())
            .then(|| {
                items
                    .iter()
                    .map(|c| c.get("function").and_then(looks_like_call))
                    .collect()
            })
            .flatten()
    });
    let Some(functions) = functions else {
        return Err(format!(
            "OpenAI did not return a valid-looking tools response: {}",
            serde_json::to_string(&calls).unwrap_or_default()
        ));
    };
    functions
        .into_iter()
        .try_for_each(|call| validate_call(call, declared))
}

/// `Ok(())` or promptfoo's reason the function call is not valid.
pub(crate) fn check_function_call(
    text: &str,
    declared: &[(String, Option<Value>)],
) -> Result<(), String> {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let call = match parsed {
        Some(Value::Object(mut map)) if map.contains_key("function_call") => {
            map.remove("function_call").unwrap_or(Value::Null)
        }
        Some(other) => other,
        None => Value::String(text.to_owned()),
    };
    let Some(call_map) = looks_like_call(&call) else {
        return Err(format!(
            "OpenAI did not return a valid-looking function call: {}",
            serde_json::to_string(&call).unwrap_or_default()
        ));
    };
    validate_call(call_map, declared)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn weather_tools() -> Vec<(String, Option<Value>)> {
        declarations(
            Some(&json!({"tools": [{"type": "function", "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
            }}]})),
            true,
        )
        .unwrap()
    }

    #[test]
    fn tools_calls_are_checked_against_declarations() {
        let tools = weather_tools();
        let ok = r#"[{"id":"1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]"#;
        assert!(check_tools_call(ok, &tools).is_ok());
        let wrapped = format!(r#"{{"tool_calls": {ok}}}"#);
        assert!(check_tools_call(&wrapped, &tools).is_ok());
        let bad_args =
            r#"[{"function":{"name":"get_weather","arguments":"{\"town\":\"Paris\"}"}}]"#;
        assert!(
            check_tools_call(bad_args, &tools)
                .unwrap_err()
                .starts_with("Call to \"get_weather\" does not match schema:")
        );
        let unknown = r#"[{"function":{"name":"nope","arguments":"{}"}}]"#;
        assert_eq!(
            check_tools_call(unknown, &tools).unwrap_err(),
            "Called \"nope\", but there is no function with that name"
        );
        assert!(
            check_tools_call("It is sunny", &tools)
                .unwrap_err()
                .starts_with("OpenAI did not return a valid-looking tools response")
        );
        assert!(check_tools_call("[]", &tools).is_err());
    }

    #[test]
    fn function_calls_are_checked_against_declarations() {
        let functions = declarations(
            Some(&json!([{"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}])),
            false,
        )
        .unwrap();
        assert!(
            check_function_call(r#"{"name":"add","arguments":"{\"a\":1}"}"#, &functions).is_ok()
        );
        assert!(
            check_function_call(
                r#"{"function_call":{"name":"add","arguments":"{\"a\":\"x\"}"}}"#,
                &functions
            )
            .is_err()
        );
        assert!(check_function_call("add(1)", &functions).is_err());
        assert!(declarations(Some(&json!("x")), false).is_err());
    }
}
