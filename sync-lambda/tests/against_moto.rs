//! The handler over the real AWS SDK against moto: fixture events, ordering, enrich and owner
//! modes, reconciliation, load, bad input and failing AWS calls.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudmap_balancer::contract::{self, LbAttributes, LbHealth, LbState, Weight, keys};
use cloudmap_sync::observe::InvocationKind;
use cloudmap_sync::{ErrorKind, SystemClock};
use common::{
    Fixed, Networked, Recorded, Settable, Stack, TaskInfo, fixture_json, handler, handler_on,
    in_subnet, networked_handler, put_cpu, recorded_handler, sdk_via, subnet_in, task_subnet,
    without_time,
};
use local_stack::MotoServer;
use local_stack::fault::{Fault, FaultProxy};
use serde_json::json;

fn get<'a>(attrs: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    attrs.get(key).map(String::as_str)
}

/// A fixture, whether its task is stopped in ECS first, and the `LB_*` values expected.
type Case = (&'static str, bool, &'static [(&'static str, &'static str)]);

#[tokio::test]
async fn fixture_events_produce_the_expected_attributes() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(6, &[]).await;
    let handler = handler(stack.config(&[]));
    // (fixture, stop the task in ECS first, expected LB_* values)
    let cases: [Case; 6] = [
        (
            "fargate_running.json",
            false,
            &[
                (keys::LB_STATE, "RUNNING"),
                (keys::LB_HEALTH, "UNKNOWN"),
                (keys::LB_WEIGHT, "200"),
                (keys::LB_CPU_UNITS, "512"),
                (keys::LB_MEMORY_MIB, "1024"),
                (keys::LB_CAPACITY, "FARGATE"),
                (keys::LB_TASK_VERSION, "4"),
                (keys::LB_SCHEMA, "1"),
                // The event's startedAt (moto's DescribeTasks has none).
                (keys::LB_RUNNING_SINCE, "2026-11-22T14:02:16.904Z"),
            ],
        ),
        (
            "fargate_stopped_by_scheduler.json",
            true,
            &[
                (keys::LB_STATE, "STOPPED"),
                (keys::LB_TASK_VERSION, "8"),
                (keys::LB_CAPACITY, "FARGATE"),
                (keys::LB_RUNNING_SINCE, "2026-11-22T14:02:16.904Z"),
            ],
        ),
        (
            // Old-format task ARN, no attachments, a container cpu of "null", no task cpu.
            "ec2_bridge_running.json",
            false,
            &[
                (keys::LB_STATE, "RUNNING"),
                (keys::LB_CAPACITY, "EC2"),
                (keys::LB_CPU_UNITS, "128"),
                (keys::LB_WEIGHT, "50"),
                (keys::LB_MEMORY_MIB, "512"),
                (keys::LB_TASK_VERSION, "2"),
            ],
        ),
        (
            "spot_interruption_warning.json",
            false,
            &[
                (keys::LB_STATE, "DRAINING"),
                (keys::LB_CAPACITY, "FARGATE_SPOT"),
                (keys::LB_WEIGHT, "400"),
                (keys::LB_TASK_VERSION, "5"),
            ],
        ),
        (
            "deprovisioning.json",
            true,
            &[(keys::LB_STATE, "STOPPED"), (keys::LB_TASK_VERSION, "7")],
        ),
        (
            // ECS Managed Instances (launch type MANAGED_INSTANCES, its capacity provider):
            // the same path as EC2's and Fargate's.
            "managed_instances_running.json",
            false,
            &[
                (keys::LB_STATE, "RUNNING"),
                (keys::LB_CAPACITY, "managed-instances-cp"),
                (keys::LB_CPU_UNITS, "1024"),
                (keys::LB_MEMORY_MIB, "3072"),
                (keys::LB_WEIGHT, "400"),
                (keys::LB_TASK_VERSION, "3"),
                (keys::LB_RUNNING_SINCE, "2026-11-23T08:41:06.883Z"),
            ],
        ),
    ];
    assert_eq!(cases.len(), tasks.len(), "one task per case");
    for ((fixture, stopped, expected), task) in cases.iter().zip(&tasks) {
        let before = stack.register_like_ecs(task).await;
        if *stopped {
            stack.stop_task(task).await;
        }
        let version = fixture_json(fixture)["detail"]["version"].as_u64().unwrap();
        let report = handler
            .handle(stack.event(fixture, task, version))
            .await
            .unwrap();
        assert_eq!(report.writes(), 1, "{fixture}: {report:#?}");

        let after = stack.attributes(&task.id).await.unwrap();
        for (key, value) in &before {
            assert_eq!(
                get(&after, key),
                Some(value.as_str()),
                "{fixture}: {key} kept"
            );
        }
        for (key, value) in *expected {
            assert_eq!(get(&after, key), Some(*value), "{fixture}: {key}");
        }
        let arn = get(&after, keys::LB_TASK_ARN).unwrap();
        assert!(arn.ends_with(&task.id), "{fixture}: {arn}");
    }
}

#[tokio::test]
async fn an_event_never_recreates_a_deregistered_instance() {
    let stack = Stack::new().await;
    let task = stack.run_tasks(1, &[]).await.remove(0);
    let handler = handler(stack.config(&[]));
    stack.register_like_ecs(&task).await;
    handler
        .handle(stack.event("fargate_running.json", &task, 4))
        .await
        .unwrap();
    // ECS stops the task and deregisters its instance; the events come after.
    stack.stop_task(&task).await;
    stack.deregister(&task.id).await;
    for (last, version) in [("DEACTIVATING", 6), ("STOPPED", 8), ("RUNNING", 5)] {
        let report = handler
            .handle(stack.status_event(&task, version, last, "STOPPED"))
            .await
            .unwrap();
        assert_eq!(report.decisions.len(), 1);
        assert_eq!(report.decisions[0].action, "instance_not_found");
        assert!(!report.decisions[0].wrote);
    }
    assert_eq!(stack.attributes(&task.id).await, None, "never re-created");
}

