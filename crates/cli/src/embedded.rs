//! All five services in this process on loopback ports: with SQLite, the
//! in-process bus and an L1-only cache for `gauntlet run` on a laptop, or
//! with whatever backends the caller hands in (tests, `gauntlet up`).

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use gauntlet_bus::{Bus, MemoryBus};
use gauntlet_cache::Cache;
use gauntlet_config::GauntletConfig;
use gauntlet_providers::ProviderFactory;
use gauntlet_store::{SqliteStore, Store};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A running in-process cluster.
pub struct Stack {
    pub gateway: SocketAddr,
    pub worker: SocketAddr,
    pub analytics: SocketAddr,
    pub reports: SocketAddr,
    pub monitor: SocketAddr,
    /// Each service's `/metrics` address, for those that serve one.
    pub metrics: Vec<(&'static str, SocketAddr)>,
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

/// The backends the services share.
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub cache: Cache,
    pub providers: Arc<ProviderFactory>,
}

impl Backends {
    /// SQLite in `data_dir`, the in-process bus, an L1-only cache, and
    /// providers configured from the process environment.
    pub async fn embedded(data_dir: &Path, config: &GauntletConfig) -> anyhow::Result<Self> {
        Ok(Self {
            store: Arc::new(sqlite_store(data_dir).await?),
            bus: Arc::new(MemoryBus::new(config.amqp.delivery_limit)),
            cache: Cache::local(CACHE_BYTES),
            providers: Arc::new(ProviderFactory::from_process_env()),
        })
    }
}

/// The embedded database's file in the data directory.
pub const DATABASE_FILE: &str = "gauntlet.db";

/// The embedded database, [`DATABASE_FILE`] in `data_dir`, which is created if
/// missing and must be writable.
pub async fn sqlite_store(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("data directory {} cannot be created", data_dir.display()))?;
    let probe = data_dir.join(".write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("data directory {} is not writable", data_dir.display()))?;
    let _ = std::fs::remove_file(probe);
    SqliteStore::open(&data_dir.join(DATABASE_FILE))
        .await
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))
}

/// In-process L1 budget of the embedded cache: the whole process of a
/// run of any size is meant to stay within about 200 MB.
pub const CACHE_BYTES: u64 = 32 * 1024 * 1024;

async fn loopback() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on a loopback port")?;
    let addr = l.local_addr()?;
    Ok((l, addr))
}

