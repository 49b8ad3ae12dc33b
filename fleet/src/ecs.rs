//! The ECS side: tasks moving through their lifecycle, what ECS registers in Cloud Map for
//! them, and what `DescribeTasks` and an `ECS Task State Change` event say about them, in the
//! sync Lambda's own types.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use cloudmap_balancer::contract::{LbHealth, keys};
use cloudmap_sync::events::TaskChange;
use cloudmap_sync::task::{
    Described, DescribedTask, DesiredStatus, Group, LastStatus, Lifecycle, TaskFacts, TaskRef,
};

use crate::cloud_map::SERVICE;

/// The cluster the tasks run in.
pub const CLUSTER: &str = "prod";
const ACCOUNT_ARN: &str = "arn:aws:ecs:eu-central-1:123456789012";
const ZONES: [&str; 3] = ["eu-central-1a", "eu-central-1b", "eu-central-1c"];
/// Their IDs, as the Lambda looks them up from the task's subnet before it decides (so they are
/// part of the first write, as in AWS).
const ZONE_IDS: [&str; 3] = ["euc1-az2", "euc1-az3", "euc1-az1"];
/// Fargate, 0.25 vCPU.
const CPU_UNITS: u32 = 256;
const MEMORY_MIB: u32 = 512;
const PORT: u16 = 50051;

/// One ECS task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The task ID (also its Cloud Map instance ID, as ECS registers it).
    pub id: String,
    /// Its zone.
    pub zone: &'static str,
    /// Its ENI's address.
    pub ipv4: Ipv4Addr,
    /// `lastStatus`.
    pub last: LastStatus,
    /// `desiredStatus`.
    pub desired: DesiredStatus,
    /// `version`: one more with every state change.
    pub version: u64,
    /// When its container health check first passes (from then on, while it runs,
    /// `DescribeTasks` reports it `HEALTHY`).
    pub healthy_at: Option<Duration>,
    /// Its CPU load in percent when nothing sweeps it.
    pub base_load: u32,
    /// The phase of its load in a sweep, in radians.
    pub phase: f64,
}

impl Task {
    /// Task number `n`, before its first state (its first change makes it PROVISIONING,
    /// version 1).
    pub fn new(n: usize, base_load: u32, phase: f64) -> Self {
        let third = u8::try_from((n / 250) % 250).unwrap_or(0);
        let fourth = u8::try_from(n % 250 + 1).unwrap_or(1);
        Self {
            id: format!("{n:08x}0123456789abcdef0123456789ab"),
            zone: ZONES[n % ZONES.len()],
            ipv4: Ipv4Addr::new(10, 0, third, fourth),
            last: LastStatus::Provisioning,
            desired: DesiredStatus::Running,
            version: 0,
            healthy_at: None,
            base_load,
            phase,
        }
    }

    /// The task's ARN (new format, with the cluster).
    pub fn arn(&self) -> String {
        format!("{ACCOUNT_ARN}:task/{CLUSTER}/{}", self.id)
    }

    /// Identity, as the Lambda parses it.
    pub fn task_ref(&self) -> TaskRef {
        TaskRef {
            arn: self.arn(),
            id: self.id.clone(),
            cluster: CLUSTER.to_owned(),
        }
    }

    fn facts(&self) -> TaskFacts {
        TaskFacts {
            cpu_units: Some(CPU_UNITS),
            memory_mib: Some(MEMORY_MIB),
            zone: Some(self.zone.to_owned()),
            zone_id: ZONES
                .iter()
                .position(|z| *z == self.zone)
                .map(|i| ZONE_IDS[i].to_owned()),
            capacity: Some("FARGATE".to_owned()),
            ipv4: Some(self.ipv4),
            // The model's clock is a `Duration` since its start, not a wall clock; without
            // `startedAt` the Lambda takes a RUNNING event's time, and with neither it writes no
            // `LB_RUNNING_SINCE`. Either way it rides on the RUNNING write: no write of its own.
            ..TaskFacts::default()
        }
    }

    /// Moves the task to a new state: ECS's next `version`.
    pub fn advance(&mut self, last: LastStatus, desired: DesiredStatus) {
        self.last = last;
        self.desired = desired;
        self.version += 1;
    }

    /// The `ECS Task State Change` event ECS sends for the state the task is in now.
    pub fn event(&self) -> TaskChange {
        TaskChange {
            task: self.task_ref(),
            group: Group::Service(SERVICE.to_owned()),
            version: self.version,
            lifecycle: Some(Lifecycle {
                last: self.last,
                desired: self.desired,
            }),
            stop_code: (self.desired == DesiredStatus::Stopped)
                .then(|| "ServiceSchedulerInitiated".to_owned()),
            facts: self.facts(),
            time: None,
        }
    }

    /// What `DescribeTasks` answers about the task at `now`.
    pub fn described(&self, now: Duration) -> Described {
        let healthy =
            self.last == LastStatus::Running && self.healthy_at.is_some_and(|at| at <= now);
        Described::Found(Box::new(DescribedTask {
            task: self.task_ref(),
            lifecycle: Some(Lifecycle {
                last: self.last,
                desired: self.desired,
            }),
            version: Some(self.version),
            health: Some(if healthy {
                LbHealth::Healthy
            } else {
                LbHealth::Unknown
            }),
            weight_tag: None,
            facts: self.facts(),
            family: Some(SERVICE.to_owned()),
        }))
    }

    /// The attributes ECS registers for the task (service registries).
    pub fn ecs_attributes(&self) -> BTreeMap<String, String> {
        [
            (keys::AWS_INSTANCE_IPV4, self.ipv4.to_string()),
            (keys::AWS_INSTANCE_PORT, PORT.to_string()),
            (keys::AVAILABILITY_ZONE, self.zone.to_owned()),
            (keys::REGION, "eu-central-1".to_owned()),
            (keys::ECS_CLUSTER_NAME, CLUSTER.to_owned()),
            (keys::ECS_SERVICE_NAME, SERVICE.to_owned()),
            (keys::ECS_TASK_DEFINITION_FAMILY, SERVICE.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudmap_balancer::contract::LbState;

    #[test]
    fn a_task_reads_as_the_lambda_expects() {
        let mut task = Task::new(7, 40, 0.0);
        assert_eq!(task.event().lifecycle.unwrap().phase(), LbState::Starting);
        task.advance(LastStatus::Running, DesiredStatus::Running);
        task.healthy_at = Some(Duration::from_secs(10));
        assert_eq!(task.event().version, 1);
        let health = |now| task.described(now).found().unwrap().health;
        assert_eq!(health(Duration::from_secs(9)), Some(LbHealth::Unknown));
        assert_eq!(health(Duration::from_secs(10)), Some(LbHealth::Healthy));
        task.advance(LastStatus::Running, DesiredStatus::Stopped);
        assert_eq!(task.event().lifecycle.unwrap().phase(), LbState::Draining);
        assert_eq!(task.task_ref().id, task.id);
        assert!(task.arn().ends_with(&task.id));
    }
}
