//! The production source: Cloud Map's discovery API.

use std::collections::HashMap;

use aws_sdk_servicediscovery::error::DisplayErrorContext;
use aws_sdk_servicediscovery::types::{HealthStatus, HealthStatusFilter, HttpInstanceSummary};

use super::source::{BoxFuture, InstanceSource, Listing};
use crate::aws::{sdk, servicediscovery_client};
use crate::error::Error;
use crate::instance::{CloudMapHealth, Instance};

/// `DiscoverInstances` has no pagination token; its `MaxResults` goes up to 1,000, which is also
/// Cloud Map's quota of instances per service. Asking for the maximum returns the whole service.
const MAX_RESULTS: i32 = 1000;

/// Instances of one Cloud Map service, read with `DiscoverInstancesRevision` and
/// `DiscoverInstances` (health filter `HEALTHY_OR_ELSE_ALL`: when no instance is healthy Cloud
/// Map returns all of them, and the picker's panic mode takes over).
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

    fn error(
        &self,
        operation: &'static str,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Error + '_ {
        move |source| Error::CloudMap {
            operation,
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            source,
        }
    }

    async fn discover(&self) -> Result<Listing, Error> {
        let output = self
            .client
            .discover_instances()
            .namespace_name(&self.namespace)
            .service_name(&self.service)
            .health_status(HealthStatusFilter::HealthyOrElseAll)
            .max_results(MAX_RESULTS)
            .send()
            .await
            .map_err(|e| {
                tracing::debug!(error = %DisplayErrorContext(&e), "DiscoverInstances failed");
                self.error("DiscoverInstances")(Box::new(e))
            })?;
        let summaries = output.instances();
        if summaries.len() >= usize::try_from(MAX_RESULTS).unwrap_or(usize::MAX) {
            tracing::warn!(
                namespace = %self.namespace,
                service = %self.service,
                returned = summaries.len(),
                "DiscoverInstances returned its maximum; instances beyond it are not seen"
            );
        }
        let instances = summaries.iter().filter_map(|s| self.decode(s)).collect();
        Ok(Listing {
            revision: output.instances_revision(),
            instances,
        })
    }

    /// The boundary: one Cloud Map instance into an [`Instance`], or a logged skip.
    fn decode(&self, summary: &HttpInstanceSummary) -> Option<Instance> {
        let id = summary.instance_id().unwrap_or_default();
        let empty = HashMap::new();
        let attributes = summary.attributes().unwrap_or(&empty);
        let health = match summary.health_status() {
            Some(HealthStatus::Healthy) => CloudMapHealth::Healthy,
            Some(HealthStatus::Unhealthy) => CloudMapHealth::Unhealthy,
            _ => CloudMapHealth::Unknown,
        };
        match Instance::from_attributes(id, attributes, health) {
            Ok(instance) => Some(instance),
            Err(reason) => {
                tracing::warn!(
                    namespace = %self.namespace,
                    service = %self.service,
                    instance = id,
                    %reason,
                    "skipping an instance that cannot be called"
                );
                None
            }
        }
    }
}

impl InstanceSource for CloudMapSource {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        Box::pin(async move {
            let output = self
                .client
                .discover_instances_revision()
                .namespace_name(&self.namespace)
                .service_name(&self.service)
                .send()
                .await
                .map_err(|e| {
                    tracing::debug!(
                        error = %DisplayErrorContext(&e),
                        "DiscoverInstancesRevision failed"
                    );
                    self.error("DiscoverInstancesRevision")(Box::new(e))
                })?;
            Ok(output.instances_revision())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        Box::pin(self.discover())
    }
}
