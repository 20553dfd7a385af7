//! `TraceLayer` on a real tonic server (the health service behind it) and
//! `TraceClient` on a real client.

use std::{net::SocketAddr, time::Duration};

use gauntlet_telemetry::grpc::{TraceClient, TraceLayer};
use opentelemetry::{
    Value,
    trace::{SpanId, SpanKind, Status, TraceContextExt, TraceId, TracerProvider as _},
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_client::HealthClient},
};
use tracing::{Instrument, subscriber::DefaultGuard};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

const REMOTE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REMOTE_SPAN: &str = "00f067aa0ba902b7";
const SERVED: &str = "gauntlet.test.v1.Probe";

/// Spans of this test's thread go to an in-memory exporter. The tests use
/// the current-thread runtime, so server and client run on this thread.
struct Recorder {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _default: DefaultGuard,
}

impl Recorder {
    fn install() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("it")));
        Self {
            exporter,
            provider,
            _default: tracing::subscriber::set_default(subscriber),
        }
    }

    fn finished(&self) -> Vec<SpanData> {
        let _ = self.provider.force_flush();
        self.exporter.get_finished_spans().unwrap()
    }

    /// Server spans finish when the server drops the response body, a moment
    /// after the client has its answer.
    async fn wait_for_server_spans(&self, n: usize) -> Vec<SpanData> {
        for _ in 0..200 {
            let spans: Vec<_> = self
                .finished()
                .into_iter()
                .filter(|s| s.span_kind == SpanKind::Server)
                .collect();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} server spans, got {:?}", self.finished());
    }
}

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    async fn start(layer: TraceLayer) -> Self {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(SERVED, ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn check(service: &str, traceparent: Option<&str>) -> tonic::Request<HealthCheckRequest> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    if let Some(traceparent) = traceparent {
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
    }
    request
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

#[tokio::test]
async fn server_span_is_parented_to_the_incoming_traceparent() {
    let recorder = Recorder::install();
    let server = TestServer::start(TraceLayer::new()).await;
    let mut client = HealthClient::new(server.channel().await);

    let traceparent = format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01");
    let response = client
        .check(check(SERVED, Some(&traceparent)))
        .await
        .unwrap();
    assert_eq!(response.into_inner().status, ServingStatus::Serving as i32);

    let spans = recorder.wait_for_server_spans(1).await;
    let span = &spans[0];
    assert_eq!(
        span.span_context.trace_id(),
        TraceId::from_hex(REMOTE_TRACE).unwrap()
    );
    assert_eq!(span.parent_span_id, SpanId::from_hex(REMOTE_SPAN).unwrap());
    assert!(span.parent_span_is_remote);
    assert_eq!(span.name, "grpc.health.v1.Health/Check");
    assert_eq!(attribute(span, "rpc.system"), Some("grpc".into()));
    assert_eq!(
        attribute(span, "rpc.service"),
        Some("grpc.health.v1.Health".into())
    );
    assert_eq!(attribute(span, "rpc.method"), Some("Check".into()));
    // A successful unary call carries its status in the trailers.
    assert_eq!(attribute(span, "rpc.grpc.status_code"), Some(0i64.into()));
    assert_eq!(span.status, Status::Unset);

    server.stop().await;
}

#[tokio::test]
async fn the_client_span_is_the_server_spans_parent() {
    let recorder = Recorder::install();
    let server = TestServer::start(TraceLayer::new()).await;
    let mut client = HealthClient::new(TraceClient::new(server.channel().await));

    let caller = tracing::info_span!("caller");
    let (trace_id, span_id) = {
        let cx = caller.context();
        let sc = cx.span().span_context().clone();
        (sc.trace_id(), sc.span_id())
    };
    async {
        client.check(check(SERVED, None)).await.unwrap();
    }
    .instrument(caller)
    .await;

    let spans = recorder.wait_for_server_spans(1).await;
    let client_span = recorder
        .finished()
        .into_iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .expect("a CLIENT span for the call");
    // caller → CLIENT span (the call, with the RPC conventions) → SERVER span.
    assert_eq!(client_span.span_context.trace_id(), trace_id);
    assert_eq!(client_span.parent_span_id, span_id);
    assert_eq!(client_span.name, "grpc.health.v1.Health/Check");
    assert_eq!(attribute(&client_span, "rpc.system"), Some("grpc".into()));
    assert_eq!(attribute(&client_span, "rpc.method"), Some("Check".into()));
    assert_eq!(
        attribute(&client_span, "rpc.grpc.status_code"),
        Some(0i64.into())
    );
    assert_eq!(spans[0].span_context.trace_id(), trace_id);
    assert_eq!(spans[0].parent_span_id, client_span.span_context.span_id());

    server.stop().await;
}

#[tokio::test]
async fn error_status_from_the_handler_is_recorded() {
    let recorder = Recorder::install();
    let server = TestServer::start(TraceLayer::new()).await;
    let mut client = HealthClient::new(server.channel().await);

    let traceparent = format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01");
    let status = client
        .check(check("gauntlet.test.v1.Missing", Some(&traceparent)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let spans = recorder.wait_for_server_spans(1).await;
    assert_eq!(
        attribute(&spans[0], "rpc.grpc.status_code"),
        Some((tonic::Code::NotFound as i64).into())
    );
    // NotFound is the caller's mistake, not a server fault.
    assert_eq!(spans[0].status, Status::Unset);

    server.stop().await;
}

#[tokio::test]
async fn probes_without_trace_context_are_not_traced_unless_asked() {
    let recorder = Recorder::install();
    let server = TestServer::start(TraceLayer::new()).await;
    let mut client = HealthClient::new(server.channel().await);
    client.check(check(SERVED, None)).await.unwrap();
    // A traced call after the probe: once its span is in, the probe's would be too.
    let traceparent = format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01");
    client
        .check(check(SERVED, Some(&traceparent)))
        .await
        .unwrap();
    let spans = recorder.wait_for_server_spans(1).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(
        spans[0].span_context.trace_id(),
        TraceId::from_hex(REMOTE_TRACE).unwrap()
    );
    server.stop().await;

    let server = TestServer::start(TraceLayer::new().trace_probes(true)).await;
    let mut client = HealthClient::new(server.channel().await);
    client.check(check(SERVED, None)).await.unwrap();
    let spans = recorder.wait_for_server_spans(2).await;
    assert_eq!(spans.len(), 2);
    // Without incoming context the span starts a trace of its own.
    assert_eq!(spans[1].parent_span_id, SpanId::INVALID);
    server.stop().await;
}
