//! Building providers from promptfoo-style ids and config maps, all sharing
//! one pooled HTTP client.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use serde_json::{Map, Value};

use crate::{
    EchoProvider, Provider, ProviderError,
    anthropic::AnthropicProvider,
    breaker::{BreakerPolicy, BreakerProvider, BreakerRegistry, BreakerSnapshot},
    config,
    http::HttpProvider,
    ollama::OllamaProvider,
    openai::{OpenAiApi, OpenAiProvider},
    retry::{RetryPolicy, RetryingProvider},
    traced::{GenAi, TracedProvider},
};

const SUPPORTED: &str = "openai:chat:<model>, openai:completion:<model>, openai:<model>, \
     openai:embeddings:<model> (grading only), \
     anthropic:messages:<model>, anthropic:<model>, ollama:chat:<model>, ollama:<model>, \
     http (with `url`), an http:// or https:// URL, echo";
/// promptfoo's other `openai:<kind>:` families, which are not model names.
const UNSUPPORTED_OPENAI_KINDS: &[&str] = &[
    "assistant",
    "image",
    "moderation",
    "realtime",
    "responses",
    "transcription",
];

/// Settings of the shared HTTP client and the default retry policy.
#[derive(Debug, Clone)]
pub struct FactoryOptions {
    /// Per-request timeout unless a provider's `timeout` (or `timeoutMs`) says otherwise.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per host; sized for ~1000 concurrent calls.
    pub pool_max_idle_per_host: usize,
    /// Used when a provider config has no `maxRetries`.
    pub retry: RetryPolicy,
    /// The circuit breaker of each endpoint, unless the first provider built
    /// for it says otherwise (`breakerThreshold`, `breakerCooldownMs`).
    pub breaker: BreakerPolicy,
}

impl Default for FactoryOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            pool_max_idle_per_host: 1024,
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
        }
    }
}

/// Builds providers. Cheap to share; every provider it builds reuses its client.
#[derive(Clone)]
pub struct ProviderFactory {
    env: Arc<HashMap<String, String>>,
    client: reqwest::Client,
    options: FactoryOptions,
    breakers: Arc<BreakerRegistry>,
}

