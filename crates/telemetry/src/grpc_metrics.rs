//! gRPC server metrics: requests by service, method and code, their latency
//! and the requests in flight, counted by a tower layer around a server's
//! routes.
//!
//! - `gauntlet_grpc_server_requests_total{grpc_service,grpc_method,grpc_code}`
//!   counts a request once its status is known: from the trailers when the
//!   response body ends, from the headers of a trailers-only answer, or
//!   `Cancelled` when the client goes away first.
//! - `gauntlet_grpc_server_request_duration_seconds{grpc_service,grpc_method}`
//!   times the handler: until the response headers, which a unary call
//!   sends with its answer and a streaming call when its stream starts (a
//!   WatchRun open for minutes is not a minute-long request).
//! - `gauntlet_grpc_server_in_flight_requests{grpc_service}` counts requests
//!   from their arrival until their body ends.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{Status, body::Body, codegen::Bytes};
use tower::{Layer, Service};

use crate::metrics::{Counter, Gauge, Histogram, Registry};

/// `Server::builder().layer(MetricsLayer::new(registry))`.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    rpcs: Arc<Rpcs>,
}

impl MetricsLayer {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            rpcs: Arc::new(Rpcs {
                registry,
                by_path: RwLock::new(HashMap::new()),
            }),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            rpcs: self.rpcs.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    rpcs: Arc<Rpcs>,
}

/// Paths counted apart; past this many (a client calling made-up
/// methods), the others share one `unknown` series.
const MAX_PATHS: usize = 256;

/// One method's handles, looked up once: a request costs a map read and a
/// few atomic updates, not a registry lookup per series.
#[derive(Debug)]
struct Rpc {
    registry: Arc<Registry>,
    service: String,
    method: String,
    in_flight: Gauge,
    duration: Histogram,
    /// By code (0 to 16), made on first use.
    codes: [OnceLock<Counter>; 17],
}

impl Rpc {
    fn new(registry: &Arc<Registry>, service: &str, method: &str) -> Self {
        Self {
            registry: registry.clone(),
            service: service.to_owned(),
            method: method.to_owned(),
            in_flight: registry.gauge_with(
                "gauntlet_grpc_server_in_flight_requests",
                &[("grpc_service", service)],
            ),
            duration: registry.histogram_with(
                "gauntlet_grpc_server_request_duration_seconds",
                &[("grpc_service", service), ("grpc_method", method)],
            ),
            codes: Default::default(),
        }
    }

    fn finish(&self, code: tonic::Code) {
        let slot = (code as usize).min(self.codes.len() - 1);
        self.codes[slot]
            .get_or_init(|| {
                self.registry.counter_with(
                    "gauntlet_grpc_server_requests_total",
                    &[
                        ("grpc_service", &self.service),
                        ("grpc_method", &self.method),
                        ("grpc_code", &code_name(code)),
                    ],
                )
            })
            .increment(1);
        self.in_flight.decrement(1.0);
    }
}

#[derive(Debug)]
pub struct Rpcs {
    registry: Arc<Registry>,
    by_path: RwLock<HashMap<String, Arc<Rpc>>>,
}

impl Rpcs {
    fn of(&self, path: &str) -> Arc<Rpc> {
        if let Some(rpc) = self
            .by_path
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
        {
            return rpc.clone();
        }
        let mut by_path = self.by_path.write().unwrap_or_else(PoisonError::into_inner);
        let key = if by_path.len() < MAX_PATHS {
            path
        } else {
            "/unknown/unknown"
        };
        let (service, method) = crate::grpc::rpc_of(key).unwrap_or(("unknown", "unknown"));
        by_path
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Rpc::new(&self.registry, service, method)))
            .clone()
    }
}

/// The name gRPC's own tooling gives a code: `OK`, `NotFound`, `Internal`…
pub fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".into(),
        other => format!("{other:?}"),
    }
}

fn code_of(headers: &HeaderMap) -> Option<tonic::Code> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(tonic::Code::from_i32(code))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<MeteredBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let rpc = self.rpcs.of(request.uri().path());
        rpc.in_flight.increment(1.0);
        let pending = rpc;
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = match future.await {
                Ok(response) => response,
                Err(error) => {
                    pending.finish(tonic::Code::Unknown);
                    return Err(error);
                }
            };
            pending.duration.record(started.elapsed().as_secs_f64());
            let pending = match code_of(response.headers()) {
                // Trailers-only: the answer is the status.
                Some(code) => {
                    pending.finish(code);
                    None
                }
                None => Some(pending),
            };
            Ok(response.map(|body| MeteredBody {
                inner: Body::new(body),
                pending,
            }))
        })
    }
}

/// A response body that records the request's status when its trailers
/// pass, or `Cancelled` if it is dropped before they do.
pub struct MeteredBody {
    inner: Body,
    /// The request's method until its status is recorded.
    pending: Option<Arc<Rpc>>,
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(code_of)
                    && let Some(pending) = this.pending.take()
                {
                    pending.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(pending) = this.pending.take() {
                    pending.finish(status.code());
                }
            }
            Poll::Ready(None) => {
                if let Some(pending) = this.pending.take() {
                    pending.finish(tonic::Code::Ok);
                }
            }
            Poll::Pending => {}
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

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.finish(tonic::Code::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_paths_past_the_limit_share_one_series() {
        let registry = Arc::new(Registry::new("gateway"));
        let rpcs = Rpcs {
            registry: registry.clone(),
            by_path: RwLock::new(HashMap::new()),
        };
        for i in 0..MAX_PATHS + 50 {
            rpcs.of(&format!("/fuzz.Service/Method{i}"))
                .finish(tonic::Code::Unimplemented);
        }
        // The same path is the same handles.
        assert!(Arc::ptr_eq(
            &rpcs.of("/fuzz.Service/Method0"),
            &rpcs.of("/fuzz.Service/Method0")
        ));
        assert_eq!(rpcs.by_path.read().unwrap().len(), MAX_PATHS + 1);
        let counts = registry.snapshot();
        let unknown = counts
            .iter()
            .find(|(k, _)| {
                k.starts_with("gauntlet_grpc_server_requests_total")
                    && k.contains("grpc_method=\"unknown\"")
            })
            .map(|(_, v)| *v);
        assert_eq!(unknown, Some(50.0), "the 50 calls past the limit");
    }
}
