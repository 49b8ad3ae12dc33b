//! Unit and property tests of the decisions.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudmap_balancer::contract::{
    InstanceAttributes, LbHealth, LbState, Load, Weight, format_rfc3339, keys,
};
use proptest::prelude::*;

use super::*;
use crate::events::TaskChange;
use crate::task::{
    Described, DescribedTask, DesiredStatus, Group, LastStatus, Lifecycle, TaskFacts, TaskRef,
    WeightTag,
};

const ARN: &str = "arn:aws:ecs:eu-central-1:123456789012:task/prod/0a1b2c3d";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_356_600)
}

fn task() -> TaskRef {
    TaskRef::new(ARN, "prod").unwrap()
}

fn lifecycle(last: LastStatus, desired: DesiredStatus) -> Lifecycle {
    Lifecycle { last, desired }
}

fn event_facts() -> TaskFacts {
    TaskFacts {
        cpu_units: Some(512),
        memory_mib: Some(1024),
        zone: Some("eu-central-1b".into()),
        capacity: Some("FARGATE".into()),
        ipv4: Some([10, 0, 2, 9].into()),
        ..TaskFacts::default()
    }
}

fn change(version: u64, l: Lifecycle) -> TaskChange {
    TaskChange {
        task: task(),
        group: Group::Service("echo".into()),
        version,
        lifecycle: Some(l),
        stop_code: None,
        facts: event_facts(),
        time: None,
    }
}

/// What moto's DescribeTasks gives: status and address, no version, size, zone or health.
fn described(l: Lifecycle) -> Described {
    Described::Found(Box::new(DescribedTask {
        task: task(),
        lifecycle: Some(l),
        version: None,
        health: None,
        weight_tag: None,
        facts: TaskFacts {
            ipv4: Some([10, 0, 2, 9].into()),
            ..TaskFacts::default()
        },
        family: Some("echo".into()),
    }))
}

fn with(d: Described, f: impl FnOnce(&mut DescribedTask)) -> Described {
    match d {
        Described::Found(mut task) => {
            f(&mut task);
            Described::Found(task)
        }
        Described::Missing => Described::Missing,
    }
}

/// What ECS registers, plus a user's own attribute.
fn ecs_instance() -> HashMap<String, String> {
    [
        (keys::AWS_INSTANCE_IPV4, "10.0.2.9"),
        (keys::AWS_INSTANCE_PORT, "50051"),
        (keys::AVAILABILITY_ZONE, "eu-central-1b"),
        (keys::REGION, "eu-central-1"),
        (keys::ECS_CLUSTER_NAME, "prod"),
        (keys::ECS_SERVICE_NAME, "echo"),
        (keys::ECS_TASK_DEFINITION_FAMILY, "echo"),
        ("team", "payments"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn ctx(mode: Mode, policy: &Policy) -> Context<'_> {
    Context {
        mode,
        service: "echo",
        policy,
        now: now(),
    }
}

fn written(decision: &Decision) -> HashMap<String, String> {
    match &decision.action {
        Action::Register { attributes, .. } => attributes.as_map().clone().into_iter().collect(),
        other => panic!("expected a write, got {other:?}"),
    }
}

use DesiredStatus::{Running as DRunning, Stopped as DStopped};
use LastStatus::*;

#[test]
fn running_event_enriches_and_keeps_every_other_key() {
    let policy = Policy::default();
    let existing = ecs_instance();
    let l = lifecycle(Running, DRunning);
    let d = on_event(
        &ctx(Mode::Enrich, &policy),
        &change(4, l),
        &described(l),
        Some(&existing),
    )
    .unwrap();
    assert_eq!((d.old_state, d.new_state), (None, Some(LbState::Running)));
    let attrs = written(&d);
    for (key, value) in &existing {
        assert_eq!(attrs.get(key), Some(value), "{key} kept");
    }
    let seen = InstanceAttributes::decode(&attrs);
    assert_eq!(seen.state, Some(LbState::Running));
    assert_eq!(seen.health, LbHealth::Unknown);
    assert_eq!(seen.weight, Some(Weight::saturating(200)));
    assert_eq!((seen.cpu_units, seen.memory_mib), (Some(512), Some(1024)));
    assert_eq!(seen.capacity.as_deref(), Some("FARGATE"));
    assert_eq!(seen.task_arn.as_deref(), Some(ARN));
    assert_eq!(seen.task_version, Some(4));
    assert_eq!(seen.schema, Some(1));
    assert!(!seen.lambda_owned);
    assert_eq!(attrs[keys::LB_UPDATED_AT], format_rfc3339(now()));
}

#[test]
fn missing_zone_and_address_are_filled_in_but_never_overwritten() {
    let policy = Policy::default();
    let l = lifecycle(Running, DRunning);
    let mut bare = ecs_instance();
    bare.remove(keys::AVAILABILITY_ZONE);
    bare.remove(keys::AWS_INSTANCE_IPV4);
    let attrs = written(
        &on_event(
            &ctx(Mode::Enrich, &policy),
            &change(2, l),
            &described(l),
            Some(&bare),
        )
        .unwrap(),
    );
    assert_eq!(attrs[keys::AVAILABILITY_ZONE], "eu-central-1b");
    assert_eq!(attrs[keys::AWS_INSTANCE_IPV4], "10.0.2.9");

    let mut other = ecs_instance();
    other.insert(keys::AVAILABILITY_ZONE.into(), "eu-central-1c".into());
    let attrs = written(
        &on_event(
            &ctx(Mode::Enrich, &policy),
            &change(2, l),
            &described(l),
            Some(&other),
        )
        .unwrap(),
    );
    assert_eq!(attrs[keys::AVAILABILITY_ZONE], "eu-central-1c");
}

#[test]
fn running_since_is_started_at_else_the_running_events_time_and_the_earliest_stays() {
    let policy = Policy::default();
    let c = ctx(Mode::Enrich, &policy);
    let running = lifecycle(Running, DRunning);
    let started = now() - Duration::from_secs(30);
    let running_since = |d: &Decision| written(d).get(keys::LB_RUNNING_SINCE).cloned();

    // No startedAt anywhere (old event, moto): the RUNNING event's own time.
    let mut event = change(4, running);
    event.time = Some(now() - Duration::from_secs(29));
    let first = on_event(&c, &event, &described(running), Some(&ecs_instance())).unwrap();
    assert_eq!(
        running_since(&first),
        Some(format_rfc3339(now() - Duration::from_secs(29)))
    );

    // DescribeTasks knows startedAt, which is earlier: it wins.
    let knows = with(described(running), |t| t.facts.started_at = Some(started));
    let mut health = change(5, running);
    health.time = Some(now());
    let d = on_event(&c, &health, &knows, Some(&written(&first))).unwrap();
    assert_eq!(running_since(&d), Some(format_rfc3339(started)));

    // A later event's time never moves it forward.
    let current = written(&d);
    let d = on_event(&c, &health, &described(running), Some(&current)).unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::Unchanged));

    // A PENDING event's time is not a candidate; nor is the time of a reconciliation.
    let mut pending = change(2, lifecycle(Pending, DRunning));
    pending.time = Some(now() - Duration::from_secs(60));
    let d = on_event(
        &c,
        &pending,
        &described(lifecycle(Pending, DRunning)),
        Some(&ecs_instance()),
    )
    .unwrap();
    assert_eq!(running_since(&d), None);
    let d = on_reconcile(
        &c,
        &task(),
        &described(running),
        Some(&ecs_instance()),
        Measured::NotMeasured,
    )
    .unwrap();
    assert_eq!(running_since(&d), None);
    let d = on_reconcile(
        &c,
        &task(),
        &knows,
        Some(&ecs_instance()),
        Measured::NotMeasured,
    )
    .unwrap();
    assert_eq!(running_since(&d), Some(format_rfc3339(started)));
}

