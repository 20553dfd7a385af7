//! One task batch: render, call, grade every task (calls bounded by the
//! run's and the worker-wide in-flight limits), write the results as they
//! come in multi-row statements, then ack. A write that fails keeps its
//! answers and tries again with backoff while the batch stays held, and
//! the worker starts no new call until a write goes through (the answers
//! are paid for); only after `worker.store_retry_secs` is the batch given
//! back. The (run_id, task_index) key makes any retry insert only what is
//! missing, and a redelivered batch calls the provider only for tasks with
//! no stored result. A batch of a cancelled run stops calling, keeps what it
//! has, and is acked; so does a batch of a run whose results reached its cost
//! cap, after marking the run `cost_limited`.
//!
//! A task whose provider asks for a wait of a second or more (a 429 or 503
//! with `Retry-After`) is not waited on in place: the batch writes the rest,
//! hands such tasks back as a smaller batch through a delay queue into
//! `gauntlet.tasks.retry` (after the publish is confirmed) and is acked, so no prefetch slot is held by a
//! batch that only waits. After [`MAX_DEFERRALS`] hand-backs a task waits in
//! place like any retry.
//!
//! A batch the worker gives up on goes to the dead-letter queue with its
//! reason in a log line and in `gauntlet_batches_dead_lettered_total{reason}`
//! (a nack cannot add headers; the broker's `x-death` header says only
//! `rejected` or `delivery_limit`).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::{StreamExt, stream::FuturesUnordered};
use gauntlet_bus::Delivery;
use gauntlet_core::grading::ProviderOutput;
use gauntlet_proto::internal::v1::TaskBatch;
use gauntlet_providers::retry;
use gauntlet_service::events::publish_progress;
use gauntlet_store::{NewResult, ResultStatus, RunRecord, RunStatus};
use gauntlet_telemetry::{metrics::Registry, propagation};
use opentelemetry::{
    Context, KeyValue,
    trace::{
        Span as _, SpanContext, Status, TraceContextExt as _, TraceFlags, TraceId, Tracer as _,
    },
};
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, field::Empty, info, info_span, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::{
    Deps,
    gate::StoreGate,
    grading,
    runs::{PlanError, RunCache, RunPlan, RunState},
};

/// The shortest provider-asked wait a task is handed back for rather than
/// waited out in place.
const DEFER_WAITS_FROM: Duration = Duration::from_secs(1);
/// How many times a task may be handed back; then it waits in place.
const MAX_DEFERRALS: u32 = 5;

/// What became of one task.
enum Outcome {
    /// Its result, to be written.
    Row(Box<NewResult>),
    /// The provider asked for a wait of `wait` first: hand it back.
    Deferred { task: u64, wait: Duration },
    /// Not a task of the run (an index past its end).
    Skip,
}

/// How often a batch writes the results it has so far.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How often a batch looks whether its run was cancelled or reached its cost cap.
const CANCEL_CHECK_EVERY: Duration = Duration::from_millis(250);

pub struct Worker {
    pub metrics: Arc<Registry>,
    pub deps: Deps,
    pub runs: RunCache,
    pub in_flight: Arc<Semaphore>,
    /// The queue's `x-delivery-limit`: a delivery that has been returned this
    /// many times is on its last attempt.
    pub delivery_limit: u32,
    /// Cancelled at the end of the shutdown grace period: unfinished batches
    /// write what they have and requeue.
    pub abort: CancellationToken,
    /// Closed while result writes fail: no new provider calls start.
    pub store_gate: Arc<StoreGate>,
    /// How long a batch retries writing the answers it has before it gives
    /// the batch back (`worker.store_retry_secs`).
    pub store_patience: Duration,
    /// Which tasks get spans of their own.
    pub sampling: TaskSampling,
}

/// The service the worker's spans are exported as.
const SERVICE: &str = "gauntlet-worker";

/// Which tasks get a span of their own: a run's first `first`, and a
/// `ratio` of the rest, picked by a hash of run and task so every worker
/// (and every redelivery) picks the same. Failed and errored tasks get one
/// regardless ([`Worker::run_task`]).
#[derive(Debug, Clone, Copy)]
pub struct TaskSampling {
    pub ratio: f64,
    pub first: u64,
}

impl TaskSampling {
    pub fn keeps(&self, run_id: Uuid, index: u64) -> bool {
        if index < self.first || self.ratio >= 1.0 {
            return true;
        }
        if self.ratio <= 0.0 {
            return false;
        }
        let (high, low) = run_id.as_u64_pair();
        // SplitMix64's finalizer: uniform enough to sample by.
        let mut x = index ^ high ^ low.rotate_left(32);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x as f64) < self.ratio * (u64::MAX as f64)
    }
}

