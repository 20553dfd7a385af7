//! `gauntlet-providers`: the clients that call LLM providers for a test case.
//!
//! [`ProviderFactory`] turns a promptfoo-style provider id (`openai:gpt-4.1`,
//! `openai:chat:<model>`, `openai:completion:<model>`,
//! `anthropic:messages:<model>`, `ollama:chat:<model>`, `http` or a URL,
//! `echo`) and its config map into an [`Arc<dyn Provider>`](Provider) that
//! shares one pooled HTTP client, retries transient failures with backoff
//! honouring `Retry-After` ([`retry`]), fails fast while its endpoint's
//! circuit breaker is open ([`breaker`]), and prices each call ([`pricing`]).
//! Every answer's rate-limit headers ([`RateLimitInfo`]) travel with it, so
//! [`limit`] can hold a key's calls while the provider says it has no room.

mod anthropic;
pub mod breaker;
pub mod cache;
mod config;
mod echo;
mod embeddings;
mod error;
mod factory;
mod http;
pub mod limit;
mod ollama;
mod openai;
pub mod pricing;
mod ratelimit;
pub mod retry;
pub mod traced;
mod transport;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use breaker::{BreakerPolicy, BreakerSnapshot, BreakerState};
pub use echo::EchoProvider;
pub use embeddings::Embeddings;
pub use error::ProviderError;
pub use factory::{FactoryOptions, ProviderFactory};
pub use ratelimit::{Quota, RateLimitInfo};

/// A model that completes rendered prompts.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The provider id as written in the suite, e.g. `openai:gpt-4.1`.
    fn id(&self) -> &str;

    /// Completes one rendered prompt. A prompt that is a JSON array of
    /// `{role, content}` messages is sent as a chat conversation.
    async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError>;

    /// Embeds `texts`, one vector per text in order. Only embedding models
    /// do (`openai:embeddings:<model>`); wrappers must forward this.
    async fn embed(&self, texts: &[String]) -> Result<Embeddings, ProviderError> {
        let _ = texts;
        Err(ProviderError::Unsupported(format!(
            "{} cannot embed texts; use an embedding model such as openai:embeddings:text-embedding-3-small",
            self.id()
        )))
    }
}

impl std::fmt::Debug for dyn Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("id", &self.id()).finish()
    }
}

/// One model answer and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub output: String,
    pub tokens_in: u32,
    pub tokens_out: u32,
    /// Time of the successful attempt, request sent to body read; excludes retry waits.
    pub latency_ms: u32,
    pub finish_reason: Option<String>,
    pub cost_usd: f64,
    /// Whether the answer came from a cache rather than the provider.
    pub cached: bool,
    /// The answer's rate-limit headers, for the limits of its key; never
    /// cached (a stored answer says nothing about the key now).
    #[serde(skip)]
    pub rate_limit: Option<RateLimitInfo>,
}

/// A rough token count (about four characters a token, at least one) for
/// providers that report no usage.
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4))
        .unwrap_or(u32::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimate_rounds_up_and_is_never_zero() {
        assert_eq!(estimate_tokens(""), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcdefghi"), 3);
    }
}
