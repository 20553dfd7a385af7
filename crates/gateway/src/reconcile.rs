//! The reconciler: no run stays `running` (or `queued`) without work in
//! flight. Every `reconcile.interval_secs` it looks at the unfinished runs
//! that have shown no sign of life (a result stored, a re-drive) for
//! `reconcile.stale_after_secs`, and at the runs whose task batches sit in
//! the dead-letter queue, and for each:
//!
//! - its dead batches, once dead that long, are re-driven: put back on the
//!   task queue with a fresh delivery count;
//! - when it is stale, has no dead batch, and the task queue holds no ready
//!   message (so none of its batches can be waiting there), the tasks it has
//!   no result for are lost: they are published again as new batches;
//! - each re-drive counts against `reconcile.max_redrives`; once they are
//!   spent, a stale run whose work is dead or lost ends `failed` with a
//!   reason naming how many tasks are missing and why.
//!
//! Re-driven and re-published batches carry `x-gauntlet-redrives`, so
//! workers treat them as redeliveries and call nothing for tasks already
//! stored; results are keyed by (run, task), so nothing is stored or counted
//! twice. A run is claimed in the database before it is re-driven
//! (`Store::claim_redrive`: at most once per `stale_after_secs`), so several
//! gateways never re-drive it twice for one stall. Dead batches of runs that have ended are discarded: no
//! worker would run them.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use chrono::Utc;
use gauntlet_bus::{BusError, DeadLetter, Disposition, Message, QueueName, REDRIVES_HEADER};
use gauntlet_config::ReconcileConfig;
use gauntlet_proto::internal::v1::TaskBatch;
use gauntlet_service::events::publish_progress;
use gauntlet_store::{RunRecord, RunStatus, StoreError, TaskRange};
use gauntlet_telemetry::metrics::Registry;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use uuid::Uuid;

use crate::Deps;

/// Most dead letters one pass looks at.
pub const MAX_DEAD_LETTERS: usize = 10_000;
/// Most stale runs one pass takes on; the rest wait for the next.
const MAX_STALE_RUNS: u32 = 100;
/// Most gaps of one run re-published in one pass.
const MAX_GAPS: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// A dead letter read as the task batch it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadBatch {
    pub run_id: Uuid,
    pub tasks: TaskRange,
    pub reason: Option<String>,
    /// Dead for at least `stale_after` (or for an unknown time).
    pub ripe: bool,
}

/// The run and task range a dead letter carries (for a batch of handed-back
/// tasks, the range they span); `None` when it is not a task batch this
/// build can read.
pub fn batch_of(letter: &DeadLetter) -> Option<(Uuid, TaskRange)> {
    let batch = TaskBatch::decode(letter.payload.as_slice()).ok()?;
    let run_id = Uuid::parse_str(&batch.run_id).ok()?;
    let first = i64::try_from(batch.first_task).ok()?;
    let count = match batch.tasks.last() {
        Some(&last) => i64::try_from(last).ok()? + 1 - first,
        None => i64::from(batch.count),
    };
    Some((run_id, TaskRange { first, count }))
}

impl DeadBatch {
    fn of(letter: &DeadLetter, now: SystemTime, stale_after: Duration) -> Option<Self> {
        let (run_id, tasks) = batch_of(letter)?;
        let ripe = letter.dead_lettered_at.is_none_or(|at| {
            now.duration_since(at)
                .is_ok_and(|dead_for| dead_for >= stale_after)
        });
        Some(Self {
            run_id,
            tasks,
            reason: letter.reason.clone(),
            ripe,
        })
    }
}

/// What to do about one unfinished run.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Its work may be in flight, or must wait to be re-driven.
    Wait,
    /// Re-drive its dead batches (`dead`) and/or publish again the tasks
    /// that are neither stored nor dead (`republish`).
    Redrive { dead: bool, republish: bool },
    /// End it `failed`, with this reason.
    Fail(String),
}

