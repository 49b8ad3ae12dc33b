//! The network emulation through a real server: the caller's zone header decides which round
//! trip a call waits, a proxy hop adds one in zone. Lower bounds only (a call cannot come back
//! before its emulated round trips); how close to them it comes is measured in
//! `benches/network_emulation.rs`, not asserted.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Process, demo, identity, quick, start};
use demo_server::{CLIENT_ZONE_HEADER, NetworkEmulation, PROXY_HOPS_HEADER, ServeOptions, pb};

/// Round trips far above loopback's, so each lower bound below tells the cases apart.
const IN_ZONE: Duration = Duration::from_millis(30);
const CROSS_ZONE: Duration = Duration::from_millis(90);

fn request(zone: Option<&str>, hops: Option<&str>) -> tonic::Request<pb::DescribeRequest> {
    let mut request = tonic::Request::new(pb::DescribeRequest {});
    if let Some(zone) = zone {
        request
            .metadata_mut()
            .insert(CLIENT_ZONE_HEADER, zone.parse().unwrap());
    }
    if let Some(hops) = hops {
        request
            .metadata_mut()
            .insert(PROXY_HOPS_HEADER, hops.parse().unwrap());
    }
    request
}

async fn timed(
    client: &mut pb::demo_client::DemoClient<tonic::transport::Channel>,
    zone: Option<&str>,
    hops: Option<&str>,
) -> Duration {
    let start = Instant::now();
    let answer = client.describe(request(zone, hops)).await.unwrap();
    assert_eq!(answer.into_inner().task.unwrap().zone, "eu-central-1a");
    start.elapsed()
}

#[tokio::test]
async fn calls_wait_the_round_trip_of_the_callers_zone_plus_one_per_proxy_hop() {
    let options = ServeOptions {
        network: NetworkEmulation::new(IN_ZONE, CROSS_ZONE),
        ..quick()
    };
    let server = start(identity("eu-central-1a", "t-rtt"), options).await;
    let mut client = demo(server.local_addr()).await;

    assert!(timed(&mut client, Some("eu-central-1a"), None).await >= IN_ZONE);
    assert!(timed(&mut client, Some("eu-central-1b"), None).await >= CROSS_ZONE);
    assert!(timed(&mut client, Some("eu-central-1a"), Some("1")).await >= IN_ZONE * 2);
    assert!(timed(&mut client, Some("eu-central-1c"), Some("1")).await >= CROSS_ZONE + IN_ZONE);
    // Without the header a call waits nothing extra; the health service answers as before.
    timed(&mut client, None, Some("1")).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        common::channel(server.local_addr()).await,
    );
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_binary_reads_the_round_trips_from_its_environment() {
    let server = Process::spawn(&[
        ("DEMO_ZONE", "eu-central-1a"),
        ("DEMO_RTT_IN_ZONE_US", "30000"),
        ("DEMO_RTT_CROSS_ZONE_US", "90000"),
    ])
    .await;
    let mut client = demo(server.addr).await;
    assert!(timed(&mut client, Some("eu-central-1b"), None).await >= CROSS_ZONE);
    assert!(timed(&mut client, Some("eu-central-1a"), None).await >= IN_ZONE);
}
