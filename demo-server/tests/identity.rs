//! Identity from the ECS task metadata endpoint v4, served by a real HTTP server on 127.0.0.1:0
//! with documents shaped like AWS's Fargate examples.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{Process, demo};
use demo_server::{Error, Identity, IdentityOverrides, pb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TASK_ARN: &str =
    "arn:aws:ecs:eu-central-1:123456789012:task/demo-cluster/8f03e41243824aea923aca126495f665";

/// `${ECS_CONTAINER_METADATA_URI_V4}/task` of a Fargate task (values changed, fields trimmed).
fn task_document() -> String {
    format!(
        r#"{{
    "Cluster": "arn:aws:ecs:eu-central-1:123456789012:cluster/demo-cluster",
    "TaskARN": "{TASK_ARN}",
    "Family": "demo-server",
    "Revision": "12",
    "DesiredStatus": "RUNNING",
    "KnownStatus": "RUNNING",
    "Limits": {{ "CPU": 0.5, "Memory": 1024 }},
    "PullStartedAt": "2026-03-02T10:11:12.123456789Z",
    "PullStoppedAt": "2026-03-02T10:11:20.987654321Z",
    "AvailabilityZone": "eu-central-1c",
    "LaunchType": "FARGATE",
    "ServiceName": "demo-server",
    "Containers": [
        {{
            "DockerId": "8f03e41243824aea923aca126495f665-2495160603",
            "Name": "demo-server",
            "DockerName": "demo-server",
            "Image": "123456789012.dkr.ecr.eu-central-1.amazonaws.com/demo-server:latest",
            "Labels": {{
                "com.amazonaws.ecs.cluster": "arn:aws:ecs:eu-central-1:123456789012:cluster/demo-cluster",
                "com.amazonaws.ecs.container-name": "demo-server",
                "com.amazonaws.ecs.task-arn": "{TASK_ARN}",
                "com.amazonaws.ecs.task-definition-family": "demo-server",
                "com.amazonaws.ecs.task-definition-version": "12"
            }},
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Limits": {{ "CPU": 2, "Memory": 0 }},
            "Type": "NORMAL",
            "Networks": [{{ "NetworkMode": "awsvpc", "IPv4Addresses": ["10.42.33.7"] }}]
        }}
    ],
    "ClockDrift": {{
        "ClockErrorBound": 0.446931,
        "ReferenceTimestamp": "2026-03-02T10:12:00Z",
        "ClockSynchronizationStatus": "SYNCHRONIZED"
    }},
    "EphemeralStorageMetrics": {{ "Utilized": 261, "Reserved": 20496 }}
}}"#
    )
}

/// `${ECS_CONTAINER_METADATA_URI_V4}`: this container.
fn container_document() -> String {
    format!(
        r#"{{
    "DockerId": "8f03e41243824aea923aca126495f665-2495160603",
    "Name": "demo-server",
    "DockerName": "demo-server",
    "Image": "123456789012.dkr.ecr.eu-central-1.amazonaws.com/demo-server:latest",
    "Labels": {{ "com.amazonaws.ecs.task-arn": "{TASK_ARN}" }},
    "DesiredStatus": "RUNNING",
    "KnownStatus": "RUNNING",
    "Limits": {{ "CPU": 2, "Memory": 0 }},
    "Type": "NORMAL",
    "ContainerARN": "arn:aws:ecs:eu-central-1:123456789012:container/demo-cluster/8f03e41243824aea923aca126495f665/a2d1e9c4-7a41-4c36-9d57-3e1f0f6b1d2a",
    "Networks": [
        {{
            "NetworkMode": "awsvpc",
            "IPv4Addresses": ["10.42.33.7"],
            "AttachmentIndex": 0,
            "MACAddress": "06:d7:3f:49:1d:a7",
            "IPv4SubnetCIDRBlock": "10.42.32.0/20",
            "DomainNameServers": ["10.42.0.2"],
            "PrivateDNSName": "ip-10-42-33-7.eu-central-1.compute.internal",
            "SubnetGatewayIpv4Address": "10.42.32.1/20"
        }}
    ]
}}"#
    )
}

fn expected() -> Identity {
    Identity {
        zone: "eu-central-1c".into(),
        task_arn: TASK_ARN.into(),
        task_id: "8f03e41243824aea923aca126495f665".into(),
        cluster: "demo-cluster".into(),
        family: "demo-server".into(),
        revision: "12".into(),
        host: "10.42.33.7".into(),
    }
}

/// How the fake agent answers one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// 200 with `Content-Length`.
    Ok,
    /// 200 with `Transfer-Encoding: chunked` (what Go's net/http, the agent's server, sends for
    /// large documents).
    Chunked,
    /// This status, empty body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
}

