//! The OpenAI-compatible endpoints: chat completions, legacy completions and
//! embeddings. Every answer is deterministic (`"ECHO: "` + the last user
//! message) so suites run against the mock have known outputs.
//!
//! Request bodies are parsed borrowing from the received bytes, and the chat
//! messages are folded while parsing, so a request allocates little beyond its
//! response.

use std::{
    borrow::Cow,
    fmt,
    marker::PhantomData,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{
        HeaderValue, StatusCode,
        header::{CONTENT_TYPE, RETRY_AFTER},
    },
    response::Response,
};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{SeqAccess, Visitor},
};

use crate::{
    embedding,
    faults::{self, BadOverride, Fault},
    grader,
    server::Shared,
    stats::{Counters, Endpoint},
};

/// The prefix of every generated answer.
pub const ECHO_PREFIX: &str = "ECHO: ";
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Joins the text parts of an array-of-parts message content.
const PART_SEPARATOR: &str = "\n";

/// The mock's token estimate for `text`: about four characters a token,
/// rounded up, and never zero.
pub fn estimate_tokens(text: &str) -> u64 {
    tokens_for_chars(text.chars().count())
}

pub(crate) fn tokens_for_chars(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}

pub(crate) async fn chat(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    handle(&shared, Endpoint::Chat, req, chat_body).await
}

pub(crate) async fn completions(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    handle(&shared, Endpoint::Completions, req, completions_body).await
}

pub(crate) async fn embeddings(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    handle(&shared, Endpoint::Embeddings, req, embeddings_body).await
}

pub(crate) type BuildBody = fn(&Shared, &[u8]) -> Result<Vec<u8>, String>;

/// The path every API request takes: count it, validate and answer the body,
/// then apply the drawn fault and latency.
pub(crate) async fn handle(
    shared: &Shared,
    endpoint: Endpoint,
    req: Request,
    build: BuildBody,
) -> Response {
    let counters = &shared.counters;
    let _in_flight = counters.begin(endpoint);
    let (parts, body) = req.into_parts();
    if let Some(value) = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        counters.traceparent(value);
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            Counters::bump(&counters.bad_requests);
            return invalid_request(&format!("could not read the request body: {e}"));
        }
    };
    let config = shared.config.load();
    // Over a true cap the provider refuses at once, saying when to come back.
    if let Err(wait) = shared.cap.admit(config.max_rps, std::time::Instant::now()) {
        Counters::bump(&counters.faults_429);
        let mut resp = json(StatusCode::TOO_MANY_REQUESTS, RATE_LIMIT_BODY);
        let headers = resp.headers_mut();
        let ms = wait.as_millis().max(1) as u64;
        headers.insert(RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        headers.insert("retry-after-ms", HeaderValue::from(ms));
        return with_cap_headers(shared, config.max_rps, resp);
    }
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    let plan = match faults::plan(&config, seq, &parts.headers) {
        Ok(plan) => plan,
        Err(BadOverride(msg)) => {
            Counters::bump(&counters.bad_requests);
            return invalid_request(msg);
        }
    };
    let payload = match build(shared, &bytes) {
        Ok(payload) => payload,
        Err(msg) => {
            Counters::bump(&counters.bad_requests);
            return invalid_request(&msg);
        }
    };

    if plan.fault == Some(Fault::Timeout) {
        // Shutdown cuts the hang short so a stopping server is not held for `hang_ms`.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(config.hang_ms)) => {}
            () = shared.shutdown.cancelled() => {}
        }
        Counters::bump(&counters.faults_timeout);
        return json(StatusCode::GATEWAY_TIMEOUT, TIMEOUT_BODY);
    }
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    let resp = match plan.fault {
        Some(Fault::RateLimited) => {
            Counters::bump(&counters.faults_429);
            let mut resp = json(StatusCode::TOO_MANY_REQUESTS, RATE_LIMIT_BODY);
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(config.retry_after_secs));
            resp
        }
        Some(Fault::ServerError) => {
            Counters::bump(&counters.faults_500);
            json(StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR_BODY)
        }
        Some(Fault::Unavailable) => {
            Counters::bump(&counters.faults_500);
            let mut resp = json(StatusCode::SERVICE_UNAVAILABLE, SERVER_ERROR_BODY);
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(config.retry_after_secs));
            resp
        }
        Some(Fault::Timeout) | None => {
            Counters::bump(&counters.ok);
            json(StatusCode::OK, payload)
        }
    };
    with_cap_headers(shared, config.max_rps, resp)
}

