use std::time::Duration;

/// What can go wrong with the local stack.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pinned Python tools could not be installed.
    #[error("could not install the local stack's Python tools (run scripts/bootstrap): {detail}")]
    Bootstrap {
        /// What failed.
        detail: String,
    },
    /// The moto launcher could not be started or did not report its port.
    #[error("moto did not start: {detail}")]
    Start {
        /// What failed.
        detail: String,
    },
    /// moto did not answer within the time given.
    #[error("moto did not answer on {endpoint} within {waited:?}")]
    NotReady {
        /// The endpoint tried.
        endpoint: String,
        /// How long it was tried.
        waited: Duration,
    },
    /// An HTTP exchange with moto's own API failed.
    #[error("moto API request {what} failed")]
    Http {
        /// The request.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// moto answered something unexpected.
    #[error("unexpected answer from moto to {what}: {detail}")]
    Unexpected {
        /// The request.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// cargo-lambda's emulator could not be started or driven.
    #[error("Lambda emulator: {what}: {detail}")]
    Emulator {
        /// What was being done.
        what: String,
        /// What failed.
        detail: String,
    },
    /// An ECS call failed.
    #[error("ECS {operation} failed")]
    Ecs {
        /// The operation.
        operation: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Cloud Map call failed.
    #[error("Cloud Map {operation} failed")]
    CloudMap {
        /// The operation.
        operation: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
