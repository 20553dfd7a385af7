//! Analytics: turns a run's results (the source of truth) into summaries per
//! provider × prompt. Summaries are cached under a key that includes the
//! run's completed count and status, so a cached summary is never stale:
//! new results make a new key, and the TTL only bounds memory.

mod summary;

use std::{sync::Arc, time::Duration};

use gauntlet_cache::Cache;
use gauntlet_config::{AnalyticsConfig, GauntletConfig};
use gauntlet_core::suite::Suite;
use gauntlet_proto::v1::{self, analytics_service_server::AnalyticsService};
use gauntlet_service::{GrpcServer, connect_store, existing_run, internal, not_found, parse_id};
use gauntlet_store::Store;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::instrument;

pub use summary::Summarizer;

/// L1 budget of the summary cache.
const L1_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub cache: Cache,
}

pub async fn serve(config: GauntletConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = gauntlet_service::startup::bind(&config.analytics.listen).await?;
    let deps = Deps {
        store: connect_store(&config.database, &shutdown).await?,
        cache: Cache::new(&config.redis, L1_BYTES)?,
    };
    run(config, deps, listener, shutdown).await
}

pub async fn run(
    config: GauntletConfig,
    deps: Deps,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut server = GrpcServer::new("analytics", &config.grpc).await?;
    let limits = server.limits();
    server.add_service(gauntlet_service::limited!(
        v1::analytics_service_server::AnalyticsServiceServer::new(Analytics {
            deps,
            config: config.analytics,
        }),
        limits
    ));
    server.serve(listener, shutdown).await
}

pub struct Analytics {
    deps: Deps,
    config: AnalyticsConfig,
}

#[tonic::async_trait]
impl AnalyticsService for Analytics {
    #[instrument(skip_all, name = "GetRunSummary", fields(run_id = %request.get_ref().run_id))]
    async fn get_run_summary(
        &self,
        request: Request<v1::GetRunSummaryRequest>,
    ) -> Result<Response<v1::RunSummary>, Status> {
        let id = parse_id("run_id", &request.get_ref().run_id)?;
        let run = existing_run(self.deps.store.as_ref(), id).await?;
        let key = format!(
            "summary:{id}:{}:{}",
            run.completed_tasks,
            run.status.as_str()
        );
        if let Some(bytes) = self.deps.cache.get(&key).await
            && let Ok(summary) = v1::RunSummary::decode(&*bytes)
        {
            return Ok(Response::new(summary));
        }
        let suite_json = self
            .deps
            .store
            .get_suite(id)
            .await
            .map_err(|e| internal("get suite", e))?
            .ok_or_else(|| not_found("run", id))?;
        // Only the labels: the tests (most of a large suite) are skipped.
        let labels: Labels = serde_json::from_str(&suite_json)
            .map_err(|e| internal("decode suite", anyhow::Error::from(e)))?;
        let suite = Suite {
            description: None,
            prompts: labels.prompts,
            providers: labels.providers,
            tests: Vec::new(),
            env: Default::default(),
            max_concurrency: None,
            repeat: None,
        };
        let mut summarizer = Summarizer::default();
        self.deps
            .store
            .for_each_result_metrics(id, &mut |m| summarizer.add(&m))
            .await
            .map_err(|e| internal("result metrics", e))?;
        let summary = summarizer.finish(&run, &suite);
        let ttl = if run.status.is_terminal() {
            self.config.finished_ttl_secs
        } else {
            self.config.live_ttl_secs
        };
        self.deps
            .cache
            .set(&key, &summary.encode_to_vec(), Duration::from_secs(ttl))
            .await;
        Ok(Response::new(summary))
    }
}

/// The part of a stored suite a summary needs.
#[derive(serde::Deserialize)]
struct Labels {
    prompts: Vec<gauntlet_core::suite::Prompt>,
    providers: Vec<gauntlet_core::suite::ProviderSpec>,
}
