//! What the Lambda knows about one ECS task, from either source (an event or `DescribeTasks`),
//! as plain validated data. The event and AWS modules parse into these types; the decision
//! modules read only these.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use cloudmap_balancer::contract::{LbHealth, LbState, Weight};

/// Identity of a task: its ARN, ID and cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    /// The task ARN as AWS gave it (new `task/CLUSTER/ID` or old `task/ID` format).
    pub arn: String,
    /// The task ID: the ARN's last segment. ECS uses it as the Cloud Map instance ID.
    pub id: String,
    /// The cluster name (the last segment of the cluster ARN).
    pub cluster: String,
}

impl TaskRef {
    /// Builds a reference from a task ARN (either format) and a cluster ARN or name. `None` when
    /// the task ARN has no ID or the cluster is blank.
    pub fn new(task_arn: &str, cluster: &str) -> Option<Self> {
        let id = task_id(task_arn)?;
        let cluster = last_segment(cluster)?;
        Some(Self {
            arn: task_arn.trim().to_owned(),
            id: id.to_owned(),
            cluster: cluster.to_owned(),
        })
    }
}

impl TaskRef {
    /// The account and region in the task's ARN (`arn:PARTITION:ecs:REGION:ACCOUNT:task/…`, both
    /// formats); `None` when the ARN is not of that shape.
    pub fn account_region(&self) -> Option<(&str, &str)> {
        let mut parts = self.arn.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some("ecs"), Some(region), Some(account), Some(_)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        (!region.is_empty() && !account.is_empty()).then_some((account, region))
    }
}

/// The ID of a task from its ARN (either format) or from a bare ID.
pub fn task_id(arn_or_id: &str) -> Option<&str> {
    last_segment(arn_or_id)
}

/// The part after the last `/` (or the whole text when there is none), when not blank.
pub(crate) fn last_segment(text: &str) -> Option<&str> {
    let text = text.trim();
    let segment = text.rsplit('/').next().unwrap_or(text);
    (!segment.is_empty() && !segment.contains(char::is_whitespace)).then_some(segment)
}

/// ECS task `group`: `service:NAME` for service tasks, `family:NAME` for standalone ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// A task started by the service scheduler of service `NAME`.
    Service(String),
    /// Anything else: standalone tasks (`family:NAME`), custom groups, a missing group.
    Other(String),
}

impl Group {
    /// Parses a group string; only a non-empty `service:` prefix makes a service group.
    pub fn parse(group: Option<&str>) -> Self {
        let group = group.unwrap_or_default().trim();
        match group.strip_prefix("service:") {
            Some(name) if !name.trim().is_empty() => Self::Service(name.trim().to_owned()),
            _ => Self::Other(group.to_owned()),
        }
    }

    /// The service name, for service tasks.
    pub fn service(&self) -> Option<&str> {
        match self {
            Self::Service(name) => Some(name),
            Self::Other(_) => None,
        }
    }
}

/// ECS `lastStatus`, in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LastStatus {
    /// `PROVISIONING`.
    Provisioning,
    /// `PENDING`.
    Pending,
    /// `ACTIVATING`.
    Activating,
    /// `RUNNING`.
    Running,
    /// `DEACTIVATING`.
    Deactivating,
    /// `STOPPING`.
    Stopping,
    /// `DEPROVISIONING`.
    Deprovisioning,
    /// `STOPPED`.
    Stopped,
}

impl LastStatus {
    /// Parses an ECS status (case-insensitive). `None` for anything unknown.
    pub fn parse(status: &str) -> Option<Self> {
        let status = status.trim();
        [
            ("PROVISIONING", Self::Provisioning),
            ("PENDING", Self::Pending),
            ("ACTIVATING", Self::Activating),
            ("RUNNING", Self::Running),
            ("DEACTIVATING", Self::Deactivating),
            ("STOPPING", Self::Stopping),
            ("DEPROVISIONING", Self::Deprovisioning),
            ("STOPPED", Self::Stopped),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(status))
        .map(|(_, value)| value)
    }

    /// Whether the task is on its way down (or down): no state after this one takes calls.
    pub fn is_stopping(self) -> bool {
        self >= Self::Deactivating
    }
}

