//! Rate limits shared by every worker: GCRA (the generic cell rate
//! algorithm, a token bucket kept as one timestamp) over named buckets, in
//! Redis through one atomic Lua script so N workers spend one budget, or in
//! this process when there is no Redis (embedded mode).
//!
//! A bucket holds its "theoretical arrival time" (TAT): when it would be
//! empty again at its rate. A cost of `c` is granted when
//! `TAT + c·interval - burst·interval <= now` and moves the TAT on by
//! `c·interval`; otherwise the caller learns how long to wait. Several
//! buckets (requests and tokens per minute) are taken together or not at all.
//! The Redis script reads the clock with `TIME`, so workers with skewed
//! clocks still agree; that needs Redis 5 or later (effects replication).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tracing::Instrument as _;

use async_trait::async_trait;
use deadpool_redis::{Pool, Runtime, redis};
use gauntlet_config::RedisConfig;
use tracing::{info, warn};

use crate::CacheError;

/// A budget: `per_minute` units a minute, of which up to `burst` may be
/// spent at once after the bucket was idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u64,
    pub burst: u64,
}

impl Rate {
    /// `per_minute` with a burst of one second's worth (at least one): enough
    /// to start a run without a stall, small enough that the rate holds over
    /// any window of a few seconds.
    pub fn per_minute(per_minute: u64) -> Self {
        Self {
            per_minute: per_minute.max(1),
            burst: (per_minute / 60).max(1),
        }
    }

    /// Microseconds one unit occupies.
    fn interval_us(&self) -> f64 {
        60_000_000.0 / self.per_minute.max(1) as f64
    }
}

/// `cost` units of bucket `key` at `rate`. Keys name a budget, e.g. a
/// provider and API key fingerprint plus `:rpm` or `:tpm`.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub key: &'a str,
    pub rate: Rate,
    /// Units to take. [`RateLimiter::charge`] also takes negative costs
    /// (refunds); [`RateLimiter::try_acquire`] treats them as zero.
    pub cost: i64,
}

/// What [`RateLimiter::try_acquire`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Taken. `at` is when, on the limiter's clock (Redis server time since
    /// the epoch, or time since a local limiter was created).
    Granted { at: Duration },
    /// Nothing taken; the same request can succeed after this long.
    Wait(Duration),
}

