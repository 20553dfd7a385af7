//! `load many-runs` and `load spike`: runs submitted together or in a
//! burst, every one of them completing with its counters right, and how
//! evenly they progressed.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use gauntlet_proto::v1;
use tokio::time::Instant;

use super::{CommonArgs, Env, Latencies, api::humantime, list_runs, percentile, submit, wait_all};
use crate::{
    table::Table,
    verify::{self, Rows},
};

#[derive(Debug, Clone, clap::Args)]
pub struct ManyRunsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// Tasks per run.
    #[arg(long, default_value_t = 1000)]
    pub tasks: usize,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 10)]
    pub submit_parallel: usize,
    /// The most the whole thing may take.
    #[arg(long, value_parser = humantime, default_value = "10m")]
    pub deadline: Duration,
    /// Skip reading every result back (one row per task is then checked
    /// through the run's counters only).
    #[arg(long)]
    pub no_rows: bool,
}

/// Progress of every run when the whole reached a share of its tasks.
struct Spread {
    share: f64,
    at: Duration,
    min: f64,
    median: f64,
    max: f64,
    jain: f64,
}

/// Jain's fairness index of `xs`: 1 when all are equal, 1/n when one has all.
fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        1.0
    } else {
        sum * sum / (xs.len() as f64 * squares)
    }
}

pub async fn many_runs(args: ManyRunsArgs) -> anyhow::Result<()> {
    let env = Env::start(&args.common).await?;
    let result = many_runs_in(&args, &env).await;
    env.stop().await;
    result
}

