//! Test support against the local stack: an ECS cluster and service with a Cloud Map registry in
//! moto, tasks started with RunTask, instances registered the way ECS registers them, fixture
//! events pointed at those tasks, and handlers built on the real AWS clients.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)] // shared by several test binaries

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use cloudmap_balancer::contract::keys;
use cloudmap_sync::aws::{AwsClients, CloudMap, CloudWatch, Ec2, Ecs};
use cloudmap_sync::ports::{ServiceRegistries, Tasks};
use cloudmap_sync::task::{Described, DescribedTask};
use cloudmap_sync::{Clock, Config, Handler, SyncError, SystemClock};
use local_stack::ecs_service::{EcsService, RunTasks, ServiceSpec};
use local_stack::{MotoServer, unique_name};
use serde_json::Value;

/// The handler as tests build it: the real AWS implementations.
pub type AwsHandler<C = SystemClock> = Handler<CloudMap, Ecs, CloudWatch, C, Ec2>;

/// A clock the test sets.
#[derive(Debug, Clone, Copy)]
pub struct Fixed(pub SystemTime);

impl Clock for Fixed {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// A task started in moto.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub arn: String,
    pub id: String,
    pub ip: String,
}

/// One ECS service with a Cloud Map registry, in a cluster of its own.
#[derive(Debug, Clone)]
pub struct Stack {
    pub cluster: String,
    pub cluster_arn: String,
    pub service: String,
    pub family: String,
    pub cloudmap_service_id: String,
    pub cloudmap_service_arn: String,
}

impl Stack {
    /// Creates the cluster, a Fargate task definition, a Cloud Map namespace and service, and an
    /// ECS service whose registry is that Cloud Map service (`local_stack::ecs_service`).
    pub async fn new() -> Self {
        let spec = ServiceSpec {
            service: unique_name("echo-svc"),
            ..ServiceSpec::named("echo", &[512])
        };
        let service = EcsService::create(MotoServer::shared(), &spec)
            .await
            .unwrap();
        Self {
            cluster: service.cluster,
            cluster_arn: service.cluster_arn,
            service: service.service,
            family: service.family,
            cloudmap_service_id: service.cloud_map_service_id,
            cloudmap_service_arn: service.cloud_map_service_arn,
        }
    }

    /// The local stack's view of this stack. Built from the fields each time, so a copy with
    /// another `service` (`Stack { service, ..stack }`) drives that service.
    fn ecs_service(&self) -> EcsService {
        EcsService {
            cluster: self.cluster.clone(),
            cluster_arn: self.cluster_arn.clone(),
            service: self.service.clone(),
            family: self.family.clone(),
            cloud_map_service_id: self.cloudmap_service_id.clone(),
            cloud_map_service_arn: self.cloudmap_service_arn.clone(),
            // Tasks start from the family's latest revision.
            task_definitions: Default::default(),
        }
    }

    /// Starts `count` tasks of the service (group `service:NAME`, as the scheduler does), with
    /// optional task tags.
    pub async fn run_tasks(&self, count: i32, tags: &[(&str, &str)]) -> Vec<TaskInfo> {
        let run = RunTasks {
            count,
            tags,
            ..RunTasks::default()
        };
        self.ecs_service()
            .run_tasks(MotoServer::shared(), run)
            .await
            .unwrap()
            .into_iter()
            .map(|task| TaskInfo {
                arn: task.task_arn,
                id: task.task_id,
                ip: task.ipv4,
            })
            .collect()
    }

    pub async fn stop_task(&self, task: &TaskInfo) {
        self.ecs_service()
            .stop_task(MotoServer::shared(), &task.arn, "test")
            .await
            .unwrap();
    }

    /// What ECS registers for a task, plus a user's own attribute.
    pub fn ecs_attributes(&self, task: &TaskInfo) -> HashMap<String, String> {
        let mut attributes = self
            .ecs_service()
            .ecs_attributes(&task.ip, 50051, "eu-central-1a");
        attributes.insert("team".to_owned(), "payments".to_owned());
        attributes
    }

