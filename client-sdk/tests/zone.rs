//! Own-zone detection against a real HTTP server on 127.0.0.1:0 that serves task metadata the
//! way the ECS agent does (`GET ${ECS_CONTAINER_METADATA_URI_V4}/task`).

#![cfg(feature = "tonic")]
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloudmap_balancer::discovery::StaticSource;
use cloudmap_balancer::zone::{self, OwnZone};
use cloudmap_balancer::{Balancer, Error};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Shaped like AWS's documented task metadata v4 response for a Fargate task.
const TASK_METADATA: &str = r#"{
  "Cluster": "arn:aws:ecs:eu-central-1:111122223333:cluster/prod",
  "TaskARN": "arn:aws:ecs:eu-central-1:111122223333:task/prod/8f03e41243824aea923aca126495f665",
  "Family": "echo",
  "Revision": "24",
  "DesiredStatus": "RUNNING",
  "KnownStatus": "RUNNING",
  "Limits": { "CPU": 0.25, "Memory": 512 },
  "PullStartedAt": "2026-10-02T00:15:07.620912337Z",
  "PullStoppedAt": "2026-10-02T00:15:08.062559351Z",
  "AvailabilityZone": "eu-central-1b",
  "LaunchType": "FARGATE",
  "Containers": [
    {
      "DockerId": "8f03e41243824aea923aca126495f665-1234567890",
      "Name": "echo",
      "DockerName": "echo",
      "Image": "111122223333.dkr.ecr.eu-central-1.amazonaws.com/echo:latest",
      "ImageID": "sha256:d691691e9652791a60114e67b365688d20d19940dde7c4736ea30e660d8d3553",
      "Labels": {
        "com.amazonaws.ecs.cluster": "arn:aws:ecs:eu-central-1:111122223333:cluster/prod",
        "com.amazonaws.ecs.container-name": "echo",
        "com.amazonaws.ecs.task-arn": "arn:aws:ecs:eu-central-1:111122223333:task/prod/8f03e41243824aea923aca126495f665",
        "com.amazonaws.ecs.task-definition-family": "echo",
        "com.amazonaws.ecs.task-definition-version": "24"
      },
      "DesiredStatus": "RUNNING",
      "KnownStatus": "RUNNING",
      "Limits": { "CPU": 2 },
      "CreatedAt": "2026-10-02T00:15:08.062559351Z",
      "StartedAt": "2026-10-02T00:15:08.062559351Z",
      "Type": "NORMAL",
      "Networks": [
        {
          "NetworkMode": "awsvpc",
          "IPv4Addresses": ["10.0.2.106"],
          "AttachmentIndex": 0,
          "MACAddress": "0a:de:f6:10:51:e5",
          "IPv4SubnetCIDRBlock": "10.0.2.0/24",
          "PrivateDNSName": "ip-10-0-2-106.eu-central-1.compute.internal",
          "SubnetGatewayIpv4Address": "10.0.2.1/24"
        }
      ],
      "ContainerARN": "arn:aws:ecs:eu-central-1:111122223333:container/prod/8f03e41243824aea923aca126495f665/0b4d5bc1",
      "LogOptions": { "awslogs-group": "/ecs/echo", "awslogs-region": "eu-central-1" },
      "LogDriver": "awslogs"
    }
  ],
  "ClockDrift": {
    "ClockErrorBound": 0.2962,
    "ReferenceTimestamp": "2026-10-02T00:14:59Z",
    "ClockSynchronizationStatus": "SYNCHRONIZED"
  },
  "EphemeralStorageMetrics": { "Utilized": 261, "Reserved": 20496 }
}"#;

/// Serves `body` with `status` on `/v4/abc/task` (after `failures` 500s), 404 elsewhere.
async fn metadata_server(
    status: u16,
    body: &'static str,
    failures: usize,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let n = seen.fetch_add(1, Ordering::SeqCst);
                        let response = if request.uri().path() != "/v4/abc/task" {
                            http::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                        } else if n < failures {
                            http::Response::builder()
                                .status(500)
                                .body(Full::new(Bytes::from_static(b"agent starting")))
                        } else {
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(body.as_bytes())))
                        };
                        async move { Ok::<_, Infallible>(response.unwrap()) }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, requests)
}

