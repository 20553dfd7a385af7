//! Traces as a collector sees them: an OTLP/gRPC receiver of the test's own
//! (the collector's `TraceService` from the `opentelemetry-proto`
//! definitions, not our exporter's code) takes the spans of the gateway,
//! the worker and analytics, each a `gauntlet serve` process of its own,
//! and of the `gauntlet run` that drives them.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use gauntlet_bus::testing::TestVhost;
use gauntlet_mockllm::{MockConfig, MockServer};
use gauntlet_proto::v1;
use gauntlet_store::testing::TestDatabase;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use tokio_stream::wrappers::TcpListenerStream;

use crate::cli::{BIN, free_port, text};

/// A span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    span: Span,
}

fn value_of<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

impl Got {
    fn attr(&self, key: &str) -> Option<&Value> {
        value_of(&self.span.attributes, key)
    }

    fn str(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            Value::IntValue(n) => Some(*n),
            _ => None,
        }
    }

    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }

    fn failed(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }

    fn trace(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn id(&self) -> String {
        hex(&self.span.span_id)
    }

    fn parent(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Got>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| value_of(&r.attributes, "service.name"))
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                got.extend(scope.spans.into_iter().map(|span| Got {
                    service: service.clone(),
                    span,
                }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver.clone()))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (receiver, addr)
    }

    fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }

    /// The spans once `done` holds of them, within 30 s.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 30 s; got {:?}",
                names(&spans)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn names(spans: &[Got]) -> BTreeSet<(String, String, i32)> {
    spans
        .iter()
        .map(|g| (g.service.clone(), g.span.name.clone(), g.span.kind))
        .collect()
}

