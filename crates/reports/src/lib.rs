//! The reports service: consumes report jobs, fetches the run's summary from
//! analytics and its suite from the store in parallel, renders the results
//! a store page at a time, stores the document and marks the report ready
//! (or failed, with the reason).

pub mod render;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use gauntlet_bus::{Bus, Delivery, QueueName};
use gauntlet_config::GauntletConfig;
use gauntlet_core::suite::Suite;
use gauntlet_proto::{
    internal::v1::ReportJob,
    v1::{self, analytics_service_client::AnalyticsServiceClient},
};
use gauntlet_service::{GrpcServer, connect_bus, connect_store, convert};
use gauntlet_store::{ReportOutcome, Store};
use gauntlet_telemetry::{grpc::TraceInterceptor, propagation};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

/// Report jobs rendered at once.
const PREFETCH: u16 = 4;
/// Results read per store round-trip.
const PAGE: u32 = 1000;

type AnalyticsClient = AnalyticsServiceClient<InterceptedService<Channel, TraceInterceptor>>;

#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
}

pub async fn serve(config: GauntletConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = gauntlet_service::startup::bind(&config.reports.listen).await?;
    let deps = Deps {
        store: connect_store(&config.database, &shutdown).await?,
        bus: connect_bus(&config.amqp, &shutdown).await?,
    };
    run(config, deps, listener, shutdown).await
}

pub async fn run(
    config: GauntletConfig,
    deps: Deps,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(config.reports.analytics_url.clone())
        .with_context(|| {
            format!(
                "reports.analytics_url: `{}` is not a valid URL",
                config.reports.analytics_url
            )
        })?
        .connect_lazy();
    let analytics = gauntlet_service::limited!(
        AnalyticsServiceClient::with_interceptor(channel, TraceInterceptor),
        gauntlet_service::MessageLimits::new(&config.grpc)
    );
    let server = GrpcServer::new("reports", &config.grpc).await?;
    let grpc = tokio::spawn(server.serve(listener, shutdown.clone()));
    consume(deps, analytics, shutdown).await;
    grpc.await??;
    Ok(())
}

async fn consume(deps: Deps, analytics: AnalyticsClient, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    'outer: while !shutdown.is_cancelled() {
        let mut stream = match deps.bus.consume(QueueName::Reports, PREFETCH).await {
            Ok(s) => s,
            Err(error) => {
                warn!(%error, "cannot consume report jobs, retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                next = stream.next() => match next {
                    Some(Ok(delivery)) => {
                        let deps = deps.clone();
                        let analytics = analytics.clone();
                        tracker.spawn(async move { handle(deps, analytics, delivery).await });
                    }
                    _ => {
                        warn!("report job stream ended, reconnecting");
                        break;
                    }
                }
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    info!("reports consumer stopped");
}

async fn handle(deps: Deps, analytics: AnalyticsClient, delivery: Delivery) {
    let Ok(job) = ReportJob::decode(delivery.payload.as_slice()) else {
        warn!("undecodable report job, dead-lettering");
        let _ = delivery.dead_letter().await;
        return;
    };
    let span = info_span!(
        "render_report",
        report_id = %job.report_id,
        run_id = %job.run_id,
        "messaging.system" = "rabbitmq",
        "messaging.operation.type" = "process",
    );
    propagation::set_parent(
        &span,
        propagation::extract(
            delivery
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        ),
    );
    async move {
        let (Ok(report_id), Ok(run_id)) = (
            Uuid::parse_str(&job.report_id),
            Uuid::parse_str(&job.run_id),
        ) else {
            let _ = delivery.dead_letter().await;
            return;
        };
        let outcome = match build(&deps, analytics, run_id, job.format).await {
            Ok(content) => ReportOutcome::Ready(content),
            Err(e) => {
                warn!(error = format!("{e:#}"), "report failed");
                ReportOutcome::Failed(format!("{e:#}"))
            }
        };
        match deps.store.finish_report(report_id, outcome).await {
            Ok(()) => {
                let _ = delivery.ack().await;
            }
            Err(error) => {
                warn!(%error, "storing report failed, requeueing");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = delivery.requeue().await;
            }
        }
    }
    .instrument(span)
    .await
}

/// Everything a report shows, gathered. Services and the CLI stream
/// results through [`render::sink`] instead; this is for data already in
/// memory.
pub struct ReportData {
    pub summary: v1::RunSummary,
    pub results: Vec<v1::Result>,
}

/// Renders the run a page of results at a time, so memory does not grow
/// with the run (the finished document is still returned whole).
async fn build(
    deps: &Deps,
    mut analytics: AnalyticsClient,
    run_id: Uuid,
    format: i32,
) -> anyhow::Result<String> {
    let format = match v1::ReportFormat::try_from(format) {
        Ok(v1::ReportFormat::Markdown) => render::Format::Markdown,
        Ok(v1::ReportFormat::Json) => render::Format::Json,
        Ok(v1::ReportFormat::Html) => render::Format::Html,
        Ok(v1::ReportFormat::Csv) => render::Format::Csv,
        Ok(v1::ReportFormat::Junit) => render::Format::Junit,
        Ok(v1::ReportFormat::Unspecified) => anyhow::bail!("no report format given"),
        Err(_) => anyhow::bail!("unknown format {format}"),
    };
    let store = deps.store.as_ref();
    let summary = async {
        analytics
            .get_run_summary(v1::GetRunSummaryRequest {
                run_id: run_id.to_string(),
            })
            .await
            .map(|r| r.into_inner())
            .context("analytics summary")
    };
    let suite = async {
        let text = store
            .get_suite(run_id)
            .await?
            .with_context(|| format!("run {run_id} not found"))?;
        anyhow::Ok(serde_json::from_str::<Suite>(&text)?)
    };
    let (summary, suite) = tokio::try_join!(summary, suite)?;

    let mut document = Vec::new();
    let mut sink = render::sink(format, &mut document);
    sink.begin(&summary)?;
    let mut after = None;
    loop {
        let page = store.list_results(run_id, None, after, PAGE).await?;
        let tests = gauntlet_service::tests::read(
            store,
            run_id,
            &suite,
            page.iter().map(|r| r.result.test_index as u32),
        )
        .await?;
        for record in &page {
            let test = tests.get(record.result.test_index as u32);
            sink.result(&convert::result(record, &suite, test))?;
        }
        after = page.last().map(|r| r.result.task_index);
        if page.len() < PAGE as usize {
            break;
        }
    }
    sink.finish()?;
    drop(sink);
    String::from_utf8(document).context("report is not UTF-8")
}
