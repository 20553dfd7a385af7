//! One task batch: render, call, grade every task (calls bounded by the
//! run's and the worker-wide in-flight limits), write the results as they
//! come in multi-row statements, then ack. A write that fails requeues the
//! batch; the (run_id, task_index) key makes the retry insert only what is
//! missing, and a redelivered batch calls the provider only for tasks with
//! no stored result. A batch of a cancelled run stops calling, keeps what it
//! has, and is acked.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::{StreamExt, stream::FuturesUnordered};
use gauntlet_bus::Delivery;
use gauntlet_core::grading::{ProviderOutput, grade};
use gauntlet_proto::internal::v1::TaskBatch;
use gauntlet_service::events::publish_progress;
use gauntlet_store::{NewResult, ResultStatus, RunStatus};
use gauntlet_telemetry::{metrics::Registry, propagation};
use prost::Message as _;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info_span, warn};
use uuid::Uuid;

use crate::{
    Deps,
    runs::{PlanError, RunCache, RunPlan},
};

/// How often a batch writes the results it has so far.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How often a batch looks whether its run was cancelled.
const CANCEL_CHECK_EVERY: Duration = Duration::from_millis(250);

pub struct Worker {
    pub metrics: Arc<Registry>,
    pub deps: Deps,
    pub runs: RunCache,
    pub in_flight: Arc<Semaphore>,
}

