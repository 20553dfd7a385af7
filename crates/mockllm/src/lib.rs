//! `gauntlet-mockllm`: an OpenAI-compatible mock model server with latency and
//! fault injection, used by tests, demos and benchmarks in place of a vendor.
//!
//! Chat answers are `"ECHO: "` followed by the last user message, the same
//! behaviour as the mock behind the promptfoo peer suites, so expected outputs
//! are known in advance. Faults (429 with `Retry-After`, 500, hang then 504) are
//! drawn per request from [`MockConfig`]'s rates or forced with the
//! `x-mock-fault` header; `x-mock-latency-ms` forces one request's latency.
//!
//! Gauntlet's grader prompts (model-graded assertions) get deterministic
//! verdicts instead of the echo, by rules a test can aim at (documented in
//! `src/grader.rs`). Embeddings are hashed bags of words, so texts sharing words are close.
//!
//! Besides the OpenAI endpoints it answers Anthropic's `POST /v1/messages` and
//! Ollama's `POST /api/chat` (non-streaming) in their own shapes, with the same
//! answers, faults and per-endpoint counters.

mod admin;
mod anthropic;
mod api;
mod cap;
mod config;
mod embedding;
mod faults;
mod grader;
mod ollama;
mod server;
mod stats;

pub use api::{ECHO_PREFIX, estimate_tokens};
pub use config::MockConfig;
pub use faults::{FAULT_HEADER, LATENCY_HEADER};
pub use grader::{GARBLED, GRADER_MARKER};
pub use server::{MockServer, serve};
pub use stats::MockStats;

/// Errors of the mock's own configuration.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("invalid mock config `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
}