    /// Registers the task's instance the way ECS does.
    pub async fn register_like_ecs(&self, task: &TaskInfo) -> HashMap<String, String> {
        let attributes = self.ecs_attributes(task);
        self.register(&task.id, attributes.clone()).await;
        attributes
    }

    pub async fn register(&self, instance_id: &str, attributes: HashMap<String, String>) {
        self.ecs_service()
            .register(MotoServer::shared(), instance_id, attributes)
            .await
            .unwrap();
    }

    pub async fn deregister(&self, instance_id: &str) {
        self.ecs_service()
            .deregister(MotoServer::shared(), instance_id)
            .await
            .unwrap();
    }

    /// The instance's attributes read straight from moto; `None` when it does not exist.
    pub async fn attributes(&self, instance_id: &str) -> Option<HashMap<String, String>> {
        self.ecs_service()
            .instances(MotoServer::shared())
            .await
            .unwrap()
            .remove(instance_id)
    }

    /// A fixture event rewritten to name `task` of this stack, with the given version.
    pub fn event(&self, fixture: &str, task: &TaskInfo, version: u64) -> Value {
        let mut event = fixture_json(fixture);
        let old_format = event["detail"]["taskArn"]
            .as_str()
            .is_some_and(|arn| arn.matches('/').count() == 1);
        let arn = if old_format {
            format!("arn:aws:ecs:eu-central-1:123456789012:task/{}", task.id)
        } else {
            task.arn.clone()
        };
        event["resources"] = serde_json::json!([arn]);
        let detail = &mut event["detail"];
        detail["taskArn"] = Value::String(arn);
        detail["clusterArn"] = Value::String(self.cluster_arn.clone());
        detail["group"] = Value::String(format!("service:{}", self.service));
        detail["version"] = Value::from(version);
        // The task's own address wherever the event carries one.
        for attachment in detail["attachments"].as_array_mut().into_iter().flatten() {
            for pair in attachment["details"].as_array_mut().into_iter().flatten() {
                if pair["name"] == "privateIPv4Address" {
                    pair["value"] = Value::String(task.ip.clone());
                }
            }
        }
        for container in detail["containers"].as_array_mut().into_iter().flatten() {
            for interface in container["networkInterfaces"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                interface["privateIpv4Address"] = Value::String(task.ip.clone());
            }
        }
        event
    }

    /// A task state change event with the given statuses (built on the Fargate RUNNING fixture).
    pub fn status_event(&self, task: &TaskInfo, version: u64, last: &str, desired: &str) -> Value {
        let mut event = self.event("fargate_running.json", task, version);
        event["detail"]["lastStatus"] = Value::String(last.into());
        event["detail"]["desiredStatus"] = Value::String(desired.into());
        event
    }

    /// A configuration that reconciles this stack's cluster.
    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        let mut vars = vec![("SYNC_CLUSTERS".to_owned(), self.cluster.clone())];
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Config::from_vars(vars).unwrap()
    }
}

