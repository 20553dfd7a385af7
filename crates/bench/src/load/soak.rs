//! `load soak`: mixed load for a long time — runs submitted at a steady
//! rate while the read API is called at a fixed rate — sampling each
//! service's RSS and open descriptors and the database's connections, to
//! show whether any of them keeps growing (a leak).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use gauntlet_proto::v1;
use tokio::time::Instant;

use super::{CommonArgs, Env, InFlight, Latencies, api::humantime, arrivals, wait_all};
use crate::{
    procs::{open_fds, rss_kib},
    table::Table,
};

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long, value_parser = humantime, default_value = "30m")]
    pub duration: Duration,
    /// Seconds between two submissions.
    #[arg(long, value_parser = humantime, default_value = "2s")]
    pub submit_every: Duration,
    /// Tasks per submitted run.
    #[arg(long, default_value_t = 500)]
    pub tasks: usize,
    /// Reads per second (GetRun, ListResults, GetRunSummary, ListRuns in turn).
    #[arg(long, default_value_t = 200.0)]
    pub read_rate: f64,
    #[arg(long, value_parser = humantime, default_value = "10s")]
    pub sample_every: Duration,
}

/// One sample: per service (RSS KiB, open fds), and the database's connections.
struct Sample {
    at: Duration,
    procs: BTreeMap<String, (u64, usize)>,
    db_connections: Option<u64>,
}

async fn db_connections(url: &str) -> Option<u64> {
    let out = tokio::process::Command::new("psql")
        .args([
            url,
            "-qAt",
            "-c",
            "SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = current_database()",
        ])
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let env = Env::start(&args.common).await?;
    let result = soak_in(&args, &env).await;
    env.stop().await;
    result
}

