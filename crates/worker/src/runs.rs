//! Everything a worker derives from a run once and reuses for each of its
//! batches: the parsed suite, compiled prompt templates, built providers.
//! The run's status is re-read at most once a second so a cancelled run
//! stops being worked on quickly without a query per batch.

use std::{sync::Arc, time::Duration};

use gauntlet_core::{suite::Suite, template::PromptRenderer};
use gauntlet_providers::{Provider, ProviderFactory};
use gauntlet_store::{RunStatus, Store};
use moka::future::Cache;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// A run as the worker executes it.
pub struct RunPlan {
    pub suite: Suite,
    pub renderer: PromptRenderer,
    /// One per `suite.providers`, or the reason it could not be built (every
    /// task for it becomes an `error` result).
    pub providers: Vec<Result<Arc<dyn Provider>, String>>,
    pub repeat: u32,
    /// Most provider calls of this run in flight on this worker, from the
    /// run's options or the suite's `evaluateOptions.maxConcurrency`.
    pub max_concurrency: Option<Arc<Semaphore>>,
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
    providers: Arc<ProviderFactory>,
    plans: Cache<Uuid, Arc<RunPlan>>,
    status: Cache<Uuid, RunStatus>,
}

impl RunCache {
    pub fn new(store: Arc<dyn Store>, providers: Arc<ProviderFactory>) -> Self {
        Self {
            store,
            providers,
            plans: Cache::builder()
                .max_capacity(64)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            status: Cache::builder()
                .max_capacity(4096)
                .time_to_live(Duration::from_secs(1))
                .build(),
        }
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
            serde_json::from_value(value).map_err(|e| PlanError::Suite(e.to_string()))?;
        let renderer = PromptRenderer::new(&suite).map_err(|e| PlanError::Suite(e.to_string()))?;
        let providers = suite
            .providers
            .iter()
            .map(|p| {
                self.providers
                    .build(&p.id, &p.config)
                    .map_err(|e| e.to_string())
            })
            .collect();
        let repeat = run.options["repeat"].as_u64().unwrap_or(1).max(1) as u32;
        let max_concurrency = run.options["max_concurrency"]
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .or(suite.max_concurrency.filter(|&n| n > 0).map(|n| n as usize))
            .map(|n| Arc::new(Semaphore::new(n)));
        Ok(Arc::new(RunPlan {
            suite,
            renderer,
            providers,
            repeat,
            max_concurrency,
        }))
    }

    /// The run's status, at most a second old.
    pub async fn status(&self, run_id: Uuid) -> Option<RunStatus> {
        let store = self.store.clone();
        self.status
            .try_get_with(run_id, async move {
                match store.get_run(run_id).await {
                    Ok(Some(run)) => Ok(run.status),
                    Ok(None) => Err(()),
                    Err(_) => Err(()),
                }
            })
            .await
            .ok()
    }
}
