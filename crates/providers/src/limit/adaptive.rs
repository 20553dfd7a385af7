//! This worker's concurrency per provider and key, following what the
//! provider accepts (see [`AdaptiveConcurrency`]).

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// How a worker adapts its concurrency per provider and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveOptions {
    /// The ceiling, and where a provider starts.
    pub max_in_flight: usize,
    /// The fewest call outcomes a window needs before the limit moves
    /// (a window is also at least the limit itself: about one round trip).
    pub grow_after: u32,
}

/// Share of a window's calls answered 429 above which the limit comes down.
/// Real providers answer a steady trickle of 429s that more or fewer calls
/// would not change; shrinking on each of them collapses throughput (at
/// 20 % random 429s the old halve-per-429 rule sat at one call in flight).
/// A true cap shows up as a share that grows with the calls sent.
pub const RATE_LIMITED_SHARE: f64 = 0.3;

/// A concurrency limit that follows what the provider accepts, between 1
/// and `max_in_flight`, decided once per window of outcomes (calls started
/// under the current limit; at least the limit and `grow_after` of them,
/// about one round trip):
/// - more than [`RATE_LIMITED_SHARE`] of the window answered 429: the limit
///   drops by a quarter;
/// - otherwise it grows by an eighth (at least one).
///
/// At a true cap the limit settles just above what the provider serves,
/// so throughput stays at the cap; random 429s below the share leave it at
/// the ceiling, and the retry loop waits out each one's `Retry-After`.
pub struct AdaptiveConcurrency {
    options: AdaptiveOptions,
    state: Mutex<ConcurrencyState>,
    released: Notify,
}

#[derive(Debug)]
struct ConcurrencyState {
    limit: usize,
    in_flight: usize,
    /// Bumped whenever the limit changes: outcomes of calls started under
    /// an older limit do not count towards the new window.
    epoch: u64,
    window_calls: u32,
    window_limited: u32,
}

impl ConcurrencyState {
    fn record(&mut self, options: &AdaptiveOptions, epoch: u64, limited: bool) {
        if epoch != self.epoch {
            return;
        }
        self.window_calls += 1;
        self.window_limited += u32::from(limited);
        let window = (self.limit as u32).max(options.grow_after);
        if self.window_calls < window {
            return;
        }
        let share = f64::from(self.window_limited) / f64::from(self.window_calls);
        let before = self.limit;
        self.limit = if share > RATE_LIMITED_SHARE {
            (self.limit * 3 / 4).max(1)
        } else {
            (self.limit + (self.limit / 8).max(1)).min(options.max_in_flight)
        };
        if self.limit < before {
            tracing::debug!(
                limit = self.limit,
                share_rate_limited = share,
                "provider rate limited, concurrency lowered"
            );
        }
        self.epoch += 1;
        self.window_calls = 0;
        self.window_limited = 0;
    }
}

impl AdaptiveConcurrency {
    pub fn new(options: AdaptiveOptions) -> Arc<Self> {
        let options = AdaptiveOptions {
            max_in_flight: options.max_in_flight.max(1),
            grow_after: options.grow_after.max(1),
        };
        Arc::new(Self {
            options,
            state: Mutex::new(ConcurrencyState {
                limit: options.max_in_flight,
                in_flight: 0,
                epoch: 0,
                window_calls: 0,
                window_limited: 0,
            }),
            released: Notify::new(),
        })
    }

    /// Calls allowed in flight now.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConcurrencyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for room under the current limit.
    pub async fn acquire(self: &Arc<Self>) -> ConcurrencyPermit {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before looking, so a release in between is not missed.
            released.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    return ConcurrencyPermit {
                        owner: self.clone(),
                        epoch: s.epoch,
                    };
                }
            }
            released.await;
        }
    }
}

/// One call in flight. Dropping it releases the slot without a verdict
/// (errors other than 429 say nothing about the provider's capacity).
pub struct ConcurrencyPermit {
    owner: Arc<AdaptiveConcurrency>,
    epoch: u64,
}

