use gauntlet_mockllm::MockConfig;
use serde_json::{Value, json};

use crate::{chat, start, user};

#[tokio::test]
async fn chat_echoes_last_user_message_with_openai_shape_and_usage() {
    let server = start(MockConfig::default()).await;
    let body = json!({
        "model": "o4-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "Translate to French: Hello world"}
        ]
    });
    let resp = chat(&server, body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "o4-mini");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(
        choice["message"]["content"],
        "ECHO: Translate to French: Hello world"
    );
    assert_eq!(choice["finish_reason"], "stop");
    // chars: 14 + 14 + 9 + 32 = 69 -> 18 tokens; "ECHO: ..." is 38 chars -> 10 tokens.
    assert_eq!(v["usage"]["prompt_tokens"], 18);
    assert_eq!(v["usage"]["completion_tokens"], 10);
    assert_eq!(v["usage"]["total_tokens"], 28);
}

#[tokio::test]
async fn array_content_parts_are_joined() {
    let server = start(MockConfig::default()).await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
        {"type": "text", "text": "this picture"}
    ]}]});
    let v: Value = chat(&server, body).await.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "ECHO: Describe\nthis picture"
    );
}

#[tokio::test]
async fn max_tokens_truncates_and_reports_length() {
    let server = start(MockConfig::default()).await;
    for key in ["max_tokens", "max_completion_tokens"] {
        let mut body = user("a fairly long message that will not fit");
        body[key] = json!(3);
        let v: Value = chat(&server, body).await.json().await.unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"], "ECHO: a fair",
            "{key}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 3);
    }
    let mut roomy = user("short");
    roomy["max_tokens"] = json!(100);
    let v: Value = chat(&server, roomy).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn invalid_requests_get_openai_style_400() {
    let server = start(MockConfig::default()).await;
    for body in [
        json!({"model": "m"}),
        json!({"model": "m", "messages": []}),
        json!({"model": "m", "messages": "hello"}),
        {
            let mut b = user("x");
            b["max_tokens"] = json!(0);
            b
        },
    ] {
        let resp = chat(&server, body.clone()).await;
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }
    let s = server.stats();
    assert_eq!((s.chat, s.bad_requests, s.ok), (4, 4, 0));
}

#[tokio::test]
async fn latency_is_applied_from_config_and_header() {
    let server = start(MockConfig {
        latency_ms: 150,
        ..MockConfig::default()
    })
    .await;
    let t = std::time::Instant::now();
    assert_eq!(chat(&server, user("slow")).await.status(), 200);
    assert!(t.elapsed().as_millis() >= 150, "{:?}", t.elapsed());

    let t = std::time::Instant::now();
    let resp = crate::client()
        .post(format!("{}/chat/completions", server.base_url()))
        .header("x-mock-latency-ms", "300")
        .json(&user("slower"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed().as_millis() >= 300, "{:?}", t.elapsed());
}

#[tokio::test]
async fn concurrent_requests_show_in_flight_peak() {
    let server = start(MockConfig {
        latency_ms: 1000,
        ..MockConfig::default()
    })
    .await;
    let client = crate::client();
    let url = format!("{}/chat/completions", server.base_url());
    let calls = (0..20).map(|i| {
        let req = client.post(&url).json(&user(&format!("n{i}")));
        async move { req.send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let s = server.stats();
    assert_eq!(s.in_flight_peak, 20);
    assert_eq!(s.in_flight, 0);
}
