//! The two decisions: "event + described task + current attributes → action" and
//! "described task + current attributes + measured load → action" (reconciliation).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use cloudmap_balancer::contract::{
    self, AttributeSet, InstanceAttributes, LbAttributes, LbHealth, LbState, LimitError, Load,
    Merged, Omitted, Weight, keys,
};

use super::lifecycle::{self, Observed};
use super::{load, running_since, weight};
use crate::events::TaskChange;
use crate::task::{Described, DescribedTask, LastStatus, TaskFacts, TaskRef, task_id};

/// The decision knobs that come from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Weight of a task whose CPU size is unknown.
    pub default_weight: Weight,
    /// Minimum change of `LB_LOAD`, in points, worth a write.
    pub load_step: u32,
    /// Enrich mode: how long an instance stays marked `STOPPED` after its task is gone before
    /// reconciliation deregisters it. `None`: never.
    pub stopped_grace: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_weight: Weight::saturating(100),
            load_step: 10,
            stopped_grace: Some(Duration::from_secs(3600)),
        }
    }
}

/// Who registers the service's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ECS registers and deregisters (service registries); the Lambda only adds attributes and
    /// never creates an instance.
    Enrich,
    /// The Lambda registers on RUNNING and deregisters on STOPPED (an explicit mapping).
    Owner {
        /// The port written to `AWS_INSTANCE_PORT`.
        port: u16,
    },
}

/// What one decision is about.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Enrich or owner mode.
    pub mode: Mode,
    /// The ECS service name (written as `ECS_SERVICE_NAME` when registering in owner mode).
    pub service: &'a str,
    /// Configuration.
    pub policy: &'a Policy,
    /// The time written to `LB_UPDATED_AT`.
    pub now: SystemTime,
}

/// What to do with one Cloud Map instance, and the state before and after (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The action.
    pub action: Action,
    /// `LB_STATE` before, when the instance existed and had one.
    pub old_state: Option<LbState>,
    /// `LB_STATE` the task is in now, when known.
    pub new_state: Option<LbState>,
    /// The task version the decision is about (the written one after a write).
    pub version: Option<u64>,
    /// The event's `stopCode` (why ECS stops the task), when the decision is about an event that
    /// carries one.
    pub stop_code: Option<String>,
    /// Optional keys left out of the write because Cloud Map would refuse them (see
    /// [`contract::merge`]), for the log and metrics; empty unless the action writes.
    pub omitted: Vec<Omitted>,
}

/// The action of a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `RegisterInstance` with exactly these attributes.
    Register {
        /// The complete attribute map (Cloud Map replaces all attributes).
        attributes: AttributeSet,
        /// Whether this creates the instance (owner mode) rather than updating it.
        create: bool,
    },
    /// `DeregisterInstance`.
    Deregister(DeregisterReason),
    /// Nothing to do.
    Skip(SkipReason),
}

impl Action {
    /// A short stable name for logs and metrics: `create`, `update`, a deregister reason or a
    /// skip reason.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Register { create: true, .. } => "create",
            Self::Register { create: false, .. } => "update",
            Self::Deregister(reason) => reason.as_str(),
            Self::Skip(reason) => reason.as_str(),
        }
    }
}

/// Why an instance is deregistered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeregisterReason {
    /// Owner mode: the task stopped and the Lambda registered the instance.
    OwnedTaskStopped,
    /// Enrich mode: the task is gone and the instance has been marked STOPPED for longer than
    /// the grace period (ECS did not deregister it, or a late write re-created it).
    StoppedPastGrace,
}

impl DeregisterReason {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OwnedTaskStopped => "deregister_owned",
            Self::StoppedPastGrace => "deregister_stale",
        }
    }
}

