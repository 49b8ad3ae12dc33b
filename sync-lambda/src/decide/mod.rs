//! Decisions: given what an event says, what `DescribeTasks` says and what the instance's
//! attributes say now, what to write. Pure functions over plain data; no SDK, no clock (the time
//! to write is an input).
//!
//! # Ordering and idempotency
//!
//! EventBridge delivers at least once and in any order, and several invocations for one task can
//! run at the same time. The design that makes the written attributes independent of all that:
//!
//! 1. **The state is a join, not the last write.** ECS moves a task only forwards: `lastStatus`
//!    never goes back and `desiredStatus` only goes from RUNNING to STOPPED. The mapping to
//!    `LB_STATE` (STARTING < RUNNING < DRAINING < STOPPED) is monotone along that path. So the
//!    state written is the *furthest* of every observation at hand: the event's, the current
//!    `DescribeTasks` answer's, and the state already written for this task. A maximum is
//!    commutative, associative and idempotent, so any order of the same observations, with any
//!    duplicates, reaches the same state; and a state can never go backwards, even if a stale
//!    event slips past the version check (a concurrent invocation, a `DescribeTasks` without a
//!    version).
//! 2. **Versions drop what is already known.** An event whose `detail.version` is not above the
//!    written `LB_TASK_VERSION` is skipped before anything is written (it costs the two reads
//!    only). The version written is the largest known: the event's, or `DescribeTasks`'
//!    `version` when that is newer (AWS always reports it; moto does not). Because the state
//!    written already reflects the newest observation, skipping older events loses nothing.
//! 3. **Level beats edge.** The event only says *which* task changed. Health and tags come from
//!    `DescribeTasks`, which answers with the task as it is now. A late event therefore cannot
//!    write a stale health, and a task that `DescribeTasks` already reports STOPPED is written
//!    STOPPED even when the event in hand still says RUNNING.
//!
//! What "converge" means here: after every event of a task has been delivered (in any order, any
//! number of times), the attributes equal those that in-order delivery writes, except
//! `LB_UPDATED_AT`. When `DescribeTasks` is ahead of the newest event in hand (the task moved on
//! and its next event is still in flight), the state written is the newer one, labelled with the
//! event's version (moto) or `DescribeTasks`' version (AWS); the in-flight event then either
//! raises the label or is dropped as already known. The property test in this module checks
//! this over random event sequences, permutations and duplications, against in-order delivery
//! where each event was handled as it happened.
//!
//! Static facts (CPU, memory, zone, capacity, address) do not change during a task's life. An
//! event's own values come first (moto's `DescribeTasks` lacks the task-level ones), then
//! `DescribeTasks`', then what was written before; reconciliation keeps what is written and fills
//! gaps from `DescribeTasks`. On AWS all sources agree; the order only keeps an event and a
//! reconciliation from flipping a value back and forth where they do not.
//!
//! # Modes
//!
//! - **Enrich** (the service has ECS service registries): ECS creates and deletes instances; a
//!   decision only ever updates an existing instance. A missing instance is never re-created.
//! - **Owner** (an explicit mapping): the Lambda creates the instance when `DescribeTasks` says
//!   the task is RUNNING (with its IPv4 address and the configured port, `LB_OWNER=LAMBDA`), and
//!   deregisters it when the task is STOPPED, only if it carries `LB_OWNER=LAMBDA`.

mod lifecycle;
mod load;
mod plan;
mod weight;

pub use plan::{
    Action, Context, Decision, DeregisterReason, Measured, Mode, Policy, SkipReason, on_event,
    on_reconcile,
};

pub(crate) use load::utilisation;

#[cfg(test)]
mod tests;