/// Under a cap every answer reports the bucket as it is when sent, as
/// OpenAI's do: `x-ratelimit-limit-requests` (the burst),
/// `x-ratelimit-remaining-requests` and `x-ratelimit-reset-requests` (until
/// the bucket is whole; `<n>ms`).
fn with_cap_headers(shared: &Shared, max_rps: u64, mut resp: Response) -> Response {
    if max_rps == 0 {
        return resp;
    }
    let room = shared.cap.headroom(max_rps, std::time::Instant::now());
    let headers = resp.headers_mut();
    headers.insert(
        "x-ratelimit-limit-requests",
        HeaderValue::from(room.capacity),
    );
    headers.insert(
        "x-ratelimit-remaining-requests",
        HeaderValue::from(room.remaining),
    );
    let reset = format!("{}ms", room.reset.as_micros().div_ceil(1000));
    headers.insert(
        "x-ratelimit-reset-requests",
        HeaderValue::from_str(&reset).expect("digits and ms are a valid header value"),
    );
    resp
}

const RATE_LIMIT_BODY: &str = r#"{"error":{"message":"Rate limit reached for requests (mock). Please try again later.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
const SERVER_ERROR_BODY: &str = r#"{"error":{"message":"The server had an error while processing your request (mock).","type":"server_error","param":null,"code":null}}"#;
const TIMEOUT_BODY: &str = r#"{"error":{"message":"The upstream model timed out (mock).","type":"timeout","param":null,"code":"timeout"}}"#;

fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(crate) fn invalid_request(message: &str) -> Response {
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": null,
            "code": null,
        }
    });
    json(StatusCode::BAD_REQUEST, Bytes::from(body.to_string()))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `"ECHO: " + text`, cut to `max_tokens` worth of characters when given.
/// Returns the answer and whether it was cut.
pub(crate) fn echo(text: &str, max_tokens: Option<u64>) -> (String, bool) {
    let mut out = String::with_capacity(ECHO_PREFIX.len() + text.len());
    out.push_str(ECHO_PREFIX);
    out.push_str(text);
    if let Some(max) = max_tokens {
        let limit = usize::try_from(max.saturating_mul(4)).unwrap_or(usize::MAX);
        if let Some((cut, _)) = out.char_indices().nth(limit) {
            out.truncate(cut);
            return (out, true);
        }
    }
    (out, false)
}

pub(crate) fn check_max_tokens(max_tokens: Option<u64>) -> Result<(), String> {
    match max_tokens {
        Some(0) => Err("max_tokens must be at least 1".to_owned()),
        _ => Ok(()),
    }
}

pub(crate) fn to_json(value: &impl Serialize, hint: usize) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(hint);
    serde_json::to_writer(&mut buf, value).map_err(|e| e.to_string())?;
    Ok(buf)
}

pub(crate) fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid request body: {e}"))
}

// ---- chat completions ----

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    messages: Messages<'a>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

fn chat_body(shared: &Shared, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let req: ChatRequest<'_> = parse(bytes)?;
    shared.counters.model(&req.model);
    if req.messages.count == 0 {
        return Err("messages must contain at least one message".to_owned());
    }
    let max_tokens = req.max_completion_tokens.or(req.max_tokens);
    check_max_tokens(max_tokens)?;
    let last_user = req.messages.last_user.as_deref().unwrap_or("");
    // Gauntlet's grader prompts get a verdict (see `grader`), others the echo.
    let (content, cut) = match grader::answer(req.messages.system.as_deref(), last_user) {
        Some(verdict) => (verdict, false),
        None => echo(last_user, max_tokens),
    };
    let usage = Usage::new(
        tokens_for_chars(req.messages.chars),
        estimate_tokens(&content),
    );
    let resp = ChatResponse {
        id: Id("chatcmpl-mock-", shared.ids.fetch_add(1, Ordering::Relaxed)),
        object: "chat.completion",
        created: unix_now(),
        model: &req.model,
        choices: [ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: &content,
                refusal: None,
            },
            logprobs: None,
            finish_reason: if cut { "length" } else { "stop" },
        }],
        usage,
    };
    to_json(&resp, 320 + content.len())
}

