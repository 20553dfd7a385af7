//! What a provider's answer says about its rate limits: OpenAI's
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (also sent by
//! Groq, vLLM's and LiteLLM's gateways and the Gauntlet mock) and
//! Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`.
//! Read from every answer, success or error, so the limits of
//! [`crate::limit`] can stop a key's calls while it has nothing left.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// The most a reset is believed: longer ones (a misread date, a daily
/// quota) are read as this.
const MAX_RESET: Duration = Duration::from_secs(86_400);

/// One limit of a key as an answer reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// What the key may spend before it is limited.
    pub limit: Option<u64>,
    /// What is left of it.
    pub remaining: Option<u64>,
    /// How long until it is whole again, counted from when the answer was read.
    pub reset: Option<Duration>,
}

impl Quota {
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }

    /// Nothing is left.
    pub fn is_exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// How long the key takes to win one unit back, when the answer says
    /// enough to tell: `reset / (limit − remaining)`. OpenAI and Anthropic
    /// refill their buckets continuously, so this is the pace the key allows.
    pub fn refill_interval(&self) -> Option<Duration> {
        let used = self.limit?.checked_sub(self.remaining?)?;
        let used = u32::try_from(used).ok().filter(|&n| n > 0)?;
        Some(self.reset? / used)
    }
}

/// The request and token limits an answer reported. Both are empty when it
/// sent no such header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub requests: Quota,
    pub tokens: Quota,
}

impl RateLimitInfo {
    /// Reads the headers of an answer received now; `None` when there are none.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Self::from_headers_at(headers, SystemTime::now())
    }

    fn from_headers_at(headers: &HeaderMap, now: SystemTime) -> Option<Self> {
        let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
        let count = |name: &str| text(name)?.parse::<u64>().ok();
        let openai = |kind: &str| Quota {
            limit: count(&format!("x-ratelimit-limit-{kind}")),
            remaining: count(&format!("x-ratelimit-remaining-{kind}")),
            reset: text(&format!("x-ratelimit-reset-{kind}")).and_then(parse_reset),
        };
        // Anthropic's token headers are already the tightest of its input
        // and output token limits.
        let anthropic = |kind: &str| Quota {
            limit: count(&format!("anthropic-ratelimit-{kind}-limit")),
            remaining: count(&format!("anthropic-ratelimit-{kind}-remaining")),
            reset: text(&format!("anthropic-ratelimit-{kind}-reset"))
                .and_then(|t| until_time(t, now)),
        };
        let either = |kind: &str| {
            let quota = openai(kind);
            if quota.is_empty() {
                anthropic(kind)
            } else {
                quota
            }
        };
        let info = Self {
            requests: either("requests"),
            tokens: either("tokens"),
        };
        (!info.requests.is_empty() || !info.tokens.is_empty()).then_some(info)
    }

    /// Whether the key has nothing left of one of its limits.
    pub fn is_exhausted(&self) -> bool {
        self.requests.is_exhausted() || self.tokens.is_exhausted()
    }
}

/// OpenAI's reset: a Go duration (`20ms`, `1s`, `6m0s`, `1h2m3.5s`), or a
/// bare number of seconds as some gateways send.
fn parse_reset(text: &str) -> Option<Duration> {
    parse_duration(text).map(|d| d.min(MAX_RESET))
}

/// Anthropic's reset: the RFC 3339 time the limit is whole again.
fn until_time(text: &str, now: SystemTime) -> Option<Duration> {
    let at = SystemTime::from(chrono::DateTime::parse_from_rfc3339(text).ok()?);
    // A time in the past (clocks drift) means now.
    Some(at.duration_since(now).unwrap_or_default().min(MAX_RESET))
}

