//! What the demo-server tests share: in-process servers, the real binary as a child process, and
//! clients.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use demo_server::pb::control_client::ControlClient;
use demo_server::pb::demo_client::DemoClient;
use demo_server::{DemoServer, Identity, ServeOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tonic::transport::{Channel, Endpoint};

/// A safety net for anything a test waits for; never an assertion about speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn identity(zone: &str, task_id: &str) -> Identity {
    Identity {
        zone: zone.into(),
        task_arn: format!("arn:aws:ecs:eu-central-1:123456789012:task/demo/{task_id}"),
        task_id: task_id.into(),
        cluster: "demo".into(),
        family: "demo-server".into(),
        revision: "3".into(),
        host: "127.0.0.1".into(),
    }
}

/// Options for tests: no drain delay or grace unless a test sets them.
pub fn quick() -> ServeOptions {
    ServeOptions {
        drain_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(30),
        ..ServeOptions::default()
    }
}

pub async fn start(identity: Identity, options: ServeOptions) -> DemoServer {
    DemoServer::bind("127.0.0.1:0".parse().unwrap(), identity, options)
        .await
        .unwrap()
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

pub async fn demo(addr: SocketAddr) -> DemoClient<Channel> {
    DemoClient::new(channel(addr).await)
}

pub async fn control(addr: SocketAddr) -> ControlClient<Channel> {
    ControlClient::new(channel(addr).await)
}

/// Waits until `condition` holds, polling; panics after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let polled = async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, polled)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"));
}

/// The real `demo-server` binary, started as ECS would start it (but on 127.0.0.1 and a free
/// port), with the environment given and nothing inherited that could change its behaviour.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    _stdout: BufReader<ChildStdout>,
    stderr: tempfile::NamedTempFile,
}

impl Process {
    pub async fn spawn(env: &[(&str, &str)]) -> Self {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_demo-server"));
        for (name, _) in std::env::vars() {
            if name.starts_with("DEMO_") || name == "ECS_CONTAINER_METADATA_URI_V4" {
                command.env_remove(name);
            }
        }
        command
            .env("DEMO_BIND", "127.0.0.1")
            .env("DEMO_PORT", "0")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr.reopen().unwrap()))
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());

        let mut line = String::new();
        let read = tokio::time::timeout(PATIENCE, stdout.read_line(&mut line)).await;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|addr| addr.parse().ok());
        let Some(addr) = addr else {
            panic!(
                "demo-server did not announce its address ({read:?}, {line:?}); its log:\n{}",
                read_log(stderr.path())
            );
        };
        Self {
            child,
            addr,
            _stdout: stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Sends SIGTERM, as ECS does to stop a task.
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn exit_code(&mut self) -> i32 {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("demo-server did not exit; its log:\n{}", self.logs()))
            .unwrap();
        status
            .code()
            .unwrap_or_else(|| panic!("demo-server ended by a signal: {status}"))
    }

    /// What the process logged so far.
    pub fn logs(&self) -> String {
        read_log(self.stderr.path())
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs `demo-server healthcheck` with `args` and returns its exit code and output.
pub async fn healthcheck(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_demo-server"))
        .arg("healthcheck")
        .args(args)
        .env_remove("DEMO_PORT")
        .env_remove("DEMO_BIND")
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
