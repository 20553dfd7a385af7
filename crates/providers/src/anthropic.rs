//! The Anthropic Messages API client (`anthropic:messages:<model>`, and
//! promptfoo's shorter `anthropic:<model>`).
//!
//! A prompt that is a JSON chat array has its `system` messages lifted into the
//! request's `system` field, as the API wants; anything else is one user turn.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    Completion, Provider, ProviderError,
    config::{self, ConfigMap},
    estimate_tokens,
    openai::chat_messages,
    pricing::{self, Price},
    transport::{self, Secret},
};

const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
const DEFAULT_VERSION: &str = "2023-06-01";
/// promptfoo's default; the API requires `max_tokens` on every request.
const DEFAULT_MAX_TOKENS: u64 = 1024;

/// Config keys sent as-is in the request body.
const BODY_KEYS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "thinking",
    "tools",
    "tool_choice",
];

#[derive(Debug)]
pub(crate) struct AnthropicProvider {
    id: String,
    model: String,
    url: String,
    /// `x-api-key` (marked sensitive), `anthropic-version` and the config's extra headers.
    headers: HeaderMap,
    params: Map<String, Value>,
    timeout: Option<Duration>,
    price: Option<Price>,
    client: reqwest::Client,
    secrets: Vec<Secret>,
}

impl AnthropicProvider {
    pub(crate) fn new(
        id: &str,
        model: &str,
        config: &ConfigMap,
        env: &HashMap<String, String>,
        client: reqwest::Client,
    ) -> Result<Self, ProviderError> {
        let base = transport::base_url(config, env, &["ANTHROPIC_BASE_URL"], DEFAULT_BASE_URL)?;
        let key = transport::api_key(config, env, "ANTHROPIC_API_KEY")?;
        if key.is_none() && transport::host_of(&base) == "api.anthropic.com" {
            return Err(ProviderError::Config(format!(
                "{id}: no Anthropic API key; set ANTHROPIC_API_KEY, or the `apiKey` or `apiKeyEnvar` config key"
            )));
        }

        let mut headers = transport::config_headers(id, config, true, |_, v| Ok(v.to_owned()))?;
        if let Some(key) = &key {
            headers.insert(
                HeaderName::from_static("x-api-key"),
                key.header_value(id, "")?,
            );
        }
        let version = config::string(config, "anthropicVersion")?.unwrap_or(DEFAULT_VERSION);
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::try_from(version).map_err(|_| {
                ProviderError::Config(format!(
                    "{id}: `anthropicVersion` is not a valid header value"
                ))
            })?,
        );

        let mut params = Map::new();
        let max_tokens = match config::uint(config, "max_tokens")? {
            Some(n) => n,
            None => match transport::env_var(env, "ANTHROPIC_MAX_TOKENS") {
                Some(v) => v.parse().map_err(|_| {
                    ProviderError::Config("ANTHROPIC_MAX_TOKENS must be a whole number".to_owned())
                })?,
                None => DEFAULT_MAX_TOKENS,
            },
        };
        params.insert("max_tokens".to_owned(), max_tokens.into());
        for key in BODY_KEYS {
            if let Some(value) = config.get(*key).filter(|v| !v.is_null()) {
                params.insert((*key).to_owned(), value.clone());
            }
        }
        // Like promptfoo: deterministic by default, except that extended
        // thinking only accepts the default temperature.
        if !params.contains_key("temperature") && !params.contains_key("thinking") {
            params.insert("temperature".to_owned(), 0.into());
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

        // The SDK's base URL has no `/v1`; accept one written with it too.
        let url = if base.ends_with("/v1") {
            format!("{base}/messages")
        } else {
            format!("{base}/v1/messages")
        };
        let mut secrets = transport::header_secrets(&headers);
        secrets.extend(key);
        Ok(Self {
            id: id.to_owned(),
            model: model.to_owned(),
            url,
            headers,
            params,
            timeout: config::timeout(config)?,
            price: pricing::resolve(model, config)?,
            client,
            secrets,
        })
    }

