//! The polling loop: makes the calls the schedule asks for, publishes snapshots, keeps the last
//! good one through every failure.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fastrand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::schedule::{Outcome, Schedule};
use super::source::{InstanceSource, Listing};
use super::{DiscoveryOptions, DiscoveryStatus, Snapshot};
use crate::error::{Chain, CloudMapErrorKind, Error};
use crate::telemetry::{DiscoveryMetrics, Ident};

/// Where a refresh request's outcome goes: the generation of the snapshot in service after it.
pub(super) type Reply = oneshot::Sender<Result<u64, Arc<Error>>>;

pub(super) struct Poller {
    pub(super) source: Arc<dyn InstanceSource>,
    pub(super) options: DiscoveryOptions,
    pub(super) ident: Ident,
    pub(super) snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    /// The configuration error discovery is stuck on while it has no snapshot.
    pub(super) rejected: watch::Sender<Option<Arc<Error>>>,
    pub(super) requests: mpsc::Receiver<Reply>,
    pub(super) status: Arc<Mutex<DiscoveryStatus>>,
    pub(super) metrics: DiscoveryMetrics,
    pub(super) rng: Rng,
}

/// What the loop remembers between attempts.
struct Memory {
    schedule: Schedule,
    /// The revision of the last listing taken.
    revision: Option<i64>,
    /// An empty listing is being confirmed: the next listing is published whatever it says.
    confirming_empty: bool,
    /// Failed attempts since the last success, and the kind of the last one (for logs).
    failures: u32,
    last_cause: Option<&'static str>,
    /// Whether the source's kind was recorded once (later changes are switches).
    source_known: bool,
    /// The source's rejected answers at the last attempt.
    rejected_answers: u64,
}

impl Poller {
    /// Runs until the discovery handle is dropped.
    pub(super) async fn run(mut self) {
        let mut memory = Memory {
            schedule: Schedule::new(self.options.clone()),
            revision: None,
            confirming_empty: false,
            failures: 0,
            last_cause: None,
            source_known: false,
            rejected_answers: 0,
        };
        let mut next = Instant::now();
        loop {
            let mut waiting: Vec<Reply> = Vec::new();
            let pushed = tokio::select! {
                () = tokio::time::sleep_until(next) => false,
                request = self.requests.recv() => match request {
                    Some(reply) => { waiting.push(reply); false }
                    None => return,
                },
                // A pushed change: check now. (Cancel-safe by the trait's contract.)
                () = self.source.changed() => true,
            };
            // Requests that arrived together share one listing.
            while let Ok(reply) = self.requests.try_recv() {
                waiting.push(reply);
            }

            let now = Instant::now();
            // A push asks for the revision, not a full listing (a source that pushes moves its
            // revision with every change).
            let list = !waiting.is_empty() || (!pushed && memory.schedule.list_due(now));
            let (outcome, result) = match self.attempt(list, &mut memory).await {
                Ok(outcome) => {
                    self.succeeded(&mut memory);
                    (outcome, Ok(self.generation()))
                }
                Err(error) => {
                    let (outcome, error) = self.failed(error, &mut memory);
                    (outcome, Err(error))
                }
            };
            self.note_source(&mut memory);
            next = now + memory.schedule.after(outcome, now, self.rng.f64());
            for reply in waiting {
                // The requester may have given up; nothing to do then.
                let _ = reply.send(result.clone());
            }
        }
    }

    /// One attempt: the revision (unless a listing is due), then the listing if it changed.
    async fn attempt(&self, list: bool, memory: &mut Memory) -> Result<Outcome, Error> {
        if !list {
            self.metrics.revision_polls.increment(1);
            self.record(|s| s.revision_polls += 1);
            let current = self.source.revision().await?;
            // Compared with `!=`, never ordered: Cloud Map promises a change, not a direction,
            // and moto's revision goes down when an instance is deregistered.
            if current.is_some() && current == memory.revision {
                return Ok(Outcome::Unchanged);
            }
        }
        self.metrics.lists.increment(1);
        self.record(|s| s.lists += 1);
        let listing = self.source.list().await?;
        Ok(self.take(listing, memory))
    }

