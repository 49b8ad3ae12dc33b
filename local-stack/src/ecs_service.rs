//! An ECS service with Cloud Map service discovery, in moto, set up and driven the way ECS does
//! it: the one set-up that the local run, the comparison harness and the sync Lambda's tests
//! share.
//!
//! [`EcsService::create`] makes what AWS has before the first task starts: a Cloud Map HTTP
//! namespace and service, an ECS cluster, one Fargate task definition revision per task size,
//! and an ECS service whose `serviceRegistries` point at the Cloud Map service. Then, per task:
//!
//! - [`EcsService::run_tasks`]: `RunTask` in a zone's default subnet, in the service's group
//!   (`service:NAME`, as the service scheduler starts them);
//! - [`EcsService::register_as_ecs`]: the Cloud Map instance ECS registers for it (the task ID as
//!   the instance ID, [`EcsService::ecs_attributes`] as the attributes);
//! - [`EcsService::stop_task`] and [`EcsService::deregister`]: the task stops and ECS removes its
//!   instance.
//!
//! ```no_run
//! # async fn demo() -> Result<(), local_stack::Error> {
//! use local_stack::ecs_service::{EcsService, RunTasks, ServiceSpec};
//! let moto = local_stack::MotoServer::shared();
//! let service = EcsService::create(moto, &ServiceSpec::named("echo", &[512])).await?;
//! let tasks = service.run_tasks(moto, RunTasks { zone: Some("eu-central-1b"), ..RunTasks::default() }).await?;
//! service.register_as_ecs(moto, &tasks[0], "10.0.1.7", 50051).await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, LaunchType, NetworkMode, ServiceRegistry, Tag,
};
use cloudmap_balancer::contract::keys;

use crate::{Error, MotoServer, REGION, cloudmap, unique_name};

/// What [`EcsService::create`] creates. [`ServiceSpec::named`] gives names unique to this
/// process, so tests sharing one moto never collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec<'a> {
    /// The Cloud Map HTTP namespace.
    pub namespace: String,
    /// The ECS service and the Cloud Map service: ECS service discovery names them alike.
    pub service: String,
    /// The ECS cluster.
    pub cluster: String,
    /// The task definition family; its container has the same name.
    pub family: String,
    /// CPU units of each task size: one task definition revision per size, with Fargate's
    /// smallest memory for it (`max(2 × cpu, 512)` MiB).
    pub cpu_sizes: &'a [u32],
    /// The Cloud Map service has a custom health check, as an ECS service's registry does when
    /// ECS reports container health to it.
    pub custom_health: bool,
}

impl<'a> ServiceSpec<'a> {
    /// Names unique to this process, derived from `name`; no custom health check.
    pub fn named(name: &str, cpu_sizes: &'a [u32]) -> Self {
        Self {
            namespace: unique_name(&format!("{name}-ns")),
            service: unique_name(&format!("{name}-svc")),
            cluster: unique_name(&format!("{name}-cluster")),
            family: unique_name(name),
            cpu_sizes,
            custom_health: false,
        }
    }
}

/// One task definition revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinition {
    /// Its ARN (`...:task-definition/FAMILY:REVISION`).
    pub arn: String,
    /// Its revision.
    pub revision: i32,
    /// Task CPU units.
    pub cpu: u32,
    /// Task memory in MiB.
    pub memory: u32,
}

/// A task as ECS knows it: what events and registrations say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The task ARN (`arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID`).
    pub task_arn: String,
    /// The task ID, the ARN's last segment: ECS's Cloud Map instance ID.
    pub task_id: String,
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// The ECS service it belongs to (its group is `service:NAME`).
    pub service: String,
    /// Its task definition's ARN.
    pub task_definition_arn: String,
    /// That task definition's revision.
    pub revision: i32,
    /// Task CPU units.
    pub cpu: u32,
    /// Task memory in MiB.
    pub memory: u32,
    /// Its availability zone.
    pub zone: String,
    /// The subnet its ENI is in.
    pub subnet_id: String,
    /// The ENI's private IPv4 address moto gave it.
    pub ipv4: String,
}

