//! AWS calls counted for real (the fault proxy counts every request per operation): per event in
//! steady state, and per reconciliation of a 100-task service, next to the obvious alternatives
//! (no registry cache; per-task calls). Run with `--nocapture` to see the numbers that
//! BENCHMARKS.md reports.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_sdk_ecs::types::TaskField;
use common::{Stack, handler_on, put_cpu, sdk_via};
use local_stack::MotoServer;
use local_stack::fault::FaultProxy;
use serde_json::json;

fn total(counts: &BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

#[tokio::test]
async fn calls_per_event_in_steady_state() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(3, &[]).await;
    for task in &tasks {
        stack.register_like_ecs(task).await;
    }
    let proxy = FaultProxy::start(MotoServer::shared().endpoint()).unwrap();
    let sdk = sdk_via(&proxy.endpoint());
    let cached = handler_on(&sdk, stack.config(&[]), cloudmap_sync::SystemClock);
    let uncached = handler_on(
        &sdk,
        stack.config(&[("SYNC_REGISTRY_CACHE_TTL_SECS", "0")]),
        cloudmap_sync::SystemClock,
    );

    let measure = async |handler: &common::AwsHandler, event: serde_json::Value| {
        proxy.reset_counts();
        let report = handler.handle(event).await.unwrap();
        (proxy.counts(), report.writes())
    };
    let (cold, _) = measure(&cached, stack.event("fargate_running.json", &tasks[0], 4)).await;
    let (steady, steady_writes) =
        measure(&cached, stack.event("fargate_running.json", &tasks[1], 4)).await;
    let (duplicate, duplicate_writes) =
        measure(&cached, stack.event("fargate_running.json", &tasks[1], 4)).await;
    let (uncached_event, _) =
        measure(&uncached, stack.event("fargate_running.json", &tasks[2], 4)).await;

    println!(
        "calls per event, registry cache cold: {} {cold:?}",
        total(&cold)
    );
    println!(
        "calls per event, steady state: {} {steady:?}, writes {steady_writes}",
        total(&steady)
    );
    println!(
        "calls per duplicate event: {} {duplicate:?}, writes {duplicate_writes}",
        total(&duplicate)
    );
    println!(
        "calls per event without the registry cache: {} {uncached_event:?}",
        total(&uncached_event)
    );
    assert_eq!(total(&cold), 4);
    assert_eq!(total(&steady), 3);
    assert_eq!(steady_writes, 1);
    assert_eq!(total(&duplicate), 2);
    assert_eq!(duplicate_writes, 0);
    assert_eq!(total(&uncached_event), 4);
}

#[tokio::test]
async fn calls_per_reconciliation_of_a_100_task_service() {
    let stack = Stack::new().await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.extend(stack.run_tasks(10, &[]).await);
    }
    for task in &tasks {
        stack.register_like_ecs(task).await;
    }
    // Task i at i % 100 percent of its 512 reserved units.
    let samples: Vec<_> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| (task, (i % 100) as f64 * 5.12, 512.0))
        .collect();
    put_cpu(
        &stack,
        &samples,
        SystemTime::now() - Duration::from_secs(90),
    )
    .await;
    let proxy = FaultProxy::start(MotoServer::shared().endpoint()).unwrap();
    let sdk = sdk_via(&proxy.endpoint());
    let handler = handler_on(&sdk, stack.config(&[]), cloudmap_sync::SystemClock);

    let reconcile = async || {
        proxy.reset_counts();
        let report = handler
            .handle(json!({"action": "reconcile"}))
            .await
            .unwrap();
        (proxy.counts(), report.writes())
    };
    let (first, first_writes) = reconcile().await;
    let (steady, steady_writes) = reconcile().await;
    println!(
        "reconcile 100 tasks, first run: {} calls {first:?}, writes {first_writes}",
        total(&first)
    );
    println!(
        "reconcile 100 tasks, steady state: {} calls {steady:?}, writes {steady_writes}",
        total(&steady)
    );
    assert_eq!(first_writes, 100);
    // The one GetMetricData call carried all 200 queries: every task has its load.
    for i in [0, 37, 99] {
        let attrs = stack.attributes(&tasks[i].id).await.unwrap();
        assert_eq!(
            attrs.get("LB_LOAD").map(String::as_str),
            Some(i.to_string().as_str())
        );
    }
    assert_eq!(first["RegisterInstance"], 100);
    assert_eq!(
        total(&first) - 100,
        6,
        "ListServices, DescribeServices + the 4 reads"
    );
    assert_eq!(steady_writes, 0);
    assert_eq!(
        total(&steady),
        4,
        "ListTasks, ListInstances, DescribeTasks, GetMetricData"
    );

    // The obvious alternative, side by side: the same reads task by task.
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let cloudmap = aws_sdk_servicediscovery::Client::new(&sdk);
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    proxy.reset_counts();
    let listed = ecs
        .list_tasks()
        .cluster(&stack.cluster)
        .service_name(&stack.service)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.task_arns().len(),
        100,
        "ListTasks lists the whole service (no pagination below 100)"
    );
    for arn in listed.task_arns() {
        let id = arn.rsplit('/').next().unwrap();
        ecs.describe_tasks()
            .cluster(&stack.cluster)
            .tasks(arn)
            .include(TaskField::Tags)
            .send()
            .await
            .unwrap();
        cloudmap
            .get_instance()
            .service_id(&stack.cloudmap_service_id)
            .instance_id(id)
            .send()
            .await
            .unwrap();
        let query = |metric: &str, qid: &str| {
            MetricDataQuery::builder()
                .id(qid)
                .metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace("ECS/ContainerInsights")
                                .metric_name(metric)
                                .dimensions(Dimension::builder().name("TaskId").value(id).build())
                                .build(),
                        )
                        .period(60)
                        .stat("Average")
                        .build(),
                )
                .build()
        };
        cloudwatch
            .get_metric_data()
            .start_time(DateTime::from(SystemTime::now() - Duration::from_secs(300)))
            .end_time(DateTime::from(SystemTime::now()))
            .metric_data_queries(query("CpuUtilized", "u"))
            .metric_data_queries(query("CpuReserved", "r"))
            .send()
            .await
            .unwrap();
    }
    let naive = proxy.counts();
    println!(
        "reconcile 100 tasks, per-task reads (the obvious alternative): {} calls {naive:?}",
        total(&naive)
    );
}
