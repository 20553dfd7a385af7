//! A key's pause: when a provider says one of a key's limits has nothing
//! left (`remaining: 0` in its rate-limit headers, on a success or on a
//! 429), every client of that key in this worker holds its next attempts
//! until the key has room again, instead of firing them into certain 429s.
//! Attempts queued behind a pause leave one at a time, at the pace the key
//! wins requests back (its reset over what was used) when the headers tell
//! it, else together when it ends.
//!
//! A 429 whose headers do not say the key is out pauses nothing: the
//! provider refused that call, not the key, and holding everything on a
//! random 429 would stall a run; the retry loop waits that call alone.
//! A pause never changes the key's concurrency.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

// tokio's clock, so pauses follow paused time in tests.
use tokio::time::Instant;

use crate::{ProviderError, RateLimitInfo};

/// The longest a single answer may hold a key: a misread header or a daily
/// quota must not stop a worker for longer.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// What an answer says about its key's room, when it says the key is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// How long until the next request would be served.
    pub wait: Duration,
    /// How long the key takes to win a request back; zero when unknown.
    pub spacing: Duration,
}

impl Exhausted {
    /// From a served answer's headers: the key is out once one of its
    /// limits has nothing left. Requests come back one a refill interval
    /// (else whole at the reset); tokens at the reset, since the size of
    /// the next request is not known.
    pub fn from_headers(info: &RateLimitInfo) -> Option<Self> {
        let requests = &info.requests;
        let tokens = &info.tokens;
        let spacing = requests
            .is_exhausted()
            .then(|| requests.refill_interval())
            .flatten();
        let for_requests = requests
            .is_exhausted()
            .then(|| spacing.or(requests.reset))
            .flatten();
        let for_tokens = tokens.is_exhausted().then_some(tokens.reset).flatten();
        let wait = match (for_requests, for_tokens) {
            (Some(r), Some(t)) => r.max(t),
            (r, t) => r.or(t)?,
        };
        Some(Self {
            wait,
            spacing: spacing.unwrap_or_default(),
        })
    }

    /// From a refused call: only a 429 whose headers say the key is out,
    /// for as long as its `Retry-After` asks (else as its headers say).
    pub fn from_error(error: &ProviderError) -> Option<Self> {
        let info = error.rate_limit_info().filter(|i| i.is_exhausted())?;
        let from_headers = Self::from_headers(info);
        let wait = error.retry_after().or(from_headers.map(|e| e.wait))?;
        Some(Self {
            wait,
            spacing: from_headers.map_or(Duration::ZERO, |e| e.spacing),
        })
    }
}

/// The pause of one provider key, shared by all its clients in a worker.
#[derive(Debug)]
pub struct KeyPause {
    max: Duration,
    state: Mutex<PauseState>,
}

#[derive(Debug, Default)]
struct PauseState {
    /// No attempt starts before this; each attempt that waits for it moves
    /// it on by `spacing` for the next.
    until: Option<Instant>,
    spacing: Duration,
}