#[test]
fn health_and_weight_come_from_describe_tasks() {
    let policy = Policy::default();
    let l = lifecycle(Running, DRunning);
    let unhealthy = with(described(l), |t| {
        t.health = Some(LbHealth::Unhealthy);
        t.weight_tag = Some(WeightTag::Valid(Weight::saturating(7)));
    });
    let attrs = written(
        &on_event(
            &ctx(Mode::Enrich, &policy),
            &change(3, l),
            &unhealthy,
            Some(&ecs_instance()),
        )
        .unwrap(),
    );
    assert_eq!(attrs[keys::LB_HEALTH], "UNHEALTHY");
    assert_eq!(attrs[keys::LB_WEIGHT], "7");

    let bad_tag = with(described(l), |t| {
        t.weight_tag = Some(WeightTag::Invalid("x".into()));
    });
    let attrs = written(
        &on_event(
            &ctx(Mode::Enrich, &policy),
            &change(3, l),
            &bad_tag,
            Some(&ecs_instance()),
        )
        .unwrap(),
    );
    assert_eq!(attrs[keys::LB_WEIGHT], "200", "the formula, 512 units");
}

#[test]
fn lifecycle_mapping_through_events() {
    let policy = Policy::default();
    let cases = [
        (lifecycle(Provisioning, DRunning), LbState::Starting),
        (lifecycle(Pending, DRunning), LbState::Starting),
        (lifecycle(Activating, DRunning), LbState::Starting),
        (lifecycle(Running, DRunning), LbState::Running),
        // A Spot interruption warning, a scale-in, a deployment: still running, told to stop.
        (lifecycle(Running, DStopped), LbState::Draining),
        (lifecycle(Deactivating, DStopped), LbState::Stopped),
        (lifecycle(Stopping, DStopped), LbState::Stopped),
        (lifecycle(Deprovisioning, DStopped), LbState::Stopped),
        (lifecycle(Stopped, DStopped), LbState::Stopped),
    ];
    for (l, state) in cases {
        let d = on_event(
            &ctx(Mode::Enrich, &policy),
            &change(5, l),
            &described(l),
            Some(&ecs_instance()),
        )
        .unwrap();
        assert_eq!(written(&d)[keys::LB_STATE], state.as_str(), "{l:?}");
    }
}

