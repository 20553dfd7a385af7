//! What the Anthropic, Ollama and generic HTTP providers share on the wire:
//! keys that never print, base URLs and headers from config and environment,
//! sending a request under its timeout, reading every answer's rate-limit
//! headers, and turning an error answer into a [`ProviderError`] that
//! carries the provider's message, `Retry-After` and rate-limit headers with
//! every secret scrubbed out.

use std::{
    collections::HashMap,
    fmt,
    time::{Duration, Instant, SystemTime},
};

use reqwest::{
    RequestBuilder,
    header::{HeaderMap, HeaderName, HeaderValue},
};
use serde_json::Value;

use crate::{
    ProviderError, RateLimitInfo,
    config::{self, ConfigMap},
};

/// Error bodies are cut to this many characters in error messages.
pub(crate) const MAX_ERROR_CHARS: usize = 500;
/// Header values shorter than this are not scrubbed from error messages: they
/// are content types and versions, and scrubbing them would mangle the message.
const MIN_SECRET_CHARS: usize = 8;

/// An API key or other credential; `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// As a header value marked sensitive, so hyper and `Debug` keep it hidden.
    pub(crate) fn header_value(
        &self,
        id: &str,
        prefix: &str,
    ) -> Result<HeaderValue, ProviderError> {
        let mut value = HeaderValue::try_from(format!("{prefix}{}", self.0)).map_err(|_| {
            ProviderError::Config(format!(
                "{id}: the API key contains characters not allowed in a header"
            ))
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub(crate) fn env_var(env: &HashMap<String, String>, name: &str) -> Option<String> {
    env.get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `apiKey`, then the variable named by `apiKeyEnvar`, then `default_var`.
pub(crate) fn api_key(
    config: &ConfigMap,
    env: &HashMap<String, String>,
    default_var: &str,
) -> Result<Option<Secret>, ProviderError> {
    if let Some(key) = config::string(config, "apiKey")? {
        return Ok(Some(Secret::new(key)));
    }
    if let Some(var) = config::string(config, "apiKeyEnvar")? {
        return env_var(env, var).map(|k| Some(Secret(k))).ok_or_else(|| {
            ProviderError::Config(format!(
                "environment variable `{var}` (named by `apiKeyEnvar`) is not set"
            ))
        });
    }
    Ok(env_var(env, default_var).map(Secret))
}

/// `apiBaseUrl`, then the first of `env_vars` that is set, then `default`;
/// without a trailing `/`.
pub(crate) fn base_url(
    config: &ConfigMap,
    env: &HashMap<String, String>,
    env_vars: &[&str],
    default: &str,
) -> Result<String, ProviderError> {
    let url = match config::string(config, "apiBaseUrl")? {
        Some(url) => url.to_owned(),
        None => env_vars
            .iter()
            .find_map(|v| env_var(env, v))
            .unwrap_or_else(|| default.to_owned()),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ProviderError::Config(format!(
            "the base URL (`apiBaseUrl` or {}) must start with http:// or https://",
            env_vars.join(", ")
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// `scheme://host[:port]` of `url`, without credentials, path or query: the
/// key that endpoints share a circuit breaker by.
pub(crate) fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host_port.to_ascii_lowercase()
    )
}

pub(crate) fn host_of(url: &str) -> String {
    let origin = origin(url);
    let host_port = origin.split_once("://").map_or(origin.as_str(), |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_owned(),
        _ => host_port.to_owned(),
    }
}

/// The config's `headers` map. Values are marked sensitive when `sensitive`,
/// and never quoted in errors either way: extra headers often carry credentials.
pub(crate) fn config_headers(
    id: &str,
    config: &ConfigMap,
    sensitive: bool,
    mut render: impl FnMut(&str, &str) -> Result<String, ProviderError>,
) -> Result<HeaderMap, ProviderError> {
    let mut headers = HeaderMap::new();
    let map = match config.get("headers") {
        None | Some(Value::Null) => return Ok(headers),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ProviderError::Config(format!(
                "{id}: `headers` must be a map of header names to values"
            )));
        }
    };
    for (name, value) in map {
        let header = HeaderName::try_from(name.as_str()).map_err(|_| {
            ProviderError::Config(format!("{id}: `headers.{name}` is not a valid header name"))
        })?;
        let text = match value {
            Value::String(s) => render(name, s)?,
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            _ => {
                return Err(ProviderError::Config(format!(
                    "{id}: `headers.{name}` must be a string"
                )));
            }
        };
        let mut value = HeaderValue::try_from(text).map_err(|_| {
            ProviderError::Config(format!(
                "{id}: `headers.{name}` is not a valid header value"
            ))
        })?;
        value.set_sensitive(sensitive);
        headers.insert(header, value);
    }
    Ok(headers)
}

/// The values of `headers` long enough to be credentials, for scrubbing error messages.
pub(crate) fn header_secrets(headers: &HeaderMap) -> Vec<Secret> {
    headers
        .values()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            // `Bearer sk-…`: scrub the token on its own as well as the whole value.
            let token = v.split_once(' ').map(|(_, t)| t.trim());
            std::iter::once(v).chain(token)
        })
        .filter(|v| v.chars().count() >= MIN_SECRET_CHARS)
        .map(Secret::new)
        .collect()
}

/// A provider's answer, read whole.
pub(crate) struct Answer {
    pub(crate) body: Vec<u8>,
    pub(crate) latency_ms: u32,
    pub(crate) rate_limit: Option<RateLimitInfo>,
}

/// Sends `req` (under `timeout` when given, else the client's) and reads the
/// whole body; a non-2xx answer becomes an error with `secrets` scrubbed out.
pub(crate) async fn send(
    req: RequestBuilder,
    timeout: Option<Duration>,
    secrets: &[Secret],
) -> Result<Answer, ProviderError> {
    let (client, req) = req.build_split();
    let mut req = req.map_err(ProviderError::from_reqwest)?;
    if let Some(timeout) = timeout {
        *req.timeout_mut() = Some(timeout);
    }
    // The attempt's span (`crate::traced`): the vendor continues its trace,
    // and the span gets the HTTP attributes.
    let span = tracing::Span::current();
    gauntlet_telemetry::propagation::inject_current_into(req.headers_mut());
    let traced = gauntlet_telemetry::propagation::spans_wanted();
    if traced {
        span.record("http.request.method", req.method().as_str());
        if let Some(host) = req.url().host_str() {
            span.record("server.address", host);
        }
        if let Some(port) = req.url().port_or_known_default() {
            span.record("server.port", i64::from(port));
        }
    }
    let started = Instant::now();
    let resp = client
        .execute(req)
        .await
        .map_err(ProviderError::from_reqwest)?;
    let status = resp.status();
    if traced {
        span.record("http.response.status_code", i64::from(status.as_u16()));
    }
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(ProviderError::from_reqwest)?;
    let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    if !status.is_success() {
        return Err(status_error(status.as_u16(), &headers, &body, secrets));
    }
    Ok(Answer {
        body: body.to_vec(),
        latency_ms,
        rate_limit: RateLimitInfo::from_headers(&headers),
    })
}

/// Turns an error answer into an error with the provider's own message when it
/// sent one: `{"error": {"message"}}` (OpenAI, Anthropic), `{"error": "…"}`
/// (Ollama), `{"message"}` or `{"detail"}`, else the body text.
pub(crate) fn status_error(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[Secret],
) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        text(v.pointer("/error/message"))
            .or_else(|| text(v.get("error")))
            .or_else(|| text(v.get("message")))
            .or_else(|| text(v.get("detail")))
    });
    let mut message = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    for secret in secrets {
        if !secret.expose().is_empty() {
            message = message.replace(secret.expose(), "[redacted]");
        }
    }
    let message = match message.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    };
    if status == 429 {
        ProviderError::RateLimited {
            retry_after: retry_after(headers),
            message,
            limits: RateLimitInfo::from_headers(headers).map(Box::new),
        }
    } else if let Some(retry_after) =
        retry_after(headers).filter(|_| matches!(status, 408 | 500..=599))
    {
        ProviderError::Unavailable {
            status,
            retry_after,
            message,
        }
    } else {
        ProviderError::Http { status, message }
    }
}

