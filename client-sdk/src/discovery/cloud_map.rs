//! The production source: Cloud Map's discovery API.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use aws_sdk_servicediscovery::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_servicediscovery::types::{
    FilterCondition, HealthStatus, HealthStatusFilter, HttpInstanceSummary, NamespaceFilter,
    NamespaceFilterName, NamespaceSummary,
};

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
///
/// A namespace another account shares with the caller's through AWS RAM is read with
/// [`CloudMapSource::with_owner`] (see [`NamespaceOwner`]).
#[derive(Debug, Clone)]
pub struct CloudMapSource {
    client: sdk::Client,
    namespace: String,
    service: String,
    owner: NamespaceOwner,
    /// The owner [`NamespaceOwner::Detect`] found (once; shared by clones).
    detected: Arc<tokio::sync::OnceCell<String>>,
}

/// Which account owns the namespace, and so what discovery sends as `OwnerAccount`.
///
/// Cloud Map shares namespaces across accounts through AWS RAM. A consumer account must then
/// pass the owner's account ID as `OwnerAccount` to `DiscoverInstances` and
/// `DiscoverInstancesRevision` (the only calls the crate makes that take it); without it Cloud
/// Map looks for the namespace in the caller's own account and answers `NamespaceNotFound`.
/// A namespace that is not (or no longer) shared, or credentials that may not read it, fail the
/// same way with it: discovery reports a configuration error (`NamespaceNotFound` or
/// `AccessDenied`, naming the owner account), and the balancer's `ready()` and first calls fail
/// at once, `FAILED_PRECONDITION`, while polling goes on at the poll interval so an accepted
/// share is picked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum NamespaceOwner {
    /// The caller's own account: no `OwnerAccount` is sent. The default, and what works for
    /// every namespace the account owns itself.
    #[default]
    Caller,
    /// This 12-digit account ID owns the namespace: sent as `OwnerAccount` on every discovery
    /// call.
    Account(String),
    /// Found once, before the first discovery call, from the namespace's `ResourceOwner` as
    /// `ListNamespaces` (filtered by the namespace's name) lists it to the caller, then sent as
    /// [`Account`](Self::Account) is. Needs `servicediscovery:ListNamespaces` on `*` besides
    /// the discovery permissions. No namespace of that name visible to the caller is a
    /// `NamespaceNotFound` configuration error; several, owned by different accounts (the
    /// caller's own and a shared one of the same name), an `InvalidInput` one that asks for
    /// [`Account`](Self::Account).
    Detect,
}

impl NamespaceOwner {
    /// An owner account, checked: an AWS account ID is 12 digits.
    pub fn account(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        let id = id.trim();
        if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self::Account(id.to_owned()))
        } else {
            Err(Error::InvalidOption {
                name: "namespace_owner",
                reason: format!("{id:?} is not an AWS account ID (12 digits)"),
            })
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self {
            Self::Account(id) => Self::account(id.as_str()).map(|_| ()),
            Self::Caller | Self::Detect => Ok(()),
        }
    }
}

impl std::str::FromStr for NamespaceOwner {
    type Err = Error;

    /// Reads configuration: a 12-digit account ID, `detect`, or `caller` (also the empty
    /// string).
    fn from_str(value: &str) -> Result<Self, Error> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "caller" => Ok(Self::Caller),
            "detect" => Ok(Self::Detect),
            _ => Self::account(value),
        }
    }
}

/// With an owner account, a configuration error may mean the namespace is not shared with the
/// caller: the answer, with the owner it was asked for.
#[derive(Debug, thiserror::Error)]
#[error(
    "with OwnerAccount {owner}: the namespace is not shared with this account through AWS RAM, \
     or these credentials may not read it"
)]
struct NotShared {
    owner: String,
    #[source]
    source: crate::BoxError,
}

/// Whether an answer to a discovery call with `OwnerAccount` may mean a missing share.
fn not_shared(kind: CloudMapErrorKind) -> bool {
    matches!(
        kind,
        CloudMapErrorKind::NamespaceNotFound | CloudMapErrorKind::AccessDenied
    )
}

/// `ListNamespaces` shows the caller no namespace of the name (for [`NamespaceOwner::Detect`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "no namespace of this name is visible to this account (neither its own nor shared with it)"
)]
struct NotVisible;

