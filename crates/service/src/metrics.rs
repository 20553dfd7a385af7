//! Metrics every service with a database or a cache reports the same way.

use std::{sync::Arc, time::Duration};

use gauntlet_store::Store;
use gauntlet_telemetry::metrics::{Counter, Registry};
use tokio_util::sync::CancellationToken;

/// How often the time to get a pooled connection is probed.
pub const POOL_PROBE_EVERY: Duration = Duration::from_secs(5);

/// Reports `store`'s pool in `registry`: connections idle and in use and
/// the pool's ceiling (read at each scrape), and the time to get a
/// connection (`gauntlet_db_pool_acquire_duration_seconds`, probed every
/// [`POOL_PROBE_EVERY`] until `shutdown`: under load it is the wait a query
/// has before it runs).
pub fn watch_store(registry: &Arc<Registry>, store: Arc<dyn Store>, shutdown: CancellationToken) {
    let read = store.clone();
    registry.on_scrape(move |r| {
        if let Some(stats) = read.pool_stats() {
            let in_use = stats.size.saturating_sub(stats.idle);
            r.gauge_with("gauntlet_db_pool_connections", &[("state", "idle")])
                .set(f64::from(stats.idle));
            r.gauge_with("gauntlet_db_pool_connections", &[("state", "in_use")])
                .set(f64::from(in_use));
            r.gauge("gauntlet_db_pool_max_connections")
                .set(f64::from(stats.max));
        }
    });
    let acquire = registry.histogram("gauntlet_db_pool_acquire_duration_seconds");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POOL_PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A store that is down has no wait to report; its errors are
            // told by the calls that fail.
            if let Ok(took) = store.time_acquire().await {
                acquire.record(took.as_secs_f64());
            }
        }
    });
}

/// Hits and misses of one cache: `gauntlet_cache_requests_total{cache,result}`.
#[derive(Clone)]
pub struct CacheCounters {
    hits: Counter,
    misses: Counter,
}

impl CacheCounters {
    pub fn new(registry: &Registry, cache: &str) -> Self {
        let count = |result| {
            registry.counter_with(
                "gauntlet_cache_requests_total",
                &[("cache", cache), ("result", result)],
            )
        };
        Self {
            hits: count("hit"),
            misses: count("miss"),
        }
    }

    pub fn record(&self, hit: bool) {
        if hit {
            self.hits.increment(1);
        } else {
            self.misses.increment(1);
        }
    }
}
