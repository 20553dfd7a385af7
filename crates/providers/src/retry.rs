//! Retrying transient provider failures: exponential backoff with full
//! jitter, never waiting less than the provider's `Retry-After`, within an
//! overall time budget.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use opentelemetry::KeyValue;
use rand::Rng;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
// tokio's clock, so the budget follows paused time in tests like the sleeps do.
use tokio::time::Instant;

use crate::{Completion, Provider, ProviderError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts including the first; 1 disables retries.
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry; it doubles each retry.
    pub base_delay: Duration,
    /// The most a backoff draw may be (a longer `Retry-After` is still honoured).
    pub max_delay: Duration,
    /// Retries stop once waiting again would pass this much time since the first attempt.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_total: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn no_retries() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The ceiling of the backoff after `failed_attempts` failures (1-based):
    /// `base_delay * 2^(failed_attempts - 1)`, capped at `max_delay`.
    pub fn backoff_ceiling(&self, failed_attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed_attempts.saturating_sub(1).min(31));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The wait before the next attempt: a uniform draw up to the ceiling ("full
    /// jitter", so a herd of callers spreads out). When the provider said how
    /// long to wait (`retry_after`), that wait plus a jitter of at most as
    /// much again (and at most the ceiling): the provider knows when it has
    /// room, and a blind backoff would leave a true rate cap unused.
    pub fn delay(&self, failed_attempts: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.backoff_ceiling(failed_attempts);
        let jitter = |max: Duration| {
            if max.is_zero() {
                Duration::ZERO
            } else {
                rand::rng().random_range(Duration::ZERO..=max)
            }
        };
        match retry_after {
            Some(ra) => ra + jitter(ra.min(ceiling)),
            None => jitter(ceiling),
        }
    }
}

tokio::task_local! {
    /// Set by [`deferring`]: the shortest provider-asked wait the caller
    /// would rather not wait out in place.
    static DEFER_WAITS_FROM: Duration;
}

/// Runs `call` so that when a provider asks to be retried only after at
/// least `min_wait` (a 429 or 503 with `Retry-After`), [`call_with_retry`]
/// returns that error at once instead of sleeping on it: the caller hands
/// the work back (through a delay queue) and holds nothing meanwhile.
/// Shorter waits are still waited in place.
pub async fn deferring<F: Future>(min_wait: Duration, call: F) -> F::Output {
    DEFER_WAITS_FROM.scope(min_wait, call).await
}

/// Whether `err` asks for a wait the caller chose to defer (see
/// [`deferring`]): one of at least the caller's minimum, or an open circuit
/// breaker (whose wait ends when it lets a probe through; failing the work
/// instead would turn a short outage into an error for every task).
pub fn is_deferred(err: &ProviderError) -> bool {
    let open = matches!(err, ProviderError::CircuitOpen { .. });
    err.retry_after()
        .is_some_and(|wait| DEFER_WAITS_FROM.try_with(|min| open || wait >= *min) == Ok(true))
}

/// Runs `op` (given the 1-based attempt number) until it succeeds, fails with
/// an error that is not [retryable](ProviderError::is_retryable), runs out of
/// attempts, or the next wait would exceed the policy's total budget. A 429
/// that says when to come back (`Retry-After`) is the provider pacing us,
/// not a failure: it uses no attempt, only time from the budget. The last
/// error is returned; an attempt still running when the budget runs out ends
/// as [`ProviderError::Timeout`].
pub async fn call_with_retry<T, F, Fut>(policy: &RetryPolicy, op: F) -> Result<T, ProviderError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    call_with_retry_for("", policy, op).await
}

