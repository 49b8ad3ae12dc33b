//! End to end, with real parts only: moto as Cloud Map, real tonic backends on 127.0.0.1:0,
//! the real `cloudmap-xds` binary (its `bootstrap` and `serve` commands), and gRPC's own xDS
//! clients (grpcio from PyPI, `@grpc/grpc-js-xds` from npm) as separate processes calling
//! `xds:///echo.NAMESPACE`. Every case runs in this one test, on one server, so the set-up is
//! paid once.
//!
//! The shares are asserted on what the backends counted, not on what the server says it sent.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};

use support::Client;

/// A backend: the standard health service, counting its `Check` calls, its `Watch` reporting
/// whatever status the test sets.
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

struct Backend {
    id: &'static str,
    zone: &'static str,
    weight: u32,
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    status: tokio::sync::watch::Sender<health_check_response::ServingStatus>,
}

async fn backend(id: &'static str, zone: &'static str, weight: u32) -> Backend {
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
    Backend {
        id,
        zone,
        weight,
        addr,
        calls,
        status,
    }
}

/// The `cloudmap-xds serve` process, killed when dropped.
struct XdsProcess {
    child: Child,
    addr: SocketAddr,
    stdout: std::sync::mpsc::Receiver<String>,
}

impl XdsProcess {
    fn start(moto: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloudmap-xds"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(aws_env(moto))
            .env("CLOUDMAP_XDS_LISTEN", "127.0.0.1:0")
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
    fn stop(mut self) -> serde_json::Value {
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

fn aws_env(moto: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto.to_owned()),
        ("AWS_REGION", local_stack::REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "local-stack".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "local-stack".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
}

/// Writes a bootstrap with the real binary's `bootstrap` command.
fn bootstrap(dir: &Path, server: SocketAddr, zone: Option<&str>) -> PathBuf {
    let path = dir.join(format!("bootstrap-{}.json", zone.unwrap_or("none")));
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloudmap-xds"));
    command
        .args([
            "bootstrap",
            "--server",
            &server.to_string(),
            "--node-id",
            "test-client",
        ])
        .arg("--output")
        .arg(&path)
        .env_clear()
        .env("RUST_LOG", "error")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    if let Some(zone) = zone {
        command.args(["--zone", zone]);
    }
    let status = command.status().unwrap();
    assert!(status.success(), "bootstrap: {status}");
    path
}

/// A third-party xDS client.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Grpcio,
    Node,
}

/// Runs a client process for `calls` calls and returns what it printed (JSON).
fn run_client(kind: Kind, bootstrap: &Path, target: &str, calls: u32) -> serde_json::Value {
    let root = local_stack::workspace_root();
    let clients = root.join("xds-server/tests/clients");
    let mut command = match kind {
        Kind::Grpcio => {
            let mut command = Command::new(local_stack::python().unwrap());
            command.arg(clients.join("grpcio_client.py"));
            command
        }
        Kind::Node => {
            let status = Command::new(root.join("scripts/bootstrap"))
                .arg("node")
                .status()
                .unwrap();
            assert!(status.success(), "scripts/bootstrap node: {status}");
            let mut command = Command::new("node");
            command.arg(clients.join("node/client.js"));
            command.env("NODE_PATH", root.join(".local/node/node_modules"));
            command
        }
    };
    let output = command
        .args([
            "--target",
            target,
            "--calls",
            &calls.to_string(),
            "--concurrency",
            "4",
        ])
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{kind:?} client: {}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| panic!("{kind:?} printed {stdout:?}"))
}

/// Whether the assignment in `response` serves `task` as DRAINING.
fn draining(
    response: &envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
    task: &str,
) -> bool {
    response.resources.iter().any(|any| {
        let assignment: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
            cloudmap_xds::server::decode(any).unwrap();
        assignment.endpoints.iter().any(|l| {
            l.locality.as_ref().is_some_and(|l| l.sub_zone == task)
                && l.lb_endpoints.iter().all(|e| e.health_status == 3)
        })
    })
}

/// Each backend's share of the calls since the last reset, and the total.
fn shares(backends: &[Backend]) -> (HashMap<&'static str, f64>, u64) {
    let counts: Vec<u64> = backends
        .iter()
        .map(|b| b.calls.swap(0, Ordering::Relaxed))
        .collect();
    let total: u64 = counts.iter().sum();
    #[allow(clippy::cast_precision_loss)]
    let shares = backends
        .iter()
        .zip(&counts)
        .map(|(b, &c)| (b.id, c as f64 / total.max(1) as f64))
        .collect();
    (shares, total)
}

#[track_caller]
fn assert_within(kind: Kind, what: &str, actual: f64, expected: f64, points: f64) {
    assert!(
        (actual - expected).abs() * 100.0 <= points,
        "{kind:?}, {what}: {:.1} %, expected {:.1} % (within {points} points)",
        actual * 100.0,
        expected * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_xds_clients_follow_the_servers_picks() {
    let moto = local_stack::MotoServer::shared();
    let cloudmap = moto.servicediscovery();
    let namespace =
        local_stack::cloudmap::create_http_namespace(&cloudmap, &local_stack::unique_name("xds"))
            .await
            .unwrap();
    let service = local_stack::cloudmap::create_service(&cloudmap, &namespace, "echo", false)
        .await
        .unwrap();
    let backends = vec![
        backend("t1", "eu-central-1a", 100).await,
        backend("t2", "eu-central-1a", 200).await,
        backend("t3", "eu-central-1b", 300).await,
    ];
    for b in &backends {
        let attributes = HashMap::from([
            ("AWS_INSTANCE_IPV4".to_owned(), b.addr.ip().to_string()),
            ("AWS_INSTANCE_PORT".to_owned(), b.addr.port().to_string()),
            ("AVAILABILITY_ZONE".to_owned(), b.zone.to_owned()),
            ("LB_STATE".to_owned(), "RUNNING".to_owned()),
            ("LB_WEIGHT".to_owned(), b.weight.to_string()),
        ]);
        cloudmap
            .register_instance()
            .service_id(&service.id)
            .instance_id(b.id)
            .set_attributes(Some(attributes))
            .send()
            .await
            .unwrap();
    }
    let server = XdsProcess::start(moto.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let target = format!("xds:///echo.{}", namespace.name);
    let resource = format!("echo.{}", namespace.name);

    for kind in [Kind::Grpcio, Kind::Node] {
        // A client without a zone: by capacity, 1 : 2 : 3.
        let summary = run_client(
            kind,
            &bootstrap(dir.path(), server.addr, None),
            &target,
            2400,
        );
        assert_eq!(summary["failed"], 0, "{kind:?}: {summary}");
        let (share, total) = shares(&backends);
        assert_eq!(total, 2400);
        assert_within(kind, "t1, no zone", share["t1"], 1.0 / 6.0, 3.0);
        assert_within(kind, "t2, no zone", share["t2"], 2.0 / 6.0, 3.0);
        assert_within(kind, "t3, no zone", share["t3"], 3.0 / 6.0, 3.0);

        // A client in eu-central-1a, with another caller connected in eu-central-1b (our own
        // ADS stream): zone a's half of the capacity covers its half of the callers, so every
        // call stays in zone a, split 1 : 2.
        let mut anchor = Client::connect(server.addr, "anchor", "eu-central-1b").await;
        anchor
            .get(cloudmap_xds::server::ENDPOINTS, &[resource.as_str()])
            .await;
        let summary = run_client(
            kind,
            &bootstrap(dir.path(), server.addr, Some("eu-central-1a")),
            &target,
            2400,
        );
        assert_eq!(summary["failed"], 0, "{kind:?}: {summary}");
        let (share, _) = shares(&backends);
        assert!(
            share["t3"] <= 0.01,
            "{kind:?}: {:.1} % left zone a",
            share["t3"] * 100.0
        );
        assert_within(kind, "t1, zone a", share["t1"], 1.0 / 3.0, 3.0);
        assert_within(kind, "t2, zone a", share["t2"], 2.0 / 3.0, 3.0);
        drop(anchor);
    }

    // A task's own health turns NOT_SERVING (what a server does on SIGTERM): the server's
    // health watch sees it and pushes DRAINING to every connected client, before Cloud Map
    // says anything. A client then sends it nothing.
    let mut watcher = Client::connect(server.addr, "watcher", "").await;
    let first = watcher
        .get(cloudmap_xds::server::ENDPOINTS, &[resource.as_str()])
        .await;
    backends[0]
        .status
        .send_replace(health_check_response::ServingStatus::NotServing);
    let mut last = first;
    while !draining(&last, "t1") {
        let pushed = watcher.next().await;
        watcher
            .send(
                cloudmap_xds::server::ENDPOINTS,
                &[resource.as_str()],
                &pushed.version_info,
                &pushed.nonce,
                None,
            )
            .await;
        last = pushed;
    }
    for kind in [Kind::Grpcio, Kind::Node] {
        let summary = run_client(
            kind,
            &bootstrap(dir.path(), server.addr, None),
            &target,
            600,
        );
        assert_eq!(summary["failed"], 0, "{kind:?}: {summary}");
        let (share, total) = shares(&backends);
        assert_eq!(total, 600);
        assert!(
            share["t1"] == 0.0,
            "{kind:?}: the not-serving task took {:.1} %",
            share["t1"] * 100.0
        );
    }
    backends[0]
        .status
        .send_replace(health_check_response::ServingStatus::Serving);
    drop(watcher);

    // Cloud Map goes down while the server runs. Every client above has gone, but the server
    // keeps the service (lingering) with its last-known-good listing: a new client is served
    // at once, and its calls go through.
    moto.stop();
    let summary = run_client(
        Kind::Grpcio,
        &bootstrap(dir.path(), server.addr, None),
        &target,
        300,
    );
    assert_eq!(
        summary["ok"], 300,
        "served from the last-known-good listing: {summary}"
    );
    let (share, total) = shares(&backends);
    assert_eq!(total, 300);
    assert!(
        share["t1"] > 0.0 && share["t2"] > 0.0 && share["t3"] > 0.0,
        "{share:?}"
    );

    let summary = server.stop();
    assert_eq!(
        summary["nacks"], 0,
        "no client rejected anything: {summary}"
    );
    assert!(summary["acks"].as_u64().unwrap() >= 6, "{summary}");
}
