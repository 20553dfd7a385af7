//! promptfoo's generic `http` provider: any JSON-over-HTTP model endpoint,
//! described by a URL, a method, headers, a body template and a path that
//! picks the output out of the answer.
//!
//! The id is `http` (with `url` in the config) or the URL itself. `url`,
//! `headers`, `queryParams` and `body` are minijinja templates over `prompt`
//! and `env` (the factory's environment), so `{{ env.API_KEY }}` keeps keys
//! out of suite files. A body given as JSON (an object, or a string that parses
//! as JSON) is rendered leaf by leaf, so a prompt with quotes or newlines
//! still yields valid JSON. `transformResponse` / `responsePath` accept a
//! property path such as `json.choices[0].message.content` or `data.output`;
//! JavaScript transforms are refused with an explanation rather than
//! approximated.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use minijinja::{Environment, UndefinedBehavior};
use reqwest::{
    Method,
    header::{CONTENT_TYPE, HeaderMap, HeaderValue},
};
use serde_json::{Map, Value};

use crate::{
    Completion, Provider, ProviderError,
    config::{self, ConfigMap},
    estimate_tokens,
    transport::{self, Secret},
};

/// Config keys whose promptfoo meaning is a JavaScript function or a raw
/// request, neither of which gauntlet runs.
const UNSUPPORTED_KEYS: &[&str] = &["transformRequest", "request", "sessionParser"];

pub(crate) struct HttpProvider {
    id: String,
    method: Method,
    url: String,
    query: Vec<(String, String)>,
    /// Rendered once at build; values are marked sensitive.
    headers: HeaderMap,
    body: Option<Body>,
    path: Option<ResponsePath>,
    timeout: Option<Duration>,
    client: reqwest::Client,
    templates: Arc<Environment<'static>>,
    env: minijinja::Value,
    secrets: Vec<Secret>,
}

