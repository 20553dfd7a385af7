//! The fault suite: a run of N tasks through the real services, and one
//! fault struck when a share of it is stored — workers SIGKILLed, the
//! broker stopped or killed, Postgres restarted or down for minutes, Redis
//! lost, the model answering only 429s, 500s or hanging. Each scenario
//! then checks what a user would: the run ends `completed` with one result
//! per task, its counters equal its rows, nothing is dead-lettered or left
//! queued, and the provider was called again for at most the calls that
//! were in flight (started, not yet stored) when the fault struck.
//!
//! A scenario that stops a service starts a private instance of it
//! ([`crate::instances`]); the others use the shared local services, in a
//! database, virtual host and key prefix of their own.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use gauntlet_bus::testing::TestVhost;
use gauntlet_mockllm::{MockConfig, MockServer, MockStats};
use gauntlet_proto::v1;
use gauntlet_store::testing::TestDatabase;
use tokio::time::Instant;

use crate::{
    instances::{Kind, PrivatePostgres, PrivateRabbitMq, PrivateRedis},
    stack::{Backends, Stack, StackOptions},
    suite::BenchSuite,
    table::Table,
    verify::{self, Check, Rows},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Two workers; each is SIGKILLed once mid-run and started again.
    WorkerKill,
    /// `rabbitmqctl stop` of a private broker node, then start it again.
    BrokerRestart,
    /// SIGKILL of a private broker node, then start it again.
    BrokerKill,
    /// `pg_ctl stop -m fast` of a private Postgres cluster, then start.
    PostgresRestart,
    /// A private Postgres cluster stopped for `--outage` (5 minutes by default).
    PostgresOutage,
    /// SIGKILL of a private Redis (response cache and rate limits), started
    /// again empty a few seconds later.
    RedisLoss,
    /// The model answers every call 429 (Retry-After 1 s) for `--storm`.
    Storm429,
    /// The model answers every call 500 for `--storm`.
    Storm500,
    /// The model hangs every call past the provider's timeout for `--storm`.
    StormTimeout,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::WorkerKill,
        Scenario::BrokerRestart,
        Scenario::BrokerKill,
        Scenario::PostgresRestart,
        Scenario::PostgresOutage,
        Scenario::RedisLoss,
        Scenario::Storm429,
        Scenario::Storm500,
        Scenario::StormTimeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::WorkerKill => "worker-kill",
            Scenario::BrokerRestart => "broker-restart",
            Scenario::BrokerKill => "broker-kill",
            Scenario::PostgresRestart => "postgres-restart",
            Scenario::PostgresOutage => "postgres-outage",
            Scenario::RedisLoss => "redis-loss",
            Scenario::Storm429 => "storm-429",
            Scenario::Storm500 => "storm-500",
            Scenario::StormTimeout => "storm-timeout",
        }
    }

    /// The private instances the scenario starts (and breaks).
    pub fn private(self) -> &'static [Kind] {
        match self {
            Scenario::BrokerRestart | Scenario::BrokerKill => &[Kind::RabbitMq],
            Scenario::PostgresRestart | Scenario::PostgresOutage => &[Kind::Postgres],
            Scenario::RedisLoss => &[Kind::Redis],
            _ => &[],
        }
    }

    fn storm(self) -> Option<MockConfig> {
        let fault = match self {
            Scenario::Storm429 => MockConfig {
                rate_429: 1.0,
                retry_after_secs: 1,
                ..MockConfig::default()
            },
            Scenario::Storm500 => MockConfig {
                rate_500: 1.0,
                ..MockConfig::default()
            },
            Scenario::StormTimeout => MockConfig {
                rate_timeout: 1.0,
                hang_ms: 10 * PROVIDER_TIMEOUT_MS,
                ..MockConfig::default()
            },
            _ => return None,
        };
        Some(fault)
    }
}

/// The provider's per-request timeout in every scenario's suite.
const PROVIDER_TIMEOUT_MS: u64 = 1000;

#[derive(Debug, Clone)]
pub struct FaultOptions {
    /// The `gauntlet` binary.
    pub gauntlet: PathBuf,
    pub tasks: u64,
    /// The run's `maxConcurrency`, and each worker's `max_in_flight`.
    pub concurrency: u32,
    /// The mock's latency outside a storm.
    pub latency_ms: u64,
    /// The share of the tasks stored when the fault strikes.
    pub fault_at: f64,
    /// How long a restarted service stays down before it is started again.
    pub down: Duration,
    /// How long `postgres-outage` keeps the database down.
    pub outage: Duration,
    /// How long a storm lasts.
    pub storm: Duration,
    /// The most a scenario may take from submit to the run's end, past its
    /// own outage.
    pub deadline: Duration,
    pub batch_size: u32,
    /// `RUST_LOG` of the services.
    pub log: String,
}