    /// A listing arrived: publish it, or hold an empty one that follows a non-empty one until
    /// the next listing confirms it.
    fn take(&self, listing: Listing, memory: &mut Memory) -> Outcome {
        let serving = self
            .snapshots
            .borrow()
            .as_ref()
            .is_some_and(|s| !s.listing.is_empty());
        if listing.is_empty() && serving && !memory.confirming_empty {
            memory.confirming_empty = true;
            tracing::warn!(
                namespace = %self.ident.namespace,
                service = %self.ident.service,
                revision = ?listing.revision(),
                confirm_in = ?self.options.backoff_base,
                "empty listing after a non-empty one; the snapshot stays until a second listing confirms it"
            );
            return Outcome::EmptyHeld;
        }
        memory.confirming_empty = false;
        memory.revision = listing.revision();
        let carries_lb_health = listing.carries_lb_health();
        self.publish(listing);
        Outcome::Listed { carries_lb_health }
    }

    /// Records where the instances come from, and counts and logs a change of it; counts the
    /// answers the source rejected since the last attempt.
    fn note_source(&self, memory: &mut Memory) {
        let rejected = self.source.rejected_answers();
        if rejected > memory.rejected_answers {
            self.metrics
                .rejected_answers
                .increment(rejected - memory.rejected_answers);
            memory.rejected_answers = rejected;
            self.record(|s| s.rejected_answers = rejected);
        }
        let kind = self.source.kind();
        let before = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .source
            .clone();
        if before == kind {
            return;
        }
        // The first attempt sets it; later changes are switches.
        let switched = std::mem::replace(&mut memory.source_known, true);
        if switched {
            tracing::warn!(
                namespace = %self.ident.namespace,
                service = %self.ident.service,
                from = ?before,
                to = ?kind,
                "discovery source changed"
            );
            self.metrics.source_switch(kind.as_str()).increment(1);
        }
        self.record(|s| {
            s.source = kind;
            if switched {
                s.source_switches += 1;
            }
        });
    }

    fn succeeded(&self, memory: &mut Memory) {
        if memory.failures > 0 {
            tracing::info!(
                namespace = %self.ident.namespace,
                service = %self.ident.service,
                after_failures = memory.failures,
                "discovery recovered"
            );
        }
        memory.failures = 0;
        memory.last_cause = None;
        if self.rejected.borrow().is_some() {
            self.rejected.send_replace(None);
        }
        self.record(|s| {
            s.consecutive_errors = 0;
            s.last_success = Some(SystemTime::now());
        });
    }

    /// Classifies a failure, counts and logs it, and says what the schedule should do.
    fn failed(&self, error: Error, memory: &mut Memory) -> (Outcome, Arc<Error>) {
        let kind = error.cloud_map_kind();
        let outcome = match kind {
            Some(CloudMapErrorKind::Throttled) => Outcome::Throttled,
            Some(kind) if kind.is_configuration() => Outcome::Rejected,
            _ => Outcome::Failed,
        };
        let cause = kind.map_or("source", CloudMapErrorKind::as_str);
        memory.failures = memory.failures.saturating_add(1);
        self.metrics.error(cause).increment(1);
        let serving = self
            .snapshots
            .borrow()
            .as_ref()
            .map(|s| s.instances().len());
        // The first failure of a streak, or a new kind of failure, is worth a warning; the rest
        // of a streak (every poll while a service is missing or throttled) is debug.
        if memory.last_cause != Some(cause) {
            tracing::warn!(
                namespace = %self.ident.namespace,
                service = %self.ident.service,
                error = %Chain(&error),
                cause,
                consecutive = memory.failures,
                ?serving,
                "discovery failed; the last snapshot stays in service"
            );
        } else {
            tracing::debug!(
                namespace = %self.ident.namespace,
                service = %self.ident.service,
                error = %Chain(&error),
                cause,
                consecutive = memory.failures,
                "discovery failed again"
            );
        }
        memory.last_cause = Some(cause);
        let error = Arc::new(error);
        let failures = memory.failures;
        self.record(|s| {
            s.errors += 1;
            if outcome == Outcome::Throttled {
                s.throttled += 1;
            }
            s.consecutive_errors = failures;
            s.last_error = Some(Arc::clone(&error));
        });
        if outcome == Outcome::Rejected && self.snapshots.borrow().is_none() {
            self.rejected.send_replace(Some(Arc::clone(&error)));
        }
        (outcome, error)
    }

