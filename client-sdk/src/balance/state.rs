//! The balancer's shared state: the current table (read lock-free on every call), what it is
//! built from (written under a mutex on changes), and the background task that keeps it current.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use fastrand::Rng;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::eject::{Ejections, Outcome};
use super::endpoint::{ConnectFailure, Endpoint, EndpointKey, ZoneCounters};
use super::stats::AdaptiveStats;
use crate::discovery::Snapshot;
use crate::error::{Chain, Error};
use crate::picker::{
    AdaptiveOptions, LatencySample, Observation, Pick, Picker, PickerConfig, SpillLevel,
    ZoneController, ZoneDemand, ZoneMode, live_count,
};
use crate::telemetry::{BalancerMetrics, Ident};

/// Builds the tonic endpoint (URI, timeouts, TLS, user settings) for an instance address.
pub(crate) type EndpointFactory =
    Arc<dyn Fn(SocketAddr) -> tonic::transport::Endpoint + Send + Sync>;

/// Everything a call needs, consistent with one snapshot.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) picker: Picker,
    /// One per snapshot instance, in the same order.
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    /// Capacity-weighted mean `LB_LOAD` of the local zone and of the others, when known.
    cpu: (Option<f64>, Option<f64>),
}

/// Settings the shared state needs after building.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) zone_mode: ZoneMode,
    pub(crate) panic_threshold: f64,
    pub(crate) load_max_age: Duration,
    pub(crate) first_snapshot_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) endpoint: EndpointFactory,
}

/// What the table is built from. Changed only under [`Shared::state`]'s lock.
struct BuildState {
    snapshot: Option<Arc<Snapshot>>,
    demand: Option<ZoneDemand>,
    local_zone: Option<String>,
    zone_resolved: bool,
    ejections: Ejections<EndpointKey>,
    zones: HashMap<Option<String>, Arc<ZoneCounters>>,
}

/// Call counters for [`Stats`](super::Stats) (the `metrics` facade is write-only). Picks by
/// locality are not here: [`stats::collect`](super::stats) derives them from the per-zone pick
/// counts, since a zone's locality is fixed (the own zone is resolved before the first table).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) spilled: AtomicU64,
    pub(crate) panic: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) ejections: AtomicU64,
    pub(crate) repicks: AtomicU64,
    pub(crate) failed_calls: AtomicU64,
}

/// A picked endpoint, and whether the call's latency is wanted.
pub(crate) struct Picked {
    pub(crate) endpoint: Arc<Endpoint>,
    /// The table's local share follows the adaptive controller, which learns from latency:
    /// time the call and record it in the endpoint's zone counters. Otherwise nothing reads
    /// those latencies, and the call is not timed.
    pub(crate) timed: bool,
}

