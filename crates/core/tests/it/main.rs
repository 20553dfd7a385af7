//! Integration tests for gauntlet-core.

mod compat;
mod golden;
mod normalized;
mod suite_format;
