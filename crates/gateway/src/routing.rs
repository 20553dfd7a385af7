//! The public analytics, report and monitor APIs: analytics and monitor
//! calls are forwarded to their services (with trace context); reports are
//! queued here and rendered by the reports service.

use std::sync::Arc;

use gauntlet_bus::{Message, QueueName};
use gauntlet_config::GauntletConfig;
use gauntlet_proto::{
    internal::v1::ReportJob,
    v1::{
        self, analytics_service_client::AnalyticsServiceClient,
        analytics_service_server::AnalyticsService, monitor_service_client::MonitorServiceClient,
        monitor_service_server::MonitorService, report_service_server::ReportService,
    },
};
use gauntlet_service::{
    MessageLimits, convert, for_project, internal, invalid, limited, limits::answer, not_found,
    parse_id, run_in,
};
use gauntlet_store::{NewReport, RUN_REPORT, ReportRecord, ReportReuse, ReportStatus};
use gauntlet_telemetry::grpc::TraceClient;
use prost::Message as _;
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{Deps, access::Caller};

type Traced = TraceClient<Channel>;

#[derive(Clone)]
pub struct Router {
    deps: Deps,
    analytics: AnalyticsServiceClient<Traced>,
    monitor: MonitorServiceClient<Traced>,
    limits: MessageLimits,
    /// Each run's project, as read (it never changes): scoping the calls
    /// forwarded to analytics costs a query per run once.
    owners: moka::future::Cache<Uuid, Arc<str>>,
}

