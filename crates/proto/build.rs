//! Compiles `proto/` with protox (pure Rust), so building needs no system `protoc`.

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "gauntlet/v1/runs.proto",
        "gauntlet/v1/analytics.proto",
        "gauntlet/v1/reports.proto",
        "gauntlet/v1/monitor.proto",
        "gauntlet/v1/admin.proto",
        "gauntlet/v1/access.proto",
        "gauntlet/internal/v1/queue.proto",
        "gauntlet/internal/v1/control.proto",
        "gauntlet/internal/v1/records.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // compile_fds does not write the descriptor set itself; reflection needs it.
    std::fs::write(out.join("gauntlet_descriptor.bin"), fds.encode_to_vec())?;
    // Decode failures are the sender's fault: see `src/codec.rs`.
    tonic_prost_build::configure()
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