/// Why nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The event is already reflected in what is written and brings nothing new: a duplicate
    /// (the written state's own event) or a late event of an earlier state.
    Stale,
    /// The attributes already say this (ignoring `LB_UPDATED_AT`): writing would only move the
    /// revision every client polls.
    Unchanged,
    /// Enrich mode: the instance does not exist (ECS deregistered it, or has not registered it
    /// yet). Never re-created.
    InstanceNotFound,
    /// Owner mode: no instance, and the task is not running, so there is nothing to register.
    NotRunning,
    /// Owner mode: the task runs but has no known IPv4 or IPv6 address (not an awsvpc task).
    NoAddress,
    /// The instance carries another task's `LB_TASK_ARN`.
    OtherTask,
    /// Neither the event nor `DescribeTasks` gave a known lifecycle status.
    UnknownLifecycle,
}

impl SkipReason {
    /// A short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stale => "stale",
            Self::Unchanged => "unchanged",
            Self::InstanceNotFound => "instance_not_found",
            Self::NotRunning => "not_running",
            Self::NoAddress => "no_address",
            Self::OtherTask => "other_task",
            Self::UnknownLifecycle => "unknown_lifecycle",
        }
    }
}

/// The load measured for a task by reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    /// Not measured (load disabled, CloudWatch unavailable, or the task unknown to ECS): the
    /// written value is kept.
    NotMeasured,
    /// Measured: a value, or `None` when CloudWatch had no data points.
    Load(Option<Load>),
}

/// What the attributes will say about the task.
struct Target<'a> {
    task: &'a TaskRef,
    state: LbState,
    /// The first version at which the task was seen in `state`, when known.
    version: Option<u64>,
    facts: TaskFacts,
    health: LbHealth,
    weight: Weight,
    load: Option<Load>,
    /// `LB_RUNNING_SINCE` (see [`running_since`]).
    running_since: Option<SystemTime>,
}

/// The decision for an `ECS Task State Change` event.
///
/// `described` is what `DescribeTasks` says now; `existing` the instance's current attributes
/// (`None`: no instance). See the [module docs](super) for why the result does not depend on
/// delivery order. The decision carries the event's `stopCode` for the log.
pub fn on_event(
    ctx: &Context<'_>,
    change: &TaskChange,
    described: &Described,
    existing: Option<&HashMap<String, String>>,
) -> Result<Decision, LimitError> {
    let decision = event_decision(ctx, change, described, existing)?;
    Ok(Decision {
        stop_code: change.stop_code.clone(),
        ..decision
    })
}

fn event_decision(
    ctx: &Context<'_>,
    change: &TaskChange,
    described: &Described,
    existing: Option<&HashMap<String, String>>,
) -> Result<Decision, LimitError> {
    let written = existing.map(InstanceAttributes::decode);
    let old_state = written.as_ref().and_then(|w| w.state);
    let skip = |reason, new_state| Decision {
        action: Action::Skip(reason),
        old_state,
        new_state,
        version: Some(change.version),
        stop_code: None,
        omitted: Vec::new(),
    };
    let ours = match &written {
        Some(w) if !same_task(w, &change.task) => return Ok(skip(SkipReason::OtherTask, None)),
        other => other.as_ref(),
    };
    let found = described.found();
    let event = change
        .lifecycle
        .map(|l| Observed::of(l, Some(change.version)));
    let Some(joined) = lifecycle::join([
        event,
        described_observation(found),
        written_observation(ours),
    ]) else {
        return Ok(skip(SkipReason::UnknownLifecycle, None));
    };
    let facts = change
        .facts
        .clone()
        .or(found.map(|d| d.facts.clone()).unwrap_or_default())
        .or(written_facts(ours));
    let target = Target {
        task: &change.task,
        state: joined.state,
        version: joined.version,
        health: health(found, ours),
        weight: weight_of(ctx, found, ours, facts.cpu_units),
        running_since: running_since::earliest([
            running_since::from_event(change),
            found.and_then(|d| d.facts.started_at),
            ours.and_then(|w| w.running_since),
        ]),
        facts,
        load: ours.and_then(|w| w.load),
    };
    let decision = settle(
        ctx,
        target,
        existing,
        ours,
        runs_now(described),
        false,
        None,
    )?;
    // Nothing to write: say whether the event was behind what is written (`stale`) or a newer
    // event that only confirmed it (`unchanged`), for the log and metrics.
    Ok(match decision.action {
        Action::Skip(SkipReason::Unchanged) if behind(change, ours) => Decision {
            action: Action::Skip(SkipReason::Stale),
            ..decision
        },
        _ => decision,
    })
}

