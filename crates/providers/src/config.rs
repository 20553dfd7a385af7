//! Reading typed values out of a provider's JSON config map, with errors that
//! name the offending key.

use serde_json::{Map, Value};

use crate::ProviderError;

pub(crate) type ConfigMap = Map<String, Value>;

pub(crate) fn string<'a>(
    config: &'a ConfigMap,
    key: &str,
) -> Result<Option<&'a str>, ProviderError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim())),
        Some(_) => Err(ProviderError::Config(format!("`{key}` must be a string"))),
    }
}

pub(crate) fn uint(config: &ConfigMap, key: &str) -> Result<Option<u64>, ProviderError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .map(Some)
            .ok_or_else(|| {
                ProviderError::Config(format!("`{key}` must be a non-negative whole number"))
            }),
    }
}

pub(crate) fn number(config: &ConfigMap, key: &str) -> Result<Option<f64>, ProviderError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n: &f64| n.is_finite() && *n >= 0.0)
            .map(Some)
            .ok_or_else(|| ProviderError::Config(format!("`{key}` must be a non-negative number"))),
    }
}

/// The per-request timeout: promptfoo's `timeout` or our `timeoutMs`, in
/// milliseconds. Zero is rejected rather than read as "no timeout".
pub(crate) fn timeout(config: &ConfigMap) -> Result<Option<std::time::Duration>, ProviderError> {
    let (key, ms) = match uint(config, "timeoutMs")? {
        Some(ms) => ("timeoutMs", Some(ms)),
        None => ("timeout", uint(config, "timeout")?),
    };
    match ms {
        Some(0) => Err(ProviderError::Config(format!("`{key}` must be at least 1"))),
        ms => Ok(ms.map(std::time::Duration::from_millis)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> ConfigMap {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn values_are_read_leniently_and_errors_name_the_key() {
        let c = map(json!({"a": " x ", "n": "12", "f": 0.5, "bad": [1], "empty": ""}));
        assert_eq!(string(&c, "a").unwrap(), Some("x"));
        assert_eq!(string(&c, "empty").unwrap(), None);
        assert_eq!(string(&c, "missing").unwrap(), None);
        assert_eq!(uint(&c, "n").unwrap(), Some(12));
        assert_eq!(number(&c, "f").unwrap(), Some(0.5));
        let err = uint(&c, "bad").unwrap_err().to_string();
        assert!(err.contains("`bad`"), "{err}");
        assert!(number(&map(json!({"x": -1})), "x").is_err());
    }

    #[test]
    fn timeout_reads_either_key_in_milliseconds_and_rejects_zero() {
        use std::time::Duration;
        assert_eq!(timeout(&map(json!({}))).unwrap(), None);
        assert_eq!(
            timeout(&map(json!({"timeout": 250}))).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            timeout(&map(json!({"timeout": 1, "timeoutMs": 2}))).unwrap(),
            Some(Duration::from_millis(2))
        );
        let err = timeout(&map(json!({"timeout": 0})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`timeout`"), "{err}");
    }
}
