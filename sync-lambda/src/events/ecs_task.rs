//! The `ECS Task State Change` event: its detail as it arrives (lenient), and the validated
//! [`TaskChange`] the rest of the crate works with.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use cloudmap_balancer::contract::{limits, parse_rfc3339};

use serde::{Deserialize, Serialize};

use super::Rejection;
use super::lenient;
use crate::task::{Group, Lifecycle, TaskFacts, TaskRef, parse_cpu_units, parse_memory_mib};

/// The `detail` of an `ECS Task State Change` event, as far as the Lambda reads it.
///
/// Every field is optional and parsed leniently: an odd value is absent, an unknown field is
/// ignored, so one strange field never loses the event. [`TaskChange::from_detail`] then decides
/// whether enough is there to act on.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskStateDetail {
    /// `taskArn`.
    #[serde(deserialize_with = "lenient::text")]
    pub task_arn: Option<String>,
    /// `clusterArn`.
    #[serde(deserialize_with = "lenient::text")]
    pub cluster_arn: Option<String>,
    /// `group`, e.g. `service:echo`.
    #[serde(deserialize_with = "lenient::text")]
    pub group: Option<String>,
    /// `lastStatus`.
    #[serde(deserialize_with = "lenient::text")]
    pub last_status: Option<String>,
    /// `desiredStatus`.
    #[serde(deserialize_with = "lenient::text")]
    pub desired_status: Option<String>,
    /// `version`: increases with every state change of the task.
    #[serde(deserialize_with = "lenient::unsigned")]
    pub version: Option<u64>,
    /// `availabilityZone`.
    #[serde(deserialize_with = "lenient::text")]
    pub availability_zone: Option<String>,
    /// `launchType`: `FARGATE`, `EC2`, `EXTERNAL`.
    #[serde(deserialize_with = "lenient::text")]
    pub launch_type: Option<String>,
    /// `capacityProviderName` (absent in older events).
    #[serde(deserialize_with = "lenient::text")]
    pub capacity_provider_name: Option<String>,
    /// Task-level `cpu` in units, a string.
    #[serde(deserialize_with = "lenient::text")]
    pub cpu: Option<String>,
    /// Task-level `memory` in MiB, a string.
    #[serde(deserialize_with = "lenient::text")]
    pub memory: Option<String>,
    /// `startedAt`: when the task turned RUNNING (RFC 3339); absent before.
    #[serde(deserialize_with = "lenient::text")]
    pub started_at: Option<String>,
    /// `stopCode`, e.g. `ServiceSchedulerInitiated`, `SpotInterruption`.
    #[serde(deserialize_with = "lenient::text")]
    pub stop_code: Option<String>,
    /// `attachments` (the ENI and its address on awsvpc tasks; empty in bridge mode).
    #[serde(deserialize_with = "lenient::list")]
    pub attachments: Vec<Attachment>,
    /// `containers`.
    #[serde(deserialize_with = "lenient::list")]
    pub containers: Vec<Container>,
}

/// One task attachment.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Attachment {
    /// `type`: `eni` in events, `ElasticNetworkInterface` in `DescribeTasks`.
    #[serde(rename = "type", deserialize_with = "lenient::text")]
    pub kind: Option<String>,
    /// `details`: name/value pairs.
    #[serde(deserialize_with = "lenient::list")]
    pub details: Vec<NameValue>,
}

/// A name/value pair of an attachment.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct NameValue {
    /// `name`.
    #[serde(deserialize_with = "lenient::text")]
    pub name: Option<String>,
    /// `value`.
    #[serde(deserialize_with = "lenient::text")]
    pub value: Option<String>,
}

/// One container of the task.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// Container `cpu` units; real events carry `"null"` and `"0"` here.
    #[serde(deserialize_with = "lenient::text")]
    pub cpu: Option<String>,
    /// Container `memory` in MiB.
    #[serde(deserialize_with = "lenient::text")]
    pub memory: Option<String>,
    /// `networkInterfaces`.
    #[serde(deserialize_with = "lenient::list")]
    pub network_interfaces: Vec<NetworkInterface>,
}

/// A container's network interface.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkInterface {
    /// `privateIpv4Address`.
    #[serde(deserialize_with = "lenient::text")]
    pub private_ipv4_address: Option<String>,
    /// `ipv6Address` (dual-stack and IPv6-only subnets).
    #[serde(deserialize_with = "lenient::text")]
    pub ipv6_address: Option<String>,
}

