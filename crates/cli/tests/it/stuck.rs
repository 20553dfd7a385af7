//! Nothing stuck: runs whose task batches were dead-lettered, against the
//! real Postgres and RabbitMQ. The reconciler re-drives them after a
//! database outage and the run completes with one result per task; it fails
//! a run whose work keeps dying, with the reason; and `gauntlet dlq list` /
//! `gauntlet dlq redrive` show and move the dead batches as they say.

use std::{
    process::Output,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use gauntlet_bus::{AmqpBus, Bus, QueueName, testing::TestVhost};
use gauntlet_cache::Cache;
use gauntlet_config::GauntletConfig;
use gauntlet_mockllm::{MockConfig, MockServer};
use gauntlet_proto::v1::{self, RunStatus, run_service_client::RunServiceClient};
use gauntlet_providers::ProviderFactory;
use gauntlet_store::{PgStore, Store, testing::TestDatabase};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::{
    cli::{gauntlet_env, text},
    cluster::Cluster,
    resilience::{
        admin_sql, assert_one_result_per_task, database_name, ended, get_run, set_latency, submit,
        suite, terminate_backends, wait_for,
    },
};

/// A reconciler that acts within seconds: a run is stuck after 2 s without
/// a sign of life, and a dead batch ripe after 2 s dead.
fn quick_reconciler(config: &mut GauntletConfig, max_redrives: u32) {
    config.reconcile.interval_secs = 1;
    config.reconcile.stale_after_secs = 2;
    config.reconcile.max_redrives = max_redrives;
    // Workers give up on a batch they cannot write within a second.
    config.worker.store_retry_secs = 1;
    config.validate().unwrap();
}

/// `rabbitmqctl list_queues` of `vhost`: (ready, unacknowledged) of `queue`.
async fn queue_counts(vhost: &str, queue: &str) -> Option<(u64, u64)> {
    let out = Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .output()
        .await
        .expect("rabbitmqctl runs");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    listing.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [name, ready, unacked] if *name == queue => {
                Some((ready.parse().ok()?, unacked.parse().ok()?))
            }
            _ => None,
        }
    })
}

/// A metric of the gateway's own (its Control API).
async fn gateway_metric(cluster: &Cluster, name: &str) -> f64 {
    crate::cache::control_metric(cluster.stack.gateway, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_dead_lettered_through_a_database_outage_completes_once_redriven() {
    let cluster = Cluster::start_with(|config| {
        quick_reconciler(config, 3);
        // A batch is dead-lettered on its second failed delivery.
        config.amqp.delivery_limit = 1;
    })
    .await;
    set_latency(&cluster.mock, 50);
    let mut runs = cluster.runs().await;
    let total = 300;
    let submitted = submit(
        &mut runs,
        suite(&cluster.mock.base_url(), total, 0.0),
        v1::RunOptions {
            max_concurrency: 4,
            ..Default::default()
        },
    )
    .await;
    wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(60),
        "the run progresses",
        |r| r.completed_tasks >= 50,
    )
    .await;

    // The outage: this database takes no connections and loses the ones it
    // had, until every batch the worker still had is dead-lettered and
    // nothing of the run is queued or in flight any more.
    let database = cluster.database_url();
    let database = database_name(&database).to_owned();
    admin_sql(&format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false"
    ))
    .await;
    terminate_backends(&database).await;
    let vhost = cluster.vhost_name();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let tasks = queue_counts(&vhost, QueueName::Tasks.as_str()).await;
        let dead = cluster
            .bus
            .dead_letter_stats(QueueName::Tasks)
            .await
            .unwrap()
            .messages;
        if tasks == Some((0, 0)) && dead > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "batches still queued or held: {tasks:?}, {dead} dead"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    admin_sql(&format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS true"
    ))
    .await;
    let stuck = get_run(&mut runs, &submitted.run_id).await;
    assert!(stuck.completed_tasks < total as u64, "{stuck:?}");

    // Nothing is left to work on but the dead batches: only the reconciler
    // can finish the run.
    let run = wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(60),
        "the reconciler re-drives the run to its end",
        ended,
    )
    .await;
    assert_eq!(run.status, RunStatus::Completed as i32, "{run:?}");
    assert_one_result_per_task(&mut runs, &submitted.run_id, total as u64).await;
    assert!(gateway_metric(&cluster, "gauntlet_reconciler_batches_redriven_total").await >= 1.0);
    assert_eq!(
        cluster
            .bus
            .dead_letter_stats(QueueName::Tasks)
            .await
            .unwrap()
            .messages,
        0
    );
    cluster.stop().await;
}

