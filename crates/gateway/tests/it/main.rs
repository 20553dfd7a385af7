//! The gateway's own tests, over the embedded backends (SQLite in memory,
//! `MemoryBus`): the reconciler pass by pass with a stand-in worker, and the
//! admin and run APIs over gRPC. The same paths against Postgres and RabbitMQ are in
//! `cli/tests/it/stuck.rs`.

mod admin;
mod dispatch;
mod fixture;
mod reconcile;
mod reports;
mod runs;
