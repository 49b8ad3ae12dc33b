//! The crate's error type.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error from a lower layer (the AWS SDK, tonic, a custom instance source).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in this crate. Calls through the balanced channel see these as
/// a [`tonic::Status`] (see [`Error::code`]), with the error as its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder option is out of range.
    #[error("invalid option `{name}`: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The balancer was built outside a Tokio runtime (it spawns its background tasks there).
    #[error("the balancer must be built inside a Tokio runtime")]
    NoRuntime,
    /// A Cloud Map call failed. [`CloudMapErrorKind`] says how, and so what discovery does
    /// about it: keep polling gently (throttled), back off (unavailable), or, for a
    /// configuration error, fail the first snapshot at once (see [`Error::cloud_map_kind`]).
    #[error("Cloud Map {operation} for service `{service}` in namespace `{namespace}` failed")]
    CloudMap {
        /// `DiscoverInstances` or `DiscoverInstancesRevision`.
        operation: &'static str,
        /// The namespace.
        namespace: String,
        /// The service.
        service: String,
        /// What kind of failure, from the AWS error code.
        kind: CloudMapErrorKind,
        /// The SDK's error: for an error Cloud Map answered, its code and message.
        #[source]
        source: BoxError,
    },
    /// A custom instance source failed.
    #[error("the instance source failed")]
    Source(#[source] BoxError),
    /// No snapshot of the service arrived within the first-snapshot timeout. When discovery
    /// failed meanwhile, the message names the wait and the failure names the service (each
    /// once).
    #[error("{}", not_discovered(.namespace, .service, .waited, .last_error.is_some()))]
    NotDiscovered {
        /// The namespace.
        namespace: String,
        /// The service.
        service: String,
        /// How long the call waited.
        waited: Duration,
        /// The last discovery error, if discovery failed.
        #[source]
        last_error: Option<Arc<Error>>,
    },
    /// The snapshot has no instance that can be picked.
    #[error("no eligible instance of service `{service}` in namespace `{namespace}`")]
    NoInstances {
        /// The namespace.
        namespace: String,
        /// The service.
        service: String,
    },
    /// Connecting to an instance failed (the call was not sent to it).
    #[error("could not connect to instance `{instance}` at {addr} of service `{service}`")]
    Connect {
        /// The instance ID.
        instance: String,
        /// Its address.
        addr: SocketAddr,
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// An attempt on an instance failed in the transport: before its response (nothing sent,
    /// refused, reset, or the connection failed) or while its response streamed. The code says
    /// which (the crate docs' "Transport failures" table): `UNAVAILABLE` for a request not sent
    /// or a connection that failed, gRPC's mapping of the reason of a stream reset (`CANCEL` →
    /// `CANCELLED`, …), `DEADLINE_EXCEEDED` for a timeout, `UNKNOWN` for an error the balancer
    /// does not know.
    #[cfg(feature = "tonic")]
    #[error("instance `{instance}` at {addr} of service `{service}`: {what}")]
    Transport {
        /// The instance ID.
        instance: String,
        /// Its address.
        addr: SocketAddr,
        /// The service.
        service: String,
        /// The gRPC code the call fails with.
        code: tonic::Code,
        /// What happened.
        what: &'static str,
        /// The transport's error (a `tonic::transport::Error`, or the `tonic::Status` a broken
        /// response body ended with), first in the source chain.
        #[source]
        source: BoxError,
    },
    /// The call's deadline (`grpc-timeout`) passed before it was answered.
    #[error("deadline of {deadline:?} exceeded after {attempts} attempt(s) on service `{service}`")]
    DeadlineExceeded {
        /// The service.
        service: String,
        /// The call's deadline.
        deadline: Duration,
        /// Attempts started.
        attempts: u32,
    },
    /// The own zone could not be read from the ECS task metadata endpoint.
    #[error("reading the own zone from the ECS task metadata endpoint {uri}: {reason}")]
    ZoneDetection {
        /// The metadata URI used.
        uri: String,
        /// What went wrong.
        reason: &'static str,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// Discovery failed: its error as discovery reported it (discovery shares one error between
    /// everyone waiting for a refresh). Displays and chains exactly as that error.
    #[error(transparent)]
    Discovery(Arc<Error>),
    /// The background tasks of a balancer or of a `discovery::Discovery` are
    /// gone (their runtime shut down).
    #[error(
        "the background tasks for service `{service}` in namespace `{namespace}` have shut down"
    )]
    Closed {
        /// The namespace.
        namespace: String,
        /// The service.
        service: String,
    },
}

