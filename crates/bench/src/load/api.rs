//! `load api`: the gateway's read API at a fixed arrival rate. A few runs
//! are seeded first (and complete); then `ListRuns`, `GetRun`,
//! `ListResults` and `GetRunSummary` are sent in turn, open loop, over a
//! few connections, and their latency is measured from when each was due.

use std::{sync::atomic::Ordering, time::Duration};

use gauntlet_proto::v1;
use tokio::time::Instant;

use super::{CommonArgs, Env, InFlight, Latencies, arrivals, drain, submit, wait_all};
use crate::procs::cpu_secs;

#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Requests per second, spread evenly over the four calls.
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// How long to measure (after `--warmup`).
    #[arg(long, value_parser = humantime, default_value = "30s")]
    pub duration: Duration,
    #[arg(long, value_parser = humantime, default_value = "3s")]
    pub warmup: Duration,
    /// Runs seeded before the reads, each of `--seed-tasks` tasks.
    #[arg(long, default_value_t = 20)]
    pub seed_runs: usize,
    #[arg(long, default_value_t = 1000)]
    pub seed_tasks: usize,
    /// HTTP/2 connections to the gateway.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// `ListResults` page size.
    #[arg(long, default_value_t = 50)]
    pub page_size: u32,
    /// Requests in flight past which new ones are counted as errors
    /// instead of sent (a bound on memory, not a tuning knob).
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight_requests: u64,
}

/// `30s`, `5m`, `1h`, `250ms` or plain seconds.
pub fn humantime(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |at| s.split_at(at));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s or 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

const CALLS: [&str; 4] = ["ListRuns", "GetRun", "ListResults", "GetRunSummary"];

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let env = Env::start(&args.common).await?;
    let result = measure(&args, &env).await;
    env.stop().await;
    result
}

async fn measure(args: &ApiArgs, env: &Env) -> anyhow::Result<()> {
    let mut gateway = env.stack.gateway().await?;
    // Seed: completed runs to read, the mock answering at once.
    env.mock.set_config(gauntlet_mockllm::MockConfig::default());
    let mut ids = Vec::new();
    for _ in 0..args.seed_runs {
        ids.push(submit(&mut gateway, &env.suite(args.seed_tasks)).await?);
    }
    let (runs, _) = wait_all(&mut gateway, &ids, Duration::from_secs(600)).await?;
    anyhow::ensure!(
        runs.values()
            .all(|r| r.status == v1::RunStatus::Completed as i32),
        "seed runs did not all complete"
    );
    println!(
        "seeded {} runs of {} tasks; reading at {} requests/s for {:?} (after {:?} warm-up) over {} connections",
        args.seed_runs, args.seed_tasks, args.rate, args.duration, args.warmup, args.connections
    );

    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(env.stack.gateway().await?);
    }
    let warm = Latencies::default();
    fire(args, &clients, &ids, &warm, args.warmup).await;
    drain(&warm.in_flight, Duration::from_secs(30)).await;

    let pids = env.stack.pids();
    let cpu_before: Vec<(String, f64)> = pids
        .iter()
        .filter_map(|(n, p)| Some((n.clone(), cpu_secs(*p)?)))
        .collect();
    let self_before = cpu_secs(std::process::id()).unwrap_or(0.0);
    let measured = Latencies::default();
    let started = Instant::now();
    fire(args, &clients, &ids, &measured, args.duration).await;
    drain(&measured.in_flight, Duration::from_secs(60)).await;
    let secs = args.duration.as_secs_f64();
    let wall = started.elapsed();

    println!("{}", measured.table(secs));
    let (p99, ok, errors) = measured.overall(0.99);
    println!(
        "offered {:.0} requests/s for {:.1} s; {ok} answered, {errors} errors; last answer after {:.1} s; p99 {:.2} ms (target p99 < 20 ms at 5,000/s: {})",
        args.rate,
        secs,
        wall.as_secs_f64(),
        p99.as_secs_f64() * 1000.0,
        if p99 < Duration::from_millis(20) && errors == 0 && args.rate >= 5000.0 {
            "met"
        } else {
            "not met"
        }
    );
    for (name, before) in cpu_before {
        if let Some(after) = env
            .stack
            .pids()
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, p)| cpu_secs(*p))
        {
            println!(
                "CPU {name}: {:.2} s ({:.0} % of a core)",
                after - before,
                (after - before) / secs * 100.0
            );
        }
    }
    let self_cpu = cpu_secs(std::process::id()).unwrap_or(0.0) - self_before;
    println!(
        "CPU load generator (this process, mock included): {self_cpu:.2} s ({:.0} % of a core)",
        self_cpu / secs * 100.0
    );
    Ok(())
}

/// Sends the four calls in turn at `args.rate` for `duration`, recording
/// into `into`.
async fn fire(
    args: &ApiArgs,
    clients: &[gauntlet_cli::client::Gateway],
    ids: &[String],
    into: &Latencies,
    duration: Duration,
) {
    let page_size = args.page_size;
    let cap = args.max_in_flight_requests;
    arrivals(args.rate, duration, |i, due| {
        let call = CALLS[(i % 4) as usize];
        if into.in_flight.load(Ordering::Relaxed) >= cap {
            into.record(call, Duration::ZERO, false);
            return;
        }
        let guard = InFlight::new(&into.in_flight);
        let mut g = clients[(i as usize) % clients.len()].clone();
        let run_id = ids[((i / 4) as usize) % ids.len()].clone();
        let into = into.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let ok = match call {
                "ListRuns" => g
                    .runs
                    .list_runs(v1::ListRunsRequest {
                        page_size: 20,
                        page_token: String::new(),
                    })
                    .await
                    .is_ok(),
                "GetRun" => g.runs.get_run(v1::GetRunRequest { run_id }).await.is_ok(),
                "ListResults" => g
                    .runs
                    .list_results(v1::ListResultsRequest {
                        run_id,
                        status: v1::ResultStatus::Unspecified as i32,
                        page_size,
                        page_token: String::new(),
                    })
                    .await
                    .is_ok(),
                _ => g
                    .analytics
                    .get_run_summary(v1::GetRunSummaryRequest { run_id })
                    .await
                    .is_ok(),
            };
            into.record(call, due.elapsed(), ok);
        });
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(humantime("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(humantime("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(humantime("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(humantime("2").unwrap(), Duration::from_secs(2));
        assert!(humantime("5 parsecs").is_err());
    }
}
