use gauntlet_mockllm::{MockConfig, MockStats};
use serde_json::{Value, json};

use crate::{chat, client, start, user};

#[tokio::test]
async fn stats_count_each_endpoint_outcome_and_model() {
    let server = start(MockConfig::default()).await;
    chat(&server, user("a")).await;
    chat(
        &server,
        json!({"model": "o4-mini", "messages": [{"role": "user", "content": "b"}]}),
    )
    .await;
    client()
        .post(format!("{}/chat/completions", server.base_url()))
        .header("x-mock-fault", "429")
        .json(&user("c"))
        .send()
        .await
        .unwrap();
    client()
        .post(format!("{}/completions", server.base_url()))
        .json(&json!({"model": "davinci-002", "prompt": "p"}))
        .send()
        .await
        .unwrap();
    client()
        .post(format!("{}/embeddings", server.base_url()))
        .json(&json!({"model": "text-embedding-3-small", "input": "e"}))
        .send()
        .await
        .unwrap();

    let stats: MockStats = client()
        .get(format!("{}/stats", server.root_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, server.stats());
    assert_eq!(stats.requests, 5);
    assert_eq!((stats.chat, stats.completions, stats.embeddings), (3, 1, 1));
    assert_eq!((stats.ok, stats.faults_429), (4, 1));
    assert_eq!(stats.models.get("gpt-4.1"), Some(&2));
    assert_eq!(stats.models.get("o4-mini"), Some(&1));
    assert_eq!(stats.models.get("davinci-002"), Some(&1));
    assert_eq!(stats.in_flight_peak, 1);

    let reset: MockStats = client()
        .post(format!("{}/admin/reset", server.root_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reset, MockStats::default());
    assert_eq!(server.stats().requests, 0);
}

#[tokio::test]
async fn config_put_at_runtime_takes_effect() {
    let server = start(MockConfig::default()).await;
    assert_eq!(chat(&server, user("x")).await.status(), 200);

    let resp = client()
        .put(format!("{}/admin/config", server.root_url()))
        .json(&json!({"rate_500": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.config().rate_500, 1.0);
    assert_eq!(chat(&server, user("x")).await.status(), 500);

    let bad = client()
        .put(format!("{}/admin/config", server.root_url()))
        .json(&json!({"rate_429": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let msg: Value = bad.json().await.unwrap();
    assert!(
        msg["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate_429")
    );
    assert_eq!(
        server.config().rate_500,
        1.0,
        "a rejected config changes nothing"
    );

    server.set_config(MockConfig::default());
    assert_eq!(chat(&server, user("x")).await.status(), 200);
    let current: MockConfig = client()
        .get(format!("{}/admin/config", server.root_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current, MockConfig::default());
}

#[tokio::test]
async fn healthz_answers_and_shutdown_stops_serving() {
    let server = start(MockConfig::default()).await;
    let root = server.root_url();
    let resp = client()
        .get(format!("{root}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.shutdown().await.unwrap();
    assert!(
        client()
            .get(format!("{root}/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn serve_rejects_invalid_config() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = gauntlet_mockllm::serve(
        MockConfig {
            rate_429: -0.1,
            ..MockConfig::default()
        },
        listener,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
