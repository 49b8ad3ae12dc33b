//! Discovery: keeping a current, immutable [`Snapshot`] of a service's instances.
//!
//! A background task polls an [`InstanceSource`], in production [`CloudMapSource`]. The
//! discovery API answers by namespace and service name for every namespace type: HTTP and
//! private DNS namespaces (what ECS service discovery usually creates) are tested against moto;
//! public DNS namespaces use the same calls.
//! A namespace another account shares with the caller's through AWS RAM is read with its
//! owner's account as `OwnerAccount` ([`NamespaceOwner`]; what the crate sends is tested through
//! a recording proxy, since moto cannot share a namespace).
//!
//! - every [`poll_interval`](DiscoveryOptions::poll_interval) (default 25 s, ±5 % jitter) it
//!   asks for the cheap `DiscoverInstancesRevision` and lists the instances
//!   (`DiscoverInstances`, `HEALTHY_OR_ELSE_ALL`) only when the revision changed. Revisions
//!   are compared with `!=`, never ordered: Cloud Map promises a change, not a direction (and
//!   moto's revision goes down when an instance is deregistered);
//! - it lists anyway every [`full_refresh_interval`](DiscoveryOptions::full_refresh_interval)
//!   (default 60 s), because Cloud Map health changes do not move the revision; every
//!   [`full_refresh_interval_with_lb_health`](DiscoveryOptions::full_refresh_interval_with_lb_health)
//!   (default 5 minutes) while every instance carries the sync Lambda's `LB_HEALTH`, whose
//!   changes are attribute writes and so move the revision;
//! - each new listing that differs from the one in service becomes a new [`Snapshot`], published
//!   atomically: readers never lock and never see a half-applied change.
//!
//! # Cost and quotas
//!
//! Every poll is one API call, so a client-service pair costs 2,592,000 / `poll_interval` calls
//! a month at rest, $0.104 at the default 25 s ($1 per million). Every write to the service
//! (ECS registering a task, the Lambda writing a state) moves the revision, so while a service
//! deploys every pair lists at every poll: `pairs / poll_interval` `DiscoverInstances` a second
//! against the account's 1,000/s. The defaults keep 10,000 pairs under a quarter of either quota
//! at rest and under half during a rolling deployment of 100 tasks, measured by the fleet model
//! (`scripts/fleet`; README, "Capacity"). A lower poll rate does not slow draining: the sync
//! Lambda's `DRAINING` arrives within one poll, and the balancer's health watch on each
//! connection sees a draining task's `NOT_SERVING` within milliseconds.
//!
//! **One poller per service per process.** Balancers built by
//! [`Balancer::builder`](crate::Balancer::builder) share one poller for each Cloud Map service
//! they name, as the balanced service or as a `caller_service`, when they read it the same way:
//! the same credentials provider (its identity-cache partition, shared by its clones only), region,
//! endpoint URL, FIPS and dual-stack settings, [`DiscoveryOptions`] and Tokio runtime. Balancers
//! for other accounts, roles, regions or endpoints never share. Custom sources are never shared.
//!
//! # Failures
//!
//! **Static stability:** no failure (throttling, an outage, a deleted service) takes the last
//! good snapshot out of service. Each is logged (a warning when a streak starts, then debug),
//! counted by cause, and kept for [`DiscoveryStatus::last_error`]; [`CloudMapErrorKind`](crate::CloudMapErrorKind) says
//! which kind it was, from the AWS error code:
//!
//! - **throttled** (`RequestLimitExceeded`): the n-th throttled attempt in a row waits
//!   `poll_interval × 2^(n−1)`, at most [`throttle_backoff_max`](DiscoveryOptions::throttle_backoff_max),
//!   times a uniform draw in [0.5, 1.5): a throttled fleet never calls faster than a healthy one;
//! - **configuration errors** (`ServiceNotFound`, `NamespaceNotFound`, `AccessDenied`,
//!   `InvalidInput`): retried at the poll interval, so a service created later (or a namespace
//!   shared later, see [`NamespaceOwner`]) is found at the next poll. Before the first
//!   snapshot, [`Discovery::configuration_error`] resolves with the error, and the balancer's
//!   `ready()` and calls fail at once with it (`FAILED_PRECONDITION`);
//! - **anything else** (an outage, a network error): the next attempt waits
//!   [`backoff_base`](DiscoveryOptions::backoff_base) × 2^(n−1), capped at
//!   [`backoff_max`](DiscoveryOptions::backoff_max), ±10 %.
//!
//! The SDK's own retries are off for the discovery calls: the poller is the retry loop, so one
//! attempt is one request.
//!
//! # Odd answers
//!
//! - **An empty listing right after a non-empty one** is held: the snapshot in service stays
//!   until a second listing, `backoff_base` later, confirms it (a glitch costs one listing, not
//!   an outage). A confirmed empty listing is published as it is: the service really has no
//!   instances, and calls then fail `UNAVAILABLE` rather than go to instances Cloud Map no longer
//!   lists.
//! - **A revision that goes backwards** is a change like any other: listed and published.
//! - **A listing of more than 1,000 instances** (Cloud Map's quota per service and
//!   `DiscoverInstances`' maximum; a custom source may list more) is taken whole: nothing is
//!   dropped, and the picker works on any number. A Cloud Map answer of exactly 1,000 is logged
//!   as possibly incomplete, since `DiscoverInstances` has no pagination.
//! - **Instances that cannot be used as written** are never dropped silently: an instance
//!   without a usable address or port is left out of the picker and listed in
//!   [`Snapshot::unroutable`] with the reason; an instance with odd attribute values is listed
//!   in [`Snapshot::attribute_problems`]; an unrecognised `LB_STATE` under `LB_SCHEMA` 1 (a
//!   typo such as `DRAINNG`) makes the instance `DRAINING`. Each is logged once when it appears,
//!   and gauges count them.

