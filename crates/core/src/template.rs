//! Nunjucks-compatible prompt rendering on minijinja, matching what promptfoo
//! sends to the model: no auto-escaping, trailing newlines kept, JavaScript
//! value printing, JSON prompts rendered leaf by leaf and re-serialized, and
//! promptfoo's `load` filter. Undefined variables are errors.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value as MValue,
    value::ValueKind,
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    error::{SuiteError, TemplateError},
    js,
    suite::Suite,
};

/// Template globals that are not test vars.
const GLOBALS: [&str; 5] = ["env", "range", "dict", "debug", "namespace"];

/// Every prompt of a suite, compiled once, ready to render with a test's vars.
pub struct PromptRenderer {
    env: Environment<'static>,
    prompts: Vec<Compiled>,
}

enum Compiled {
    Text(Piece),
    /// promptfoo renders a prompt that is valid JSON string by string and
    /// prints the result with `JSON.stringify(_, null, 2)`.
    Json(JsonNode),
}

enum Piece {
    Literal(String),
    Template(String),
}

enum JsonNode {
    /// An already serialized scalar (`null`, `true`, `1.5`).
    Scalar(String),
    Str(Piece),
    Array(Vec<JsonNode>),
    Object(Vec<(String, JsonNode)>),
}

impl PromptRenderer {
    pub fn new(suite: &Suite) -> Result<Self, SuiteError> {
        let mut env = environment(&suite.env);
        let mut prompts = Vec::with_capacity(suite.prompts.len());
        for (k, prompt) in suite.prompts.iter().enumerate() {
            let path = format!("prompts[{k}]");
            let mut counter = 0usize;
            let compiled = match serde_json::from_str::<serde_yaml_ng::Value>(&prompt.raw) {
                Ok(tree) => Compiled::Json(compile_json(&mut env, &path, &tree, &mut counter)?),
                Err(_) => Compiled::Text(compile_piece(&mut env, &path, &prompt.raw)?),
            };
            prompts.push(compiled);
        }
        Ok(Self { env, prompts })
    }

    pub fn prompt_count(&self) -> usize {
        self.prompts.len()
    }

    /// Renders prompt `prompt_index` with one test's vars, exactly as promptfoo
    /// would: string vars lose one trailing newline and vars that are
    /// themselves templates are rendered first.
    pub fn render(
        &self,
        prompt_index: usize,
        vars: &BTreeMap<String, Value>,
    ) -> Result<String, TemplateError> {
        let compiled = self
            .prompts
            .get(prompt_index)
            .ok_or_else(|| TemplateError {
                prompt: prompt_index,
                message: format!("the suite has only {} prompts", self.prompts.len()),
            })?;
        let ctx = context(&self.env, vars);
        let result = match compiled {
            Compiled::Text(piece) => self.render_piece(piece, &ctx),
            Compiled::Json(node) => {
                let mut out = String::new();
                self.render_json(node, &ctx, 0, &mut out).map(|()| out)
            }
        };
        result.map_err(|err| TemplateError {
            prompt: prompt_index,
            message: self.explain(prompt_index, vars, &err),
        })
    }

    /// Names a prompt reads from its context, globals excluded.
    pub(crate) fn variables(&self, prompt_index: usize) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut add = |piece: &Piece| {
            if let Piece::Template(name) = piece
                && let Ok(template) = self.env.get_template(name)
            {
                names.extend(
                    template
                        .undeclared_variables(false)
                        .into_iter()
                        .filter(|v| !GLOBALS.contains(&v.as_str())),
                );
            }
        };
        match self.prompts.get(prompt_index) {
            Some(Compiled::Text(piece)) => add(piece),
            Some(Compiled::Json(node)) => visit_pieces(node, &mut add),
            None => {}
        }
        names
    }

    pub(crate) fn env(&self) -> &Environment<'static> {
        &self.env
    }

    fn render_piece(&self, piece: &Piece, ctx: &MValue) -> Result<String, Error> {
        match piece {
            Piece::Literal(text) => Ok(text.clone()),
            Piece::Template(name) => self.env.get_template(name)?.render(ctx),
        }
    }

    fn render_json(
        &self,
        node: &JsonNode,
        ctx: &MValue,
        indent: usize,
        out: &mut String,
    ) -> Result<(), Error> {
        match node {
            JsonNode::Scalar(text) => out.push_str(text),
            JsonNode::Str(piece) => {
                let text = self.render_piece(piece, ctx)?;
                out.push_str(&serde_json::to_string(&text).unwrap_or_default());
            }
            JsonNode::Array(items) if items.is_empty() => out.push_str("[]"),
            JsonNode::Object(fields) if fields.is_empty() => out.push_str("{}"),
            JsonNode::Array(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n");
                    }
                    push_indent(out, indent + 2);
                    self.render_json(item, ctx, indent + 2, out)?;
                }
                out.push('\n');
                push_indent(out, indent);
                out.push(']');
            }
            JsonNode::Object(fields) => {
                out.push_str("{\n");
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n");
                    }
                    push_indent(out, indent + 2);
                    out.push_str(&serde_json::to_string(key).unwrap_or_default());
                    out.push_str(": ");
                    self.render_json(value, ctx, indent + 2, out)?;
                }
                out.push('\n');
                push_indent(out, indent);
                out.push('}');
            }
        }
        Ok(())
    }

    /// minijinja does not name the undefined variable; we can.
    fn explain(&self, prompt_index: usize, vars: &BTreeMap<String, Value>, err: &Error) -> String {
        if err.kind() == ErrorKind::UndefinedError {
            let missing: Vec<String> = self
                .variables(prompt_index)
                .into_iter()
                .filter(|name| !vars.contains_key(name))
                .map(|name| format!("`{name}`"))
                .collect();
            if !missing.is_empty() {
                return format!(
                    "undefined variable {} (the test does not define it)",
                    missing.join(", ")
                );
            }
        }
        describe(err)
    }
}

