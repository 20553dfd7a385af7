//! Metrics and alerts as an operator meets them: every `/metrics` of
//! `gauntlet up` against the real Postgres, RabbitMQ and Redis serves the
//! names the shipped rules and dashboards use (and promtool accepts them);
//! a flooded task queue raises an alert that goes pending, fires to a
//! webhook and resolves once workers drain it; Redis going away shows in
//! health with the reason while everything else answers; a suite whose
//! pass rate drops fires the quality alert.

use std::{
    collections::{BTreeSet, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use gauntlet_bus::{AmqpBus, Bus, testing::TestVhost};
use gauntlet_cache::Cache;
use gauntlet_config::GauntletConfig;
use gauntlet_mockllm::{MockConfig, MockServer};
use gauntlet_proto::v1::{self, monitor_service_client::MonitorServiceClient};
use gauntlet_providers::ProviderFactory;
use gauntlet_store::{AlertQuery, AlertState, PgStore, Store, testing::TestDatabase};
use gauntlet_telemetry::metrics::parse;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use crate::{
    cli::{BIN, free_port, repo, text},
    cluster::Cluster,
};

/// The metric names a PromQL expression reads: `gauntlet_*` and
/// `process_*` identifiers outside quotes (recording rules, with a `:`,
/// are not metrics).
fn promql_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut quoted = false;
    let mut ident = String::new();
    let mut flush = |ident: &mut String| {
        if (ident.starts_with("gauntlet_") || ident.starts_with("process_")) && !ident.contains(':')
        {
            names.insert(ident.clone());
        }
        ident.clear();
    };
    for c in expr.chars() {
        if c == '"' || c == '\'' || c == '`' {
            quoted = !quoted;
            flush(&mut ident);
        } else if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            ident.push(c);
        } else {
            flush(&mut ident);
        }
    }
    flush(&mut ident);
    names
}

/// Every `expr` string in a Grafana dashboard.
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// What the shipped configuration reads, by file.
fn names_used() -> Vec<(String, BTreeSet<String>)> {
    let mut used = Vec::new();
    let prom = repo().join("deploy/prometheus");
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(prom.join("rules.yml")).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            names.extend(promql_names(rule["expr"].as_str().unwrap()));
        }
    }
    assert!(names.len() > 15, "rules.yml reads {names:?}");
    used.push(("deploy/prometheus/rules.yml".to_owned(), names));

    let tests: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(prom.join("rules_test.yml")).unwrap())
            .unwrap();
    let mut names = BTreeSet::new();
    for test in tests["tests"].as_sequence().unwrap() {
        for series in test["input_series"].as_sequence().unwrap() {
            let s = series["series"].as_str().unwrap();
            names.insert(s.split('{').next().unwrap().trim().to_owned());
        }
    }
    used.push((
        "deploy/prometheus/rules_test.yml input series".to_owned(),
        names,
    ));

    let dashboards = repo().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dashboards)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "fleet, providers and quality dashboards: {files:?}"
    );
    for file in files {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut exprs = Vec::new();
        dashboard_exprs(&json, &mut exprs);
        let names: BTreeSet<String> = exprs.iter().flat_map(|e| promql_names(e)).collect();
        assert!(!names.is_empty(), "{} queries nothing", file.display());
        used.push((
            file.strip_prefix(repo()).unwrap().display().to_string(),
            names,
        ));
    }

    let monitor = gauntlet_monitor::rules::parse(
        &std::fs::read_to_string(repo().join("deploy/monitor/rules.yml")).unwrap(),
        "deploy/monitor/rules.yml",
    )
    .unwrap();
    used.push((
        "deploy/monitor/rules.yml".to_owned(),
        gauntlet_monitor::rules::metric_names(&monitor)
            .into_iter()
            .collect(),
    ));
    used
}