/// What [`EcsService::run_tasks`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTasks<'a> {
    /// The zone whose default subnet the tasks go to; `None`: the first zone.
    pub zone: Option<&'a str>,
    /// The task size (one of [`ServiceSpec::cpu_sizes`]); `None`: the family's latest revision.
    pub cpu: Option<u32>,
    /// How many.
    pub count: i32,
    /// Task tags.
    pub tags: &'a [(&'a str, &'a str)],
}

impl Default for RunTasks<'_> {
    /// One task of the latest revision in the first zone, untagged.
    fn default() -> Self {
        Self {
            zone: None,
            cpu: None,
            count: 1,
            tags: &[],
        }
    }
}

/// The set-up [`EcsService::create`] made. Plain names and IDs: a copy with other names (say
/// another service in the same cluster) drives those instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsService {
    /// The ECS cluster's name.
    pub cluster: String,
    /// Its ARN.
    pub cluster_arn: String,
    /// The ECS service's name (also the Cloud Map service's).
    pub service: String,
    /// The task definition family.
    pub family: String,
    /// The Cloud Map service's ID, e.g. `srv-abc`.
    pub cloud_map_service_id: String,
    /// Its ARN (the ECS service's `serviceRegistries[].registryArn`).
    pub cloud_map_service_arn: String,
    /// The task definitions, by CPU units.
    pub task_definitions: BTreeMap<u32, TaskDefinition>,
}

fn ecs_error<E>(operation: &'static str) -> impl FnOnce(E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| Error::Ecs {
        operation,
        source: Box::new(source),
    }
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

fn unexpected(what: &str, detail: impl Into<String>) -> Error {
    Error::Unexpected {
        what: what.into(),
        detail: detail.into(),
    }
}

impl EcsService {
    /// Creates the namespace, the Cloud Map service, the cluster, the task definitions and the
    /// ECS service (desired count 0: tasks start with [`run_tasks`](Self::run_tasks)).
    pub async fn create(moto: &MotoServer, spec: &ServiceSpec<'_>) -> Result<Self, Error> {
        let cloud_map = moto.servicediscovery();
        let namespace = cloudmap::create_http_namespace(&cloud_map, &spec.namespace).await?;
        let registry =
            cloudmap::create_service(&cloud_map, &namespace, &spec.service, spec.custom_health)
                .await?;

        let ecs = moto.ecs();
        let cluster_arn = ecs
            .create_cluster()
            .cluster_name(&spec.cluster)
            .send()
            .await
            .map_err(ecs_error("CreateCluster"))?
            .cluster
            .and_then(|c| c.cluster_arn)
            .ok_or_else(|| unexpected("CreateCluster", "no cluster ARN"))?;

        let mut task_definitions = BTreeMap::new();
        for &cpu in spec.cpu_sizes {
            let memory = (cpu * 2).max(512);
            let registered = ecs
                .register_task_definition()
                .family(&spec.family)
                .network_mode(NetworkMode::Awsvpc)
                .requires_compatibilities(Compatibility::Fargate)
                .cpu(cpu.to_string())
                .memory(memory.to_string())
                .container_definitions(
                    ContainerDefinition::builder()
                        .name(&spec.family)
                        .image(format!("{}:local", spec.family))
                        .cpu(i32::try_from(cpu).unwrap_or(i32::MAX))
                        .memory(i32::try_from(memory).unwrap_or(i32::MAX))
                        .essential(true)
                        .build(),
                )
                .send()
                .await
                .map_err(ecs_error("RegisterTaskDefinition"))?
                .task_definition
                .ok_or_else(|| unexpected("RegisterTaskDefinition", "no task definition"))?;
            task_definitions.insert(
                cpu,
                TaskDefinition {
                    arn: registered.task_definition_arn.unwrap_or_default(),
                    revision: registered.revision,
                    cpu,
                    memory,
                },
            );
        }

        ecs.create_service()
            .cluster(&spec.cluster)
            .service_name(&spec.service)
            .task_definition(&spec.family)
            .desired_count(0)
            .launch_type(LaunchType::Fargate)
            .service_registries(
                ServiceRegistry::builder()
                    .registry_arn(&registry.arn)
                    .build(),
            )
            .network_configuration(crate::ecs::awsvpc(moto, None)?)
            .send()
            .await
            .map_err(ecs_error("CreateService"))?;

        Ok(Self {
            cluster: spec.cluster.clone(),
            cluster_arn,
            service: spec.service.clone(),
            family: spec.family.clone(),
            cloud_map_service_id: registry.id,
            cloud_map_service_arn: registry.arn,
            task_definitions,
        })
    }

