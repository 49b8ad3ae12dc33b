//! The local AWS stack: moto's server on loopback, and AWS SDK clients pointed at it.
//!
//! Tests, benchmarks and the local run use it the same way:
//!
//! ```no_run
//! # async fn demo() -> Result<(), local_stack::Error> {
//! let moto = local_stack::MotoServer::shared();
//! let cloudmap = moto.servicediscovery();
//! let namespace = local_stack::cloudmap::create_http_namespace(&cloudmap, &local_stack::unique_name("ns")).await?;
//! # Ok(()) }
//! ```
//!
//! What it takes care of, once for every user:
//!
//! - **Installing moto.** The pinned Python tools live in a project-local virtualenv made by
//!   `scripts/bootstrap`; [`MotoServer::start`] runs it when the virtualenv is missing.
//! - **Lifetime.** The server is a child process on a free loopback port. It is stopped when the
//!   [`MotoServer`] is dropped, and it also exits when this process dies (it serves until its
//!   standard input closes), so no test run leaves a server behind.
//! - **Isolation.** [`MotoServer::shared`] gives one server per test binary; tests running in
//!   parallel in it use [`unique_name`]s and never reset the shared server.
//! - **The `data-` host prefix** of Cloud Map's discovery operations: the Cloud Map client comes
//!   from [`cloudmap_balancer::aws::servicediscovery_client`], which removes it for endpoint
//!   overrides.
//! - **moto's ECS quirks** (container `cpu`/`memory` as numbers in older moto; tasks advancing a
//!   lifecycle step on every `DescribeTasks`): fixed in `moto_launcher.py` before the server
//!   starts.
//! - **An ECS service with Cloud Map service discovery**, set up and driven as ECS does it
//!   (RunTask, registration with ECS's attributes, stop, deregistration):
//!   [`ecs_service::EcsService`].
//! - **cargo-lambda's emulator** for the real Lambda binary: [`lambda::Emulator`].

pub mod cloudmap;
mod ec2;
pub mod ecs;
pub mod ecs_service;
mod error;
pub mod fault;
mod http;
pub mod lambda;
mod server;

pub use ec2::Subnet;
pub use error::Error;
pub use server::{MotoServer, REGION, sdk_config_for};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique to this process and call, e.g. `ns-4242-7`: tests sharing one server never
/// collide.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A loopback port that is free now, for a server that binds it itself.
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
}

/// The workspace root (where `scripts/` and `.local/` are).
pub fn workspace_root() -> &'static Path {
    // This crate lives at `<root>/local-stack`.
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The Python interpreter of the project's stack virtualenv, installing it first when missing.
///
/// `LOCAL_STACK_PYTHON` overrides it (an interpreter that can `import moto`).
pub fn python() -> Result<PathBuf, Error> {
    if let Some(python) = std::env::var_os("LOCAL_STACK_PYTHON") {
        return Ok(PathBuf::from(python));
    }
    venv_bin("python")
}

/// A program from the project's stack virtualenv (e.g. `cargo-lambda`), installing it first when
/// missing.
pub fn venv_bin(program: &str) -> Result<PathBuf, Error> {
    let root = workspace_root();
    let path = root.join(".local/venv-stack/bin").join(program);
    // Always run bootstrap: it returns at once when the pinned set is installed, and reinstalls
    // when requirements/stack.txt changed.
    let status = std::process::Command::new(root.join("scripts/bootstrap"))
        .arg("stack")
        .status()
        .map_err(|source| Error::Bootstrap {
            detail: source.to_string(),
        })?;
    if !status.success() {
        return Err(Error::Bootstrap {
            detail: format!("scripts/bootstrap exited with {status}"),
        });
    }
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Bootstrap {
            detail: format!("{} is missing after bootstrap", path.display()),
        })
    }
}
