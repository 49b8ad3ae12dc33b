//! Which ECS task this server is: from the task metadata endpoint v4 when running on ECS, with
//! `DEMO_*` overrides for local runs.
//!
//! On ECS the agent sets `ECS_CONTAINER_METADATA_URI_V4`; `GET ${URI}/task` gives the zone, task
//! ARN, cluster, family and revision, `GET ${URI}` the container's networks (its IPv4 address).
//! Every field an override sets wins over the metadata, so a local run needs no endpoint at all.

mod fetch;
mod metadata;

use std::time::Duration;

use crate::Error;

/// The ECS task a server runs as: what every answer reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Availability zone, e.g. `eu-central-1a`; empty when unknown.
    pub zone: String,
    /// The task ARN; empty when unknown.
    pub task_arn: String,
    /// The task ID (the ARN's last segment; ECS's Cloud Map instance ID); empty when unknown.
    pub task_id: String,
    /// The cluster's short name; empty when unknown.
    pub cluster: String,
    /// Task definition family; empty when unknown.
    pub family: String,
    /// Task definition revision; empty when unknown.
    pub revision: String,
    /// The task's IPv4 address as ECS reports it; empty when unknown.
    pub host: String,
}

/// Identity values set by the environment (`DEMO_ZONE`, ...); each one set wins over the task
/// metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityOverrides {
    /// `DEMO_ZONE`.
    pub zone: Option<String>,
    /// `DEMO_TASK_ARN`; the task ID is derived from it.
    pub task_arn: Option<String>,
    /// `DEMO_CLUSTER`: a name or a cluster ARN.
    pub cluster: Option<String>,
    /// `DEMO_FAMILY`.
    pub family: Option<String>,
    /// `DEMO_REVISION`.
    pub revision: Option<String>,
    /// `DEMO_HOST`.
    pub host: Option<String>,
}

/// How long one request to the metadata endpoint may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per metadata document: the endpoint is local to the task, so failures are rare and
/// short (the agent restarting); three attempts over about a second ride them out.
const METADATA_ATTEMPTS: u32 = 3;

impl Identity {
    /// The identity from the task metadata endpoint v4 at `metadata_uri` (when given) with
    /// `overrides` applied. Without an endpoint, only the overrides (and what derives from the
    /// task ARN) are known.
    ///
    /// # Errors
    ///
    /// When an endpoint is given but cannot be read or answers something unexpected: a server
    /// that reported a wrong identity would make every demo result a lie, so it refuses to start.
    pub async fn resolve(
        metadata_uri: Option<&str>,
        overrides: &IdentityOverrides,
    ) -> Result<Self, Error> {
        let from_metadata = match metadata_uri {
            Some(uri) => {
                let task_url = fetch::document_url(uri, "task")?;
                let container_url = fetch::document_url(uri, "")?;
                let task = fetch::get(&task_url, METADATA_TIMEOUT, METADATA_ATTEMPTS).await?;
                let container =
                    fetch::get(&container_url, METADATA_TIMEOUT, METADATA_ATTEMPTS).await?;
                let identity =
                    metadata::identity(&task, &container).map_err(|(which, source)| {
                        Error::MetadataJson {
                            url: match which {
                                metadata::Document::Task => task_url.to_string(),
                                metadata::Document::Container => container_url.to_string(),
                            },
                            source,
                        }
                    })?;
                tracing::info!(
                    zone = %identity.zone,
                    task_arn = %identity.task_arn,
                    cluster = %identity.cluster,
                    family = %identity.family,
                    revision = %identity.revision,
                    host = %identity.host,
                    "identity from the task metadata endpoint"
                );
                identity
            }
            None => Self::default(),
        };
        Ok(from_metadata.with_overrides(overrides))
    }

    /// This identity with every set override applied, and the derived fields (task ID, cluster
    /// name) recomputed.
    pub fn with_overrides(mut self, overrides: &IdentityOverrides) -> Self {
        let set = |field: &mut String, value: &Option<String>| {
            if let Some(value) = value {
                value.trim().clone_into(field);
            }
        };
        set(&mut self.zone, &overrides.zone);
        set(&mut self.task_arn, &overrides.task_arn);
        set(&mut self.family, &overrides.family);
        set(&mut self.revision, &overrides.revision);
        set(&mut self.host, &overrides.host);
        if let Some(cluster) = &overrides.cluster {
            self.cluster = cluster_name(cluster.trim()).to_owned();
        }
        self.task_id = task_id(&self.task_arn).to_owned();
        if self.cluster.is_empty() {
            self.cluster = cluster_of_task_arn(&self.task_arn)
                .unwrap_or_default()
                .to_owned();
        }
        self
    }
}