fn push_indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn visit_pieces<'a>(node: &'a JsonNode, f: &mut impl FnMut(&'a Piece)) {
    match node {
        JsonNode::Scalar(_) => {}
        JsonNode::Str(piece) => f(piece),
        JsonNode::Array(items) => items.iter().for_each(|item| visit_pieces(item, f)),
        JsonNode::Object(fields) => fields.iter().for_each(|(_, v)| visit_pieces(v, f)),
    }
}

fn compile_piece(
    env: &mut Environment<'static>,
    name: &str,
    source: &str,
) -> Result<Piece, SuiteError> {
    if !has_template_syntax(source) {
        return Ok(Piece::Literal(source.to_owned()));
    }
    let prompt_path = name.split('#').next().unwrap_or(name).to_owned();
    env.add_template_owned(name.to_owned(), source.to_owned())
        .map_err(|err| {
            SuiteError::at(prompt_path, format!("invalid template: {}", describe(&err)))
        })?;
    Ok(Piece::Template(name.to_owned()))
}

fn compile_json(
    env: &mut Environment<'static>,
    path: &str,
    tree: &serde_yaml_ng::Value,
    counter: &mut usize,
) -> Result<JsonNode, SuiteError> {
    use serde_yaml_ng::Value as Y;
    Ok(match tree {
        Y::Null => JsonNode::Scalar("null".to_owned()),
        Y::Bool(b) => JsonNode::Scalar(b.to_string()),
        Y::Number(n) => JsonNode::Scalar(if let Some(i) = n.as_i64() {
            i.to_string()
        } else if let Some(u) = n.as_u64() {
            u.to_string()
        } else {
            js::number_to_string(n.as_f64().unwrap_or(f64::NAN))
        }),
        Y::String(s) => {
            *counter += 1;
            JsonNode::Str(compile_piece(env, &format!("{path}#{counter}"), s)?)
        }
        Y::Sequence(items) => JsonNode::Array(
            items
                .iter()
                .map(|item| compile_json(env, path, item, counter))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => JsonNode::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = k.as_str().unwrap_or_default().to_owned();
                    Ok((key, compile_json(env, path, v, counter)?))
                })
                .collect::<Result<_, SuiteError>>()?,
        ),
        Y::Tagged(tagged) => compile_json(env, path, &tagged.value, counter)?,
    })
}

