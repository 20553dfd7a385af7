//! Limits on calls to one provider and API key: requests and tokens per
//! minute shared by the whole cluster (through a
//! [`RateLimiter`](gauntlet_cache::limiter::RateLimiter), Redis-backed when
//! there is one), and this worker's adaptive concurrency, which comes down
//! when a window of calls is mostly 429s and grows back otherwise (see
//! [`AdaptiveConcurrency`]).
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
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

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
    /// The fewest call outcomes a window needs before the limit moves
    /// (a window is also at least the limit itself: about one round trip).
    pub grow_after: u32,
}

/// Share of a window's calls answered 429 above which the limit comes down.
/// Real providers answer a steady trickle of 429s that more or fewer calls
/// would not change; shrinking on each of them collapses throughput (at
/// 20 % random 429s the old halve-per-429 rule sat at one call in flight).
/// A true cap shows up as a share that grows with the calls sent.
pub const RATE_LIMITED_SHARE: f64 = 0.3;

/// A concurrency limit that follows what the provider accepts, between 1
/// and `max_in_flight`, decided once per window of outcomes (calls started
/// under the current limit; at least the limit and `grow_after` of them,
/// about one round trip):
/// - more than [`RATE_LIMITED_SHARE`] of the window answered 429: the limit
///   drops by a quarter;
/// - otherwise it grows by an eighth (at least one).
///
/// At a true cap the limit settles just above what the provider serves,
/// so throughput stays at the cap; random 429s below the share leave it at
/// the ceiling, and the retry loop waits out each one's `Retry-After`.
pub struct AdaptiveConcurrency {
    options: AdaptiveOptions,
    state: Mutex<ConcurrencyState>,
    released: Notify,
}

#[derive(Debug)]
struct ConcurrencyState {
    limit: usize,
    in_flight: usize,
    /// Bumped whenever the limit changes: outcomes of calls started under
    /// an older limit do not count towards the new window.
    epoch: u64,
    window_calls: u32,
    window_limited: u32,
}

impl ConcurrencyState {
    fn record(&mut self, options: &AdaptiveOptions, epoch: u64, limited: bool) {
        if epoch != self.epoch {
            return;
        }
        self.window_calls += 1;
        self.window_limited += u32::from(limited);
        let window = (self.limit as u32).max(options.grow_after);
        if self.window_calls < window {
            return;
        }
        let share = f64::from(self.window_limited) / f64::from(self.window_calls);
        let before = self.limit;
        self.limit = if share > RATE_LIMITED_SHARE {
            (self.limit * 3 / 4).max(1)
        } else {
            (self.limit + (self.limit / 8).max(1)).min(options.max_in_flight)
        };
        if self.limit < before {
            tracing::debug!(
                limit = self.limit,
                share_rate_limited = share,
                "provider rate limited, concurrency lowered"
            );
        }
        self.epoch += 1;
        self.window_calls = 0;
        self.window_limited = 0;
    }
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
                epoch: 0,
                window_calls: 0,
                window_limited: 0,
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
    /// The call succeeded.
    pub fn succeeded(self) {
        self.record(false);
    }

    /// The provider said 429.
    pub fn rate_limited(self) {
        self.record(true);
    }

