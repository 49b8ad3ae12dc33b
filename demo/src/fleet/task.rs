//! A demo-server process playing one ECS task.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use local_stack::ecs_service::Task;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{CLUSTER, FAMILY};
use crate::Error;

/// How long a demo-server may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running demo-server process for a task.
#[derive(Debug)]
pub struct DemoTask {
    /// The task as ECS knows it.
    pub spec: Task,
    /// Where the process listens (loopback).
    pub addr: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
    child: Child,
}

impl DemoTask {
    /// Starts `binary` as the task's container, with the task's identity, on a free loopback
    /// port, plus `env` (drain timing, network emulation, ...); its log goes to `log_dir`. The
    /// process is killed when this is dropped.
    pub async fn start(
        binary: &Path,
        spec: Task,
        log_dir: &Path,
        env: &[(&str, String)],
    ) -> Result<Self, Error> {
        let log = log_dir.join(format!("demo-server-{}.log", spec.task_id));
        let log_file = std::fs::File::create(&log)
            .map_err(Error::io(format!("creating {}", log.display())))?;
        // The task's configuration is exactly what follows: a DEMO_* variable of the user's
        // shell (say DEMO_LATENCY_MS) must not skew the run.
        let inherited = std::env::vars_os()
            .map(|(name, _)| name)
            .filter(|name| name.to_string_lossy().starts_with("DEMO_"));
        let mut command = Command::new(binary);
        for name in inherited {
            command.env_remove(name);
        }
        let mut child = command
            .env_remove(demo_server::METADATA_URI_VARIABLE)
            .envs([
                ("DEMO_BIND", "127.0.0.1".to_owned()),
                ("DEMO_PORT", "0".to_owned()),
                ("DEMO_ZONE", spec.zone.clone()),
                ("DEMO_TASK_ARN", spec.task_arn.clone()),
                ("DEMO_CLUSTER", CLUSTER.to_owned()),
                ("DEMO_FAMILY", FAMILY.to_owned()),
                ("DEMO_REVISION", spec.revision.to_string()),
                ("DEMO_HOST", "127.0.0.1".to_owned()),
                ("RUST_LOG", "info".to_owned()),
            ])
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // Its own process group, so a Ctrl-C of the run reaches the run, not the task: the
            // task stops when the run does (kill_on_drop) or by the signal ECS would send.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::process(format!("starting {}", binary.display()), e))?;

        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::process("demo-server", "no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| Error::Timeout {
                what: "demo-server listening".into(),
                waited: START_TIMEOUT,
            })?
            .map_err(Error::io("reading demo-server's stdout"))?
            .unwrap_or_default();
        let addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| {
                Error::process(
                    "demo-server",
                    format!(
                        "printed {line:?} instead of its address (log: {})",
                        log.display()
                    ),
                )
            })?;
        Ok(Self {
            spec,
            addr,
            log,
            child,
        })
    }

    /// Sends SIGTERM, as ECS does to stop a task's container.
    pub fn sigterm(&self) -> Result<(), Error> {
        self.signal("-TERM")
    }

    /// Sends SIGKILL: the container dies at once, as on a crash or an out-of-memory kill.
    pub fn sigkill(&self) -> Result<(), Error> {
        self.signal("-KILL")
    }

    fn signal(&self, signal: &str) -> Result<(), Error> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| Error::process(format!("kill {signal}"), "the process already ended"))?;
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .map_err(Error::io("running kill"))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::process(format!("kill {signal}"), status))
        }
    }

    /// Waits for the process to exit and returns its exit code (`None`: ended by a signal).
    pub async fn wait(&mut self, timeout: Duration) -> Result<Option<i32>, Error> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| Error::Timeout {
                what: "demo-server exit".into(),
                waited: timeout,
            })?
            .map_err(Error::io("waiting for demo-server"))?;
        Ok(status.code())
    }
}