#[tokio::test]
async fn any_delivery_order_with_duplicates_ends_like_in_order_delivery() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(2, &[]).await;
    let (in_order, shuffled) = (&tasks[0], &tasks[1]);
    let handler = handler(stack.config(&[]));
    let sequence = [
        (2, "PENDING", "RUNNING"),
        (4, "RUNNING", "RUNNING"),
        (5, "RUNNING", "STOPPED"),
        (7, "DEPROVISIONING", "STOPPED"),
        (8, "STOPPED", "STOPPED"),
    ];

    // In order, each event handled as it happened.
    stack.register_like_ecs(in_order).await;
    for (version, last, desired) in sequence {
        if last == "DEPROVISIONING" {
            stack.stop_task(in_order).await;
        }
        handler
            .handle(stack.status_event(in_order, version, last, desired))
            .await
            .unwrap();
    }

    // Shuffled with duplicates, all after the task stopped.
    stack.register_like_ecs(shuffled).await;
    stack.stop_task(shuffled).await;
    let mut writes = 0;
    for i in [4, 1, 0, 4, 2, 3, 1, 1, 0] {
        let (version, last, desired) = sequence[i];
        let report = handler
            .handle(stack.status_event(shuffled, version, last, desired))
            .await
            .unwrap();
        writes += report.writes();
    }
    assert_eq!(
        writes, 2,
        "the newest event writes STOPPED; DEPROVISIONING, the first STOPPED event, then labels it \
         with its version; everything else is already known"
    );

    let normalise = |task: &TaskInfo, attrs: HashMap<String, String>| {
        let mut attrs = without_time(attrs);
        for key in [keys::LB_TASK_ARN, keys::AWS_INSTANCE_IPV4] {
            let value = attrs.remove(key).unwrap();
            assert!(
                value.ends_with(&task.id) || value == task.ip,
                "{key}={value}"
            );
        }
        attrs
    };
    let a = normalise(in_order, stack.attributes(&in_order.id).await.unwrap());
    let b = normalise(shuffled, stack.attributes(&shuffled.id).await.unwrap());
    assert_eq!(a, b);
    assert_eq!(get(&a, keys::LB_STATE), Some("STOPPED"));
    assert_eq!(
        get(&a, keys::LB_TASK_VERSION),
        Some("7"),
        "the version STOPPED was first seen at"
    );
}

#[tokio::test]
async fn a_task_life_writes_once_per_state_change() {
    let stack = Stack::new().await;
    let task = stack.run_tasks(1, &[]).await.remove(0);
    let proxy = FaultProxy::start(MotoServer::shared().endpoint()).unwrap();
    let handler = handler_on(&sdk_via(&proxy.endpoint()), stack.config(&[]), SystemClock);
    let life = [
        (1, "PROVISIONING", "RUNNING"),
        (2, "PENDING", "RUNNING"),
        (3, "ACTIVATING", "RUNNING"),
        (4, "RUNNING", "RUNNING"),
        // The health check passes (moto's DescribeTasks reports no health: nothing to write).
        (5, "RUNNING", "RUNNING"),
        (6, "RUNNING", "STOPPED"),
        (7, "DEACTIVATING", "STOPPED"),
        (8, "STOPPING", "STOPPED"),
        (9, "DEPROVISIONING", "STOPPED"),
        (10, "STOPPED", "STOPPED"),
    ];
    let mut actions = Vec::new();
    for (version, last, desired) in life {
        match version {
            // ECS registers the instance around RUNNING, and deregisters it while the task stops.
            4 => drop(stack.register_like_ecs(&task).await),
            7 => stack.stop_task(&task).await,
            10 => stack.deregister(&task.id).await,
            _ => {}
        }
        let mut event = stack.status_event(&task, version, last, desired);
        if version < 4 {
            event["detail"].as_object_mut().unwrap().remove("startedAt");
        }
        let report = handler.handle(event).await.unwrap();
        actions.push(report.decisions[0].action);
    }
    let writes = proxy.count("RegisterInstance");
    println!("RegisterInstance calls over a task life: {writes} {actions:?}");
    assert_eq!(
        actions,
        [
            "instance_not_found",
            "instance_not_found",
            "instance_not_found",
            "update",
            "unchanged",
            "update",
            "update",
            "unchanged",
            "unchanged",
            "instance_not_found",
        ]
    );
    assert_eq!(writes, 3, "RUNNING, DRAINING, STOPPED");
}

