//! The store against real databases: each test its own Postgres database or
//! SQLite file.

mod conformance;
mod postgres;
mod sqlite;