/// [`call_with_retry`] for `provider`: each wait is an event `retry` on the
/// current span (the task's) with the provider, the attempt that failed,
/// the delay and the error, so a trace shows every retry and 429.
pub async fn call_with_retry_for<T, F, Fut>(
    provider: &str,
    policy: &RetryPolicy,
    mut op: F,
) -> Result<T, ProviderError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let started = Instant::now();
    let mut attempt = 1;
    let mut failures = 0;
    loop {
        // An attempt may not outlive the budget either: a call hanging past it
        // is cut off as a timeout.
        let remaining = policy.max_total.saturating_sub(started.elapsed());
        let err = match tokio::time::timeout(remaining, op(attempt)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => err,
            Err(_) => ProviderError::Timeout,
        };
        let paced = matches!(
            err,
            ProviderError::RateLimited {
                retry_after: Some(_),
                ..
            }
        );
        if !paced {
            failures += 1;
        }
        if !err.is_retryable() || failures >= policy.max_attempts.max(1) || is_deferred(&err) {
            return Err(err);
        }
        let delay = policy.delay(failures.max(1), err.retry_after());
        if started.elapsed() + delay > policy.max_total {
            tracing::warn!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %err,
                "provider call failed, retry budget exhausted"
            );
            return Err(err);
        }
        if paced {
            // Routine under a provider's rate cap: the limiter's metrics
            // tell that story, not a log line per call.
            tracing::debug!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                "provider asked to wait, retrying then"
            );
        } else {
            tracing::warn!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %err,
                "provider call failed, retrying"
            );
        }
        if gauntlet_telemetry::propagation::spans_wanted() {
            tracing::Span::current().add_event(
                "retry",
                vec![
                    KeyValue::new("gauntlet.provider", provider.to_owned()),
                    KeyValue::new("gauntlet.attempt", i64::from(attempt)),
                    KeyValue::new(
                        "gauntlet.delay_ms",
                        i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
                    ),
                    KeyValue::new("error.type", err.kind()),
                    KeyValue::new("exception.message", err.to_string()),
                ],
            );
        }
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// A provider whose calls go through [`call_with_retry`].
pub struct RetryingProvider {
    inner: Arc<dyn Provider>,
    policy: RetryPolicy,
    /// `gauntlet_provider_retries_total{provider}`.
    retries: metrics::Counter,
}

impl RetryingProvider {
    pub fn new(inner: Arc<dyn Provider>, policy: RetryPolicy) -> Self {
        let retries = metrics::counter!("gauntlet_provider_retries_total", "provider" => inner.id().to_owned());
        // At 0 from the start: a rule's `increase()` misses a first sample.
        retries.increment(0);
        Self {
            inner,
            policy,
            retries,
        }
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

impl std::fmt::Debug for RetryingProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryingProvider")
            .field("id", &self.inner.id())
            .field("policy", &self.policy)
            .finish()
    }
}

#[async_trait]
impl Provider for RetryingProvider {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn embed(&self, texts: &[String]) -> Result<crate::Embeddings, ProviderError> {
        call_with_retry_for(self.inner.id(), &self.policy, |attempt| {
            self.count_retry(attempt);
            self.inner.embed(texts)
        })
        .await
    }

    async fn complete(&self, prompt: &str) -> Result<Completion, ProviderError> {
        call_with_retry_for(self.inner.id(), &self.policy, |attempt| {
            self.count_retry(attempt);
            self.inner.complete(prompt)
        })
        .await
    }
}

impl RetryingProvider {
    /// `gauntlet_provider_retries_total{provider}`: every attempt after a
    /// call's first.
    fn count_retry(&self, attempt: u32) {
        if attempt > 1 {
            self.retries.increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_total: Duration::from_secs(60),
        }
    }