    pub(crate) fn endpoint(&self) -> String {
        transport::origin(&self.url)
    }

    fn body(&self, prompt: &str) -> Value {
        let mut body = self.params.clone();
        body.insert("model".to_owned(), self.model.clone().into());
        let (system, messages) = split_system(prompt);
        if let Some(system) = system {
            body.insert("system".to_owned(), system);
        }
        body.insert("messages".to_owned(), Value::Array(messages));
        Value::Object(body)
    }
}

/// The `system` field and the turns for `prompt`: system messages of a chat
/// array are joined (as text when they all are, else as content blocks).
fn split_system(prompt: &str) -> (Option<Value>, Vec<Value>) {
    let Some(parsed) = chat_messages(prompt) else {
        return (None, vec![json!({"role": "user", "content": prompt})]);
    };
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for mut message in parsed {
        let role = message["role"].as_str().unwrap_or_default().to_owned();
        let content = message
            .get_mut("content")
            .map(Value::take)
            .unwrap_or(Value::Null);
        if role == "system" {
            system.push(content);
        } else {
            messages.push(json!({"role": role, "content": content}));
        }
    }
    let system = match system.len() {
        0 => None,
        _ if system.iter().all(Value::is_string) => Some(Value::String(
            system
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n\n"),
        )),
        _ => Some(Value::Array(
            system
                .into_iter()
                .flat_map(|c| match c {
                    Value::String(text) => vec![json!({"type": "text", "text": text})],
                    Value::Array(blocks) => blocks,
                    other => vec![other],
                })
                .collect(),
        )),
    };
    (system, messages)
}

/// promptfoo's normalised finish reasons, so `finish-reason` assertions read
/// the same across providers.
fn finish_reason(stop_reason: &str) -> String {
    match stop_reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_owned()
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    content: Vec<Value>,
    stop_reason: Option<String>,
    usage: Option<Usage>,
}

#[derive(Deserialize, Default)]
struct Usage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// The text blocks joined; tool calls as JSON, as promptfoo outputs them.
/// Thinking blocks are left out.
fn output_of(content: &[Value]) -> String {
    let parts: Vec<String> = content
        .iter()
        .filter_map(|block| match block.get("type").and_then(Value::as_str) {
            Some("text") => block.get("text").and_then(Value::as_str).map(str::to_owned),
            Some("tool_use") => Some(block.to_string()),
            _ => None,
        })
        .collect();
    parts.join("\n\n")
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn id(&self) -> &str {
        &self.id
    }

    async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError> {
        let req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .json(&self.body(prompt));
        let answer = transport::send(req, self.timeout, &self.secrets).await?;
        let resp: Response = serde_json::from_slice(&answer.body)
            .map_err(|e| ProviderError::Decode(format!("{}: {e}", self.id)))?;
        let output = output_of(&resp.content);
        let usage = resp.usage.unwrap_or_default();
        let tokens_in = match usage.input_tokens {
            Some(n) => transport::saturate(
                n + usage.cache_creation_input_tokens.unwrap_or(0)
                    + usage.cache_read_input_tokens.unwrap_or(0),
            ),
            None => estimate_tokens(prompt),
        };
        let tokens_out = usage
            .output_tokens
            .map_or_else(|| estimate_tokens(&output), transport::saturate);
        let latency_ms = answer.latency_ms;
        tracing::debug!(provider = %self.id, latency_ms, tokens_in, tokens_out, "provider call completed");
        Ok(Completion {
            output,
            tokens_in,
            tokens_out,
            latency_ms,
            finish_reason: resp.stop_reason.as_deref().map(finish_reason),
            cost_usd: self
                .price
                .map_or(0.0, |p| p.cost_usd(tokens_in, tokens_out)),
            cached: false,
            rate_limit: answer.rate_limit,
        })
    }
}

