//! The cache against a real Redis, each test under its own key prefix.

use std::time::Duration;

use gauntlet_cache::Cache;
use gauntlet_config::RedisConfig;

fn config() -> RedisConfig {
    RedisConfig {
        url: std::env::var("GAUNTLET_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        prefix: format!("gauntlet-test-{}", uuid::Uuid::new_v4().simple()),
        pool_size: 4,
    }
}

#[tokio::test]
async fn a_value_set_by_one_replica_is_read_by_another_through_redis() {
    let cfg = config();
    let a = Cache::new(&cfg, 1 << 20).unwrap();
    let b = Cache::new(&cfg, 1 << 20).unwrap();
    assert!(a.ping().await, "redis must be reachable");
    a.set("summary:1", b"hello", Duration::from_secs(30)).await;
    assert_eq!(b.get("summary:1").await.as_deref(), Some(&b"hello"[..]));

    a.invalidate("summary:1").await;
    b.clear_local();
    assert_eq!(b.get("summary:1").await, None);
}

#[tokio::test]
async fn redis_entries_expire() {
    let cfg = config();
    let a = Cache::new(&cfg, 1 << 20).unwrap();
    a.set("k", b"v", Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    a.clear_local();
    assert_eq!(a.get("k").await, None);
}

#[tokio::test]
async fn an_unreachable_redis_degrades_to_local_only() {
    let cfg = RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        ..config()
    };
    let a = Cache::new(&cfg, 1 << 20).unwrap();
    assert!(!a.ping().await);
    a.set("k", b"v", Duration::from_secs(5)).await;
    assert_eq!(a.get("k").await.as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn a_down_redis_is_skipped_after_one_failure_not_dialled_per_call() {
    let cfg = RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        ..config()
    };
    let cache = Cache::new(&cfg, 1 << 20).unwrap();
    assert_eq!(cache.get("missing").await, None);
    assert!(cache.degraded());
    for i in 0..10_000 {
        assert_eq!(cache.get(&format!("k{i}")).await, None);
    }
    assert!(
        cache.skipped_redis_calls() >= 9_990,
        "{}",
        cache.skipped_redis_calls()
    );
}

/// A private Redis on a free port, stopped on drop (the shared one is never touched).
struct PrivateRedis(std::process::Child);

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_cache_shares_through_redis_again_once_it_is_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = RedisConfig {
        url: format!("redis://127.0.0.1:{port}"),
        ..config()
    };
    let cache = Cache::new(&cfg, 1 << 20).unwrap();
    cache.set("before", b"x", Duration::from_secs(60)).await;
    assert!(cache.degraded(), "nothing listens on {port} yet");

    let _redis = PrivateRedis(
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/dev-services.sh)"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        // Past the first backoff a call probes Redis again.
        cache.set("after", b"y", Duration::from_secs(60)).await;
        if !cache.degraded() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Shared again: another replica reads the value from Redis.
    let other = Cache::new(&cfg, 1 << 20).unwrap();
    assert_eq!(other.get("after").await.as_deref(), Some(&b"y"[..]));
}

mod limiter {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use gauntlet_cache::limiter::{Charge, Decision, Rate, RateLimiter, RedisLimiter};
    use tokio::sync::Mutex;

    use super::config;

    /// Two "workers" (two limiters, each with its own pool) hammer one budget
    /// of R = 1200/min (20/s) from 8 tasks each. Grants are stamped with the
    /// Redis clock, so a loaded machine only makes tasks late, never makes the
    /// window count wrong. After a one-second warm-up (the initial burst), the
    /// grants in the next three seconds stay within 10 % of 60.
    #[tokio::test]
    async fn two_workers_sharing_a_limit_stay_within_ten_percent_of_it() {
        let cfg = config();
        let workers = [
            Arc::new(RedisLimiter::new(&cfg).unwrap()),
            Arc::new(RedisLimiter::new(&cfg).unwrap()),
        ];
        let rate = Rate::per_minute(1200);
        let grants = Arc::new(Mutex::new(Vec::<(usize, Duration)>::new()));
        // Run until the Redis clock is 4.3 s past the first grant, however
        // late a loaded machine schedules the tasks (with a hard stop).
        let done = Arc::new(AtomicBool::new(false));
        let hard_stop = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut tasks = Vec::new();
        for (w, limiter) in workers.iter().enumerate() {
            for _ in 0..8 {
                let (limiter, grants, done) = (limiter.clone(), grants.clone(), done.clone());
                tasks.push(tokio::spawn(async move {
                    let charge = [Charge {
                        key: "openai:gpt:abc:rpm",
                        rate,
                        cost: 1,
                    }];
                    while !done.load(Ordering::Relaxed) && tokio::time::Instant::now() < hard_stop {
                        match limiter.try_acquire(&charge).await {
                            Decision::Granted { at } => {
                                let mut grants = grants.lock().await;
                                grants.push((w, at));
                                let first = grants.iter().map(|(_, at)| *at).min().unwrap();
                                if at >= first + Duration::from_millis(4300) {
                                    done.store(true, Ordering::Relaxed);
                                }
                            }
                            Decision::Wait(wait) => tokio::time::sleep(wait).await,
                        }
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let grants = grants.lock().await;
        let start = grants.iter().map(|(_, at)| *at).min().unwrap();
        let window = (start + Duration::from_secs(1))..(start + Duration::from_secs(4));
        let counted: Vec<_> = grants
            .iter()
            .filter(|(_, at)| window.contains(at))
            .collect();
        let expected = 60.0;
        let n = counted.len() as f64;
        eprintln!("{n} grants in the measured window, {} in all", grants.len());
        assert!(
            (n - expected).abs() <= expected * 0.1,
            "{n} grants in 3 s against a budget of {expected}"
        );
        // Both workers got a share: the budget is one, not one each.
        for w in 0..2 {
            assert!(
                counted.iter().any(|(who, _)| *who == w),
                "worker {w} starved"
            );
        }
        // The whole run never went past burst + rate.
        let end = grants.iter().map(|(_, at)| *at).max().unwrap();
        let allowed = rate.burst as f64 + (end - start).as_secs_f64() * 20.0 + 1.0;
        assert!(
            grants.len() as f64 <= allowed,
            "{} > {allowed}",
            grants.len()
        );
    }

    #[tokio::test]
    async fn token_charges_after_a_call_delay_the_next_one() {
        let cfg = config();
        let limiter = RedisLimiter::new(&cfg).unwrap();
        // 600 tokens/min = 10/s, burst 10.
        let tpm = |cost| Charge {
            key: "tpm",
            rate: Rate::per_minute(600),
            cost,
        };
        assert!(matches!(
            limiter.try_acquire(&[tpm(5)]).await,
            Decision::Granted { .. }
        ));
        // The call really used 25 tokens: settle the difference.
        limiter.charge(&[tpm(20)]).await;
        let Decision::Wait(wait) = limiter.try_acquire(&[tpm(1)]).await else {
            panic!("the debt must make the next call wait");
        };
        // 25 tokens spent of a 10-token burst at 10/s: about 1.5 s to go.
        assert!(
            wait > Duration::from_millis(1000) && wait <= Duration::from_millis(1600),
            "{wait:?}"
        );
        // A refund gives the time back.
        limiter.charge(&[tpm(-20)]).await;
        assert!(matches!(
            limiter.try_acquire(&[tpm(1)]).await,
            Decision::Granted { .. }
        ));
    }
}
