//! The polling loop: revision checks, full listings, static stability.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fastrand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::source::{InstanceSource, Listing};
use super::{DiscoveryOptions, DiscoveryStatus, Snapshot};
use crate::error::{Chain, Error};
use crate::telemetry::{DiscoveryMetrics, Ident};

/// Where a refresh request's outcome goes: the generation of the snapshot in service after it.
pub(super) type Reply = oneshot::Sender<Result<u64, Arc<Error>>>;

pub(super) struct Poller {
    pub(super) source: Arc<dyn InstanceSource>,
    pub(super) options: DiscoveryOptions,
    pub(super) ident: Ident,
    pub(super) snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    pub(super) requests: mpsc::Receiver<Reply>,
    pub(super) status: Arc<Mutex<DiscoveryStatus>>,
    pub(super) metrics: DiscoveryMetrics,
    pub(super) rng: Rng,
}

impl Poller {
    /// Runs until the discovery handle is dropped.
    pub(super) async fn run(mut self) {
        let mut revision: Option<i64> = None;
        let mut last_list: Option<Instant> = None;
        let mut next = Instant::now();
        let mut failures: u32 = 0;
        loop {
            let mut waiting: Vec<Reply> = Vec::new();
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                request = self.requests.recv() => match request {
                    Some(reply) => waiting.push(reply),
                    None => return,
                },
            }
            // Requests that arrived together share one listing.
            while let Ok(reply) = self.requests.try_recv() {
                waiting.push(reply);
            }

            let now = Instant::now();
            let list_due = !waiting.is_empty()
                || last_list.is_none_or(|at| now - at >= self.options.full_refresh_interval);
            let outcome = self.poll(list_due, revision).await;
            let result = match outcome {
                Ok(listing) => {
                    failures = 0;
                    if let Some(listing) = listing {
                        last_list = Some(now);
                        revision = listing.revision;
                        self.publish(listing);
                    }
                    self.record(|s| {
                        s.consecutive_errors = 0;
                        s.last_success = Some(SystemTime::now());
                    });
                    next = now + self.jittered(self.options.poll_interval);
                    Ok(self.generation())
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.metrics.errors.increment(1);
                    let backoff = self.backoff(failures);
                    tracing::warn!(
                        namespace = %self.ident.namespace,
                        service = %self.ident.service,
                        error = %Chain(&error),
                        consecutive = failures,
                        retry_in = ?backoff,
                        serving = ?self.snapshots.borrow().as_ref().map(|s| s.instances().len()),
                        "discovery failed; the last snapshot stays in service"
                    );
                    let error = Arc::new(error);
                    self.record(|s| {
                        s.errors += 1;
                        s.consecutive_errors = failures;
                        s.last_error = Some(Arc::clone(&error));
                    });
                    next = now + backoff;
                    Err(error)
                }
            };
            for reply in waiting {
                // The requester may have given up; nothing to do then.
                let _ = reply.send(result.clone());
            }
        }
    }

    /// One poll: the revision (unless a listing is due), then the listing if it changed.
    async fn poll(&self, list_due: bool, known: Option<i64>) -> Result<Option<Listing>, Error> {
        if !list_due {
            self.metrics.revision_polls.increment(1);
            self.record(|s| s.revision_polls += 1);
            let current = self.source.revision().await?;
            if current.is_some() && current == known {
                return Ok(None);
            }
        }
        self.metrics.lists.increment(1);
        self.record(|s| s.lists += 1);
        self.source.list().await.map(Some)
    }

    fn publish(&self, mut listing: Listing) {
        #[allow(clippy::cast_precision_loss)] // a gauge value
        self.metrics.instances.set(listing.instances.len() as f64);
        // Cloud Map lists in random order; a stable order makes "unchanged" cheap to see and
        // snapshots easy to read.
        listing
            .instances
            .sort_by(|a, b| a.id.cmp(&b.id).then(a.addr.cmp(&b.addr)));
        let current = self.snapshots.borrow().clone();
        if let Some(current) = &current
            && current.instances == listing.instances
        {
            return;
        }
        let generation = current.as_ref().map_or(1, |s| s.generation + 1);
        let (added, removed) = current
            .as_ref()
            .map_or((listing.instances.len(), 0), |old| {
                let added = listing
                    .instances
                    .iter()
                    .filter(|i| !old.instances.iter().any(|o| o.id == i.id))
                    .count();
                let removed = old
                    .instances
                    .iter()
                    .filter(|o| !listing.instances.iter().any(|i| i.id == o.id))
                    .count();
                (added, removed)
            });
        tracing::info!(
            namespace = %self.ident.namespace,
            service = %self.ident.service,
            generation,
            revision = ?listing.revision,
            instances = listing.instances.len(),
            added,
            removed,
            "new snapshot"
        );
        let snapshot = Snapshot {
            instances: listing.instances,
            revision: listing.revision,
            fetched_at: SystemTime::now(),
            generation,
        };
        self.snapshots.send_replace(Some(Arc::new(snapshot)));
    }

    fn generation(&self) -> u64 {
        self.snapshots.borrow().as_ref().map_or(0, |s| s.generation)
    }

    fn record(&self, change: impl FnOnce(&mut DiscoveryStatus)) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut status);
    }

    /// ±10 % so that a fleet of clients started together does not poll in lockstep.
    fn jittered(&mut self, interval: Duration) -> Duration {
        interval.mul_f64(0.9 + 0.2 * self.rng.f64())
    }

    /// `base × 2^(failures − 1)`, capped, jittered.
    fn backoff(&mut self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        let raw = self
            .options
            .backoff_base
            .saturating_mul(1 << exponent)
            .min(self.options.backoff_max);
        self.jittered(raw)
    }
}