pub(crate) struct Shared {
    pub(crate) ident: Ident,
    pub(crate) settings: Settings,
    table: ArcSwapOption<Table>,
    /// The generation of the snapshot the table was built from (0: no table yet).
    table_generation: watch::Sender<u64>,
    /// The generation of the caller-fleet snapshot the table was built from.
    demand_generation: watch::Sender<u64>,
    spill: AtomicU32,
    state: Mutex<BuildState>,
    ejections_changed: Notify,
    pub(crate) metrics: BalancerMetrics,
    pub(crate) counters: Counters,
    /// The adaptive controller's last state, for [`Stats`](super::Stats).
    controller: Mutex<Option<AdaptiveStats>>,
    seeds: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        ident: Ident,
        settings: Settings,
        ejection: (Duration, Duration),
        seed: u64,
    ) -> Self {
        Self {
            metrics: BalancerMetrics::new(&ident),
            ident,
            settings,
            table: ArcSwapOption::empty(),
            table_generation: watch::channel(0).0,
            demand_generation: watch::channel(0).0,
            spill: AtomicU32::new(0),
            state: Mutex::new(BuildState {
                snapshot: None,
                demand: None,
                local_zone: None,
                zone_resolved: false,
                ejections: Ejections::new(ejection.0, ejection.1),
                zones: HashMap::new(),
            }),
            ejections_changed: Notify::new(),
            counters: Counters::default(),
            controller: Mutex::new(None),
            seeds: AtomicU64::new(seed),
        }
    }

    fn state(&self) -> MutexGuard<'_, BuildState> {
        // Every change to BuildState is a whole-field assignment or a map update that cannot be
        // left half-done, so a poisoned lock still holds consistent data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A seed for a new channel handle's random number generator (deterministic after
    /// [`Builder::rng_seed`](super::Builder::rng_seed)).
    pub(crate) fn next_seed(&self) -> u64 {
        // SplitMix64: consecutive counter values give unrelated seeds.
        let mut z = self
            .seeds
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The current table, if one was built.
    #[inline]
    pub(crate) fn table(&self) -> Option<Arc<Table>> {
        self.table.load_full()
    }

    /// Runs `f` on the current table without taking a reference count on it.
    #[inline]
    pub(crate) fn with_table<T>(&self, f: impl FnOnce(&Table) -> T) -> Option<T> {
        self.table.load().as_deref().map(f)
    }

    pub(crate) fn local_zone(&self) -> Option<String> {
        self.state().local_zone.clone()
    }

    pub(crate) fn spill_level(&self) -> SpillLevel {
        SpillLevel::from_bits(self.spill.load(Ordering::Relaxed))
    }

    pub(crate) fn controller_view(&self) -> Option<AdaptiveStats> {
        *self
            .controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn ejected_for(&self, key: &EndpointKey) -> Option<Duration> {
        self.state().ejections.remaining(key, Instant::now())
    }

    /// Picks an endpoint from `table` and counts the pick.
    #[inline]
    pub(crate) fn pick(&self, table: &Table, rng: &mut Rng) -> Option<Picked> {
        let pick = table
            .picker
            .pick(rng, self.spill_level(), |i| table.endpoints[i].in_flight())?;
        let endpoint = &table.endpoints[pick.index];
        self.count(endpoint, pick);
        Some(Picked {
            endpoint: Arc::clone(endpoint),
            timed: table.picker.is_adaptive(),
        })
    }

    /// Picks again after a connection failure: any endpoint but `failed`.
    pub(crate) fn repick(&self, failed: &Endpoint, rng: &mut Rng) -> Option<Picked> {
        let table = self.table()?;
        for _ in 0..8 {
            let pick = table
                .picker
                .pick(rng, self.spill_level(), |i| table.endpoints[i].in_flight())?;
            let endpoint = &table.endpoints[pick.index];
            if endpoint.key != failed.key {
                self.count(endpoint, pick);
                self.counters.repicks.fetch_add(1, Ordering::Relaxed);
                self.metrics.repicks.increment(1);
                return Some(Picked {
                    endpoint: Arc::clone(endpoint),
                    timed: table.picker.is_adaptive(),
                });
            }
        }
        None
    }

    #[inline]
    fn count(&self, endpoint: &Endpoint, pick: Pick) {
        use crate::picker::Locality;
        endpoint.picks.fetch_add(1, Ordering::Relaxed);
        endpoint.zone.picks.fetch_add(1, Ordering::Relaxed);
        let metric = match pick.locality {
            Locality::Local => &self.metrics.local,
            Locality::Remote => &self.metrics.remote,
            Locality::Unknown => &self.metrics.unknown,
        };
        metric.increment(1);
        if pick.spilled {
            self.counters.spilled.fetch_add(1, Ordering::Relaxed);
            self.metrics.spills.increment(1);
        }
        if pick.panic {
            self.counters.panic.fetch_add(1, Ordering::Relaxed);
            self.metrics.panic_picks.increment(1);
        }
    }

    /// A connection to `endpoint` failed: eject it (within the limits) and rebuild the table so
    /// the re-pick and every later call avoid it.
    pub(crate) fn connect_failed(&self, endpoint: &Endpoint, failure: &ConnectFailure) {
        endpoint.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.counters
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        self.metrics.connect_failures.increment(1);
        let mut state = self.state();
        // Live as the picker counts them (not stopped, weight above 0), so that "never more
        // than half" holds for the instances that can be picked at all.
        let live = state
            .snapshot
            .as_ref()
            .map_or(0, |s| live_count(s.instances()));
        let outcome = state
            .ejections
            .on_failure(&endpoint.key, Instant::now(), live);
        match outcome {
            Outcome::Ejected(duration) => {
                self.counters.ejections.fetch_add(1, Ordering::Relaxed);
                self.metrics.ejections.increment(1);
                tracing::info!(
                    namespace = %self.ident.namespace,
                    service = %self.ident.service,
                    instance = endpoint.id(),
                    addr = %endpoint.addr(),
                    error = %Chain(&**failure),
                    ejected_for = ?duration,
                    "connection failed; instance ejected"
                );
                self.rebuild(&mut state);
                drop(state);
                self.ejections_changed.notify_one();
            }
            Outcome::AtCapacity => tracing::warn!(
                namespace = %self.ident.namespace,
                service = %self.ident.service,
                instance = endpoint.id(),
                addr = %endpoint.addr(),
                error = %Chain(&**failure),
                "connection failed; not ejected, half of the instances are ejected already"
            ),
            Outcome::AlreadyEjected => {}
        }
    }

    /// A new connection to `endpoint` is up: its failure streak ends.
    pub(crate) fn connect_succeeded(&self, endpoint: &Endpoint) {
        if endpoint.connect_failures.load(Ordering::Relaxed) > 0 {
            self.state().ejections.on_success(&endpoint.key);
        }
    }

    /// Picks per zone, ever.
    pub(crate) fn zone_picks(&self) -> Vec<(Option<String>, u64)> {
        self.state()
            .zones
            .iter()
            .map(|(zone, counters)| (zone.clone(), counters.picks.load(Ordering::Relaxed)))
            .collect()
    }

    fn set_snapshot(&self, snapshot: Option<Arc<Snapshot>>) {
        let mut state = self.state();
        state.snapshot = snapshot;
        self.rebuild(&mut state);
    }

    fn set_demand(&self, demand: Option<ZoneDemand>, generation: u64) {
        let mut state = self.state();
        state.demand = demand;
        self.rebuild(&mut state);
        drop(state);
        self.demand_generation.send_replace(generation);
    }

    fn set_zone(&self, zone: Option<String>) {
        let mut state = self.state();
        state.local_zone = zone;
        state.zone_resolved = true;
        self.rebuild(&mut state);
    }

    fn rebuild_now(&self) {
        let mut state = self.state();
        self.rebuild(&mut state);
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.state().ejections.next_expiry(Instant::now())
    }

    /// Builds a new table from `state` and publishes it.
    fn rebuild(&self, state: &mut BuildState) {
        let Some(snapshot) = state.snapshot.clone() else {
            return;
        };
        if !state.zone_resolved {
            return;
        }
        let now = Instant::now();
        let instances = snapshot.instances();
        let keys: Vec<EndpointKey> = instances.iter().map(|i| (i.id.clone(), i.addr)).collect();
        state.ejections.retain(|key| keys.contains(key));

        let config = PickerConfig {
            local_zone: state.local_zone.clone(),
            zone_mode: self.settings.zone_mode,
            panic_threshold: self.settings.panic_threshold,
            load_max_age: self.settings.load_max_age,
        };
        let picker = Picker::build(
            instances,
            |i| state.ejections.is_ejected(&keys[i], now),
            &config,
            state.demand.as_ref(),
            SystemTime::now(),
        );

        // Keep the endpoints (connections, counters) of instances that stay.
        let previous = self.table();
        let existing: HashMap<&EndpointKey, &Arc<Endpoint>> = previous
            .as_ref()
            .map(|t| t.endpoints.iter().map(|e| (&e.key, e)).collect())
            .unwrap_or_default();
        let endpoints: Vec<Arc<Endpoint>> = instances
            .iter()
            .zip(keys)
            .map(|(instance, key)| {
                let zone = state.zones.entry(instance.zone.clone()).or_default();
                match existing.get(&key) {
                    // Same instance, same zone: keep it. (An instance whose zone changed gets a
                    // new endpoint, so its picks count in its new zone, as the picker sees it.)
                    Some(endpoint) if Arc::ptr_eq(&endpoint.zone, zone) => Arc::clone(endpoint),
                    _ => {
                        let zone = Arc::clone(zone);
                        let template = (self.settings.endpoint)(key.1);
                        Arc::new(Endpoint::new(
                            key,
                            zone,
                            template,
                            self.settings.connect_timeout,
                        ))
                    }
                }
            })
            .collect();

        let cpu = zone_cpu(&snapshot, &picker, state.local_zone.as_deref());
        let candidates = picker.instances().iter().filter(|v| v.candidate).count();
        self.metrics.instances.set(count(instances.len()));
        self.metrics.eligible.set(count(candidates));
        self.metrics
            .local_share
            .set(picker.local_fraction(self.spill_level()));
        let generation = snapshot.generation();
        let table = Table {
            snapshot,
            picker,
            endpoints,
            cpu,
        };
        self.table.store(Some(Arc::new(table)));
        drop(previous);
        self.table_generation.send_replace(generation);
    }

    /// Waits for the first table, up to the first-snapshot timeout.
    pub(crate) async fn first_table(&self) -> Result<Arc<Table>, FirstTable> {
        if let Some(table) = self.table() {
            return Ok(table);
        }
        let mut generations = self.table_generation.subscribe();
        let waited = tokio::time::timeout(
            self.settings.first_snapshot_timeout,
            generations.wait_for(|&g| g > 0),
        )
        .await;
        match waited {
            Ok(Ok(_)) => self.table().ok_or(FirstTable::Closed),
            Ok(Err(_)) => Err(FirstTable::Closed),
            Err(_) => Err(FirstTable::TimedOut),
        }
    }

    /// Waits until the table is built from snapshot `generation` (and caller-fleet snapshot
    /// `demand`) or later ones.
    pub(crate) async fn table_at(&self, generation: u64, demand: u64) {
        let mut generations = self.table_generation.subscribe();
        let _ = generations.wait_for(|&g| g >= generation).await;
        let mut demands = self.demand_generation.subscribe();
        let _ = demands.wait_for(|&g| g >= demand).await;
    }

    /// One tick of the adaptive controller.
    fn tick(&self, controller: &mut ZoneController, now: Duration) {
        let Some(table) = self.table() else {
            return;
        };
        let (local, remote) = {
            let state = self.state();
            let mut local = LatencySample::default();
            let mut remote = LatencySample::default();
            for (zone, counters) in &state.zones {
                let (calls, nanos) = counters.harvest();
                let sample = if zone.is_some() && *zone == state.local_zone {
                    &mut local
                } else {
                    &mut remote
                };
                sample.calls += calls;
                sample.total_nanos = sample.total_nanos.saturating_add(nanos);
            }
            (local, remote)
        };
        let before = controller.spill();
        let verdict = controller.observe(&Observation {
            now,
            local,
            remote,
            cpu_local: table.cpu.0,
            cpu_remote: table.cpu.1,
        });
        let level = controller.level();
        self.spill.store(level.to_bits(), Ordering::Relaxed);
        let share = table.picker.local_fraction(level);
        self.metrics.local_share.set(share);
        if (controller.spill() - before).abs() > f64::EPSILON && table.picker.is_adaptive() {
            tracing::debug!(
                namespace = %self.ident.namespace,
                service = %self.ident.service,
                ?verdict,
                spill = controller.spill(),
                local_share = share,
                local_latency = ?controller.local_latency(),
                remote_latency = ?controller.remote_latency(),
                "zone spill changed"
            );
        }
        *self
            .controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(AdaptiveStats {
            spill: controller.spill(),
            verdict: controller.verdict(),
            local_latency: controller.local_latency(),
            remote_latency: controller.remote_latency(),
        });
    }
}

#[allow(clippy::cast_precision_loss)] // gauge values
fn count(n: usize) -> f64 {
    n as f64
}

/// Why a call found no table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstTable {
    TimedOut,
    Closed,
}

