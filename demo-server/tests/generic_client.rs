//! A generic gRPC client that is not ours (Python grpcio, without the proto) checks health and
//! calls Describe through server reflection: `tests/generic_client.py`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{identity, quick, start};

#[tokio::test]
async fn python_grpcio_checks_health_and_calls_describe_through_reflection() {
    let server = start(identity("eu-central-1c", "t-python"), quick()).await;
    let python = local_stack::python().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/generic_client.py");

    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(server.local_addr().to_string())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "generic_client.py failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(seen["health"][""], "SERVING");
    assert_eq!(seen["health"]["cloudmap.demo.v1.Demo"], "SERVING");
    let services = seen["services"].as_array().unwrap();
    assert!(
        services.contains(&"cloudmap.demo.v1.Demo".into()),
        "{services:?}"
    );
    assert!(
        services.contains(&"grpc.health.v1.Health".into()),
        "{services:?}"
    );
    assert_eq!(seen["describe_input"], "cloudmap.demo.v1.DescribeRequest");
    assert_eq!(seen["describe_output"], "cloudmap.demo.v1.DescribeResponse");

    let task = &seen["describe"]["task"];
    assert_eq!(task["zone"], "eu-central-1c");
    assert_eq!(task["task_id"], "t-python");
    assert_eq!(task["cluster"], "demo");
    assert_eq!(task["port"], u64::from(server.local_addr().port()));
    // The call was served and counted by this server.
    assert_eq!(seen["describe"]["load"]["calls"], "1");
    assert_eq!(server.load().calls, 1);
}
