//! The reports crate's integration tests.

mod golden;
mod schema;
