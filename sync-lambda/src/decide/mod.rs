//! Decisions: given what an event says, what `DescribeTasks` says and what the instance's
//! attributes say now, what to write. Pure functions over plain data; no SDK, no clock (the time
//! to write is an input).
//!
//! # Ordering and idempotency
//!
//! EventBridge delivers at least once and in any order, and several invocations for one task can
//! run at the same time. The design that makes the written attributes independent of all that:
//!
//! 1. **The state and its version are a join, not the last write.** ECS moves a task only
//!    forwards: `lastStatus` never goes back and `desiredStatus` only goes from RUNNING to
//!    STOPPED. The mapping to `LB_STATE` (STARTING < RUNNING < DRAINING < STOPPED) is monotone
//!    along that path, and `version` grows with every change. An observation is a pair (state,
//!    version); pairs are ordered by state, and within one state the **earlier** version is the
//!    greater (an unknown version is the least). The pair written (`LB_STATE`,
//!    `LB_TASK_VERSION`) is the maximum of every observation at hand: the event's, the current
//!    `DescribeTasks` answer's, and the pair already written. So `LB_TASK_VERSION` is the version
//!    at which the task was first seen in the written state. A maximum is commutative,
//!    associative and idempotent, so any order of the same observations, with any duplicates,
//!    reaches the same pair; and a state can never go backwards.
//! 2. **A version-only change writes nothing.** An event of the state already written, with a
//!    later version (PENDING after PROVISIONING, STOPPING after DEACTIVATING, a health event
//!    while RUNNING) leaves the pair as it is, so it writes only when health, weight or a fact
//!    changed. A task life therefore costs about one write per `LB_STATE`, health or weight
//!    change (4 or 5, where writing every newer version cost 7 to 9). An earlier event of the
//!    written state, delivered late, lowers the label to where in-order delivery puts it (one
//!    write, only when delivery was out of order). `DescribeTasks`' version is the task's
//!    version *now*, at or after the first of its state, so it never labels a state too early;
//!    where it gives none (moto) and is ahead of the event, the state is written without a
//!    version until that state's own event labels it.
//! 3. **Stale events change nothing.** An event behind what is written (a late event of an
//!    earlier state, or the written state's own event again) is still decided like any other,
//!    and the join leaves the pair as it is: it is reported as `stale` when nothing changes.
//!    Nothing is dropped unseen, so a late event can still fill what the instance lacks (an
//!    earlier `LB_RUNNING_SINCE` candidate, a missing zone or zone ID) but never moves a state
//!    back.
//! 4. **Level beats edge.** The event only says *which* task changed. Health and tags come from
//!    `DescribeTasks`, which answers with the task as it is now. A late event therefore cannot
//!    write a stale health, and a task that `DescribeTasks` already reports STOPPED is written
//!    STOPPED even when the event in hand still says RUNNING.
//!
//! What "converge" means here: after every event of a task has been delivered (in any order, any
//! number of times), the attributes equal those that in-order delivery writes, except
//! `LB_UPDATED_AT`. When `DescribeTasks` is ahead of the newest event in hand (the task moved on
//! and its next event is still in flight), the state written is the newer one, labelled with
//! `DescribeTasks`' version (AWS) or with none (moto); the in-flight event then lowers or sets
//! the label to the first version of that state. The property test in this module checks this
//! over random event sequences, permutations and duplications, against in-order delivery where
//! each event was handled as it happened; another test drives a whole task life and counts its
//! writes.
//!
//! Static facts (CPU, memory, zone, capacity, addresses) do not change during a task's life. An
//! event's own values come first (moto's `DescribeTasks` lacks the task-level ones), then
//! `DescribeTasks`', then what was written before; reconciliation keeps what is written and fills
//! gaps from `DescribeTasks`. On AWS all sources agree; the order only keeps an event and a
//! reconciliation from flipping a value back and forth where they do not. `AVAILABILITY_ZONE`,
//! `AVAILABILITY_ZONE_ID` (which the handler derives from the subnet or the zone name and hands
//! in as a fact) and the addresses (`AWS_INSTANCE_IPV4`, `AWS_INSTANCE_IPV6`) are only ever
//! added where missing. `LB_RUNNING_SINCE` is the earliest candidate seen (see
//! `running_since`), another join.
//!
//! What no decision does is cut a value to fit: an optional key Cloud Map would refuse is left
//! out and listed in [`Decision::omitted`] (see `contract::merge`).
//!
//! # Modes
//!
//! - **Enrich** (the service has ECS service registries): ECS creates and deletes instances; a
//!   decision only ever updates an existing instance. A missing instance is never re-created.
//! - **Owner** (an explicit mapping): the Lambda creates the instance when `DescribeTasks` says
//!   the task is RUNNING (with its IPv4 and/or IPv6 address, the configured port and
//!   `LB_OWNER=LAMBDA`; an IPv6-only task gets `AWS_INSTANCE_IPV6` alone), and
//!   deregisters it when the task is STOPPED, only if it carries `LB_OWNER=LAMBDA`.

mod lifecycle;
mod load;
mod plan;
mod running_since;
mod weight;

pub use plan::{
    Action, Context, Decision, DeregisterReason, Measured, Mode, Policy, SkipReason, on_event,
    on_reconcile,
};

pub(crate) use load::utilisation;

/// Cloud Map's reserved key for an instance's IPv6 address (the contract's own constant).
pub(crate) use cloudmap_balancer::contract::keys::AWS_INSTANCE_IPV6;

#[cfg(test)]
mod tests;
