use std::net::SocketAddr;
use std::time::Duration;

/// What can go wrong starting, running or health-checking the demo server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An environment variable holds a value that cannot be used.
    #[error("invalid configuration: {variable}={value:?}: expected {expected}")]
    Config {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it should have held.
        expected: &'static str,
    },
    /// `ECS_CONTAINER_METADATA_URI_V4` is not a plain `http://` URI.
    #[error("invalid task metadata endpoint {uri:?}: {reason}")]
    MetadataUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The task metadata endpoint could not be reached or broke off the exchange.
    #[error("task metadata request GET {url} failed")]
    MetadataRequest {
        /// The URL requested.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The task metadata endpoint did not answer within the time allowed.
    #[error("task metadata request GET {url} timed out after {after:?}")]
    MetadataTimeout {
        /// The URL requested.
        url: String,
        /// The time allowed.
        after: Duration,
    },
    /// The task metadata endpoint answered with an HTTP error.
    #[error("task metadata request GET {url} answered HTTP {status}")]
    MetadataStatus {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The task metadata endpoint answered something that is not the expected JSON.
    #[error("task metadata from GET {url} is not valid JSON of the expected shape")]
    MetadataJson {
        /// The URL requested.
        url: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The listening socket could not be bound or inspected.
    #[error("could not listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listening socket's address could not be read.
    #[error("could not read the listening socket's address")]
    LocalAddr(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("could not install the SIGTERM/SIGINT handlers")]
    Signal(#[source] std::io::Error),
    /// The reflection service could not read a file descriptor set (a build defect).
    #[error("could not build the server reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("the gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
    /// The server task panicked or was cancelled.
    #[error("the gRPC server task ended abnormally")]
    ServerTask(#[source] tokio::task::JoinError),
    /// The health check could not connect to the server.
    #[error("health check: cannot connect to {addr}")]
    HealthConnect {
        /// The address checked.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The health check call failed.
    #[error("health check of {addr} failed")]
    HealthCall {
        /// The address checked.
        addr: SocketAddr,
        /// The gRPC status.
        #[source]
        source: tonic::Status,
    },
    /// The health check got no answer in time.
    #[error("health check of {addr} got no answer within {after:?}")]
    HealthTimeout {
        /// The address checked.
        addr: SocketAddr,
        /// The time allowed.
        after: Duration,
    },
    /// The server answered the health check with a status other than `SERVING`.
    #[error("health check of {addr}: service {service:?} is {status}")]
    NotServing {
        /// The address checked.
        addr: SocketAddr,
        /// The service checked (`""` is the whole server).
        service: String,
        /// The status reported, e.g. `NOT_SERVING`.
        status: &'static str,
    },
}