impl FaultOptions {
    pub fn new(gauntlet: PathBuf, tasks: u64) -> Self {
        Self {
            gauntlet,
            tasks,
            concurrency: 64,
            latency_ms: 20,
            fault_at: 0.3,
            down: Duration::from_secs(2),
            outage: Duration::from_secs(300),
            storm: Duration::from_secs(5),
            deadline: Duration::from_secs(120),
            batch_size: 50,
            log: "warn".into(),
        }
    }
}

/// What one scenario measured and how it judged it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    pub tasks: u64,
    /// Submit to the run's final status.
    pub wall: Duration,
    /// How long the fault lasted (stop to started again, or the storm).
    pub fault: Duration,
    /// From the fault's end to the run's end.
    pub recovery: Duration,
    /// Calls started and not yet stored when the fault struck (summed over
    /// the faults of the scenario).
    pub in_flight_at_fault: u64,
    /// Every call the mock received.
    pub calls: u64,
    /// Calls made during a storm (each answered with the storm's fault).
    pub storm_calls: u64,
    /// Calls beyond one per task, storm calls aside.
    pub extra_calls: i64,
    pub mock: MockStats,
    pub run: v1::Run,
    pub rows: Rows,
    pub queued: u64,
    pub dead_lettered: u64,
    pub checks: Vec<Check>,
    /// The end of every log when a check failed.
    pub logs: String,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The failed checks, one a line.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The private or shared backends of one scenario; dropping it stops the
/// private ones and drops the shared database and virtual host.
struct Backing {
    backends: Backends,
    postgres: Option<PrivatePostgres>,
    rabbit: Option<PrivateRabbitMq>,
    redis: Option<PrivateRedis>,
    _db: Option<TestDatabase>,
    _vhost: Option<TestVhost>,
}

impl Backing {
    async fn start(private: &[Kind]) -> anyhow::Result<Self> {
        let mut b = Backing {
            backends: Backends {
                database_url: String::new(),
                amqp_url: String::new(),
                redis_url: "redis://127.0.0.1:6379".into(),
                redis_prefix: format!("gauntlet-fault-{}", uuid::Uuid::new_v4().simple()),
            },
            postgres: None,
            rabbit: None,
            redis: None,
            _db: None,
            _vhost: None,
        };
        if private.contains(&Kind::Postgres) {
            let pg = PrivatePostgres::start().await.context("private postgres")?;
            b.backends.database_url = pg.url();
            b.postgres = Some(pg);
        } else {
            let db = TestDatabase::create().await;
            b.backends.database_url = db.config.url.clone();
            b._db = Some(db);
        }
        if private.contains(&Kind::RabbitMq) {
            let rabbit = PrivateRabbitMq::start().await.context("private rabbitmq")?;
            b.backends.amqp_url = rabbit.url();
            b.rabbit = Some(rabbit);
        } else {
            let vhost = TestVhost::create().await;
            b.backends.amqp_url = vhost.url.clone();
            b._vhost = Some(vhost);
        }
        if private.contains(&Kind::Redis) {
            let redis = PrivateRedis::start().await.context("private redis")?;
            b.backends.redis_url = redis.url();
            b.redis = Some(redis);
        }
        Ok(b)
    }
}

fn faulted(s: &MockStats) -> u64 {
    s.faults_429 + s.faults_500 + s.faults_timeout
}

/// Calls started and not yet stored: the most a fault can make the workers
/// call again.
async fn in_flight(
    gateway: &mut gauntlet_cli::client::Gateway,
    mock: &MockServer,
    run_id: &str,
) -> anyhow::Result<u64> {
    // The run first: results stored after it was read only make the figure
    // larger, never smaller than the truth.
    let run = verify::get_run(gateway, run_id, Duration::from_secs(10)).await?;
    let stats = mock.stats();
    Ok((stats.requests - faulted(&stats)).saturating_sub(run.completed_tasks))
}