    fn server_error() -> ProviderError {
        ProviderError::Http {
            status: 503,
            message: "busy".into(),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_under_it() {
        let p = policy();
        let ceilings: Vec<_> = (1..=6).map(|n| p.backoff_ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff_ceiling(u32::MAX), p.max_delay);
        for n in 1..=6 {
            for _ in 0..50 {
                assert!(p.delay(n, None) <= p.backoff_ceiling(n));
            }
        }
    }

    #[test]
    fn retry_after_is_a_floor_on_the_wait_and_jitter_at_most_doubles_it() {
        let p = policy();
        for _ in 0..50 {
            let wait = p.delay(1, Some(Duration::from_secs(5)));
            // The jitter is capped by the backoff ceiling (100 ms here).
            assert!(wait >= Duration::from_secs(5), "{wait:?}");
            assert!(wait <= Duration::from_millis(5100), "{wait:?}");
            let wait = p.delay(3, Some(Duration::from_millis(20)));
            assert!(
                (Duration::from_millis(20)..=Duration::from_millis(40)).contains(&wait),
                "{wait:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_pacing_with_retry_after_uses_time_not_attempts() {
        // Ten 429s with Retry-After in a row, then an answer: more than
        // max_attempts (4), all within the time budget.
        let calls = AtomicU32::new(0);
        let result = call_with_retry(&policy(), |attempt| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt <= 10 {
                    Err(ProviderError::RateLimited {
                        retry_after: Some(Duration::from_millis(50)),
                        message: String::new(),
                        limits: None,
                    })
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(result, Ok(11));
        // A 429 without Retry-After is a failure like any other.
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = call_with_retry(&policy(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(ProviderError::RateLimited {
                    retry_after: None,
                    message: String::new(),
                    limits: None,
                })
            }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = call_with_retry(&policy(), |attempt| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt < 3 {
                    Err(server_error())
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(result, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_and_the_last_error_returned() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = call_with_retry(&policy(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(server_error()) }
        })
        .await;
        assert_eq!(result, Err(server_error()));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_errors_fail_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = call_with_retry(&policy(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(ProviderError::Http {
                    status: 401,
                    message: "bad key".into(),
                })
            }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferring_caller_gets_a_long_retry_after_back_at_once() {
        let calls = AtomicU32::new(0);
        let long = || ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
            message: "slow down".into(),
            limits: None,
        };
        let started = Instant::now();
        let err = deferring(
            Duration::from_secs(1),
            call_with_retry(&policy(), |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(long()) }
            }),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProviderError::RateLimited { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);

        // A shorter wait than the caller defers is waited in place.
        let calls = AtomicU32::new(0);
        let value = deferring(
            Duration::from_secs(1),
            call_with_retry(&policy(), |attempt| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if attempt == 1 {
                        Err(ProviderError::RateLimited {
                            retry_after: Some(Duration::from_millis(300)),
                            message: "brief".into(),
                            limits: None,
                        })
                    } else {
                        Ok(7)
                    }
                }
            }),
        )
        .await
        .unwrap();
        assert_eq!((value, calls.load(Ordering::SeqCst)), (7, 2));
        assert!(
            !is_deferred(&long()),
            "outside `deferring` nothing is deferred"
        );
    }

    #[tokio::test]
    async fn a_deferring_caller_gets_an_open_circuit_back_with_its_wait() {
        let open = |retry_in| ProviderError::CircuitOpen {
            endpoint: "http://x".into(),
            reason: "HTTP 500".into(),
            retry_in,
        };
        let calls = AtomicU32::new(0);
        let err = deferring(
            Duration::from_secs(1),
            call_with_retry(&policy(), |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(open(Duration::from_millis(200))) }
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.retry_after(), Some(Duration::from_millis(200)));
        // Even a wait shorter than the caller's minimum: the breaker, not
        // the provider, refused, and failing would make the task an error.
        assert!(
            deferring(Duration::from_secs(1), async { is_deferred(&err) }).await,
            "an open circuit is handed back"
        );
        assert!(!is_deferred(&open(Duration::from_secs(30))));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_waited_before_the_next_attempt() {
        let start = tokio::time::Instant::now();
        let result = call_with_retry(&policy(), |attempt| async move {
            if attempt == 1 {
                Err(ProviderError::RateLimited {
                    retry_after: Some(Duration::from_secs(7)),
                    message: String::new(),
                    limits: None,
                })
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(result, Ok(()));
        assert!(start.elapsed() >= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_outliving_the_total_budget_is_cut_off() {
        let p = RetryPolicy {
            max_total: Duration::from_secs(10),
            ..policy()
        };
        let start = tokio::time::Instant::now();
        let result: Result<(), _> =
            call_with_retry(&p, |_| std::future::pending::<Result<(), ProviderError>>()).await;
        assert_eq!(result, Err(ProviderError::Timeout));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_beyond_the_total_budget_gives_up() {
        let p = RetryPolicy {
            max_total: Duration::from_secs(10),
            ..policy()
        };
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = call_with_retry(&p, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(ProviderError::RateLimited {
                    retry_after: Some(Duration::from_secs(60)),
                    message: String::new(),
                    limits: None,
                })
            }
        })
        .await;
        assert!(matches!(result, Err(ProviderError::RateLimited { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
