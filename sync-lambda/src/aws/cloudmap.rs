//! [`Registry`] on Cloud Map.

use std::collections::HashMap;

use aws_sdk_servicediscovery::Client;
use cloudmap_balancer::contract::AttributeSet;

use super::errors::aws_error;
use crate::error::SyncError;
use crate::ports::{Instance, Registry};

const SERVICE: &str = "servicediscovery";

/// Cloud Map through the AWS SDK.
#[derive(Debug, Clone)]
pub struct CloudMap {
    client: Client,
}

impl CloudMap {
    /// Wraps a client. The Lambda never calls `DiscoverInstances`, so a plain client (no `data-`
    /// host prefix handling) is enough.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Registry for CloudMap {
    async fn get_instance(
        &self,
        service_id: &str,
        instance_id: &str,
    ) -> Result<Option<HashMap<String, String>>, SyncError> {
        match self
            .client
            .get_instance()
            .service_id(service_id)
            .instance_id(instance_id)
            .send()
            .await
        {
            Ok(output) => Ok(Some(
                output
                    .instance
                    .and_then(|i| i.attributes)
                    .unwrap_or_default(),
            )),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_instance_not_found()) =>
            {
                Ok(None)
            }
            Err(error) => Err(aws_error(SERVICE, "GetInstance")(error)),
        }
    }

    async fn list_instances(&self, service_id: &str) -> Result<Vec<Instance>, SyncError> {
        let mut instances = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .client
                .list_instances()
                .service_id(service_id)
                .max_results(100)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(aws_error(SERVICE, "ListInstances"))?;
            instances.extend(
                page.instances
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| {
                        Some(Instance {
                            id: i.id?,
                            attributes: i.attributes.unwrap_or_default(),
                        })
                    }),
            );
            next_token = page.next_token.filter(|t| !t.is_empty());
            if next_token.is_none() {
                return Ok(instances);
            }
        }
    }

    async fn register_instance(
        &self,
        service_id: &str,
        instance_id: &str,
        attributes: &AttributeSet,
    ) -> Result<(), SyncError> {
        // The SDK fills `CreatorRequestId` with a fresh idempotency token per call and reuses it
        // across its own retries, so a retried request does not run twice.
        self.client
            .register_instance()
            .service_id(service_id)
            .instance_id(instance_id)
            .set_attributes(Some(attributes.as_map().clone().into_iter().collect()))
            .send()
            .await
            .map_err(aws_error(SERVICE, "RegisterInstance"))?;
        Ok(())
    }

    async fn deregister_instance(
        &self,
        service_id: &str,
        instance_id: &str,
    ) -> Result<(), SyncError> {
        match self
            .client
            .deregister_instance()
            .service_id(service_id)
            .instance_id(instance_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_instance_not_found()) =>
            {
                Ok(())
            }
            Err(error) => Err(aws_error(SERVICE, "DeregisterInstance")(error)),
        }
    }
}
