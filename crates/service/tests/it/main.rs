//! The shared gRPC scaffolding, served on a loopback port and checked with
//! clients that know nothing of our protos.

mod reflection;
mod startup;
