//! AWS calls counted for real (the fault proxy counts every request per operation): per event in
//! steady state, and per reconciliation of a 100-task service, next to the obvious alternatives
//! (no registry cache; per-task calls), and how long a sweep's writes take from first to last.
//! Run with `--nocapture` to see the numbers that BENCHMARKS.md reports.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_sdk_ecs::types::TaskField;
use cloudmap_balancer::contract::AttributeSet;
use cloudmap_sync::aws::{AwsClients, CloudMap};
use cloudmap_sync::ports::{Instance, Registry};
use cloudmap_sync::{Handler, SyncError};
use common::{Stack, handler_on, in_subnet, put_cpu, sdk_via, task_subnet};
use local_stack::MotoServer;
use local_stack::fault::FaultProxy;
use serde_json::json;

fn total(counts: &BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

/// The real Cloud Map adapter, with the start and end of every `RegisterInstance` noted.
#[derive(Debug, Clone)]
struct Timed {
    inner: CloudMap,
    writes: Arc<Mutex<Vec<(Instant, Instant)>>>,
}

impl Registry for Timed {
    async fn get_instance(
        &self,
        service_id: &str,
        instance_id: &str,
    ) -> Result<Option<HashMap<String, String>>, SyncError> {
        self.inner.get_instance(service_id, instance_id).await
    }

    async fn list_instances(&self, service_id: &str) -> Result<Vec<Instance>, SyncError> {
        self.inner.list_instances(service_id).await
    }

    async fn register_instance(
        &self,
        service_id: &str,
        instance_id: &str,
        attributes: &AttributeSet,
    ) -> Result<(), SyncError> {
        let start = Instant::now();
        let result = self
            .inner
            .register_instance(service_id, instance_id, attributes)
            .await;
        self.writes.lock().unwrap().push((start, Instant::now()));
        result
    }

    async fn deregister_instance(
        &self,
        service_id: &str,
        instance_id: &str,
    ) -> Result<(), SyncError> {
        self.inner
            .deregister_instance(service_id, instance_id)
            .await
    }
}

#[tokio::test]
async fn calls_per_event_in_steady_state() {
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(4, &[]).await;
    let (subnet, _) = task_subnet().await;
    let event = |task: &common::TaskInfo| {
        in_subnet(stack.event("fargate_running.json", task, 4), Some(&subnet))
    };
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
    let (cold, _) = measure(&cached, event(&tasks[0])).await;
    let (steady, steady_writes) = measure(&cached, event(&tasks[1])).await;
    let (duplicate, duplicate_writes) = measure(&cached, event(&tasks[1])).await;
    // The uncached handler's subnet lookup warmed first: this measures the registry cache alone.
    measure(&uncached, event(&tasks[3])).await;
    let (uncached_event, _) = measure(&uncached, event(&tasks[2])).await;

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
    assert_eq!(
        total(&cold),
        5,
        "DescribeServices and DescribeSubnets, once each"
    );
    assert_eq!(cold.get("DescribeSubnets"), Some(&1));
    assert_eq!(total(&steady), 3);
    assert_eq!(
        steady.keys().collect::<Vec<_>>(),
        ["DescribeTasks", "GetInstance", "RegisterInstance"]
    );
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
    let config = stack.config(&[]);
    let aws = AwsClients::new(&sdk, &config);
    let writes = Arc::new(Mutex::new(Vec::new()));
    let timed = Timed {
        inner: aws.cloudmap,
        writes: Arc::clone(&writes),
    };
    let handler = Handler::new(
        config,
        timed,
        aws.ecs,
        aws.cloudwatch,
        cloudmap_sync::SystemClock,
        aws.ec2,
    );

    let reconcile = async || {
        proxy.reset_counts();
        let started = Instant::now();
        let report = handler
            .handle(json!({"action": "reconcile"}))
            .await
            .unwrap();
        (proxy.counts(), report.writes(), started.elapsed())
    };
    let (first, first_writes, first_took) = reconcile().await;
    let burst = {
        let writes = writes.lock().unwrap();
        let first_start = writes.iter().map(|w| w.0).min().unwrap();
        let last_end = writes.iter().map(|w| w.1).max().unwrap();
        last_end - first_start
    };
    let (steady, steady_writes, _) = reconcile().await;
    println!(
        "reconcile 100 tasks, first run: {} calls {first:?}, writes {first_writes}",
        total(&first)
    );
    println!(
        "reconcile 100 tasks, steady state: {} calls {steady:?}, writes {steady_writes}",
        total(&steady)
    );
    println!(
        "reconcile 100 tasks, first run: the 100 writes took {:.0} ms from the first write's start \
         to the last one's end (the whole run {:.0} ms)",
        burst.as_secs_f64() * 1000.0,
        first_took.as_secs_f64() * 1000.0
    );
    assert_eq!(first_writes, 100);
    assert_eq!(writes.lock().unwrap().len(), 100);
    // Back to back: the writes started after every read and nothing else ran between them.
    assert!(burst <= first_took);
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
        7,
        "ListServices, DescribeServices, DescribeSubnets (one subnet) + the 4 reads"
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
