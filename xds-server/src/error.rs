//! The server's errors: configuration (refused at start), and what a stream or name can fail on.

use std::net::SocketAddr;

/// Everything the server can fail on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting from the environment or the command line is not valid. The message names it.
    #[error("invalid setting {name} = {value:?}: {reason}")]
    Config {
        /// The variable or flag, e.g. `CLOUDMAP_XDS_LISTEN`.
        name: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be read or used.
    #[error("TLS: {reason}")]
    Tls {
        /// What failed, with the file.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("the gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
    /// Writing the bootstrap file failed.
    #[error("cannot write the bootstrap file {path}")]
    Write {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Discovery could not start (an invalid option, or no runtime).
    #[error("discovery could not start")]
    Discovery(#[source] cloudmap_balancer::Error),
}

/// Why a resource name does not name a Cloud Map service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("empty name")]
    Empty,
    /// The name has no `.NAMESPACE` part and no alias matches it.
    #[error("{0:?} is not SERVICE.NAMESPACE and no alias names it")]
    NoNamespace(String),
    /// The name has a character Cloud Map names cannot have.
    #[error("{0:?} has a character Cloud Map service and namespace names cannot have")]
    BadCharacter(String),
    /// The name is longer than a Cloud Map service (127) and namespace (1,024) name together.
    #[error("{0:?} is too long")]
    TooLong(String),
}
