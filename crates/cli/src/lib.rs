//! The `gauntlet` command's library: running suites (embedded or against a
//! server), following runs, and composing the services in one process.

pub mod access;
pub mod client;
pub mod commands;
pub mod compare;
pub mod dlq;
pub mod embedded;
pub mod health;
pub mod insights;
pub mod output;
pub mod regressions;
pub mod run;
pub mod suite_file;
mod suite_text;
pub mod target;
pub mod trends;
