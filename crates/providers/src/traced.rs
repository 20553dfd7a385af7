//! A span per model call attempt, with the OpenTelemetry GenAI conventions:
//! [`TracedProvider`] wraps a concrete client (under the limits, the breaker
//! and the retries, so each attempt is one span), and [`crate::transport`]
//! adds the HTTP attributes and sends the span's `traceparent` to the vendor.

use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry::{Array, StringValue, Value};
use tracing::{Instrument as _, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{Completion, Embeddings, Provider, ProviderError};

/// What a call span says about the model it calls.
#[derive(Debug, Clone)]
pub struct GenAi {
    /// `gen_ai.provider.name` (and the older `gen_ai.system`): `openai`,
    /// `anthropic`, `ollama`, or `http` for a generic endpoint.
    pub system: &'static str,
    /// `gen_ai.operation.name`: `chat`, `text_completion` or `embeddings`.
    pub operation: &'static str,
    /// `gen_ai.request.model`.
    pub model: String,
}

/// A provider whose every call runs in a CLIENT span named
/// `<operation> <model>`, with the request's model, the usage and finish
/// reason of the answer, and, on failure, status ERROR with the reason.
pub struct TracedProvider {
    inner: Arc<dyn Provider>,
    gen_ai: GenAi,
}

impl TracedProvider {
    pub fn new(inner: Arc<dyn Provider>, gen_ai: GenAi) -> Self {
        Self { inner, gen_ai }
    }

    fn span(&self, operation: &'static str) -> Span {
        tracing::info_span!(
            "gen_ai.call",
            otel.name = %format_args!("{operation} {}", self.gen_ai.model),
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            gen_ai.operation.name = operation,
            gen_ai.system = self.gen_ai.system,
            gen_ai.provider.name = self.gen_ai.system,
            gen_ai.request.model = self.gen_ai.model.as_str(),
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            gauntlet.provider = self.inner.id(),
            // Recorded by `transport::send`.
            http.request.method = Empty,
            http.response.status_code = Empty,
            server.address = Empty,
            server.port = Empty,
            error.type = Empty,
        )
    }
}

impl std::fmt::Debug for TracedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedProvider")
            .field("id", &self.inner.id())
            .field("gen_ai", &self.gen_ai)
            .finish()
    }
}

/// Marks `span` failed with `error`: status ERROR with its message, and
/// `error.type` unless the transport already set the status code's.
pub(crate) fn record_error(span: &Span, error: &ProviderError) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", error.to_string().as_str());
    span.record("error.type", error.kind());
}

#[async_trait]
impl Provider for TracedProvider {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError> {
        if !gauntlet_telemetry::propagation::spans_wanted() {
            return self.inner.complete(prompt).await;
        }
        let operation = self.gen_ai.operation;
        let span = self.span(operation);
        let answer = self.inner.complete(prompt).instrument(span.clone()).await;
        match &answer {
            Ok(c) => {
                span.record("gen_ai.usage.input_tokens", i64::from(c.tokens_in));
                span.record("gen_ai.usage.output_tokens", i64::from(c.tokens_out));
                if let Some(reason) = &c.finish_reason {
                    span.set_attribute(
                        "gen_ai.response.finish_reasons",
                        Value::Array(Array::String(vec![StringValue::from(reason.clone())])),
                    );
                }
            }
            Err(error) => record_error(&span, error),
        }
        answer
    }

    async fn embed(&self, texts: &[String]) -> Result<Embeddings, ProviderError> {
        if !gauntlet_telemetry::propagation::spans_wanted() {
            return self.inner.embed(texts).await;
        }
        let span = self.span("embeddings");
        let answer = self.inner.embed(texts).instrument(span.clone()).await;
        if let Err(error) = &answer {
            record_error(&span, error);
        }
        answer
    }
}
