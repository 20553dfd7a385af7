//! Trace context across gRPC: [`TraceInterceptor`] writes the caller's span
//! context into request metadata, [`TraceLayer`] reads it on the server and
//! runs each request inside a `grpc.request` span parented to it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::trace::TraceContextExt as _;
use tonic::{
    Status,
    body::Body,
    codegen::Bytes,
    metadata::{MetadataKey, MetadataValue},
};
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty};

use crate::propagation;

/// Client interceptor that injects the current span's W3C trace context into
/// the request metadata:
/// `GatewayClient::with_interceptor(channel, TraceInterceptor)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceInterceptor;

impl tonic::service::Interceptor for TraceInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        for (name, value) in propagation::inject_current() {
            // The propagator only emits valid ASCII header names and values;
            // a pair that somehow is not is dropped rather than failing the call.
            if let (Ok(key), Ok(value)) = (
                MetadataKey::from_bytes(name.as_bytes()),
                MetadataValue::try_from(value.as_str()),
            ) {
                request.metadata_mut().insert(key, value);
            }
        }
        Ok(request)
    }
}

/// Server layer for `tonic::transport::Server::builder().layer(TraceLayer::new())`.
///
/// Every request runs inside an `info` span `grpc.request` (exported under
/// the name `pkg.Service/Method`) with `otel.kind = "server"`,
/// `rpc.system = "grpc"`, `rpc.service`, `rpc.method`, parented to the W3C
/// context in the request headers; `rpc.grpc.status_code` is recorded from
/// the `grpc-status` header or trailer, and server-fault codes mark the span
/// as an error. The span lasts until the response body ends, so a streaming
/// call is one span.
///
/// Health checks (`grpc.health.v1.Health`) that arrive without trace context
/// are not traced: those are orchestrator probes, one every few seconds per
/// pod, and would bury real traces. Checks that carry context are traced.
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    trace_probes: bool,
}

impl TraceLayer {
    pub fn new() -> Self {
        Self {
            trace_probes: false,
        }
    }

    /// Trace health checks without incoming trace context too.
    pub fn trace_probes(mut self, yes: bool) -> Self {
        self.trace_probes = yes;
        self
    }
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            trace_probes: self.trace_probes,
        }
    }
}

/// The service [`TraceLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    trace_probes: bool,
}

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TraceService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<TracedBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let span = self.request_span(&request);
        let future = span.in_scope(|| self.inner.call(request));
        let body_span = span.clone();
        Box::pin(
            async move {
                let response = future.await?;
                if let Some(status) = response.headers().get("grpc-status") {
                    record_status(&body_span, status, response.headers());
                }
                Ok(response.map(|body| TracedBody {
                    inner: Body::new(body),
                    span: body_span,
                }))
            }
            .instrument(span),
        )
    }
}

impl<S> TraceService<S> {
    fn request_span<B>(&self, request: &Request<B>) -> Span {
        let parent = propagation::extract(
            request
                .headers()
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
        );
        let path = request.uri().path();
        let (service, method) = rpc_of(path).unzip();
        let has_parent = parent.span().span_context().is_valid();
        if service == Some(HEALTH_SERVICE) && !has_parent && !self.trace_probes {
            return Span::none();
        }

        let span = tracing::info_span!(
            "grpc.request",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = Empty,
            otel.status_description = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
        );
        propagation::set_parent(&span, parent);
        span
    }
}

/// The gRPC service and method a request path (`/pkg.Service/Method`)
/// names.
pub(crate) fn rpc_of(path: &str) -> Option<(&str, &str)> {
    match path.trim_start_matches('/').split_once('/') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            Some((service, method))
        }
        _ => None,
    }
}

/// Records `grpc-status` (and, for server faults, the error status) on `span`.
fn record_status(span: &Span, status: &http::HeaderValue, headers: &HeaderMap) {
    let Some(code) = status
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    span.record("rpc.grpc.status_code", code);
    if is_server_fault(tonic::Code::from_i32(code)) {
        span.record("otel.status_code", "ERROR");
        if let Some(message) = headers.get("grpc-message").and_then(|m| m.to_str().ok()) {
            span.record("otel.status_description", message);
        }
    }
}

/// The codes OpenTelemetry's gRPC conventions count as errors of a server
/// span; the others (NotFound, InvalidArgument, …) are the client's doing.
fn is_server_fault(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    )
}

/// Response body that keeps the request span open until the body ends and
/// records the status carried in the trailers.
#[derive(Debug)]
pub struct TracedBody {
    inner: Body,
    span: Span,
}

impl HttpBody for TracedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        // Streaming handlers run while the body is polled; their events
        // belong to the request span.
        let _entered = this.span.enter();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(status) = trailers.get("grpc-status")
        {
            record_status(&this.span, status, trailers);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tonic::service::Interceptor;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn interceptor_writes_the_current_traceparent_into_metadata() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("client call");
            let _entered = span.enter();
            let trace_id = span.context().span().span_context().trace_id();

            let request = TraceInterceptor.call(tonic::Request::new(())).unwrap();
            let traceparent = request
                .metadata()
                .get("traceparent")
                .expect("traceparent in metadata")
                .to_str()
                .unwrap();
            assert!(
                traceparent.starts_with(&format!("00-{trace_id}-")),
                "{traceparent}"
            );
        });
    }

    #[test]
    fn interceptor_leaves_untraced_calls_alone() {
        let request = TraceInterceptor.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("traceparent").is_none());
    }

    #[test]
    fn only_server_faults_mark_the_span_as_failed() {
        assert!(is_server_fault(tonic::Code::Internal));
        assert!(is_server_fault(tonic::Code::Unavailable));
        assert!(!is_server_fault(tonic::Code::Ok));
        assert!(!is_server_fault(tonic::Code::NotFound));
        assert!(!is_server_fault(tonic::Code::InvalidArgument));
    }
}