#[tokio::test]
async fn reconciliation_repairs_missed_events_and_leaves_other_instances_alone() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(3, &[("lb:weight", "750")]).await;
    let handler = handler(stack.config(&[("SYNC_LOAD_ENABLED", "false")]));
    for task in &tasks {
        stack.register_like_ecs(task).await;
    }
    // t0 was written STARTING while it was pending (its RUNNING event is lost), t1 RUNNING (its
    // STOPPED event is lost), t2 never had an event.
    let starting = LbAttributes {
        state: LbState::Starting,
        health: LbHealth::Unknown,
        weight: Weight::saturating(750),
        cpu_units: Some(512),
        memory_mib: Some(1024),
        capacity: Some("FARGATE".into()),
        load: None,
        task_arn: tasks[0].arn.clone(),
        task_version: Some(2),
        updated_at: SystemTime::now(),
        running_since: None,
        lambda_owned: false,
    };
    let written = contract::merge(&stack.ecs_attributes(&tasks[0]), &starting, &[])
        .unwrap()
        .attributes;
    stack
        .register(&tasks[0].id, written.into_map().into_iter().collect())
        .await;
    handler
        .handle(stack.status_event(&tasks[1], 4, "RUNNING", "RUNNING"))
        .await
        .unwrap();
    stack.stop_task(&tasks[1]).await;
    // Another ECS service's instance and a hand-registered one share the Cloud Map service.
    let foreign = HashMap::from([
        (keys::ECS_SERVICE_NAME.to_owned(), "someone-else".to_owned()),
        (keys::ECS_CLUSTER_NAME.to_owned(), stack.cluster.clone()),
        (keys::AWS_INSTANCE_IPV4.to_owned(), "10.9.9.9".to_owned()),
    ]);
    stack.register("foreign-task", foreign.clone()).await;
    let manual = HashMap::from([(keys::AWS_INSTANCE_IPV4.to_owned(), "10.8.8.8".to_owned())]);
    stack.register("by-hand", manual.clone()).await;

    let report = handler
        .handle(json!({"action": "reconcile"}))
        .await
        .unwrap();
    assert_eq!(report.kind, InvocationKind::Reconcile);
    assert_eq!(report.writes(), 3, "{report:#?}");

    let t0 = stack.attributes(&tasks[0].id).await.unwrap();
    assert_eq!(get(&t0, keys::LB_STATE), Some("RUNNING"));
    assert_eq!(
        get(&t0, keys::LB_TASK_VERSION),
        None,
        "moto reports no version: RUNNING's first version is unknown until its event"
    );
    assert_eq!(get(&t0, keys::LB_WEIGHT), Some("750"), "the task tag");
    let t1 = stack.attributes(&tasks[1].id).await.unwrap();
    assert_eq!(get(&t1, keys::LB_STATE), Some("STOPPED"));
    let t2 = stack.attributes(&tasks[2].id).await.unwrap();
    assert_eq!(get(&t2, keys::LB_STATE), Some("RUNNING"));
    assert_eq!(
        get(&t2, keys::LB_CPU_UNITS),
        Some("512"),
        "from DescribeTasks"
    );
    assert_eq!(get(&t2, "team"), Some("payments"));
    assert_eq!(stack.attributes("foreign-task").await, Some(foreign));
    assert_eq!(stack.attributes("by-hand").await, Some(manual));

    // Nothing drifted since: nothing is written.
    let again = handler
        .handle(json!({"action": "reconcile"}))
        .await
        .unwrap();
    assert_eq!(again.writes(), 0, "{again:#?}");
    assert_eq!(again.skips().get("unchanged"), Some(&3));

    // On demand, one service.
    let one = handler
        .handle(
            json!({"action": "reconcile", "cluster": stack.cluster_arn, "service": stack.service}),
        )
        .await
        .unwrap();
    assert_eq!(one.decisions.len(), 3);
}

#[tokio::test]
async fn owner_mode_registers_and_deregisters_its_own_instances() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(2, &[]).await;
    let mapping = format!(
        "{}/{}={}:8080",
        stack.cluster, stack.service, stack.cloudmap_service_id
    );
    let handler = handler(stack.config(&[
        ("SYNC_OWNER_MAPPINGS", &mapping),
        ("SYNC_LOAD_ENABLED", "false"),
    ]));
    let manual = HashMap::from([(keys::AWS_INSTANCE_IPV4.to_owned(), "10.8.8.8".to_owned())]);
    stack.register("by-hand", manual.clone()).await;

    // A RUNNING event registers t0.
    let report = handler
        .handle(stack.event("fargate_running.json", &tasks[0], 4))
        .await
        .unwrap();
    assert_eq!(report.creates(), 1);
    let t0 = stack.attributes(&tasks[0].id).await.unwrap();
    assert_eq!(
        get(&t0, keys::AWS_INSTANCE_IPV4),
        Some(tasks[0].ip.as_str())
    );
    assert_eq!(get(&t0, keys::AWS_INSTANCE_PORT), Some("8080"));
    assert_eq!(get(&t0, keys::LB_OWNER), Some("LAMBDA"));
    assert_eq!(get(&t0, keys::LB_STATE), Some("RUNNING"));
    assert_eq!(get(&t0, keys::AVAILABILITY_ZONE), Some("eu-central-1a"));

    // t1's RUNNING event was lost, t0 stopped without its event: reconciliation repairs both.
    stack.stop_task(&tasks[0]).await;
    let report = handler
        .handle(json!({"action": "reconcile"}))
        .await
        .unwrap();
    assert_eq!(
        (report.creates(), report.deregistrations()),
        (1, 1),
        "{report:#?}"
    );
    assert_eq!(stack.attributes(&tasks[0].id).await, None);
    let t1 = stack.attributes(&tasks[1].id).await.unwrap();
    assert_eq!(get(&t1, keys::LB_OWNER), Some("LAMBDA"));
    assert_eq!(
        get(&t1, keys::AWS_INSTANCE_IPV4),
        Some(tasks[1].ip.as_str())
    );
    assert_eq!(stack.attributes("by-hand").await, Some(manual));

    // t1 stops; its STOPPED event deregisters it, and a late RUNNING event does not bring it back.
    stack.stop_task(&tasks[1]).await;
    let report = handler
        .handle(stack.event("fargate_stopped_by_scheduler.json", &tasks[1], 8))
        .await
        .unwrap();
    assert_eq!(report.deregistrations(), 1);
    handler
        .handle(stack.event("fargate_running.json", &tasks[1], 4))
        .await
        .unwrap();
    assert_eq!(stack.attributes(&tasks[1].id).await, None);
}

