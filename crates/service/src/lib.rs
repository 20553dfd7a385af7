//! What every Gauntlet gRPC service shares: the server (trace layer, health,
//! reflection, the internal Control API), the mapping from our errors to gRPC
//! status codes, connecting to dependencies with retries, and the process
//! start-up and shutdown of a service binary.

pub mod convert;
pub mod errors;
pub mod events;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod startup;
pub mod tests;
pub mod tls;

/// Project of every request until API keys arrive.
pub const DEFAULT_PROJECT: &str = "default";

/// A run's task batches whose first task is below this are sent and
/// processed in the run's trace; later ones each get a trace of their own
/// that links to it, so no run's trace grows past a few thousand spans.
pub const TRACE_PARENTED_TASKS: u64 = 10_000;

pub use errors::{existing_run, internal, invalid, not_found, parse_id};
pub use limits::MessageLimits;
pub use server::{Control, GrpcServer, Listeners};
pub use startup::{ServiceBinary, connect_bus, connect_store, shutdown_on_signal};