/// A task state change, validated: what the decision logic needs from one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskChange {
    /// The task.
    pub task: TaskRef,
    /// Its group (`service:NAME` for service tasks).
    pub group: Group,
    /// `detail.version`.
    pub version: u64,
    /// `lastStatus`/`desiredStatus`; `None` when ECS sent a status this code does not know.
    pub lifecycle: Option<Lifecycle>,
    /// `stopCode`, for the decision log (see [`crate::decide::Decision::stop_code`]).
    pub stop_code: Option<String>,
    /// Size, zone, capacity, address, subnet and start time as the event tells them.
    pub facts: TaskFacts,
    /// The envelope's `time`: when EventBridge received the event. `None` when absent or not
    /// RFC 3339 (and from [`TaskChange::from_detail`], which sees only the detail).
    pub time: Option<SystemTime>,
}

impl TaskChange {
    /// Validates a detail. `resources` is the envelope's resource list: the task ARN when the
    /// detail lacks one.
    ///
    /// Required: a task ARN, a cluster (the cluster ARN, or the segment of a new-format task
    /// ARN) and `version` (without it an event cannot be ordered). Everything else is optional.
    pub fn from_detail(detail: &TaskStateDetail, resources: &[String]) -> Result<Self, Rejection> {
        let task_arn = detail
            .task_arn
            .as_deref()
            .or_else(|| {
                resources
                    .iter()
                    .map(String::as_str)
                    .find(|r| r.contains(":task/"))
            })
            .ok_or(Rejection::MissingTaskArn)?;
        let cluster = detail
            .cluster_arn
            .as_deref()
            .or_else(|| cluster_from_task_arn(task_arn))
            .ok_or(Rejection::MissingCluster)?;
        let task = TaskRef::new(task_arn, cluster).ok_or(Rejection::MissingTaskArn)?;
        // ECS's instance ID is the task ID: one Cloud Map cannot hold names no instance.
        if !limits::is_instance_id(&task.id) {
            return Err(Rejection::InvalidTaskId(task.id.chars().take(64).collect()));
        }
        let version = detail.version.ok_or(Rejection::MissingVersion)?;
        Ok(Self {
            task,
            group: Group::parse(detail.group.as_deref()),
            version,
            lifecycle: Lifecycle::parse(
                detail.last_status.as_deref(),
                detail.desired_status.as_deref(),
            ),
            stop_code: detail.stop_code.clone(),
            facts: facts(detail),
            time: None,
        })
    }
}

/// The cluster segment of a new-format task ARN (`…:task/CLUSTER/ID`); `None` for the old format.
fn cluster_from_task_arn(arn: &str) -> Option<&str> {
    let (_, path) = arn.split_once(":task/")?;
    let (cluster, _id) = path.split_once('/')?;
    (!cluster.is_empty()).then_some(cluster)
}

fn facts(detail: &TaskStateDetail) -> TaskFacts {
    let sum = |values: Vec<Option<u32>>| -> Option<u32> {
        let known: Vec<u32> = values.into_iter().flatten().collect();
        (!known.is_empty()).then(|| known.iter().fold(0u32, |a, b| a.saturating_add(*b)))
    };
    let cpu_units = detail.cpu.as_deref().and_then(parse_cpu_units).or_else(|| {
        sum(detail
            .containers
            .iter()
            .map(|c| c.cpu.as_deref().and_then(parse_cpu_units))
            .collect())
    });
    let memory_mib = detail
        .memory
        .as_deref()
        .and_then(parse_memory_mib)
        .or_else(|| {
            sum(detail
                .containers
                .iter()
                .map(|c| c.memory.as_deref().and_then(parse_memory_mib))
                .collect())
        });
    TaskFacts {
        cpu_units,
        memory_mib,
        zone: detail.availability_zone.clone(),
        capacity: detail
            .capacity_provider_name
            .clone()
            .or_else(|| detail.launch_type.clone()),
        ipv4: eni_ipv4(detail),
        ipv6: eni_ipv6(detail),
        subnet: eni_detail(detail, "subnetId").map(str::to_owned),
        zone_id: None,
        started_at: detail.started_at.as_deref().and_then(parse_rfc3339),
    }
}

/// A value of the ENI attachment's details, trimmed; `None` when absent or blank.
fn eni_detail<'a>(detail: &'a TaskStateDetail, name: &str) -> Option<&'a str> {
    detail
        .attachments
        .iter()
        .filter(|a| a.kind.as_deref().is_some_and(is_eni))
        .flat_map(|a| &a.details)
        .filter(|d| d.name.as_deref() == Some(name))
        .find_map(|d| d.value.as_deref().map(str::trim).filter(|v| !v.is_empty()))
}

