//! The Anthropic-style `POST /v1/messages` endpoint: the same deterministic
//! answer as chat completions (`"ECHO: "` + the last user message), in the
//! Messages API's shape, so the Anthropic provider can be tested offline.

use std::sync::{Arc, atomic::Ordering};

use axum::{
    extract::{Request, State},
    response::Response,
};
use serde::{Deserialize, Serialize};

use crate::{
    api::{self, Content, Id, Messages},
    server::Shared,
    stats::Endpoint,
};

pub(crate) async fn messages(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    api::handle(&shared, Endpoint::Messages, req, messages_body).await
}

#[derive(Deserialize)]
struct MessagesRequest<'a> {
    #[serde(borrow, default)]
    model: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    messages: Messages<'a>,
    /// Required by the real API; the mock insists too so a client that forgets it fails here.
    max_tokens: Option<u64>,
    #[serde(borrow, default)]
    system: Option<Content<'a>>,
}

#[derive(Serialize)]
struct MessagesResponse<'a> {
    id: Id,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [TextBlock<'a>; 1],
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    usage: Usage,
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
}

fn messages_body(shared: &Shared, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let req: MessagesRequest<'_> = api::parse(bytes)?;
    shared.counters.model(&req.model);
    let Some(max_tokens) = req.max_tokens else {
        return Err("max_tokens: Field required".to_owned());
    };
    api::check_max_tokens(Some(max_tokens))?;
    if req.messages.count == 0 {
        return Err("messages: at least one message is required".to_owned());
    }
    let system_chars = req.system.map_or(0, |s| s.0.chars().count());
    let last_user = req.messages.last_user.as_deref().unwrap_or("");
    let (text, cut) = api::echo(last_user, Some(max_tokens));
    let resp = MessagesResponse {
        id: Id("msg_mock_", shared.ids.fetch_add(1, Ordering::Relaxed)),
        kind: "message",
        role: "assistant",
        model: &req.model,
        content: [TextBlock {
            kind: "text",
            text: &text,
        }],
        stop_reason: if cut { "max_tokens" } else { "end_turn" },
        stop_sequence: None,
        usage: Usage {
            input_tokens: api::tokens_for_chars(req.messages.chars + system_chars),
            output_tokens: api::estimate_tokens(&text),
        },
    };
    api::to_json(&resp, 320 + text.len())
}
