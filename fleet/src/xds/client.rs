//! A client-service pair fed by the xDS server: the crate's real poller ([`Discovery`]) over
//! [`ClientSource`], a model of the crate's `XdsSource` that keeps its rules (the
//! [`Switch`](super::switch::Switch), the last answer served while the stream is down, the
//! poller woken through `changed()` on every answer and every switch) and its stream's retry
//! schedule (the next server at once after a stream that had answered, else a backoff from
//! 250 ms doubling to 5 s, ±20 %). The ADS stream itself is not run: see the
//! [module docs](super) for why.
//!
//! [`Discovery`]: cloudmap_balancer::discovery::Discovery

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cloudmap_balancer::Error;
use cloudmap_balancer::discovery::{BoxFuture, InstanceSource, Listing, SourceKind};
use fastrand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::replica::Replica;
use super::switch::{Serving, Switch};
use crate::cloud_map::CloudMap;

/// One answer of a replica for a service, as every one of its streams receives it.
#[derive(Debug)]
pub(crate) struct Push {
    /// Numbers the replica's answers for the service (a stream delivers them in order).
    pub(crate) seq: u64,
    /// What the client decodes from it (`cloudmap_balancer::discovery::xds::decode_listing`),
    /// its revision the version's hash.
    pub(crate) listing: Listing,
    /// The Cloud Map revision of the replica's snapshot it was computed from.
    pub(crate) cloud_map_revision: Option<i64>,
}

/// The fleet's switches, counted as they happen.
#[derive(Debug, Default)]
pub(crate) struct Switches {
    pub(crate) to_fallback: AtomicU64,
    pub(crate) to_xds: AtomicU64,
    /// Pairs serving Cloud Map now, and the most at once.
    on_fallback: Mutex<(u64, u64)>,
    /// When the last pair serving Cloud Map went back to xDS.
    pub(crate) all_back_at: Mutex<Option<Instant>>,
}

impl Switches {
    fn note(&self, from: Serving, to: Serving) {
        let mut on = self
            .on_fallback
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (from, to) {
            (_, Serving::CloudMap) => {
                self.to_fallback.fetch_add(1, Ordering::Relaxed);
                on.0 += 1;
                on.1 = on.1.max(on.0);
            }
            (Serving::CloudMap, Serving::Xds) => {
                self.to_xds.fetch_add(1, Ordering::Relaxed);
                on.0 -= 1;
                if on.0 == 0 {
                    *self
                        .all_back_at
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                }
            }
            _ => {}
        }
    }

