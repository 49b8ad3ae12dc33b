//! Health and the shutdown sequence, in-process: NOT_SERVING first, serving through the drain
//! delay, then GOAWAY, in-flight calls finishing, new calls refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{PATIENCE, channel, demo, eventually, identity, start};
use demo_server::{Load, ServeOptions, Stopped, pb};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn check(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    let status = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

#[tokio::test]
async fn health_turns_not_serving_first_and_calls_still_succeed_during_the_drain_delay() {
    let server = start(
        identity("eu-central-1a", "t-drain"),
        ServeOptions {
            // Long enough that the checks below all happen inside it; the test ends it early.
            drain_delay: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            ..ServeOptions::default()
        },
    )
    .await;
    let addr = server.local_addr();
    let mut health = HealthClient::new(channel(addr).await);
    for service in ["", "cloudmap.demo.v1.Demo", "cloudmap.demo.v1.Control"] {
        assert_eq!(
            check(&mut health, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap().status;
    assert_eq!(
        ServingStatus::try_from(first).unwrap(),
        ServingStatus::Serving
    );

    // A connection opened before the drain, used once so it is surely established.
    let mut old = demo(addr).await;
    old.describe(pb::DescribeRequest {}).await.unwrap();

    server.shutdown();

    // Watchers hear it...
    let update = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .status;
    assert_eq!(
        ServingStatus::try_from(update).unwrap(),
        ServingStatus::NotServing
    );
    // ...checkers see it, for the server and each service...
    for service in ["", "cloudmap.demo.v1.Demo", "cloudmap.demo.v1.Control"] {
        assert_eq!(
            check(&mut health, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    // ...and calls still succeed, on old and new connections, marked draining.
    let on_old = old
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(on_old.load.unwrap().draining);
    let on_new = demo(addr)
        .await
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(on_new.load.unwrap().draining);
    assert!(server.load().draining);

    server.abort();
    assert_eq!(server.wait().await.unwrap(), Stopped::Cut { in_flight: 0 });
}

#[tokio::test]
async fn after_goaway_calls_in_flight_finish_and_new_ones_are_refused() {
    let server = start(
        identity("eu-central-1b", "t-goaway"),
        ServeOptions {
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(60),
            ..ServeOptions::default()
        },
    )
    .await;
    let addr = server.local_addr();

    // A slow call in flight, and a health watcher (which must not hold the drain open).
    server.set_load(Load::new(Duration::from_secs(5), Duration::ZERO).unwrap());
    let mut client = demo(addr).await;
    let mut same_connection = client.clone();
    let slow = tokio::spawn(async move { client.describe(pb::DescribeRequest {}).await });
    eventually("the slow call is in flight", || async {
        server.load().in_flight == 1
    })
    .await;
    let mut watch = HealthClient::new(channel(addr).await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();

    server.shutdown();

    // The watcher gets NOT_SERVING, then its stream ends.
    let update = watch.message().await.unwrap().unwrap().status;
    assert_eq!(
        ServingStatus::try_from(update).unwrap(),
        ServingStatus::NotServing
    );
    let end = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap();
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "the watch stream ended: {end:?}"
    );

    // New connections are refused while the slow call is still running.
    eventually("the listener is closed", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    // A new call on the connection the slow call uses is refused too, unprocessed. (tonic reports
    // a call its connection refused after GOAWAY as CANCELLED, one that found no connection as
    // UNAVAILABLE.)
    let refused = same_connection
        .describe(pb::DescribeRequest {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Cancelled | tonic::Code::Unavailable
        ),
        "{refused}"
    );
    assert_eq!(
        server.load().calls,
        1,
        "only the slow call reached the server"
    );
    assert_eq!(
        server.load().in_flight,
        1,
        "the slow call is still in flight"
    );

    // The call in flight completes normally; then the server has drained.
    let answer = slow.await.unwrap().unwrap().into_inner();
    assert_eq!(answer.task.unwrap().task_id, "t-goaway");
    let stopped = tokio::time::timeout(PATIENCE, server.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped, Stopped::Drained);
}

#[tokio::test]
async fn the_grace_bounds_the_drain_and_reports_the_calls_cut() {
    let server = start(
        identity("eu-central-1c", "t-grace"),
        ServeOptions {
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_millis(200),
            load: Load::new(Duration::from_secs(600), Duration::ZERO).unwrap(),
            ..ServeOptions::default()
        },
    )
    .await;
    let mut client = demo(server.local_addr()).await;
    let _stuck = tokio::spawn(async move { client.describe(pb::DescribeRequest {}).await });
    eventually("the stuck call is in flight", || async {
        server.load().in_flight == 1
    })
    .await;

    server.shutdown();
    let stopped = tokio::time::timeout(PATIENCE, server.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped, Stopped::Cut { in_flight: 1 });
}
