use std::{collections::HashMap, sync::Arc};

use axum::{Json, Router, extract::State, http::HeaderMap, routing::post};
use gauntlet_mockllm::MockConfig;
use gauntlet_providers::{ProviderError, ProviderFactory};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{build, config, mock};

#[tokio::test]
async fn chat_round_trip_through_the_mock() {
    let server = mock(MockConfig {
        latency_ms: 60,
        ..MockConfig::default()
    })
    .await;
    let provider = build(&server, "openai:gpt-4.1", json!({}));
    let prompt = "Convert this English to French: Hello world";
    let c = provider.complete(prompt).await.unwrap();

    assert_eq!(c.output, format!("ECHO: {prompt}"));
    // The mock's usage: 43 prompt chars -> 11 tokens, 49 answer chars -> 13 tokens.
    assert_eq!((c.tokens_in, c.tokens_out), (11, 13));
    assert!(c.latency_ms >= 60, "latency {}", c.latency_ms);
    assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    // gpt-4.1 lists at $2 / $8 per million tokens.
    assert!(
        (c.cost_usd - (11.0 * 2.0 + 13.0 * 8.0) / 1e6).abs() < 1e-12,
        "{}",
        c.cost_usd
    );
    assert!(!c.cached);
    let stats = server.stats();
    assert_eq!(stats.models.get("gpt-4.1"), Some(&1));
    assert_eq!(stats.ok, 1);
}

#[tokio::test]
async fn json_chat_array_prompts_are_sent_as_messages() {
    let server = mock(MockConfig::default()).await;
    let provider = build(&server, "openai:chat:o4-mini", json!({}));
    let prompt = json!([
        {"role": "system", "content": "You translate."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "premier"},
        {"role": "user", "content": "second"}
    ])
    .to_string();
    let c = provider.complete(&prompt).await.unwrap();
    assert_eq!(c.output, "ECHO: second");
    // All four messages count: 14 + 5 + 7 + 6 = 32 chars -> 8 tokens.
    assert_eq!(c.tokens_in, 8);

    // JSON that is not a list of messages is just text.
    let c = provider.complete("[1, 2, 3]").await.unwrap();
    assert_eq!(c.output, "ECHO: [1, 2, 3]");
}

#[tokio::test]
async fn legacy_completion_provider_uses_the_completions_endpoint() {
    let server = mock(MockConfig::default()).await;
    let provider = build(
        &server,
        "openai:completion:gpt-3.5-turbo-instruct",
        json!({"max_tokens": 3}),
    );
    let c = provider
        .complete("Say something long enough to cut")
        .await
        .unwrap();
    assert_eq!(c.output, "ECHO: Say so");
    assert_eq!(c.finish_reason.as_deref(), Some("length"));
    assert_eq!(c.tokens_out, 3);
    let stats = server.stats();
    assert_eq!((stats.completions, stats.chat), (1, 0));
}

#[tokio::test]
async fn config_cost_overrides_the_price_table() {
    let server = mock(MockConfig::default()).await;
    let provider = build(
        &server,
        "openai:gpt-4.1",
        json!({"inputCost": 0.001, "outputCost": 0.002}),
    );
    let c = provider.complete("abcd").await.unwrap();
    // 1 prompt token, "ECHO: abcd" = 10 chars -> 3 tokens.
    assert!(
        (c.cost_usd - (0.001 + 3.0 * 0.002)).abs() < 1e-12,
        "{}",
        c.cost_usd
    );
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// A stand-in for an OpenAI-compatible server that records what it receives.
async fn capture_server(status: u16, reply: Value) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(
                move |State(seen): State<Seen>, headers: HeaderMap, Json(body): Json<Value>| {
                    let reply = reply.clone();
                    async move {
                        seen.lock().await.push((headers, body));
                        (
                            axum::http::StatusCode::from_u16(status).unwrap(),
                            Json(reply),
                        )
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn key_params_and_extra_headers_reach_the_server() {
    let reply = json!({"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]});
    let (url, seen) = capture_server(200, reply).await;
    let factory = ProviderFactory::new(HashMap::from([
        ("OPENAI_BASE_URL".to_owned(), url),
        ("TEAM_KEY".to_owned(), "sk-team".to_owned()),
    ]));
    let provider = factory
        .build(
            "openai:gpt-4o-mini",
            &config(json!({
                "apiKeyEnvar": "TEAM_KEY",
                "temperature": 0,
                "seed": 7,
                "stop": ["\n\n"],
                "headers": {"x-team": "evals"},
                "maxRetries": 0
            })),
        )
        .unwrap();
    let c = provider.complete("Hello there").await.unwrap();
    assert_eq!(c.output, "hi");
    // No usage in the answer: tokens are estimated.
    assert_eq!((c.tokens_in, c.tokens_out), (3, 1));

    let seen = seen.lock().await;
    let (headers, body) = &seen[0];
    assert_eq!(headers["authorization"], "Bearer sk-team");
    assert_eq!(headers["x-team"], "evals");
    assert_eq!(
        body,
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}],
                "temperature": 0, "seed": 7, "stop": ["\n\n"]})
    );
}

#[tokio::test]
async fn a_rejected_key_is_not_repeated_in_the_error() {
    let reply = json!({"error": {"message": "Incorrect API key provided: sk-leaky-key-123.", "type": "invalid_request_error"}});
    let (url, seen) = capture_server(401, reply).await;
    let provider = ProviderFactory::new(HashMap::from([
        ("OPENAI_BASE_URL".to_owned(), url),
        ("OPENAI_API_KEY".to_owned(), "sk-leaky-key-123".to_owned()),
    ]))
    .build("openai:gpt-4.1", &config(json!({})))
    .unwrap();
    let err = provider.complete("x").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Http { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("sk-leaky-key-123"), "{shown}");
    assert!(shown.contains("Incorrect API key provided"));
    assert_eq!(seen.lock().await.len(), 1, "a 401 is not retried");
}