/// Every service's `metrics_listen`.
fn metrics_listens(config: &mut GauntletConfig) -> [&mut String; 5] {
    [
        &mut config.gateway.metrics_listen,
        &mut config.worker.metrics_listen,
        &mut config.analytics.metrics_listen,
        &mut config.reports.metrics_listen,
        &mut config.monitor.metrics_listen,
    ]
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

impl Stack {
    /// The embedded stack: SQLite in `data_dir`, in-process bus, L1 cache,
    /// with `config`'s limits (the `--config` file and the
    /// `GAUNTLET_<SECTION>__<KEY>` variables, as for the services).
    /// `max_concurrency` is the run's own limit (`--max-concurrency`): the
    /// embedded worker is sized to honour it, as a user would expect.
    pub async fn start(
        mut config: GauntletConfig,
        data_dir: &Path,
        max_concurrency: u32,
    ) -> anyhow::Result<Self> {
        // Loopback: compressing would only cost CPU.
        config.grpc.gzip = false;
        // One command's run: nobody scrapes it.
        for listen in metrics_listens(&mut config) {
            listen.clear();
        }
        let worker = &mut config.worker;
        worker.max_in_flight = worker.max_in_flight.max(max_concurrency as usize);
        // Enough batches on hand to keep every slot busy, twice over.
        let batches = (2 * worker.max_in_flight).div_ceil(config.amqp.batch_size.max(1) as usize);
        worker.prefetch = worker
            .prefetch
            .max(u16::try_from(batches).unwrap_or(u16::MAX));
        // Embedded mode needs no keys: only this process calls it.
        config.auth.enabled = false;
        let backends = Backends::embedded(data_dir, &config).await?;
        Self::start_with(config, backends).await
    }

    /// All five services over the given backends, on loopback ports, each
    /// with `/metrics` on a loopback port of its own.
    pub async fn start_with(mut config: GauntletConfig, b: Backends) -> anyhow::Result<Self> {
        for listen in metrics_listens(&mut config) {
            *listen = "127.0.0.1:0".into();
        }
        let (gl, _) = loopback().await?;
        Self::start_on(config, b, gl).await
    }

    /// All five services over the given backends: the gateway on `gl`,
    /// the others on loopback ports of their own; `/metrics` where the
    /// configuration says (the worker's with the process's own).
    pub async fn start_on(
        mut config: GauntletConfig,
        b: Backends,
        gl: TcpListener,
    ) -> anyhow::Result<Self> {
        // In-process services talk plaintext over loopback (their URLs are
        // http://); TLS is for services a network separates.
        config.grpc.tls_cert.clear();
        config.grpc.tls_key.clear();
        config.grpc.tls_client_auth = false;
        let gateway = gl.local_addr()?;
        let (wl, worker) = loopback().await?;
        let (al, analytics) = loopback().await?;
        let (rl, reports) = loopback().await?;
        let (ml, monitor) = loopback().await?;
        config.gateway.analytics_url = url(analytics);
        config.gateway.monitor_url = url(monitor);
        config.reports.analytics_url = url(analytics);
        config.monitor.analytics_url = url(analytics);
        config.monitor.targets = format!(
            "gateway={},worker={},analytics={},reports={}",
            url(gateway),
            url(worker),
            url(analytics),
            url(reports)
        );
        let mut metrics = Vec::new();
        let mut listeners = async |name: &'static str, grpc: TcpListener, listen: &str| {
            let endpoint = match listen.trim() {
                "" => None,
                addr => {
                    let l = gauntlet_service::startup::bind(addr).await?;
                    metrics.push((name, l.local_addr()?));
                    Some(l)
                }
            };
            anyhow::Ok(gauntlet_service::Listeners {
                grpc,
                metrics: endpoint,
                // One endpoint serves the process's own series.
                process_metrics: name == "worker",
            })
        };
        let gl = listeners("gateway", gl, &config.gateway.metrics_listen).await?;
        let wl = listeners("worker", wl, &config.worker.metrics_listen).await?;
        let al = listeners("analytics", al, &config.analytics.metrics_listen).await?;
        let rl = listeners("reports", rl, &config.reports.metrics_listen).await?;
        let ml = listeners("monitor", ml, &config.monitor.metrics_listen).await?;
        config.monitor.metrics_targets = metrics
            .iter()
            .filter(|(name, _)| *name != "monitor")
            .map(|(name, addr)| format!("{name}=http://{addr}/metrics"))
            .collect::<Vec<_>>()
            .join(",");
        let shutdown = CancellationToken::new();
        let tasks = vec![
            (
                "gateway",
                tokio::spawn(gauntlet_gateway::run(
                    config.clone(),
                    gauntlet_gateway::Deps {
                        store: b.store.clone(),
                        bus: b.bus.clone(),
                    },
                    gl,
                    shutdown.clone(),
                )),
            ),
            (
                "worker",
                tokio::spawn(gauntlet_worker::run(
                    config.clone(),
                    gauntlet_worker::Deps {
                        store: b.store.clone(),
                        bus: b.bus.clone(),
                        providers: b.providers.clone(),
                        cache: b.cache.clone(),
                    },
                    wl,
                    shutdown.clone(),
                )),
            ),
            (
                "analytics",
                tokio::spawn(gauntlet_analytics::run(
                    config.clone(),
                    gauntlet_analytics::Deps {
                        store: b.store.clone(),
                        cache: b.cache.clone(),
                    },
                    al,
                    shutdown.clone(),
                )),
            ),
            (
                "reports",
                tokio::spawn(gauntlet_reports::run(
                    config.clone(),
                    gauntlet_reports::Deps {
                        store: b.store.clone(),
                        bus: b.bus.clone(),
                    },
                    rl,
                    shutdown.clone(),
                )),
            ),
            (
                "monitor",
                tokio::spawn(gauntlet_monitor::run(
                    config.clone(),
                    gauntlet_monitor::Deps {
                        bus: b.bus.clone(),
                        store: Some(Arc::new(gauntlet_monitor::book::StoreBook(b.store.clone()))),
                        cache: Some(b.cache.clone()),
                    },
                    ml,
                    shutdown.clone(),
                )),
            ),
        ];
        Ok(Self {
            gateway,
            worker,
            analytics,
            reports,
            monitor,
            metrics,
            shutdown,
            tasks,
        })
    }

    /// The gateway's URL.
    pub fn url(&self) -> String {
        url(self.gateway)
    }

    /// Graceful shutdown; returns the first service failure, if any.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut first = None;
        for (name, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    first.get_or_insert(e.context(format!("{name} failed")));
                }
                Ok(Err(join)) => {
                    first.get_or_insert(anyhow::anyhow!("{name} panicked: {join}"));
                }
                Err(_) => warn!(service = name, "did not stop within 30 s"),
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Shutdown for the CLI: failures are logged, not raised, since the run
    /// itself already finished.
    pub async fn stop(self) {
        if let Err(e) = self.shutdown().await {
            warn!(
                error = format!("{e:#}"),
                "embedded stack stopped with an error"
            );
        }
    }
}

/// Whether `listen` (`HOST:PORT`) is a loopback address; a name other than
/// `localhost` counts as not.
pub fn is_loopback(listen: &str) -> bool {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
    }
}