async fn soak_in(args: &SoakArgs, env: &Env) -> anyhow::Result<()> {
    let gateway = env.stack.gateway().await?;
    let ids = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let submits = Latencies::default();
    let reads = Latencies::default();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let submitter = {
        let (g, ids, submits, suite) = (
            gateway.clone(),
            ids.clone(),
            submits.clone(),
            env.suite(args.tasks),
        );
        let (rate, duration) = (1.0 / args.submit_every.as_secs_f64(), args.duration);
        tokio::spawn(async move {
            let text = suite.json();
            arrivals(rate, duration, |_, due| {
                let (mut g, ids, submits, text) =
                    (g.clone(), ids.clone(), submits.clone(), text.clone());
                tokio::spawn(async move {
                    let _in_flight = InFlight::new(&submits.in_flight);
                    let r = g
                        .submit(
                            text,
                            v1::SuiteFormat::Json,
                            v1::RunOptions {
                                no_cache: true,
                                ..Default::default()
                            },
                        )
                        .await;
                    submits.record("SubmitRun", due.elapsed(), r.is_ok());
                    if let Ok(r) = r {
                        ids.lock().unwrap_or_else(|e| e.into_inner()).push(r.run_id);
                    }
                });
            })
            .await;
        })
    };
    let reader = {
        let (g, ids, reads) = (gateway.clone(), ids.clone(), reads.clone());
        let (rate, duration) = (args.read_rate, args.duration);
        tokio::spawn(async move {
            arrivals(rate, duration, |i, due| {
                let run_id = {
                    let ids = ids.lock().unwrap_or_else(|e| e.into_inner());
                    if ids.is_empty() {
                        return;
                    }
                    // Mostly the newest runs, as a dashboard would.
                    ids[ids.len() - 1 - (i as usize / 4) % ids.len().min(10)].clone()
                };
                let (mut g, reads) = (g.clone(), reads.clone());
                tokio::spawn(async move {
                    let _in_flight = InFlight::new(&reads.in_flight);
                    let (call, ok) = match i % 4 {
                        0 => (
                            "GetRun",
                            g.runs.get_run(v1::GetRunRequest { run_id }).await.is_ok(),
                        ),
                        1 => (
                            "ListResults",
                            g.runs
                                .list_results(v1::ListResultsRequest {
                                    run_id,
                                    status: 0,
                                    page_size: 50,
                                    page_token: String::new(),
                                })
                                .await
                                .is_ok(),
                        ),
                        2 => (
                            "GetRunSummary",
                            g.analytics
                                .get_run_summary(v1::GetRunSummaryRequest { run_id })
                                .await
                                .is_ok(),
                        ),
                        _ => (
                            "ListRuns",
                            g.runs
                                .list_runs(v1::ListRunsRequest {
                                    page_size: 20,
                                    page_token: String::new(),
                                })
                                .await
                                .is_ok(),
                        ),
                    };
                    reads.record(call, due.elapsed(), ok);
                });
            })
            .await;
        })
    };

    let mut samples = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let procs = env
            .stack
            .pids()
            .into_iter()
            .filter_map(|(name, pid)| Some((name, (rss_kib(pid)?, open_fds(pid)?))))
            .collect();
        samples.push(Sample {
            at: started.elapsed(),
            procs,
            db_connections: db_connections(&env.backends.database_url).await,
        });
        if started.elapsed() >= args.duration {
            stop.store(true, Ordering::Relaxed);
            break;
        }
        next += args.sample_every;
        tokio::time::sleep_until(next).await;
    }
    let _ = submitter.await;
    let _ = reader.await;
    super::drain(&submits.in_flight, Duration::from_secs(60)).await;
    super::drain(&reads.in_flight, Duration::from_secs(60)).await;
    let ids: Vec<String> = ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut g = gateway.clone();
    let (finals, _) = wait_all(&mut g, &ids, Duration::from_secs(600)).await?;
    // One more sample once the load is over: what stays held.
    let idle = Sample {
        at: started.elapsed(),
        procs: env
            .stack
            .pids()
            .into_iter()
            .filter_map(|(name, pid)| Some((name, (rss_kib(pid)?, open_fds(pid)?))))
            .collect(),
        db_connections: db_connections(&env.backends.database_url).await,
    };

    let secs = args.duration.as_secs_f64();
    println!(
        "soak {:?}: a run of {} tasks every {:?}, {} reads/s; {} worker(s), mock at {} ms",
        args.duration,
        args.tasks,
        args.submit_every,
        args.read_rate,
        args.common.workers,
        args.common.latency_ms
    );
    println!("submits:\n{}", submits.table(secs));
    println!("reads:\n{}", reads.table(secs));
    let names: Vec<String> = samples
        .first()
        .map(|s| s.procs.keys().cloned().collect())
        .unwrap_or_default();
    let mut header = vec!["t".to_string()];
    for n in &names {
        header.push(format!("{n} RSS MB / fds"));
    }
    header.push("DB conns".into());
    let mut t = Table::new(&header.iter().map(String::as_str).collect::<Vec<_>>());
    // About a dozen rows, evenly spread, plus the idle one.
    let step = (samples.len() / 12).max(1);
    let shown = samples
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0 || *i == samples.len() - 1)
        .map(|(_, s)| s)
        .chain(std::iter::once(&idle));
    for s in shown {
        let mut row = vec![format!("{:.0} s", s.at.as_secs_f64())];
        for n in &names {
            row.push(s.procs.get(n).map_or("-".into(), |(kib, fds)| {
                format!("{:.1} / {fds}", *kib as f64 / 1024.0)
            }));
        }
        row.push(s.db_connections.map_or("-".into(), |c| c.to_string()));
        t.row(row);
    }
    println!("{t}");
    println!("(last row: after the load stopped and every run ended)");

    // Flat: RSS still rising through the last quarter (over 5 % and 4 MB
    // from its first sample to its last) or descriptors up by more than 16
    // means a leak; growth that has levelled off is a cache filling up.
    let quarter = |q: usize| -> &[Sample] {
        let n = samples.len();
        &samples[n * q / 4..(n * (q + 1) / 4).max(n * q / 4 + 1).min(n)]
    };
    let mut verdicts = Table::new(&[
        "process",
        "peak RSS MB 2nd → last quarter",
        "RSS MB over the last quarter",
        "fds 2nd → last quarter",
        "verdict",
    ]);
    for n in &names {
        let peak = |part: &[Sample]| -> (u64, usize) {
            part.iter()
                .filter_map(|s| s.procs.get(n))
                .fold((0, 0), |(r, f), (kib, fds)| (r.max(*kib), f.max(*fds)))
        };
        let rss = |s: Option<&Sample>| s.and_then(|s| s.procs.get(n)).map_or(0, |p| p.0);
        let last = quarter(3);
        let (from, to) = (rss(last.first()), rss(last.last()));
        let (early, late) = (peak(quarter(1)), peak(quarter(3)));
        let flat = to as f64 <= from as f64 * 1.05 + 4.0 * 1024.0 && late.1 <= early.1 + 16;
        verdicts.row(vec![
            n.clone(),
            format!(
                "{:.1} → {:.1}",
                early.0 as f64 / 1024.0,
                late.0 as f64 / 1024.0
            ),
            format!("{:.1} → {:.1}", from as f64 / 1024.0, to as f64 / 1024.0),
            format!("{} → {}", early.1, late.1),
            if flat {
                "flat".into()
            } else {
                "GROWING".into()
            },
        ]);
    }
    let conns = |part: &[Sample]| {
        part.iter()
            .filter_map(|s| s.db_connections)
            .max()
            .unwrap_or(0)
    };
    verdicts.row(vec![
        "database connections".into(),
        "-".into(),
        "-".into(),
        format!("{} → {}", conns(quarter(1)), conns(quarter(3))),
        if conns(quarter(3)) <= conns(quarter(1)) + 2 {
            "flat".into()
        } else {
            "GROWING".into()
        },
    ]);
    println!("{verdicts}");
    let bad = ids
        .iter()
        .filter(|id| {
            !finals.get(*id).is_some_and(|r| {
                r.status == v1::RunStatus::Completed as i32
                    && r.completed_tasks == args.tasks as u64
            })
        })
        .count();
    println!("{} runs submitted, {} did not complete", ids.len(), bad);
    anyhow::ensure!(bad == 0, "{bad} runs did not complete");
    Ok(())
}
