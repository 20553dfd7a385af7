//! Limits on calls to one provider and API key: requests and tokens per
//! minute shared by the whole cluster (through a
//! [`RateLimiter`](gauntlet_cache::limiter::RateLimiter), Redis-backed when
//! there is one); this worker's adaptive concurrency, which comes down
//! when a window of calls is mostly 429s and grows back otherwise (see
//! [`AdaptiveConcurrency`]); and the key's pause, which holds every
//! attempt while the provider's headers say the key has nothing left (see
//! [`KeyPause`]).
//!
//! Budgets come from the suite's provider config: `requestsPerMinute` and
//! `tokensPerMinute` (or LiteLLM's `rpm` and `tpm`). A budget is named by
//! the provider id (OpenAI and Anthropic limit per model), its base URL and
//! a fingerprint of its API key, so suites and runs using the same key
//! share it and the key itself never reaches Redis.
//!
//! The wrapper sits under the retry loop ([`ProviderFactory::build_layered`]):
//! every attempt waits for budget and every 429 is seen.

mod adaptive;
mod pause;

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use gauntlet_cache::limiter::{self, Charge, Rate, RateLimiter};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

pub use self::{
    adaptive::{AdaptiveConcurrency, AdaptiveOptions, ConcurrencyPermit, RATE_LIMITED_SHARE},
    pause::{Exhausted, KeyPause, MAX_PAUSE},
};
use crate::{
    Completion, Embeddings, Provider, ProviderError, ProviderFactory, RateLimitInfo, config,
    estimate_tokens, retry,
};

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

/// Whether `error` is the provider saying "too many requests".
fn is_rate_limited(error: &ProviderError) -> bool {
    matches!(
        error,
        ProviderError::RateLimited { .. } | ProviderError::Http { status: 429, .. }
    )
}

/// What the limits read from a provider's answer.
trait Answer {
    /// Tokens spent, for the token budget.
    fn tokens_used(&self) -> i64;
    fn rate_limit(&self) -> Option<&RateLimitInfo>;
}

impl Answer for Completion {
    fn tokens_used(&self) -> i64 {
        i64::from(self.tokens_in) + i64::from(self.tokens_out)
    }

    fn rate_limit(&self) -> Option<&RateLimitInfo> {
        self.rate_limit.as_ref()
    }
}

impl Answer for Embeddings {
    fn tokens_used(&self) -> i64 {
        i64::from(self.tokens_in)
    }

    fn rate_limit(&self) -> Option<&RateLimitInfo> {
        self.rate_limit.as_ref()
    }
}

/// A provider whose calls wait for the pause, the shared budget and the
/// adaptive concurrency limit of its provider and key.
pub struct LimitedProvider {
    inner: Arc<dyn Provider>,
    limiter: Arc<dyn RateLimiter>,
    settings: LimitSettings,
    rpm_key: String,
    tpm_key: String,
    concurrency: Option<Arc<AdaptiveConcurrency>>,
    pause: Option<Arc<KeyPause>>,
    /// What each attempt waits for before it starts.
    attempts: AttemptLimits,
    metered: Arc<Metered>,
}

/// One provider's metric handles, looked up once per client.
struct Metered {
    /// `gauntlet_provider_requests_total` by outcome: ok, rate_limited, error.
    outcomes: [metrics::Counter; 3],
    duration: metrics::Histogram,
    limit: metrics::Gauge,
}

