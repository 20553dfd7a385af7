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
