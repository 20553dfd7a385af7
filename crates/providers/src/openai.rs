//! OpenAI-compatible chat and legacy completion clients. Anything that speaks
//! the OpenAI API (OpenAI, Azure-style gateways, vLLM, Ollama, the Gauntlet
//! mock) is reached through `apiBaseUrl`.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    Completion, Embeddings, Provider, ProviderError,
    config::{self, ConfigMap},
    estimate_tokens,
    pricing::{self, Price},
    transport::{self, Answer, Secret, env_var, saturate},
};

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Which OpenAI endpoint a provider calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenAiApi {
    Chat,
    Completion,
    /// `/embeddings` ([`crate::embeddings`]); such a provider does not complete.
    Embeddings,
}

impl OpenAiApi {
    fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Completion => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }

    /// Config keys sent as-is in the request body.
    fn body_keys(self) -> &'static [&'static str] {
        const COMMON: &[&str] = &[
            "temperature",
            "max_tokens",
            "top_p",
            "stop",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
            "user",
        ];
        const CHAT: &[&str] = &[
            "temperature",
            "max_tokens",
            "top_p",
            "stop",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
            "user",
            "response_format",
            "max_completion_tokens",
            "reasoning_effort",
        ];
        match self {
            Self::Chat => CHAT,
            Self::Completion => COMMON,
            Self::Embeddings => &["dimensions", "user"],
        }
    }
}

#[derive(Debug)]
pub(crate) struct OpenAiProvider {
    pub(crate) id: String,
    pub(crate) api: OpenAiApi,
    pub(crate) model: String,
    url: String,
    /// Authorization (marked sensitive) and the config's extra headers.
    headers: HeaderMap,
    pub(crate) params: Map<String, Value>,
    timeout: Option<Duration>,
    pub(crate) price: Option<Price>,
    client: reqwest::Client,
    /// The API key, scrubbed from error messages (some gateways quote it).
    secrets: Vec<Secret>,
}

