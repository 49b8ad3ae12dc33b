//! The sync Lambda against the model: its real decisions (`cloudmap_sync::decide::on_event` and
//! `on_reconcile`), given what `DescribeTasks` and `GetInstance` would answer, their actions
//! applied as `RegisterInstance` and `DeregisterInstance`. The handler's I/O (retries, caches,
//! logs) is left out; what it writes, and when, is the decisions'.

use std::time::{Duration, SystemTime};

use cloudmap_balancer::contract::Load;
use cloudmap_sync::decide::{self, Action, Context, Decision, Measured, Mode, Policy};
use cloudmap_sync::events::TaskChange;

use crate::cloud_map::{CloudMap, SERVICE, Writer};
use crate::ecs::Task;

/// What the Lambda did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LambdaCounts {
    /// Events handled.
    pub events: u64,
    /// Instances reconciled.
    pub reconciled: u64,
    /// `RegisterInstance` calls.
    pub registers: u64,
    /// `DeregisterInstance` calls.
    pub deregisters: u64,
    /// Decisions that refused to write (a contract limit).
    pub refused: u64,
}

/// The Lambda, in enrich mode (ECS registers the instances) with the default policy.
#[derive(Debug)]
pub struct Lambda {
    policy: Policy,
    /// What model time zero is on the wall clock (written to `LB_UPDATED_AT`).
    epoch: SystemTime,
    /// What it did.
    pub counts: LambdaCounts,
}

impl Default for Lambda {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            // 2026-09-01T00:00:00Z: a fixed instant, so runs are reproducible.
            epoch: SystemTime::UNIX_EPOCH + Duration::from_secs(1_788_220_800),
            counts: LambdaCounts::default(),
        }
    }
}

impl Lambda {
    /// Model time `now` on the wall clock the Lambda writes (`LB_UPDATED_AT`), which the
    /// client's picker dates loads against.
    pub fn wall_clock(&self, now: Duration) -> SystemTime {
        self.epoch + now
    }

    fn context(&self, now: Duration) -> Context<'_> {
        Context {
            mode: Mode::Enrich,
            service: SERVICE,
            policy: &self.policy,
            now: self.epoch + now,
        }
    }

    /// One `ECS Task State Change` event for `task`, handled at `now`.
    pub fn on_event(
        &mut self,
        cloud_map: &CloudMap,
        change: &TaskChange,
        task: &Task,
        now: Duration,
    ) {
        self.counts.events += 1;
        let existing = cloud_map.get(&task.id);
        let decision = decide::on_event(
            &self.context(now),
            change,
            &task.described(now),
            existing.as_ref(),
        );
        self.apply(cloud_map, &task.id, decision);
    }

    /// Reconciliation of one instance and its task at `now`, with the load CloudWatch reports.
    pub fn on_reconcile(
        &mut self,
        cloud_map: &CloudMap,
        task: &Task,
        load: Option<Load>,
        now: Duration,
    ) {
        self.counts.reconciled += 1;
        let existing = cloud_map.get(&task.id);
        let decision = decide::on_reconcile(
            &self.context(now),
            &task.task_ref(),
            &task.described(now),
            existing.as_ref(),
            Measured::Load(load),
        );
        self.apply(cloud_map, &task.id, decision);
    }

    fn apply(
        &mut self,
        cloud_map: &CloudMap,
        id: &str,
        decision: Result<Decision, cloudmap_balancer::contract::LimitError>,
    ) {
        match decision.map(|d| d.action) {
            Ok(Action::Register { attributes, .. }) => {
                self.counts.registers += 1;
                cloud_map.register(id, attributes.into_map(), Writer::Lambda);
            }
            Ok(Action::Deregister(_)) => {
                self.counts.deregisters += 1;
                cloud_map.deregister(id, Writer::Lambda);
            }
            Ok(Action::Skip(_)) => {}
            Err(_) => self.counts.refused += 1,
        }
    }
}