#[test]
fn stale_and_duplicate_events_are_skipped() {
    let policy = Policy::default();
    let c = ctx(Mode::Enrich, &policy);
    let running = lifecycle(Running, DRunning);
    let first = written(
        &on_event(
            &c,
            &change(4, running),
            &described(running),
            Some(&ecs_instance()),
        )
        .unwrap(),
    );
    // The same event again, and late events of earlier states.
    for (version, l) in [
        (4, running),
        (2, lifecycle(Pending, DRunning)),
        (1, lifecycle(Provisioning, DRunning)),
    ] {
        let d = on_event(&c, &change(version, l), &described(running), Some(&first)).unwrap();
        assert_eq!(d.action, Action::Skip(SkipReason::Stale), "v{version}");
    }
    // A newer event that changes nothing (a health event while health stays unknown).
    let d = on_event(&c, &change(5, running), &described(running), Some(&first)).unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::Unchanged));
}

#[test]
fn a_version_only_change_writes_nothing_and_the_first_version_of_a_state_is_kept() {
    let policy = Policy::default();
    let c = ctx(Mode::Enrich, &policy);
    let stopping = |last| lifecycle(last, DStopped);
    let first = written(
        &on_event(
            &c,
            &change(7, stopping(Deactivating)),
            &described(stopping(Deactivating)),
            Some(&ecs_instance()),
        )
        .unwrap(),
    );
    assert_eq!(first[keys::LB_TASK_VERSION], "7");
    for (version, last) in [(8, Stopping), (9, Deprovisioning), (10, Stopped)] {
        let d = on_event(
            &c,
            &change(version, stopping(last)),
            &described(stopping(last)),
            Some(&first),
        )
        .unwrap();
        assert_eq!(d.action, Action::Skip(SkipReason::Unchanged), "{last:?}");
    }

    // Delivered out of order: STOPPING first, then DEACTIVATING. The earlier event of the same
    // state lowers the label to where in-order delivery puts it.
    let late = written(
        &on_event(
            &c,
            &change(8, stopping(Stopping)),
            &described(stopping(Stopped)),
            Some(&ecs_instance()),
        )
        .unwrap(),
    );
    assert_eq!(late[keys::LB_TASK_VERSION], "8");
    let d = on_event(
        &c,
        &change(7, stopping(Deactivating)),
        &described(stopping(Stopped)),
        Some(&late),
    )
    .unwrap();
    assert_eq!(without_time(written(&d)), without_time(first));
}

fn without_time(mut attributes: HashMap<String, String>) -> HashMap<String, String> {
    attributes.remove(keys::LB_UPDATED_AT);
    attributes
}

#[test]
fn a_late_event_cannot_undo_what_describe_tasks_already_knows() {
    let policy = Policy::default();
    let late = change(3, lifecycle(Running, DRunning));
    let now_stopped = described(lifecycle(Stopped, DStopped));
    let d = on_event(
        &ctx(Mode::Enrich, &policy),
        &late,
        &now_stopped,
        Some(&ecs_instance()),
    )
    .unwrap();
    let stopped = written(&d);
    assert_eq!(stopped[keys::LB_STATE], "STOPPED");
    // moto's DescribeTasks gives no version: STOPPED's first version is not known yet.
    assert!(!stopped.contains_key(keys::LB_TASK_VERSION));

    // Nor can it undo a state written before, when DescribeTasks no longer knows the task.
    let d = on_event(
        &ctx(Mode::Enrich, &policy),
        &change(4, lifecycle(Running, DRunning)),
        &Described::Missing,
        Some(&stopped),
    )
    .unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::Stale));

    // STOPPED's own event labels it.
    let d = on_event(
        &ctx(Mode::Enrich, &policy),
        &change(6, lifecycle(Deactivating, DStopped)),
        &Described::Missing,
        Some(&stopped),
    )
    .unwrap();
    assert_eq!(written(&d)[keys::LB_TASK_VERSION], "6");
}

#[test]
fn a_late_event_keeps_a_tag_weight_when_describe_tasks_no_longer_knows_the_task() {
    let policy = Policy::default();
    let c = ctx(Mode::Enrich, &policy);
    let running = lifecycle(Running, DRunning);
    let tagged = with(described(running), |t| {
        t.weight_tag = Some(WeightTag::Valid(Weight::saturating(7)));
    });
    let current =
        written(&on_event(&c, &change(3, running), &tagged, Some(&ecs_instance())).unwrap());
    assert_eq!(current[keys::LB_WEIGHT], "7");

    // The task is gone from ECS, with it its tags; the event still carries its CPU size (512
    // units, 200 by the formula), which must not replace the tag's weight.
    let d = on_event(
        &c,
        &change(4, lifecycle(Stopped, DStopped)),
        &Described::Missing,
        Some(&current),
    )
    .unwrap();
    let stopped = written(&d);
    assert_eq!(stopped[keys::LB_STATE], "STOPPED");
    assert_eq!(stopped[keys::LB_WEIGHT], "7");

    // Reconciliation follows the same rule.
    let d = on_reconcile(
        &c,
        &task(),
        &Described::Missing,
        Some(&current),
        Measured::NotMeasured,
    )
    .unwrap();
    assert_eq!(written(&d)[keys::LB_WEIGHT], "7");
}

