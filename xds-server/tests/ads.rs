//! The ADS protocol, in process: a real tonic server on 127.0.0.1:0 serving `XdsServer` over
//! discovery from static sources, and a tonic ADS client of our own that speaks as gRPC's xDS
//! clients do (node on the first request, ACK and NACK by nonce).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudmap_balancer::Instance;
use cloudmap_balancer::contract::{LbState, Weight};
use cloudmap_balancer::discovery::{Discovery, DiscoveryOptions, StaticSource};
use cloudmap_xds::XdsServer;
use cloudmap_xds::naming::{Names, ServiceName};
use cloudmap_xds::resources::{AssignmentConfig, ClusterPolicy, OutlierPolicy};
use cloudmap_xds::server::{CLUSTER, ENDPOINTS, LISTENER, StreamConfig, decode};
use cloudmap_xds::services::{Services, StartDiscovery};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use tokio_stream::wrappers::TcpListenerStream;

mod support;
use support::Client;

/// The fleet every test serves: `echo.prod.internal`, three tasks in two zones.
fn echo_fleet() -> Vec<Instance> {
    let task = |n: u8, zone: &str, weight: u32| {
        Instance::new(
            format!("t{n}"),
            format!("10.0.0.{n}:50051").parse().unwrap(),
        )
        .with_zone(zone)
        .with_weight(Weight::saturating(weight))
        .with_state(LbState::Running)
    };
    vec![
        task(1, "zone-a", 100),
        task(2, "zone-a", 300),
        task(3, "zone-b", 400),
    ]
}