#[derive(Debug, Clone)]
enum Body {
    /// JSON whose string leaves are templates.
    Json(Value),
    /// A text template, sent as-is once rendered.
    Text(String),
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values, the query and the body may hold credentials: only their shape shows.
        let url = self.url.split(['?', '#']).next().unwrap_or("");
        let body = match &self.body {
            None => "none",
            Some(Body::Json(_)) => "json template",
            Some(Body::Text(_)) => "text template",
        };
        f.debug_struct("HttpProvider")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("url", &url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("query_params", &self.query.len())
            .field("body", &body)
            .field("path", &self.path.as_ref().map(|p| p.source.as_str()))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    pub(crate) fn new(
        id: &str,
        config: &ConfigMap,
        env: &HashMap<String, String>,
        client: reqwest::Client,
    ) -> Result<Self, ProviderError> {
        for key in UNSUPPORTED_KEYS {
            if config.get(*key).is_some_and(|v| !v.is_null()) {
                return Err(ProviderError::Unsupported(format!(
                    "{id}: `{key}` runs JavaScript or sends a raw request in promptfoo, which gauntlet does not support"
                )));
            }
        }
        let mut templates = Environment::new();
        templates.set_undefined_behavior(UndefinedBehavior::Strict);
        let env_value = minijinja::Value::from_serialize(env);

        let url = match config::string(config, "url")? {
            Some(url) => url.to_owned(),
            None if id.starts_with("http://") || id.starts_with("https://") => id.to_owned(),
            None => {
                return Err(ProviderError::Config(format!(
                    "{id}: the http provider needs a `url` (or an id that is the URL)"
                )));
            }
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ProviderError::Config(format!(
                "{id}: `url` must start with http:// or https://"
            )));
        }
        let method = match config::string(config, "method")? {
            None => Method::POST,
            Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                ProviderError::Config(format!("{id}: `method` `{m}` is not an HTTP method"))
            })?,
        };

        // Headers do not depend on the prompt: render them once.
        let build_ctx = minijinja::context! { env => env_value.clone() };
        let mut headers = transport::config_headers(id, config, true, |name, value| {
            render(
                &templates,
                value,
                &build_ctx,
                &format!("headers.{name}"),
                id,
            )
        })?;

        let query = match config.get("queryParams") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            Some(_) => {
                return Err(ProviderError::Config(format!(
                    "{id}: `queryParams` must be a map of names to values"
                )));
            }
        };

        let body = match config.get("body") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v @ (Value::Object(_) | Value::Array(_))) => Some(Body::Json(v)),
                _ => Some(Body::Text(s.clone())),
            },
            Some(v) => Some(Body::Json(v.clone())),
        };
        if matches!(body, Some(Body::Json(_))) && !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }

        let path = match (
            config::string(config, "transformResponse"),
            config::string(config, "responsePath")?,
        ) {
            (Ok(Some(source)), _) | (Ok(None), Some(source)) => {
                Some(ResponsePath::parse(source).map_err(|why| {
                    ProviderError::Unsupported(format!(
                        "{id}: response transform `{source}`: {why}; gauntlet runs no JavaScript, \
                         use a path such as json.choices[0].message.content or data.output"
                    ))
                })?)
            }
            (Ok(None), None) => None,
            (Err(_), _) => {
                return Err(ProviderError::Unsupported(format!(
                    "{id}: `transformResponse` must be a path string; function transforms are JavaScript, which gauntlet does not run"
                )));
            }
        };

        let mut secrets = transport::header_secrets(&headers);
        secrets.extend(
            query
                .iter()
                .filter_map(|(_, v)| render(&templates, v, &build_ctx, "", id).ok())
                .filter(|v| v.len() >= 8)
                .map(Secret::new),
        );
        let provider = Self {
            id: id.to_owned(),
            method,
            url,
            query,
            headers,
            body,
            path,
            timeout: config::timeout(config)?,
            client,
            templates: Arc::new(templates),
            env: env_value,
            secrets,
        };
        // Template mistakes surface now, naming the key, rather than on every call.
        provider.request_parts("probe")?;
        Ok(provider)
    }

    pub(crate) fn endpoint(&self) -> String {
        if self.url.contains("{{") || self.url.contains("{%") {
            // The host itself may be templated; share one breaker per template.
            return self.url.clone();
        }
        transport::origin(&self.url)
    }

    /// The rendered URL, query and body for `prompt`.
    #[allow(clippy::type_complexity)]
    fn request_parts(
        &self,
        prompt: &str,
    ) -> Result<(String, Vec<(String, String)>, Option<Vec<u8>>), ProviderError> {
        let ctx = minijinja::context! { prompt => prompt, env => self.env.clone() };
        let url = render(&self.templates, &self.url, &ctx, "url", &self.id)?;
        let query = self
            .query
            .iter()
            .map(|(k, v)| {
                let key = format!("queryParams.{k}");
                Ok((k.clone(), render(&self.templates, v, &ctx, &key, &self.id)?))
            })
            .collect::<Result<_, ProviderError>>()?;
        let body = match &self.body {
            None => None,
            Some(Body::Text(t)) => {
                Some(render(&self.templates, t, &ctx, "body", &self.id)?.into_bytes())
            }
            Some(Body::Json(v)) => {
                let rendered = render_json(&self.templates, v, &ctx, &self.id, "body")?;
                Some(serde_json::to_vec(&rendered).map_err(|e| {
                    ProviderError::Config(format!("{}: `body` does not serialise: {e}", self.id))
                })?)
            }
        };
        Ok((url, query, body))
    }

    fn output(&self, body: &[u8]) -> Result<String, ProviderError> {
        let text = || String::from_utf8_lossy(body).into_owned();
        let Some(path) = &self.path else {
            return Ok(match serde_json::from_slice::<Value>(body) {
                Ok(Value::String(s)) => s,
                Ok(v) => v.to_string(),
                Err(_) => text(),
            });
        };
        if path.text {
            return Ok(text());
        }
        let json: Value = serde_json::from_slice(body).map_err(|e| {
            ProviderError::Decode(format!(
                "{}: the answer is not JSON, so `{}` cannot select from it: {e}",
                self.id, path.source
            ))
        })?;
        match path.select(&json) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Ok(v.to_string()),
            None => Err(ProviderError::Decode(format!(
                "{}: `{}` selects nothing in the answer",
                self.id, path.source
            ))),
        }
    }
}

fn render(
    templates: &Environment<'static>,
    source: &str,
    ctx: &minijinja::Value,
    key: &str,
    id: &str,
) -> Result<String, ProviderError> {
    if !source.contains("{{") && !source.contains("{%") {
        return Ok(source.to_owned());
    }
    templates
        .render_str(source, ctx)
        .map_err(|e| ProviderError::Config(format!("{id}: template `{key}`: {e}")))
}

