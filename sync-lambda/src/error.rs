//! The crate's one error type, and its translation to Lambda's outcome at the edge.

use cloudmap_balancer::contract::LimitError;

/// A boxed error source (the SDK's error types differ per operation).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Throttling, 5xx, timeouts, connection failures, and any AWS error not known to be
    /// permanent: the invocation fails so that Lambda retries it (and, when retries run out, the
    /// on-failure destination keeps the event).
    Retryable,
    /// Retrying cannot help (the input itself is wrong): logged once, the invocation succeeds.
    Permanent,
}

impl ErrorKind {
    /// `retryable` or `permanent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
        }
    }
}

/// What can go wrong in the sync Lambda.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// An AWS call failed (after the SDK's own retries).
    #[error("{service} {operation} failed ({}{})", kind.as_str(), code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Aws {
        /// `ecs`, `servicediscovery` or `cloudwatch`.
        service: &'static str,
        /// The operation, e.g. `RegisterInstance`.
        operation: &'static str,
        /// Retryable or permanent.
        kind: ErrorKind,
        /// The AWS error code, when the service sent one.
        code: Option<String>,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The attributes to write would exceed Cloud Map's limits even without every optional key
    /// (users' and ECS's keys leave no room for the required ones): permanent, nothing is
    /// written.
    #[error("attributes for instance {instance_id} of {service_id} exceed Cloud Map's limits")]
    Limits {
        /// Cloud Map service ID.
        service_id: String,
        /// Instance ID.
        instance_id: String,
        /// Which limit.
        #[source]
        source: LimitError,
    },
    /// An environment variable has a value that cannot be used.
    #[error("configuration {name}={value:?}: {reason}")]
    Config {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl SyncError {
    /// Whether the invocation should fail so that Lambda retries it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Aws { kind, .. } => *kind,
            Self::Limits { .. } | Self::Config { .. } => ErrorKind::Permanent,
        }
    }

    /// Whether the invocation should fail so that Lambda retries it.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Retryable
    }

    /// A short stable name for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Aws {
                kind: ErrorKind::Retryable,
                ..
            } => "aws_retryable",
            Self::Aws {
                kind: ErrorKind::Permanent,
                ..
            } => "aws_permanent",
            Self::Limits { .. } => "limits",
            Self::Config { .. } => "config",
        }
    }
}

impl From<SyncError> for lambda_runtime::Diagnostic {
    fn from(error: SyncError) -> Self {
        // The message carries the whole source chain: Lambda shows it in the function's error
        // metrics and the on-failure destination record.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self {
            error_type: format!("CloudMapSync.{}", error.class()),
            error_message: message,
        }
    }
}