/// How long the answer asks us to wait: `retry-after-ms` (sent by some
/// gateways), else `Retry-After` as seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    const MAX_SECS: f64 = 86_400.0;
    let text = |name: &str| Some(headers.get(name)?.to_str().ok()?.trim().to_owned());
    let seconds = |s: &str, scale: f64| {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| Duration::from_secs_f64((v * scale).min(MAX_SECS)))
    };
    if let Some(ms) = text("retry-after-ms").and_then(|s| seconds(&s, 1e-3)) {
        return Some(ms);
    }
    let value = text("retry-after")?;
    seconds(&value, 1.0).or_else(|| {
        let at = chrono::DateTime::parse_from_rfc2822(&value).ok()?;
        let at = SystemTime::from(at);
        // A date in the past means "now".
        Some(
            at.duration_since(now)
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_secs_f64(MAX_SECS)),
        )
    })
}

pub(crate) fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_http_dates() {
        let now = SystemTime::from(
            chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT").unwrap(),
        );
        assert_eq!(
            retry_after_at(&headers(&[("retry-after", "3")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after_at(
                &headers(&[("retry-after", "3"), ("retry-after-ms", "250")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after_at(
                &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:07 GMT")]),
                now
            ),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after_at(
                &headers(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")]),
                now
            ),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(
            retry_after_at(&headers(&[("retry-after", "soon")]), now),
            None
        );
        assert_eq!(retry_after_at(&HeaderMap::new(), now), None);
    }

    #[test]
    fn error_messages_come_from_every_common_shape() {
        let none = HeaderMap::new();
        let msg = |body: &str| match status_error(500, &none, body.as_bytes(), &[]) {
            ProviderError::Http { message, .. } => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            msg(r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#),
            "boom"
        );
        assert_eq!(
            msg(r#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(msg(r#"{"message":"nope"}"#), "nope");
        assert_eq!(msg("plain text"), "plain text");
        let limited = status_error(429, &headers(&[("retry-after", "2")]), b"{}", &[]);
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(limited.rate_limit_info(), None);
    }

    #[test]
    fn a_429_keeps_its_rate_limit_headers() {
        // As the mock's cap (and OpenAI) refuses a request: the key is out.
        let err = status_error(
            429,
            &headers(&[
                ("retry-after", "1"),
                ("retry-after-ms", "40"),
                ("x-ratelimit-limit-requests", "11"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "104ms"),
            ]),
            br#"{"error":{"message":"Rate limit reached for requests"}}"#,
            &[],
        );
        assert_eq!(err.retry_after(), Some(Duration::from_millis(40)));
        let info = err.rate_limit_info().expect("headers kept");
        assert!(info.is_exhausted());
        assert_eq!(info.requests.reset, Some(Duration::from_millis(104)));
    }

    #[test]
    fn secrets_are_scrubbed_from_error_messages() {
        let secrets = header_secrets(&headers(&[
            ("authorization", "Bearer tok-0123456789"),
            ("content-type", "application/json"),
            ("x-short", "v1"),
        ]));
        let err = status_error(
            401,
            &HeaderMap::new(),
            br#"{"error":"bad token tok-0123456789 for application/json"}"#,
            &secrets,
        )
        .to_string();
        assert!(!err.contains("tok-0123456789"), "{err}");
        assert!(err.contains("[redacted]"), "{err}");
    }

    #[test]
    fn origins_drop_credentials_paths_and_case() {
        assert_eq!(
            origin("https://user:pw@API.example.com:8443/v1/x?y"),
            "https://api.example.com:8443"
        );
        assert_eq!(origin("http://127.0.0.1:11434"), "http://127.0.0.1:11434");
        assert_eq!(host_of("https://api.anthropic.com/v1"), "api.anthropic.com");
        assert_eq!(host_of("http://localhost:11434"), "localhost");
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("sk-abc")), "Secret(<redacted>)");
    }
}