    fn record(&self, limited: bool) {
        let mut s = self.owner.lock();
        let before = s.limit;
        s.record(&self.owner.options, self.epoch, limited);
        if s.limit > before {
            // New slots may admit waiters; the drop wakes one more.
            for _ in before..s.limit {
                self.owner.released.notify_one();
            }
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
    /// What each attempt waits for before it starts.
    attempts: AttemptLimits,
}

/// What every attempt of a client waits for, whoever built it: `gate`
/// (when given) to read `true`, then a permit of each of `slots`, in order,
/// held while the attempt runs and given back when it ends, so a call
/// waiting out a `Retry-After` between attempts holds no slot.
#[derive(Debug, Clone, Default)]
pub struct AttemptLimits {
    pub slots: Vec<Arc<Semaphore>>,
    pub gate: Option<watch::Receiver<bool>>,
}

impl AttemptLimits {
    fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.gate.is_none()
    }

    async fn acquire(&self) -> Result<Vec<OwnedSemaphorePermit>, ProviderError> {
        if let Some(gate) = &self.gate {
            // The sender outlives the clients it gates; a closed one lets calls go.
            let _ = gate.clone().wait_for(|open| *open).await;
        }
        let mut held = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            // Slots are never closed while calls are made; say so if one is.
            let permit =
                slot.clone().acquire_owned().await.map_err(|_| {
                    ProviderError::Config("the worker's call slots are closed".into())
                })?;
            held.push(permit);
        }
        Ok(held)
    }
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
        // Slots first, then concurrency: budget taken while queueing for a
        // slot would idle.
        let _held = self.attempts.acquire().await?;
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
    /// attempt under this worker's limits for its provider and key and
    /// under `attempts` (the run's and the worker's calls in flight, the
    /// worker's store gate).
    pub fn build(
        &self,
        factory: &ProviderFactory,
        id: &str,
        config: &Map<String, Value>,
        attempts: &AttemptLimits,
    ) -> Result<Arc<dyn Provider>, ProviderError> {
        let settings = LimitSettings::from_config(config)?;
        if !settings.is_limited() && self.adaptive.is_none() && attempts.is_empty() {
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
                attempts: attempts.clone(),
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

    /// Runs `rounds` windows: each round takes every permit the limit
    /// allows, then settles them with `outcome(i, n)` (true: 429) for the
    /// i-th of n.
    async fn rounds(
        c: &Arc<AdaptiveConcurrency>,
        rounds: usize,
        outcome: impl Fn(usize, usize) -> bool,
    ) -> Vec<usize> {
        let mut limits = Vec::new();
        for _ in 0..rounds {
            let n = c.limit();
            let permits = acquire_all(c, n).await;
            for (i, p) in permits.into_iter().enumerate() {
                if outcome(i, n) {
                    p.rate_limited();
                } else {
                    p.succeeded();
                }
            }
            limits.push(c.limit());
        }
        limits
    }

    #[tokio::test]
    async fn random_429s_below_the_share_leave_the_limit_at_its_ceiling() {
        let c = adaptive(64, 10);
        // Every fifth call 429: 20 %, whatever the calls in flight.
        let limits = rounds(&c, 50, |i, _| i % 5 == 4).await;
        assert!(limits.iter().all(|&l| l == 64), "{limits:?}");
    }

    #[tokio::test]
    async fn a_true_cap_brings_the_limit_down_to_just_above_it_and_keeps_it_there() {
        let c = adaptive(256, 10);
        // The provider serves 40 calls at once and answers 429 to the rest.
        let limits = rounds(&c, 60, |i, _| i >= 40).await;
        let settled = &limits[30..];
        assert!(
            settled.iter().all(|&l| (40..=70).contains(&l)),
            "settles above the cap, not far above it: {limits:?}"
        );
        // Served per round = min(limit, 40): always the cap once settled.
        assert!(settled.iter().all(|&l| l.min(40) == 40));
    }

    #[tokio::test]
    async fn the_limit_stays_between_one_and_the_ceiling() {
        let c = adaptive(16, 3);
        let limits = rounds(&c, 30, |_, _| true).await;
        assert_eq!(*limits.last().unwrap(), 1, "{limits:?}");
        let limits = rounds(&c, 60, |_, _| false).await;
        assert_eq!(*limits.last().unwrap(), 16, "{limits:?}");
    }

    #[tokio::test]
    async fn outcomes_of_calls_started_under_an_older_limit_do_not_count_twice() {
        let c = adaptive(8, 1);
        let old = acquire_all(&c, 8).await;
        // A full window of 429s lowers the limit once...
        for p in old {
            p.rate_limited();
        }
        assert_eq!(c.limit(), 6);
        // ...and a straggler from that window changes nothing.
        let mut straggler = c.acquire().await;
        straggler.epoch = 0;
        straggler.rate_limited();
        assert_eq!(c.limit(), 6);
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
        let c = adaptive(1, 1);
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
                    limits: None,
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
        let concurrency = adaptive(4, 1);
        let provider = LimitedProvider {
            inner: Arc::new(Flaky {
                calls: AtomicU32::new(0),
                fail_first: 4,
            }),
            limiter: Arc::new(LocalLimiter::new()),
            settings: LimitSettings {
                requests_per_minute: Some(60_000),
                tokens_per_minute: Some(1_000_000),
            },
            rpm_key: "b:rpm".into(),
            tpm_key: "b:tpm".into(),
            concurrency: Some(concurrency.clone()),
            attempts: AttemptLimits::default(),
        };
        // A window (the limit's worth of calls) of 429s lowers it by a quarter...
        for _ in 0..4 {
            assert!(provider.complete("hello").await.is_err());
        }
        assert_eq!(concurrency.limit(), 3);
        // ...and a window of successes raises it again.
        for _ in 0..3 {
            provider.complete("hello").await.unwrap();
        }
        assert_eq!(concurrency.limit(), 4);
    }

    /// Answers 429 with a `Retry-After` to its first call, then succeeds.
    struct RetryAfterOnce {
        calls: AtomicU32,
        wait: Duration,
    }

    #[async_trait]
    impl Provider for RetryAfterOnce {
        fn id(&self) -> &str {
            "retry-after-once"
        }

        async fn complete(&self, _prompt: &str) -> Result<Completion, ProviderError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(ProviderError::RateLimited {
                    retry_after: Some(self.wait),
                    message: "slow down".into(),
                    limits: None,
                });
            }
            Ok(Completion::default())
        }
    }

    #[tokio::test]
    async fn a_call_waiting_out_a_retry_after_holds_no_slot() {
        let slot = Arc::new(Semaphore::new(1));
        let (gate_tx, gate) = watch::channel(true);
        let limited: Arc<dyn Provider> = Arc::new(LimitedProvider {
            inner: Arc::new(RetryAfterOnce {
                calls: AtomicU32::new(0),
                wait: Duration::from_millis(400),
            }),
            limiter: Arc::new(LocalLimiter::new()),
            settings: LimitSettings::default(),
            rpm_key: "b:rpm".into(),
            tpm_key: "b:tpm".into(),
            concurrency: None,
            attempts: AttemptLimits {
                slots: vec![slot.clone()],
                gate: Some(gate),
            },
        });
        let retrying = Arc::new(crate::retry::RetryingProvider::new(
            limited,
            crate::retry::RetryPolicy::default(),
        ));
        let call = tokio::spawn({
            let retrying = retrying.clone();
            async move { retrying.complete("hi").await }
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            slot.available_permits(),
            1,
            "the slot is free during the wait"
        );
        // A closed gate holds the retry back until it opens again.
        gate_tx.send(false).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!call.is_finished(), "the retry waits for the gate");
        gate_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the retry goes once the gate opens")
            .unwrap()
            .unwrap();
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