/// Longest a result write may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// First wait before writing again after a failed write; doubles to [`MAX_WRITE_BACKOFF`].
const FIRST_WRITE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(5);

/// A batch's failing store calls (its result writes, and the reads it
/// needs before it calls): when to try again, and since when they fail.
struct WriteRetry {
    since: tokio::time::Instant,
    next: tokio::time::Instant,
    backoff: Duration,
}

impl WriteRetry {
    fn new() -> Self {
        let now = tokio::time::Instant::now();
        Self {
            since: now,
            next: now + FIRST_WRITE_BACKOFF,
            backoff: FIRST_WRITE_BACKOFF,
        }
    }

    fn failed_again(&mut self) {
        self.backoff = (self.backoff * 2).min(MAX_WRITE_BACKOFF);
        self.next = tokio::time::Instant::now() + self.backoff;
    }
}

fn state_of(run: &RunRecord) -> RunState {
    RunState {
        status: run.status,
        cost_usd: run.cost_usd,
    }
}

/// Whether a batch should stop before its tasks are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Go,
    /// The run ended (cancelled, cost-limited, failed): drop what is left.
    Stop,
    /// The run must be limited but that could not be stored: try again later.
    Retry,
    /// The worker is shutting down: keep what is done, give the batch back.
    Shutdown,
}

impl Worker {
    /// Every reason a batch is dead-lettered for, each series shown at 0
    /// from the start (a rule's `increase()` misses a series' first sample).
    pub const DEAD_LETTER_REASONS: &[&str] = &[
        "undecodable",
        "malformed_run_id",
        "unknown_run",
        "unusable_suite",
        "store_unavailable",
        "write_failed",
        "defer_failed",
    ];

    /// Routes `delivery` to the dead-letter queue, saying why.
    async fn dead_letter(&self, delivery: Delivery, reason: &'static str, detail: &str) {
        failed_batch(reason, detail);
        warn!(
            reason,
            detail,
            delivery_count = delivery.delivery_count,
            "dead-lettering task batch"
        );
        self.metrics
            .counter_with(
                "gauntlet_batches_dead_lettered_total",
                &[("reason", reason)],
            )
            .increment(1);
        if let Err(error) = delivery.dead_letter().await {
            warn!(%error, "dead-lettering failed, the batch will be redelivered");
        }
    }

