//! Reconciliation: compare each managed service's Cloud Map instances with its ECS tasks and
//! repair the drift (missed events, instances whose task is gone, stale health, weight or load).
//!
//! Which services: with [`ReconcileScope::All`] (the schedule), every service with Cloud Map
//! registries in each cluster of `SYNC_CLUSTERS` (listed with `ListServices` +
//! `DescribeServices`, cached for the registry TTL) and every owner-mode mapping; with
//! [`ReconcileScope::Service`], that one service.
//!
//! Per service, reads first, then writes:
//!
//! 1. `ListTasks` (desired RUNNING) and `ListInstances` of each Cloud Map service;
//! 2. one `DescribeTasks` per 100 of the listed tasks and of the tasks the instances claim
//!    (a task that is draining or stopped is not listed but still described);
//! 3. one `GetMetricData` per 250 running tasks (two queries each), when load is enabled;
//! 4. `DescribeSubnets` per subnet not yet cached (`DescribeAvailabilityZones` once for tasks
//!    without a subnet), only for tasks whose instance lacks `AVAILABILITY_ZONE_ID` (a failure
//!    writes without it, see the handler's zone IDs);
//! 5. a [`decide::on_reconcile`] per task/instance pair; then the writes they ask for, issued
//!    back to back, so that a service's load (and other) writes of one sweep move its revision in
//!    one burst: a client polling the revision sees it move once per sweep unless its poll lands
//!    inside that burst.
//!
//! A 100-task service in steady state costs 4 calls and no write. A failed read writes nothing
//! for that service (except CloudWatch: without load data the state is still repaired and the
//! written load kept); a failed write stops that service's writes (the next run redoes what is
//! still drifted: every decision is idempotent). Services are independent: one failing does not
//! stop the others, and the invocation fails at the end if any did (retryable).

mod pairing;

use std::collections::{HashMap, HashSet};

use cloudmap_balancer::contract::{LbState, keys};
use tracing::{info, warn};

use crate::decide::{self, Context, Measured};
use crate::error::SyncError;
use crate::events::ReconcileScope;
use crate::handler::{Handler, ManagedService, Target, ZoneSource, enrich_targets};
use crate::observe::Report;
use crate::ports::{Clock, Instance, LoadQuery, Metrics, Registry, Tasks, ZoneIdGap, Zones};
use crate::task::{Described, last_segment, task_id};