impl OpenAiProvider {
    /// POSTs `body` to this provider's endpoint with its headers and timeout,
    /// and decodes the answer (for [`crate::embeddings`]); also the latency
    /// and the answer's rate-limit headers.
    pub(crate) async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        body: &impl Serialize,
    ) -> Result<(T, Answer), ProviderError> {
        let req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .json(body);
        let answer = transport::send(req, self.timeout, &self.secrets).await?;
        let parsed = serde_json::from_slice(&answer.body)
            .map_err(|e| ProviderError::Decode(format!("{}: {e}", self.id)))?;
        Ok((parsed, answer))
    }

    /// Where the breaker is keyed: the base URL's `scheme://host:port`.
    pub(crate) fn endpoint(&self) -> String {
        crate::transport::origin(&self.url)
    }

    pub(crate) fn new(
        id: &str,
        api: OpenAiApi,
        model: &str,
        config: &ConfigMap,
        env: &HashMap<String, String>,
        client: reqwest::Client,
    ) -> Result<Self, ProviderError> {
        let base_url = base_url(config, env)?;
        let key = transport::api_key(config, env, "OPENAI_API_KEY")?;
        if key.is_none() && host_of(&base_url) == "api.openai.com" {
            return Err(ProviderError::Config(format!(
                "{id}: no OpenAI API key; set OPENAI_API_KEY, or the `apiKey` or `apiKeyEnvar` config key"
            )));
        }

        let mut headers = HeaderMap::new();
        if let Some(key) = &key {
            headers.insert(AUTHORIZATION, key.header_value(id, "Bearer ")?);
        }
        let organization = config::string(config, "organization")?
            .map(str::to_owned)
            .or_else(|| env_var(env, "OPENAI_ORGANIZATION"));
        if let Some(org) = organization {
            let value = HeaderValue::try_from(org).map_err(|_| {
                ProviderError::Config(format!("{id}: `organization` is not a valid header value"))
            })?;
            headers.insert(HeaderName::from_static("openai-organization"), value);
        }
        extra_headers(id, config, &mut headers)?;

        let mut params = Map::new();
        for key in api.body_keys() {
            if let Some(value) = config.get(*key).filter(|v| !v.is_null()) {
                params.insert((*key).to_owned(), value.clone());
            }
        }
        match config.get("passthrough") {
            None | Some(Value::Null) => {}
            Some(Value::Object(extra)) => params.extend(extra.clone()),
            Some(_) => {
                return Err(ProviderError::Config(format!(
                    "{id}: `passthrough` must be an object of request body fields"
                )));
            }
        }

        let timeout = config::timeout(config)?;

        Ok(Self {
            id: id.to_owned(),
            api,
            model: model.to_owned(),
            url: format!("{base_url}{}", api.path()),
            headers,
            params,
            timeout,
            price: pricing::resolve(model, config)?,
            client,
            secrets: key.into_iter().collect(),
        })
    }

    async fn send(&self, prompt: &str) -> Result<(Response, Answer), ProviderError> {
        let req = self.client.post(&self.url).headers(self.headers.clone());
        let req = match self.api {
            OpenAiApi::Chat => {
                let messages = match chat_messages(prompt) {
                    Some(parsed) => Messages::Parsed(parsed),
                    None => Messages::User([UserMessage {
                        role: "user",
                        content: prompt,
                    }]),
                };
                req.json(&ChatBody {
                    model: &self.model,
                    messages,
                    params: &self.params,
                })
            }
            OpenAiApi::Completion => req.json(&CompletionBody {
                model: &self.model,
                prompt,
                params: &self.params,
            }),
            OpenAiApi::Embeddings => {
                return Err(ProviderError::Unsupported(format!(
                    "{}: an embedding model does not complete prompts",
                    self.id
                )));
            }
        };
        let answer = transport::send(req, self.timeout, &self.secrets).await?;
        let parsed: Response = serde_json::from_slice(&answer.body)
            .map_err(|e| ProviderError::Decode(format!("{}: {e}", self.id)))?;
        Ok((parsed, answer))
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn id(&self) -> &str {
        &self.id
    }

    async fn embed(&self, texts: &[String]) -> Result<Embeddings, ProviderError> {
        crate::embeddings::embed(self, texts).await
    }

    async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError> {
        let (resp, answer) = self.send(prompt).await?;
        let latency_ms = answer.latency_ms;
        let Some(choice) = resp.choices.into_iter().next() else {
            return Err(ProviderError::Decode(format!(
                "{}: the answer has no choices",
                self.id
            )));
        };
        let output = match self.api {
            OpenAiApi::Chat => choice
                .message
                .map(ChatMessage::into_output)
                .unwrap_or_default(),
            OpenAiApi::Completion | OpenAiApi::Embeddings => choice.text.unwrap_or_default(),
        };
        let usage = resp.usage.unwrap_or_default();
        let tokens_in = usage
            .prompt_tokens
            .map_or_else(|| estimate_tokens(prompt), saturate);
        let tokens_out = usage
            .completion_tokens
            .map_or_else(|| estimate_tokens(&output), saturate);
        tracing::debug!(provider = %self.id, latency_ms, tokens_in, tokens_out, "provider call completed");
        Ok(Completion {
            output,
            tokens_in,
            tokens_out,
            latency_ms,
            finish_reason: choice.finish_reason,
            cost_usd: self
                .price
                .map_or(0.0, |p| p.cost_usd(tokens_in, tokens_out)),
            cached: false,
            rate_limit: answer.rate_limit,
        })
    }
}

/// `apiBaseUrl`, then `apiHost`, then `OPENAI_BASE_URL`, `OPENAI_API_BASE_URL`,
/// `OPENAI_API_HOST`, then the public API.
fn base_url(config: &ConfigMap, env: &HashMap<String, String>) -> Result<String, ProviderError> {
    let url = if let Some(url) = config::string(config, "apiBaseUrl")? {
        url.to_owned()
    } else if let Some(host) = config::string(config, "apiHost")? {
        format!("https://{host}/v1")
    } else if let Some(url) =
        env_var(env, "OPENAI_BASE_URL").or_else(|| env_var(env, "OPENAI_API_BASE_URL"))
    {
        url
    } else if let Some(host) = env_var(env, "OPENAI_API_HOST") {
        format!("https://{host}/v1")
    } else {
        DEFAULT_BASE_URL.to_owned()
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ProviderError::Config(
            "the OpenAI base URL (`apiBaseUrl`, `apiHost` or OPENAI_BASE_URL) must start with http:// or https://"
                .to_owned(),
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.split(':').next().unwrap_or("")
}

fn extra_headers(
    id: &str,
    config: &ConfigMap,
    headers: &mut HeaderMap,
) -> Result<(), ProviderError> {
    let map = match config.get("headers") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ProviderError::Config(format!(
                "{id}: `headers` must be a map of header names to values"
            )));
        }
    };
    for (name, value) in map {
        let header = HeaderName::try_from(name.as_str()).map_err(|_| {
            ProviderError::Config(format!("{id}: `headers.{name}` is not a valid header name"))
        })?;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            _ => {
                return Err(ProviderError::Config(format!(
                    "{id}: `headers.{name}` must be a string"
                )));
            }
        };
        // The value is left out of the message: extra headers often carry credentials.
        let value = HeaderValue::try_from(text).map_err(|_| {
            ProviderError::Config(format!(
                "{id}: `headers.{name}` is not a valid header value"
            ))
        })?;
        headers.insert(header, value);
    }
    Ok(())
}

