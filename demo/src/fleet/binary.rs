//! Finding the workspace's other binaries (demo-server, cloudmap-xds) beside the running one.

use std::path::{Path, PathBuf};

/// The demo-server binary beside the running one (same build profile), built first with cargo
/// if it is missing, so `cargo run -p demo --bin NAME` works on its own. `on_build` is told
/// before a build starts (it takes a while).
pub fn demo_server_binary(on_build: impl FnOnce(&str)) -> Result<PathBuf, String> {
    workspace_binary("demo-server", "demo-server", on_build)
}

/// The xDS control plane's binary (`cloudmap-xds`), found or built like
/// [`demo_server_binary`].
pub fn xds_server_binary(on_build: impl FnOnce(&str)) -> Result<PathBuf, String> {
    workspace_binary("cloudmap-xds", "cloudmap-xds", on_build)
}

fn workspace_binary(
    package: &str,
    bin: &str,
    on_build: impl FnOnce(&str),
) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("finding the program's own path: {e}"))?;
    let dir = me.parent().unwrap_or(Path::new("."));
    // Test binaries live one level down, in `deps/`.
    let dir = if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let binary = dir.join(bin);
    if binary.is_file() {
        return Ok(binary);
    }
    let release = dir.file_name().is_some_and(|name| name == "release");
    on_build(&format!(
        "building {bin} ({} profile)",
        if release { "release" } else { "dev" }
    ));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .args(release.then_some("--release"))
        .current_dir(local_stack::workspace_root())
        .status()
        .map_err(|e| format!("running cargo build -p {package}: {e}"))?;
    if status.success() && binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "cargo build -p {package} did not produce {}",
            binary.display()
        ))
    }
}
