//! The services being served: one Cloud Map poller per service per replica, whatever the number
//! of clients; the callers' spread over zones, from the streams connected to this replica; and
//! one answer per (service, client zone), computed once and shared by every client in that zone.
//!
//! A service's poller starts with its first subscriber and stops a linger time (default 5
//! minutes) after the last one left, so a service nobody asks for is not polled, and a client
//! that reconnects gets the last-known-good answer at once, even while Cloud Map fails. Discovery is the crate's own
//! ([`Discovery`]): revision polling, last-known-good through any Cloud Map failure, throttle
//! backoff, configuration errors told apart.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use cloudmap_balancer::contract::xds::INSTANCES_PREFIX;
use cloudmap_balancer::discovery::{Discovery, Snapshot};
use cloudmap_balancer::picker::{Availability, ZoneDemand};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use tokio::sync::watch;

use crate::health::HealthWatches;
use crate::naming::ServiceName;
use crate::resources::encode;
use crate::resources::{Assignment, AssignmentConfig, ClientZone, assign};
use crate::version;

/// Starts discovery for a service (Cloud Map in production, a static source in tests).
pub type StartDiscovery =
    Arc<dyn Fn(&ServiceName) -> Result<Discovery, cloudmap_balancer::Error> + Send + Sync>;

/// Where a service stands for the streams.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// No listing yet, and no verdict from Cloud Map.
    Pending,
    /// Cloud Map says the service cannot be read (no such service or namespace, access
    /// denied) and there is no last-known-good listing.
    Rejected(Arc<cloudmap_balancer::Error>),
    /// The answer for the zone asked.
    Ready(Arc<Answer>),
}

/// One service's endpoints for one client zone, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The endpoints.
    pub assignment: Assignment,
    /// A hash of the assignment (the ClusterLoadAssignment's resource version).
    pub version: String,
    /// When discovery fetched the listing it was computed from.
    pub fetched_at: SystemTime,
    /// The ClusterLoadAssignment for the service's canonical name, encoded once for every
    /// stream that asks by that name.
    pub encoded: Any,
}

/// Every service this replica serves.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

struct Inner {
    start: StartDiscovery,
    config: AssignmentConfig,
    health_check: Option<String>,
    linger: Duration,
    /// Services nobody subscribes to any more, kept (and polled) until the deadline.
    lingering: Mutex<Vec<(Arc<Entry>, tokio::time::Instant)>>,
    reaper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    entries: Mutex<HashMap<ServiceName, Weak<Entry>>>,
}

impl Services {
    /// Services discovered with `start`, assigned with `config`. With `health_check`, every
    /// endpoint's gRPC health is watched for that service name (`""`: the whole server; see
    /// [`health`](crate::health)).
    ///
    /// A service whose last subscriber left is kept, and polled, for `linger` more: a client
    /// that reconnects (a restarted task, a failover from another replica) gets its answer at
    /// once, and the last-known-good one if Cloud Map fails meanwhile.
    pub fn new(
        start: StartDiscovery,
        config: AssignmentConfig,
        health_check: Option<String>,
        linger: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                start,
                config,
                health_check,
                linger,
                lingering: Mutex::new(Vec::new()),
                reaper: Mutex::new(None),
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The assignment settings.
    pub fn config(&self) -> &AssignmentConfig {
        &self.inner.config
    }

    /// Subscribes a stream whose client is in `zone` to `name`: starts the service's poller if
    /// none runs, and counts the client in the service's callers. Dropping the subscription
    /// takes it back.
    pub fn subscribe(
        &self,
        name: &ServiceName,
        zone: &ClientZone,
    ) -> Result<Subscription, cloudmap_balancer::Error> {
        let entry = {
            let mut entries = self
                .inner
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match entries.get(name).and_then(Weak::upgrade) {
                Some(entry) => entry,
                None => {
                    entries.retain(|_, entry| entry.strong_count() > 0);
                    let entry = Entry::start(
                        name.clone(),
                        (self.inner.start)(name)?,
                        self.inner.config.clone(),
                        self.inner.health_check.clone(),
                    );
                    entries.insert(name.clone(), Arc::downgrade(&entry));
                    tracing::info!(service = %name, "polling a newly subscribed service");
                    entry
                }
            }
        };
        entry.add_caller(zone, 1);
        self.start_reaper();
        Ok(Subscription {
            entry,
            zone: zone.clone(),
            services: Arc::downgrade(&self.inner),
        })
    }

    /// Drops lingering services past their deadline, every second.
    fn start_reaper(&self) {
        let mut reaper = self
            .inner
            .reaper
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if reaper.is_some() {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        *reaper = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(inner) = inner.upgrade() else { return };
                let now = tokio::time::Instant::now();
                let expired: Vec<Arc<Entry>> = {
                    let mut lingering = inner
                        .lingering
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    let (expired, kept) = std::mem::take(&mut *lingering)
                        .into_iter()
                        .partition(|(_, deadline)| *deadline <= now);
                    *lingering = kept;
                    expired.into_iter().map(|(entry, _)| entry).collect()
                };
                // Dropped outside the lock: the last one stops the poller.
                drop(expired);
            }
        }));
    }

    /// How many services are polled now.
    pub fn polled(&self) -> usize {
        let entries = self
            .inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        entries.values().filter(|e| e.strong_count() > 0).count()
    }
}