async fn many_runs_in(args: &ManyRunsArgs, env: &Env) -> anyhow::Result<()> {
    let gateway = env.stack.gateway().await?;
    let started = Instant::now();
    let submits = Latencies::default();
    let ids: Vec<String> = futures::stream::iter(0..args.runs)
        .map(|_| {
            let mut g = gateway.clone();
            let suite = env.suite(args.tasks);
            let submits = submits.clone();
            async move {
                let at = Instant::now();
                let r = submit(&mut g, &suite).await;
                submits.record("SubmitRun", at.elapsed(), r.is_ok());
                r
            }
        })
        .buffer_unordered(args.submit_parallel.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let submitted = started.elapsed();
    let total = (args.runs * args.tasks) as f64;

    // Sample every run's progress until all have ended.
    let mut g = gateway.clone();
    let mut marks = vec![0.25, 0.5, 0.75];
    let mut spreads = Vec::new();
    let mut ended_at: BTreeMap<String, Duration> = BTreeMap::new();
    let mut last: BTreeMap<String, v1::Run> = BTreeMap::new();
    let deadline = started + args.deadline;
    while ended_at.len() < ids.len() && Instant::now() < deadline {
        let runs = list_runs(&mut g).await?;
        let now = started.elapsed();
        let mut progress = Vec::with_capacity(ids.len());
        let mut done = 0u64;
        for r in runs.into_iter().filter(|r| ids.contains(&r.id)) {
            done += r.completed_tasks;
            progress.push(r.completed_tasks as f64 / r.total_tasks.max(1) as f64);
            if v1::RunStatus::is_terminal_value(r.status) {
                ended_at.entry(r.id.clone()).or_insert(now);
            }
            last.insert(r.id.clone(), r);
        }
        while let Some(&share) = marks.first() {
            if done as f64 >= share * total {
                let mut p = progress.clone();
                spreads.push(Spread {
                    share,
                    at: now,
                    min: percentile(&mut p, 0.0),
                    median: percentile(&mut p, 0.5),
                    max: percentile(&mut p, 1.0),
                    jain: jain(&progress),
                });
                marks.remove(0);
            } else {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wall = started.elapsed();

    let mut completed_ok = 0;
    let mut row_problems = 0;
    for id in &ids {
        let Some(run) = last.get(id) else { continue };
        let rows = if args.no_rows {
            Rows {
                rows: run.completed_tasks,
                passed: run.passed,
                failed: run.failed,
                errors: run.errors,
                ..Rows::default()
            }
        } else {
            Rows::of(&verify::results(&mut g, id).await?, args.tasks as u64)
        };
        let checks = verify::run_checks(run, &rows, args.tasks as u64);
        if checks.iter().all(|c| c.ok) && run.passed == args.tasks as u64 {
            completed_ok += 1;
        } else {
            row_problems += 1;
            eprintln!("run {id}: {checks:?}");
        }
    }
    let (queued, dead) = verify::queue_depths(&env.backends.amqp_url).await?;

    let mut finish: Vec<f64> = ended_at.values().map(Duration::as_secs_f64).collect();
    println!(
        "{} runs × {} tasks, {} worker(s), {} calls in flight each, mock at {} ms",
        args.runs,
        args.tasks,
        args.common.workers,
        args.common.max_in_flight,
        args.common.latency_ms
    );
    println!("{}", submits.table(submitted.as_secs_f64()));
    let mut t = Table::new(&["figure", "value"]);
    t.row(vec![
        "all submitted after".into(),
        format!("{:.1} s", submitted.as_secs_f64()),
    ]);
    t.row(vec![
        "last run ended after".into(),
        format!("{:.1} s", wall.as_secs_f64()),
    ]);
    t.row(vec![
        "tasks/s (submit of the first → end of the last)".into(),
        format!("{:.0}", total / wall.as_secs_f64()),
    ]);
    t.row(vec![
        "runs ended: first / median / last".into(),
        format!(
            "{:.1} / {:.1} / {:.1} s",
            percentile(&mut finish, 0.0),
            percentile(&mut finish, 0.5),
            percentile(&mut finish, 1.0)
        ),
    ]);
    for s in &spreads {
        t.row(vec![
            format!(
                "progress of each run when {:.0} % of all tasks were done ({:.1} s)",
                s.share * 100.0,
                s.at.as_secs_f64()
            ),
            format!(
                "min {:.0} %, median {:.0} %, max {:.0} %, Jain index {:.2}",
                s.min * 100.0,
                s.median * 100.0,
                s.max * 100.0,
                s.jain
            ),
        ]);
    }
    t.row(vec![
        "runs completed, every task stored once and passing".into(),
        format!(
            "{completed_ok} of {} ({row_problems} with problems)",
            ids.len()
        ),
    ]);
    t.row(vec![
        "task queue / dead-letter queue left".into(),
        format!("{queued} / {dead}"),
    ]);
    t.row(vec![
        "mock calls".into(),
        env.mock.stats().requests.to_string(),
    ]);
    println!("{t}");
    anyhow::ensure!(
        completed_ok == ids.len(),
        "{row_problems} runs did not complete cleanly"
    );
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct SpikeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Submissions per second outside the spike.
    #[arg(long, default_value_t = 1.0)]
    pub base_rate: f64,
    /// The spike's rate as a multiple of the base rate.
    #[arg(long, default_value_t = 10.0)]
    pub factor: f64,
    #[arg(long, value_parser = humantime, default_value = "10s")]
    pub before: Duration,
    #[arg(long, value_parser = humantime, default_value = "30s")]
    pub spike: Duration,
    #[arg(long, value_parser = humantime, default_value = "20s")]
    pub after: Duration,
    /// Tasks per run.
    #[arg(long, default_value_t = 500)]
    pub tasks: usize,
    /// The most the runs may take to end after the last submission.
    #[arg(long, value_parser = humantime, default_value = "10m")]
    pub drain_deadline: Duration,
}

pub async fn spike(args: SpikeArgs) -> anyhow::Result<()> {
    let env = Env::start(&args.common).await?;
    let result = spike_in(&args, &env).await;
    env.stop().await;
    result
}

async fn spike_in(args: &SpikeArgs, env: &Env) -> anyhow::Result<()> {
    let gateway = env.stack.gateway().await?;
    let phases = [
        ("before", args.base_rate, args.before),
        ("spike", args.base_rate * args.factor, args.spike),
        ("after", args.base_rate, args.after),
    ];
    let submits = Latencies::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, Instant, String)>();
    // While submitting and draining: the broker's queue depth each second,
    // and when each run (the database holds only this test's) was first
    // seen ended.
    let amqp_url = env.backends.amqp_url.clone();
    let sampling = Arc::new(AtomicBool::new(false));
    let ended_seen = Arc::new(std::sync::Mutex::new(BTreeMap::<String, Instant>::new()));
    let sampler = {
        let stop = sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok((q, _)) = verify::queue_depths(&amqp_url).await {
                    peak = peak.max(q);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            peak
        })
    };
    let watcher = {
        let (stop, seen, mut g) = (sampling.clone(), ended_seen.clone(), gateway.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(runs) = list_runs(&mut g).await {
                    let now = Instant::now();
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    for r in runs
                        .iter()
                        .filter(|r| v1::RunStatus::is_terminal_value(r.status))
                    {
                        seen.entry(r.id.clone()).or_insert(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let started = Instant::now();
    for (phase, rate, duration) in phases {
        let suite = env.suite(args.tasks);
        let text = suite.json();
        super::arrivals(rate, duration, |_, due| {
            let mut g = gateway.clone();
            let submits = submits.clone();
            let tx = tx.clone();
            let text = text.clone();
            tokio::spawn(async move {
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
                submits.record(phase, due.elapsed(), r.is_ok());
                if let Ok(r) = r {
                    let _ = tx.send((phase, due, r.run_id));
                }
            });
        })
        .await;
    }
    let submitted_for = started.elapsed();
    super::drain(&submits.in_flight, Duration::from_secs(60)).await;
    drop(tx);
    let mut runs: Vec<(&'static str, Instant, String)> = Vec::new();
    while let Some(r) = rx.recv().await {
        runs.push(r);
    }
    let ids: Vec<String> = runs.iter().map(|r| r.2.clone()).collect();
    let mut g = gateway.clone();
    let (finals, _) = wait_all(&mut g, &ids, args.drain_deadline).await?;
    // One more round of the watcher, so it has seen every run end.
    tokio::time::sleep(Duration::from_millis(600)).await;
    sampling.store(true, Ordering::Relaxed);
    let peak_queue = sampler.await.unwrap_or(0);
    let _ = watcher.await;
    let ended_at = ended_seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let all_ended = ended_at
        .values()
        .max()
        .map_or(started.elapsed(), |t| t.duration_since(started));
    let (queued, dead) = verify::queue_depths(&env.backends.amqp_url).await?;

    println!(
        "spike: {} runs/s × {:?}, then {} runs/s × {:?}, then {} runs/s × {:?}; {} tasks a run; {} worker(s), {} calls in flight each, mock at {} ms",
        args.base_rate,
        args.before,
        args.base_rate * args.factor,
        args.spike,
        args.base_rate,
        args.after,
        args.tasks,
        args.common.workers,
        args.common.max_in_flight,
        args.common.latency_ms
    );
    println!(
        "submit latency (from when each was due):\n{}",
        submits.table(submitted_for.as_secs_f64())
    );
    let mut t = Table::new(&[
        "phase",
        "runs",
        "completed ok",
        "turnaround p50 s",
        "p99 s",
        "max s",
    ]);
    for (phase, _, _) in phases {
        let mine: Vec<&(&str, Instant, String)> = runs.iter().filter(|r| r.0 == phase).collect();
        let mut turnaround: Vec<f64> = mine
            .iter()
            .filter_map(|(_, due, id)| Some(ended_at.get(id)?.duration_since(*due).as_secs_f64()))
            .collect();
        let ok = mine
            .iter()
            .filter(|(_, _, id)| {
                finals.get(id).is_some_and(|r| {
                    r.status == v1::RunStatus::Completed as i32
                        && r.completed_tasks == args.tasks as u64
                        && r.passed == args.tasks as u64
                })
            })
            .count();
        t.row(vec![
            phase.to_string(),
            mine.len().to_string(),
            ok.to_string(),
            format!("{:.1}", percentile(&mut turnaround, 0.5)),
            format!("{:.1}", percentile(&mut turnaround, 0.99)),
            format!("{:.1}", percentile(&mut turnaround, 1.0)),
        ]);
    }
    println!("{t}");
    println!(
        "last submission after {:.1} s, last run ended after {:.1} s; peak task-queue depth (ready batches, sampled each second) {peak_queue}; left in queue / DLQ: {queued} / {dead}",
        submitted_for.as_secs_f64(),
        all_ended.as_secs_f64()
    );
    let bad = ids
        .iter()
        .filter(|id| {
            !finals.get(*id).is_some_and(|r| {
                r.status == v1::RunStatus::Completed as i32
                    && r.completed_tasks == args.tasks as u64
            })
        })
        .count();
    anyhow::ensure!(
        bad == 0 && dead == 0,
        "{bad} runs did not complete, {dead} dead-lettered"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index_is_one_when_even_and_falls_with_skew() {
        assert!((jain(&[0.5, 0.5, 0.5]) - 1.0).abs() < 1e-9);
        assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-9);
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BehindArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Tasks of the long run, submitted first.
    #[arg(long, default_value_t = 200_000)]
    pub long: usize,
    /// Short runs submitted while it goes, one every `--every`.
    #[arg(long, default_value_t = 5)]
    pub shorts: usize,
    /// Tasks of each short run.
    #[arg(long, default_value_t = 100)]
    pub short: usize,
    #[arg(long, value_parser = humantime, default_value = "2s")]
    pub every: Duration,
    /// The most the whole thing may take.
    #[arg(long, value_parser = humantime, default_value = "10m")]
    pub deadline: Duration,
    /// Submit the short runs as another project (a key of its own), so
    /// the window is split between projects, not only between runs.
    #[arg(long)]
    pub other_project: bool,
}

/// `load behind`: short runs submitted while a long one goes (an
/// interactive run behind a nightly one): how long each takes from its
/// submission to its end, and what they cost the long run.
pub async fn behind(args: BehindArgs) -> anyhow::Result<()> {
    let env = Env::start(&args.common).await?;
    let result = behind_in(&args, &env).await;
    env.stop().await;
    result
}

async fn behind_in(args: &BehindArgs, env: &Env) -> anyhow::Result<()> {
    let mut long_gateway = env.stack.gateway().await?;
    let mut gateway = if args.other_project {
        env.stack.project_gateway("shorts").await?
    } else {
        env.stack.gateway().await?
    };
    let started = Instant::now();
    let long = submit(&mut long_gateway, &env.suite(args.long)).await?;
    let mut shorts = Vec::with_capacity(args.shorts);
    // When each short run was first seen ended, polled every 100 ms while
    // the next ones are submitted.
    let mut short_ends: BTreeMap<String, Instant> = BTreeMap::new();
    let mut short_runs: BTreeMap<String, v1::Run> = BTreeMap::new();
    let deadline = started + args.deadline;
    for n in 0..=args.shorts {
        let next = started + args.every * (n as u32 + 1);
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the short runs did not end in time"
            );
            let now = Instant::now();
            for r in list_runs(&mut gateway).await? {
                if shorts.iter().any(|(id, _)| *id == r.id) {
                    if v1::RunStatus::is_terminal_value(r.status) {
                        short_ends.entry(r.id.clone()).or_insert(now);
                    }
                    short_runs.insert(r.id.clone(), r);
                }
            }
            // The next one is submitted when due; after the last, all
            // are waited for.
            let waiting = if n < args.shorts {
                Instant::now() < next
            } else {
                short_ends.len() < shorts.len()
            };
            if !waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if n < args.shorts {
            let id = submit(&mut gateway, &env.suite(args.short)).await?;
            shorts.push((id, Instant::now()));
        }
    }
    let ids: Vec<String> = shorts.iter().map(|(id, _)| id.clone()).collect();
    let (long_runs, long_ends) = wait_all(
        &mut long_gateway,
        std::slice::from_ref(&long),
        args.deadline,
    )
    .await?;

    let mut turnaround: Vec<f64> = shorts
        .iter()
        .filter_map(|(id, at)| Some(short_ends.get(id)?.duration_since(*at).as_secs_f64()))
        .collect();
    let long_wall = long_ends
        .get(&long)
        .map(|end| end.duration_since(started).as_secs_f64());
    let mut problems = Vec::new();
    for (id, tasks) in ids
        .iter()
        .map(|id| (id, args.short))
        .chain([(&long, args.long)])
    {
        let run = short_runs.get(id).or_else(|| long_runs.get(id));
        let ok = run.is_some_and(|r| {
            r.status == v1::RunStatus::Completed as i32 && r.passed == tasks as u64
        });
        if !ok {
            problems.push(format!("run {id}: {run:?}"));
        }
    }
    println!(
        "{} short runs of {} tasks{}, one every {:?}, behind a run of {} tasks; {} worker(s), {} calls in flight each, mock at {} ms",
        args.shorts,
        args.short,
        if args.other_project {
            " of another project"
        } else {
            ""
        },
        args.every,
        args.long,
        args.common.workers,
        args.common.max_in_flight,
        args.common.latency_ms
    );
    let mut t = Table::new(&["figure", "value"]);
    t.row(vec![
        "short runs, submission → end: min / median / max".into(),
        if turnaround.is_empty() {
            "none ended".into()
        } else {
            format!(
                "{:.2} / {:.2} / {:.2} s",
                percentile(&mut turnaround, 0.0),
                percentile(&mut turnaround, 0.5),
                percentile(&mut turnaround, 1.0)
            )
        },
    ]);
    t.row(vec![
        "long run ended after (tasks/s)".into(),
        long_wall.map_or("did not end".into(), |wall| {
            format!("{wall:.1} s ({:.0})", args.long as f64 / wall)
        }),
    ]);
    t.row(vec![
        "runs completed, every task passing".into(),
        format!("{} of {}", ids.len() + 1 - problems.len(), ids.len() + 1),
    ]);
    println!("{t}");
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
