//! The reconciler, one pass at a time, with a stand-in worker.

use std::sync::Arc;

use futures::StreamExt;
use gauntlet_bus::{Message, QueueName};
use gauntlet_config::ReconcileConfig;
use gauntlet_gateway::reconcile::Reconciler;
use gauntlet_proto::internal::v1::RunEvent;
use gauntlet_store::RunStatus;
use gauntlet_telemetry::metrics::Registry;
use prost::Message as _;

use crate::fixture::{Env, Fate, stored};

const BATCH: u32 = 10;

/// A reconciler for which everything quiet is stale and every dead letter
/// ripe at once.
fn reconciler(env: &Env, max_redrives: u32) -> Reconciler {
    reconciler_with(env, 0, max_redrives)
}

fn reconciler_with(env: &Env, stale_after_secs: u64, max_redrives: u32) -> Reconciler {
    Reconciler::new(
        env.deps(),
        ReconcileConfig {
            enabled: true,
            interval_secs: 1,
            stale_after_secs,
            max_redrives,
        },
        BATCH,
        Arc::new(Registry::new("gateway")),
    )
}

#[tokio::test]
async fn dead_batches_of_a_stuck_run_are_redriven_and_it_completes() {
    let env = Env::new().await;
    let run = env.submit(30, 10).await;
    // The first batch is stored, the other two are given up on.
    env.work(3, |b| {
        if b.first_task == 0 {
            Fate::Store
        } else {
            Fate::DeadLetter
        }
    })
    .await;
    assert_eq!(env.dead().await, 2);

    let report = reconciler(&env, 3).pass().await.unwrap();
    assert_eq!(report.redriven_batches, 2, "{report:?}");
    assert_eq!(report.republished_tasks, 0, "{report:?}");
    assert!(report.failed_runs.is_empty());
    assert_eq!(env.dead().await, 0);
    assert_eq!(env.run(run.id).await.redrives, 1);

    let taken = env.work(2, |_| Fate::Store).await;
    let mut ranges: Vec<_> = taken.iter().map(|t| t.range()).collect();
    ranges.sort();
    assert_eq!(ranges, [(10, 10), (20, 10)]);
    for t in &taken {
        // A fresh delivery count, marked as tried before.
        assert_eq!(t.delivery_count, 0);
        assert!(t.redelivered);
        assert_eq!(t.redrives.as_deref(), Some("1"));
    }
    let done = env.run(run.id).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.completed_tasks, 30);
    assert_eq!(
        stored(&*env.store, run.id).await,
        (0..30).collect::<Vec<_>>()
    );
    // Nothing left to do.
    assert!(reconciler(&env, 3).pass().await.unwrap().is_empty());
    assert_eq!(env.ready().await, 0);
}

#[tokio::test]
async fn lost_tasks_are_published_again_and_only_those() {
    let env = Env::new().await;
    let run = env.submit(30, 10).await;
    // A bug: one batch stores half its tasks, another none, and both are acked.
    env.work(3, |b| match b.first_task {
        0 => Fate::Store,
        10 => Fate::StoreOnly(15..20),
        _ => Fate::Drop,
    })
    .await;
    assert_eq!(env.run(run.id).await.status, RunStatus::Running);

    let report = reconciler(&env, 3).pass().await.unwrap();
    assert_eq!(report.republished_tasks, 15, "{report:?}");
    assert_eq!(report.redriven_batches, 0);
    let taken = env.work(2, |_| Fate::Store).await;
    let ranges: Vec<_> = taken.iter().map(|t| t.range()).collect();
    assert_eq!(ranges, [(10, 5), (20, 10)]);
    assert!(taken.iter().all(|t| t.redelivered));
    let done = env.run(run.id).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(
        stored(&*env.store, run.id).await,
        (0..30).collect::<Vec<_>>()
    );
    assert_eq!(env.ready().await, 0);
}

