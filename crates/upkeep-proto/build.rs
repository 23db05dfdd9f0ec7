//! Compiles `proto/MarketDataFeedV3.proto` with protox (pure Rust, no protoc) and
//! generates the Rust types with prost-build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("../../proto");
    let proto_file = proto_dir.join("MarketDataFeedV3.proto");
    println!("cargo:rerun-if-changed={}", proto_file.display());

    let fds = protox::compile(["MarketDataFeedV3.proto"], [&proto_dir])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
