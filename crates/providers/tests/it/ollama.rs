use std::time::{Duration, Instant};

use gauntlet_mockllm::{MockConfig, estimate_tokens};
use gauntlet_providers::ProviderError;
use serde_json::json;

use crate::{config, factory_for_all, mock};

#[tokio::test]
async fn native_chat_round_trip_with_eval_counts() {
    let server = mock(MockConfig::default()).await;
    let factory = factory_for_all(&server);
    for id in ["ollama:chat:llama3.2:3b", "ollama:llama3.2:3b"] {
        let provider = factory
            .build(id, &config(json!({"temperature": 0, "seed": 1})))
            .unwrap();
        let c = provider.complete("Why is the sky blue?").await.unwrap();
        assert_eq!(c.output, "ECHO: Why is the sky blue?");
        assert_eq!(
            u64::from(c.tokens_in),
            estimate_tokens("Why is the sky blue?")
        );
        assert_eq!(
            u64::from(c.tokens_out),
            estimate_tokens("ECHO: Why is the sky blue?")
        );
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        assert_eq!(c.cost_usd, 0.0, "a local model costs nothing");
    }
    let stats = server.stats();
    assert_eq!((stats.ollama_chat, stats.chat), (2, 0));
    assert_eq!(stats.models.get("llama3.2:3b"), Some(&2));
}

#[tokio::test]
async fn num_predict_limits_the_answer() {
    let server = mock(MockConfig::default()).await;
    let provider = factory_for_all(&server)
        .build("ollama:chat:qwen3", &config(json!({"num_predict": 2})))
        .unwrap();
    let c = provider.complete("tell me everything").await.unwrap();
    assert_eq!(c.output, "ECHO: te");
    assert_eq!(c.finish_reason.as_deref(), Some("length"));
}

#[tokio::test]
async fn a_hung_call_times_out_within_the_configured_timeout() {
    let server = mock(MockConfig {
        rate_timeout: 1.0,
        hang_ms: 30_000,
        ..MockConfig::default()
    })
    .await;
    let provider = factory_for_all(&server)
        .build(
            "ollama:chat:llama3.2",
            &config(json!({"timeout": 300, "maxRetries": 0})),
        )
        .unwrap();
    let started = Instant::now();
    let err = provider.complete("x").await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err, ProviderError::Timeout);
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert_eq!(server.stats().ollama_chat, 1);
}

#[tokio::test]
async fn the_retry_budget_bounds_a_call_that_keeps_hanging() {
    let server = mock(MockConfig {
        rate_timeout: 1.0,
        hang_ms: 30_000,
        ..MockConfig::default()
    })
    .await;
    let provider = factory_for_all(&server)
        .build(
            "ollama:chat:llama3.2",
            &config(json!({"maxRetries": 10, "retryBudgetMs": 400, "breakerThreshold": 0})),
        )
        .unwrap();
    let started = Instant::now();
    let err = provider.complete("x").await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err, ProviderError::Timeout);
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(server.stats().ollama_chat, 1);
}
