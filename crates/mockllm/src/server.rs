//! The HTTP server: routing, shared state, and [`MockServer`], the in-process
//! handle that tests and benchmarks start on an ephemeral port.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Router,
    routing::{get, post},
    serve::ListenerExt,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    MockConfig, MockStats, admin, anthropic, api, cap::Cap, config::LiveConfig, ollama,
    stats::Counters,
};

/// State shared by every handler.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: LiveConfig,
    pub(crate) counters: Counters,
    /// Requests drawn since the last reset or config change; seeds the per-request RNG.
    pub(crate) seq: AtomicU64,
    /// Response ids; never reset so ids stay unique for the server's life.
    pub(crate) ids: AtomicU64,
    /// The `max_rps` cap's state.
    pub(crate) cap: Cap,
    pub(crate) shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn new(config: &MockConfig, shutdown: CancellationToken) -> Self {
        Self {
            config: LiveConfig::new(config),
            counters: Counters::default(),
            seq: AtomicU64::new(0),
            ids: AtomicU64::new(0),
            cap: Cap::new(),
            shutdown,
        }
    }

    /// A new config restarts the draw sequence so a seeded run replays from its start.
    pub(crate) fn set_config(&self, config: &MockConfig) {
        self.config.store(config);
        self.seq.store(0, Ordering::Relaxed);
        self.cap.reset();
    }

    pub(crate) fn reset_stats(&self) {
        self.counters.reset();
        self.seq.store(0, Ordering::Relaxed);
        self.cap.reset();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(api::chat))
        .route("/chat/completions", post(api::chat))
        .route("/v1/completions", post(api::completions))
        .route("/completions", post(api::completions))
        .route("/v1/embeddings", post(api::embeddings))
        .route("/embeddings", post(api::embeddings))
        .route("/v1/messages", post(anthropic::messages))
        .route("/api/chat", post(ollama::chat))
        .route("/stats", get(admin::stats))
        .route("/admin/reset", post(admin::reset))
        .route(
            "/admin/config",
            get(admin::get_config).put(admin::put_config),
        )
        .route("/healthz", get(admin::healthz))
        .with_state(shared)
}

/// Serves the mock on `listener` until `shutdown` is cancelled, then drains
/// in-flight requests (a hanging 'timeout' fault is cut short).
///
/// Fails at once with [`io::ErrorKind::InvalidInput`] when `config` is invalid.
pub async fn serve(
    config: MockConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> io::Result<()> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let shared = Arc::new(Shared::new(&config, shutdown.clone()));
    run(shared, listener, shutdown).await
}

async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "mock llm serving");
    // Small JSON answers: without TCP_NODELAY Nagle adds tens of milliseconds per response.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// A mock server running in this process on `127.0.0.1` with an ephemeral port.
/// Dropping it shuts the server down.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockServer {
    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    pub async fn start(config: MockConfig) -> io::Result<Self> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared::new(&config, shutdown.clone()));
        let task = tokio::spawn(run(shared.clone(), listener, shutdown.clone()));
        Ok(Self {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The server root, for the admin endpoints, e.g. `http://127.0.0.1:PORT`.
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> MockStats {
        self.shared.counters.snapshot()
    }

    pub fn config(&self) -> MockConfig {
        self.shared.config.load()
    }

    /// Replaces the config for the requests that follow.
    ///
    /// # Panics
    /// If `config` is invalid (a rate outside `[0, 1]`): a bug in the calling test.
    pub fn set_config(&self, config: MockConfig) {
        if let Err(e) = config.validate() {
            panic!("invalid mock config: {e}");
        }
        self.shared.set_config(&config);
    }

    pub fn reset_stats(&self) {
        self.shared.reset_stats();
    }

    /// Stops the server and waits for in-flight requests to drain.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
