//! `gauntlet`: run suites, follow runs, start Gauntlet's services.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use gauntlet_bus::{AmqpBus, Bus, MemoryBus};
use gauntlet_cache::Cache;
use gauntlet_cli::{
    access, commands, compare, dlq,
    embedded::{self, Backends, Stack},
    health, insights, regressions, run,
    target::Target,
    trends,
};
use gauntlet_config::GauntletConfig;
use gauntlet_providers::ProviderFactory;
use gauntlet_store::{PgStore, Store};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

#[derive(Parser)]
#[command(
    name = "gauntlet",
    version,
    about = "Run LLM test suites, on a laptop or a cluster",
    after_help = "Exit codes of `run`: 0 all passed, 100 some failed (--fail-exit-code), 1 error, 2 usage, 130 interrupted.\nExit codes of `compare`: 0, or 100 on a significant regression with --fail-on-regression."
)]
struct Cli {
    /// TOML configuration file (also GAUNTLET_CONFIG); GAUNTLET_<SECTION>__<KEY>
    /// environment variables override it.
    #[arg(long, short = 'c', global = true, env = "GAUNTLET_CONFIG")]
    config: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for an https:// --server (also
    /// GAUNTLET_CA_CERT; sets grpc.tls_ca). Without it, the public roots.
    #[arg(long, global = true, env = "GAUNTLET_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// The API key to call a --server with (also GAUNTLET_API_KEY), sent as
    /// `authorization: Bearer <key>`. Not needed without --server.
    #[arg(
        long,
        global = true,
        env = "GAUNTLET_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a suite and print its summary. Without --server, starts the whole
    /// stack in this process (SQLite in --data-dir, no services needed).
    Run(run::RunArgs),
    /// Check a suite without running it: read every test (CSV, JSONL and
    /// other referenced files included) and check it as `run` would, then
    /// say how many tasks it makes. Exits 1 naming file:line of the first
    /// problem.
    Validate {
        /// The suite: a promptfoo-style YAML or JSON file.
        suite: PathBuf,
    },
    /// Follow a run's progress until it ends (on --server, or in --data-dir).
    Watch {
        run_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// List a run's results, or write them to a file (.json .csv .md .html .xml).
    Results {
        run_id: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Have the reports service render a run's report; with --compare a
    /// comparison report (the verdicts of `gauntlet compare`, with charts
    /// in HTML); with --trend a suite's trend over time (as `gauntlet
    /// trends`, with charts in HTML; not in JUnit); with --runs a roll-up
    /// of several runs (a nightly batch) in one report.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["run_id", "compare", "trend", "runs"])))]
    Report {
        /// The run whose report to render.
        run_id: Option<String>,
        /// A roll-up of these runs (up to 100), in this order.
        #[arg(long, num_args = 1..=100, value_name = "RUN", conflicts_with_all = ["run_id", "compare", "trend"])]
        runs: Option<Vec<String>>,
        /// A suite's trend: a suite file (its description is used) or the
        /// description itself.
        #[arg(long, value_name = "SUITE", conflicts_with_all = ["run_id", "compare"])]
        trend: Option<String>,
        /// With --trend: per hour, day or week.
        #[arg(long, value_enum, requires = "trend")]
        bucket: Option<trends::Bucket>,
        /// Compare run A (the baseline) with run B (the candidate), or the
        /// providers (or prompts, with --by prompt) of run A with each other.
        #[arg(long, num_args = 1..=2, value_names = ["A", "B"], conflicts_with = "run_id")]
        compare: Option<Vec<String>>,
        /// With --compare: per provider, or per prompt.
        #[arg(long, value_enum, requires = "compare")]
        by: Option<compare::By>,
        /// With --compare: significance level, after Holm's correction.
        #[arg(long, value_parser = compare::parse_alpha, requires = "compare")]
        alpha: Option<f64>,
        #[arg(long, value_enum, default_value = "markdown")]
        format: commands::ReportFormat,
        /// Write the document to FILE (written as it arrives); without it,
        /// to standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// List recent runs.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Dead-lettered task batches: list them, or put them back on the queue.
    ///
    /// Dead-lettered batches are the ones the workers gave up on (the
    /// database stayed down through their last delivery, their run is
    /// unknown, its suite unusable) or that came back too many times
    /// (amqp.delivery_limit). The gateway's reconciler re-drives them by
    /// itself once they have been dead reconcile.stale_after_secs (15 min),
    /// and fails a run whose reconcile.max_redrives (3) are spent; these
    /// commands are for looking, and for not waiting.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Compare two runs, or the providers (or prompts) of one run, on
    /// results paired by test case: exact McNemar on pass/fail (Holm-
    /// corrected across the pairs), a paired bootstrap interval of the
    /// score difference, Wilcoxon on latency, cost. B is the candidate, A
    /// the baseline: "worse" means B passes significantly less often.
    Compare(compare::CompareArgs),
    /// Check a run against its baseline (by default the newest earlier
    /// completed run of the same suite): the comparison per provider ×
    /// prompt, the cases that flipped between pass and fail, and the
    /// assertion types and metrics whose pass rate moved significantly.
    Regressions(regressions::RegressionsArgs),
    /// One suite's completed runs over time, per provider and hour, day or
    /// week: pass rate with its 95 % interval, p95 latency, cost and runs.
    Trends(trends::TrendsArgs),
    /// What a run says beyond its summary: the cheapest provider not
    /// significantly worse than the best, flaky cases (repeats disagree),
    /// cases failing on every provider and prompt, latency outliers.
    Insights(insights::InsightsArgs),
    /// The fleet as the monitor sees it: each service's health, Postgres,
    /// Redis and RabbitMQ with their latency, the queues, and what limits
    /// throughput now with what to do about it. Exits 1 when something is
    /// not serving.
    ///
    /// With --service, asks the one service at --server instead (gRPC
    /// health, no API key): exits 0 when it is serving, that is connected
    /// to its dependencies with the database migrated, 1 otherwise. This
    /// is the container health check: `gauntlet health --server
    /// http://127.0.0.1:7071 --service worker`.
    Health {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[arg(long, env = "GAUNTLET_SERVER", default_value = "http://127.0.0.1:7070")]
        server: String,
        /// The service expected at --server: gateway, worker, analytics,
        /// reports or monitor ("" for whatever serves there).
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
    },
    /// The monitor's alerts: those pending and firing, or with --all the
    /// history too, newest first. Rules: deploy/monitor/rules.yml (or
    /// monitor.rules_file).
    Alerts {
        /// Resolved alerts too.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum)]
        severity: Option<SeverityArg>,
        /// Only this rule's alerts.
        #[arg(long)]
        rule: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        #[arg(long, env = "GAUNTLET_SERVER", default_value = "http://127.0.0.1:7070")]
        server: String,
    },
    /// Run all five services in this process (gateway, worker, analytics,
    /// reports, monitor), the gateway on gateway.listen (127.0.0.1:7070).
    /// By default with the embedded backends (SQLite in --data-dir, an
    /// in-process bus, an in-process cache); each URL flag swaps in the real
    /// service.
    Up {
        /// Use this Postgres (postgres://…) instead of SQLite.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Use this RabbitMQ (amqp://…) instead of the in-process bus.
        #[arg(long, value_name = "URL")]
        amqp_url: Option<String>,
        /// Use this Redis (redis://…) as the shared cache.
        #[arg(long, value_name = "URL")]
        redis_url: Option<String>,
        /// Where the embedded database lives.
        #[arg(long, env = "GAUNTLET_DATA_DIR", default_value = ".gauntlet")]
        data_dir: PathBuf,
        /// Listen beyond loopback (gateway.listen) without API keys. On
        /// loopback, `up` never asks for keys; elsewhere it does
        /// (auth.bootstrap_key gives the first) unless this is given.
        #[arg(long)]
        insecure: bool,
    },
    /// API keys of your project: create, list, revoke; `generate` prints a
    /// key for auth.bootstrap_key without a server.
    Keys {
        #[command(subcommand)]
        command: access::KeysCommand,
    },
    /// Projects, their quotas and what they use.
    Projects {
        #[command(subcommand)]
        command: access::ProjectsCommand,
    },
    /// Your project's audit log: every mutating call and every denied one,
    /// newest first (admins).
    Audit(access::AuditArgs),
    /// Run one service, as a container does.
    Serve {
        #[arg(value_enum)]
        service: Service,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SeverityArg {
    Info,
    Warning,
    Critical,
}

impl SeverityArg {
    fn proto(self) -> gauntlet_proto::v1::AlertSeverity {
        use gauntlet_proto::v1::AlertSeverity;
        match self {
            Self::Info => AlertSeverity::Info,
            Self::Warning => AlertSeverity::Warning,
            Self::Critical => AlertSeverity::Critical,
        }
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead-lettered task batches, oldest first.
    ///
    /// One line per batch: its run, task range, deliveries (? when the
    /// broker does not say), the broker's reason (`rejected`: a worker gave
    /// up on it; `delivery_limit`: it came back too many times), age,
    /// earlier re-drives and the run's status. Listing moves nothing.
    List {
        /// Only this run's batches.
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
        /// At most this many batches (up to 10000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, env = "GAUNTLET_SERVER", default_value = "http://127.0.0.1:7070")]
        server: String,
    },
    /// Put dead-lettered task batches back on the task queue.
    ///
    /// Each goes back as a fresh message (delivery count 0), and is removed
    /// from the dead-letter queue only once the broker has it. Workers skip
    /// the tasks already stored, so no result is stored or counted twice.
    /// Workers drop the batches of a run that has ended, so --run refuses
    /// one.
    #[command(group(ArgGroup::new("which").required(true).args(["run", "all"])))]
    Redrive {
        /// This run's batches.
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
        /// Every run's batches.
        #[arg(long)]
        all: bool,
        #[arg(long, env = "GAUNTLET_SERVER", default_value = "http://127.0.0.1:7070")]
        server: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Service {
    Gateway,
    Worker,
    Analytics,
    Reports,
    Monitor,
}

impl Command {
    /// The subcommand as typed, for the command's span.
    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Validate { .. } => "validate",
            Command::Watch { .. } => "watch",
            Command::Results { .. } => "results",
            Command::Report { .. } => "report",
            Command::Runs { .. } => "runs",
            Command::Compare(_) => "compare",
            Command::Regressions(_) => "regressions",
            Command::Trends(_) => "trends",
            Command::Insights(_) => "insights",
            Command::Dlq { .. } => "dlq",
            Command::Health { .. } => "health",
            Command::Alerts { .. } => "alerts",
            Command::Up { .. } => "up",
            Command::Keys { .. } => "keys",
            Command::Projects { .. } => "projects",
            Command::Audit(_) => "audit",
            Command::Serve { .. } => "serve",
        }
    }
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Worker => "worker",
            Service::Analytics => "analytics",
            Service::Reports => "reports",
            Service::Monitor => "monitor",
        }
    }

    async fn serve(
        self,
        config: GauntletConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        match self {
            Service::Gateway => gauntlet_gateway::serve(config, shutdown).await,
            Service::Worker => gauntlet_worker::serve(config, shutdown).await,
            Service::Analytics => gauntlet_analytics::serve(config, shutdown).await,
            Service::Reports => gauntlet_reports::serve(config, shutdown).await,
            Service::Monitor => gauntlet_monitor::serve(config, shutdown).await,
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<GauntletConfig> {
    let text = match path {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?,
        ),
        None => None,
    };
    gauntlet_config::load(text.as_deref(), std::env::vars())
        .and_then(|c: GauntletConfig| c.validate().map(|()| c))
        .map_err(|e| match path {
            Some(p) => anyhow::anyhow!("{}: {e}", p.display()),
            None => anyhow::anyhow!("{e}"),
        })
}

/// `gauntlet up`: the five services in this process until SIGINT/SIGTERM.
async fn up(
    config: GauntletConfig,
    urls: UpUrls,
    data_dir: PathBuf,
    insecure: bool,
) -> anyhow::Result<()> {
    let mut config = config;
    let loopback = embedded::is_loopback(&config.gateway.listen);
    if loopback {
        // Only this machine's users reach it: no keys, as `gauntlet run`.
        config.auth.enabled = false;
    } else {
        if insecure {
            config.auth.enabled = false;
        } else if !config.auth.enabled {
            anyhow::bail!(
                "gateway.listen {} is beyond loopback and auth.enabled is false: anyone who                  can reach it could run suites on your provider keys; turn auth on (with                  auth.bootstrap_key for the first key) or give --insecure",
                config.gateway.listen
            );
        } else if config.auth.bootstrap_key.is_empty() && urls.database.is_none() {
            anyhow::bail!(
                "gateway.listen {} is beyond loopback, so `up` asks for API keys, and a new                  database has none: set auth.bootstrap_key (GAUNTLET_AUTH__BOOTSTRAP_KEY;                  `gauntlet keys generate` makes one), or give --insecure",
                config.gateway.listen
            );
        }
    }
    let mut described = Vec::new();
    let store: Arc<dyn Store> =
        match urls.database {
            Some(url) => {
                config.database.url = url;
                described.push(format!("Postgres {}", redact(&config.database.url)));
                Arc::new(PgStore::connect(&config.database).await.with_context(|| {
                    format!("cannot connect to {}", redact(&config.database.url))
                })?)
            }
            None => {
                described.push(format!("SQLite in {}", data_dir.display()));
                Arc::new(embedded::sqlite_store(&data_dir).await?)
            }
        };
    let bus: Arc<dyn Bus> = match urls.amqp {
        Some(url) => {
            config.amqp.url = url;
            described.push(format!("RabbitMQ {}", redact(&config.amqp.url)));
            Arc::new(
                AmqpBus::connect(&config.amqp.url, config.amqp.delivery_limit)
                    .await
                    .with_context(|| format!("cannot connect to {}", redact(&config.amqp.url)))?,
            )
        }
        None => {
            described.push("in-process bus".into());
            Arc::new(MemoryBus::new(config.amqp.delivery_limit))
        }
    };
    let cache = match urls.redis {
        Some(url) => {
            config.redis.url = url;
            described.push(format!("Redis {}", redact(&config.redis.url)));
            Cache::new(&config.redis, embedded::CACHE_BYTES)
                .with_context(|| format!("bad Redis URL {}", redact(&config.redis.url)))?
        }
        None => Cache::local(embedded::CACHE_BYTES),
    };
    let listener = tokio::net::TcpListener::bind(&config.gateway.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.gateway.listen))?;
    let backends = Backends {
        store,
        bus,
        cache,
        providers: Arc::new(ProviderFactory::from_process_env()),
    };
    let stack = Stack::start_on(config, backends, listener).await?;
    eprintln!(
        "gauntlet is up: gateway at {} ({}); Ctrl-C stops it",
        stack.url(),
        described.join(", ")
    );
    for (name, addr) in &stack.metrics {
        eprintln!("  {name} metrics at http://{addr}/metrics");
    }
    let signal = CancellationToken::new();
    gauntlet_service::shutdown_on_signal(signal.clone());
    signal.cancelled().await;
    eprintln!("stopping…");
    stack.shutdown().await
}

struct UpUrls {
    database: Option<String>,
    amqp: Option<String>,
    redis: Option<String>,
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    // Read once, here: every command gets the same configuration.
    let mut config = load_config(cli.config.as_ref())?;
    if let Some(ca) = &cli.ca_cert {
        config.grpc.tls_ca = ca.display().to_string();
    }
    if let Some(key) = cli.api_key.as_deref().filter(|k| !k.trim().is_empty()) {
        gauntlet_cli::client::set_api_key(key)?;
    }
    // The services log what they do; a client command's output is its own,
    // and the services it runs in-process (`run` without --server) only warn.
    let (service_name, log_filter) = match &cli.command {
        Command::Up { .. } => (
            "gauntlet".to_owned(),
            gauntlet_telemetry::DEFAULT_LOG_FILTER,
        ),
        Command::Serve { service } => (
            format!("gauntlet-{}", service.name()),
            gauntlet_telemetry::DEFAULT_LOG_FILTER,
        ),
        _ => ("gauntlet-cli".to_owned(), "warn"),
    };
    // A container's health check runs every few seconds in the service's
    // environment (its OTLP endpoint included): it exports no spans.
    let probe = matches!(
        &cli.command,
        Command::Health {
            service: Some(_),
            ..
        }
    );
    let _telemetry = if probe {
        None
    } else {
        Some(gauntlet_telemetry::init_with_log_filter(
            &service_name,
            log_filter,
        )?)
    };
    // A client command is one trace: its root span is the parent of every
    // call it makes, and through them of the gateway's and workers' spans.
    let root = match &cli.command {
        Command::Up { .. } | Command::Serve { .. } => tracing::Span::none(),
        _ if probe => tracing::Span::none(),
        command => tracing::info_span!(
            "gauntlet.command",
            otel.name = %format!("gauntlet {}", command.name()),
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        ),
    };
    let outcome = command(cli.command, config).instrument(root.clone()).await;
    if let Err(error) = &outcome {
        root.record("otel.status_code", "ERROR");
        root.record("otel.status_description", format!("{error:#}").as_str());
    }
    outcome
}

async fn command(command: Command, config: GauntletConfig) -> anyhow::Result<i32> {
    match command {
        Command::Run(args) => run::run(args, config).await,
        Command::Validate { suite } => run::validate(&suite).map(|()| 0),
        Command::Watch { run_id, target } => {
            commands::watch(&config, &target, &run_id).await.map(|()| 0)
        }
        Command::Results {
            run_id,
            output,
            target,
        } => commands::results(&config, &target, &run_id, output)
            .await
            .map(|()| 0),
        Command::Report {
            run_id,
            runs,
            trend,
            bucket,
            compare,
            by,
            alpha,
            format,
            output,
            target,
        } => {
            let what = match (run_id, compare) {
                _ if runs.is_some() => commands::ReportOf::Rollup(runs.unwrap_or_default()),
                _ if trend.is_some() => commands::ReportOf::Trend {
                    suite: trends::description(trend.as_deref().unwrap_or_default())?,
                    bucket: bucket.unwrap_or(trends::Bucket::Day),
                },
                (_, Some(runs)) => commands::ReportOf::Comparison {
                    a: runs[0].clone(),
                    b: runs.get(1).cloned(),
                    by,
                    alpha: alpha.unwrap_or(0.0),
                },
                (Some(run), None) => commands::ReportOf::Run(run),
                (None, None) => unreachable!("clap requires a run, --compare or --trend"),
            };
            commands::report(&config, &target, what, format, output)
                .await
                .map(|()| 0)
        }
        Command::Runs { limit, target } => {
            commands::runs(&config, &target, limit).await.map(|()| 0)
        }
        Command::Compare(args) => compare::compare(&config, &args).await,
        Command::Regressions(args) => regressions::regressions(&config, &args).await,
        Command::Trends(args) => trends::trends(&config, &args).await.map(|()| 0),
        Command::Insights(args) => insights::insights(&config, &args).await.map(|()| 0),
        Command::Dlq { command } => match command {
            DlqCommand::List { run, limit, server } => {
                dlq::list(&config, &server, run.as_deref(), limit)
                    .await
                    .map(|()| 0)
            }
            DlqCommand::Redrive { run, all, server } => {
                dlq::redrive(&config, &server, run.as_deref(), all)
                    .await
                    .map(|()| 0)
            }
        },
        Command::Health {
            json,
            server,
            service: Some(service),
        } => health::probe(&config, &server, &service, json)
            .await
            .map(|serving| if serving { 0 } else { 1 }),
        Command::Health {
            json,
            server,
            service: None,
        } => health::health(&config, &server, json)
            .await
            .map(|healthy| if healthy { 0 } else { 1 }),
        Command::Alerts {
            all,
            severity,
            rule,
            limit,
            server,
        } => health::alerts(
            &config,
            &server,
            health::AlertsQuery {
                all,
                severity: severity.map(SeverityArg::proto),
                rule: rule.as_deref(),
                limit,
            },
        )
        .await
        .map(|()| 0),
        Command::Keys { command } => access::keys(&config, command).await.map(|()| 0),
        Command::Projects { command } => access::projects(&config, command).await.map(|()| 0),
        Command::Audit(args) => access::audit(&config, args).await.map(|()| 0),
        Command::Up {
            database_url,
            amqp_url,
            redis_url,
            data_dir,
            insecure,
        } => {
            let urls = UpUrls {
                database: database_url,
                amqp: amqp_url,
                redis: redis_url,
            };
            up(config, urls, data_dir, insecure).await.map(|()| 0)
        }
        Command::Serve { service } => {
            let shutdown = CancellationToken::new();
            gauntlet_service::shutdown_on_signal(shutdown.clone());
            service.serve(config, shutdown).await.map(|()| 0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