impl fmt::Debug for ProviderFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment holds API keys; show only how many variables there are.
        f.debug_struct("ProviderFactory")
            .field("env_vars", &self.env.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ProviderFactory {
    /// A factory reading keys and base URLs from `env` (e.g. `OPENAI_API_KEY`).
    ///
    /// # Panics
    /// If the TLS backend cannot be initialised, as `reqwest::Client::new` does.
    pub fn new(env: HashMap<String, String>) -> Self {
        Self::with_options(env, FactoryOptions::default())
            .expect("the HTTP client builds with default options")
    }

    /// A factory over this process's environment variables.
    pub fn from_process_env() -> Self {
        Self::new(std::env::vars().collect())
    }

    pub fn with_options(
        env: HashMap<String, String>,
        options: FactoryOptions,
    ) -> Result<Self, ProviderError> {
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(60))
            .user_agent(concat!("gauntlet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            env: Arc::new(env),
            client,
            options,
            breakers: Arc::default(),
        })
    }

    /// The state of every endpoint's circuit breaker, by endpoint, for metrics.
    pub fn breaker_states(&self) -> Vec<BreakerSnapshot> {
        self.breakers.snapshots()
    }

    /// The shared HTTP client, for other clients that should pool with the providers.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A variable of the factory's environment (API keys: crate use only).
    pub(crate) fn env_var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// Builds the provider for `id` with its suite `config`. Retries are on by
    /// default; `maxRetries: 0` turns them off.
    pub fn build(
        &self,
        id: &str,
        config: &Map<String, Value>,
    ) -> Result<Arc<dyn Provider>, ProviderError> {
        self.build_layered(id, config, &|provider| provider)
    }

    /// [`build`](Self::build) with `layer` wrapped around the client under
    /// the breaker and retries, so it sees every attempt
    /// ([`crate::limit`]'s rate limits and adaptive concurrency).
    pub fn build_layered(
        &self,
        id: &str,
        config: &Map<String, Value>,
        layer: &dyn Fn(Arc<dyn Provider>) -> Arc<dyn Provider>,
    ) -> Result<Arc<dyn Provider>, ProviderError> {
        let id = id.trim();
        // Every provider that makes HTTP calls names its endpoint, for the breaker.
        let endpoint: String;
        let gen_ai: GenAi;
        let provider: Arc<dyn Provider> = match id.split_once(':') {
            None if id == "echo" => return Ok(Arc::new(EchoProvider)),
            Some(("openai", rest)) => {
                let (api, model) = match rest.split_once(':') {
                    Some(("chat", model)) => (OpenAiApi::Chat, model),
                    Some(("completion", model)) => (OpenAiApi::Completion, model),
                    Some(("embedding" | "embeddings", model)) => (OpenAiApi::Embeddings, model),
                    Some((kind, _)) if UNSUPPORTED_OPENAI_KINDS.contains(&kind) => {
                        return Err(unsupported_kind(id, kind));
                    }
                    None if UNSUPPORTED_OPENAI_KINDS.contains(&rest) => {
                        return Err(unsupported_kind(id, rest));
                    }
                    // A bare model, which may itself contain ':' (fine-tunes: `ft:gpt-4o-mini:org::id`).
                    _ => (OpenAiApi::Chat, rest),
                };
                if model.is_empty()
                    || (api == OpenAiApi::Chat
                        && ["chat", "completion", "embedding", "embeddings"].contains(&model))
                {
                    return Err(ProviderError::Config(format!(
                        "provider id `{id}` names no model, e.g. openai:chat:gpt-4.1-mini"
                    )));
                }
                let p =
                    OpenAiProvider::new(id, api, model, config, &self.env, self.client.clone())?;
                endpoint = p.endpoint();
                gen_ai = GenAi {
                    system: "openai",
                    operation: match api {
                        OpenAiApi::Chat => "chat",
                        OpenAiApi::Completion => "text_completion",
                        OpenAiApi::Embeddings => "embeddings",
                    },
                    model: model.to_owned(),
                };
                Arc::new(p)
            }
            Some(("anthropic", rest)) => {
                let model = match rest.split_once(':') {
                    Some(("messages", model)) => model,
                    Some((kind, _)) => {
                        return Err(ProviderError::Unsupported(format!(
                            "provider id `{id}`: anthropic:{kind} is not supported; supported: {SUPPORTED}"
                        )));
                    }
                    None => rest,
                };
                if model.is_empty() || model == "messages" {
                    return Err(ProviderError::Config(format!(
                        "provider id `{id}` names no model, e.g. anthropic:messages:claude-sonnet-4-20250514"
                    )));
                }
                let p = AnthropicProvider::new(id, model, config, &self.env, self.client.clone())?;
                endpoint = p.endpoint();
                gen_ai = GenAi {
                    system: "anthropic",
                    operation: "chat",
                    model: model.to_owned(),
                };
                Arc::new(p)
            }
            Some(("ollama", rest)) => {
                let model = match rest.split_once(':') {
                    Some(("chat", model)) => model,
                    Some((kind @ ("completion" | "embedding" | "embeddings"), _)) => {
                        return Err(ProviderError::Unsupported(format!(
                            "provider id `{id}`: ollama:{kind} is not supported yet; supported: {SUPPORTED}"
                        )));
                    }
                    // Model tags contain ':' themselves (`llama3.2:3b`).
                    _ => rest,
                };
                if model.is_empty() || model == "chat" {
                    return Err(ProviderError::Config(format!(
                        "provider id `{id}` names no model, e.g. ollama:chat:llama3.2"
                    )));
                }
                let p = OllamaProvider::new(id, model, config, &self.env, self.client.clone())?;
                endpoint = p.endpoint();
                gen_ai = GenAi {
                    system: "ollama",
                    operation: "chat",
                    model: model.to_owned(),
                };
                Arc::new(p)
            }
            _ if id == "http" || id.starts_with("http://") || id.starts_with("https://") => {
                let p = HttpProvider::new(id, config, &self.env, self.client.clone())?;
                endpoint = p.endpoint();
                gen_ai = GenAi {
                    system: "http",
                    operation: "chat",
                    model: id.to_owned(),
                };
                Arc::new(p)
            }
            _ => {
                return Err(ProviderError::Unsupported(format!(
                    "unknown provider id `{id}`; supported: {SUPPORTED}"
                )));
            }
        };
        // Innermost, so each attempt is a span and a limiter's wait is not.
        let provider = layer(Arc::new(TracedProvider::new(provider, gen_ai)));
        let breaker = self.breaker_policy(config)?;
        let provider: Arc<dyn Provider> = if breaker.is_enabled() {
            Arc::new(BreakerProvider::new(
                provider,
                self.breakers.get(&endpoint, &breaker),
            ))
        } else {
            provider
        };
        let policy = self.retry_policy(config)?;
        Ok(if policy.max_attempts > 1 {
            Arc::new(RetryingProvider::new(provider, policy))
        } else {
            provider
        })
    }

    /// The factory's default policy adjusted by `maxRetries` (retries after the
    /// first attempt, as in promptfoo), `retryBaseDelayMs`, `retryMaxDelayMs`
    /// and `retryBudgetMs` (the whole call, waits and attempts included).
    fn retry_policy(&self, config: &Map<String, Value>) -> Result<RetryPolicy, ProviderError> {
        let mut policy = self.options.retry.clone();
        if let Some(retries) = config::uint(config, "maxRetries")? {
            policy.max_attempts = u32::try_from(retries).unwrap_or(u32::MAX - 1) + 1;
        }
        if let Some(ms) = config::uint(config, "retryBaseDelayMs")? {
            policy.base_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = config::uint(config, "retryMaxDelayMs")? {
            policy.max_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = config::uint(config, "retryBudgetMs")? {
            policy.max_total = Duration::from_millis(ms);
        }
        Ok(policy)
    }

    /// The factory's breaker policy adjusted by `breakerThreshold` (consecutive
    /// failures that open the circuit; 0 turns the breaker off) and
    /// `breakerCooldownMs`.
    fn breaker_policy(&self, config: &Map<String, Value>) -> Result<BreakerPolicy, ProviderError> {
        let mut policy = self.options.breaker.clone();
        if let Some(n) = config::uint(config, "breakerThreshold")? {
            policy.failure_threshold = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(ms) = config::uint(config, "breakerCooldownMs")? {
            policy.cooldown = Duration::from_millis(ms);
        }
        Ok(policy)
    }
}

fn unsupported_kind(id: &str, kind: &str) -> ProviderError {
    ProviderError::Unsupported(format!(
        "provider id `{id}`: openai:{kind} is not supported yet; supported: {SUPPORTED}"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn factory() -> ProviderFactory {
        ProviderFactory::new(HashMap::from([
            (
                "OPENAI_BASE_URL".to_owned(),
                "http://127.0.0.1:9/v1".to_owned(),
            ),
            (
                "ANTHROPIC_BASE_URL".to_owned(),
                "http://127.0.0.1:9".to_owned(),
            ),
        ]))
    }

    fn build(id: &str) -> Result<Arc<dyn Provider>, ProviderError> {
        factory().build(id, &Map::new())
    }

    #[test]
    fn promptfoo_ids_resolve_and_keep_their_id() {
        for id in [
            "openai:gpt-4.1",
            "openai:chat:gpt-4.1-mini",
            "openai:completion:gpt-3.5-turbo-instruct",
            "openai:ft:gpt-4o-mini:org::abc",
            "openai:embedding:text-embedding-3-small",
            "openai:embeddings:text-embedding-3-large",
            "anthropic:messages:claude-sonnet-4-20250514",
            "anthropic:claude-3-5-haiku-latest",
            "ollama:chat:llama3.2:3b",
            "ollama:llama3.2",
            "https://svc.example/generate",
            "echo",
        ] {
            assert_eq!(build(id).unwrap().id(), id);
        }
    }

    #[test]
    fn unknown_ids_name_themselves_and_the_supported_forms() {
        let err = build("vertex:gemini-2.5-pro").unwrap_err();
        assert!(matches!(err, ProviderError::Unsupported(_)));
        let text = err.to_string();
        assert!(
            text.contains("vertex:gemini-2.5-pro")
                && text.contains("openai:chat:<model>")
                && text.contains("anthropic:messages:<model>"),
            "{text}"
        );
        assert!(matches!(
            build("anthropic:completion:claude-2"),
            Err(ProviderError::Unsupported(_))
        ));
        assert!(matches!(
            build("ollama:embeddings:nomic-embed-text"),
            Err(ProviderError::Unsupported(_))
        ));
        assert!(matches!(
            build("anthropic:messages:"),
            Err(ProviderError::Config(_))
        ));
        assert!(matches!(
            build("openai:embeddings"),
            Err(ProviderError::Config(_))
        ));
        assert!(matches!(
            build("openai:chat:"),
            Err(ProviderError::Config(_))
        ));
        assert!(matches!(
            build("openai:chat"),
            Err(ProviderError::Config(_))
        ));
    }

    #[test]
    fn max_retries_counts_retries_after_the_first_attempt() {
        let f = factory();
        let policy = |c: Value| f.retry_policy(c.as_object().unwrap()).unwrap();
        assert_eq!(policy(json!({})).max_attempts, 4);
        assert_eq!(policy(json!({"maxRetries": 0})).max_attempts, 1);
        assert_eq!(
            policy(json!({"maxRetries": 2, "retryBaseDelayMs": 5})).base_delay,
            Duration::from_millis(5)
        );
        assert!(
            f.retry_policy(json!({"maxRetries": -1}).as_object().unwrap())
                .is_err()
        );
    }

    #[test]
    fn retry_budget_and_breaker_settings_come_from_config() {
        let f = factory();
        let c = json!({"retryBudgetMs": 1500, "breakerThreshold": 2, "breakerCooldownMs": 50});
        let c = c.as_object().unwrap();
        assert_eq!(
            f.retry_policy(c).unwrap().max_total,
            Duration::from_millis(1500)
        );
        let b = f.breaker_policy(c).unwrap();
        assert_eq!(
            (b.failure_threshold, b.cooldown),
            (2, Duration::from_millis(50))
        );
        assert!(
            !f.breaker_policy(json!({"breakerThreshold": 0}).as_object().unwrap())
                .unwrap()
                .is_enabled()
        );
    }

    #[test]
    fn providers_of_one_endpoint_share_a_breaker() {
        let f = factory();
        f.build("openai:gpt-4.1", &Map::new()).unwrap();
        f.build("openai:completion:gpt-3.5-turbo-instruct", &Map::new())
            .unwrap();
        f.build("anthropic:claude-sonnet-4", &Map::new()).unwrap();
        f.build("echo", &Map::new()).unwrap();
        let endpoints: Vec<_> = f.breaker_states().into_iter().map(|s| s.endpoint).collect();
        // OpenAI and Anthropic both point at 127.0.0.1:9 here: one endpoint, one breaker.
        assert_eq!(endpoints, ["http://127.0.0.1:9"]);
    }

    #[test]
    fn factory_debug_hides_the_environment() {
        let f = ProviderFactory::new(HashMap::from([(
            "OPENAI_API_KEY".to_owned(),
            "sk-hidden".to_owned(),
        )]));
        assert!(!format!("{f:?}").contains("sk-hidden"));
    }
}
