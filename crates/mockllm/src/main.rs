//! The `gauntlet-mockllm` binary: the mock model server on a TCP port.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use gauntlet_mockllm::MockConfig;
use tokio_util::sync::CancellationToken;

/// OpenAI-compatible mock model server with latency and fault injection.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(
        long,
        env = "GAUNTLET_MOCKLLM__LISTEN",
        default_value = "127.0.0.1:7080"
    )]
    listen: SocketAddr,
    #[arg(long, env = "GAUNTLET_MOCKLLM__LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    #[arg(long, env = "GAUNTLET_MOCKLLM__JITTER_MS", default_value_t = 0)]
    jitter_ms: u64,
    #[arg(long, env = "GAUNTLET_MOCKLLM__RATE_429", default_value_t = 0.0)]
    rate_429: f64,
    #[arg(long, env = "GAUNTLET_MOCKLLM__RETRY_AFTER_SECS", default_value_t = MockConfig::default().retry_after_secs)]
    retry_after_secs: u64,
    #[arg(long, env = "GAUNTLET_MOCKLLM__RATE_500", default_value_t = 0.0)]
    rate_500: f64,
    #[arg(long, env = "GAUNTLET_MOCKLLM__RATE_TIMEOUT", default_value_t = 0.0)]
    rate_timeout: f64,
    #[arg(long, env = "GAUNTLET_MOCKLLM__HANG_MS", default_value_t = MockConfig::default().hang_ms)]
    hang_ms: u64,
    #[arg(long, env = "GAUNTLET_MOCKLLM__SEED")]
    seed: Option<u64>,
    /// Serve at most this many requests per second, like a provider's
    /// rate limit; the rest get 429s (0: no cap).
    #[arg(long, env = "GAUNTLET_MOCKLLM__MAX_RPS", default_value_t = 0)]
    max_rps: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = MockConfig {
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        rate_429: args.rate_429,
        retry_after_secs: args.retry_after_secs,
        rate_500: args.rate_500,
        rate_timeout: args.rate_timeout,
        hang_ms: args.hang_ms,
        seed: args.seed,
        max_rps: args.max_rps,
    };
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, ?config, "mock llm listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    gauntlet_mockllm::serve(config, listener, shutdown).await?;
    tracing::info!("mock llm stopped");
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM, only ctrl-c stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received, draining");
    shutdown.cancel();
}
