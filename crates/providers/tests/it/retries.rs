use std::time::{Duration, Instant};

use gauntlet_mockllm::MockConfig;
use gauntlet_providers::ProviderError;
use serde_json::json;

use crate::{build, mock};

#[tokio::test]
async fn rate_limited_call_waits_for_retry_after_then_succeeds() {
    let server = mock(MockConfig {
        rate_429: 1.0,
        retry_after_secs: 1,
        ..MockConfig::default()
    })
    .await;
    // A tiny backoff, so the wait can only come from Retry-After.
    let provider = build(
        &server,
        "openai:gpt-4.1",
        json!({"retryBaseDelayMs": 1, "retryMaxDelayMs": 1}),
    );
    let started = Instant::now();
    let call = tokio::spawn(async move { provider.complete("patience").await });

    // Lift the rate limit as soon as the first attempt has been refused.
    while server.stats().faults_429 == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.set_config(MockConfig::default());

    let c = call.await.unwrap().unwrap();
    assert_eq!(c.output, "ECHO: patience");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let stats = server.stats();
    assert_eq!((stats.chat, stats.faults_429, stats.ok), (2, 1, 1));
}

#[tokio::test]
async fn persistent_server_errors_exhaust_retries() {
    let server = mock(MockConfig {
        rate_500: 1.0,
        ..MockConfig::default()
    })
    .await;
    let provider = build(
        &server,
        "openai:gpt-4.1",
        json!({"maxRetries": 2, "retryBaseDelayMs": 10}),
    );
    let err = provider.complete("x").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Http { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("server had an error"), "{err}");
    let stats = server.stats();
    assert_eq!((stats.chat, stats.faults_500), (3, 3));
}

#[tokio::test]
async fn a_bad_request_is_not_retried() {
    let server = mock(MockConfig::default()).await;
    // Default retries are on; max_tokens 0 makes the mock answer 400.
    let provider = build(&server, "openai:gpt-4.1", json!({"max_tokens": 0}));
    let err = provider.complete("x").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Http { status: 400, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("max_tokens"), "{err}");
    let stats = server.stats();
    assert_eq!((stats.chat, stats.bad_requests), (1, 1));
}

#[tokio::test]
async fn a_hung_call_times_out_and_is_retried_once() {
    let server = mock(MockConfig {
        hang_ms: 30_000,
        ..MockConfig::default()
    })
    .await;
    let provider = build(
        &server,
        "openai:gpt-4.1",
        json!({
            "timeoutMs": 200,
            "maxRetries": 1,
            "retryBaseDelayMs": 10,
            "headers": {"x-mock-fault": "timeout"}
        }),
    );
    let started = Instant::now();
    let err = provider.complete("x").await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout);
    assert!(err.is_retryable());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    assert_eq!(server.stats().chat, 2);
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let provider = gauntlet_providers::ProviderFactory::new(
        [("OPENAI_BASE_URL".to_owned(), url)].into_iter().collect(),
    )
    .build("openai:gpt-4.1", &crate::config(json!({"maxRetries": 0})))
    .unwrap();
    let err = provider.complete("x").await.unwrap_err();
    assert!(matches!(err, ProviderError::Connect(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn unavailable_with_retry_after_waits_before_the_next_attempt() {
    let server = mock(MockConfig {
        retry_after_secs: 1,
        ..MockConfig::default()
    })
    .await;
    // Every answer is a 503 asking for a second; the backoff alone is 1 ms.
    let provider = build(
        &server,
        "openai:gpt-4.1",
        json!({
            "maxRetries": 1,
            "retryBaseDelayMs": 1,
            "retryMaxDelayMs": 1,
            "breakerThreshold": 0,
            "headers": {"x-mock-fault": "503"},
        }),
    );
    let started = Instant::now();
    let err = provider.complete("x").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Unavailable {
                status: 503,
                retry_after,
                ..
            } if retry_after == Duration::from_secs(1)
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.stats().chat, 2, "one try and one retry");
}
