//! The handler: one invocation from payload to outcome, generic over the [`ports`](crate::ports)
//! so that tests drive it against moto or anything else.
//!
//! Flow: the payload is parsed into an [`Invocation`] ([`crate::events`]); a task change goes to
//! the event flow (this module's `task_change`), a reconciliation to [`crate::reconcile`]; each
//! decision comes from [`crate::decide`] and is applied here, logged as one line, and recorded in
//! the [`Report`]. At the edge ([`Handler::invoke`]) a retryable error fails the invocation, and
//! everything else succeeds: rejected payloads, permanent errors, and a reconciliation's
//! unavailable load (CloudWatch failing, even retryably, only keeps the written load), all
//! already logged.

mod targets;
mod task_change;
mod zone_ids;

pub(crate) use targets::{ManagedService, Target, TargetCache, enrich_targets, is_service_arn};
pub(crate) use zone_ids::{ZoneIdCache, ZoneSource, count_gap, wanted as zone_id_wanted};

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::decide::{Action, Decision, Policy};
use crate::error::SyncError;
use crate::events::{self, Invocation};
use crate::observe::{DecisionRecord, InvocationKind, OmittedAttribute, Report, emf};
use crate::ports::{Clock, Metrics, Registry, Tasks, Zones};
use crate::task::TaskRef;

/// The sync Lambda's handler.
#[derive(Debug)]
pub struct Handler<R, T, M, C, S> {
    pub(crate) config: Config,
    pub(crate) registry: R,
    pub(crate) tasks: T,
    pub(crate) metrics: M,
    pub(crate) clock: C,
    pub(crate) zones: S,
    pub(crate) cache: Mutex<TargetCache>,
    pub(crate) zone_ids: Mutex<ZoneIdCache>,
}

impl<R: Registry, T: Tasks, M: Metrics, C: Clock, S: Zones> Handler<R, T, M, C, S> {
    /// A handler over the given Cloud Map, ECS, CloudWatch, clock and EC2 (zone IDs).
    pub fn new(config: Config, registry: R, tasks: T, metrics: M, clock: C, zones: S) -> Self {
        Self {
            config,
            registry,
            tasks,
            metrics,
            clock,
            zones,
            cache: Mutex::new(TargetCache::default()),
            zone_ids: Mutex::new(ZoneIdCache::default()),
        }
    }

    /// Handles one payload.
    ///
    /// `Ok`: done (including payloads that were rejected or ignored, permanent errors, and a
    /// reconciliation's `load_unavailable`, which are logged and counted in the report's
    /// `handled_errors`). `Err`: a retryable failure; nothing was written for the instance whose
    /// step failed.
    pub async fn handle(&self, payload: Value) -> Result<Report, SyncError> {
        let mut report = Report::default();
        self.run(payload, &mut report).await?;
        Ok(report)
    }

    /// [`Handler::handle`] into `report`, which keeps what was done (and the kind of
    /// invocation) when a retryable error ends it early.
    async fn run(&self, payload: Value, report: &mut Report) -> Result<(), SyncError> {
        match events::parse(payload) {
            Invocation::TaskChange(change) => {
                report.kind = InvocationKind::TaskChange;
                self.on_task_change(&change, report).await
            }
            Invocation::Reconcile(scope) => {
                report.kind = InvocationKind::Reconcile;
                self.reconcile(&scope, report).await
            }
            Invocation::Ignored {
                source,
                detail_type,
            } => {
                debug!(source, detail_type, "event ignored");
                report.kind = InvocationKind::Ignored;
                Ok(())
            }
            Invocation::Rejected(rejection) => {
                warn!(reason = rejection.as_str(), detail = %rejection, "payload rejected");
                report.kind = InvocationKind::Rejected;
                report.note = Some(rejection.as_str());
                Ok(())
            }
        }
    }

    /// The Lambda edge: handles the payload, writes the EMF lines to `metrics_out`, logs the
    /// outcome, and returns the response (a summary of the report) or the retryable error.
    pub async fn invoke<W: Write + Send>(
        &self,
        payload: Value,
        mut metrics_out: W,
    ) -> Result<Value, SyncError> {
        let mut report = Report::default();
        let outcome = self.run(payload, &mut report).await;
        let lines = emf::render(
            &self.config.metrics_namespace,
            &report,
            outcome.as_ref().err(),
            self.clock.now(),
        );
        for line in lines {
            // Metrics must never fail an invocation.
            let _ = writeln!(metrics_out, "{line}");
        }
        match outcome {
            Ok(()) => {
                info!(
                    kind = report.kind.as_str(),
                    writes = report.writes(),
                    deregistrations = report.deregistrations(),
                    decisions = report.decisions.len(),
                    "invocation done"
                );
                Ok(serde_json::to_value(&report).unwrap_or(Value::Null))
            }
            Err(failure) => {
                error!(
                    kind = report.kind.as_str(),
                    writes = report.writes(),
                    error = %failure,
                    class = failure.class(),
                    "invocation failed; Lambda retries it"
                );
                Err(failure)
            }
        }
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.config.policy
    }

    pub(crate) fn cache(&self) -> std::sync::MutexGuard<'_, TargetCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a decision to one instance, logs it, and records it.
    pub(crate) async fn apply(
        &self,
        task: &TaskRef,
        service: &str,
        target: &Target,
        instance_id: &str,
        decision: Decision,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        let wrote = match &decision.action {
            Action::Register { attributes, .. } => {
                self.registry
                    .register_instance(&target.service_id, instance_id, attributes)
                    .await?;
                true
            }
            Action::Deregister(_) => {
                self.registry
                    .deregister_instance(&target.service_id, instance_id)
                    .await?;
                true
            }
            Action::Skip(_) => false,
        };
        if wrote {
            for omitted in &decision.omitted {
                // Every write that leaves a key out says so: the cause is in the input (an odd
                // value, a crowded instance), not in a passing condition.
                warn!(
                    task = %task.id,
                    cloudmap_service = %target.service_id,
                    instance = instance_id,
                    key = %omitted.key,
                    reason = omitted.reason.as_str(),
                    "attribute left out of the write: Cloud Map would refuse it; the rest was written"
                );
                report.omitted.push(OmittedAttribute {
                    instance: instance_id.to_owned(),
                    key: omitted.key.clone(),
                    reason: omitted.reason.as_str(),
                });
            }
        }
        let record = DecisionRecord {
            task: task.id.clone(),
            cloudmap_service: target.service_id.clone(),
            instance: instance_id.to_owned(),
            action: decision.action.name(),
            wrote,
            old_state: decision.old_state.map(|s| s.as_str()),
            new_state: decision.new_state.map(|s| s.as_str()),
        };
        info!(
            task = %task.id,
            cluster = %task.cluster,
            service,
            cloudmap_service = %target.service_id,
            instance = instance_id,
            old_state = record.old_state,
            new_state = record.new_state,
            version = decision.version,
            stop_code = decision.stop_code.as_deref(),
            action = record.action,
            wrote,
            "decision"
        );
        report.decisions.push(record);
        Ok(())
    }

    /// Logs a permanent error and counts it in the report's `handled_errors`; passes a retryable
    /// one on. (Reconciliation also counts `load_unavailable` there without this: a CloudWatch
    /// failure, retryable or not, that only keeps the written load.)
    pub(crate) fn absorb(&self, error: SyncError, report: &mut Report) -> Result<(), SyncError> {
        if error.is_retryable() {
            return Err(error);
        }
        warn!(error = %error, class = error.class(), "permanent error; acknowledged without retry");
        report.handled_error(error.class());
        Ok(())
    }
}