/// A Go-style duration: one or more `<number><unit>` with units `h`, `m`,
/// `s`, `ms`, `us`/`µs`, `ns`; or a bare non-negative number of seconds.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<f64>() {
        return seconds(secs);
    }
    let mut rest = text;
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit..];
        total += value * scale;
    }
    seconds(total)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e12)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use reqwest::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn go_durations_as_openai_sends_them() {
        for (text, want) in [
            ("20ms", ms(20)),
            ("1s", ms(1000)),
            ("6m0s", ms(360_000)),
            ("1h2m3.5s", ms(3_723_500)),
            ("59.999s", ms(59_999)),
            ("2m59.56s", ms(179_560)),
            ("0s", ms(0)),
            ("1.5", ms(1500)),
            ("7", ms(7000)),
            ("250us", Duration::from_micros(250)),
            ("1µs", Duration::from_micros(1)),
            ("100ns", Duration::from_nanos(100)),
        ] {
            let got = parse_duration(text).unwrap_or_else(|| panic!("{text} unread"));
            assert!(
                got.abs_diff(want) < Duration::from_micros(1),
                "{text}: {got:?} != {want:?}"
            );
        }
        for text in ["", "soon", "1x", "ms", "-1s", "1s-2s", "1..2s", "NaN"] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    proptest! {
        #[test]
        fn durations_written_go_style_read_back(h in 0u64..48, m in 0u64..60, s in 0u64..60, milli in 0u64..1000) {
            let text = format!("{h}h{m}m{s}.{milli:03}s");
            let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + milli);
            let got = parse_duration(&text).unwrap();
            prop_assert!(got.abs_diff(want) < Duration::from_micros(1), "{} {:?}", text, got);
        }

        #[test]
        fn no_text_panics_the_parser(text in "\\PC{0,16}") {
            let _ = parse_duration(&text);
        }
    }

    #[test]
    fn openai_headers_of_a_success() {
        // As api.openai.com answers a chat completion.
        let info = RateLimitInfo::from_headers(&headers(&[
            ("x-ratelimit-limit-requests", "5000"),
            ("x-ratelimit-limit-tokens", "800000"),
            ("x-ratelimit-remaining-requests", "4999"),
            ("x-ratelimit-remaining-tokens", "799994"),
            ("x-ratelimit-reset-requests", "12ms"),
            ("x-ratelimit-reset-tokens", "0s"),
        ]))
        .unwrap();
        assert_eq!(
            info.requests,
            Quota {
                limit: Some(5000),
                remaining: Some(4999),
                reset: Some(ms(12)),
            }
        );
        assert_eq!(info.tokens.remaining, Some(799_994));
        assert!(!info.is_exhausted());
        assert_eq!(info.requests.refill_interval(), Some(ms(12)));
    }

    #[test]
    fn openai_headers_of_an_exhausted_key() {
        let info = RateLimitInfo::from_headers(&headers(&[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1m0s"),
            ("x-ratelimit-remaining-tokens", "29000"),
        ]))
        .unwrap();
        assert!(info.is_exhausted());
        // 500 a minute come back one every 120 ms.
        assert_eq!(info.requests.refill_interval(), Some(ms(120)));
        let tokens_out = RateLimitInfo::from_headers(&headers(&[
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]))
        .unwrap();
        assert!(tokens_out.is_exhausted());
        assert_eq!(tokens_out.tokens.reset, Some(ms(360_000)));
        assert_eq!(tokens_out.requests, Quota::default());
    }

    #[test]
    fn anthropic_headers_reset_at_a_time() {
        let now =
            SystemTime::from(chrono::DateTime::parse_from_rfc3339("2025-05-01T12:00:00Z").unwrap());
        let info = RateLimitInfo::from_headers_at(
            &headers(&[
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                (
                    "anthropic-ratelimit-requests-reset",
                    "2025-05-01T12:00:01.5Z",
                ),
                ("anthropic-ratelimit-tokens-limit", "40000"),
                ("anthropic-ratelimit-tokens-remaining", "39000"),
                ("anthropic-ratelimit-tokens-reset", "2025-05-01T11:59:59Z"),
                ("retry-after", "2"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            info.requests,
            Quota {
                limit: Some(50),
                remaining: Some(0),
                reset: Some(ms(1500)),
            }
        );
        assert_eq!(info.tokens.reset, Some(Duration::ZERO), "past means now");
        assert!(info.is_exhausted());
    }

    #[test]
    fn answers_without_limit_headers_say_nothing() {
        assert_eq!(RateLimitInfo::from_headers(&HeaderMap::new()), None);
        assert_eq!(
            RateLimitInfo::from_headers(&headers(&[("retry-after", "1")])),
            None
        );
        // Unreadable values are left out rather than guessed.
        let info = RateLimitInfo::from_headers(&headers(&[
            ("x-ratelimit-remaining-requests", "lots"),
            ("x-ratelimit-reset-requests", "1s"),
        ]))
        .unwrap();
        assert_eq!(info.requests.remaining, None);
        assert!(!info.is_exhausted());
    }
}
