//! Pairing Cloud Map instances with ECS tasks (pure).
//!
//! An instance belongs to the ECS service being reconciled when its `LB_TASK_ARN` or its ID names
//! one of the service's running tasks, or when its `ECS_SERVICE_NAME`/`ECS_CLUSTER_NAME` say so
//! (ECS writes them; owner mode writes them too). Other instances in the same Cloud Map service
//! (another ECS service sharing it, something registered by hand) are never touched.
//!
//! An instance's task is the one its `LB_TASK_ARN` names, else the task whose ID is the
//! instance ID (what ECS uses), else, for an instance never enriched, the running task with
//! the same address, IPv4 or IPv6 (in case ECS's instance IDs are not task IDs; an IPv6-only
//! task's instance has only `AWS_INSTANCE_IPV6`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};

use cloudmap_balancer::contract::{InstanceAttributes, keys};

use crate::ports::Instance;
use crate::task::{Described, TaskRef, last_segment, task_id};

/// An instance of the reconciled service and the task ID it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim<'a> {
    pub(crate) instance: &'a Instance,
    /// From `LB_TASK_ARN`, else the instance ID.
    pub(crate) task_id: String,
    /// `LB_TASK_ARN` was present.
    pub(crate) enriched: bool,
}

/// The instances that belong to `cluster`/`service`, with the task IDs they claim.
pub(crate) fn claims<'a>(
    cluster: &str,
    service: &str,
    listed: &HashSet<String>,
    instances: &'a [Instance],
) -> Vec<Claim<'a>> {
    instances
        .iter()
        .filter_map(|instance| {
            let written = InstanceAttributes::decode(&instance.attributes);
            let lb_task = written.task_arn.as_deref().and_then(task_id);
            let task_id = lb_task.unwrap_or(&instance.id).to_owned();
            let attribute = |key: &str| instance.attributes.get(key).map(|v| v.trim());
            let labelled = attribute(keys::ECS_SERVICE_NAME) == Some(service)
                && attribute(keys::ECS_CLUSTER_NAME).and_then(last_segment) == Some(cluster);
            let ours = listed.contains(&task_id) || listed.contains(&instance.id) || labelled;
            ours.then_some(Claim {
                instance,
                task_id,
                enriched: lb_task.is_some(),
            })
        })
        .collect()
}

/// One task and its instance (or none yet) to decide about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair<'a> {
    pub(crate) task: TaskRef,
    pub(crate) described: &'a Described,
    pub(crate) instance: Option<&'a Instance>,
}

/// Pairs every claim with its task, and every listed task without an instance with `None`.
/// `described` holds an answer for every listed ID and every claimed ID.
pub(crate) fn pairs<'a>(
    cluster: &str,
    listed: &[String],
    claims: &[Claim<'a>],
    described: &'a HashMap<String, Described>,
) -> Vec<Pair<'a>> {
    let missing = &Described::Missing;
    let lookup = |id: &str| described.get(id).unwrap_or(missing);
    let task_ref = |id: &str, claim: Option<&Claim<'_>>| -> TaskRef {
        if let Some(d) = lookup(id).found() {
            return d.task.clone();
        }
        // ECS no longer knows the task: keep the ARN the instance carries, if any.
        let arn = claim
            .and_then(|c| c.instance.attributes.get(keys::LB_TASK_ARN))
            .map_or(id, String::as_str);
        TaskRef::new(arn, cluster).unwrap_or_else(|| TaskRef {
            arn: id.to_owned(),
            id: id.to_owned(),
            cluster: cluster.to_owned(),
        })
    };

    let claimed: HashSet<&str> = claims.iter().map(|c| c.task_id.as_str()).collect();
    let mut by_address: HashMap<IpAddr, &str> = HashMap::new();
    for id in listed.iter().filter(|id| !claimed.contains(id.as_str())) {
        if let Some(facts) = lookup(id).found().map(|d| &d.facts) {
            let v4 = facts.ipv4.map(IpAddr::from);
            let v6 = facts.ipv6.map(IpAddr::from);
            for ip in v4.into_iter().chain(v6) {
                by_address.insert(ip, id);
            }
        }
    }

    let mut paired_tasks: HashSet<String> = HashSet::new();
    let mut result = Vec::new();
    for claim in claims {
        // The address fallback only for an instance never enriched and whose ID is not a task
        // ECS knows.
        let mut id = claim.task_id.as_str();
        if !claim.enriched && lookup(id).found().is_none() {
            let task = addresses(claim.instance)
                .into_iter()
                .find_map(|ip| by_address.get(&ip).copied());
            if let Some(task) = task {
                // A dual-stack task is keyed twice: neither key may pair another instance.
                by_address.retain(|_, t| *t != task);
                id = task;
            }
        }
        paired_tasks.insert(id.to_owned());
        result.push(Pair {
            task: task_ref(id, Some(claim)),
            described: lookup(id),
            instance: Some(claim.instance),
        });
    }
    for id in listed
        .iter()
        .filter(|id| !paired_tasks.contains(id.as_str()))
    {
        result.push(Pair {
            task: task_ref(id, None),
            described: lookup(id),
            instance: None,
        });
    }
    result
}

