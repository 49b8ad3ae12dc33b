//! [`Tasks`] on ECS, and the parsing of ECS's task descriptions into [`DescribedTask`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{DesiredStatus, Task, TaskField};
use cloudmap_balancer::contract::LbHealth;

use super::errors::aws_error;
use crate::error::SyncError;
use crate::ports::{ServiceRegistries, Tasks};
use crate::task::{
    Described, DescribedTask, Lifecycle, TaskFacts, TaskRef, WeightTag, last_segment,
    parse_cpu_units, parse_memory_mib, task_id,
};

const SERVICE: &str = "ecs";
/// `DescribeTasks` takes at most 100 tasks.
const DESCRIBE_TASKS_BATCH: usize = 100;
/// `DescribeServices` takes at most 10 services.
const DESCRIBE_SERVICES_BATCH: usize = 10;

/// ECS through the AWS SDK.
#[derive(Debug, Clone)]
pub struct Ecs {
    client: Client,
    weight_tag: String,
}

impl Ecs {
    /// Wraps a client; `weight_tag` is the task tag read as a weight override.
    pub fn new(client: Client, weight_tag: impl Into<String>) -> Self {
        Self {
            client,
            weight_tag: weight_tag.into(),
        }
    }
}

impl Tasks for Ecs {
    async fn describe_tasks(
        &self,
        cluster: &str,
        task_ids: &[String],
    ) -> Result<HashMap<String, Described>, SyncError> {
        let mut described: HashMap<String, Described> = task_ids
            .iter()
            .map(|id| (id.clone(), Described::Missing))
            .collect();
        for batch in task_ids.chunks(DESCRIBE_TASKS_BATCH) {
            let output = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(batch.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .map_err(aws_error(SERVICE, "DescribeTasks"))?;
            for task in output.tasks() {
                let Some(parsed) = described_task(task, cluster, &self.weight_tag) else {
                    continue;
                };
                // Only answer what was asked: keyed by the exact ID.
                if let Some(slot) = described.get_mut(&parsed.task.id) {
                    *slot = Described::Found(Box::new(parsed));
                }
            }
        }
        Ok(described)
    }

    async fn list_service_tasks(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<String>, SyncError> {
        let mut arns = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .client
                .list_tasks()
                .cluster(cluster)
                .service_name(service)
                .desired_status(DesiredStatus::Running)
                .max_results(100)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(aws_error(SERVICE, "ListTasks"))?;
            arns.extend(page.task_arns.unwrap_or_default());
            next_token = page.next_token.filter(|t| !t.is_empty());
            if next_token.is_none() {
                return Ok(arns);
            }
        }
    }

    async fn service_registries(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<String>, SyncError> {
        let described = self
            .describe_services(cluster, &[service.to_owned()])
            .await?;
        Ok(described
            .into_iter()
            .find(|s| s.service == service)
            .map(|s| s.registry_arns)
            .unwrap_or_default())
    }

    async fn services_with_registries(
        &self,
        cluster: &str,
    ) -> Result<Vec<ServiceRegistries>, SyncError> {
        let mut names = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .client
                .list_services()
                .cluster(cluster)
                .max_results(100)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(aws_error(SERVICE, "ListServices"))?;
            names.extend(
                page.service_arns
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|arn| last_segment(arn).map(str::to_owned)),
            );
            next_token = page.next_token.filter(|t| !t.is_empty());
            if next_token.is_none() {
                break;
            }
        }
        let mut services = Vec::new();
        for batch in names.chunks(DESCRIBE_SERVICES_BATCH) {
            services.extend(
                self.describe_services(cluster, batch)
                    .await?
                    .into_iter()
                    .filter(|s| !s.registry_arns.is_empty()),
            );
        }
        Ok(services)
    }
}

impl Ecs {
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<ServiceRegistries>, SyncError> {
        let output = self
            .client
            .describe_services()
            .cluster(cluster)
            .set_services(Some(services.to_vec()))
            .send()
            .await
            .map_err(aws_error(SERVICE, "DescribeServices"))?;
        Ok(output
            .services()
            .iter()
            // A deleted (INACTIVE) service registers nothing any more.
            .filter(|s| s.status() != Some("INACTIVE"))
            .filter_map(|s| {
                Some(ServiceRegistries {
                    service: s.service_name()?.to_owned(),
                    registry_arns: s
                        .service_registries()
                        .iter()
                        .filter_map(|r| r.registry_arn().map(str::to_owned))
                        .collect(),
                })
            })
            .collect())
    }
}

