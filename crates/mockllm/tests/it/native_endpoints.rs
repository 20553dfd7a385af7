//! The Anthropic (`/v1/messages`) and Ollama (`/api/chat`) shaped endpoints.

use gauntlet_mockllm::{FAULT_HEADER, MockConfig, MockServer, estimate_tokens};
use serde_json::{Value, json};

use crate::{client, start};

async fn post(server: &MockServer, path: &str, body: Value, fault: Option<&str>) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}{path}", server.root_url()))
        .json(&body);
    if let Some(fault) = fault {
        req = req.header(FAULT_HEADER, fault);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn anthropic_messages_echo_the_last_user_turn_with_usage() {
    let server = start(MockConfig::default()).await;
    let (status, body) = post(
        &server,
        "/v1/messages",
        json!({
            "model": "claude-sonnet-4", "max_tokens": 64,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hello"}]},
                {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "bye"}
            ]
        }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "message");
    assert_eq!(
        body["content"][0],
        json!({"type": "text", "text": "ECHO: bye"})
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(
        body["usage"],
        json!({"input_tokens": estimate_tokens("Be brief.hellohibye"),
               "output_tokens": estimate_tokens("ECHO: bye")})
    );

    let (_, cut) = post(
        &server,
        "/v1/messages",
        json!({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "long question"}]}),
        None,
    )
    .await;
    assert_eq!(cut["stop_reason"], "max_tokens");
    assert_eq!(cut["content"][0]["text"], "ECHO: lo");

    let (status, _) = post(
        &server,
        "/v1/messages",
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        None,
    )
    .await;
    assert_eq!(status, 400, "max_tokens is required, as by the real API");
    let stats = server.stats();
    assert_eq!((stats.messages, stats.ok, stats.bad_requests), (3, 2, 1));
}

#[tokio::test]
async fn ollama_chat_answers_whole_with_eval_counts() {
    let server = start(MockConfig::default()).await;
    let (status, body) = post(
        &server,
        "/api/chat",
        json!({"model": "llama3.2", "stream": false,
               "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "why?"}],
               "options": {"temperature": 0, "num_predict": -1}}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["message"],
        json!({"role": "assistant", "content": "ECHO: why?"})
    );
    assert_eq!(
        (body["done"].clone(), body["done_reason"].clone()),
        (json!(true), json!("stop"))
    );
    assert_eq!(body["prompt_eval_count"], estimate_tokens("swhy?"));
    assert_eq!(body["eval_count"], estimate_tokens("ECHO: why?"));

    let (status, _) = post(
        &server,
        "/api/chat",
        json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}),
        None,
    )
    .await;
    assert_eq!(status, 400, "streaming is not mocked");
    assert_eq!(server.stats().ollama_chat, 2);
}

#[tokio::test]
async fn faults_apply_to_the_native_endpoints_too() {
    let server = start(MockConfig::default()).await;
    let messages =
        json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]});
    let (status, body) = post(&server, "/v1/messages", messages, Some("429")).await;
    assert_eq!(status, 429);
    assert!(body["error"]["message"].is_string());
    let chat =
        json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "x"}]});
    let (status, _) = post(&server, "/api/chat", chat, Some("500")).await;
    assert_eq!(status, 500);
    let stats = server.stats();
    assert_eq!(
        (
            stats.requests,
            stats.messages,
            stats.ollama_chat,
            stats.faults_429,
            stats.faults_500
        ),
        (2, 1, 1, 1, 1)
    );
}
