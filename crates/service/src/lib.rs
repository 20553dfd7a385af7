//! What every Gauntlet gRPC service shares: the server (trace layer, health,
//! reflection, the internal Control API), the mapping from our errors to gRPC
//! status codes, connecting to dependencies with retries, and the process
//! start-up and shutdown of a service binary.

pub mod convert;
pub mod errors;
pub mod events;
pub mod gate;
pub mod limits;
pub mod metrics;
pub mod records;
pub mod server;
pub mod startup;
pub mod tests;
pub mod tls;

/// The project of embedded mode and of a gateway without API keys, and
/// the operators' project: its admins create the others.
pub const DEFAULT_PROJECT: &str = "default";

/// The metadata key naming the project a call between services is made
/// for (the gateway's caller's; the report's run's). Only the gateway
/// takes calls from outside, and it never forwards a client's metadata.
pub const PROJECT_HEADER: &str = "gauntlet-project";

/// A request to another service made for `project`.
pub fn for_project<T>(message: T, project: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = project.parse() {
        request.metadata_mut().insert(PROJECT_HEADER, value);
    }
    request
}

/// The project a call between services is made for: its
/// [`PROJECT_HEADER`], or the default project.
pub fn project_of<T>(request: &tonic::Request<T>) -> String {
    request
        .metadata()
        .get(PROJECT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_PROJECT)
        .to_owned()
}

/// A run's task batches whose first task is below this are sent and
/// processed in the run's trace; later ones each get a trace of their own
/// that links to it, so no run's trace grows past a few thousand spans.
pub const TRACE_PARENTED_TASKS: u64 = 10_000;

pub use errors::{existing_run, internal, invalid, not_found, parse_id, run_in};
pub use limits::MessageLimits;
pub use server::{Control, GrpcServer, Listeners};
pub use startup::{ServiceBinary, connect_bus, connect_store, shutdown_on_signal, while_starting};