impl<R: Registry, T: Tasks, M: Metrics, C: Clock, S: Zones> Handler<R, T, M, C, S> {
    pub(crate) async fn reconcile(
        &self,
        scope: &ReconcileScope,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        let mut first_failure = None;
        let services = match scope {
            ReconcileScope::All => self.managed_services(&mut first_failure, report).await?,
            ReconcileScope::Service { cluster, service } => {
                let cluster = last_segment(cluster).unwrap_or(cluster).to_owned();
                match self.targets(&cluster, service).await {
                    Ok(targets) => vec![ManagedService {
                        cluster,
                        service: service.clone(),
                        targets,
                    }],
                    Err(error) => {
                        self.absorb(error, report)?;
                        Vec::new()
                    }
                }
            }
        };
        if services.is_empty() {
            info!(
                "nothing to reconcile: no clusters configured (SYNC_CLUSTERS), no owner mappings, or no registries"
            );
        }
        for service in &services {
            if let Err(error) = self.reconcile_service(service, report).await
                && let Err(error) = self.absorb(error, report)
            {
                warn!(cluster = %service.cluster, service = %service.service, error = %error, "reconciliation of the service failed");
                first_failure.get_or_insert(error);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// The services of every configured cluster that have registries, plus the owner mappings.
    async fn managed_services(
        &self,
        first_failure: &mut Option<SyncError>,
        report: &mut Report,
    ) -> Result<Vec<ManagedService>, SyncError> {
        let mut services: Vec<ManagedService> = Vec::new();
        for cluster in &self.config.clusters {
            let cluster = last_segment(cluster).unwrap_or(cluster);
            let now = self.clock.now();
            let cached = self.cache().cluster(cluster, now);
            let listed = match cached {
                Some(listed) => listed,
                None => match self.tasks.services_with_registries(cluster).await {
                    Ok(found) => {
                        let listed: Vec<ManagedService> = found
                            .into_iter()
                            .map(|s| ManagedService {
                                cluster: cluster.to_owned(),
                                targets: enrich_targets(&s.registry_arns),
                                service: s.service,
                            })
                            .collect();
                        let expires = now + self.config.registry_cache_ttl;
                        self.cache().put_cluster(cluster, &listed, expires);
                        listed
                    }
                    Err(error) => {
                        if let Err(error) = self.absorb(error, report) {
                            warn!(cluster, error = %error, "listing the cluster's services failed");
                            first_failure.get_or_insert(error);
                        }
                        Vec::new()
                    }
                },
            };
            services.extend(listed);
        }
        for mapping in &self.config.owner_mappings {
            // An explicit mapping wins over the service's registries.
            services.retain(|s| !(s.cluster == mapping.cluster && s.service == mapping.service));
            services.push(ManagedService {
                cluster: mapping.cluster.clone(),
                service: mapping.service.clone(),
                targets: vec![Target {
                    service_id: mapping.cloudmap_service_id.clone(),
                    mode: decide::Mode::Owner { port: mapping.port },
                }],
            });
        }
        Ok(services)
    }

    async fn reconcile_service(
        &self,
        managed: &ManagedService,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        let ManagedService {
            cluster,
            service,
            targets,
        } = managed;
        if targets.is_empty() {
            return Ok(());
        }
        // Reads.
        let listed: Vec<String> = self
            .tasks
            .list_service_tasks(cluster, service)
            .await?
            .iter()
            .filter_map(|arn| task_id(arn).map(str::to_owned))
            .collect();
        let listed_set: HashSet<String> = listed.iter().cloned().collect();
        let mut instances: Vec<Vec<Instance>> = Vec::with_capacity(targets.len());
        for target in targets {
            instances.push(self.registry.list_instances(&target.service_id).await?);
        }
        let claims: Vec<Vec<pairing::Claim<'_>>> = instances
            .iter()
            .map(|list| pairing::claims(cluster, service, &listed_set, list))
            .collect();
        let mut to_describe = listed.clone();
        let mut seen = listed_set.clone();
        for claim in claims.iter().flatten() {
            if seen.insert(claim.task_id.clone()) {
                to_describe.push(claim.task_id.clone());
            }
        }
        let mut described = self.tasks.describe_tasks(cluster, &to_describe).await?;
        let samples = if self.config.load.is_some() {
            let queries: Vec<LoadQuery> = described
                .values()
                .filter_map(Described::found)
                .filter(|d| {
                    d.lifecycle
                        .is_some_and(|l| matches!(l.phase(), LbState::Running | LbState::Draining))
                })
                .map(|d| LoadQuery {
                    task_id: d.task.id.clone(),
                    cluster: cluster.clone(),
                    service: service.clone(),
                    family: d.family.clone(),
                })
                .collect();
            if queries.is_empty() {
                Some(HashMap::new())
            } else {
                // Load is secondary: without CloudWatch the state is still repaired, and the
                // written load stays until the next run can measure it.
                match self.metrics.cpu_samples(&queries, self.clock.now()).await {
                    Ok(samples) => Some(samples),
                    Err(error) => {
                        warn!(cluster = %cluster, service = %service, error = %error, "load unavailable; reconciling without it");
                        report.handled_error("load_unavailable");
                        None
                    }
                }
            }
        } else {
            None
        };

        // Zone IDs, for the tasks whose instance a write could add one to (cached per subnet).
        // The zone name: `DescribeTasks`', else the `AVAILABILITY_ZONE` ECS (or owner mode) wrote.
        let mut wanted: Vec<(&crate::task::DescribedTask, Option<&str>)> = Vec::new();
        for (target, claims) in targets.iter().zip(&claims) {
            for pair in pairing::pairs(cluster, &listed, claims, &described) {
                let Some(task) = pair.described.found() else {
                    continue;
                };
                let existing = pair.instance.map(|i| &i.attributes);
                if crate::handler::zone_id_wanted(existing, target.mode) {
                    let written_zone = existing
                        .and_then(|a| a.get(keys::AVAILABILITY_ZONE))
                        .map(|z| z.trim())
                        .filter(|z| !z.is_empty());
                    wanted.push((task, written_zone));
                }
            }
        }
        let mut zone_ids: HashMap<String, Result<String, ZoneIdGap>> = HashMap::new();
        for (task, written_zone) in wanted {
            // Described, so the task is the function's account's, in its region.
            let source = ZoneSource {
                subnet: task.facts.subnet.as_deref(),
                zone: task.facts.zone.as_deref().or(written_zone),
                home: task.task.account_region(),
            };
            zone_ids.insert(task.task.id.clone(), self.zone_id(source).await);
        }
        let mut gaps: HashMap<String, ZoneIdGap> = HashMap::new();
        for (task_id, zone_id) in zone_ids {
            match zone_id {
                Ok(zone_id) => {
                    if let Some(Described::Found(task)) = described.get_mut(&task_id) {
                        task.facts.zone_id = Some(zone_id);
                    }
                }
                Err(gap) => {
                    gaps.insert(task_id, gap);
                }
            }
        }

        // Decisions, then the writes back to back: load moves a Cloud Map service's revision
        // in one burst per sweep, not spread over the sweep.
        let now = self.clock.now();
        let mut decided = Vec::new();
        for (target, claims) in targets.iter().zip(&claims) {
            let ctx = Context {
                mode: target.mode,
                service,
                policy: self.policy(),
                now,
            };
            for pair in pairing::pairs(cluster, &listed, claims, &described) {
                let load = match (&samples, pair.described.found()) {
                    (Some(samples), Some(task)) => {
                        let sample = samples.get(&task.task.id).copied().unwrap_or_default();
                        let reserved = sample
                            .reserved
                            .or_else(|| task.facts.cpu_units.map(f64::from));
                        Measured::Load(
                            sample
                                .used
                                .zip(reserved)
                                .and_then(|(used, reserved)| decide::utilisation(used, reserved)),
                        )
                    }
                    _ => Measured::NotMeasured,
                };
                let existing = pair.instance.map(|i| &i.attributes);
                let instance_id = pair
                    .instance
                    .map_or(pair.task.id.as_str(), |i| i.id.as_str());
                match decide::on_reconcile(&ctx, &pair.task, pair.described, existing, load) {
                    Ok(decision) => {
                        let gap = gaps.get(&pair.task.id).copied();
                        let instance_id = instance_id.to_owned();
                        decided.push((pair.task, target, instance_id, decision, gap));
                    }
                    Err(limit) => self.absorb(
                        SyncError::Limits {
                            service_id: target.service_id.clone(),
                            instance_id: instance_id.to_owned(),
                            source: limit,
                        },
                        report,
                    )?,
                }
            }
        }
        for (task, target, instance_id, decision, gap) in decided {
            let counted = decision.clone();
            self.apply(&task, service, target, &instance_id, decision, report)
                .await?;
            crate::handler::count_gap(&counted, gap, report);
        }
        Ok(())
    }
}
