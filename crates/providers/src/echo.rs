//! The `echo` provider: answers with the rendered prompt itself, for dry runs
//! and tests of the pipeline around the model.

use async_trait::async_trait;

use crate::{Completion, Provider, ProviderError, estimate_tokens};

#[derive(Debug, Default, Clone)]
pub struct EchoProvider;

#[async_trait]
impl Provider for EchoProvider {
    fn id(&self) -> &str {
        "echo"
    }

    async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError> {
        Ok(Completion {
            output: prompt.to_owned(),
            tokens_in: estimate_tokens(prompt),
            tokens_out: estimate_tokens(prompt),
            latency_ms: 0,
            finish_reason: Some("stop".to_owned()),
            cost_usd: 0.0,
            cached: false,
            rate_limit: None,
        })
    }
}