impl Worker {
    pub async fn process(&self, delivery: Delivery) {
        let batch = match TaskBatch::decode(delivery.payload.as_slice()) {
            Ok(b) => b,
            Err(error) => {
                warn!(%error, "undecodable task batch, dead-lettering");
                let _ = delivery.dead_letter().await;
                return;
            }
        };
        let span = info_span!(
            "process_batch",
            run_id = %batch.run_id,
            first_task = batch.first_task,
            count = batch.count,
            redelivered = delivery.redelivered,
            "messaging.system" = "rabbitmq",
            "messaging.operation.type" = "process",
            "messaging.destination.name" = "gauntlet.tasks",
        );
        let parent = propagation::extract(
            delivery
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        propagation::set_parent(&span, parent);
        self.process_batch(batch, delivery).instrument(span).await
    }

    async fn process_batch(&self, batch: TaskBatch, delivery: Delivery) {
        let Ok(run_id) = Uuid::parse_str(&batch.run_id) else {
            warn!("task batch with a malformed run id, dead-lettering");
            let _ = delivery.dead_letter().await;
            return;
        };
        if self.runs.status(run_id).await == Some(RunStatus::Cancelled) {
            debug!("run cancelled, dropping batch");
            let _ = delivery.ack().await;
            return;
        }
        let plan = match self.runs.plan(run_id).await {
            Ok(p) => p,
            Err(e) => {
                match e.as_ref() {
                    PlanError::NotFound(_) | PlanError::Suite(_) => {
                        warn!(error = %e, "batch of an unusable run, dead-lettering");
                        let _ = delivery.dead_letter().await;
                    }
                    PlanError::Store(_) => {
                        warn!(error = %e, "cannot load run, requeueing");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = delivery.requeue().await;
                    }
                }
                return;
            }
        };

        // A redelivered batch may be partly stored already (an earlier
        // worker flushed some results before it died): call the provider
        // only for what is missing.
        let stored = if delivery.redelivered {
            match self.stored_tasks(run_id, &batch).await {
                Ok(s) => s,
                Err(error) => {
                    warn!(%error, "cannot read stored results, requeueing batch");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = delivery.requeue().await;
                    return;
                }
            }
        } else {
            HashSet::new()
        };
        let mut tasks: FuturesUnordered<_> = (batch.first_task
            ..batch.first_task + u64::from(batch.count))
            .filter(|index| !stored.contains(&(*index as i64)))
            .map(|index| self.run_task(&plan, &batch.project_id, index))
            .collect();

        // Results are written as they come (every FLUSH_EVERY), so progress
        // moves within a batch and a cancelled or interrupted run keeps what
        // was done; the batch is acked once everything is written.
        let mut rows = Vec::with_capacity(batch.count as usize);
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cancel_check = tokio::time::interval(CANCEL_CHECK_EVERY);
        cancel_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (_, _) = tokio::join!(flush.tick(), cancel_check.tick());
        loop {
            tokio::select! {
                next = tasks.next() => match next {
                    Some(Some(row)) => rows.push(row),
                    Some(None) => {}
                    None => break,
                },
                _ = flush.tick(), if !rows.is_empty() => {
                    if !self.write(run_id, &mut rows).await {
                        let _ = delivery.requeue().await;
                        return;
                    }
                }
                _ = cancel_check.tick() => {
                    if self.runs.status(run_id).await == Some(RunStatus::Cancelled) {
                        debug!(abandoned = tasks.len(), "run cancelled mid-batch");
                        break;
                    }
                }
            }
        }
        // Abandons the calls of a cancelled run that are still in flight.
        drop(tasks);

        if !rows.is_empty() && !self.write(run_id, &mut rows).await {
            let _ = delivery.requeue().await;
            return;
        }
        self.metrics
            .counter("gauntlet_batches_processed_total")
            .inc();
        if let Err(error) = delivery.ack().await {
            // The results are committed; a redelivery will insert nothing.
            warn!(%error, "ack failed after commit");
        }
    }

    /// Task indices of `batch` that already have a stored result.
    async fn stored_tasks(
        &self,
        run_id: Uuid,
        batch: &TaskBatch,
    ) -> gauntlet_store::Result<HashSet<i64>> {
        let first = batch.first_task as i64;
        let rows = self
            .deps
            .store
            .list_results(run_id, None, Some(first - 1), batch.count)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| r.result.task_index)
            .filter(|&t| t < first + i64::from(batch.count))
            .collect())
    }

    /// Writes `rows` (and empties it); false when the write failed and the
    /// batch must be requeued (what was written stays, by its key).
    async fn write(&self, run_id: Uuid, rows: &mut Vec<NewResult>) -> bool {
        match self.deps.store.insert_results(run_id, rows).await {
            Ok(outcome) => {
                rows.clear();
                self.metrics
                    .counter("gauntlet_results_inserted_total")
                    .inc_by(outcome.inserted);
                if outcome.inserted > 0 || outcome.finished_now {
                    publish_progress(self.deps.bus.as_ref(), &outcome.run).await;
                }
                true
            }
            Err(error) => {
                warn!(%error, "writing results failed, requeueing batch");
                tokio::time::sleep(Duration::from_secs(1)).await;
                false
            }
        }
    }

    async fn run_task(&self, plan: &RunPlan, project_id: &str, index: u64) -> Option<NewResult> {
        let coord = plan.suite.task(index, plan.repeat)?;
        let test = &plan.suite.tests[coord.test as usize];
        let provider = &plan.suite.providers[coord.provider as usize];
        let mut row = NewResult {
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
        let prompt = match plan.renderer.render(coord.prompt as usize, &test.vars) {
            Ok(p) => p,
            Err(e) => {
                row.error = format!("prompt: {e}");
                row.reason = row.error.clone();
                return Some(row);
            }
        };
        let client = match &plan.providers[coord.provider as usize] {
            Ok(c) => c.clone(),
            Err(e) => {
                row.rendered_prompt = prompt;
                row.error = format!("provider: {e}");
                row.reason = row.error.clone();
                return Some(row);
            }
        };
        let completion = {
            // The run's own limit first, so a run capped low does not hold
            // worker-wide permits while it waits.
            let _run_permit = match &plan.max_concurrency {
                Some(limit) => Some(limit.acquire().await.ok()?),
                None => None,
            };
            let _permit = self.in_flight.acquire().await.ok()?;
            client.complete(&prompt).await
        };
        row.rendered_prompt = prompt;
        match completion {
            Ok(c) => {
                let graded = grade(
                    test,
                    &ProviderOutput {
                        text: c.output.clone(),
                        latency_ms: c.latency_ms,
                        cost_usd: c.cost_usd,
                        finish_reason: c.finish_reason.clone(),
                    },
                );
                row.status = if graded.pass {
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
                            serde_json::json!({
                                "type": a.kind, "pass": a.pass, "score": a.score, "reason": a.reason,
                            })
                        })
                        .collect(),
                );
                row.output = c.output;
                row.latency_ms = c.latency_ms as i32;
                row.tokens_in = c.tokens_in as i32;
                row.tokens_out = c.tokens_out as i32;
                row.cost_usd = c.cost_usd;
                row.cached = c.cached;
            }
            Err(e) => {
                // A call that exhausted its retries is an error, never a fail.
                row.error = e.to_string();
                row.reason = format!("provider call failed: {e}");
            }
        }
        Some(row)
    }
}
