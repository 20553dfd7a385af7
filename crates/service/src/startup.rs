//! Start-up and shutdown of a service process: config loading, telemetry,
//! connecting to Postgres and RabbitMQ with retries (in Kubernetes the
//! service may start before its dependencies), and SIGTERM/SIGINT handling.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use gauntlet_bus::{AmqpBus, Bus};
use gauntlet_config::{AmqpConfig, DatabaseConfig, GauntletConfig, GrpcConfig};
use gauntlet_store::{PgStore, Store};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Cancels `token` on SIGTERM or SIGINT.
/// How long [`bind`] keeps trying an address another process still holds.
pub const BIND_PATIENCE: Duration = Duration::from_secs(30);

/// Binds a service's listen address, saying which one failed. A restarted
/// process often finds its port still held by the one it replaces (being
/// drained, or in TIME_WAIT); it waits for it, for up to [`BIND_PATIENCE`],
/// rather than exit.
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    bind_within(addr, BIND_PATIENCE).await
}

/// [`bind`] with a given patience.
pub async fn bind_within(
    addr: &str,
    patience: Duration,
) -> anyhow::Result<tokio::net::TcpListener> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = Duration::from_millis(50);
    let mut warned = false;
    loop {
        match try_bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() + delay < deadline =>
            {
                if !warned {
                    warn!(%addr, "listen address in use, waiting for it to be freed");
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
        }
    }
}

/// Binds with `SO_REUSEADDR`, so connections of a previous process in
/// TIME_WAIT do not hold the port (another live listener still does).
async fn try_bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for resolved in tokio::net::lookup_host(addr).await? {
        let socket = if resolved.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(resolved).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} resolves to no address"),
        )
    }))
}

pub fn shutdown_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        info!("shutdown signal received");
        token.cancel();
    });
}

async fn retry<T, E: std::fmt::Display, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(error) => {
                warn!(%error, what, retry_in_ms = delay.as_millis() as u64, "dependency not ready");
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("shut down while waiting for {what}"),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Connects to Postgres, retrying until it answers or shutdown; with
/// `database.migrate` runs the migrations, without waits until the process
/// that migrates (the gateway) has applied every migration this build knows.
pub async fn connect_store(
    config: &DatabaseConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn Store>> {
    let store = retry("postgres", shutdown, || PgStore::connect(config)).await?;
    if !config.migrate {
        retry("postgres migrations", shutdown, || async {
            match store.missing_migrations().await {
                Ok(missing) if missing.is_empty() => Ok(()),
                Ok(missing) => Err(format!(
                    "the database lacks migration {} (and {} more): waiting for the gateway \
                     (database.migrate=true) to apply them",
                    missing[0],
                    missing.len() - 1
                )),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
    }
    Ok(Arc::new(store))
}

/// Runs `starting` (connecting to dependencies, waiting for migrations)
/// while `grpc` answers health checks NOT_SERVING and every other call
/// UNAVAILABLE, so a probe meets a server that says it is not ready rather
/// than a bound port that never answers. The listener is free again when
/// this returns, for the service's own server.
pub async fn while_starting<T>(
    name: &'static str,
    grpc: &GrpcConfig,
    listener: &tokio::net::TcpListener,
    starting: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in ["", name] {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = crate::tls::server(grpc)? {
        builder = builder.tls_config(tls)?;
    }
    let stop = CancellationToken::new();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    });
    let server = builder
        .layer(tower::layer::layer_fn(move |inner| NotReady {
            name,
            inner,
        }))
        .add_service(health_service)
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    tokio::pin!(server);
    let started = tokio::select! {
        started = starting => started,
        served = &mut server => match served {
            Ok(()) => anyhow::bail!("{name}: the start-up health server stopped"),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("{name}: start-up health server"))),
        },
    };
    stop.cancel();
    // Open calls are health checks; a client that holds its connection
    // open does not hold up the start.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    started
}

/// The start-up server's calls: health checks go through, everything else
/// is UNAVAILABLE, which clients retry.
#[derive(Clone)]
struct NotReady<S> {
    name: &'static str,
    inner: S,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for NotReady<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Send,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path().starts_with("/grpc.health.v1.Health/") {
            return Box::pin(self.inner.call(request));
        }
        let status = tonic::Status::unavailable(format!(
            "{} is starting: waiting for its dependencies (Postgres, RabbitMQ) and migrations",
            self.name
        ));
        Box::pin(std::future::ready(Ok(status.into_http())))
    }
}

/// Connects to RabbitMQ and declares the topology, retrying until it answers.
pub async fn connect_bus(
    config: &AmqpConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn Bus>> {
    let bus = retry("rabbitmq", shutdown, || {
        AmqpBus::connect(&config.url, config.delivery_limit)
    })
    .await?;
    Ok(Arc::new(bus))
}

/// The `main` of a service binary: `--config FILE` (or `GAUNTLET_CONFIG`),
/// then `GAUNTLET_<SECTION>__<KEY>` variables; telemetry; signals.
pub struct ServiceBinary {
    pub name: &'static str,
}

impl ServiceBinary {
    pub fn load_config(&self) -> anyhow::Result<GauntletConfig> {
        let mut args = std::env::args().skip(1);
        let mut path: Option<PathBuf> = std::env::var_os("GAUNTLET_CONFIG").map(PathBuf::from);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" | "-c" => {
                    path = Some(args.next().context("--config needs a file")?.into())
                }
                "--help" | "-h" => {
                    println!(
                        "gauntlet-{} [--config FILE]\n\nConfiguration: defaults, then FILE (TOML; also GAUNTLET_CONFIG), \
                         then GAUNTLET_<SECTION>__<KEY> environment variables.\nTracing: OTEL_EXPORTER_OTLP_ENDPOINT, RUST_LOG, GAUNTLET_LOG_FORMAT=json.",
                        self.name
                    );
                    std::process::exit(0);
                }
                other => anyhow::bail!("unknown argument `{other}` (try --help)"),
            }
        }
        let text = match &path {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?,
            ),
            None => None,
        };
        gauntlet_config::load(text.as_deref(), std::env::vars())
            .and_then(|c: GauntletConfig| c.validate().map(|()| c))
            .map_err(|e| match &path {
                Some(p) => anyhow::anyhow!("{}: {e}", p.display()),
                None => anyhow::anyhow!("{e}"),
            })
    }

    /// Loads config, starts telemetry, runs `serve` until SIGTERM/SIGINT.
    pub async fn run<F, Fut>(self, serve: F) -> anyhow::Result<()>
    where
        F: FnOnce(GauntletConfig, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let config = self.load_config()?;
        let _telemetry = gauntlet_telemetry::init(&format!("gauntlet-{}", self.name))?;
        let shutdown = CancellationToken::new();
        shutdown_on_signal(shutdown.clone());
        let result = serve(config, shutdown).await;
        if let Err(e) = &result {
            tracing::error!(error = format!("{e:#}"), "service failed");
        }
        result
    }
}