impl Metered {
    /// Its attempt counts show at 0 until its first attempt: a rule's
    /// `increase()` reads nothing from a series' first sample.
    fn new(provider: &str) -> Self {
        let outcome = |o: &'static str| {
            let c = metrics::counter!(
                "gauntlet_provider_requests_total",
                "provider" => provider.to_owned(),
                "outcome" => o
            );
            c.increment(0);
            c
        };
        Self {
            outcomes: [outcome("ok"), outcome("rate_limited"), outcome("error")],
            duration: metrics::histogram!(
                "gauntlet_provider_request_duration_seconds",
                "provider" => provider.to_owned()
            ),
            limit: metrics::gauge!(
                "gauntlet_provider_concurrency_limit",
                "provider" => provider.to_owned()
            ),
        }
    }

    /// One attempt: its outcome and duration.
    fn attempt<T>(&self, took: Duration, result: &Result<T, ProviderError>) {
        let outcome = match result {
            Ok(_) => 0,
            Err(error) if is_rate_limited(error) => 1,
            Err(_) => 2,
        };
        self.outcomes[outcome].increment(1);
        self.duration.record(took.as_secs_f64());
    }
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
    /// Runs `call` once the key is not paused and there is room and budget
    /// for it: a request and `estimate` tokens up front, settled with the
    /// tokens the answer reports afterwards. Adapts the concurrency to the
    /// outcome and pauses the key when the answer says it is out.
    async fn limited<T: Answer>(
        &self,
        estimate: i64,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let (_held, permit) = loop {
            let took_turn = self.wait_for_turn().await?;
            // Slots first, then concurrency: budget taken while queueing for
            // a slot would idle.
            let held = self.attempts.acquire().await?;
            let permit = match &self.concurrency {
                Some(c) => Some(c.acquire().await),
                None => None,
            };
            let paused_meanwhile = self
                .pause
                .as_ref()
                .is_some_and(|p| !p.remaining().is_zero());
            if took_turn || !paused_meanwhile {
                break (held, permit);
            }
            // The key ran out while this attempt queued for a slot: give the
            // slots back and queue behind the pause.
        };
        if self.settings.is_limited() {
            limiter::acquire(self.limiter.as_ref(), &self.charges(estimate)).await;
        }
        let started = std::time::Instant::now();
        let result = call.await;
        self.metered.attempt(started.elapsed(), &result);
        // Before the permit goes, so the attempts it lets in see the pause.
        if let Some(pause) = &self.pause {
            let exhausted = match &result {
                Ok(answer) => answer.rate_limit().and_then(Exhausted::from_headers),
                Err(error) => Exhausted::from_error(error),
            };
            if let Some(exhausted) = exhausted {
                tracing::debug!(
                    provider = %self.inner.id(),
                    wait_ms = exhausted.wait.as_millis() as u64,
                    spacing_ms = exhausted.spacing.as_millis() as u64,
                    "provider key out of requests, pausing its calls"
                );
                pause.exhausted(exhausted);
            }
        }
        match &result {
            Ok(answer) => {
                let used = answer.tokens_used();
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
        if let Some(c) = &self.concurrency {
            self.metered.limit.set(c.limit() as f64);
        }
        result
    }

    /// Waits for this attempt's turn while the key is paused; `true` when
    /// it waited. A caller that hands long waits back ([`retry::deferring`])
    /// gets a wait it would defer as a 429 at once, holding nothing.
    async fn wait_for_turn(&self) -> Result<bool, ProviderError> {
        let Some(pause) = &self.pause else {
            return Ok(false);
        };
        let wait = pause.remaining();
        if !wait.is_zero() {
            let paused = ProviderError::RateLimited {
                retry_after: Some(wait),
                message: "the provider said this key has no requests left until its reset; \
                          not sent"
                    .into(),
                limits: None,
            };
            if retry::is_deferred(&paused) {
                return Err(paused);
            }
        }
        match pause.turn() {
            Some(at) => {
                tokio::time::sleep_until(at).await;
                Ok(true)
            }
            None => Ok(false),
        }
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
        )
        .await
    }

    /// Embedding calls spend the same provider budget.
    async fn embed(&self, texts: &[String]) -> Result<Embeddings, ProviderError> {
        let estimate = texts.iter().map(|t| i64::from(estimate_tokens(t))).sum();
        self.limited(estimate, self.inner.embed(texts)).await
    }
}

/// A worker's limits: the shared rate limiter, and per provider and key an
/// adaptive concurrency limit and a pause, kept across runs.
pub struct ProviderLimits {
    limiter: Arc<dyn RateLimiter>,
    adaptive: Option<AdaptiveOptions>,
    max_pause: Duration,
    keys: Mutex<HashMap<String, KeyLimits>>,
}

