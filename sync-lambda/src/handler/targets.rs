//! Which Cloud Map services an ECS service's tasks live in, and in which mode: an owner-mode
//! mapping from configuration, else the service's registries from `ecs:DescribeServices`, cached
//! across invocations (a warm Lambda keeps its memory) for the configured TTL.
//!
//! A Cloud Map service is named by its ARN wherever the Lambda has one: ECS's registry ARN, or
//! an owner mapping that gives one. Cloud Map takes the ID or the ARN as `ServiceId` in
//! `GetInstance`, `ListInstances`, `RegisterInstance` and `DeregisterInstance`, and needs the ARN
//! for a service in a namespace another account shares through AWS RAM (its ID alone names no
//! service in the caller's account). None of these operations takes an `OwnerAccount`: only
//! discovery does, which the Lambda never calls.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::decide::Mode;
use crate::task::last_segment;

/// One Cloud Map service a task is registered in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// What Cloud Map calls get as `ServiceId`: the service's ARN when known, else its ID
    /// (`srv-…`). See the module docs.
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

/// Enrich-mode targets from registry ARNs (`arn:aws:servicediscovery:…:service/srv-…`): the
/// ARN itself; anything else ECS might answer, by its last segment (the ID).
pub(crate) fn enrich_targets(registry_arns: &[String]) -> Vec<Target> {
    let mut targets: Vec<Target> = registry_arns
        .iter()
        .filter_map(|arn| {
            let arn = arn.trim();
            if is_service_arn(arn) {
                Some(arn)
            } else {
                last_segment(arn)
            }
        })
        .map(|id| Target {
            service_id: id.to_owned(),
            mode: Mode::Enrich,
        })
        .collect();
    targets.dedup();
    targets
}

/// Whether `text` is a Cloud Map service ARN: `arn:PARTITION:servicediscovery:REGION:ACCOUNT:
/// service/ID`, with every part present and no blank.
pub(crate) fn is_service_arn(text: &str) -> bool {
    let parts: Vec<&str> = text.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    arn == "arn"
        && service == "servicediscovery"
        && [partition, region, account].iter().all(|p| !p.is_empty())
        && resource
            .strip_prefix("service/")
            .is_some_and(|id| !id.is_empty())
        && !text.contains(char::is_whitespace)
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
    fn registry_arns_name_their_services() {
        // A service of a namespace shared by another account (111122223333) is named by its ARN,
        // as Cloud Map needs; so is every other.
        let shared = "arn:aws:servicediscovery:eu-central-1:111122223333:service/srv-abc";
        let targets = enrich_targets(&[shared.into(), format!(" {shared} "), "".into()]);
        assert_eq!(
            targets,
            [Target {
                service_id: shared.into(),
                mode: Mode::Enrich
            }]
        );
        assert_eq!(
            enrich_targets(&["service/srv-def".into()])[0].service_id,
            "srv-def",
            "not an ARN: its ID"
        );
    }

    #[test]
    fn service_arns() {
        assert!(is_service_arn(
            "arn:aws:servicediscovery:eu-central-1:111122223333:service/srv-abc"
        ));
        assert!(is_service_arn(
            "arn:aws-cn:servicediscovery:cn-north-1:111122223333:service/srv-abc"
        ));
        for not in [
            "srv-abc",
            "arn:aws:servicediscovery:eu-central-1:111122223333:namespace/ns-abc",
            "arn:aws:servicediscovery:eu-central-1::service/srv-abc",
            "arn:aws:ecs:eu-central-1:111122223333:service/srv-abc",
            "arn:aws:servicediscovery:eu-central-1:111122223333:service/",
            "arn:aws:servicediscovery:eu-central-1:111122223333:service/srv abc",
        ] {
            assert!(!is_service_arn(not), "{not}");
        }
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