/// The chat messages folded while parsing: their count, total content
/// characters, the first system message and the last user message, without
/// collecting them.
pub(crate) struct Messages<'a> {
    pub(crate) count: usize,
    pub(crate) chars: usize,
    pub(crate) system: Option<Cow<'a, str>>,
    pub(crate) last_user: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Messages<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fold<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Fold<'a> {
            type Value = Messages<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of chat messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages<'a>, A::Error> {
                let mut out = Messages {
                    count: 0,
                    chars: 0,
                    system: None,
                    last_user: None,
                };
                while let Some(msg) = seq.next_element::<Message<'a>>()? {
                    out.count += 1;
                    out.chars += msg.content.0.chars().count();
                    if msg.role == "user" {
                        out.last_user = Some(msg.content.0);
                    } else if msg.role == "system" && out.system.is_none() {
                        out.system = Some(msg.content.0);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Fold(PhantomData))
    }
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Content<'a>,
}

/// Message content: a string, null, or an array of parts whose `text`s are joined.
#[derive(Default)]
pub(crate) struct Content<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ContentVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, null or an array of content parts")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Content<'a>, E> {
                Ok(Content(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Content<'a>, E> {
                Ok(Content(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Content<'a>, E> {
                Ok(Content(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Content<'a>, E> {
                Ok(Content::default())
            }
            fn visit_none<E>(self) -> Result<Content<'a>, E> {
                Ok(Content::default())
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Content<'a>, D2::Error> {
                Content::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'a>, A::Error> {
                let mut joined: Option<Cow<'a, str>> = None;
                while let Some(part) = seq.next_element::<Part<'a>>()? {
                    let Some(Content(text)) = part.text else {
                        continue; // images, audio and other non-text parts
                    };
                    joined = Some(match joined {
                        None => text,
                        Some(prev) => {
                            let mut s = prev.into_owned();
                            s.push_str(PART_SEPARATOR);
                            s.push_str(&text);
                            Cow::Owned(s)
                        }
                    });
                }
                Ok(Content(joined.unwrap_or_default()))
            }
        }
        d.deserialize_any(ContentVisitor(PhantomData))
    }
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Content<'a>>,
}

#[derive(Serialize)]
struct ChatResponse<'a> {
    id: Id,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// A response id written straight into the output, without formatting a `String` first.
pub(crate) struct Id(pub(crate) &'static str, pub(crate) u64);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}{}", self.0, self.1))
    }
}

// ---- legacy completions ----

/// A `prompt` or `input`: one string, several, or token ids.
#[derive(Deserialize)]
#[serde(untagged)]
enum TextInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u64>),
    TokenBatches(Vec<Vec<u64>>),
}

#[derive(Deserialize)]
struct CompletionRequest<'a> {
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    prompt: TextInput,
    #[serde(default)]
    max_tokens: Option<u64>,
}

#[derive(Serialize)]
struct CompletionResponse<'a> {
    id: Id,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<CompletionChoice>,
    usage: Usage,
}

#[derive(Serialize)]
struct CompletionChoice {
    text: String,
    index: usize,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

fn completions_body(shared: &Shared, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let req: CompletionRequest<'_> = parse(bytes)?;
    shared.counters.model(&req.model);
    check_max_tokens(req.max_tokens)?;
    let prompts = match req.prompt {
        TextInput::One(p) => vec![p],
        TextInput::Many(ps) if !ps.is_empty() => ps,
        TextInput::Many(_) => return Err("prompt must not be an empty array".to_owned()),
        TextInput::Tokens(_) | TextInput::TokenBatches(_) => {
            return Err("token-id prompts are not supported by the mock".to_owned());
        }
    };
    let mut prompt_tokens = 0;
    let mut completion_tokens = 0;
    let choices: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(index, prompt)| {
            let (text, cut) = echo(prompt, req.max_tokens);
            prompt_tokens += estimate_tokens(prompt);
            completion_tokens += estimate_tokens(&text);
            CompletionChoice {
                text,
                index,
                logprobs: None,
                finish_reason: if cut { "length" } else { "stop" },
            }
        })
        .collect();
    let resp = CompletionResponse {
        id: Id("cmpl-mock-", shared.ids.fetch_add(1, Ordering::Relaxed)),
        object: "text_completion",
        created: unix_now(),
        model: &req.model,
        choices,
        usage: Usage::new(prompt_tokens, completion_tokens),
    };
    to_json(&resp, 512)
}

