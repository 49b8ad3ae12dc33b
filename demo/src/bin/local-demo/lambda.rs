//! The real sync Lambda under cargo-lambda's emulator: `cargo lambda watch` runs the function
//! binary behind a local Lambda runtime API, `cargo lambda invoke --data-file` sends it events.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::error::DemoError;

/// The function's binary name (the sync-lambda package's binary).
const FUNCTION: &str = "cloudmap-sync";
/// How long the emulator may take to come up (it checks the build first).
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one invocation may take, the function's first start included.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// `cargo lambda watch`, running in its own process group.
#[derive(Debug)]
pub(crate) struct Emulator {
    child: Child,
    port: u16,
    cargo_lambda: PathBuf,
    path: String,
    events: PathBuf,
    sent: u32,
}

impl Emulator {
    /// Starts the emulator for the sync Lambda with `env` as the function's environment, and
    /// waits until it accepts invocations. `release` builds and runs the release binary.
    pub(crate) async fn start(
        env: &[(&str, String)],
        release: bool,
        work_dir: &Path,
    ) -> Result<Self, DemoError> {
        let cargo_lambda = local_stack::venv_bin("cargo-lambda")?;
        // cargo-lambda finds zig (and itself) through PATH: the virtualenv comes first.
        let venv_bin = cargo_lambda
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = format!(
            "{}:{}",
            venv_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let port = free_port()?;
        let log = work_dir.join("cargo-lambda-watch.log");
        let log_file = std::fs::File::create(&log)
            .map_err(DemoError::io(format!("creating {}", log.display())))?;

        let mut command = Command::new(&cargo_lambda);
        command
            .args(["lambda", "watch", "--ignore-changes", "--quiet"])
            .args(["-A", "127.0.0.1", "-P", &port.to_string()])
            .args(release.then_some("--release"))
            .current_dir(local_stack::workspace_root().join("sync-lambda"))
            .env("PATH", &path)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(DemoError::io("cloning a log file"))?,
            )
            .stderr(log_file)
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| DemoError::Process {
            what: format!("starting {}", cargo_lambda.display()),
            detail: e.to_string(),
        })?;
        let mut emulator = Self {
            child,
            port,
            cargo_lambda,
            path,
            events: work_dir.to_path_buf(),
            sent: 0,
        };
        emulator.wait_until_listening(&log).await?;
        Ok(emulator)
    }

    async fn wait_until_listening(&mut self, log: &Path) -> Result<(), DemoError> {
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(DemoError::io("polling cargo lambda watch"))?
            {
                return Err(DemoError::Process {
                    what: "cargo lambda watch".into(),
                    detail: format!("exited with {status} (log: {})", log.display()),
                });
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(DemoError::Timeout {
                    what: "cargo lambda watch listening".into(),
                    waited: START_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `event` with `cargo lambda invoke --data-file` and returns the function's answer.
    /// A function error (the Lambda asking to be retried) is an error here.
    pub(crate) async fn invoke(&mut self, label: &str, event: &Value) -> Result<Value, DemoError> {
        self.sent += 1;
        let file = self.events.join(format!("event-{:03}.json", self.sent));
        std::fs::write(&file, serde_json::to_vec_pretty(event).unwrap_or_default())
            .map_err(DemoError::io(format!("writing {}", file.display())))?;
        let output = tokio::time::timeout(
            INVOKE_TIMEOUT,
            Command::new(&self.cargo_lambda)
                .args([
                    "lambda",
                    "invoke",
                    FUNCTION,
                    "-A",
                    "127.0.0.1",
                    "-P",
                    &self.port.to_string(),
                ])
                .arg("--data-file")
                .arg(&file)
                .env("PATH", &self.path)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| DemoError::Timeout {
            what: format!("the Lambda answering {label}"),
            waited: INVOKE_TIMEOUT,
        })?
        .map_err(DemoError::io("running cargo lambda invoke"))?;
        if !output.status.success() {
            let detail = String::from_utf8_lossy(&output.stderr).trim().to_owned()
                + &String::from_utf8_lossy(&output.stdout);
            return Err(DemoError::Lambda {
                event: label.to_owned(),
                detail,
            });
        }
        Ok(serde_json::from_slice(&output.stdout).unwrap_or(Value::Null))
    }

    /// Stops the emulator and the function process (its whole process group).
    pub(crate) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // The function runs as a child of the emulator: end the whole group.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

fn free_port() -> Result<u16, DemoError> {
    // The emulator binds the port itself; this only finds one that is free now.
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(DemoError::io("finding a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(DemoError::io("finding a free port"))
}