/// `ListNamespaces` shows the caller namespaces of the same name from several accounts.
#[derive(Debug, thiserror::Error)]
#[error(
    "namespaces of this name are owned by accounts {owners:?}: set NamespaceOwner::Account to \
     choose"
)]
struct AmbiguousOwner {
    owners: Vec<String>,
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
            owner: NamespaceOwner::Caller,
            detected: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// Reads a namespace that `owner` owns (see [`NamespaceOwner`]). Fails on an owner account
    /// that is not 12 digits.
    pub fn with_owner(mut self, owner: NamespaceOwner) -> Result<Self, Error> {
        owner.validate()?;
        self.owner = owner;
        self.detected = Arc::new(tokio::sync::OnceCell::new());
        Ok(self)
    }

    /// Whose namespace this source reads.
    pub fn owner(&self) -> &NamespaceOwner {
        &self.owner
    }

    /// The `OwnerAccount` to send: none for the caller's own namespace; found once for
    /// [`NamespaceOwner::Detect`] (a failure is not kept: the next poll asks again).
    async fn owner_account(&self) -> Result<Option<&str>, Error> {
        match &self.owner {
            NamespaceOwner::Caller => Ok(None),
            NamespaceOwner::Account(id) => Ok(Some(id)),
            NamespaceOwner::Detect => self
                .detected
                .get_or_try_init(|| self.detect_owner())
                .await
                .map(|id| Some(id.as_str())),
        }
    }

    /// The namespace's owner, from `ListNamespaces` (every page, names compared here too: a
    /// stand-in may ignore the filter).
    async fn detect_owner(&self) -> Result<String, Error> {
        let failed = |kind, source: crate::BoxError| Error::CloudMap {
            operation: "ListNamespaces",
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            kind,
            source,
        };
        let filter = NamespaceFilter::builder()
            .name(NamespaceFilterName::Name)
            .values(&self.namespace)
            .condition(FilterCondition::Eq)
            .build()
            .map_err(|e| failed(CloudMapErrorKind::InvalidInput, Box::new(e)))?;
        let mut owners = BTreeSet::new();
        let mut next_token = None;
        loop {
            let page = self
                .client
                .list_namespaces()
                .filters(filter.clone())
                .set_next_token(next_token)
                .customize()
                .config_override(Self::no_retries())
                .send()
                .await
                .map_err(|e| Self::error("ListNamespaces", &self.namespace, &self.service, e))?;
            owners.extend(
                page.namespaces()
                    .iter()
                    .filter(|ns| ns.name() == Some(self.namespace.as_str()))
                    .filter_map(owner_of),
            );
            next_token = page.next_token().map(str::to_owned);
            if next_token.is_none() {
                break;
            }
        }
        let owner = single_owner(owners).map_err(|(kind, source)| failed(kind, source))?;
        tracing::info!(namespace = %self.namespace, owner = %owner, "namespace owner detected");
        Ok(owner)
    }

