//! One poller per Cloud Map service per process: every balancer and caller fleet that names the
//! same service, read the same way, shares one [`Discovery`] and so one set of API calls.
//!
//! Two pollers are the same only when everything that decides *what* Cloud Map answers and
//! *how often* it is asked is the same ([`Key`]):
//!
//! - the namespace and service names, and the namespace's owner ([`NamespaceOwner`]: a
//!   shared namespace read with `OwnerAccount` is another namespace than the caller's own of
//!   the same name);
//! - the caller's identity: the credentials provider (by its identity-cache partition, which
//!   every clone of one provider shares and no other provider has), the region, the endpoint
//!   URL override, FIPS and dual-stack settings. So balancers built from different
//!   `SdkConfig`s for different accounts, roles, regions or endpoints never share, while every
//!   balancer built from one `aws_config::load_defaults` does;
//! - the [`DiscoveryOptions`];
//! - the Tokio runtime (a poller runs on the runtime of the balancer that started it, and stops
//!   with it).
//!
//! Settings outside the key (the HTTP client, timeouts, the SDK's retry settings) are those of
//! the first balancer built. A poller stops when its last user is dropped; a later balancer
//! starts a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use aws_smithy_runtime_api::client::identity::{IdentityCachePartition, ResolveIdentity};

use super::{Discovery, DiscoveryOptions, NamespaceOwner, Running};
use crate::telemetry::Ident;

/// Who asks Cloud Map, and where: the part of an `SdkConfig` that decides what it answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientIdentity {
    credentials: Option<IdentityCachePartition>,
    region: Option<String>,
    endpoint_url: Option<String>,
    use_fips: Option<bool>,
    use_dual_stack: Option<bool>,
}

impl ClientIdentity {
    pub(crate) fn of(config: &aws_types::SdkConfig) -> Self {
        Self {
            credentials: config
                .credentials_provider()
                .and_then(|provider| provider.cache_partition()),
            region: config.region().map(ToString::to_string),
            endpoint_url: config.endpoint_url().map(str::to_owned),
            use_fips: config.use_fips(),
            use_dual_stack: config.use_dual_stack(),
        }
    }
}

/// What makes two pollers interchangeable (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    runtime: tokio::runtime::Id,
    client: ClientIdentity,
    namespace: String,
    service: String,
    owner: NamespaceOwner,
    options: DiscoveryOptions,
}

impl Key {
    pub(crate) fn new(
        runtime: &tokio::runtime::Handle,
        client: &ClientIdentity,
        ident: &Ident,
        owner: &NamespaceOwner,
        options: &DiscoveryOptions,
    ) -> Self {
        Self {
            runtime: runtime.id(),
            client: client.clone(),
            namespace: ident.namespace.clone(),
            service: ident.service.clone(),
            owner: owner.clone(),
            options: options.clone(),
        }
    }
}

static POLLERS: Mutex<Option<HashMap<Key, Weak<Running>>>> = Mutex::new(None);

/// The running poller for `key`, or a new one from `start`.
pub(crate) fn discovery(key: Key, start: impl FnOnce() -> Discovery) -> Discovery {
    let mut pollers = POLLERS.lock().unwrap_or_else(PoisonError::into_inner);
    let pollers = pollers.get_or_insert_with(HashMap::new);
    if let Some(running) = pollers.get(&key).and_then(Weak::upgrade)
        && running.is_alive()
    {
        return Discovery { inner: running };
    }
    pollers.retain(|_, poller| poller.strong_count() > 0);
    let discovery = start();
    pollers.insert(key, Arc::downgrade(&discovery.inner));
    discovery
}

#[cfg(test)]
mod tests {
    use aws_credential_types::Credentials;
    use aws_types::region::Region;
    use aws_types::sdk_config::{SdkConfig, SharedCredentialsProvider};

    use super::*;

    fn config(
        region: &str,
        endpoint: Option<&str>,
        credentials: SharedCredentialsProvider,
    ) -> SdkConfig {
        let mut builder = SdkConfig::builder()
            .region(Region::new(region.to_owned()))
            .credentials_provider(credentials);
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        builder.build()
    }

    #[test]
    fn only_the_same_caller_at_the_same_place_is_the_same_identity() {
        let credentials = SharedCredentialsProvider::new(Credentials::for_tests());
        let base = ClientIdentity::of(&config("eu-central-1", None, credentials.clone()));
        // A clone of the provider (what every SdkConfig from one load_defaults holds).
        assert_eq!(
            base,
            ClientIdentity::of(&config("eu-central-1", None, credentials.clone()))
        );
        let others = [
            config("eu-west-1", None, credentials.clone()),
            config(
                "eu-central-1",
                Some("http://127.0.0.1:4566"),
                credentials.clone(),
            ),
            // The same keys in another provider: it may resolve to another role at any time.
            config(
                "eu-central-1",
                None,
                SharedCredentialsProvider::new(Credentials::for_tests()),
            ),
            config("eu-central-1", None, credentials)
                .to_builder()
                .use_fips(true)
                .build(),
        ];
        for other in &others {
            assert_ne!(base, ClientIdentity::of(other), "{other:?}");
        }
    }

    #[test]
    fn the_key_separates_services_and_schedules() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let credentials = SharedCredentialsProvider::new(Credentials::for_tests());
        let client = ClientIdentity::of(&config("eu-central-1", None, credentials));
        let ident = |service: &str| Ident {
            namespace: "ns".into(),
            service: service.into(),
        };
        let options = DiscoveryOptions::default();
        let own = NamespaceOwner::Caller;
        let key = Key::new(runtime.handle(), &client, &ident("echo"), &own, &options);
        assert_eq!(
            key,
            Key::new(runtime.handle(), &client, &ident("echo"), &own, &options)
        );
        assert_ne!(
            key,
            Key::new(runtime.handle(), &client, &ident("other"), &own, &options)
        );
        let faster = DiscoveryOptions {
            poll_interval: std::time::Duration::from_secs(5),
            ..DiscoveryOptions::default()
        };
        assert_ne!(
            key,
            Key::new(runtime.handle(), &client, &ident("echo"), &own, &faster)
        );
        // A namespace shared by another account is another namespace.
        assert_ne!(
            key,
            Key::new(
                runtime.handle(),
                &client,
                &ident("echo"),
                &NamespaceOwner::Account("111122223333".into()),
                &options
            )
        );
        let elsewhere = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_ne!(
            key,
            Key::new(elsewhere.handle(), &client, &ident("echo"), &own, &options)
        );
    }
}
