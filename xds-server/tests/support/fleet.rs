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

/// The standard health service, counting its `Check` calls; its `Watch` reports whatever
/// status the test sets.
#[derive(Clone)]
struct Counting {
    calls: Arc<AtomicU64>,
    status: tokio::sync::watch::Sender<health_check_response::ServingStatus>,
}

#[tonic::async_trait]
impl Health for Counting {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
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
    pub async fn start(id: &'static str, zone: &'static str, weight: u32) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Counting {
            calls: Arc::default(),
            status: tokio::sync::watch::Sender::new(health_check_response::ServingStatus::Serving),
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
        Self {
            id,
            zone,
            weight,
            addr,
            calls,
            status,
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// The `cloudmap-xds serve` process, killed when dropped.
pub struct XdsProcess {
    child: Child,
    pub addr: SocketAddr,
    stdout: std::sync::mpsc::Receiver<String>,
}

impl XdsProcess {
    /// Serves moto's Cloud Map, polling every second, on a port of its choosing.
    pub fn start(moto: &str) -> Self {
        Self::start_on(moto, "127.0.0.1:0")
    }

    /// The same, on `listen`.
    pub fn start_on(moto: &str, listen: &str) -> Self {
        Self::start_with(moto, listen, &[])
    }

    /// The same, with more settings (`CLOUDMAP_XDS_*`).
    pub fn start_with(moto: &str, listen: &str, settings: &[(&str, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloudmap-xds"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(aws_env(moto))
            .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CLOUDMAP_XDS_LISTEN", listen)
            .env("CLOUDMAP_XDS_POLL_INTERVAL", "1s")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
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
        }
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

    /// SIGKILL: the process and its connections go at once.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