mod cloud_map;
mod decode;
mod poll;
mod schedule;
#[cfg(feature = "tonic")]
pub(crate) mod shared;
mod source;
#[cfg(feature = "xds")]
pub mod xds;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fastrand::Rng;
use tokio::sync::{mpsc, oneshot, watch};

pub use cloud_map::{CloudMapSource, NamespaceOwner};
pub use decode::{AttributeProblems, UnroutableInstance};
pub use source::{BoxFuture, InstanceSource, Listing, SourceKind, StaticSource};

use crate::error::Error;
use crate::instance::Instance;
use crate::telemetry::{DiscoveryMetrics, Ident};

/// One immutable view of a service's instances: the listing in service, when it arrived, and
/// its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    listing: Listing,
    fetched_at: SystemTime,
    generation: u64,
}

impl Snapshot {
    /// The instances that can be called, ordered by instance ID.
    pub fn instances(&self) -> &[Instance] {
        self.listing.instances()
    }

    /// Instances Cloud Map listed that cannot be called (no usable `AWS_INSTANCE_IPV4` or
    /// `AWS_INSTANCE_IPV6`, or no usable `AWS_INSTANCE_PORT`), with the reason; they are not in
    /// [`instances`](Self::instances).
    pub fn unroutable(&self) -> &[UnroutableInstance] {
        self.listing.unroutable()
    }

    /// Instances in service whose attribute values were not all understood, and how they were
    /// decoded.
    pub fn attribute_problems(&self) -> &[AttributeProblems] {
        self.listing.attribute_problems()
    }

    /// Cloud Map's `InstancesRevision` of the listing.
    pub fn revision(&self) -> Option<i64> {
        self.listing.revision()
    }

    /// When the listing arrived.
    pub fn fetched_at(&self) -> SystemTime {
        self.fetched_at
    }