    fn publish(&self, listing: Listing) {
        #[allow(clippy::cast_precision_loss)] // gauge values
        {
            self.metrics.instances.set(listing.instances().len() as f64);
            self.metrics
                .unroutable
                .set(listing.unroutable().len() as f64);
            self.metrics
                .attribute_problems
                .set(listing.attribute_problems().len() as f64);
        }
        let current = self.snapshots.borrow().clone();
        if let Some(current) = &current
            && current.listing.same_content(&listing)
        {
            return;
        }
        self.report_new_problems(current.as_deref(), &listing);
        let generation = current.as_ref().map_or(1, |s| s.generation + 1);
        let (added, removed) = current
            .as_ref()
            .map_or((listing.instances().len(), 0), |old| {
                added_and_removed(old.instances(), listing.instances())
            });
        tracing::info!(
            namespace = %self.ident.namespace,
            service = %self.ident.service,
            generation,
            revision = ?listing.revision(),
            instances = listing.instances().len(),
            added,
            removed,
            unroutable = listing.unroutable().len(),
            attribute_problems = listing.attribute_problems().len(),
            "new snapshot"
        );
        let snapshot = Snapshot {
            listing,
            fetched_at: SystemTime::now(),
            generation,
        };
        self.snapshots.send_replace(Some(Arc::new(snapshot)));
    }

    /// Warns about each instance that is unroutable, or has odd attributes, and did not before:
    /// once when it appears, not at every listing.
    fn report_new_problems(&self, old: Option<&Snapshot>, listing: &Listing) {
        for bad in listing.unroutable() {
            let known = old.is_some_and(|o| o.unroutable().contains(bad));
            if !known {
                let problems: Vec<String> = bad.problems.iter().map(ToString::to_string).collect();
                tracing::warn!(
                    namespace = %self.ident.namespace,
                    service = %self.ident.service,
                    instance = %bad.id,
                    reason = %bad.reason,
                    ?problems,
                    "instance cannot be called; left out of the snapshot"
                );
            }
        }
        for odd in listing.attribute_problems() {
            let known = old.is_some_and(|o| o.attribute_problems().contains(odd));
            if !known {
                let problems: Vec<String> = odd.problems.iter().map(ToString::to_string).collect();
                tracing::warn!(
                    namespace = %self.ident.namespace,
                    service = %self.ident.service,
                    instance = %odd.id,
                    ?problems,
                    taken_as_draining = odd.taken_as_draining,
                    "instance attributes not understood; decoded as the contract says"
                );
            }
        }
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
}

/// How many instance IDs are in `new` but not `old`, and the other way round; both are ordered
/// by ID (see [`Listing`]).
fn added_and_removed(old: &[crate::Instance], new: &[crate::Instance]) -> (usize, usize) {
    let (mut added, mut removed) = (0, 0);
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (Some(a), Some(b)) => match a.id.cmp(&b.id) {
                std::cmp::Ordering::Less => {
                    removed += 1;
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    added += 1;
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    o.next();
                    n.next();
                }
            },
            (Some(_), None) => {
                removed += o.count();
                return (added, removed);
            }
            (None, Some(_)) => {
                added += n.count();
                return (added, removed);
            }
            (None, None) => return (added, removed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_and_removed_instances_are_counted_by_id() {
        let listing = |ids: &[&str]| {
            Listing::new(
                None,
                ids.iter()
                    .map(|id| crate::Instance::new(*id, "10.0.0.1:1".parse().unwrap()))
                    .collect(),
            )
        };
        let old = listing(&["a", "b", "d"]);
        let new = listing(&["b", "c", "d", "e"]);
        assert_eq!(added_and_removed(old.instances(), new.instances()), (2, 1));
        assert_eq!(added_and_removed(&[], new.instances()), (4, 0));
        assert_eq!(added_and_removed(old.instances(), &[]), (0, 3));
    }
}