fn lazy_channel(
    field: &str,
    url: &str,
    grpc: &gauntlet_config::GrpcConfig,
) -> anyhow::Result<Channel> {
    let endpoint = gauntlet_service::tls::endpoint(field, url, grpc)?
        .connect_timeout(std::time::Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

impl Router {
    pub fn new(config: &GauntletConfig, deps: Deps) -> anyhow::Result<Self> {
        let limits = MessageLimits::new(&config.grpc);
        Ok(Self {
            deps,
            analytics: limited!(
                AnalyticsServiceClient::new(TraceClient::new(lazy_channel(
                    "gateway.analytics_url",
                    &config.gateway.analytics_url,
                    &config.grpc,
                )?)),
                limits
            ),
            monitor: limited!(
                MonitorServiceClient::new(TraceClient::new(lazy_channel(
                    "gateway.monitor_url",
                    &config.gateway.monitor_url,
                    &config.grpc,
                )?)),
                limits
            ),
            limits,
            owners: moka::future::Cache::new(100_000),
        })
    }
}

impl Router {
    /// The stored report `report_id` names if it is `caller`'s project's,
    /// or `NotFound`.
    async fn report(&self, caller: &Caller, report_id: &str) -> Result<ReportRecord, Status> {
        let id = parse_id("report_id", report_id)?;
        self.deps
            .store
            .get_report(id)
            .await
            .map_err(|e| internal("get report", e))?
            .filter(|r| r.project_id == caller.project)
            .ok_or_else(|| not_found("report", id))
    }

    /// Run id `value` of request field `field`, if the run is `caller`'s
    /// project's; another project's run is `NotFound`.
    async fn owned(&self, caller: &Caller, field: &str, value: &str) -> Result<Uuid, Status> {
        let id = parse_id(field, value)?;
        let owner = match self.owners.get(&id).await {
            Some(owner) => owner,
            None => {
                let run = run_in(self.deps.store.as_ref(), id, &caller.project).await?;
                let owner: Arc<str> = run.project_id.as_str().into();
                self.owners.insert(id, owner.clone()).await;
                owner
            }
        };
        if *owner != *caller.project {
            return Err(not_found("run", id));
        }
        Ok(id)
    }
}

/// The name a report format is stored under.
pub fn format_name(format: v1::ReportFormat) -> Option<&'static str> {
    Some(match format {
        v1::ReportFormat::Markdown => "markdown",
        v1::ReportFormat::Json => "json",
        v1::ReportFormat::Html => "html",
        v1::ReportFormat::Csv => "csv",
        v1::ReportFormat::Junit => "junit",
        v1::ReportFormat::Unspecified => return None,
    })
}

fn format_from_name(name: &str) -> v1::ReportFormat {
    match name {
        "markdown" => v1::ReportFormat::Markdown,
        "json" => v1::ReportFormat::Json,
        "html" => v1::ReportFormat::Html,
        "csv" => v1::ReportFormat::Csv,
        "junit" => v1::ReportFormat::Junit,
        _ => v1::ReportFormat::Unspecified,
    }
}

impl Router {
    /// The report as a message. Its document comes inline when it fits in
    /// one (a document stored in parts is read back for it); one too large
    /// is left out (`content_bytes` still tells its size) for `ReadReport`
    /// to stream.
    async fn report_message(&self, r: ReportRecord) -> Result<v1::Report, Status> {
        let fits = r.bytes <= self.limits.payload_budget() as u64;
        let content = if !fits {
            String::new()
        } else if r.parts == 0 {
            r.content
        } else {
            let mut doc = Vec::with_capacity(r.bytes as usize);
            for part in 0..r.parts {
                let data = self
                    .deps
                    .store
                    .report_part(r.id, part)
                    .await
                    .map_err(|e| internal("read report", e))?
                    .ok_or_else(|| {
                        Status::data_loss(format!("report {} lost its part {part}", r.id))
                    })?;
                doc.extend_from_slice(&data);
            }
            String::from_utf8(doc)
                .map_err(|_| Status::data_loss(format!("report {} is not UTF-8", r.id)))?
        };
        let (kind, compare_to) = kind_of(&r.kind);
        Ok(v1::Report {
            kind: kind as i32,
            compare_to,
            id: r.id.to_string(),
            run_id: r.run_id.to_string(),
            format: format_from_name(&r.format) as i32,
            status: match r.status {
                ReportStatus::Pending => v1::ReportStatus::Pending,
                ReportStatus::Ready => v1::ReportStatus::Ready,
                ReportStatus::Failed => v1::ReportStatus::Failed,
            } as i32,
            content,
            content_bytes: r.bytes,
            error: r.error,
            created_at: Some(convert::timestamp(r.created_at)),
            finished_at: r.finished_at.map(convert::timestamp),
        })
    }
}

#[tonic::async_trait]
impl AnalyticsService for Router {
    async fn get_run_summary(
        &self,
        request: Request<v1::GetRunSummaryRequest>,
    ) -> Result<Response<v1::RunSummary>, Status> {
        let caller = Caller::of(&request);
        self.owned(&caller, "run_id", &request.get_ref().run_id)
            .await?;
        let mut client = self.analytics.clone();
        client
            .get_run_summary(for_project(request.into_inner(), &caller.project))
            .await
            // A new response: the upstream's headers (its `grpc-encoding`
            // among them) describe the hop from analytics, not this one.
            .map(|r| answer(r.into_inner()))
            .map_err(|s| internal("analytics", s))
    }

    async fn compare_runs(
        &self,
        request: Request<v1::CompareRunsRequest>,
    ) -> Result<Response<v1::Comparison>, Status> {
        let caller = Caller::of(&request);
        self.owned(&caller, "run_a", &request.get_ref().run_a)
            .await?;
        if !request.get_ref().run_b.is_empty() {
            self.owned(&caller, "run_b", &request.get_ref().run_b)
                .await?;
        }
        let mut client = self.analytics.clone();
        client
            .compare_runs(for_project(request.into_inner(), &caller.project))
            .await
            .map(|r| Response::new(r.into_inner()))
            .map_err(|s| internal("analytics", s))
    }

    async fn get_insights(
        &self,
        request: Request<v1::GetInsightsRequest>,
    ) -> Result<Response<v1::Insights>, Status> {
        let caller = Caller::of(&request);
        self.owned(&caller, "run_id", &request.get_ref().run_id)
            .await?;
        let mut client = self.analytics.clone();
        client
            .get_insights(for_project(request.into_inner(), &caller.project))
            .await
            .map(|r| Response::new(r.into_inner()))
            .map_err(|s| internal("analytics", s))
    }

    async fn get_trends(
        &self,
        request: Request<v1::GetTrendsRequest>,
    ) -> Result<Response<v1::Trends>, Status> {
        let caller = Caller::of(&request);
        let mut client = self.analytics.clone();
        client
            .get_trends(for_project(request.into_inner(), &caller.project))
            .await
            .map(|r| Response::new(r.into_inner()))
            .map_err(|s| internal("analytics", s))
    }

    async fn detect_regressions(
        &self,
        request: Request<v1::DetectRegressionsRequest>,
    ) -> Result<Response<v1::Regressions>, Status> {
        let caller = Caller::of(&request);
        self.owned(&caller, "run_id", &request.get_ref().run_id)
            .await?;
        if !request.get_ref().baseline_run_id.is_empty() {
            self.owned(
                &caller,
                "baseline_run_id",
                &request.get_ref().baseline_run_id,
            )
            .await?;
        }
        let mut client = self.analytics.clone();
        client
            .detect_regressions(for_project(request.into_inner(), &caller.project))
            .await
            .map(|r| Response::new(r.into_inner()))
            .map_err(|s| internal("analytics", s))
    }
}

#[tonic::async_trait]
impl MonitorService for Router {
    async fn get_system_health(
        &self,
        request: Request<v1::GetSystemHealthRequest>,
    ) -> Result<Response<v1::SystemHealth>, Status> {
        let mut client = self.monitor.clone();
        client
            .get_system_health(request.into_inner())
            .await
            // A new response: the upstream's headers (its `grpc-encoding`
            // among them) describe the hop from monitor, not this one.
            .map(|r| Response::new(r.into_inner()))
            .map_err(|s| internal("monitor", s))
    }

    async fn list_alerts(
        &self,
        request: Request<v1::ListAlertsRequest>,
    ) -> Result<Response<v1::ListAlertsResponse>, Status> {
        let caller = Caller::of(&request);
        let mut client = self.monitor.clone();
        let mut alerts = client
            .list_alerts(request.into_inner())
            .await
            .map_err(|s| internal("monitor", s))?
            .into_inner();
        // Fleet alerts are everyone's; a project's (labelled with it) are
        // its own.
        alerts
            .alerts
            .retain(|a| a.labels.get("project").is_none_or(|p| *p == caller.project));
        Ok(Response::new(alerts))
    }

    async fn get_bottlenecks(
        &self,
        request: Request<v1::GetBottlenecksRequest>,
    ) -> Result<Response<v1::Findings>, Status> {
        let mut client = self.monitor.clone();
        client
            .get_bottlenecks(request.into_inner())
            .await
            .map(|r| Response::new(r.into_inner()))
            .map_err(|s| internal("monitor", s))
    }

    async fn get_recommendations(
        &self,
        request: Request<v1::GetRecommendationsRequest>,
    ) -> Result<Response<v1::Findings>, Status> {
        let mut client = self.monitor.clone();
        client
            .get_recommendations(request.into_inner())
            .await
            .map(|r| Response::new(r.into_inner()))
            .map_err(|s| internal("monitor", s))
    }
}

/// The stored kind of a comparison report: what makes two requests for
/// one the same report (with its run and format).
fn comparison_key(b: Option<Uuid>, by: v1::CompareBy, alpha: f64) -> String {
    let b = b.map_or_else(|| "-".to_owned(), |b| b.to_string());
    let alpha = if alpha == 0.0 { 0.05 } else { alpha };
    format!("compare b={b} by={} alpha={alpha}", by.as_str_name())
}

/// A stored kind's `ReportKind` and comparison run.
fn kind_of(kind: &str) -> (v1::ReportKind, String) {
    if kind.starts_with("trend ") {
        return (v1::ReportKind::Trend, String::new());
    }
    if kind.starts_with("rollup ") {
        return (v1::ReportKind::Rollup, String::new());
    }
    match kind.strip_prefix("compare ") {
        Some(rest) => {
            let b = rest
                .split(' ')
                .find_map(|t| t.strip_prefix("b="))
                .filter(|b| *b != "-")
                .unwrap_or_default();
            (v1::ReportKind::Comparison, b.to_owned())
        }
        None => (v1::ReportKind::Run, String::new()),
    }
}

/// Runs in one roll-up report, at most.
const MAX_ROLLUP_RUNS: usize = 100;

/// How long a pending report of a finished run is answered again to a new
/// request for it, rather than made anew.
const PENDING_REUSED_SECS: i64 = 300;

#[tonic::async_trait]
impl ReportService for Router {
    async fn create_report(
        &self,
        request: Request<v1::CreateReportRequest>,
    ) -> Result<Response<v1::Report>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let format = v1::ReportFormat::try_from(req.format)
            .ok()
            .and_then(format_name)
            .ok_or_else(|| invalid("format", "must be one of MARKDOWN, JSON, HTML, CSV, JUNIT"))?;
        let trend = req.kind == v1::ReportKind::Trend as i32;
        let run = if trend {
            // A trend is stored with its suite's newest completed run: a
            // new run of the suite makes the next request a new report.
            if req.suite.is_empty() {
                return Err(invalid(
                    "suite",
                    "a trend report needs the suite's description",
                ));
            }
            if format == "junit" {
                return Err(invalid(
                    "format",
                    "JUNIT is for run and comparison reports; a trend has no tests",
                ));
            }
            self.deps
                .store
                .latest_completed_run(&caller.project, &req.suite)
                .await
                .map_err(|e| internal("find the suite's runs", e))?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "suite: no completed run of a suite described `{}`",
                        req.suite
                    ))
                })?
        } else {
            let run_id = parse_id("run_id", &req.run_id)?;
            run_in(self.deps.store.as_ref(), run_id, &caller.project).await?
        };
        let run_id = run.id;
        // A roll-up's other runs, each checked to exist.
        let mut rolled = Vec::new();
        if req.kind == v1::ReportKind::Rollup as i32 {
            if req.runs.len() > MAX_ROLLUP_RUNS - 1 {
                return Err(invalid(
                    "runs",
                    format!("at most {} runs in a roll-up", MAX_ROLLUP_RUNS),
                ));
            }
            for (i, id) in req.runs.iter().enumerate() {
                let id = parse_id(&format!("runs[{i}]"), id)?;
                rolled.push(run_in(self.deps.store.as_ref(), id, &caller.project).await?);
            }
        }
        let (kind, compare_to) = match v1::ReportKind::try_from(req.kind) {
            Ok(v1::ReportKind::Unspecified | v1::ReportKind::Run) => (RUN_REPORT.to_owned(), None),
            Ok(v1::ReportKind::Rollup) => {
                let ids: Vec<String> = rolled.iter().map(|r| r.id.to_string()).collect();
                (format!("rollup runs={}", ids.join(",")), None)
            }
            Ok(v1::ReportKind::Trend) => {
                let bucket = v1::TrendBucket::try_from(req.bucket)
                    .map_err(|_| invalid("bucket", "must be a TrendBucket value"))?;
                (format!("trend bucket={}", bucket.as_str_name()), None)
            }
            Ok(v1::ReportKind::Comparison) => {
                let b = if req.compare_to.is_empty() {
                    None
                } else {
                    let id = parse_id("compare_to", &req.compare_to)?;
                    Some(run_in(self.deps.store.as_ref(), id, &caller.project).await?)
                };
                if !(req.alpha == 0.0 || (req.alpha > 0.0 && req.alpha < 1.0)) {
                    return Err(invalid("alpha", "must be in (0, 1), or 0 for 0.05"));
                }
                let by = v1::CompareBy::try_from(req.by)
                    .map_err(|_| invalid("by", "must be a CompareBy value"))?;
                let key = comparison_key(b.as_ref().map(|r| r.id), by, req.alpha);
                (key, b)
            }
            Err(_) => return Err(invalid("kind", "must be RUN, COMPARISON, TREND or ROLLUP")),
        };
        // When the last of its runs ended, if they all have.
        let finished = std::iter::once(&run)
            .chain(compare_to.as_ref())
            .chain(&rolled)
            .map(|r| r.finished_at.filter(|_| r.status.is_terminal()))
            .try_fold(chrono::DateTime::<chrono::Utc>::MIN_UTC, |last, end| {
                end.map(|end| last.max(end))
            });
        // A report of finished runs does not change: one of the same kind
        // and format made since they finished (ready, or still rendering)
        // is answered again, not rendered twice, even to requests at the
        // same moment (the store looks and creates in one step). One
        // still pending long after it was asked for lost its job: it is
        // made again. A report of a run still going is partial, so each
        // request makes its own.
        let new = NewReport {
            id: Uuid::now_v7(),
            project_id: caller.project.clone(),
            run_id,
            format: format.into(),
            kind,
        };
        let report = match finished {
            Some(since) => {
                let reuse = ReportReuse {
                    since,
                    pending_since: chrono::Utc::now()
                        - chrono::Duration::seconds(PENDING_REUSED_SECS),
                };
                let (report, created) = self
                    .deps
                    .store
                    .find_or_create_report(new, reuse)
                    .await
                    .map_err(|e| internal("create report", e))?;
                caller.target(report.id);
                if !created {
                    return Ok(Response::new(self.report_message(report).await?));
                }
                report
            }
            None => self
                .deps
                .store
                .create_report(new)
                .await
                .map_err(|e| internal("create report", e))?,
        };
        caller.target(report.id);
        let job = ReportJob {
            report_id: report.id.to_string(),
            run_id: run_id.to_string(),
            format: req.format,
            kind: req.kind,
            compare_to: compare_to.map(|r| r.id.to_string()).unwrap_or_default(),
            by: req.by,
            alpha: req.alpha,
            bucket: req.bucket,
            runs: std::iter::once(run_id.to_string())
                .chain(rolled.iter().map(|r| r.id.to_string()))
                .collect(),
        };
        self.deps
            .bus
            .publish(
                QueueName::Reports,
                vec![Message {
                    payload: job.encode_to_vec(),
                    headers: gauntlet_telemetry::propagation::inject_current(),
                }],
            )
            .await
            .map_err(|e| internal("queue report", e))?;
        Ok(Response::new(self.report_message(report).await?))
    }

    async fn get_report(
        &self,
        request: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::Report>, Status> {
        let caller = Caller::of(&request);
        let report = self.report(&caller, &request.get_ref().report_id).await?;
        Ok(Response::new(self.report_message(report).await?))
    }

    type ReadReportStream = ReportChunks;

    async fn read_report(
        &self,
        request: Request<v1::GetReportRequest>,
    ) -> Result<Response<Self::ReadReportStream>, Status> {
        let caller = Caller::of(&request);
        let report = self.report(&caller, &request.get_ref().report_id).await?;
        let id = report.id;
        if report.status != ReportStatus::Ready {
            return Err(Status::failed_precondition(format!(
                "report {id} is not ready; poll GetReport until it is"
            )));
        }
        let chunk = REPORT_CHUNK.min(self.limits.payload_budget()).max(1);
        if report.parts == 0 {
            let chunks: Vec<Result<v1::ReportChunk, Status>> = report
                .content
                .as_bytes()
                .chunks(chunk)
                .map(|data| {
                    Ok(v1::ReportChunk {
                        data: data.to_vec(),
                    })
                })
                .collect();
            return Ok(Response::new(Box::pin(tokio_stream::iter(chunks))));
        }
        // One stored part at a time, read when the client has taken the
        // last: the gateway holds a part, never the document.
        let store = self.deps.store.clone();
        use futures::StreamExt as _;
        let parts = futures::stream::iter(0..report.parts)
            .then(move |part| {
                let store = store.clone();
                async move {
                    let data = store
                        .report_part(id, part)
                        .await
                        .map_err(|e| internal("read report", e))?
                        .ok_or_else(|| {
                            Status::data_loss(format!("report {id} lost its part {part}"))
                        })?;
                    let chunks: Vec<Result<v1::ReportChunk, Status>> = data
                        .chunks(chunk)
                        .map(|data| {
                            Ok(v1::ReportChunk {
                                data: data.to_vec(),
                            })
                        })
                        .collect();
                    Ok::<_, Status>(futures::stream::iter(chunks))
                }
            })
            .map(|chunks| match chunks {
                Ok(chunks) => chunks.left_stream(),
                Err(status) => futures::stream::iter([Err(status)]).right_stream(),
            })
            .flatten();
        Ok(Response::new(Box::pin(parts)))
    }
}

/// Bytes per `ReadReport` message.
const REPORT_CHUNK: usize = 1024 * 1024;

type ReportChunks =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::ReportChunk, Status>> + Send>>;
