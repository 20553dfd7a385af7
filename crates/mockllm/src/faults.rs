//! Deciding each request's fate: which fault (if any) and how much latency,
//! from the config's rates or the per-request override headers.

use std::time::Duration;

use axum::http::HeaderMap;

use crate::config::MockConfig;

/// Forces a request's outcome: `429`, `500`, `503` (with `Retry-After`),
/// `timeout`, or `none`.
pub const FAULT_HEADER: &str = "x-mock-fault";
/// Forces a request's latency in milliseconds (no jitter).
pub const LATENCY_HEADER: &str = "x-mock-latency-ms";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    RateLimited,
    ServerError,
    /// 503 with the config's `Retry-After` (only by the override header).
    Unavailable,
    Timeout,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) fault: Option<Fault>,
    pub(crate) latency: Duration,
}

/// The header overrides could not be understood; the request gets a 400 so a
/// typo in a test fails loudly instead of silently running unfaulted.
#[derive(Debug)]
pub(crate) struct BadOverride(pub(crate) &'static str);

/// Draws the plan for request number `seq` (0-based since the last reset or config change).
pub(crate) fn plan(
    config: &MockConfig,
    seq: u64,
    headers: &HeaderMap,
) -> Result<Plan, BadOverride> {
    let forced_fault = match headers.get(FAULT_HEADER).map(|v| v.as_bytes()) {
        None => None,
        Some(b"429") => Some(Some(Fault::RateLimited)),
        Some(b"500") => Some(Some(Fault::ServerError)),
        Some(b"503") => Some(Some(Fault::Unavailable)),
        Some(b"timeout") => Some(Some(Fault::Timeout)),
        Some(b"none") => Some(None),
        Some(_) => {
            return Err(BadOverride(
                "x-mock-fault must be one of 429, 500, 503, timeout, none",
            ));
        }
    };
    let forced_latency = match headers.get(LATENCY_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(BadOverride(
                    "x-mock-latency-ms must be a whole number of milliseconds",
                ))?,
        ),
    };

    let needs_rng = (forced_fault.is_none()
        && config.rate_429 + config.rate_500 + config.rate_timeout > 0.0)
        || (forced_latency.is_none() && config.jitter_ms > 0);
    let mut rng = if !needs_rng {
        SplitMix64(0)
    } else {
        match config.seed {
            Some(seed) => SplitMix64(seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            None => SplitMix64(rand::random()),
        }
    };

    let fault = forced_fault.unwrap_or_else(|| {
        let u = rng.next_f64();
        if u < config.rate_429 {
            Some(Fault::RateLimited)
        } else if u < config.rate_429 + config.rate_500 {
            Some(Fault::ServerError)
        } else if u < config.rate_429 + config.rate_500 + config.rate_timeout {
            Some(Fault::Timeout)
        } else {
            None
        }
    });
    let latency_ms = forced_latency.unwrap_or_else(|| {
        if config.jitter_ms == 0 {
            config.latency_ms
        } else {
            let span = config.jitter_ms.saturating_mul(2).saturating_add(1);
            let offset = rng.next_u64() % span;
            (config.latency_ms + offset).saturating_sub(config.jitter_ms)
        }
    });
    Ok(Plan {
        fault,
        latency: Duration::from_millis(latency_ms),
    })
}

/// A tiny, well-mixed PRNG: seeding it per request from `seed ^ seq` keeps seeded
/// draws reproducible without sharing RNG state (and a lock) between requests.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn cfg(rate_429: f64, rate_500: f64, rate_timeout: f64, seed: Option<u64>) -> MockConfig {
        MockConfig {
            rate_429,
            rate_500,
            rate_timeout,
            seed,
            ..MockConfig::default()
        }
    }

    #[test]
    fn rate_one_always_faults_and_zero_never() {
        let none = HeaderMap::new();
        for seq in 0..200 {
            let p = plan(&cfg(0.0, 1.0, 0.0, None), seq, &none).unwrap();
            assert_eq!(p.fault, Some(Fault::ServerError));
            let p = plan(&cfg(0.0, 0.0, 0.0, None), seq, &none).unwrap();
            assert_eq!(p.fault, None);
        }
    }

    #[test]
    fn seeded_draws_repeat_and_follow_the_rates() {
        let c = cfg(0.2, 0.3, 0.1, Some(7));
        let none = HeaderMap::new();
        let run = || -> Vec<_> {
            (0..5000)
                .map(|s| plan(&c, s, &none).unwrap().fault)
                .collect()
        };
        let a = run();
        assert_eq!(a, run());
        let share = |f| a.iter().filter(|x| **x == f).count() as f64 / a.len() as f64;
        assert!((share(Some(Fault::RateLimited)) - 0.2).abs() < 0.03);
        assert!((share(Some(Fault::ServerError)) - 0.3).abs() < 0.03);
        assert!((share(Some(Fault::Timeout)) - 0.1).abs() < 0.03);
        let other: Vec<_> = (0..5000)
            .map(|s| plan(&cfg(0.2, 0.3, 0.1, Some(8)), s, &none).unwrap().fault)
            .collect();
        assert_ne!(a, other);
    }

    #[test]
    fn headers_override_rates_and_latency() {
        let mut h = HeaderMap::new();
        h.insert(FAULT_HEADER, HeaderValue::from_static("timeout"));
        h.insert(LATENCY_HEADER, HeaderValue::from_static("250"));
        let p = plan(&cfg(1.0, 0.0, 0.0, None), 0, &h).unwrap();
        assert_eq!(p.fault, Some(Fault::Timeout));
        assert_eq!(p.latency, Duration::from_millis(250));
        h.insert(FAULT_HEADER, HeaderValue::from_static("none"));
        assert_eq!(plan(&cfg(1.0, 0.0, 0.0, None), 0, &h).unwrap().fault, None);
        h.insert(FAULT_HEADER, HeaderValue::from_static("503"));
        assert_eq!(
            plan(&MockConfig::default(), 0, &h).unwrap().fault,
            Some(Fault::Unavailable)
        );
        h.insert(FAULT_HEADER, HeaderValue::from_static("502"));
        assert!(plan(&MockConfig::default(), 0, &h).is_err());
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let c = MockConfig {
            latency_ms: 10,
            jitter_ms: 15,
            ..MockConfig::default()
        };
        let none = HeaderMap::new();
        let (mut lo, mut hi) = (u128::MAX, 0);
        for seq in 0..2000 {
            let ms = plan(&c, seq, &none).unwrap().latency.as_millis();
            lo = lo.min(ms);
            hi = hi.max(ms);
        }
        assert_eq!(lo, 0, "latency below zero clamps to zero");
        assert_eq!(hi, 25);
    }
}