#[test]
fn an_event_decision_carries_the_stop_code_for_the_log() {
    let policy = Policy::default();
    let c = ctx(Mode::Enrich, &policy);
    let draining = lifecycle(Running, DStopped);
    let mut spot = change(5, draining);
    spot.stop_code = Some("SpotInterruption".into());
    let d = on_event(&c, &spot, &described(draining), Some(&ecs_instance())).unwrap();
    assert_eq!(d.stop_code.as_deref(), Some("SpotInterruption"));
    let skipped = on_event(&c, &spot, &described(draining), Some(&written(&d))).unwrap();
    assert_eq!(skipped.action, Action::Skip(SkipReason::Stale));
    assert_eq!(skipped.stop_code.as_deref(), Some("SpotInterruption"));

    let d = on_reconcile(
        &c,
        &task(),
        &described(draining),
        Some(&ecs_instance()),
        Measured::NotMeasured,
    )
    .unwrap();
    assert_eq!(d.stop_code, None);
}

#[test]
fn enrich_mode_never_creates() {
    let policy = Policy::default();
    let l = lifecycle(Running, DRunning);
    let d = on_event(
        &ctx(Mode::Enrich, &policy),
        &change(2, l),
        &described(l),
        None,
    )
    .unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::InstanceNotFound));
    let d = on_reconcile(
        &ctx(Mode::Enrich, &policy),
        &task(),
        &described(l),
        None,
        Measured::NotMeasured,
    )
    .unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::InstanceNotFound));
}

#[test]
fn an_instance_of_another_task_is_left_alone() {
    let policy = Policy::default();
    let l = lifecycle(Running, DRunning);
    let mut other = ecs_instance();
    other.insert(
        keys::LB_TASK_ARN.into(),
        "arn:aws:ecs:eu-central-1:1:task/prod/ffff".into(),
    );
    let d = on_event(
        &ctx(Mode::Enrich, &policy),
        &change(2, l),
        &described(l),
        Some(&other),
    )
    .unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::OtherTask));
}

#[test]
fn owner_mode_registers_on_running_and_deregisters_only_its_own() {
    let policy = Policy::default();
    let owner = Mode::Owner { port: 8080 };
    let pending = lifecycle(Pending, DRunning);
    let d = on_event(
        &ctx(owner, &policy),
        &change(2, pending),
        &described(pending),
        None,
    )
    .unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::NotRunning));

    let running = lifecycle(Running, DRunning);
    let d = on_event(
        &ctx(owner, &policy),
        &change(3, running),
        &described(running),
        None,
    )
    .unwrap();
    assert!(matches!(d.action, Action::Register { create: true, .. }));
    let attrs = written(&d);
    assert_eq!(attrs[keys::AWS_INSTANCE_IPV4], "10.0.2.9");
    assert_eq!(attrs[keys::AWS_INSTANCE_PORT], "8080");
    assert_eq!(attrs[keys::AVAILABILITY_ZONE], "eu-central-1b");
    assert_eq!(attrs[keys::ECS_CLUSTER_NAME], "prod");
    assert_eq!(attrs[keys::ECS_SERVICE_NAME], "echo");
    assert_eq!(attrs[keys::LB_OWNER], "LAMBDA");

    let stopped = lifecycle(Stopped, DStopped);
    let d = on_event(
        &ctx(owner, &policy),
        &change(6, stopped),
        &described(stopped),
        Some(&attrs),
    )
    .unwrap();
    assert_eq!(
        d.action,
        Action::Deregister(DeregisterReason::OwnedTaskStopped)
    );

    // An instance someone else registered is marked STOPPED, never deregistered.
    let d = on_event(
        &ctx(owner, &policy),
        &change(6, stopped),
        &described(stopped),
        Some(&ecs_instance()),
    )
    .unwrap();
    assert_eq!(written(&d)[keys::LB_STATE], "STOPPED");
    assert!(!written(&d).contains_key(keys::LB_OWNER));

    // A late RUNNING event after the deregistration does not bring it back.
    let d = on_event(
        &ctx(owner, &policy),
        &change(4, running),
        &described(stopped),
        None,
    )
    .unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::NotRunning));
    let d = on_event(
        &ctx(owner, &policy),
        &change(4, running),
        &Described::Missing,
        None,
    )
    .unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::NotRunning));
}

#[test]
fn owner_mode_needs_an_address() {
    let policy = Policy::default();
    let running = lifecycle(Running, DRunning);
    let mut event = change(3, running);
    event.facts.ipv4 = None;
    let no_ip = with(described(running), |t| t.facts.ipv4 = None);
    let d = on_event(&ctx(Mode::Owner { port: 1 }, &policy), &event, &no_ip, None).unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::NoAddress));
}