pub(crate) fn has_template_syntax(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{#")
}

/// One line about a minijinja error, without its template name (callers
/// already say which prompt or field it is).
pub(crate) fn describe(err: &Error) -> String {
    let mut msg = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    if let Some(line) = err.line() {
        let _ = write!(msg, " (line {line})");
    }
    if let Some(source) = std::error::Error::source(err) {
        let _ = write!(msg, ": {source}");
    }
    msg
}

/// The environment promptfoo's Nunjucks setup corresponds to.
pub(crate) fn environment(env_vars: &BTreeMap<String, String>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_debug(false);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(format_js);
    env.add_filter("load", load);
    env.add_filter("dump", dump);
    env.add_filter("wordcount", wordcount);
    env.add_filter("truncate", truncate);
    env.add_global("env", MValue::from_serialize(env_vars));
    env
}

/// The render context for one test, with promptfoo's var preprocessing.
pub(crate) fn context(env: &Environment<'_>, vars: &BTreeMap<String, Value>) -> MValue {
    let mut templated = false;
    let mut entries: Vec<(&str, MValue)> = vars
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::String(s) => {
                    let s = s.strip_suffix('\n').unwrap_or(s);
                    templated |= has_template_syntax(s);
                    MValue::from(s)
                }
                other => MValue::from_serialize(other),
            };
            (name.as_str(), value)
        })
        .collect();
    if templated {
        // A var may itself be a template over the other vars; promptfoo renders
        // it first and keeps it verbatim when that fails.
        let base = MValue::from_iter(entries.iter().map(|(k, v)| (*k, v.clone())));
        for (_, value) in &mut entries {
            if let Some(s) = value.as_str()
                && has_template_syntax(s)
                && let Ok(rendered) = env.render_str(s, &base)
            {
                *value = MValue::from(rendered);
            }
        }
    }
    MValue::from_iter(entries)
}

/// Undeclared names of a standalone template (an assertion value), globals excluded.
pub(crate) fn template_variables(
    env: &Environment<'_>,
    source: &str,
) -> Result<BTreeSet<String>, Error> {
    let template = env.template_from_str(source)?;
    Ok(template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !GLOBALS.contains(&v.as_str()))
        .collect())
}

pub(crate) fn render_str(
    env: &Environment<'_>,
    source: &str,
    ctx: &MValue,
) -> Result<String, Error> {
    env.render_str(source, ctx)
}

/// Prints values the way Nunjucks (JavaScript) does: `null` as nothing,
/// `1.0` as `1`, arrays comma-joined, objects as `[object Object]`.
fn format_js(out: &mut Output, _state: &State, value: &MValue) -> Result<(), Error> {
    out.write_str(&js_string(value))
        .map_err(|_| Error::new(ErrorKind::WriteFailure, "could not write output"))
}

fn js_string(value: &MValue) -> String {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => String::new(),
        ValueKind::Bool => if value.is_true() { "true" } else { "false" }.to_owned(),
        ValueKind::Number if !value.is_integer() => {
            js::number_to_string(f64::try_from(value.clone()).unwrap_or(f64::NAN))
        }
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        ValueKind::Seq => match value.try_iter() {
            Ok(items) => items
                .map(|item| js_string(&item))
                .collect::<Vec<_>>()
                .join(","),
            Err(_) => value.to_string(),
        },
        ValueKind::Map => "[object Object]".to_owned(),
        _ => value.to_string(),
    }
}

/// promptfoo's `load` filter: `JSON.parse`.
fn load(value: MValue) -> Result<MValue, Error> {
    match value.as_str() {
        Some(text) => serde_json::from_str::<Value>(text)
            .map(|json| MValue::from_serialize(&json))
            .map_err(|err| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("load: the value is not valid JSON ({err})"),
                )
            }),
        None if value.kind() == ValueKind::Number || value.kind() == ValueKind::Bool => Ok(value),
        None => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("load: expected a JSON string, got {}", value.kind()),
        )),
    }
}

/// Nunjucks' `dump`: `JSON.stringify(value, null, indent)`.
fn dump(value: MValue, indent: Option<MValue>) -> Result<String, Error> {
    let json = js::normalize_numbers(
        serde_json::to_value(&value)
            .map_err(|err| Error::new(ErrorKind::InvalidOperation, format!("dump: {err}")))?,
    );
    let indent: Option<Vec<u8>> = indent.and_then(|indent| {
        if let Some(s) = indent.as_str() {
            Some(s.chars().take(10).collect::<String>().into_bytes())
        } else {
            let n = indent.as_usize().unwrap_or(0).min(10);
            (n > 0).then(|| vec![b' '; n])
        }
    });
    let Some(indent) = indent.filter(|i| !i.is_empty()) else {
        return Ok(json.to_string());
    };
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(&indent);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    json.serialize(&mut ser)
        .map_err(|err| Error::new(ErrorKind::InvalidOperation, format!("dump: {err}")))?;
    Ok(String::from_utf8(buf).unwrap_or_default())
}

/// Nunjucks' `wordcount`: runs of `\w`.
fn wordcount(text: String) -> usize {
    let mut count = 0;
    let mut in_word = false;
    for c in text.chars() {
        let word = c.is_ascii_alphanumeric() || c == '_';
        if word && !in_word {
            count += 1;
        }
        in_word = word;
    }
    count
}

