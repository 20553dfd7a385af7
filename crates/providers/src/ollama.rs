//! Ollama's native chat API (`ollama:chat:<model>` and `ollama:<model>`):
//! `POST /api/chat` with `stream: false`, sampling settings under `options`.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap};
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

const DEFAULT_BASE_URL: &str = "http://127.0.0.1:11434";

/// Config keys that Ollama reads from `options` (promptfoo lists the same).
const OPTION_KEYS: &[&str] = &[
    "num_predict",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "tfs_z",
    "stop",
    "seed",
    "num_ctx",
    "num_keep",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "penalize_newline",
    "mirostat",
    "mirostat_eta",
    "mirostat_tau",
    "low_vram",
    "use_mmap",
    "use_mlock",
    "numa",
];
/// Config keys sent at the top level of the request.
const BODY_KEYS: &[&str] = &["format", "keep_alive", "think", "tools"];

#[derive(Debug)]
pub(crate) struct OllamaProvider {
    id: String,
    model: String,
    url: String,
    /// The optional `Authorization` (marked sensitive) and the config's extra headers.
    headers: HeaderMap,
    /// Everything of the body but the model and messages.
    params: Map<String, Value>,
    timeout: Option<Duration>,
    price: Option<Price>,
    client: reqwest::Client,
    secrets: Vec<Secret>,
}

impl OllamaProvider {
    pub(crate) fn new(
        id: &str,
        model: &str,
        config: &ConfigMap,
        env: &HashMap<String, String>,
        client: reqwest::Client,
    ) -> Result<Self, ProviderError> {
        let base = transport::base_url(config, env, &["OLLAMA_BASE_URL"], DEFAULT_BASE_URL)?;
        // Plain Ollama has no keys; a proxy in front of it may want one.
        let key = transport::api_key(config, env, "OLLAMA_API_KEY")?;
        let mut headers = transport::config_headers(id, config, true, |_, v| Ok(v.to_owned()))?;
        if let Some(key) = &key {
            headers.insert(AUTHORIZATION, key.header_value(id, "Bearer ")?);
        }

        let mut options = match config.get("options") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => {
                return Err(ProviderError::Config(format!(
                    "{id}: `options` must be an object of Ollama model options"
                )));
            }
        };
        for key in OPTION_KEYS {
            if let Some(value) = config.get(*key).filter(|v| !v.is_null()) {
                options.insert((*key).to_owned(), value.clone());
            }
        }
        // OpenAI-style configs say `max_tokens`; Ollama calls it `num_predict`.
        if let Some(max) = config.get("max_tokens").filter(|v| !v.is_null()) {
            options.entry("num_predict").or_insert_with(|| max.clone());
        }
        let mut params = Map::new();
        params.insert("stream".to_owned(), false.into());
        if !options.is_empty() {
            params.insert("options".to_owned(), Value::Object(options));
        }
        for key in BODY_KEYS {
            if let Some(value) = config.get(*key).filter(|v| !v.is_null()) {
                params.insert((*key).to_owned(), value.clone());
            }
        }

        let mut secrets = transport::header_secrets(&headers);
        secrets.extend(key);
        Ok(Self {
            id: id.to_owned(),
            model: model.to_owned(),
            url: format!("{base}/api/chat"),
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
        let messages = chat_messages(prompt)
            .unwrap_or_else(|| vec![json!({"role": "user", "content": prompt})]);
        body.insert("messages".to_owned(), Value::Array(messages));
        Value::Object(body)
    }
}

#[derive(Deserialize)]
struct Response {
    message: Option<Message>,
    done_reason: Option<String>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: String,
    tool_calls: Option<Value>,
}

#[async_trait]
impl Provider for OllamaProvider {
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
        let output = match resp.message {
            Some(m) if m.content.is_empty() => m
                .tool_calls
                .filter(|c| !c.is_null())
                .map(|c| c.to_string())
                .unwrap_or_default(),
            Some(m) => m.content,
            None => {
                return Err(ProviderError::Decode(format!(
                    "{}: the answer has no message",
                    self.id
                )));
            }
        };
        // Ollama leaves out prompt_eval_count when the whole prompt was cached.
        let tokens_in = resp
            .prompt_eval_count
            .map_or_else(|| estimate_tokens(prompt), transport::saturate);
        let tokens_out = resp
            .eval_count
            .map_or_else(|| estimate_tokens(&output), transport::saturate);
        let latency_ms = answer.latency_ms;
        tracing::debug!(provider = %self.id, latency_ms, tokens_in, tokens_out, "provider call completed");
        Ok(Completion {
            output,
            tokens_in,
            tokens_out,
            latency_ms,
            finish_reason: resp.done_reason,
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

    fn provider(config: Value, env: &[(&str, &str)]) -> OllamaProvider {
        OllamaProvider::new(
            "ollama:chat:llama3.2:3b",
            "llama3.2:3b",
            config.as_object().unwrap(),
            &env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            reqwest::Client::new(),
        )
        .unwrap()
    }

    #[test]
    fn sampling_settings_go_under_options() {
        let p = provider(
            json!({"temperature": 0.1, "num_predict": 32, "stop": ["\n"], "seed": 3,
                   "top_p": 0.9, "format": "json", "options": {"num_ctx": 4096}}),
            &[],
        );
        assert_eq!(p.url, "http://127.0.0.1:11434/api/chat");
        assert_eq!(
            p.body("hi"),
            json!({"model": "llama3.2:3b", "stream": false, "format": "json",
                   "messages": [{"role": "user", "content": "hi"}],
                   "options": {"temperature": 0.1, "num_predict": 32, "stop": ["\n"], "seed": 3,
                               "top_p": 0.9, "num_ctx": 4096}})
        );
    }

    #[test]
    fn max_tokens_is_num_predict_unless_that_is_given() {
        let p = provider(json!({"max_tokens": 8}), &[]);
        assert_eq!(p.body("x")["options"]["num_predict"], 8);
        let p = provider(json!({"max_tokens": 8, "num_predict": 4}), &[]);
        assert_eq!(p.body("x")["options"]["num_predict"], 4);
        assert!(provider(json!({}), &[]).body("x").get("options").is_none());
    }

    #[test]
    fn base_url_and_key_come_from_the_environment() {
        let p = provider(
            json!({}),
            &[
                ("OLLAMA_BASE_URL", "http://gpu-box:11434/"),
                ("OLLAMA_API_KEY", "ollama-proxy-secret"),
            ],
        );
        assert_eq!(p.url, "http://gpu-box:11434/api/chat");
        assert_eq!(p.endpoint(), "http://gpu-box:11434");
        assert!(!format!("{p:?}").contains("ollama-proxy-secret"));
    }
}