    /// A discovery call's error; with an owner account, an answer that may mean the namespace
    /// is not shared names it. (Not `ServiceNotFound`: the namespace was found, so it is.)
    fn discovery_error<E, R>(
        &self,
        operation: &'static str,
        owner: Option<&str>,
        error: SdkError<E, R>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        let error = Self::error(operation, &self.namespace, &self.service, error);
        match (error, owner) {
            (
                Error::CloudMap {
                    operation,
                    namespace,
                    service,
                    kind,
                    source,
                },
                Some(owner),
            ) if not_shared(kind) => Error::CloudMap {
                operation,
                namespace,
                service,
                kind,
                source: Box::new(NotShared {
                    owner: owner.to_owned(),
                    source,
                }),
            },
            (error, _) => error,
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
        let owner = self.owner_account().await?;
        let output = self
            .client
            .discover_instances()
            .namespace_name(&self.namespace)
            .service_name(&self.service)
            .set_owner_account(owner.map(str::to_owned))
            .health_status(HealthStatusFilter::HealthyOrElseAll)
            .max_results(MAX_RESULTS)
            .customize()
            .config_override(Self::no_retries())
            .send()
            .await
            .map_err(|e| self.discovery_error("DiscoverInstances", owner, e))?;
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

/// The one owner of the namespaces of a name visible to the caller, or why there is none: no
/// such namespace (`NamespaceNotFound`), or several owners (`InvalidInput`: the caller's own
/// namespace and a shared one of the same name, say).
fn single_owner(owners: BTreeSet<String>) -> Result<String, (CloudMapErrorKind, crate::BoxError)> {
    let mut owners = owners.into_iter();
    match (owners.next(), owners.next()) {
        (Some(owner), None) => Ok(owner),
        (None, _) => Err((CloudMapErrorKind::NamespaceNotFound, Box::new(NotVisible))),
        (Some(first), Some(second)) => Err((
            CloudMapErrorKind::InvalidInput,
            Box::new(AmbiguousOwner {
                owners: [first, second].into_iter().chain(owners).collect(),
            }),
        )),
    }
}

/// The account that owns a listed namespace: its `ResourceOwner`, else the account field of its
/// ARN (`arn:aws:servicediscovery:REGION:ACCOUNT:namespace/ID`; stand-ins such as moto leave
/// `ResourceOwner` out).
fn owner_of(namespace: &NamespaceSummary) -> Option<String> {
    namespace
        .resource_owner()
        .or_else(|| namespace.arn()?.split(':').nth(4))
        .map(str::trim)
        .filter(|owner| !owner.is_empty())
        .map(str::to_owned)
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
            let owner = self.owner_account().await?;
            let output = self
                .client
                .discover_instances_revision()
                .namespace_name(&self.namespace)
                .service_name(&self.service)
                .set_owner_account(owner.map(str::to_owned))
                .customize()
                .config_override(Self::no_retries())
                .send()
                .await
                .map_err(|e| self.discovery_error("DiscoverInstancesRevision", owner, e))?;
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
    fn owner_accounts_are_read_and_checked() {
        assert_eq!(
            "123456789012".parse::<NamespaceOwner>().unwrap(),
            NamespaceOwner::Account("123456789012".into())
        );
        assert_eq!(
            " Detect ".parse::<NamespaceOwner>().unwrap(),
            NamespaceOwner::Detect
        );
        assert_eq!(
            "".parse::<NamespaceOwner>().unwrap(),
            NamespaceOwner::Caller
        );
        for bad in [
            "12345678901",
            "1234567890123",
            "12345678901a",
            "arn:aws:iam::1:root",
        ] {
            let error = bad.parse::<NamespaceOwner>().unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidOption {
                        name: "namespace_owner",
                        ..
                    }
                ),
                "{bad}"
            );
        }
        assert!(NamespaceOwner::Account("42".into()).validate().is_err());
    }

    #[test]
    fn detection_takes_one_owner_and_refuses_to_guess_between_several() {
        let set = |owners: &[&str]| owners.iter().map(|o| (*o).to_owned()).collect();
        assert_eq!(
            single_owner(set(&["111122223333"])).unwrap(),
            "111122223333"
        );
        let (kind, _) = single_owner(set(&[])).unwrap_err();
        assert_eq!(kind, CloudMapErrorKind::NamespaceNotFound);
        let (kind, error) = single_owner(set(&["444455556666", "111122223333"])).unwrap_err();
        assert_eq!(kind, CloudMapErrorKind::InvalidInput);
        assert!(kind.is_configuration());
        assert_eq!(
            error.to_string(),
            "namespaces of this name are owned by accounts [\"111122223333\", \"444455556666\"]: \
             set NamespaceOwner::Account to choose"
        );
    }

    #[test]
    fn a_namespace_owner_comes_from_resource_owner_else_the_arn() {
        let summary = |owner: Option<&str>, arn: Option<&str>| {
            NamespaceSummary::builder()
                .set_resource_owner(owner.map(str::to_owned))
                .set_arn(arn.map(str::to_owned))
                .build()
        };
        let arn = "arn:aws:servicediscovery:eu-central-1:111122223333:namespace/ns-1";
        assert_eq!(
            owner_of(&summary(Some("444455556666"), Some(arn))).as_deref(),
            Some("444455556666")
        );
        assert_eq!(
            owner_of(&summary(None, Some(arn))).as_deref(),
            Some("111122223333")
        );
        assert_eq!(owner_of(&summary(None, Some("not-an-arn"))), None);
        assert_eq!(owner_of(&summary(None, None)), None);
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
