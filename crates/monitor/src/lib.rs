//! The monitor. On every poll it:
//! - probes every service's gRPC health and checks Postgres (or SQLite),
//!   Redis and RabbitMQ (or the in-process bus), with their latency;
//! - reads the depth and consumers of the work queues and their dead-letter
//!   queues from RabbitMQ (`gauntlet_queue_*` on its own `/metrics`);
//! - scrapes every service's `/metrics` into a short history;
//! - evaluates the alert rules (metric rules over that history, quality
//!   rules over analytics' comparisons of a suite's runs) and moves alerts
//!   through pending, firing and resolved ([`alerts`]).
//!
//! It answers `GetSystemHealth` from the latest poll, `ListAlerts` from the
//! store, and `GetBottlenecks` / `GetRecommendations` from the history.

pub mod alerts;
pub mod book;
pub mod findings;
pub mod history;
pub mod quality;
pub mod rules;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use gauntlet_bus::{Bus, QueueName};
use gauntlet_cache::Cache;
use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1::{
    self, analytics_service_client::AnalyticsServiceClient, monitor_service_server::MonitorService,
};
use gauntlet_service::{GrpcServer, connect_bus, convert};
use gauntlet_store::{AlertQuery, AlertRecord, AlertState};
use gauntlet_telemetry::metrics::{self as telemetry_metrics, Registry};
use tokio::sync::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::{debug, warn};

use crate::{
    alerts::{Alerting, Notifier},
    history::History,
    quality::Quality,
    rules::Rule,
};

/// How long one probe, check or scrape may take before its target counts
/// as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one poll's quality check may take.
const QUALITY_WAIT: Duration = Duration::from_secs(5);

/// L1 of the monitor's cache handle: it only pings Redis.
const CACHE_BYTES: u64 = 1 << 20;

pub struct Deps {
    pub bus: Arc<dyn Bus>,
    /// Where alerts are kept and recent runs read, and the database's
    /// health: the store in embedded mode, analytics' Records service as a
    /// service; without it alerts live in memory and quality rules are off.
    pub store: Option<Arc<dyn book::Book>>,
    /// Redis' health, when the cache has Redis behind it.
    pub cache: Option<Cache>,
}

struct Target {
    name: String,
    endpoint: String,
    client: HealthClient<Channel>,
}

pub async fn serve(config: GauntletConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listeners =
        gauntlet_service::Listeners::bind(&config.monitor.listen, &config.monitor.metrics_listen)
            .await?;
    let cache = (!config.redis.url.is_empty())
        .then(|| Cache::new(&config.redis, CACHE_BYTES))
        .transpose()
        .context("redis: cannot build the cache pool")?;
    // No database credentials: alerts and runs go through analytics,
    // which the monitor watches anyway (and without waiting for it: the
    // monitor is what says it is down).
    let channel = gauntlet_service::tls::endpoint(
        "monitor.analytics_url",
        &config.monitor.analytics_url,
        &config.grpc,
    )?
    .connect_timeout(PROBE_TIMEOUT)
    .connect_lazy();
    let limits = gauntlet_service::MessageLimits::new(&config.grpc);
    let records = gauntlet_service::limited!(
        gauntlet_proto::internal::v1::records_client::RecordsClient::new(channel),
        limits
    );
    let bus = gauntlet_service::while_starting("monitor", &config.grpc, &listeners.grpc, async {
        connect_bus(&config.amqp, &shutdown).await
    })
    .await?;
    let deps = Deps {
        bus,
        store: Some(Arc::new(book::RemoteBook::new(records))),
        cache,
    };
    run(config, deps, listeners, shutdown).await
}

/// The rules of `monitor.rules_file`, or the shipped ones.
pub fn load_rules(config: &GauntletConfig) -> anyhow::Result<Vec<Rule>> {
    let path = config.monitor.rules_file.trim();
    if path.is_empty() {
        return Ok(rules::parse(rules::DEFAULT_RULES, "the built-in rules")?);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("monitor.rules_file: cannot read {path}"))?;
    Ok(rules::parse(&text, path)?)
}

