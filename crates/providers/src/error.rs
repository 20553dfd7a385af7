//! The crate's error type and its retry classification.

use std::time::Duration;

use crate::RateLimitInfo;

/// Why a provider call failed. Messages never contain API keys.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("rate limited by the provider{}: {message}", retry_after_text(*.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
        /// The answer's rate-limit headers: whether the whole key is out
        /// (remaining 0) or this was one refusal among successes.
        limits: Option<Box<RateLimitInfo>>,
    },
    #[error("provider answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// A 408 or 5xx that said when to come back (`Retry-After`): retried,
    /// no sooner than asked.
    #[error("provider answered HTTP {status}{}: {message}", retry_after_text(Some(*.retry_after)))]
    Unavailable {
        status: u16,
        retry_after: Duration,
        message: String,
    },
    #[error("provider call timed out")]
    Timeout,
    #[error("could not reach the provider: {0}")]
    Connect(String),
    #[error("could not decode the provider's answer: {0}")]
    Decode(String),
    #[error("invalid provider config: {0}")]
    Config(String),
    #[error("unsupported provider: {0}")]
    Unsupported(String),
    /// The endpoint's circuit breaker is open: recent calls failed, so this one
    /// was not sent. `reason` is the failure that opened it; `retry_in`, how
    /// long until the breaker lets a probe through (a caller that can hand
    /// its work back, as the worker does, waits that long rather than fail).
    #[error("circuit breaker open for {endpoint} after repeated failures (last: {reason})")]
    CircuitOpen {
        endpoint: String,
        reason: String,
        retry_in: Duration,
    },
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |d| {
        format!(" (retry after {:.1}s)", d.as_secs_f64())
    })
}

impl ProviderError {
    /// Whether trying again may succeed: rate limits, 408, 5xx, timeouts and
    /// connection failures. Other 4xx, config and decode errors would fail the same way.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Unavailable { .. }
            | Self::Timeout
            | Self::Connect(_) => true,
            Self::Http { status, .. } => matches!(status, 408 | 429 | 500..=599),
            // An open circuit fails fast on purpose; a retry loop waiting it out
            // would defeat that.
            Self::Decode(_) | Self::Config(_) | Self::Unsupported(_) | Self::CircuitOpen { .. } => {
                false
            }
        }
    }

    /// The error's class, as the OpenTelemetry `error.type` attribute: the
    /// HTTP status for an answer, else what went wrong.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "429",
            Self::Http { status, .. } | Self::Unavailable { status, .. } => match status {
                400 => "400",
                401 => "401",
                403 => "403",
                404 => "404",
                408 => "408",
                429 => "429",
                500 => "500",
                502 => "502",
                503 => "503",
                504 => "504",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::Decode(_) => "decode",
            Self::Config(_) => "config",
            Self::Unsupported(_) => "unsupported",
            Self::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// How long the provider asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::Unavailable { retry_after, .. } => Some(*retry_after),
            Self::CircuitOpen { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }

    /// The rate-limit headers of a 429, when it sent any.
    pub fn rate_limit_info(&self) -> Option<&RateLimitInfo> {
        match self {
            Self::RateLimited { limits, .. } => limits.as_deref(),
            _ => None,
        }
    }

    /// Classifies a transport error. The URL is dropped from the message: it
    /// carries no key today, but a user-supplied base URL might.
    pub(crate) fn from_reqwest(err: reqwest::Error) -> Self {
        let err = err.without_url();
        if err.is_timeout() {
            return Self::Timeout;
        }
        let text = error_chain(&err);
        if err.is_builder() {
            Self::Config(text)
        } else if err.is_decode() {
            Self::Decode(text)
        } else {
            // Connect failures, resets mid-body and protocol errors are all worth another try.
            Self::Connect(text)
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> ProviderError {
        ProviderError::Http {
            status,
            message: String::new(),
        }
    }

    #[test]
    fn transient_failures_are_retryable() {
        for e in [
            http(408),
            http(429),
            http(500),
            http(503),
            ProviderError::Timeout,
            ProviderError::Connect("reset".into()),
            ProviderError::RateLimited {
                retry_after: None,
                message: String::new(),
                limits: None,
            },
        ] {
            assert!(e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn client_and_config_errors_are_not_retryable() {
        for e in [
            http(400),
            http(401),
            http(404),
            http(422),
            ProviderError::Config("x".into()),
            ProviderError::Unsupported("x".into()),
            ProviderError::Decode("x".into()),
            ProviderError::CircuitOpen {
                endpoint: "http://x".into(),
                reason: "HTTP 500".into(),
                retry_in: Duration::from_secs(30),
            },
        ] {
            assert!(!e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn rate_limit_message_shows_the_wait() {
        let e = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
            message: "slow down".into(),
            limits: None,
        };
        assert_eq!(
            e.to_string(),
            "rate limited by the provider (retry after 2.0s): slow down"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    }
}
