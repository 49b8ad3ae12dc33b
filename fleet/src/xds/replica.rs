//! An xDS server replica: per service, the crate's real [`Discovery`] poller over the Cloud
//! Map model with the server's options, and the server's real answer for the `instances/`
//! name ([`cloudmap_xds::services::compute_instances`]), encoded as the server encodes it and
//! decoded as the client decodes it, pushed to every connected stream of the service after a
//! modelled delay.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cloudmap_balancer::discovery::{Discovery, DiscoveryOptions, InstanceSource, Snapshot};
use cloudmap_xds::naming::ServiceName;
use cloudmap_xds::resources::AssignmentConfig;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use fastrand::Rng;
use prost::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::{Client, Push};
use crate::cloud_map::NAMESPACE;

/// A service's streams and last answer on one replica.
#[derive(Default)]
struct Slot {
    /// Connected streams: the client and its session.
    streams: BTreeMap<usize, (Arc<Client>, u64)>,
    answer: Option<Arc<Push>>,
    seq: u64,
}

/// One replica.
pub(crate) struct Replica {
    up: watch::Sender<bool>,
    /// Bumped when the replica goes down: deliveries of an earlier life are dropped.
    life: Arc<AtomicU64>,
    slots: Vec<Mutex<Slot>>,
    /// Each stream's delay from the replica's new snapshot to the client having the answer:
    /// uniform over this range.
    push_delay: (Duration, Duration),
    rng: Mutex<Rng>,
    running: Mutex<Vec<(Discovery, JoinHandle<()>)>>,
    /// Answers the client's decoding rejected (the client would NACK them).
    pub(crate) nacks: AtomicU64,
}

impl Replica {
    pub(crate) fn new(services: usize, push_delay: (Duration, Duration), seed: u64) -> Arc<Self> {
        Arc::new(Self {
            up: watch::Sender::new(false),
            life: Arc::new(AtomicU64::new(0)),
            slots: (0..services).map(|_| Mutex::default()).collect(),
            push_delay,
            rng: Mutex::new(Rng::with_seed(seed)),
            running: Mutex::new(Vec::new()),
            nacks: AtomicU64::new(0),
        })
    }

    fn slot(&self, service: usize) -> MutexGuard<'_, Slot> {
        self.slots[service]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn delay(&self) -> Duration {
        let (low, high) = self.push_delay;
        let u = self
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .f64();
        low + (high - low).mul_f64(u)
    }

    /// Starts the replica: one poller per service (`sources[s]`, named `names[s]`), with
    /// `options` (the server's: the crate's defaults and its poll interval).
    pub(crate) fn start(
        self: &Arc<Self>,
        sources: Vec<Arc<dyn InstanceSource>>,
        names: &[String],
        options: &DiscoveryOptions,
        seed: u64,
    ) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        for (service, (source, name)) in sources.into_iter().zip(names).enumerate() {
            let seed = seed ^ (service as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let discovery = match Discovery::start_with_seed(
                ArcSource(source),
                NAMESPACE,
                name.clone(),
                options.clone(),
                seed,
            ) {
                Ok(discovery) => discovery,
                Err(error) => panic!("invalid server discovery options: {error}"),
            };
            let replica = Arc::clone(self);
            let mut snapshots = discovery.subscribe();
            let service_name = ServiceName::new(NAMESPACE, name.clone());
            let watcher = tokio::spawn(async move {
                loop {
                    let snapshot = snapshots.borrow_and_update().clone();
                    if let Some(snapshot) = snapshot {
                        replica.publish(service, &service_name, &snapshot);
                    }
                    if snapshots.changed().await.is_err() {
                        return;
                    }
                }
            });
            running.push((discovery, watcher));
        }
        drop(running);
        self.up.send_replace(true);
    }