pub async fn run(
    config: GauntletConfig,
    deps: Deps,
    listener: impl Into<gauntlet_service::Listeners>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let rules = load_rules(&config)?;
    let limits = gauntlet_service::MessageLimits::new(&config.grpc);
    let mut targets = Vec::new();
    for (name, url) in config.monitor.target_list()? {
        let channel = gauntlet_service::tls::endpoint("monitor.targets", &url, &config.grpc)?
            .connect_timeout(PROBE_TIMEOUT)
            .connect_lazy();
        targets.push(Target {
            name,
            endpoint: url,
            client: gauntlet_service::limited!(HealthClient::new(channel), limits),
        });
    }
    let scrapes = config.monitor.metrics_target_list()?;
    for (_, url) in &scrapes {
        reqwest::Url::parse(url)
            .with_context(|| format!("monitor.metrics_targets: `{url}` is not a valid URL"))?;
    }
    let mut server = GrpcServer::new("monitor", &config.grpc).await?;
    let registry = server.metrics();
    let quality = match (&deps.store, rules.iter().any(|r| r.quality.is_some())) {
        (Some(store), true) => {
            let channel = gauntlet_service::tls::endpoint(
                "monitor.analytics_url",
                &config.monitor.analytics_url,
                &config.grpc,
            )?
            .connect_lazy();
            let client = gauntlet_service::limited!(AnalyticsServiceClient::new(channel), limits);
            Some(Quality::new(store.clone(), client))
        }
        _ => None,
    };
    let mut wanted = rules::metric_names(&rules);
    wanted.extend(findings::METRICS.iter().map(|s| (*s).to_owned()));
    // The rules' longest window, and the findings' (5 minutes).
    let keep = rules
        .iter()
        .flat_map(|r| r.expr.iter().chain(r.conditions.iter().map(|c| &c.expr)))
        .map(|e| e.window)
        .chain([Duration::from_secs(300)])
        .max()
        .unwrap_or_default()
        + Duration::from_secs(30);
    let http = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .context("building the monitor's HTTP client")?;
    let notifier = Arc::new(Notifier {
        bus: deps.bus.clone(),
        webhooks: config.monitor.webhook_list(),
        attempts: config.monitor.webhook_attempts,
        http: http.clone(),
        registry: registry.clone(),
    });
    let mut alerting = Alerting::new(deps.store.clone(), notifier, registry.clone()).await;
    alerting.seed(&rules);
    let monitor = Monitor {
        inner: Arc::new(Inner {
            targets,
            scrapes,
            http,
            bus: deps.bus,
            store: deps.store,
            cache: deps.cache.filter(Cache::is_shared),
            registry,
            rules,
            latest: RwLock::new(None),
            history: std::sync::Mutex::new(History::new(keep, wanted)),
            alerting: Mutex::new(alerting),
            quality: Mutex::new(quality),
            polling: Mutex::new(()),
        }),
    };
    let poller = monitor.clone();
    let interval = Duration::from_millis(config.monitor.poll_interval_ms.max(100));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => { poller.poll().await; }
            }
        }
    });
    let limits = server.limits();
    server.add_service(gauntlet_service::limited!(
        v1::monitor_service_server::MonitorServiceServer::new(monitor),
        limits
    ));
    server.serve(listener.into(), shutdown).await
}

#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    targets: Vec<Target>,
    /// `name`, `/metrics` URL.
    scrapes: Vec<(String, String)>,
    http: reqwest::Client,
    bus: Arc<dyn Bus>,
    store: Option<Arc<dyn book::Book>>,
    cache: Option<Cache>,
    registry: Arc<Registry>,
    rules: Vec<Rule>,
    latest: RwLock<Option<v1::SystemHealth>>,
    history: std::sync::Mutex<History>,
    alerting: Mutex<Alerting>,
    quality: Mutex<Option<Quality>>,
    /// One poll at a time.
    polling: Mutex<()>,
}

