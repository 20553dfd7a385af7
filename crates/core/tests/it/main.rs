//! Integration tests for gauntlet-core.

mod compat;
