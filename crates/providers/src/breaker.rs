//! Circuit breakers, one per endpoint (`scheme://host:port`) and shared by
//! every provider a factory builds for it.
//!
//! Closed: calls go through and consecutive failures are counted. After
//! `failure_threshold` of them the circuit opens and calls fail fast with
//! [`ProviderError::CircuitOpen`] without reaching the endpoint. Once
//! `cooldown` has passed it is half-open: exactly one probe call goes through
//! while the others keep failing fast; the probe's success closes the circuit,
//! its failure opens it for another cool-down.
//!
//! Failures are what a sick endpoint produces: 5xx, 408, timeouts and
//! connection errors. A 429 or another 4xx is an answer from a live endpoint
//! and counts as a success; it is the retry policy's and the rate limiter's to
//! handle.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use serde::Serialize;
use tokio::time::Instant;

use crate::{Completion, Provider, ProviderError};

/// When a circuit opens and how long it stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the circuit; 0 turns the breaker off.
    pub failure_threshold: u32,
    /// How long an open circuit fails fast before letting a probe through.
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    /// Ten in a row: with hundreds of calls in flight, a provider failing one
    /// call in five still trips a lower threshold by chance now and then.
    fn default() -> Self {
        Self {
            failure_threshold: 10,
            cooldown: Duration::from_secs(30),
        }
    }
}

impl BreakerPolicy {
    pub fn disabled() -> Self {
        Self {
            failure_threshold: 0,
            ..Self::default()
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.failure_threshold > 0
    }
}

/// Where a circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        })
    }
}

/// One endpoint's breaker, for metrics and status pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerSnapshot {
    pub endpoint: String,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// How many times the circuit has opened since the factory was built.
    pub times_opened: u64,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive_failures: u32,
    times_opened: u64,
    last_failure: String,
}

/// What a finished call says about the endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Healthy,
    Sick,
    /// The call never reached the endpoint (bad config, a template error).
    Unknown,
}

fn outcome<T>(result: &Result<T, ProviderError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Healthy,
        Err(ProviderError::RateLimited { .. }) => Outcome::Healthy,
        Err(
            ProviderError::Config(_)
            | ProviderError::Unsupported(_)
            | ProviderError::CircuitOpen { .. },
        ) => Outcome::Unknown,
        Err(e) if e.is_retryable() => Outcome::Sick,
        // Other 4xx and undecodable answers: the endpoint is up.
        Err(_) => Outcome::Healthy,
    }
}