impl KeyPause {
    /// A pause of at most `max` per answer.
    pub fn new(max: Duration) -> Self {
        Self {
            max,
            state: Mutex::new(PauseState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PauseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the key for `e.wait` (at most the cap), then lets queued
    /// attempts go `e.spacing` apart. A pause already longer stays.
    pub fn exhausted(&self, e: Exhausted) {
        let until = Instant::now() + e.wait.min(self.max);
        let mut s = self.lock();
        s.until = Some(s.until.map_or(until, |u| u.max(until)));
        s.spacing = e.spacing.min(self.max);
    }

    /// How long an attempt starting now would wait (zero when the key has room).
    pub fn remaining(&self) -> Duration {
        self.lock().until.map_or(Duration::ZERO, |u| {
            u.saturating_duration_since(Instant::now())
        })
    }

    /// Takes this attempt's turn: `None` when it may start now, else when
    /// it may, the next attempt's turn coming `spacing` later.
    pub(crate) fn turn(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut s = self.lock();
        let at = s.until.filter(|&u| u > now)?;
        s.until = Some(at + s.spacing);
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quota;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn requests(limit: Option<u64>, remaining: u64, reset: Option<Duration>) -> RateLimitInfo {
        RateLimitInfo {
            requests: Quota {
                limit,
                remaining: Some(remaining),
                reset,
            },
            tokens: Quota::default(),
        }
    }

    #[test]
    fn only_an_exhausted_key_is_paused() {
        // 500 a minute, none left: one is back every 120 ms.
        let out = requests(Some(500), 0, Some(Duration::from_secs(60)));
        assert_eq!(
            Exhausted::from_headers(&out),
            Some(Exhausted {
                wait: ms(120),
                spacing: ms(120),
            })
        );
        // Without the limit, the reset is all there is to go by.
        assert_eq!(
            Exhausted::from_headers(&requests(None, 0, Some(ms(700)))),
            Some(Exhausted {
                wait: ms(700),
                spacing: Duration::ZERO,
            })
        );
        assert_eq!(
            Exhausted::from_headers(&requests(Some(500), 1, Some(ms(240)))),
            None
        );
        assert_eq!(Exhausted::from_headers(&requests(None, 0, None)), None);
        let tokens_out = RateLimitInfo {
            tokens: Quota {
                limit: Some(30_000),
                remaining: Some(0),
                reset: Some(ms(900)),
            },
            ..requests(Some(500), 10, Some(ms(1200)))
        };
        assert_eq!(
            Exhausted::from_headers(&tokens_out),
            Some(Exhausted {
                wait: ms(900),
                spacing: Duration::ZERO,
            })
        );
    }

    #[test]
    fn a_429_pauses_the_key_only_when_its_headers_say_the_key_is_out() {
        let refused = |limits: Option<RateLimitInfo>| ProviderError::RateLimited {
            retry_after: Some(ms(40)),
            message: "slow down".into(),
            limits: limits.map(Box::new),
        };
        // The mock's cap: the next request in 40 ms, 11 of them every 110 ms.
        assert_eq!(
            Exhausted::from_error(&refused(Some(requests(Some(11), 0, Some(ms(110)))))),
            Some(Exhausted {
                wait: ms(40),
                spacing: ms(10),
            })
        );
        // A random 429: room left, or nothing said.
        assert_eq!(
            Exhausted::from_error(&refused(Some(requests(Some(11), 5, Some(ms(60)))))),
            None
        );
        assert_eq!(Exhausted::from_error(&refused(None)), None);
        assert_eq!(
            Exhausted::from_error(&ProviderError::Http {
                status: 500,
                message: String::new(),
            }),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_attempts_then_lets_them_go_a_spacing_apart() {
        let pause = KeyPause::new(MAX_PAUSE);
        let start = Instant::now();
        assert_eq!(pause.turn(), None, "a key with room lets attempts go");
        pause.exhausted(Exhausted {
            wait: ms(100),
            spacing: ms(20),
        });
        assert_eq!(pause.remaining(), ms(100));
        let turns: Vec<_> = (0..4).map(|_| pause.turn().unwrap() - start).collect();
        assert_eq!(turns, [ms(100), ms(120), ms(140), ms(160)]);
        // A shorter pause reported meanwhile does not cut the queue short.
        pause.exhausted(Exhausted {
            wait: ms(10),
            spacing: ms(20),
        });
        assert_eq!(pause.turn().unwrap() - start, ms(180));
        tokio::time::sleep(ms(200)).await;
        assert_eq!(pause.turn(), None, "over once the queue has gone");
        assert_eq!(pause.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_spacing_everyone_goes_when_the_pause_ends_and_pauses_are_capped() {
        let pause = KeyPause::new(MAX_PAUSE);
        let start = Instant::now();
        pause.exhausted(Exhausted {
            wait: ms(500),
            spacing: Duration::ZERO,
        });
        assert!((0..3).all(|_| pause.turn() == Some(start + ms(500))));
        pause.exhausted(Exhausted {
            wait: Duration::from_secs(3600),
            spacing: Duration::ZERO,
        });
        assert_eq!(pause.remaining(), MAX_PAUSE);
    }
}
