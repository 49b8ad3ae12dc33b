//! What the end-to-end tests run: counting tonic backends on 127.0.0.1:0, and the real
//! `cloudmap-xds serve` process over moto.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};

/// A backend: the standard health service, counting its `Check` calls, its `Watch` reporting
/// whatever status the test sets.
#[derive(Clone)]
struct Counting {
    pub calls: Arc<AtomicU64>,
    status: tokio::sync::watch::Sender<health_check_response::ServingStatus>,
    /// Answer every `Check` with INTERNAL (a task that is up but fails every call).
    failing: bool,
}

#[tonic::async_trait]
impl Health for Counting {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.failing {
            return Err(Status::internal("this task fails every call"));
        }
        Ok(Response::new(HealthCheckResponse {
            status: health_check_response::ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>,
    >;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = tokio_stream::wrappers::WatchStream::new(self.status.subscribe());
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            statuses,
            |status| {
                Ok(HealthCheckResponse {
                    status: status as i32,
                })
            },
        ))))
    }
}

/// A backend task.
pub struct Backend {
    pub id: &'static str,
    pub zone: &'static str,
    pub weight: u32,
    pub addr: SocketAddr,
    pub calls: Arc<AtomicU64>,
    pub status: tokio::sync::watch::Sender<health_check_response::ServingStatus>,
}

impl Backend {
    /// A backend answering every call.
    pub async fn start(id: &'static str, zone: &'static str, weight: u32) -> Self {
        Self::start_with(id, zone, weight, false).await
    }

    /// The calls it counted.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// A backend, failing every `Check` with INTERNAL when `failing`.
    pub async fn start_with(
        id: &'static str,
        zone: &'static str,
        weight: u32,
        failing: bool,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Counting {
            calls: Arc::default(),
            status: tokio::sync::watch::Sender::new(health_check_response::ServingStatus::Serving),
            failing,
        };
        let calls = Arc::clone(&service.calls);
        let status = service.status.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(HealthServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Backend {
            id,
            zone,
            weight,
            addr,
            calls,
            status,
        }
    }
}

/// The `cloudmap-xds serve` process, killed when dropped.
pub struct XdsProcess {
    child: Child,
    pub addr: SocketAddr,
    stdout: std::sync::mpsc::Receiver<String>,
    /// Its log lines, when started with [`XdsProcess::start_logged`].
    log: Option<std::sync::mpsc::Receiver<String>>,
}

impl XdsProcess {
    /// Serves moto's Cloud Map, polling every second, on a port of its choosing.
    pub fn start(moto: &str) -> Self {
        Self::spawn(moto, "127.0.0.1:0", false, &[])
    }

    /// The same, on `listen`.
    pub fn start_on(moto: &str, listen: &str) -> Self {
        Self::spawn(moto, listen, false, &[])
    }

    /// The same, with more settings (`CLOUDMAP_XDS_*`).
    pub fn start_with(moto: &str, listen: &str, settings: &[(&str, String)]) -> Self {
        Self::spawn(moto, listen, false, settings)
    }

    /// On `listen`, with its debug log (pushes, streams opened) readable by the test.
    pub fn start_logged(moto: &str, listen: &str) -> Self {
        Self::spawn(moto, listen, true, &[])
    }

    fn spawn(moto: &str, listen: &str, logged: bool, settings: &[(&str, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloudmap-xds"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(aws_env(moto))
            .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CLOUDMAP_XDS_LISTEN", listen)
            .env("CLOUDMAP_XDS_POLL_INTERVAL", "1s")
            .env(
                "RUST_LOG",
                if logged {
                    "warn,cloudmap_xds=debug"
                } else {
                    "warn"
                },
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(if logged {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .unwrap();
        let log = child.stderr.take().map(|stderr| {
            let (tx, log) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            log
        });
        let (tx, stdout) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = stdout
            .recv_timeout(Duration::from_secs(60))
            .expect("the server starts");
        let addr = first
            .strip_prefix("listening ")
            .expect("the listening line")
            .parse()
            .unwrap();
        Self {
            child,
            addr,
            stdout,
            log,
        }
    }

    /// Reads its log until a line has every one of `parts`; returns the lines read up to it.
    pub fn log_until(&self, parts: &[&str]) -> Vec<String> {
        let log = self.log.as_ref().expect("started with start_logged");
        let mut lines = Vec::new();
        loop {
            let line = log
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no log line with {parts:?}; read: {lines:#?}"));
            let found = parts.iter().all(|part| line.contains(part));
            lines.push(line);
            if found {
                return lines;
            }
        }
    }

    /// SIGKILL: gone at once, streams cut, no summary.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the summary line it prints on the way out.
    pub fn stop(mut self) -> serde_json::Value {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let summary = loop {
            let line = self
                .stdout
                .recv_timeout(Duration::from_secs(30))
                .expect("a summary");
            if let Some(json) = line.strip_prefix("summary ") {
                break serde_json::from_str(json).unwrap();
            }
        };
        let _ = self.child.wait();
        summary
    }
}

impl Drop for XdsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The environment that points the AWS SDK at moto.
pub fn aws_env(moto: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto.to_owned()),
        ("AWS_REGION", local_stack::REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "local-stack".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "local-stack".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
}