fn render_json(
    templates: &Environment<'static>,
    value: &Value,
    ctx: &minijinja::Value,
    id: &str,
    key: &str,
) -> Result<Value, ProviderError> {
    Ok(match value {
        Value::String(s) => Value::String(render(templates, s, ctx, key, id)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_json(templates, v, ctx, id, &format!("{key}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        render_json(templates, v, ctx, id, &format!("{key}.{k}"))?,
                    ))
                })
                .collect::<Result<Map<_, _>, ProviderError>>()?,
        ),
        other => other.clone(),
    })
}

#[async_trait]
impl Provider for HttpProvider {
    fn id(&self) -> &str {
        &self.id
    }

    async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError> {
        let (url, query, body) = self.request_parts(prompt)?;
        let mut req = self
            .client
            .request(self.method.clone(), &url)
            .headers(self.headers.clone());
        if !query.is_empty() {
            req = req.query(&query);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let answer = transport::send(req, self.timeout, &self.secrets).await?;
        let output = self.output(&answer.body)?;
        let tokens_in = estimate_tokens(prompt);
        let tokens_out = estimate_tokens(&output);
        tracing::debug!(provider = %self.id, latency_ms = answer.latency_ms, "provider call completed");
        Ok(Completion {
            output,
            tokens_in,
            tokens_out,
            latency_ms: answer.latency_ms,
            finish_reason: None,
            cost_usd: 0.0,
            cached: false,
            rate_limit: answer.rate_limit,
        })
    }
}

/// A property path into a JSON answer: an optional root (`json`, `data`, `$`,
/// or `text` for the raw body) followed by `.name`, `?.name`, `[0]` or
/// `["name"]` steps. A path without a root starts at the JSON answer.
#[derive(Debug, Clone, PartialEq)]
struct ResponsePath {
    source: String,
    text: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

impl ResponsePath {
    fn parse(source: &str) -> Result<Self, &'static str> {
        let src = source.trim();
        if src.starts_with("file://") {
            return Err("a transform file is JavaScript or Python");
        }
        let chars: Vec<char> = src.chars().collect();
        let mut i = 0;
        let ident = |i: &mut usize| -> String {
            let start = *i;
            while *i < chars.len()
                && (chars[*i].is_alphanumeric() || matches!(chars[*i], '_' | '$' | '-'))
            {
                *i += 1;
            }
            chars[start..*i].iter().collect()
        };
        let mut steps = Vec::new();
        let mut text = false;
        if chars.first() == Some(&'$') {
            i = 1;
        } else {
            let first = ident(&mut i);
            if first.is_empty() {
                return Err("it is not a property path");
            }
            match first.as_str() {
                "json" | "data" => {}
                "text" => text = true,
                _ => steps.push(Step::Key(first)),
            }
        }
        while i < chars.len() {
            let optional = chars[i] == '?' && chars.get(i + 1) == Some(&'.');
            if optional {
                i += 1;
            }
            match chars[i] {
                '.' if chars.get(i + 1) == Some(&'[') && optional => i += 1,
                '.' => {
                    i += 1;
                    let key = ident(&mut i);
                    if key.is_empty() {
                        return Err("a `.` is not followed by a property name");
                    }
                    steps.push(Step::Key(key));
                }
                '[' => {
                    let close = chars[i..]
                        .iter()
                        .position(|c| *c == ']')
                        .ok_or("a `[` is not closed")?
                        + i;
                    let inner: String = chars[i + 1..close].iter().collect();
                    let inner = inner.trim();
                    let quoted =
                        |q: char| inner.len() >= 2 && inner.starts_with(q) && inner.ends_with(q);
                    if quoted('"') || quoted('\'') {
                        steps.push(Step::Key(inner[1..inner.len() - 1].to_owned()));
                    } else {
                        let index = inner
                            .parse()
                            .map_err(|_| "an index is neither a number nor a quoted name")?;
                        steps.push(Step::Index(index));
                    }
                    i = close + 1;
                }
                _ => return Err("it is not a property path"),
            }
        }
        if text && !steps.is_empty() {
            return Err("`text` is the raw answer and has no properties");
        }
        Ok(Self {
            source: src.to_owned(),
            text,
            steps,
        })
    }