/// Nunjucks' `truncate(length=255, killwords=false, end="...")`.
fn truncate(
    text: String,
    length: Option<usize>,
    killwords: Option<bool>,
    end: Option<String>,
) -> String {
    let length = length.filter(|l| *l > 0).unwrap_or(255);
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= length {
        return text;
    }
    let cut = if killwords.unwrap_or(false) {
        length
    } else {
        chars[..=length.min(chars.len() - 1)]
            .iter()
            .rposition(|c| *c == ' ')
            .unwrap_or(length)
    };
    let mut out: String = chars[..cut].iter().collect();
    out.push_str(end.as_deref().unwrap_or("..."));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;
    use crate::suite::{Prompt, ProviderSpec, TestCase};

    fn suite_with(prompts: &[&str]) -> Suite {
        Suite {
            description: None,
            prompts: prompts
                .iter()
                .map(|raw| Prompt {
                    id: (*raw).to_owned(),
                    label: (*raw).to_owned(),
                    raw: (*raw).to_owned(),
                })
                .collect(),
            providers: vec![ProviderSpec {
                id: "echo".into(),
                label: None,
                config: Map::new(),
            }],
            tests: vec![TestCase {
                description: None,
                vars: BTreeMap::new(),
                assert: vec![],
                threshold: None,
                metadata: Map::new(),
            }],
            env: BTreeMap::from([("REGION".to_owned(), "eu".to_owned())]),
            max_concurrency: None,
            repeat: None,
        }
    }

    fn render(raw: &str, vars: Value) -> Result<String, TemplateError> {
        let renderer = PromptRenderer::new(&suite_with(&[raw])).unwrap();
        let vars: BTreeMap<String, Value> = serde_json::from_value(vars).unwrap();
        renderer.render(0, &vars)
    }

    #[test]
    fn renders_vars_without_escaping() {
        assert_eq!(
            render("Say {{ x }} & {{y}}", json!({"x": "<b>\"hi\"</b>", "y": 2})).unwrap(),
            "Say <b>\"hi\"</b> & 2"
        );
    }

    #[test]
    fn keeps_trailing_newline_of_the_template() {
        assert_eq!(render("Hi {{x}}\n", json!({"x": "a"})).unwrap(), "Hi a\n");
    }

    #[test]
    fn strips_one_trailing_newline_from_string_vars() {
        assert_eq!(render("[{{x}}]", json!({"x": "a\n\n"})).unwrap(), "[a\n]");
    }

    #[test]
    fn prints_values_like_javascript() {
        assert_eq!(
            render(
                "{{a}}|{{b}}|{{c}}|{{d}}|{{e}}|{{f}}",
                json!({"a": 1.0, "b": 2.5, "c": null, "d": [1, "x", null], "e": {"k": 1}, "f": true})
            )
            .unwrap(),
            "1|2.5||1,x,|[object Object]|true"
        );
    }

    #[test]
    fn load_filter_parses_json_strings() {
        assert_eq!(
            render(
                "{{ (cfg | load).tone }}/{{ (cfg | load).n + 1 }}",
                json!({"cfg": "{\"tone\":\"formal\",\"n\":2}"})
            )
            .unwrap(),
            "formal/3"
        );
        let err = render("{{ cfg | load }}", json!({"cfg": "not json"})).unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn dump_filter_is_json_stringify() {
        assert_eq!(
            render("{{ x | dump }}", json!({"x": {"a": [1, 2.0, "s"]}})).unwrap(),
            r#"{"a":[1,2,"s"]}"#
        );
        assert_eq!(
            render("{{ x | dump(2) }}", json!({"x": [1]})).unwrap(),
            "[\n  1\n]"
        );
    }

    #[test]
    fn nunjucks_text_filters() {
        assert_eq!(
            render("{{ s | wordcount }}", json!({"s": "a b, c-d"})).unwrap(),
            "4"
        );
        assert_eq!(
            render("{{ s | truncate(9) }}", json!({"s": "hello big world"})).unwrap(),
            "hello big..."
        );
        assert_eq!(
            render("{{ s | truncate(8) }}", json!({"s": "hello big world"})).unwrap(),
            "hello..."
        );
        assert_eq!(
            render("{{ s | truncate(3, true, '!') }}", json!({"s": "hello"})).unwrap(),
            "hel!"
        );
    }

    #[test]
    fn undefined_variable_is_an_error_naming_it() {
        let err = render("Hi {{ name }}", json!({})).unwrap_err();
        assert_eq!(err.prompt, 0);
        assert!(err.message.contains("`name`"), "{err}");
    }

    #[test]
    fn default_filter_and_defined_test_work_on_missing_vars() {
        assert_eq!(
            render(
                "{{ x | default('none') }}{% if y is defined %}!{% endif %}",
                json!({})
            )
            .unwrap(),
            "none"
        );
    }

    #[test]
    fn env_global_comes_from_the_suite() {
        assert_eq!(render("{{ env.REGION }}", json!({})).unwrap(), "eu");
    }

    #[test]
    fn vars_that_are_templates_render_first() {
        assert_eq!(
            render(
                "{{ greeting }}!",
                json!({"greeting": "Hi {{ name }}", "name": "Ada"})
            )
            .unwrap(),
            "Hi Ada!"
        );
        // promptfoo keeps a var verbatim when it cannot be rendered.
        assert_eq!(
            render("{{ code }}", json!({"code": "{{ missing }}"})).unwrap(),
            "{{ missing }}"
        );
    }

    #[test]
    fn json_prompts_render_each_string_and_pretty_print() {
        let raw = r#"[{"role": "system", "content": "Be {{tone}}"}, {"role": "user", "content": "{{q}}", "n": 1.0}]"#;
        let out = render(raw, json!({"tone": "brief", "q": "say \"hi\"\n"})).unwrap();
        assert_eq!(
            out,
            "[\n  {\n    \"role\": \"system\",\n    \"content\": \"Be brief\"\n  },\n  {\n    \"role\": \"user\",\n    \"content\": \"say \\\"hi\\\"\",\n    \"n\": 1\n  }\n]"
        );
    }

    #[test]
    fn json_prompt_keys_keep_their_order() {
        let out = render(r#"{"z": "{{a}}", "a": "b"}"#, json!({"a": "x"})).unwrap();
        assert_eq!(out, "{\n  \"z\": \"x\",\n  \"a\": \"b\"\n}");
    }

    #[test]
    fn syntax_errors_name_the_prompt() {
        let err = PromptRenderer::new(&suite_with(&["ok", "Hi {{ name"]))
            .err()
            .unwrap();
        assert_eq!(err.path, "prompts[1]");
        assert!(
            err.message.starts_with("invalid template: syntax error"),
            "{err}"
        );
    }

    #[test]
    fn variables_exclude_globals_and_loop_locals() {
        let renderer = PromptRenderer::new(&suite_with(&[
            "{{ env.X }}{% for i in items %}{{ i }}{{ loop.index }}{% endfor %}{% set y = 1 %}{{ y }}{{ z.a }}",
        ]))
        .unwrap();
        assert_eq!(
            renderer.variables(0),
            BTreeSet::from(["items".to_owned(), "z".to_owned()])
        );
    }

    #[test]
    fn out_of_range_prompt_is_an_error() {
        let renderer = PromptRenderer::new(&suite_with(&["a"])).unwrap();
        assert!(renderer.render(3, &BTreeMap::new()).is_err());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::parse::{SuiteFormat, parse_suite};

    fn renderer(prompt: &str) -> PromptRenderer {
        let suite = parse_suite(
            &format!(
                "prompts: [{}]\nproviders: [echo]\ntests: [{{vars: {{v: x}}}}]\n",
                serde_json::to_string(prompt).unwrap()
            ),
            SuiteFormat::Yaml,
        )
        .unwrap();
        PromptRenderer::new(&suite).unwrap()
    }

    proptest! {
        #[test]
        fn any_string_var_renders_without_panicking(value in any::<String>()) {
            let r = renderer("<{{ v }}>");
            let _ = r.render(0, &BTreeMap::from([("v".to_owned(), json!(value))]));
        }

        /// Text without template syntax or a final newline (promptfoo drops
        /// one) is substituted exactly, never escaped.
        #[test]
        fn plain_string_vars_are_substituted_verbatim(value in any::<String>()) {
            prop_assume!(!has_template_syntax(&value) && !value.ends_with('\n'));
            let r = renderer("<{{ v }}>");
            let out = r.render(0, &BTreeMap::from([("v".to_owned(), json!(value))])).unwrap();
            prop_assert_eq!(out, format!("<{value}>"));
        }

        /// In a JSON chat prompt the var lands inside a string, escaped as JSON.
        #[test]
        fn chat_prompts_stay_valid_json(value in any::<String>()) {
            prop_assume!(!has_template_syntax(&value) && !value.ends_with('\n'));
            let r = renderer(r#"[{"role": "user", "content": "Q: {{ v }}"}]"#);
            let out = r.render(0, &BTreeMap::from([("v".to_owned(), json!(value))])).unwrap();
            let parsed: Value = serde_json::from_str(&out).unwrap();
            prop_assert_eq!(&parsed[0]["content"], &json!(format!("Q: {value}")));
        }
    }
}