/// Shared budgets. Implementations never fail a call: a limiter that cannot
/// reach its store falls back to a local one.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes every charge, or none of them.
    async fn try_acquire(&self, charges: &[Charge<'_>]) -> Decision;

    /// Takes (or, for a negative cost, gives back) units without waiting,
    /// e.g. to settle a call's real token count against its estimate.
    async fn charge(&self, charges: &[Charge<'_>]);
}

/// Waits until every charge is granted; returns when, on the limiter's clock.
pub async fn acquire(limiter: &dyn RateLimiter, charges: &[Charge<'_>]) -> Duration {
    loop {
        match limiter.try_acquire(charges).await {
            Decision::Granted { at } => return at,
            Decision::Wait(wait) => tokio::time::sleep(wait).await,
        }
    }
}

/// The GCRA step over `tats` (one per charge, microseconds): the new TATs
/// if granted, or the wait. The Lua script below is the same computation.
fn gcra(tats: &[f64], charges: &[Charge<'_>], now: f64, acquire: bool) -> Result<Vec<f64>, f64> {
    let mut wait: f64 = 0.0;
    let mut next = Vec::with_capacity(charges.len());
    for (charge, &stored) in charges.iter().zip(tats) {
        let interval = charge.rate.interval_us();
        let tat = stored.max(now);
        if acquire {
            let cost = charge.cost.max(0) as f64;
            let new_tat = tat + cost * interval;
            // A cost above the burst could never fit; it goes once the bucket is empty.
            let allow_at = (new_tat - charge.rate.burst as f64 * interval).min(tat);
            wait = wait.max(allow_at - now);
            next.push(new_tat);
        } else {
            next.push((tat + charge.cost as f64 * interval).max(now));
        }
    }
    if acquire && wait > 0.0 {
        Err(wait)
    } else {
        Ok(next)
    }
}

fn micros(us: f64) -> Duration {
    Duration::from_micros(us.max(0.0).ceil() as u64)
}

/// Buckets in this process (embedded mode, or while Redis is unreachable).
pub struct LocalLimiter {
    epoch: Instant,
    tats: Mutex<HashMap<String, f64>>,
}

/// Idle buckets are forgotten once the map holds this many.
const LOCAL_PRUNE_AT: usize = 10_000;

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        }
    }

    fn step(&self, charges: &[Charge<'_>], acquire: bool) -> Decision {
        let now = self.epoch.elapsed().as_secs_f64() * 1e6;
        let mut map = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        let stored: Vec<f64> = charges
            .iter()
            .map(|c| map.get(c.key).copied().unwrap_or(0.0))
            .collect();
        match gcra(&stored, charges, now, acquire) {
            Ok(next) => {
                if map.len() >= LOCAL_PRUNE_AT {
                    map.retain(|_, tat| *tat > now);
                }
                for (charge, tat) in charges.iter().zip(next) {
                    map.insert(charge.key.to_owned(), tat);
                }
                Decision::Granted { at: micros(now) }
            }
            Err(wait) => Decision::Wait(micros(wait)),
        }
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn try_acquire(&self, charges: &[Charge<'_>]) -> Decision {
        self.step(charges, true)
    }

    async fn charge(&self, charges: &[Charge<'_>]) {
        self.step(charges, false);
    }
}

/// KEYS: one per charge. ARGV[1]: `acquire` or `charge`; then per key its
/// interval (µs per unit), burst (units) and cost (units). Returns
/// `{granted, wait_us, now_us}`. TATs are stored as whole microseconds
/// (`%.0f`: Lua's `tostring` would round them to 14 digits).
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local acquire = ARGV[1] == 'acquire'
local wait = 0
local tats = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local stored = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  local tat = math.max(stored, now)
  if acquire then
    if cost < 0 then cost = 0 end
    local new_tat = tat + cost * interval
    local allow_at = math.min(new_tat - burst * interval, tat)
    if allow_at - now > wait then wait = allow_at - now end
    tats[i] = new_tat
  else
    tats[i] = math.max(tat + cost * interval, now)
  end
end
if acquire and wait > 0 then
  return {0, math.ceil(wait), now}
end
for i = 1, #KEYS do
  local ttl_ms = math.ceil((tats[i] - now) / 1000)
  if ttl_ms > 0 then
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl_ms)
  else
    redis.call('DEL', KEYS[i])
  end
end
return {1, 0, now}
";

/// How long one Redis round trip may take before the call falls back to
/// the local limiter, so a stalled Redis does not stall every model call.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Buckets in Redis, shared by every worker using the same prefix. While
/// Redis is unreachable each process limits itself with a [`LocalLimiter`]
/// (the budget then holds per worker, not per cluster) and says so once.
pub struct RedisLimiter {
    pool: Pool,
    prefix: Arc<str>,
    script: redis::Script,
    fallback: LocalLimiter,
    degraded: AtomicBool,
}

impl RedisLimiter {
    /// A limiter with a pool of its own. An empty `config.url` is an error:
    /// use a [`LocalLimiter`] then.
    pub fn new(config: &RedisConfig) -> Result<Self, CacheError> {
        if config.url.is_empty() {
            return Err(CacheError::Pool("no Redis URL for the rate limiter".into()));
        }
        let mut cfg = deadpool_redis::Config::from_url(&config.url);
        cfg.pool = Some(deadpool_redis::PoolConfig::new(config.pool_size));
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| CacheError::Pool(e.to_string()))?;
        Ok(Self::with_pool(pool, &config.prefix))
    }

    /// A limiter over an existing pool; keys are `<prefix>:ratelimit:<key>`.
    pub fn with_pool(pool: Pool, prefix: &str) -> Self {
        Self {
            pool,
            prefix: format!("{prefix}:ratelimit").into(),
            script: redis::Script::new(GCRA_SCRIPT),
            fallback: LocalLimiter::new(),
            degraded: AtomicBool::new(false),
        }
    }

    async fn eval(&self, charges: &[Charge<'_>], acquire: bool) -> Result<Decision, String> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(if acquire { "acquire" } else { "charge" });
        for c in charges {
            invocation
                .key(format!("{}:{}", self.prefix, c.key))
                .arg(c.rate.interval_us())
                .arg(c.rate.burst)
                .arg(c.cost);
        }
        let call = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            invocation
                .invoke_async::<(i64, i64, i64)>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .instrument(crate::redis_span("EVALSHA"));
        let (granted, wait_us, now_us) = tokio::time::timeout(REDIS_TIMEOUT, call)
            .await
            .map_err(|_| "timed out".to_string())??;
        Ok(if granted == 1 {
            Decision::Granted {
                at: Duration::from_micros(now_us.max(0) as u64),
            }
        } else {
            Decision::Wait(Duration::from_micros(wait_us.max(1) as u64))
        })
    }

    async fn step(&self, charges: &[Charge<'_>], acquire: bool) -> Decision {
        match self.eval(charges, acquire).await {
            Ok(decision) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    info!("redis is back, rate limits are shared again");
                }
                decision
            }
            Err(error) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    warn!(%error, "redis rate limiter unavailable, limiting this process only");
                }
                self.fallback.step(charges, acquire)
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn try_acquire(&self, charges: &[Charge<'_>]) -> Decision {
        self.step(charges, true).await
    }

    async fn charge(&self, charges: &[Charge<'_>]) {
        self.step(charges, false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(key: &str, per_minute: u64, burst: u64, cost: i64) -> Charge<'_> {
        Charge {
            key,
            rate: Rate { per_minute, burst },
            cost,
        }
    }

    #[test]
    fn a_full_bucket_grants_its_burst_then_one_unit_per_interval() {
        // 60/min: one unit a second, burst 3.
        let c = [charge("k", 60, 3, 1)];
        let mut tats = vec![0.0];
        let now = 10_000_000.0;
        for _ in 0..3 {
            tats = gcra(&tats, &c, now, true).expect("within the burst");
        }
        let wait = gcra(&tats, &c, now, true).unwrap_err();
        assert!((wait - 1_000_000.0).abs() < 1.0, "{wait}");
        assert!(gcra(&tats, &c, now + 1_000_000.0, true).is_ok());
    }

    #[test]
    fn charges_are_all_or_nothing_and_refunds_stop_at_now() {
        let now = 5_000_000.0;
        let both = [charge("rpm", 60, 10, 1), charge("tpm", 600, 100, 200)];
        // Tokens over their burst: denied, and nothing is taken from either bucket.
        let wait = gcra(&[0.0, now + 5_000_000.0], &both, now, true).unwrap_err();
        assert!(wait > 0.0);
        // A refund lowers the TAT but never below now.
        let refund = [charge("tpm", 600, 100, -1_000)];
        assert_eq!(
            gcra(&[now + 1_000.0], &refund, now, false).unwrap(),
            vec![now]
        );
    }

    #[test]
    fn a_cost_above_the_burst_goes_once_the_bucket_is_empty() {
        let c = [charge("tpm", 60, 10, 50)];
        let now = 1_000_000.0;
        let tats = gcra(&[0.0], &c, now, true).expect("an idle bucket takes it");
        assert!((tats[0] - (now + 50_000_000.0)).abs() < 1.0);
        assert!(gcra(&tats, &c, now + 1.0, true).is_err());
    }

    #[tokio::test]
    async fn local_limiter_waits_then_grants() {
        let limiter = LocalLimiter::new();
        // 6000/min: one unit every 10 ms, burst 1.
        let c = [charge("k", 6000, 1, 1)];
        assert!(matches!(
            limiter.try_acquire(&c).await,
            Decision::Granted { .. }
        ));
        let Decision::Wait(wait) = limiter.try_acquire(&c).await else {
            panic!("the second unit must wait");
        };
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
        acquire(&limiter, &c).await;
    }
}
