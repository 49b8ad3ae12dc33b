//! The four kinds of call and the load knob, against a real server on 127.0.0.1:0.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{control, demo, eventually, identity, quick, start};
use demo_server::pb;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test]
async fn describe_says_which_task_served_the_call() {
    let server = start(identity("eu-central-1b", "t-unary"), quick()).await;
    let mut client = demo(server.local_addr()).await;

    let first = client
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    let second = client
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        first.task.unwrap(),
        pb::Task {
            zone: "eu-central-1b".into(),
            task_arn: "arn:aws:ecs:eu-central-1:123456789012:task/demo/t-unary".into(),
            task_id: "t-unary".into(),
            cluster: "demo".into(),
            family: "demo-server".into(),
            revision: "3".into(),
            host: "127.0.0.1".into(),
            port: server.local_addr().port().into(),
        }
    );
    let (first, second) = (first.load.unwrap(), second.load.unwrap());
    assert_eq!((first.calls, first.in_flight), (1, 1));
    assert_eq!((second.calls, second.in_flight), (2, 1));
    assert!(!first.draining);
    assert_eq!(server.load().in_flight, 0);
}

#[tokio::test]
async fn describe_stream_sends_count_answers_from_one_task() {
    let server = start(identity("eu-central-1a", "t-stream"), quick()).await;
    let mut client = demo(server.local_addr()).await;

    let answers: Vec<_> = client
        .describe_stream(pb::DescribeStreamRequest {
            count: 5,
            interval_ms: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .unwrap();

    let sequences: Vec<u32> = answers.iter().map(|answer| answer.sequence).collect();
    assert_eq!(sequences, [0, 1, 2, 3, 4]);
    for answer in &answers {
        assert_eq!(answer.task.as_ref().unwrap().task_id, "t-stream");
        // One call, in flight while it streams.
        assert_eq!(answer.load.as_ref().unwrap().calls, 1);
        assert_eq!(answer.load.as_ref().unwrap().in_flight, 1);
    }
    eventually("the stream's call ends", || async {
        server.load().in_flight == 0
    })
    .await;
}

#[tokio::test]
async fn describe_stream_refuses_unbounded_requests() {
    let server = start(identity("eu-central-1a", "t-bounds"), quick()).await;
    let mut client = demo(server.local_addr()).await;
    for (count, interval_ms) in [(0, 0), (10_001, 0), (1, 60_001)] {
        let status = client
            .describe_stream(pb::DescribeStreamRequest { count, interval_ms })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{count}/{interval_ms}: {status}"
        );
    }
    // Refused calls are not counted.
    assert_eq!(server.load().calls, 0);
}

#[tokio::test]
async fn collect_counts_what_the_client_streamed() {
    let server = start(identity("eu-central-1c", "t-collect"), quick()).await;
    let mut client = demo(server.local_addr()).await;

    let messages = (1..=4).map(|n| pb::CollectRequest {
        payload: vec![7; n * 10],
    });
    let summary = client
        .collect(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();

    assert_eq!((summary.messages, summary.bytes), (4, 100));
    assert_eq!(summary.task.unwrap().zone, "eu-central-1c");

    let empty = client
        .collect(tokio_stream::empty())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((empty.messages, empty.bytes), (0, 0));
}

#[tokio::test]
async fn echo_answers_every_message_as_it_arrives() {
    let server = start(identity("eu-central-1a", "t-echo"), quick()).await;
    let mut client = demo(server.local_addr()).await;

    // Send one message at a time and read its echo before sending the next: a real exchange, not
    // a batch.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut echoes = client
        .echo(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for sequence in [10, 11, 12] {
        let payload = format!("message {sequence}").into_bytes();
        tx.send(pb::EchoRequest {
            sequence,
            payload: payload.clone(),
        })
        .await
        .unwrap();
        let echo = echoes.message().await.unwrap().unwrap();
        assert_eq!((echo.sequence, echo.payload), (sequence, payload));
        assert_eq!(echo.task.unwrap().task_id, "t-echo");
    }
    drop(tx);
    assert!(
        echoes.message().await.unwrap().is_none(),
        "the call ends with the client's stream"
    );
    eventually("the echo call ends", || async {
        server.load().in_flight == 0
    })
    .await;
}

#[tokio::test]
async fn a_slow_server_reports_its_load_and_recovers() {
    let server = start(identity("eu-central-1a", "t-slow"), quick()).await;
    let mut control = control(server.local_addr()).await;

    let set = control
        .set_load(pb::SetLoadRequest {
            latency_ms: 30_000,
            cpu_work_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.load.unwrap().latency_ms, 30_000);

    // A call that starts now is slow: it stays in flight.
    let addr = server.local_addr();
    let slow = tokio::spawn(async move {
        demo(addr)
            .await
            .describe(pb::DescribeRequest {})
            .await
            .unwrap()
            .into_inner()
    });
    eventually("the slow call is in flight", || async {
        server.load().in_flight == 1
    })
    .await;

    // Recovered: calls that start from now on are fast, and report the slow one in flight.
    control
        .set_load(pb::SetLoadRequest::default())
        .await
        .unwrap();
    let fast = demo(addr)
        .await
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner()
        .load
        .unwrap();
    assert_eq!((fast.latency_ms, fast.in_flight, fast.calls), (0, 2, 2));

    let state = control
        .get_load(pb::GetLoadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.task.unwrap().task_id, "t-slow");
    assert_eq!(state.load.unwrap().in_flight, 1);

    // The slow call keeps the load it started with; cancelling it takes it off the server.
    slow.abort();
    eventually("the cancelled call leaves", || async {
        server.load().in_flight == 0
    })
    .await;
}

#[tokio::test]
async fn cpu_work_setting_is_reported_with_each_answer() {
    let server = start(identity("eu-central-1a", "t-cpu"), quick()).await;
    server.set_load(demo_server::Load::new(Duration::ZERO, Duration::from_millis(5)).unwrap());
    let answer = demo(server.local_addr())
        .await
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.load.unwrap().cpu_work_ms, 5);
}

#[tokio::test]
async fn set_load_refuses_out_of_range_values() {
    let server = start(identity("eu-central-1a", "t-range"), quick()).await;
    let mut control = control(server.local_addr()).await;
    for (latency_ms, cpu_work_ms) in [(600_001, 0), (0, 60_001)] {
        let status = control
            .set_load(pb::SetLoadRequest {
                latency_ms,
                cpu_work_ms,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    assert_eq!(server.load().latency_ms, 0);
}
