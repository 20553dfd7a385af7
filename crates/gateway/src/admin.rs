//! `gauntlet.v1.AdminService`: the dead-lettered task batches, for
//! operators (`gauntlet dlq list|redrive`).

use std::collections::{BTreeSet, HashMap};

use gauntlet_bus::{Disposition, QueueName};
use gauntlet_proto::v1::{self, admin_service_server::AdminService};
use gauntlet_service::{convert, existing_run, internal, invalid, parse_id};
use gauntlet_store::RunStatus;
use tonic::{Request, Response, Status};
use tracing::info;
use uuid::Uuid;

use crate::{
    Deps,
    reconcile::{MAX_DEAD_LETTERS, batch_of},
};

const DEFAULT_LIMIT: u32 = 100;

pub struct AdminApi {
    deps: Deps,
}

impl AdminApi {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }

    /// The status of each run, or `None` for a run the store does not know.
    async fn statuses(&self, runs: Vec<Uuid>) -> Result<HashMap<Uuid, Option<RunStatus>>, Status> {
        let mut out = HashMap::new();
        for id in runs {
            if out.contains_key(&id) {
                continue;
            }
            let run = self
                .deps
                .store
                .get_run(id)
                .await
                .map_err(|e| internal("get run", e))?;
            out.insert(id, run.map(|r| r.status));
        }
        Ok(out)
    }
}

/// An optional run id of a request: empty means none.
fn optional_id(field: &str, value: &str) -> Result<Option<Uuid>, Status> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse_id(field, value).map(Some)
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_dead_letters(
        &self,
        request: Request<v1::ListDeadLettersRequest>,
    ) -> Result<Response<v1::ListDeadLettersResponse>, Status> {
        let req = request.into_inner();
        let run = optional_id("run_id", &req.run_id)?;
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n if n as usize > MAX_DEAD_LETTERS => {
                return Err(invalid(
                    "limit",
                    format!("{n} is more than {MAX_DEAD_LETTERS}"),
                ));
            }
            n => n,
        } as usize;
        let bus = &self.deps.bus;
        let total = bus
            .dead_letter_stats(QueueName::Tasks)
            .await
            .map_err(|e| internal("dead-letter queue depth", e))?
            .messages;
        // One run's batches may be anywhere in the queue: look at all, keep
        // the first `limit` of them.
        let scan = if run.is_some() {
            MAX_DEAD_LETTERS
        } else {
            limit
        };
        let letters = bus
            .dead_letters(QueueName::Tasks, scan)
            .await
            .map_err(|e| internal("list dead letters", e))?;
        let letters: Vec<_> = letters
            .into_iter()
            .map(|letter| (batch_of(&letter), letter))
            .filter(|(batch, _)| run.is_none() || batch.map(|(id, _)| id) == run)
            .take(limit)
            .collect();
        let ids: Vec<Uuid> = letters
            .iter()
            .filter_map(|(batch, _)| batch.map(|(id, _)| id))
            .collect();
        let statuses = self.statuses(ids).await?;
        let dead_letters = letters
            .into_iter()
            .map(|(batch, letter)| {
                let status = batch
                    .and_then(|(id, _)| statuses.get(&id).copied().flatten())
                    .map_or(v1::RunStatus::Unspecified, convert::run_status);
                v1::DeadLetter {
                    run_id: batch.map(|(id, _)| id.to_string()).unwrap_or_default(),
                    first_task: batch.map_or(0, |(_, t)| t.first as u64),
                    task_count: batch.map_or(0, |(_, t)| t.count as u32),
                    delivery_count: letter.deliveries.unwrap_or(0),
                    reason: letter.reason.unwrap_or_default(),
                    dead_lettered_at: letter
                        .dead_lettered_at
                        .map(|t| convert::timestamp(t.into())),
                    redrives: letter.redrives,
                    run_status: status as i32,
                }
            })
            .collect();
        Ok(Response::new(v1::ListDeadLettersResponse {
            dead_letters,
            total,
        }))
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<v1::RedriveDeadLettersRequest>,
    ) -> Result<Response<v1::RedriveDeadLettersResponse>, Status> {
        let req = request.into_inner();
        let run = match (optional_id("run_id", &req.run_id)?, req.all) {
            (Some(_), true) => {
                return Err(invalid(
                    "all",
                    "cannot be combined with run_id: re-drive one run's batches or all of them",
                ));
            }
            (None, false) => {
                return Err(invalid(
                    "run_id",
                    "is required unless `all` is set (every run's batches)",
                ));
            }
            (run, _) => run,
        };
        if let Some(id) = run {
            let record = existing_run(self.deps.store.as_ref(), id).await?;
            if record.status.is_terminal() {
                return Err(Status::failed_precondition(format!(
                    "run {id} has ended ({}); workers would drop its batches",
                    record.status.as_str()
                )));
            }
        }
        // Batches that are not task batches this build reads stay: a worker
        // would only dead-letter them again.
        let sweep = self
            .deps
            .bus
            .sweep_dead_letters(
                QueueName::Tasks,
                MAX_DEAD_LETTERS,
                &|letter| match batch_of(letter) {
                    Some((id, _)) if run.is_none_or(|r| r == id) => Disposition::Redrive,
                    _ => Disposition::Keep,
                },
            )
            .await
            .map_err(|e| internal("re-drive dead letters", e))?;
        let mut runs = BTreeSet::new();
        let mut tasks = 0u64;
        for (id, range) in sweep.redriven.iter().filter_map(batch_of) {
            runs.insert(id);
            tasks += range.count as u64;
        }
        // Their work is back in flight: the reconciler leaves them be.
        for id in &runs {
            self.deps
                .store
                .touch_run(*id)
                .await
                .map_err(|e| internal("touch run", e))?;
        }
        info!(
            batches = sweep.redriven.len(),
            tasks,
            runs = runs.len(),
            "dead letters re-driven by hand"
        );
        Ok(Response::new(v1::RedriveDeadLettersResponse {
            redriven: sweep.redriven.len() as u64,
            tasks,
            run_ids: runs.iter().map(Uuid::to_string).collect(),
        }))
    }
}
