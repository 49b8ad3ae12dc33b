//! The fault proxy in front of moto: forwards what it should, fails what it is told to, in a form
//! the AWS SDK classifies like AWS's own errors, and counts per operation.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

use aws_config::retry::RetryConfig;
use aws_sdk_servicediscovery::error::ProvideErrorMetadata;
use local_stack::fault::{Fault, FaultProxy};
use local_stack::{MotoServer, cloudmap, unique_name};

fn no_retries(proxy: &FaultProxy) -> aws_types::SdkConfig {
    MotoServer::shared()
        .sdk_config()
        .into_builder()
        .endpoint_url(proxy.endpoint())
        .retry_config(RetryConfig::disabled())
        .build()
}

#[tokio::test]
async fn forwards_fails_and_counts_cloud_map_calls() {
    let proxy = FaultProxy::start(MotoServer::shared().endpoint()).unwrap();
    let client = aws_sdk_servicediscovery::Client::new(&no_retries(&proxy));

    let namespace = cloudmap::create_http_namespace(&client, &unique_name("ns"))
        .await
        .expect("forwarded to moto");
    assert_eq!(proxy.count("CreateHttpNamespace"), 1);
    assert!(proxy.count("GetOperation") >= 1);

    proxy.fail("ListNamespaces", Fault::Throttle);
    for _ in 0..2 {
        let error = client.list_namespaces().send().await.unwrap_err();
        let service_error = error.as_service_error().expect("a service error");
        assert_eq!(service_error.code(), Some("ThrottlingException"));
        assert_eq!(error.raw_response().unwrap().status().as_u16(), 400);
    }
    assert_eq!(proxy.count("ListNamespaces"), 2);
    assert_eq!(proxy.faults_served()["ListNamespaces"], 2);

    proxy.clear();
    proxy.fail_times("ListNamespaces", Fault::ServerError, 1);
    let error = client.list_namespaces().send().await.unwrap_err();
    assert_eq!(error.raw_response().unwrap().status().as_u16(), 500);
    assert_eq!(error.code(), Some("InternalFailure"));
    let listed = client
        .list_namespaces()
        .send()
        .await
        .expect("the fault was used up");
    assert!(
        listed
            .namespaces()
            .iter()
            .any(|n| n.id() == Some(namespace.id.as_str()))
    );
    assert_eq!(proxy.count("ListNamespaces"), 4);

    proxy.reset_counts();
    assert!(proxy.counts().is_empty());
}

#[tokio::test]
async fn ecs_and_cloudwatch_errors_carry_their_codes() {
    let proxy = FaultProxy::start(MotoServer::shared().endpoint()).unwrap();
    let sdk = no_retries(&proxy);

    let ecs = aws_sdk_ecs::Client::new(&sdk);
    ecs.list_clusters().send().await.expect("forwarded");
    proxy.fail(
        "ListClusters",
        Fault::Status {
            status: 400,
            code: "AccessDeniedException".into(),
        },
    );
    let error = ecs.list_clusters().send().await.unwrap_err();
    assert_eq!(error.code(), Some("AccessDeniedException"));
    assert_eq!(proxy.count("ListClusters"), 2);

    // CloudWatch speaks Smithy RPC v2 CBOR: the operation is in the path, the error in CBOR.
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    proxy.fail("ListMetrics", Fault::Throttle);
    let error = cloudwatch.list_metrics().send().await.unwrap_err();
    assert_eq!(error.code(), Some("ThrottlingException"));
    assert_eq!(proxy.count("ListMetrics"), 1);
    // Forwarded, CBOR passes through to moto (the launcher translates it) and back.
    proxy.clear();
    cloudwatch.list_metrics().send().await.expect("forwarded");
    assert_eq!(proxy.count("ListMetrics"), 2);
}
