//! Gauntlet's benchmarks and fault suite, shared by the `gauntlet-bench`
//! binary and the crate's own tests:
//!
//! - [`e2e`]: N cases through the real binaries, throughput and memory;
//! - [`load`]: the read API at a fixed arrival rate, many runs at once, a
//!   spike of submissions and a long soak;
//! - [`render`]: every report format's time and peak memory, 1k to 1M
//!   results;
//! - [`fault`]: one run under one fault at a time, judged by what a user
//!   would check afterwards;
//! - [`instances`]: private Postgres, RabbitMQ and Redis instances for the
//!   faults that stop or kill them; [`stack`] and [`procs`]: the services
//!   as processes.

pub mod analytics;
pub mod e2e;
pub mod fault;
pub mod instances;
pub mod load;
pub mod otlp_sink;
pub mod procs;
pub mod render;
pub mod stack;
pub mod suite;
pub mod table;
pub mod verify;
