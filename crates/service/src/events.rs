//! Run progress events on the topic exchange. They are hints for watchers
//! and caches; the store holds the truth, so a failed publish is logged, not
//! raised.

use gauntlet_bus::{Bus, Message};
use gauntlet_proto::internal::v1::RunEvent;
use gauntlet_store::RunRecord;
use prost::Message as _;
use tracing::warn;

use crate::convert;

/// Publishes a run's progress as `run.<id>.progress`, or `run.<id>.finished`
/// once it has ended.
pub async fn publish_progress(bus: &dyn Bus, run: &RunRecord) {
    let progress = convert::progress(run);
    let finished = convert::is_terminal(&progress);
    let key = convert::event_key(&progress.run_id, finished);
    let message = Message {
        payload: RunEvent {
            progress: Some(progress),
        }
        .encode_to_vec(),
        headers: gauntlet_telemetry::propagation::inject_current(),
    };
    if let Err(error) = bus.publish_event(&key, message).await {
        warn!(%error, run_id = %run.id, "publishing progress event failed");
    }
}