    /// Stops the replica: its pollers stop, every stream ends, the answers are forgotten.
    pub(crate) fn stop(&self) {
        for (_, watcher) in self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            watcher.abort();
        }
        self.life.fetch_add(1, Ordering::Relaxed);
        for service in 0..self.slots.len() {
            let mut slot = self.slot(service);
            slot.streams.clear();
            slot.answer = None;
        }
        self.up.send_replace(false);
    }

    /// The server's answer for a new snapshot, pushed to the service's streams.
    fn publish(&self, service: usize, name: &ServiceName, snapshot: &Snapshot) {
        let answer =
            cloudmap_xds::services::compute_instances(snapshot, name, &AssignmentConfig::default());
        let decoded = ClusterLoadAssignment::decode(answer.encoded.value.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|cla| {
                cloudmap_balancer::discovery::xds::decode_listing(
                    &cla,
                    version_revision(&answer.version),
                )
            });
        let listing = match decoded {
            Ok(listing) => listing,
            Err(reason) => {
                // The client NACKs it and keeps its last answer.
                tracing::warn!(%reason, "an answer the client cannot decode");
                self.nacks.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let life = self.life.load(Ordering::Relaxed);
        let mut slot = self.slot(service);
        slot.seq += 1;
        let push = Arc::new(Push {
            seq: slot.seq,
            listing,
            cloud_map_revision: snapshot.revision(),
        });
        slot.answer = Some(Arc::clone(&push));
        let streams: Vec<(Arc<Client>, u64)> = slot.streams.values().cloned().collect();
        drop(slot);
        let now = Instant::now();
        let mut deliveries: Vec<(Instant, Arc<Client>, u64)> = streams
            .into_iter()
            .map(|(client, session)| (now + self.delay(), client, session))
            .collect();
        deliveries.sort_by_key(|(at, _, _)| *at);
        self.spawn_deliveries(deliveries, push, life);
    }

    fn spawn_deliveries(
        &self,
        deliveries: Vec<(Instant, Arc<Client>, u64)>,
        push: Arc<Push>,
        life: u64,
    ) {
        if deliveries.is_empty() {
            return;
        }
        let lives = Arc::clone(&self.life);
        tokio::spawn(async move {
            for (at, client, session) in deliveries {
                tokio::time::sleep_until(at).await;
                // The replica went down meanwhile: the stream is gone.
                if lives.load(Ordering::Relaxed) != life {
                    return;
                }
                client.deliver(session, &push);
            }
        });
    }

    /// A stream from `client` to the service `service`: `None` at once when the replica is
    /// down (the connection is refused), else the session, once the stream has ended (when the
    /// replica goes down).
    pub(crate) async fn session(
        &self,
        client: &Arc<Client>,
        service: usize,
        id: usize,
    ) -> Option<u64> {
        let mut up = self.up.subscribe();
        if !*up.borrow_and_update() {
            return None;
        }
        let session = client.connect();
        let life = self.life.load(Ordering::Relaxed);
        let answer = {
            let mut slot = self.slot(service);
            slot.streams.insert(id, (Arc::clone(client), session));
            slot.answer.clone()
        };
        if let Some(push) = answer {
            let at = Instant::now() + self.delay();
            self.spawn_deliveries(vec![(at, Arc::clone(client), session)], push, life);
        }
        let _ = up.wait_for(|up| !*up).await;
        Some(session)
    }
}

/// The client's revision for a version: any stable function of the version string works (the
/// poller compares revisions with `!=`); this is the client's own (FNV-1a, 64 bits), so that
/// two replicas' equal versions give equal revisions, as they do in the client.
fn version_revision(version: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in version.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// An `Arc<dyn InstanceSource>` as a source.
struct ArcSource(Arc<dyn InstanceSource>);

impl InstanceSource for ArcSource {
    fn revision(
        &self,
    ) -> cloudmap_balancer::discovery::BoxFuture<'_, Result<Option<i64>, cloudmap_balancer::Error>>
    {
        self.0.revision()
    }

    fn list(
        &self,
    ) -> cloudmap_balancer::discovery::BoxFuture<
        '_,
        Result<cloudmap_balancer::discovery::Listing, cloudmap_balancer::Error>,
    > {
        self.0.list()
    }
}
