//! The event flow: one `ECS Task State Change` → at most `DescribeTasks`, `GetInstance`,
//! `RegisterInstance` per Cloud Map service (the registries lookup is cached), and
//! `DescribeSubnets` once per subnet (or, for tasks without one, `DescribeAvailabilityZones` once
//! per account and region) in the warm Lambda's life, only when an instance lacks
//! `AVAILABILITY_ZONE_ID`.
//!
//! The reads are ordered to keep the read-then-write window short: `DescribeTasks` first, then
//! `GetInstance` immediately before the write, so that ECS deregistering the instance between
//! the read and the write (which would re-create it) needs to happen within one round trip (two
//! on the one event per subnet that looks its zone ID up). All reads of all targets happen
//! before any write, so a failed read writes nothing; a failed zone ID lookup is no failure (see
//! [`super::zone_ids`]).

use tracing::{debug, warn};

use super::{Handler, Target, ZoneSource};
use crate::decide::{self, Context};
use crate::error::SyncError;
use crate::events::TaskChange;
use crate::observe::Report;
use crate::ports::{Clock, Metrics, Registry, Tasks, Zones};
use crate::task::{Described, TaskFacts, WeightTag};

impl<R: Registry, T: Tasks, M: Metrics, C: Clock, S: Zones> Handler<R, T, M, C, S> {
    pub(crate) async fn on_task_change(
        &self,
        change: &TaskChange,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        let task = &change.task;
        let Some(service) = change.group.service() else {
            debug!(task = %task.id, group = ?change.group, "standalone task; skipped");
            report.note = Some("standalone_task");
            return Ok(());
        };
        let targets = match self.targets(&task.cluster, service).await {
            Ok(targets) => targets,
            Err(error) => return self.absorb(error, report),
        };
        if targets.is_empty() {
            debug!(task = %task.id, cluster = %task.cluster, service, "service has no Cloud Map registry; skipped");
            report.note = Some("no_registry");
            return Ok(());
        }

        let described = match self
            .tasks
            .describe_tasks(&task.cluster, std::slice::from_ref(&task.id))
            .await
        {
            Ok(mut answer) => answer.remove(&task.id).unwrap_or(Described::Missing),
            Err(error) => return self.absorb(error, report),
        };
        if let Some(WeightTag::Invalid(value)) =
            described.found().and_then(|d| d.weight_tag.as_ref())
        {
            warn!(task = %task.id, tag = %self.config.weight_tag, value, "invalid weight tag; using the CPU formula");
        }

        let mut current = Vec::with_capacity(targets.len());
        for target in &targets {
            match self
                .registry
                .get_instance(&target.service_id, &task.id)
                .await
            {
                Ok(attributes) => current.push(attributes),
                Err(error) => return self.absorb(error, report),
            }
        }

        // The zone ID, only where a write could add it.
        let mut gap = None;
        let mut enriched = None;
        if targets
            .iter()
            .zip(&current)
            .any(|(target, existing)| super::zone_id_wanted(existing.as_ref(), target.mode))
        {
            let found = described.found();
            let source = ZoneSource {
                subnet: change
                    .facts
                    .subnet
                    .as_deref()
                    .or_else(|| found.and_then(|d| d.facts.subnet.as_deref())),
                zone: change
                    .facts
                    .zone
                    .as_deref()
                    .or_else(|| found.and_then(|d| d.facts.zone.as_deref())),
                home: found.and_then(|d| d.task.account_region()),
            };
            match self.zone_id(source).await {
                Ok(zone_id) => {
                    enriched = Some(TaskChange {
                        facts: TaskFacts {
                            zone_id: Some(zone_id),
                            ..change.facts.clone()
                        },
                        ..change.clone()
                    });
                }
                Err(why) => gap = Some(why),
            }
        }
        let change = enriched.as_ref().unwrap_or(change);

        let now = self.clock.now();
        for (target, existing) in targets.iter().zip(&current) {
            let ctx = Context {
                mode: target.mode,
                service,
                policy: self.policy(),
                now,
            };
            match decide::on_event(&ctx, change, &described, existing.as_ref()) {
                Ok(decision) => {
                    let counted = decision.clone();
                    self.apply(task, service, target, &task.id, decision, report)
                        .await?;
                    super::count_gap(&counted, gap, report);
                }
                Err(limit) => {
                    let error = SyncError::Limits {
                        service_id: target.service_id.clone(),
                        instance_id: task.id.clone(),
                        source: limit,
                    };
                    self.absorb(error, report)?;
                }
            }
        }
        Ok(())
    }

    /// The Cloud Map services of an ECS service: the owner mapping, else its registries (cached).
    pub(crate) async fn targets(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<Target>, SyncError> {
        if let Some(mapping) = self.config.owner_mapping(cluster, service) {
            return Ok(vec![Target {
                service_id: mapping.cloudmap_service_id.clone(),
                mode: decide::Mode::Owner { port: mapping.port },
            }]);
        }
        let now = self.clock.now();
        if let Some(targets) = self.cache().service(cluster, service, now) {
            return Ok(targets);
        }
        let arns = self.tasks.service_registries(cluster, service).await?;
        let targets = super::enrich_targets(&arns);
        let expires = now + self.config.registry_cache_ttl;
        self.cache()
            .put_service(cluster, service, targets.clone(), expires);
        Ok(targets)
    }
}