#[test]
fn owner_mode_registers_an_ipv6_only_task_by_its_ipv6_address() {
    let policy = Policy::default();
    let running = lifecycle(Running, DRunning);
    let ipv6: std::net::Ipv6Addr = "2a05:d014:9f1:8c02::7".parse().unwrap();
    let mut event = change(3, running);
    event.facts.ipv4 = None;
    event.facts.ipv6 = Some(ipv6);
    let ipv6_only = with(described(running), |t| {
        t.facts.ipv4 = None;
        t.facts.ipv6 = Some(ipv6);
    });
    let d = on_event(
        &ctx(Mode::Owner { port: 8080 }, &policy),
        &event,
        &ipv6_only,
        None,
    )
    .unwrap();
    assert!(
        matches!(d.action, Action::Register { create: true, .. }),
        "{d:?}"
    );
    let attributes = written(&d);
    assert_eq!(attributes[AWS_INSTANCE_IPV6], "2a05:d014:9f1:8c02::7");
    assert!(!attributes.contains_key(keys::AWS_INSTANCE_IPV4));
    assert_eq!(attributes[keys::AWS_INSTANCE_PORT], "8080");

    // Dual-stack: both addresses.
    let dual = with(described(running), |t| t.facts.ipv6 = Some(ipv6));
    let d = on_event(
        &ctx(Mode::Owner { port: 8080 }, &policy),
        &change(3, running),
        &dual,
        None,
    )
    .unwrap();
    let attributes = written(&d);
    assert_eq!(attributes[keys::AWS_INSTANCE_IPV4], "10.0.2.9");
    assert_eq!(attributes[AWS_INSTANCE_IPV6], "2a05:d014:9f1:8c02::7");
}

#[test]
fn enrich_mode_adds_a_missing_ipv6_address_and_never_replaces_one() {
    let policy = Policy::default();
    let l = lifecycle(Running, DRunning);
    let c = ctx(Mode::Enrich, &policy);
    let mut event = change(3, l);
    event.facts.ipv6 = Some("2a05:d014:9f1:8c02::7".parse().unwrap());
    let d = on_event(&c, &event, &described(l), Some(&ecs_instance())).unwrap();
    assert_eq!(written(&d)[AWS_INSTANCE_IPV6], "2a05:d014:9f1:8c02::7");
    let mut by_ecs = ecs_instance();
    by_ecs.insert(AWS_INSTANCE_IPV6.into(), "2a05:d014:9f1:8c02::1".into());
    let d = on_event(&c, &event, &described(l), Some(&by_ecs)).unwrap();
    assert_eq!(written(&d)[AWS_INSTANCE_IPV6], "2a05:d014:9f1:8c02::1");
}

#[test]
fn reconcile_writes_load_only_past_the_step() {
    let policy = Policy::default();
    let l = lifecycle(Running, DRunning);
    let c = ctx(Mode::Enrich, &policy);
    let mut current =
        written(&on_event(&c, &change(3, l), &described(l), Some(&ecs_instance())).unwrap());
    assert!(!current.contains_key(keys::LB_LOAD));

    let d = on_reconcile(
        &c,
        &task(),
        &described(l),
        Some(&current),
        Measured::Load(Load::new(40)),
    )
    .unwrap();
    current = written(&d);
    assert_eq!(current[keys::LB_LOAD], "40");
    for small in [31, 45, 49] {
        let d = on_reconcile(
            &c,
            &task(),
            &described(l),
            Some(&current),
            Measured::Load(Load::new(small)),
        )
        .unwrap();
        assert_eq!(d.action, Action::Skip(SkipReason::Unchanged), "{small}");
    }
    let d = on_reconcile(
        &c,
        &task(),
        &described(l),
        Some(&current),
        Measured::Load(Load::new(50)),
    )
    .unwrap();
    assert_eq!(written(&d)[keys::LB_LOAD], "50");
    // No data any more: the load is unknown, so it goes.
    let d = on_reconcile(
        &c,
        &task(),
        &described(l),
        Some(&current),
        Measured::Load(None),
    )
    .unwrap();
    assert!(!written(&d).contains_key(keys::LB_LOAD));
    // Not measured (load disabled): kept.
    let d = on_reconcile(
        &c,
        &task(),
        &described(l),
        Some(&current),
        Measured::NotMeasured,
    )
    .unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::Unchanged));
}

#[test]
fn a_write_for_another_reason_carries_the_fresh_load() {
    let policy = Policy::default();
    let l = lifecycle(Running, DRunning);
    let c = ctx(Mode::Enrich, &policy);
    let current = written(
        &on_reconcile(
            &c,
            &task(),
            &described(l),
            Some(&ecs_instance()),
            Measured::Load(Load::new(40)),
        )
        .unwrap(),
    );
    let unhealthy = with(described(l), |t| t.health = Some(LbHealth::Unhealthy));
    let d = on_reconcile(
        &c,
        &task(),
        &unhealthy,
        Some(&current),
        Measured::Load(Load::new(43)),
    )
    .unwrap();
    assert_eq!(written(&d)[keys::LB_HEALTH], "UNHEALTHY");
    assert_eq!(written(&d)[keys::LB_LOAD], "43");
}

