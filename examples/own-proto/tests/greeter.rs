//! The example end to end: two real servers of the example's own service on 127.0.0.1:0, the
//! generated client on the balanced channel.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use cloudmap_balancer::discovery::StaticSource;
use cloudmap_balancer::{Balancer, Instance};
use own_proto_example::Service;
use own_proto_example::pb::HelloRequest;
use own_proto_example::pb::greeter_client::GreeterClient;

async fn serve(name: &str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Service::new(name);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_client_works_on_the_balanced_channel() {
    let servers = [serve("one").await, serve("two").await];
    let source = StaticSource::new(
        servers
            .iter()
            .enumerate()
            .map(|(n, addr)| Instance::new(format!("task-{n}"), *addr).with_zone("eu-central-1a"))
            .collect(),
    );
    let balancer = Balancer::builder_with_source(source, "example", "greeter")
        .local_zone("eu-central-1a")
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    let mut client = GreeterClient::new(balancer.channel());
    let mut served_by = HashSet::new();
    for _ in 0..50 {
        let reply = client
            .say_hello(HelloRequest { name: "Ada".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.message, "Hello, Ada!");
        served_by.insert(reply.served_by);
    }
    assert_eq!(served_by.len(), 2, "both servers answered: {served_by:?}");
}
