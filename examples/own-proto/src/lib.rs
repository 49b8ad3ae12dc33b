//! Your own gRPC service, generated from your own proto, called through `cloudmap-balancer`.
//!
//! The balanced channel takes the place of a tonic `Channel` in your generated client: nothing
//! else changes.
//!
//! ```no_run
//! use own_proto_example::pb::HelloRequest;
//! use own_proto_example::pb::greeter_client::GreeterClient;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//! // The Cloud Map namespace and service your ECS service registers in (HTTP or DNS).
//! let balancer = cloudmap_balancer::Balancer::builder(&aws, "prod.internal", "greeter").build()?;
//! balancer.ready().await?; // fail fast at start-up on a misconfigured service
//! let mut client = GreeterClient::new(balancer.channel());
//! let reply = client.say_hello(HelloRequest { name: "Ada".into() }).await?;
//! println!("{} (from {})", reply.get_ref().message, reply.get_ref().served_by);
//! # Ok(()) }
//! ```

/// The code generated from `proto/greeter.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("example.greeter.v1");
}

use pb::greeter_server::{Greeter, GreeterServer};
use pb::{HelloReply, HelloRequest};

/// The service, as its servers run it: answers with a greeting and its own name.
#[derive(Debug, Clone)]
pub struct Service {
    name: String,
}

impl Service {
    /// A server that signs its answers `name`.
    pub fn new(name: impl Into<String>) -> GreeterServer<Self> {
        GreeterServer::new(Self { name: name.into() })
    }
}

#[tonic::async_trait]
impl Greeter for Service {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        Ok(tonic::Response::new(HelloReply {
            message: format!("Hello, {}!", request.into_inner().name),
            served_by: self.name.clone(),
        }))
    }
}