fn not_discovered(namespace: &str, service: &str, waited: &Duration, failed: bool) -> String {
    if failed {
        format!("nothing discovered within {waited:?}")
    } else {
        format!(
            "no instances of service `{service}` in namespace `{namespace}` discovered within {waited:?}"
        )
    }
}

/// How a Cloud Map call failed, from the AWS error code. Discovery reacts to each differently
/// (see [`discovery`](crate::discovery)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloudMapErrorKind {
    /// `RequestLimitExceeded` (or another throttling code): the account's discovery quota is
    /// spent. Discovery keeps its snapshot and polls more slowly, with jitter.
    Throttled,
    /// `ServiceNotFound`: no such service in the namespace.
    ServiceNotFound,
    /// `NamespaceNotFound`: no such namespace.
    NamespaceNotFound,
    /// `AccessDeniedException`: the credentials may not call discovery on this service.
    AccessDenied,
    /// `InvalidInput`: Cloud Map refuses the namespace or service name.
    InvalidInput,
    /// Anything else: an outage, a timeout, a network error, an unexpected answer. Discovery
    /// backs off and retries.
    Unavailable,
}

impl CloudMapErrorKind {
    /// Classifies an AWS error code; `None` (no code: the call did not get an answer) is
    /// [`Unavailable`](Self::Unavailable).
    pub fn from_code(code: Option<&str>) -> Self {
        match code {
            // The codes the AWS SDKs treat as throttling; Cloud Map answers the first.
            Some(
                "RequestLimitExceeded"
                | "ThrottlingException"
                | "Throttling"
                | "TooManyRequestsException"
                | "RequestThrottled"
                | "RequestThrottledException",
            ) => Self::Throttled,
            Some("ServiceNotFound") => Self::ServiceNotFound,
            Some("NamespaceNotFound") => Self::NamespaceNotFound,
            Some("AccessDeniedException" | "AccessDenied") => Self::AccessDenied,
            Some("InvalidInput") => Self::InvalidInput,
            _ => Self::Unavailable,
        }
    }

    /// Whether this is a configuration error: the service or namespace does not exist, the
    /// credentials may not read it, or its name is invalid. No retry fixes it by itself (though
    /// the service may be created later, which discovery notices at its next poll).
    pub fn is_configuration(self) -> bool {
        matches!(
            self,
            Self::ServiceNotFound
                | Self::NamespaceNotFound
                | Self::AccessDenied
                | Self::InvalidInput
        )
    }

    /// A short stable name for logs and metric labels, e.g. `service_not_found`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::ServiceNotFound => "service_not_found",
            Self::NamespaceNotFound => "namespace_not_found",
            Self::AccessDenied => "access_denied",
            Self::InvalidInput => "invalid_input",
            Self::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for CloudMapErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// How Cloud Map failed, when this error is (or hands on, as [`Error::Discovery`]) a failed
    /// Cloud Map call. A configuration error ([`CloudMapErrorKind::is_configuration`]) is what
    /// [`Balancer::ready`](crate::Balancer) and calls before the first snapshot fail with at
    /// once.
    pub fn cloud_map_kind(&self) -> Option<CloudMapErrorKind> {
        match self {
            Self::CloudMap { kind, .. } => Some(*kind),
            Self::Discovery(error) => error.cloud_map_kind(),
            _ => None,
        }
    }
}

#[cfg(feature = "tonic")]
impl Error {
    /// The gRPC status code a call sees for this error: `FAILED_PRECONDITION` for a Cloud Map
    /// configuration error (the service or namespace does not exist, access is denied: a retry
    /// does not help until someone fixes it, and unlike `NOT_FOUND` it cannot be mistaken for an
    /// answer of the called service), `UNAVAILABLE` for everything a retry may fix (discovery,
    /// connection, no instances), `INTERNAL` otherwise.
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::CloudMap { kind, .. } if kind.is_configuration() => {
                tonic::Code::FailedPrecondition
            }
            Self::CloudMap { .. }
            | Self::Source(_)
            | Self::NotDiscovered { .. }
            | Self::NoInstances { .. }
            | Self::Connect { .. }
            | Self::Closed { .. } => tonic::Code::Unavailable,
            Self::Discovery(error) => error.code(),
            Self::Transport { code, .. } => *code,
            Self::DeadlineExceeded { .. } => tonic::Code::DeadlineExceeded,
            Self::InvalidOption { .. } | Self::NoRuntime | Self::ZoneDetection { .. } => {
                tonic::Code::Internal
            }
        }
    }
}

