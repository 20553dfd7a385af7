//! Generated gRPC code for Gauntlet's public API (`gauntlet.v1`) and its
//! internal service and queue messages (`gauntlet.internal.v1`).

#![allow(clippy::all, clippy::pedantic)]

pub mod codec;

pub mod v1 {
    tonic::include_proto!("gauntlet.v1");
}

pub mod internal {
    pub mod v1 {
        tonic::include_proto!("gauntlet.internal.v1");
    }
}

/// File descriptor set of every Gauntlet proto, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("gauntlet_descriptor");

pub use prost_types::Timestamp;

impl v1::RunStatus {
    /// The lower-case name reports, the CLI and JSON output use.
    pub fn label(self) -> &'static str {
        match self {
            v1::RunStatus::Queued => "queued",
            v1::RunStatus::Running => "running",
            v1::RunStatus::Completed => "completed",
            v1::RunStatus::Cancelled => "cancelled",
            v1::RunStatus::Failed => "failed",
            v1::RunStatus::CostLimited => "cost_limited",
            v1::RunStatus::Unspecified => "unknown",
        }
    }

    /// Whether a run with this status has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            v1::RunStatus::Completed
                | v1::RunStatus::Cancelled
                | v1::RunStatus::Failed
                | v1::RunStatus::CostLimited
        )
    }

    /// [`label`](Self::label) of a wire value; `unknown` for one this
    /// build does not know.
    pub fn label_of(value: i32) -> &'static str {
        v1::RunStatus::try_from(value).map_or("unknown", v1::RunStatus::label)
    }

    /// [`is_terminal`](Self::is_terminal) of a wire value.
    pub fn is_terminal_value(value: i32) -> bool {
        v1::RunStatus::try_from(value).is_ok_and(v1::RunStatus::is_terminal)
    }
}

/// Converts a UTC time to a protobuf timestamp.
pub fn timestamp(secs: i64, nanos: u32) -> Timestamp {
    Timestamp {
        seconds: secs,
        nanos: nanos as i32,
    }
}
