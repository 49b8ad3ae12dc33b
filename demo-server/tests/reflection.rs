//! Server reflection, v1 and v1alpha, as generic clients (grpcurl, Postman) use it.
#![allow(clippy::unwrap_used)]

mod common;

use common::{channel, identity, quick, start};
use prost::Message;
use tonic_reflection::pb::{v1, v1alpha};

const EXPECTED_SERVICES: [&str; 5] = [
    "cloudmap.demo.v1.Control",
    "cloudmap.demo.v1.Demo",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[tokio::test]
async fn v1_lists_every_service_and_serves_the_demo_descriptors() {
    let server = start(identity("eu-central-1a", "t-reflect"), quick()).await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(
        channel(server.local_addr()).await,
    );

    let ask = |request| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let requests = tokio_stream::iter([
        ask(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ask(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "cloudmap.demo.v1.Demo".into(),
            ),
        ),
    ]);
    let mut answers = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();

    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a list of services");
    };
    let mut services: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    services.sort();
    assert_eq!(services, EXPECTED_SERVICES);

    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a file descriptor");
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
        .unwrap();
    assert_eq!(file.package(), "cloudmap.demo.v1");
    let demo = file
        .service
        .iter()
        .find(|service| service.name() == "Demo")
        .unwrap();
    let methods: Vec<(&str, bool, bool)> = demo
        .method
        .iter()
        .map(|method| {
            (
                method.name(),
                method.client_streaming(),
                method.server_streaming(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            ("Describe", false, false),
            ("DescribeStream", false, true),
            ("Collect", true, false),
            ("Echo", true, true),
        ]
    );
}

#[tokio::test]
async fn v1alpha_lists_every_service() {
    let server = start(identity("eu-central-1a", "t-reflect-alpha"), quick()).await;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(
        channel(server.local_addr()).await,
    );
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a list of services");
    };
    let mut services: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    services.sort();
    assert_eq!(services, EXPECTED_SERVICES);
}