/// One `gauntlet serve SERVICE`, killed when dropped (the child is held
/// for that).
struct Served(#[allow(dead_code)] tokio::process::Child);

impl Served {
    fn start(service: &str, env: &[(String, String)]) -> Self {
        Self(
            tokio::process::Command::new(BIN)
                .args(["serve", service])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env_remove("GAUNTLET_SERVER")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        )
    }
}

/// Waits until `gauntlet runs --server URL` answers (the gateway has its
/// database).
async fn until_serving(url: &str, dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = crate::cli::gauntlet(&["runs", "--server", url], dir).await;
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not serve: {:?}",
            text(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_is_one_trace_from_the_cli_through_the_broker_to_the_model_and_the_store() {
    let (receiver, collector) = Receiver::start().await;
    let db = TestDatabase::create().await;
    let vhost = TestVhost::create().await;
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    // The third provider's endpoint answers every call with a 500.
    let broken = MockServer::start(MockConfig {
        rate_500: 1.0,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (gateway_port, analytics_port, worker_port) = (free_port(), free_port(), free_port());
    let redis = std::env::var("GAUNTLET_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let otlp = format!("http://{collector}");
    let env: Vec<(String, String)> = [
        // API keys are the access tests' business.
        ("GAUNTLET_AUTH__ENABLED", "false".into()),
        ("GAUNTLET_DATABASE__URL", db.config.url.clone()),
        ("GAUNTLET_AMQP__URL", vhost.url.clone()),
        ("GAUNTLET_AMQP__BATCH_SIZE", "10".into()),
        ("GAUNTLET_REDIS__URL", redis),
        (
            "GAUNTLET_REDIS__PREFIX",
            format!("gauntlet-test-{}", uuid::Uuid::new_v4().simple()),
        ),
        (
            "GAUNTLET_GATEWAY__LISTEN",
            format!("127.0.0.1:{gateway_port}"),
        ),
        (
            "GAUNTLET_GATEWAY__ANALYTICS_URL",
            format!("http://127.0.0.1:{analytics_port}"),
        ),
        (
            "GAUNTLET_ANALYTICS__LISTEN",
            format!("127.0.0.1:{analytics_port}"),
        ),
        (
            "GAUNTLET_WORKER__LISTEN",
            format!("127.0.0.1:{worker_port}"),
        ),
        ("GAUNTLET_GATEWAY__METRICS_LISTEN", String::new()),
        ("GAUNTLET_WORKER__METRICS_LISTEN", String::new()),
        ("GAUNTLET_ANALYTICS__METRICS_LISTEN", String::new()),
        ("OPENAI_BASE_URL", mock.base_url()),
        ("OPENAI_API_KEY", "test".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        // Tasks 0..100 traced, of the rest only those that fail.
        ("GAUNTLET_WORKER__TRACE_FIRST_TASKS", "100".into()),
        ("GAUNTLET_WORKER__TRACE_TASK_RATIO", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let server = format!("http://127.0.0.1:{gateway_port}");
    // The gateway first: it migrates the database the others use.
    let _gateway = Served::start("gateway", &env);
    until_serving(&server, dir.path()).await;
    let _worker = Served::start("worker", &env);
    let _analytics = Served::start("analytics", &env);

    let tests: String = (0..50)
        .map(|i| format!("  - vars: {{ n: '{i}' }}\n"))
        .collect();
    std::fs::write(
        dir.path().join("suite.yaml"),
        format!(
            "description: traced\nprompts: ['Repeat {{{{ n }}}}']\n\
             providers:\n  - openai:chat:gpt-4o-mini\n  - openai:chat:gpt-4.1-mini\n\
             \x20 - id: openai:chat:gpt-3.5-turbo\n    config: {{ apiBaseUrl: '{}', maxRetries: 1, retryBaseDelayMs: 10, breakerThreshold: 0 }}\n\
             tests:\n{tests}",
            broken.base_url()
        ),
    )
    .unwrap();
    let run = tokio::process::Command::new(BIN)
        .args(["run", "suite.yaml", "--server", &server, "-o", "out.json"])
        .current_dir(dir.path())
        .env_remove("GAUNTLET_SERVER")
        .env("NO_COLOR", "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("GAUNTLET_TRACE_URL", "http://jaeger.test/trace/{trace_id}")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&run);
    // The third provider's 50 tasks end in errors.
    assert_eq!(run.status.code(), Some(100), "{stdout}\n{stderr}");
    let trace_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("trace: http://jaeger.test/trace/"))
        .unwrap_or_else(|| panic!("a trace link in {stdout}"))
        .trim()
        .to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out.json")).unwrap()).unwrap();
    let by_task: HashMap<i64, &serde_json::Value> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["task_index"].as_i64().unwrap(), r))
        .collect();
    assert_eq!(by_task.len(), 150);
    let errored = |index: i64| by_task[&index]["status"] == "error";
    // Traced: tasks below 100 with their calls (one for a good provider, two
    // attempts at the broken one), and the errored tasks past them, alone.
    let traced_tasks = (0..150).filter(|&i| i < 100 || errored(i)).count();
    let traced_calls: usize = (0..100).map(|i| if errored(i) { 2 } else { 1 }).sum();
    let spans = receiver
        .wait_for("the run's spans", |spans| {
            let calls = spans
                .iter()
                .filter(|g| g.str("gen_ai.request.model").is_some());
            calls.count() >= traced_calls
                && spans.iter().filter(|g| g.span.name == "task").count() >= traced_tasks
                && spans.iter().any(|g| g.span.name == "gauntlet run")
                && spans.iter().any(|g| {
                    g.span.name == "gauntlet.v1.AnalyticsService/GetRunSummary"
                        && g.service == "gauntlet-analytics"
                })
        })
        .await;
    let in_trace: Vec<&Got> = spans.iter().filter(|g| g.trace() == trace_id).collect();
    let find = |service: &str, name: &str, kind: SpanKind| -> Vec<&Got> {
        in_trace
            .iter()
            .copied()
            .filter(|g| g.service == service && g.span.name == name && g.kind() == kind)
            .collect()
    };
    let one = |service: &str, name: &str, kind: SpanKind| -> &Got {
        find(service, name, kind)
            .first()
            .copied()
            .unwrap_or_else(|| {
                panic!(
                    "{service} {name} {kind:?} in the trace; got {:?}",
                    names(&spans)
                )
            })
    };

    // CLI → gateway: the command's root, its calls, the gateway's handling.
    let root = one("gauntlet-cli", "gauntlet run", SpanKind::Internal);
    assert!(
        root.span.parent_span_id.is_empty(),
        "the command is the root"
    );
    let submit_client = one(
        "gauntlet-cli",
        "gauntlet.v1.RunService/SubmitRunStream",
        SpanKind::Client,
    );
    assert_eq!(submit_client.parent(), root.id());
    let submit = one(
        "gauntlet-gateway",
        "gauntlet.v1.RunService/SubmitRunStream",
        SpanKind::Server,
    );
    assert_eq!(submit.parent(), submit_client.id());
    assert_eq!(submit.str("rpc.system"), Some("grpc"));
    assert_eq!(submit.int("rpc.grpc.status_code"), Some(0));
    // No INTERNAL twin of the SERVER span.
    assert!(find("gauntlet-gateway", "SubmitRunStream", SpanKind::Internal).is_empty());
    one(
        "gauntlet-cli",
        "gauntlet.v1.RunService/WatchRun",
        SpanKind::Client,
    );
    one(
        "gauntlet-gateway",
        "gauntlet.v1.RunService/WatchRun",
        SpanKind::Server,
    );
    one(
        "gauntlet-gateway",
        "gauntlet.v1.RunService/ListResults",
        SpanKind::Server,
    );
    // The gateway asks analytics for the summary, in the same trace.
    let summary = one(
        "gauntlet-analytics",
        "gauntlet.v1.AnalyticsService/GetRunSummary",
        SpanKind::Server,
    );
    assert!(summary.str("gauntlet.run_id").is_some());

    // Gateway → RabbitMQ → worker.
    let producers = find(
        "gauntlet-gateway",
        "publish gauntlet.tasks",
        SpanKind::Producer,
    );
    assert!(!producers.is_empty(), "{:?}", names(&spans));
    for p in &producers {
        assert_eq!(p.str("messaging.system"), Some("rabbitmq"));
        assert_eq!(p.str("messaging.destination.name"), Some("gauntlet.tasks"));
        assert!(p.int("messaging.batch.message_count").unwrap() >= 1);
    }
    let consumers = find(
        "gauntlet-worker",
        "process gauntlet.tasks",
        SpanKind::Consumer,
    );
    let producer_ids: BTreeSet<String> = producers.iter().map(|p| p.id()).collect();
    for c in &consumers {
        assert!(
            producer_ids.contains(&c.parent()),
            "a batch is its publish's child"
        );
        assert_eq!(c.str("messaging.operation.type"), Some("process"));
        assert!(c.str("messaging.message.id").is_some());
        // Numbers are numbers (batches of at most 10).
        assert!((1..=10).contains(&c.int("gauntlet.task_count").unwrap()));
    }
    // Every task in one batch.
    let batched: i64 = consumers
        .iter()
        .map(|c| c.int("gauntlet.task_count").unwrap())
        .sum();
    assert_eq!(batched, 150, "{:?}", names(&spans));

    // Worker → model: a span per task, a span per attempt under it.
    let tasks = find("gauntlet-worker", "task", SpanKind::Internal);
    assert_eq!(tasks.len(), traced_tasks);
    let task_of: HashMap<String, &Got> = tasks.iter().map(|t| (t.id(), *t)).collect();
    let calls: Vec<&Got> = in_trace
        .iter()
        .copied()
        .filter(|g| g.str("gen_ai.request.model").is_some())
        .collect();
    assert_eq!(calls.len(), traced_calls, "{:?}", names(&spans));
    for call in &calls {
        assert_eq!(call.service, "gauntlet-worker");
        assert_eq!(call.kind(), SpanKind::Client);
        assert_eq!(call.str("gen_ai.operation.name"), Some("chat"));
        assert_eq!(call.str("gen_ai.provider.name"), Some("openai"));
        assert_eq!(call.str("http.request.method"), Some("POST"));
        assert_eq!(call.str("server.address"), Some("127.0.0.1"));
        let task = task_of
            .get(&call.parent())
            .unwrap_or_else(|| panic!("a call's parent is its task: {call:?}"));
        let index = task
            .int("gauntlet.task_index")
            .expect("an integer task index");
        assert!(index < 100, "an untraced task's calls are not exported");
        let result = by_task[&index];
        let model = call.str("gen_ai.request.model").unwrap();
        assert_eq!(call.span.name, format!("chat {model}"));
        if model == "gpt-3.5-turbo" {
            assert!(call.failed(), "a 500 fails its span: {call:?}");
            assert_eq!(call.int("http.response.status_code"), Some(500));
            assert_eq!(result["status"], "error");
        } else {
            assert!(!call.failed());
            assert_eq!(call.int("http.response.status_code"), Some(200));
            // The mock's token counts, as stored.
            assert_eq!(
                call.int("gen_ai.usage.input_tokens"),
                result["tokens_in"].as_i64()
            );
            assert_eq!(
                call.int("gen_ai.usage.output_tokens"),
                result["tokens_out"].as_i64()
            );
            assert!(call.attr("gen_ai.response.finish_reasons").is_some());
        }
    }
    for task in &tasks {
        let index = task.int("gauntlet.task_index").unwrap();
        assert!(consumers.iter().any(|c| c.id() == task.parent()));
        assert_eq!(
            task.str("gauntlet.verdict"),
            by_task[&index]["status"].as_str()
        );
        assert_eq!(task.failed(), errored(index), "{task:?}");
        if errored(index) && index < 100 {
            // The retry after the first 500, with who, which and how long.
            let retry = task
                .span
                .events
                .iter()
                .find(|e| e.name == "retry")
                .unwrap_or_else(|| panic!("a retry event on {task:?}"));
            assert_eq!(
                value_of(&retry.attributes, "gauntlet.provider"),
                Some(&Value::StringValue("openai:chat:gpt-3.5-turbo".into()))
            );
            assert_eq!(
                value_of(&retry.attributes, "gauntlet.attempt"),
                Some(&Value::IntValue(1))
            );
            assert!(matches!(
                value_of(&retry.attributes, "gauntlet.delay_ms"),
                Some(Value::IntValue(_))
            ));
        }
        if index >= 100 {
            // Kept because it failed, though the sampling left it out.
            assert_eq!(
                task.attr("gauntlet.sampled"),
                Some(&Value::BoolValue(false))
            );
        }
    }
    // A batch with errored tasks says so.
    assert!(consumers.iter().all(|c| c.failed()));
    // Each model call carried the trace to the vendor.
    let stats = mock.stats();
    assert_eq!(stats.traced, 100);
    assert_eq!(
        stats.traces.get(&trace_id),
        Some(&100),
        "{:?}",
        stats.traces
    );
    assert_eq!(broken.stats().traces.get(&trace_id), Some(&100));

    // Worker → Postgres and Redis, no statement text.
    let inserts: Vec<&Got> = in_trace
        .iter()
        .copied()
        .filter(|g| g.span.name == "INSERT results" && g.service == "gauntlet-worker")
        .collect();
    assert!(!inserts.is_empty(), "{:?}", names(&spans));
    for insert in &inserts {
        assert_eq!(insert.kind(), SpanKind::Client);
        assert_eq!(insert.str("db.system.name"), Some("postgresql"));
        assert_eq!(insert.str("db.operation.name"), Some("INSERT"));
        assert_eq!(insert.str("db.collection.name"), Some("results"));
        assert!(insert.attr("db.query.text").is_none());
    }
    assert!(
        in_trace
            .iter()
            .any(|g| g.str("db.system.name") == Some("redis") && g.span.name == "GET"),
        "the response cache's lookups: {:?}",
        names(&spans)
    );

    // The run's stored trace id is the root's, and so is each result's.
    let mut runs = v1::run_service_client::RunServiceClient::new(gauntlet_cli::client::conn(
        gauntlet_cli::client::connect(&server, &Default::default())
            .await
            .unwrap(),
    ));
    let run_id = results["run_id"].as_str().unwrap();
    let stored = crate::resilience::get_run(&mut runs, run_id).await;
    assert_eq!(stored.trace_id, trace_id);
    assert_eq!(results["trace_id"], trace_id.as_str());
    assert!(by_task.values().all(|r| r["trace_id"] == trace_id.as_str()));
}

/// A collector that accepts connections and never answers.
async fn silent_collector() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_collector_slows_neither_a_run_nor_a_shutdown() {
    let (silent, _collector) = silent_collector().await;
    let dir = tempfile::tempdir().unwrap();
    let tests: String = (0..200)
        .map(|i| format!("  - vars: {{ n: '{i}' }}\n"))
        .collect();
    std::fs::write(
        dir.path().join("suite.yaml"),
        format!("prompts: ['{{{{ n }}}}']\nproviders: [echo, echo]\ntests:\n{tests}"),
    )
    .unwrap();
    let timed = async |env: &[(&str, &str)]| {
        let started = Instant::now();
        let out = crate::cli::gauntlet_env(&["run", "suite.yaml"], dir.path(), env).await;
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        started.elapsed()
    };
    let untraced = timed(&[]).await;
    let endpoint = format!("http://{silent}");
    let traced = timed(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("GAUNTLET_WORKER__TRACE_TASK_RATIO", "1"),
    ])
    .await;
    // Its spans wait for a collector that never answers; the run does not,
    // and the exit waits at most 1 s for them.
    assert!(
        traced < untraced + Duration::from_millis(1500),
        "{traced:?} with a silent collector, {untraced:?} without"
    );

    // A service stops within its shutdown wait, and counts what it could
    // not send.
    let port = free_port();
    let metrics = free_port();
    let db = TestDatabase::create().await;
    let vhost = TestVhost::create().await;
    let mut gateway = tokio::process::Command::new(BIN)
        .args(["serve", "gateway"])
        .env_remove("GAUNTLET_SERVER")
        .env("GAUNTLET_AUTH__ENABLED", "false")
        .env("GAUNTLET_DATABASE__URL", &db.config.url)
        .env("GAUNTLET_AMQP__URL", &vhost.url)
        .env("GAUNTLET_REDIS__URL", "")
        .env("GAUNTLET_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "GAUNTLET_GATEWAY__METRICS_LISTEN",
            format!("127.0.0.1:{metrics}"),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("OTEL_BSP_EXPORT_TIMEOUT", "200")
        // Room for 4 spans while an export hangs: the rest are dropped.
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let server = format!("http://127.0.0.1:{port}");
    until_serving(&server, dir.path()).await;
    let dropped = async |reason: &str| {
        let text = crate::cli::scrape(metrics).await;
        gauntlet_telemetry::metrics::parse(&text)
            .iter()
            .filter(|s| {
                s.name == "gauntlet_trace_spans_dropped_total" && s.label("reason") == Some(reason)
            })
            .map(|s| s.value)
            .sum::<f64>()
    };
    // Each call's spans (the server's and the store's) wait for a collector
    // that never answers: those sent time out, those past the queue's room
    // are dropped at once; both are counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped("export_failed").await < 1.0 || dropped("queue_full").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "dropped spans are counted: {} export_failed, {} queue_full",
            dropped("export_failed").await,
            dropped("queue_full").await
        );
        let out = crate::cli::gauntlet(&["runs", "--server", &server], dir.path()).await;
        assert!(out.status.success());
    }
    // The counter of spans sent is served too (nothing reached this collector).
    let text = crate::cli::scrape(metrics).await;
    assert!(
        gauntlet_telemetry::metrics::parse(&text)
            .iter()
            .any(|s| s.name == "gauntlet_trace_spans_exported_total" && s.value == 0.0),
        "{text}"
    );
    let pid = gateway.id().unwrap().to_string();
    let stopping = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), gateway.wait())
        .await
        .expect("the gateway stops")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        stopping.elapsed()
    );
}

/// `gauntlet run suite.yaml` in `dir`, embedded, exporting to `collector`
/// with `env` set; the trace id from the link it prints. Its spans are all
/// exported by the time it exits.
async fn embedded_run(
    dir: &std::path::Path,
    collector: SocketAddr,
    env: &[(&str, &str)],
) -> String {
    let endpoint = format!("http://{collector}");
    let mut all = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("GAUNTLET_TRACE_URL", "http://jaeger.test/trace/"),
    ];
    all.extend_from_slice(env);
    let out = crate::cli::gauntlet_env(&["run", "suite.yaml"], dir, &all).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("trace: http://jaeger.test/trace/"))
        .unwrap_or_else(|| panic!("a trace link in {stdout}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_run_names_each_service_it_hosts() {
    let (receiver, collector) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("suite.yaml"),
        "prompts: ['{{ n }}']\nproviders: [echo]\ntests:\n  - vars: { n: 'a' }\n  - vars: { n: 'b' }\n",
    )
    .unwrap();
    let trace_id = embedded_run(dir.path(), collector, &[]).await;
    // Exported before the process exited: nothing to wait for.
    let spans = receiver.spans();
    let services: BTreeSet<&str> = spans
        .iter()
        .filter(|g| g.trace() == trace_id)
        .map(|g| g.service.as_str())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from([
            "gauntlet-analytics",
            "gauntlet-cli",
            "gauntlet-gateway",
            "gauntlet-worker"
        ]),
        "{:?}",
        names(&spans)
    );
    // Each service's spans are its own.
    let service_of = |name: &str, kind: SpanKind| {
        spans
            .iter()
            .find(|g| g.span.name == name && g.kind() == kind)
            .map(|g| g.service.as_str())
    };
    assert_eq!(
        service_of("gauntlet run", SpanKind::Internal),
        Some("gauntlet-cli")
    );
    assert_eq!(
        service_of("gauntlet.v1.RunService/SubmitRunStream", SpanKind::Server),
        Some("gauntlet-gateway")
    );
    assert_eq!(
        service_of("process gauntlet.tasks", SpanKind::Consumer),
        Some("gauntlet-worker")
    );
    // The embedded bus is no RabbitMQ, and says so.
    assert!(
        spans.iter().any(|g| g.kind() == SpanKind::Consumer
            && g.str("messaging.system") == Some("in-process bus"))
    );
    assert_eq!(
        service_of("task", SpanKind::Internal),
        Some("gauntlet-worker")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_runs_later_batches_are_traces_of_their_own_that_link_to_it() {
    let (receiver, collector) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 10,100 tasks: the last batches are past the first 10,000 tasks.
    let tests: String = (0..10_100)
        .map(|i| format!("  - vars: {{ n: '{i}' }}\n"))
        .collect();
    std::fs::write(
        dir.path().join("suite.yaml"),
        format!("prompts: ['{{{{ n }}}}']\nproviders: [echo]\ntests:\n{tests}"),
    )
    .unwrap();
    let trace_id = embedded_run(
        dir.path(),
        collector,
        &[("GAUNTLET_AMQP__BATCH_SIZE", "50")],
    )
    .await;
    let spans = receiver.spans();
    let batches: Vec<&Got> = spans
        .iter()
        .filter(|g| g.kind() == SpanKind::Consumer && g.span.name == "process gauntlet.tasks")
        .collect();
    let tasks: i64 = batches
        .iter()
        .map(|b| b.int("gauntlet.task_count").unwrap())
        .sum();
    assert_eq!(tasks, 10_100, "every batch's span arrived");
    for batch in &batches {
        let first = batch.int("gauntlet.first_task").unwrap();
        if first < 10_000 {
            assert_eq!(batch.trace(), trace_id, "batch at {first}");
            assert!(batch.span.links.is_empty());
        } else {
            assert_ne!(batch.trace(), trace_id, "batch at {first}");
            assert!(batch.span.parent_span_id.is_empty(), "a root of its own");
            assert!(
                batch
                    .span
                    .links
                    .iter()
                    .any(|l| hex(&l.trace_id) == trace_id),
                "batch at {first} links to the run: {:?}",
                batch.span.links
            );
        }
    }
    assert!(
        batches
            .iter()
            .any(|b| b.int("gauntlet.first_task").unwrap() >= 10_000)
    );
}

/// A vendor that refuses every call with a 401 whose message quotes the
/// `Authorization` header it got, as some gateways do.
async fn quoting_vendor() -> SocketAddr {
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (
            axum::http::StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            format!(r#"{{"error":{{"message":"invalid key in `{auth}`"}}}}"#),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_key_appears_in_no_output_log_or_span() {
    const KEY: &str = "sk-gauntlet-redaction-0123456789abcdef";
    let (receiver, collector) = Receiver::start().await;
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let quoting = quoting_vendor().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("suite.yaml"),
        format!(
            "prompts: ['Say {{{{ n }}}}']\nproviders:\n  - openai:chat:gpt-4o-mini\n\
             \x20 - id: openai:chat:gpt-4.1-mini\n    config: {{ apiBaseUrl: 'http://{quoting}/v1', maxRetries: 0 }}\n\
             tests:\n  - vars: {{ n: 'a' }}\n  - vars: {{ n: 'b' }}\n"
        ),
    )
    .unwrap();
    let outputs = [
        "out.json",
        "out.jsonl",
        "out.csv",
        "out.md",
        "out.html",
        "out.xml",
    ];
    let mut args = vec!["run", "suite.yaml"];
    for o in &outputs {
        args.extend(["-o", o]);
    }
    let endpoint = format!("http://{collector}");
    let base_url = mock.base_url();
    let out = crate::cli::gauntlet_env(
        &args,
        dir.path(),
        &[
            ("OPENAI_API_KEY", KEY),
            ("OPENAI_BASE_URL", &base_url),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("GAUNTLET_WORKER__TRACE_TASK_RATIO", "1"),
            // Every log line of every in-process service.
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    // The refused calls are errors whose message was read (and scrubbed).
    assert_eq!(out.status.code(), Some(100), "{stdout}\n{stderr}");
    let results = std::fs::read_to_string(dir.path().join("out.json")).unwrap();
    assert!(results.contains("invalid key in"), "{results}");
    // The vendor quoted the key; what is stored says where, not what.
    assert!(
        results.contains("invalid key in `Bearer [redacted]`"),
        "{results}"
    );
    // The key reached the vendors (so it was there to leak).
    assert!(mock.stats().ok >= 2);
    let mut leaks = Vec::new();
    for (name, text) in [
        ("stdout", stdout.clone()),
        ("stderr (debug logs)", stderr.clone()),
    ] {
        if text.contains(KEY) {
            leaks.push(name.to_owned());
        }
    }
    for o in &outputs {
        if std::fs::read_to_string(dir.path().join(o))
            .unwrap()
            .contains(KEY)
        {
            leaks.push((*o).to_owned());
        }
    }
    let spans = receiver.spans();
    assert!(!spans.is_empty());
    for g in &spans {
        if format!("{:?}", g.span).contains(KEY) {
            leaks.push(format!("span {}", g.span.name));
        }
    }
    // What is stored (the whole data directory, database included), and
    // what the read commands and the reports service answer from it:
    // GetRun and ListRuns (`runs`), ListResults (`results`), every report.
    for entry in std::fs::read_dir(dir.path().join(".gauntlet")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()) {
            leaks.push(path.display().to_string());
        }
    }
    let listed = crate::cli::gauntlet(&["runs"], dir.path()).await;
    let (runs, _) = text(&listed);
    let run_id = runs
        .split_whitespace()
        .find(|w| uuid::Uuid::parse_str(w).is_ok())
        .unwrap_or_else(|| panic!("a run id in {runs}"))
        .to_owned();
    let mut reads = vec![("runs".to_owned(), runs.clone())];
    for args in [
        vec!["results", run_id.as_str()],
        vec!["watch", run_id.as_str()],
        vec!["report", run_id.as_str(), "--format", "markdown"],
        vec!["report", run_id.as_str(), "--format", "json"],
        vec!["report", run_id.as_str(), "--format", "html"],
        vec!["report", run_id.as_str(), "--format", "csv"],
        vec!["report", run_id.as_str(), "--format", "junit"],
    ] {
        let out = crate::cli::gauntlet(&args, dir.path()).await;
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success() || out.status.code() == Some(100),
            "{args:?}: {stderr}"
        );
        reads.push((args.join(" "), format!("{stdout}{stderr}")));
    }
    assert!(
        reads.iter().any(|(_, t)| t.contains("Bearer [redacted]")),
        "the reads show the vendor's (scrubbed) error"
    );
    for (name, text) in &reads {
        if text.contains(KEY) {
            leaks.push(format!("gauntlet {name}"));
        }
    }
    assert!(leaks.is_empty(), "the key leaked into {leaks:?}");
    assert!(stderr.contains("DEBUG"), "debug logs were on");
}