/// Parses one task of a `DescribeTasks` answer. `None` when it has no usable ARN.
pub(crate) fn described_task(
    task: &Task,
    cluster: &str,
    weight_tag: &str,
) -> Option<DescribedTask> {
    let arn = task.task_arn()?;
    let task_ref = TaskRef::new(arn, task.cluster_arn().unwrap_or(cluster))?;
    let sum = |values: Vec<Option<u32>>| -> Option<u32> {
        let known: Vec<u32> = values.into_iter().flatten().collect();
        (!known.is_empty()).then(|| known.iter().fold(0u32, |a, b| a.saturating_add(*b)))
    };
    let cpu_units = task.cpu().and_then(parse_cpu_units).or_else(|| {
        sum(task
            .containers()
            .iter()
            .map(|c| c.cpu().and_then(parse_cpu_units))
            .collect())
    });
    let memory_mib = task.memory().and_then(parse_memory_mib).or_else(|| {
        sum(task
            .containers()
            .iter()
            .map(|c| c.memory().and_then(parse_memory_mib))
            .collect())
    });
    Some(DescribedTask {
        task: task_ref,
        lifecycle: Lifecycle::parse(task.last_status(), task.desired_status()),
        version: u64::try_from(task.version()).ok().filter(|&v| v > 0),
        health: task
            .health_status()
            .and_then(|h| LbHealth::parse(h.as_str())),
        weight_tag: task
            .tags()
            .iter()
            .find(|t| t.key() == Some(weight_tag))
            .map(|t| WeightTag::parse(t.value().unwrap_or_default())),
        facts: TaskFacts {
            cpu_units,
            memory_mib,
            zone: task
                .availability_zone()
                .map(str::trim)
                .filter(|z| !z.is_empty())
                .map(str::to_owned),
            capacity: task
                .capacity_provider_name()
                .map(str::to_owned)
                .or_else(|| task.launch_type().map(|l| l.as_str().to_owned())),
            ipv4: ipv4(task),
            ipv6: ipv6(task),
            subnet: eni_detail(task, "subnetId").map(str::to_owned),
            zone_id: None,
            started_at: task
                .started_at()
                .and_then(|at| std::time::SystemTime::try_from(*at).ok()),
        },
        family: task
            .task_definition_arn()
            .and_then(task_id)
            .and_then(|family_revision| family_revision.split(':').next())
            .filter(|f| !f.is_empty())
            .map(str::to_owned),
    })
}

/// A value of the ENI attachment's details, trimmed; `None` when absent or blank.
fn eni_detail<'a>(task: &'a Task, name: &str) -> Option<&'a str> {
    task.attachments()
        .iter()
        .filter(|a| {
            a.r#type().is_some_and(|t| {
                t.eq_ignore_ascii_case("ElasticNetworkInterface") || t.eq_ignore_ascii_case("eni")
            })
        })
        .flat_map(|a| a.details())
        .filter(|d| d.name() == Some(name))
        .find_map(|d| d.value().map(str::trim).filter(|v| !v.is_empty()))
}

/// The ENI's `privateIPv4Address`, else a container network interface's address.
fn ipv4(task: &Task) -> Option<Ipv4Addr> {
    eni_detail(task, "privateIPv4Address")
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            task.containers()
                .iter()
                .flat_map(|c| c.network_interfaces())
                .find_map(|n| n.private_ipv4_address()?.trim().parse().ok())
        })
}

