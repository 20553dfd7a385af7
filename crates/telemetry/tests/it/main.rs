//! Integration tests of gauntlet-telemetry: a real tonic server behind
//! `TraceLayer`, and `init` as services call it.

mod grpc_server;
mod init;
mod otlp_export;