/// Capacity-weighted mean `LB_LOAD` of the local zone's candidates and of the others'.
fn zone_cpu(
    snapshot: &Snapshot,
    picker: &Picker,
    local_zone: Option<&str>,
) -> (Option<f64>, Option<f64>) {
    let mut sums = [(0.0f64, 0.0f64); 2];
    for (instance, view) in snapshot.instances().iter().zip(picker.instances()) {
        let Some(load) = instance.load else { continue };
        if !view.candidate {
            continue;
        }
        let side = usize::from(!(local_zone.is_some() && instance.zone.as_deref() == local_zone));
        let weight = f64::from(view.base_weight);
        sums[side].0 += f64::from(load.get()) * weight;
        sums[side].1 += weight;
    }
    let mean = |(sum, weight): (f64, f64)| (weight > 0.0).then(|| sum / weight);
    (mean(sums[0]), mean(sums[1]))
}

/// Where the own zone comes from, resolved by the background task before the first table.
#[derive(Debug, Clone)]
pub(crate) enum ZoneSource {
    Fixed(Option<String>),
    TaskMetadata { uri: String, timeout: Duration },
}

/// The balancer's background task: applies snapshots, caller-fleet changes and ejection
/// expiries to the table, and runs the adaptive controller.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    mut callers: Option<watch::Receiver<Option<Arc<Snapshot>>>>,
    zone: ZoneSource,
    adaptive: AdaptiveOptions,
) {
    let local_zone = match zone {
        ZoneSource::Fixed(zone) => zone,
        ZoneSource::TaskMetadata { uri, timeout } => {
            match crate::zone::from_task_metadata(&uri, timeout).await {
                Ok(zone) => zone,
                Err(error) => {
                    tracing::warn!(
                        namespace = %shared.ident.namespace,
                        service = %shared.ident.service,
                        error = %Chain(&error),
                        "own zone unknown; calls get no zone affinity"
                    );
                    None
                }
            }
        }
    };
    tracing::info!(
        namespace = %shared.ident.namespace,
        service = %shared.ident.service,
        zone = ?local_zone,
        "own zone"
    );
    shared.set_zone(local_zone);
    // Whatever arrived while the zone was being resolved.
    let current = snapshots.borrow_and_update().clone();
    if current.is_some() {
        shared.set_snapshot(current);
    }

    let mut controller = ZoneController::new(adaptive.clone());
    let mut ticks = tokio::time::interval(adaptive.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    loop {
        let expiry = shared.next_expiry();
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                shared.set_snapshot(snapshot);
            }
            Some((demand, generation)) = caller_change(&mut callers) => {
                shared.set_demand(demand, generation);
            }
            () = sleep_until(expiry) => shared.rebuild_now(),
            () = shared.ejections_changed.notified() => {}
            _ = ticks.tick() => shared.tick(&mut controller, started.elapsed()),
        }
    }
}

/// The next caller-fleet snapshot as zone demand, with its generation; pending forever without
/// a caller fleet.
async fn caller_change(
    callers: &mut Option<watch::Receiver<Option<Arc<Snapshot>>>>,
) -> Option<(Option<ZoneDemand>, u64)> {
    let Some(receiver) = callers else {
        return std::future::pending().await;
    };
    if receiver.changed().await.is_err() {
        *callers = None;
        return None;
    }
    let snapshot = receiver.borrow_and_update().clone();
    let generation = snapshot.as_ref().map_or(0, |s| s.generation());
    let demand = snapshot.map(|s| ZoneDemand::from_instances(s.instances()));
    Some((demand, generation))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The error a call sees when no table came in time.
pub(crate) fn no_table(shared: &Shared, why: FirstTable, last_error: Option<Arc<Error>>) -> Error {
    match why {
        FirstTable::TimedOut => Error::NotDiscovered {
            namespace: shared.ident.namespace.clone(),
            service: shared.ident.service.clone(),
            waited: shared.settings.first_snapshot_timeout,
            last_error,
        },
        FirstTable::Closed => Error::Closed {
            namespace: shared.ident.namespace.clone(),
            service: shared.ident.service.clone(),
        },
    }
}
