//! What AWS would have before the first task starts: a Cloud Map namespace and service, an ECS
//! cluster, task definitions and a service whose ServiceRegistries point at the Cloud Map service.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, LaunchType, NetworkMode, ServiceRegistry,
};
use local_stack::cloudmap::{self, Service};
use local_stack::{MotoServer, Subnet};

use crate::error::DemoError;

pub(crate) use local_stack::REGION;

/// The Cloud Map namespace (HTTP) the demo service is discovered in.
pub(crate) const NAMESPACE: &str = "demo.local";
/// The ECS service and the Cloud Map service share this name, as ECS service discovery does.
pub(crate) const SERVICE: &str = "demo-server";
/// The ECS cluster.
pub(crate) const CLUSTER: &str = "demo";
/// The task definition family.
pub(crate) const FAMILY: &str = "demo-server";

/// One task definition revision per task size.
#[derive(Debug, Clone)]
pub(crate) struct TaskDefinition {
    pub(crate) arn: String,
    pub(crate) revision: i32,
    pub(crate) memory: u32,
}

/// The local stack with the demo's resources in it.
#[derive(Debug)]
pub(crate) struct Stack {
    pub(crate) moto: MotoServer,
    pub(crate) cloud_map: Service,
    pub(crate) cluster_arn: String,
    /// The default subnets: events name the task's subnet.
    pub(crate) subnets: Vec<Subnet>,
    /// Per CPU units.
    pub(crate) task_definitions: BTreeMap<u32, TaskDefinition>,
}

impl Stack {
    /// Starts moto and creates the resources; `cpu_sizes` are the task sizes the run needs.
    pub(crate) async fn create(cpu_sizes: &[u32]) -> Result<Self, DemoError> {
        let moto = tokio::task::spawn_blocking(MotoServer::start)
            .await
            .map_err(|e| DemoError::Process {
                what: "starting moto".into(),
                detail: e.to_string(),
            })??;
        let cloudmap_client = moto.servicediscovery();
        let namespace = cloudmap::create_http_namespace(&cloudmap_client, NAMESPACE).await?;
        // A custom health check, as the SAM demo stack has: ECS reports container health there.
        let cloud_map =
            cloudmap::create_service(&cloudmap_client, &namespace, SERVICE, true).await?;

        let ecs = moto.ecs();
        let cluster_arn = ecs
            .create_cluster()
            .cluster_name(CLUSTER)
            .send()
            .await
            .map_err(DemoError::aws("ecs:CreateCluster"))?
            .cluster
            .and_then(|c| c.cluster_arn)
            .unwrap_or_default();

        let mut task_definitions = BTreeMap::new();
        for &cpu in cpu_sizes {
            // Fargate's smallest memory for each CPU size.
            let memory = (cpu * 2).max(512);
            let definition = ecs
                .register_task_definition()
                .family(FAMILY)
                .network_mode(NetworkMode::Awsvpc)
                .requires_compatibilities(Compatibility::Fargate)
                .cpu(cpu.to_string())
                .memory(memory.to_string())
                .container_definitions(
                    ContainerDefinition::builder()
                        .name("demo-server")
                        .image("demo-server:local")
                        .memory(i32::try_from(memory).unwrap_or(i32::MAX))
                        .essential(true)
                        .build(),
                )
                .send()
                .await
                .map_err(DemoError::aws("ecs:RegisterTaskDefinition"))?
                .task_definition
                .unwrap_or_else(|| aws_sdk_ecs::types::TaskDefinition::builder().build());
            task_definitions.insert(
                cpu,
                TaskDefinition {
                    arn: definition.task_definition_arn.unwrap_or_default(),
                    revision: definition.revision,
                    memory,
                },
            );
        }

        let subnets = moto.default_subnets()?;
        let first = task_definitions
            .values()
            .next()
            .map(|d| d.arn.clone())
            .unwrap_or_default();
        ecs.create_service()
            .cluster(CLUSTER)
            .service_name(SERVICE)
            .task_definition(first)
            .desired_count(0)
            .launch_type(LaunchType::Fargate)
            .service_registries(
                ServiceRegistry::builder()
                    .registry_arn(&cloud_map.arn)
                    .build(),
            )
            .network_configuration(local_stack::ecs::awsvpc(&moto, None)?)
            .send()
            .await
            .map_err(DemoError::aws("ecs:CreateService"))?;

        Ok(Self {
            moto,
            cloud_map,
            cluster_arn,
            subnets,
            task_definitions,
        })
    }

    /// The default subnet in `zone`.
    pub(crate) fn subnet(&self, zone: &str) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.zone == zone)
    }
}
