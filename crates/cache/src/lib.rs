//! A two-level cache: L1 in-process (moka, per-entry TTL) in front of an
//! optional L2 in Redis shared by every replica. Redis being down degrades to
//! L1 only; a cache must never fail the request it serves.
//!
//! [`limiter`] keeps the cluster's shared rate limits in the same Redis.

mod breaker;
pub mod limiter;

use std::{sync::Arc, time::Duration};
use tracing::Instrument as _;

use deadpool_redis::{Pool, Runtime, redis};
use gauntlet_config::RedisConfig;
use moka::{Expiry, future::Cache as Moka};

use crate::{
    breaker::RedisBreaker,
    limiter::{LocalLimiter, RateLimiter, RedisLimiter},
};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis pool: {0}")]
    Pool(String),
}

#[derive(Clone)]
struct Entry {
    bytes: Arc<[u8]>,
    ttl: Duration,
}

/// What an L1 entry costs beyond its key and value (moka's entry, its
/// timer-wheel and deque nodes, the allocations of key and value), so
/// the L1 budget is memory really used: without it, a cache of small
/// answers used twice its budget (a 1,000,000-task run of ~300-byte
/// answers: 130 MB for a 64 MB budget, measured with heaptrack).
const ENTRY_OVERHEAD: usize = 256;

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Longest wait for a Redis connection.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// L1 + optional L2. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    l1: Moka<String, Entry>,
    l2: Option<Pool>,
    prefix: Arc<str>,
    limiter: Arc<dyn RateLimiter>,
    breaker: Arc<RedisBreaker>,
}

impl Cache {
    /// L1 holds at most `l1_bytes` of values. An empty `config.url` means L1 only.
    pub fn new(config: &RedisConfig, l1_bytes: u64) -> Result<Self, CacheError> {
        let l2 = if config.url.is_empty() {
            None
        } else {
            let mut cfg = deadpool_redis::Config::from_url(&config.url);
            cfg.pool = Some(deadpool_redis::PoolConfig {
                // A Redis that does not answer costs a call at most this long.
                timeouts: deadpool_redis::Timeouts {
                    wait: Some(REDIS_TIMEOUT),
                    create: Some(REDIS_TIMEOUT),
                    recycle: Some(REDIS_TIMEOUT),
                },
                ..deadpool_redis::PoolConfig::new(config.pool_size)
            });
            Some(
                cfg.create_pool(Some(Runtime::Tokio1))
                    .map_err(|e| CacheError::Pool(e.to_string()))?,
            )
        };
        if l2.is_some() {
            // Exported from the start, so a dashboard sees 0 rather than nothing.
            breaker::report_degraded(false);
        }
        let limiter: Arc<dyn RateLimiter> = match &l2 {
            Some(pool) => Arc::new(RedisLimiter::with_pool(pool.clone(), &config.prefix)),
            None => Arc::new(LocalLimiter::new()),
        };
        Ok(Self {
            l1: Moka::builder()
                .weigher(|k: &String, v: &Entry| {
                    (k.len() + v.bytes.len() + ENTRY_OVERHEAD).min(u32::MAX as usize) as u32
                })
                .max_capacity(l1_bytes)
                .expire_after(PerEntryTtl)
                .build(),
            l2,
            prefix: config.prefix.clone().into(),
            limiter,
            breaker: Arc::default(),
        })
    }

    /// An L1-only cache (embedded mode, tests).
    pub fn local(l1_bytes: u64) -> Self {
        Self::new(
            &RedisConfig {
                url: String::new(),
                ..RedisConfig::default()
            },
            l1_bytes,
        )
        .expect("an L1-only cache needs no pool")
    }

    /// The rate limiter over the same Redis (shared by every process using
    /// this prefix), or an in-process one when there is no L2. Clones of this
    /// cache share one limiter.
    pub fn rate_limiter(&self) -> Arc<dyn RateLimiter> {
        self.limiter.clone()
    }

    /// The Redis pool, unless there is none or the breaker is open.
    fn l2(&self) -> Option<&Pool> {
        self.l2.as_ref().filter(|_| self.breaker.allow())
    }

    /// Records how a Redis call went, for the breaker.
    fn outcome<T>(&self, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => {
                self.breaker.succeeded();
                Some(v)
            }
            Err(error) => {
                self.breaker.failed(&error);
                None
            }
        }
    }

    /// Whether the cache is running without its Redis (it is down).
    pub fn degraded(&self) -> bool {
        self.breaker.is_open()
    }

    /// Cache calls that skipped Redis since it went down.
    pub fn skipped_redis_calls(&self) -> u64 {
        self.breaker.skipped()
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    pub async fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        if let Some(e) = self.l1.get(key).await {
            return Some(e.bytes);
        }
        let pool = self.l2()?;
        let result: Result<(Option<Vec<u8>>, i64), String> = async {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            redis::pipe()
                .cmd("GET")
                .arg(self.redis_key(key))
                .cmd("PTTL")
                .arg(self.redis_key(key))
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .instrument(redis_span("GET"))
        .await;
        match self.outcome(result)? {
            (Some(bytes), pttl) => {
                let bytes: Arc<[u8]> = bytes.into();
                if pttl > 0 {
                    let ttl = Duration::from_millis(pttl as u64);
                    self.l1
                        .insert(
                            key.to_string(),
                            Entry {
                                bytes: bytes.clone(),
                                ttl,
                            },
                        )
                        .await;
                }
                Some(bytes)
            }
            (None, _) => None,
        }
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) {
        let bytes: Arc<[u8]> = value.into();
        self.l1
            .insert(
                key.to_string(),
                Entry {
                    bytes: bytes.clone(),
                    ttl,
                },
            )
            .await;
        if let Some(pool) = self.l2() {
            let result: Result<(), String> = async {
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                redis::cmd("SET")
                    .arg(self.redis_key(key))
                    .arg(&*bytes)
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            }
            .instrument(redis_span("SET"))
            .await;
            self.outcome(result);
        }
    }

    pub async fn invalidate(&self, key: &str) {
        self.l1.invalidate(key).await;
        if let Some(pool) = self.l2() {
            let result: Result<(), String> = async {
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                redis::cmd("DEL")
                    .arg(self.redis_key(key))
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            self.outcome(result);
        }
    }

    /// Whether Redis answers (health checks). True when there is no L2.
    pub async fn ping(&self) -> bool {
        self.check().await.is_ok()
    }

    /// Whether this cache has Redis behind it (an L2 shared by processes).
    pub fn is_shared(&self) -> bool {
        self.l2.is_some()
    }

    /// Redis' answer to PING, or why there is none. Ok when there is no L2.
    pub async fn check(&self) -> Result<(), String> {
        let Some(pool) = &self.l2 else {
            return Ok(());
        };
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Drops L1 only, so a test can prove a value came from Redis.
    pub fn clear_local(&self) {
        self.l1.invalidate_all();
    }
}

/// A CLIENT span for one Redis command (`db.system.name = redis`), or none
/// outside a traced span.
pub(crate) fn redis_span(operation: &'static str) -> tracing::Span {
    if !gauntlet_telemetry::propagation::spans_wanted() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "redis",
        otel.name = operation,
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = operation,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_entries_expire_after_their_ttl() {
        let cache = Cache::local(1 << 20);
        cache.set("k", b"v", Duration::from_millis(50)).await;
        assert_eq!(cache.get("k").await.as_deref(), Some(&b"v"[..]));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.get("k").await, None);
    }
}