    /// Gives `delivery` back after a failure (`reason`). On its last allowed
    /// delivery it is dead-lettered here, so the reason is recorded, rather
    /// than by the broker on the next return.
    async fn requeue(&self, delivery: Delivery, reason: &'static str, detail: &str) {
        failed_batch(reason, detail);
        if delivery.delivery_count >= self.delivery_limit {
            self.dead_letter(delivery, reason, detail).await;
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = delivery.requeue().await;
    }

    /// Whether the run's batches should stop: it has ended, or its results
    /// reached its cost cap (then it is marked `cost_limited` here).
    async fn verdict(&self, run_id: Uuid, plan: &RunPlan, state: Option<RunState>) -> Verdict {
        let Some(state) = state else {
            return Verdict::Go;
        };
        match state.status {
            RunStatus::Cancelled | RunStatus::CostLimited | RunStatus::Failed => Verdict::Stop,
            RunStatus::Completed => Verdict::Go,
            RunStatus::Queued | RunStatus::Running => match plan.max_cost_usd {
                Some(cap) if state.cost_usd >= cap => self.limit(run_id, cap, state).await,
                _ => Verdict::Go,
            },
        }
    }

    async fn limit(&self, run_id: Uuid, cap: f64, state: RunState) -> Verdict {
        match self.deps.store.limit_run(run_id).await {
            Ok(Some(run)) => {
                if run.status == RunStatus::CostLimited {
                    info!(
                        cost_usd = state.cost_usd,
                        max_cost_usd = cap,
                        "run reached its cost cap, stopping it"
                    );
                    self.metrics
                        .counter("gauntlet_runs_cost_limited_total")
                        .increment(1);
                }
                self.runs.remember(run_id, state_of(&run)).await;
                publish_progress(self.deps.bus.as_ref(), &run).await;
                if run.status == RunStatus::Completed {
                    Verdict::Go
                } else {
                    Verdict::Stop
                }
            }
            Ok(None) => Verdict::Stop,
            Err(error) => {
                warn!(%error, "cannot mark the run cost-limited");
                Verdict::Retry
            }
        }
    }

    pub async fn process(&self, delivery: Delivery) {
        let in_flight = self.metrics.gauge("gauntlet_worker_batches_in_flight");
        in_flight.increment(1.0);
        // Down again however the batch ends (a panic in a call included).
        let _held = scopeguard(move || in_flight.decrement(1.0));
        let batch = match TaskBatch::decode(delivery.payload.as_slice()) {
            Ok(b) => b,
            Err(error) => {
                self.dead_letter(delivery, "undecodable", &error.to_string())
                    .await;
                return;
            }
        };
        let span = info_span!(
            "process_batch",
            otel.name = "process gauntlet.tasks",
            otel.kind = "consumer",
            otel.status_code = Empty,
            otel.status_description = Empty,
            "gauntlet.run_id" = %batch.run_id,
            "gauntlet.first_task" = batch.first_task as i64,
            "gauntlet.task_count" = i64::from(batch.count),
            "gauntlet.redelivered" = delivery.redelivered,
            "gauntlet.errors" = Empty,
            // `rabbitmq`, or the embedded mode's in-process bus.
            "messaging.system" = self.deps.bus.backend(),
            "messaging.operation.type" = "process",
            "messaging.operation.name" = "deliver",
            "messaging.destination.name" = "gauntlet.tasks",
            "messaging.message.id" = delivery.message_id.as_deref(),
            "messaging.rabbitmq.message.delivery_count" = i64::from(delivery.delivery_count),
        );
        let parent = propagation::extract(
            delivery
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        // The first batches of a run are children of its trace; a large
        // run's later ones each start a trace of their own that links to
        // it, so no trace grows past a few thousand spans.
        let link = propagation::extract_link(
            delivery
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        // The child of its publish: in the run's trace for a run's first
        // batches (`TRACE_PARENTED_TASKS`); a later batch's publish starts
        // a trace of its own, and the batch links to the run's as well.
        propagation::set_parent_in(SERVICE, &span, parent);
        let link = link.span().span_context().clone();
        if link.is_valid() {
            span.add_link(link);
        }
        self.process_batch(batch, delivery)
            .instrument(span.clone())
            .await;
    }

    async fn process_batch(&self, batch: TaskBatch, delivery: Delivery) {
        let Ok(run_id) = Uuid::parse_str(&batch.run_id) else {
            self.dead_letter(delivery, "malformed_run_id", &batch.run_id)
                .await;
            return;
        };
        if matches!(
            self.runs.status(run_id).await,
            Some(RunStatus::Cancelled | RunStatus::CostLimited)
        ) {
            debug!("run cancelled or cost-limited, dropping batch");
            let _ = delivery.ack().await;
            return;
        }
        let plan = self.patiently(
            || self.runs.plan(run_id),
            |e| matches!(e.as_ref(), PlanError::Store(_)),
        );
        let plan = match plan.await {
            Ok(p) => p,
            Err(e) => {
                match e.as_ref() {
                    PlanError::NotFound(_) => {
                        self.dead_letter(delivery, "unknown_run", &e.to_string())
                            .await;
                    }
                    PlanError::Suite(_) => {
                        self.dead_letter(delivery, "unusable_suite", &e.to_string())
                            .await;
                    }
                    PlanError::Store(_) => {
                        warn!(error = %e, "cannot load run, requeueing");
                        self.requeue(delivery, "store_unavailable", &e.to_string())
                            .await;
                    }
                }
                return;
            }
        };
        // A run already over its cost cap takes no more calls.
        match self
            .verdict(run_id, &plan, self.runs.state(run_id).await)
            .await
        {
            Verdict::Go => {}
            Verdict::Stop => {
                debug!("run ended, dropping batch");
                let _ = delivery.ack().await;
                return;
            }
            Verdict::Retry | Verdict::Shutdown => {
                self.requeue(delivery, "store_unavailable", "cannot limit run")
                    .await;
                return;
            }
        }

        // A redelivered batch may be partly stored already (an earlier
        // worker flushed some results before it died): call the provider
        // only for what is missing.
        // So may a batch of handed-back tasks (the batch that handed them
        // back may have been redelivered too, after a crash before its ack).
        let deferrable = batch.deferrals < MAX_DEFERRALS;
        let stored = if delivery.redelivered || !batch.tasks.is_empty() {
            let read = self.patiently(|| self.stored_tasks(run_id, &batch), |_| true);
            match read.await {
                Ok(s) => s,
                Err(error) => {
                    warn!(%error, "cannot read stored results, requeueing batch");
                    self.requeue(delivery, "store_unavailable", &error.to_string())
                        .await;
                    return;
                }
            }
        } else {
            HashSet::new()
        };
        let todo: Vec<u64> = task_indexes(&batch)
            .filter(|index| !stored.contains(&(*index as i64)))
            .collect();
        let read_tests = self.patiently(
            || self.runs.tests(run_id, &plan, &todo),
            |e| matches!(e, PlanError::Store(_)),
        );
        let tests = match read_tests.await {
            Ok(tests) => tests,
            Err(PlanError::Suite(e)) => {
                self.dead_letter(delivery, "unusable_suite", &e).await;
                return;
            }
            Err(error) => {
                warn!(%error, "cannot read the batch's tests, requeueing batch");
                self.requeue(delivery, "store_unavailable", &error.to_string())
                    .await;
                return;
            }
        };
        let mut tasks: FuturesUnordered<_> = todo
            .iter()
            .map(|&index| {
                self.run_task(run_id, &plan, &tests, &batch.project_id, index, deferrable)
            })
            .collect();
        let mut deferred = Vec::new();
        let mut defer_wait = Duration::ZERO;

        // Results are written as they come (every FLUSH_EVERY), so progress
        // moves within a batch and a cancelled or interrupted run keeps what
        // was done; the batch is acked once everything is written.
        let mut rows = Vec::with_capacity(batch.count as usize);
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cancel_check = tokio::time::interval(CANCEL_CHECK_EVERY);
        cancel_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (_, _) = tokio::join!(flush.tick(), cancel_check.tick());
        let mut verdict = Verdict::Go;
        let mut retry: Option<WriteRetry> = None;
        let mut errored = 0u64;
        while verdict == Verdict::Go {
            tokio::select! {
                next = tasks.next() => match next {
                    Some(Outcome::Row(row)) => {
                        errored += u64::from(row.status == ResultStatus::Error);
                        rows.push(*row);
                    }
                    Some(Outcome::Deferred { task, wait }) => {
                        deferred.push(task);
                        defer_wait = defer_wait.max(wait);
                    }
                    Some(Outcome::Skip) => {}
                    None => break,
                },
                _ = flush.tick(), if !rows.is_empty()
                    && retry.as_ref().is_none_or(|r| tokio::time::Instant::now() >= r.next) =>
                {
                    match self.write(run_id, &plan, &mut rows).await {
                        // This write may be the one that reached the cap.
                        Ok(run) => {
                            self.recovered(&mut retry);
                            verdict = self.verdict(run_id, &plan, Some(state_of(&run))).await;
                        }
                        // The answers stay in `rows`, the batch stays held,
                        // and no new call starts until a write goes through.
                        Err(error) => {
                            if !self.keep_trying(&mut retry, &error) {
                                self.requeue(delivery, "write_failed", &error).await;
                                return;
                            }
                        }
                    }
                }
                _ = cancel_check.tick() => {
                    verdict = self.verdict(run_id, &plan, self.runs.state(run_id).await).await;
                }
                _ = self.abort.cancelled() => verdict = Verdict::Shutdown,
            }
        }
        if verdict != Verdict::Go {
            debug!(abandoned = tasks.len(), ?verdict, "run ended mid-batch");
        }
        // Abandons the calls of an ended run that are still in flight.
        drop(tasks);

        while !rows.is_empty() {
            match self.write(run_id, &plan, &mut rows).await {
                Ok(_) => self.recovered(&mut retry),
                Err(error) => {
                    if verdict == Verdict::Shutdown || !self.keep_trying(&mut retry, &error) {
                        self.requeue(delivery, "write_failed", &error).await;
                        return;
                    }
                    let wait = retry.as_ref().map_or(FIRST_WRITE_BACKOFF, |r| r.backoff);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.abort.cancelled() => verdict = Verdict::Shutdown,
                    }
                }
            }
        }
        if verdict == Verdict::Shutdown {
            // Not a failure of the batch: no wait, no dead-lettering.
            let _ = delivery.requeue().await;
            return;
        }
        if verdict == Verdict::Retry {
            // The cap was reached but could not be recorded: the redelivery
            // tries again (and calls nothing for what is stored).
            self.requeue(delivery, "store_unavailable", "cannot limit run")
                .await;
            return;
        }
        if verdict == Verdict::Go
            && !deferred.is_empty()
            && let Err(error) = self
                .hand_back(&batch, &delivery, deferred, defer_wait)
                .await
        {
            // The redelivery calls what has no result, the deferred tasks too.
            self.requeue(delivery, "defer_failed", &error.to_string())
                .await;
            return;
        }
        if errored > 0 {
            let span = tracing::Span::current();
            span.record("gauntlet.errors", errored as i64);
            span.record("otel.status_code", "ERROR");
            span.record(
                "otel.status_description",
                format!("{errored} of its tasks ended in an error").as_str(),
            );
        }
        self.metrics
            .counter("gauntlet_batches_processed_total")
            .increment(1);
        if let Err(error) = delivery.ack().await {
            // The results are committed; a redelivery will insert nothing.
            warn!(%error, "ack failed after commit");
        }
    }

    /// Publishes `tasks` of `batch` as a new batch due after `wait` (and
    /// confirmed by the broker before the caller acks `batch`).
    async fn hand_back(
        &self,
        batch: &TaskBatch,
        delivery: &Delivery,
        mut tasks: Vec<u64>,
        wait: Duration,
    ) -> gauntlet_bus::Result<()> {
        tasks.sort_unstable();
        let count = tasks.len();
        let message = gauntlet_bus::Message {
            payload: TaskBatch {
                run_id: batch.run_id.clone(),
                project_id: batch.project_id.clone(),
                first_task: tasks[0],
                count: count as u32,
                tasks,
                deferrals: batch.deferrals + 1,
            }
            .encode_to_vec(),
            headers: delivery.headers.clone(),
        };
        self.deps
            .bus
            .publish_delayed(gauntlet_bus::QueueName::Retries, vec![message], wait)
            .await?;
        debug!(
            count,
            wait_ms = wait.as_millis() as u64,
            "handed back tasks the provider asked to wait"
        );
        self.metrics
            .counter("gauntlet_tasks_deferred_total")
            .increment(count as u64);
        Ok(())
    }

    /// After a failed write: whether to keep the answers and try again (the
    /// store has been failing for less than the patience), closing the
    /// gate so no new call starts meanwhile.
    fn keep_trying(&self, retry: &mut Option<WriteRetry>, error: &str) -> bool {
        match retry {
            None => {
                warn!(
                    error,
                    "writing results failed, keeping the answers and retrying"
                );
                self.store_gate.close();
                self.metrics
                    .gauge("gauntlet_worker_store_unavailable")
                    .set(1.0);
                *retry = Some(WriteRetry::new());
                true
            }
            Some(r) if r.since.elapsed() < self.store_patience => {
                r.failed_again();
                true
            }
            Some(r) => {
                warn!(
                    error,
                    failing_for_secs = r.since.elapsed().as_secs(),
                    "writing results still fails, giving the batch back"
                );
                // Whoever writes next finds out whether the store is back.
                self.store_gate.open();
                false
            }
        }
    }

    /// A write went through after failures: calls may start again.
    fn recovered(&self, retry: &mut Option<WriteRetry>) {
        if let Some(r) = retry.take() {
            info!(
                failed_for_ms = r.since.elapsed().as_millis() as u64,
                "results written again, resuming calls"
            );
        }
        if !self.store_gate.is_open() {
            self.store_gate.open();
            self.metrics
                .gauge("gauntlet_worker_store_unavailable")
                .set(0.0);
        }
    }

    /// Task indices of `batch` that already have a stored result.
    /// Reads what a batch needs before it calls, waiting out a store that
    /// fails (`retry` errors: any store error, as for result writes — a
    /// database refusing connections answers with a database error, not an
    /// I/O one) as result writes do: again after 250 ms,
    /// doubling to 5 s, for at most `store_patience` or until shutdown. A
    /// batch delivered during a database outage is then held, not requeued
    /// again and again until its delivery limit dead-letters it.
    async fn patiently<T, E, F>(
        &self,
        mut read: impl FnMut() -> F,
        retry: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: std::future::Future<Output = Result<T, E>>,
    {
        let mut pause = WriteRetry::new();
        loop {
            match read().await {
                Err(error)
                    if retry(&error)
                        && pause.since.elapsed() < self.store_patience
                        && !self.abort.is_cancelled() =>
                {
                    debug!(%error, "the store is unavailable, reading again after a pause");
                    tokio::select! {
                        _ = tokio::time::sleep_until(pause.next) => {}
                        _ = self.abort.cancelled() => {}
                    }
                    pause.failed_again();
                }
                result => return result,
            }
        }
    }

    async fn stored_tasks(
        &self,
        run_id: Uuid,
        batch: &TaskBatch,
    ) -> gauntlet_store::Result<HashSet<i64>> {
        let first = batch.first_task as i64;
        // Handed-back tasks are a sparse subset of the range they span.
        let last = match batch.tasks.last() {
            Some(&last) => last as i64,
            None => first + i64::from(batch.count) - 1,
        };
        Ok(self
            .deps
            .store
            .stored_tasks(run_id, first, last)
            .await?
            .into_iter()
            .collect())
    }

    /// Writes `rows` (and empties it) and returns the run as it now stands;
    /// an error means the batch must be requeued (what was written stays, by
    /// its key).
    async fn write(
        &self,
        run_id: Uuid,
        plan: &RunPlan,
        rows: &mut Vec<NewResult>,
    ) -> Result<RunRecord, String> {
        // A store that does not answer (a pool waiting to connect to a
        // database that refuses) counts as failing, so the gate closes in
        // seconds rather than after the pool's acquire timeout. A write cut
        // off after it committed is harmless: its retry inserts nothing.
        let written =
            match tokio::time::timeout(WRITE_TIMEOUT, self.deps.store.insert_results(run_id, rows))
                .await
            {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "the store did not answer within {} s",
                    WRITE_TIMEOUT.as_secs()
                )),
            };
        match written {
            Ok(outcome) => {
                self.count_completed(plan, rows);
                rows.clear();
                self.metrics
                    .counter("gauntlet_results_inserted_total")
                    .increment(outcome.inserted);
                if outcome.inserted > 0 || outcome.finished_now {
                    publish_progress(self.deps.bus.as_ref(), &outcome.run).await;
                }
                Ok(outcome.run)
            }
            Err(error) => Err(error),
        }
    }

    /// Runs task `index` in a span of its own (`task`, with the run, the
    /// task, the provider, the verdict and whether the answer was cached)
    /// when the sampling keeps it; a task it does not keep runs unsampled,
    /// and if it fails or errors a span is written for it afterwards, so
    /// every failure is in the trace. The result keeps the trace's id.
    async fn run_task(
        &self,
        run_id: Uuid,
        plan: &RunPlan,
        tests: &gauntlet_service::tests::Tests,
        project_id: &str,
        index: u64,
        deferrable: bool,
    ) -> Outcome {
        let batch = tracing::Span::current().context();
        let trace_id = batch.span().span_context().trace_id();
        if !gauntlet_telemetry::propagation::spans_wanted() {
            // No spans leave this process: the task makes none.
            let mut outcome = self.task(plan, tests, project_id, index, deferrable).await;
            if let Outcome::Row(row) = &mut outcome
                && trace_id != TraceId::INVALID
            {
                row.trace_id = trace_id.to_string();
            }
            return outcome;
        }
        let sampled = self.sampling.keeps(run_id, index);
        let started = SystemTime::now();
        let (span, mut outcome) = if sampled {
            let span = info_span!(
                "gauntlet.task",
                otel.name = "task",
                otel.status_code = Empty,
                otel.status_description = Empty,
                "gauntlet.run_id" = %run_id,
                "gauntlet.task_index" = index as i64,
                "gauntlet.provider" = Empty,
                "gauntlet.test_index" = Empty,
                "gauntlet.verdict" = Empty,
                "gauntlet.cached" = Empty,
                "gauntlet.score" = Empty,
            );
            let outcome = self
                .task(plan, tests, project_id, index, deferrable)
                .instrument(span.clone())
                .await;
            (span, outcome)
        } else {
            // No span, and its calls (and the vendor) see an unsampled
            // parent with the trace's id.
            let sc = batch.span().span_context().clone();
            let unsampled = Context::new().with_remote_span_context(SpanContext::new(
                sc.trace_id(),
                sc.span_id(),
                TraceFlags::default(),
                true,
                sc.trace_state().clone(),
            ));
            let outcome = propagation::unsampled(
                unsampled,
                self.task(plan, tests, project_id, index, deferrable),
            )
            .await;
            (tracing::Span::none(), outcome)
        };
        match &mut outcome {
            Outcome::Row(row) => {
                if trace_id != TraceId::INVALID {
                    row.trace_id = trace_id.to_string();
                }
                let verdict = match row.status {
                    ResultStatus::Pass => "pass",
                    ResultStatus::Fail => "fail",
                    ResultStatus::Error => "error",
                };
                span.record("gauntlet.provider", row.provider_id.as_str());
                span.record("gauntlet.test_index", i64::from(row.test_index));
                span.record("gauntlet.verdict", verdict);
                span.record("gauntlet.cached", row.cached);
                span.record("gauntlet.score", row.score);
                if row.status == ResultStatus::Error {
                    span.record("otel.status_code", "ERROR");
                    span.record("otel.status_description", row.reason.as_str());
                }
                if !sampled && row.status != ResultStatus::Pass {
                    failed_task_span(&batch, started, run_id, index, verdict, row);
                }
            }
            Outcome::Deferred { wait, .. } => {
                span.record("gauntlet.verdict", "deferred");
                span.set_attribute(
                    "gauntlet.defer_ms",
                    i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
                );
            }
            Outcome::Skip => {}
        }
        outcome
    }

    async fn task(
        &self,
        plan: &RunPlan,
        tests: &gauntlet_service::tests::Tests,
        project_id: &str,
        index: u64,
        deferrable: bool,
    ) -> Outcome {
        let Some(coord) = plan.shape.task(index) else {
            return Outcome::Skip;
        };
        let provider = &plan.suite.providers[coord.provider as usize];
        let mut row = NewResult {
            trace_id: String::new(),
            task_index: index as i64,
            project_id: project_id.to_string(),
            test_index: coord.test as i32,
            prompt_index: coord.prompt as i32,
            provider_index: coord.provider as i32,
            repeat_index: coord.repeat as i32,
            provider_id: provider
                .label
                .clone()
                .unwrap_or_else(|| provider.id.clone()),
            status: ResultStatus::Error,
            score: 0.0,
            reason: String::new(),
            rendered_prompt: String::new(),
            output: String::new(),
            assertions: serde_json::Value::Array(vec![]),
            latency_ms: 0,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            cached: false,
            error: String::new(),
        };
        let Some(test) = tests.get(coord.test) else {
            row.error = format!("test {} of the suite is not stored", coord.test);
            row.reason = row.error.clone();
            return Outcome::Row(Box::new(row));
        };
        let prompt = match plan.renderer.render(coord.prompt as usize, &test.vars) {
            Ok(p) => p,
            Err(e) => {
                row.error = format!("prompt: {e}");
                row.reason = row.error.clone();
                return Outcome::Row(Box::new(row));
            }
        };
        let client = match &plan.providers[coord.provider as usize] {
            Ok(c) => c.clone(),
            Err(e) => {
                row.rendered_prompt = prompt;
                row.error = format!("provider: {e}");
                row.reason = row.error.clone();
                return Outcome::Row(Box::new(row));
            }
        };
        // No new call while the store cannot keep its answer. The run's
        // and the worker's limits on calls in flight are taken by each
        // attempt inside the client (see `calls`), so a call waiting out a
        // `Retry-After` holds no slot another task could use.
        self.store_gate.wait_open().await;
        let completion = if deferrable {
            let (completion, defer) = retry::deferring(DEFER_WAITS_FROM, async {
                let completion = client.complete(&prompt).await;
                let defer = completion.as_ref().err().is_some_and(retry::is_deferred);
                (completion, defer)
            })
            .await;
            if defer && let Err(e) = &completion {
                return Outcome::Deferred {
                    task: index,
                    wait: e.retry_after().unwrap_or(DEFER_WAITS_FROM),
                };
            }
            completion
        } else {
            client.complete(&prompt).await
        };
        row.rendered_prompt = prompt;
        match completion {
            Ok(c) => {
                let output = ProviderOutput {
                    text: c.output.clone(),
                    latency_ms: c.latency_ms,
                    cost_usd: c.cost_usd,
                    finish_reason: c.finish_reason.clone(),
                };
                let grading = grading::grade(
                    &plan.graders,
                    &self.in_flight,
                    test,
                    &row.rendered_prompt,
                    &output,
                )
                .await;
                let graded = grading.graded.grade;
                row.status = if let Some(error) = grading.graded.error {
                    // A grader that failed is an error, never a fail.
                    row.error = format!("grader: {error}");
                    ResultStatus::Error
                } else if graded.pass {
                    ResultStatus::Pass
                } else {
                    ResultStatus::Fail
                };
                row.score = graded.score;
                row.reason = graded.reason;
                row.assertions = serde_json::Value::Array(
                    graded
                        .assertions
                        .iter()
                        .map(|a| {
                            let mut json = serde_json::json!({
                                "type": a.kind, "pass": a.pass, "score": a.score, "reason": a.reason,
                            });
                            if let Some(metric) = &a.metric {
                                json["metric"] = metric.as_str().into();
                            }
                            json
                        })
                        .collect(),
                );
                row.output = c.output;
                row.latency_ms = c.latency_ms as i32;
                row.tokens_in = c.tokens_in as i32;
                row.tokens_out = c.tokens_out as i32;
                row.cost_usd = c.cost_usd + grading.cost_usd;
                row.cached = c.cached;
            }
            Err(e) => {
                // A call that exhausted its retries is an error, never a fail.
                row.error = e.to_string();
                row.reason = format!("provider call failed: {e}");
            }
        }
        Outcome::Row(Box::new(row))
    }
}

impl Worker {
    /// Tests completed by suite, provider and status, with their tokens and
    /// cost by provider: summed per provider and status first, so a write
    /// of hundreds of rows costs a few metric updates.
    fn count_completed(&self, plan: &RunPlan, rows: &[NewResult]) {
        #[derive(Default)]
        struct Sums {
            done: [u64; 3],
            tokens_in: u64,
            tokens_out: u64,
            cost: f64,
        }
        let mut by_provider: HashMap<&str, Sums> = HashMap::new();
        for row in rows {
            let sums = by_provider.entry(row.provider_id.as_str()).or_default();
            let status = match row.status {
                ResultStatus::Pass => 0,
                ResultStatus::Fail => 1,
                _ => 2,
            };
            sums.done[status] += 1;
            sums.tokens_in += u64::try_from(row.tokens_in).unwrap_or(0);
            sums.tokens_out += u64::try_from(row.tokens_out).unwrap_or(0);
            sums.cost += row.cost_usd.max(0.0);
        }
        let suite = suite_label(plan);
        for (provider, sums) in by_provider {
            for (status, n) in ["pass", "fail", "error"].into_iter().zip(sums.done) {
                if n > 0 {
                    self.metrics
                        .counter_with(
                            "gauntlet_tests_completed_total",
                            &[("suite", suite), ("provider", provider), ("status", status)],
                        )
                        .increment(n);
                }
            }
            for (kind, n) in [("input", sums.tokens_in), ("output", sums.tokens_out)] {
                self.metrics
                    .counter_with(
                        "gauntlet_provider_tokens_total",
                        &[("provider", provider), ("kind", kind)],
                    )
                    .increment(n);
            }
            // Only ever increased, so `rate()` reads it as a counter; the
            // `metrics` facade counts integers only, so it is a float gauge
            // (`# TYPE gauge`) under a counter's name.
            self.metrics
                .gauge_with(
                    "gauntlet_provider_cost_dollars_total",
                    &[("provider", provider)],
                )
                .increment(sums.cost);
        }
    }
}

/// A suite's name as a label: its description, cut to 100 characters, or
/// `(unnamed)`.
fn suite_label(plan: &RunPlan) -> &str {
    match plan.suite.description.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => match d.char_indices().nth(100) {
            Some((cut, _)) => &d[..cut],
            None => d,
        },
        _ => "(unnamed)",
    }
}

