//! The gate: a layer that decides on every call before its handler sees it
//! (who is calling, may they, are they within their rate) and hears how it
//! was answered (the audit log). The gateway brings the [`Gate`] (API keys);
//! a server without one lets every call through.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::{Code, Status, body::Body, transport::server::TcpConnectInfo};
use tower::{Layer, Service};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A call as the gate sees it: before its message is read.
pub struct Call<'a> {
    /// `/gauntlet.v1.RunService/SubmitRun`.
    pub method: &'a str,
    pub headers: &'a http::HeaderMap,
    pub peer: Option<SocketAddr>,
}

/// Decides on calls.
pub trait Gate: Send + Sync + 'static {
    /// Lets `call` through with these extensions added to its request (what
    /// its handler needs: the caller), or answers it with the status.
    fn admit<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<http::Extensions, Status>>;

    /// `call`, let through with `admitted`, was answered with `code` (`Ok`
    /// also for a stream that started).
    fn answered(&self, method: &str, admitted: &http::Extensions, code: Code);
}

/// The layer over a server's routes; `None` lets every call through.
#[derive(Clone, Default)]
pub struct GateLayer {
    gate: Option<Arc<dyn Gate>>,
}

impl GateLayer {
    pub fn new(gate: Option<Arc<dyn Gate>>) -> Self {
        Self { gate }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            inner,
            gate: self.gate.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    gate: Option<Arc<dyn Gate>>,
}

impl<S, B> Service<Request<B>> for Gated<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let Some(gate) = self.gate.clone() else {
            return Box::pin(self.inner.call(request));
        };
        // The clone that was made ready goes with this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let method = request.uri().path().to_owned();
            let peer = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .or_else(|| {
                    request
                        .extensions()
                        .get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>()
                        .and_then(|tls| tls.get_ref().remote_addr())
                });
            let call = Call {
                method: &method,
                headers: request.headers(),
                peer,
            };
            let admitted = match gate.admit(call).await {
                Ok(admitted) => admitted,
                Err(status) => return Ok(status.into_http()),
            };
            request.extensions_mut().extend(admitted.clone());
            let response = inner.call(request).await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(Code::Ok, Code::from_i32);
            gate.answered(&method, &admitted, code);
            Ok(response)
        })
    }
}
