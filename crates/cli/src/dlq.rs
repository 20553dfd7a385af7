//! `gauntlet dlq list|redrive`: the task batches the workers gave up on,
//! through the gateway's AdminService.

use std::time::{Duration, SystemTime};

use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1;

use crate::client;

/// Prints the dead-lettered batches, oldest first, one a line.
pub async fn list(
    config: &GauntletConfig,
    server: &str,
    run: Option<&str>,
    limit: u32,
) -> anyhow::Result<()> {
    let mut admin = client::Gateway::connect(server, config).await?.admin;
    let page = admin
        .list_dead_letters(v1::ListDeadLettersRequest {
            run_id: run.unwrap_or_default().into(),
            limit,
        })
        .await
        .map_err(|s| client::status_message("list dead letters", &s))?
        .into_inner();
    if page.dead_letters.is_empty() {
        match run {
            Some(run) => println!("no dead-lettered task batches of run {run}"),
            None => println!("no dead-lettered task batches"),
        }
        return Ok(());
    }
    println!(
        "{:<36}  {:>15}  {:>10}  {:<14}  {:>7}  {:>7}  run status",
        "run", "tasks", "deliveries", "reason", "age", "redrives"
    );
    let now = SystemTime::now();
    for d in &page.dead_letters {
        let run = if d.run_id.is_empty() {
            "(not a task batch)"
        } else {
            &d.run_id
        };
        let tasks = if d.task_count == 0 {
            "-".to_string()
        } else {
            format!(
                "{}-{} ({})",
                d.first_task,
                d.first_task + u64::from(d.task_count) - 1,
                d.task_count
            )
        };
        let deliveries = match d.delivery_count {
            0 => "?".to_string(),
            n => n.to_string(),
        };
        let reason = if d.reason.is_empty() { "?" } else { &d.reason };
        let age = d
            .dead_lettered_at
            .as_ref()
            .and_then(|t| {
                let at = SystemTime::UNIX_EPOCH
                    + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
                now.duration_since(at).ok()
            })
            .map_or("?".to_string(), age);
        let status = match v1::RunStatus::try_from(d.run_status) {
            Ok(v1::RunStatus::Unspecified) | Err(_) => "unknown run",
            Ok(s) => s.label(),
        };
        println!(
            "{run:<36}  {tasks:>15}  {deliveries:>10}  {reason:<14}  {age:>7}  {:>7}  {status}",
            d.redrives
        );
    }
    let shown = page.dead_letters.len() as u64;
    let tasks: u64 = page
        .dead_letters
        .iter()
        .map(|d| u64::from(d.task_count))
        .sum();
    println!(
        "{shown} dead-lettered batch{} ({tasks} tasks){}",
        if shown == 1 { "" } else { "es" },
        if page.total > shown {
            format!("; {} messages in the dead-letter queue in all", page.total)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Puts one run's dead-lettered batches (or every run's) back on the task
/// queue and says what moved.
pub async fn redrive(
    config: &GauntletConfig,
    server: &str,
    run: Option<&str>,
    all: bool,
) -> anyhow::Result<()> {
    let mut admin = client::Gateway::connect(server, config).await?.admin;
    let done = admin
        .redrive_dead_letters(v1::RedriveDeadLettersRequest {
            run_id: run.unwrap_or_default().into(),
            all,
        })
        .await
        .map_err(|s| client::status_message("re-drive", &s))?
        .into_inner();
    if done.redriven == 0 {
        match run {
            Some(run) => println!("run {run} has no dead-lettered task batches"),
            None => println!("no dead-lettered task batches to re-drive"),
        }
        return Ok(());
    }
    println!(
        "re-drove {} batch{} ({} tasks) back onto the task queue: run{} {}",
        done.redriven,
        if done.redriven == 1 { "" } else { "es" },
        done.tasks,
        if done.run_ids.len() == 1 { "" } else { "s" },
        done.run_ids.join(", ")
    );
    Ok(())
}

/// `45s`, `3m12s`, `2h05m`, `3d04h`.
pub(crate) fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        let age = |s| age(Duration::from_secs(s));
        assert_eq!(age(45), "45s");
        assert_eq!(age(192), "3m12s");
        assert_eq!(age(7500), "2h05m");
        assert_eq!(age(3 * 86400 + 4 * 3600 + 59), "3d04h");
    }
}