/// Like promptfoo: a rendered prompt that is a JSON array of `{role, content}`
/// messages is a conversation; anything else is one user message.
pub(crate) fn chat_messages(prompt: &str) -> Option<Vec<Value>> {
    if !prompt.trim_start().starts_with('[') {
        return None;
    }
    let messages: Vec<Value> = serde_json::from_str(prompt).ok()?;
    let well_formed = |m: &Value| {
        m.as_object().is_some_and(|o| {
            o.get("role").is_some_and(Value::is_string)
                && (o.contains_key("content") || o.contains_key("tool_calls"))
        })
    };
    (!messages.is_empty() && messages.iter().all(well_formed)).then_some(messages)
}

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: Messages<'a>,
    #[serde(flatten)]
    params: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct CompletionBody<'a> {
    model: &'a str,
    prompt: &'a str,
    #[serde(flatten)]
    params: &'a Map<String, Value>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Messages<'a> {
    Parsed(Vec<Value>),
    User([UserMessage<'a>; 1]),
}

#[derive(Serialize)]
struct UserMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<ChatMessage>,
    text: Option<String>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessage {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Value>,
}

impl ChatMessage {
    /// The text, else the refusal, else the tool calls as JSON (as promptfoo outputs them).
    fn into_output(self) -> String {
        match (self.content, self.refusal, self.tool_calls) {
            (Some(content), _, _) => content,
            (None, Some(refusal), _) => refusal,
            (None, None, Some(calls)) if !calls.is_null() => calls.to_string(),
            _ => String::new(),
        }
    }
}

#[derive(Deserialize, Default)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use reqwest::header::RETRY_AFTER;
    use serde_json::json;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn cfg(v: Value) -> ConfigMap {
        v.as_object().unwrap().clone()
    }

    /// The error the client makes of an error answer; `secret` is its key.
    fn status_error(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        secret: Option<&str>,
    ) -> ProviderError {
        let secrets: Vec<Secret> = secret.map(Secret::new).into_iter().collect();
        transport::status_error(status, headers, body, &secrets)
    }

    #[test]
    fn chat_arrays_are_messages_and_everything_else_is_text() {
        let conv = r#"[{"role":"system","content":"s"},{"role":"user","content":"u"}]"#;
        assert_eq!(chat_messages(conv).unwrap().len(), 2);
        assert_eq!(chat_messages(&format!("  \n{conv}")).unwrap().len(), 2);
        for text in [
            "hello",
            "[1, 2]",
            "[]",
            r#"[{"content":"no role"}]"#,
            "[not json",
            r#"{"role":"user","content":"x"}"#,
        ] {
            assert!(chat_messages(text).is_none(), "{text}");
        }
    }

    #[test]
    fn base_url_precedence_is_config_then_env_then_default() {
        let none = ConfigMap::new();
        assert_eq!(base_url(&none, &env(&[])).unwrap(), DEFAULT_BASE_URL);
        assert_eq!(
            base_url(&none, &env(&[("OPENAI_API_BASE_URL", "http://b/v1/")])).unwrap(),
            "http://b/v1"
        );
        assert_eq!(
            base_url(
                &none,
                &env(&[
                    ("OPENAI_BASE_URL", "http://a/v1"),
                    ("OPENAI_API_BASE_URL", "http://b/v1")
                ])
            )
            .unwrap(),
            "http://a/v1"
        );
        assert_eq!(
            base_url(
                &cfg(json!({"apiHost": "gw.example"})),
                &env(&[("OPENAI_BASE_URL", "http://a/v1")])
            )
            .unwrap(),
            "https://gw.example/v1"
        );
        assert_eq!(
            base_url(
                &cfg(json!({"apiBaseUrl": "http://c:1/v1", "apiHost": "x"})),
                &env(&[])
            )
            .unwrap(),
            "http://c:1/v1"
        );
        assert!(base_url(&cfg(json!({"apiBaseUrl": "localhost:8080"})), &env(&[])).is_err());
    }

    #[test]
    fn host_is_extracted_from_urls() {
        assert_eq!(host_of("https://api.openai.com/v1"), "api.openai.com");
        assert_eq!(host_of("http://user:pw@127.0.0.1:7080/v1"), "127.0.0.1");
        assert_eq!(host_of("http://localhost:11434"), "localhost");
    }

    #[test]
    fn key_comes_from_config_then_named_var_then_default_var() {
        let e = env(&[("OPENAI_API_KEY", "sk-env"), ("MY_KEY", "sk-mine")]);
        let api_key =
            |c: &ConfigMap, e: &HashMap<String, String>| transport::api_key(c, e, "OPENAI_API_KEY");
        let key = |c: Value| api_key(&cfg(c), &e).unwrap().map(|k| k.expose().to_owned());
        assert_eq!(key(json!({"apiKey": "sk-cfg"})).as_deref(), Some("sk-cfg"));
        assert_eq!(
            key(json!({"apiKeyEnvar": "MY_KEY"})).as_deref(),
            Some("sk-mine")
        );
        assert_eq!(key(json!({})).as_deref(), Some("sk-env"));
        let err = api_key(&cfg(json!({"apiKeyEnvar": "NOPE"})), &e)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NOPE"), "{err}");
    }

    #[test]
    fn missing_key_is_an_error_only_for_the_public_api() {
        let client = reqwest::Client::new();
        let err = OpenAiProvider::new(
            "openai:gpt-4.1",
            OpenAiApi::Chat,
            "gpt-4.1",
            &ConfigMap::new(),
            &env(&[]),
            client.clone(),
        )
        .unwrap_err();
        assert!(matches!(err, ProviderError::Config(_)));
        assert!(err.to_string().contains("OPENAI_API_KEY"));
        OpenAiProvider::new(
            "openai:llama3",
            OpenAiApi::Chat,
            "llama3",
            &ConfigMap::new(),
            &env(&[("OPENAI_BASE_URL", "http://localhost:11434/v1")]),
            client,
        )
        .unwrap();
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let p = OpenAiProvider::new(
            "openai:gpt-4.1",
            OpenAiApi::Chat,
            "gpt-4.1",
            &cfg(json!({"apiKey": "sk-very-secret"})),
            &env(&[]),
            reqwest::Client::new(),
        )
        .unwrap();
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("sk-very-secret"), "{dbg}");
    }

    #[test]
    fn body_carries_known_params_and_passthrough_only() {
        let config = cfg(json!({
            "temperature": 0.2, "max_tokens": 64, "response_format": {"type": "json_object"},
            "apiKey": "sk-x", "cost": 0.1, "passthrough": {"n": 2}
        }));
        let p = OpenAiProvider::new(
            "openai:gpt-4.1",
            OpenAiApi::Chat,
            "gpt-4.1",
            &config,
            &env(&[]),
            reqwest::Client::new(),
        )
        .unwrap();
        let body = serde_json::to_value(ChatBody {
            model: &p.model,
            messages: Messages::User([UserMessage {
                role: "user",
                content: "hi",
            }]),
            params: &p.params,
        })
        .unwrap();
        assert_eq!(
            body,
            json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}],
                   "temperature": 0.2, "max_tokens": 64, "response_format": {"type": "json_object"}, "n": 2})
        );
        let legacy = OpenAiProvider::new(
            "openai:completion:x",
            OpenAiApi::Completion,
            "x",
            &config,
            &env(&[]),
            reqwest::Client::new(),
        )
        .unwrap();
        assert!(!legacy.params.contains_key("response_format"));
    }

    #[test]
    fn error_answers_keep_the_provider_message_and_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        let err = status_error(429, &headers, br#"{"error":{"message":"slow down"}}"#, None);
        assert_eq!(
            err,
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
                message: "slow down".into(),
                limits: None,
            }
        );
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(
            status_error(429, &headers, b"", None).retry_after(),
            Some(Duration::from_millis(1500))
        );
        let long = "x".repeat(2000);
        match status_error(502, &HeaderMap::new(), long.as_bytes(), None) {
            ProviderError::Http {
                status: 502,
                message,
            } => assert!(message.chars().count() <= crate::transport::MAX_ERROR_CHARS + 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_quoted_key_is_scrubbed_from_error_messages() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-abc123."}}"#;
        let err = status_error(401, &HeaderMap::new(), body, Some("sk-abc123")).to_string();
        assert!(
            !err.contains("sk-abc123") && err.contains("[redacted]"),
            "{err}"
        );
    }

    #[test]
    fn bad_extra_headers_are_named_without_their_value() {
        let config = cfg(json!({"headers": {"x-token": "secret\nvalue"}}));
        let err = OpenAiProvider::new(
            "openai:m",
            OpenAiApi::Chat,
            "m",
            &config,
            &env(&[("OPENAI_BASE_URL", "http://x/v1")]),
            reqwest::Client::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("headers.x-token") && !err.contains("secret"),
            "{err}"
        );
    }
}