/// The breaker of one endpoint.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    endpoint: String,
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub(crate) fn new(endpoint: impl Into<String>, policy: BreakerPolicy) -> Self {
        let breaker = Self {
            endpoint: endpoint.into(),
            policy,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                times_opened: 0,
                last_failure: String::new(),
            }),
        };
        breaker.publish(&State::Closed);
        breaker
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent plain data behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a call through, or fails fast while the circuit is open or a probe is out.
    fn admit(&self) -> Result<Permit<'_>, ProviderError> {
        let mut inner = self.lock();
        let probe = match inner.state {
            State::Closed => false,
            State::Open { until } if Instant::now() >= until => {
                inner.state = State::HalfOpen { probing: true };
                self.publish(&inner.state);
                tracing::info!(endpoint = %self.endpoint, "circuit half-open, sending a probe");
                true
            }
            State::HalfOpen { probing: false } => {
                inner.state = State::HalfOpen { probing: true };
                true
            }
            State::Open { until } => {
                return Err(ProviderError::CircuitOpen {
                    endpoint: self.endpoint.clone(),
                    reason: inner.last_failure.clone(),
                    retry_in: until.saturating_duration_since(Instant::now()),
                });
            }
            // The probe decides; until it does, come back in a second.
            State::HalfOpen { probing: true } => {
                return Err(ProviderError::CircuitOpen {
                    endpoint: self.endpoint.clone(),
                    reason: inner.last_failure.clone(),
                    retry_in: Duration::from_secs(1),
                });
            }
        };
        Ok(Permit {
            breaker: self,
            probe,
            done: false,
        })
    }

    /// `gauntlet_provider_breaker_state{endpoint}`: 0 closed, 1 half-open,
    /// 2 open.
    fn publish(&self, state: &State) {
        let value = match state {
            State::Closed => 0.0,
            State::HalfOpen { .. } => 1.0,
            State::Open { .. } => 2.0,
        };
        metrics::gauge!("gauntlet_provider_breaker_state", "endpoint" => self.endpoint.clone())
            .set(value);
    }

    fn record(&self, probe: bool, outcome: Outcome, error: Option<&ProviderError>) {
        let mut inner = self.lock();
        self.record_locked(&mut inner, probe, outcome, error);
        self.publish(&inner.state);
    }

    fn record_locked(
        &self,
        inner: &mut Inner,
        probe: bool,
        outcome: Outcome,
        error: Option<&ProviderError>,
    ) {
        match outcome {
            Outcome::Unknown => {
                if probe {
                    // Nothing learnt: let the next call probe instead.
                    inner.state = State::HalfOpen { probing: false };
                }
            }
            Outcome::Healthy => {
                inner.consecutive_failures = 0;
                if probe {
                    inner.state = State::Closed;
                    tracing::info!(endpoint = %self.endpoint, "circuit closed, probe succeeded");
                }
            }
            Outcome::Sick => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                if let Some(e) = error {
                    inner.last_failure = e.to_string();
                }
                let trip = match inner.state {
                    State::Closed => inner.consecutive_failures >= self.policy.failure_threshold,
                    State::HalfOpen { .. } => probe,
                    // A call admitted before the circuit opened; it is open already.
                    State::Open { .. } => false,
                };
                if trip {
                    inner.state = State::Open {
                        until: Instant::now() + self.policy.cooldown,
                    };
                    inner.times_opened += 1;
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        consecutive_failures = inner.consecutive_failures,
                        cooldown_ms = self.policy.cooldown.as_millis() as u64,
                        last_error = %inner.last_failure,
                        "circuit opened"
                    );
                }
            }
        }
    }

    pub(crate) fn snapshot(&self) -> BreakerSnapshot {
        let inner = self.lock();
        BreakerSnapshot {
            endpoint: self.endpoint.clone(),
            state: match inner.state {
                State::Closed => BreakerState::Closed,
                // Reported as it would behave for the next call.
                State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
                State::Open { .. } => BreakerState::Open,
                State::HalfOpen { .. } => BreakerState::HalfOpen,
            },
            consecutive_failures: inner.consecutive_failures,
            times_opened: inner.times_opened,
        }
    }

    /// Runs `call` if the circuit admits it and records how it went.
    pub(crate) async fn call<T, F>(&self, call: F) -> Result<T, ProviderError>
    where
        F: Future<Output = Result<T, ProviderError>>,
    {
        let mut permit = self.admit()?;
        let result = call.await;
        permit.finish(&result);
        result
    }
}

/// An admitted call. Dropped unfinished (the caller gave up), it counts as
/// telling nothing, so an abandoned probe does not wedge the circuit half-open.
struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    fn finish<T>(&mut self, result: &Result<T, ProviderError>) {
        self.done = true;
        self.breaker
            .record(self.probe, outcome(result), result.as_ref().err());
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record(self.probe, Outcome::Unknown, None);
        }
    }
}

/// The breakers of one factory, by endpoint.
#[derive(Debug, Default)]
pub(crate) struct BreakerRegistry {
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
}

impl BreakerRegistry {
    /// The endpoint's breaker, created with `policy` by the first provider
    /// built for it; later providers share it whatever their own policy.
    pub(crate) fn get(&self, endpoint: &str, policy: &BreakerPolicy) -> Arc<CircuitBreaker> {
        let mut map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(endpoint.to_owned())
            .or_insert_with(|| Arc::new(CircuitBreaker::new(endpoint, policy.clone())))
            .clone()
    }

    pub(crate) fn snapshots(&self) -> Vec<BreakerSnapshot> {
        let breakers: Vec<_> = self
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out: Vec<_> = breakers.iter().map(|b| b.snapshot()).collect();
        out.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        out
    }
}

/// A provider whose calls go through its endpoint's breaker. It sits inside
/// the retry loop, so every attempt is one observation of the endpoint.
pub(crate) struct BreakerProvider {
    inner: Arc<dyn Provider>,
    breaker: Arc<CircuitBreaker>,
}

impl BreakerProvider {
    pub(crate) fn new(inner: Arc<dyn Provider>, breaker: Arc<CircuitBreaker>) -> Self {
        Self { inner, breaker }
    }
}

impl fmt::Debug for BreakerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerProvider")
            .field("id", &self.inner.id())
            .field("endpoint", &self.breaker.endpoint)
            .finish()
    }
}