    /// Pairs serving Cloud Map now, and the most at once.
    pub(crate) fn on_fallback(&self) -> (u64, u64) {
        *self
            .on_fallback
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A pair's xDS side: what the stream delivered and what the source serves.
pub(crate) struct Client {
    /// The pair's index among the service's measured pairs (`None` for a quiet service's).
    tracked: Option<usize>,
    cloud_map: Arc<CloudMap>,
    switches: Arc<Switches>,
    state: Mutex<State>,
    /// Bumped on every answer and every switch.
    changes: watch::Sender<u64>,
    /// The change the poller last looked at.
    seen: AtomicU64,
    /// Whether every failed connection wakes the poller (the crate's `XdsSource::lost` bumps on
    /// each), or only one that moves the switch's deadline (see [`LostWakes`]).
    wakes: LostWakes,
}

/// When the stream's losses wake the poller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostWakes {
    /// On every failed connection, as the crate's `XdsSource` did before this model found it:
    /// while Cloud Map is served, each retry of the servers (every 4–6 s once the backoff is at
    /// its cap) made the poller ask Cloud Map at once, whatever its poll interval or throttle
    /// backoff. Kept to show what that cost (`--lost-wakes-every-loss`).
    EveryLoss,
    /// Only when the loss sets a new deadline (the first loss while xDS is served or nothing
    /// is decided yet): what the crate does now.
    NewDeadline,
}

struct State {
    switch: Switch,
    latest: Option<Arc<Push>>,
    /// The stream now (every connection is a new one).
    session: u64,
    session_answered: bool,
    last_seq: u64,
    /// The revision of the listing the poller took last.
    listed: Option<i64>,
}

impl Client {
    pub(crate) fn new(
        tracked: Option<usize>,
        cloud_map: Arc<CloudMap>,
        switches: Arc<Switches>,
        start_timeout: Duration,
        lost_timeout: Duration,
        wakes: LostWakes,
    ) -> Arc<Self> {
        Arc::new(Self {
            tracked,
            cloud_map,
            switches,
            state: Mutex::new(State {
                switch: Switch::new(Instant::now(), start_timeout, lost_timeout),
                latest: None,
                session: 0,
                session_answered: false,
                last_seq: 0,
                listed: None,
            }),
            changes: watch::Sender::new(0),
            seen: AtomicU64::new(0),
            wakes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn tick(&self, state: &mut State) {
        let from = state.switch.serving();
        if let Some(to) = state.switch.tick(Instant::now()) {
            self.switches.note(from, to);
            self.bump();
        }
    }

    /// A stream opens: returns its session.
    pub(crate) fn connect(&self) -> u64 {
        let mut state = self.lock();
        state.session += 1;
        state.session_answered = false;
        state.last_seq = 0;
        state.session
    }

    /// The stream of `session` delivers `push`.
    pub(crate) fn deliver(&self, session: u64, push: &Arc<Push>) {
        let mut state = self.lock();
        if state.session != session || push.seq <= state.last_seq {
            return;
        }
        state.last_seq = push.seq;
        state.session_answered = true;
        let from = state.switch.serving();
        if let Some(to) = state.switch.answered() {
            self.switches.note(from, to);
        }
        // The same version as the listing in service: the poller will not list again, and the
        // client already holds this content.
        let same = state.listed.is_some() && state.listed == push.listing.revision();
        state.latest = Some(Arc::clone(push));
        drop(state);
        if same && let (Some(pair), Some(revision)) = (self.tracked, push.cloud_map_revision) {
            self.cloud_map.record_received(pair, revision);
        }
        self.bump();
    }

    /// The stream of `session` ended (or could not open): whether it had answered.
    pub(crate) fn lost(&self, session: Option<u64>) -> bool {
        let mut state = self.lock();
        let answered = session.is_some_and(|s| s == state.session && state.session_answered);
        let deadline = state.switch.deadline();
        state.switch.lost(Instant::now());
        let moved = state.switch.deadline() != deadline;
        drop(state);
        if moved || self.wakes == LostWakes::EveryLoss {
            self.bump();
        }
        answered
    }

    async fn serving(&self) -> Serving {
        loop {
            let mut changes = self.changes.subscribe();
            let deadline = {
                let mut state = self.lock();
                self.tick(&mut state);
                match state.switch.serving() {
                    Serving::Undecided => state.switch.deadline(),
                    decided => return decided,
                }
            };
            let deadline = deadline.unwrap_or_else(Instant::now);
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn seen_now(&self) {
        self.seen.store(*self.changes.borrow(), Ordering::Relaxed);
    }
}

/// The client's source: what its real [`Discovery`](cloudmap_balancer::discovery::Discovery)
/// polls. Serves the last pushed answer, or `fallback` (Cloud Map, polled directly) as the
/// [`Switch`] says, exactly as the crate's `XdsSource` does.
pub(crate) struct ClientSource {
    pub(crate) client: Arc<Client>,
    pub(crate) fallback: Arc<dyn InstanceSource>,
}

impl InstanceSource for ClientSource {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        Box::pin(async move {
            self.client.seen_now();
            match self.client.serving().await {
                Serving::CloudMap => self.fallback.revision().await,
                _ => Ok(self
                    .client
                    .lock()
                    .latest
                    .as_ref()
                    .and_then(|p| p.listing.revision())),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        Box::pin(async move {
            self.client.seen_now();
            let listing = match self.client.serving().await {
                Serving::CloudMap => self.fallback.list().await?,
                _ => {
                    let latest = self.client.lock().latest.clone();
                    if let (Some(pair), Some(revision)) = (
                        self.client.tracked,
                        latest.as_ref().and_then(|p| p.cloud_map_revision),
                    ) {
                        self.client.cloud_map.record_received(pair, revision);
                    }
                    latest.map(|p| p.listing.clone()).unwrap_or_default()
                }
            };
            self.client.lock().listed = listing.revision();
            Ok(listing)
        })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let mut changes = self.client.changes.subscribe();
                if *changes.borrow_and_update() != self.client.seen.load(Ordering::Relaxed) {
                    return;
                }
                let deadline = {
                    let mut state = self.client.lock();
                    self.client.tick(&mut state);
                    state.switch.deadline()
                };
                match deadline {
                    Some(deadline) => tokio::select! {
                        _ = changes.changed() => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    },
                    None => {
                        let _ = changes.changed().await;
                    }
                }
            }
        })
    }

    fn kind(&self) -> SourceKind {
        match self.client.lock().switch.serving() {
            Serving::CloudMap => SourceKind::CloudMapFallback,
            _ => SourceKind::Xds {
                server: "replica".to_owned(),
            },
        }
    }
}

/// The stream's retry schedule (the crate's `discovery/xds/stream.rs`): each server of the
/// list in turn, the next one at once after a stream that had answered, else after a wait from
/// `base` doubling up to `max`, ±20 %.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

/// Runs the pair's stream until the task is aborted.
pub(crate) async fn stream(
    client: Arc<Client>,
    (id, service): (usize, usize),
    servers: Vec<Arc<Replica>>,
    retry: Retry,
    seed: u64,
) {
    let mut rng = Rng::with_seed(seed);
    let mut failures: u32 = 0;
    for replica in servers.iter().cycle() {
        let session = replica.session(&client, service, id).await;
        if client.lost(session) {
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
        }
        if failures >= 1 {
            let exponent = (failures - 1).min(16);
            let wait = retry
                .base
                .saturating_mul(1 << exponent)
                .min(retry.max)
                .mul_f64(0.8 + 0.4 * rng.f64());
            tokio::time::sleep(wait).await;
        }
    }
}