#[cfg(feature = "tonic")]
impl From<Error> for tonic::Status {
    /// The status a call sees: the code from [`Error::code`], the whole error chain as the
    /// message (a gRPC message is text), the error itself as the source.
    fn from(error: Error) -> Self {
        let message = Chain(&error).to_string();
        let mut status = tonic::Status::new(error.code(), message);
        status.set_source(Arc::new(error));
        status
    }
}

/// Displays an error with its whole source chain, `a: b: c`, for logs.
#[cfg(feature = "aws")]
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

#[cfg(feature = "aws")]
impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "tonic"))]
mod tests {
    use super::*;

    #[test]
    fn a_discovery_error_is_handed_on_as_it_is() {
        let shared = Arc::new(Error::CloudMap {
            operation: "DiscoverInstances",
            namespace: "ns".into(),
            service: "echo".into(),
            kind: CloudMapErrorKind::Throttled,
            source: Box::new(Error::Source("throttled".into())),
        });
        let owned = Error::Discovery(Arc::clone(&shared));
        assert_eq!(owned.code(), tonic::Code::Unavailable);
        assert_eq!(Chain(&owned).to_string(), Chain(&*shared).to_string());
        assert_eq!(
            Chain(&owned).to_string(),
            "Cloud Map DiscoverInstances for service `echo` in namespace `ns` failed: \
             the instance source failed: throttled"
        );
        let internal = Error::Discovery(Arc::new(Error::NoRuntime));
        assert_eq!(internal.code(), tonic::Code::Internal);
        assert_eq!(owned.cloud_map_kind(), Some(CloudMapErrorKind::Throttled));
    }

    #[test]
    fn configuration_errors_do_not_invite_retries() {
        let missing = Error::Discovery(Arc::new(Error::CloudMap {
            operation: "DiscoverInstances",
            namespace: "ns".into(),
            service: "echo".into(),
            kind: CloudMapErrorKind::from_code(Some("ServiceNotFound")),
            source: "ServiceNotFound: echo".into(),
        }));
        assert_eq!(missing.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            missing.cloud_map_kind(),
            Some(CloudMapErrorKind::ServiceNotFound)
        );
        for (code, kind) in [
            ("RequestLimitExceeded", CloudMapErrorKind::Throttled),
            ("ThrottlingException", CloudMapErrorKind::Throttled),
            ("NamespaceNotFound", CloudMapErrorKind::NamespaceNotFound),
            ("AccessDeniedException", CloudMapErrorKind::AccessDenied),
            ("InvalidInput", CloudMapErrorKind::InvalidInput),
            ("InternalFailure", CloudMapErrorKind::Unavailable),
        ] {
            assert_eq!(CloudMapErrorKind::from_code(Some(code)), kind, "{code}");
        }
        assert_eq!(
            CloudMapErrorKind::from_code(None),
            CloudMapErrorKind::Unavailable
        );
        assert!(!CloudMapErrorKind::Throttled.is_configuration());
        assert!(CloudMapErrorKind::AccessDenied.is_configuration());
    }

    #[test]
    fn a_timed_out_first_snapshot_says_each_thing_once() {
        let failed = Error::NotDiscovered {
            namespace: "ns".into(),
            service: "echo".into(),
            waited: Duration::from_secs(5),
            last_error: Some(Arc::new(Error::CloudMap {
                operation: "DiscoverInstances",
                namespace: "ns".into(),
                service: "echo".into(),
                kind: CloudMapErrorKind::Unavailable,
                source: "dispatch failure".into(),
            })),
        };
        assert_eq!(
            Chain(&failed).to_string(),
            "nothing discovered within 5s: Cloud Map DiscoverInstances for service `echo` in \
             namespace `ns` failed: dispatch failure"
        );
        let slow = Error::NotDiscovered {
            namespace: "ns".into(),
            service: "echo".into(),
            waited: Duration::from_secs(5),
            last_error: None,
        };
        assert_eq!(
            slow.to_string(),
            "no instances of service `echo` in namespace `ns` discovered within 5s"
        );
    }
}
