//! The reports service: consumes report jobs and renders them. A run's
//! report fetches the run's summary from analytics and its suite from the
//! store in parallel, renders the results a range of pages at a time and
//! stores the document in parts as it grows ([`PART_BYTES`]); a comparison,
//! trend or roll-up fetches its sections from analytics at once and is
//! stored whole. The report is then marked ready (or failed, with the
//! reason) and announced on the event exchange.

pub mod comparison;
pub mod render;
pub mod rollup;
pub mod trend;

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
use gauntlet_telemetry::{grpc::TraceClient, propagation};
use prost::Message as _;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Channel;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

/// Report jobs rendered at once.
const PREFETCH: u16 = 4;
/// Results read per store round-trip.
const PAGE: u32 = 1000;
/// Pages of results read at once while a report renders.
const PAGES_AHEAD: usize = 3;

type AnalyticsClient = AnalyticsServiceClient<TraceClient<Channel>>;

#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
}

pub async fn serve(config: GauntletConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener =
        gauntlet_service::Listeners::bind(&config.reports.listen, &config.reports.metrics_listen)
            .await?;
    let deps = gauntlet_service::while_starting("reports", &config.grpc, &listener.grpc, async {
        Ok(Deps {
            store: connect_store(&config.database, &shutdown).await?,
            bus: connect_bus(&config.amqp, &shutdown).await?,
        })
    })
    .await?;
    run(config, deps, listener, shutdown).await
}