/// Whether an event is already reflected in the written pair: a late event of an earlier state,
/// or the written state's own event (same state, same version). An event of unknown status is
/// behind when its version is not above the written one.
fn behind(change: &TaskChange, written: Option<&InstanceAttributes>) -> bool {
    let Some(written) = written else {
        return false;
    };
    match (change.lifecycle.map(|l| l.phase()), written.state) {
        (Some(event), Some(state)) => {
            lifecycle::earlier(event, state)
                || (event == state && written.task_version == Some(change.version))
        }
        (Some(_), None) => false,
        (None, _) => written
            .task_version
            .is_some_and(|version| change.version <= version),
    }
}

/// `DescribeTasks`' observation: its state and version (AWS reports one; moto does not).
fn described_observation(found: Option<&DescribedTask>) -> Option<Observed> {
    let found = found?;
    found.lifecycle.map(|l| Observed::of(l, found.version))
}

/// The observation the written attributes stand for: `LB_STATE` first seen at
/// `LB_TASK_VERSION`.
fn written_observation(written: Option<&InstanceAttributes>) -> Option<Observed> {
    let written = written?;
    written.state.map(|state| Observed {
        state,
        version: written.task_version,
    })
}

/// The decision of a reconciliation for one task and its instance.
///
/// `task` is the task as matched to the instance; `described` what `DescribeTasks` says
/// (`Missing`: ECS no longer knows it, so it is gone); `load` what CloudWatch measured.
pub fn on_reconcile(
    ctx: &Context<'_>,
    task: &TaskRef,
    described: &Described,
    existing: Option<&HashMap<String, String>>,
    load: Measured,
) -> Result<Decision, LimitError> {
    let written = existing.map(InstanceAttributes::decode);
    let old_state = written.as_ref().and_then(|w| w.state);
    let ours = match &written {
        Some(w) if !same_task(w, task) => {
            return Ok(Decision {
                action: Action::Skip(SkipReason::OtherTask),
                old_state,
                new_state: None,
                version: None,
                stop_code: None,
                omitted: Vec::new(),
            });
        }
        other => other.as_ref(),
    };
    let found = described.found();
    let observed = match found {
        Some(_) => described_observation(found),
        // ECS does not know the task any more: it stopped over an hour ago, at a version no
        // source tells any more.
        None => Some(Observed {
            state: LbState::Stopped,
            version: None,
        }),
    };
    let Some(joined) = lifecycle::join([observed, written_observation(ours)]) else {
        return Ok(Decision {
            action: Action::Skip(SkipReason::UnknownLifecycle),
            old_state,
            new_state: None,
            version: None,
            stop_code: None,
            omitted: Vec::new(),
        });
    };
    // Static facts: what is written stays (it came from an event or an earlier description),
    // so an event and a reconciliation never undo each other's values.
    let facts = written_facts(ours).or(found.map(|d| d.facts.clone()).unwrap_or_default());
    let written_load = ours.and_then(|w| w.load);
    let measured = match load {
        Measured::Load(measured) if joined.state != LbState::Stopped => Some(measured),
        _ => None,
    };
    let target = Target {
        task,
        state: joined.state,
        version: joined.version,
        health: health(found, ours),
        weight: weight_of(ctx, found, ours, facts.cpu_units),
        running_since: running_since::earliest([
            found.and_then(|d| d.facts.started_at),
            ours.and_then(|w| w.running_since),
        ]),
        facts,
        // Below the step the written load stays, so load noise alone never writes.
        load: match measured {
            Some(new) if load::moved(written_load, new, ctx.policy.load_step) => new,
            _ => written_load,
        },
    };
    let gone = found
        .and_then(|d| d.lifecycle)
        .is_none_or(|l| l.last == LastStatus::Stopped);
    settle(
        ctx,
        target,
        existing,
        ours,
        runs_now(described),
        gone,
        measured,
    )
}