/// Runs one scenario and judges it.
pub async fn run(scenario: Scenario, opts: &FaultOptions) -> anyhow::Result<Outcome> {
    let mut backing = Backing::start(scenario.private()).await?;
    let mock = MockServer::start(MockConfig {
        latency_ms: opts.latency_ms,
        ..MockConfig::default()
    })
    .await?;
    let workers = if scenario == Scenario::WorkerKill {
        2
    } else {
        1
    };
    let stack_opts = StackOptions {
        workers,
        max_in_flight: opts.concurrency,
        prefetch: (opts.concurrency / opts.batch_size.max(1) * 2).clamp(2, 1000),
        batch_size: opts.batch_size,
        all_services: false,
        log: opts.log.clone(),
        env: vec![("GAUNTLET_WORKER__SHUTDOWN_GRACE_SECS".into(), "5".into())],
        auth: true,
    };
    let mut stack = Stack::start(&opts.gauntlet, &backing.backends, &stack_opts).await?;
    let result = drive(scenario, opts, &mut backing, &mock, &mut stack).await;
    let logs = match &result {
        Ok(o) if o.passed() => String::new(),
        _ => {
            let mut logs = stack.log_tails(15);
            if let Some(pg) = &backing.postgres {
                logs.push_str(&format!("\n--- postgres ---\n{}", pg.log_tail(10)));
            }
            logs
        }
    };
    stack.stop().await;
    drop(backing);
    let mut outcome = result.map_err(|e| anyhow::anyhow!("{e:#}\n{logs}"))?;
    outcome.logs = logs;
    Ok(outcome)
}

async fn drive(
    scenario: Scenario,
    opts: &FaultOptions,
    backing: &mut Backing,
    mock: &MockServer,
    stack: &mut Stack,
) -> anyhow::Result<Outcome> {
    let mut gateway = stack.gateway().await?;
    let suite = BenchSuite {
        cases: opts.tasks as usize,
        base_url: mock.base_url(),
        nonce: Some(uuid::Uuid::new_v4().simple().to_string()),
        timeout_ms: Some(PROVIDER_TIMEOUT_MS),
        // Spent from the shared budget in Redis, so losing Redis is felt.
        requests_per_minute: (scenario == Scenario::RedisLoss).then_some(10_000_000),
    };
    let started = Instant::now();
    let submitted = gateway
        .submit(
            suite.json(),
            v1::SuiteFormat::Json,
            v1::RunOptions {
                max_concurrency: opts.concurrency,
                // The response cache (in Redis) is what redis-loss breaks;
                // elsewhere a cached answer would hide a repeated call.
                no_cache: scenario != Scenario::RedisLoss,
                ..Default::default()
            },
        )
        .await
        .context("submit")?;
    let run_id = submitted.run_id.clone();
    let total = opts.tasks;
    let until = |share: f64| (total as f64 * share).ceil() as u64;
    let at_progress =
        |progress: u64| move |r: &v1::Run| r.completed_tasks >= progress || verify::ended(r);

    let mut in_flight_at_fault = 0;
    let mut storm_calls = 0;
    let fault_started;
    match scenario {
        Scenario::WorkerKill => {
            // Each worker in turn: the first at `fault_at`, the second
            // half-way between it and the end.
            let marks = [opts.fault_at, opts.fault_at + (1.0 - opts.fault_at) / 2.0];
            let mut first = None;
            for (worker, share) in marks.into_iter().enumerate() {
                let run = verify::wait_run(
                    &mut gateway,
                    &run_id,
                    opts.deadline,
                    "progress before the kill",
                    at_progress(until(share)),
                )
                .await?;
                if verify::ended(&run) {
                    break;
                }
                in_flight_at_fault += in_flight(&mut gateway, mock, &run_id).await?;
                first.get_or_insert_with(Instant::now);
                stack.kill_worker(worker).await?;
                tokio::time::sleep(opts.down).await;
                stack.start_worker(worker)?;
            }
            fault_started = first.unwrap_or_else(Instant::now);
        }
        _ => {
            verify::wait_run(
                &mut gateway,
                &run_id,
                opts.deadline,
                "progress before the fault",
                at_progress(until(opts.fault_at)),
            )
            .await?;
            in_flight_at_fault = in_flight(&mut gateway, mock, &run_id).await?;
            fault_started = Instant::now();
            match scenario {
                Scenario::BrokerRestart | Scenario::BrokerKill => {
                    let rabbit = backing.rabbit.as_ref().context("no private broker")?;
                    if scenario == Scenario::BrokerKill {
                        rabbit.kill().await?;
                    } else {
                        rabbit.stop().await?;
                    }
                    tokio::time::sleep(opts.down).await;
                    rabbit.start_again().await?;
                }
                Scenario::PostgresRestart | Scenario::PostgresOutage => {
                    let pg = backing.postgres.as_ref().context("no private postgres")?;
                    pg.stop().await?;
                    tokio::time::sleep(if scenario == Scenario::PostgresOutage {
                        opts.outage
                    } else {
                        opts.down
                    })
                    .await;
                    pg.start_again().await?;
                }
                Scenario::RedisLoss => {
                    let redis = backing.redis.as_mut().context("no private redis")?;
                    redis.kill().await?;
                    tokio::time::sleep(opts.down.max(Duration::from_secs(3))).await;
                    redis.start_again().await?;
                }
                _ => {
                    let storm = scenario.storm().context("not a storm")?;
                    let before = mock.stats().requests;
                    mock.set_config(MockConfig {
                        latency_ms: opts.latency_ms,
                        ..storm
                    });
                    tokio::time::sleep(opts.storm).await;
                    mock.set_config(MockConfig {
                        latency_ms: opts.latency_ms,
                        ..MockConfig::default()
                    });
                    storm_calls = mock.stats().requests - before;
                }
            }
        }
    }
    let fault_ended = Instant::now();
    let extra_time = if scenario == Scenario::PostgresOutage {
        opts.outage
    } else {
        Duration::ZERO
    };
    let run = verify::wait_run(
        &mut gateway,
        &run_id,
        (opts.deadline + extra_time).saturating_sub(started.elapsed()),
        "the run ends",
        verify::ended,
    )
    .await?;
    let wall = started.elapsed();
    let recovery = fault_ended.elapsed();

    // Once ended, nothing more reaches the model.
    let settled = mock.stats().requests;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stats = mock.stats();
    let rows = Rows::of(&verify::results(&mut gateway, &run_id).await?, total);
    let (queued, dead_lettered) = verify::queue_depths(&backing.backends.amqp_url).await?;
    let extra_calls = stats.requests as i64 - storm_calls as i64 - total as i64;

    let mut checks = verify::run_checks(&run, &rows, total);
    checks.push(Check::new(
        "dead-letter queue empty",
        dead_lettered == 0,
        format!("{dead_lettered} dead-lettered"),
    ));
    checks.push(Check::new(
        "task queue drained",
        queued == 0,
        format!("{queued} batches left"),
    ));
    checks.push(Check::new(
        "extra calls within those in flight",
        extra_calls <= in_flight_at_fault as i64,
        format!("{extra_calls} extra calls, {in_flight_at_fault} in flight at the fault"),
    ));
    checks.push(Check::new(
        "no calls after the end",
        stats.requests == settled,
        format!("{} calls after the run ended", stats.requests - settled),
    ));
    if scenario.storm().is_none() {
        checks.push(Check::new(
            "every task passes",
            run.passed == total,
            format!("{} of {total} passed", run.passed),
        ));
    } else {
        // A task may end in error only by running out of retries inside
        // the storm: each such task had at least one call answered with
        // the storm's fault. More errors than storm calls means tasks
        // failed without the model ever failing them.
        checks.push(Check::new(
            "errors only from calls the storm failed",
            run.errors <= storm_calls,
            format!(
                "{} tasks in error, {storm_calls} calls in the storm",
                run.errors
            ),
        ));
    }
    Ok(Outcome {
        scenario,
        tasks: total,
        wall,
        fault: fault_ended - fault_started,
        recovery,
        in_flight_at_fault,
        calls: stats.requests,
        storm_calls,
        extra_calls,
        mock: stats,
        run,
        rows,
        queued,
        dead_lettered,
        checks,
        logs: String::new(),
    })
}

