//! The production source: Cloud Map's discovery API.

use std::collections::HashMap;
use std::fmt;

use aws_sdk_servicediscovery::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_servicediscovery::types::{HealthStatus, HealthStatusFilter, HttpInstanceSummary};

use super::source::{BoxFuture, InstanceSource, Listing};
use crate::aws::{sdk, servicediscovery_client};
use crate::error::{CloudMapErrorKind, Error};
use crate::instance::CloudMapHealth;

/// `DiscoverInstances` has no pagination token; its `MaxResults` goes up to 1,000, which is also
/// Cloud Map's quota of instances per service. Asking for the maximum returns the whole service.
const MAX_RESULTS: i32 = 1000;

/// Instances of one Cloud Map service, read with `DiscoverInstancesRevision` and
/// `DiscoverInstances` (health filter `HEALTHY_OR_ELSE_ALL`: when no instance is healthy Cloud
/// Map returns all of them, and the picker's panic mode takes over).
///
/// Works for every namespace type: HTTP, private DNS (what ECS service discovery usually
/// creates) and public DNS namespaces all answer the discovery API by namespace and service
/// name.
///
/// The SDK's own retries are off for these two calls: the poller is the retry loop (it backs off
/// on outages and slows down when throttled), and retrying inside the SDK as well would multiply
/// the calls of a throttled fleet and hold the poller for seconds.
#[derive(Debug, Clone)]
pub struct CloudMapSource {
    client: sdk::Client,
    namespace: String,
    service: String,
}

impl CloudMapSource {
    /// A source for `service` in `namespace`, with a client built by
    /// [`servicediscovery_client`] from `config` (so endpoint overrides work).
    pub fn new(
        config: &aws_types::SdkConfig,
        namespace: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        Self::from_client(servicediscovery_client(config), namespace, service)
    }

    /// A source using an existing client. Build it with [`servicediscovery_client`] if it may
    /// point at an overridden endpoint.
    pub fn from_client(
        client: sdk::Client,
        namespace: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            service: service.into(),
        }
    }

    /// The namespace name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The error a failed Cloud Map call becomes: [`Error::CloudMap`], its
    /// [`CloudMapErrorKind`] read from the AWS error code, and the error as its source (an
    /// error Cloud Map answered shows as `CODE: message`, once). Public so that a source that
    /// fronts Cloud Map (a cache, a model) reports errors exactly as this one does.
    pub fn error<E, R>(
        operation: &'static str,
        namespace: &str,
        service: &str,
        error: SdkError<E, R>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        tracing::debug!(operation, error = %DisplayErrorContext(&error), "Cloud Map call failed");
        let (kind, source): (CloudMapErrorKind, crate::BoxError) = match error {
            SdkError::ServiceError(answer) => {
                let answer = answer.into_err();
                let kind = CloudMapErrorKind::from_code(answer.code());
                (kind, Box::new(Answered(answer)))
            }
            other => (CloudMapErrorKind::Unavailable, Box::new(other)),
        };
        Error::CloudMap {
            operation,
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            kind,
            source,
        }
    }

    fn no_retries() -> sdk::config::Builder {
        sdk::config::Builder::default().retry_config(sdk::config::retry::RetryConfig::disabled())
    }

    async fn discover(&self) -> Result<Listing, Error> {
        let output = self
            .client
            .discover_instances()
            .namespace_name(&self.namespace)
            .service_name(&self.service)
            .health_status(HealthStatusFilter::HealthyOrElseAll)
            .max_results(MAX_RESULTS)
            .customize()
            .config_override(Self::no_retries())
            .send()
            .await
            .map_err(|e| Self::error("DiscoverInstances", &self.namespace, &self.service, e))?;
        let summaries = output.instances();
        if summaries.len() >= usize::try_from(MAX_RESULTS).unwrap_or(usize::MAX) {
            tracing::warn!(
                namespace = %self.namespace,
                service = %self.service,
                returned = summaries.len(),
                "DiscoverInstances returned its maximum; instances beyond it are not seen"
            );
        }
        let empty = HashMap::new();
        Ok(Listing::decode(
            output.instances_revision(),
            summaries.iter().map(|s| entry(s, &empty)),
        ))
    }
}