#[tokio::test]
async fn a_run_whose_redrives_are_spent_fails_with_the_reason() {
    let env = Env::new().await;
    let run = env.submit(30, 10).await;
    let mut events = env
        .bus
        .subscribe(&format!("run.{}.*", run.id))
        .await
        .unwrap();
    env.work(3, |b| {
        if b.first_task == 0 {
            Fate::Store
        } else {
            Fate::DeadLetter
        }
    })
    .await;
    let reconciler = reconciler(&env, 1);
    assert_eq!(reconciler.pass().await.unwrap().redriven_batches, 2);
    // Poison: they die again.
    env.work(2, |_| Fate::DeadLetter).await;

    let report = reconciler.pass().await.unwrap();
    assert_eq!(report.failed_runs, [run.id], "{report:?}");
    assert_eq!(report.redriven_batches, 0);
    // Its dead batches are of no use to anyone now.
    assert_eq!(report.discarded_batches, 2);
    assert_eq!(env.dead().await, 0);
    let failed = env.run(run.id).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(
        failed.status_reason,
        "20 of 30 tasks never completed: 2 batches were dead-lettered (rejected), \
         after 1 re-drive (reconcile.max_redrives = 1)"
    );
    // Watchers hear that it ended, and why.
    let finished = loop {
        let event = events.next().await.unwrap();
        if event.routing_key.ends_with(".finished") {
            break RunEvent::decode(event.payload.as_slice()).unwrap();
        }
    };
    let progress = finished.progress.unwrap();
    assert_eq!(progress.status_reason, failed.status_reason);
    assert!(reconciler.pass().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_lost_run_fails_when_its_redrives_are_spent() {
    let env = Env::new().await;
    let run = env.submit(20, 10).await;
    env.work(2, |_| Fate::Drop).await;
    let report = reconciler(&env, 0).pass().await.unwrap();
    assert_eq!(report.failed_runs, [run.id]);
    let failed = env.run(run.id).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(
        failed.status_reason.starts_with(
            "20 of 20 tasks never completed: none of their batches was queued, in flight or \
             dead-lettered for 0 s"
        ),
        "{}",
        failed.status_reason
    );
}

#[tokio::test]
async fn a_run_whose_batches_may_still_be_queued_is_left_alone() {
    let env = Env::new().await;
    let lost = env.submit(10, 10).await;
    env.work(1, |_| Fate::Drop).await;
    // Another run's batch waits in the queue: the lost one's might too.
    let waiting = env.submit(10, 10).await;
    assert_eq!(env.ready().await, 1);

    let report = reconciler(&env, 0).pass().await.unwrap();
    assert!(report.is_empty(), "{report:?}");
    assert_eq!(env.run(lost.id).await.status, RunStatus::Queued);
    assert_eq!(env.run(waiting.id).await.status, RunStatus::Queued);

    // Once the queue is empty, the lost run is found out.
    env.work(1, |_| Fate::Store).await;
    let report = reconciler(&env, 0).pass().await.unwrap();
    assert_eq!(report.failed_runs, [lost.id]);
    assert_eq!(env.run(waiting.id).await.status, RunStatus::Completed);
}

#[tokio::test]
async fn a_busy_run_and_a_fresh_dead_letter_are_left_alone() {
    let env = Env::new().await;
    let run = env.submit(20, 10).await;
    env.work(2, |b| {
        if b.first_task == 0 {
            Fate::Drop
        } else {
            Fate::DeadLetter
        }
    })
    .await;
    // Active just now, its dead batch just died: an outage may still be on.
    let report = reconciler_with(&env, 3600, 0).pass().await.unwrap();
    assert!(report.is_empty(), "{report:?}");
    let untouched = env.run(run.id).await;
    assert_eq!(untouched.status, RunStatus::Queued);
    assert_eq!(untouched.redrives, 0);
    assert_eq!(env.dead().await, 1);
}

#[tokio::test]
async fn dead_batches_of_ended_runs_are_discarded_and_unreadable_ones_kept() {
    let env = Env::new().await;
    let run = env.submit(20, 10).await;
    env.work(2, |_| Fate::DeadLetter).await;
    env.store.cancel_run(run.id).await.unwrap();
    // Something no worker can read.
    env.bus
        .publish(
            QueueName::Tasks,
            vec![Message {
                payload: b"garbage".to_vec(),
                headers: vec![],
            }],
        )
        .await
        .unwrap();
    let mut stream = env.bus.consume(QueueName::Tasks, 1).await.unwrap();
    stream
        .next()
        .await
        .unwrap()
        .unwrap()
        .dead_letter()
        .await
        .unwrap();
    drop(stream);
    assert_eq!(env.dead().await, 3);

    let report = reconciler(&env, 3).pass().await.unwrap();
    assert_eq!(report.discarded_batches, 2, "{report:?}");
    assert_eq!(report.redriven_batches, 0);
    let left = env.bus.dead_letters(QueueName::Tasks, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].payload, b"garbage");
    assert_eq!(env.run(run.id).await.status, RunStatus::Cancelled);
}

#[tokio::test]
async fn two_reconcilers_redrive_a_stuck_run_once() {
    let env = Env::new().await;
    let run = env.submit(30, 10).await;
    env.work(3, |_| Fate::DeadLetter).await;
    // Dead and quiet for a second: ripe for both.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (one, two) = (reconciler_with(&env, 1, 3), reconciler_with(&env, 1, 3));
    let (a, b) = tokio::join!(one.pass(), two.pass());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.redriven_batches + b.redriven_batches, 3, "{a:?} {b:?}");
    assert_eq!(a.republished_tasks + b.republished_tasks, 0);
    assert_eq!(env.run(run.id).await.redrives, 1);
    assert_eq!(env.ready().await, 3);
}

