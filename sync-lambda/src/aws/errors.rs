//! SDK errors to [`SyncError`]: which failures a retry can fix.

use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};

use crate::error::{ErrorKind, SyncError};

/// Error codes that say the request itself is wrong: the same request will fail again.
const PERMANENT_CODES: &[&str] = &[
    "InvalidInput",
    "InvalidParameterException",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "ValidationError",
    "ValidationException",
    "ClusterNotFoundException",
    "ServiceNotFound",
    "NamespaceNotFound",
    "ResourceLimitExceeded",
    "UnsupportedFeatureException",
];

/// Throttling codes across AWS services (some come with status 400, not 429).
pub(crate) const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// Classifies a service's error answer. Throttling and server errors are retryable, errors that
/// name a bad request are permanent, and anything else (access denied, unknown codes) is
/// retryable: failing keeps the event for Lambda's retries and the on-failure destination, where
/// acknowledging it would lose it silently.
pub(crate) fn classify_answer(status: u16, code: Option<&str>) -> ErrorKind {
    let code = code.unwrap_or_default();
    if status >= 500 || status == 429 || THROTTLING_CODES.contains(&code) {
        ErrorKind::Retryable
    } else if PERMANENT_CODES.contains(&code) {
        ErrorKind::Permanent
    } else {
        ErrorKind::Retryable
    }
}

/// Maps an SDK error of `service`'s `operation` to a [`SyncError::Aws`].
pub(crate) fn aws_error<E>(
    service: &'static str,
    operation: &'static str,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> SyncError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |error| {
        let (kind, code) = match &error {
            SdkError::ServiceError(context) => {
                let code = context.err().code().map(str::to_owned);
                let status = context.raw().status().as_u16();
                (classify_answer(status, code.as_deref()), code)
            }
            // The request could not be built: a bug, not a passing condition.
            SdkError::ConstructionFailure(_) => (ErrorKind::Permanent, None),
            // Timeouts, connection failures, unreadable answers.
            _ => (ErrorKind::Retryable, None),
        };
        SyncError::Aws {
            service,
            operation,
            kind,
            code,
            source: Box::new(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        use ErrorKind::*;
        assert_eq!(classify_answer(400, Some("ThrottlingException")), Retryable);
        assert_eq!(classify_answer(400, Some("Throttling")), Retryable);
        assert_eq!(classify_answer(429, None), Retryable);
        assert_eq!(classify_answer(500, Some("InternalFailure")), Retryable);
        assert_eq!(classify_answer(503, Some("ServiceUnavailable")), Retryable);
        assert_eq!(
            classify_answer(500, Some("InvalidInput")),
            Retryable,
            "5xx wins"
        );
        assert_eq!(classify_answer(400, Some("InvalidInput")), Permanent);
        assert_eq!(
            classify_answer(400, Some("ClusterNotFoundException")),
            Permanent
        );
        assert_eq!(classify_answer(400, Some("ServiceNotFound")), Permanent);
        assert_eq!(
            classify_answer(400, Some("AccessDeniedException")),
            Retryable
        );
        assert_eq!(classify_answer(400, None), Retryable);
    }
}
