//! The one mapping from our failures to gRPC status codes. Clients see what
//! they did wrong (with the field path) or which dependency is down, never
//! SQL or other internal detail: that is logged with the trace.

use std::fmt::Display;

use gauntlet_bus::BusError;
use gauntlet_store::StoreError;
use tonic::Status;
use tracing::error;

/// Invalid input; `path` is the field path (`tests[3].assert[0].type`).
pub fn invalid(path: &str, message: impl Display) -> Status {
    if path.is_empty() {
        Status::invalid_argument(message.to_string())
    } else {
        Status::invalid_argument(format!("{path}: {message}"))
    }
}

pub fn not_found(what: &str, id: impl Display) -> Status {
    Status::not_found(format!("{what} {id} not found"))
}

/// The run `id`, or `NotFound` when there is none.
pub async fn existing_run(
    store: &dyn gauntlet_store::Store,
    id: uuid::Uuid,
) -> Result<gauntlet_store::RunRecord, Status> {
    let run = store
        .get_run(id)
        .await
        .map_err(|e| internal("get run", e))?
        .ok_or_else(|| not_found("run", id))?;
    crate::convert::link_to_run(&run);
    Ok(run)
}

/// The stored run `id` if it belongs to `project`: another project's run
/// is `NotFound`, exactly as one that does not exist, so ids do not leak.
pub async fn run_in(
    store: &dyn gauntlet_store::Store,
    id: uuid::Uuid,
    project: &str,
) -> Result<gauntlet_store::RunRecord, Status> {
    let run = store
        .get_run(id)
        .await
        .map_err(|e| internal("get run", e))?
        .filter(|run| run.project_id == project)
        .ok_or_else(|| not_found("run", id))?;
    crate::convert::link_to_run(&run);
    Ok(run)
}

/// Parses a UUID field of a request.
pub fn parse_id(field: &str, value: &str) -> Result<uuid::Uuid, Status> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    uuid::Uuid::parse_str(value).map_err(|_| invalid(field, format!("`{value}` is not a valid id")))
}

/// A failure of ours: logged in full, reported by kind.
pub fn internal(context: &str, err: impl Into<Internal>) -> Status {
    match err.into() {
        Internal::Store(e) if e.is_transient() => {
            error!(error = %e, context, "database unavailable");
            Status::unavailable("database unavailable, retry later")
        }
        Internal::Store(e) => {
            error!(error = %e, context, "database error");
            Status::internal("internal error")
        }
        Internal::Bus(e) => {
            error!(error = %e, context, "broker error");
            Status::unavailable("message broker unavailable, retry later")
        }
        Internal::Other(e) => {
            error!(error = %e, context, "internal error");
            Status::internal("internal error")
        }
        Internal::Upstream(s) => {
            // A status from another of our services passes through, but an
            // internal one keeps its detail to itself.
            if s.code() == tonic::Code::Internal || s.code() == tonic::Code::Unknown {
                error!(status = %s, context, "upstream service failed");
                Status::internal("internal error")
            } else if s.code() == tonic::Code::Unavailable {
                Status::unavailable(format!("{context}: {}", s.message()))
            } else {
                s
            }
        }
    }
}

/// Everything `internal` knows how to report.
pub enum Internal {
    Store(StoreError),
    Bus(BusError),
    Upstream(Status),
    Other(anyhow::Error),
}

impl From<StoreError> for Internal {
    fn from(e: StoreError) -> Self {
        Internal::Store(e)
    }
}

impl From<crate::tests::TestsError> for Internal {
    fn from(e: crate::tests::TestsError) -> Self {
        match e {
            crate::tests::TestsError::Store(e) => Internal::Store(e),
            e => Internal::Other(e.into()),
        }
    }
}

impl From<BusError> for Internal {
    fn from(e: BusError) -> Self {
        Internal::Bus(e)
    }
}

impl From<Status> for Internal {
    fn from(e: Status) -> Self {
        Internal::Upstream(e)
    }
}

impl From<anyhow::Error> for Internal {
    fn from(e: anyhow::Error) -> Self {
        Internal::Other(e)
    }
}