#[async_trait]
impl Provider for BreakerProvider {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError> {
        self.breaker.call(self.inner.complete(prompt)).await
    }

    async fn embed(&self, texts: &[String]) -> Result<crate::Embeddings, ProviderError> {
        self.breaker.call(self.inner.embed(texts)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> CircuitBreaker {
        CircuitBreaker::new(
            "http://x",
            BreakerPolicy {
                failure_threshold: threshold,
                cooldown: Duration::from_secs(10),
            },
        )
    }

    fn sick() -> Result<(), ProviderError> {
        Err(ProviderError::Http {
            status: 503,
            message: "down".into(),
        })
    }

    fn state(b: &CircuitBreaker) -> BreakerState {
        b.snapshot().state
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_fails_fast() {
        let b = breaker(3);
        for _ in 0..2 {
            assert!(b.call(async { sick() }).await.is_err());
        }
        assert_eq!(state(&b), BreakerState::Closed);
        assert!(b.call(async { sick() }).await.is_err());
        assert_eq!(state(&b), BreakerState::Open);
        let err = b.call(async { Ok(()) }).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::CircuitOpen { reason, .. } if reason.contains("503")),
            "{err:?}"
        );
        assert_eq!(b.snapshot().times_opened, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let b = breaker(2);
        assert!(b.call(async { sick() }).await.is_err());
        b.call(async { Ok(()) }).await.unwrap();
        assert!(b.call(async { sick() }).await.is_err());
        assert_eq!(state(&b), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_one_probe_whose_success_closes() {
        let b = Arc::new(breaker(1));
        assert!(b.call(async { sick() }).await.is_err());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(state(&b), BreakerState::HalfOpen);

        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let probe = tokio::spawn({
            let b = b.clone();
            async move {
                b.call(async {
                    wait.await.ok();
                    Ok(())
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        // While the probe is out, everyone else still fails fast.
        assert!(matches!(
            b.call(async { Ok(()) }).await,
            Err(ProviderError::CircuitOpen { .. })
        ));
        release.send(()).unwrap();
        probe.await.unwrap().unwrap();
        assert_eq!(state(&b), BreakerState::Closed);
        b.call(async { Ok(()) }).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_for_another_cooldown() {
        let b = breaker(1);
        assert!(b.call(async { sick() }).await.is_err());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(b.call(async { sick() }).await.is_err());
        assert_eq!(state(&b), BreakerState::Open);
        assert_eq!(b.snapshot().times_opened, 2);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(
            b.call(async { Ok(()) }).await,
            Err(ProviderError::CircuitOpen { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_call_probe() {
        let b = breaker(1);
        assert!(b.call(async { sick() }).await.is_err());
        tokio::time::advance(Duration::from_secs(11)).await;
        let hung = b.call(std::future::pending::<Result<(), ProviderError>>());
        assert!(
            tokio::time::timeout(Duration::from_millis(10), hung)
                .await
                .is_err()
        );
        b.call(async { Ok(()) }).await.unwrap();
        assert_eq!(state(&b), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_and_client_errors_do_not_count_as_failures() {
        let b = breaker(1);
        let limited: Result<(), _> = Err(ProviderError::RateLimited {
            retry_after: None,
            message: String::new(),
            limits: None,
        });
        assert!(b.call(async { limited }).await.is_err());
        let bad: Result<(), _> = Err(ProviderError::Http {
            status: 400,
            message: String::new(),
        });
        assert!(b.call(async { bad }).await.is_err());
        assert_eq!(state(&b), BreakerState::Closed);
        for e in [
            ProviderError::Timeout,
            ProviderError::Connect("refused".into()),
        ] {
            let b = breaker(1);
            assert!(b.call(async { Err::<(), _>(e) }).await.is_err());
            assert_eq!(state(&b), BreakerState::Open);
        }
    }

    #[test]
    fn registry_shares_one_breaker_per_endpoint() {
        let r = BreakerRegistry::default();
        let a = r.get("http://a", &BreakerPolicy::default());
        let a2 = r.get("http://a", &BreakerPolicy::disabled());
        let b = r.get("http://b", &BreakerPolicy::default());
        assert!(Arc::ptr_eq(&a, &a2));
        assert!(!Arc::ptr_eq(&a, &b));
        let endpoints: Vec<_> = r.snapshots().into_iter().map(|s| s.endpoint).collect();
        assert_eq!(endpoints, ["http://a", "http://b"]);
    }
}