async fn probe(target: &Target) -> v1::ServiceHealth {
    let started = Instant::now();
    let mut client = target.client.clone();
    let outcome = tokio::time::timeout(
        PROBE_TIMEOUT,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await;
    let (status, detail) = match outcome {
        Ok(Ok(resp)) => match resp.into_inner().status() {
            ServingStatus::Serving => (v1::ServingStatus::Serving, String::new()),
            other => (
                v1::ServingStatus::NotServing,
                format!("reports {}", other.as_str_name()),
            ),
        },
        Ok(Err(status)) => (v1::ServingStatus::Unreachable, status.message().to_string()),
        Err(_) => (
            v1::ServingStatus::Unreachable,
            format!("no answer within {} ms", PROBE_TIMEOUT.as_millis()),
        ),
    };
    v1::ServiceHealth {
        name: target.name.clone(),
        endpoint: target.endpoint.clone(),
        status: status as i32,
        detail,
        probe_ms: started.elapsed().as_secs_f64() * 1000.0,
        checked_at: Some(convert::timestamp(Utc::now())),
    }
}

/// Runs `check` within [`PROBE_TIMEOUT`] as dependency `name`'s health.
async fn dependency<F>(name: &str, check: F) -> v1::DependencyHealth
where
    F: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, check).await;
    let (status, detail) = match outcome {
        Ok(Ok(())) => (v1::ServingStatus::Serving, String::new()),
        Ok(Err(error)) => (v1::ServingStatus::Unreachable, error),
        Err(_) => (
            v1::ServingStatus::Unreachable,
            format!("no answer within {} ms", PROBE_TIMEOUT.as_millis()),
        ),
    };
    v1::DependencyHealth {
        name: name.into(),
        status: status as i32,
        detail,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        checked_at: Some(convert::timestamp(Utc::now())),
    }
}

impl Monitor {
    async fn poll(&self) -> v1::SystemHealth {
        let _one = self.inner.polling.lock().await;
        let inner = &self.inner;
        let r = &inner.registry;
        let (services, queues, dependencies) = tokio::join!(
            self.probe_services(),
            self.read_queues(),
            self.check_dependencies()
        );
        let (queues, rabbitmq) = queues;
        let mut dependencies = dependencies;
        dependencies.push(rabbitmq);
        for s in &services {
            r.gauge_with("gauntlet_service_up", &[("target", &s.name)])
                .set(if s.status == v1::ServingStatus::Serving as i32 {
                    1.0
                } else {
                    0.0
                });
            if s.status != v1::ServingStatus::Serving as i32 {
                debug!(service = %s.name, detail = %s.detail, "service not serving");
            }
        }
        for d in &dependencies {
            let up = d.status == v1::ServingStatus::Serving as i32;
            r.gauge_with("gauntlet_dependency_up", &[("dependency", &d.name)])
                .set(if up { 1.0 } else { 0.0 });
            r.gauge_with(
                "gauntlet_dependency_latency_seconds",
                &[("dependency", &d.name)],
            )
            .set(d.latency_ms / 1000.0);
        }
        for q in &queues {
            r.gauge_with("gauntlet_queue_messages", &[("queue", &q.name)])
                .set(q.messages as f64);
            r.gauge_with("gauntlet_queue_consumers", &[("queue", &q.name)])
                .set(f64::from(q.consumers));
        }
        self.scrape().await;
        self.evaluate().await;
        let healthy = services
            .iter()
            .map(|s| s.status)
            .chain(dependencies.iter().map(|d| d.status))
            .all(|s| s == v1::ServingStatus::Serving as i32);
        let health = v1::SystemHealth {
            healthy,
            services,
            queues,
            checked_at: Some(convert::timestamp(Utc::now())),
            dependencies,
        };
        *inner.latest.write().await = Some(health.clone());
        health
    }

    async fn probe_services(&self) -> Vec<v1::ServiceHealth> {
        futures::future::join_all(self.inner.targets.iter().map(probe)).await
    }

