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

use tonic::Code;

use super::endpoint::{ConnectFailure, ConnectSettings, Endpoint, EndpointKey, ZoneCounters};
use super::health::{HealthCell, HealthStatus};
use super::stats::AdaptiveStats;
use crate::discovery::Snapshot;
use crate::error::{Chain, Error};
use crate::outlier::{
    Ejection, EjectionReason, Ejections, HostCounts, Outcome, OutlierOptions, sweep,
};
use crate::picker::{
    AdaptiveOptions, Availability, ClientLag, Histogram, LatencyAware, Locality, Observation, Pick,
    Picker, PickerConfig, SlowStart, SpillLevel, ZoneController, ZoneDemand, ZoneKey, ZoneMode,
    live_count, locality, micros, zones_of,
};
use crate::retry::{RetryOptions, RetryPolicy, Throttle};
use crate::telemetry::{BalancerMetrics, Ident, InstanceMetrics};

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
    pub(crate) endpoint: EndpointFactory,
    pub(crate) connect: Arc<ConnectSettings>,
    pub(crate) outlier: OutlierOptions,
    pub(crate) retry: RetryOptions,
    pub(crate) slow_start: Option<SlowStart>,
    pub(crate) latency_aware: Option<LatencyAware>,
    /// The adaptive plan's probe share.
    pub(crate) probe_share: f64,
}

/// What the table is built from. Changed only under [`Shared::state`]'s lock.
struct BuildState {
    snapshot: Option<Arc<Snapshot>>,
    demand: Option<ZoneDemand>,
    local_zone: Option<String>,
    local_zone_id: Option<String>,
    zone_resolved: bool,
    ejections: Ejections<EndpointKey>,
    zones: HashMap<Option<ZoneKey>, Arc<ZoneCounters>>,
}

impl BuildState {
    /// The snapshot's instances that are live as the picker counts them (not stopped, weight
    /// above 0): what the ejection caps are shares of, so that they hold for the instances that
    /// can be picked at all.
    fn live(&self) -> usize {
        self.snapshot
            .as_ref()
            .map_or(0, |s| live_count(s.instances()))
    }
}

/// Call counters for [`Stats`](super::Stats) (the `metrics` facade is write-only). Picks by
/// locality are not here: [`stats::collect`](super::stats) derives them from the per-zone pick
/// counts, since a zone's locality is fixed (the own zone is resolved before the first table).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) spilled: AtomicU64,
    pub(crate) panic: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    /// One per [`EjectionReason::ALL`], in that order.
    pub(crate) ejections: [AtomicU64; 4],
    pub(crate) retries: AtomicU64,
    pub(crate) transparent_retries: AtomicU64,
    pub(crate) retries_throttled: AtomicU64,
    pub(crate) failed_calls: AtomicU64,
}

/// A picked endpoint, and which of its latency records the call feeds.
pub(crate) struct Picked {
    pub(crate) endpoint: Arc<Endpoint>,
    /// The table's local share follows the adaptive controller, which learns from latency:
    /// record the call's latency in the endpoint's zone counters.
    pub(crate) zone_latency: bool,
    /// The latency-aware choice reads the endpoint's estimate: fold the call's latency in.
    /// With neither, the call is not timed.
    pub(crate) latency_aware: Option<LatencyAware>,
}

impl Picked {
    fn new(table: &Table, endpoint: &Arc<Endpoint>) -> Self {
        Self {
            endpoint: Arc::clone(endpoint),
            zone_latency: table.picker.is_adaptive(),
            latency_aware: table.picker.latency_aware().copied(),
        }
    }
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
    /// Woken by health watches when an instance's eligibility changed.
    health_changed: Arc<Notify>,
    pub(crate) throttle: Throttle,
    /// Whether any retry policy is configured (the throttle then counts successes).
    retries_on: bool,
    pub(crate) metrics: BalancerMetrics,
    pub(crate) counters: Counters,
    /// The adaptive controller's last state, for [`Stats`](super::Stats).
    controller: Mutex<Option<AdaptiveStats>>,
    seeds: AtomicU64,
    /// The client's own scheduling lag, for the latency-aware choice (its heartbeat runs with
    /// the background task).
    pub(crate) lag: Arc<ClientLag>,
}