/// One Cloud Map instance as [`Listing::decode`] takes it.
fn entry<'a>(
    summary: &'a HttpInstanceSummary,
    empty: &'a HashMap<String, String>,
) -> (&'a str, &'a HashMap<String, String>, CloudMapHealth) {
    let health = match summary.health_status() {
        Some(HealthStatus::Healthy) => CloudMapHealth::Healthy,
        Some(HealthStatus::Unhealthy) => CloudMapHealth::Unhealthy,
        _ => CloudMapHealth::Unknown,
    };
    (
        summary.instance_id().unwrap_or_default(),
        summary.attributes().unwrap_or(empty),
        health,
    )
}

/// An error Cloud Map answered (`ServiceNotFound: ...`). The SDK's modelled error displays its
/// code and message and then hands on its inner error, which displays the same text again;
/// this shows it once and ends the chain there (the kind is in [`CloudMapErrorKind`]).
struct Answered<E>(E);

impl<E: ProvideErrorMetadata> fmt::Display for Answered<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.0.code().unwrap_or("unknown error");
        match self.0.message() {
            Some(message) if !message.is_empty() => write!(f, "{code}: {message}"),
            _ => f.write_str(code),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for Answered<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: ProvideErrorMetadata + fmt::Debug> std::error::Error for Answered<E> {}

impl InstanceSource for CloudMapSource {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        Box::pin(async move {
            let output = self
                .client
                .discover_instances_revision()
                .namespace_name(&self.namespace)
                .service_name(&self.service)
                .customize()
                .config_override(Self::no_retries())
                .send()
                .await
                .map_err(|e| {
                    Self::error(
                        "DiscoverInstancesRevision",
                        &self.namespace,
                        &self.service,
                        e,
                    )
                })?;
            Ok(output.instances_revision())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        Box::pin(self.discover())
    }

    fn kind(&self) -> super::SourceKind {
        super::SourceKind::CloudMap
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_servicediscovery::operation::discover_instances::DiscoverInstancesError;
    use aws_sdk_servicediscovery::types::error::ServiceNotFound;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn answered(code: &str, message: &str) -> SdkError<DiscoverInstancesError, Response> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        let error = match code {
            "ServiceNotFound" => DiscoverInstancesError::ServiceNotFound(
                ServiceNotFound::builder()
                    .message(message)
                    .meta(meta)
                    .build(),
            ),
            _ => DiscoverInstancesError::generic(meta),
        };
        let status = StatusCode::try_from(400_u16).unwrap();
        SdkError::service_error(error, Response::new(status, SdkBody::empty()))
    }

    #[test]
    fn an_answered_error_says_its_code_and_message_once() {
        let error = CloudMapSource::error(
            "DiscoverInstances",
            "ns",
            "no-such-service",
            answered("ServiceNotFound", "Service not found."),
        );
        assert_eq!(
            error.cloud_map_kind(),
            Some(CloudMapErrorKind::ServiceNotFound)
        );
        assert_eq!(
            crate::error::Chain(&error).to_string(),
            "Cloud Map DiscoverInstances for service `no-such-service` in namespace `ns` \
             failed: ServiceNotFound: Service not found."
        );
    }

    #[test]
    fn unmodelled_codes_are_classified_too() {
        let denied = CloudMapSource::error(
            "DiscoverInstances",
            "ns",
            "svc",
            answered("AccessDeniedException", "not authorized"),
        );
        assert_eq!(
            denied.cloud_map_kind(),
            Some(CloudMapErrorKind::AccessDenied)
        );
        let throttled = CloudMapSource::error(
            "DiscoverInstances",
            "ns",
            "svc",
            answered("RequestLimitExceeded", "Rate exceeded"),
        );
        assert_eq!(
            throttled.cloud_map_kind(),
            Some(CloudMapErrorKind::Throttled)
        );
    }
}