/// The rule, given what a pass sees of one unfinished run: its dead batches,
/// whether it is stale, and how many ready messages the task queue holds.
pub fn decide(
    run: &RunRecord,
    dead: &[DeadBatch],
    stale: bool,
    queue_ready: u64,
    config: &ReconcileConfig,
) -> Action {
    if run.completed_tasks >= run.total_tasks {
        return Action::Wait;
    }
    // Only with no ready message anywhere can none of its batches be waiting.
    let lost = stale && dead.is_empty() && queue_ready == 0;
    if run.redrives < config.max_redrives as i32 {
        if dead.iter().any(|d| d.ripe) {
            Action::Redrive {
                dead: true,
                republish: stale && queue_ready == 0,
            }
        } else if lost {
            Action::Redrive {
                dead: false,
                republish: true,
            }
        } else {
            Action::Wait
        }
    } else if stale && (!dead.is_empty() || lost) {
        // Spent, and quiet: the rest of the run is done, so failing it
        // stops nothing that could still finish.
        Action::Fail(failure_reason(run, dead, config))
    } else {
        Action::Wait
    }
}

/// Why a stuck run failed, in words a user can act on.
fn failure_reason(run: &RunRecord, dead: &[DeadBatch], config: &ReconcileConfig) -> String {
    let missing = run.total_tasks - run.completed_tasks;
    let why = if dead.is_empty() {
        format!(
            "none of their batches was queued, in flight or dead-lettered for {} s",
            config.stale_after_secs
        )
    } else {
        let reasons: BTreeSet<&str> = dead
            .iter()
            .map(|d| d.reason.as_deref().unwrap_or("reason unknown"))
            .collect();
        let batches = if dead.len() == 1 {
            "1 batch was".to_string()
        } else {
            format!("{} batches were", dead.len())
        };
        format!(
            "{batches} dead-lettered ({})",
            reasons.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    format!(
        "{missing} of {} tasks never completed: {why}, after {} re-drive{} \
         (reconcile.max_redrives = {})",
        run.total_tasks,
        run.redrives,
        if run.redrives == 1 { "" } else { "s" },
        config.max_redrives
    )
}

/// `missing` without the ranges in `dead`, in order.
pub fn subtract(missing: &[TaskRange], dead: &[TaskRange]) -> Vec<TaskRange> {
    let mut dead: Vec<TaskRange> = dead.to_vec();
    dead.sort();
    let mut out = Vec::new();
    for m in missing {
        let mut start = m.first;
        let end = m.end();
        for d in &dead {
            if d.end() <= start || d.first >= end {
                continue;
            }
            if d.first > start {
                out.push(TaskRange {
                    first: start,
                    count: d.first - start,
                });
            }
            start = start.max(d.end());
            if start >= end {
                break;
            }
        }
        if start < end {
            out.push(TaskRange {
                first: start,
                count: end - start,
            });
        }
    }
    out
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    /// Dead batches put back on the task queue.
    pub redriven_batches: usize,
    /// Tasks published again because they were lost.
    pub republished_tasks: u64,
    /// Runs ended `failed`.
    pub failed_runs: Vec<Uuid>,
    /// Dead batches of ended runs removed.
    pub discarded_batches: usize,
    /// Stored tests of uploads that never became a run, removed.
    pub swept_tests: u64,
}

impl PassReport {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Why a run whose upload stopped half way failed.
const UPLOAD_NEVER_FINISHED: &str = "the upload of its suite never finished";

/// How old an upload's tests must be, with no run, before they are swept.
const ORPHAN_UPLOAD_AGE: Duration = Duration::from_secs(3600);

pub struct Reconciler {
    deps: Deps,
    config: ReconcileConfig,
    batch_size: u32,
    metrics: Arc<Registry>,
}

impl Reconciler {
    /// `batch_size` is the tasks per re-published batch (`amqp.batch_size`).
    pub fn new(
        deps: Deps,
        config: ReconcileConfig,
        batch_size: u32,
        metrics: Arc<Registry>,
    ) -> Self {
        Self {
            deps,
            config,
            batch_size: batch_size.max(1),
            metrics,
        }
    }

    /// A pass every `interval_secs` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.config.interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(
            interval_secs = self.config.interval_secs,
            stale_after_secs = self.config.stale_after_secs,
            max_redrives = self.config.max_redrives,
            "reconciler started"
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pass = self.pass().instrument(tracing::debug_span!("reconcile"));
            match pass.await {
                Ok(report) if !report.is_empty() => info!(?report, "reconciled stuck runs"),
                Ok(_) => {}
                Err(error) => warn!(%error, "reconcile pass failed, trying again next time"),
            }
        }
    }

    /// One look at every stuck run, and what it takes to unstick them.
    pub async fn pass(&self) -> Result<PassReport, ReconcileError> {
        let (store, bus) = (&self.deps.store, &self.deps.bus);
        let stale_after = Duration::from_secs(self.config.stale_after_secs);
        let stale_before =
            Utc::now() - chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);

        let dead_total = bus.dead_letter_stats(QueueName::Tasks).await?.messages;
        let letters = if dead_total > 0 {
            bus.dead_letters(QueueName::Tasks, MAX_DEAD_LETTERS).await?
        } else {
            Vec::new()
        };
        let now = SystemTime::now();
        let mut dead: HashMap<Uuid, Vec<DeadBatch>> = HashMap::new();
        for letter in &letters {
            if let Some(batch) = DeadBatch::of(letter, now, stale_after) {
                dead.entry(batch.run_id).or_default().push(batch);
            }
        }

        let mut runs: HashMap<Uuid, RunRecord> = store
            .stale_runs(stale_before, MAX_STALE_RUNS)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        for run_id in dead.keys() {
            if !runs.contains_key(run_id)
                && let Some(run) = store.get_run(*run_id).await?
            {
                runs.insert(*run_id, run);
            }
        }
        if runs.is_empty() {
            // No run to look at, but orphaned tests all the same.
            let report = PassReport {
                swept_tests: self.sweep_orphans(stale_after).await?,
                ..PassReport::default()
            };
            self.count(&report);
            return Ok(report);
        }
        // Batches ready in either work queue (handed-back ones wait in
        // `Retries`).
        let queue_ready = bus.queue_stats(QueueName::Tasks).await?.messages
            + bus.queue_stats(QueueName::Retries).await?.messages;

        let mut report = PassReport::default();
        let mut redrive: HashSet<Uuid> = HashSet::new();
        let mut discard: HashSet<Uuid> = HashSet::new();
        for run in runs.values() {
            let its_dead = dead.get(&run.id).map(Vec::as_slice).unwrap_or_default();
            if run.status.is_terminal() {
                if !its_dead.is_empty() {
                    discard.insert(run.id);
                }
                continue;
            }
            let stale = run.active_at < stale_before;
            if run.is_uploading() {
                // Its gateway died while the suite was arriving: what
                // is missing can never be known.
                if stale && self.fail(run, UPLOAD_NEVER_FINISHED).await? {
                    report.failed_runs.push(run.id);
                    discard.insert(run.id);
                }
                continue;
            }
            match decide(run, its_dead, stale, queue_ready, &self.config) {
                Action::Wait => {
                    debug!(run_id = %run.id, stale, dead = its_dead.len(), queue_ready, "waiting");
                }
                Action::Fail(reason) => {
                    if self.fail(run, &reason).await? {
                        report.failed_runs.push(run.id);
                        discard.insert(run.id);
                    }
                }
                Action::Redrive {
                    dead: redrive_dead,
                    republish,
                } => {
                    // At most one re-drive per stall, however many gateways look.
                    let claim = store.claim_redrive(run.id, run.redrives, stale_before);
                    let Some(claimed) = claim.await? else {
                        debug!(run_id = %run.id, "another reconciler re-drives this run");
                        continue;
                    };
                    info!(
                        run_id = %run.id,
                        redrive = claimed.redrives,
                        max_redrives = self.config.max_redrives,
                        dead_batches = its_dead.len(),
                        missing = run.total_tasks - run.completed_tasks,
                        "re-driving a stuck run"
                    );
                    if redrive_dead {
                        redrive.insert(run.id);
                    }
                    if republish {
                        let dead_ranges: Vec<TaskRange> =
                            its_dead.iter().map(|d| d.tasks).collect();
                        report.republished_tasks += self.republish(&claimed, &dead_ranges).await?;
                    }
                }
            }
        }

        if !redrive.is_empty() || !discard.is_empty() {
            let sweep = bus
                .sweep_dead_letters(
                    QueueName::Tasks,
                    MAX_DEAD_LETTERS,
                    &|letter| match batch_of(letter) {
                        Some((run_id, _)) if redrive.contains(&run_id) => Disposition::Redrive,
                        Some((run_id, _)) if discard.contains(&run_id) => Disposition::Discard,
                        _ => Disposition::Keep,
                    },
                )
                .await?;
            report.redriven_batches = sweep.redriven.len();
            report.discarded_batches = sweep.discarded.len();
            if !sweep.discarded.is_empty() {
                info!(
                    batches = sweep.discarded.len(),
                    "discarded dead batches of runs that have ended"
                );
            }
        }
        report.swept_tests = self.sweep_orphans(stale_after).await?;
        self.count(&report);
        Ok(report)
    }

    /// Removes the tests stored by uploads that never became a run (their
    /// gateway died half way); an hour, or the stale time if longer, is far
    /// beyond any upload still under way. Returns the rows removed.
    async fn sweep_orphans(&self, stale_after: Duration) -> Result<u64, ReconcileError> {
        let orphaned = SystemTime::now() - stale_after.max(ORPHAN_UPLOAD_AGE);
        let since_epoch = orphaned
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let cut = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            since_epoch.as_secs(),
            since_epoch.subsec_nanos(),
        ));
        Ok(self.deps.store.sweep_orphan_tests(cut).await?)
    }

    /// Ends `run` as failed; false when it had ended meanwhile.
    async fn fail(&self, run: &RunRecord, reason: &str) -> Result<bool, ReconcileError> {
        let Some(failed) = self.deps.store.fail_run(run.id, reason).await? else {
            return Ok(false);
        };
        if failed.status != RunStatus::Failed || failed.status_reason != reason {
            return Ok(false);
        }
        warn!(run_id = %run.id, reason, "failing a stuck run");
        publish_progress(self.deps.bus.as_ref(), &failed).await;
        Ok(true)
    }

    /// Publishes again, as batches, the tasks of `run` with no result that
    /// are not in `dead`; returns how many.
    async fn republish(&self, run: &RunRecord, dead: &[TaskRange]) -> Result<u64, ReconcileError> {
        let missing = self.deps.store.missing_tasks(run.id, MAX_GAPS).await?;
        let lost = subtract(&missing, dead);
        let mut headers = gauntlet_telemetry::propagation::inject_current();
        headers.push((REDRIVES_HEADER.into(), run.redrives.to_string()));
        let size = i64::from(self.batch_size);
        let mut messages = Vec::new();
        let mut tasks = 0u64;
        for range in &lost {
            let mut first = range.first;
            while first < range.end() {
                let count = (range.end() - first).min(size);
                messages.push(Message {
                    payload: TaskBatch {
                        run_id: run.id.to_string(),
                        project_id: run.project_id.clone(),
                        first_task: first as u64,
                        count: count as u32,
                        ..TaskBatch::default()
                    }
                    .encode_to_vec(),
                    headers: headers.clone(),
                });
                tasks += count as u64;
                first += count;
            }
        }
        if messages.is_empty() {
            return Ok(0);
        }
        info!(run_id = %run.id, tasks, batches = messages.len(), "publishing lost tasks again");
        self.deps.bus.publish(QueueName::Tasks, messages).await?;
        Ok(tasks)
    }

    fn count(&self, report: &PassReport) {
        let m = &self.metrics;
        m.counter("gauntlet_reconciler_batches_redriven_total")
            .increment(report.redriven_batches as u64);
        m.counter("gauntlet_reconciler_tasks_republished_total")
            .increment(report.republished_tasks);
        m.counter("gauntlet_reconciler_runs_failed_total")
            .increment(report.failed_runs.len() as u64);
        m.counter("gauntlet_reconciler_dead_letters_discarded_total")
            .increment(report.discarded_batches as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: i64, count: i64) -> TaskRange {
        TaskRange { first, count }
    }

    fn run(total: i64, completed: i64, redrives: i32) -> RunRecord {
        let now = Utc::now();
        RunRecord {
            trace_id: String::new(),
            id: Uuid::now_v7(),
            project_id: "default".into(),
            suite_id: Uuid::now_v7(),
            description: String::new(),
            label: String::new(),
            status: RunStatus::Running,
            options: serde_json::json!({}),
            total_tasks: total,
            completed_tasks: completed,
            passed: completed,
            failed: 0,
            errors: 0,
            cost_usd: 0.0,
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            status_reason: String::new(),
            active_at: now,
            redrives,
            redriven_at: None,
            rolled_up: false,
        }
    }

    fn dead(run: &RunRecord, first: i64, ripe: bool) -> DeadBatch {
        DeadBatch {
            run_id: run.id,
            tasks: range(first, 10),
            reason: Some("delivery_limit".into()),
            ripe,
        }
    }

    fn config(max_redrives: u32) -> ReconcileConfig {
        ReconcileConfig {
            max_redrives,
            stale_after_secs: 900,
            ..ReconcileConfig::default()
        }
    }

    #[test]
    fn subtracting_dead_ranges_leaves_the_lost_ones() {
        let missing = [range(0, 10), range(20, 30), range(60, 5)];
        assert_eq!(subtract(&missing, &[]), missing);
        assert_eq!(
            subtract(&missing, &[range(25, 10), range(0, 10), range(40, 100)]),
            [range(20, 5), range(35, 5)]
        );
        assert_eq!(
            subtract(&[range(0, 10)], &[range(3, 2)]),
            [range(0, 3), range(5, 5)]
        );
        assert!(subtract(&[range(5, 5)], &[range(0, 50)]).is_empty());
    }

    #[test]
    fn ripe_dead_batches_are_redriven_even_while_the_run_progresses() {
        let r = run(100, 50, 0);
        let action = decide(&r, &[dead(&r, 0, true)], false, 7, &config(3));
        assert_eq!(
            action,
            Action::Redrive {
                dead: true,
                republish: false
            }
        );
        // Stale with nothing ready anywhere: what is neither stored nor dead
        // goes out again too.
        let action = decide(&r, &[dead(&r, 0, true)], true, 0, &config(3));
        assert_eq!(
            action,
            Action::Redrive {
                dead: true,
                republish: true
            }
        );
    }

    #[test]
    fn fresh_dead_batches_wait_for_their_outage_to_pass() {
        let r = run(100, 50, 0);
        assert_eq!(
            decide(&r, &[dead(&r, 0, false)], true, 0, &config(3)),
            Action::Wait
        );
    }

    #[test]
    fn a_quiet_run_is_lost_only_when_nothing_is_ready_in_the_queue() {
        let r = run(100, 50, 0);
        assert_eq!(
            decide(&r, &[], true, 0, &config(3)),
            Action::Redrive {
                dead: false,
                republish: true
            }
        );
        // Its batches may be waiting behind those.
        assert_eq!(decide(&r, &[], true, 12, &config(3)), Action::Wait);
        // A run that stored something lately is busy.
        assert_eq!(decide(&r, &[], false, 0, &config(3)), Action::Wait);
    }

    #[test]
    fn a_stuck_run_fails_once_its_redrives_are_spent_and_it_is_quiet() {
        let r = run(200, 188, 3);
        let Action::Fail(reason) = decide(&r, &[dead(&r, 190, true)], true, 5, &config(3)) else {
            panic!("should fail");
        };
        assert_eq!(
            reason,
            "12 of 200 tasks never completed: 1 batch was dead-lettered (delivery_limit), \
             after 3 re-drives (reconcile.max_redrives = 3)"
        );
        let Action::Fail(reason) = decide(&r, &[], true, 0, &config(3)) else {
            panic!("should fail");
        };
        assert!(
            reason.starts_with(
                "12 of 200 tasks never completed: none of their batches was queued, in flight \
                 or dead-lettered for 900 s"
            ),
            "{reason}"
        );
        // Still busy elsewhere, or maybe queued: not yet.
        assert_eq!(
            decide(&r, &[dead(&r, 190, true)], false, 0, &config(3)),
            Action::Wait
        );
        assert_eq!(decide(&r, &[], true, 1, &config(3)), Action::Wait);
        // With re-drives off, the first stall fails it.
        let fresh = run(200, 188, 0);
        assert!(matches!(
            decide(&fresh, &[dead(&fresh, 190, false)], true, 0, &config(0)),
            Action::Fail(_)
        ));
    }

    #[test]
    fn a_run_with_every_task_stored_is_left_alone() {
        let r = run(10, 10, 0);
        assert_eq!(decide(&r, &[], true, 0, &config(3)), Action::Wait);
    }
}