impl Shared {
    pub(crate) fn new(
        ident: Ident,
        settings: Settings,
        ejection: crate::outlier::Limits,
        seed: u64,
    ) -> Self {
        Self {
            metrics: BalancerMetrics::new(&ident),
            throttle: Throttle::new(&settings.retry.throttling),
            retries_on: settings.retry.any(),
            health_changed: Arc::new(Notify::new()),
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
                local_zone_id: None,
                zone_resolved: false,
                ejections: Ejections::new(ejection),
                zones: HashMap::new(),
            }),
            ejections_changed: Notify::new(),
            counters: Counters::default(),
            lag: Arc::new(ClientLag::default()),
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

    pub(crate) fn local_zone_id(&self) -> Option<String> {
        self.state().local_zone_id.clone()
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

    /// `key`'s ejection now, if it is ejected.
    pub(crate) fn ejection(&self, key: &EndpointKey) -> Option<Ejection> {
        self.state().ejections.ejection(key, Instant::now())
    }

    /// The retry policy of a call to `path`.
    #[inline]
    pub(crate) fn retry_policy(&self, path: &str) -> Option<&RetryPolicy> {
        if self.retries_on {
            self.settings.retry.policy_for(path)
        } else {
            None
        }
    }

    /// Picks an endpoint from `table` and counts the pick.
    #[inline]
    pub(crate) fn pick(&self, table: &Table, rng: &mut Rng) -> Option<Picked> {
        let lag = self.lag.lag_us();
        let pick = table
            .picker
            .pick(rng, self.spill_level(), |i| table.endpoints[i].load(lag))?;
        let endpoint = &table.endpoints[pick.index];
        self.count(endpoint, pick);
        Some(Picked::new(table, endpoint))
    }

    /// Picks for a retry: an instance not in `tried` while an eligible one exists, the local
    /// zone's first ([`Picker::pick_excluding`]).
    pub(crate) fn repick(&self, rng: &mut Rng, tried: &[EndpointKey]) -> Option<Picked> {
        let table = self.table()?;
        let lag = self.lag.lag_us();
        let pick = table.picker.pick_excluding(
            rng,
            self.spill_level(),
            |i| table.endpoints[i].load(lag),
            |i| tried.contains(&table.endpoints[i].key),
        )?;
        let endpoint = &table.endpoints[pick.index];
        self.count(endpoint, pick);
        Some(Picked::new(&table, endpoint))
    }

    /// A retry goes to `endpoint`.
    pub(crate) fn count_retry(&self, endpoint: &Endpoint, transparent: bool) {
        if transparent {
            self.counters
                .transparent_retries
                .fetch_add(1, Ordering::Relaxed);
            endpoint.retries.transparent.fetch_add(1, Ordering::Relaxed);
            self.metrics.transparent_retries.increment(1);
            endpoint.metrics.transparent_retries.increment(1);
        } else {
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            endpoint.retries.retries.fetch_add(1, Ordering::Relaxed);
            self.metrics.retries.increment(1);
            endpoint.metrics.retries.increment(1);
        }
    }

    /// The throttle refused to retry a failure on `endpoint`.
    pub(crate) fn count_throttled(&self, endpoint: &Endpoint) {
        self.counters
            .retries_throttled
            .fetch_add(1, Ordering::Relaxed);
        endpoint.retries.throttled.fetch_add(1, Ordering::Relaxed);
        self.metrics.retries_throttled.increment(1);
        endpoint.metrics.retries_throttled.increment(1);
    }

    /// A call failed in the balancer or the transport.
    pub(crate) fn count_failed(&self) {
        self.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
        self.metrics.failed_calls.increment(1);
    }

    /// A call on `endpoint` ended with `code`: outlier detection counts it (one relaxed add),
    /// a success feeds the retry throttle, and a run of consecutive failures ejects. Returns
    /// whether the call failed on an instance that is ejected now (so the failure says the
    /// instance is bad, not the fleet).
    #[inline]
    pub(crate) fn record(&self, endpoint: &Endpoint, code: Code) -> bool {
        if !self.settings.outlier.enabled {
            if self.retries_on && code == Code::Ok {
                self.throttle.on_success();
            }
            return false;
        }
        match self.settings.outlier.classify(code) {
            Some(true) => {
                let run = endpoint.calls.failure();
                if self
                    .settings
                    .outlier
                    .consecutive_failures
                    .is_some_and(|limit| run >= limit)
                {
                    self.eject_outlier(endpoint, EjectionReason::ConsecutiveFailures);
                }
                self.state()
                    .ejections
                    .is_ejected(&endpoint.key, Instant::now())
            }
            Some(false) => {
                endpoint.calls.success();
                if self.retries_on && code == Code::Ok {
                    self.throttle.on_success();
                }
                false
            }
            None => false,
        }
    }

    /// Ejects `endpoint` for `reason`, within the caps, and rebuilds the table.
    fn eject_outlier(&self, endpoint: &Endpoint, reason: EjectionReason) {
        let mut state = self.state();
        let live = state.live();
        let outcome = state
            .ejections
            .eject_outlier(&endpoint.key, reason, Instant::now(), live);
        self.ejected(&mut state, endpoint, reason, outcome, None);
    }

    /// Logs, counts and applies an ejection request's outcome.
    fn ejected(
        &self,
        state: &mut BuildState,
        endpoint: &Endpoint,
        reason: EjectionReason,
        outcome: Outcome,
        failure: Option<&ConnectFailure>,
    ) {
        let error = failure.map(|f| Chain(&**f).to_string());
        match outcome {
            Outcome::Ejected(duration) => {
                let slot = reason_slot(reason);
                self.counters.ejections[slot].fetch_add(1, Ordering::Relaxed);
                self.metrics.ejections[slot].increment(1);
                endpoint.metrics.ejections[slot].increment(1);
                endpoint.calls.reset_run();
                tracing::info!(
                    namespace = %self.ident.namespace,
                    service = %self.ident.service,
                    instance = endpoint.id(),
                    addr = %endpoint.addr(),
                    %reason,
                    error,
                    ejected_for = ?duration,
                    "instance ejected"
                );
                self.rebuild(state);
                self.ejections_changed.notify_one();
            }
            Outcome::AtCapacity => tracing::warn!(
                namespace = %self.ident.namespace,
                service = %self.ident.service,
                instance = endpoint.id(),
                addr = %endpoint.addr(),
                %reason,
                error,
                "instance not ejected: the ejection cap is reached"
            ),
            Outcome::AlreadyEjected => {}
        }
    }

    /// Outlier detection's interval sweep: A50's algorithms over the counts of the interval
    /// that ended, then the release of ejections whose time is up.
    fn outlier_sweep(&self, rng: &mut Rng) {
        let Some(table) = self.table() else {
            return;
        };
        let mut state = self.state();
        let now = Instant::now();
        let hosts: Vec<HostCounts> = table
            .endpoints
            .iter()
            .map(|endpoint| {
                let (successes, failures) = endpoint.calls.harvest();
                HostCounts {
                    successes,
                    failures,
                    ejected: state.ejections.is_ejected(&endpoint.key, now),
                }
            })
            .collect();
        let live = live_count(table.snapshot.instances());
        let mut changed = false;
        for (index, reason) in sweep(&hosts, &self.settings.outlier, rng) {
            let endpoint = &table.endpoints[index];
            let outcome = state
                .ejections
                .eject_outlier(&endpoint.key, reason, now, live);
            changed |= matches!(outcome, Outcome::Ejected(_));
            if matches!(outcome, Outcome::Ejected(_)) {
                let slot = reason_slot(reason);
                self.counters.ejections[slot].fetch_add(1, Ordering::Relaxed);
                self.metrics.ejections[slot].increment(1);
                endpoint.metrics.ejections[slot].increment(1);
                tracing::info!(
                    namespace = %self.ident.namespace,
                    service = %self.ident.service,
                    instance = endpoint.id(),
                    addr = %endpoint.addr(),
                    %reason,
                    successes = hosts[index].successes,
                    failures = hosts[index].failures,
                    "instance ejected"
                );
            }
        }
        changed |= state.ejections.sweep(now);
        if changed {
            self.rebuild(&mut state);
        }
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

    /// A connection to `endpoint` failed: eject it (within the cap) and rebuild the table so
    /// the retry and every later call avoid it.
    pub(crate) fn connect_failed(&self, endpoint: &Endpoint, failure: &ConnectFailure) {
        endpoint.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.counters
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        self.metrics.connect_failures.increment(1);
        let mut state = self.state();
        let live = state.live();
        let outcome = state
            .ejections
            .on_connect_failure(&endpoint.key, Instant::now(), live);
        self.ejected(
            &mut state,
            endpoint,
            EjectionReason::ConnectFailure,
            outcome,
            Some(failure),
        );
    }

    /// A new connection to `endpoint` is up: its failure streak ends.
    pub(crate) fn connect_succeeded(&self, endpoint: &Endpoint) {
        if endpoint.connect_failures.load(Ordering::Relaxed) > 0 {
            self.state().ejections.on_connect_success(&endpoint.key);
        }
    }

    /// Picks per zone, ever: (name, ID, picks).
    pub(crate) fn zone_picks(&self) -> Vec<(Option<String>, Option<String>, u64)> {
        self.state()
            .zones
            .values()
            .map(|c| {
                (
                    c.name.clone(),
                    c.id.clone(),
                    c.picks.load(Ordering::Relaxed),
                )
            })
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

    fn set_zone(&self, zone: crate::zone::Detected) {
        let mut state = self.state();
        state.local_zone = zone.name;
        state.local_zone_id = zone.id;
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
        // Each instance is dialled at the first address of its family order (its key), and falls
        // back to the other one (see `IpFamily`).
        let family = self.settings.connect.ip_family;
        let dial: Vec<(EndpointKey, Option<SocketAddr>)> = instances
            .iter()
            .map(|i| {
                let (first, fallback) = i.dial_order(family);
                ((i.id.clone(), first), fallback)
            })
            .collect();
        let keys: Vec<EndpointKey> = dial.iter().map(|(key, _)| key.clone()).collect();
        {
            let present: std::collections::HashSet<&EndpointKey> = keys.iter().collect();
            state.ejections.retain(|key| present.contains(key));
        }

        // Keep the endpoints (connections, counters, health watches) of instances that stay.
        let previous = self.table();
        let existing: HashMap<&EndpointKey, &Arc<Endpoint>> = previous
            .as_ref()
            .map(|t| t.endpoints.iter().map(|e| (&e.key, e)).collect())
            .unwrap_or_default();
        let of = zones_of(instances);
        let endpoints: Vec<Arc<Endpoint>> = instances
            .iter()
            .zip(dial)
            .zip(&of)
            .map(|((instance, (key, fallback)), zone_of)| {
                let zone = state.zones.entry(zone_of.key.clone()).or_insert_with(|| {
                    Arc::new(ZoneCounters::new(zone_of.name.clone(), zone_of.id.clone()))
                });
                match existing.get(&key) {
                    // Same instance, same zone: keep it. (An instance whose zone changed gets a
                    // new endpoint, so its picks count in its new zone, as the picker sees it.)
                    // The same goes for a new fallback address.
                    Some(endpoint)
                        if Arc::ptr_eq(&endpoint.zone, zone) && endpoint.fallback == fallback =>
                    {
                        Arc::clone(endpoint)
                    }
                    _ => {
                        let zone = Arc::clone(zone);
                        let template = (self.settings.endpoint)(key.1);
                        let health = Arc::new(HealthCell::new(
                            self.settings.connect.health.enabled,
                            Arc::clone(&self.health_changed),
                        ));
                        let metrics = InstanceMetrics::new(
                            &self.ident,
                            &key.0,
                            instance.zone.as_deref(),
                            zone_of.id.as_deref(),
                        );
                        Arc::new(Endpoint::new(
                            key,
                            fallback,
                            zone,
                            template,
                            Arc::clone(&self.settings.connect),
                            health,
                            metrics,
                            self.next_seed(),
                        ))
                    }
                }
            })
            .collect();

        let config = PickerConfig {
            local_zone: state.local_zone.clone(),
            local_zone_id: state.local_zone_id.clone(),
            zone_mode: self.settings.zone_mode,
            panic_threshold: self.settings.panic_threshold,
            load_max_age: self.settings.load_max_age,
            slow_start: self.settings.slow_start,
            probe_share: self.settings.probe_share,
            latency_aware: self.settings.latency_aware,
        };
        let availability: Vec<Availability> = endpoints
            .iter()
            .map(|endpoint| {
                if state.ejections.is_ejected(&endpoint.key, now) {
                    Availability::Ejected
                } else if endpoint.health() == HealthStatus::NotServing {
                    Availability::NotServing
                } else {
                    Availability::Available
                }
            })
            .collect();
        let tally = |wanted| availability.iter().filter(|&&a| a == wanted).count();
        let (not_serving, ejected) = (
            tally(Availability::NotServing),
            tally(Availability::Ejected),
        );
        let picker = Picker::build(
            instances,
            |i| availability[i],
            &config,
            state.demand.as_ref(),
            SystemTime::now(),
        );
        for (endpoint, view) in endpoints.iter().zip(picker.instances()) {
            let health = endpoint.health();
            endpoint
                .metrics
                .health
                .set(if health == HealthStatus::NotServing {
                    0.0
                } else {
                    1.0
                });
            #[allow(clippy::cast_precision_loss)] // a factor in thousandths
            endpoint
                .metrics
                .slow_start
                .set(view.slow_start_milli as f64 / 1000.0);
        }

        let local_of = |i: usize| {
            locality(
                state.local_zone.as_deref(),
                state.local_zone_id.as_deref(),
                of[i].name.as_deref(),
                of[i].id.as_deref(),
            ) == Locality::Local
        };
        let cpu = zone_cpu(&snapshot, &picker, local_of);
        let candidates = picker.instances().iter().filter(|v| v.candidate).count();
        self.metrics.instances.set(count(instances.len()));
        self.metrics.eligible.set(count(candidates));
        self.metrics.not_serving.set(count(not_serving));
        self.metrics.ejected.set(count(ejected));
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

    /// The health watch changed an instance's eligibility: rebuild, and count the change.
    fn health_changed(&self) {
        let mut state = self.state();
        let before = self
            .table()
            .map(|t| {
                t.endpoints
                    .iter()
                    .zip(t.picker.instances())
                    .filter(|(_, v)| v.exclusion == Some(crate::picker::Exclusion::NotServing))
                    .count()
            })
            .unwrap_or(0);
        self.rebuild(&mut state);
        let after = self
            .table()
            .map(|t| {
                t.endpoints
                    .iter()
                    .filter(|e| e.health() == HealthStatus::NotServing)
                    .count()
            })
            .unwrap_or(0);
        drop(state);
        match after.cmp(&before) {
            std::cmp::Ordering::Greater => self
                .metrics
                .became_not_serving
                .increment(u64::try_from(after - before).unwrap_or(0)),
            std::cmp::Ordering::Less => self
                .metrics
                .became_serving
                .increment(u64::try_from(before - after).unwrap_or(0)),
            std::cmp::Ordering::Equal => {}
        }
    }

    /// Whether the table has instances in their slow-start window.
    fn ramping(&self) -> bool {
        self.with_table(|t| t.picker.ramping()).unwrap_or(false)
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
    fn tick(&self, controller: &mut ZoneController, now: Duration, lag: Duration) {
        let Some(table) = self.table() else {
            return;
        };
        let (local, remote) = {
            let state = self.state();
            let mut local = Histogram::default();
            let mut remote = Histogram::default();
            for (zone, counters) in &state.zones {
                let harvested = counters.harvest();
                let is_local = zone.is_some()
                    && locality(
                        state.local_zone.as_deref(),
                        state.local_zone_id.as_deref(),
                        counters.name.as_deref(),
                        counters.id.as_deref(),
                    ) == Locality::Local;
                let side = if is_local { &mut local } else { &mut remote };
                side.absorb(&harvested);
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
            lag,
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
            client_lag: controller.lag(),
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
    is_local: impl Fn(usize) -> bool,
) -> (Option<f64>, Option<f64>) {
    let mut sums = [(0.0f64, 0.0f64); 2];
    for (i, (instance, view)) in snapshot
        .instances()
        .iter()
        .zip(picker.instances())
        .enumerate()
    {
        let Some(load) = instance.load else { continue };
        if !view.candidate {
            continue;
        }
        let side = usize::from(!is_local(i));
        let weight = f64::from(view.base_weight);
        sums[side].0 += f64::from(load.get()) * weight;
        sums[side].1 += weight;
    }
    let mean = |(sum, weight): (f64, f64)| (weight > 0.0).then(|| sum / weight);
    (mean(sums[0]), mean(sums[1]))
}

/// The balancer's background task: applies snapshots, caller-fleet changes and ejection
/// expiries to the table, and runs the adaptive controller.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    mut callers: Option<watch::Receiver<Option<Arc<Snapshot>>>>,
    zone: crate::zone::Detection,
    adaptive: AdaptiveOptions,
) {
    // The latency-aware choice's heartbeat lives as long as this task.
    let _heartbeat = shared
        .settings
        .latency_aware
        .is_some()
        .then(|| AbortOnDrop(tokio::spawn(heartbeat(Arc::clone(&shared.lag)))));
    let namespace = shared.ident.namespace.clone();
    let service = shared.ident.service.clone();
    let local_zone = zone
        .resolve(|step, error| {
            tracing::warn!(
                %namespace,
                %service,
                step,
                error = %Chain(error),
                "own zone not found there"
            );
        })
        .await;
    if local_zone.name.is_none() && local_zone.id.is_none() {
        tracing::warn!(
            namespace = %shared.ident.namespace,
            service = %shared.ident.service,
            "own zone unknown; calls get no zone affinity"
        );
    }
    tracing::info!(
        namespace = %shared.ident.namespace,
        service = %shared.ident.service,
        zone = ?local_zone.name,
        zone_id = ?local_zone.id,
        source = local_zone.source,
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
    // The outlier sweep's first run is one interval from now (A50), so the first interval's
    // counts are complete.
    let outlier = shared.settings.outlier.enabled.then(|| {
        let interval = shared.settings.outlier.interval;
        let mut sweeps = tokio::time::interval_at(Instant::now() + interval, interval);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweeps
    });
    let mut sweeps = outlier;
    let mut rng = Rng::with_seed(shared.next_seed());
    let health_changed = Arc::clone(&shared.health_changed);
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
            () = health_changed.notified() => shared.health_changed(),
            () = sleep_until(expiry) => shared.rebuild_now(),
            () = shared.ejections_changed.notified() => {}
            () = next_sweep(&mut sweeps) => shared.outlier_sweep(&mut rng),
            scheduled = ticks.tick() => {
                // How late the tick runs is the client's own scheduling delay.
                let lag = Instant::now().saturating_duration_since(scheduled);
                shared.tick(&mut controller, started.elapsed(), lag);
                // Slow start: weights grow with time, so the table follows them, one tick at a
                // time, while an instance ramps.
                if shared.ramping() {
                    shared.rebuild_now();
                }
            }
        }
    }
}

/// The latency-aware choice's heartbeat: how late a timer on this runtime runs, every
/// [`ClientLag::PERIOD`] (see `ClientLag`). A few microseconds of work per beat.
async fn heartbeat(lag: Arc<ClientLag>) {
    let mut beats = tokio::time::interval(ClientLag::PERIOD);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let scheduled = beats.tick().await;
        lag.beat(
            micros(scheduled.into_std()),
            micros(Instant::now().into_std()),
        );
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next outlier sweep; pending forever when outlier detection is off.
async fn next_sweep(sweeps: &mut Option<tokio::time::Interval>) {
    match sweeps {
        Some(sweeps) => {
            sweeps.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The counters' slot of an ejection reason (its place in [`EjectionReason::ALL`]).
pub(crate) fn reason_slot(reason: EjectionReason) -> usize {
    EjectionReason::ALL
        .iter()
        .position(|&r| r == reason)
        .unwrap_or(0)
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
