//! What only the Postgres backend does; shared behaviour is in `conformance`.

use gauntlet_store::{PgStore, Store, testing::TestDatabase};
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn connect_creates_a_missing_database_and_migrates_it() {
    let db = TestDatabase::create().await;
    let (server, name) = db.config.url.rsplit_once('/').unwrap();
    let mut admin = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();

    let store = PgStore::connect(&db.config).await.unwrap();
    store.ping().await.unwrap();
    let projects: i64 = sqlx::query_scalar("SELECT count(*) FROM projects WHERE id = 'default'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(projects, 1);
    store.close().await;

    // Connecting again finds every migration applied and applies nothing.
    let again = PgStore::connect(&db.config).await.unwrap();
    again.ping().await.unwrap();
    again.close().await;
}

#[tokio::test]
async fn a_connection_the_server_terminates_is_a_transient_error() {
    let db = TestDatabase::create().await;
    let mut conn = PgConnection::connect(&db.config.url).await.unwrap();
    // What a restarting server does to every session: FATAL 57P01.
    let err = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut conn)
        .await
        .unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("57P01"), "{err}");
    assert!(gauntlet_store::StoreError::from(err).is_transient());

    // A constraint violation is not.
    let store = PgStore::connect(&db.config).await.unwrap();
    let err = sqlx::query("INSERT INTO projects (id) VALUES ('default')")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(!gauntlet_store::StoreError::from(err).is_transient());
    store.close().await;
}
