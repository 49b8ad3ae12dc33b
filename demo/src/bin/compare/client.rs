//! The client process of one segment (`compare client SPEC`): builds the variant's channel,
//! keeps `concurrency` callers busy with unary `Describe` calls (each sent with the client's
//! zone in `demo-client-zone`), and reports what they saw.
//!
//! It runs in a process of its own, pinned to the client's core, so that a CPU hog there starves
//! it and nothing else. On stdout it prints `ready` when the measurement begins (after the
//! warm-up) and, at the end, one line of JSON: a [`SegmentResult`].

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use cloudmap_balancer::discovery::xds::XdsOptions;
use cloudmap_balancer::{Balancer, Options, ZoneMode};
use demo::fleet::{NAMESPACE, SERVICE};
use demo_server::CLIENT_ZONE_HEADER;
use demo_server::pb::DescribeRequest;
use demo_server::pb::demo_client::DemoClient;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::measure::{Call, SegmentResult};
use crate::plan::Variant;

/// Deadline of each call: generous, so only a real failure counts as one.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client process is asked to do (its one argument, as JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ClientSpec {
    pub(crate) variant: Variant,
    /// moto's endpoint: Cloud Map for (a), (b) and (c).
    pub(crate) moto_endpoint: String,
    /// HAProxy's address, for (d).
    pub(crate) proxy: Option<SocketAddr>,
    /// The xDS server's address, for (g).
    #[serde(default)]
    pub(crate) xds_server: Option<SocketAddr>,
    /// The client's zone.
    pub(crate) zone: String,
    pub(crate) concurrency: u64,
    pub(crate) warmup_ms: u64,
    pub(crate) measure_ms: u64,
    pub(crate) window_ms: u64,
}

