//! What a submission may use: its project's quotas as they stand
//! (concurrent runs, tasks per run and per day, the monthly budget), read
//! once as it starts and checked before any of its tasks is queued.
//!
//! Two submissions of one project at the same moment both see the usage
//! from before either: a quota can be passed by the runs submitted in the
//! same instant, never by one submitted after another was counted.

use chrono::Utc;
use gauntlet_proto::v1;
use gauntlet_service::{internal, invalid, not_found};
use tonic::Status;

use crate::{Deps, access::Caller};

/// Most tasks one run may expand into, quotas or not.
pub const MAX_TASKS: u64 = 10_000_000;

/// A run's weight against its project's other runs, by priority.
pub fn priority_factor(priority: i32) -> u32 {
    match v1::RunPriority::try_from(priority) {
        Ok(v1::RunPriority::Batch) => 1,
        _ => 4,
    }
}

/// What one submission may use.
#[derive(Debug, Clone)]
pub struct Allowance {
    pub project: String,
    /// The project's share of the dispatch window against other projects.
    pub project_weight: u32,
    /// The run's share against the project's other runs.
    pub factor: u32,
    /// Tasks the run may expand into.
    pub max_tasks: u64,
    /// The quota that set `max_tasks`, if one did, with its value.
    tasks_quota: Option<String>,
    /// What is left of the month's budget, and the budget.
    budget: Option<(f64, f64)>,
}

impl Allowance {
    /// Whether the run may be opened (its first tasks queued) while its
    /// tests still arrive: only with no quota on its tasks or cost, which
    /// are known once they all have.
    pub fn may_open_early(&self) -> bool {
        self.tasks_quota.is_none() && self.budget.is_none()
    }

    /// The refusal of a suite past `max_tasks`.
    pub fn too_many_tasks(&self) -> Status {
        match &self.tasks_quota {
            Some(quota) => Status::resource_exhausted(format!(
                "project {}: the suite expands into more tasks than its {quota} allows",
                self.project
            )),
            None => invalid("suite", format!("expands into more than {MAX_TASKS} tasks")),
        }
    }

    /// Refuses a run whose estimate passes what is left of the budget.
    pub fn check_cost(&self, estimated_usd: f64) -> Result<(), Status> {
        match self.budget {
            Some((left, budget)) if estimated_usd > left => {
                Err(Status::resource_exhausted(format!(
                    "project {}: the run's estimated cost, ${estimated_usd:.4}, is more than the \
                 ${left:.4} left of its monthly budget of ${budget:.2} (quota monthly_budget_usd)",
                    self.project
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The allowance of `caller`'s next run with `options`, or the quota it
/// is already past.
pub async fn allowance(
    deps: &Deps,
    caller: &Caller,
    options: &v1::RunOptions,
) -> Result<Allowance, Status> {
    let project = deps
        .store
        .get_project(&caller.project)
        .await
        .map_err(|e| internal("get project", e))?
        .ok_or_else(|| not_found("project", &caller.project))?;
    let mut allowance = Allowance {
        project: project.id.clone(),
        project_weight: project.weight.max(1) as u32,
        factor: priority_factor(options.priority),
        max_tasks: MAX_TASKS,
        tasks_quota: None,
        budget: None,
    };
    let q = project.quotas;
    if q == gauntlet_store::Quotas::default() {
        return Ok(allowance);
    }
    let now = Utc::now();
    let usage = deps
        .store
        .project_usage(
            &project.id,
            now - chrono::Duration::days(1),
            crate::access::month_start(now),
        )
        .await
        .map_err(|e| internal("project usage", e))?;
    let exhausted =
        |message: String| Status::resource_exhausted(format!("project {}: {message}", project.id));
    if let Some(max) = q.max_concurrent_runs
        && usage.active_runs >= max
    {
        return Err(exhausted(format!(
            "{} runs are queued or running, its quota max_concurrent_runs is {max}",
            usage.active_runs
        )));
    }
    if let Some(max) = q.max_tasks_per_run
        && (max.max(0) as u64) < allowance.max_tasks
    {
        allowance.max_tasks = max.max(0) as u64;
        allowance.tasks_quota = Some(format!("quota max_tasks_per_run of {max}"));
    }
    if let Some(max) = q.max_tasks_per_day {
        let left = max.saturating_sub(usage.tasks_since).max(0) as u64;
        if left == 0 {
            return Err(exhausted(format!(
                "its runs of the last 24 hours have {} tasks, its quota max_tasks_per_day is {max}",
                usage.tasks_since
            )));
        }
        if left < allowance.max_tasks {
            allowance.max_tasks = left;
            allowance.tasks_quota = Some(format!(
                "quota max_tasks_per_day of {max} ({left} left today)"
            ));
        }
    }
    if let Some(budget) = q.monthly_budget_usd {
        let left = budget - usage.cost_since;
        if left <= 0.0 {
            return Err(exhausted(format!(
                "its runs this month cost ${:.4}, its quota monthly_budget_usd is ${budget:.2}",
                usage.cost_since
            )));
        }
        allowance.budget = Some((left, budget));
    }
    Ok(allowance)
}
