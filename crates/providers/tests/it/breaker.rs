use std::time::Duration;

use gauntlet_mockllm::MockConfig;
use gauntlet_providers::{BreakerState, ProviderError};
use serde_json::json;

use crate::{config, factory_for, mock};

#[tokio::test]
async fn the_circuit_opens_fails_fast_and_recovers_through_a_probe() {
    let server = mock(MockConfig {
        rate_500: 1.0,
        ..MockConfig::default()
    })
    .await;
    let factory = factory_for(&server);
    let cfg = config(json!({"maxRetries": 0, "breakerThreshold": 3, "breakerCooldownMs": 300}));
    let provider = factory.build("openai:gpt-4.1", &cfg).unwrap();
    // Another provider on the same endpoint shares the breaker.
    let sibling = factory.build("openai:chat:o4-mini", &cfg).unwrap();

    for _ in 0..3 {
        let err = provider.complete("x").await.unwrap_err();
        assert!(
            matches!(err, ProviderError::Http { status: 500, .. }),
            "{err:?}"
        );
    }
    assert_eq!(server.stats().chat, 3);
    let states = factory.breaker_states();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].endpoint, format!("http://{}", server.addr()));
    assert_eq!(states[0].state, BreakerState::Open);

    // Open: calls fail fast, naming the failure, and never reach the mock.
    for p in [&provider, &sibling, &provider] {
        let err = p.complete("x").await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::CircuitOpen { reason, .. } if reason.contains("500")),
            "{err:?}"
        );
        assert!(!err.is_retryable());
    }
    assert_eq!(server.stats().chat, 3);

    // After the cool-down one probe goes through; still failing, it reopens.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(factory.breaker_states()[0].state, BreakerState::HalfOpen);
    assert!(matches!(
        provider.complete("x").await,
        Err(ProviderError::Http { status: 500, .. })
    ));
    assert_eq!(server.stats().chat, 4);
    assert_eq!(factory.breaker_states()[0].state, BreakerState::Open);
    assert!(matches!(
        sibling.complete("x").await,
        Err(ProviderError::CircuitOpen { .. })
    ));

    // The endpoint heals: the next probe succeeds and the circuit closes.
    server.set_config(MockConfig::default());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        provider.complete("back").await.unwrap().output,
        "ECHO: back"
    );
    let state = &factory.breaker_states()[0];
    assert_eq!((state.state, state.times_opened), (BreakerState::Closed, 2));
    assert_eq!(
        sibling.complete("again").await.unwrap().output,
        "ECHO: again"
    );
    assert_eq!(server.stats().chat, 6);
}

#[tokio::test]
async fn retries_stop_once_the_circuit_opens() {
    let server = mock(MockConfig {
        rate_500: 1.0,
        ..MockConfig::default()
    })
    .await;
    let provider = factory_for(&server)
        .build(
            "openai:gpt-4.1",
            &config(json!({"maxRetries": 5, "retryBaseDelayMs": 5, "breakerThreshold": 2})),
        )
        .unwrap();
    let err = provider.complete("x").await.unwrap_err();
    assert!(matches!(err, ProviderError::CircuitOpen { .. }), "{err:?}");
    assert_eq!(server.stats().chat, 2);
}

#[tokio::test]
async fn rate_limits_and_bad_requests_do_not_open_the_circuit() {
    let server = mock(MockConfig::default()).await;
    let factory = factory_for(&server);
    let bad = factory
        .build(
            "openai:gpt-4.1",
            &config(json!({"max_tokens": 0, "breakerThreshold": 1})),
        )
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            bad.complete("x").await,
            Err(ProviderError::Http { status: 400, .. })
        ));
    }
    assert_eq!(factory.breaker_states()[0].state, BreakerState::Closed);
    assert_eq!(server.stats().chat, 3);
}