    /// The work queues and their dead-letter queues, and RabbitMQ's health
    /// (the time to read the first).
    async fn read_queues(&self) -> (Vec<v1::QueueStats>, v1::DependencyHealth) {
        let bus = &self.inner.bus;
        let mut queues = Vec::new();
        let mut first_error = None;
        let started = Instant::now();
        let mut took = None;
        let reads = QueueName::ALL
            .iter()
            .map(|q| (q.as_str(), *q, false))
            .chain([
                (QueueName::Tasks.dead_letter(), QueueName::Tasks, true),
                (QueueName::Reports.dead_letter(), QueueName::Reports, true),
            ]);
        for (name, queue, dead) in reads {
            let stats = tokio::time::timeout(PROBE_TIMEOUT, async {
                if dead {
                    bus.dead_letter_stats(queue).await
                } else {
                    bus.queue_stats(queue).await
                }
            })
            .await;
            took.get_or_insert(started.elapsed());
            match stats {
                Ok(Ok(stats)) => queues.push(v1::QueueStats {
                    name: name.into(),
                    messages: stats.messages,
                    consumers: stats.consumers,
                }),
                Ok(Err(error)) => {
                    warn!(%error, queue = name, "cannot read queue depth");
                    first_error.get_or_insert(error.to_string());
                }
                Err(_) => {
                    first_error.get_or_insert(format!(
                        "no answer within {} ms",
                        PROBE_TIMEOUT.as_millis()
                    ));
                }
            }
        }
        let (status, detail) = match first_error {
            None => (v1::ServingStatus::Serving, String::new()),
            Some(e) => (v1::ServingStatus::Unreachable, e),
        };
        let rabbitmq = v1::DependencyHealth {
            name: bus.backend().into(),
            status: status as i32,
            detail,
            latency_ms: took.unwrap_or_default().as_secs_f64() * 1000.0,
            checked_at: Some(convert::timestamp(Utc::now())),
        };
        (queues, rabbitmq)
    }

    async fn check_dependencies(&self) -> Vec<v1::DependencyHealth> {
        let mut out = Vec::new();
        if let Some(store) = &self.inner.store {
            out.push(dependency(&store.backend(), store.ping()).await);
        }
        if let Some(cache) = &self.inner.cache {
            out.push(dependency("redis", cache.check()).await);
        }
        out
    }

    /// Every service's `/metrics` and the monitor's own, into the history.
    async fn scrape(&self) {
        let inner = &self.inner;
        let scraped =
            futures::future::join_all(inner.scrapes.iter().map(|(name, url)| async move {
                let text = async {
                    let response = inner.http.get(url).send().await?.error_for_status()?;
                    response.text().await
                }
                .await;
                (name, url, text)
            }))
            .await;
        let now = Instant::now();
        let own = inner.registry.render();
        let mut history = inner.history.lock().unwrap_or_else(|e| e.into_inner());
        for (name, url, text) in scraped {
            match text {
                Ok(text) => history.ingest(name, now, telemetry_metrics::parse(&text)),
                Err(error) => debug!(%error, %url, "cannot scrape metrics"),
            }
        }
        history.ingest("monitor", now, telemetry_metrics::parse(&own));
        history.prune(now);
    }

    async fn evaluate(&self) {
        let inner = &self.inner;
        let now = Instant::now();
        let wall: DateTime<Utc> = Utc::now();
        let mut alerting = inner.alerting.lock().await;
        for rule in &inner.rules {
            let instances = match &rule.quality {
                Some(q) => match inner.quality.lock().await.as_mut() {
                    // A store or analytics that does not answer leaves the
                    // verdicts as they were until the next poll.
                    Some(quality) => {
                        match tokio::time::timeout(QUALITY_WAIT, quality.check(q)).await {
                            Ok(instances) => instances,
                            Err(_) => {
                                warn!("quality rules: no answer within 5 s, skipped this poll");
                                continue;
                            }
                        }
                    }
                    None => continue,
                },
                None => {
                    let history = inner.history.lock().unwrap_or_else(|e| e.into_inner());
                    rule.instances(&history, now)
                }
            };
            alerting.apply(rule, &instances, wall).await;
        }
        alerting.publish_counts();
    }

    fn findings(&self) -> v1::Findings {
        let history = self.inner.history.lock().unwrap_or_else(|e| e.into_inner());
        v1::Findings {
            findings: findings::find(&history, Instant::now()),
            checked_at: Some(convert::timestamp(Utc::now())),
        }
    }
}

/// The largest page of alerts.
pub const MAX_ALERTS_PAGE: u32 = 1000;

fn severity_of(text: &str) -> v1::AlertSeverity {
    match text {
        "info" => v1::AlertSeverity::Info,
        "warning" => v1::AlertSeverity::Warning,
        "critical" => v1::AlertSeverity::Critical,
        _ => v1::AlertSeverity::Unspecified,
    }
}