// ---- embeddings ----

#[derive(Deserialize)]
struct EmbeddingRequest<'a> {
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    input: TextInput,
    #[serde(default)]
    dimensions: Option<usize>,
}

#[derive(Serialize)]
struct EmbeddingResponse<'a> {
    object: &'static str,
    data: Vec<EmbeddingData>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingData {
    object: &'static str,
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

fn embeddings_body(shared: &Shared, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let req: EmbeddingRequest<'_> = parse(bytes)?;
    shared.counters.model(&req.model);
    let dimensions = req.dimensions.unwrap_or(embedding::DEFAULT_DIMENSIONS);
    if !(1..=embedding::MAX_DIMENSIONS).contains(&dimensions) {
        return Err(format!(
            "dimensions must be between 1 and {}",
            embedding::MAX_DIMENSIONS
        ));
    }
    let join_ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    let texts: Vec<String> = match req.input {
        TextInput::One(s) => vec![s],
        TextInput::Many(v) => v,
        TextInput::Tokens(ids) => vec![join_ids(&ids)],
        TextInput::TokenBatches(batches) => batches.iter().map(|b| join_ids(b)).collect(),
    };
    if texts.is_empty() {
        return Err("input must not be empty".to_owned());
    }
    let tokens: u64 = texts.iter().map(|t| estimate_tokens(t)).sum();
    let data = texts
        .iter()
        .enumerate()
        .map(|(index, text)| EmbeddingData {
            object: "embedding",
            index,
            embedding: embedding::embed(text, dimensions),
        })
        .collect();
    let resp = EmbeddingResponse {
        object: "list",
        data,
        model: &req.model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    to_json(&resp, 64 + texts.len() * dimensions * 12)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(json: &str) -> (usize, usize, Option<String>) {
        let req: ChatRequest<'_> = serde_json::from_str(json).unwrap();
        let m = req.messages;
        (m.count, m.chars, m.last_user.map(Cow::into_owned))
    }

    #[test]
    fn last_user_message_wins_and_all_messages_count_toward_chars() {
        let (count, chars, last) = fold(
            r#"{"model":"m","messages":[
                {"role":"system","content":"sys"},
                {"role":"user","content":"first"},
                {"role":"assistant","content":"reply"},
                {"role":"user","content":"second"},
                {"role":"assistant","content":null,"tool_calls":[]}]}"#,
        );
        assert_eq!(count, 5);
        assert_eq!(chars, 3 + 5 + 5 + 6);
        assert_eq!(last.as_deref(), Some("second"));
    }

    #[test]
    fn text_parts_are_joined_and_other_parts_skipped() {
        let (_, _, last) = fold(
            r#"{"messages":[{"role":"user","content":[
                {"type":"text","text":"look at"},
                {"type":"image_url","image_url":{"url":"http://x"}},
                {"type":"text","text":"this \"image\""}]}]}"#,
        );
        assert_eq!(last.as_deref(), Some("look at\nthis \"image\""));
    }

    #[test]
    fn escaped_content_is_unescaped() {
        let (_, chars, last) = fold(r#"{"messages":[{"role":"user","content":"a\nb\u00e9"}]}"#);
        assert_eq!(last.as_deref(), Some("a\nbé"));
        assert_eq!(chars, 4);
    }

    #[test]
    fn token_estimate_is_quarter_chars_rounded_up_at_least_one() {
        assert_eq!(estimate_tokens(""), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("ééééé"), 2, "counts characters, not bytes");
    }

    #[test]
    fn echo_truncates_to_max_tokens_on_a_char_boundary() {
        assert_eq!(echo("hi", None), ("ECHO: hi".to_owned(), false));
        assert_eq!(echo("hi", Some(2)), ("ECHO: hi".to_owned(), false));
        let (out, cut) = echo("ééééééééé", Some(2));
        assert!(cut);
        assert_eq!(out, "ECHO: éé");
    }
}
