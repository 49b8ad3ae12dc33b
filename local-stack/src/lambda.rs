//! cargo-lambda's Lambda emulator, for the end-to-end tests and the local run.
//!
//! `cargo lambda watch` serves the Lambda runtime API on a loopback port; `cargo lambda invoke
//! --data-file` sends it one event and prints the function's answer. Either the emulator runs the
//! function of a Cargo package itself ([`Function::Package`]), or it serves only the runtime API
//! and the caller starts a function binary against [`Emulator::runtime_api`]
//! ([`Function::External`]): then no build happens inside the emulator.
//!
//! The emulator runs in a process group of its own. Stopping or dropping the [`Emulator`] sends
//! it SIGTERM, on which it stops the function instances it started (they run in process groups
//! of their own), and SIGKILL only if it has not exited within 5 s.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::Error;

/// How long the emulator may take to listen (with [`Function::Package`] it checks the build
/// first).
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one invocation may take, the function's first start included.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// What runs behind the emulator's runtime API.
#[derive(Debug, Clone, Copy)]
pub enum Function<'a> {
    /// `cargo lambda watch` builds (if needed) and runs the function of the Cargo package in
    /// `package_dir`, with `env` as the function's environment.
    Package {
        /// The package's directory.
        package_dir: &'a Path,
        /// Build and run the release binary.
        release: bool,
        /// The function's environment.
        env: &'a [(&'a str, String)],
    },
    /// Only the runtime API (`--only-lambda-apis`); the caller starts the function binary with
    /// `AWS_LAMBDA_RUNTIME_API` set to [`Emulator::runtime_api`].
    External,
}

/// The outcome of one `cargo lambda invoke`.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The invocation succeeded (a function error or an emulator failure is `false`).
    pub ok: bool,
    /// What `cargo lambda invoke` printed: the function's answer when `ok`.
    pub stdout: String,
    /// Its diagnostics.
    pub stderr: String,
}

impl Invoked {
    /// The function's answer as JSON, when the invocation succeeded and printed JSON.
    pub fn answer(&self) -> Option<Value> {
        self.ok
            .then(|| serde_json::from_str(self.stdout.trim()).ok())
            .flatten()
    }
}

/// `cargo lambda watch` on a loopback port, in its own process group.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    port: u16,
    cargo_lambda: PathBuf,
    path: String,
    work_dir: PathBuf,
    sent: u32,
}

impl Emulator {
    /// Starts the emulator for `function` and waits until it listens. Its log and the event
    /// files sent go to `work_dir`, which must exist.
    pub async fn start(function: Function<'_>, work_dir: &Path) -> Result<Self, Error> {
        let cargo_lambda = crate::venv_bin("cargo-lambda")?;
        let path = path_with_venv(&cargo_lambda);
        let port = crate::free_port().map_err(emulator_error("finding a free port"))?;
        let log = work_dir.join("cargo-lambda-watch.log");
        let log_file = std::fs::File::create(&log).map_err(emulator_error("creating its log"))?;

        let mut command = Command::new(&cargo_lambda);
        command.args([
            "lambda",
            "watch",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ]);
        match function {
            Function::Package {
                package_dir,
                release,
                env,
            } => {
                command
                    .args(["--ignore-changes", "--quiet"])
                    .args(release.then_some("--release"))
                    .current_dir(package_dir)
                    .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            }
            Function::External => {
                command.arg("--only-lambda-apis");
            }
        }
        let child = command
            .env("PATH", &path)
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(emulator_error("opening its log"))?,
            )
            .stderr(log_file)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(emulator_error("starting cargo lambda watch"))?;
        let mut emulator = Self {
            child,
            port,
            cargo_lambda,
            path,
            work_dir: work_dir.to_path_buf(),
            sent: 0,
        };
        emulator.wait_until_listening(&log).await?;
        Ok(emulator)
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API` for a function binary started against this
    /// emulator ([`Function::External`]).
    pub fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}/.rt", self.port)
    }

    async fn wait_until_listening(&mut self, log: &Path) -> Result<(), Error> {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(emulator_error("polling cargo lambda watch"))?
            {
                return Err(Error::Emulator {
                    what: "cargo lambda watch".into(),
                    detail: format!("exited with {status} (log: {})", log.display()),
                });
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::Emulator {
                    what: "cargo lambda watch".into(),
                    detail: format!(
                        "not listening after {START_TIMEOUT:?} (log: {})",
                        log.display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Sends `event` to `function_name` with `cargo lambda invoke --data-file`. A function error
    /// is an [`Invoked`] that is not `ok`; only the emulator itself failing is an error.
    pub async fn invoke(&mut self, function_name: &str, event: &Value) -> Result<Invoked, Error> {
        self.sent += 1;
        let file = self.work_dir.join(format!("event-{:03}.json", self.sent));
        let json = serde_json::to_vec_pretty(event).map_err(|e| Error::Emulator {
            what: "writing an event".into(),
            detail: e.to_string(),
        })?;
        std::fs::write(&file, json).map_err(emulator_error("writing an event file"))?;
        let output = tokio::time::timeout(
            INVOKE_TIMEOUT,
            Command::new(&self.cargo_lambda)
                .args(["lambda", "invoke", function_name, "-A", "127.0.0.1", "-P"])
                .arg(self.port.to_string())
                .arg("--data-file")
                .arg(&file)
                .env("PATH", &self.path)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| Error::Emulator {
            what: format!("cargo lambda invoke --data-file {}", file.display()),
            detail: format!("no answer within {INVOKE_TIMEOUT:?}"),
        })?
        .map_err(emulator_error("running cargo lambda invoke"))?;
        Ok(Invoked {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Stops the emulator and its function (SIGTERM to the group, then SIGKILL after 5 s).
    pub async fn stop(mut self) {
        signal_group(&self.child, "-TERM");
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            signal_group(&self.child, "-KILL");
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // SIGTERM first: cargo-lambda then stops the function instances it started, which run in
        // process groups of their own (a SIGKILL would leave them behind). SIGKILL after 5 s.
        if self.child.id().is_none() {
            return;
        }
        signal_group(&self.child, "-TERM");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group(&self.child, "-KILL");
    }
}

/// Sends `signal` to the process group `child` leads; nothing when it has ended.
fn signal_group(child: &Child, signal: &str) {
    if let Some(pid) = child.id() {
        // Failure means the group is gone already: nothing is left to stop.
        let _ = std::process::Command::new("kill")
            .args([signal, "--", &format!("-{pid}")])
            .status();
    }
}

/// `PATH` with the stack virtualenv first: cargo-lambda finds zig (and itself) through it.
fn path_with_venv(cargo_lambda: &Path) -> String {
    let venv_bin = cargo_lambda.parent().unwrap_or(Path::new(""));
    format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn emulator_error(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Emulator {
        what: what.into(),
        detail: source.to_string(),
    }
}
