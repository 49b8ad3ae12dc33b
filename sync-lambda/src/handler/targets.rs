//! Which Cloud Map services an ECS service's tasks live in, and in which mode: an owner-mode
//! mapping from configuration, else the service's registries from `ecs:DescribeServices`, cached
//! across invocations (a warm Lambda keeps its memory) for the configured TTL.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::decide::Mode;
use crate::task::last_segment;

/// One Cloud Map service a task is registered in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Cloud Map service ID (`srv-…`).
    pub(crate) service_id: String,
    /// Enrich (ECS registers) or owner (the Lambda registers).
    pub(crate) mode: Mode,
}

/// An ECS service and its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManagedService {
    pub(crate) cluster: String,
    pub(crate) service: String,
    pub(crate) targets: Vec<Target>,
}

/// Enrich-mode targets from registry ARNs (`arn:aws:servicediscovery:…:service/srv-…`).
pub(crate) fn enrich_targets(registry_arns: &[String]) -> Vec<Target> {
    let mut targets: Vec<Target> = registry_arns
        .iter()
        .filter_map(|arn| last_segment(arn))
        .map(|id| Target {
            service_id: id.to_owned(),
            mode: Mode::Enrich,
        })
        .collect();
    targets.dedup();
    targets
}

/// The cache: per ECS service its targets, per cluster its service names, each with an expiry.
#[derive(Debug, Default)]
pub(crate) struct TargetCache {
    services: HashMap<(String, String), (SystemTime, Vec<Target>)>,
    clusters: HashMap<String, (SystemTime, Vec<String>)>,
}

impl TargetCache {
    pub(crate) fn service(
        &self,
        cluster: &str,
        service: &str,
        now: SystemTime,
    ) -> Option<Vec<Target>> {
        let (expires, targets) = self
            .services
            .get(&(cluster.to_owned(), service.to_owned()))?;
        (now < *expires).then(|| targets.clone())
    }

    pub(crate) fn put_service(
        &mut self,
        cluster: &str,
        service: &str,
        targets: Vec<Target>,
        expires: SystemTime,
    ) {
        self.services
            .insert((cluster.to_owned(), service.to_owned()), (expires, targets));
    }

    /// The cluster's services with registries, when listed recently and every one of them is
    /// still cached.
    pub(crate) fn cluster(&self, cluster: &str, now: SystemTime) -> Option<Vec<ManagedService>> {
        let (expires, names) = self.clusters.get(cluster)?;
        if now >= *expires {
            return None;
        }
        names
            .iter()
            .map(|service| {
                Some(ManagedService {
                    cluster: cluster.to_owned(),
                    service: service.clone(),
                    targets: self.service(cluster, service, now)?,
                })
            })
            .collect()
    }

    pub(crate) fn put_cluster(
        &mut self,
        cluster: &str,
        services: &[ManagedService],
        expires: SystemTime,
    ) {
        for s in services {
            self.put_service(cluster, &s.service, s.targets.clone(), expires);
        }
        let names = services.iter().map(|s| s.service.clone()).collect();
        self.clusters.insert(cluster.to_owned(), (expires, names));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn registry_arns_become_service_ids() {
        let targets = enrich_targets(&[
            "arn:aws:servicediscovery:eu-central-1:1:service/srv-abc".into(),
            "arn:aws:servicediscovery:eu-central-1:1:service/srv-abc".into(),
            "".into(),
        ]);
        assert_eq!(
            targets,
            [Target {
                service_id: "srv-abc".into(),
                mode: Mode::Enrich
            }]
        );
    }

    #[test]
    fn entries_expire() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let mut cache = TargetCache::default();
        let targets = enrich_targets(&["service/srv-1".into()]);
        cache.put_service(
            "prod",
            "echo",
            targets.clone(),
            t0 + Duration::from_secs(300),
        );
        assert_eq!(cache.service("prod", "echo", t0), Some(targets.clone()));
        assert_eq!(
            cache.service("prod", "echo", t0 + Duration::from_secs(300)),
            None
        );
        assert_eq!(cache.service("prod", "other", t0), None);

        let managed = ManagedService {
            cluster: "prod".into(),
            service: "echo".into(),
            targets,
        };
        cache.put_cluster(
            "prod",
            std::slice::from_ref(&managed),
            t0 + Duration::from_secs(60),
        );
        assert_eq!(cache.cluster("prod", t0), Some(vec![managed]));
        assert_eq!(cache.cluster("prod", t0 + Duration::from_secs(61)), None);
    }
}