/// `LB_HEALTH`, for events and reconciliation alike: what `DescribeTasks` says when it knows the
/// task (level beats edge), else what is written.
fn health(found: Option<&DescribedTask>, written: Option<&InstanceAttributes>) -> LbHealth {
    found.map_or_else(
        || written.map(|w| w.health).unwrap_or_default(),
        |d| d.health.unwrap_or_default(),
    )
}

/// `LB_WEIGHT`, for events and reconciliation alike: when `DescribeTasks` no longer knows the
/// task, its tags are unknown, so a written weight stays (it may have come from an `lb:weight`
/// tag that the formula would overwrite); otherwise the tag or the formula (see [`weight`]).
fn weight_of(
    ctx: &Context<'_>,
    found: Option<&DescribedTask>,
    written: Option<&InstanceAttributes>,
    cpu_units: Option<u32>,
) -> Weight {
    match (found, written.and_then(|w| w.weight)) {
        (None, Some(written)) => written,
        _ => weight::weight(
            found.and_then(|d| d.weight_tag.as_ref()),
            cpu_units,
            ctx.policy.default_weight,
        ),
    }
}

/// Whether `DescribeTasks` says the task's containers run now (`lastStatus` RUNNING, whatever
/// its desired status): owner mode creates an instance only then, and with the same rule for
/// events and reconciliation, so creation does not depend on which of them comes first.
fn runs_now(described: &Described) -> bool {
    described
        .found()
        .and_then(|d| d.lifecycle)
        .is_some_and(|l| l.last == LastStatus::Running)
}

/// Applies the mode to a target: create, update, deregister or skip.
///
/// `registrable`: the task runs now (see [`runs_now`]); owner mode creates only then, and only
/// for a RUNNING or DRAINING target.
/// `gone`: the task is stopped or unknown to ECS. `fresh_load`: a measured load to use when a
/// write happens anyway.
fn settle(
    ctx: &Context<'_>,
    target: Target<'_>,
    existing: Option<&HashMap<String, String>>,
    written: Option<&InstanceAttributes>,
    registrable: bool,
    gone: bool,
    fresh_load: Option<Option<Load>>,
) -> Result<Decision, LimitError> {
    let old_state = written.and_then(|w| w.state);
    let decision = |action| Decision {
        action,
        old_state,
        new_state: Some(target.state),
        version: target.version,
        stop_code: None,
        omitted: Vec::new(),
    };
    let Some(existing) = existing else {
        let Mode::Owner { port } = ctx.mode else {
            return Ok(decision(Action::Skip(SkipReason::InstanceNotFound)));
        };
        let live = matches!(target.state, LbState::Running | LbState::Draining);
        if !live || !registrable {
            return Ok(decision(Action::Skip(SkipReason::NotRunning)));
        }
        // An IPv4 address, an IPv6 address (IPv6-only subnets) or both (dual-stack): Cloud Map
        // takes either, and clients pick the family.
        let addresses = addresses(&target.facts);
        if addresses.is_empty() {
            return Ok(decision(Action::Skip(SkipReason::NoAddress)));
        }
        let mut if_missing = addresses;
        if_missing.extend([
            (keys::AWS_INSTANCE_PORT, port.to_string()),
            (keys::ECS_CLUSTER_NAME, target.task.cluster.clone()),
            (keys::ECS_SERVICE_NAME, ctx.service.to_owned()),
        ]);
        let merged = attributes(ctx, &target, &HashMap::new(), true, &if_missing)?;
        return Ok(Decision {
            omitted: merged.omitted,
            ..decision(Action::Register {
                attributes: merged.attributes,
                create: true,
            })
        });
    };
    let lambda_owned = written.is_some_and(|w| w.lambda_owned);
    if target.state == LbState::Stopped {
        if matches!(ctx.mode, Mode::Owner { .. }) && lambda_owned {
            return Ok(decision(Action::Deregister(
                DeregisterReason::OwnedTaskStopped,
            )));
        }
        if ctx.mode == Mode::Enrich && gone && past_grace(ctx, written) {
            return Ok(decision(Action::Deregister(
                DeregisterReason::StoppedPastGrace,
            )));
        }
    }
    let if_missing = addresses(&target.facts);
    let proposed = attributes(ctx, &target, existing, lambda_owned, &if_missing)?;
    if proposed
        .attributes
        .same_as(existing, &[keys::LB_UPDATED_AT])
    {
        return Ok(decision(Action::Skip(SkipReason::Unchanged)));
    }
    // A write happens anyway: it may as well carry the freshest load.
    let attributes_of = attributes;
    let merged = match fresh_load {
        Some(load) if load != target.load => {
            let target = Target { load, ..target };
            attributes_of(ctx, &target, existing, lambda_owned, &if_missing)?
        }
        _ => proposed,
    };
    Ok(Decision {
        omitted: merged.omitted,
        ..decision(Action::Register {
            attributes: merged.attributes,
            create: false,
        })
    })
}

