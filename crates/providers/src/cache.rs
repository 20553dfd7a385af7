//! The response cache shared by every worker: a provider wrapper that looks
//! a prompt up in a [`gauntlet_cache::Cache`] (L1 moka, L2 Redis) before
//! calling, and stores successful answers.
//!
//! The key is a SHA-256 of the provider id (which names the model), its
//! parameters (the suite config without secrets or settings that cannot
//! change an answer) and the rendered prompt. Values are the completion as
//! JSON, LZ4-compressed above [`COMPRESS_ABOVE`] bytes. Errors are never
//! stored. A hit keeps the original tokens, cost and latency (as promptfoo
//! does, so graders see the same numbers) and is marked `cached`.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use gauntlet_cache::Cache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tracing::debug;

use crate::{Completion, Provider, ProviderError};

/// Values longer than this are compressed.
pub const COMPRESS_ABOVE: usize = 1024;
/// The most a stored value may claim to decompress to; anything larger is
/// treated as corrupt rather than allocated.
const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;
/// Leading byte of a stored value: plain JSON or LZ4 (size-prefixed) JSON.
const PLAIN: u8 = b'j';
const LZ4: u8 = b'z';
/// Bumped when the stored format changes, so old entries are simply missed.
const KEY_VERSION: &str = "v1";

/// Whether a lookup found an answer; see [`CachedProvider::on_lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
}

/// Called once per lookup, e.g. to count hits and misses in metrics.
pub type LookupHook = Arc<dyn Fn(Lookup) + Send + Sync>;

/// A provider whose successful answers are cached.
pub struct CachedProvider {
    inner: Arc<dyn Provider>,
    cache: Cache,
    ttl: Duration,
    /// Hash state over the id and parameters; each prompt finishes a copy.
    prefix: Sha256,
    hook: Option<LookupHook>,
}

impl CachedProvider {
    /// Caches `inner`, built from suite provider `id` and `config`, for `ttl`.
    pub fn new(
        inner: Arc<dyn Provider>,
        id: &str,
        config: &Map<String, Value>,
        cache: Cache,
        ttl: Duration,
    ) -> Self {
        let mut prefix = Sha256::new();
        for part in [KEY_VERSION, id.trim(), &parameters(config).to_string()] {
            prefix.update((part.len() as u64).to_le_bytes());
            prefix.update(part.as_bytes());
        }
        Self {
            inner,
            cache,
            ttl,
            prefix,
            hook: None,
        }
    }

    /// Reports every lookup to `hook`.
    pub fn on_lookup(mut self, hook: LookupHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The cache key of `prompt`.
    pub fn key(&self, prompt: &str) -> String {
        let mut hash = self.prefix.clone();
        hash.update((prompt.len() as u64).to_le_bytes());
        hash.update(prompt.as_bytes());
        format!("response:{}", hex::encode(hash.finalize()))
    }

    fn report(&self, lookup: Lookup) {
        if let Some(hook) = &self.hook {
            hook(lookup);
        }
    }
}

#[async_trait]
impl Provider for CachedProvider {
    fn id(&self) -> &str {
        self.inner.id()
    }

    /// Embeddings are not cached.
    async fn embed(&self, texts: &[String]) -> Result<crate::Embeddings, ProviderError> {
        self.inner.embed(texts).await
    }

    async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError> {
        let key = self.key(prompt);
        if let Some(bytes) = self.cache.get(&key).await {
            match decode(&bytes) {
                Some(mut completion) => {
                    self.report(Lookup::Hit);
                    completion.cached = true;
                    return Ok(completion);
                }
                None => debug!(key, "unreadable cached response, calling the provider"),
            }
        }
        self.report(Lookup::Miss);
        let completion = self.inner.complete(prompt).await?;
        // Only answers are stored: an error may not happen next time.
        if let Some(bytes) = encode(&completion) {
            self.cache.set(&key, &bytes, self.ttl).await;
        }
        Ok(completion)
    }
}

/// Config keys that cannot change an answer: credentials (never part of a
/// key, even hashed) and call settings (retries, timeouts, limits, caching).
fn is_ignored_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    matches!(
        k.as_str(),
        "apikey"
            | "apikeyenvar"
            | "authorization"
            | "xapikey"
            | "cookie"
            | "password"
            | "secret"
            | "token"
            | "accesstoken"
            | "bearertoken"
            | "maxretries"
            | "retrybasedelayms"
            | "retrymaxdelayms"
            | "timeoutms"
            | "requestsperminute"
            | "tokensperminute"
            | "rpm"
            | "tpm"
            | "maxconcurrency"
    ) || k.ends_with("apikey")
        || k.ends_with("secret")
        || k.ends_with("password")
        || k.starts_with("breaker")
}

/// The config without ignored keys, at any depth (an `http` provider's
/// `headers` carry its `Authorization`). `serde_json` maps are sorted, so
/// equal configs print equally.
fn parameters(config: &Map<String, Value>) -> Value {
    fn clean(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, _)| !is_ignored_key(k))
                    .map(|(k, v)| (k.clone(), clean(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
            other => other.clone(),
        }
    }
    clean(&Value::Object(config.clone()))
}

