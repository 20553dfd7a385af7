//! Everything a worker derives from a run once and reuses for each of its
//! batches: the suite's header (everything but its tests), compiled prompt
//! templates, built providers. Tests are stored one row each and read per
//! batch ([`RunCache::tests`]), so a worker holds a batch's tests, never a
//! whole suite.
//! The run's status and cost are re-read at most once a second so a
//! cancelled or cost-capped run stops being worked on quickly without a
//! query per batch.

use std::{sync::Arc, time::Duration};

use gauntlet_core::{
    suite::{Suite, TaskShape},
    template::PromptRenderer,
};
use gauntlet_providers::{Provider, ProviderFactory, limit::AttemptLimits};
use gauntlet_service::tests::{self, Tests, TestsError};
use gauntlet_store::{RunStatus, Store};
use moka::future::Cache;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::{calls::ProviderCalls, grading::Graders};

/// A run as the worker executes it.
pub struct RunPlan {
    /// The suite without its tests (a run stored before tests became rows
    /// still has them here).
    pub suite: Suite,
    /// Where each task index points.
    pub shape: TaskShape,
    pub renderer: PromptRenderer,
    /// One per `suite.providers`, or the reason it could not be built (every
    /// task for it becomes an `error` result). Each attempt of a client
    /// holds a slot of the run's limit on calls in flight (from its options
    /// or the suite's `evaluateOptions.maxConcurrency`) and of the worker's.
    pub providers: Vec<Result<Arc<dyn Provider>, String>>,
    /// The run's cost cap (`options.max_cost_usd`), in USD.
    pub max_cost_usd: Option<f64>,
    /// Clients of the model-graded assertions' graders, built on first use.
    pub graders: Graders,
    /// Bytes of its stored header: what it weighs in the cache.
    weight: u32,
}

/// Bytes of stored suite headers whose plans a worker keeps. Weighed, not
/// counted: fair dispatch hands every worker batches of every active run
/// at once, and a plan rebuilt per batch costs a suite read and parse (and
/// a second `maxConcurrency` semaphore for the same run).
const PLAN_CACHE_BYTES: u64 = 64 << 20;

/// What a batch needs to know of its run while it works.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunState {
    pub status: RunStatus,
    /// What the run's stored results cost so far.
    pub cost_usd: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("run {0} not found")]
    NotFound(Uuid),
    #[error("{0}")]
    Store(#[from] gauntlet_store::StoreError),
    #[error("stored suite is unusable: {0}")]
    Suite(String),
}

pub struct RunCache {
    store: Arc<dyn Store>,
    /// Builds the run's clients under shared limits and the response cache.
    calls: Arc<ProviderCalls>,
    plans: Cache<Uuid, Arc<RunPlan>>,
    status: Cache<Uuid, RunState>,
    /// The worker's calls in flight, taken by every attempt of every run.
    in_flight: Option<Arc<Semaphore>>,
    /// Open while results can be written; every attempt waits for it.
    store_gate: Option<tokio::sync::watch::Receiver<bool>>,
}

impl RunCache {
    pub fn new(store: Arc<dyn Store>, providers: Arc<ProviderFactory>) -> Self {
        Self {
            store,
            calls: Arc::new(ProviderCalls::direct(providers)),
            plans: Cache::builder()
                .max_capacity(PLAN_CACHE_BYTES)
                .weigher(|_, plan: &Arc<RunPlan>| plan.weight)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            // Shared by every batch of a run on this worker, so a cancel or a
            // cost cap is seen within a check interval for a few queries a second.
            status: Cache::builder()
                .max_capacity(4096)
                .time_to_live(Duration::from_millis(250))
                .build(),
            in_flight: None,
            store_gate: None,
        }
    }

    /// Every provider attempt of every run holds one of `in_flight`'s
    /// permits while it runs.
    pub fn with_in_flight(mut self, in_flight: Arc<Semaphore>) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    /// Every provider attempt waits for `gate` to read open.
    pub fn with_store_gate(mut self, gate: tokio::sync::watch::Receiver<bool>) -> Self {
        self.store_gate = Some(gate);
        self
    }

    /// Builds run clients through `calls` rather than directly.
    pub fn with_calls(mut self, calls: Arc<ProviderCalls>) -> Self {
        self.calls = calls;
        self
    }

