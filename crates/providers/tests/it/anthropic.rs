use std::time::{Duration, Instant};

use gauntlet_mockllm::{MockConfig, estimate_tokens};
use gauntlet_providers::ProviderError;
use serde_json::json;

use crate::{config, factory_for_all, mock};

#[tokio::test]
async fn messages_round_trip_with_system_prompt_usage_and_stop_reason() {
    let server = mock(MockConfig::default()).await;
    let provider = factory_for_all(&server)
        .build(
            "anthropic:messages:claude-sonnet-4-20250514",
            &config(json!({})),
        )
        .unwrap();
    let prompt = json!([
        {"role": "system", "content": "You translate."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "premier"},
        {"role": "user", "content": "second"}
    ])
    .to_string();
    let c = provider.complete(&prompt).await.unwrap();
    assert_eq!(c.output, "ECHO: second");
    // The mock counts the system prompt (lifted into `system`) and every turn.
    assert_eq!(
        u64::from(c.tokens_in),
        estimate_tokens("You translate.firstpremiersecond")
    );
    assert_eq!(u64::from(c.tokens_out), estimate_tokens("ECHO: second"));
    assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    // claude-sonnet-4 lists at $3 / $15 per million tokens.
    let want = (f64::from(c.tokens_in) * 3.0 + f64::from(c.tokens_out) * 15.0) / 1e6;
    assert!((c.cost_usd - want).abs() < 1e-12, "{}", c.cost_usd);

    let stats = server.stats();
    assert_eq!((stats.messages, stats.chat, stats.ok), (1, 0, 1));
    assert_eq!(stats.models.get("claude-sonnet-4-20250514"), Some(&1));
}

#[tokio::test]
async fn the_short_id_works_and_max_tokens_cuts_with_length() {
    let server = mock(MockConfig::default()).await;
    let provider = factory_for_all(&server)
        .build(
            "anthropic:claude-3-5-haiku-latest",
            &config(json!({"max_tokens": 2})),
        )
        .unwrap();
    let c = provider.complete("a long enough question").await.unwrap();
    assert_eq!(c.output, "ECHO: a ");
    assert_eq!(c.finish_reason.as_deref(), Some("length"));
    assert_eq!(c.tokens_out, 2);
}

#[tokio::test]
async fn a_rate_limited_message_waits_for_retry_after() {
    let server = mock(MockConfig::default()).await;
    let provider = factory_for_all(&server)
        .build(
            "anthropic:messages:claude-sonnet-4",
            &config(json!({"retryBaseDelayMs": 1, "retryMaxDelayMs": 1, "headers": {}})),
        )
        .unwrap();
    server.set_config(MockConfig {
        rate_429: 1.0,
        retry_after_secs: 1,
        ..MockConfig::default()
    });
    let started = Instant::now();
    let call = tokio::spawn(async move { provider.complete("patience").await });
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
    assert_eq!(server.stats().messages, 2);
}

#[tokio::test]
async fn server_errors_are_retried_exactly_up_to_the_limit() {
    let server = mock(MockConfig {
        rate_500: 1.0,
        ..MockConfig::default()
    })
    .await;
    let provider = factory_for_all(&server)
        .build(
            "anthropic:messages:claude-sonnet-4",
            &config(json!({"maxRetries": 3, "retryBaseDelayMs": 5, "breakerThreshold": 0})),
        )
        .unwrap();
    let err = provider.complete("x").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Http { status: 500, .. }),
        "{err:?}"
    );
    let stats = server.stats();
    assert_eq!((stats.messages, stats.faults_500), (4, 4));
}