#[tokio::test]
async fn reconciliation_writes_load_only_when_it_moved_by_the_step() {
    let stack = Stack::new().await;
    let task = stack.run_tasks(1, &[]).await.remove(0);
    stack.register_like_ecs(&task).await;
    // Whole seconds: moto keeps second precision.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t0 = UNIX_EPOCH + Duration::from_secs(now);
    let minute = Duration::from_secs(60);
    let sdk = MotoServer::shared().sdk_config();

    let mut at = t0;
    let mut load_after = |used: f64| {
        let stack = stack.clone();
        let task = task.clone();
        let sdk = sdk.clone();
        at += minute;
        let clock = Fixed(at);
        async move {
            put_cpu(
                &stack,
                &[(&task, used, 256.0)],
                clock.0 - Duration::from_secs(30),
            )
            .await;
            let handler = handler_on(&sdk, stack.config(&[]), clock);
            let report = handler
                .handle(json!({"action": "reconcile"}))
                .await
                .unwrap();
            let attrs = stack.attributes(&task.id).await.unwrap();
            (report.writes(), attrs.get(keys::LB_LOAD).cloned())
        }
    };
    assert_eq!(load_after(128.0).await, (1, Some("50".into())));
    assert_eq!(
        load_after(140.0).await,
        (0, Some("50".into())),
        "55%: below the step"
    );
    assert_eq!(
        load_after(110.0).await,
        (0, Some("50".into())),
        "43%: below the step"
    );
    assert_eq!(load_after(179.2).await, (1, Some("70".into())));
}

