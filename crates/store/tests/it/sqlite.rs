//! What only the SQLite backend does; shared behaviour is in `conformance`.

use gauntlet_config::DatabaseConfig;
use gauntlet_store::{NewRun, SqliteStore, Store};
use uuid::Uuid;

fn new_run() -> NewRun {
    NewRun {
        id: Uuid::now_v7(),
        project_id: "default".into(),
        description: "demo".into(),
        label: String::new(),
        source: "prompts: [hi]".into(),
        compiled: serde_json::json!({"prompts": ["hi"]}).to_string(),
        options: serde_json::json!({}),
        total_tasks: 1,
    }
}

#[tokio::test]
async fn connect_creates_the_file_in_wal_mode_and_its_data_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/gauntlet.db");
    let config = DatabaseConfig {
        url: format!("sqlite://{}", path.display()),
        ..DatabaseConfig::default()
    };
    let store = SqliteStore::connect(&config).await.unwrap();
    assert!(path.exists());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let run = store.create_run(new_run()).await.unwrap();
    store.close().await;

    // Opening again applies no migration twice and finds the run.
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.get_run(run.id).await.unwrap(), Some(run));
}

#[tokio::test]
async fn memory_databases_are_private_to_their_store() {
    let config = DatabaseConfig {
        url: "sqlite::memory:".into(),
        ..DatabaseConfig::default()
    };
    let from_config = SqliteStore::connect(&config).await.unwrap();
    let other = SqliteStore::in_memory().await.unwrap();

    let run = from_config.create_run(new_run()).await.unwrap();
    assert_eq!(
        from_config.get_run(run.id).await.unwrap(),
        Some(run.clone())
    );
    assert_eq!(other.get_run(run.id).await.unwrap(), None);
}

#[tokio::test]
async fn tests_stored_before_digests_get_theirs_from_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("gauntlet.db"))
        .await
        .unwrap();
    let run = new_run();
    let body = "{\"vars\":{\"q\":1}}".to_owned();
    store
        .put_tests(run.id, 0, std::slice::from_ref(&body))
        .await
        .unwrap();
    // As a row written before migration 0005 is.
    sqlx::query("UPDATE suite_tests SET digest = NULL")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        store.test_digests(run.id).await.unwrap(),
        [(0, gauntlet_store::test_digest(&body))]
    );
}
