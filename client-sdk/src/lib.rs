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
//! `Cargo.toml` (default features off, as the AWS SDK and tonic recommend for small builds):
//!
//! ```toml
//! [dependencies]
//! cloudmap-balancer = "0.1"   # default features: `tonic` (the balanced channel) and `aws`
//! aws-config = { version = "1.13", default-features = false, features = ["rt-tokio", "default-https-client", "behavior-version-latest"] }
//! tonic = { version = "0.14.9", default-features = false, features = ["codegen", "transport"] }
//! tonic-prost = "0.14.9"   # what code from tonic-prost-build uses
//! prost = "0.14"
//! tokio = { version = "1.54", features = ["rt-multi-thread", "macros"] }
//! ```
//!
//! The workspace's `examples/own-proto` crate has its own proto, build script and generated
//! client; with any generated client the channel is used as here:
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
//! The balancer reads its own zone from the ECS task metadata endpoint, or from EC2 instance
//! metadata (IMDSv2) off ECS (no IAM needed for either; see [`zone`] for the order and what a
//! Fargate task needs for zone IDs); or set it with [`Builder::local_zone`] and
//! [`Builder::local_zone_id`]. Options go through [`Builder::options`]:
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
//! | [`Builder::namespace_owner`] | [`NamespaceOwner::Caller`] | the account that owns a namespace shared through AWS RAM: `Account(id)` sends `OwnerAccount` on every discovery call, `Detect` finds it once from the namespace's `ResourceOwner`; a missing share is a configuration error (below) |
//! | [`Options::zone_mode`] | `Adaptive` | `Adaptive` (Envoy's plan with a caller fleet, else load-driven), `Fixed { local_percent }`, `Off` |
//! | [`Options::panic_threshold`] | 0.5 | below this share of eligible weight, pick among everything not stopped |
//! | [`Options::load_max_age`] | 5 min | `LB_LOAD` older than this is ignored |
//! | `options.discovery.poll_interval` / `poll_jitter_percent` | 25 s / ±5 % | `DiscoverInstancesRevision` interval (≥ 1 s) and its jitter (0–50 %): one call per pair per poll, $0.104 per pair-month |
//! | `options.discovery.full_refresh_interval` | 60 s | `DiscoverInstances` at least this often (≥ 1 s), for Cloud Map health changes; the first one after a random part of the second half of the interval |
//! | `options.discovery.full_refresh_interval_with_lb_health` | 5 min | the same while every instance carries `LB_HEALTH` (its changes move the revision) |
//! | `options.discovery.backoff_base` / `backoff_max` | 1 s / 30 s | retry backoff while Cloud Map fails (outages, network errors) |
//! | `options.discovery.throttle_backoff_max` | 50 s | while throttled (`RequestLimitExceeded`): waits double from the poll interval up to this, ×[0.5, 1.5) |
//! | [`Options::first_snapshot_timeout`] | 5 s | calls before the first snapshot wait this long, then fail `UNAVAILABLE`; a configuration error (no such service or namespace, access denied) fails them and [`Balancer::ready`] at once, `FAILED_PRECONDITION` |
//! | [`Options::connect_timeout`] | 1 s | per-instance connection timeout |
//! | [`Options::ip_family`] | [`IpFamily::Ipv4First`] | which address of a dual-stack instance is dialled first: `Ipv4First`, `Ipv6` (no fallback) or `Ipv6First`; the other is tried per connection when the first fails or is silent for 250 ms (Happy Eyeballs, gRFC A61). IPv6-only instances are called at `[addr]:port` |
//! | [`Options::ejection_base`] / [`Options::ejection_max`] | 1 s / 30 s | ejection after connection failures, doubling per consecutive failure |
//! | [`Options::max_ejection_percent`] | 50 | ejections of every kind together never exceed this share of the instances |
//! | `options.health_check.enabled` / `service` | on / `""` | a gRPC health `Watch` (A17) on every connection; `NOT_SERVING` takes no new calls |
//! | `options.health_check.backoff_base` / `backoff_max` | 1 s / 30 s | re-opening a failed health stream |
//! | `options.outlier.enabled` | on | outlier detection (A50) |
//! | `options.outlier.consecutive_failures` | 5 | eject after this many failed calls in a row (`None`: off) |
//! | `options.outlier.interval` | 10 s | success-rate and failure-percentage sweeps |
//! | `options.outlier.base_ejection_time` / `max_ejection_time` | 30 s / 300 s | the n-th ejection lasts n × base, capped |
//! | `options.outlier.max_ejection_percent` | 10 | outlier detection ejects only while at most this share is ejected (one always may be) |
//! | `options.outlier.success_rate` | A50's: stdev factor 1900, 5 hosts, 100 calls, 100 % | `None`: off |
//! | `options.outlier.failure_percentage` | A50's: 85 %, 5 hosts, 50 calls, 100 % | `None`: off |
//! | `options.outlier.failure_codes` | `UNAVAILABLE`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS` | statuses that count as the server failing |
//! | `options.retry.policy` | none | a retry policy (A6) for every method: attempts (≤ 5), backoff, jitter, retryable codes |
//! | `options.retry.methods` | empty | policies per `/package.Service/Method` or `/package.Service/` |
//! | `options.retry.throttling` | 10 tokens, 0.1 per success | A6's retry throttle |
//! | `options.retry.buffer_limit` | 1 MiB | request bytes kept per call for replay; larger calls are not retried |
//! | `options.slow_start` | off | ramp new tasks up after `LB_RUNNING_SINCE` (Envoy's curve; window, aggression, minimum 10 %) |
//! | `options.latency_aware` | on (ratio 2, gap 2 ms + 4 × the client's jitter, persist 10 ms, decay 100 ms (also of an avoided instance's estimate), stale after 1 s; an estimate counts from 16 answers, not timed on a fresh connection, and from its first answer after a silence once it had them; a call a stall of the client covers counts as the value nearest the estimate that the stall leaves possible) | within a zone, an instance over twice as slow as the other candidate and slower by more than the gap is compared by `(in-flight + 1) × latency` per unit of weight (with the delay common to every call taken off both: the client's jitter, and latency up to the gap as far as the difference is past it, at most 90 % of the lower), so a slow instance stops taking calls; smaller differences, and slow answers that do not last 10 ms, are noise; `None`: in-flight calls alone ([`picker::LatencyAware`]) |
//! | [`Options::keep_alive_interval`] / [`Options::keep_alive_timeout`] | 30 s / 10 s | HTTP/2 pings that find dead connections |
//! | [`Options::zone_detection_timeout`] | 2 s | time for the task metadata request |
//! | `options.adaptive.tick` | 500 ms | spill controller period |
//! | `options.adaptive.slow_ratio` / `recover_ratio` | 1.5 / 1.2 | hysteresis band of the local zone's median latency vs the other zones' |
//! | `options.adaptive.min_latency_gap` / `lag_gap_factor` | 2 ms / 4 | latency differences below the larger of this and 4 × the client's own scheduling lag are noise |
//! | `options.adaptive.latency_window` / `remote_window` | 2 s / 10 s | the local median's window; the longest window for the other zones' |
//! | `options.adaptive.min_local_samples` / `min_remote_samples` | 20 / 5 | calls needed on each side for a latency verdict |
//! | `options.adaptive.probe_share` | 0.005 | share of calls to the other zones while nothing is spilled (their latency stays measured) |
//! | `options.adaptive.cpu_gap` / `cpu_recover_gap` | 20 / 10 points | hysteresis band of local vs remote `LB_LOAD` |
//! | `options.adaptive.confirm_ticks` | 2 | ticks a signal must hold before the spill moves |
//! | `options.adaptive.step_up` / `step_down` | 0.1 / 0.25 | spill change per tick |
//! | `options.adaptive.reversal_interval` | 10 s | the spill changes direction at most once per this |
//! | [`Builder::configure_endpoint`] | none | adjust each instance's tonic `Endpoint` (timeouts, windows, user agent) |
//! | `Builder::tls` (feature `tls`) | plaintext | TLS to the instances via tonic's `ClientTlsConfig` |
//! | `Builder::xds` (feature `xds`) | from the environment: `CLOUDMAP_XDS_SERVERS`, `GRPC_XDS_BOOTSTRAP_CONFIG`, `GRPC_XDS_BOOTSTRAP`; direct when none is set | instances pushed by the `cloudmap-xds` server, Cloud Map the fallback (`discovery::xds`); `None` polls Cloud Map directly |
//! | `XdsOptions::start_timeout` / `lost_timeout` | 2 s / 15 s (+0–50 % jitter) | no answer this long after start, or since the stream was lost: Cloud Map is polled directly until a server answers again |
//! | `XdsOptions::connect_timeout` / `backoff_base` / `backoff_max` | 1 s / 250 ms / 5 s | per server; waits between rounds of servers that did not answer (doubling, ±20 %) |
//! | `XdsOptions::tls_ca_pem` / `tls_domain` (feature `tls`) | none / the URI's host | the CA `https://` servers are verified against (the bootstrap's `tls` credentials' `ca_certificate_file`), and the name on their certificate |
//! | `XdsOptions::node_id` / `zone` / `region` | `cloudmap-balancer-PID` / the builder's fixed zone or zone ID / none | the node presented to the server (the bootstrap's `node`, when read from one) |
//! | [`Builder::rng_seed`] | random | reproducible picks and jitter |
//!
//! # Resilience
//!
//! The client learns from Cloud Map that a task drains, stops or fails only at its next poll.
//! Between polls, every call is defended by the balancer itself:
//!
//! - **Health watch** ([gRFC A17], on by default): a `grpc.health.v1.Health/Watch` stream on
//!   every connection. While the server says `NOT_SERVING` (as the demo server does for its drain
//!   delay after SIGTERM), the instance takes no new calls; the table is rebuilt within a task
//!   wake-up of the server's message. See [`HealthCheck`] for the deviations from A17.
//! - **Connection signals**: a connection that breaks or receives `GOAWAY` takes no new calls
//!   from that moment (on TLS connections, `GOAWAY` is noticed by the next call that tries the
//!   connection, which is then retried). A call in flight on a connection that breaks fails
//!   `UNAVAILABLE`, naming the instance and its address.
//! - **Outlier detection** ([gRFC A50] and Envoy's consecutive failures, on by default): see
//!   [`outlier`].
//! - **Retries** ([gRFC A6]): transparent retries of calls that never reached the server's
//!   application, always; retry policies with A6's throttle, opt in. See [`retry`].
//! - **Deadlines and transport failures**: a deadline that passes while a call waits is
//!   `DEADLINE_EXCEEDED` (never a broken connection), keeps the connection and counts nothing
//!   against the instance; each transport error is read by its type, and one the balancer does
//!   not know is not taken for a broken connection. The table of errors and what each does is
//!   in [`retry`] ("Transport failures").
//! - **Latency-aware picks** (on by default): within a zone, a task answering over twice as
//!   slowly as the other candidate, and over 2 ms more slowly, stops taking calls, and is probed
//!   again, one call at a time, once its estimate has decayed towards the others' (a few hundred
//!   milliseconds). Neither A50 nor Envoy ejects for latency; this is how
//!   Finagle's and Linkerd's EWMA balancers keep one slow task from owning the p99. Unlike
//!   theirs, the client's own delay is kept out: a 5 ms heartbeat measures its scheduling lag,
//!   a call that a stall covers counts only as far as it proves (the
//!   value nearest the estimate of those the stall leaves possible), differences within 4 × its jitter are noise,
//!   and slow answers count in full only once they last 10 ms, so a busy or CPU-throttled caller
//!   and servers that answer in microseconds keep the weight shares. See
//!   [`picker::LatencyAware`].
//! - **Slow start** (Envoy's, off by default): new tasks take a growing share over a window.
//!
//! Without a retry policy, an instance that fails every call costs at most the run of
//! consecutive failures that ejects it (5) plus the calls already on their way to it (fewer than
//! the calls in flight), per ejection; with a policy that retries `UNAVAILABLE`, none.
//!
//! [gRFC A17]: https://github.com/grpc/proposal/blob/master/A17-client-side-health-checking.md
//! [gRFC A50]: https://github.com/grpc/proposal/blob/master/A50-xds-outlier-detection.md
//! [gRFC A6]: https://github.com/grpc/proposal/blob/master/A6-client-retries.md
//!
//! # Modules
//!
//! - [`discovery`]: Cloud Map polling into immutable snapshots (HTTP and DNS namespaces), one
//!   poller per service per process, static stability, what it costs in API calls.
//! - [`picker`]: eligibility, weights, zone choice (Envoy's zone-aware routing, the adaptive
//!   controller) and power of two choices. Pure.
//! - [`Balancer`] and [`BalancedChannel`]: the tonic integration (connections, health watch,
//!   retries, in-flight tracking), module `balance`.
//! - [`outlier`]: outlier detection and the ejection registry. Pure.
//! - [`retry`]: retry policies, the throttle, backoff, deadlines. Pure.
//! - [`zone`]: the caller's own zone from ECS task metadata.
//! - [`contract`]: the attribute contract with the sync Lambda.
//! - [`aws`]: the Cloud Map client, with the endpoint-override fix for local stand-ins.
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade (install any recorder):
//! `cloudmap_balancer_calls_total{locality}`, `cloudmap_balancer_spills_total`,
//! `cloudmap_balancer_panic_picks_total`, `cloudmap_balancer_connect_failures_total`,
//! `cloudmap_balancer_ejections_total{reason}`, `cloudmap_balancer_retries_total{kind}`,
//! `cloudmap_balancer_retries_throttled_total`, `cloudmap_balancer_failed_calls_total`,
//! `cloudmap_balancer_health_changes_total{status}`,
//! `cloudmap_balancer_discovery_polls_total{kind}`,
//! `cloudmap_balancer_discovery_errors_total{cause}`,
//! `cloudmap_balancer_discovery_source_switches_total{to}` (the xDS source's fallback to Cloud
//! Map and back), `cloudmap_balancer_discovery_rejected_answers_total` (the xDS source's NACKs)
//! and the gauges
//! `cloudmap_balancer_discovery_instances`, `cloudmap_balancer_discovery_unroutable_instances`,
//! `cloudmap_balancer_discovery_attribute_problems`, `cloudmap_balancer_instances`,
//! `cloudmap_balancer_eligible_instances`, `cloudmap_balancer_not_serving_instances`,
//! `cloudmap_balancer_ejected_instances`, `cloudmap_balancer_local_share`, all labelled with
//! `namespace` and `service`; per instance (labels `instance`, `zone`, `zone_id`): its health,
//! ejections by reason, retries, throttled retries and slow-start factor. The full table is in
//! the `telemetry` module's source, and in the README. [`Balancer::stats`] reads the same
//! counters plus per-instance and per-zone pick counts, each instance's health-watch status,
//! ejection reason, retries and slow-start factor; its snapshot lists the instances that could
//! not be routed ([`Snapshot::unroutable`](discovery::Snapshot::unroutable)) and those with odd
//! attributes ([`Snapshot::attribute_problems`](discovery::Snapshot::attribute_problems)).
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `aws` | yes (via `tonic`) | Cloud Map discovery: [`aws`], [`discovery`] |
//! | `tonic` | yes | the balanced channel, [`zone`] |
//! | `tls` | no | `Builder::tls` (tonic's rustls with *ring*) |
//! | `xds` | no | `Builder::xds`, `discovery::xds`: instances from the `cloudmap-xds` server (adds `envoy-types`) |
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
mod codes;
#[cfg(feature = "tonic")]
pub mod outlier;
#[cfg(feature = "tonic")]
pub mod retry;
#[cfg(feature = "tonic")]
pub mod zone;

pub use error::{BoxError, CloudMapErrorKind, Error};
pub use instance::{CloudMapHealth, Instance, IpFamily, UnknownIpFamily, Unroutable};
pub use picker::{AdaptiveOptions, ZoneMode};

#[cfg(feature = "tonic")]
pub use balance::{
    AdaptiveStats, BalancedChannel, Balancer, Builder, CallStats, EjectionCounts, HealthCheck,
    HealthStatus, InstanceStats, Options, ResponseFuture, Stats, ZoneStats,
};
#[cfg(feature = "tonic")]
pub use codes::StatusCodes;
#[cfg(feature = "aws")]
pub use discovery::NamespaceOwner;
#[cfg(feature = "tonic")]
pub use zone::OwnZone;
