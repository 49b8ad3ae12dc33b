//! Per-call gRPC balancing for tonic clients of ECS services, driven by AWS Cloud Map.
//!
//! A [`Balancer`] discovers the instances of a Cloud Map service, keeps calls in the caller's own
//! availability zone while that zone has capacity, spills over in proportion to spare capacity
//! when it does not, follows the weight, lifecycle state, health and load that the sync Lambda
//! writes onto each instance (see [`contract`]), and keeps working on its last good snapshot when
//! AWS APIs fail. Its [`channel`](Balancer::channel) is what a generated tonic client takes
//! where it would take a `tonic::transport::Channel`.
//!
//! # Getting started
//!
//! ```no_run
//! # #[cfg(feature = "tonic")] mod example {
//! use cloudmap_balancer::Balancer;
//! use tonic_health::pb::HealthCheckRequest;
//! use tonic_health::pb::health_client::HealthClient;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Credentials, region and endpoint as the AWS SDK finds them (AWS_ENDPOINT_URL too).
//! let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//! let balancer = Balancer::builder(&aws, "prod.internal", "echo").build()?;
//!
//! // Any generated client: here the standard gRPC health service.
//! let mut client = HealthClient::new(balancer.channel());
//! let reply = client.check(HealthCheckRequest { service: String::new() }).await?;
//! println!("{:?}", reply.into_inner().status());
//!
//! // What the balancer sees.
//! let stats = balancer.stats();
//! println!("zone {:?}, {} instances, {:.0} % local", stats.local_zone, stats.instances.len(), stats.local_share * 100.0);
//! # Ok(()) } }
//! # fn main() {}
//! ```
//!
//! On ECS the balancer reads its own zone from the task metadata endpoint; elsewhere, set it with
//! [`Builder::local_zone`]. Options go through [`Builder::options`]:
//!
//! ```no_run
//! # #[cfg(feature = "tonic")] mod example {
//! # use std::time::Duration;
//! use cloudmap_balancer::{Balancer, Options, ZoneMode};
//! # fn run(aws: &aws_types::SdkConfig) -> Result<(), cloudmap_balancer::Error> {
//! let mut options = Options::default();
//! options.zone_mode = ZoneMode::Fixed { local_percent: 90 };
//! options.discovery.poll_interval = Duration::from_secs(2);
//! let balancer = Balancer::builder(aws, "prod.internal", "echo")
//!     .local_zone("eu-central-1a")
//!     .caller_service("prod.internal", "frontend") // Envoy-style zone routing from the callers' spread
//!     .options(options)
//!     .build()?;
//! # Ok(()) } }
//! # fn main() {}
//! ```
//!
//! # Configuration
//!
//! | option | default | meaning |
//! |---|---|---|
//! | [`Builder::zone`] / [`Builder::local_zone`] | [`OwnZone::Detect`] | own zone: ECS task metadata (`ECS_CONTAINER_METADATA_URI_V4`), a fixed zone, or none |
//! | [`Builder::caller_service`] | none | the callers' own Cloud Map service: enables Envoy's zone-aware routing from their zone spread |
//! | [`Options::zone_mode`] | `Adaptive` | `Adaptive` (Envoy's plan with a caller fleet, else load-driven), `Fixed { local_percent }`, `Off` |
//! | [`Options::panic_threshold`] | 0.5 | below this share of eligible weight, pick among everything not stopped |
//! | [`Options::load_max_age`] | 5 min | `LB_LOAD` older than this is ignored |
//! | `options.discovery.poll_interval` / `poll_jitter_percent` | 25 s / ±5 % | `DiscoverInstancesRevision` interval (≥ 1 s) and its jitter (0–50 %): one call per pair per poll, $0.104 per pair-month |
//! | `options.discovery.full_refresh_interval` | 60 s | `DiscoverInstances` at least this often (≥ 1 s), for Cloud Map health changes |
//! | `options.discovery.full_refresh_interval_with_lb_health` | 5 min | the same while every instance carries `LB_HEALTH` (its changes move the revision) |
//! | `options.discovery.backoff_base` / `backoff_max` | 1 s / 30 s | retry backoff while Cloud Map fails (outages, network errors) |
//! | `options.discovery.throttle_backoff_max` | 50 s | while throttled (`RequestLimitExceeded`): waits double from the poll interval up to this, ×[0.5, 1.5) |
//! | [`Options::first_snapshot_timeout`] | 5 s | calls before the first snapshot wait this long, then fail `UNAVAILABLE`; a configuration error (no such service or namespace, access denied) fails them and [`Balancer::ready`] at once, `FAILED_PRECONDITION` |
//! | [`Options::connect_timeout`] | 1 s | per-instance connection timeout |
//! | [`Options::ejection_base`] / [`Options::ejection_max`] | 1 s / 30 s | ejection after connection failures, doubling per consecutive failure; at most half the instances |
//! | [`Options::keep_alive_interval`] / [`Options::keep_alive_timeout`] | 30 s / 10 s | HTTP/2 pings that find dead connections |
//! | [`Options::zone_detection_timeout`] | 2 s | time for the task metadata request |
//! | `options.adaptive.tick` | 500 ms | adaptive controller period |
//! | `options.adaptive.slow_ratio` / `recover_ratio` | 1.5 / 1.2 | hysteresis band of local latency vs the reference |
//! | `options.adaptive.min_latency_gap` | 2 ms | latency differences below this are noise |
//! | `options.adaptive.cpu_gap` / `cpu_recover_gap` | 20 / 10 points | hysteresis band of local vs remote `LB_LOAD` |
//! | `options.adaptive.confirm_ticks` | 2 | ticks a signal must hold before the spill moves |
//! | `options.adaptive.step_up` / `step_down` | 0.1 / 0.05 | spill change per tick |
//! | `options.adaptive.latency_window` / `baseline_window` / `remote_fresh` | 2 s / 60 s / 10 s | averaging and memory of the controller |
//! | [`Builder::configure_endpoint`] | none | adjust each instance's tonic `Endpoint` (timeouts, windows, user agent) |
//! | `Builder::tls` (feature `tls`) | plaintext | TLS to the instances via tonic's `ClientTlsConfig` |
//! | [`Builder::rng_seed`] | random | reproducible picks and jitter |
//!
//! # Modules
//!
//! - [`discovery`]: Cloud Map polling into immutable snapshots (HTTP and DNS namespaces), one
//!   poller per service per process, static stability, what it costs in API calls.
//! - [`picker`]: eligibility, weights, zone choice (Envoy's zone-aware routing, the adaptive
//!   controller) and power of two choices. Pure.
//! - [`Balancer`] and [`BalancedChannel`]: the tonic integration (connections, ejection,
//!   re-picks, in-flight tracking), module `balance`.
//! - [`zone`]: the caller's own zone from ECS task metadata.
//! - [`contract`]: the attribute contract with the sync Lambda.
//! - [`aws`]: the Cloud Map client, with the endpoint-override fix for local stand-ins.
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade (install any recorder):
//! `cloudmap_balancer_calls_total{locality}`, `cloudmap_balancer_spills_total`,
//! `cloudmap_balancer_panic_picks_total`, `cloudmap_balancer_connect_failures_total`,
//! `cloudmap_balancer_ejections_total`, `cloudmap_balancer_repicks_total`,
//! `cloudmap_balancer_discovery_polls_total{kind}`, `cloudmap_balancer_discovery_errors_total{cause}`
//! and the gauges `cloudmap_balancer_discovery_instances`,
//! `cloudmap_balancer_discovery_unroutable_instances`,
//! `cloudmap_balancer_discovery_attribute_problems`, `cloudmap_balancer_instances`,
//! `cloudmap_balancer_eligible_instances`, `cloudmap_balancer_local_share`, all labelled with
//! `namespace` and `service`. [`Balancer::stats`] reads the same counters plus per-instance and
//! per-zone pick counts; its snapshot lists the instances that could not be routed
//! ([`Snapshot::unroutable`](discovery::Snapshot::unroutable)) and those with odd attributes
//! ([`Snapshot::attribute_problems`](discovery::Snapshot::attribute_problems)).
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `aws` | yes (via `tonic`) | Cloud Map discovery: [`aws`], [`discovery`] |
//! | `tonic` | yes | the balanced channel, [`zone`] |
//! | `tls` | no | `Builder::tls` (tonic's rustls with *ring*) |
//!
//! With `default-features = false` only [`contract`], [`picker`] and [`Instance`] remain, with no
//! AWS SDK, Tokio or tonic: what the sync Lambda links.

pub mod contract;
mod error;
mod instance;
pub mod picker;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod discovery;
#[cfg(feature = "aws")]
mod telemetry;

#[cfg(feature = "tonic")]
mod balance;
#[cfg(feature = "tonic")]
pub mod zone;

pub use error::{BoxError, CloudMapErrorKind, Error};
pub use instance::{CloudMapHealth, Instance, Unroutable};
pub use picker::{AdaptiveOptions, ZoneMode};

#[cfg(feature = "tonic")]
pub use balance::{
    AdaptiveStats, BalancedChannel, Balancer, Builder, CallStats, InstanceStats, Options,
    ResponseFuture, Stats, ZoneStats,
};
#[cfg(feature = "tonic")]
pub use zone::OwnZone;
