//! Limits on calls to one provider and API key: requests and tokens per
//! minute shared by the whole cluster (through a
//! [`RateLimiter`](gauntlet_cache::limiter::RateLimiter), Redis-backed when
//! there is one), and this worker's adaptive concurrency, which halves on a
//! 429 and grows back by one per run of successes (AIMD, as TCP does).
//!
//! Budgets come from the suite's provider config: `requestsPerMinute` and
//! `tokensPerMinute` (or LiteLLM's `rpm` and `tpm`). A budget is named by
//! the provider id (OpenAI and Anthropic limit per model), its base URL and
//! a fingerprint of its API key, so suites and runs using the same key
//! share it and the key itself never reaches Redis.
//!
//! The wrapper sits under the retry loop ([`ProviderFactory::build_layered`]):
//! every attempt waits for budget and every 429 is seen.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
};

use async_trait::async_trait;
use gauntlet_cache::limiter::{self, Charge, Rate, RateLimiter};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::{Completion, Provider, ProviderError, ProviderFactory, config, estimate_tokens};

/// Per-minute budgets of one provider, from its suite config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSettings {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

impl LimitSettings {
    /// Reads `requestsPerMinute` / `rpm` and `tokensPerMinute` / `tpm`; 0 means no limit.
    pub fn from_config(config: &Map<String, Value>) -> Result<Self, ProviderError> {
        let read = |long: &str, short: &str| -> Result<Option<u64>, ProviderError> {
            Ok(match config::uint(config, long)? {
                Some(n) => Some(n),
                None => config::uint(config, short)?,
            }
            .filter(|&n| n > 0))
        };
        Ok(Self {
            requests_per_minute: read("requestsPerMinute", "rpm")?,
            tokens_per_minute: read("tokensPerMinute", "tpm")?,
        })
    }

    fn is_limited(&self) -> bool {
        self.requests_per_minute.is_some() || self.tokens_per_minute.is_some()
    }
}

/// How a worker adapts its concurrency per provider and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveOptions {
    /// The ceiling, and where a provider starts.
    pub max_in_flight: usize,
    /// Successes (since the last change) that raise the limit by one.
    pub grow_after: u32,
}

/// A concurrency limit that halves on a 429 and grows by one after
/// `grow_after` successes, between 1 and `max_in_flight`.
///
/// A burst of 429s from calls that were all in flight together halves the
/// limit once, not once per call: a permit only lowers the limit if no
/// decrease happened since it was taken (TCP's once per round trip).
pub struct AdaptiveConcurrency {
    options: AdaptiveOptions,
    state: Mutex<ConcurrencyState>,
    released: Notify,
}

#[derive(Debug)]
struct ConcurrencyState {
    limit: usize,
    in_flight: usize,
    successes: u32,
    /// Bumped on every decrease.
    epoch: u64,
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
                successes: 0,
                epoch: 0,
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
    /// The call succeeded: count towards growing the limit by one.
    pub fn succeeded(self) {
        let mut s = self.owner.lock();
        s.successes += 1;
        if s.successes >= self.owner.options.grow_after
            && s.limit < self.owner.options.max_in_flight
        {
            s.limit += 1;
            s.successes = 0;
            // The new slot may admit a waiter; the drop below wakes one more.
            self.owner.released.notify_one();
        }
    }

    /// The provider said 429: halve the limit, unless a call that started
    /// after this one already did.
    pub fn rate_limited(self) {
        let mut s = self.owner.lock();
        if s.epoch == self.epoch {
            s.limit = (s.limit / 2).max(1);
            s.successes = 0;
            s.epoch += 1;
            tracing::warn!(limit = s.limit, "provider rate limited, concurrency halved");
        }
    }
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.owner.lock().in_flight -= 1;
        self.owner.released.notify_one();
    }
}

/// Whether `error` is the provider saying "too many requests".
fn is_rate_limited(error: &ProviderError) -> bool {
    matches!(
        error,
        ProviderError::RateLimited { .. } | ProviderError::Http { status: 429, .. }
    )
}

/// A provider whose calls wait for the shared budget and the adaptive
/// concurrency limit of its provider and key.
pub struct LimitedProvider {
    inner: Arc<dyn Provider>,
    limiter: Arc<dyn RateLimiter>,
    settings: LimitSettings,
    rpm_key: String,
    tpm_key: String,
    concurrency: Option<Arc<AdaptiveConcurrency>>,
}

impl LimitedProvider {
    /// One request and `tokens` tokens, for the budgets that are set.
    fn charges(&self, tokens: i64) -> Vec<Charge<'_>> {
        let mut charges = Vec::with_capacity(2);
        if let Some(rpm) = self.settings.requests_per_minute {
            charges.push(Charge {
                key: &self.rpm_key,
                rate: Rate::per_minute(rpm),
                cost: 1,
            });
        }
        charges.extend(self.token_charge(tokens));
        charges
    }

    fn token_charge(&self, tokens: i64) -> Option<Charge<'_>> {
        self.settings.tokens_per_minute.map(|tpm| Charge {
            key: &self.tpm_key,
            rate: Rate::per_minute(tpm),
            cost: tokens,
        })
    }
}