fn encode(completion: &Completion) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(completion).ok()?;
    let mut out = Vec::with_capacity(json.len().min(COMPRESS_ABOVE) + 16);
    if json.len() > COMPRESS_ABOVE {
        out.push(LZ4);
        out.extend_from_slice(&lz4_flex::compress_prepend_size(&json));
    } else {
        out.push(PLAIN);
        out.extend_from_slice(&json);
    }
    Some(out)
}

fn decode(bytes: &[u8]) -> Option<Completion> {
    let (&tag, body) = bytes.split_first()?;
    match tag {
        PLAIN => serde_json::from_slice(body).ok(),
        LZ4 => {
            let claimed = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
            if claimed > MAX_DECOMPRESSED {
                return None;
            }
            let json = lz4_flex::decompress_size_prepended(body).ok()?;
            serde_json::from_slice(&json).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    };

    use serde_json::json;

    use super::*;

    /// Answers `prompt` reversed, or fails while `fail` is set; counts calls.
    #[derive(Default)]
    struct Counting {
        calls: AtomicU32,
        fail: Mutex<bool>,
    }

    #[async_trait]
    impl Provider for Counting {
        fn id(&self) -> &str {
            "counting"
        }

        async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if *self.fail.lock().unwrap() {
                return Err(ProviderError::Http {
                    status: 500,
                    message: "down".into(),
                });
            }
            Ok(Completion {
                output: prompt.chars().rev().collect(),
                tokens_in: 3,
                tokens_out: 4,
                cost_usd: 0.25,
                ..Completion::default()
            })
        }
    }

    fn cached(inner: Arc<Counting>, config: Value) -> CachedProvider {
        CachedProvider::new(
            inner,
            "openai:chat:gpt-4.1",
            config.as_object().unwrap(),
            Cache::local(1 << 20),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn large_values_are_compressed_and_round_trip() {
        let big = Completion {
            output: "all work and no play ".repeat(200),
            tokens_in: 10,
            tokens_out: 900,
            latency_ms: 42,
            finish_reason: Some("stop".into()),
            cost_usd: 0.5,
            cached: false,
            rate_limit: None,
        };
        let bytes = encode(&big).unwrap();
        assert_eq!(bytes[0], LZ4);
        assert!(bytes.len() < big.output.len() / 4, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes).unwrap(), big);

        let small = Completion {
            output: "hi".into(),
            ..Completion::default()
        };
        let bytes = encode(&small).unwrap();
        assert_eq!(bytes[0], PLAIN);
        assert_eq!(decode(&bytes).unwrap(), small);
    }

    #[test]
    fn corrupt_values_are_misses_not_errors() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"jnot json"), None);
        assert_eq!(decode(b"z\xff\xff\xff\xffxx"), None);
        assert_eq!(decode(b"q{}"), None);
    }

    #[tokio::test]
    async fn a_repeated_prompt_is_served_from_the_cache_and_marked() {
        let inner = Arc::new(Counting::default());
        let hits = Arc::new(AtomicU32::new(0));
        let seen = hits.clone();
        let provider =
            cached(inner.clone(), json!({"temperature": 0})).on_lookup(Arc::new(move |l| {
                if l == Lookup::Hit {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }));
        let first = provider.complete("abc").await.unwrap();
        assert!(!first.cached);
        let second = provider.complete("abc").await.unwrap();
        assert!(second.cached);
        assert_eq!(second.output, "cba");
        assert_eq!((second.tokens_in, second.cost_usd), (3, 0.25));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        provider.complete("abd").await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn errors_are_never_cached() {
        let inner = Arc::new(Counting::default());
        let provider = cached(inner.clone(), json!({}));
        *inner.fail.lock().unwrap() = true;
        assert!(provider.complete("x").await.is_err());
        assert!(provider.complete("x").await.is_err());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
        *inner.fail.lock().unwrap() = false;
        let ok = provider.complete("x").await.unwrap();
        assert!(!ok.cached, "the error must not have left an entry");
    }

    #[test]
    fn keys_ignore_secrets_and_call_settings_but_not_parameters() {
        let inner = Arc::new(Counting::default());
        let key = |config: Value| cached(inner.clone(), config).key("p");
        let base = key(json!({"temperature": 0.2, "max_tokens": 100}));
        assert_eq!(
            base,
            key(json!({"temperature": 0.2, "max_tokens": 100, "apiKey": "sk-1", "maxRetries": 2}))
        );
        assert_ne!(base, key(json!({"temperature": 0.3, "max_tokens": 100})));
        assert_ne!(base, key(json!({"temperature": 0.2, "max_tokens": 200})));
        let with_header = |auth: &str| {
            key(json!({"url": "http://x", "headers": {"Authorization": auth, "X-Team": "a"}}))
        };
        assert_eq!(with_header("Bearer a"), with_header("Bearer b"));
        let other_model = CachedProvider::new(
            inner.clone(),
            "openai:chat:gpt-4.1-mini",
            &Map::new(),
            Cache::local(1 << 10),
            Duration::from_secs(1),
        );
        assert_ne!(
            other_model.key("p"),
            cached(inner.clone(), json!({})).key("p")
        );
    }
}