impl ConcurrencyPermit {
    /// The call succeeded.
    pub fn succeeded(self) {
        self.record(false);
    }

    /// The provider said 429.
    pub fn rate_limited(self) {
        self.record(true);
    }

    fn record(&self, limited: bool) {
        let mut s = self.owner.lock();
        let before = s.limit;
        s.record(&self.owner.options, self.epoch, limited);
        if s.limit > before {
            // New slots may admit waiters; the drop wakes one more.
            for _ in before..s.limit {
                self.owner.released.notify_one();
            }
        }
    }
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.owner.lock().in_flight -= 1;
        self.owner.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn adaptive(max: usize, grow_after: u32) -> Arc<AdaptiveConcurrency> {
        AdaptiveConcurrency::new(AdaptiveOptions {
            max_in_flight: max,
            grow_after,
        })
    }

    /// Runs `rounds` windows: each round takes every permit the limit
    /// allows, then settles them with `outcome(i, n)` (true: 429) for the
    /// i-th of n.
    async fn rounds(
        c: &Arc<AdaptiveConcurrency>,
        rounds: usize,
        outcome: impl Fn(usize, usize) -> bool,
    ) -> Vec<usize> {
        let mut limits = Vec::new();
        for _ in 0..rounds {
            let n = c.limit();
            let permits = acquire_all(c, n).await;
            for (i, p) in permits.into_iter().enumerate() {
                if outcome(i, n) {
                    p.rate_limited();
                } else {
                    p.succeeded();
                }
            }
            limits.push(c.limit());
        }
        limits
    }

    #[tokio::test]
    async fn random_429s_below_the_share_leave_the_limit_at_its_ceiling() {
        let c = adaptive(64, 10);
        // Every fifth call 429: 20 %, whatever the calls in flight.
        let limits = rounds(&c, 50, |i, _| i % 5 == 4).await;
        assert!(limits.iter().all(|&l| l == 64), "{limits:?}");
    }

    #[tokio::test]
    async fn a_true_cap_brings_the_limit_down_to_just_above_it_and_keeps_it_there() {
        let c = adaptive(256, 10);
        // The provider serves 40 calls at once and answers 429 to the rest.
        let limits = rounds(&c, 60, |i, _| i >= 40).await;
        let settled = &limits[30..];
        assert!(
            settled.iter().all(|&l| (40..=70).contains(&l)),
            "settles above the cap, not far above it: {limits:?}"
        );
        // Served per round = min(limit, 40): always the cap once settled.
        assert!(settled.iter().all(|&l| l.min(40) == 40));
    }

    #[tokio::test]
    async fn the_limit_stays_between_one_and_the_ceiling() {
        let c = adaptive(16, 3);
        let limits = rounds(&c, 30, |_, _| true).await;
        assert_eq!(*limits.last().unwrap(), 1, "{limits:?}");
        let limits = rounds(&c, 60, |_, _| false).await;
        assert_eq!(*limits.last().unwrap(), 16, "{limits:?}");
    }

    #[tokio::test]
    async fn outcomes_of_calls_started_under_an_older_limit_do_not_count_twice() {
        let c = adaptive(8, 1);
        let old = acquire_all(&c, 8).await;
        // A full window of 429s lowers the limit once...
        for p in old {
            p.rate_limited();
        }
        assert_eq!(c.limit(), 6);
        // ...and a straggler from that window changes nothing.
        let mut straggler = c.acquire().await;
        straggler.epoch = 0;
        straggler.rate_limited();
        assert_eq!(c.limit(), 6);
    }

    async fn acquire_all(c: &Arc<AdaptiveConcurrency>, n: usize) -> Vec<ConcurrencyPermit> {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(c.acquire().await);
        }
        permits
    }

    #[tokio::test]
    async fn calls_over_the_limit_wait_for_a_release() {
        let c = adaptive(1, 1);
        assert_eq!(c.limit(), 1);
        let held = c.acquire().await;
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.acquire().await.succeeded() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a second call must wait at limit 1");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the release wakes the waiter")
            .unwrap();
    }
}