/// The figures of every scenario, one row each.
pub fn table(outcomes: &[Outcome]) -> Table {
    let mut t = Table::new(&[
        "scenario",
        "tasks",
        "wall s",
        "fault s",
        "after fault s",
        "in flight",
        "calls",
        "storm calls",
        "extra",
        "rows / dup / missing",
        "pass / fail / err",
        "status",
        "DLQ",
        "verdict",
    ]);
    for o in outcomes {
        let status = v1::RunStatus::try_from(o.run.status)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("RUN_STATUS_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        t.row(vec![
            o.scenario.name().to_string(),
            o.tasks.to_string(),
            format!("{:.1}", o.wall.as_secs_f64()),
            format!("{:.1}", o.fault.as_secs_f64()),
            format!("{:.1}", o.recovery.as_secs_f64()),
            o.in_flight_at_fault.to_string(),
            o.calls.to_string(),
            o.storm_calls.to_string(),
            o.extra_calls.to_string(),
            format!(
                "{} / {} / {}",
                o.rows.rows, o.rows.duplicates, o.rows.missing
            ),
            format!("{} / {} / {}", o.run.passed, o.run.failed, o.run.errors),
            status,
            o.dead_lettered.to_string(),
            if o.passed() {
                "ok".into()
            } else {
                "FAILED".into()
            },
        ]);
    }
    t
}