/// One stream's interest in one service. Dropping it takes the stream out of the service's
/// callers; the last one stops the service's poller.
#[derive(Debug)]
pub struct Subscription {
    entry: Arc<Entry>,
    zone: ClientZone,
    services: Weak<Inner>,
}

impl Subscription {
    /// Where the service stands, and its answer for this stream's zone.
    pub fn resolve(&self) -> Resolution {
        self.entry.resolve(&self.zone)
    }

    /// Where the service stands, and every instance of it (the `instances/` answer, the same
    /// for every zone).
    pub fn resolve_instances(&self) -> Resolution {
        self.entry.resolve_instances()
    }

    /// A receiver that changes whenever the service's answers may have changed (a new
    /// snapshot, a change in callers, a configuration error).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.entry.changes.subscribe()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.entry.add_caller(&self.zone, -1);
        if self.entry.callers() == 0
            && let Some(services) = self.services.upgrade()
            && !services.linger.is_zero()
        {
            let deadline = tokio::time::Instant::now() + services.linger;
            services
                .lingering
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((Arc::clone(&self.entry), deadline));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reaper) = self
            .reaper
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            reaper.abort();
        }
    }
}

/// What an answer was computed from: (snapshot generation, callers generation, health
/// generation).
type AnswerKey = (u64, u64, u64);

/// A polled service.
struct Entry {
    name: ServiceName,
    discovery: Discovery,
    config: AssignmentConfig,
    /// Connected callers per zone, and a generation bumped on every change.
    callers: Mutex<(BTreeMap<ClientZone, u64>, u64)>,
    rejected: Mutex<Option<Arc<cloudmap_balancer::Error>>>,
    health: Arc<HealthWatches>,
    health_generation: AtomicU64,
    /// Bumped on every change that may change an answer.
    changes: watch::Sender<u64>,
    /// Answers per zone, with the (snapshot generation, callers generation) they were computed
    /// for.
    answers: Mutex<HashMap<ClientZone, (AnswerKey, Arc<Answer>)>>,
    /// The instances answer, with the snapshot generation it was computed for.
    instances: Mutex<Option<(u64, Arc<Answer>)>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.watcher.abort();
        metrics::gauge!("cloudmap_xds_services").decrement(1.0);
        tracing::info!(service = %self.name, "no subscriber left: polling stops");
    }
}

impl Entry {
    fn start(
        name: ServiceName,
        discovery: Discovery,
        config: AssignmentConfig,
        health_check: Option<String>,
    ) -> Arc<Self> {
        metrics::gauge!("cloudmap_xds_services").increment(1.0);
        Arc::new_cyclic(|weak: &Weak<Self>| {
            let weak = weak.clone();
            let watched = discovery.clone();
            let health_changed: Arc<dyn Fn() + Send + Sync> = {
                let weak = weak.clone();
                Arc::new(move || {
                    if let Some(entry) = weak.upgrade() {
                        entry.health_generation.fetch_add(1, Ordering::Relaxed);
                        entry.bump();
                    }
                })
            };
            // The health watch dials what the answers send: each instance's first address.
            let family = config.ip_family;
            let watcher = tokio::spawn(async move {
                // Holds a clone of the discovery handle until the entry aborts this task.
                let mut snapshots = watched.subscribe();
                loop {
                    let snapshot = snapshots.borrow_and_update().clone();
                    let known = snapshot.is_some();
                    let Some(entry) = weak.upgrade() else { return };
                    if let (Some(service), Some(snapshot)) = (&health_check, &snapshot) {
                        let addrs = snapshot
                            .instances()
                            .iter()
                            .map(|i| i.dial_order(family).0)
                            .collect();
                        entry.health.reconcile(&addrs, service, &health_changed);
                    }
                    let rejected = entry.is_rejected();
                    if known && rejected {
                        entry.set_rejected(None);
                    }
                    entry.bump();
                    drop(entry);
                    tokio::select! {
                        changed = snapshots.changed() => if changed.is_err() { return },
                        error = watched.configuration_error(), if !known && !rejected => {
                            let Some(entry) = weak.upgrade() else { return };
                            tracing::warn!(service = %entry.name, error = %error, "Cloud Map refuses the service: clients are told it does not exist");
                            entry.set_rejected(Some(error));
                        }
                    }
                }
            });
            Self {
                name,
                discovery,
                config,
                callers: Mutex::new((BTreeMap::new(), 0)),
                rejected: Mutex::new(None),
                health: Arc::new(HealthWatches::default()),
                health_generation: AtomicU64::new(0),
                changes: watch::Sender::new(0),
                answers: Mutex::new(HashMap::new()),
                instances: Mutex::new(None),
                watcher,
            }
        })
    }

