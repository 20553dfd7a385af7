//! One test per fault: a run of 2,000 tasks, the fault struck when 30 % of
//! them are stored, and then the run must end `completed` with one result
//! per task, counters equal to its rows, an empty dead-letter queue, and no
//! more calls to the model than one per task plus those in flight at the
//! fault. Scenarios that stop a service start a private instance of it.
//!
//! They need the `gauntlet` binary of the same build: `cargo test
//! --workspace` builds it (the CLI's own tests need it); alone, run
//! `cargo build -p gauntlet-cli` first, or point `GAUNTLET_BIN_DIR` at one.
//! A missing `initdb`, `rabbitmq-server` or `redis-server` fails the test
//! under `CI=true` and skips it elsewhere.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use gauntlet_bench::{
    fault::{self, FaultOptions, Scenario},
    instances, procs,
};

/// One scenario at a time: each loads both cores, and timings matter.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Each scenario's bound, start-up of its private instances included.
const BOUND: Duration = Duration::from_secs(60);

fn gauntlet_binary() -> PathBuf {
    let dir = procs::bin_dir(std::env::var_os("GAUNTLET_BIN_DIR").map(PathBuf::from))
        .expect("the test binary has a directory");
    procs::binary(&dir, "gauntlet").unwrap_or_else(|e| {
        panic!("{e}\n(`cargo test --workspace` builds it; with `-p gauntlet-bench` alone, `cargo build -p gauntlet-cli` first)")
    })
}

/// Whether the programs the scenario's private instances need are
/// installed. Missing ones fail the test under CI=true.
fn programs_present(scenario: Scenario) -> bool {
    let missing = instances::missing_programs(scenario.private());
    if missing.is_empty() {
        return true;
    }
    let message = format!("{}: not installed: {}", scenario.name(), missing.join(", "));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipped (not under CI=true): {message}");
    false
}

async fn scenario(scenario: Scenario) {
    if !programs_present(scenario) {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let mut opts = FaultOptions::new(gauntlet_binary(), 2000);
    opts.concurrency = 32;
    opts.latency_ms = 50;
    opts.down = Duration::from_secs(1);
    opts.storm = Duration::from_secs(3);
    opts.deadline = Duration::from_secs(50);
    let started = Instant::now();
    let outcome = fault::run(scenario, &opts)
        .await
        .unwrap_or_else(|e| panic!("{}: {e:#}", scenario.name()));
    let took = started.elapsed();
    println!("{}", fault::table(std::slice::from_ref(&outcome)));
    assert!(
        outcome.passed(),
        "{}:\n{}\n{}",
        scenario.name(),
        outcome.failures(),
        outcome.logs
    );
    assert!(took < BOUND, "{} took {took:?}", scenario.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sigkilled_mid_run_loses_no_result_and_repeats_only_calls_in_flight() {
    scenario(Scenario::WorkerKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stopped_and_started_mid_run_loses_no_result_and_dead_letters_nothing() {
    scenario(Scenario::BrokerRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_run_loses_no_result_and_buys_no_answer_twice() {
    scenario(Scenario::PostgresRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_mid_run_loses_no_result() {
    scenario(Scenario::RedisLoss).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_mid_run_ends_completed_without_extra_answers() {
    scenario(Scenario::Storm429).await;
}