/// A minimal HTTP/1.1 server playing the ECS agent: serves `/v4/test-container/task` and
/// `/v4/test-container`, answering from `script` in order (then [`Answer::Ok`]), and records the
/// paths requested.
struct FakeAgent {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeAgent {
    async fn start(script: &[Answer]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let log = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let log = Arc::clone(&log);
                let script = Arc::clone(&script);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap() == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8(head).unwrap();
                    let path = head.split_whitespace().nth(1).unwrap().to_owned();
                    log.lock().unwrap().push(path.clone());
                    let answer = script.lock().unwrap().pop_front().unwrap_or(Answer::Ok);
                    let body = match path.as_str() {
                        "/v4/test-container/task" => task_document(),
                        "/v4/test-container" => container_document(),
                        _ => return respond(&mut socket, 404, "", false).await,
                    };
                    match answer {
                        Answer::Ok => respond(&mut socket, 200, &body, false).await,
                        Answer::Chunked => respond(&mut socket, 200, &body, true).await,
                        Answer::Status(status) => respond(&mut socket, status, "", false).await,
                        Answer::Garbage => respond(&mut socket, 200, "<html>", false).await,
                    }
                });
            }
        });
        Self { addr, requests }
    }

    fn uri(&self) -> String {
        format!("http://{}/v4/test-container", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn respond(socket: &mut tokio::net::TcpStream, status: u16, body: &str, chunked: bool) {
    let mut response =
        format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n");
    if chunked {
        response.push_str("Transfer-Encoding: chunked\r\n\r\n");
        for chunk in body.as_bytes().chunks(100) {
            response.push_str(&format!(
                "{:x}\r\n{}\r\n",
                chunk.len(),
                std::str::from_utf8(chunk).unwrap()
            ));
        }
        response.push_str("0\r\n\r\n");
    } else {
        response.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    }
    socket.write_all(response.as_bytes()).await.unwrap();
    socket.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_identity_comes_from_the_task_and_container_documents() {
    let agent = FakeAgent::start(&[]).await;
    let identity = Identity::resolve(Some(&agent.uri()), &IdentityOverrides::default())
        .await
        .unwrap();
    assert_eq!(identity, expected());
    assert_eq!(
        agent.requests(),
        ["/v4/test-container/task", "/v4/test-container"]
    );
}

#[tokio::test]
async fn chunked_documents_are_read_whole() {
    let agent = FakeAgent::start(&[Answer::Chunked, Answer::Chunked]).await;
    let identity = Identity::resolve(Some(&agent.uri()), &IdentityOverrides::default())
        .await
        .unwrap();
    assert_eq!(identity, expected());
}

#[tokio::test]
async fn overrides_win_over_the_metadata() {
    let agent = FakeAgent::start(&[]).await;
    let identity = Identity::resolve(
        Some(&agent.uri()),
        &IdentityOverrides {
            zone: Some("eu-central-1a".into()),
            host: Some("127.0.0.1".into()),
            ..IdentityOverrides::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        identity,
        Identity {
            zone: "eu-central-1a".into(),
            host: "127.0.0.1".into(),
            ..expected()
        }
    );
}

#[tokio::test]
async fn a_server_error_is_retried() {
    let agent = FakeAgent::start(&[Answer::Status(500), Answer::Status(503)]).await;
    let identity = Identity::resolve(Some(&agent.uri()), &IdentityOverrides::default())
        .await
        .unwrap();
    assert_eq!(identity, expected());
    assert_eq!(
        agent.requests(),
        [
            "/v4/test-container/task",
            "/v4/test-container/task",
            "/v4/test-container/task",
            "/v4/test-container"
        ]
    );
}

#[tokio::test]
async fn errors_say_what_failed_and_client_errors_are_not_retried() {
    let agent = FakeAgent::start(&[Answer::Status(404)]).await;
    let error = Identity::resolve(Some(&agent.uri()), &IdentityOverrides::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::MetadataStatus { status: 404, url } if url.ends_with("/task")),
        "{error}"
    );
    assert_eq!(agent.requests().len(), 1);

    let agent = FakeAgent::start(&[Answer::Ok, Answer::Garbage]).await;
    let error = Identity::resolve(Some(&agent.uri()), &IdentityOverrides::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::MetadataJson { url, .. } if url.ends_with("/v4/test-container")),
        "{error}"
    );

    let error = Identity::resolve(
        Some("https://169.254.170.2/v4/x"),
        &IdentityOverrides::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, Error::MetadataUri { .. }), "{error}");
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_after_retries() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let error = Identity::resolve(
        Some(&format!("http://{closed}/v4/gone")),
        &IdentityOverrides::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, Error::MetadataRequest { .. }), "{error}");
}

#[tokio::test]
async fn the_binary_reports_the_metadata_identity_with_its_overrides() {
    let agent = FakeAgent::start(&[]).await;
    let uri = agent.uri();
    let process = Process::spawn(&[
        ("ECS_CONTAINER_METADATA_URI_V4", uri.as_str()),
        ("DEMO_ZONE", "eu-central-1b"),
    ])
    .await;
    let task = demo(process.addr)
        .await
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        task,
        pb::Task {
            zone: "eu-central-1b".into(),
            task_arn: TASK_ARN.into(),
            task_id: "8f03e41243824aea923aca126495f665".into(),
            cluster: "demo-cluster".into(),
            family: "demo-server".into(),
            revision: "12".into(),
            host: "10.42.33.7".into(),
            port: process.addr.port().into(),
        }
    );
}

#[tokio::test]
async fn the_binary_refuses_to_start_with_an_unreadable_metadata_endpoint() {
    let agent = FakeAgent::start(&[Answer::Garbage]).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_demo-server"))
        .env("ECS_CONTAINER_METADATA_URI_V4", agent.uri())
        .env("DEMO_BIND", "127.0.0.1")
        .env("DEMO_PORT", "0")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("not valid JSON"), "{log}");
    assert!(output.stdout.is_empty(), "it never announced an address");
}