#[test]
fn reconcile_repairs_missed_events() {
    let policy = Policy::default();
    let c = ctx(Mode::Enrich, &policy);
    let starting = lifecycle(Pending, DRunning);
    let current = written(
        &on_event(
            &c,
            &change(2, starting),
            &described(starting),
            Some(&ecs_instance()),
        )
        .unwrap(),
    );

    // Missed RUNNING.
    let running = lifecycle(Running, DRunning);
    let d = on_reconcile(
        &c,
        &task(),
        &described(running),
        Some(&current),
        Measured::NotMeasured,
    )
    .unwrap();
    assert_eq!(
        (d.old_state, d.new_state),
        (Some(LbState::Starting), Some(LbState::Running))
    );
    let current = written(&d);
    assert!(
        !current.contains_key(keys::LB_TASK_VERSION),
        "moto reports no version: RUNNING's first version is unknown until its event"
    );

    // Missed STOPPED: ECS no longer knows the task.
    let d = on_reconcile(
        &c,
        &task(),
        &Described::Missing,
        Some(&current),
        Measured::Load(Load::new(80)),
    )
    .unwrap();
    let stopped = written(&d);
    assert_eq!(stopped[keys::LB_STATE], "STOPPED");
    assert!(
        !stopped.contains_key(keys::LB_LOAD),
        "no load is measured for a stopped task"
    );
    assert_eq!(stopped[keys::LB_WEIGHT], current[keys::LB_WEIGHT]);
}

#[test]
fn enrich_mode_deregisters_a_stopped_leftover_only_after_the_grace_period() {
    let policy = Policy::default();
    let stopped = lifecycle(Stopped, DStopped);
    let early = ctx(Mode::Enrich, &policy);
    let marked = written(
        &on_reconcile(
            &early,
            &task(),
            &described(stopped),
            Some(&ecs_instance()),
            Measured::NotMeasured,
        )
        .unwrap(),
    );
    let d = on_reconcile(
        &early,
        &task(),
        &Described::Missing,
        Some(&marked),
        Measured::NotMeasured,
    )
    .unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::Unchanged));

    let later = Context {
        now: now() + Duration::from_secs(3600),
        ..early
    };
    let d = on_reconcile(
        &later,
        &task(),
        &Described::Missing,
        Some(&marked),
        Measured::NotMeasured,
    )
    .unwrap();
    assert_eq!(
        d.action,
        Action::Deregister(DeregisterReason::StoppedPastGrace)
    );

    let never = Policy {
        stopped_grace: None,
        ..Policy::default()
    };
    let d = on_reconcile(
        &ctx(Mode::Enrich, &never),
        &task(),
        &Described::Missing,
        Some(&marked),
        Measured::NotMeasured,
    )
    .unwrap();
    assert_eq!(d.action, Action::Skip(SkipReason::Unchanged));
}

#[test]
fn a_value_cloud_map_refuses_is_left_out_and_the_state_still_written() {
    let policy = Policy::default();
    let l = lifecycle(Running, DRunning);
    let mut odd = change(4, l);
    odd.facts.capacity = Some("FARGATE_SPÖT".into());
    odd.task = TaskRef::new(
        &format!(
            "arn:aws:ecs:eu-central-1:1:task/{}/0a1b2c3d",
            "c".repeat(1100)
        ),
        "prod",
    )
    .unwrap();
    let d = on_event(
        &ctx(Mode::Enrich, &policy),
        &odd,
        &described(l),
        Some(&ecs_instance()),
    )
    .unwrap();
    let omitted: Vec<(&str, &str)> = d
        .omitted
        .iter()
        .map(|o| (o.key.as_str(), o.reason.as_str()))
        .collect();
    assert_eq!(
        omitted,
        [
            (keys::LB_TASK_ARN, "value_too_long"),
            (keys::LB_CAPACITY, "invalid_value")
        ]
    );
    let attrs = written(&d);
    assert_eq!(attrs[keys::LB_STATE], "RUNNING");
    assert_eq!(attrs[keys::LB_WEIGHT], "200");
    assert!(!attrs.contains_key(keys::LB_CAPACITY));
    assert!(!attrs.contains_key(keys::LB_TASK_ARN));
    // The same event again finds nothing to write: the omission is stable, not a write loop.
    let again = on_event(
        &ctx(Mode::Enrich, &policy),
        &odd,
        &described(l),
        Some(&attrs),
    )
    .unwrap();
    assert_eq!(again.action, Action::Skip(SkipReason::Stale));
    assert!(again.omitted.is_empty());
}

#[test]
fn an_instance_over_cloud_maps_limits_is_an_error_not_a_partial_write() {
    let policy = Policy::default();
    let l = lifecycle(Running, DRunning);
    let mut crowded = ecs_instance();
    for i in 0..25 {
        crowded.insert(format!("user_{i}"), "x".into());
    }
    let result = on_event(
        &ctx(Mode::Enrich, &policy),
        &change(2, l),
        &described(l),
        Some(&crowded),
    );
    assert!(result.is_err(), "{result:?}");
}

// ---------------------------------------------------------------------------------------------
// Writes over a whole task life.

