//! `gauntlet-bench`: the end-to-end benchmark, the load and soak suite and
//! the fault suite, against the real binaries.
//!
//! Build the binaries first, in release:
//! `cargo build --release -p gauntlet-cli -p gauntlet-mockllm -p gauntlet-bench`

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use gauntlet_bench::{
    e2e,
    fault::{self, FaultOptions, Scenario},
    instances, load,
    load::api::humantime,
    procs,
};

#[derive(Parser)]
#[command(
    name = "gauntlet-bench",
    about = "Gauntlet's benchmarks, load suite and fault suite"
)]
enum Cli {
    /// Run N cases against the mock model and report throughput and memory.
    E2e(e2e::E2eArgs),
    /// Load the real services: the read API, many runs, a spike, a soak.
    #[command(subcommand)]
    Load(Load),
    /// Break one thing mid-run and check the run still ends right.
    Fault(FaultArgs),
    /// Seed two runs of N results into a throwaway Postgres database and
    /// time GetRunSummary and CompareRuns, cold and cached.
    Analytics(gauntlet_bench::analytics::AnalyticsArgs),
    /// Time and peak memory to render every report format, 1k to 1M results.
    Render(gauntlet_bench::render::RenderArgs),
    /// An OTLP/gRPC trace receiver that counts spans and keeps none.
    OtlpSink(gauntlet_bench::otlp_sink::SinkArgs),
}

#[derive(Subcommand)]
enum Load {
    /// ListRuns/GetRun/ListResults/GetRunSummary at a fixed arrival rate.
    Api(load::api::ApiArgs),
    /// Many runs submitted at once; all complete, with their progress spread.
    ManyRuns(load::runs::ManyRunsArgs),
    /// Submissions at a base rate, ten times it for a while, and back.
    Spike(load::runs::SpikeArgs),
    /// Short runs submitted while a long one goes: how soon each ends.
    Behind(load::runs::BehindArgs),
    /// Mixed load for a long time, sampling RSS, fds and DB connections.
    Soak(load::soak::SoakArgs),
}

#[derive(clap::Args)]
struct FaultArgs {
    /// `all`, or one scenario name; may be repeated.
    #[arg(long, default_value = "all")]
    scenario: Vec<String>,
    /// Tasks of each scenario's run.
    #[arg(long, default_value_t = 20_000)]
    tasks: u64,
    /// The run's maxConcurrency and the worker's max_in_flight.
    #[arg(long, default_value_t = 256)]
    concurrency: u32,
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Share of the tasks stored when the fault strikes.
    #[arg(long, default_value_t = 0.3)]
    fault_at: f64,
    /// How long a restarted service stays down.
    #[arg(long, value_parser = humantime, default_value = "2s")]
    down: Duration,
    /// How long postgres-outage keeps the database down.
    #[arg(long, value_parser = humantime, default_value = "5m")]
    outage: Duration,
    /// How long a provider storm lasts.
    #[arg(long, value_parser = humantime, default_value = "10s")]
    storm: Duration,
    /// The most a scenario's run may take, past its outage.
    #[arg(long, value_parser = humantime, default_value = "5m")]
    deadline: Duration,
    /// `RUST_LOG` of the services.
    #[arg(long, default_value = "warn")]
    log: String,
    /// Where `gauntlet` is (default: next to this binary).
    #[arg(long, env = "GAUNTLET_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

fn scenarios(names: &[String]) -> anyhow::Result<Vec<Scenario>> {
    let mut out = Vec::new();
    for name in names {
        if name == "all" {
            out.extend(Scenario::ALL);
            continue;
        }
        let s = Scenario::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                anyhow::anyhow!(
                    "unknown scenario `{name}`; known: all, {}",
                    known.join(", ")
                )
            })?;
        out.push(s);
    }
    Ok(out)
}

async fn fault_suite(args: FaultArgs) -> anyhow::Result<bool> {
    let list = scenarios(&args.scenario)?;
    let kinds: Vec<instances::Kind> = list
        .iter()
        .flat_map(|s| s.private().iter().copied())
        .collect();
    let missing = instances::missing_programs(&kinds);
    anyhow::ensure!(missing.is_empty(), "not installed: {}", missing.join(", "));
    let dir = procs::bin_dir(args.bin_dir.clone())?;
    let mut opts = FaultOptions::new(procs::binary(&dir, "gauntlet")?, args.tasks);
    opts.concurrency = args.concurrency;
    opts.latency_ms = args.latency_ms;
    opts.fault_at = args.fault_at;
    opts.down = args.down;
    opts.outage = args.outage;
    opts.storm = args.storm;
    opts.deadline = args.deadline;
    opts.log = args.log.clone();
    let mut outcomes = Vec::new();
    let mut all_ok = true;
    for scenario in list {
        eprintln!("fault scenario {} ({} tasks)…", scenario.name(), args.tasks);
        match fault::run(scenario, &opts).await {
            Ok(o) => {
                if !o.passed() {
                    all_ok = false;
                    eprintln!("{} FAILED:\n{}\n{}", scenario.name(), o.failures(), o.logs);
                }
                outcomes.push(o);
            }
            Err(e) => {
                all_ok = false;
                eprintln!("{} could not run: {e:#}", scenario.name());
            }
        }
    }
    println!("{}", fault::table(&outcomes));
    Ok(all_ok)
}

fn main() -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    let ok = match Cli::parse() {
        Cli::E2e(args) => runtime.block_on(e2e::run(args)).map(|()| true),
        Cli::Analytics(args) => runtime
            .block_on(gauntlet_bench::analytics::run(args))
            .map(|()| true),
        Cli::Load(Load::Api(args)) => runtime.block_on(load::api::run(args)).map(|()| true),
        Cli::Load(Load::ManyRuns(args)) => {
            runtime.block_on(load::runs::many_runs(args)).map(|()| true)
        }
        Cli::Load(Load::Spike(args)) => runtime.block_on(load::runs::spike(args)).map(|()| true),
        Cli::Load(Load::Behind(args)) => runtime.block_on(load::runs::behind(args)).map(|()| true),
        Cli::Load(Load::Soak(args)) => runtime.block_on(load::soak::run(args)).map(|()| true),
        Cli::Fault(args) => runtime.block_on(fault_suite(args)),
        Cli::Render(args) => gauntlet_bench::render::run(args).map(|()| true),
        Cli::OtlpSink(args) => runtime
            .block_on(gauntlet_bench::otlp_sink::run(args))
            .map(|()| true),
    }?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
