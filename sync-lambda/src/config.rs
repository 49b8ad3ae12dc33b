//! Configuration: environment variables, parsed once at start-up into typed values.
//!
//! Every variable has a default; a value that cannot be used fails the start (a Lambda init
//! error names the variable), never an invocation later. The table is in the README.

use std::collections::HashMap;
use std::time::Duration;

use cloudmap_balancer::contract::Weight;

use crate::decide::Policy;
use crate::error::SyncError;

/// The function's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `SYNC_CLUSTERS`: clusters whose services with Cloud Map registries are reconciled.
    pub clusters: Vec<String>,
    /// `SYNC_OWNER_MAPPINGS`: services whose instances the Lambda registers itself.
    pub owner_mappings: Vec<OwnerMapping>,
    /// `SYNC_REGISTRY_CACHE_TTL_SECS`: how long a service's registries (from
    /// `ecs:DescribeServices`) and a cluster's service list are reused.
    pub registry_cache_ttl: Duration,
    /// Decision knobs: `SYNC_DEFAULT_WEIGHT`, `SYNC_LOAD_STEP`, `SYNC_STOPPED_GRACE_SECS`.
    pub policy: Policy,
    /// `SYNC_WEIGHT_TAG`: the task tag that overrides the weight.
    pub weight_tag: String,
    /// Load from CloudWatch; `None` when `SYNC_LOAD_ENABLED=false`.
    pub load: Option<LoadConfig>,
    /// `SYNC_METRICS_NAMESPACE`: CloudWatch namespace of the function's own EMF metrics.
    pub metrics_namespace: String,
    /// `SYNC_LOG_LEVEL` (else `AWS_LAMBDA_LOG_LEVEL`): a `tracing` filter, e.g. `info` or
    /// `cloudmap_sync=debug`.
    pub log_level: String,
}

/// One owner-mode mapping: `CLUSTER/SERVICE=CLOUD_MAP_SERVICE:PORT`, the Cloud Map service by ID
/// (`srv-…`) or ARN (required for a service in a namespace another account shares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerMapping {
    /// ECS cluster name.
    pub cluster: String,
    /// ECS service name.
    pub service: String,
    /// The Cloud Map service: its ID (`srv-…`) or ARN, sent as `ServiceId` as given.
    pub cloudmap_service_id: String,
    /// Port written to `AWS_INSTANCE_PORT`.
    pub port: u16,
}

/// Where task load comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// `SYNC_LOAD_NAMESPACE`.
    pub namespace: String,
    /// `SYNC_LOAD_METRIC_USED`: CPU units used.
    pub used_metric: String,
    /// `SYNC_LOAD_METRIC_RESERVED`: CPU units reserved; `None` (empty variable) uses the task's
    /// CPU units instead, halving the queries.
    pub reserved_metric: Option<String>,
    /// `SYNC_LOAD_DIMENSIONS`: the metric's dimensions, in order.
    pub dimensions: Vec<Dimension>,
    /// `SYNC_LOAD_STATISTIC`, e.g. `Average`.
    pub statistic: String,
    /// `SYNC_LOAD_PERIOD_SECS`: the metric period.
    pub period: Duration,
    /// `SYNC_LOAD_WINDOW_SECS`: how far back to look for the newest data point (Container
    /// Insights data arrives a minute or two late).
    pub window: Duration,
}

/// A metric dimension the Lambda can fill in for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// `ClusterName`: the cluster name.
    ClusterName,
    /// `ServiceName`: the ECS service name.
    ServiceName,
    /// `TaskId`: the task ID.
    TaskId,
    /// `TaskDefinitionFamily`: the task definition family.
    TaskDefinitionFamily,
}