fn alert_message(a: &AlertRecord) -> v1::Alert {
    v1::Alert {
        id: a.id.to_string(),
        rule: a.rule.clone(),
        severity: severity_of(&a.severity) as i32,
        state: match a.state {
            AlertState::Pending => v1::AlertState::Pending,
            AlertState::Firing => v1::AlertState::Firing,
            AlertState::Resolved => v1::AlertState::Resolved,
        } as i32,
        labels: a.labels.clone().into_iter().collect(),
        value: a.value,
        threshold: a.threshold,
        summary: a.summary.clone(),
        started_at: Some(convert::timestamp(a.started_at)),
        fired_at: a.fired_at.map(convert::timestamp),
        resolved_at: a.resolved_at.map(convert::timestamp),
    }
}

/// `<started_at in ns>_<id>`: where the next page starts.
fn page_token(a: &AlertRecord) -> String {
    format!(
        "{}_{}",
        a.started_at.timestamp_nanos_opt().unwrap_or_default(),
        a.id
    )
}

fn parse_page_token(token: &str) -> Result<(DateTime<Utc>, uuid::Uuid), Status> {
    let bad = || {
        Status::invalid_argument(format!(
            "page_token: `{token}` is not a token ListAlerts gave"
        ))
    };
    let (nanos, id) = token.split_once('_').ok_or_else(bad)?;
    let nanos: i64 = nanos.parse().map_err(|_| bad())?;
    let id = uuid::Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((DateTime::from_timestamp_nanos(nanos), id))
}

#[tonic::async_trait]
impl MonitorService for Monitor {
    async fn get_system_health(
        &self,
        _request: Request<v1::GetSystemHealthRequest>,
    ) -> Result<Response<v1::SystemHealth>, Status> {
        if let Some(h) = self.inner.latest.read().await.clone() {
            return Ok(Response::new(h));
        }
        Ok(Response::new(self.poll().await))
    }

    async fn list_alerts(
        &self,
        request: Request<v1::ListAlertsRequest>,
    ) -> Result<Response<v1::ListAlertsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.page_size {
            0 => 100,
            n if n > MAX_ALERTS_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {n} is more than {MAX_ALERTS_PAGE}"
                )));
            }
            n => n,
        };
        let severity = match v1::AlertSeverity::try_from(req.severity) {
            Ok(v1::AlertSeverity::Unspecified) => None,
            Ok(s) => Some(
                s.as_str_name()
                    .trim_start_matches("ALERT_SEVERITY_")
                    .to_ascii_lowercase(),
            ),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "severity: {} is not an AlertSeverity",
                    req.severity
                )));
            }
        };
        let before = match req.page_token.trim() {
            "" => None,
            token => Some(parse_page_token(token)?),
        };
        let query = AlertQuery {
            active_only: req.active_only,
            severity,
            rule: (!req.rule.is_empty()).then(|| req.rule.clone()),
            // One more tells whether there is a next page.
            limit: limit + 1,
            before,
        };
        let mut alerts = match &self.inner.store {
            Some(store) => store
                .list_alerts(&query)
                .await
                .map_err(|e| gauntlet_service::internal("list alerts", e))?,
            // No store: what is active now.
            None => {
                let alerting = self.inner.alerting.lock().await;
                let mut active: Vec<AlertRecord> = alerting
                    .active()
                    .filter(|a| query.severity.as_ref().is_none_or(|s| &a.severity == s))
                    .filter(|a| query.rule.as_ref().is_none_or(|r| &a.rule == r))
                    .filter(|a| {
                        query
                            .before
                            .is_none_or(|(at, id)| (a.started_at, a.id) < (at, id))
                    })
                    .cloned()
                    .collect();
                active.sort_by_key(|a| std::cmp::Reverse((a.started_at, a.id)));
                active.truncate(query.limit as usize);
                active
            }
        };
        let next_page_token = if alerts.len() > limit as usize {
            alerts.truncate(limit as usize);
            alerts.last().map(page_token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListAlertsResponse {
            alerts: alerts.iter().map(alert_message).collect(),
            next_page_token,
        }))
    }

    async fn get_bottlenecks(
        &self,
        _request: Request<v1::GetBottlenecksRequest>,
    ) -> Result<Response<v1::Findings>, Status> {
        Ok(Response::new(self.findings()))
    }

    async fn get_recommendations(
        &self,
        _request: Request<v1::GetRecommendationsRequest>,
    ) -> Result<Response<v1::Findings>, Status> {
        // The same findings: each already says what to do.
        Ok(Response::new(self.findings()))
    }
}