    /// Counts published snapshots: 1 for the first, one more for each change.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// How discovery polls. The defaults keep a fleet of 10,000 client-service pairs inside a
/// quarter of the account's discovery quotas at rest, and under half during a deployment of a
/// 100-task service (measured with the fleet model, `cargo run --release -p fleet --bin
/// fleet-sim`; see BENCHMARKS.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DiscoveryOptions {
    /// How often the revision is checked (`DiscoverInstancesRevision`). At least 1 s.
    /// Default 25 s. Draining does not wait for it: the sync Lambda's `DRAINING` reaches the
    /// client within one poll, and a draining task's gRPC health turns `NOT_SERVING` at once.
    pub poll_interval: Duration,
    /// Each wait between polls is drawn uniformly from `poll_interval ± poll_jitter_percent`,
    /// so that clients started together drift apart. 0 to 50. Default 5 (±1.25 s at 25 s).
    pub poll_jitter_percent: u32,
    /// How often the instances are listed even when the revision did not change
    /// (`DiscoverInstances`): Cloud Map health changes do not move the revision. At least 1 s.
    /// Default 60 s. The first one after the first listing comes at a random point in the
    /// second half of the interval, so that pollers started together list at different times.
    pub full_refresh_interval: Duration,
    /// The full-refresh interval while every instance of the last listing carries `LB_HEALTH`:
    /// the sync Lambda then writes health changes as attributes, which move the revision. At
    /// least 1 s. Default 5 minutes.
    pub full_refresh_interval_with_lb_health: Duration,
    /// Wait after the first consecutive failure (an outage, a network error). Default 1 s.
    pub backoff_base: Duration,
    /// Longest wait between failing attempts. Default 30 s.
    pub backoff_max: Duration,
    /// Longest wait while Cloud Map throttles (`RequestLimitExceeded`): the n-th throttled
    /// attempt in a row waits `poll_interval × 2^(n−1)`, at most this (or `poll_interval`,
    /// when that is longer), times a uniform draw in [0.5, 1.5). Default 50 s.
    pub throttle_backoff_max: Duration,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(25),
            poll_jitter_percent: 5,
            full_refresh_interval: Duration::from_secs(60),
            full_refresh_interval_with_lb_health: Duration::from_secs(300),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            throttle_backoff_max: Duration::from_secs(50),
        }
    }
}

impl DiscoveryOptions {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |name, reason: &str| {
            Err(Error::InvalidOption {
                name,
                reason: reason.to_owned(),
            })
        };
        let second = Duration::from_secs(1);
        if self.poll_interval < second {
            return invalid("poll_interval", "must be at least 1 s");
        }
        if self.poll_jitter_percent > 50 {
            return invalid("poll_jitter_percent", "must be at most 50");
        }
        if self.full_refresh_interval < second {
            return invalid("full_refresh_interval", "must be at least 1 s");
        }
        if self.full_refresh_interval_with_lb_health < second {
            return invalid(
                "full_refresh_interval_with_lb_health",
                "must be at least 1 s",
            );
        }
        if self.backoff_base.is_zero() {
            return invalid("backoff_base", "must be above 0");
        }
        if self.backoff_max < self.backoff_base {
            return invalid("backoff_max", "must be at least backoff_base");
        }
        Ok(())
    }
}

/// What discovery has been doing.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DiscoveryStatus {
    /// Revision checks made.
    pub revision_polls: u64,
    /// Listings made.
    pub lists: u64,
    /// Failed attempts (revision checks or listings), throttled ones included.
    pub errors: u64,
    /// Attempts Cloud Map throttled (`RequestLimitExceeded`).
    pub throttled: u64,
    /// Failures since the last success.
    pub consecutive_errors: u32,
    /// The last failure.
    pub last_error: Option<Arc<Error>>,
    /// When an attempt last succeeded.
    pub last_success: Option<SystemTime>,
    /// Where the instances came from at the last attempt (for the xDS source: the server, or
    /// Cloud Map as its fallback).
    pub source: SourceKind,
    /// Times the source changed between xDS and Cloud Map (the xDS source's fallback and
    /// return).
    pub source_switches: u64,
    /// Answers the source rejected so far: for the xDS source, answers it could not decode
    /// and NACKed (the last accepted one stayed in service). Read at each attempt; a rejection
    /// wakes the poller for one.
    pub rejected_answers: u64,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running discovery poller: the current [`Snapshot`] of one service, kept up to date in the
/// background. Cheap to clone (clones share the poller); the poller stops when the last clone is
/// dropped. The [`Balancer`](crate::Balancer) runs one per service (shared with every other
/// balancer of the process that names the same service the same way); use one directly to
/// watch a service without balancing calls to it.
#[derive(Debug, Clone)]
pub struct Discovery {
    inner: Arc<Running>,
}

