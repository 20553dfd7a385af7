//! What a user would check after a run: its final status, one stored result
//! per task (no gaps, no duplicates), counters that agree with the rows, and
//! nothing left in the task queue or its dead-letter queue.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use gauntlet_bus::{AmqpBus, Bus, QueueName};
use gauntlet_cli::client::{self, Gateway};
use gauntlet_proto::v1;
use tokio::time::Instant;

/// One named pass/fail verdict with the figures behind it.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &'static str, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok,
            detail: detail.into(),
        }
    }
}

/// `GetRun`, retried while the gateway or its database is unavailable.
pub async fn get_run(
    gateway: &mut Gateway,
    run_id: &str,
    within: Duration,
) -> anyhow::Result<v1::Run> {
    let deadline = Instant::now() + within;
    loop {
        match gateway
            .runs
            .get_run(v1::GetRunRequest {
                run_id: run_id.to_string(),
            })
            .await
        {
            Ok(run) => return Ok(run.into_inner()),
            Err(status) if Instant::now() >= deadline => {
                return Err(anyhow::anyhow!("GetRun {run_id}: {status}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub fn ended(run: &v1::Run) -> bool {
    v1::RunStatus::is_terminal_value(run.status)
}

/// Polls the run (every 100 ms) until `done` holds for it, for at most `within`.
pub async fn wait_run(
    gateway: &mut Gateway,
    run_id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&v1::Run) -> bool,
) -> anyhow::Result<v1::Run> {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        // The gateway answers Unavailable while its database is down.
        if let Ok(run) = gateway
            .runs
            .get_run(v1::GetRunRequest {
                run_id: run_id.to_string(),
            })
            .await
        {
            let run = run.into_inner();
            if done(&run) {
                return Ok(run);
            }
            last = Some(run);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{what}: not within {within:?}; last seen {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every stored result's task index and status, page by page.
pub async fn results(gateway: &mut Gateway, run_id: &str) -> anyhow::Result<Vec<(u64, i32)>> {
    let pages = client::result_pages(
        gateway.runs.clone(),
        run_id.to_string(),
        v1::ResultStatus::Unspecified,
        1000,
    );
    futures::pin_mut!(pages);
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.context("ListResults")?;
        out.extend(page.results.iter().map(|r| (r.task_index, r.status)));
    }
    Ok(out)
}

/// How the stored rows compare with the task count and the run's counters.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub rows: u64,
    pub duplicates: u64,
    pub missing: u64,
    pub passed: u64,
    pub failed: u64,
    pub errors: u64,
}

impl Rows {
    pub fn of(results: &[(u64, i32)], total: u64) -> Self {
        let mut seen = vec![0u32; total as usize];
        let mut rows = Rows {
            rows: results.len() as u64,
            ..Rows::default()
        };
        for &(task, status) in results {
            match seen.get_mut(task as usize) {
                Some(n) => {
                    *n += 1;
                    if *n > 1 {
                        rows.duplicates += 1;
                    }
                }
                // A result for a task the run does not have counts as a duplicate.
                None => rows.duplicates += 1,
            }
            match v1::ResultStatus::try_from(status) {
                Ok(v1::ResultStatus::Pass) => rows.passed += 1,
                Ok(v1::ResultStatus::Fail) => rows.failed += 1,
                _ => rows.errors += 1,
            }
        }
        rows.missing = seen.iter().filter(|n| **n == 0).count() as u64;
        rows
    }
}

/// The checks every run must pass: `completed`, one row per task, counters
/// equal to the rows.
pub fn run_checks(run: &v1::Run, rows: &Rows, total: u64) -> Vec<Check> {
    let status = v1::RunStatus::try_from(run.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("RUN_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| run.status.to_string());
    vec![
        Check::new(
            "final status completed",
            run.status == v1::RunStatus::Completed as i32,
            status,
        ),
        Check::new(
            "one result per task",
            rows.rows == total && rows.duplicates == 0 && rows.missing == 0,
            format!(
                "{} rows for {total} tasks, {} duplicated, {} missing",
                rows.rows, rows.duplicates, rows.missing
            ),
        ),
        Check::new(
            "counters equal rows",
            run.completed_tasks == rows.rows
                && run.total_tasks == total
                && (run.passed, run.failed, run.errors) == (rows.passed, rows.failed, rows.errors),
            format!(
                "run says {} done ({} pass, {} fail, {} error); rows {} ({} pass, {} fail, {} error)",
                run.completed_tasks,
                run.passed,
                run.failed,
                run.errors,
                rows.rows,
                rows.passed,
                rows.failed,
                rows.errors
            ),
        ),
    ]
}

/// Messages left in the task queue and in its dead-letter queue.
pub async fn queue_depths(amqp_url: &str) -> anyhow::Result<(u64, u64)> {
    let bus = AmqpBus::connect(amqp_url, 5)
        .await
        .context("connect to the broker")?;
    let tasks = bus.queue_stats(QueueName::Tasks).await?.messages;
    let dead = bus.dead_letter_stats(QueueName::Tasks).await?.messages;
    bus.close().await;
    Ok((tasks, dead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_count_gaps_and_duplicates() {
        let pass = v1::ResultStatus::Pass as i32;
        let error = v1::ResultStatus::Error as i32;
        let rows = Rows::of(&[(0, pass), (2, error), (2, pass), (7, pass)], 4);
        assert_eq!(rows.rows, 4);
        assert_eq!(rows.duplicates, 2, "task 2 twice and task 7 of 4");
        assert_eq!(rows.missing, 2, "tasks 1 and 3");
        assert_eq!((rows.passed, rows.errors), (3, 1));
    }

    #[test]
    fn a_completed_run_with_every_row_passes_its_checks() {
        let run = v1::Run {
            status: v1::RunStatus::Completed as i32,
            total_tasks: 2,
            completed_tasks: 2,
            passed: 2,
            ..Default::default()
        };
        let pass = v1::ResultStatus::Pass as i32;
        let checks = run_checks(&run, &Rows::of(&[(0, pass), (1, pass)], 2), 2);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        let short = run_checks(&run, &Rows::of(&[(0, pass)], 2), 2);
        assert!(!short.iter().all(|c| c.ok));
    }
}
