//! The mock's true rate cap (`max_rps`): GCRA, as a provider's request
//! limit behaves. Each admitted request pushes the theoretical arrival time
//! on by `1/max_rps`; a request that comes more than the burst tolerance
//! (a tenth of a second's worth, at least one request) ahead of it is
//! refused and told how long to wait.
//!
//! Every answer under a cap reports the bucket as OpenAI does: its
//! capacity (`x-ratelimit-limit-requests`, the burst), what is left of it
//! and how long until it is whole again (`x-ratelimit-reset-requests`), so
//! capacity over reset is the rate, as with OpenAI's per-minute buckets.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// The bucket as an answer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Headroom {
    /// Requests admitted at once from a whole bucket.
    pub(crate) capacity: u64,
    pub(crate) remaining: u64,
    /// Until the bucket is whole again.
    pub(crate) reset: Duration,
}

#[derive(Debug)]
pub(crate) struct Cap {
    /// Theoretical arrival time of the next request, once any was admitted.
    tat: Mutex<Option<Instant>>,
}

impl Cap {
    pub(crate) fn new() -> Self {
        Self {
            tat: Mutex::new(None),
        }
    }

    /// Forgets the past (after a reset or a config change).
    pub(crate) fn reset(&self) {
        *self.tat.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `Ok` admits one request at `now` under `max_rps`; `Err` is how long
    /// until a request would be admitted.
    pub(crate) fn admit(&self, max_rps: u64, now: Instant) -> Result<(), Duration> {
        if max_rps == 0 {
            return Ok(());
        }
        let (interval, tolerance) = shape(max_rps);
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let next = tat.map_or(now, |t| t.max(now));
        let ahead = next - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        *tat = Some(next + interval);
        Ok(())
    }

    /// The bucket at `now` under `max_rps` (which must not be 0).
    pub(crate) fn headroom(&self, max_rps: u64, now: Instant) -> Headroom {
        let (interval, tolerance) = shape(max_rps);
        let tat = *self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let ahead = tat.map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let per = |d: Duration| (d.as_nanos() / interval.as_nanos()) as u64;
        // A request is admitted while the arrival time it would push on is at
        // most `tolerance` ahead: one now, and one per interval of slack.
        let capacity = per(tolerance) + 1;
        let remaining = tolerance
            .checked_sub(ahead)
            .map_or(0, |slack| per(slack) + 1);
        Headroom {
            capacity,
            remaining: remaining.min(capacity),
            reset: ahead,
        }
    }
}

/// The gap between requests at `max_rps` and the burst tolerance.
fn shape(max_rps: u64) -> (Duration, Duration) {
    let interval = Duration::from_secs_f64(1.0 / max_rps as f64);
    (interval, interval.max(Duration::from_millis(100)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests arriving as fast as they like over `secs` seconds, in 1 ms
    /// steps: how many the cap admits.
    fn admitted_over(max_rps: u64, secs: u64, per_ms: u64) -> u64 {
        let cap = Cap::new();
        let start = Instant::now();
        let mut admitted = 0;
        for ms in 0..secs * 1000 {
            let now = start + Duration::from_millis(ms);
            for _ in 0..per_ms {
                if cap.admit(max_rps, now).is_ok() {
                    admitted += 1;
                }
            }
        }
        admitted
    }

    #[test]
    fn a_flood_gets_the_cap_and_a_tenth_of_a_second_of_burst() {
        // 10 requests a millisecond for 5 s against 200/s.
        let admitted = admitted_over(200, 5, 10);
        assert!(
            (1000..=1000 + 21).contains(&admitted),
            "admitted {admitted}"
        );
    }

    #[test]
    fn traffic_under_the_cap_is_never_refused() {
        // One request every 10 ms (100/s) against 150/s.
        let cap = Cap::new();
        let start = Instant::now();
        for i in 0..1000 {
            assert!(
                cap.admit(150, start + Duration::from_millis(i * 10))
                    .is_ok()
            );
        }
    }

    #[test]
    fn a_refusal_says_when_the_next_request_gets_in() {
        let cap = Cap::new();
        let now = Instant::now();
        while cap.admit(10, now).is_ok() {}
        let wait = cap.admit(10, now).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(cap.admit(10, now + wait).is_ok());
    }

    #[test]
    fn headroom_counts_down_the_burst_and_resets_at_the_rate() {
        // 100/s: 10 ms a request, a burst of 100 ms worth plus one.
        let cap = Cap::new();
        let now = Instant::now();
        let whole = cap.headroom(100, now);
        assert_eq!(
            whole,
            Headroom {
                capacity: 11,
                remaining: 11,
                reset: Duration::ZERO
            }
        );
        cap.admit(100, now).unwrap();
        let after_one = cap.headroom(100, now);
        assert_eq!((after_one.remaining, after_one.reset), (10, ms(10)));
        let mut admitted = 1;
        while cap.admit(100, now).is_ok() {
            admitted += 1;
        }
        assert_eq!(admitted, 11, "the remaining count was the truth");
        let empty = cap.headroom(100, now);
        assert_eq!((empty.remaining, empty.reset), (0, ms(110)));
        // Capacity over reset is the rate: 11 in 110 ms.
        let later = cap.headroom(100, now + ms(25));
        assert_eq!((later.remaining, later.reset), (2, ms(85)));
        assert_eq!(cap.headroom(100, now + ms(500)).remaining, 11);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn zero_means_no_cap() {
        let cap = Cap::new();
        let now = Instant::now();
        assert!((0..100_000).all(|_| cap.admit(0, now).is_ok()));
    }
}