    /// Starts tasks with `RunTask`, as the service scheduler does (group `service:NAME`,
    /// `startedBy` the service's deployment, Fargate, awsvpc in the zone's default subnet).
    pub async fn run_tasks(
        &self,
        moto: &MotoServer,
        run: RunTasks<'_>,
    ) -> Result<Vec<Task>, Error> {
        let definition = match run.cpu {
            Some(cpu) => self
                .task_definitions
                .get(&cpu)
                .map(|d| d.arn.clone())
                .ok_or_else(|| {
                    unexpected("RunTask", format!("no task definition of {cpu} CPU units"))
                })?,
            None => self.family.clone(),
        };
        let subnets = moto.default_subnets()?;
        let subnet = match run.zone {
            Some(zone) => subnets.into_iter().find(|s| s.zone == zone),
            None => subnets.into_iter().next(),
        }
        .ok_or_else(|| {
            unexpected(
                "RunTask",
                format!("no default subnet in {}", run.zone.unwrap_or("any zone")),
            )
        })?;

        let mut request = moto
            .ecs()
            .run_task()
            .cluster(&self.cluster)
            .task_definition(definition)
            .launch_type(LaunchType::Fargate)
            .group(format!("service:{}", self.service))
            .started_by("ecs-svc/0123456789012345678")
            .count(run.count)
            .network_configuration(crate::ecs::awsvpc(moto, Some(&subnet.zone))?);
        for (key, value) in run.tags {
            request = request.tags(Tag::builder().key(*key).value(*value).build());
        }
        let started = request.send().await.map_err(ecs_error("RunTask"))?;
        if started.tasks().is_empty() {
            return Err(unexpected("RunTask", "no task started"));
        }
        started
            .tasks()
            .iter()
            .map(|task| {
                let arn = task
                    .task_arn()
                    .ok_or_else(|| unexpected("RunTask", "a task without an ARN"))?
                    .to_owned();
                let task_definition_arn = task.task_definition_arn().unwrap_or_default().to_owned();
                let known = self
                    .task_definitions
                    .values()
                    .find(|d| d.arn == task_definition_arn);
                let number = |value: Option<&str>| value.and_then(|v| v.parse::<u32>().ok());
                Ok(Task {
                    task_id: arn.rsplit('/').next().unwrap_or_default().to_owned(),
                    task_arn: arn,
                    cluster_arn: self.cluster_arn.clone(),
                    service: self.service.clone(),
                    revision: known
                        .map_or_else(|| revision_of(&task_definition_arn), |d| d.revision),
                    cpu: number(task.cpu()).or(known.map(|d| d.cpu)).unwrap_or(0),
                    memory: number(task.memory())
                        .or(known.map(|d| d.memory))
                        .unwrap_or(0),
                    task_definition_arn,
                    zone: subnet.zone.clone(),
                    subnet_id: subnet.id.clone(),
                    ipv4: crate::ecs::private_ipv4(task)
                        .ok_or_else(|| unexpected("RunTask", "a task without an ENI address"))?
                        .to_owned(),
                })
            })
            .collect()
    }