    fn select<'a>(&self, mut value: &'a Value) -> Option<&'a Value> {
        for step in &self.steps {
            value = match step {
                Step::Key(k) => value.get(k)?,
                Step::Index(i) => value.get(*i)?,
            };
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(s: &str) -> ResponsePath {
        ResponsePath::parse(s).unwrap()
    }

    #[test]
    fn paths_parse_with_and_without_a_root() {
        let answer =
            json!({"choices": [{"message": {"content": "hi"}}], "output": 3, "a-b": {"c d": 1}});
        for (p, want) in [
            ("json.choices[0].message.content", json!("hi")),
            ("data.output", json!(3)),
            ("output", json!(3)),
            ("choices[0]?.message?.content", json!("hi")),
            ("$.choices[0].message", json!({"content": "hi"})),
            ("json['a-b'][\"c d\"]", json!(1)),
            ("json", answer.clone()),
        ] {
            assert_eq!(path(p).select(&answer), Some(&want), "{p}");
        }
        assert_eq!(path("json.missing[2]").select(&answer), None);
        assert!(path("text").text);
    }

    #[test]
    fn javascript_is_refused() {
        for js in [
            "(json) => json.output",
            "json.output.trim()",
            "json.a + json.b",
            "file://transform.js",
            "text.length",
            "json.choices[",
        ] {
            assert!(ResponsePath::parse(js).is_err(), "{js}");
        }
    }

    fn provider(config: Value) -> Result<HttpProvider, ProviderError> {
        HttpProvider::new(
            "http",
            config.as_object().unwrap(),
            &HashMap::from([("SVC_TOKEN".to_owned(), "tok-secret-123456".to_owned())]),
            reqwest::Client::new(),
        )
    }

    #[test]
    fn json_bodies_stay_valid_whatever_the_prompt() {
        let p = provider(json!({
            "url": "http://svc/v1/generate",
            "body": "{\"input\": \"{{prompt}}\", \"n\": 1, \"tags\": [\"{{ prompt | upper }}\"]}"
        }))
        .unwrap();
        let (_, _, body) = p.request_parts("say \"hi\"\nnow").unwrap();
        let body: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"input": "say \"hi\"\nnow", "n": 1, "tags": ["SAY \"HI\"\nNOW"]})
        );
        assert_eq!(p.headers[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn text_bodies_urls_and_query_params_are_templates() {
        let p = provider(json!({
            "url": "http://svc/ask/{{ prompt | urlencode }}",
            "method": "get",
            "queryParams": {"q": "{{prompt}}", "fixed": 1},
            "body": "Question: {{prompt}}"
        }))
        .unwrap();
        let (url, query, body) = p.request_parts("a b").unwrap();
        assert_eq!(url, "http://svc/ask/a%20b");
        assert_eq!(
            query,
            [("fixed".into(), "1".into()), ("q".into(), "a b".into())]
        );
        assert_eq!(body.unwrap(), b"Question: a b");
        assert_eq!(p.method, Method::GET);
        assert!(!p.headers.contains_key(CONTENT_TYPE));
    }

    #[test]
    fn headers_read_env_and_never_show() {
        let p = provider(json!({
            "url": "http://svc/x",
            "headers": {"Authorization": "Bearer {{ env.SVC_TOKEN }}"}
        }))
        .unwrap();
        assert_eq!(p.headers["authorization"], "Bearer tok-secret-123456");
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("tok-secret-123456"), "{dbg}");
    }

    #[test]
    fn config_mistakes_name_the_key() {
        let err = provider(json!({"url": "http://svc", "body": {"x": "{{ promt }}"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("body.x"), "{err}");
        let err = provider(json!({"body": "x"})).unwrap_err().to_string();
        assert!(err.contains("`url`"), "{err}");
        let err =
            provider(json!({"url": "http://svc", "transformResponse": "(j) => j.x"})).unwrap_err();
        assert!(matches!(err, ProviderError::Unsupported(_)), "{err}");
        let err = provider(json!({"url": "http://svc", "transformRequest": "x"})).unwrap_err();
        assert!(matches!(err, ProviderError::Unsupported(_)), "{err}");
    }

    #[test]
    fn output_is_the_selected_value_or_the_whole_answer() {
        let p = provider(json!({"url": "http://svc", "responsePath": "data.result"})).unwrap();
        assert_eq!(p.output(br#"{"result": "ok"}"#).unwrap(), "ok");
        assert_eq!(p.output(br#"{"result": {"a": 1}}"#).unwrap(), r#"{"a":1}"#);
        assert!(matches!(p.output(b"{}"), Err(ProviderError::Decode(_))));
        let whole = provider(json!({"url": "http://svc"})).unwrap();
        assert_eq!(whole.output(br#""just text""#).unwrap(), "just text");
        assert_eq!(whole.output(b"not json").unwrap(), "not json");
        assert_eq!(whole.output(br#"{"a":1}"#).unwrap(), r#"{"a":1}"#);
    }
}