#[tokio::test]
async fn the_gateway_runs_the_reconciler_on_its_interval() {
    let env = Env::new().await;
    let run = env.submit(20, 10).await;
    env.work(2, |_| Fate::DeadLetter).await;
    let config = gauntlet_config::GauntletConfig {
        reconcile: ReconcileConfig {
            enabled: true,
            interval_secs: 1,
            stale_after_secs: 0,
            max_redrives: 0,
        },
        auth: gauntlet_config::AuthConfig {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gateway = tokio::spawn(gauntlet_gateway::run(
        config,
        env.deps(),
        listener,
        shutdown.clone(),
    ));
    // As `gauntlet up` and `gauntlet run` start it: nothing to call by hand.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env.run(run.id).await.status != RunStatus::Failed {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            env.run(run.id).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(env.dead().await, 0);
    shutdown.cancel();
    gateway.await.unwrap().unwrap();
}

/// A run created at the start of an upload that its gateway never
/// finished (it died half way), as the store has it.
async fn uploading_run(env: &Env) -> gauntlet_store::RunRecord {
    let run = env
        .store
        .create_run(gauntlet_store::NewRun {
            trace_id: String::new(),
            id: uuid::Uuid::now_v7(),
            project_id: "default".into(),
            description: "cut short".into(),
            label: String::new(),
            source: String::new(),
            compiled: "{}".into(),
            options: serde_json::json!({"repeat": 1}),
            total_tasks: gauntlet_store::UPLOADING_TOTAL,
        })
        .await
        .unwrap();
    env.store
        .put_tests(run.id, 0, &["{}".to_owned(), "{}".to_owned()])
        .await
        .unwrap();
    run
}

#[tokio::test]
async fn a_run_whose_upload_never_finished_fails_once_quiet_and_orphaned_tests_are_swept() {
    let env = Env::new().await;
    let run = uploading_run(&env).await;
    // Tests of uploads that never became a run: one two hours old (its id
    // is a UUIDv7 of then), one just begun.
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    let since = then.duration_since(std::time::UNIX_EPOCH).unwrap();
    let old = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        since.as_secs(),
        since.subsec_nanos(),
    ));
    let fresh = uuid::Uuid::now_v7();
    for id in [old, fresh] {
        env.store
            .put_tests(id, 0, &["{}".to_owned()])
            .await
            .unwrap();
    }

    // Still within the stale time: an upload may be under way.
    let patient = reconciler_with(&env, 3600, 3).pass().await.unwrap();
    assert!(patient.failed_runs.is_empty(), "{patient:?}");
    assert!(env.run(run.id).await.is_uploading());
    assert_eq!(patient.swept_tests, 1, "only the old orphan: {patient:?}");
    assert!(env.store.get_tests(old, 0, 9).await.unwrap().is_empty());
    assert_eq!(env.store.get_tests(fresh, 0, 9).await.unwrap().len(), 1);

    let report = reconciler(&env, 3).pass().await.unwrap();
    assert_eq!(report.failed_runs, [run.id], "{report:?}");
    let failed = env.run(run.id).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(
        failed.status_reason,
        "the upload of its suite never finished"
    );
    // The failed run's tests are its own, not an orphan's.
    assert_eq!(env.store.get_tests(run.id, 0, 9).await.unwrap().len(), 2);
    assert!(
        reconciler(&env, 3)
            .pass()
            .await
            .unwrap()
            .failed_runs
            .is_empty()
    );
}
