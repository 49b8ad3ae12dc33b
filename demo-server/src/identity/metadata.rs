//! The two task metadata v4 documents, parsed into an [`Identity`].
//!
//! Only the fields used are read; unknown fields are ignored and every field is optional, because
//! their presence varies with launch type and agent version (`AvailabilityZone` is missing on old
//! EC2 agents, `Networks` on host-mode containers).

use serde::Deserialize;

use super::{Identity, cluster_name, task_id};

/// `GET ${ECS_CONTAINER_METADATA_URI_V4}/task`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TaskMetadata {
    /// A cluster ARN (Fargate) or short name (EC2).
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default, rename = "TaskARN")]
    task_arn: Option<String>,
    #[serde(default)]
    family: Option<String>,
    /// A string in AWS's documentation; accepted as a number too.
    #[serde(default)]
    revision: Option<StringOrNumber>,
    #[serde(default)]
    availability_zone: Option<String>,
}

/// `GET ${ECS_CONTAINER_METADATA_URI_V4}`: this container.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerMetadata {
    #[serde(default)]
    networks: Vec<Network>,
}

#[derive(Debug, Deserialize)]
struct Network {
    #[serde(default, rename = "IPv4Addresses")]
    ipv4_addresses: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Number(u64),
}

/// Which document failed to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Document {
    Task,
    Container,
}

/// The identity the two documents describe.
pub(super) fn identity(
    task: &[u8],
    container: &[u8],
) -> Result<Identity, (Document, serde_json::Error)> {
    let task: TaskMetadata =
        serde_json::from_slice(task).map_err(|error| (Document::Task, error))?;
    let container: ContainerMetadata =
        serde_json::from_slice(container).map_err(|error| (Document::Container, error))?;

    let task_arn = task.task_arn.unwrap_or_default();
    Ok(Identity {
        zone: task.availability_zone.unwrap_or_default(),
        task_id: task_id(&task_arn).to_owned(),
        cluster: task
            .cluster
            .as_deref()
            .map(cluster_name)
            .unwrap_or_default()
            .to_owned(),
        task_arn,
        family: task.family.unwrap_or_default(),
        revision: match task.revision {
            Some(StringOrNumber::String(revision)) => revision,
            Some(StringOrNumber::Number(revision)) => revision.to_string(),
            None => String::new(),
        },
        host: container
            .networks
            .into_iter()
            .flat_map(|network| network.ipv4_addresses)
            .next()
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like AWS's example Fargate responses (trimmed, values changed).
    const FARGATE_TASK: &str = r#"{
        "Cluster": "arn:aws:ecs:eu-central-1:123456789012:cluster/demo",
        "TaskARN": "arn:aws:ecs:eu-central-1:123456789012:task/demo/5b2f9c0e7d6a4c1e9f3b8a7d6c5e4f3a",
        "Family": "demo-server",
        "Revision": "4",
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "Limits": {"CPU": 0.25, "Memory": 512},
        "PullStartedAt": "2026-01-08T20:09:10.105342123Z",
        "AvailabilityZone": "eu-central-1b",
        "LaunchType": "FARGATE",
        "Containers": [],
        "ClockDrift": {"ClockErrorBound": 0.5, "ReferenceTimestamp": "2026-01-08T20:09:00Z", "ClockSynchronizationStatus": "SYNCHRONIZED"},
        "EphemeralStorageMetrics": {"Utilized": 261, "Reserved": 20496}
    }"#;
    const FARGATE_CONTAINER: &str = r#"{
        "DockerId": "5b2f9c0e7d6a4c1e9f3b8a7d6c5e4f3a-1234567890",
        "Name": "demo-server",
        "Networks": [{
            "NetworkMode": "awsvpc",
            "IPv4Addresses": ["10.0.2.17"],
            "AttachmentIndex": 0,
            "MACAddress": "0a:11:22:33:44:55",
            "IPv4SubnetCIDRBlock": "10.0.2.0/24",
            "PrivateDNSName": "ip-10-0-2-17.eu-central-1.compute.internal",
            "SubnetGatewayIpv4Address": "10.0.2.1/24"
        }]
    }"#;

    #[test]
    fn fargate_documents_give_the_whole_identity() {
        let identity = identity(FARGATE_TASK.as_bytes(), FARGATE_CONTAINER.as_bytes()).unwrap();
        assert_eq!(
            identity,
            Identity {
                zone: "eu-central-1b".into(),
                task_arn: "arn:aws:ecs:eu-central-1:123456789012:task/demo/5b2f9c0e7d6a4c1e9f3b8a7d6c5e4f3a".into(),
                task_id: "5b2f9c0e7d6a4c1e9f3b8a7d6c5e4f3a".into(),
                cluster: "demo".into(),
                family: "demo-server".into(),
                revision: "4".into(),
                host: "10.0.2.17".into(),
            }
        );
    }

    #[test]
    fn ec2_shapes_missing_fields_and_numbers_are_accepted() {
        // An old EC2 agent: short cluster name, old ARN format, numeric revision, no zone, host
        // networking (no Networks).
        let task = r#"{"Cluster": "default", "TaskARN": "arn:aws:ecs:us-east-2:012345678910:task/9781c248-0edd-4cdb-9a93-f63cb662a5d3", "Family": "nginx", "Revision": 5}"#;
        let identity = identity(task.as_bytes(), b"{}").unwrap();
        assert_eq!(identity.cluster, "default");
        assert_eq!(identity.task_id, "9781c248-0edd-4cdb-9a93-f63cb662a5d3");
        assert_eq!(identity.revision, "5");
        assert_eq!(identity.zone, "");
        assert_eq!(identity.host, "");
    }

    #[test]
    fn malformed_documents_say_which_one() {
        assert_eq!(
            identity(b"<html>", FARGATE_CONTAINER.as_bytes())
                .unwrap_err()
                .0,
            Document::Task
        );
        assert_eq!(
            identity(FARGATE_TASK.as_bytes(), br#"{"Networks": "eth0"}"#)
                .unwrap_err()
                .0,
            Document::Container
        );
    }
}
