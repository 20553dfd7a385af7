//! The subset of JSON Schema that `is-json` supports, with ajv's error
//! wording (`data/age must be integer`) so reasons read like promptfoo's.

use serde_json::{Map, Value};

use crate::js;

/// Keywords that carry no validation meaning.
const ANNOTATIONS: [&str; 10] = [
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Rejects schemas that use keywords we do not validate, so a schema is
/// never silently half-checked. Returns the JSON pointer of the offender.
pub(crate) fn check(schema: &Value) -> Result<(), String> {
    check_at(schema, "#")
}

fn check_at(schema: &Value, at: &str) -> Result<(), String> {
    let map = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(map) => map,
        other => {
            return Err(format!(
                "{at}: a schema must be an object or a boolean, not {other}"
            ));
        }
    };
    for (key, value) in map {
        let here = format!("{at}/{key}");
        match key.as_str() {
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(items) => items.iter().collect(),
                    other => vec![other],
                };
                for name in names {
                    match name.as_str() {
                        Some(
                            "null" | "boolean" | "object" | "array" | "number" | "integer"
                            | "string",
                        ) => {}
                        _ => return Err(format!("{here}: unknown type {name}")),
                    }
                }
            }
            "required" => {
                if !value
                    .as_array()
                    .is_some_and(|items| items.iter().all(Value::is_string))
                {
                    return Err(format!("{here}: must be a list of property names"));
                }
            }
            "properties" => {
                let Some(props) = value.as_object() else {
                    return Err(format!("{here}: must be an object"));
                };
                for (name, sub) in props {
                    check_at(sub, &format!("{here}/{name}"))?;
                }
            }
            "additionalProperties" | "items" => check_at(value, &here)?,
            "enum" => {
                if !value.is_array() {
                    return Err(format!("{here}: must be a list"));
                }
            }
            "const" => {}
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                if !value.is_number() {
                    return Err(format!("{here}: must be a number"));
                }
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                if value.as_u64().is_none() {
                    return Err(format!("{here}: must be a non-negative integer"));
                }
            }
            k if ANNOTATIONS.contains(&k) => {}
            other => {
                return Err(format!(
                    "{here}: JSON Schema keyword `{other}` is not supported (supported: type, required, properties, additionalProperties, items, enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength, minItems, maxItems)"
                ));
            }
        }
    }
    Ok(())
}

/// Validates `data`; on failure returns ajv's `errorsText` for the first error.
pub(crate) fn validate(schema: &Value, data: &Value) -> Result<(), String> {
    validate_at(schema, data, "").map_err(|(path, message)| format!("data{path} {message}"))
}

type Failure = (String, String);

fn validate_at(schema: &Value, data: &Value, path: &str) -> Result<(), Failure> {
    let map = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err((path.to_owned(), "boolean schema is false".to_owned())),
        Value::Object(map) => map,
        _ => return Ok(()),
    };
    let fail = |message: String| Err((path.to_owned(), message));
    if let Some(types) = map.get("type") {
        let names: Vec<&str> = match types {
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        };
        if !names.iter().any(|name| has_type(data, name)) {
            return fail(format!("must be {}", names.join(",")));
        }
    }
    if let Some(Value::Array(allowed)) = map.get("enum")
        && !allowed.iter().any(|v| js::json_equal(v, data))
    {
        return fail("must be equal to one of the allowed values".to_owned());
    }
    if let Some(constant) = map.get("const")
        && !js::json_equal(constant, data)
    {
        return fail("must be equal to constant".to_owned());
    }
    if let Some(x) = data.as_f64() {
        for (keyword, op, ok) in [
            (
                "maximum",
                "<=",
                (|x: f64, l: f64| x <= l) as fn(f64, f64) -> bool,
            ),
            ("minimum", ">=", |x, l| x >= l),
            ("exclusiveMaximum", "<", |x, l| x < l),
            ("exclusiveMinimum", ">", |x, l| x > l),
        ] {
            if let Some(limit) = map.get(keyword).and_then(Value::as_f64)
                && !ok(x, limit)
            {
                return fail(format!("must be {op} {}", js::number_to_string(limit)));
            }
        }
    }
    if let Value::String(s) = data {
        let len = s.chars().count() as u64;
        if let Some(max) = map.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            return fail(format!("must NOT have more than {max} characters"));
        }
        if let Some(min) = map.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            return fail(format!("must NOT have fewer than {min} characters"));
        }
    }
    if let Value::Array(items) = data {
        let len = items.len() as u64;
        if let Some(max) = map.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            return fail(format!("must NOT have more than {max} items"));
        }
        if let Some(min) = map.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            return fail(format!("must NOT have fewer than {min} items"));
        }
        if let Some(item_schema) = map.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate_at(item_schema, item, &format!("{path}/{i}"))?;
            }
        }
    }
    if let Value::Object(object) = data {
        validate_object(map, object, path)?;
    }
    Ok(())
}