/// ECS `desiredStatus`. `PENDING` (rare) counts as `RUNNING`: the task is meant to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DesiredStatus {
    /// `RUNNING` or `PENDING`.
    Running,
    /// `STOPPED`: the scheduler, a user or a Spot interruption wants the task gone.
    Stopped,
}

impl DesiredStatus {
    /// Parses an ECS desired status (case-insensitive). `None` for anything unknown.
    pub fn parse(status: &str) -> Option<Self> {
        let status = status.trim();
        if status.eq_ignore_ascii_case("RUNNING") || status.eq_ignore_ascii_case("PENDING") {
            Some(Self::Running)
        } else if status.eq_ignore_ascii_case("STOPPED") {
            Some(Self::Stopped)
        } else {
            None
        }
    }
}

/// One observation of where a task is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lifecycle {
    /// `lastStatus`.
    pub last: LastStatus,
    /// `desiredStatus`; a missing value counts as `RUNNING` unless the task is already stopping.
    pub desired: DesiredStatus,
}

impl Lifecycle {
    /// Parses `lastStatus` and `desiredStatus`. `None` when `lastStatus` is missing or unknown.
    pub fn parse(last: Option<&str>, desired: Option<&str>) -> Option<Self> {
        let last = LastStatus::parse(last?)?;
        let desired = desired
            .and_then(DesiredStatus::parse)
            .unwrap_or(if last.is_stopping() {
                DesiredStatus::Stopped
            } else {
                DesiredStatus::Running
            });
        Some(Self { last, desired })
    }

    /// The contract state for this observation (the mapping table in the README):
    ///
    /// | `lastStatus` | `desiredStatus` | `LB_STATE` |
    /// |---|---|---|
    /// | PROVISIONING, PENDING, ACTIVATING | RUNNING | STARTING |
    /// | RUNNING | RUNNING | RUNNING |
    /// | PROVISIONING … RUNNING | STOPPED | DRAINING |
    /// | DEACTIVATING, STOPPING, DEPROVISIONING, STOPPED | any | STOPPED |
    pub fn phase(self) -> LbState {
        match (self.last, self.desired) {
            (last, _) if last.is_stopping() => LbState::Stopped,
            (_, DesiredStatus::Stopped) => LbState::Draining,
            (LastStatus::Running, DesiredStatus::Running) => LbState::Running,
            _ => LbState::Starting,
        }
    }
}

/// Facts about a task that do not change during its life: size, zone, capacity, addresses,
/// subnet, start time. Every field is optional; sources are layered with [`TaskFacts::or`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFacts {
    /// Task CPU units (1024 = one vCPU).
    pub cpu_units: Option<u32>,
    /// Task memory in MiB.
    pub memory_mib: Option<u32>,
    /// Availability zone, e.g. `eu-central-1a`.
    pub zone: Option<String>,
    /// Capacity provider name, else launch type.
    pub capacity: Option<String>,
    /// The ENI's private IPv4 address (awsvpc tasks only; absent in IPv6-only subnets).
    pub ipv4: Option<Ipv4Addr>,
    /// The ENI's IPv6 address (awsvpc tasks in dual-stack or IPv6-only subnets).
    pub ipv6: Option<Ipv6Addr>,
    /// The ENI's subnet (`subnetId`; awsvpc tasks only): where the zone ID comes from.
    pub subnet: Option<String>,
    /// Availability zone ID, e.g. `euc1-az2`. Neither an event nor `DescribeTasks` carries it: the
    /// handler derives it from [`TaskFacts::subnet`] (EC2 `DescribeSubnets`), or for a task
    /// without one from [`TaskFacts::zone`] (EC2 `DescribeAvailabilityZones`), before deciding.
    pub zone_id: Option<String>,
    /// ECS `startedAt`: when the task turned RUNNING. Absent before that, and for a task that
    /// never ran.
    pub started_at: Option<SystemTime>,
}