impl Dimension {
    /// The dimension name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClusterName => "ClusterName",
            Self::ServiceName => "ServiceName",
            Self::TaskId => "TaskId",
            Self::TaskDefinitionFamily => "TaskDefinitionFamily",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Self::ClusterName,
            Self::ServiceName,
            Self::TaskId,
            Self::TaskDefinitionFamily,
        ]
        .into_iter()
        .find(|d| d.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SyncError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables (the environment, or a test's map).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, SyncError> {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let vars = Vars(&vars);
        let load = if vars.flag("SYNC_LOAD_ENABLED", true)? {
            Some(LoadConfig {
                namespace: vars.text("SYNC_LOAD_NAMESPACE", "ECS/ContainerInsights"),
                used_metric: vars.text("SYNC_LOAD_METRIC_USED", "CpuUtilized"),
                reserved_metric: vars.optional_text("SYNC_LOAD_METRIC_RESERVED", "CpuReserved"),
                dimensions: vars
                    .dimensions("SYNC_LOAD_DIMENSIONS", "ClusterName,ServiceName,TaskId")?,
                statistic: vars.text("SYNC_LOAD_STATISTIC", "Average"),
                period: Duration::from_secs(vars.period("SYNC_LOAD_PERIOD_SECS", 60)?),
                window: Duration::from_secs(vars.number(
                    "SYNC_LOAD_WINDOW_SECS",
                    300,
                    60..=86_400,
                )?),
            })
        } else {
            None
        };
        let grace = vars.number("SYNC_STOPPED_GRACE_SECS", 3600, 0..=u64::MAX)?;
        let default_weight =
            vars.number("SYNC_DEFAULT_WEIGHT", 100, 0..=u64::from(Weight::MAX.get()))?;
        Ok(Self {
            clusters: vars.list("SYNC_CLUSTERS"),
            owner_mappings: vars.owner_mappings("SYNC_OWNER_MAPPINGS")?,
            registry_cache_ttl: Duration::from_secs(vars.number(
                "SYNC_REGISTRY_CACHE_TTL_SECS",
                300,
                0..=86_400,
            )?),
            policy: Policy {
                default_weight: Weight::saturating(
                    u32::try_from(default_weight).unwrap_or(u32::MAX),
                ),
                load_step: u32::try_from(vars.number("SYNC_LOAD_STEP", 10, 1..=100)?).unwrap_or(10),
                stopped_grace: (grace > 0).then(|| Duration::from_secs(grace)),
            },
            weight_tag: vars.text("SYNC_WEIGHT_TAG", "lb:weight"),
            load,
            metrics_namespace: vars.text("SYNC_METRICS_NAMESPACE", "CloudMapSync"),
            log_level: vars
                .get("SYNC_LOG_LEVEL")
                .or_else(|| vars.get("AWS_LAMBDA_LOG_LEVEL"))
                .unwrap_or("info")
                .to_ascii_lowercase(),
        })
    }

    /// The owner-mode mapping of an ECS service, if any.
    pub fn owner_mapping(&self, cluster: &str, service: &str) -> Option<&OwnerMapping> {
        self.owner_mappings
            .iter()
            .find(|m| m.cluster == cluster && m.service == service)
    }
}

struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    /// A trimmed value; blank counts as unset.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn text(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    /// Unset gives `default`; set but blank gives `None` ("not used").
    fn optional_text(&self, name: &str, default: &str) -> Option<String> {
        match self.0.get(name) {
            Some(_) => self.get(name).map(str::to_owned),
            None => Some(default.to_owned()),
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split([',', ' ', '\n'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> SyncError {
        SyncError::Config {
            name,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    fn number(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, SyncError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        match value.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(Self::invalid(
                name,
                value,
                format!("expected an integer in {}..={}", range.start(), range.end()),
            )),
        }
    }

    /// A CloudWatch period: 1, 5, 10, 30 (high resolution) or a multiple of 60 seconds.
    fn period(&self, name: &'static str, default: u64) -> Result<u64, SyncError> {
        let period = self.number(name, default, 1..=86_400)?;
        if [1, 5, 10, 30].contains(&period) || period % 60 == 0 {
            Ok(period)
        } else {
            let value = period.to_string();
            Err(Self::invalid(
                name,
                &value,
                "CloudWatch takes 1, 5, 10, 30 or a multiple of 60",
            ))
        }
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, SyncError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(Self::invalid(name, other, "expected true or false")),
        }
    }

    fn dimensions(&self, name: &'static str, default: &str) -> Result<Vec<Dimension>, SyncError> {
        let value = self.get(name).unwrap_or(default);
        let dimensions = value
            .split(',')
            .map(|d| {
                Dimension::parse(d).ok_or_else(|| {
                    Self::invalid(
                        name,
                        value,
                        format!(
                            "unknown dimension {:?}; known: ClusterName, ServiceName, TaskId, TaskDefinitionFamily",
                            d.trim()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !dimensions.contains(&Dimension::TaskId) {
            return Err(Self::invalid(
                name,
                value,
                "TaskId is needed: load is per task",
            ));
        }
        Ok(dimensions)
    }

    fn owner_mappings(&self, name: &'static str) -> Result<Vec<OwnerMapping>, SyncError> {
        let mut mappings: Vec<OwnerMapping> = Vec::new();
        for entry in self.list(name) {
            let bad = |reason: &str| {
                Self::invalid(
                    name,
                    &entry,
                    format!(
                        "{reason}; expected CLUSTER/SERVICE=CLOUD_MAP_SERVICE_ID:PORT \
                         (the service's ID or ARN)"
                    ),
                )
            };
            let (ecs, cloud_map) = entry.split_once('=').ok_or_else(|| bad("no `=`"))?;
            let (cluster, service) = ecs.split_once('/').ok_or_else(|| bad("no `/`"))?;
            let (service_id, port) = cloud_map
                .rsplit_once(':')
                .ok_or_else(|| bad("no `:PORT`"))?;
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("the port is not 1-65535"))?;
            if [cluster, service, service_id].iter().any(|s| s.is_empty()) {
                return Err(bad("an empty name"));
            }
            if service_id.starts_with("arn:") && !crate::handler::is_service_arn(service_id) {
                return Err(bad("not a Cloud Map service ARN"));
            }
            if mappings
                .iter()
                .any(|m| m.cluster == cluster && m.service == service)
            {
                return Err(bad("the service is mapped twice"));
            }
            mappings.push(OwnerMapping {
                cluster: cluster.to_owned(),
                service: service.to_owned(),
                cloudmap_service_id: service_id.to_owned(),
                port,
            });
        }
        Ok(mappings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, SyncError> {
        Config::from_vars(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert!(c.clusters.is_empty() && c.owner_mappings.is_empty());
        assert_eq!(c.registry_cache_ttl, Duration::from_secs(300));
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.weight_tag, "lb:weight");
        let load = c.load.unwrap();
        assert_eq!(load.namespace, "ECS/ContainerInsights");
        assert_eq!(load.used_metric, "CpuUtilized");
        assert_eq!(load.reserved_metric.as_deref(), Some("CpuReserved"));
        assert_eq!(
            load.dimensions,
            [
                Dimension::ClusterName,
                Dimension::ServiceName,
                Dimension::TaskId
            ]
        );
        assert_eq!((load.period.as_secs(), load.window.as_secs()), (60, 300));
        assert_eq!(c.metrics_namespace, "CloudMapSync");
        assert_eq!(c.log_level, "info");
    }

    #[test]
    fn values() {
        let c = config(&[
            ("SYNC_CLUSTERS", "prod, staging"),
            (
                "SYNC_OWNER_MAPPINGS",
                "prod/echo=srv-abc:50051 staging/echo=srv-def:8080",
            ),
            ("SYNC_LOAD_METRIC_RESERVED", ""),
            (
                "SYNC_LOAD_DIMENSIONS",
                "ClusterName,TaskDefinitionFamily,TaskId",
            ),
            ("SYNC_STOPPED_GRACE_SECS", "0"),
            ("SYNC_LOAD_STEP", "5"),
            ("AWS_LAMBDA_LOG_LEVEL", "DEBUG"),
        ])
        .unwrap();
        assert_eq!(c.clusters, ["prod", "staging"]);
        assert_eq!(
            c.owner_mapping("prod", "echo").unwrap().cloudmap_service_id,
            "srv-abc"
        );
        assert_eq!(c.owner_mapping("staging", "echo").unwrap().port, 8080);
        assert_eq!(c.owner_mapping("prod", "other"), None);
        // A service of a namespace another account shares: by ARN, colons and all.
        let shared = "arn:aws:servicediscovery:eu-central-1:111122223333:service/srv-abc";
        let by_arn =
            config(&[("SYNC_OWNER_MAPPINGS", &format!("prod/echo={shared}:50051"))]).unwrap();
        let mapping = by_arn.owner_mapping("prod", "echo").unwrap();
        assert_eq!(
            (mapping.cloudmap_service_id.as_str(), mapping.port),
            (shared, 50051)
        );
        let load = c.load.unwrap();
        assert_eq!(load.reserved_metric, None);
        assert_eq!(load.dimensions[1], Dimension::TaskDefinitionFamily);
        assert_eq!(c.policy.stopped_grace, None);
        assert_eq!(c.policy.load_step, 5);
        assert_eq!(c.log_level, "debug");
        assert_eq!(
            config(&[("SYNC_LOAD_ENABLED", "false")]).unwrap().load,
            None
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("SYNC_OWNER_MAPPINGS", "prod/echo"),
            ("SYNC_OWNER_MAPPINGS", "prod/echo=srv-1:0"),
            ("SYNC_OWNER_MAPPINGS", "prod/echo=srv-1:1,prod/echo=srv-2:2"),
            ("SYNC_OWNER_MAPPINGS", "/echo=srv-1:80"),
            (
                "SYNC_OWNER_MAPPINGS",
                "prod/echo=arn:aws:servicediscovery:eu-central-1:1:namespace/ns-1:80",
            ),
            ("SYNC_LOAD_DIMENSIONS", "ClusterName,Pod"),
            ("SYNC_LOAD_DIMENSIONS", "ClusterName"),
            ("SYNC_LOAD_STEP", "0"),
            ("SYNC_DEFAULT_WEIGHT", "10001"),
            ("SYNC_REGISTRY_CACHE_TTL_SECS", "soon"),
            ("SYNC_LOAD_ENABLED", "maybe"),
            ("SYNC_LOAD_PERIOD_SECS", "90"),
        ] {
            match config(&[(name, value)]) {
                Err(SyncError::Config { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }
}