impl LimitedProvider {
    /// Runs `call` once there is room and budget for it: a request and
    /// `estimate` tokens up front, settled with `used` (the tokens the
    /// answer reports) afterwards. Adapts the concurrency to the outcome.
    async fn limited<T>(
        &self,
        estimate: i64,
        call: impl Future<Output = Result<T, ProviderError>>,
        used: impl FnOnce(&T) -> i64,
    ) -> Result<T, ProviderError> {
        // Concurrency first: budget taken while queueing for a slot would idle.
        let permit = match &self.concurrency {
            Some(c) => Some(c.acquire().await),
            None => None,
        };
        if self.settings.is_limited() {
            limiter::acquire(self.limiter.as_ref(), &self.charges(estimate)).await;
        }
        let result = call.await;
        match &result {
            Ok(answer) => {
                let used = used(answer);
                if used != estimate
                    && let Some(correction) = self.token_charge(used - estimate)
                {
                    self.limiter.charge(&[correction]).await;
                }
                if let Some(p) = permit {
                    p.succeeded();
                }
            }
            Err(error) if is_rate_limited(error) => {
                if let Some(p) = permit {
                    p.rate_limited();
                }
            }
            Err(_) => {}
        }
        result
    }
}

#[async_trait]
impl Provider for LimitedProvider {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError> {
        // The prompt's tokens up front; the answer's are settled after the call.
        self.limited(
            i64::from(estimate_tokens(prompt)),
            self.inner.complete(prompt),
            |c| i64::from(c.tokens_in) + i64::from(c.tokens_out),
        )
        .await
    }

    /// Embedding calls spend the same provider budget.
    async fn embed(&self, texts: &[String]) -> Result<crate::Embeddings, ProviderError> {
        let estimate = texts.iter().map(|t| i64::from(estimate_tokens(t))).sum();
        self.limited(estimate, self.inner.embed(texts), |e| {
            i64::from(e.tokens_in)
        })
        .await
    }
}

/// A worker's limits: the shared rate limiter and one adaptive concurrency
/// limit per provider and key, kept across runs.
pub struct ProviderLimits {
    limiter: Arc<dyn RateLimiter>,
    adaptive: Option<AdaptiveOptions>,
    concurrency: Mutex<HashMap<String, Arc<AdaptiveConcurrency>>>,
}

impl ProviderLimits {
    /// `adaptive: None` turns adaptive concurrency off.
    pub fn new(limiter: Arc<dyn RateLimiter>, adaptive: Option<AdaptiveOptions>) -> Self {
        Self {
            limiter,
            adaptive,
            concurrency: Mutex::new(HashMap::new()),
        }
    }

    /// The concurrency limit of a budget, for status and tests.
    pub fn concurrency(&self, bucket: &str) -> Option<Arc<AdaptiveConcurrency>> {
        self.concurrency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(bucket)
            .cloned()
    }

    /// Builds suite provider `id` with `config` through `factory`, every
    /// attempt under this worker's limits for its provider and key.
    pub fn build(
        &self,
        factory: &ProviderFactory,
        id: &str,
        config: &Map<String, Value>,
    ) -> Result<Arc<dyn Provider>, ProviderError> {
        let settings = LimitSettings::from_config(config)?;
        if !settings.is_limited() && self.adaptive.is_none() {
            return factory.build(id, config);
        }
        let bucket = bucket(id, config, |var| factory.env_var(var).map(str::to_owned))?;
        let concurrency = self.adaptive.map(|options| {
            self.concurrency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(bucket.clone())
                .or_insert_with(|| AdaptiveConcurrency::new(options))
                .clone()
        });
        let limiter = self.limiter.clone();
        factory.build_layered(id, config, &|inner| {
            Arc::new(LimitedProvider {
                inner,
                limiter: limiter.clone(),
                settings,
                rpm_key: format!("{bucket}:rpm"),
                tpm_key: format!("{bucket}:tpm"),
                concurrency: concurrency.clone(),
            })
        })
    }
}

