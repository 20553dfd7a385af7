//! WatchRun: progress from the event bus, coalesced to at most one message
//! per 100 ms, ending with the final status. Events are hints; the store is
//! read at the start and every couple of seconds so a lost event cannot
//! leave a watcher hanging.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt};
use gauntlet_proto::{internal::v1::RunEvent, v1};
use gauntlet_service::{convert, internal, run_in};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::debug;
use uuid::Uuid;

use crate::Deps;

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const POLL_EVERY: Duration = Duration::from_secs(2);

type ProgressStream = Pin<Box<dyn Stream<Item = Result<v1::RunProgress, Status>> + Send>>;

/// Streams `run_id`'s progress if it is `project`'s run; `slot` (the
/// caller's stream slot) is held until the stream ends.
pub async fn watch(
    deps: Deps,
    run_id: Uuid,
    project: &str,
    slot: Option<crate::access::StreamGuard>,
    shutdown: CancellationToken,
) -> Result<ProgressStream, Status> {
    // Subscribe before reading the current state, so no event between the
    // two is missed.
    let mut events = deps
        .bus
        .subscribe(&format!("run.{run_id}.*"))
        .await
        .map_err(|e| internal("subscribe", e))?;
    let first = run_in(deps.store.as_ref(), run_id, project).await?;

    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let _slot = slot;
        let mut latest = convert::progress(&first);
        if tx.send(Ok(latest.clone())).await.is_err() || convert::is_terminal(&latest) {
            return;
        }
        let mut pending: Option<v1::RunProgress> = None;
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.reset();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("server shutting down"))).await;
                    return;
                }
                _ = tx.closed() => return,
                event = events.next() => {
                    let Some(event) = event else {
                        // The bus went away: keep polling the store.
                        events = Box::pin(futures::stream::pending());
                        continue;
                    };
                    if let Ok(RunEvent { progress: Some(p) }) = RunEvent::decode(event.payload.as_slice())
                        && (p.completed_tasks >= latest.completed_tasks || convert::is_terminal(&p))
                    {
                        pending = Some(p);
                    }
                }
                _ = poll.tick() => {
                    if let Ok(Some(run)) = deps.store.get_run(run_id).await {
                        let p = convert::progress(&run);
                        if p.completed_tasks > latest.completed_tasks || p.status != latest.status {
                            pending = Some(p);
                        }
                    }
                }
                _ = flush.tick() => {
                    let Some(p) = pending.take() else { continue };
                    latest = p;
                    let done = convert::is_terminal(&latest);
                    if tx.send(Ok(latest.clone())).await.is_err() || done {
                        debug!(run_id = %run_id, "watch ended");
                        return;
                    }
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
