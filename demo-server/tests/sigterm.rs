//! The real binary stopped the way ECS stops a task: SIGTERM with a call in flight.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Process, channel, control, demo, eventually, healthcheck};
use demo_server::pb;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TASK_ARN: &str =
    "arn:aws:ecs:eu-central-1:123456789012:task/demo/0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e";

#[tokio::test]
async fn sigterm_finishes_the_call_in_flight_refuses_new_ones_and_exits_0() {
    let mut process = Process::spawn(&[
        ("DEMO_ZONE", "eu-central-1b"),
        ("DEMO_TASK_ARN", TASK_ARN),
        ("DEMO_DRAIN_DELAY_MS", "300"),
        ("DEMO_SHUTDOWN_GRACE_MS", "60000"),
        ("DEMO_LATENCY_MS", "5000"),
    ])
    .await;
    let addr = process.addr;
    let (code, output) = healthcheck(&["--addr", &addr.to_string()]).await;
    assert_eq!((code, output.trim()), (0, "SERVING"));

    // A health watcher, as a client polling health would be, and a slow call in flight.
    let mut watch = HealthClient::new(channel(addr).await)
        .watch(HealthCheckRequest {
            service: "cloudmap.demo.v1.Demo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();
    let mut client = demo(addr).await;
    let slow = tokio::spawn(async move { client.describe(pb::DescribeRequest {}).await });
    let mut control = control(addr).await;
    eventually("the slow call is in flight", || {
        let mut control = control.clone();
        async move {
            let load = control
                .get_load(pb::GetLoadRequest {})
                .await
                .unwrap()
                .into_inner();
            load.load.unwrap().in_flight == 1
        }
    })
    .await;

    process.sigterm();

    // Health says NOT_SERVING first...
    let update = watch.message().await.unwrap().unwrap().status;
    assert_eq!(
        ServingStatus::try_from(update).unwrap(),
        ServingStatus::NotServing
    );
    // ...then, after the drain delay, new connections are refused (and the container health
    // check fails), while the slow call is still running.
    eventually("the listener is closed", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    let (code, _) = healthcheck(&["--addr", &addr.to_string()]).await;
    assert_eq!(code, 1);
    let refused = control.get_load(pb::GetLoadRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");

    // The call in flight completes, and the process exits 0.
    let answer = slow.await.unwrap().unwrap().into_inner();
    let task = answer.task.unwrap();
    assert_eq!(
        (task.zone.as_str(), task.task_arn.as_str()),
        ("eu-central-1b", TASK_ARN)
    );
    assert!(answer.load.unwrap().draining);
    let code = process.exit_code().await;
    assert_eq!(code, 0, "exit code; log:\n{}", process.logs());
    let logs = process.logs();
    assert!(logs.contains("drained"), "log:\n{logs}");
}

#[tokio::test]
async fn a_call_longer_than_the_grace_is_cut_and_the_exit_code_says_so() {
    let mut process = Process::spawn(&[
        ("DEMO_DRAIN_DELAY_MS", "0"),
        ("DEMO_SHUTDOWN_GRACE_MS", "300"),
        ("DEMO_LATENCY_MS", "600000"),
    ])
    .await;
    let addr = process.addr;
    let mut client = demo(addr).await;
    let stuck = tokio::spawn(async move { client.describe(pb::DescribeRequest {}).await });
    let control = control(addr).await;
    eventually("the stuck call is in flight", || {
        let mut control = control.clone();
        async move {
            let load = control
                .get_load(pb::GetLoadRequest {})
                .await
                .unwrap()
                .into_inner();
            load.load.unwrap().in_flight == 1
        }
    })
    .await;

    process.sigterm();

    assert_eq!(process.exit_code().await, 2, "log:\n{}", process.logs());
    assert!(stuck.await.unwrap().is_err(), "the cut call failed");
}

#[tokio::test]
async fn a_second_signal_skips_the_drain_delay() {
    let mut process = Process::spawn(&[("DEMO_DRAIN_DELAY_MS", "600000")]).await;
    let mut watch = HealthClient::new(channel(process.addr).await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();

    process.sigterm();
    // Draining (NOT_SERVING) before the second signal, so it is a second one.
    watch.message().await.unwrap().unwrap();
    process.sigterm();

    // No call was in flight: nothing was cut.
    assert_eq!(process.exit_code().await, 0, "log:\n{}", process.logs());
    assert!(process.logs().contains("second signal"));
}

#[tokio::test]
async fn healthcheck_fails_without_a_server_and_rejects_bad_arguments() {
    // A port that nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, output) = healthcheck(&["--addr", &addr.to_string()]).await;
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("cannot connect"), "{output}");

    let (code, _) = healthcheck(&["--addr", "localhost"]).await;
    assert_eq!(code, 64);
    let (code, _) = healthcheck(&["--bogus"]).await;
    assert_eq!(code, 64);
}
