//! Integration tests for gauntlet-core.

mod compat;
mod golden;
mod normalized;
mod stream;
mod suite_format;
