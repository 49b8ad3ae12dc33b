//! The Cloud Map attributes of a task as the sync Lambda would have left them: ECS's, plus the
//! Lambda's for a RUNNING, healthy task with its weight from its size and its load from
//! Container Insights. The harness writes them itself instead of running the Lambda: the
//! comparison is about the client, and the local run already drives the real Lambda. Pure.

use std::collections::HashMap;
use std::time::SystemTime;

use cloudmap_balancer::contract::{
    self, LbAttributes, LbHealth, LbState, LimitError, Load, Weight,
};
use local_stack::ecs_service::Task;

/// The `detail.version` of a task's RUNNING event (PENDING is 2).
const RUNNING_VERSION: u64 = 3;

/// ECS's `registered` attributes merged with what the Lambda writes for `task` once it is
/// `LB_WEIGHT` of a task of `cpu` units: the contract's formula, 100 per 0.25 vCPU.
pub(crate) fn weight_of(cpu: u32) -> u32 {
    (cpu * 100 + 128) / 256
}

/// RUNNING, with `load_percent` from Container Insights, written at `now`.
pub(crate) fn as_the_lambda_writes(
    registered: &HashMap<String, String>,
    task: &Task,
    load_percent: u32,
    now: SystemTime,
) -> Result<HashMap<String, String>, LimitError> {
    let ours = LbAttributes {
        state: LbState::Running,
        health: LbHealth::Healthy,
        weight: Weight::saturating(weight_of(task.cpu)),
        cpu_units: Some(task.cpu),
        memory_mib: Some(task.memory),
        capacity: Some("FARGATE".into()),
        load: Load::new(load_percent),
        task_arn: task.task_arn.clone(),
        task_version: Some(RUNNING_VERSION),
        updated_at: now,
        // The harness runs its clients with slow start off (the default), so the task's start
        // time would change nothing; it is left out rather than made up.
        running_since: None,
        lambda_owned: false,
    };
    Ok(contract::merge(registered, &ours, &[])?
        .attributes
        .into_map()
        .into_iter()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudmap_balancer::contract::{InstanceAttributes, keys};

    #[test]
    fn the_lambdas_keys_join_ecss_and_decode_as_a_running_task_of_its_size_and_load() {
        let task = Task {
            task_arn: "arn:aws:ecs:eu-central-1:123456789012:task/demo/abc".into(),
            task_id: "abc".into(),
            cluster_arn: String::new(),
            service: "demo-server".into(),
            task_definition_arn: String::new(),
            revision: 1,
            cpu: 1024,
            memory: 2048,
            zone: "eu-central-1c".into(),
            subnet_id: String::new(),
            ipv4: "10.0.0.9".into(),
        };
        let registered = HashMap::from([
            (keys::AWS_INSTANCE_IPV4.to_owned(), "127.0.0.1".to_owned()),
            (keys::AWS_INSTANCE_PORT.to_owned(), "4242".to_owned()),
            (
                keys::AVAILABILITY_ZONE.to_owned(),
                "eu-central-1c".to_owned(),
            ),
        ]);
        let written = as_the_lambda_writes(&registered, &task, 70, SystemTime::now()).unwrap();
        assert_eq!(written[keys::AWS_INSTANCE_PORT], "4242", "ECS's keys stay");
        let decoded = InstanceAttributes::decode(&written);
        assert_eq!(decoded.state, Some(LbState::Running));
        assert_eq!(decoded.health, LbHealth::Healthy);
        assert_eq!(decoded.weight.map(|w| w.get()), Some(400));
        assert_eq!(decoded.load.map(|l| l.get()), Some(70));
        assert_eq!(decoded.zone.as_deref(), Some("eu-central-1c"));
    }
}
