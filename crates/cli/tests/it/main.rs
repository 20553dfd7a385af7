//! End-to-end: the services in-process against the real local Postgres,
//! RabbitMQ and Redis (a database, vhost and key prefix of their own per
//! test) with the project's mock model server as the vendor, and the
//! `gauntlet` binary as a user runs it.

mod access;
mod cache;
mod cli;
mod cluster;
mod compare;
mod deploy;
mod e2e;
mod front_door;
mod fuzz;
mod graded;
mod monitoring;
mod resilience;
mod stuck;
mod tls;
mod tracing;
mod upload;