#[cfg(test)]
mod tests {
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

    fn provider(config: Value, e: &[(&str, &str)]) -> Result<AnthropicProvider, ProviderError> {
        AnthropicProvider::new(
            "anthropic:messages:claude-sonnet-4-20250514",
            "claude-sonnet-4-20250514",
            &cfg(config),
            &env(e),
            reqwest::Client::new(),
        )
    }

    #[test]
    fn system_messages_move_to_the_system_field() {
        let prompt = json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "And kind."},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"}
        ])
        .to_string();
        let (system, messages) = split_system(&prompt);
        assert_eq!(system, Some(json!("Be brief.\n\nAnd kind.")));
        assert_eq!(
            messages,
            vec![
                json!({"role": "user", "content": "hi"}),
                json!({"role": "assistant", "content": "hello"}),
                json!({"role": "user", "content": "bye"})
            ]
        );
        let (system, messages) = split_system("plain text");
        assert_eq!(system, None);
        assert_eq!(
            messages,
            vec![json!({"role": "user", "content": "plain text"})]
        );
        let blocks = json!([
            {"role": "system", "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "b"},
            {"role": "user", "content": "u"}
        ])
        .to_string();
        assert_eq!(
            split_system(&blocks).0,
            Some(json!([
                {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "b"}
            ]))
        );
    }

    #[test]
    fn body_defaults_max_tokens_and_temperature_and_keeps_params() {
        let p = provider(json!({"apiKey": "sk-ant-x", "top_k": 5}), &[]).unwrap();
        assert_eq!(
            p.body("hi"),
            json!({"model": "claude-sonnet-4-20250514", "max_tokens": 1024, "temperature": 0,
                   "top_k": 5, "messages": [{"role": "user", "content": "hi"}]})
        );
        let p = provider(
            json!({"apiKey": "k", "max_tokens": 99, "thinking": {"type": "enabled", "budget_tokens": 64}}),
            &[("ANTHROPIC_MAX_TOKENS", "5")],
        )
        .unwrap();
        let body = p.body("hi");
        assert_eq!(body["max_tokens"], 99);
        assert!(body.get("temperature").is_none());
        let p = provider(json!({"apiKey": "k"}), &[("ANTHROPIC_MAX_TOKENS", "5")]).unwrap();
        assert_eq!(p.body("hi")["max_tokens"], 5);
    }

    #[test]
    fn the_public_api_needs_a_key_and_a_base_url_does_not() {
        let err = provider(json!({}), &[]).unwrap_err().to_string();
        assert!(err.contains("ANTHROPIC_API_KEY"), "{err}");
        let p = provider(json!({}), &[("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")]).unwrap();
        assert_eq!(p.url, "http://127.0.0.1:9/v1/messages");
        let p = provider(json!({"apiBaseUrl": "http://gw/v1"}), &[]).unwrap();
        assert_eq!(p.url, "http://gw/v1/messages");
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let p = provider(
            json!({"apiKeyEnvar": "TEAM_KEY"}),
            &[("TEAM_KEY", "sk-ant-very-secret")],
        )
        .unwrap();
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("sk-ant-very-secret"), "{dbg}");
        assert_eq!(p.headers["x-api-key"], "sk-ant-very-secret");
    }

    #[test]
    fn stop_reasons_are_normalised_and_text_blocks_joined() {
        assert_eq!(finish_reason("end_turn"), "stop");
        assert_eq!(finish_reason("max_tokens"), "length");
        assert_eq!(finish_reason("tool_use"), "tool_calls");
        assert_eq!(finish_reason("pause_turn"), "pause_turn");
        let content = [
            json!({"type": "thinking", "thinking": "hmm"}),
            json!({"type": "text", "text": "a"}),
            json!({"type": "text", "text": "b"}),
        ];
        assert_eq!(output_of(&content), "a\n\nb");
    }
}
