//! End to end, with real parts only: moto as Cloud Map, real tonic backends on 127.0.0.1:0,
//! the real `cloudmap-xds` binary (its `bootstrap` and `serve` commands), and gRPC's own xDS
//! clients (grpcio from PyPI, `@grpc/grpc-js-xds` from npm) as separate processes calling
//! `xds:///echo.NAMESPACE`. Every case runs in this one test, on one server (and, for the
//! server-killed case, a second one), so the set-up is paid once.
//!
//! The shares are asserted on what the backends counted, not on what the server says it sent.
//! Nothing waits a fixed time: where an outcome needs calls to flow (outlier ejection, a server
//! killed and restarted), the test waits for call counts or log lines, with hang guards only.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tonic_health::pb::health_check_response;

use support::Client;
use support::fleet::{Backend, XdsProcess};

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
    let child = client_command(kind, bootstrap, target, &["--calls", &calls.to_string()])
        .spawn()
        .unwrap();
    client_summary(kind, child)
}

/// A client process calling until `until` exists ([`stop_client`]).
fn start_client(kind: Kind, bootstrap: &Path, target: &str, until: &Path) -> Child {
    let until = until.to_str().unwrap();
    client_command(kind, bootstrap, target, &["--until-file", until])
        .spawn()
        .unwrap()
}

/// Creates `until`, so the client stops, and returns what it printed.
fn stop_client(kind: Kind, child: Child, until: &Path) -> serde_json::Value {
    std::fs::write(until, b"").unwrap();
    client_summary(kind, child)
}

fn client_summary(kind: Kind, child: Child) -> serde_json::Value {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{kind:?} client: {}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| panic!("{kind:?} printed {stdout:?}"))
}

