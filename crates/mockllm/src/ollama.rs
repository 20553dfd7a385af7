//! The Ollama-style `POST /api/chat` endpoint (non-streaming only): the same
//! deterministic answer as chat completions, in Ollama's native shape, so the
//! Ollama provider can be tested offline.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    response::Response,
};
use serde::{Deserialize, Serialize};

use crate::{
    api::{self, Messages},
    server::Shared,
    stats::Endpoint,
};

pub(crate) async fn chat(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    api::handle(&shared, Endpoint::OllamaChat, req, chat_body).await
}

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    messages: Messages<'a>,
    /// Ollama streams unless told otherwise; the mock only answers whole.
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
}

#[derive(Deserialize, Default)]
struct Options {
    num_predict: Option<i64>,
}

#[derive(Serialize)]
struct ChatResponse<'a> {
    model: &'a str,
    created_at: String,
    message: Message<'a>,
    done: bool,
    done_reason: &'static str,
    total_duration: u64,
    prompt_eval_count: u64,
    eval_count: u64,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

fn chat_body(shared: &Shared, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let req: ChatRequest<'_> = api::parse(bytes)?;
    shared.counters.model(&req.model);
    if req.stream != Some(false) {
        return Err("the mock answers only non-streaming requests; send \"stream\": false".into());
    }
    if req.messages.count == 0 {
        return Err("messages must contain at least one message".to_owned());
    }
    // Ollama reads a negative num_predict as "no limit".
    let max_tokens = req.options.num_predict.and_then(|n| u64::try_from(n).ok());
    api::check_max_tokens(max_tokens)?;
    let last_user = req.messages.last_user.as_deref().unwrap_or("");
    let (content, cut) = api::echo(last_user, max_tokens);
    let resp = ChatResponse {
        model: &req.model,
        created_at: format!("{}", api::unix_now()),
        message: Message {
            role: "assistant",
            content: &content,
        },
        done: true,
        done_reason: if cut { "length" } else { "stop" },
        total_duration: 0,
        prompt_eval_count: api::tokens_for_chars(req.messages.chars),
        eval_count: api::estimate_tokens(&content),
    };
    api::to_json(&resp, 256 + content.len())
}