/// The ENI's `privateIPv6Address`, else a container network interface's `ipv6Address`.
fn ipv6(task: &Task) -> Option<Ipv6Addr> {
    eni_detail(task, "privateIPv6Address")
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            task.containers()
                .iter()
                .flat_map(|c| c.network_interfaces())
                .find_map(|n| n.ipv6_address()?.trim().parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{
        Attachment, Container, HealthStatus, KeyValuePair, NetworkInterface, Tag,
    };

    #[test]
    fn a_full_aws_description() {
        let task = Task::builder()
            .task_arn("arn:aws:ecs:eu-central-1:1:task/prod/abc")
            .cluster_arn("arn:aws:ecs:eu-central-1:1:cluster/prod")
            .task_definition_arn("arn:aws:ecs:eu-central-1:1:task-definition/echo:7")
            .group("service:echo")
            .last_status("RUNNING")
            .desired_status("RUNNING")
            .version(5)
            .health_status(HealthStatus::Unhealthy)
            .cpu("1024")
            .memory("2048")
            .availability_zone("eu-central-1c")
            .capacity_provider_name("FARGATE_SPOT")
            .tags(Tag::builder().key("lb:weight").value("250").build())
            .attachments(
                Attachment::builder()
                    .r#type("ElasticNetworkInterface")
                    .details(
                        KeyValuePair::builder()
                            .name("privateIPv4Address")
                            .value("10.1.2.3")
                            .build(),
                    )
                    .details(
                        KeyValuePair::builder()
                            .name("subnetId")
                            .value("subnet-0a1b")
                            .build(),
                    )
                    .build(),
            )
            .started_at(aws_sdk_ecs::primitives::DateTime::from_secs(1_795_356_600))
            .build();
        let d = described_task(&task, "prod", "lb:weight").unwrap();
        assert_eq!(d.task.id, "abc");
        assert_eq!(d.version, Some(5));
        assert_eq!(d.health, Some(LbHealth::Unhealthy));
        assert_eq!(d.facts.cpu_units, Some(1024));
        assert_eq!(d.facts.memory_mib, Some(2048));
        assert_eq!(d.facts.zone.as_deref(), Some("eu-central-1c"));
        assert_eq!(d.facts.capacity.as_deref(), Some("FARGATE_SPOT"));
        assert_eq!(d.facts.ipv4, Some([10, 1, 2, 3].into()));
        assert_eq!(d.facts.subnet.as_deref(), Some("subnet-0a1b"));
        assert_eq!(
            d.facts.started_at,
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_356_600))
        );
        assert_eq!(d.family.as_deref(), Some("echo"));
        assert!(matches!(d.weight_tag, Some(WeightTag::Valid(w)) if w.get() == 250));
    }

    #[test]
    fn a_moto_like_description() {
        // moto: no version, health, task size or zone; container sizes as strings.
        let task = Task::builder()
            .task_arn("arn:aws:ecs:eu-central-1:1:task/prod/abc")
            .last_status("RUNNING")
            .desired_status("RUNNING")
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .containers(Container::builder().cpu("256").memory("512").build())
            .tags(Tag::builder().key("lb:weight").value("lots").build())
            .build();
        let d = described_task(&task, "prod", "lb:weight").unwrap();
        assert_eq!((d.version, d.health), (None, None));
        assert_eq!(
            (d.facts.cpu_units, d.facts.memory_mib),
            (Some(256), Some(512))
        );
        assert_eq!(d.facts.capacity.as_deref(), Some("FARGATE"));
        assert_eq!(d.task.cluster, "prod");
        assert_eq!(d.weight_tag, Some(WeightTag::Invalid("lots".into())));
    }

    #[test]
    fn ipv6_addresses_of_dual_stack_and_ipv6_only_tasks() {
        let ipv6_only = Task::builder()
            .task_arn("arn:aws:ecs:eu-central-1:1:task/prod/abc")
            .attachments(
                Attachment::builder()
                    .r#type("ElasticNetworkInterface")
                    .details(
                        KeyValuePair::builder()
                            .name("privateIPv6Address")
                            .value("2a05:d014:9f1:8c02::7")
                            .build(),
                    )
                    .build(),
            )
            .build();
        let d = described_task(&ipv6_only, "prod", "lb:weight").unwrap();
        assert_eq!(d.facts.ipv4, None);
        assert_eq!(d.facts.ipv6, Some("2a05:d014:9f1:8c02::7".parse().unwrap()));
        let dual_stack = Task::builder()
            .task_arn("arn:aws:ecs:eu-central-1:1:task/prod/abc")
            .containers(
                Container::builder()
                    .network_interfaces(
                        NetworkInterface::builder()
                            .private_ipv4_address("10.1.2.3")
                            .ipv6_address("2a05:d014:9f1:8c02::8")
                            .build(),
                    )
                    .build(),
            )
            .build();
        let d = described_task(&dual_stack, "prod", "lb:weight").unwrap();
        assert_eq!(d.facts.ipv4, Some([10, 1, 2, 3].into()));
        assert_eq!(d.facts.ipv6, Some("2a05:d014:9f1:8c02::8".parse().unwrap()));
    }
}
