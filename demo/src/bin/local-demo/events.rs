//! ECS "Task State Change" events, shaped like the ones EventBridge delivers for Fargate tasks of
//! a service (see the AWS documentation's examples), for the tasks the local run starts.

use std::time::SystemTime;

use cloudmap_balancer::contract::format_rfc3339;
use serde_json::{Value, json};

use crate::stack::REGION;
use crate::tasks::TaskSpec;

/// One task's state change: what ECS says in `lastStatus` / `desiredStatus`, with the version
/// ECS would give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) last: &'static str,
    pub(crate) desired: &'static str,
    pub(crate) version: u64,
    pub(crate) stop_code: Option<&'static str>,
}

impl Change {
    pub(crate) const PENDING: Self = Self {
        last: "PENDING",
        desired: "RUNNING",
        version: 2,
        stop_code: None,
    };
    pub(crate) const RUNNING: Self = Self {
        last: "RUNNING",
        desired: "RUNNING",
        version: 3,
        stop_code: None,
    };
    /// Scale-in or deployment: ECS wants the task stopped, it is still running.
    pub(crate) const DRAINING: Self = Self {
        last: "RUNNING",
        desired: "STOPPED",
        version: 4,
        stop_code: Some("ServiceSchedulerInitiated"),
    };
    pub(crate) const STOPPED: Self = Self {
        last: "STOPPED",
        desired: "STOPPED",
        version: 7,
        stop_code: Some("ServiceSchedulerInitiated"),
    };

    pub(crate) fn label(self) -> String {
        format!("{}/{} v{}", self.last, self.desired, self.version)
    }
}

/// The EventBridge event for `task` undergoing `change`.
pub(crate) fn task_state_change(task: &TaskSpec, change: Change, now: SystemTime) -> Value {
    let at = format_rfc3339(now);
    let mut detail = json!({
        "attachments": [{
            "id": format!("{}-eni", task.task_id),
            "type": "eni",
            "status": if change.last == "STOPPED" { "DELETED" } else { "ATTACHED" },
            "details": [
                { "name": "subnetId", "value": task.subnet_id },
                { "name": "networkInterfaceId", "value": format!("eni-{}", &task.task_id[..12.min(task.task_id.len())]) },
                { "name": "privateIPv4Address", "value": task.ipv4 }
            ]
        }],
        "attributes": [{ "name": "ecs.cpu-architecture", "value": "x86_64" }],
        "availabilityZone": task.zone,
        "capacityProviderName": "FARGATE",
        "clusterArn": task.cluster_arn,
        "connectivity": "CONNECTED",
        "containers": [{
            "containerArn": format!("{}/container/demo-server", task.task_arn),
            "lastStatus": change.last,
            "name": "demo-server",
            "taskArn": task.task_arn,
            "cpu": "0",
            "networkInterfaces": [{ "privateIpv4Address": task.ipv4 }]
        }],
        "cpu": task.cpu.to_string(),
        "createdAt": at,
        "desiredStatus": change.desired,
        "enableExecuteCommand": false,
        "ephemeralStorage": { "sizeInGiB": 20 },
        "group": format!("service:{}", task.service),
        "launchType": "FARGATE",
        "lastStatus": change.last,
        "memory": task.memory.to_string(),
        "overrides": { "containerOverrides": [{ "name": "demo-server" }] },
        "platformVersion": "1.4.0",
        "startedBy": "ecs-svc/0123456789012345678",
        "taskArn": task.task_arn,
        "taskDefinitionArn": task.task_definition_arn,
        "updatedAt": at,
        "version": change.version
    });
    if let (Some(code), Some(object)) = (change.stop_code, detail.as_object_mut()) {
        object.insert("stopCode".into(), json!(code));
        object.insert("stoppingAt".into(), json!(at));
        object.insert(
            "stoppedReason".into(),
            json!("Scaling activity initiated by (deployment ecs-svc/0123456789012345678)"),
        );
        if change.last == "STOPPED" {
            object.insert("stoppedAt".into(), json!(at));
            object.insert("executionStoppedAt".into(), json!(at));
        }
    }
    json!({
        "version": "0",
        "id": format!("{}-{}", task.task_id, change.version),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": "123456789012",
        "time": at,
        "region": REGION,
        "resources": [task.task_arn],
        "detail": detail
    })
}

/// The EventBridge schedule's event that starts a reconciliation (`rate(1 minute)` in the SAM
/// template).
pub(crate) fn scheduled(now: SystemTime) -> Value {
    let at = format_rfc3339(now);
    json!({
        "version": "0",
        "id": format!("reconcile-{at}"),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": at,
        "region": REGION,
        "resources": [format!("arn:aws:events:{REGION}:123456789012:rule/cloudmap-sync-reconcile")],
        "detail": {}
    })
}