    fn bump(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    fn is_rejected(&self) -> bool {
        self.rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn set_rejected(&self, error: Option<Arc<cloudmap_balancer::Error>>) {
        *self.rejected.lock().unwrap_or_else(PoisonError::into_inner) = error;
    }

    fn add_caller(&self, zone: &ClientZone, delta: i64) {
        {
            let mut callers = self.callers.lock().unwrap_or_else(PoisonError::into_inner);
            let count = callers.0.entry(zone.clone()).or_insert(0);
            *count = count.saturating_add_signed(delta);
            if *count == 0 {
                callers.0.remove(zone);
            }
            callers.1 += 1;
        }
        self.bump();
    }

    fn callers(&self) -> u64 {
        self.callers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .values()
            .sum()
    }

    /// What to say while there is no snapshot.
    fn unresolved(&self) -> Resolution {
        match self
            .rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            Some(error) => Resolution::Rejected(error),
            None => Resolution::Pending,
        }
    }

    fn resolve_instances(&self) -> Resolution {
        let Some(snapshot) = self.discovery.snapshot() else {
            return self.unresolved();
        };
        let mut cached = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((generation, answer)) = cached.as_ref()
            && *generation == snapshot.generation()
        {
            return Resolution::Ready(Arc::clone(answer));
        }
        let answer = Arc::new(compute_instances(&snapshot, &self.name, &self.config));
        *cached = Some((snapshot.generation(), Arc::clone(&answer)));
        Resolution::Ready(answer)
    }

    fn resolve(&self, zone: &ClientZone) -> Resolution {
        let Some(snapshot) = self.discovery.snapshot() else {
            return self.unresolved();
        };
        let (demand, callers_generation) = {
            let callers = self.callers.lock().unwrap_or_else(PoisonError::into_inner);
            let demand = ZoneDemand::with_ids(
                callers
                    .0
                    .iter()
                    .map(|(zone, &n)| (zone.name.clone(), zone.id.clone(), n)),
            );
            (demand, callers.1)
        };
        // Clients without a zone get the zone-agnostic answer, whatever the callers' spread.
        let key = (
            snapshot.generation(),
            if zone.is_unknown() {
                0
            } else {
                callers_generation
            },
            self.health_generation.load(Ordering::Relaxed),
        );
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cached, answer)) = answers.get(zone)
            && *cached == key
        {
            return Resolution::Ready(Arc::clone(answer));
        }
        let health = &self.health;
        let instances = snapshot.instances();
        let answer = Arc::new(compute(
            &snapshot,
            &self.name,
            zone,
            &demand,
            &self.config,
            |i| {
                if health.not_serving(instances[i].dial_order(self.config.ip_family).0) {
                    Availability::NotServing
                } else {
                    Availability::Available
                }
            },
        ));
        answers.retain(|_, (cached, _)| cached.0 == key.0);
        answers.insert(zone.clone(), (key, Arc::clone(&answer)));
        Resolution::Ready(answer)
    }
}

/// The answer for a client in `zone`: [`assign`] with the callers' spread and what the health
/// watch says of each instance, its version a hash of the result.
pub fn compute(
    snapshot: &Snapshot,
    service: &ServiceName,
    zone: &ClientZone,
    demand: &ZoneDemand,
    config: &AssignmentConfig,
    availability: impl Fn(usize) -> Availability,
) -> Answer {
    let demand = (demand.total() > 0).then_some(demand);
    let assignment = assign(
        snapshot.instances(),
        zone,
        demand,
        availability,
        config,
        SystemTime::now(),
    );
    for id in &assignment.duplicates {
        tracing::warn!(instance = %id, "left out: another instance of the service has the same address");
    }
    let version = version::of(&(&assignment, &config.region));
    Answer {
        version,
        fetched_at: snapshot.fetched_at(),
        encoded: pack_any(encode::load_assignment(
            &service.resource_name(),
            &config.region,
            &assignment,
        )),
        assignment,
    }
}

/// Every instance of the snapshot, for the `instances/` name: [`instances`](crate::resources::instances),
/// its version a hash of the result.
pub fn compute_instances(
    snapshot: &Snapshot,
    service: &ServiceName,
    config: &AssignmentConfig,
) -> Answer {
    let assignment = crate::resources::instances(snapshot.instances());
    let name = format!("{INSTANCES_PREFIX}{}", service.resource_name());
    Answer {
        version: version::of(&(&assignment, &config.region, INSTANCES_PREFIX)),
        fetched_at: snapshot.fetched_at(),
        encoded: pack_any(encode::load_assignment(&name, &config.region, &assignment)),
        assignment,
    }
}
