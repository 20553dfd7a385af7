//! The gateway: Gauntlet's one public gRPC endpoint. It validates and stores
//! suites, expands runs into task batches on the queue, streams progress,
//! and routes analytics, report and monitor calls to their services. It
//! also runs the reconciler, which re-drives or fails runs left without
//! work in flight, and serves the operators' view of dead letters.

pub mod access;
mod admin;
pub mod dispatch;
mod estimate;
pub mod quota;
pub mod reconcile;
mod routing;
mod runs;
mod submit;
mod watch;

use std::sync::Arc;

use gauntlet_bus::Bus;
use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1::{
    access_service_server::AccessServiceServer, admin_service_server::AdminServiceServer,
    analytics_service_server::AnalyticsServiceServer, monitor_service_server::MonitorServiceServer,
    report_service_server::ReportServiceServer, run_service_server::RunServiceServer,
};
use gauntlet_service::{GrpcServer, connect_bus, connect_store, limited};
use gauntlet_store::Store;
use tokio_util::sync::CancellationToken;

pub use gauntlet_service::DEFAULT_PROJECT;

/// What the gateway talks to.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
}

/// Connects to Postgres and RabbitMQ from `config`, binds `gateway.listen`,
/// serves until `shutdown`.
pub async fn serve(config: GauntletConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener =
        gauntlet_service::Listeners::bind(&config.gateway.listen, &config.gateway.metrics_listen)
            .await?;
    let deps = gauntlet_service::while_starting("gateway", &config.grpc, &listener.grpc, async {
        Ok(Deps {
            store: connect_store(&config.database, &shutdown).await?,
            bus: connect_bus(&config.amqp, &shutdown).await?,
        })
    })
    .await?;
    run(config, deps, listener, shutdown).await
}

/// Serves on `listener` with the given dependencies (embedded mode and tests
/// hand in their own).
pub async fn run(
    config: GauntletConfig,
    deps: Deps,
    listener: impl Into<gauntlet_service::Listeners>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let dispatcher = dispatch::Dispatcher::new(deps.clone(), &config);
    let feeding = tokio::spawn(dispatcher.clone().run(shutdown.clone()));
    let runs = runs::RunApi::new(config.clone(), deps.clone(), dispatcher, shutdown.clone());
    let routing = routing::Router::new(&config, deps.clone())?;
    let mut server = GrpcServer::new("gateway", &config.grpc).await?;
    let limits = server.limits();
    if config.auth.enabled {
        server.set_gate(gate(&config, &deps, &shutdown).await?);
    }
    gauntlet_service::metrics::watch_store(&server.metrics(), deps.store.clone(), shutdown.clone());
    server
        .add_service(limited!(RunServiceServer::new(runs), limits))
        .add_service(limited!(
            AnalyticsServiceServer::new(routing.clone()),
            limits
        ))
        .add_service(limited!(ReportServiceServer::new(routing.clone()), limits))
        .add_service(limited!(MonitorServiceServer::new(routing), limits))
        .add_service(limited!(
            AdminServiceServer::new(admin::AdminApi::new(deps.clone())),
            limits
        ))
        .add_service(limited!(
            AccessServiceServer::new(access::AccessApi::new(deps.store.clone())),
            limits
        ));
    let reconciler = config.reconcile.enabled.then(|| {
        let reconciler = reconcile::Reconciler::new(
            deps,
            config.reconcile.clone(),
            config.amqp.batch_size,
            server.metrics(),
        );
        tokio::spawn(reconciler.run(shutdown.clone()))
    });
    let served = server.serve(listener.into(), shutdown).await;
    let _ = feeding.await;
    if let Some(reconciler) = reconciler {
        // Cancelled with the server; a pass under way ends with it.
        let _ = reconciler.await;
    }
    served
}

/// The API-key gate (`auth.enabled`): the bootstrap key stored, rates
/// spent in Redis when there is one.
async fn gate(
    config: &GauntletConfig,
    deps: &Deps,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn gauntlet_service::gate::Gate>> {
    if !config.auth.bootstrap_key.is_empty() {
        access::KeyGate::bootstrap(deps.store.as_ref(), &config.auth.bootstrap_key).await?;
    }
    let limiter: Arc<dyn gauntlet_cache::limiter::RateLimiter> = if config.redis.url.is_empty() {
        Arc::new(gauntlet_cache::limiter::LocalLimiter::new())
    } else {
        Arc::new(gauntlet_cache::limiter::RedisLimiter::new(&config.redis)?)
    };
    Ok(Arc::new(access::KeyGate::new(
        deps.store.clone(),
        limiter,
        config.auth.clone(),
        shutdown.clone(),
    )))
}