    /// The attributes ECS writes when it registers a task of this service at `ipv4`:`port` in
    /// `zone`.
    pub fn ecs_attributes(&self, ipv4: &str, port: u16, zone: &str) -> HashMap<String, String> {
        [
            (keys::AWS_INSTANCE_IPV4, ipv4),
            (keys::AWS_INSTANCE_PORT, &port.to_string()),
            (keys::AVAILABILITY_ZONE, zone),
            (keys::REGION, REGION),
            (keys::ECS_CLUSTER_NAME, &self.cluster),
            (keys::ECS_SERVICE_NAME, &self.service),
            (keys::ECS_TASK_DEFINITION_FAMILY, &self.family),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Registers `task` as ECS does: its task ID as the instance ID, ECS's attributes with the
    /// address it serves on (`ipv4`:`port`, which locally is loopback rather than the ENI's).
    /// Returns the attributes written.
    pub async fn register_as_ecs(
        &self,
        moto: &MotoServer,
        task: &Task,
        ipv4: &str,
        port: u16,
    ) -> Result<HashMap<String, String>, Error> {
        let attributes = self.ecs_attributes(ipv4, port, &task.zone);
        self.register(moto, &task.task_id, attributes.clone())
            .await?;
        Ok(attributes)
    }

    /// `RegisterInstance` with exactly these attributes (it replaces every attribute, as Cloud
    /// Map does).
    pub async fn register(
        &self,
        moto: &MotoServer,
        instance_id: &str,
        attributes: HashMap<String, String>,
    ) -> Result<(), Error> {
        moto.servicediscovery()
            .register_instance()
            .service_id(&self.cloud_map_service_id)
            .instance_id(instance_id)
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(cloud_map_error("RegisterInstance"))?;
        Ok(())
    }

    /// Deregisters the instance, as ECS does once the task has stopped.
    pub async fn deregister(&self, moto: &MotoServer, instance_id: &str) -> Result<(), Error> {
        moto.servicediscovery()
            .deregister_instance()
            .service_id(&self.cloud_map_service_id)
            .instance_id(instance_id)
            .send()
            .await
            .map_err(cloud_map_error("DeregisterInstance"))?;
        Ok(())
    }

    /// Stops the task in ECS, so `DescribeTasks` says STOPPED.
    pub async fn stop_task(
        &self,
        moto: &MotoServer,
        task_arn: &str,
        reason: &str,
    ) -> Result<(), Error> {
        moto.ecs()
            .stop_task()
            .cluster(&self.cluster)
            .task(task_arn)
            .reason(reason)
            .send()
            .await
            .map_err(ecs_error("StopTask"))?;
        Ok(())
    }

    /// Every instance of the Cloud Map service and its attributes (`ListInstances`), by
    /// instance ID.
    pub async fn instances(
        &self,
        moto: &MotoServer,
    ) -> Result<BTreeMap<String, HashMap<String, String>>, Error> {
        let listed = moto
            .servicediscovery()
            .list_instances()
            .service_id(&self.cloud_map_service_id)
            .send()
            .await
            .map_err(cloud_map_error("ListInstances"))?;
        Ok(listed
            .instances()
            .iter()
            .map(|i| {
                (
                    i.id().unwrap_or_default().to_owned(),
                    i.attributes().cloned().unwrap_or_default(),
                )
            })
            .collect())
    }
}

/// The revision at the end of a task definition ARN (`...:FAMILY:7` → 7), 0 when there is none.
fn revision_of(arn: &str) -> i32 {
    arn.rsplit(':')
        .next()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::revision_of;

    #[test]
    fn revision_is_the_arns_last_field() {
        assert_eq!(
            revision_of("arn:aws:ecs:eu-central-1:123456789012:task-definition/echo:7"),
            7
        );
        assert_eq!(revision_of("echo"), 0);
        assert_eq!(revision_of(""), 0);
    }
}
