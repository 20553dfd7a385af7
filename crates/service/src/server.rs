//! One way to stand up a gRPC server: the trace layer, `grpc.health.v1`
//! (NotServing until the service says it is ready, NotServing again on
//! shutdown), server reflection over every Gauntlet proto, the internal
//! Control API, the gRPC metrics layer and the service's `/metrics`.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use gauntlet_config::GrpcConfig;
use gauntlet_proto::internal::v1::{
    GetStatusRequest, ServiceStatus,
    control_server::{self, ControlServer},
};
use gauntlet_telemetry::{
    grpc::TraceLayer,
    grpc_metrics::MetricsLayer,
    metrics::{Endpoint, Registry},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Response, Status, server::NamedService, service::RoutesBuilder,
    transport::server::TcpIncoming,
};
use tonic_health::server::HealthReporter;
use tracing::info;

use crate::limits::MessageLimits;

/// A gRPC server under construction: the common services are already in,
/// the service adds its own, then `serve`.
pub struct GrpcServer {
    name: &'static str,
    routes: RoutesBuilder,
    health: HealthReporter,
    metrics: Arc<Registry>,
    limits: MessageLimits,
    /// `grpc.tls_*`: TLS, or None for plaintext.
    tls: Option<tonic::transport::ServerTlsConfig>,
    /// Who may call (the gateway's API keys); None lets everyone.
    gate: Option<Arc<dyn crate::gate::Gate>>,
}

impl GrpcServer {
    pub async fn new(name: &'static str, grpc: &GrpcConfig) -> anyhow::Result<Self> {
        // Read first: a bad certificate path fails the start, naming the key.
        let tls = crate::tls::server(grpc)?;
        let (health, health_service) = tonic_health::server::health_reporter();
        set_serving(&health, name, false).await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(gauntlet_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // v1alpha too: grpcio-reflection (Python) and older grpcurl builds
        // speak only that version.
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        // The process registry takes the `metrics` macros (the provider
        // clients') from the first server on, telemetry set up or not.
        Registry::global();
        let metrics = Arc::new(Registry::new(name));
        // These take the same limits as the service's own APIs, so a client
        // that compresses (the monitor's health probes) is understood.
        let limits = MessageLimits::new(grpc);
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(crate::limited!(health_service, limits))
            .add_service(crate::limited!(reflection_v1, limits))
            .add_service(crate::limited!(reflection_v1alpha, limits))
            .add_service(crate::limited!(
                ControlServer::new(Control::new(name, metrics.clone())),
                limits
            ));
        Ok(Self {
            name,
            routes,
            health,
            metrics,
            limits,
            tls,
            gate: None,
        })
    }

    /// The limits every service of this server must be built with
    /// (`limited!(XServer::new(..), server.limits())`).
    pub fn limits(&self) -> MessageLimits {
        self.limits
    }

    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// This service instance's own metrics, reported through Control (kept
    /// apart from the process-wide registry so several services in one
    /// process each report their own).
    pub fn metrics(&self) -> Arc<Registry> {
        self.metrics.clone()
    }

    /// Puts `gate` in front of every call of this server.
    pub fn set_gate(&mut self, gate: Arc<dyn crate::gate::Gate>) -> &mut Self {
        self.gate = Some(gate);
        self
    }

    pub fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self
    }

