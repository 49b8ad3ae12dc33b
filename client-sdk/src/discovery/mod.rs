//! Discovery: keeping a current, immutable [`Snapshot`] of a service's instances.
//!
//! A background task polls an [`InstanceSource`], in production [`CloudMapSource`]:
//!
//! - every [`poll_interval`](DiscoveryOptions::poll_interval) (default 5 s, ±10 % jitter) it
//!   asks for the cheap `DiscoverInstancesRevision` and lists the instances
//!   (`DiscoverInstances`, `HEALTHY_OR_ELSE_ALL`) only when the revision changed;
//! - every [`full_refresh_interval`](DiscoveryOptions::full_refresh_interval) (default 60 s) it
//!   lists anyway, because Cloud Map health changes do not move the revision;
//! - each new listing that differs from the one in service becomes a new [`Snapshot`], published
//!   atomically: readers never lock and never see a half-applied change.
//!
//! **Static stability:** any error (throttling, an outage, a deleted service) keeps the last
//! good snapshot in service. The error is logged, counted and kept for
//! [`DiscoveryStatus::last_error`], and the next attempt waits
//! [`backoff_base`](DiscoveryOptions::backoff_base) × 2^(n−1) after the n-th consecutive
//! failure, capped at [`backoff_max`](DiscoveryOptions::backoff_max).
//!
//! An empty listing is published as it is: the service really has no instances, and calls then
//! fail `UNAVAILABLE` rather than go to instances Cloud Map no longer lists.

mod cloud_map;
mod poll;
mod source;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fastrand::Rng;
use tokio::sync::{mpsc, oneshot, watch};

pub use cloud_map::CloudMapSource;
pub use source::{BoxFuture, InstanceSource, Listing, StaticSource};

use crate::error::Error;
use crate::instance::Instance;
use crate::telemetry::{DiscoveryMetrics, Ident};

/// One immutable view of a service's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    instances: Vec<Instance>,
    revision: Option<i64>,
    fetched_at: SystemTime,
    generation: u64,
}

impl Snapshot {
    /// The instances, ordered by instance ID.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Cloud Map's `InstancesRevision` of the listing.
    pub fn revision(&self) -> Option<i64> {
        self.revision
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

/// How discovery polls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryOptions {
    /// How often the revision is checked. At least 1 s. Default 5 s (±10 % jitter).
    pub poll_interval: Duration,
    /// How often the instances are listed even when the revision did not change. At least 1 s.
    /// Default 60 s.
    pub full_refresh_interval: Duration,
    /// Wait after the first consecutive failure. Default 1 s.
    pub backoff_base: Duration,
    /// Longest wait between failing attempts. Default 30 s.
    pub backoff_max: Duration,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            full_refresh_interval: Duration::from_secs(60),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
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
        if self.poll_interval < Duration::from_secs(1) {
            return invalid("poll_interval", "must be at least 1 s");
        }
        if self.full_refresh_interval < Duration::from_secs(1) {
            return invalid("full_refresh_interval", "must be at least 1 s");
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
    /// Failed polls (revision checks or listings).
    pub errors: u64,
    /// Failures since the last success.
    pub consecutive_errors: u32,
    /// The last failure.
    pub last_error: Option<Arc<Error>>,
    /// When a poll last succeeded.
    pub last_success: Option<SystemTime>,
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
/// background. Dropping it stops the poller. The [`Balancer`](crate::Balancer) runs one; use
/// one directly to watch a service without balancing calls to it.
#[derive(Debug)]
pub struct Discovery {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    requests: mpsc::Sender<poll::Reply>,
    status: Arc<Mutex<DiscoveryStatus>>,
    ident: Ident,
    _task: AbortOnDrop,
}

impl Discovery {
    /// Starts polling `source` on the current Tokio runtime. `namespace` and `service` name it
    /// in logs, errors and metrics. Fails on invalid options or outside a Tokio runtime.
    pub fn start(
        source: impl InstanceSource,
        namespace: impl Into<String>,
        service: impl Into<String>,
        options: DiscoveryOptions,
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
            fastrand::u64(..),
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
        let (requests, requests_rx) = mpsc::channel(16);
        let status = Arc::new(Mutex::new(DiscoveryStatus::default()));
        let poller = poll::Poller {
            source,
            options,
            metrics: DiscoveryMetrics::new(&ident),
            ident: ident.clone(),
            snapshots: snapshots_tx,
            requests: requests_rx,
            status: Arc::clone(&status),
            rng: Rng::with_seed(seed),
        };
        let task = runtime.spawn(poller.run());
        Self {
            snapshots,
            requests,
            status,
            ident,
            _task: AbortOnDrop(task),
        }
    }

    /// The snapshot in service, if any arrived yet.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.borrow().clone()
    }

    /// A receiver that sees every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.snapshots.clone()
    }

    /// Lists now (instead of at the next poll), and returns the generation of the snapshot in
    /// service afterwards.
    pub async fn refresh(&self) -> Result<u64, Arc<Error>> {
        let (reply, outcome) = oneshot::channel();
        let closed = || {
            Arc::new(Error::Closed {
                namespace: self.ident.namespace.clone(),
                service: self.ident.service.clone(),
            })
        };
        self.requests.send(reply).await.map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    /// What discovery has been doing.
    pub fn status(&self) -> DiscoveryStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests;
