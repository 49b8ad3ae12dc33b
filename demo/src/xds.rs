//! The demo fleet through the xDS control plane: the real `cloudmap-xds serve` against the demo's
//! moto, bootstraps written by the real `cloudmap-xds bootstrap`, and gRPC's own Python client
//! (grpcio, C-core) calling `xds:///demo-server.demo.local` as a process of its own.
//!
//! The client is the one the xDS server's end-to-end tests use
//! (`xds-server/tests/clients/grpcio_client.py`, grpcio pinned in `requirements/stack.txt`, which
//! `scripts/bootstrap stack` installs). With `--rpc describe` it calls the demo service's
//! `Describe`, whose answer names the task that served it, and prints per task the calls it served
//! and when it last answered; [`GrpcioSummary::tally`] turns that into the same [`Tally`] the Rust
//! client's calls fill.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::Error;
use crate::fleet::{NAMESPACE, REGION, SERVICE};
use crate::traffic::{Tally, TaskCalls};

/// How long the xDS server may take to say it listens, and a client to connect.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The target every xDS client of the demo names.
pub fn target() -> String {
    format!("xds:///{SERVICE}.{NAMESPACE}")
}

/// A running `cloudmap-xds serve`, killed when dropped.
#[derive(Debug)]
pub struct XdsServer {
    /// Where it serves ADS (loopback).
    pub addr: SocketAddr,
    /// Its log (stderr).
    pub log: PathBuf,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl XdsServer {
    /// Starts `binary serve` on a free loopback port against the AWS endpoint `aws_endpoint`
    /// (moto), polling Cloud Map every `poll_interval`, logging into `log_dir`.
    pub async fn start(
        binary: &Path,
        aws_endpoint: &str,
        poll_interval: Duration,
        log_dir: &Path,
    ) -> Result<Self, Error> {
        let log = log_dir.join("cloudmap-xds.log");
        let log_file = std::fs::File::create(&log)
            .map_err(Error::io(format!("creating {}", log.display())))?;
        let mut child = Command::new(binary)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs([
                ("AWS_ENDPOINT_URL", aws_endpoint.to_owned()),
                ("AWS_REGION", REGION.to_owned()),
                ("AWS_ACCESS_KEY_ID", "local-demo".to_owned()),
                ("AWS_SECRET_ACCESS_KEY", "local-demo".to_owned()),
                ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
                ("CLOUDMAP_XDS_LISTEN", "127.0.0.1:0".to_owned()),
                (
                    "CLOUDMAP_XDS_POLL_INTERVAL",
                    format!("{}s", poll_interval.as_secs().max(1)),
                ),
                ("RUST_LOG", "info".to_owned()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // Its own process group: a Ctrl-C reaches the run, which stops it (kill_on_drop).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::process(format!("starting {}", binary.display()), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::process("cloudmap-xds", "no stdout"))?;
        let mut stdout = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, stdout.next_line())
            .await
            .map_err(|_| Error::Timeout {
                what: "cloudmap-xds listening".into(),
                waited: START_TIMEOUT,
            })?
            .map_err(Error::io("reading cloudmap-xds's stdout"))?
            .unwrap_or_default();
        let addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| {
                Error::process(
                    "cloudmap-xds",
                    format!(
                        "printed {line:?} instead of its address (log: {})",
                        log.display()
                    ),
                )
            })?;
        Ok(Self {
            addr,
            log,
            child,
            stdout,
        })
    }

    /// SIGTERM (graceful shutdown), then the JSON summary it prints on the way out (streams,
    /// pushes, ACKs, NACKs).
    pub async fn stop(mut self) -> Result<serde_json::Value, Error> {
        signal(&self.child, "-TERM")?;
        let summary = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = self.stdout.next_line().await.ok().flatten() {
                if let Some(json) = line.strip_prefix("summary ") {
                    return serde_json::from_str(json).ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            Error::process(
                "cloudmap-xds",
                format!(
                    "printed no summary on SIGTERM (log: {})",
                    self.log.display()
                ),
            )
        })?;
        let _ = tokio::time::timeout(START_TIMEOUT, self.child.wait()).await;
        Ok(summary)
    }
}

fn signal(child: &Child, signal: &str) -> Result<(), Error> {
    let pid = child
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

/// Writes the gRPC bootstrap of a client in `zone` (a zone name or AZ ID) with the real
/// `cloudmap-xds bootstrap` command, to `path`.
pub async fn bootstrap(
    binary: &Path,
    server: SocketAddr,
    node_id: &str,
    zone: &str,
    path: &Path,
) -> Result<(), Error> {
    let output = Command::new(binary)
        .args(["bootstrap", "--server", &server.to_string()])
        .args(["--node-id", node_id, "--zone", zone, "--region", REGION])
        .arg("--output")
        .arg(path)
        .env_clear()
        .env("RUST_LOG", "error")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::process("cloudmap-xds bootstrap", e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::process(
            "cloudmap-xds bootstrap",
            format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ))
    }
}

/// What a grpcio client run is asked to do.
#[derive(Debug, Clone)]
pub struct GrpcioRun<'a> {
    /// Its gRPC bootstrap (`GRPC_XDS_BOOTSTRAP`).
    pub bootstrap: &'a Path,
    /// `xds:///…`, or any gRPC target (`ipv4:…` for the comparison's DNS-style baseline).
    pub target: &'a str,
    /// `Some(n)`: n calls; `None`: until [`GrpcioClient::finish`].
    pub calls: Option<u64>,
    /// Workers calling back to back.
    pub concurrency: u64,
    /// Each worker's pause between calls.
    pub pause: Duration,
    /// Calls that start this long after the channel is ready are not counted.
    pub warmup: Duration,
    /// The CPU to run the process on (`taskset`), or anywhere.
    pub cpu: Option<usize>,
    /// Make no calls: only be a connected caller in its zone.
    pub idle: bool,
    /// Request headers on every call.
    pub metadata: &'a [(&'a str, String)],
    /// The channel's load-balancing policy for a non-xDS target (`round_robin`); `None` for
    /// grpcio's default (`pick_first`, or what xDS says).
    pub lb_policy: Option<&'a str>,
    /// The calls' `:authority`, for an `ipv4:` list (grpcio would send the list itself, which
    /// HTTP/2 servers reject); `None` for the target's own.
    pub authority: Option<&'a str>,
    /// A name for its files (`grpcio-NAME.log`, ...).
    pub name: &'a str,
    /// Where its files go.
    pub work_dir: &'a Path,
}