fn is_eni(kind: &str) -> bool {
    kind.eq_ignore_ascii_case("eni") || kind.eq_ignore_ascii_case("ElasticNetworkInterface")
}

/// The task's private IPv4: the ENI attachment's `privateIPv4Address`, else a container network
/// interface's `privateIpv4Address`.
fn eni_ipv4(detail: &TaskStateDetail) -> Option<Ipv4Addr> {
    let from_attachments = eni_detail(detail, "privateIPv4Address").and_then(|v| v.parse().ok());
    from_attachments.or_else(|| {
        detail
            .containers
            .iter()
            .flat_map(|c| &c.network_interfaces)
            .find_map(|n| n.private_ipv4_address.as_deref()?.parse().ok())
    })
}

/// The task's IPv6 address: the ENI attachment's `privateIPv6Address`, else a container network
/// interface's `ipv6Address`. A value that is not an IPv6 address counts as absent.
fn eni_ipv6(detail: &TaskStateDetail) -> Option<Ipv6Addr> {
    let from_attachments = eni_detail(detail, "privateIPv6Address").and_then(|v| v.parse().ok());
    from_attachments.or_else(|| {
        detail
            .containers
            .iter()
            .flat_map(|c| &c.network_interfaces)
            .find_map(|n| n.ipv6_address.as_deref()?.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{DesiredStatus, LastStatus};

    fn detail(json: serde_json::Value) -> TaskStateDetail {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_minimal_detail_is_enough() {
        let d = detail(serde_json::json!({
            "taskArn": "arn:aws:ecs:eu-central-1:1:task/prod/abc",
            "lastStatus": "RUNNING",
            "version": 3
        }));
        let change = TaskChange::from_detail(&d, &[]).unwrap();
        assert_eq!(change.task.cluster, "prod");
        assert_eq!(change.version, 3);
        assert_eq!(change.group, Group::Other(String::new()));
        let lifecycle = change.lifecycle.unwrap();
        assert_eq!(
            (lifecycle.last, lifecycle.desired),
            (LastStatus::Running, DesiredStatus::Running)
        );
        assert_eq!(change.facts, TaskFacts::default());
    }

    #[test]
    fn required_fields_are_named_when_missing() {
        let no_arn = detail(serde_json::json!({"version": 1, "clusterArn": "c"}));
        assert_eq!(
            TaskChange::from_detail(&no_arn, &[]),
            Err(Rejection::MissingTaskArn)
        );
        // An old-format ARN has no cluster segment: the cluster ARN is then required.
        let old = detail(serde_json::json!({"taskArn": "arn:aws:ecs:r:1:task/abc", "version": 1}));
        assert_eq!(
            TaskChange::from_detail(&old, &[]),
            Err(Rejection::MissingCluster)
        );
        let no_version = detail(serde_json::json!({"taskArn": "arn:aws:ecs:r:1:task/c/abc"}));
        assert_eq!(
            TaskChange::from_detail(&no_version, &[]),
            Err(Rejection::MissingVersion)
        );
    }

    #[test]
    fn a_task_id_no_instance_can_carry_is_rejected() {
        let long = "f".repeat(65);
        let d = detail(serde_json::json!({
            "taskArn": format!("arn:aws:ecs:r:1:task/c/{long}"), "version": 1
        }));
        assert_eq!(
            TaskChange::from_detail(&d, &[]),
            Err(Rejection::InvalidTaskId("f".repeat(64)))
        );
        let d =
            detail(serde_json::json!({"taskArn": "arn:aws:ecs:r:1:task/c/ab+cd", "version": 1}));
        assert_eq!(
            TaskChange::from_detail(&d, &[]).map_err(|r| r.as_str()),
            Err("invalid_task_id")
        );
        // A long ARN with an ordinary ID is fine: the ARN is only left out of the write.
        let d = detail(serde_json::json!({
            "taskArn": format!("arn:aws:ecs:r:1:task/{}/abc", "c".repeat(1100)),
            "clusterArn": "c", "version": 1
        }));
        assert_eq!(TaskChange::from_detail(&d, &[]).unwrap().task.id, "abc");
    }

    #[test]
    fn the_task_arn_may_come_from_resources() {
        let d =
            detail(serde_json::json!({"clusterArn": "arn:aws:ecs:r:1:cluster/c", "version": 2}));
        let resources = ["arn:aws:ecs:r:1:task/c/xyz".to_owned()];
        assert_eq!(
            TaskChange::from_detail(&d, &resources).unwrap().task.id,
            "xyz"
        );
    }

    #[test]
    fn started_at_is_read_when_it_is_rfc_3339() {
        let d = detail(serde_json::json!({
            "taskArn": "arn:aws:ecs:r:1:task/c/abc", "version": 4,
            "startedAt": "2026-11-22T14:02:16.904Z"
        }));
        let started = TaskChange::from_detail(&d, &[]).unwrap().facts.started_at;
        assert_eq!(started, parse_rfc3339("2026-11-22T14:02:16.904Z"));
        for odd in [
            serde_json::json!("soon"),
            serde_json::json!(1_795_356_600),
            serde_json::json!(null),
        ] {
            let d = detail(serde_json::json!({
                "taskArn": "arn:aws:ecs:r:1:task/c/abc", "version": 4, "startedAt": odd
            }));
            assert_eq!(
                TaskChange::from_detail(&d, &[]).unwrap().facts.started_at,
                None
            );
        }
    }

    #[test]
    fn container_sizes_fill_in_for_a_missing_task_size() {
        let d = detail(serde_json::json!({
            "taskArn": "arn:aws:ecs:r:1:task/c/abc", "version": 1,
            "containers": [{"cpu": "null", "memory": "256"}, {"cpu": "128", "memory": 128}, "odd"]
        }));
        let facts = TaskChange::from_detail(&d, &[]).unwrap().facts;
        assert_eq!((facts.cpu_units, facts.memory_mib), (Some(128), Some(384)));
    }

    #[test]
    fn the_address_comes_from_the_eni_or_a_container_interface() {
        let d = detail(serde_json::json!({
            "taskArn": "arn:aws:ecs:r:1:task/c/abc", "version": 1,
            "attachments": [{"type": "eni", "details": [
                {"name": "subnetId", "value": "subnet-1"},
                {"name": "privateIPv4Address", "value": "10.0.3.7"}
            ]}]
        }));
        let facts = TaskChange::from_detail(&d, &[]).unwrap().facts;
        assert_eq!(facts.ipv4, Some([10, 0, 3, 7].into()));
        assert_eq!(facts.subnet.as_deref(), Some("subnet-1"));
        let d = detail(serde_json::json!({
            "taskArn": "arn:aws:ecs:r:1:task/c/abc", "version": 1, "attachments": [],
            "containers": [{"networkInterfaces": [{"privateIpv4Address": "10.0.3.8"}]}]
        }));
        assert_eq!(
            TaskChange::from_detail(&d, &[]).unwrap().facts.ipv4,
            Some([10, 0, 3, 8].into())
        );
    }

    #[test]
    fn the_ipv6_address_comes_from_the_eni_or_a_container_interface() {
        // An IPv6-only subnet: the ENI has no IPv4 address.
        let d = detail(serde_json::json!({
            "taskArn": "arn:aws:ecs:r:1:task/c/abc", "version": 1,
            "attachments": [{"type": "eni", "details": [
                {"name": "subnetId", "value": "subnet-1"},
                {"name": "privateIPv6Address", "value": "2600:1f18:4a3:6902::1a"}
            ]}]
        }));
        let facts = TaskChange::from_detail(&d, &[]).unwrap().facts;
        assert_eq!(facts.ipv4, None);
        assert_eq!(facts.ipv6, Some("2600:1f18:4a3:6902::1a".parse().unwrap()));
        let d = detail(serde_json::json!({
            "taskArn": "arn:aws:ecs:r:1:task/c/abc", "version": 1,
            "containers": [{"networkInterfaces": [
                {"privateIpv4Address": "10.0.3.8", "ipv6Address": " 2600:1f18::8 "}
            ]}]
        }));
        let facts = TaskChange::from_detail(&d, &[]).unwrap().facts;
        assert_eq!(
            (facts.ipv4, facts.ipv6),
            (
                Some([10, 0, 3, 8].into()),
                Some("2600:1f18::8".parse().unwrap())
            )
        );
        // Not an IPv6 address: absent, and the rest of the event stands.
        let d = detail(serde_json::json!({
            "taskArn": "arn:aws:ecs:r:1:task/c/abc", "version": 1,
            "attachments": [{"type": "eni", "details": [
                {"name": "privateIPv6Address", "value": "10.0.3.9"}
            ]}]
        }));
        assert_eq!(TaskChange::from_detail(&d, &[]).unwrap().facts.ipv6, None);
    }
}
