//! Generates the gRPC interop client (`grpc.testing`, tests/proto) for `tests/interop.rs`, and the
//! file descriptor set its Python grpcio server builds its messages from.
//!
//! tonic 0.14's code generation runs `protoc`: a `PROTOC` from the environment wins, else the
//! binary vendored by `protoc-bin-vendored` (as in demo-server/build.rs).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc/testing/test.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-env-changed=PROTOC");

    let mut config = tonic_prost_build::Config::new();
    let protoc = match std::env::var_os("PROTOC") {
        Some(protoc) => PathBuf::from(protoc),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    config.protoc_executable(protoc);

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    tonic_prost_build::configure()
        .build_server(false)
        .file_descriptor_set_path(out_dir.join("interop_descriptor.bin"))
        .compile_with_config(config, &[proto], &["proto"])?;
    Ok(())
}
