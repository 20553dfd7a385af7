//! The worker under real-world trouble: a cost cap, a cancel, its Postgres
//! and RabbitMQ connections cut mid-run, SIGTERM and SIGKILL of a real
//! `gauntlet serve worker` process. Each test breaks only what is its own:
//! the backends of its database, the connections of its vhost, its processes.

use std::{
    path::Path,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use gauntlet_bus::{AmqpBus, Bus, testing::TestVhost};
use gauntlet_cli::client;
use gauntlet_config::GauntletConfig;
use gauntlet_mockllm::{MockConfig, MockServer};
use gauntlet_proto::v1::{self, RunStatus, run_service_client::RunServiceClient};
use gauntlet_store::{PgStore, testing::TestDatabase};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_gauntlet");

/// `cases` tests against the mock, each passing; `cost` is the per-token
/// price the suite sets for the mock model.
pub(crate) fn suite(mock_url: &str, cases: usize, cost: f64) -> String {
    let mut y = format!(
        "prompts: ['Say {{{{ n }}}}']\n\
         providers:\n  - id: openai:chat:mock-model\n    config:\n      apiBaseUrl: {mock_url}\n      cost: {cost}\n      max_tokens: 16\n\
         tests:\n"
    );
    for i in 0..cases {
        y.push_str(&format!(
            "  - vars: {{n: {i}}}\n    assert: [{{type: icontains, value: 'say {i}'}}]\n"
        ));
    }
    y
}

pub(crate) async fn submit(
    runs: &mut RunServiceClient<gauntlet_cli::client::Conn>,
    suite: String,
    options: v1::RunOptions,
) -> v1::SubmitRunResponse {
    runs.submit_run(v1::SubmitRunRequest {
        suite,
        format: v1::SuiteFormat::Yaml as i32,
        options: Some(v1::RunOptions {
            no_cache: true,
            ..options
        }),
    })
    .await
    .expect("the suite is accepted")
    .into_inner()
}

pub(crate) async fn get_run(
    runs: &mut RunServiceClient<gauntlet_cli::client::Conn>,
    run_id: &str,
) -> v1::Run {
    runs.get_run(v1::GetRunRequest {
        run_id: run_id.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Polls the run until `done` holds for it.
pub(crate) async fn wait_for(
    runs: &mut RunServiceClient<gauntlet_cli::client::Conn>,
    run_id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&v1::Run) -> bool,
) -> v1::Run {
    let deadline = Instant::now() + within;
    loop {
        // The gateway may briefly lose its own connections in these tests.
        if let Ok(run) = runs
            .get_run(v1::GetRunRequest {
                run_id: run_id.into(),
            })
            .await
        {
            let run = run.into_inner();
            if done(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "{what} within {within:?}: {run:?}"
            );
        } else {
            assert!(Instant::now() < deadline, "{what} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn ended(run: &v1::Run) -> bool {
    !matches!(
        RunStatus::try_from(run.status),
        Ok(RunStatus::Queued | RunStatus::Running)
    )
}

/// Task indices of every stored result, in order.
pub(crate) async fn result_tasks(
    runs: &mut RunServiceClient<gauntlet_cli::client::Conn>,
    run_id: &str,
) -> Vec<u64> {
    client::result_pages(
        runs.clone(),
        run_id.into(),
        v1::ResultStatus::Unspecified,
        1000,
    )
    .map(|page| page.unwrap().results.into_iter().map(|r| r.task_index))
    .flat_map(futures::stream::iter)
    .collect()
    .await
}

/// The run is `completed` with exactly one result per task: no gaps, no
/// duplicates.
pub(crate) async fn assert_one_result_per_task(
    runs: &mut RunServiceClient<gauntlet_cli::client::Conn>,
    run_id: &str,
    total: u64,
) {
    let run = get_run(runs, run_id).await;
    assert_eq!(run.status, RunStatus::Completed as i32, "{run:?}");
    assert_eq!(run.completed_tasks, total, "{run:?}");
    assert_eq!(run.passed, total, "every task passes: {run:?}");
    let tasks = result_tasks(runs, run_id).await;
    assert_eq!(tasks, (0..total).collect::<Vec<_>>());
}

pub(crate) fn set_latency(mock: &MockServer, ms: u64) {
    mock.set_config(MockConfig {
        latency_ms: ms,
        ..MockConfig::default()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_reaching_its_cost_cap_stops_and_ends_cost_limited() {
    let cluster = Cluster::start().await;
    set_latency(&cluster.mock, 50);
    let mut runs = cluster.runs().await;
    // Each call is about 2 tokens in and 4 out, at $0.001 a token: ~$0.006.
    let cap = 0.1;
    let total = 300;
    let submitted = submit(
        &mut runs,
        suite(&cluster.mock.base_url(), total, 0.001),
        v1::RunOptions {
            max_concurrency: 4,
            max_cost_usd: cap,
            ..Default::default()
        },
    )
    .await;
    // The estimate prices the prompts and `max_tokens` of output per task.
    assert!(
        submitted.estimated_tokens_in >= total as u64,
        "{submitted:?}"
    );
    assert_eq!(submitted.estimated_tokens_out, 16 * total as u64);
    let expected = (submitted.estimated_tokens_in + submitted.estimated_tokens_out) as f64 * 0.001;
    assert!(
        (submitted.estimated_cost_usd - expected).abs() < 1e-9,
        "{submitted:?}"
    );
    assert!(submitted.unpriced_providers.is_empty());

    let run = wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(60),
        "the run ends",
        ended,
    )
    .await;
    assert_eq!(run.status, RunStatus::CostLimited as i32, "{run:?}");
    assert!(run.cost_usd >= cap, "{run:?}");
    // It stopped near the cap: calls in flight when it was reached (4 at a
    // time, each ~50 ms, for at most ~0.5 s) are all it may overshoot by.
    assert!(run.completed_tasks < total as u64 / 2, "{run:?}");
    assert!(run.cost_usd < cap + 0.5, "{run:?}");

    // No more calls once it has ended; the results it has are kept.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let calls = cluster.mock.stats().requests;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.mock.stats().requests, calls);
    assert!(calls < total as u64 / 2, "{calls} calls");
    let settled = get_run(&mut runs, &submitted.run_id).await;
    assert_eq!(settled.status, RunStatus::CostLimited as i32);
    let tasks = result_tasks(&mut runs, &submitted.run_id).await;
    assert_eq!(tasks.len() as u64, settled.completed_tasks);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_run_makes_no_calls_beyond_those_in_flight() {
    let cluster = Cluster::start().await;
    set_latency(&cluster.mock, 200);
    let mut runs = cluster.runs().await;
    let total = 200;
    let concurrency = 4;
    let submitted = submit(
        &mut runs,
        suite(&cluster.mock.base_url(), total, 0.0),
        v1::RunOptions {
            max_concurrency: concurrency,
            ..Default::default()
        },
    )
    .await;
    wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(30),
        "some results are in",
        |r| r.completed_tasks >= 8,
    )
    .await;

    let cancelled = runs
        .cancel_run(v1::CancelRunRequest {
            run_id: submitted.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let at_cancel = cluster.mock.stats().requests;
    assert_eq!(cancelled.status, RunStatus::Cancelled as i32);

    // Workers see the cancel within a status check (250 ms, on a status at
    // most 250 ms old); until then each of the run's `concurrency` slots may
    // start a call every 200 ms (four each, with room for a loaded CI
    // machine: 17 were once seen there). After that, nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let settled = cluster.mock.stats().requests;
    assert!(
        settled - at_cancel <= u64::from(concurrency) * 5,
        "{} calls started after the cancel",
        settled - at_cancel
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        cluster.mock.stats().requests,
        settled,
        "calls after settling"
    );

    // The run stays cancelled with the results it has, each counted once.
    let run = get_run(&mut runs, &submitted.run_id).await;
    assert_eq!(run.status, RunStatus::Cancelled as i32, "{run:?}");
    assert!(run.completed_tasks < total as u64, "{run:?}");
    let tasks = result_tasks(&mut runs, &submitted.run_id).await;
    assert_eq!(tasks.len() as u64, run.completed_tasks);
    assert!(tasks.len() as u64 <= settled, "a result without a call");
    cluster.stop().await;
}

/// The database name in a Postgres URL.
pub(crate) fn database_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap().split('?').next().unwrap()
}

/// Terminates every backend of `database` (this test's own), as a Postgres
/// restart would; returns how many there were.
pub(crate) async fn terminate_backends(database: &str) -> usize {
    let out = Command::new("psql")
        .args([gauntlet_store::testing::admin_url().as_str(), "-qAt", "-c"])
        .arg(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        ))
        .output()
        .await
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l == "t")
        .count()
}

/// Closes every client connection of `vhost` (this test's own), as a
/// broker restart would; returns how many there were. `close_connection`
/// takes the connection's Erlang pid, not its name.
async fn close_vhost_connections(vhost: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "vhost"])
        .output()
        .await
        .expect("rabbitmqctl runs");
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut closed = 0;
    for line in listing.lines() {
        let Some((pid, v)) = line.rsplit_once('\t') else {
            continue;
        };
        if v.trim() != vhost {
            continue;
        }
        let status = Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "test"])
            .status()
            .await
            .expect("rabbitmqctl runs");
        if status.success() {
            closed += 1;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_carries_on_after_postgres_drops_its_connections() {
    let cluster = Cluster::start().await;
    set_latency(&cluster.mock, 20);
    let mut runs = cluster.runs().await;
    let total = 400;
    let submitted = submit(
        &mut runs,
        suite(&cluster.mock.base_url(), total, 0.0),
        v1::RunOptions {
            max_concurrency: 8,
            ..Default::default()
        },
    )
    .await;
    let database = cluster.database_url();
    let database = database_name(&database);
    for progress in [40, 160] {
        wait_for(
            &mut runs,
            &submitted.run_id,
            Duration::from_secs(60),
            "the run progresses",
            |r| r.completed_tasks >= progress,
        )
        .await;
        assert!(terminate_backends(database).await > 0);
    }
    wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(120),
        "the run ends",
        ended,
    )
    .await;
    assert_one_result_per_task(&mut runs, &submitted.run_id, total as u64).await;
    cluster.stop().await;
}

/// Runs `sql` as the admin against the shared server (on this test's own
/// database only).
pub(crate) async fn admin_sql(sql: &str) {
    let out = Command::new("psql")
        .args([
            gauntlet_store::testing::admin_url().as_str(),
            "-qAt",
            "-c",
            sql,
        ])
        .output()
        .await
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_wait_out_a_database_outage_and_are_never_bought_twice() {
    let cluster = Cluster::start().await;
    set_latency(&cluster.mock, 20);
    let mut runs = cluster.runs().await;
    // About 7 s of calls at 8 in flight and 20 ms each: the outage starts
    // well before the end.
    let total: usize = 2800;
    let concurrency = 8;
    let submitted = submit(
        &mut runs,
        suite(&cluster.mock.base_url(), total, 0.0),
        v1::RunOptions {
            max_concurrency: concurrency,
            ..Default::default()
        },
    )
    .await;
    let database = cluster.database_url();
    let database = database_name(&database).to_owned();
    wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(60),
        "the run progresses",
        |r| r.completed_tasks >= 80,
    )
    .await;

    // The outage: this database takes no connections, and loses the ones
    // it had (the shared server stays up for every other test).
    admin_sql(&format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false"
    ))
    .await;
    terminate_backends(&database).await;
    // Within a write timeout (2 s) and a flush every worker sees its writes
    // fail and stops starting calls; the calls in flight finish and their
    // answers wait.
    // On a loaded machine (CI runs the 40,000-case tests alongside) that
    // takes longer: wait, up to 20 s, until no call has started for 1 s.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let mut early = cluster.mock.stats().requests;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cluster.mock.stats().requests;
        if now == early {
            break;
        }
        early = now;
    }
    assert_eq!(
        crate::cache::worker_metric(&cluster, "gauntlet_worker_store_unavailable").await,
        1.0,
        "the worker reports the store as unavailable"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = cluster.mock.stats().requests;
    admin_sql(&format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS true"
    ))
    .await;
    assert!(
        late <= early + u64::from(concurrency),
        "calls kept starting while nothing could be stored: {early} → {late}"
    );
    assert!(
        (late as usize) < total,
        "the outage came too late to test anything"
    );

    wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(120),
        "the run ends",
        ended,
    )
    .await;
    assert_one_result_per_task(&mut runs, &submitted.run_id, total as u64).await;
    assert_eq!(
        crate::cache::worker_metric(&cluster, "gauntlet_worker_store_unavailable").await,
        0.0
    );
    // Every answer bought was kept: one call per task.
    let calls = cluster.mock.stats().requests;
    assert_eq!(calls, total as u64, "answers paid for twice");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_reconnects_after_rabbitmq_closes_its_connections() {
    let cluster = Cluster::start().await;
    set_latency(&cluster.mock, 10);
    let mut runs = cluster.runs().await;
    // 48 batches of 25, three times the worker's prefetch: the run can only
    // finish if the worker consumes again after losing its connection.
    let total = 1200;
    let submitted = submit(
        &mut runs,
        suite(&cluster.mock.base_url(), total, 0.0),
        v1::RunOptions {
            max_concurrency: 16,
            ..Default::default()
        },
    )
    .await;
    for progress in [100, 600] {
        wait_for(
            &mut runs,
            &submitted.run_id,
            Duration::from_secs(60),
            "the run progresses",
            |r| r.completed_tasks >= progress,
        )
        .await;
        let closed = close_vhost_connections(&cluster.vhost_name()).await;
        assert!(closed > 0);
    }
    wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(120),
        "the run ends",
        ended,
    )
    .await;
    assert_one_result_per_task(&mut runs, &submitted.run_id, total as u64).await;
    cluster.stop().await;
}

/// A gateway in this process over the test's own database and vhost, for
/// workers that run as separate `gauntlet serve worker` processes.
struct Backplane {
    db: TestDatabase,
    vhost: TestVhost,
    mock: MockServer,
    gateway: String,
    shutdown: CancellationToken,
    logs: tempfile::TempDir,
}

impl Backplane {
    async fn start() -> Self {
        let db = TestDatabase::create().await;
        let vhost = TestVhost::create().await;
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let mut config = GauntletConfig::default();
        config.database = db.config.clone();
        config.amqp.url = vhost.url.clone();
        config.amqp.batch_size = 20;
        config.auth.enabled = false;
        let store = Arc::new(PgStore::connect(&config.database).await.unwrap());
        let bus: Arc<dyn Bus> = Arc::new(
            AmqpBus::connect(&config.amqp.url, config.amqp.delivery_limit)
                .await
                .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(gauntlet_gateway::run(
            config,
            gauntlet_gateway::Deps { store, bus },
            listener,
            shutdown.clone(),
        ));
        Self {
            db,
            vhost,
            mock,
            gateway,
            shutdown,
            logs: tempfile::tempdir().unwrap(),
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

    /// `gauntlet serve worker` against this backplane, its log in `name`.log.
    fn worker(&self, name: &str, grace_secs: u64) -> Child {
        self.worker_with(name, grace_secs, &[])
    }

    /// The same, with `env` set on top.
    fn worker_with(&self, name: &str, grace_secs: u64, env: &[(&str, &str)]) -> Child {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        Command::new(BIN)
            .args(["serve", "worker"])
            .env("GAUNTLET_DATABASE__URL", &self.db.config.url)
            .env("GAUNTLET_AMQP__URL", &self.vhost.url)
            .env(
                "GAUNTLET_REDIS__PREFIX",
                format!("gauntlet-test-{}", uuid::Uuid::new_v4().simple()),
            )
            .env("GAUNTLET_WORKER__LISTEN", "127.0.0.1:0")
            .env("GAUNTLET_WORKER__MAX_IN_FLIGHT", "8")
            .env(
                "GAUNTLET_WORKER__SHUTDOWN_GRACE_SECS",
                grace_secs.to_string(),
            )
            .env("OPENAI_BASE_URL", self.mock.base_url())
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start gauntlet serve worker")
    }

    fn log_path(&self, name: &str) -> std::path::PathBuf {
        self.logs.path().join(format!("{name}.log"))
    }

    fn log(&self, name: &str) -> String {
        read_log(&self.log_path(name))
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Backplane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Submits `total` tasks (mock at 100 ms, 8 calls at a time per worker, so
/// a worker needs ~5 s for them) and waits until `progress` are stored.
async fn half_done_run(plane: &Backplane, total: usize, progress: u64) -> v1::SubmitRunResponse {
    set_latency(&plane.mock, 100);
    let mut runs = plane.runs().await;
    let submitted = submit(
        &mut runs,
        suite(&plane.mock.base_url(), total, 0.0),
        v1::RunOptions::default(),
    )
    .await;
    wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(60),
        "the first worker makes progress",
        |r| r.completed_tasks >= progress,
    )
    .await;
    submitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_told_to_wait_are_handed_back_and_every_answer_is_bought_once() {
    // A third of the answers are 429s asking for a second's wait, and the
    // worker holds one batch at a time: the tasks told to wait go back
    // through RabbitMQ's delay queue while the worker takes the next batch.
    let plane = Backplane::start().await;
    plane.mock.set_config(MockConfig {
        latency_ms: 10,
        rate_429: 0.3,
        retry_after_secs: 1,
        ..MockConfig::default()
    });
    let control = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let control_addr = control.local_addr().unwrap().to_string();
    drop(control);
    let _worker = plane.worker_with(
        "only",
        5,
        &[
            ("GAUNTLET_WORKER__PREFETCH", "1"),
            ("GAUNTLET_WORKER__LISTEN", &control_addr),
        ],
    );
    let total = 200;
    let mut runs = plane.runs().await;
    let submitted = submit(
        &mut runs,
        suite(&plane.mock.base_url(), total, 0.0),
        v1::RunOptions::default(),
    )
    .await;
    wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(120),
        "the run ends",
        ended,
    )
    .await;
    assert_one_result_per_task(&mut runs, &submitted.run_id, total as u64).await;
    let stats = plane.mock.stats();
    assert_eq!(stats.ok, total as u64, "each answer bought once: {stats:?}");
    assert!(stats.faults_429 > 20, "{stats:?}");

    let deferred =
        crate::cache::control_metric(&control_addr, "gauntlet_tasks_deferred_total").await;
    assert!(
        deferred >= stats.faults_429 as f64 * 0.9,
        "tasks handed back: {deferred}, 429s: {}",
        stats.faults_429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_a_worker_within_its_grace_and_another_finishes_the_run() {
    let plane = Backplane::start().await;
    let grace = 3;
    let mut first = plane.worker("first", grace);
    let total = 400;
    let submitted = half_done_run(&plane, total, 60).await;

    let pid = first.id().expect("worker is running");
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(grace + 5), first.wait())
        .await
        .unwrap_or_else(|_| panic!("worker still running:\n{}", plane.log("first")))
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}\n{}", plane.log("first"));
    // The grace period plus a moment to close pools and flush telemetry.
    assert!(
        took < Duration::from_secs(grace) + Duration::from_millis(1500),
        "took {took:?}\n{}",
        plane.log("first")
    );
    let mut runs = plane.runs().await;
    let stopped = get_run(&mut runs, &submitted.run_id).await;
    assert!(stopped.completed_tasks < total as u64, "{stopped:?}");

    let _second = plane.worker("second", grace);
    wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(60),
        "the second worker finishes the run",
        ended,
    )
    .await;
    assert_one_result_per_task(&mut runs, &submitted.run_id, total as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_run_leaves_a_run_another_worker_completes() {
    let plane = Backplane::start().await;
    let mut first = plane.worker("first", 30);
    let total = 400;
    let submitted = half_done_run(&plane, total, 60).await;

    first.kill().await.expect("SIGKILL the worker");
    let mut runs = plane.runs().await;
    let killed = get_run(&mut runs, &submitted.run_id).await;
    assert!(killed.completed_tasks < total as u64, "{killed:?}");

    let _second = plane.worker("second", 30);
    wait_for(
        &mut runs,
        &submitted.run_id,
        Duration::from_secs(60),
        "the second worker finishes the run",
        ended,
    )
    .await;
    assert_one_result_per_task(&mut runs, &submitted.run_id, total as u64).await;
}

#[test]
fn database_names_come_from_urls() {
    assert_eq!(
        database_name("postgres://postgres@127.0.0.1:5432/gauntlet_test_1?sslmode=disable"),
        "gauntlet_test_1"
    );
}