/// The task ID of a task ARN: its last `/` segment, in both ARN formats
/// (`task/CLUSTER/ID` and the old `task/ID`). Anything else is taken as the ID itself.
fn task_id(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap_or(task_arn)
}

/// The cluster name in a new-format task ARN (`...:task/CLUSTER/ID`).
fn cluster_of_task_arn(task_arn: &str) -> Option<&str> {
    let (_, resource) = task_arn.split_once(":task/")?;
    let (cluster, _) = resource.split_once('/')?;
    Some(cluster)
}

/// A cluster's short name from either its name or its ARN (`...:cluster/NAME`).
fn cluster_name(cluster: &str) -> &str {
    match cluster.split_once(":cluster/") {
        Some((_, name)) => name,
        None => cluster,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_come_from_both_arn_formats() {
        assert_eq!(
            task_id(
                "arn:aws:ecs:eu-central-1:123456789012:task/demo/0123456789abcdef0123456789abcdef"
            ),
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(
            task_id(
                "arn:aws:ecs:eu-central-1:123456789012:task/33d0f530-3e32-4bce-b55d-564887d1bf46"
            ),
            "33d0f530-3e32-4bce-b55d-564887d1bf46"
        );
        assert_eq!(task_id("local-1"), "local-1");
        assert_eq!(task_id(""), "");
    }

    #[test]
    fn cluster_names_come_from_names_arns_and_task_arns() {
        assert_eq!(cluster_name("demo"), "demo");
        assert_eq!(
            cluster_name("arn:aws:ecs:eu-central-1:123456789012:cluster/demo"),
            "demo"
        );
        assert_eq!(
            cluster_of_task_arn("arn:aws:ecs:eu-central-1:123456789012:task/demo/abc"),
            Some("demo")
        );
        assert_eq!(
            cluster_of_task_arn("arn:aws:ecs:eu-central-1:123456789012:task/abc"),
            None
        );
    }

    #[test]
    fn overrides_win_and_derived_fields_follow_them() {
        let from_metadata = Identity {
            zone: "us-west-2d".into(),
            task_arn: "arn:aws:ecs:us-west-2:111122223333:task/default/aaa".into(),
            task_id: "aaa".into(),
            cluster: "default".into(),
            family: "curltest".into(),
            revision: "3".into(),
            host: "192.0.2.3".into(),
        };
        let overridden = from_metadata.clone().with_overrides(&IdentityOverrides {
            zone: Some("eu-central-1c".into()),
            task_arn: Some("arn:aws:ecs:eu-central-1:123456789012:task/other/bbb".into()),
            ..IdentityOverrides::default()
        });
        assert_eq!(overridden.zone, "eu-central-1c");
        assert_eq!(overridden.task_id, "bbb");
        // The cluster came from the metadata and no override names another one.
        assert_eq!(overridden.cluster, "default");
        assert_eq!(overridden.family, "curltest");
        assert_eq!(overridden.host, "192.0.2.3");

        let unchanged = from_metadata
            .clone()
            .with_overrides(&IdentityOverrides::default());
        assert_eq!(unchanged, from_metadata);
    }

    #[test]
    fn without_metadata_the_overrides_are_the_identity() {
        let identity = Identity::default().with_overrides(&IdentityOverrides {
            zone: Some("eu-central-1a".into()),
            task_arn: Some("arn:aws:ecs:eu-central-1:123456789012:task/demo/t1".into()),
            cluster: None,
            family: Some("demo-server".into()),
            revision: Some("1".into()),
            host: Some("127.0.0.1".into()),
        });
        assert_eq!(
            identity,
            Identity {
                zone: "eu-central-1a".into(),
                task_arn: "arn:aws:ecs:eu-central-1:123456789012:task/demo/t1".into(),
                task_id: "t1".into(),
                cluster: "demo".into(),
                family: "demo-server".into(),
                revision: "1".into(),
                host: "127.0.0.1".into(),
            }
        );
        let cluster_arn = Identity::default().with_overrides(&IdentityOverrides {
            cluster: Some("arn:aws:ecs:eu-central-1:123456789012:cluster/prod".into()),
            ..IdentityOverrides::default()
        });
        assert_eq!(cluster_arn.cluster, "prod");
    }
}