    pub async fn plan(&self, run_id: Uuid) -> Result<Arc<RunPlan>, Arc<PlanError>> {
        self.plans.try_get_with(run_id, self.load(run_id)).await
    }

    async fn load(&self, run_id: Uuid) -> Result<Arc<RunPlan>, PlanError> {
        let run = self
            .store
            .get_run(run_id)
            .await?
            .ok_or(PlanError::NotFound(run_id))?;
        let value = self
            .store
            .get_suite(run_id)
            .await?
            .ok_or(PlanError::NotFound(run_id))?;
        let suite: Suite =
            serde_json::from_str(&value).map_err(|e| PlanError::Suite(e.to_string()))?;
        let renderer = PromptRenderer::new(&suite).map_err(|e| PlanError::Suite(e.to_string()))?;
        let repeat = run.options["repeat"].as_u64().unwrap_or(1).max(1) as u32;
        let shape = match run.options["tests"].as_u64() {
            Some(tests) => suite.shape_with(tests, repeat),
            // Stored with its tests inline (before tests became rows).
            None if !suite.tests.is_empty() => suite.shape(repeat),
            // Its tests are still arriving; it runs once (the gateway opens
            // only such runs early), so a task's test does not depend on how
            // many there will be.
            None => suite.shape_with(u64::from(u32::MAX), repeat),
        };
        // Repeats exist to sample a model again (as promptfoo, which turns
        // its cache off for them); `no_cache` asks for fresh answers.
        let use_cache = repeat == 1 && !run.options["no_cache"].as_bool().unwrap_or(false);
        let max_concurrency = run.options["max_concurrency"]
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .or(suite.max_concurrency.filter(|&n| n > 0).map(|n| n as usize))
            .map(|n| Arc::new(Semaphore::new(n)));
        // The run's own limit first, so a run capped low does not hold
        // worker-wide permits while it waits.
        let attempts = AttemptLimits {
            slots: max_concurrency
                .iter()
                .chain(self.in_flight.iter())
                .cloned()
                .collect(),
            gate: self.store_gate.clone(),
        };
        let providers = suite
            .providers
            .iter()
            .map(|p| self.calls.build(&p.id, &p.config, use_cache, &attempts))
            .collect();
        let max_cost_usd = run.options["max_cost_usd"].as_f64().filter(|&c| c > 0.0);
        Ok(Arc::new(RunPlan {
            suite,
            shape,
            renderer,
            providers,
            max_cost_usd,
            graders: Graders::new(self.calls.clone(), use_cache),
            weight: u32::try_from(value.len()).unwrap_or(u32::MAX).max(1),
        }))
    }

    /// The tests the tasks `tasks` of the run need.
    pub async fn tests(
        &self,
        run_id: Uuid,
        plan: &RunPlan,
        tasks: &[u64],
    ) -> Result<Tests, PlanError> {
        let needed = tasks
            .iter()
            .filter_map(|&t| plan.shape.task(t))
            .map(|c| c.test);
        tests::read(self.store.as_ref(), run_id, &plan.suite, needed)
            .await
            .map_err(|e| match e {
                TestsError::Store(e) => PlanError::Store(e),
                e @ TestsError::Corrupt { .. } => PlanError::Suite(e.to_string()),
            })
    }

    /// Records what this worker just learnt of the run (it limited it).
    pub async fn remember(&self, run_id: Uuid, state: RunState) {
        self.status.insert(run_id, state).await;
    }

    /// The run's status, at most 250 ms old.
    pub async fn status(&self, run_id: Uuid) -> Option<RunStatus> {
        self.state(run_id).await.map(|s| s.status)
    }

    /// The run's status and cost, at most 250 ms old.
    pub async fn state(&self, run_id: Uuid) -> Option<RunState> {
        let store = self.store.clone();
        self.status
            .try_get_with(run_id, async move {
                match store.get_run(run_id).await {
                    Ok(Some(run)) => Ok(RunState {
                        status: run.status,
                        cost_usd: run.cost_usd,
                    }),
                    Ok(None) => Err(()),
                    Err(_) => Err(()),
                }
            })
            .await
            .ok()
    }
}