fn validate_object(
    schema: &Map<String, Value>,
    object: &Map<String, Value>,
    path: &str,
) -> Result<(), Failure> {
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                return Err((
                    path.to_owned(),
                    format!("must have required property '{name}'"),
                ));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(props) = props {
        for (name, sub) in props {
            if let Some(value) = object.get(name) {
                validate_at(sub, value, &format!("{path}/{}", pointer_escape(name)))?;
            }
        }
    }
    if let Some(additional) = schema.get("additionalProperties") {
        for (name, value) in object {
            if props.is_some_and(|p| p.contains_key(name)) {
                continue;
            }
            match additional {
                Value::Bool(false) => {
                    return Err((
                        path.to_owned(),
                        "must NOT have additional properties".to_owned(),
                    ));
                }
                sub => validate_at(sub, value, &format!("{path}/{}", pointer_escape(name)))?,
            }
        }
    }
    Ok(())
}

fn has_type(data: &Value, name: &str) -> bool {
    match name {
        "null" => data.is_null(),
        "boolean" => data.is_boolean(),
        "object" => data.is_object(),
        "array" => data.is_array(),
        "number" => data.is_number(),
        "integer" => data.as_f64().is_some_and(|x| x.fract() == 0.0),
        "string" => data.is_string(),
        _ => false,
    }
}

fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn person() -> Value {
        json!({
            "type": "object",
            "required": ["name", "age"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "age": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}
            },
            "additionalProperties": false
        })
    }

    #[test]
    fn valid_document_passes() {
        assert_eq!(
            validate(
                &person(),
                &json!({"name": "Ada", "age": 36.0, "tags": ["a"]})
            ),
            Ok(())
        );
    }

    #[test]
    fn errors_use_ajv_wording_and_paths() {
        let schema = person();
        assert_eq!(
            validate(&schema, &json!({"name": "Ada"})).unwrap_err(),
            "data must have required property 'age'"
        );
        assert_eq!(
            validate(&schema, &json!({"name": "Ada", "age": 1.5})).unwrap_err(),
            "data/age must be integer"
        );
        assert_eq!(
            validate(&schema, &json!({"name": "", "age": 1})).unwrap_err(),
            "data/name must NOT have fewer than 1 characters"
        );
        assert_eq!(
            validate(&schema, &json!({"name": "A", "age": -1})).unwrap_err(),
            "data/age must be >= 0"
        );
        assert_eq!(
            validate(&schema, &json!({"name": "A", "age": 1, "tags": ["c"]})).unwrap_err(),
            "data/tags/0 must be equal to one of the allowed values"
        );
        assert_eq!(
            validate(&schema, &json!({"name": "A", "age": 1, "x": 1})).unwrap_err(),
            "data must NOT have additional properties"
        );
        assert_eq!(
            validate(&schema, &json!([])).unwrap_err(),
            "data must be object"
        );
        assert_eq!(
            validate(&json!({"type": ["string", "null"]}), &json!(1)).unwrap_err(),
            "data must be string,null"
        );
    }

    #[test]
    fn unsupported_keywords_are_rejected_with_their_location() {
        let err = check(&json!({"properties": {"a": {"pattern": "x"}}})).unwrap_err();
        assert!(
            err.starts_with("#/properties/a/pattern: JSON Schema keyword `pattern`"),
            "{err}"
        );
        assert!(check(&json!({"$schema": "x", "title": "t", "type": "object"})).is_ok());
        assert!(check(&json!({"type": "float"})).is_err());
    }

    #[test]
    fn boolean_schemas() {
        assert_eq!(validate(&json!(true), &json!(1)), Ok(()));
        assert!(validate(&json!(false), &json!(1)).is_err());
    }
}
