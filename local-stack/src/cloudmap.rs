//! Cloud Map set-up shared by tests and the local run: namespaces and services, created the way
//! AWS needs them (namespace creation is an asynchronous operation).

use std::time::Duration;

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::types::{
    HealthCheckCustomConfig, OperationStatus, OperationTargetType,
};

use crate::Error;

/// A Cloud Map namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Its ID, e.g. `ns-abc`.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// A Cloud Map service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its ID, e.g. `srv-abc`.
    pub id: String,
    /// Its ARN (what ECS's `serviceRegistries[].registryArn` holds).
    pub arn: String,
    /// Its name.
    pub name: String,
    /// The namespace's name.
    pub namespace: String,
}

fn cloud_map_error<E>(operation: &'static str) -> impl FnOnce(E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| Error::CloudMap {
        operation,
        source: Box::new(source),
    }
}

/// Creates an HTTP namespace and waits for the operation to finish.
pub async fn create_http_namespace(client: &Client, name: &str) -> Result<Namespace, Error> {
    let operation_id = client
        .create_http_namespace()
        .name(name)
        .send()
        .await
        .map_err(cloud_map_error("CreateHttpNamespace"))?
        .operation_id
        .unwrap_or_default();
    for _ in 0..100 {
        let operation = client
            .get_operation()
            .operation_id(&operation_id)
            .send()
            .await
            .map_err(cloud_map_error("GetOperation"))?
            .operation
            .unwrap_or_else(|| aws_sdk_servicediscovery::types::Operation::builder().build());
        match operation.status {
            Some(OperationStatus::Success) => {
                let id = operation
                    .targets
                    .and_then(|t| t.get(&OperationTargetType::Namespace).cloned())
                    .ok_or_else(|| Error::Unexpected {
                        what: "GetOperation".into(),
                        detail: "no namespace target".into(),
                    })?;
                return Ok(Namespace {
                    id,
                    name: name.to_owned(),
                });
            }
            Some(OperationStatus::Fail) => {
                return Err(Error::Unexpected {
                    what: "CreateHttpNamespace".into(),
                    detail: operation.error_message.unwrap_or_default(),
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Err(Error::Unexpected {
        what: "CreateHttpNamespace".into(),
        detail: "did not finish".into(),
    })
}

/// Creates a service in `namespace`. With `custom_health`, the service has a custom health check
/// (as the demo's ECS service does), so instances carry a Cloud Map health status.
pub async fn create_service(
    client: &Client,
    namespace: &Namespace,
    name: &str,
    custom_health: bool,
) -> Result<Service, Error> {
    let mut request = client
        .create_service()
        .name(name)
        .namespace_id(&namespace.id);
    if custom_health {
        request = request.health_check_custom_config(HealthCheckCustomConfig::builder().build());
    }
    let service = request
        .send()
        .await
        .map_err(cloud_map_error("CreateService"))?
        .service
        .ok_or_else(|| Error::Unexpected {
            what: "CreateService".into(),
            detail: "no service".into(),
        })?;
    Ok(Service {
        id: service.id.unwrap_or_default(),
        arn: service.arn.unwrap_or_default(),
        name: name.to_owned(),
        namespace: namespace.name.clone(),
    })
}
