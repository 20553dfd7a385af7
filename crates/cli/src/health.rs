//! `gauntlet health` and `gauntlet alerts`: the monitor's view of the
//! fleet, through the gateway.

use std::time::{Duration, SystemTime};

use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1;

use crate::{client, dlq::age};

fn status_label(status: i32) -> &'static str {
    match v1::ServingStatus::try_from(status) {
        Ok(v1::ServingStatus::Serving) => "serving",
        Ok(v1::ServingStatus::NotServing) => "NOT SERVING",
        Ok(v1::ServingStatus::Unreachable) => "UNREACHABLE",
        _ => "unknown",
    }
}

fn severity_label(severity: i32) -> &'static str {
    match v1::AlertSeverity::try_from(severity) {
        Ok(v1::AlertSeverity::Info) => "info",
        Ok(v1::AlertSeverity::Warning) => "warning",
        Ok(v1::AlertSeverity::Critical) => "critical",
        _ => "-",
    }
}

fn since(t: Option<&gauntlet_proto::Timestamp>) -> String {
    t.and_then(|t| {
        let at =
            SystemTime::UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
        SystemTime::now().duration_since(at).ok()
    })
    .map_or("-".into(), age)
}

/// Asks the server at `server` whether `service` is serving (gRPC health,
/// which needs no key) and prints the answer; `Ok(false)` when it is not,
/// or when nothing by that name serves there.
pub async fn probe(
    config: &GauntletConfig,
    server: &str,
    service: &str,
    json: bool,
) -> anyhow::Result<bool> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let shown = if service.is_empty() { server } else { service };
    // (status, detail): SERVING alone passes.
    let (status, detail): (&str, String) = match client::connect(server, &config.grpc).await {
        Ok(channel) => {
            let request = tonic::Request::new(HealthCheckRequest {
                service: service.to_string(),
            });
            let mut client = HealthClient::new(channel);
            match tokio::time::timeout(PROBE_TIMEOUT, client.check(request)).await {
                Ok(Ok(response)) => match ServingStatus::try_from(response.into_inner().status) {
                    Ok(ServingStatus::Serving) => ("SERVING", String::new()),
                    Ok(ServingStatus::NotServing) => ("NOT_SERVING", String::new()),
                    _ => ("UNKNOWN", String::new()),
                },
                Ok(Err(status)) if status.code() == tonic::Code::NotFound => (
                    "NOT_FOUND",
                    format!("no service named `{service}` at {server}"),
                ),
                Ok(Err(status)) => (
                    "ERROR",
                    format!("{:?}: {}", status.code(), status.message()),
                ),
                Err(_) => (
                    "TIMEOUT",
                    format!("no answer in {} s", PROBE_TIMEOUT.as_secs()),
                ),
            }
        }
        Err(e) => ("UNREACHABLE", format!("{e:#}")),
    };
    if json {
        let doc = serde_json::json!({
            "server": server, "service": service, "status": status, "detail": detail,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if detail.is_empty() {
        println!("{shown}: {status}");
    } else {
        println!("{shown}: {status}: {detail}");
    }
    Ok(status == "SERVING")
}

/// How long a single health check may take (a container health check's
/// timeout is usually a few seconds).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Prints the services, dependencies, queues and what limits the fleet;
/// `Ok(false)` when something is not serving.
pub async fn health(config: &GauntletConfig, server: &str, json: bool) -> anyhow::Result<bool> {
    let mut gateway = client::Gateway::connect(server, config).await?;
    let health = gateway
        .monitor
        .get_system_health(v1::GetSystemHealthRequest {})
        .await
        .map_err(|s| client::status_message("get system health", &s))?
        .into_inner();
    let findings = gateway
        .monitor
        .get_recommendations(v1::GetRecommendationsRequest {})
        .await
        .map_err(|s| client::status_message("get recommendations", &s))?
        .into_inner();
    if json {
        let doc = serde_json::json!({
            "healthy": health.healthy,
            "services": health.services.iter().map(|s| serde_json::json!({
                "name": s.name, "endpoint": s.endpoint, "status": status_label(s.status),
                "detail": s.detail, "probe_ms": s.probe_ms,
            })).collect::<Vec<_>>(),
            "dependencies": health.dependencies.iter().map(|d| serde_json::json!({
                "name": d.name, "status": status_label(d.status), "detail": d.detail,
                "latency_ms": d.latency_ms,
            })).collect::<Vec<_>>(),
            "queues": health.queues.iter().map(|q| serde_json::json!({
                "name": q.name, "messages": q.messages, "consumers": q.consumers,
            })).collect::<Vec<_>>(),
            "recommendations": findings.findings.iter().map(|f| serde_json::json!({
                "kind": f.kind, "severity": severity_label(f.severity), "summary": f.summary,
                "action": f.action, "metrics": f.metrics,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(health.healthy);
    }
    println!(
        "{}",
        if health.healthy {
            "healthy"
        } else {
            "NOT HEALTHY"
        }
    );
    println!(
        "\n{:<12}  {:<12}  {:>9}  detail",
        "service", "status", "probe"
    );
    for s in &health.services {
        println!(
            "{:<12}  {:<12}  {:>7.1}ms  {}",
            s.name,
            status_label(s.status),
            s.probe_ms,
            s.detail
        );
    }
    println!(
        "\n{:<12}  {:<12}  {:>9}  detail",
        "dependency", "status", "latency"
    );
    for d in &health.dependencies {
        println!(
            "{:<12}  {:<12}  {:>7.1}ms  {}",
            d.name,
            status_label(d.status),
            d.latency_ms,
            d.detail
        );
    }
    println!("\n{:<22}  {:>8}  {:>9}", "queue", "messages", "consumers");
    for q in &health.queues {
        println!("{:<22}  {:>8}  {:>9}", q.name, q.messages, q.consumers);
    }
    if findings.findings.is_empty() {
        println!("\nno bottleneck found");
    }
    for f in &findings.findings {
        println!(
            "\n{} ({}): {}",
            f.kind,
            severity_label(f.severity),
            f.summary
        );
        println!("  → {}", f.action);
    }
    Ok(health.healthy)
}

/// What `gauntlet alerts` lists.
pub struct AlertsQuery<'a> {
    pub all: bool,
    pub severity: Option<v1::AlertSeverity>,
    pub rule: Option<&'a str>,
    pub limit: u32,
}

/// Prints the active alerts (or all, newest first).
pub async fn alerts(
    config: &GauntletConfig,
    server: &str,
    query: AlertsQuery<'_>,
) -> anyhow::Result<()> {
    let mut gateway = client::Gateway::connect(server, config).await?;
    let page = gateway
        .monitor
        .list_alerts(v1::ListAlertsRequest {
            active_only: !query.all,
            severity: query.severity.map_or(0, |s| s as i32),
            rule: query.rule.unwrap_or_default().into(),
            page_size: query.limit,
            page_token: String::new(),
        })
        .await
        .map_err(|s| client::status_message("list alerts", &s))?
        .into_inner();
    if page.alerts.is_empty() {
        println!(
            "{}",
            if query.all {
                "no alerts"
            } else {
                "no active alerts"
            }
        );
        return Ok(());
    }
    println!(
        "{:<9}  {:<8}  {:<20}  {:>7}  summary",
        "state", "severity", "rule", "since"
    );
    for a in &page.alerts {
        let state = match v1::AlertState::try_from(a.state) {
            Ok(v1::AlertState::Pending) => "pending",
            Ok(v1::AlertState::Firing) => "FIRING",
            Ok(v1::AlertState::Resolved) => "resolved",
            _ => "-",
        };
        println!(
            "{state:<9}  {:<8}  {:<20}  {:>7}  {}",
            severity_label(a.severity),
            a.rule,
            since(a.started_at.as_ref()),
            a.summary
        );
    }
    if !page.next_page_token.is_empty() {
        println!("(more: raise --limit)");
    }
    Ok(())
}