fn attributes(
    ctx: &Context<'_>,
    target: &Target<'_>,
    existing: &HashMap<String, String>,
    lambda_owned: bool,
    if_missing: &[(&str, String)],
) -> Result<Merged, LimitError> {
    let ours = LbAttributes {
        state: target.state,
        health: target.health,
        weight: target.weight,
        cpu_units: target.facts.cpu_units,
        memory_mib: target.facts.memory_mib,
        capacity: target.facts.capacity.clone(),
        load: target.load,
        task_arn: target.task.arn.clone(),
        task_version: target.version,
        updated_at: ctx.now,
        running_since: target.running_since,
        lambda_owned,
    };
    let mut if_missing = if_missing.to_vec();
    if let Some(zone) = &target.facts.zone {
        if_missing.push((keys::AVAILABILITY_ZONE, zone.clone()));
    }
    if let Some(zone_id) = &target.facts.zone_id {
        if_missing.push((keys::AVAILABILITY_ZONE_ID, zone_id.clone()));
    }
    contract::merge(existing, &ours, &if_missing)
}

/// The task's addresses as Cloud Map keys: `AWS_INSTANCE_IPV4` and `AWS_INSTANCE_IPV6`, each
/// where known. Only ever added where missing: an address ECS (or a person) wrote stays.
fn addresses(facts: &TaskFacts) -> Vec<(&'static str, String)> {
    let mut addresses = Vec::new();
    if let Some(ipv4) = facts.ipv4 {
        addresses.push((keys::AWS_INSTANCE_IPV4, ipv4.to_string()));
    }
    if let Some(ipv6) = facts.ipv6 {
        addresses.push((super::AWS_INSTANCE_IPV6, ipv6.to_string()));
    }
    addresses
}

/// Whether the written attributes belong to `task`: no `LB_TASK_ARN` yet, or one with its ID.
fn same_task(written: &InstanceAttributes, task: &TaskRef) -> bool {
    written
        .task_arn
        .as_deref()
        .is_none_or(|arn| task_id(arn) == Some(task.id.as_str()))
}

fn written_facts(written: Option<&InstanceAttributes>) -> TaskFacts {
    written.map_or_else(TaskFacts::default, |w| TaskFacts {
        cpu_units: w.cpu_units,
        memory_mib: w.memory_mib,
        capacity: w.capacity.clone(),
        ..TaskFacts::default()
    })
}

/// Whether the instance has said STOPPED for longer than the grace period.
fn past_grace(ctx: &Context<'_>, written: Option<&InstanceAttributes>) -> bool {
    let (Some(grace), Some(written)) = (ctx.policy.stopped_grace, written) else {
        return false;
    };
    written.state == Some(LbState::Stopped)
        && written
            .updated_at
            .and_then(|at| ctx.now.duration_since(at).ok())
            .is_some_and(|age| age >= grace)
}
