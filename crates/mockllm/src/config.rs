//! The mock's behaviour knobs: the serialisable [`MockConfig`] and the
//! lock-free live copy that request handlers read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::MockError;

/// How the mock behaves: latency and the probability of each injected fault.
///
/// The default answers at once and never faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// Base latency added before every answer.
    pub latency_ms: u64,
    /// Uniform jitter: the latency is drawn from `latency_ms ± jitter_ms` (never below 0).
    pub jitter_ms: u64,
    /// Probability in `[0, 1]` that a request is answered 429.
    pub rate_429: f64,
    /// The `Retry-After` seconds sent with a 429.
    pub retry_after_secs: u64,
    /// Probability in `[0, 1]` that a request is answered 500.
    pub rate_500: f64,
    /// Probability in `[0, 1]` that a request hangs `hang_ms` and then gets a 504.
    pub rate_timeout: f64,
    /// How long a 'timeout' fault holds the request before answering 504.
    pub hang_ms: u64,
    /// Makes the fault and jitter draws reproducible: the n-th request after a
    /// reset or config change always gets the same draw.
    pub seed: Option<u64>,
    /// A true provider cap: at most this many requests per second are
    /// served (GCRA, bursts of up to a tenth of a second's worth); the
    /// others get a 429 with `Retry-After`. Every answer under a cap
    /// carries OpenAI's `x-ratelimit-limit-requests` (the burst),
    /// `x-ratelimit-remaining-requests` (0 on its 429s) and
    /// `x-ratelimit-reset-requests` (until the burst is whole again).
    /// 0 means no cap.
    pub max_rps: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            jitter_ms: 0,
            rate_429: 0.0,
            retry_after_secs: 1,
            rate_500: 0.0,
            rate_timeout: 0.0,
            hang_ms: 30_000,
            seed: None,
            max_rps: 0,
        }
    }
}

impl MockConfig {
    /// Checks that every rate is a probability and that together they do not exceed 1.
    pub fn validate(&self) -> Result<(), MockError> {
        for (field, rate) in [
            ("rate_429", self.rate_429),
            ("rate_500", self.rate_500),
            ("rate_timeout", self.rate_timeout),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(MockError::InvalidConfig {
                    field,
                    reason: format!("must be within [0, 1], got {rate}"),
                });
            }
        }
        let total = self.rate_429 + self.rate_500 + self.rate_timeout;
        // A little slack so that e.g. 0.7 + 0.2 + 0.1 is not rejected for rounding.
        if total > 1.0 + 1e-9 {
            return Err(MockError::InvalidConfig {
                field: "rate_429",
                reason: format!(
                    "rate_429 + rate_500 + rate_timeout must not exceed 1, got {total}"
                ),
            });
        }
        Ok(())
    }
}

/// The config as atomics, so the hot path reads it without a lock.
///
/// A concurrent update may be observed half-applied by one request; that is
/// harmless for a mock and the price of not locking.
#[derive(Debug, Default)]
pub(crate) struct LiveConfig {
    latency_ms: AtomicU64,
    jitter_ms: AtomicU64,
    rate_429: AtomicU64,
    retry_after_secs: AtomicU64,
    rate_500: AtomicU64,
    rate_timeout: AtomicU64,
    hang_ms: AtomicU64,
    seed: AtomicU64,
    seeded: AtomicBool,
    max_rps: AtomicU64,
}

impl LiveConfig {
    pub(crate) fn new(config: &MockConfig) -> Self {
        let live = Self::default();
        live.store(config);
        live
    }

    pub(crate) fn store(&self, c: &MockConfig) {
        self.latency_ms.store(c.latency_ms, Ordering::Relaxed);
        self.jitter_ms.store(c.jitter_ms, Ordering::Relaxed);
        self.rate_429.store(c.rate_429.to_bits(), Ordering::Relaxed);
        self.retry_after_secs
            .store(c.retry_after_secs, Ordering::Relaxed);
        self.rate_500.store(c.rate_500.to_bits(), Ordering::Relaxed);
        self.rate_timeout
            .store(c.rate_timeout.to_bits(), Ordering::Relaxed);
        self.hang_ms.store(c.hang_ms, Ordering::Relaxed);
        self.seed.store(c.seed.unwrap_or(0), Ordering::Relaxed);
        self.max_rps.store(c.max_rps, Ordering::Relaxed);
        self.seeded.store(c.seed.is_some(), Ordering::Release);
    }

    pub(crate) fn load(&self) -> MockConfig {
        let seeded = self.seeded.load(Ordering::Acquire);
        MockConfig {
            latency_ms: self.latency_ms.load(Ordering::Relaxed),
            jitter_ms: self.jitter_ms.load(Ordering::Relaxed),
            rate_429: f64::from_bits(self.rate_429.load(Ordering::Relaxed)),
            retry_after_secs: self.retry_after_secs.load(Ordering::Relaxed),
            rate_500: f64::from_bits(self.rate_500.load(Ordering::Relaxed)),
            rate_timeout: f64::from_bits(self.rate_timeout.load(Ordering::Relaxed)),
            hang_ms: self.hang_ms.load(Ordering::Relaxed),
            seed: seeded.then(|| self.seed.load(Ordering::Relaxed)),
            max_rps: self.max_rps.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_injects_nothing() {
        let c = MockConfig::default();
        assert_eq!(c.latency_ms, 0);
        assert_eq!(c.rate_429 + c.rate_500 + c.rate_timeout, 0.0);
        c.validate().unwrap();
    }

    #[test]
    fn rate_outside_unit_interval_is_rejected_naming_the_field() {
        let c = MockConfig {
            rate_500: 1.5,
            ..MockConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("rate_500"), "{err}");
        let nan = MockConfig {
            rate_timeout: f64::NAN,
            ..MockConfig::default()
        };
        assert!(nan.validate().is_err());
    }

    #[test]
    fn rates_summing_above_one_are_rejected() {
        let c = MockConfig {
            rate_429: 0.6,
            rate_500: 0.6,
            ..MockConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn live_config_round_trips() {
        let c = MockConfig {
            latency_ms: 5,
            jitter_ms: 2,
            rate_429: 0.25,
            retry_after_secs: 7,
            rate_500: 0.125,
            rate_timeout: 0.5,
            hang_ms: 99,
            seed: Some(42),
            max_rps: 250,
        };
        let live = LiveConfig::new(&c);
        assert_eq!(live.load(), c);
        live.store(&MockConfig::default());
        assert_eq!(live.load(), MockConfig::default());
    }

    #[test]
    fn partial_json_fills_defaults_and_unknown_keys_fail() {
        let c: MockConfig = serde_json::from_str(r#"{"rate_429": 1.0}"#).unwrap();
        assert_eq!(c.rate_429, 1.0);
        assert_eq!(c.hang_ms, MockConfig::default().hang_ms);
        assert!(serde_json::from_str::<MockConfig>(r#"{"rate429": 1.0}"#).is_err());
    }
}