/// A gateway (and, when asked, a worker) in this process over the test's own
/// database and vhost, for tests that decide when work is done.
struct Plane {
    db: TestDatabase,
    _vhost: TestVhost,
    mock: MockServer,
    config: GauntletConfig,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    gateway: String,
    shutdown: CancellationToken,
}

impl Plane {
    async fn start(tweak: impl FnOnce(&mut GauntletConfig)) -> Self {
        let db = TestDatabase::create().await;
        let vhost = TestVhost::create().await;
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let mut config = GauntletConfig::default();
        config.database = db.config.clone();
        config.amqp.url = vhost.url.clone();
        config.amqp.batch_size = 10;
        config.redis.url = String::new();
        config.worker.listen = "127.0.0.1:0".into();
        config.auth.enabled = false;
        tweak(&mut config);
        let store: Arc<dyn Store> = Arc::new(PgStore::connect(&config.database).await.unwrap());
        let bus: Arc<dyn Bus> = Arc::new(
            AmqpBus::connect(&config.amqp.url, config.amqp.delivery_limit)
                .await
                .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(gauntlet_gateway::run(
            config.clone(),
            gauntlet_gateway::Deps {
                store: store.clone(),
                bus: bus.clone(),
            },
            listener,
            shutdown.clone(),
        ));
        Self {
            db,
            _vhost: vhost,
            mock,
            config,
            store,
            bus,
            gateway,
            shutdown,
        }
    }

    async fn runs(&self) -> RunServiceClient<gauntlet_cli::client::Conn> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.gateway.clone()).unwrap();
        for _ in 0..50 {
            if let Ok(ch) = endpoint.connect().await {
                return RunServiceClient::new(gauntlet_cli::client::conn(ch));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gateway did not come up");
    }

    /// A worker in this process, stopped with the plane.
    async fn start_worker(&self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let env = std::collections::HashMap::from([(
            "OPENAI_BASE_URL".to_string(),
            self.mock.base_url(),
        )]);
        tokio::spawn(gauntlet_worker::run(
            self.config.clone(),
            gauntlet_worker::Deps {
                store: self.store.clone(),
                bus: self.bus.clone(),
                providers: Arc::new(ProviderFactory::new(env)),
                cache: Cache::local(1 << 24),
            },
            listener,
            self.shutdown.clone(),
        ));
    }

    async fn dead(&self) -> u64 {
        self.bus
            .dead_letter_stats(QueueName::Tasks)
            .await
            .unwrap()
            .messages
    }

    async fn eventually_dead(&self, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.dead().await != expected {
            assert!(
                Instant::now() < deadline,
                "{} dead letters, not {expected}",
                self.dead().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `sql` on this plane's own database.
    async fn sql(&self, sql: &str) {
        let out = Command::new("psql")
            .args([self.db.config.url.as_str(), "-qAt", "-c", sql])
            .output()
            .await
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `gauntlet ARGS --server <this gateway>`.
    async fn gauntlet(&self, args: &[&str]) -> Output {
        let dir = tempfile::tempdir().unwrap();
        let mut all = args.to_vec();
        all.extend(["--server", &self.gateway]);
        gauntlet_env(&all, dir.path(), &[]).await
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_whose_batches_keep_dying_ends_failed_with_the_reason() {
    let plane = Plane::start(|config| quick_reconciler(config, 1)).await;
    let mut runs = plane.runs().await;
    let submitted = submit(
        &mut runs,
        suite(&plane.mock.base_url(), 20, 0.0),
        v1::RunOptions::default(),
    )
    .await;
    // Before any worker sees it, its stored suite goes bad: every worker
    // that takes one of its batches gives up on it.
    plane
        .sql(&format!(
            "UPDATE suites SET compiled = '{{\"prompts\": 5}}'::jsonb \
             WHERE id = (SELECT suite_id FROM runs WHERE id = '{}')",
            submitted.run_id
        ))
        .await;
    plane.start_worker().await;

    let run = wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(60),
        "the reconciler gives the run up",
        ended,
    )
    .await;
    assert_eq!(run.status, RunStatus::Failed as i32, "{run:?}");
    assert_eq!(
        run.status_reason,
        "20 of 20 tasks never completed: 2 batches were dead-lettered (rejected), \
         after 1 re-drive (reconcile.max_redrives = 1)"
    );
    // Its dead batches went with it.
    plane.eventually_dead(0).await;

    // What the user sees.
    let watched = plane.gauntlet(&["watch", &submitted.run_id]).await;
    let (stdout, stderr) = text(&watched);
    assert!(watched.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("failed 0/20 done"), "{stdout}");
    assert!(stdout.contains(&run.status_reason), "{stdout}");
    let listed = plane.gauntlet(&["runs"]).await;
    let (stdout, _) = text(&listed);
    assert!(stdout.contains(&run.status_reason), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dlq_list_and_redrive_show_and_move_dead_batches() {
    // No reconciler: the dead batches stay until the operator moves them.
    let plane = Plane::start(|config| {
        config.reconcile.enabled = false;
        config.amqp.delivery_limit = 1;
    })
    .await;
    let mut runs = plane.runs().await;
    let total = 25;
    let submitted = submit(
        &mut runs,
        suite(&plane.mock.base_url(), total, 0.0),
        v1::RunOptions::default(),
    )
    .await;
    let run_id = submitted.run_id.clone();

    // Before a worker runs: a consumer gives up on the first batch and
    // hands the second back until it is past the delivery limit.
    let mut stream = plane.bus.consume(QueueName::Tasks, 1).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    first.dead_letter().await.unwrap();
    for _ in 0..2 {
        let second = stream.next().await.unwrap().unwrap();
        second.requeue().await.unwrap();
    }
    drop(stream);
    plane.eventually_dead(2).await;

    let listed = plane.gauntlet(&["dlq", "list"]).await;
    let (stdout, stderr) = text(&listed);
    assert!(listed.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("run "), "{stdout}");
    for column in [
        "tasks",
        "deliveries",
        "reason",
        "age",
        "redrives",
        "run status",
    ] {
        assert!(lines[0].contains(column), "{column}: {stdout}");
    }
    // run, tasks, (count), deliveries, reason, age, redrives, run status
    let row = |line: &str| -> Vec<String> {
        let mut fields: Vec<String> = line.split_whitespace().map(String::from).collect();
        let age = fields.remove(5);
        assert!(
            age.ends_with('s') && age.len() <= 3,
            "a few seconds old: {line}"
        );
        fields
    };
    // The broker does not say how often a rejected batch was delivered.
    assert_eq!(
        row(lines[1]),
        [&run_id, "0-9", "(10)", "?", "rejected", "0", "queued"],
        "{stdout}"
    );
    assert_eq!(
        row(lines[2]),
        [
            &run_id,
            "10-19",
            "(10)",
            "2",
            "delivery_limit",
            "0",
            "queued"
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("2 dead-lettered batches (20 tasks)"),
        "{stdout}"
    );

    let unknown = uuid::Uuid::now_v7().to_string();
    let none = plane.gauntlet(&["dlq", "list", "--run", &unknown]).await;
    let (stdout, _) = text(&none);
    assert_eq!(
        stdout.trim(),
        format!("no dead-lettered task batches of run {unknown}")
    );

    // Bad requests say what is wrong, and move nothing.
    let neither = plane.gauntlet(&["dlq", "redrive"]).await;
    let (_, stderr) = text(&neither);
    assert_eq!(neither.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--run") && stderr.contains("--all"),
        "{stderr}"
    );
    let bad = plane.gauntlet(&["dlq", "redrive", "--run", "nope"]).await;
    let (_, stderr) = text(&bad);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("run_id: `nope` is not a valid id"),
        "{stderr}"
    );
    // Still both dead: `dlq list` gave them back when its sweep channel
    // closed, which the queue's count shows a moment later, not at once.
    plane.eventually_dead(2).await;

    let moved = plane.gauntlet(&["dlq", "redrive", "--run", &run_id]).await;
    let (stdout, stderr) = text(&moved);
    assert!(moved.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("re-drove 2 batches (20 tasks) back onto the task queue: run {run_id}")
    );
    plane.eventually_dead(0).await;
    let empty = plane.gauntlet(&["dlq", "list"]).await;
    assert_eq!(text(&empty).0.trim(), "no dead-lettered task batches");

    // A worker finishes the run from what was re-driven and what was
    // never touched.
    plane.start_worker().await;
    wait_for(
        &mut runs,
        &run_id,
        Duration::from_secs(60),
        "the run ends",
        ended,
    )
    .await;
    assert_one_result_per_task(&mut runs, &run_id, total as u64).await;
}
