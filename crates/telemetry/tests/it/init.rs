//! `init` installs the process subscriber once; later calls are harmless.

use gauntlet_telemetry::{init, propagation};

// The only test in this binary that touches the global subscriber, so the
// first call here is the first in the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_init_returns_an_inactive_guard_and_tracing_keeps_working() {
    let first = init("telemetry-it").expect("first init");
    let second = init("telemetry-it-again").expect("second init does not fail");
    assert!(first.is_active());
    assert!(!second.is_active());
    drop(second);

    // The installed OpenTelemetry layer gives spans ids even without an
    // exporter, so context still propagates through this process; but a
    // thread-local test subscriber from another test may be current, so run
    // on a fresh thread that only sees the global one.
    let trace_id = std::thread::spawn(|| {
        let span = tracing::info_span!("after init");
        let _entered = span.enter();
        tracing::info!(check = true, "logging after a second init");
        propagation::current_trace_id()
    })
    .join()
    .unwrap();
    assert!(trace_id.is_some_and(|id| id.len() == 32));

    let third = init("telemetry-it-third").expect("third init");
    assert!(!third.is_active());
    first
        .shutdown()
        .expect("shutdown of a provider without exporter");
}