/// A running grpcio client process, killed when dropped.
#[derive(Debug)]
pub struct GrpcioClient {
    child: Child,
    ready_file: PathBuf,
    stop_file: PathBuf,
    log: PathBuf,
}

impl GrpcioClient {
    /// Starts the client; it connects in the background (see [`GrpcioClient::ready`]).
    pub fn start(run: &GrpcioRun<'_>) -> Result<Self, Error> {
        let python = local_stack::python()?;
        let script =
            local_stack::workspace_root().join("xds-server/tests/clients/grpcio_client.py");
        let ready_file = run.work_dir.join(format!("grpcio-{}.ready", run.name));
        let stop_file = run.work_dir.join(format!("grpcio-{}.stop", run.name));
        let log = run.work_dir.join(format!("grpcio-{}.log", run.name));
        for stale in [&ready_file, &stop_file] {
            let _ = std::fs::remove_file(stale);
        }
        let log_file = std::fs::File::create(&log)
            .map_err(Error::io(format!("creating {}", log.display())))?;
        let mut command = match run.cpu {
            Some(cpu) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpu.to_string()).arg(python);
                command
            }
            None => Command::new(python),
        };
        command
            .arg(script)
            .args(["--target", run.target, "--rpc", "describe"])
            .args(["--concurrency", &run.concurrency.max(1).to_string()])
            .args(["--pause-ms", &run.pause.as_millis().to_string()])
            .args(["--warmup-ms", &run.warmup.as_millis().to_string()])
            .arg("--ready-file")
            .arg(&ready_file);
        match run.calls {
            Some(calls) => {
                command.args(["--calls", &calls.to_string()]);
            }
            None => {
                command.arg("--until-file").arg(&stop_file);
            }
        }
        if run.idle {
            command.arg("--idle");
        }
        if let Some(policy) = run.lb_policy {
            command.args(["--lb-policy", policy]);
        }
        if let Some(authority) = run.authority {
            command.args(["--authority", authority]);
        }
        for (key, value) in run.metadata {
            command.args(["--metadata", &format!("{key}={value}")]);
        }
        let child = command
            .env("GRPC_XDS_BOOTSTRAP", run.bootstrap)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::process("starting the grpcio client", e))?;
        Ok(Self {
            child,
            ready_file,
            stop_file,
            log,
        })
    }

    /// Waits until the client's channel is ready (it resolved the target through the xDS server
    /// and connected to a task). An exit before that is an error naming its log.
    pub async fn ready(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        while !self.ready_file.exists() {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(Error::io("waiting for the grpcio client"))?
            {
                return Err(Error::process(
                    "the grpcio client",
                    format!(
                        "ended with {status} before it was ready (log: {})",
                        self.log.display()
                    ),
                ));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::Timeout {
                    what: format!("the grpcio client ready (log: {})", self.log.display()),
                    waited: START_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Tells an open-ended client to stop (a run with a call count ends by itself), waits for it
    /// and reads its summary.
    pub async fn finish(mut self) -> Result<GrpcioSummary, Error> {
        std::fs::write(&self.stop_file, b"")
            .map_err(Error::io(format!("creating {}", self.stop_file.display())))?;
        let mut stdout = self
            .child
            .stdout
            .take()
            .ok_or_else(|| Error::process("the grpcio client", "no stdout"))?;
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text)
            .await
            .map_err(Error::io("reading the grpcio client's output"))?;
        let status = self
            .child
            .wait()
            .await
            .map_err(Error::io("waiting for the grpcio client"))?;
        let line = text.lines().last().unwrap_or_default();
        if !status.success() {
            return Err(Error::process(
                "the grpcio client",
                format!("ended with {status} (log: {})", self.log.display()),
            ));
        }
        serde_json::from_str(line).map_err(|e| {
            Error::process(
                "the grpcio client",
                format!("printed {line:?}, not its summary: {e}"),
            )
        })
    }
}

/// What a grpcio client printed at the end.
#[derive(Debug, Clone, Deserialize)]
pub struct GrpcioSummary {
    /// grpcio's version.
    #[serde(default)]
    pub grpcio: String,
    /// Seconds the counted calls ran (after the warm-up).
    #[serde(default)]
    pub measured_s: f64,
    /// Calls answered OK.
    pub ok: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Failed calls by status code name.
    pub codes: BTreeMap<String, u64>,
    /// `CODE: details` of the first failed call.
    pub first_error: Option<String>,
    /// Per task ID: the calls it answered.
    #[serde(default)]
    pub tasks: BTreeMap<String, GrpcioTask>,
    /// The successful calls' latency percentiles, in microseconds.
    #[serde(default)]
    pub latency_us: BTreeMap<String, Option<u64>>,
}

/// One task's calls, as the grpcio client counted them.
#[derive(Debug, Clone, Deserialize)]
pub struct GrpcioTask {
    /// The zone the task reported.
    pub zone: String,
    /// Calls it answered.
    pub calls: u64,
    /// When it last answered, in Unix milliseconds.
    pub last_unix_ms: u64,
}

impl GrpcioSummary {
    /// The same tally the Rust client's calls make. A task's last answer is placed on this
    /// process's clock by its wall-clock time (both processes read the same clock).
    pub fn tally(&self) -> Tally {
        let (now, wall_now) = (Instant::now(), SystemTime::now());
        let tasks = self
            .tasks
            .iter()
            .map(|(id, task)| {
                let at = UNIX_EPOCH + Duration::from_millis(task.last_unix_ms);
                let last_served = match wall_now.duration_since(at) {
                    Ok(ago) => now.checked_sub(ago),
                    Err(ahead) => now.checked_add(ahead.duration()),
                };
                let calls = TaskCalls {
                    zone: task.zone.clone(),
                    calls: task.calls,
                    last_served,
                };
                (id.clone(), calls)
            })
            .collect();
        Tally {
            tasks,
            failures: self.codes.clone(),
            first_failure: self.first_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpcio_summary_becomes_the_rust_clients_tally() {
        let line = r#"{"measured_s": 1.5, "grpcio": "1.85.1", "ok": 5, "failed": 1,
            "codes": {"UNAVAILABLE": 1}, "first_error": "UNAVAILABLE: gone",
            "serving": {"SERVING": 5},
            "tasks": {"a": {"zone": "z1", "calls": 3, "last_unix_ms": 1000},
                      "b": {"zone": "z2", "calls": 2, "last_unix_ms": 1250}},
            "latency_us": {"p50": 700, "p90": 900, "p99": null}}"#;
        let summary: GrpcioSummary = serde_json::from_str(line).unwrap();
        assert_eq!(summary.latency_us["p99"], None);
        let tally = summary.tally();
        assert_eq!(tally.succeeded(), 5);
        assert_eq!(tally.failed_calls(), 1);
        assert_eq!(tally.first_failure.as_deref(), Some("UNAVAILABLE: gone"));
        assert_eq!(tally.per_zone()["z1"], 3);
        // Wall-clock times keep their order and distance on this process's clock.
        let (a, b) = (
            tally.tasks["a"].last_served.unwrap(),
            tally.tasks["b"].last_served.unwrap(),
        );
        assert_eq!(b.duration_since(a), Duration::from_millis(250));
    }

    #[test]
    fn a_health_summary_has_no_tasks() {
        let line = r#"{"ok": 2, "failed": 0, "codes": {}, "first_error": null,
            "serving": {"SERVING": 2}}"#;
        let summary: GrpcioSummary = serde_json::from_str(line).unwrap();
        assert!(summary.tally().tasks.is_empty());
    }
}
