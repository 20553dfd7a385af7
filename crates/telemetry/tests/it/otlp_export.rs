//! `init` with `OTEL_EXPORTER_OTLP_ENDPOINT` set sends spans to that endpoint
//! over OTLP/gRPC, and dropping the guard flushes them. The environment is
//! per process, so the exporting side runs as a child process of this test
//! binary (re-running one test in it) with the variables set. It also logs
//! in JSON there, which is checked on the way.

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
};
use tokio_stream::wrappers::TcpListenerStream;

const CHILD_MARKER: &str = "GAUNTLET_TELEMETRY_IT_EXPORT_CHILD";

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The exporting side. Does nothing unless started by the test below.
#[test]
fn child_exports_a_span_and_flushes_on_drop() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let guard = gauntlet_telemetry::init("name-from-argument").unwrap();
        assert!(guard.is_active());
        tracing::info_span!("exported work", run_id = "r-1").in_scope(|| {
            tracing::info!("inside the exported span");
        });
        // Dropped on a multi-threaded runtime, as services do at shutdown.
        drop(guard);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_otlp_endpoint_under_otel_service_name() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let output = tokio::task::spawn_blocking(move || {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "otlp_export::child_exports_a_span_and_flushes_on_drop",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD_MARKER, "1")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .env("OTEL_SERVICE_NAME", "name-from-env")
            .env("GAUNTLET_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_SDK_DISABLED")
            .env_remove("OTEL_TRACES_EXPORTER")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .output()
            .unwrap()
    });
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("child finishes")
        .unwrap();
    let child_log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{child_log}");
    assert!(child_log.contains("1 passed"), "{child_log}");
    // JSON logs, one object per line, with the event's span and its fields.
    let log_line = String::from_utf8_lossy(&output.stderr)
        .lines()
        .find(|l| l.contains("inside the exported span"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no log line: {child_log}"));
    assert!(
        log_line.starts_with('{') && log_line.ends_with('}'),
        "{log_line}"
    );
    assert!(
        log_line.contains(r#""message":"inside the exported span""#),
        "{log_line}"
    );
    assert!(log_line.contains(r#""run_id":"r-1""#), "{log_line}");

    let requests = collector.0.lock().unwrap().clone();
    let resource_spans: Vec<_> = requests.iter().flat_map(|r| &r.resource_spans).collect();
    let exported = resource_spans.iter().find_map(|rs| {
        rs.scope_spans
            .iter()
            .flat_map(|ss| &ss.spans)
            .find(|span| span.name == "exported work")
            .map(|span| (rs, span))
    });
    let (resource_spans, span) =
        exported.unwrap_or_else(|| panic!("no span exported: {requests:?}\n{child_log}"));
    assert_eq!(span.trace_id.len(), 16);
    let service_name = resource_spans
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.clone());
    assert_eq!(
        service_name,
        Some(any_value::Value::StringValue("name-from-env".into()))
    );

    server.abort();
}
