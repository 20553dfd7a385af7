//! Whether Redis is worth asking: after a failure the L2 is skipped for a
//! backoff (1 s, doubling to 30 s) instead of opening a new connection on
//! every call, and the log says so once, then every 10 s with how many
//! calls were skipped, then once more when Redis is back.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{info, warn};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const REPORT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    /// Set while Redis is considered down: calls skip it until then.
    open_until: Option<Instant>,
    backoff: Duration,
    last_report: Option<Instant>,
}

/// The circuit breaker in front of the cache's Redis.
#[derive(Debug, Default)]
pub(crate) struct RedisBreaker {
    state: Mutex<State>,
    /// Calls skipped since the last report.
    skipped: AtomicU64,
    /// Calls skipped since Redis went down.
    skipped_total: AtomicU64,
}

impl RedisBreaker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether to try Redis now. A call made while the breaker is open is
    /// counted as skipped; the first call after the backoff is let through
    /// as a probe.
    pub(crate) fn allow(&self) -> bool {
        let mut s = self.state();
        let Some(until) = s.open_until else {
            return true;
        };
        let now = Instant::now();
        if now >= until {
            // Let this one probe; the others wait out another backoff if it fails.
            s.open_until = Some(now + s.backoff);
            return true;
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        self.skipped_total.fetch_add(1, Ordering::Relaxed);
        if s.last_report
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            s.last_report = Some(now);
            let skipped = self.skipped.swap(0, Ordering::Relaxed);
            warn!(
                skipped,
                backoff_ms = s.backoff.as_millis() as u64,
                "redis unavailable, cache calls skipped in the last 10 s (L1 only)"
            );
        }
        false
    }

    pub(crate) fn succeeded(&self) {
        let mut s = self.state();
        if s.open_until.take().is_some() {
            s.backoff = Duration::ZERO;
            s.last_report = None;
            self.skipped.store(0, Ordering::Relaxed);
            let skipped = self.skipped_total.swap(0, Ordering::Relaxed);
            info!(skipped, "redis is back, the cache is shared again");
            report_degraded(false);
        }
    }

    pub(crate) fn failed(&self, error: &str) {
        let mut s = self.state();
        let was_open = s.open_until.is_some();
        s.backoff = if was_open {
            (s.backoff * 2).min(MAX_BACKOFF)
        } else {
            FIRST_BACKOFF
        };
        s.open_until = Some(Instant::now() + s.backoff);
        if !was_open {
            s.last_report = Some(Instant::now());
            warn!(%error, "redis unavailable, the cache is L1 only until it answers again");
            report_degraded(true);
        }
    }

    /// Whether Redis is being skipped.
    pub(crate) fn is_open(&self) -> bool {
        self.state().open_until.is_some()
    }

    /// Calls skipped since Redis went down.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped_total.load(Ordering::Relaxed)
    }
}

/// `gauntlet_cache_redis_degraded`: 1 while this process's cache runs
/// without Redis.
pub(crate) fn report_degraded(degraded: bool) {
    gauntlet_telemetry::metrics::Registry::global()
        .gauge("gauntlet_cache_redis_degraded")
        .set(if degraded { 1.0 } else { 0.0 });
}
