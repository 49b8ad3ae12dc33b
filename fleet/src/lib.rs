//! A fleet model of Cloud Map discovery: what N client-service pairs cost in API calls, quota
//! and staleness, at rest and while ECS changes the service.
//!
//! Run it with `cargo run --release -p fleet --bin fleet-sim` (`--help` for the options).
//!
//! It is code, not a spreadsheet:
//!
//! - **the client is the real one.** Each pair is a [`Discovery`] started with
//!   [`Discovery::start_with_seed`] over a [`PairSource`]: the client's own polling loop, its
//!   schedule, jitter, backoff, throttle handling and decoding ([`Listing::decode`]). Nothing of
//!   it is re-implemented here;
//! - **the writes are the real Lambda's.** ECS's task state changes go through
//!   `cloudmap_sync::decide::on_event`, the minute-by-minute reconciliation through
//!   `on_reconcile` with the measured load; what they decide to write is written. ECS's own
//!   registration (as a task turns RUNNING) and deregistration (as it deactivates) are writes
//!   too ([`scenario`]);
//! - **Cloud Map is a model with the documented quotas** ([`cloud_map`], [`quota`]):
//!   `DiscoverInstances` 1,000/s with a 2,000 burst and `DiscoverInstancesRevision` 3,000/s as
//!   token buckets, `RequestLimitExceeded` past them, a revision that every write moves forwards;
//! - **time is Tokio's paused clock** on one thread: an hour of fleet time takes seconds, and a
//!   seed fixes everything (the plan, the start times, each pair's jitter), so a run is
//!   reproducible to the call.
//!
//! What it measures, over a window ([`run`](mod@run)): calls per second per operation and the busiest
//! second's share of each quota, throttled calls, staleness (for each write, the time until the
//! last pair received a listing that holds it: p50, p99, max over the writes), and the monthly
//! bill at $1 per million calls ([`report`]).
//!
//! Every pair polls the same 100-task service: the worst case, where a deployment of one service
//! makes every pair list (a platform-wide deployment, or one service every client calls).
//!
//! **The xDS mode** ([`xds`], `fleet-sim --xds`) feeds the pairs from the `cloudmap-xds`
//! server instead: per service, 2 replicas run the crate's real poller over the same model and
//! compute the server's real answers; each pair's real poller is fed by pushes through a model
//! of the crate's `XdsSource` (its switch rules and retry schedule; the module says why the
//! source itself is not run) and falls back to polling the model directly. The pairs are spread
//! over 100 services, of which one goes through the scenario.
//!
//! [`Discovery`]: cloudmap_balancer::discovery::Discovery
//! [`Discovery::start_with_seed`]: cloudmap_balancer::discovery::Discovery::start_with_seed
//! [`Listing::decode`]: cloudmap_balancer::discovery::Listing::decode
//! [`PairSource`]: cloud_map::PairSource

pub mod cloud_map;
pub mod ecs;
pub mod lambda;
pub mod quota;
pub mod report;
pub mod run;
pub mod scenario;
pub mod xds;

pub use run::{Config, Outcome, run};
pub use scenario::Scenario;
pub use xds::{XdsConfig, XdsOutcome};