fn client_command(kind: Kind, bootstrap: &Path, target: &str, mode: &[&str]) -> Command {
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
    command
        .args(["--target", target, "--concurrency", "4"])
        .args(mode)
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// Registers `b` in Cloud Map with `LB_STATE` = `state`.
async fn register(
    cloudmap: &aws_sdk_servicediscovery::Client,
    service_id: &str,
    b: &Backend,
    state: &str,
) {
    let attributes = HashMap::from([
        ("AWS_INSTANCE_IPV4".to_owned(), b.addr.ip().to_string()),
        ("AWS_INSTANCE_PORT".to_owned(), b.addr.port().to_string()),
        ("AVAILABILITY_ZONE".to_owned(), b.zone.to_owned()),
        ("LB_STATE".to_owned(), state.to_owned()),
        ("LB_WEIGHT".to_owned(), b.weight.to_string()),
    ]);
    cloudmap
        .register_instance()
        .service_id(service_id)
        .instance_id(b.id)
        .set_attributes(Some(attributes))
        .send()
        .await
        .unwrap();
}

/// Reads pushes on `watcher` (ACKing each) until one satisfies `done`: the caller has just
/// changed something, so at least one push is due.
async fn watch_until(
    watcher: &mut Client,
    resource: &str,
    done: impl Fn(&envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse) -> bool,
) {
    loop {
        let pushed = watcher.next().await;
        watcher
            .send(
                cloudmap_xds::server::ENDPOINTS,
                &[resource],
                &pushed.version_info,
                &pushed.nonce,
                None,
            )
            .await;
        if done(&pushed) {
            return;
        }
    }
}

/// Waits until `failing` takes no call while `healthy` take at least 100, twice in a row: the
/// client ejected it (a hang guard of 60 s).
async fn ejected(healthy: &[Backend], failing: &Backend) {
    let guard = tokio::time::Instant::now();
    let mut quiet = 0;
    while quiet < 2 {
        assert!(
            guard.elapsed() < Duration::from_secs(60),
            "{} was never ejected",
            failing.id
        );
        let (good, bad) = (counted(healthy), failing.calls.load(Ordering::Relaxed));
        calls_flow(healthy, good, 100).await;
        if failing.calls.load(Ordering::Relaxed) == bad {
            quiet += 1;
        } else {
            quiet = 0;
        }
    }
}

/// Calls the backends have counted so far (without resetting them).
fn counted(backends: &[Backend]) -> u64 {
    backends
        .iter()
        .map(|b| b.calls.load(Ordering::Relaxed))
        .sum()
}

/// Waits until the backends have counted `more` calls beyond `from` (a hang guard of 60 s:
/// the outcome is the count, not the time it took).
async fn calls_flow(backends: &[Backend], from: u64, more: u64) {
    let guard = tokio::time::Instant::now();
    while counted(backends) < from + more {
        assert!(
            guard.elapsed() < Duration::from_secs(60),
            "calls stopped flowing: {} of {more}",
            counted(backends) - from
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The versions a client in no zone gets from the server at `addr`: Listener, Cluster and
/// ClusterLoadAssignment.
async fn versions(addr: SocketAddr, resource: &str) -> Vec<String> {
    let mut client = Client::connect(addr, "versions", "").await;
    let mut versions = Vec::new();
    for type_url in [
        cloudmap_xds::server::LISTENER,
        cloudmap_xds::server::CLUSTER,
        cloudmap_xds::server::ENDPOINTS,
    ] {
        versions.push(client.get(type_url, &[resource]).await.version_info);
    }
    versions
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
        Backend::start("t1", "eu-central-1a", 100).await,
        Backend::start("t2", "eu-central-1a", 200).await,
        Backend::start("t3", "eu-central-1b", 300).await,
    ];
    for b in &backends {
        register(&cloudmap, &service.id, b, "RUNNING").await;
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

        // Zone a short of capacity: a second caller there (our own stream), so the callers are
        // 2 in a and 1 in b. Envoy's formula over capacity c and demand d: c_a = 1/2 < d_a =
        // 2/3, so c_a / d_a = 75 % stays in zone a (split 1 : 2), and the rest goes to the zones
        // with residual capacity c − d: only b (1/2 − 1/3), so t3 gets 25 %.
        let mut second = Client::connect(server.addr, "second-in-a", "eu-central-1a").await;
        second
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
        let (c_a, d_a) = (300.0 / 600.0, 2.0 / 3.0);
        let local = f64::min(1.0, c_a / d_a);
        assert_within(kind, "t1, zone a spilling", share["t1"], local / 3.0, 3.0);
        assert_within(
            kind,
            "t2, zone a spilling",
            share["t2"],
            local * 2.0 / 3.0,
            3.0,
        );
        assert_within(kind, "t3, zone a spilling", share["t3"], 1.0 - local, 3.0);
        drop((anchor, second));
    }

    // A task's own health turns NOT_SERVING (what a server does on SIGTERM): the server's
    // health watch sees it and pushes DRAINING to every connected client, before Cloud Map
    // says anything. A client then sends it nothing.
    let mut watcher = Client::connect(server.addr, "watcher", "").await;
    watcher
        .get(cloudmap_xds::server::ENDPOINTS, &[resource.as_str()])
        .await;
    backends[0]
        .status
        .send_replace(health_check_response::ServingStatus::NotServing);
    watch_until(&mut watcher, &resource, |last| draining(last, "t1")).await;
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
    watch_until(&mut watcher, &resource, |last| !draining(last, "t1")).await;

    // DRAINING written in Cloud Map (what the sync Lambda writes when ECS starts stopping the
    // task): the next poll sees it and the server pushes DRAINING; from then on a client sends
    // the task nothing.
    register(&cloudmap, &service.id, &backends[1], "DRAINING").await;
    watch_until(&mut watcher, &resource, |last| draining(last, "t2")).await;
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
            share["t2"] == 0.0,
            "{kind:?}: the DRAINING task took {:.1} %",
            share["t2"] * 100.0
        );
        // The others take the calls (600 calls are too few to hold grpc-js's random locality
        // picks to 3 points: the shares are checked over 2,400 above).
        assert!(
            share["t1"] > 0.0 && share["t3"] > 0.0,
            "{kind:?}: {share:?}"
        );
    }
    register(&cloudmap, &service.id, &backends[1], "RUNNING").await;
    watch_until(&mut watcher, &resource, |last| !draining(last, "t2")).await;
    drop(watcher);

    // A task that is up (its health says SERVING) but fails every call: the Cluster's outlier
    // detection (A50, failure percentage) makes each client eject it. Its own service, so the
    // shares above are untouched. Once a client has stopped calling it while the others kept
    // taking calls, the next 600 calls must not reach it.
    let flaky = local_stack::cloudmap::create_service(&cloudmap, &namespace, "flaky", false)
        .await
        .unwrap();
    let flaky_backends = vec![
        Backend::start("f1", "eu-central-1a", 100).await,
        Backend::start("f2", "eu-central-1a", 100).await,
        Backend::start_with("f3", "eu-central-1a", 100, true).await,
    ];
    for b in &flaky_backends {
        register(&cloudmap, &flaky.id, b, "RUNNING").await;
    }
    let flaky_target = format!("xds:///flaky.{}", namespace.name);
    for kind in [Kind::Grpcio, Kind::Node] {
        let until = dir.path().join(format!("stop-flaky-{kind:?}"));
        let child = start_client(
            kind,
            &bootstrap(dir.path(), server.addr, None),
            &flaky_target,
            &until,
        );
        ejected(&flaky_backends[..2], &flaky_backends[2]).await;
        shares(&flaky_backends);
        calls_flow(&flaky_backends, 0, 600).await;
        let (share, total) = shares(&flaky_backends);
        let summary = stop_client(kind, child, &until);
        assert!(total >= 600, "{total}");
        assert!(
            share["f3"] == 0.0,
            "{kind:?}: the failing task still took {:.1} % after its ejection",
            share["f3"] * 100.0
        );
        // What failed was the failing task's answer, before the ejection, and nothing else.
        let failed = summary["failed"].as_u64().unwrap();
        assert!(failed > 0, "{kind:?}: {summary}");
        assert_eq!(summary["codes"]["INTERNAL"], failed, "{kind:?}: {summary}");
    }

    // A server killed mid-run (SIGKILL: its streams cut): the clients keep calling with what
    // they have, with no failed call while the tasks live; the server comes back on the same
    // port (a restart) and each client reconnects and is pushed the versions it had, which are
    // hashes of the content. Its own process, so the NACK count of the main server stays whole.
    for kind in [Kind::Grpcio, Kind::Node] {
        let first = XdsProcess::start_logged(moto.endpoint(), "127.0.0.1:0");
        let listen = first.addr.to_string();
        let before = versions(first.addr, &resource).await;
        let until = dir.path().join(format!("stop-restart-{kind:?}"));
        let child = start_client(
            kind,
            &bootstrap(dir.path(), first.addr, None),
            &target,
            &until,
        );
        first.log_until(&["stream opened", "test-client"]);
        let from = counted(&backends);
        calls_flow(&backends, from, 300).await;
        first.kill();
        // Calls go on while no server is there.
        let from = counted(&backends);
        calls_flow(&backends, from, 300).await;
        let restarted = XdsProcess::start_logged(moto.endpoint(), &listen);
        let log = restarted.log_until(&["stream opened", "test-client"]);
        let after = versions(restarted.addr, &resource).await;
        assert_eq!(after, before, "the same content, the same versions");
        // The client's stream is told the same versions again (three pushes: Listener, Cluster,
        // ClusterLoadAssignment); read the log until the third of them.
        let mut pushed: Vec<String> = Vec::new();
        let mut lines = log;
        loop {
            pushed.extend(
                lines
                    .iter()
                    .filter(|l| l.contains("push") && l.contains("\"test-client\""))
                    .filter_map(|l| l.split("version=").nth(1))
                    .filter_map(|v| v.split_whitespace().next())
                    .map(ToOwned::to_owned),
            );
            if pushed.len() >= 3 {
                break;
            }
            lines = restarted.log_until(&["push", "test-client"]);
        }
        for version in &pushed {
            assert!(
                before.contains(version),
                "{kind:?}: pushed {version} after the restart; before: {before:?}"
            );
        }
        let from = counted(&backends);
        calls_flow(&backends, from, 300).await;
        let summary = stop_client(kind, child, &until);
        assert_eq!(
            summary["failed"], 0,
            "{kind:?}: no call failed while the server was gone and back: {summary}"
        );
        let restarted = restarted.stop();
        assert_eq!(restarted["nacks"], 0, "{kind:?}: {restarted}");
        shares(&backends);
    }

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
