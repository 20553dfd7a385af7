//! Generated gRPC code for Gauntlet's public API (`gauntlet.v1`) and its
//! internal service and queue messages (`gauntlet.internal.v1`).

#![allow(clippy::all, clippy::pedantic)]

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

/// Converts a UTC time to a protobuf timestamp.
pub fn timestamp(secs: i64, nanos: u32) -> Timestamp {
    Timestamp {
        seconds: secs,
        nanos: nanos as i32,
    }
}