/// Runs `promtool ARGS` in `dir`; `false` when promtool is not installed
/// (which fails under CI, where scripts/test.sh installs it).
fn promtool(args: &[&str], dir: &Path) -> bool {
    match std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "promtool {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").is_err(),
                "promtool is missing (Debian package prometheus; scripts/test.sh installs it)"
            );
            eprintln!("promtool not installed: skipping promtool {args:?}");
            false
        }
        Err(e) => panic!("promtool: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauntlet_up_serves_every_metric_the_rules_and_dashboards_use() {
    let db = TestDatabase::create().await;
    let vhost = TestVhost::create().await;
    // Half of the answers are 429s (paced: Retry-After 0), for the
    // throttling recommendation.
    let mock = MockServer::start(MockConfig {
        rate_429: 0.5,
        retry_after_secs: 0,
        seed: Some(7),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gateway_port = free_port();
    let services = ["gateway", "worker", "analytics", "reports", "monitor"];
    let metrics_ports: Vec<u16> = services.iter().map(|_| free_port()).collect();
    let mut env: Vec<(String, String)> = vec![
        (
            "GAUNTLET_GATEWAY__LISTEN".into(),
            format!("127.0.0.1:{gateway_port}"),
        ),
        ("GAUNTLET_MONITOR__POLL_INTERVAL_MS".into(), "200".into()),
        (
            "GAUNTLET_REDIS__PREFIX".into(),
            format!("gauntlet-test-{}", uuid::Uuid::new_v4().simple()),
        ),
        ("OPENAI_BASE_URL".into(), mock.base_url()),
        ("OPENAI_API_KEY".into(), "test".into()),
    ];
    for (service, port) in services.iter().zip(&metrics_ports) {
        env.push((
            format!("GAUNTLET_{}__METRICS_LISTEN", service.to_uppercase()),
            format!("127.0.0.1:{port}"),
        ));
    }
    let redis = std::env::var("GAUNTLET_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut up = tokio::process::Command::new(BIN)
        .args([
            "up",
            "--database-url",
            &db.config.url,
            "--amqp-url",
            &vhost.url,
            "--redis-url",
            &redis,
        ])
        .current_dir(dir.path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("GAUNTLET_SERVER")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(up.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push(line.clone());
            if line.contains("monitor metrics at") {
                return;
            }
        }
        panic!("gauntlet up ended: {said:?}");
    })
    .await
    .expect("gauntlet up starts within a minute");
    // The printed addresses are the configured ones.
    for (service, port) in services.iter().zip(&metrics_ports) {
        let want = format!("{service} metrics at http://127.0.0.1:{port}/metrics");
        assert!(said.iter().any(|l| l.contains(&want)), "{want} in {said:?}");
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    // A suite over two providers of the mock (some of its answers are
    // 429s), with a failing assertion.
    let tests: String = (0..20)
        .map(|i| {
            format!(
                "  - vars: {{ n: '{i}' }}\n    assert: [{{ type: contains, value: '{}' }}]\n",
                if i % 5 == 0 { "absent" } else { "ECHO" }
            )
        })
        .collect();
    std::fs::write(
        dir.path().join("suite.yaml"),
        format!(
            "description: metrics\nprompts: ['Count {{{{ n }}}}']\n\
             providers:\n  - openai:chat:mock-a\n  - openai:chat:mock-b\ntests:\n{tests}"
        ),
    )
    .unwrap();
    let server = format!("http://127.0.0.1:{gateway_port}");
    let run = tokio::process::Command::new(BIN)
        .args(["run", "suite.yaml", "--server", &server])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    assert_eq!(run.status.code(), Some(100), "{:?}", text(&run));

    // The monitor polls every 200 ms; give it a few polls after the run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let http = reqwest::Client::new();
    let mut scraped = HashSet::new();
    for (service, port) in services.iter().zip(&metrics_ports) {
        let response = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let samples = parse(&response.text().await.unwrap());
        // Each port serves its own service's series.
        assert!(
            samples
                .iter()
                .filter(|s| s.name.starts_with("gauntlet_grpc_server_requests_total"))
                .all(|s| s.label("service") == Some(service)),
            "{service}: {samples:?}"
        );
        scraped.extend(samples.into_iter().map(|s| s.name));
    }
    let served = |name: &str| {
        scraped.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| scraped.contains(&format!("{base}_bucket")))
                    || scraped.contains(&format!("{name}{suffix}"))
            })
    };
    let mut missing = Vec::new();
    for (file, names) in names_used() {
        for name in names {
            if !served(&name) {
                missing.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(missing.is_empty(), "used but not served: {missing:#?}");

    // promtool checks the rules and runs their unit tests, whose input
    // series were just shown to be what the services serve.
    let prom = repo().join("deploy/prometheus");
    if promtool(&["check", "rules", "rules.yml"], &prom) {
        promtool(&["test", "rules", "rules_test.yml"], &prom);
    }

    // `gauntlet health` through the gateway, as the user runs it.
    let health = tokio::process::Command::new(BIN)
        .args(["health", "--server", &server])
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let (out, err) = text(&health);
    assert_eq!(health.status.code(), Some(0), "{out}{err}");
    for want in [
        "healthy",
        "postgres",
        "redis",
        "rabbitmq",
        "gauntlet.tasks.dead",
        // What the 429s call for, read off the worker's metrics.
        "provider openai:chat:mock-a is throttling",
        "raise its RPM (requestsPerMinute)",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
    drop(up);
}

/// A webhook receiver: what it was posted, in order.
async fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

/// A client of the monitor at `addr` once it serves (it answers
/// UNAVAILABLE while it connects to RabbitMQ).
async fn monitor_client(addr: SocketAddr) -> MonitorServiceClient<tonic::transport::Channel> {
    let url = format!("http://{addr}");
    crate::cli::wait_serving(&url).await;
    MonitorServiceClient::connect(url).await.unwrap()
}

async fn alerts(
    monitor: &mut MonitorServiceClient<tonic::transport::Channel>,
    active_only: bool,
    rule: &str,
) -> Vec<v1::Alert> {
    monitor
        .list_alerts(v1::ListAlertsRequest {
            active_only,
            rule: rule.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts
}

/// Waits up to 20 s for an alert of `rule` in `state` (among the active
/// ones, or all).
async fn alert_in(
    monitor: &mut MonitorServiceClient<tonic::transport::Channel>,
    active_only: bool,
    rule: &str,
    state: v1::AlertState,
) -> v1::Alert {
    eventually(20, &format!("{rule} {state:?}"), async || {
        alerts(monitor, active_only, rule)
            .await
            .into_iter()
            .find(|a| a.state == state as i32)
    })
    .await
}

/// Waits up to `secs` for run `run_id` to complete.
async fn completed(
    runs: &mut gauntlet_proto::v1::run_service_client::RunServiceClient<gauntlet_cli::client::Conn>,
    run_id: &str,
    secs: u64,
) -> v1::Run {
    eventually(secs, &format!("run {run_id} completed"), async || {
        let r = runs
            .get_run(v1::GetRunRequest {
                run_id: run_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        (r.status == v1::RunStatus::Completed as i32).then_some(r)
    })
    .await
}

/// Polls `check` every 100 ms for up to `secs`.
pub(crate) async fn eventually<T>(
    secs: u64,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_task_queue_alert_goes_pending_fires_to_a_webhook_and_resolves_once_drained() {
    let db = TestDatabase::create().await;
    let vhost = TestVhost::create().await;
    let (hook, posted) = webhook().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "rules:\n  - name: TaskQueueBacklog\n    severity: critical\n    \
         summary: '{{value}} task batches wait'\n    \
         expr: {metric: gauntlet_queue_messages, match: {queue: gauntlet.tasks}, over: last, window: 5s}\n    \
         op: '>'\n    threshold: 5\n    for: 2s\n",
    )
    .unwrap();
    let mut config = GauntletConfig::default();
    config.database = db.config.clone();
    config.amqp.url = vhost.url.clone();
    config.amqp.batch_size = 10;
    config.monitor.poll_interval_ms = 200;
    config.monitor.rules_file = rules.display().to_string();
    config.monitor.webhooks = hook;
    config.monitor.targets = String::new();
    config.monitor.metrics_targets = String::new();
    config.redis.url = String::new();
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&config.database).await.unwrap());
    let bus: Arc<dyn Bus> = Arc::new(
        AmqpBus::connect(&config.amqp.url, config.amqp.delivery_limit)
            .await
            .unwrap(),
    );
    let shutdown = CancellationToken::new();
    let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = gateway_listener.local_addr().unwrap();
    let monitor_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let monitor_addr = monitor_listener.local_addr().unwrap();
    config.gateway.monitor_url = format!("http://{monitor_addr}");
    config.auth.enabled = false;
    tokio::spawn(gauntlet_gateway::run(
        config.clone(),
        gauntlet_gateway::Deps {
            store: store.clone(),
            bus: bus.clone(),
        },
        gateway_listener,
        shutdown.clone(),
    ));
    tokio::spawn(gauntlet_monitor::run(
        config.clone(),
        gauntlet_monitor::Deps {
            bus: bus.clone(),
            store: Some(Arc::new(gauntlet_monitor::book::StoreBook(store.clone()))),
            cache: None,
        },
        monitor_listener,
        shutdown.clone(),
    ));

    // 300 tasks, no worker: 30 batches wait.
    let tests: String = (0..150)
        .map(|i| format!("  - vars: {{ n: '{i}' }}\n"))
        .collect();
    let suite = format!("prompts: ['{{{{ n }}}}']\nproviders: [echo, echo]\ntests:\n{tests}");
    let mut runs =
        gauntlet_proto::v1::run_service_client::RunServiceClient::new(gauntlet_cli::client::conn(
            gauntlet_cli::client::connect(
                &format!("http://{gateway_addr}"),
                &gauntlet_config::GrpcConfig::default(),
            )
            .await
            .unwrap(),
        ));
    let run = runs
        .submit_run(v1::SubmitRunRequest {
            suite,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let mut monitor = monitor_client(monitor_addr).await;
    let pending = alert_in(
        &mut monitor,
        true,
        "TaskQueueBacklog",
        v1::AlertState::Pending,
    )
    .await;
    assert!(pending.value > 5.0, "{pending:?}");
    assert!(
        posted.lock().unwrap().is_empty(),
        "nothing posted while pending"
    );
    let firing = alert_in(
        &mut monitor,
        true,
        "TaskQueueBacklog",
        v1::AlertState::Firing,
    )
    .await;
    assert_eq!(firing.id, pending.id, "one alert, moved on");
    assert_eq!(firing.severity, v1::AlertSeverity::Critical as i32);
    let held = firing.fired_at.unwrap().seconds - firing.started_at.unwrap().seconds;
    assert!(held >= 1, "fired after its `for` of 2 s: {firing:?}");
    eventually(20, "the webhook got the firing alert", async || {
        posted
            .lock()
            .unwrap()
            .iter()
            .any(|p| p["state"] == "firing" && p["rule"] == "TaskQueueBacklog")
            .then_some(())
    })
    .await;

    // Workers arrive and drain the queue: the alert resolves by itself.
    tokio::spawn(gauntlet_worker::run(
        config.clone(),
        gauntlet_worker::Deps {
            store: store.clone(),
            bus: bus.clone(),
            providers: Arc::new(ProviderFactory::new(Default::default())),
            cache: Cache::local(1 << 20),
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        shutdown.clone(),
    ));
    eventually(60, "the webhook got the resolution", async || {
        posted
            .lock()
            .unwrap()
            .iter()
            .any(|p| p["state"] == "resolved" && p["id"] == firing.id.as_str())
            .then_some(())
    })
    .await;
    assert!(
        alerts(&mut monitor, true, "TaskQueueBacklog")
            .await
            .is_empty()
    );
    let history = alerts(&mut monitor, false, "TaskQueueBacklog").await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].state, v1::AlertState::Resolved as i32);
    assert!(history[0].resolved_at.is_some());
    // ListAlerts' limits name the field at fault.
    for (request, field) in [
        (
            v1::ListAlertsRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            v1::ListAlertsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            v1::ListAlertsRequest {
                severity: 9,
                ..Default::default()
            },
            "severity",
        ),
    ] {
        let status = monitor.list_alerts(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }
    let at_most = monitor
        .list_alerts(v1::ListAlertsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(at_most.alerts.len(), 1);
    assert!(at_most.next_page_token.is_empty());
    // The run the flood came from completed.
    let done = completed(&mut runs, &run.run_id, 30).await;
    assert_eq!(done.completed_tasks, 300);
    shutdown.cancel();
}

/// A `redis-server` of this test's own, stopped when dropped.
struct PrivateRedis(std::process::Child);

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_a_stopped_redis_with_its_reason_while_every_rpc_keeps_answering() {
    let port = free_port();
    let mut redis = PrivateRedis(
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed"),
    );
    let cluster = Cluster::start_with(|c| c.redis.url = format!("redis://127.0.0.1:{port}")).await;
    let mut monitor = cluster.monitor().await;
    let redis_of = |h: &v1::SystemHealth| {
        h.dependencies
            .iter()
            .find(|d| d.name == "redis")
            .cloned()
            .unwrap_or_else(|| panic!("redis in {h:?}"))
    };
    eventually(20, "redis serving", async || {
        let h = monitor
            .get_system_health(v1::GetSystemHealthRequest {})
            .await
            .unwrap()
            .into_inner();
        (redis_of(&h).status == v1::ServingStatus::Serving as i32 && h.healthy).then_some(())
    })
    .await;

    let _ = redis.0.kill();
    let _ = redis.0.wait();
    let down = eventually(20, "redis down in health", async || {
        let h = monitor
            .get_system_health(v1::GetSystemHealthRequest {})
            .await
            .unwrap()
            .into_inner();
        let r = redis_of(&h);
        (r.status == v1::ServingStatus::Unreachable as i32).then_some((h, r))
    })
    .await;
    let (health, redis_health) = down;
    assert!(!health.healthy);
    assert!(
        !redis_health.detail.is_empty(),
        "a reason: {redis_health:?}"
    );
    // Everything else answers, and says so.
    for d in &health.dependencies {
        if d.name != "redis" {
            assert_eq!(d.status, v1::ServingStatus::Serving as i32, "{d:?}");
        }
    }
    assert!(
        health
            .services
            .iter()
            .all(|s| s.status == v1::ServingStatus::Serving as i32),
        "{health:?}"
    );
    let mut runs = cluster.runs().await;
    runs.list_runs(v1::ListRunsRequest::default())
        .await
        .unwrap();
    monitor
        .list_alerts(v1::ListAlertsRequest::default())
        .await
        .unwrap();
    monitor
        .get_bottlenecks(v1::GetBottlenecksRequest {})
        .await
        .unwrap();
    // A run still runs (the cache falls back to its local part).
    let tests: String = (0..10)
        .map(|i| format!("  - vars: {{ n: '{i}' }}\n"))
        .collect();
    let run = runs
        .submit_run(v1::SubmitRunRequest {
            suite: format!("prompts: ['{{{{ n }}}}']\nproviders: [echo]\ntests:\n{tests}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    completed(&mut runs, &run.run_id, 30).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_rate_drop_between_two_runs_of_a_suite_fires_the_quality_alert() {
    let cluster = Cluster::start().await;
    let tests: String = (0..12)
        .map(|i| {
            format!("  - vars: {{ n: '{i}' }}\n    assert: [{{ type: contains, value: 'ECHO' }}]\n")
        })
        .collect();
    let suite = format!(
        "description: quality watch\nprompts: ['Say {{{{ n }}}}']\n\
         providers:\n  - id: openai:chat:mock-model\n    config:\n      apiBaseUrl: {}\n      maxRetries: 0\n\
         tests:\n{tests}",
        cluster.mock.base_url()
    );
    let mut runs = cluster.runs().await;
    let run_once = async |runs: &mut gauntlet_proto::v1::run_service_client::RunServiceClient<
        gauntlet_cli::client::Conn,
    >| {
        let id = runs
            .submit_run(v1::SubmitRunRequest {
                suite: suite.clone(),
                options: Some(v1::RunOptions {
                    no_cache: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .run_id;
        completed(runs, &id, 60).await
    };
    let first = run_once(&mut runs).await;
    assert_eq!(first.passed, 12);
    let mut monitor = cluster.monitor().await;
    // The first run has nothing to compare with; no alert.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(alerts(&mut monitor, false, "PassRateDrop").await.is_empty());

    // The model breaks: every answer is a 500, every case an error.
    cluster.mock.set_config(MockConfig {
        rate_500: 1.0,
        ..MockConfig::default()
    });
    let second = run_once(&mut runs).await;
    assert_eq!(second.errors, 12, "{second:?}");
    let alert = alert_in(&mut monitor, true, "PassRateDrop", v1::AlertState::Firing).await;
    assert_eq!(alert.labels["suite"], "quality watch");
    assert_eq!(alert.labels["baseline"], first.id);
    assert_eq!(alert.labels["run"], second.id);
    assert_eq!(alert.value, 100.0, "{alert:?}");
    assert!(
        alert.summary.contains("down 100 points"),
        "{}",
        alert.summary
    );
    assert!(
        alert
            .summary
            .contains(&format!("gauntlet compare {} {}", first.id, second.id)),
        "{}",
        alert.summary
    );
    // As the user lists it, through the gateway.
    let listed = tokio::process::Command::new(BIN)
        .args([
            "alerts",
            "--severity",
            "warning",
            "--server",
            &cluster.stack.url(),
        ])
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let (out, err) = text(&listed);
    assert!(listed.status.success(), "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("PassRateDrop"))
        .unwrap_or_else(|| panic!("PassRateDrop in {out}"));
    assert!(line.starts_with("FIRING"), "{line}");
    assert!(
        line.contains("quality watch: pass rate down 100 points"),
        "{line}"
    );

    // The model recovers: the next run resolves it.
    cluster.mock.set_config(MockConfig::default());
    run_once(&mut runs).await;
    eventually(20, "the quality alert resolved", async || {
        alerts(&mut monitor, false, "PassRateDrop")
            .await
            .into_iter()
            .find(|a| a.id == alert.id && a.state == v1::AlertState::Resolved as i32)
    })
    .await;
    cluster.stop().await;
}

/// What the shipped deployment files promise about metrics agrees with
/// what the services serve: every service's `metrics_listen` is 9464 in
/// compose and in the Kubernetes ConfigMap (and a key the configuration
/// knows), each Deployment's pods carry the label the PodMonitor selects
/// and a container port named `metrics` on 9464 (its Service too), and
/// Prometheus and the monitor scrape those ports.
#[test]
fn the_shipped_scrape_configs_point_at_the_ports_the_services_serve() {
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap();
    let services = ["gateway", "worker", "analytics", "reports", "monitor"];

    // Kubernetes: the ConfigMap's variables load as configuration.
    let env: Vec<(String, String)> = read("k8s/base/gauntlet.env")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let config: GauntletConfig =
        gauntlet_config::load(None, env.clone()).expect("gauntlet.env is valid configuration");
    assert_eq!(config.gateway.metrics_listen, "0.0.0.0:9464");
    assert_eq!(config.worker.metrics_listen, "0.0.0.0:9464");
    assert_eq!(config.analytics.metrics_listen, "0.0.0.0:9464");
    assert_eq!(config.reports.metrics_listen, "0.0.0.0:9464");
    assert_eq!(config.monitor.metrics_listen, "0.0.0.0:9464");
    let targets = config.monitor.metrics_target_list().unwrap();
    for service in ["gateway", "worker", "analytics", "reports"] {
        assert!(
            targets
                .iter()
                .any(|(name, url)| name == service
                    && url == &format!("http://{service}:9464/metrics")),
            "{service} in {targets:?}"
        );
    }

    let podmonitor: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("deploy/prometheus/kubernetes/podmonitor.yaml")).unwrap();
    let selector = podmonitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
        .clone();
    assert!(!selector.is_empty());
    let endpoint_port = podmonitor["spec"]["podMetricsEndpoints"][0]["port"]
        .as_str()
        .unwrap()
        .to_owned();
    for service in services {
        let text = read(&format!("k8s/base/{service}.yaml"));
        let docs: Vec<serde_yaml_ng::Value> = text
            .split("\n---")
            .map(|d| serde_yaml_ng::from_str(d).unwrap())
            .collect();
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
            .as_mapping()
            .unwrap();
        for (k, v) in &selector {
            assert_eq!(pod_labels.get(k), Some(v), "{service}'s pods lack {k:?}");
        }
        let ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_sequence()
            .unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p["name"].as_str() == Some(endpoint_port.as_str())
                    && p["containerPort"].as_u64() == Some(9464)),
            "{service}: a port {endpoint_port} on 9464 in {ports:?}"
        );
        let svc = docs.iter().find(|d| d["kind"] == "Service").unwrap();
        assert!(
            svc["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|p| p["port"].as_u64() == Some(9464)),
            "{service}'s Service exposes 9464"
        );
    }

    // Compose: the same, and Prometheus scrapes every service there.
    let compose: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("docker-compose.yml")).unwrap();
    // Every service's environment merges this one (`<<: *gauntlet-env`).
    let compose_env = compose["x-gauntlet-env"].as_mapping().unwrap();
    for service in services {
        let key = format!("GAUNTLET_{}__METRICS_LISTEN", service.to_uppercase());
        assert_eq!(
            compose_env.get(key.as_str()).and_then(|v| v.as_str()),
            Some("0.0.0.0:9464"),
            "{key} in docker-compose.yml"
        );
    }
    let prometheus = read("deploy/prometheus/prometheus.yml");
    for service in services {
        assert!(
            prometheus.contains(&format!("{service}:9464"))
                || prometheus.contains(&format!("names: [\"{service}\"]")),
            "prometheus.yml scrapes {service}"
        );
    }
    assert!(
        !prometheus.contains("job=\""),
        "no rule or scrape depends on a job name"
    );
    assert!(!read("deploy/prometheus/rules.yml").contains("job="));
}

/// The monitor is what says Postgres is down, so it starts without it:
/// `gauntlet serve monitor`, whose way to the database (analytics) nobody
/// serves, answers health at once, with Postgres unreachable and why, on
/// gRPC and on its `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_starts_and_reports_a_postgres_that_is_down() {
    let vhost = TestVhost::create().await;
    let (grpc, metrics) = (free_port(), free_port());
    let dead_db = format!("postgres://postgres@127.0.0.1:{}/gauntlet", free_port());
    let _monitor = tokio::process::Command::new(BIN)
        .args(["serve", "monitor"])
        .env("GAUNTLET_DATABASE__URL", &dead_db)
        .env("GAUNTLET_DATABASE__ACQUIRE_TIMEOUT_SECS", "1")
        .env("GAUNTLET_AMQP__URL", &vhost.url)
        .env("GAUNTLET_REDIS__URL", "")
        .env("GAUNTLET_MONITOR__LISTEN", format!("127.0.0.1:{grpc}"))
        .env(
            "GAUNTLET_MONITOR__METRICS_LISTEN",
            format!("127.0.0.1:{metrics}"),
        )
        .env("GAUNTLET_MONITOR__TARGETS", "")
        .env("GAUNTLET_MONITOR__METRICS_TARGETS", "")
        .env("GAUNTLET_MONITOR__POLL_INTERVAL_MS", "200")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut monitor = monitor_client(SocketAddr::from(([127, 0, 0, 1], grpc))).await;
    let health = monitor
        .get_system_health(v1::GetSystemHealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!health.healthy);
    let postgres = health
        .dependencies
        .iter()
        .find(|d| d.name == "postgres")
        .unwrap_or_else(|| panic!("postgres in {health:?}"));
    assert_eq!(postgres.status, v1::ServingStatus::Unreachable as i32);
    assert!(!postgres.detail.is_empty(), "{postgres:?}");
    let rabbitmq = health
        .dependencies
        .iter()
        .find(|d| d.name == "rabbitmq")
        .unwrap();
    assert_eq!(rabbitmq.status, v1::ServingStatus::Serving as i32);
    let text = crate::cli::scrape(metrics).await;
    let up = parse(&text)
        .into_iter()
        .find(|s| s.name == "gauntlet_dependency_up" && s.label("dependency") == Some("postgres"))
        .unwrap_or_else(|| panic!("gauntlet_dependency_up in {text}"));
    assert_eq!(up.value, 0.0);
}

/// The monitor as a service holds no database credentials: given a
/// database URL nobody serves, it still keeps its alerts in Postgres
/// through analytics' Records service, reports Postgres healthy through
/// it, and a restarted monitor lists the alerts its predecessor stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_monitor_keeps_its_alerts_through_analytics_without_database_credentials() {
    let db = TestDatabase::create().await;
    let vhost = TestVhost::create().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "rules:\n  - name: AlwaysOn\n    severity: info\n    \
         summary: '{{value}} task batches wait'\n    \
         expr: {metric: gauntlet_queue_messages, match: {queue: gauntlet.tasks}, over: last, window: 5s}\n    \
         op: '>='\n    threshold: 0\n    for: 1s\n",
    )
    .unwrap();
    let analytics = free_port();
    let _analytics = tokio::process::Command::new(BIN)
        .args(["serve", "analytics"])
        .env("GAUNTLET_DATABASE__URL", &db.config.url)
        .env("GAUNTLET_REDIS__URL", "")
        .env(
            "GAUNTLET_ANALYTICS__LISTEN",
            format!("127.0.0.1:{analytics}"),
        )
        .env("GAUNTLET_ANALYTICS__METRICS_LISTEN", "")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let grpc = free_port();
    let monitor = || {
        tokio::process::Command::new(BIN)
            .args(["serve", "monitor"])
            // Nobody serves this: the monitor must not need it.
            .env(
                "GAUNTLET_DATABASE__URL",
                format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port()),
            )
            .env("GAUNTLET_AMQP__URL", &vhost.url)
            .env("GAUNTLET_REDIS__URL", "")
            .env("GAUNTLET_MONITOR__LISTEN", format!("127.0.0.1:{grpc}"))
            .env("GAUNTLET_MONITOR__METRICS_LISTEN", "")
            .env("GAUNTLET_MONITOR__TARGETS", "")
            .env("GAUNTLET_MONITOR__METRICS_TARGETS", "")
            .env("GAUNTLET_MONITOR__POLL_INTERVAL_MS", "200")
            .env("GAUNTLET_MONITOR__RULES_FILE", &rules)
            .env(
                "GAUNTLET_MONITOR__ANALYTICS_URL",
                format!("http://127.0.0.1:{analytics}"),
            )
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let first = monitor();
    let store = PgStore::connect(&db.config).await.unwrap();
    let fired = eventually(30, "the alert stored through analytics", async || {
        store
            .list_alerts(&AlertQuery {
                active_only: true,
                limit: 10,
                ..Default::default()
            })
            .await
            .ok()?
            .into_iter()
            .find(|a| a.rule == "AlwaysOn" && a.state == AlertState::Firing)
    })
    .await;
    let mut client = monitor_client(SocketAddr::from(([127, 0, 0, 1], grpc))).await;
    let health = client
        .get_system_health(v1::GetSystemHealthRequest {})
        .await
        .unwrap()
        .into_inner();
    let postgres = health
        .dependencies
        .iter()
        .find(|d| d.name == "postgres")
        .unwrap_or_else(|| panic!("postgres in {health:?}"));
    assert_eq!(
        postgres.status,
        v1::ServingStatus::Serving as i32,
        "{postgres:?}"
    );
    // A new monitor: the stored alert is listed (and carried on, not
    // fired again as a new one).
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _second = monitor();
    let mut client = monitor_client(SocketAddr::from(([127, 0, 0, 1], grpc))).await;
    let listed = client
        .list_alerts(v1::ListAlertsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert!(
        listed.iter().any(|a| a.id == fired.id.to_string()),
        "{listed:?}"
    );
}