/// A fixture's JSON.
pub fn fixture_json(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A handler on clients built from `sdk`, the way the binary builds them.
pub fn handler_on<C: Clock>(sdk: &SdkConfig, config: Config, clock: C) -> AwsHandler<C> {
    let aws = AwsClients::new(sdk, &config);
    Handler::new(
        config,
        aws.cloudmap,
        aws.ecs,
        aws.cloudwatch,
        clock,
        aws.ec2,
    )
}

/// The real ECS client, with each task `DescribeTasks` finds described as AWS would describe it on
/// a network moto cannot give its tasks: moto runs every task in awsvpc mode with an IPv4
/// address, and knows no EC2 bridge or host mode and no IPv6-only subnet. Only the network facts
/// change; everything else (status, tags, size) is moto's answer.
#[derive(Debug, Clone)]
pub struct Networked {
    inner: Ecs,
    reshape: fn(&mut DescribedTask),
}

impl Networked {
    /// Bridge or host mode: no ENI, so no subnet and no address.
    pub fn bridge(inner: Ecs) -> Self {
        Self {
            inner,
            reshape: |task| {
                task.facts.subnet = None;
                task.facts.ipv4 = None;
                task.facts.ipv6 = None;
            },
        }
    }

    /// An IPv6-only subnet: the ENI has an IPv6 address (derived from the task's IPv4 address
    /// moto gave it, so that each task's is its own) and no IPv4 address.
    pub fn ipv6_only(inner: Ecs) -> Self {
        Self {
            inner,
            reshape: |task| {
                task.facts.ipv6 = task.facts.ipv4.take().map(ipv6_of);
            },
        }
    }
}

/// The IPv6 address an IPv6-only twin of the task with `ipv4` has in these tests.
pub fn ipv6_of(ipv4: std::net::Ipv4Addr) -> std::net::Ipv6Addr {
    let [a, b, c, d] = ipv4.octets();
    std::net::Ipv6Addr::new(
        0x2a05,
        0xd014,
        0x9f1,
        0x8c02,
        0,
        0,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    )
}

impl Tasks for Networked {
    async fn describe_tasks(
        &self,
        cluster: &str,
        task_ids: &[String],
    ) -> Result<HashMap<String, Described>, SyncError> {
        let mut described = self.inner.describe_tasks(cluster, task_ids).await?;
        for task in described.values_mut() {
            if let Described::Found(task) = task {
                (self.reshape)(task);
            }
        }
        Ok(described)
    }

    async fn list_service_tasks(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<String>, SyncError> {
        self.inner.list_service_tasks(cluster, service).await
    }

    async fn service_registries(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<String>, SyncError> {
        self.inner.service_registries(cluster, service).await
    }

    async fn services_with_registries(
        &self,
        cluster: &str,
    ) -> Result<Vec<ServiceRegistries>, SyncError> {
        self.inner.services_with_registries(cluster).await
    }
}

/// A handler on clients built from `sdk` whose ECS client is `networked` around the real one.
pub fn networked_handler<C: Clock>(
    sdk: &SdkConfig,
    config: Config,
    clock: C,
    networked: fn(Ecs) -> Networked,
) -> Handler<CloudMap, Networked, CloudWatch, C, Ec2> {
    let aws = AwsClients::new(sdk, &config);
    Handler::new(
        config,
        aws.cloudmap,
        networked(aws.ecs),
        aws.cloudwatch,
        clock,
        aws.ec2,
    )
}

/// Every Cloud Map request as the SDK sends it (after serialisation, before transmission): its
/// operation (`X-Amz-Target`) and JSON body. Shared namespaces cannot be made in moto; what the
/// Lambda sends for them is what these tests check.
#[derive(Debug, Clone, Default)]
pub struct Recorded(std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>);

impl Recorded {
    /// The requests so far, in order.
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.0.lock().unwrap().clone()
    }
}

impl Intercept for Recorded {
    fn name(&self) -> &'static str {
        "Recorded"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or_default()
            .to_owned();
        let body = request
            .body()
            .bytes()
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or(Value::Null);
        self.0.lock().unwrap().push((operation, body));
        Ok(())
    }
}

/// A handler on moto whose Cloud Map client records every request in `recorded`.
pub fn recorded_handler(config: Config, recorded: Recorded) -> AwsHandler {
    let sdk = MotoServer::shared().sdk_config();
    let aws = AwsClients::new(&sdk, &config);
    let cloudmap = aws_sdk_servicediscovery::config::Builder::from(&sdk)
        .interceptor(recorded)
        .build();
    Handler::new(
        config,
        CloudMap::new(aws_sdk_servicediscovery::Client::from_conf(cloudmap)),
        aws.ecs,
        aws.cloudwatch,
        SystemClock,
        aws.ec2,
    )
}

/// Puts Container Insights CPU data (`CpuUtilized`, `CpuReserved`, dimensions `ClusterName`,
/// `ServiceName`, `TaskId`) at `at` for each `(task, used, reserved)`, in one request.
pub async fn put_cpu(stack: &Stack, samples: &[(&TaskInfo, f64, f64)], at: SystemTime) {
    let mut request = MotoServer::shared()
        .cloudwatch()
        .put_metric_data()
        .namespace("ECS/ContainerInsights");
    for (task, used, reserved) in samples {
        let dimensions = [
            ("ClusterName", stack.cluster.as_str()),
            ("ServiceName", stack.service.as_str()),
            ("TaskId", task.id.as_str()),
        ]
        .map(|(name, value)| Dimension::builder().name(name).value(value).build());
        for (name, value) in [("CpuUtilized", *used), ("CpuReserved", *reserved)] {
            request = request.metric_data(
                MetricDatum::builder()
                    .metric_name(name)
                    .set_dimensions(Some(dimensions.to_vec()))
                    .timestamp(DateTime::from(at))
                    .value(value)
                    .build(),
            );
        }
    }
    request.send().await.unwrap();
}

/// A handler on moto.
pub fn handler(config: Config) -> AwsHandler {
    handler_on(&MotoServer::shared().sdk_config(), config, SystemClock)
}

/// An SDK configuration pointed at `endpoint` (a fault proxy), otherwise moto's.
pub fn sdk_via(endpoint: &str) -> SdkConfig {
    MotoServer::shared()
        .sdk_config()
        .into_builder()
        .endpoint_url(endpoint)
        .build()
}

/// The attributes without `LB_UPDATED_AT` (which changes on every write).
pub fn without_time(mut attributes: HashMap<String, String>) -> HashMap<String, String> {
    attributes.remove(keys::LB_UPDATED_AT);
    attributes
}

/// The subnet [`Stack::run_tasks`] starts tasks in (the first zone's default subnet), and its
/// zone ID as moto's EC2 reports it.
pub async fn task_subnet() -> (String, String) {
    let subnet = MotoServer::shared().default_subnets().unwrap().remove(0);
    (subnet.id, subnet.zone_id)
}

/// moto's default subnet in `zone` (e.g. `eu-central-1b`): its ID and its zone's ID as
/// `DescribeSubnets` reports it.
pub async fn subnet_in(zone: &str) -> (String, String) {
    let subnet = MotoServer::shared()
        .default_subnets()
        .unwrap()
        .into_iter()
        .find(|s| s.zone == zone)
        .unwrap_or_else(|| panic!("moto has no default subnet in {zone}"));
    (subnet.id, subnet.zone_id)
}

/// The event with `subnet` as its ENI's `subnetId` (the fixtures name a subnet moto does not
/// have); `None` removes the attachment, as in bridge mode.
pub fn in_subnet(mut event: Value, subnet: Option<&str>) -> Value {
    let detail = &mut event["detail"];
    match subnet {
        Some(subnet) => {
            for attachment in detail["attachments"].as_array_mut().into_iter().flatten() {
                for pair in attachment["details"].as_array_mut().into_iter().flatten() {
                    if pair["name"] == "subnetId" {
                        pair["value"] = Value::String(subnet.to_owned());
                    }
                }
            }
        }
        None => detail["attachments"] = serde_json::json!([]),
    }
    event
}

/// A clock the test moves on.
#[derive(Debug, Clone)]
pub struct Settable(std::sync::Arc<std::sync::Mutex<SystemTime>>);

impl Settable {
    /// A clock at `at`.
    pub fn at(at: SystemTime) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(at)))
    }

    /// Moves the clock on by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for Settable {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}