impl TaskFacts {
    /// Field by field: this value where known, else `fallback`'s.
    #[must_use]
    pub fn or(self, fallback: Self) -> Self {
        Self {
            cpu_units: self.cpu_units.or(fallback.cpu_units),
            memory_mib: self.memory_mib.or(fallback.memory_mib),
            zone: self.zone.or(fallback.zone),
            capacity: self.capacity.or(fallback.capacity),
            ipv4: self.ipv4.or(fallback.ipv4),
            ipv6: self.ipv6.or(fallback.ipv6),
            subnet: self.subnet.or(fallback.subnet),
            zone_id: self.zone_id.or(fallback.zone_id),
            started_at: self.started_at.or(fallback.started_at),
        }
    }
}

/// A task-level `lb:weight` tag as found: a valid weight, or the raw value that was not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightTag {
    /// An integer 0–10000.
    Valid(Weight),
    /// Anything else (logged; the formula is used instead).
    Invalid(String),
}

impl WeightTag {
    /// Parses a tag value.
    pub fn parse(value: &str) -> Self {
        match value.trim().parse::<u32>().ok().and_then(Weight::new) {
            Some(weight) => Self::Valid(weight),
            None => Self::Invalid(value.chars().take(64).collect()),
        }
    }
}

/// A task as `ecs:DescribeTasks` describes it: the level truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedTask {
    /// Identity.
    pub task: TaskRef,
    /// `lastStatus`/`desiredStatus`; `None` when unknown.
    pub lifecycle: Option<Lifecycle>,
    /// `version`; `None` when absent (moto does not report it; AWS always does).
    pub version: Option<u64>,
    /// `healthStatus`; `None` when absent.
    pub health: Option<LbHealth>,
    /// The weight tag, when the task carries one.
    pub weight_tag: Option<WeightTag>,
    /// Static facts.
    pub facts: TaskFacts,
    /// Task definition family, from `taskDefinitionArn` (a metric dimension).
    pub family: Option<String>,
}

/// What `DescribeTasks` said about one task ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Described {
    /// The task, as described.
    Found(Box<DescribedTask>),
    /// ECS does not know the task (a `MISSING` failure): stopped over an hour ago, or never was.
    Missing,
}

impl Described {
    /// The task, when found.
    pub fn found(&self) -> Option<&DescribedTask> {
        match self {
            Self::Found(task) => Some(task),
            Self::Missing => None,
        }
    }
}

/// Parses a CPU value the way ECS spells it: units (`"256"`), or vCPUs (`"1 vCPU"`,
/// `"0.25 vcpu"`). `None` for anything else, including `"null"` and `"0"` (no reservation).
pub fn parse_cpu_units(value: &str) -> Option<u32> {
    let value = value.trim();
    if let Ok(units) = value.parse::<u32>() {
        return (units > 0).then_some(units);
    }
    let lower = value.to_ascii_lowercase();
    let vcpus = lower.strip_suffix("vcpu")?.trim().parse::<f64>().ok()?;
    units_from(vcpus * 1024.0)
}

/// Parses a memory value the way ECS spells it: MiB (`"512"`) or GB (`"1GB"`, `"0.5 gb"`).
/// `None` for anything else and for zero.
pub fn parse_memory_mib(value: &str) -> Option<u32> {
    let value = value.trim();
    if let Ok(mib) = value.parse::<u32>() {
        return (mib > 0).then_some(mib);
    }
    let lower = value.to_ascii_lowercase();
    let gb = lower.strip_suffix("gb")?.trim().parse::<f64>().ok()?;
    units_from(gb * 1024.0)
}