const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn reads_the_zone_from_task_metadata() {
    let (addr, _) = metadata_server(200, TASK_METADATA, 0).await;
    let zone = zone::from_task_metadata(&format!("http://{addr}/v4/abc"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(zone.as_deref(), Some("eu-central-1b"));
    // A trailing slash in the variable is fine.
    let zone = zone::from_task_metadata(&format!("http://{addr}/v4/abc/"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(zone.as_deref(), Some("eu-central-1b"));
}

#[tokio::test]
async fn retries_while_the_agent_answers_errors() {
    let (addr, requests) = metadata_server(200, TASK_METADATA, 2).await;
    let zone = zone::from_task_metadata(&format!("http://{addr}/v4/abc"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(zone.as_deref(), Some("eu-central-1b"));
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn odd_answers_are_clear_errors_or_no_zone() {
    let (addr, _) = metadata_server(200, r#"{"Cluster": "prod"}"#, 0).await;
    let zone = zone::from_task_metadata(&format!("http://{addr}/v4/abc"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        zone, None,
        "no AvailabilityZone field (old platform): no zone"
    );

    let (addr, _) = metadata_server(200, "<html>", 0).await;
    let error = zone::from_task_metadata(&format!("http://{addr}/v4/abc"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::ZoneDetection {
                reason: "the response is not JSON",
                ..
            }
        ),
        "{error}"
    );

    let (addr, _) = metadata_server(200, TASK_METADATA, 10).await;
    let error = zone::from_task_metadata(&format!("http://{addr}/v4/abc"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&addr.to_string()), "{error}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap();
    drop(closed);
    assert!(
        zone::from_task_metadata(&format!("http://{nobody}/v4/abc"), TIMEOUT)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_balancer_uses_the_detected_zone() {
    let (addr, _) = metadata_server(200, TASK_METADATA, 0).await;
    let balancer = Balancer::builder_with_source(StaticSource::new(Vec::new()), "test", "svc")
        .zone(OwnZone::TaskMetadata(format!("http://{addr}/v4/abc")))
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    assert_eq!(balancer.local_zone().as_deref(), Some("eu-central-1b"));

    // A failing endpoint leaves the zone unknown; the balancer still works.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap();
    drop(closed);
    let balancer = Balancer::builder_with_source(StaticSource::new(Vec::new()), "test", "svc")
        .zone(OwnZone::TaskMetadata(format!("http://{nobody}/v4/abc")))
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    assert_eq!(balancer.local_zone(), None);
}

// ---------------------------------------------------------------------------------------------
// EC2 instance metadata (IMDSv2), and zones matched by AZ ID across accounts.

/// How the IMDS stand-in behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Imds {
    /// As EC2 does: a token on PUT, then the placement paths with it.
    Answers,
    /// Accepts connections and never answers.
    Hangs,
}

/// An IMDSv2 stand-in on 127.0.0.1:0: the zone is served only with the token it handed out.
async fn imds_server(mode: Imds) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            if mode == Imds::Hangs {
                // Keep the socket open, say nothing.
                tokio::spawn(async move {
                    let _stream = stream;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                });
                continue;
            }
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let token = request
                            .headers()
                            .get("x-aws-ec2-metadata-token")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let ttl = request
                            .headers()
                            .contains_key("x-aws-ec2-metadata-token-ttl-seconds");
                        let (status, body) = match (request.method().as_str(), request.uri().path())
                        {
                            ("PUT", "/latest/api/token") if ttl => (200, "AQAEAFt0k3n"),
                            (_, _) if token.as_deref() != Some("AQAEAFt0k3n") => (401, ""),
                            ("GET", "/latest/meta-data/placement/availability-zone") => {
                                (200, "eu-central-1a")
                            }
                            ("GET", "/latest/meta-data/placement/availability-zone-id") => {
                                (200, "euc1-az2")
                            }
                            _ => (404, ""),
                        };
                        let response = http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(body.as_bytes())));
                        async move { Ok::<_, Infallible>(response.unwrap()) }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn reads_the_zone_and_its_id_from_imdsv2() {
    let addr = imds_server(Imds::Answers).await;
    let found = zone::from_imds(&format!("http://{addr}"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(found.name.as_deref(), Some("eu-central-1a"));
    assert_eq!(found.id.as_deref(), Some("euc1-az2"));

    let balancer = Balancer::builder_with_source(StaticSource::new(Vec::new()), "test", "svc")
        .zone(OwnZone::Imds(format!("http://{addr}")))
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    assert_eq!(balancer.local_zone().as_deref(), Some("eu-central-1a"));
    assert_eq!(balancer.local_zone_id().as_deref(), Some("euc1-az2"));
    let stats = balancer.stats();
    assert_eq!(stats.local_zone_id.as_deref(), Some("euc1-az2"));
}

#[tokio::test]
async fn a_hanging_or_absent_imds_leaves_the_zone_unknown_after_the_timeout() {
    let hangs = imds_server(Imds::Hangs).await;
    let error = zone::from_imds(&format!("http://{hangs}"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::ZoneDetection {
                reason: "timed out",
                ..
            }
        ),
        "{error}"
    );

    let mut options = cloudmap_balancer::Options::default();
    options.imds_timeout = Duration::from_millis(200);
    let balancer = Balancer::builder_with_source(StaticSource::new(Vec::new()), "test", "svc")
        .zone(OwnZone::Imds(format!("http://{hangs}")))
        .options(options)
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    assert_eq!(balancer.local_zone(), None);
    assert_eq!(balancer.local_zone_id(), None);

    // A fixed ID still applies when detection finds nothing.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap();
    drop(closed);
    let balancer = Balancer::builder_with_source(StaticSource::new(Vec::new()), "test", "svc")
        .zone(OwnZone::Imds(format!("http://{nobody}")))
        .local_zone_id("euc1-az3")
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    assert_eq!(balancer.local_zone_id().as_deref(), Some("euc1-az3"));
}
