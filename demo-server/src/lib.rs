//! The demo gRPC server of cloudmap-balancer: every answer says which ECS task, in which
//! availability zone, served it, so a client can see how its calls were spread.
//!
//! - `cloudmap.demo.v1.Demo` has the four kinds of call: unary `Describe`, server-streaming
//!   `DescribeStream`, client-streaming `Collect`, bidirectional `Echo`
//!   (`proto/cloudmap/demo/v1/demo.proto`; the generated code is in [`pb`]).
//! - `cloudmap.demo.v1.Control` sets an artificial latency and CPU work at runtime, to make one
//!   task slow or busy in load-aware balancing demos and tests.
//! - Optionally every call waits the network round trip it would have had on AWS, in or across
//!   zones, by the caller's zone header ([`NetworkEmulation`]), so that zone-aware balancing
//!   shows its effect on loopback.
//! - `grpc.health.v1.Health` reports `NOT_SERVING` as soon as the server drains; server reflection
//!   (`grpc.reflection.v1` and `v1alpha`) lets grpcurl and other generic clients call it without
//!   the proto.
//! - The identity comes from the ECS task metadata endpoint v4 ([`Identity::resolve`]), with
//!   `DEMO_*` overrides for local runs.
//! - SIGTERM drains gracefully: health first, then GOAWAY, then in-flight calls finish within a
//!   bounded time (see [`DemoServer`]).
//!
//! The binary (`demo-server`, and `demo-server healthcheck` for ECS container health checks) is
//! configured by environment variables, see [`Config`] and the README. The tests start servers
//! in-process with the library; the local run starts the binary and uses the generated client:
//!
//! ```
//! use demo_server::pb::demo_client::DemoClient;
//! use demo_server::{DemoServer, Identity, ServeOptions, Stopped};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = Identity {
//!     zone: "eu-central-1a".into(),
//!     ..Identity::default()
//! };
//! let server = DemoServer::bind("127.0.0.1:0".parse()?, identity, ServeOptions::default()).await?;
//!
//! let mut client = DemoClient::connect(format!("http://{}", server.local_addr())).await?;
//! let answer = client.describe(demo_server::pb::DescribeRequest {}).await?.into_inner();
//! assert_eq!(answer.task.unwrap().zone, "eu-central-1a");
//!
//! drop(client);
//! server.abort();
//! server.wait().await?;
//! # Ok(()) }
//! ```

mod config;
mod error;
mod healthcheck;
mod identity;
mod network;
mod server;
mod service;

pub use config::{
    Config, DEFAULT_DRAIN_DELAY, DEFAULT_PORT, DEFAULT_SHUTDOWN_GRACE, METADATA_URI_VARIABLE,
};
pub use error::Error;
pub use healthcheck::check_health;
pub use identity::{Identity, IdentityOverrides};
pub use network::{CLIENT_ZONE_HEADER, NetworkEmulation, PROXY_HOPS_HEADER};
pub use server::{DemoServer, ServeOptions, ShutdownHandle, Stopped};
pub use service::Load;

/// The generated protobuf types, clients and servers of `cloudmap.demo.v1`.
#[allow(missing_docs, unreachable_pub, unused_qualifications, clippy::all)]
pub mod pb {
    tonic::include_proto!("cloudmap.demo.v1");

    /// The encoded file descriptor set of `cloudmap.demo.v1`, as server reflection serves it.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("demo_descriptor");
}
