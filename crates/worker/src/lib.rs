//! The test queue worker: consumes task batches, renders prompts, calls
//! providers, grades, and writes each batch's results in one idempotent
//! statement before acknowledging it.

mod batch;
mod calls;
mod gate;
mod grading;
mod runs;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use gauntlet_bus::{Bus, QueueName};
use gauntlet_cache::Cache;
use gauntlet_config::GauntletConfig;
use gauntlet_providers::ProviderFactory;
use gauntlet_service::{GrpcServer, connect_bus, connect_store};
use gauntlet_store::Store;
use gauntlet_telemetry::metrics::Registry;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

/// The end of the shutdown grace period kept for unfinished batches to write
/// what they have and requeue.
const ABORT_SETTLE: Duration = Duration::from_secs(1);

/// What the worker talks to.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub providers: Arc<ProviderFactory>,
    /// The response cache shared by all workers, and through its
    /// [`rate_limiter`](Cache::rate_limiter) the cluster's rate limits.
    pub cache: Cache,
}

pub async fn serve(config: GauntletConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener =
        gauntlet_service::Listeners::bind(&config.worker.listen, &config.worker.metrics_listen)
            .await?;
    let deps = gauntlet_service::while_starting("worker", &config.grpc, &listener.grpc, async {
        Ok(Deps {
            store: connect_store(&config.database, &shutdown).await?,
            bus: connect_bus(&config.amqp, &shutdown).await?,
            providers: Arc::new(ProviderFactory::from_process_env()),
            cache: Cache::new(
                &config.redis,
                config.worker.response_cache_l1_mb.saturating_mul(1 << 20),
            )
            .context("redis: cannot build the cache pool")?,
        })
    })
    .await?;
    run(config, deps, listener, shutdown).await
}

/// Consumes until `shutdown`, serving health and Control on `listener`.
pub async fn run(
    config: GauntletConfig,
    deps: Deps,
    listener: impl Into<gauntlet_service::Listeners>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let server = GrpcServer::new("worker", &config.grpc).await?;
    let metrics = server.metrics();
    gauntlet_service::metrics::watch_store(&metrics, deps.store.clone(), shutdown.clone());
    let grpc = tokio::spawn(server.serve(listener.into(), shutdown.clone()));
    consume(config, deps, metrics, shutdown).await;
    grpc.await??;
    Ok(())
}

async fn consume(
    config: GauntletConfig,
    deps: Deps,
    metrics: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let calls = calls::ProviderCalls::new(
        deps.providers.clone(),
        &config.worker,
        &deps.cache,
        &metrics,
    );
    metrics
        .gauge("gauntlet_worker_batch_capacity")
        .set(f64::from(config.worker.prefetch));
    metrics.gauge("gauntlet_worker_batches_in_flight").set(0.0);
    for reason in batch::Worker::DEAD_LETTER_REASONS {
        metrics
            .counter_with(
                "gauntlet_batches_dead_lettered_total",
                &[("reason", reason)],
            )
            .increment(0);
    }
    let in_flight = Arc::new(Semaphore::new(config.worker.max_in_flight.max(1)));
    let store_gate = Arc::new(gate::StoreGate::default());
    let ctx = Arc::new(batch::Worker {
        metrics,
        runs: runs::RunCache::new(deps.store.clone(), deps.providers.clone())
            .with_calls(Arc::new(calls))
            .with_in_flight(in_flight.clone())
            .with_store_gate(store_gate.subscribe()),
        in_flight,
        delivery_limit: config.amqp.delivery_limit,
        abort: CancellationToken::new(),
        store_gate,
        store_patience: Duration::from_secs(config.worker.store_retry_secs),
        sampling: batch::TaskSampling {
            ratio: config.worker.trace_task_ratio,
            first: config.worker.trace_first_tasks,
        },
        deps: deps.clone(),
    });
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(200);
    // The consumer of the in-flight batches outlives the loop: dropping it
    // would give their deliveries back at once, and their acks would be lost.
    let mut draining = None;
    'outer: while !shutdown.is_cancelled() {
        // New batches and handed-back ones, each queue with its own
        // prefetch, taken as they come: a retry that is due does not wait
        // behind the backlog of new batches.
        let consumed = async {
            let tasks = deps
                .bus
                .consume(QueueName::Tasks, config.worker.prefetch)
                .await?;
            let retries = deps
                .bus
                .consume(QueueName::Retries, config.worker.prefetch)
                .await?;
            // Either consumer ending ends both: the loop then reconnects.
            let ended = |queue: QueueName| {
                futures::stream::iter([Err(gauntlet_bus::BusError::Unavailable(format!(
                    "the consumer of {} ended",
                    queue.as_str()
                )))])
            };
            Ok::<_, gauntlet_bus::BusError>(futures::stream::select(
                tasks.chain(ended(QueueName::Tasks)),
                retries.chain(ended(QueueName::Retries)),
            ))
        };
        let mut stream = match consumed.await {
            Ok(s) => {
                info!(prefetch = config.worker.prefetch, "consuming task batches");
                backoff = Duration::from_millis(200);
                s
            }
            Err(error) => {
                warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot consume, retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => None,
                next = stream.next() => Some(next),
            };
            let Some(next) = next else {
                draining = Some(stream);
                break 'outer;
            };
            match next {
                Some(Ok(delivery)) => {
                    let ctx = ctx.clone();
                    tracker.spawn(async move { ctx.process(delivery).await });
                }
                Some(Err(error)) => {
                    warn!(%error, "consumer failed, reconnecting");
                    break;
                }
                None => {
                    warn!("consumer stream ended, reconnecting");
                    break;
                }
            }
        }
    }
    // Stop taking work, then give in-flight batches the grace period, less a
    // moment at its end in which the unfinished ones write what they have and
    // give their batch back (to be redelivered; stored tasks are not redone).
    tracker.close();
    let grace = Duration::from_secs(config.worker.shutdown_grace_secs);
    let settle = grace.min(ABORT_SETTLE);
    if tokio::time::timeout(grace - settle, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            in_flight = tracker.len(),
            "grace period ending, requeueing unfinished batches"
        );
        ctx.abort.cancel();
        if tokio::time::timeout(settle, tracker.wait()).await.is_err() {
            warn!(
                in_flight = tracker.len(),
                "batches still unsettled, the broker will redeliver them"
            );
        }
    }
    drop(draining);
    info!("worker stopped");
}