/// One task's life as ECS reports it, one event per change (version = index + 1), with the health
/// `DescribeTasks` reports at that moment.
const LIFE: [(LastStatus, DesiredStatus, LbHealth); 10] = [
    (Provisioning, DRunning, LbHealth::Unknown),
    (Pending, DRunning, LbHealth::Unknown),
    (Activating, DRunning, LbHealth::Unknown),
    (Running, DRunning, LbHealth::Unknown),
    // The health check passes: ECS sends an event, still RUNNING.
    (Running, DRunning, LbHealth::Healthy),
    // Scale-in: told to stop.
    (Running, DStopped, LbHealth::Healthy),
    (Deactivating, DStopped, LbHealth::Healthy),
    (Stopping, DStopped, LbHealth::Healthy),
    (Deprovisioning, DStopped, LbHealth::Healthy),
    (Stopped, DStopped, LbHealth::Healthy),
];

/// When the task of [`LIFE`] turned RUNNING.
#[allow(non_snake_case)]
fn STARTED_AT() -> SystemTime {
    now() + Duration::from_millis(3_500)
}

/// Delivers [`LIFE`] in order, each event with `DescribeTasks` as AWS answers at that moment
/// (version, health, size). `ecs_registers` are the event indices at which, in enrich mode, ECS's
/// instance exists (ECS registers around RUNNING and deregisters while the task stops). Returns
/// the `RegisterInstance` and `DeregisterInstance` calls made.
fn writes_over_a_life(mode: Mode, ecs_registers: std::ops::Range<usize>) -> (usize, usize) {
    let policy = Policy::default();
    let c = ctx(mode, &policy);
    let mut instance: Option<HashMap<String, String>> = None;
    let (mut registers, mut deregisters) = (0, 0);
    for (i, &(last, desired, health)) in LIFE.iter().enumerate() {
        let version = u64::try_from(i).unwrap() + 1;
        if mode == Mode::Enrich {
            if i == ecs_registers.start {
                instance = Some(ecs_instance());
            }
            if i == ecs_registers.end {
                instance = None;
            }
        }
        let l = lifecycle(last, desired);
        let mut event = change(version, l);
        if last == Provisioning {
            event.facts.ipv4 = None;
        }
        // Every event from RUNNING on carries `startedAt`, as does DescribeTasks.
        let started = (last >= Running).then_some(STARTED_AT());
        event.facts.started_at = started;
        event.time = Some(now() + Duration::from_secs(version));
        let now = with(described(l), |t| {
            t.version = Some(version);
            t.health = Some(health);
            t.facts = TaskFacts {
                started_at: started,
                ..event_facts()
            };
        });
        let decision = on_event(&c, &event, &now, instance.as_ref()).unwrap();
        match decision.action {
            Action::Register { attributes, .. } => {
                registers += 1;
                let running = attributes.as_map().get(keys::LB_RUNNING_SINCE).cloned();
                assert_eq!(
                    running,
                    (last >= Running).then(|| format_rfc3339(STARTED_AT())),
                    "{last:?}: LB_RUNNING_SINCE comes with the RUNNING write, no write of its own"
                );
                instance = Some(attributes.into_map().into_iter().collect());
            }
            Action::Deregister(_) => {
                deregisters += 1;
                instance = None;
            }
            Action::Skip(_) => {}
        }
    }
    (registers, deregisters)
}

#[test]
fn a_task_life_costs_one_write_per_state_or_health_change() {
    // ECS registers at RUNNING and deregisters before STOPPED: RUNNING, HEALTHY, DRAINING,
    // STOPPED. The version-only events (PENDING, ACTIVATING, STOPPING, DEPROVISIONING) write
    // nothing.
    assert_eq!(writes_over_a_life(Mode::Enrich, 3..9), (4, 0));
    // ECS registers while the task is still provisioning: STARTING too.
    assert_eq!(writes_over_a_life(Mode::Enrich, 0..10), (5, 0));
    // Owner mode: created when RUNNING, deregistered when stopped.
    assert_eq!(
        writes_over_a_life(Mode::Owner { port: 50051 }, 0..0),
        (3, 1)
    );
    for (registers, deregisters) in [
        writes_over_a_life(Mode::Enrich, 3..9),
        writes_over_a_life(Mode::Enrich, 0..10),
        writes_over_a_life(Mode::Owner { port: 50051 }, 0..0),
    ] {
        assert!(registers + deregisters <= 5, "{registers} + {deregisters}");
    }
}

// ---------------------------------------------------------------------------------------------
// Convergence: any permutation, with duplicates, of a task's events ends where in-order delivery
// ends.

/// A world: one task's event sequence and what DescribeTasks says.
#[derive(Debug, Clone)]
struct World {
    events: Vec<TaskChange>,
    /// What DescribeTasks gives with each event in order, as the event happened.
    live: Vec<Described>,
    /// What DescribeTasks gives after the last event.
    last: Described,
    mode: Mode,
}

const STATUSES: [LastStatus; 8] = [
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
];