pub async fn run(
    config: GauntletConfig,
    deps: Deps,
    listener: impl Into<gauntlet_service::Listeners>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let channel = gauntlet_service::tls::endpoint(
        "reports.analytics_url",
        &config.reports.analytics_url,
        &config.grpc,
    )?
    .connect_lazy();
    let analytics = gauntlet_service::limited!(
        AnalyticsServiceClient::new(TraceClient::new(channel)),
        gauntlet_service::MessageLimits::new(&config.grpc)
    );
    let server = GrpcServer::new("reports", &config.grpc).await?;
    gauntlet_service::metrics::watch_store(&server.metrics(), deps.store.clone(), shutdown.clone());
    let grpc = tokio::spawn(server.serve(listener.into(), shutdown.clone()));
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
        otel.name = "process gauntlet.reports",
        otel.kind = "consumer",
        "gauntlet.report_id" = %job.report_id,
        "gauntlet.run_id" = %job.run_id,
        "messaging.system" = deps.bus.backend(),
        "messaging.operation.type" = "process",
        "messaging.operation.name" = "deliver",
        "messaging.destination.name" = "gauntlet.reports",
        "messaging.message.id" = delivery.message_id.as_deref(),
    );
    propagation::set_parent_in(
        "gauntlet-reports",
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
        let built = match v1::ReportKind::try_from(job.kind) {
            Ok(v1::ReportKind::Comparison) => build_comparison(analytics, &job).await,
            Ok(v1::ReportKind::Trend) => build_trend(&deps, analytics, run_id, &job).await,
            Ok(v1::ReportKind::Rollup) => build_rollup(analytics, &job).await,
            _ => build(&deps, analytics, report_id, run_id, job.format).await,
        };
        let outcome = match built {
            Ok(stored) => stored,
            Err(e) => {
                warn!(error = format!("{e:#}"), "report failed");
                ReportOutcome::Failed(format!("{e:#}"))
            }
        };
        let status = match &outcome {
            ReportOutcome::Failed(_) => "failed",
            _ => "ready",
        };
        match deps.store.finish_report(report_id, outcome).await {
            Ok(()) => {
                let _ = delivery.ack().await;
                // A hint for whoever waits (the store holds the truth):
                // `report.<id>.ready` or `.failed`, the job as payload.
                let event = gauntlet_bus::Message {
                    payload: job.encode_to_vec(),
                    headers: propagation::inject_current(),
                };
                let key = format!("report.{report_id}.{status}");
                if let Err(error) = deps.bus.publish_event(&key, event).await {
                    warn!(%error, "report event not published");
                }
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

/// A run's summary, from analytics.
async fn run_summary(
    analytics: &AnalyticsClient,
    run_id: String,
) -> anyhow::Result<v1::RunSummary> {
    let what = format!("analytics summary of run {run_id}");
    analytics
        .clone()
        .get_run_summary(v1::GetRunSummaryRequest { run_id })
        .await
        .map(|r| r.into_inner())
        .context(what)
}

fn format_of(format: i32) -> anyhow::Result<render::Format> {
    Ok(match v1::ReportFormat::try_from(format) {
        Ok(v1::ReportFormat::Markdown) => render::Format::Markdown,
        Ok(v1::ReportFormat::Json) => render::Format::Json,
        Ok(v1::ReportFormat::Html) => render::Format::Html,
        Ok(v1::ReportFormat::Csv) => render::Format::Csv,
        Ok(v1::ReportFormat::Junit) => render::Format::Junit,
        Ok(v1::ReportFormat::Unspecified) => anyhow::bail!("no report format given"),
        Err(_) => anyhow::bail!("unknown format {format}"),
    })
}

/// A comparison report: CompareRuns and both runs' summaries, asked of
/// analytics at once. The document is small (a row per compared pair), so
/// it is stored whole.
async fn build_comparison(
    analytics: AnalyticsClient,
    job: &ReportJob,
) -> anyhow::Result<ReportOutcome> {
    let format = format_of(job.format)?;
    let summary = |run_id: String| run_summary(&analytics, run_id);
    let mut compare = analytics.clone();
    let comparison = async {
        compare
            .compare_runs(v1::CompareRunsRequest {
                run_a: job.run_id.clone(),
                run_b: job.compare_to.clone(),
                by: job.by,
                alpha: job.alpha,
                seed: 0,
            })
            .await
            .map(|r| r.into_inner())
            .context("analytics comparison")
    };
    let b = async {
        match job.compare_to.is_empty() {
            true => anyhow::Ok(None),
            false => summary(job.compare_to.clone()).await.map(Some),
        }
    };
    let (comparison, a, b) = tokio::try_join!(comparison, summary(job.run_id.clone()), b)?;
    let data = comparison::ComparisonData { comparison, a, b };
    Ok(ReportOutcome::Ready(comparison::render(format, &data)))
}

/// A roll-up of the job's runs: their summaries, asked of analytics at
/// once; small, so stored whole.
async fn build_rollup(
    analytics: AnalyticsClient,
    job: &ReportJob,
) -> anyhow::Result<ReportOutcome> {
    let format = format_of(job.format)?;
    let runs = futures::future::try_join_all(
        job.runs
            .iter()
            .map(|run_id| run_summary(&analytics, run_id.clone())),
    )
    .await?;
    Ok(ReportOutcome::Ready(rollup::render(
        format,
        &rollup::RollupData { runs },
    )))
}

/// A trend report of run `run_id`'s suite (its description), as of that
/// run; small, so stored whole.
async fn build_trend(
    deps: &Deps,
    mut analytics: AnalyticsClient,
    run_id: Uuid,
    job: &ReportJob,
) -> anyhow::Result<ReportOutcome> {
    let format = format_of(job.format)?;
    let run = deps
        .store
        .get_run(run_id)
        .await?
        .with_context(|| format!("run {run_id} not found"))?;
    gauntlet_service::convert::link_to_run(&run);
    let trends = analytics
        .get_trends(gauntlet_service::for_project(
            v1::GetTrendsRequest {
                description: run.description.clone(),
                bucket: job.bucket,
                ..Default::default()
            },
            &run.project_id,
        ))
        .await
        .context("analytics trends")?
        .into_inner();
    let data = trend::TrendData {
        trends,
        run_id: run_id.to_string(),
    };
    trend::render(format, &data)
        .map(ReportOutcome::Ready)
        .map_err(anyhow::Error::msg)
}

/// Bytes of a document per stored part (and so per `ReadReport` read).
pub const PART_BYTES: usize = 1 << 20;

/// Renders the run a page of results at a time and stores the document in
/// parts as it grows, so memory does not grow with the run nor with the
/// document. Three things go at once: this task pages results in from the
/// store, a blocking thread renders them, and another task stores each
/// [`PART_BYTES`] of the document the renderer hands over; bounded channels
/// between them keep at most a few pages and parts in flight.
async fn build(
    deps: &Deps,
    analytics: AnalyticsClient,
    report_id: Uuid,
    run_id: Uuid,
    format: i32,
) -> anyhow::Result<ReportOutcome> {
    let format = format_of(format)?;
    let store = deps.store.as_ref();
    let summary = run_summary(&analytics, run_id.to_string());
    let suite = async {
        let text = store
            .get_suite(run_id)
            .await?
            .with_context(|| format!("run {run_id} not found"))?;
        anyhow::Ok(serde_json::from_str::<Suite>(&text)?)
    };
    let (summary, suite) = tokio::try_join!(summary, suite)?;
    let summary_tasks = summary.total_tasks;

    let (page_tx, mut page_rx) = tokio::sync::mpsc::channel::<Vec<v1::Result>>(2);
    let (part_tx, mut part_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let renderer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut sink = render::sink(format, PartWriter::new(part_tx));
        sink.begin(&summary)?;
        while let Some(page) = page_rx.blocking_recv() {
            for result in &page {
                sink.result(result)?;
            }
        }
        sink.finish()
    });
    // Both `move`: each drops its end of a channel when it stops, even on
    // an error, so the renderer and the other task see the end and stop.
    // The run's task indexes in ranges of a page, read and converted
    // [`PAGES_AHEAD`] at a time (each on its own connection, the store's
    // decoding on as many threads) and handed on in order.
    let ranges = i64::try_from(summary_tasks.div_ceil(u64::from(PAGE)))?;
    let suite = &suite;
    let pages = async move {
        let mut pages = futures::stream::iter(0..ranges)
            .map(|k| async move {
                let (from, to) = (k * i64::from(PAGE), (k + 1) * i64::from(PAGE));
                let after = (from > 0).then(|| from - 1);
                let mut page = store.list_results(run_id, None, after, PAGE).await?;
                // Past a gap (a run still going) a page reaches into the
                // next range, which reads those results itself.
                page.retain(|r| r.result.task_index < to);
                let tests = gauntlet_service::tests::read(
                    store,
                    run_id,
                    suite,
                    page.iter().map(|r| r.result.test_index as u32),
                )
                .await?;
                anyhow::Ok(
                    page.iter()
                        .map(|record| {
                            let test = tests.get(record.result.test_index as u32);
                            convert::result(record, suite, test)
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .buffered(PAGES_AHEAD);
        while let Some(results) = pages.next().await {
            // The renderer stopped (its error is reported below).
            if page_tx.send(results?).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    };
    let parts = async move {
        let (mut parts, mut bytes) = (0u32, 0u64);
        while let Some(part) = part_rx.recv().await {
            store.put_report_part(report_id, parts, &part).await?;
            parts += 1;
            bytes += part.len() as u64;
        }
        anyhow::Ok((parts, bytes))
    };
    let (paged, stored) = tokio::join!(pages, parts);
    let rendered = renderer.await.context("the renderer panicked")?;
    // The first failure is the cause: a store error stops the pages or the
    // parts, and then the renderer's channel.
    paged?;
    let (parts, bytes) = stored?;
    rendered.context("rendering")?;
    Ok(ReportOutcome::Stored { bytes, parts })
}

/// The renderer's writer: the document in [`PART_BYTES`] parts, handed to
/// the task that stores them (blocking while two wait), and the rest on
/// `flush`, which a sink calls once, when it finishes.
struct PartWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl PartWriter {
    fn new(tx: tokio::sync::mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(PART_BYTES),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(PART_BYTES));
        self.tx
            .blocking_send(part)
            .map_err(|_| std::io::Error::other("the report's parts are no longer stored"))
    }
}

impl std::io::Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(PART_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PART_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}