#[tokio::test]
async fn a_throttled_or_failing_cloud_map_fails_the_invocation_without_writing() {
    let stack = Stack::new().await;
    let task = stack.run_tasks(1, &[]).await.remove(0);
    let before = stack.register_like_ecs(&task).await;
    let proxy = FaultProxy::start(MotoServer::shared().endpoint()).unwrap();
    let handler = handler_on(&sdk_via(&proxy.endpoint()), stack.config(&[]), SystemClock);
    let event = stack.event("fargate_running.json", &task, 4);

    proxy.fail("RegisterInstance", Fault::Throttle);
    let error = handler.handle(event.clone()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Retryable, "{error}");
    assert_eq!(stack.attributes(&task.id).await, Some(before.clone()));

    proxy.clear();
    proxy.fail("GetInstance", Fault::ServerError);
    proxy.reset_counts();
    let error = handler.handle(event.clone()).await.unwrap_err();
    assert!(error.is_retryable());
    assert_eq!(
        proxy.count("RegisterInstance"),
        0,
        "no write after a failed read"
    );
    assert_eq!(stack.attributes(&task.id).await, Some(before.clone()));

    // At the edge: the invocation fails (Lambda retries), the metrics say why.
    let mut metrics = Vec::new();
    let error = handler
        .invoke(event.clone(), &mut metrics)
        .await
        .unwrap_err();
    let diagnostic = lambda_runtime::Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "CloudMapSync.aws_retryable");
    assert!(
        diagnostic.error_message.contains("GetInstance"),
        "{}",
        diagnostic.error_message
    );
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(r#""ErrorClass":"aws_retryable""#),
        "{metrics}"
    );
    assert!(metrics.contains(r#""Kind":"task_change""#), "{metrics}");

    // Once Cloud Map answers again, the retried event goes through.
    proxy.clear();
    let report = handler.handle(event).await.unwrap();
    assert_eq!(report.writes(), 1);
    let after = stack.attributes(&task.id).await.unwrap();
    assert_eq!(get(&after, keys::LB_STATE), Some("RUNNING"));

    // A reconciliation whose listing is throttled writes nothing either.
    stack.stop_task(&task).await;
    proxy.fail("ListInstances", Fault::Throttle);
    proxy.reset_counts();
    let error = handler
        .handle(json!({"action": "reconcile"}))
        .await
        .unwrap_err();
    assert!(error.is_retryable());
    assert_eq!(proxy.count("RegisterInstance"), 0);
    assert_eq!(
        get(&stack.attributes(&task.id).await.unwrap(), keys::LB_STATE),
        Some("RUNNING")
    );
}

#[tokio::test]
async fn a_permanent_error_is_logged_and_acknowledged() {
    let stack = Stack::new().await;
    let task = stack.run_tasks(1, &[]).await.remove(0);
    let handler = handler(stack.config(&[]));
    // The cluster was deleted: ECS answers ClusterNotFoundException, which no retry fixes.
    let mut event = stack.event("fargate_running.json", &task, 4);
    event["detail"]["clusterArn"] =
        json!("arn:aws:ecs:eu-central-1:123456789012:cluster/deleted-long-ago");
    let mut metrics = Vec::new();
    let response = handler.invoke(event, &mut metrics).await.unwrap();
    assert_eq!(
        response["handled_errors"],
        json!({"aws_permanent": 1}),
        "{response:#}"
    );
    assert_eq!(response["decisions"], json!([]), "{response:#}");
    // Acknowledged, but not silently: the metrics count it by class.
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(r#""ErrorClass":"aws_permanent""#),
        "{metrics}"
    );
    assert!(metrics.contains(r#""Kind":"task_change""#), "{metrics}");
}

#[tokio::test]
async fn a_value_cloud_map_refuses_is_left_out_and_the_state_still_written() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(2, &[]).await;
    let handler = handler(stack.config(&[]));
    for task in &tasks {
        stack.register_like_ecs(task).await;
    }

    // A capacity provider name with a character Cloud Map refuses.
    let mut odd_capacity = stack.event("fargate_running.json", &tasks[0], 4);
    odd_capacity["detail"]["capacityProviderName"] = json!("FARGATE_SPÖT");
    // A task ARN longer than Cloud Map's 1,024 characters (its ID is an ordinary one).
    let mut long_arn = stack.event("fargate_running.json", &tasks[1], 4);
    let arn = format!(
        "arn:aws:ecs:eu-central-1:123456789012:task/{}/{}",
        "c".repeat(1100),
        tasks[1].id
    );
    long_arn["detail"]["taskArn"] = json!(arn);
    long_arn["resources"] = json!([arn]);

    for (event, task, key, reason) in [
        (odd_capacity, &tasks[0], keys::LB_CAPACITY, "invalid_value"),
        (long_arn, &tasks[1], keys::LB_TASK_ARN, "value_too_long"),
    ] {
        let mut metrics = Vec::new();
        let response = handler.invoke(event, &mut metrics).await.unwrap();
        assert_eq!(
            response["omitted"],
            json!([{"instance": task.id, "key": key, "reason": reason}]),
            "{response:#}"
        );
        assert_eq!(response["decisions"][0]["action"], "update");
        let after = stack.attributes(&task.id).await.unwrap();
        assert_eq!(get(&after, keys::LB_STATE), Some("RUNNING"), "{key}");
        assert_eq!(get(&after, keys::LB_WEIGHT), Some("200"), "{key}");
        assert_eq!(get(&after, key), None);
        let metrics = String::from_utf8(metrics).unwrap();
        let line = metrics
            .lines()
            .find(|l| l.contains("OmittedAttributes"))
            .unwrap_or_else(|| panic!("no OmittedAttributes metric: {metrics}"));
        assert!(line.contains(&format!(r#""Key":"{key}""#)), "{line}");
        assert!(line.contains(&format!(r#""Reason":"{reason}""#)), "{line}");
    }
    // The ordinary event's ARN is written again.
    handler
        .handle(stack.event("fargate_running.json", &tasks[1], 5))
        .await
        .unwrap();
    let after = stack.attributes(&tasks[1].id).await.unwrap();
    assert_eq!(get(&after, keys::LB_TASK_ARN), Some(tasks[1].arn.as_str()));

    // A task ID that no Cloud Map instance can have (over 64 characters) is rejected whole.
    let mut no_instance = stack.event("fargate_running.json", &tasks[0], 6);
    no_instance["detail"]["taskArn"] = json!(format!(
        "arn:aws:ecs:eu-central-1:123456789012:task/{}/{}",
        stack.cluster,
        "f".repeat(65)
    ));
    let response = handler.invoke(no_instance, std::io::sink()).await.unwrap();
    assert_eq!(response["kind"], "rejected");
    assert_eq!(response["note"], "invalid_task_id");
}

#[tokio::test]
async fn the_zone_id_comes_from_the_subnet_once_per_subnet_and_is_never_overwritten() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(3, &[]).await;
    let (subnet, zone_id) = task_subnet().await;
    let proxy = FaultProxy::start(MotoServer::shared().endpoint()).unwrap();
    let handler = handler_on(&sdk_via(&proxy.endpoint()), stack.config(&[]), SystemClock);
    for task in &tasks[..2] {
        stack.register_like_ecs(task).await;
    }
    // An instance that already has a zone ID keeps it.
    let mut other = stack.ecs_attributes(&tasks[2]);
    other.insert(keys::AVAILABILITY_ZONE_ID.into(), "use1-az9".into());
    stack.register(&tasks[2].id, other).await;

    for task in &tasks {
        let event = in_subnet(stack.event("fargate_running.json", task, 4), Some(&subnet));
        let report = handler.handle(event).await.unwrap();
        assert_eq!(report.writes(), 1, "{report:#?}");
        assert!(report.zone_id_unavailable.is_empty(), "{report:#?}");
    }
    assert_eq!(proxy.count("DescribeSubnets"), 1, "one lookup per subnet");
    for task in &tasks[..2] {
        let attrs = stack.attributes(&task.id).await.unwrap();
        assert_eq!(
            get(&attrs, keys::AVAILABILITY_ZONE_ID),
            Some(zone_id.as_str())
        );
    }
    let attrs = stack.attributes(&tasks[2].id).await.unwrap();
    assert_eq!(get(&attrs, keys::AVAILABILITY_ZONE_ID), Some("use1-az9"));
}

/// A task, the subnet its event names, the fault injected into `DescribeSubnets`, the reason
/// expected and the `DescribeSubnets` calls expected.
type ZoneIdCase<'a> = (
    &'a TaskInfo,
    Option<&'a str>,
    Option<Fault>,
    &'static str,
    u64,
);

#[tokio::test]
async fn a_failing_zone_id_lookup_never_blocks_the_state_write_and_is_retried() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(5, &[]).await;
    let (subnet, zone_id) = task_subnet().await;
    let proxy = FaultProxy::start(MotoServer::shared().endpoint()).unwrap();
    let clock = Settable::at(SystemTime::now());
    let handler = handler_on(
        &sdk_via(&proxy.endpoint()),
        stack.config(&[("SYNC_LOAD_ENABLED", "false")]),
        clock.clone(),
    );
    for task in &tasks {
        stack.register_like_ecs(task).await;
    }
    // A task ECS has forgotten, whose event names no ENI (EC2 bridge mode): no subnet anywhere,
    // and its zone name is not translated (ECS does not vouch that it is this account's task).
    let gone = TaskInfo {
        arn: format!(
            "{}/{}",
            tasks[0].arn.rsplit_once('/').unwrap().0,
            "0f0f0f0f0f0f"
        ),
        id: "0f0f0f0f0f0f".into(),
        ip: "10.0.9.9".into(),
    };
    stack.register_like_ecs(&gone).await;

    // Each failure through the handler: the state is written without AVAILABILITY_ZONE_ID, and
    // the write is counted by reason. The fault proxy spells query-protocol faults the awsQuery
    // way (`ErrorResponse/Error/Code`), which the EC2 adapter reads as it reads EC2's own
    // `Response/Errors/Error/Code`: the reasons come from the codes.
    let cases: [ZoneIdCase<'_>; 5] = [
        (&gone, None, None, "task_unknown", 0),
        // moto's own answer, InvalidSubnetID.NotFound.
        (
            &tasks[0],
            Some("subnet-0000deadbeef"),
            None,
            "subnet_not_found",
            1,
        ),
        (
            &tasks[1],
            Some(&subnet),
            Some(Fault::Status {
                status: 403,
                code: "UnauthorizedOperation".into(),
            }),
            "access_denied",
            1,
        ),
        (
            &tasks[2],
            Some(&subnet),
            Some(Fault::Status {
                status: 429,
                code: "RequestLimitExceeded".into(),
            }),
            "throttled",
            1,
        ),
        (
            &tasks[3],
            Some(&subnet),
            Some(Fault::ServerError),
            "unavailable",
            1,
        ),
    ];
    for (task, subnet, fault, reason, lookups) in cases {
        proxy.clear();
        if let Some(fault) = fault {
            proxy.fail("DescribeSubnets", fault);
        }
        // Each case fresh: the previous case's failure is past its retry.
        clock.advance(Duration::from_secs(61));
        proxy.reset_counts();
        let event = in_subnet(stack.event("fargate_running.json", task, 4), subnet);
        let mut metrics = Vec::new();
        let response = handler.invoke(event, &mut metrics).await.unwrap();
        assert_eq!(
            response["decisions"][0]["action"], "update",
            "{reason}: {response:#}"
        );
        assert_eq!(
            response["zone_id_unavailable"],
            json!({reason: 1}),
            "{response:#}"
        );
        assert_eq!(
            proxy.count("DescribeSubnets"),
            lookups,
            "{reason}: one attempt per lookup (a later event or reconciliation retries it)"
        );
        let attrs = stack.attributes(&task.id).await.unwrap();
        assert_eq!(get(&attrs, keys::LB_STATE), Some("RUNNING"), "{reason}");
        assert_eq!(get(&attrs, keys::AVAILABILITY_ZONE_ID), None, "{reason}");
        let metrics = String::from_utf8(metrics).unwrap();
        assert!(
            metrics.lines().any(|l| l.contains("ZoneIdUnavailable")
                && l.contains(&format!(r#""Reason":"{reason}""#))),
            "{reason}: {metrics}"
        );
    }

    // Within the retry interval, a failed subnet is not asked again (ServerError is still
    // injected): the next event costs its 3 calls and writes without the zone ID.
    proxy.reset_counts();
    let event = in_subnet(
        stack.event("fargate_running.json", &tasks[4], 4),
        Some(&subnet),
    );
    let report = handler.handle(event).await.unwrap();
    assert_eq!(proxy.count("DescribeSubnets"), 0);
    assert_eq!(report.zone_id_unavailable.get("unavailable"), Some(&1));
    assert_eq!(report.writes(), 1);

    // Past it, EC2 answering again: the reconciliation looks the subnet up once and fills the
    // zone ID in wherever it is missing.
    proxy.clear();
    clock.advance(Duration::from_secs(61));
    proxy.reset_counts();
    let report = handler
        .handle(json!({"action": "reconcile"}))
        .await
        .unwrap();
    assert_eq!(proxy.count("DescribeSubnets"), 1, "{report:#?}");
    for task in &tasks {
        let attrs = stack.attributes(&task.id).await.unwrap();
        assert_eq!(
            get(&attrs, keys::AVAILABILITY_ZONE_ID),
            Some(zone_id.as_str()),
            "{}",
            task.id
        );
    }
}

#[tokio::test]
async fn tasks_without_a_subnet_get_their_zone_id_from_the_zone_name() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(5, &[]).await;
    let proxy = FaultProxy::start(MotoServer::shared().endpoint()).unwrap();
    let clock = Settable::at(SystemTime::now());
    // DescribeTasks as AWS describes bridge- and host-mode tasks: without an ENI.
    let handler = networked_handler(
        &sdk_via(&proxy.endpoint()),
        stack.config(&[("SYNC_LOAD_ENABLED", "false")]),
        clock.clone(),
        Networked::bridge,
    );
    for task in &tasks {
        stack.register_like_ecs(task).await;
    }
    // What moto's EC2 says each zone's ID is, through DescribeSubnets: the name map
    // (DescribeAvailabilityZones) must agree with it.
    let (_, zone_1b) = subnet_in("eu-central-1b").await;
    let (subnet_1c, zone_1c) = subnet_in("eu-central-1c").await;

    // An EC2 bridge-mode task's real event (no ENI; zone eu-central-1b), a Managed Instances
    // task in host mode (its event without the ENI; zone eu-central-1c): one
    // DescribeAvailabilityZones for both, no DescribeSubnets.
    let bridge = stack.event("ec2_bridge_running.json", &tasks[0], 2);
    let host_mode = in_subnet(
        stack.event("managed_instances_running.json", &tasks[1], 3),
        None,
    );
    for (event, task, zone_id) in [
        (bridge, &tasks[0], &zone_1b),
        (host_mode, &tasks[1], &zone_1c),
    ] {
        let report = handler.handle(event).await.unwrap();
        assert_eq!(report.writes(), 1, "{report:#?}");
        assert!(report.zone_id_unavailable.is_empty(), "{report:#?}");
        let attrs = stack.attributes(&task.id).await.unwrap();
        assert_eq!(
            get(&attrs, keys::AVAILABILITY_ZONE_ID),
            Some(zone_id.as_str())
        );
    }
    assert_eq!(
        proxy.count("DescribeAvailabilityZones"),
        1,
        "one per account and region"
    );
    assert_eq!(proxy.count("DescribeSubnets"), 0);

    // A Managed Instances task in awsvpc mode: its subnet names the zone.
    proxy.reset_counts();
    let awsvpc = in_subnet(
        stack.event("managed_instances_running.json", &tasks[2], 3),
        Some(&subnet_1c),
    );
    let report = handler.handle(awsvpc).await.unwrap();
    assert_eq!(report.writes(), 1, "{report:#?}");
    let attrs = stack.attributes(&tasks[2].id).await.unwrap();
    assert_eq!(
        get(&attrs, keys::AVAILABILITY_ZONE_ID),
        Some(zone_1c.as_str())
    );
    assert_eq!(get(&attrs, keys::LB_CAPACITY), Some("managed-instances-cp"));
    assert_eq!(proxy.count("DescribeSubnets"), 1);

    // Throttled or denied, the state is written without the zone ID and counted; the next
    // reconciliation past the retry interval fills it in (moto's DescribeTasks names no zone:
    // the name ECS wrote, AVAILABILITY_ZONE, stands in).
    let fresh = networked_handler(
        &sdk_via(&proxy.endpoint()),
        stack.config(&[("SYNC_LOAD_ENABLED", "false")]),
        clock.clone(),
        Networked::bridge,
    );
    for (task, fault, reason) in [
        (&tasks[3], Fault::Throttle, "throttled"),
        (
            &tasks[4],
            Fault::Status {
                status: 403,
                code: "UnauthorizedOperation".into(),
            },
            "access_denied",
        ),
    ] {
        proxy.fail("DescribeAvailabilityZones", fault);
        clock.advance(Duration::from_secs(61));
        let event = stack.event("ec2_bridge_running.json", task, 2);
        let report = fresh.handle(event).await.unwrap();
        assert_eq!(report.writes(), 1, "{reason}: {report:#?}");
        assert_eq!(
            report.zone_id_unavailable.get(reason),
            Some(&1),
            "{report:#?}"
        );
        let attrs = stack.attributes(&task.id).await.unwrap();
        assert_eq!(get(&attrs, keys::LB_STATE), Some("RUNNING"), "{reason}");
        assert_eq!(get(&attrs, keys::AVAILABILITY_ZONE_ID), None, "{reason}");
    }
    proxy.clear();
    clock.advance(Duration::from_secs(61));
    proxy.reset_counts();
    fresh.handle(json!({"action": "reconcile"})).await.unwrap();
    assert_eq!(
        proxy.count("DescribeAvailabilityZones"),
        1,
        "one for both tasks"
    );
    // ECS registered the instances in eu-central-1a (`register_like_ecs`).
    let (_, zone_1a) = subnet_in("eu-central-1a").await;
    for task in &tasks[3..] {
        let attrs = stack.attributes(&task.id).await.unwrap();
        assert_eq!(
            get(&attrs, keys::AVAILABILITY_ZONE_ID),
            Some(zone_1a.as_str())
        );
    }
}

/// The event with its ENI in an IPv6-only subnet: `privateIPv6Address` instead of
/// `privateIPv4Address`, and the container interface's `ipv6Address` likewise.
fn ipv6_only(mut event: serde_json::Value, ipv6: std::net::Ipv6Addr) -> serde_json::Value {
    let detail = &mut event["detail"];
    for attachment in detail["attachments"].as_array_mut().into_iter().flatten() {
        for pair in attachment["details"].as_array_mut().into_iter().flatten() {
            if pair["name"] == "privateIPv4Address" {
                *pair = json!({"name": "privateIPv6Address", "value": ipv6.to_string()});
            }
        }
    }
    for container in detail["containers"].as_array_mut().into_iter().flatten() {
        for interface in container["networkInterfaces"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            interface
                .as_object_mut()
                .unwrap()
                .remove("privateIpv4Address");
            interface["ipv6Address"] = json!(ipv6.to_string());
        }
    }
    event
}

#[tokio::test]
async fn owner_mode_registers_ipv6_only_tasks_and_reconciliation_pairs_by_ipv6() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(2, &[]).await;
    let ipv6 = |task: &TaskInfo| common::ipv6_of(task.ip.parse().unwrap());
    let mapping = format!(
        "{}/{}={}:8080",
        stack.cluster, stack.service, stack.cloudmap_service_id
    );
    // DescribeTasks as AWS describes tasks in an IPv6-only subnet (moto gives every task IPv4).
    let handler = networked_handler(
        &MotoServer::shared().sdk_config(),
        stack.config(&[
            ("SYNC_OWNER_MAPPINGS", &mapping),
            ("SYNC_LOAD_ENABLED", "false"),
        ]),
        SystemClock,
        Networked::ipv6_only,
    );

    // The event of an IPv6-only ENI registers the task by its IPv6 address alone.
    let event = ipv6_only(
        stack.event("fargate_running.json", &tasks[0], 4),
        ipv6(&tasks[0]),
    );
    let report = handler.handle(event).await.unwrap();
    assert_eq!(report.creates(), 1, "{report:#?}");
    let t0 = stack.attributes(&tasks[0].id).await.unwrap();
    assert_eq!(
        get(&t0, "AWS_INSTANCE_IPV6"),
        Some(ipv6(&tasks[0]).to_string().as_str())
    );
    assert_eq!(get(&t0, keys::AWS_INSTANCE_IPV4), None);
    assert_eq!(get(&t0, keys::AWS_INSTANCE_PORT), Some("8080"));
    assert_eq!(get(&t0, keys::LB_OWNER), Some("LAMBDA"));
    assert_eq!(get(&t0, keys::LB_STATE), Some("RUNNING"));

    // An instance someone registered for t1 under another ID, by its IPv6 address only:
    // reconciliation pairs it with t1 by that address instead of registering t1 again.
    let by_hand = HashMap::from([
        ("AWS_INSTANCE_IPV6".to_owned(), ipv6(&tasks[1]).to_string()),
        (keys::AWS_INSTANCE_PORT.to_owned(), "8080".to_owned()),
        (keys::ECS_SERVICE_NAME.to_owned(), stack.service.clone()),
        (keys::ECS_CLUSTER_NAME.to_owned(), stack.cluster.clone()),
    ]);
    stack.register("t1-by-hand", by_hand).await;
    let report = handler
        .handle(json!({"action": "reconcile"}))
        .await
        .unwrap();
    assert_eq!(report.creates(), 0, "{report:#?}");
    assert_eq!(stack.attributes(&tasks[1].id).await, None);
    let t1 = stack.attributes("t1-by-hand").await.unwrap();
    assert!(
        get(&t1, keys::LB_TASK_ARN).is_some_and(|arn| arn.ends_with(&tasks[1].id)),
        "{t1:?}"
    );
    assert_eq!(get(&t1, keys::LB_STATE), Some("RUNNING"));
}

#[tokio::test]
async fn every_cloud_map_call_names_the_service_by_its_arn() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(2, &[]).await;
    let recorded = Recorded::default();
    // Enrich mode: the service as ECS's registry ARN names it.
    let enrich = recorded_handler(
        stack.config(&[("SYNC_LOAD_ENABLED", "false")]),
        recorded.clone(),
    );
    stack.register_like_ecs(&tasks[0]).await;
    let report = enrich
        .handle(stack.event("fargate_running.json", &tasks[0], 4))
        .await
        .unwrap();
    assert_eq!(report.writes(), 1, "{report:#?}");
    // Owner mode, mapped by ARN: registered, deregistered, reconciled.
    let by_arn = format!(
        "{}/{}={}:8080",
        stack.cluster, stack.service, stack.cloudmap_service_arn
    );
    let owner = recorded_handler(
        stack.config(&[
            ("SYNC_OWNER_MAPPINGS", &by_arn),
            ("SYNC_LOAD_ENABLED", "false"),
        ]),
        recorded.clone(),
    );
    let report = owner
        .handle(stack.event("fargate_running.json", &tasks[1], 4))
        .await
        .unwrap();
    assert_eq!(report.creates(), 1, "{report:#?}");
    stack.stop_task(&tasks[1]).await;
    let report = owner
        .handle(stack.event("fargate_stopped_by_scheduler.json", &tasks[1], 8))
        .await
        .unwrap();
    assert_eq!(report.deregistrations(), 1, "{report:#?}");
    owner.handle(json!({"action": "reconcile"})).await.unwrap();

    let calls = recorded.calls();
    let operations: std::collections::BTreeSet<&str> =
        calls.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(
        operations,
        [
            "DeregisterInstance",
            "GetInstance",
            "ListInstances",
            "RegisterInstance"
        ]
        .into()
    );
    for (operation, body) in &calls {
        assert_eq!(
            body["ServiceId"], stack.cloudmap_service_arn,
            "{operation}: {body}"
        );
        // Only discovery takes an owner account; these operations have none in their model.
        assert!(body.get("OwnerAccount").is_none(), "{operation}: {body}");
    }

    // A service of a namespace another account (111122223333) shares: the same form, its ARN,
    // sent as configured. moto has no such account, so it answers ServiceNotFound, a permanent
    // error the function logs and acknowledges (AWS, without the share, answers an error too).
    let shared = format!(
        "arn:aws:servicediscovery:{}:111122223333:service/srv-sharedbyowner",
        local_stack::REGION
    );
    let recorded = Recorded::default();
    let consumer = recorded_handler(
        stack.config(&[
            (
                "SYNC_OWNER_MAPPINGS",
                &format!("{}/{}={shared}:8080", stack.cluster, stack.service),
            ),
            ("SYNC_LOAD_ENABLED", "false"),
        ]),
        recorded.clone(),
    );
    let report = consumer
        .handle(stack.event("fargate_running.json", &tasks[0], 4))
        .await
        .unwrap();
    assert_eq!(report.writes(), 0, "{report:#?}");
    assert_eq!(
        report.handled_errors.values().sum::<u32>(),
        1,
        "{report:#?}"
    );
    let calls = recorded.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, "GetInstance");
    assert_eq!(calls[0].1["ServiceId"], shared.as_str());
    assert_eq!(calls[0].1["InstanceId"], tasks[0].id.as_str());
}

#[tokio::test]
async fn bad_and_foreign_payloads_are_acknowledged_without_aws_calls() {
    let stack = Stack::new().await;
    let proxy = FaultProxy::start(MotoServer::shared().endpoint()).unwrap();
    let handler = handler_on(&sdk_via(&proxy.endpoint()), stack.config(&[]), SystemClock);
    let cases = [
        (
            fixture_json("missing_task_arn.json"),
            InvocationKind::Rejected,
            Some("missing_task_arn"),
        ),
        (
            fixture_json("standalone_task.json"),
            InvocationKind::TaskChange,
            Some("standalone_task"),
        ),
        (
            fixture_json("service_action.json"),
            InvocationKind::Ignored,
            None,
        ),
        (
            json!("hello"),
            InvocationKind::Rejected,
            Some("not_an_object"),
        ),
        (
            json!({"action": "explode"}),
            InvocationKind::Rejected,
            Some("unknown_action"),
        ),
        (
            json!({"source": "aws.ecs", "detail-type": "ECS Task State Change", "detail": [1]}),
            InvocationKind::Rejected,
            Some("malformed_detail"),
        ),
    ];
    for (payload, kind, note) in cases {
        let mut metrics = Vec::new();
        let response = handler.invoke(payload.clone(), &mut metrics).await.unwrap();
        assert_eq!(response["kind"], json!(kind), "{payload}");
        assert_eq!(response["note"].as_str(), note, "{payload}");
        let first: serde_json::Value =
            serde_json::from_str(String::from_utf8(metrics).unwrap().lines().next().unwrap())
                .unwrap();
        assert_eq!(
            first["Rejected"],
            u32::from(kind == InvocationKind::Rejected)
        );
    }
    assert!(proxy.counts().is_empty(), "{:?}", proxy.counts());
}

#[tokio::test]
async fn moto_lists_only_the_services_tasks() {
    // The local stack's ListTasks(serviceName) fix that reconciliation relies on.
    let stack = Stack::new().await;
    let ours = stack.run_tasks(2, &[]).await;
    let other = Stack {
        service: "other".into(),
        ..stack.clone()
    };
    other.run_tasks(1, &[]).await;
    let listed = MotoServer::shared()
        .ecs()
        .list_tasks()
        .cluster(&stack.cluster)
        .service_name(&stack.service)
        .send()
        .await
        .unwrap();
    let mut listed: Vec<&str> = listed.task_arns().iter().map(String::as_str).collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = ours.iter().map(|t| t.arn.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);
}
