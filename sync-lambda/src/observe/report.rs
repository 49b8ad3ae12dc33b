//! What one invocation did: the record behind the decision logs, the EMF metrics and the
//! function's response.

use std::collections::BTreeMap;

use serde::Serialize;

/// The kind of invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvocationKind {
    /// An `ECS Task State Change` event.
    TaskChange,
    /// A scheduled or on-demand reconciliation.
    Reconcile,
    /// An event of another ECS detail-type.
    Ignored,
    /// A payload that could not be used.
    #[default]
    Rejected,
}

impl InvocationKind {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskChange => "task_change",
            Self::Reconcile => "reconcile",
            Self::Ignored => "ignored",
            Self::Rejected => "rejected",
        }
    }
}

/// One decision about one Cloud Map instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionRecord {
    /// Task ID.
    pub task: String,
    /// The Cloud Map service as the calls named it: its ARN when known, else its ID.
    pub cloudmap_service: String,
    /// Instance ID.
    pub instance: String,
    /// `create`, `update`, `deregister_*` or a skip reason.
    pub action: &'static str,
    /// Whether Cloud Map was written (register or deregister).
    pub wrote: bool,
    /// `LB_STATE` before.
    pub old_state: Option<&'static str>,
    /// `LB_STATE` after (or the task's state, for a skip).
    pub new_state: Option<&'static str>,
}

/// An optional attribute left out of a write (Cloud Map would refuse it), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OmittedAttribute {
    /// Instance ID.
    pub instance: String,
    /// The key, e.g. `LB_CAPACITY`.
    pub key: String,
    /// `invalid_value`, `value_too_long`, `too_many_attributes` or `total_too_long`.
    pub reason: &'static str,
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Report {
    /// The kind of invocation.
    pub kind: InvocationKind,
    /// Why the payload was rejected, or why the event was not acted on (`standalone_task`,
    /// `no_registry`).
    pub note: Option<&'static str>,
    /// Every decision, in order.
    pub decisions: Vec<DecisionRecord>,
    /// Errors that were logged and acknowledged without failing the invocation, by class:
    /// permanent errors, and `load_unavailable` (reconciliation could not read CloudWatch, even
    /// for a retryable reason, and kept the written load).
    pub handled_errors: BTreeMap<&'static str, u32>,
    /// Optional attributes left out of the writes made (each write still carried the rest).
    pub omitted: Vec<OmittedAttribute>,
    /// Writes that went out without `AVAILABILITY_ZONE_ID` because its lookup failed, by reason
    /// (`no_zone`, `subnet_not_found`, `zone_not_found`, `task_unknown`, `access_denied`,
    /// `throttled`, `unavailable`).
    pub zone_id_unavailable: BTreeMap<&'static str, u32>,
}

impl Report {
    /// A report for an invocation of `kind`.
    pub fn new(kind: InvocationKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    /// Instances registered (created or updated).
    pub fn writes(&self) -> u32 {
        self.count(|d| d.wrote && matches!(d.action, "create" | "update"))
    }

    /// Instances created.
    pub fn creates(&self) -> u32 {
        self.count(|d| d.wrote && d.action == "create")
    }

    /// Instances deregistered.
    pub fn deregistrations(&self) -> u32 {
        self.count(|d| d.wrote && d.action.starts_with("deregister"))
    }

    /// Decisions that wrote nothing, by reason.
    pub fn skips(&self) -> BTreeMap<&'static str, u32> {
        let mut skips = BTreeMap::new();
        for d in self.decisions.iter().filter(|d| !d.wrote) {
            *skips.entry(d.action).or_insert(0) += 1;
        }
        skips
    }

    /// Counts one handled error: permanent, or `load_unavailable` (see `handled_errors`).
    pub fn handled_error(&mut self, class: &'static str) {
        *self.handled_errors.entry(class).or_insert(0) += 1;
    }

    /// Counts one write without `AVAILABILITY_ZONE_ID`, by the reason its lookup failed.
    pub fn zone_id_unavailable(&mut self, reason: &'static str) {
        *self.zone_id_unavailable.entry(reason).or_insert(0) += 1;
    }

    /// Omitted attributes, by key and reason.
    pub fn omitted_by_key(&self) -> BTreeMap<(&str, &'static str), u32> {
        let mut counts = BTreeMap::new();
        for o in &self.omitted {
            *counts.entry((o.key.as_str(), o.reason)).or_insert(0) += 1;
        }
        counts
    }

    fn count(&self, f: impl Fn(&DecisionRecord) -> bool) -> u32 {
        u32::try_from(self.decisions.iter().filter(|d| f(d)).count()).unwrap_or(u32::MAX)
    }
}