#[derive(Debug)]
struct Running {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    rejected: watch::Receiver<Option<Arc<Error>>>,
    requests: mpsc::Sender<poll::Reply>,
    status: Arc<Mutex<DiscoveryStatus>>,
    ident: Ident,
    _task: AbortOnDrop,
}

#[cfg(feature = "tonic")]
impl Running {
    /// Whether the poller task still runs (it stops with its runtime).
    fn is_alive(&self) -> bool {
        self.snapshots.has_changed().is_ok()
    }
}

impl Discovery {
    /// Starts polling `source` on the current Tokio runtime, with a random seed for the jitter.
    /// `namespace` and `service` name it in logs, errors and metrics. Fails on invalid options
    /// or outside a Tokio runtime.
    pub fn start(
        source: impl InstanceSource,
        namespace: impl Into<String>,
        service: impl Into<String>,
        options: DiscoveryOptions,
    ) -> Result<Self, Error> {
        Self::start_with_seed(source, namespace, service, options, fastrand::u64(..))
    }

    /// [`Discovery::start`] with the random number generator of the jitter seeded by `seed`:
    /// under paused Tokio time, the same seed gives the same calls at the same instants.
    pub fn start_with_seed(
        source: impl InstanceSource,
        namespace: impl Into<String>,
        service: impl Into<String>,
        options: DiscoveryOptions,
        seed: u64,
    ) -> Result<Self, Error> {
        options.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let ident = Ident {
            namespace: namespace.into(),
            service: service.into(),
        };
        Ok(Self::spawn(
            Arc::new(source),
            options,
            ident,
            seed,
            &runtime,
        ))
    }

    /// Starts polling `source` on `runtime`.
    pub(crate) fn spawn(
        source: Arc<dyn InstanceSource>,
        options: DiscoveryOptions,
        ident: Ident,
        seed: u64,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (snapshots_tx, snapshots) = watch::channel(None);
        let (rejected_tx, rejected) = watch::channel(None);
        let (requests, requests_rx) = mpsc::channel(16);
        let status = Arc::new(Mutex::new(DiscoveryStatus::default()));
        let poller = poll::Poller {
            source,
            options,
            metrics: DiscoveryMetrics::new(&ident),
            ident: ident.clone(),
            snapshots: snapshots_tx,
            rejected: rejected_tx,
            requests: requests_rx,
            status: Arc::clone(&status),
            rng: Rng::with_seed(seed),
        };
        let task = runtime.spawn(poller.run());
        Self {
            inner: Arc::new(Running {
                snapshots,
                rejected,
                requests,
                status,
                ident,
                _task: AbortOnDrop(task),
            }),
        }
    }

    /// The snapshot in service, if any arrived yet.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner.snapshots.borrow().clone()
    }

    /// A receiver that sees every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.inner.snapshots.clone()
    }

    /// Resolves with the error once discovery has no snapshot and Cloud Map answered its last
    /// attempt with a configuration error ([`CloudMapErrorKind::is_configuration`]: no such
    /// service or namespace, access denied, an invalid name); at once if that is the case now.
    /// Never resolves while a snapshot is in service. Polling goes on meanwhile, so a service
    /// created later is picked up at the next poll.
    ///
    /// [`CloudMapErrorKind::is_configuration`]: crate::CloudMapErrorKind::is_configuration
    pub async fn configuration_error(&self) -> Arc<Error> {
        let mut rejected = self.inner.rejected.clone();
        let error = rejected
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|error| error.clone());
        match error {
            Some(error) => error,
            // The poller is gone; whoever waits learns that elsewhere.
            None => std::future::pending().await,
        }
    }

    /// Lists now (instead of at the next poll), and returns the generation of the snapshot in
    /// service afterwards.
    pub async fn refresh(&self) -> Result<u64, Arc<Error>> {
        let (reply, outcome) = oneshot::channel();
        let closed = || {
            Arc::new(Error::Closed {
                namespace: self.inner.ident.namespace.clone(),
                service: self.inner.ident.service.clone(),
            })
        };
        self.inner
            .requests
            .send(reply)
            .await
            .map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    /// What discovery has been doing (shared by every user of a shared poller).
    pub fn status(&self) -> DiscoveryStatus {
        self.inner
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests;
