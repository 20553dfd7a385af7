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

#[tokio::test]
async fn writes_of_one_run_store_their_results_while_its_row_is_locked_and_count_once() {
    use std::{sync::Arc, time::Duration};

    use crate::conformance::{counters, new_run, result};
    use gauntlet_store::{ResultStatus, RunStatus};

    let db = TestDatabase::create().await;
    let store = Arc::new(PgStore::connect(&db.config).await.unwrap());
    let run = store.create_run(new_run(80)).await.unwrap();
    // Another transaction holds the run's row (as a cancel would, or a
    // counter update waiting on its commit).
    let mut holder = PgConnection::connect(&db.config.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM runs WHERE id = $1 FOR NO KEY UPDATE")
        .bind(run.id)
        .execute(&mut holder)
        .await
        .unwrap();
    let writes: Vec<_> = (0..8i64)
        .map(|i| {
            let store = store.clone();
            let batch: Vec<_> = (i * 10..i * 10 + 10)
                .map(|t| result(t, ResultStatus::Pass))
                .collect();
            tokio::spawn(async move { store.insert_results(run.id, &batch).await.unwrap() })
        })
        .collect();
    // One write takes the fold and waits for the row with its results
    // uncommitted; the other seven commit theirs (then wait to be counted).
    // Before tallies, every write waited for the row with its results
    // uncommitted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM results WHERE run_id = $1")
        .bind(run.id)
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(stored, 70, "results stored while the run's row is held");

    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let mut finished = 0;
    for write in writes {
        let outcome = write.await.unwrap();
        assert_eq!(outcome.inserted, 10);
        finished += usize::from(outcome.finished_now);
    }
    assert_eq!(finished, 1, "exactly one write sees the run complete");
    let run = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(counters(&run), (80, 80, 0, 0));
    assert!(run.finished_at.is_some());
}

#[tokio::test]
async fn counts_a_writer_left_unfolded_are_folded_when_the_reconciler_looks() {
    use crate::conformance::{counters, new_run};
    use gauntlet_store::RunStatus;

    async fn completed(store: &PgStore, id: uuid::Uuid) -> i64 {
        store.get_run(id).await.unwrap().unwrap().completed_tasks
    }
    let db = TestDatabase::create().await;
    let store = PgStore::connect(&db.config).await.unwrap();
    let run = store.create_run(new_run(5)).await.unwrap();
    // A writer that stopped between its commit and its fold.
    sqlx::query(
        "INSERT INTO run_tallies (run_id, completed, passed, failed, errors, cost_usd) \
         VALUES ($1, 5, 3, 1, 1, 0.5)",
    )
    .bind(run.id)
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(completed(&store, run.id).await, 0);

    // Not quiet yet: left to its writers.
    assert_eq!(
        store
            .stale_runs(chrono::Utc::now() - chrono::Duration::hours(1), 10)
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(completed(&store, run.id).await, 0);

    let stale = store
        .stale_runs(chrono::Utc::now() + chrono::Duration::seconds(1), 10)
        .await
        .unwrap();
    assert!(stale.is_empty(), "the fold completed it: {stale:?}");
    let run = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(counters(&run), (5, 3, 1, 1));
    assert!((run.cost_usd - 0.5).abs() < 1e-9);
}

#[tokio::test]
async fn a_rolled_up_run_reads_its_outcomes_packed_not_from_its_results() {
    use crate::conformance::{
        cycling_status, latency_counts, new_run, outcome_keys, result, result_keys,
    };

    let db = TestDatabase::create().await;
    let store = PgStore::connect(&db.config).await.unwrap();
    // Three packed rows: 50,000, 50,000 and 1.
    const TASKS: i64 = 100_001;
    let run = store.create_run(new_run(TASKS)).await.unwrap();
    let rows: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut r = result(t, cycling_status(t));
            r.latency_ms = (t % 977) as i32;
            r
        })
        .collect();
    for chunk in rows.chunks(25_000) {
        store.insert_results(run.id, chunk).await.unwrap();
    }
    assert!(store.roll_up(run.id).await.unwrap());
    let packed: Vec<(i64, i64, i32)> = sqlx::query_as(
        "SELECT first_task, last_task, n FROM run_outcomes WHERE run_id = $1 ORDER BY first_task",
    )
    .bind(run.id)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        packed,
        [
            (0, 49_999, 50_000),
            (50_000, 99_999, 50_000),
            (100_000, 100_000, 1)
        ]
    );

    // Its latencies too: with the rolled-up rows gone they read the same.
    let latencies = latency_counts(&store, run.id).await;
    // 977 latencies in each of the 4 provider × prompt groups.
    assert_eq!(latencies.len(), 4 * 977);
    assert_eq!(latencies.values().sum::<i64>(), TASKS * 2 / 3 + 1);
    sqlx::query("DELETE FROM run_latencies WHERE run_id = $1")
        .bind(run.id)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(latency_counts(&store, run.id).await, latencies);

    // With the results gone, the outcomes still read back whole and in
    // order: they come from the packed rows.
    sqlx::query("DELETE FROM results WHERE run_id = $1")
        .bind(run.id)
        .execute(store.pool())
        .await
        .unwrap();
    let (got, want) = (outcome_keys(&store, run.id).await, result_keys(&rows));
    assert!(
        got == want,
        "{} outcomes, not the {} stored",
        got.len(),
        want.len()
    );
    store.close().await;
}

#[tokio::test]
async fn tests_stored_before_digests_get_theirs_from_the_body_in_index_order() {
    let db = TestDatabase::create().await;
    let store = PgStore::connect(&db.config).await.unwrap();
    let run = uuid::Uuid::now_v7();
    let bodies: Vec<String> = (0..4)
        .map(|q| format!("{{\"vars\":{{\"q\":{q}}}}}"))
        .collect();
    store.put_tests(run, 0, &bodies).await.unwrap();
    // Tests 1 and 2 as rows written before migration 0005 are.
    sqlx::query("UPDATE suite_tests SET digest = NULL WHERE test_index IN (1, 2)")
        .execute(store.pool())
        .await
        .unwrap();
    let want: Vec<(i64, i64)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (i as i64, gauntlet_store::test_digest(b)))
        .collect();
    assert_eq!(store.test_digests(run).await.unwrap(), want);
    assert!(
        store
            .test_digests(uuid::Uuid::now_v7())
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}
