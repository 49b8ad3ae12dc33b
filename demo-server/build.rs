//! Generates the gRPC code and the file descriptor set (for server reflection) from
//! `proto/cloudmap/demo/v1/demo.proto`.
//!
//! tonic 0.14's code generation runs `protoc`. A `PROTOC` from the environment wins (e.g. Debian's
//! `protobuf-compiler`); otherwise the binary vendored by `protoc-bin-vendored`, so a fresh clone
//! builds with nothing but cargo.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/cloudmap/demo/v1/demo.proto";
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
        .file_descriptor_set_path(out_dir.join("demo_descriptor.bin"))
        .compile_with_config(config, &[proto], &["proto"])?;
    Ok(())
}