fn units_from(value: f64) -> Option<u32> {
    // Checked against the range first, so the cast cannot truncate or wrap.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (value.is_finite() && value >= 1.0 && value <= f64::from(u32::MAX))
        .then(|| value.round() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_refs_from_both_arn_formats() {
        let new = TaskRef::new(
            "arn:aws:ecs:eu-central-1:123456789012:task/prod/0a1b2c",
            "arn:aws:ecs:eu-central-1:123456789012:cluster/prod",
        )
        .unwrap();
        assert_eq!((new.id.as_str(), new.cluster.as_str()), ("0a1b2c", "prod"));
        let old = TaskRef::new(
            "arn:aws:ecs:eu-central-1:123456789012:task/9f8e-7d6c",
            "prod",
        )
        .unwrap();
        assert_eq!(old.id, "9f8e-7d6c");
        for task in [&new, &old] {
            assert_eq!(
                task.account_region(),
                Some(("123456789012", "eu-central-1"))
            );
        }
        assert_eq!(TaskRef::new("abc", "prod").unwrap().account_region(), None);
        assert_eq!(
            TaskRef::new("arn:aws:ecs::1:task/c/abc", "c")
                .unwrap()
                .account_region(),
            None
        );
        assert_eq!(TaskRef::new("arn:aws:ecs:x:task/", "prod"), None);
        assert_eq!(TaskRef::new("abc", " "), None);
    }

    #[test]
    fn groups() {
        assert_eq!(Group::parse(Some("service:echo")).service(), Some("echo"));
        assert_eq!(Group::parse(Some("family:echo")).service(), None);
        assert_eq!(Group::parse(Some("service:")).service(), None);
        assert_eq!(Group::parse(None).service(), None);
    }

    #[test]
    fn phase_table() {
        use DesiredStatus as D;
        use LastStatus as L;
        let cases = [
            (L::Provisioning, D::Running, LbState::Starting),
            (L::Pending, D::Running, LbState::Starting),
            (L::Activating, D::Running, LbState::Starting),
            (L::Running, D::Running, LbState::Running),
            (L::Running, D::Stopped, LbState::Draining),
            (L::Pending, D::Stopped, LbState::Draining),
            (L::Deactivating, D::Stopped, LbState::Stopped),
            (L::Stopping, D::Stopped, LbState::Stopped),
            (L::Deprovisioning, D::Stopped, LbState::Stopped),
            (L::Stopped, D::Stopped, LbState::Stopped),
            // Never seen, but a stopping task never takes calls whatever its desired status.
            (L::Stopped, D::Running, LbState::Stopped),
        ];
        for (last, desired, state) in cases {
            assert_eq!(
                Lifecycle { last, desired }.phase(),
                state,
                "{last:?}/{desired:?}"
            );
        }
    }

    #[test]
    fn lifecycle_parsing_is_lenient_about_desired_status() {
        let l = Lifecycle::parse(Some("running"), None).unwrap();
        assert_eq!(l.phase(), LbState::Running);
        let l = Lifecycle::parse(Some("STOPPED"), Some("???")).unwrap();
        assert_eq!(l.desired, DesiredStatus::Stopped);
        assert_eq!(Lifecycle::parse(Some("EXPLODED"), Some("RUNNING")), None);
        assert_eq!(Lifecycle::parse(None, Some("RUNNING")), None);
    }

    #[test]
    fn cpu_and_memory_spellings() {
        assert_eq!(parse_cpu_units("256"), Some(256));
        assert_eq!(parse_cpu_units(" 1 vCPU "), Some(1024));
        assert_eq!(parse_cpu_units("0.25 vcpu"), Some(256));
        for odd in ["null", "0", "", "-1", "lots", "NaN vcpu"] {
            assert_eq!(parse_cpu_units(odd), None, "{odd:?}");
        }
        assert_eq!(parse_memory_mib("512"), Some(512));
        assert_eq!(parse_memory_mib("2GB"), Some(2048));
        assert_eq!(parse_memory_mib("0.5 gb"), Some(512));
        assert_eq!(parse_memory_mib("null"), None);
    }

    #[test]
    fn weight_tags() {
        assert_eq!(
            WeightTag::parse(" 250 "),
            WeightTag::Valid(Weight::saturating(250))
        );
        assert_eq!(WeightTag::parse("0"), WeightTag::Valid(Weight::ZERO));
        assert_eq!(
            WeightTag::parse("10001"),
            WeightTag::Invalid("10001".into())
        );
        assert_eq!(
            WeightTag::parse("heavy"),
            WeightTag::Invalid("heavy".into())
        );
    }

    #[test]
    fn facts_layer_field_by_field() {
        let event = TaskFacts {
            cpu_units: Some(256),
            zone: Some("eu-central-1a".into()),
            ..TaskFacts::default()
        };
        let described = TaskFacts {
            cpu_units: Some(512),
            memory_mib: Some(1024),
            ..TaskFacts::default()
        };
        let layered = described.or(event);
        assert_eq!(layered.cpu_units, Some(512));
        assert_eq!(layered.memory_mib, Some(1024));
        assert_eq!(layered.zone.as_deref(), Some("eu-central-1a"));
    }
}
