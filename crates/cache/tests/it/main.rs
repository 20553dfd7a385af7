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
