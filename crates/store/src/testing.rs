//! Throwaway databases for tests: each test gets its own, created from the
//! server in `GAUNTLET_TEST_DATABASE_URL` (default local Postgres) and
//! dropped afterwards.

use gauntlet_config::DatabaseConfig;
use sqlx::{Connection, PgConnection};

/// A database of its own for one test.
pub struct TestDatabase {
    pub config: DatabaseConfig,
    admin_url: String,
    name: String,
}

/// The server tests use, as a URL to its `postgres` database.
pub fn admin_url() -> String {
    std::env::var("GAUNTLET_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDatabase {
    /// Creates an empty database with a random name; migrations run when the
    /// store connects (`config.migrate` is true).
    pub async fn create() -> Self {
        let admin_url = admin_url();
        let name = format!("gauntlet_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .expect("postgres must be reachable for tests");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin_url.clone());
        Self {
            config: DatabaseConfig {
                url: format!("{base}/{name}"),
                max_connections: 8,
                ..DatabaseConfig::default()
            },
            admin_url,
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside any runtime guarantee; use a short-lived thread
        // with its own runtime so cleanup works from sync and async tests.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// A passing result of task `task` (test 0, provider `echo`, 1 ms, one
/// token each way, free), as a stand-in worker stores it.
pub fn passing_result(task: i64) -> crate::NewResult {
    crate::NewResult {
        trace_id: String::new(),
        task_index: task,
        project_id: "default".into(),
        test_index: 0,
        prompt_index: 0,
        provider_index: 0,
        repeat_index: 0,
        provider_id: "echo".into(),
        status: crate::ResultStatus::Pass,
        score: 1.0,
        reason: String::new(),
        rendered_prompt: String::new(),
        output: String::new(),
        assertions: serde_json::json!([]),
        latency_ms: 1,
        tokens_in: 1,
        tokens_out: 1,
        cost_usd: 0.0,
        cached: false,
        error: String::new(),
    }
}