fn world() -> impl Strategy<Value = World> {
    (
        0usize..4,
        prop::collection::vec(0u8..4, 0..10),
        prop::option::of(prop::sample::select(LbHealth::ALL.to_vec())),
        prop::option::of(prop_oneof![
            (0u32..12_000).prop_map(|w| WeightTag::parse(&w.to_string())),
            Just(WeightTag::Invalid("heavy".into())),
        ]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        // Per event: whether it carries `startedAt` (once the task ran), whether it has a time.
        prop::collection::vec((any::<bool>(), any::<bool>()), 11),
        // Whether the subnet's zone ID lookup works (it is the handler's, the same for every
        // event with an ENI).
        any::<bool>(),
    )
        .prop_map(
            |(start, steps, health, tag, aws_like, purged, owner, stamps, zone_ids)| {
                // A forward path through the lifecycle: each step either tells the task to stop or
                // moves it on by one to three statuses.
                let mut path = vec![(start, DRunning)];
                for step in steps {
                    let (mut index, mut desired) = *path.last().unwrap_or(&(start, DRunning));
                    if step == 0 && desired == DRunning {
                        desired = DStopped;
                    } else {
                        index = (index + usize::from(step.max(1))).min(STATUSES.len() - 1);
                    }
                    if STATUSES[index].is_stopping() {
                        desired = DStopped;
                    }
                    if path.last() != Some(&(index, desired)) {
                        path.push((index, desired));
                    }
                }
                let mut events = Vec::new();
                let mut live = Vec::new();
                // startedAt: just before the first event that reports the task running (or past it).
                let started_at = path
                    .iter()
                    .position(|&(index, _)| STATUSES[index] >= Running)
                    .map(|i| {
                        now() + Duration::from_secs(10 * (i as u64 + 1))
                            - Duration::from_millis(300)
                    });
                for (i, (index, desired)) in path.into_iter().enumerate() {
                    let version = u64::try_from(i).unwrap_or(0) + 1;
                    let l = lifecycle(STATUSES[index], desired);
                    let ran = STATUSES[index] >= Running;
                    let (carries_started_at, timed) = stamps[i];
                    let mut event = change(version, l);
                    if STATUSES[index] == Provisioning {
                        event.facts.ipv4 = None; // no ENI yet
                    } else if zone_ids {
                        event.facts.zone_id = Some("euc1-az2".into());
                    }
                    event.facts.started_at = started_at.filter(|_| ran && carries_started_at);
                    event.time = timed.then(|| now() + Duration::from_secs(10 * version));
                    events.push(event);
                    live.push(with(described(l), |t| {
                        t.health = health;
                        t.weight_tag.clone_from(&tag);
                        if aws_like {
                            t.version = Some(version);
                            t.facts = TaskFacts {
                                started_at: started_at.filter(|_| ran),
                                ..event_facts()
                            };
                        }
                    }));
                }
                let last = if purged {
                    Described::Missing
                } else {
                    live.last().cloned().unwrap_or(Described::Missing)
                };
                World {
                    events,
                    live,
                    last,
                    mode: if owner {
                        Mode::Owner { port: 50051 }
                    } else {
                        Mode::Enrich
                    },
                }
            },
        )
}

/// Applies events to one instance and returns its final attributes (`None`: no instance).
fn deliver<'a>(
    world: &World,
    deliveries: impl IntoIterator<Item = (&'a TaskChange, &'a Described)>,
) -> Option<HashMap<String, String>> {
    let policy = Policy::default();
    let c = ctx(world.mode, &policy);
    let mut instance = match world.mode {
        Mode::Enrich => Some(ecs_instance()),
        Mode::Owner { .. } => None,
    };
    for (event, described) in deliveries {
        let decision = on_event(&c, event, described, instance.as_ref()).unwrap();
        match decision.action {
            Action::Register { attributes, .. } => {
                instance = Some(attributes.into_map().into_iter().collect());
            }
            Action::Deregister(_) => instance = None,
            Action::Skip(_) => {}
        }
    }
    instance
}

/// A world and a delivery order: every event at least once, some twice or more, shuffled.
fn world_and_order() -> impl Strategy<Value = (World, Vec<usize>)> {
    world().prop_flat_map(|world| {
        let n = world.events.len();
        let order = prop::collection::vec(0..n, 0..20)
            .prop_map(move |extra| (0..n).chain(extra).collect::<Vec<_>>())
            .prop_shuffle();
        (Just(world), order)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_order_with_duplicates_converges((world, order) in world_and_order()) {
        // In order, each event handled as it happened (DescribeTasks agreeing with it); when the
        // task was purged, in order against a DescribeTasks that no longer knows it.
        let reference = if world.last == Described::Missing {
            deliver(&world, world.events.iter().map(|e| (e, &world.last)))
        } else {
            deliver(&world, world.events.iter().zip(&world.live))
        };
        // Shuffled, with duplicates, all after the fact.
        let result = deliver(&world, order.iter().map(|&i| (&world.events[i], &world.last)));
        let strip = |m: Option<HashMap<String, String>>| {
            m.map(|mut m| {
                m.remove(keys::LB_UPDATED_AT);
                m
            })
        };
        prop_assert_eq!(strip(result), strip(reference));
    }
}