    /// Serves on `listener` until `shutdown`: Serving once accepting,
    /// NotServing as soon as shutdown starts, then drains open calls. A
    /// server that fails (a TLS file it cannot use, say) cancels `shutdown`,
    /// so the process's other work stops too and it exits with the error,
    /// rather than live on with no listener.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let name = self.name;
        let served = self.serve_until(listeners, shutdown.clone()).await;
        if let Err(error) = &served {
            tracing::error!(
                service = name,
                error = format!("{error:#}"),
                "grpc server failed"
            );
            shutdown.cancel();
        }
        served
    }

    async fn serve_until(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let Listeners {
            grpc: listener,
            metrics,
            process_metrics,
        } = listeners;
        let addr = listener.local_addr()?;
        info!(service = self.name, %addr, "grpc listening");
        // Histograms hold every observation until folded into buckets;
        // scraped or not, they are folded every few seconds.
        let registry = self.metrics.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(gauntlet_telemetry::metrics::UPKEEP_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        registry.run_upkeep();
                        Registry::global().run_upkeep();
                    }
                }
            }
        });
        if let Some(metrics) = metrics {
            let addr = metrics.local_addr()?;
            info!(service = self.name, %addr, "metrics listening on /metrics");
            let endpoint = Endpoint {
                registry: self.metrics.clone(),
                process: process_metrics,
            };
            let stop = shutdown.clone();
            let name = self.name;
            tokio::spawn(async move {
                if let Err(error) =
                    gauntlet_telemetry::metrics::serve(metrics, endpoint, async move {
                        stop.cancelled().await
                    })
                    .await
                {
                    tracing::warn!(service = name, %error, "metrics endpoint stopped");
                }
            });
        }
        set_serving(&self.health, self.name, true).await;
        let health = self.health.clone();
        let stop = shutdown.clone();
        let name = self.name;
        let signal = async move {
            stop.cancelled().await;
            set_serving(&health, name, false).await;
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls.clone() {
            info!(service = self.name, "serving TLS");
            builder = builder.tls_config(tls)?;
        }
        builder
            .layer(TraceLayer::new().service(Box::leak(
                format!("gauntlet-{}", self.name).into_boxed_str(),
            )))
            .layer(MetricsLayer::new(self.metrics.clone()))
            .layer(crate::gate::GateLayer::new(self.gate.clone()))
            .add_routes(self.routes.routes())
            // Without TCP_NODELAY a small answer waits out Nagle and the
            // peer's delayed ACK: 40 ms a call on Linux.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                signal,
            )
            .await?;
        info!(service = self.name, "grpc server stopped");
        Ok(())
    }
}

/// Where a service listens: gRPC, and `/metrics` when it serves them
/// (`process_metrics`: with the process's own, which one endpoint of a
/// process serves).
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
    pub process_metrics: bool,
}

/// gRPC only: what tests and tools that start a service on a listener get.
impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Self {
        Self {
            grpc,
            metrics: None,
            process_metrics: false,
        }
    }
}

impl Listeners {
    /// Binds `listen` for gRPC and, unless empty, `metrics_listen` for
    /// `/metrics` with the process's metrics (a process of one service).
    pub async fn bind(listen: &str, metrics_listen: &str) -> anyhow::Result<Self> {
        let grpc = crate::startup::bind(listen).await?;
        let metrics = if metrics_listen.trim().is_empty() {
            None
        } else {
            Some(crate::startup::bind(metrics_listen).await?)
        };
        Ok(Self {
            grpc,
            metrics,
            process_metrics: true,
        })
    }
}

/// Serving on `""` means the whole server is ready; the service's own
/// name (`gateway`, `worker`, …) says the same, so a probe that names the
/// service it expects (`gauntlet health --service`) also learns that the
/// address is that service's.
async fn set_serving(health: &HealthReporter, name: &str, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    for service in ["", name] {
        health.set_service_status(service, status).await;
    }
}

/// `gauntlet.internal.v1.Control`: the service's name, uptime and metrics.
#[derive(Clone)]
pub struct Control {
    name: &'static str,
    started: Instant,
    registry: Arc<Registry>,
}

impl Control {
    pub fn new(name: &'static str, registry: Arc<Registry>) -> Self {
        Self {
            name,
            started: Instant::now(),
            registry,
        }
    }
}

#[tonic::async_trait]
impl control_server::Control for Control {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<ServiceStatus>, Status> {
        let mut metrics: BTreeMap<String, f64> = Registry::global().snapshot();
        metrics.extend(self.registry.snapshot());
        Ok(Response::new(ServiceStatus {
            name: self.name.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            metrics: metrics.into_iter().collect(),
        }))
    }
}
