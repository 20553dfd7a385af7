//! Trace context across gRPC: [`TraceClient`] runs each outgoing call in a
//! CLIENT span and writes its context into the request metadata,
//! [`TraceLayer`] reads it on the server and runs each request inside a
//! SERVER span parented to it. Both follow the OpenTelemetry RPC
//! conventions (`rpc.system`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`).

use std::{
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::trace::TraceContextExt as _;
use tonic::{Status, body::Body, codegen::Bytes};
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::propagation;

/// A gRPC client transport (a `Channel`) whose every call runs in an `info`
/// span `grpc.client` (exported as `pkg.Service/Method`, kind CLIENT, with
/// the `rpc.*` attributes) whose W3C context goes out
/// in the request headers, so the server's span is its child. The span lasts
/// until the response body ends (a stream is one span); any status but OK
/// marks it as an error, as the conventions ask of client spans.
///
/// `RunServiceClient::new(TraceClient::new(channel))`.
#[derive(Debug, Clone)]
pub struct TraceClient<S> {
    inner: S,
}

impl<S> TraceClient<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TraceClient<S>
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

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let (service, method) = rpc_of(path).unzip();
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
        );
        propagation::inject_into(&span.context(), request.headers_mut());
        let future = span.in_scope(|| self.inner.call(request));
        in_span(span, Side::Client, future)
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
    service: Option<&'static str>,
}

impl TraceLayer {
    pub fn new() -> Self {
        Self {
            trace_probes: false,
            service: None,
        }
    }

    /// Exports the requests' spans, and all under them, as `service`'s
    /// (see [`crate::Service`]): for a process that runs several services.
    pub fn service(mut self, service: &'static str) -> Self {
        self.service = Some(service);
        self
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
            service: self.service,
        }
    }
}

/// The service [`TraceLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    trace_probes: bool,
    service: Option<&'static str>,
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
        in_span(span, Side::Server, future)
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
        match self.service {
            Some(service) => propagation::set_parent_in(service, &span, parent),
            None => propagation::set_parent(&span, parent),
        }
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

/// The response of `future` (a call started in `span`) with `span` kept
/// open until its body ends, and its gRPC status recorded.
fn in_span<F, ResBody, E>(
    span: Span,
    side: Side,
    future: F,
) -> Pin<Box<dyn Future<Output = Result<Response<TracedBody>, E>> + Send>>
where
    F: Future<Output = Result<Response<ResBody>, E>> + Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    let body_span = span.clone();
    Box::pin(
        async move {
            let response = future.await?;
            if let Some(status) = response.headers().get("grpc-status") {
                record_status(&body_span, side, status, response.headers());
            }
            Ok(response.map(|body| TracedBody {
                inner: Body::new(body),
                span: body_span,
                side,
            }))
        }
        .instrument(span),
    )
}

/// Which end of a call a span stands for: what counts as its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Records `grpc-status` (and, for a failure of `side`, the error status) on `span`.
fn record_status(span: &Span, side: Side, status: &http::HeaderValue, headers: &HeaderMap) {
    let Some(code) = status
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    span.record("rpc.grpc.status_code", code);
    let code = tonic::Code::from_i32(code);
    let failed = match side {
        Side::Server => is_server_fault(code),
        Side::Client => code != tonic::Code::Ok,
    };
    if failed {
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
    side: Side,
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
            record_status(&this.span, this.side, status, trailers);
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
    use super::*;

    #[test]
    fn only_server_faults_mark_the_span_as_failed() {
        assert!(is_server_fault(tonic::Code::Internal));
        assert!(is_server_fault(tonic::Code::Unavailable));
        assert!(!is_server_fault(tonic::Code::Ok));
        assert!(!is_server_fault(tonic::Code::NotFound));
        assert!(!is_server_fault(tonic::Code::InvalidArgument));
    }
}