/// A server over static sources, one per service; the sources and the discoveries started are
/// kept so a test can change a fleet and make discovery see it at once.
struct Harness {
    addr: SocketAddr,
    server: XdsServer,
    sources: Arc<Mutex<HashMap<ServiceName, Arc<StaticSource>>>>,
    started: Arc<Mutex<Vec<Discovery>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(fleets: &[(&str, Vec<Instance>)], max_subscriptions: usize) -> Self {
        let sources: Arc<Mutex<HashMap<ServiceName, Arc<StaticSource>>>> = Arc::new(Mutex::new(
            fleets
                .iter()
                .map(|(name, fleet)| {
                    let name = Names::default().resolve(name).unwrap();
                    (name, Arc::new(StaticSource::new(fleet.clone())))
                })
                .collect(),
        ));
        let started = Arc::new(Mutex::new(Vec::new()));
        let start: StartDiscovery = {
            let sources = Arc::clone(&sources);
            let started = Arc::clone(&started);
            Arc::new(move |name: &ServiceName| {
                // An unknown service lists nothing, as Cloud Map does for an empty one.
                let source = sources
                    .lock()
                    .unwrap()
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(StaticSource::new(Vec::new())))
                    .clone();
                let discovery = Discovery::start(
                    source,
                    name.namespace.clone(),
                    name.service.clone(),
                    DiscoveryOptions::default(),
                )?;
                started.lock().unwrap().push(discovery.clone());
                Ok(discovery)
            })
        };
        let server = XdsServer::new(
            Services::new(
                start,
                AssignmentConfig {
                    region: "eu-central-1".into(),
                    ..AssignmentConfig::default()
                },
                // The fleets' addresses are not ours to dial.
                None,
                // No linger: the tests see a service's poller stop with its last subscriber.
                Duration::ZERO,
            ),
            StreamConfig {
                names: Names::new(
                    [("echo".to_owned(), ServiceName::new("prod.internal", "echo"))].into(),
                ),
                cluster: ClusterPolicy {
                    outlier: Some(OutlierPolicy::default()),
                    ..ClusterPolicy::default()
                },
                max_subscriptions,
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = server.clone().into_service();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Self {
            addr,
            server,
            sources,
            started,
            _task: task,
        }
    }

    /// Replaces a service's fleet and makes every discovery see it now.
    async fn set(&self, name: &str, fleet: Vec<Instance>) {
        let name = Names::default().resolve(name).unwrap();
        self.sources.lock().unwrap()[&name].set(fleet);
        let started: Vec<Discovery> = self.started.lock().unwrap().clone();
        for discovery in started {
            let _ = discovery.refresh().await;
        }
    }
}

/// Waits until `condition` holds: the server applies a request after the client sent it (a hang
/// guard of 20 s, not a timing check).
async fn eventually(condition: impl Fn() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the condition never held");
}

/// Subscribes to `echo.prod.internal`'s endpoints and returns (and ACKs) the first answer.
async fn echo_endpoints(client: &mut Client) -> ClusterLoadAssignment {
    decode(
        &client
            .get(ENDPOINTS, &["echo.prod.internal"])
            .await
            .resources[0],
    )
    .unwrap()
}

fn weights(assignment: &ClusterLoadAssignment) -> Vec<(String, u32, u32)> {
    assignment
        .endpoints
        .iter()
        .map(|l| {
            (
                l.locality.as_ref().unwrap().sub_zone.clone(),
                l.priority,
                l.load_balancing_weight.unwrap().value,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_client_gets_listener_cluster_and_endpoints_for_its_zone() {
    let harness = Harness::start(&[("echo.prod.internal", echo_fleet())], 100).await;
    let mut client = Client::connect(harness.addr, "node-a", "zone-a").await;

    let listeners = client.get(LISTENER, &["echo.prod.internal"]).await;
    assert_eq!(listeners.resources.len(), 1);
    let listener: Listener = decode(&listeners.resources[0]).unwrap();
    assert_eq!(listener.name, "echo.prod.internal");
    assert!(listener.api_listener.is_some());

    let clusters = client.get(CLUSTER, &["echo.prod.internal"]).await;
    let cluster: Cluster = decode(&clusters.resources[0]).unwrap();
    assert_eq!(cluster.name, "echo.prod.internal");
    let outlier = cluster.outlier_detection.expect("outlier detection");
    assert_eq!(
        outlier.enforcing_success_rate.unwrap().value,
        0,
        "grpc-js needs it explicit"
    );

    let endpoints = client.get(ENDPOINTS, &["echo.prod.internal"]).await;
    let assignment: ClusterLoadAssignment = decode(&endpoints.resources[0]).unwrap();
    // The only caller is in zone-a, which has half the capacity: Envoy's formula keeps
    // 0.5 / 1 of its calls local and sends the rest to zone-b's residual capacity, so every
    // task gets calls in proportion to its weight.
    assert_eq!(
        weights(&assignment),
        vec![
            ("t1".into(), 0, 125_000),
            ("t2".into(), 0, 375_000),
            ("t3".into(), 0, 500_000)
        ]
    );
    let counters = harness.server.counters();
    eventually(|| counters.acks.load(Ordering::Relaxed) == 3).await;
    assert_eq!(counters.nacks.load(Ordering::Relaxed), 0);

    // A caller in zone-b connects: zone-a's capacity now covers its callers, so every call of
    // the zone-a client stays in zone-a, by weight, and zone-b waits in priority 1. The change
    // is pushed without the client asking.
    let mut other = Client::connect(harness.addr, "node-b", "zone-b").await;
    other.get(ENDPOINTS, &["echo.prod.internal"]).await;
    let pushed = client.next().await;
    assert_ne!(pushed.version_info, endpoints.version_info);
    let assignment: ClusterLoadAssignment = decode(&pushed.resources[0]).unwrap();
    assert_eq!(
        weights(&assignment),
        vec![
            ("t1".into(), 0, 250_000),
            ("t2".into(), 0, 750_000),
            ("t3".into(), 1, 1_000_000)
        ]
    );
    client
        .send(
            ENDPOINTS,
            &["echo.prod.internal"],
            &pushed.version_info,
            &pushed.nonce,
            None,
        )
        .await;
    assert!(
        client.quiet_for(Duration::from_millis(300)).await,
        "nothing more to say"
    );
}

#[tokio::test]
async fn callers_in_two_zones_split_by_envoys_formula_and_a_zoneless_client_by_capacity() {
    let harness = Harness::start(&[("echo.prod.internal", echo_fleet())], 100).await;
    // Callers: two in zone-a, one in zone-b. Capacity: 50 % / 50 %. Zone-a's callers are
    // 2/3 of the demand: they keep 0.5 / (2/3) = 75 % local and spill 25 % to zone-b.
    let mut a1 = Client::connect(harness.addr, "a1", "zone-a").await;
    let mut a2 = Client::connect(harness.addr, "a2", "zone-a").await;
    let mut b = Client::connect(harness.addr, "b", "zone-b").await;
    for client in [&mut a2, &mut b] {
        client.get(ENDPOINTS, &["echo.prod.internal"]).await;
    }
    // a1 subscribes last: its first answer already counts all three.
    let assignment: ClusterLoadAssignment =
        decode(&a1.get(ENDPOINTS, &["echo.prod.internal"]).await.resources[0]).unwrap();
    assert_eq!(
        weights(&assignment),
        vec![
            ("t1".into(), 0, 187_500),
            ("t2".into(), 0, 562_500),
            ("t3".into(), 0, 250_000)
        ]
    );
    // A client without a zone: by capacity.
    let mut anywhere = Client::connect(harness.addr, "x", "").await;
    let assignment: ClusterLoadAssignment = echo_endpoints(&mut anywhere).await;
    assert_eq!(
        weights(&assignment),
        vec![
            ("t1".into(), 0, 125_000),
            ("t2".into(), 0, 375_000),
            ("t3".into(), 0, 500_000)
        ]
    );
}

#[tokio::test]
async fn a_nack_is_counted_and_the_rejected_version_is_not_sent_again() {
    let harness = Harness::start(&[("echo.prod.internal", echo_fleet())], 100).await;
    let mut client = Client::connect(harness.addr, "n", "").await;
    let first = client.get(ENDPOINTS, &["echo.prod.internal"]).await;

    // A change arrives; the client rejects it.
    let mut fleet = echo_fleet();
    fleet[0] = fleet[0].clone().with_weight(Weight::saturating(200));
    harness.set("echo.prod.internal", fleet).await;
    let second = client.next().await;
    assert_ne!(second.version_info, first.version_info);
    client
        .send(
            ENDPOINTS,
            &["echo.prod.internal"],
            &first.version_info,
            &second.nonce,
            Some("weight out of range"),
        )
        .await;
    // The same data again (a re-listing, another caller's churn): nothing is resent.
    let same =
        harness.sources.lock().unwrap()[&ServiceName::new("prod.internal", "echo")].instances();
    harness.set("echo.prod.internal", same).await;
    assert!(
        client.quiet_for(Duration::from_millis(500)).await,
        "the rejected version is not pushed again"
    );
    let counters = harness.server.counters();
    eventually(|| counters.nacks.load(Ordering::Relaxed) == 1).await;

    // New content is.
    let mut fleet = echo_fleet();
    fleet[2] = fleet[2].clone().with_state(LbState::Draining);
    harness.set("echo.prod.internal", fleet).await;
    let third = client.next().await;
    assert_ne!(third.version_info, second.version_info);
    let assignment: ClusterLoadAssignment = decode(&third.resources[0]).unwrap();
    let drained = assignment
        .endpoints
        .iter()
        .find(|l| l.locality.as_ref().unwrap().sub_zone == "t3")
        .unwrap();
    assert_eq!(drained.lb_endpoints[0].health_status, 3, "DRAINING");
}

#[tokio::test]
async fn names_that_are_not_services_are_absent_and_subscriptions_follow_the_client() {
    let harness = Harness::start(
        &[
            ("echo.prod.internal", echo_fleet()),
            ("other.prod.internal", echo_fleet()),
        ],
        100,
    )
    .await;
    let mut client = Client::connect(harness.addr, "n", "zone-a").await;
    let response = client
        .get(LISTENER, &["echo.prod.internal", "no-namespace", "echo"])
        .await;
    let names: Vec<String> = response
        .resources
        .iter()
        .map(|r| decode::<Listener>(r).unwrap().name)
        .collect();
    assert_eq!(
        names,
        vec!["echo".to_owned(), "echo.prod.internal".to_owned()],
        "the alias resolves; the bare name does not"
    );
    // The alias routes to the canonical cluster.
    let alias: Listener = decode(&response.resources[0]).unwrap();
    let manager = alias.api_listener.unwrap().api_listener.unwrap();
    assert!(String::from_utf8_lossy(&manager.value).contains("echo.prod.internal"));

    // A second service joins the subscription: both are listed.
    client
        .send(
            LISTENER,
            &["echo.prod.internal", "other.prod.internal"],
            &response.version_info,
            &response.nonce,
            None,
        )
        .await;
    let response = client.next().await;
    assert_eq!(response.resources.len(), 2);
    assert_eq!(harness.server.services().polled(), 2);
    // Dropping one stops its poller.
    client
        .send(
            LISTENER,
            &["other.prod.internal"],
            &response.version_info,
            &response.nonce,
            None,
        )
        .await;
    let response = client.next().await;
    assert_eq!(response.resources.len(), 1);
    assert_eq!(harness.server.services().polled(), 1);
}

#[tokio::test]
async fn two_replicas_give_the_same_versions() {
    let one = Harness::start(&[("echo.prod.internal", echo_fleet())], 100).await;
    let two = Harness::start(&[("echo.prod.internal", echo_fleet())], 100).await;
    let mut versions = Vec::new();
    for harness in [&one, &two] {
        let mut client = Client::connect(harness.addr, "n", "zone-b").await;
        let mut seen = Vec::new();
        for type_url in [LISTENER, CLUSTER, ENDPOINTS] {
            seen.push(
                client
                    .get(type_url, &["echo.prod.internal"])
                    .await
                    .version_info,
            );
        }
        versions.push(seen);
    }
    assert_eq!(versions[0], versions[1]);
}

#[tokio::test]
async fn a_stream_over_the_subscription_cap_is_closed_with_a_clear_error() {
    let harness = Harness::start(&[("echo.prod.internal", echo_fleet())], 10).await;
    let mut client = Client::connect(harness.addr, "n", "").await;
    let names: Vec<String> = (0..11).map(|i| format!("s{i}.prod.internal")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    client.send(LISTENER, &names, "", "", None).await;
    let status = tokio::time::timeout(Duration::from_secs(20), client.responses.message())
        .await
        .expect("an answer")
        .expect_err("the stream is closed");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("CLOUDMAP_XDS_MAX_SUBSCRIPTIONS"),
        "{}",
        status.message()
    );
    assert_eq!(harness.server.counters().refused.load(Ordering::Relaxed), 1);
    assert_eq!(
        harness.server.services().polled(),
        0,
        "nothing was polled for it"
    );
}

#[tokio::test]
async fn a_client_that_never_acks_still_gets_every_change() {
    let harness = Harness::start(&[("echo.prod.internal", echo_fleet())], 100).await;
    let mut client = Client::connect(harness.addr, "silent", "").await;
    client
        .send(ENDPOINTS, &["echo.prod.internal"], "", "", None)
        .await;
    let first = client.next().await;
    let mut versions = vec![first.version_info];
    for weight in [150, 250] {
        let mut fleet = echo_fleet();
        fleet[0] = fleet[0].clone().with_weight(Weight::saturating(weight));
        harness.set("echo.prod.internal", fleet).await;
        versions.push(client.next().await.version_info);
    }
    versions.dedup();
    assert_eq!(
        versions.len(),
        3,
        "each change pushed without waiting for an ACK"
    );
    assert_eq!(harness.server.counters().acks.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn two_streams_of_one_node_are_two_callers_and_both_are_served() {
    let harness = Harness::start(&[("echo.prod.internal", echo_fleet())], 100).await;
    // Both in zone-b (half the capacity), with one caller in zone-a: zone-b holds two thirds
    // of the callers, so it keeps 0.5 / (2/3) = 75 % local.
    let mut a = Client::connect(harness.addr, "a", "zone-a").await;
    a.get(ENDPOINTS, &["echo.prod.internal"]).await;
    let mut first = Client::connect(harness.addr, "same", "zone-b").await;
    first.get(ENDPOINTS, &["echo.prod.internal"]).await;
    let mut second = Client::connect(harness.addr, "same", "zone-b").await;
    let answer: ClusterLoadAssignment = echo_endpoints(&mut second).await;
    assert_eq!(
        weights(&answer),
        vec![
            ("t1".into(), 0, 62_500),
            ("t2".into(), 0, 187_500),
            ("t3".into(), 0, 750_000)
        ]
    );
    // The first stream of the node gets the same answer pushed.
    let pushed: ClusterLoadAssignment = decode(&first.next().await.resources[0]).unwrap();
    assert_eq!(weights(&pushed), weights(&answer));
}