/// The budget's name: a hash of the provider id, its base URL and its API
/// key (from `apiKey`, the variable `apiKeyEnvar` names, or
/// `<FAMILY>_API_KEY` for an id `family:…`).
pub fn bucket(
    id: &str,
    config: &Map<String, Value>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, ProviderError> {
    let id = id.trim();
    let family = id.split_once(':').map_or(id, |(f, _)| f);
    let key = match config::string(config, "apiKey")? {
        Some(key) => Some(key.to_owned()),
        None => match config::string(config, "apiKeyEnvar")? {
            Some(var) => env(var),
            None => env(&format!("{}_API_KEY", family.to_ascii_uppercase())),
        },
    };
    let mut base = String::new();
    for name in ["apiBaseUrl", "apiHost", "baseUrl", "url"] {
        if let Some(value) = config::string(config, name)? {
            base = value.to_owned();
            break;
        }
    }
    let mut hash = Sha256::new();
    for part in [id, &base, key.as_deref().unwrap_or("")] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    Ok(hex::encode(&hash.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicU32, Ordering},
        time::Duration,
    };

    use gauntlet_cache::limiter::LocalLimiter;
    use serde_json::json;

    use super::*;

    fn adaptive(max: usize, grow_after: u32) -> Arc<AdaptiveConcurrency> {
        AdaptiveConcurrency::new(AdaptiveOptions {
            max_in_flight: max,
            grow_after,
        })
    }

    #[tokio::test]
    async fn concurrency_halves_on_a_429_and_grows_back_one_per_successes() {
        let c = adaptive(16, 3);
        c.acquire().await.rate_limited();
        assert_eq!(c.limit(), 8);
        c.acquire().await.rate_limited();
        assert_eq!(c.limit(), 4);
        // Three successes per step back up.
        for _ in 0..3 {
            c.acquire().await.succeeded();
        }
        assert_eq!(c.limit(), 5);
        for _ in 0..(3 * 20) {
            c.acquire().await.succeeded();
        }
        assert_eq!(c.limit(), 16, "never above the ceiling");
        for _ in 0..10 {
            c.acquire().await.rate_limited();
        }
        assert_eq!(c.limit(), 1, "never below one");
    }

    #[tokio::test]
    async fn a_burst_of_429s_from_calls_in_flight_together_halves_once() {
        let c = adaptive(8, 5);
        let permits: Vec<_> = acquire_all(&c, 8).await;
        for p in permits {
            p.rate_limited();
        }
        assert_eq!(c.limit(), 4);
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
        let c = adaptive(2, 1);
        c.acquire().await.rate_limited();
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

    /// Answers 429 for its first `fail_first` calls, then succeeds.
    struct Flaky {
        calls: AtomicU32,
        fail_first: u32,
    }

    #[async_trait]
    impl Provider for Flaky {
        fn id(&self) -> &str {
            "flaky"
        }

        async fn complete(&self, _prompt: &str) -> Result<Completion, ProviderError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
                return Err(ProviderError::RateLimited {
                    retry_after: None,
                    message: "slow down".into(),
                });
            }
            Ok(Completion {
                output: "ok".into(),
                tokens_in: 1,
                tokens_out: 1,
                ..Completion::default()
            })
        }
    }

    #[tokio::test]
    async fn a_limited_provider_adapts_to_429s_from_the_provider() {
        let concurrency = adaptive(8, 2);
        let provider = LimitedProvider {
            inner: Arc::new(Flaky {
                calls: AtomicU32::new(0),
                fail_first: 1,
            }),
            limiter: Arc::new(LocalLimiter::new()),
            settings: LimitSettings {
                requests_per_minute: Some(60_000),
                tokens_per_minute: Some(1_000_000),
            },
            rpm_key: "b:rpm".into(),
            tpm_key: "b:tpm".into(),
            concurrency: Some(concurrency.clone()),
        };
        assert!(provider.complete("hello").await.is_err());
        assert_eq!(concurrency.limit(), 4);
        for _ in 0..4 {
            provider.complete("hello").await.unwrap();
        }
        assert_eq!(concurrency.limit(), 6);
    }

    #[test]
    fn settings_read_long_and_short_names_and_name_bad_keys() {
        let read = |v: Value| LimitSettings::from_config(v.as_object().unwrap());
        assert_eq!(
            read(json!({"requestsPerMinute": 60, "tpm": "1000"})).unwrap(),
            LimitSettings {
                requests_per_minute: Some(60),
                tokens_per_minute: Some(1000),
            }
        );
        assert_eq!(read(json!({"rpm": 0})).unwrap(), LimitSettings::default());
        let err = read(json!({"tokensPerMinute": "lots"})).unwrap_err();
        assert!(err.to_string().contains("tokensPerMinute"), "{err}");
    }

    #[test]
    fn buckets_separate_keys_and_models_and_hide_the_key() {
        let env = |var: &str| (var == "OPENAI_API_KEY").then(|| "sk-env".to_owned());
        let b = |id: &str, config: Value| bucket(id, config.as_object().unwrap(), env).unwrap();
        let default_key = b("openai:gpt-4.1", json!({}));
        assert_eq!(
            default_key,
            b("openai:gpt-4.1", json!({"apiKey": "sk-env"}))
        );
        assert_ne!(
            default_key,
            b("openai:gpt-4.1", json!({"apiKey": "sk-other"}))
        );
        assert_ne!(default_key, b("openai:gpt-4.1-mini", json!({})));
        assert_ne!(
            default_key,
            b(
                "openai:gpt-4.1",
                json!({"apiBaseUrl": "http://vllm:8000/v1"})
            )
        );
        assert!(!default_key.contains("sk-env"));
    }
}
