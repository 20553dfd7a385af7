//! Integration tests for gauntlet-core.

mod compat;
mod golden;
mod suite_format;
