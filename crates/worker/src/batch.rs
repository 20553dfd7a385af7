//! One task batch: render, call, grade every task (calls bounded by the
//! worker-wide in-flight limit), write all results in one statement, then
//! ack. A write that fails requeues the batch; the (run_id, task_index) key
//! makes the retry insert only what is missing.

use std::{sync::Arc, time::Duration};

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

        let mut tasks: FuturesUnordered<_> = (batch.first_task
            ..batch.first_task + u64::from(batch.count))
            .map(|index| self.run_task(&plan, &batch.project_id, index))
            .collect();
        let mut rows = Vec::with_capacity(batch.count as usize);
        while let Some(row) = tasks.next().await {
            if let Some(row) = row {
                rows.push(row);
            }
        }
        drop(tasks);

        match self.deps.store.insert_results(run_id, &rows).await {
            Ok(outcome) => {
                if let Err(error) = delivery.ack().await {
                    // The results are committed; a redelivery will insert nothing.
                    warn!(%error, "ack failed after commit");
                }
                self.metrics
                    .counter("gauntlet_results_inserted_total")
                    .inc_by(outcome.inserted);
                self.metrics
                    .counter("gauntlet_batches_processed_total")
                    .inc();
                if outcome.inserted > 0 || outcome.finished_now {
                    publish_progress(self.deps.bus.as_ref(), &outcome.run).await;
                }
            }
            Err(error) => {
                warn!(%error, "writing results failed, requeueing batch");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = delivery.requeue().await;
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