/// The instance's addresses: `AWS_INSTANCE_IPV4`, then `AWS_INSTANCE_IPV6`, each where valid.
fn addresses(instance: &Instance) -> Vec<IpAddr> {
    let v4 = InstanceAttributes::decode(&instance.attributes)
        .ipv4
        .map(IpAddr::from);
    let v6 = instance
        .attributes
        .get(crate::decide::AWS_INSTANCE_IPV6)
        .and_then(|v| v.trim().parse::<Ipv6Addr>().ok())
        .map(IpAddr::from);
    v4.into_iter().chain(v6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{DescribedTask, TaskFacts};

    fn instance(id: &str, attrs: &[(&str, &str)]) -> Instance {
        Instance {
            id: id.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn found(id: &str, ip: [u8; 4]) -> Described {
        found_at(id, Some(ip), None)
    }

    fn found_at(id: &str, ipv4: Option<[u8; 4]>, ipv6: Option<&str>) -> Described {
        Described::Found(Box::new(DescribedTask {
            task: TaskRef::new(&format!("arn:aws:ecs:r:1:task/prod/{id}"), "prod").unwrap(),
            lifecycle: None,
            version: None,
            health: None,
            weight_tag: None,
            facts: TaskFacts {
                ipv4: ipv4.map(Into::into),
                ipv6: ipv6.map(|ip| ip.parse().unwrap()),
                ..TaskFacts::default()
            },
            family: None,
        }))
    }

    #[test]
    fn only_the_services_instances_are_claimed() {
        let listed: HashSet<String> = ["t1".to_owned()].into();
        let instances = [
            instance("t1", &[]),
            instance("x", &[(keys::LB_TASK_ARN, "arn:aws:ecs:r:1:task/prod/t1")]),
            instance(
                "t2",
                &[
                    (keys::ECS_SERVICE_NAME, "echo"),
                    (keys::ECS_CLUSTER_NAME, "prod"),
                ],
            ),
            instance(
                "t3",
                &[
                    (keys::ECS_SERVICE_NAME, "other"),
                    (keys::ECS_CLUSTER_NAME, "prod"),
                ],
            ),
            instance(
                "t4",
                &[
                    (keys::ECS_SERVICE_NAME, "echo"),
                    (keys::ECS_CLUSTER_NAME, "staging"),
                ],
            ),
            instance("manual", &[("owner", "me")]),
        ];
        let claims = claims("prod", "echo", &listed, &instances);
        let claimed: Vec<(&str, &str)> = claims
            .iter()
            .map(|c| (c.instance.id.as_str(), c.task_id.as_str()))
            .collect();
        assert_eq!(claimed, [("t1", "t1"), ("x", "t1"), ("t2", "t2")]);
    }

    #[test]
    fn tasks_pair_by_id_then_by_address_and_the_rest_stand_alone() {
        let listed = vec!["t1".to_owned(), "t2".to_owned(), "t3".to_owned()];
        let instances = [
            instance("t1", &[]),
            // Not a task ID, never enriched, same address as t2.
            instance(
                "odd-id",
                &[
                    (keys::AWS_INSTANCE_IPV4, "10.0.0.2"),
                    (keys::ECS_SERVICE_NAME, "echo"),
                    (keys::ECS_CLUSTER_NAME, "prod"),
                ],
            ),
            // A task that is gone.
            instance(
                "t9",
                &[
                    (keys::ECS_SERVICE_NAME, "echo"),
                    (keys::ECS_CLUSTER_NAME, "prod"),
                ],
            ),
        ];
        let listed_set: HashSet<String> = listed.iter().cloned().collect();
        let claims = claims("prod", "echo", &listed_set, &instances);
        let described: HashMap<String, Described> = [
            ("t1".to_owned(), found("t1", [10, 0, 0, 1])),
            ("t2".to_owned(), found("t2", [10, 0, 0, 2])),
            ("t3".to_owned(), found("t3", [10, 0, 0, 3])),
            ("odd-id".to_owned(), Described::Missing),
            ("t9".to_owned(), Described::Missing),
        ]
        .into();
        let pairs = pairs("prod", &listed, &claims, &described);
        let view: Vec<(&str, Option<&str>, bool)> = pairs
            .iter()
            .map(|p| {
                (
                    p.task.id.as_str(),
                    p.instance.map(|i| i.id.as_str()),
                    p.described.found().is_some(),
                )
            })
            .collect();
        assert_eq!(
            view,
            [
                ("t1", Some("t1"), true),
                ("t2", Some("odd-id"), true),
                ("t9", Some("t9"), false),
                ("t3", None, true),
            ]
        );
    }

    #[test]
    fn an_instance_pairs_by_its_ipv6_address_too() {
        let listed = vec!["t1".to_owned(), "t2".to_owned()];
        let labels = [
            (keys::ECS_SERVICE_NAME, "echo"),
            (keys::ECS_CLUSTER_NAME, "prod"),
        ];
        let with_address = |id: &str, key: &'static str, ip: &'static str| {
            let mut attributes = labels.to_vec();
            attributes.push((key, ip));
            instance(id, &attributes)
        };
        let instances = [
            // An IPv6-only task's instance: no IPv4 at all.
            with_address("odd-1", crate::decide::AWS_INSTANCE_IPV6, "2a05:d014::1"),
            // A dual-stack task's instance, registered by its IPv4 address.
            with_address("odd-2", keys::AWS_INSTANCE_IPV4, "10.0.0.2"),
            // The dual-stack task's IPv6 address again: the task is taken.
            with_address("odd-3", crate::decide::AWS_INSTANCE_IPV6, "2a05:d014::2"),
        ];
        let listed_set: HashSet<String> = listed.iter().cloned().collect();
        let claims = claims("prod", "echo", &listed_set, &instances);
        let described: HashMap<String, Described> = [
            ("t1".to_owned(), found_at("t1", None, Some("2a05:d014::1"))),
            (
                "t2".to_owned(),
                found_at("t2", Some([10, 0, 0, 2]), Some("2a05:d014::2")),
            ),
            ("odd-1".to_owned(), Described::Missing),
            ("odd-2".to_owned(), Described::Missing),
            ("odd-3".to_owned(), Described::Missing),
        ]
        .into();
        let view: Vec<(String, String)> = pairs("prod", &listed, &claims, &described)
            .iter()
            .map(|p| (p.task.id.clone(), p.instance.unwrap().id.clone()))
            .collect();
        assert_eq!(
            view,
            [
                ("t1".to_owned(), "odd-1".to_owned()),
                ("t2".to_owned(), "odd-2".to_owned()),
                ("odd-3".to_owned(), "odd-3".to_owned()),
            ]
        );
    }
}