/// What all clients of one provider and key in this worker share.
#[derive(Clone, Default)]
struct KeyLimits {
    concurrency: Option<Arc<AdaptiveConcurrency>>,
    pause: Option<Arc<KeyPause>>,
}

impl ProviderLimits {
    /// `adaptive: None` turns adaptive concurrency off. Keys are paused
    /// for at most [`MAX_PAUSE`] an answer (see [`with_max_pause`](Self::with_max_pause)).
    pub fn new(limiter: Arc<dyn RateLimiter>, adaptive: Option<AdaptiveOptions>) -> Self {
        Self {
            limiter,
            adaptive,
            max_pause: MAX_PAUSE,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The longest one answer may pause a key; zero never pauses.
    pub fn with_max_pause(mut self, max: Duration) -> Self {
        self.max_pause = max;
        self
    }

    fn key(&self, bucket: &str) -> Option<KeyLimits> {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(bucket)
            .cloned()
    }

    /// The concurrency limit of a budget, for status and tests.
    pub fn concurrency(&self, bucket: &str) -> Option<Arc<AdaptiveConcurrency>> {
        self.key(bucket)?.concurrency
    }

    /// The pause of a budget, for status and tests.
    pub fn pause(&self, bucket: &str) -> Option<Arc<KeyPause>> {
        self.key(bucket)?.pause
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
        if !settings.is_limited()
            && self.adaptive.is_none()
            && self.max_pause.is_zero()
            && attempts.is_empty()
        {
            return factory.build(id, config);
        }
        let bucket = bucket(id, config, |var| factory.env_var(var).map(str::to_owned))?;
        let key = self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(bucket.clone())
            .or_insert_with(|| KeyLimits {
                concurrency: self.adaptive.map(AdaptiveConcurrency::new),
                pause: (!self.max_pause.is_zero()).then(|| Arc::new(KeyPause::new(self.max_pause))),
            })
            .clone();
        let limiter = self.limiter.clone();
        factory.build_layered(id, config, &|inner| {
            let metered = Arc::new(Metered::new(inner.id()));
            Arc::new(LimitedProvider {
                inner,
                limiter: limiter.clone(),
                settings,
                rpm_key: format!("{bucket}:rpm"),
                tpm_key: format!("{bucket}:tpm"),
                concurrency: key.concurrency.clone(),
                pause: key.pause.clone(),
                attempts: attempts.clone(),
                metered,
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
        let concurrency = AdaptiveConcurrency::new(AdaptiveOptions {
            max_in_flight: 4,
            grow_after: 1,
        });
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
            pause: None,
            attempts: AttemptLimits::default(),
            metered: Arc::new(Metered::new("flaky")),
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
            pause: None,
            attempts: AttemptLimits {
                slots: vec![slot.clone()],
                gate: Some(gate),
            },
            metered: Arc::new(Metered::new("retry-after-once")),
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

    /// Answers with what `script` says for each call in turn (then plain
    /// successes) and notes when each call reached it.
    struct Scripted {
        script: Mutex<std::collections::VecDeque<Result<Completion, ProviderError>>>,
        calls: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Scripted {
        fn new(script: Vec<Result<Completion, ProviderError>>) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(script.into()),
                calls: Mutex::new(Vec::new()),
            })
        }

        fn calls_since(&self, start: tokio::time::Instant) -> Vec<Duration> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .map(|t| *t - start)
                .collect()
        }
    }

    #[async_trait]
    impl Provider for Scripted {
        fn id(&self) -> &str {
            "scripted"
        }

        async fn complete(&self, _prompt: &str) -> Result<Completion, ProviderError> {
            self.calls.lock().unwrap().push(tokio::time::Instant::now());
            let next = self.script.lock().unwrap().pop_front();
            next.unwrap_or_else(|| Ok(Completion::default()))
        }
    }

    /// A client of the key `pause` stands for, straight onto `inner`.
    fn client(inner: Arc<Scripted>, pause: &Arc<KeyPause>) -> LimitedProvider {
        LimitedProvider {
            inner,
            limiter: Arc::new(LocalLimiter::new()),
            settings: LimitSettings::default(),
            rpm_key: "b:rpm".into(),
            tpm_key: "b:tpm".into(),
            concurrency: None,
            pause: Some(pause.clone()),
            attempts: AttemptLimits::default(),
            metered: Arc::new(Metered::new("scripted")),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// OpenAI's headers of a key with `remaining` of 10 requests left, whole in a second.
    fn requests_left(remaining: u64) -> Option<RateLimitInfo> {
        Some(RateLimitInfo {
            requests: crate::Quota {
                limit: Some(10),
                remaining: Some(remaining),
                reset: Some(Duration::from_secs(1)),
            },
            tokens: crate::Quota::default(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_saying_the_key_is_out_paces_every_client_of_the_key() {
        let inner = Scripted::new(vec![Ok(Completion {
            rate_limit: requests_left(0),
            ..Completion::default()
        })]);
        let pause = Arc::new(KeyPause::new(MAX_PAUSE));
        let (first, second) = (client(inner.clone(), &pause), client(inner.clone(), &pause));
        let start = tokio::time::Instant::now();
        first.complete("a").await.unwrap();
        // Ten a second and none left: the other client's calls go one every
        // 100 ms from 100 ms on, not at once into 429s.
        let second = Arc::new(second);
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let second = second.clone();
                tokio::spawn(async move { second.complete("b").await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(inner.calls_since(start), [ms(0), ms(100), ms(200), ms(300)]);
        // The next keeps the pace; once it has passed, calls go at once again.
        first.complete("c").await.unwrap();
        assert_eq!(*inner.calls_since(start).last().unwrap(), ms(400));
        tokio::time::sleep(ms(150)).await;
        let now = tokio::time::Instant::now();
        first.complete("d").await.unwrap();
        assert_eq!(*inner.calls_since(now).last().unwrap(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_the_key_only_when_it_says_the_key_is_out() {
        let refused = |limits: Option<RateLimitInfo>| {
            Err(ProviderError::RateLimited {
                retry_after: Some(ms(700)),
                message: "slow down".into(),
                limits: limits.map(Box::new),
            })
        };
        // A random 429 (room left, or no headers at all): the next call goes at once.
        let inner = Scripted::new(vec![refused(requests_left(4)), refused(None)]);
        let pause = Arc::new(KeyPause::new(MAX_PAUSE));
        let limited = client(inner.clone(), &pause);
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            let _ = limited.complete("x").await;
        }
        assert_eq!(inner.calls_since(start), [Duration::ZERO; 3]);
        // The key's own 429: the next call waits its Retry-After.
        let inner = Scripted::new(vec![refused(requests_left(0))]);
        let limited = client(inner.clone(), &pause);
        let start = tokio::time::Instant::now();
        assert!(limited.complete("x").await.is_err());
        limited.complete("x").await.unwrap();
        assert_eq!(inner.calls_since(start), [ms(0), ms(700)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferring_caller_gets_a_long_pause_back_without_a_call() {
        let inner = Scripted::new(Vec::new());
        let pause = Arc::new(KeyPause::new(MAX_PAUSE));
        pause.exhausted(Exhausted {
            wait: Duration::from_secs(5),
            spacing: Duration::ZERO,
        });
        let limited = client(inner.clone(), &pause);
        let start = tokio::time::Instant::now();
        let err = retry::deferring(Duration::from_secs(1), limited.complete("x"))
            .await
            .unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
        assert_eq!(start.elapsed(), Duration::ZERO, "handed back at once");
        assert!(inner.calls_since(start).is_empty(), "nothing was sent");
        // A shorter pause is waited in place.
        let err = retry::deferring(Duration::from_secs(10), limited.complete("x")).await;
        assert!(err.is_ok());
        assert_eq!(inner.calls_since(start), [Duration::from_secs(5)]);
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
