//! The narrow traits the handler is generic over: Cloud Map, ECS, CloudWatch, EC2 (zones) and the
//! clock.
//!
//! The AWS implementations are in [`crate::aws`]; each method is one AWS operation (or a
//! paginated/batched series of one), returns parsed domain values, and maps SDK errors to
//! [`SyncError`] with their retry classification. Outcomes that are answers rather than failures
//! (an instance that does not exist, a task ECS does not know) are values, not errors.

use std::collections::HashMap;
use std::future::Future;
use std::time::SystemTime;

use cloudmap_balancer::contract::AttributeSet;

use crate::error::SyncError;
use crate::task::Described;

/// A Cloud Map instance: its ID and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Instance ID (for ECS-registered instances, the task ID).
    pub id: String,
    /// All attributes.
    pub attributes: HashMap<String, String>,
}

/// Cloud Map, as far as the Lambda uses it.
pub trait Registry: Send + Sync {
    /// `GetInstance`: the instance's attributes, `None` when there is no such instance.
    fn get_instance(
        &self,
        service_id: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<HashMap<String, String>>, SyncError>> + Send;

    /// `ListInstances`, every page: all instances of a service with their attributes.
    fn list_instances(
        &self,
        service_id: &str,
    ) -> impl Future<Output = Result<Vec<Instance>, SyncError>> + Send;

    /// `RegisterInstance` with exactly `attributes` (create or replace).
    fn register_instance(
        &self,
        service_id: &str,
        instance_id: &str,
        attributes: &AttributeSet,
    ) -> impl Future<Output = Result<(), SyncError>> + Send;

    /// `DeregisterInstance`. An instance that is already gone is success.
    fn deregister_instance(
        &self,
        service_id: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<(), SyncError>> + Send;
}

/// An ECS service and the Cloud Map registries (service ARNs) ECS registers its tasks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRegistries {
    /// Service name.
    pub service: String,
    /// `serviceRegistries[].registryArn`.
    pub registry_arns: Vec<String>,
}

/// ECS, as far as the Lambda uses it.
pub trait Tasks: Send + Sync {
    /// `DescribeTasks` (with tags), batched by 100: what ECS says about each requested task ID.
    /// Every requested ID is in the answer; the ones ECS does not know are
    /// [`Described::Missing`].
    fn describe_tasks(
        &self,
        cluster: &str,
        task_ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Described>, SyncError>> + Send;

    /// `ListTasks` of a service with desired status RUNNING, every page: task ARNs.
    fn list_service_tasks(
        &self,
        cluster: &str,
        service: &str,
    ) -> impl Future<Output = Result<Vec<String>, SyncError>> + Send;

    /// `DescribeServices` of one service: its registries (empty when it has none, or the service
    /// does not exist).
    fn service_registries(
        &self,
        cluster: &str,
        service: &str,
    ) -> impl Future<Output = Result<Vec<String>, SyncError>> + Send;

    /// `ListServices` + `DescribeServices` (batched by 10) of a cluster: the services that have
    /// registries.
    fn services_with_registries(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<ServiceRegistries>, SyncError>> + Send;
}

/// What to measure for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadQuery {
    /// Task ID.
    pub task_id: String,
    /// Cluster name.
    pub cluster: String,
    /// ECS service name.
    pub service: String,
    /// Task definition family, when known.
    pub family: Option<String>,
}

/// The newest CPU data points of one task, in CPU units.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuSample {
    /// CPU units used, when a data point was found.
    pub used: Option<f64>,
    /// CPU units reserved, when queried and a data point was found.
    pub reserved: Option<f64>,
}

/// CloudWatch, as far as the Lambda uses it.
pub trait Metrics: Send + Sync {
    /// `GetMetricData`, batched (up to 500 queries a call): the newest CPU data points of each
    /// task in the window before `now`. Tasks without data are absent from the answer.
    fn cpu_samples(
        &self,
        queries: &[LoadQuery],
        now: SystemTime,
    ) -> impl Future<Output = Result<HashMap<String, CpuSample>, SyncError>> + Send;
}

/// Why a task's availability zone ID is not known, for the log and the `ZoneIdUnavailable`
/// metric. None of these stops a write: the instance is written without `AVAILABILITY_ZONE_ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ZoneIdGap {
    /// Neither the event nor `DescribeTasks` names a subnet or a zone.
    NoZone,
    /// EC2 does not know the subnet (`InvalidSubnetID.NotFound`), or answered without its zone ID.
    SubnetNotFound,
    /// The zone name (a task without a subnet: EC2 bridge or host mode) is not among the zones
    /// `DescribeAvailabilityZones` lists for the function's account and region.
    ZoneNotFound,
    /// A task without a subnet that ECS does not describe (stopped over an hour ago, or another
    /// account's task forwarded to this function): zone names are per account, and only the
    /// function's own account's mapping can be read, so its name is not translated.
    TaskUnknown,
    /// The function may not call `ec2:DescribeSubnets` or `ec2:DescribeAvailabilityZones`
    /// (`UnauthorizedOperation`), e.g. after an upgrade that did not update its role.
    AccessDenied,
    /// EC2 throttled the call.
    Throttled,
    /// Anything else: a server error, a timeout, an answer that could not be read.
    Unavailable,
}

impl ZoneIdGap {
    /// A short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoZone => "no_zone",
            Self::SubnetNotFound => "subnet_not_found",
            Self::ZoneNotFound => "zone_not_found",
            Self::TaskUnknown => "task_unknown",
            Self::AccessDenied => "access_denied",
            Self::Throttled => "throttled",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A zone ID could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the zone ID of {what} is unknown ({})", gap.as_str())]
pub struct ZoneIdLookupError {
    /// What was looked up: a subnet ID, or the region's zones.
    pub what: String,
    /// Why.
    pub gap: ZoneIdGap,
    /// The AWS error, when there was one (not for a subnet EC2 answered without).
    #[source]
    pub source: Option<SyncError>,
}

/// EC2, as far as the Lambda uses it: where zone IDs come from.
pub trait Zones: Send + Sync {
    /// `DescribeSubnets` of one subnet: its `AvailabilityZoneId` (e.g. `euc1-az2`).
    fn zone_id(
        &self,
        subnet_id: &str,
    ) -> impl Future<Output = Result<String, ZoneIdLookupError>> + Send;

    /// `DescribeAvailabilityZones` in the function's own account and region: zone name (e.g.
    /// `eu-central-1a`) → zone ID, for every zone listed.
    fn zone_ids(
        &self,
    ) -> impl Future<Output = Result<HashMap<String, String>, ZoneIdLookupError>> + Send;
}

/// The time, injected so tests decide it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
