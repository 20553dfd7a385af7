//! Runs submitted together progress together: the gateway puts each run's
//! share of its dispatch window on the queue and tops it up as results
//! land, so a run submitted after a long one is not left waiting for it.

use std::sync::Arc;

use gauntlet_config::{GauntletConfig, ReconcileConfig};
use gauntlet_gateway::reconcile::Reconciler;
use gauntlet_proto::v1::{self, run_service_client::RunServiceClient};
use gauntlet_store::RunStatus;
use gauntlet_telemetry::metrics::Registry;
use tonic::transport::Channel;

use crate::fixture::{Env, Fate, serve_with, stored};

/// Tasks per batch and the window the gateway keeps on the queue.
const BATCH: u32 = 10;
const WINDOW: u64 = 100;

async fn submit(runs: &mut RunServiceClient<Channel>, tests: usize) -> String {
    let mut suite = String::from("prompts: ['{{ n }}']\nproviders: [echo]\ntests:\n");
    for n in 0..tests {
        suite.push_str(&format!("  - vars: {{n: {n}}}\n"));
    }
    runs.submit_run(v1::SubmitRunRequest {
        suite,
        format: v1::SuiteFormat::Yaml as i32,
        options: None,
    })
    .await
    .expect("the suite is accepted")
    .into_inner()
    .run_id
}

/// Batches of [`BATCH`], a window of [`WINDOW`].
fn paced(config: &mut GauntletConfig) {
    config.amqp.batch_size = BATCH;
    config.gateway.dispatch_window_tasks = WINDOW;
    // One consumer holding one batch: the floor is the setting.
    config.worker.prefetch = 1;
}

#[tokio::test]
async fn a_run_submitted_behind_a_long_one_is_worked_on_at_once_and_both_complete() {
    let env = Env::new().await;
    let (channel, shutdown) = serve_with(&env, paced).await;
    let _stop = shutdown.drop_guard();
    let mut runs = RunServiceClient::new(channel);

    let long = submit(&mut runs, 1000).await;
    // Only its window went out, not its 100 batches.
    assert_eq!(env.ready().await, WINDOW / u64::from(BATCH));
    // The second run's share (half the window) covers all of it: it goes
    // out whole at once.
    let short = submit(&mut runs, 50).await;
    assert_eq!(env.ready().await, 15);

    // A worker taking batches one at a time, in queue order.
    let taken = env.work(105, |_| Fate::Store).await;
    let order: Vec<&str> = taken.iter().map(|t| t.batch.run_id.as_str()).collect();
    let last_short = order.iter().rposition(|id| *id == short).unwrap();
    // The short run was done after the long run's first window, not after
    // all of it (first come, first served would put it at 104).
    assert_eq!(last_short, 14, "{order:?}");
    assert_eq!(order.iter().filter(|id| **id == long).count(), 100);

    for (id, total) in [(&long, 1000), (&short, 50)] {
        let run = env.run(id.parse().unwrap()).await;
        assert_eq!(run.status, RunStatus::Completed, "{run:?}");
        assert_eq!(run.completed_tasks, total);
        // Every task went out exactly once.
        assert_eq!(
            stored(env.store.as_ref(), run.id).await,
            (0..total).collect::<Vec<_>>()
        );
    }
    // Nothing more is queued for either.
    assert_eq!(env.ready().await, 0);
}

#[tokio::test]
async fn a_run_whose_gateway_stopped_feeding_it_is_finished_by_the_reconciler() {
    let env = Env::new().await;
    let (channel, shutdown) = serve_with(&env, paced).await;
    let id: uuid::Uuid = submit(&mut RunServiceClient::new(channel), 1000)
        .await
        .parse()
        .unwrap();
    // The gateway stops with 900 of the run's tasks never published.
    shutdown.cancel();
    env.work(10, |_| Fate::Store).await;
    assert_eq!(env.ready().await, 0);
    let run = env.run(id).await;
    assert_eq!((run.status, run.completed_tasks), (RunStatus::Running, 100));

    // Quiet, with nothing queued: any gateway's reconciler publishes the
    // rest (here everything quiet counts as stale at once).
    let reconciler = Reconciler::new(
        env.deps(),
        ReconcileConfig {
            enabled: true,
            interval_secs: 1,
            stale_after_secs: 0,
            max_redrives: 3,
        },
        BATCH,
        Arc::new(Registry::new("gateway")),
    );
    let report = reconciler.pass().await.unwrap();
    assert_eq!(report.republished_tasks, 900, "{report:?}");
    env.work(90, |_| Fate::Store).await;
    let run = env.run(id).await;
    assert_eq!(
        (run.status, run.completed_tasks),
        (RunStatus::Completed, 1000)
    );
    assert_eq!(
        stored(env.store.as_ref(), id).await,
        (0..1000).collect::<Vec<_>>()
    );
}