/// The span of a failed or errored task the sampling left out, written
/// after the fact under its batch: its start and end, and why.
fn failed_task_span(
    batch: &Context,
    started: SystemTime,
    run_id: Uuid,
    index: u64,
    verdict: &'static str,
    row: &NewResult,
) {
    let tracer = opentelemetry::global::tracer("gauntlet");
    let mut span = tracer
        .span_builder("task")
        .with_start_time(started)
        .with_attributes([
            KeyValue::new("gauntlet.run_id", run_id.to_string()),
            KeyValue::new("gauntlet.task_index", index as i64),
            KeyValue::new("gauntlet.provider", row.provider_id.clone()),
            KeyValue::new("gauntlet.test_index", i64::from(row.test_index)),
            KeyValue::new("gauntlet.verdict", verdict),
            KeyValue::new("gauntlet.cached", row.cached),
            KeyValue::new("gauntlet.score", row.score),
            KeyValue::new("gauntlet.sampled", false),
        ])
        .start_with_context(&tracer, batch);
    if row.status == ResultStatus::Error {
        span.set_status(Status::error(row.reason.clone()));
    }
    span.end();
}

/// Marks the current (batch) span failed: dead-lettered or given back.
fn failed_batch(reason: &'static str, detail: &str) {
    let span = tracing::Span::current();
    span.record("otel.status_code", "ERROR");
    span.record(
        "otel.status_description",
        format!("{reason}: {detail}").as_str(),
    );
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// The task indexes `batch` stands for.
fn task_indexes(batch: &TaskBatch) -> Box<dyn Iterator<Item = u64> + Send + '_> {
    if batch.tasks.is_empty() {
        Box::new(batch.first_task..batch.first_task + u64::from(batch.count))
    } else {
        Box::new(batch.tasks.iter().copied())
    }
}
