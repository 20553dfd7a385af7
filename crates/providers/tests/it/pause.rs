//! A key's pause against the mock's true cap: clients that read the
//! provider's rate-limit headers hold their calls while the key is out,
//! and random 429s pause nothing. Counts, not timings, with bounds loose
//! enough for a loaded two-core machine.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use gauntlet_cache::limiter::LocalLimiter;
use gauntlet_mockllm::{MockConfig, MockServer, MockStats};
use gauntlet_providers::{
    Provider,
    limit::{self, AdaptiveOptions, AttemptLimits, ProviderLimits},
};
use serde_json::json;

use crate::{config, factory_for, mock};

const ID: &str = "openai:gpt-4.1";

/// What a flood got from the mock over the measured window.
#[derive(Debug)]
struct Flood {
    ok: u64,
    refused: u64,
    secs: f64,
    /// Whether the key was seen paused at any of the samples.
    paused: bool,
}

impl Flood {
    fn ok_per_sec(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

/// `tasks` callers, each calling as fast as its answers come, through one
/// worker's limits (adaptive concurrency up to 64 in flight); counted over
/// `window` after `warm_up`.
async fn flood(
    server: &MockServer,
    limits: ProviderLimits,
    tasks: usize,
    warm_up: Duration,
    window: Duration,
) -> Flood {
    let cfg = config(json!({}));
    let factory = factory_for(server);
    let provider = limits
        .build(&factory, ID, &cfg, &AttemptLimits::default())
        .expect("provider builds");
    let bucket = limit::bucket(ID, &cfg, |_| None).unwrap();
    let pause = limits.pause(&bucket);
    let stop = Instant::now() + warm_up + window;
    let callers: Vec<_> = (0..tasks)
        .map(|_| {
            let provider: Arc<dyn Provider> = provider.clone();
            tokio::spawn(async move {
                while Instant::now() < stop {
                    let _ = provider.complete("flood").await;
                }
            })
        })
        .collect();
    tokio::time::sleep(warm_up).await;
    let before = server.stats();
    let started = Instant::now();
    let mut paused = false;
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        paused |= pause.as_ref().is_some_and(|p| !p.remaining().is_zero());
    }
    let after = server.stats();
    let secs = started.elapsed().as_secs_f64();
    for caller in callers {
        caller.abort();
    }
    let diff = |f: fn(&MockStats) -> u64| f(&after) - f(&before);
    Flood {
        ok: diff(|s| s.ok),
        refused: diff(|s| s.faults_429),
        secs,
        paused,
    }
}

fn limits(max_pause: Duration) -> ProviderLimits {
    ProviderLimits::new(
        Arc::new(LocalLimiter::new()),
        Some(AdaptiveOptions {
            max_in_flight: 64,
            grow_after: 10,
        }),
    )
    .with_max_pause(max_pause)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_key_serves_the_cap_with_far_fewer_429s() {
    const CAP: u64 = 100;
    let server = mock(MockConfig {
        max_rps: CAP,
        ..MockConfig::default()
    })
    .await;
    let (warm_up, window) = (Duration::from_millis(500), Duration::from_secs(3));
    // 200 callers with answers in about a millisecond: thousands of calls
    // a second offered to a cap of 100.
    let paused = flood(&server, limits(limit::MAX_PAUSE), 200, warm_up, window).await;
    server.reset_stats();
    let unpaused = flood(&server, limits(Duration::ZERO), 200, warm_up, window).await;
    eprintln!("cap {CAP}/s; with the pause {paused:?}; without {unpaused:?}");

    let rate = paused.ok_per_sec();
    assert!(
        (0.9 * CAP as f64..=1.1 * CAP as f64).contains(&rate),
        "served {rate:.1}/s against a cap of {CAP}/s: {paused:?}"
    );
    assert!(paused.paused, "the key was never paused: {paused:?}");
    assert!(
        paused.refused * 4 < unpaused.refused,
        "the pause should spare most 429s: {paused:?} vs {unpaused:?}"
    );
    assert!(
        paused.refused < paused.ok,
        "fewer 429s than answers: {paused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_429s_never_pause_the_key() {
    let server = mock(MockConfig {
        rate_429: 0.2,
        retry_after_secs: 1,
        ..MockConfig::default()
    })
    .await;
    let (warm_up, window) = (Duration::from_millis(300), Duration::from_secs(2));
    let with = flood(&server, limits(limit::MAX_PAUSE), 128, warm_up, window).await;
    server.reset_stats();
    let without = flood(&server, limits(Duration::ZERO), 128, warm_up, window).await;
    eprintln!("20 % random 429s; with the pause {with:?}; without {without:?}");
    assert!(!with.paused, "a random 429 paused the key: {with:?}");
    // Each caller waits out its own 429s (a second each) and nobody else's:
    // 128 callers serve well over one call a second each, as many as
    // callers that never pause.
    assert!(with.ok_per_sec() > 128.0, "{with:?}");
    assert!(
        with.ok_per_sec() > 0.6 * without.ok_per_sec(),
        "{with:?} vs {without:?}"
    );
}