/// Why the client could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("building the balancer failed")]
    Balancer(#[from] cloudmap_balancer::Error),
    #[error("Cloud Map DiscoverInstances failed")]
    Discover(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no endpoint for {what}")]
    Endpoint { what: String },
    #[error("the zone {0:?} cannot be sent in a header")]
    Zone(String),
}

/// Runs the segment and returns its result; prints `ready` on stdout when the measurement
/// begins.
pub(crate) async fn run(spec: &ClientSpec) -> Result<SegmentResult, ClientError> {
    let sdk = local_stack::sdk_config_for(&spec.moto_endpoint);
    match spec.variant {
        Variant::Balancer | Variant::Fixed50 | Variant::BalancerXds => {
            let mut options = Options::default();
            if spec.variant == Variant::Fixed50 {
                options.zone_mode = ZoneMode::Fixed { local_percent: 50 };
            }
            let mut builder = Balancer::builder(&sdk, NAMESPACE, SERVICE)
                .local_zone(&spec.zone)
                .options(options);
            // (a) and (b) poll Cloud Map whatever the environment says (`CLOUDMAP_XDS_SERVERS`).
            let xds = match spec.variant {
                Variant::BalancerXds => {
                    let server = spec.xds_server.ok_or_else(|| ClientError::Endpoint {
                        what: "the xDS variant: no xDS server address".into(),
                    })?;
                    Some(XdsOptions::new([format!("http://{server}")]))
                }
                _ => None,
            };
            builder = builder.xds(xds);
            let balancer = builder.build()?;
            balancer.ready().await?;
            drive(balancer.channel(), spec).await
        }
        Variant::BalanceList => {
            // What a DNS-style client does: list the instances once and spread over them.
            let cloud_map = cloudmap_balancer::aws::servicediscovery_client(&sdk);
            let listed = cloud_map
                .discover_instances()
                .namespace_name(NAMESPACE)
                .service_name(SERVICE)
                .health_status(
                    aws_sdk_servicediscovery::types::HealthStatusFilter::HealthyOrElseAll,
                )
                .max_results(100)
                .send()
                .await
                .map_err(|e| ClientError::Discover(Box::new(e)))?;
            let endpoints: Vec<Endpoint> = listed
                .instances()
                .iter()
                .filter_map(|i| {
                    let attributes = i.attributes()?;
                    let ip = attributes.get("AWS_INSTANCE_IPV4")?;
                    let port = attributes.get("AWS_INSTANCE_PORT")?;
                    Endpoint::from_shared(format!("http://{ip}:{port}")).ok()
                })
                .collect();
            if endpoints.is_empty() {
                return Err(ClientError::Endpoint {
                    what: "balance_list: Cloud Map listed no instance".into(),
                });
            }
            drive(Channel::balance_list(endpoints.into_iter()), spec).await
        }
        Variant::Haproxy => {
            let proxy = spec.proxy.ok_or_else(|| ClientError::Endpoint {
                what: "the HAProxy variant: no proxy address".into(),
            })?;
            let endpoint = Endpoint::from_shared(format!("http://{proxy}")).map_err(|_| {
                ClientError::Endpoint {
                    what: proxy.to_string(),
                }
            })?;
            drive(endpoint.connect_lazy(), spec).await
        }
    }
}

/// What one caller saw.
#[derive(Default)]
struct Seen {
    calls: Vec<Call>,
    per_zone: BTreeMap<String, u64>,
    per_task: BTreeMap<String, u64>,
    failures: BTreeMap<String, u64>,
    first_failure: Option<String>,
}

async fn drive<T>(channel: T, spec: &ClientSpec) -> Result<SegmentResult, ClientError>
where
    T: tonic::client::GrpcService<Body> + Clone + Send + 'static,
    T::Error: Into<tonic::codegen::StdError>,
    T::Future: Send,
    T::ResponseBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let zone: AsciiMetadataValue = spec
        .zone
        .parse()
        .map_err(|_| ClientError::Zone(spec.zone.clone()))?;
    let start = Instant::now();
    let measure_from = start + Duration::from_millis(spec.warmup_ms);
    let measure_for = Duration::from_millis(spec.measure_ms);
    let until = measure_from + measure_for;

    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..spec.concurrency.max(1) {
        let mut client = DemoClient::new(channel.clone());
        let (own_zone, zone) = (spec.zone.clone(), zone.clone());
        callers.spawn(async move {
            let mut seen = Seen::default();
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let mut request = tonic::Request::new(DescribeRequest {});
                request.set_timeout(CALL_TIMEOUT);
                request
                    .metadata_mut()
                    .insert(CLIENT_ZONE_HEADER, zone.clone());
                let outcome = client.describe(request).await;
                let ended = Instant::now();
                if ended < measure_from {
                    continue;
                }
                let local = match outcome {
                    Ok(answer) => {
                        let task = answer.into_inner().task.unwrap_or_default();
                        let local = task.zone == own_zone;
                        *seen.per_zone.entry(task.zone).or_default() += 1;
                        *seen.per_task.entry(task.task_id).or_default() += 1;
                        Some(local)
                    }
                    Err(status) => {
                        *seen
                            .failures
                            .entry(format!("{:?}", status.code()))
                            .or_default() += 1;
                        seen.first_failure
                            .get_or_insert_with(|| status.message().to_owned());
                        None
                    }
                };
                seen.calls.push(Call {
                    ended: ended - measure_from,
                    latency: ended - sent,
                    local,
                });
            }
            seen
        });
    }
    tokio::time::sleep_until(measure_from).await;
    {
        // The harness times its faults from this line.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }

    let mut all = Seen::default();
    while let Some(joined) = callers.join_next().await {
        let Ok(seen) = joined else { continue };
        all.calls.extend(seen.calls);
        for (zone, n) in seen.per_zone {
            *all.per_zone.entry(zone).or_default() += n;
        }
        for (task, n) in seen.per_task {
            *all.per_task.entry(task).or_default() += n;
        }
        for (code, n) in seen.failures {
            *all.failures.entry(code).or_default() += n;
        }
        all.first_failure = all.first_failure.or(seen.first_failure);
    }
    Ok(SegmentResult::from_calls(
        &all.calls,
        all.per_zone,
        all.per_task,
        all.failures,
        all.first_failure,
        measure_for,
        Duration::from_millis(spec.window_ms),
    ))
}

/// `compare hog THREADS`: keeps THREADS threads busy until killed (the CPU-starved client's
/// neighbours).
pub(crate) fn hog(threads: usize) -> ! {
    for _ in 1..threads.max(1) {
        std::thread::spawn(spin);
    }
    spin()
}

fn spin() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}
