//! What the balancer is doing, for dashboards, demos and tests.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::health::HealthStatus;
use super::state::{Shared, reason_slot};
use crate::discovery::{DiscoveryStatus, Snapshot};
use crate::instance::Instance;
use crate::outlier::EjectionReason;
use crate::picker::{Exclusion, Locality, Verdict, locality};

/// A consistent view of the balancer: the snapshot in service, how the picker sees each instance
/// and zone, and the call counters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stats {
    /// The namespace.
    pub namespace: String,
    /// The service.
    pub service: String,
    /// The caller's own zone name, once resolved.
    pub local_zone: Option<String>,
    /// The caller's own AZ ID, once resolved.
    pub local_zone_id: Option<String>,
    /// The snapshot the picker works from (`None` before the first one).
    pub snapshot: Option<Arc<Snapshot>>,
    /// Whether the picker is in panic mode.
    pub panic: bool,
    /// The share of calls the zone plan keeps local now (0 without a local zone to keep them in).
    pub local_share: f64,
    /// The adaptive controller's state, once it has run.
    pub adaptive: Option<AdaptiveStats>,
    /// One entry per snapshot instance, in snapshot order.
    pub instances: Vec<InstanceStats>,
    /// One entry per zone that has candidates or was ever picked.
    pub zones: Vec<ZoneStats>,
    /// Call counters since the balancer was built.
    pub calls: CallStats,
    /// The retry throttle's token count now (A6: retries stop at half of its maximum).
    pub retry_tokens: f64,
    /// What discovery has been doing.
    pub discovery: DiscoveryStatus,
}

/// One instance as the balancer sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InstanceStats {
    /// The instance (ID, address, zone, state, health, weight, load, task ARN).
    pub instance: Instance,
    /// Why it is not eligible, if it is not.
    pub exclusion: Option<Exclusion>,
    /// Whether the picker can pick it (eligible, or merely not stopped in panic mode).
    pub candidate: bool,
    /// `LB_WEIGHT`, or the median fill-in.
    pub base_weight: u32,
    /// The weight picks follow: base weight × load factor (0 for non-candidates).
    pub effective_weight: f64,
    /// Calls in flight on it.
    pub in_flight: u32,
    /// The latency-aware choice's estimate of its latency (answered calls, time to the response
    /// headers); `None` before its first answer or with [`Options::latency_aware`] off.
    ///
    /// [`Options::latency_aware`]: crate::Options::latency_aware
    pub latency: Option<Duration>,
    /// Times it was picked.
    pub picks: u64,
    /// Connection attempts to it that failed.
    pub connect_failures: u64,
    /// Whether a live connection is open.
    pub connected: bool,
    /// The address the live connection reached: of a dual-stack instance, the one its
    /// [`IpFamily`](crate::IpFamily) order dialled first, or the fallback when that failed.
    pub connected_addr: Option<std::net::SocketAddr>,
    /// How much longer it stays ejected, if it is (zero when an outlier ejection waits for the
    /// next sweep to end it).
    pub ejected_for: Option<Duration>,
    /// Why it is ejected, if it is.
    pub ejection_reason: Option<EjectionReason>,
    /// What its health watch says.
    pub health: HealthStatus,
    /// The slow-start factor of its weight, 0 to 1 (1: full weight).
    pub slow_start_factor: f64,
    /// Policy retries sent to it.
    pub retries: u64,
    /// Transparent retries sent to it.
    pub transparent_retries: u64,
    /// Retries the throttle refused after a call failed on it.
    pub retries_throttled: u64,
    /// Connections opened to it, ever: one while its connection stays up.
    pub connections: u64,
    /// Calls outlier detection counted as successes since its last sweep.
    pub successes: u64,
    /// Calls outlier detection counted as failures since its last sweep.
    pub failures: u64,
    /// Its current run of calls counted as failures (what consecutive-failure ejection reads).
    pub consecutive_failures: u32,
}

impl InstanceStats {
    /// The ECS task ID (see [`Instance::task_id`]).
    pub fn task_id(&self) -> &str {
        self.instance.task_id()
    }
}

/// One zone as the balancer sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ZoneStats {
    /// The zone's name (as the instances' account names it); `None` for instances without one.
    pub zone: Option<String>,
    /// The zone's AZ ID, when known.
    pub zone_id: Option<String>,
    /// Relative to the caller's zone.
    pub locality: Locality,
    /// Instances the picker can pick there.
    pub candidates: usize,
    /// Its share of the candidates' effective weight.
    pub capacity_share: f64,
    /// Its share of the calls that leave the local zone (or of all calls without zone
    /// affinity).
    pub spill_share: f64,
    /// Times an instance there was picked.
    pub picks: u64,
}

/// Call counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallStats {
    /// Picks in the caller's zone.
    pub local: u64,
    /// Picks in other zones.
    pub remote: u64,
    /// Picks where the caller's or the instance's zone is unknown.
    pub unknown: u64,
    /// Picks that left the local zone although it had candidates.
    pub spilled: u64,
    /// Picks made in panic mode.
    pub panic: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Ejections, for any reason.
    pub ejections: u64,
    /// Ejections by reason.
    pub ejections_by_reason: EjectionCounts,
    /// Policy retries (attempts after a failed one, under a retry policy).
    pub retries: u64,
    /// Transparent retries (attempts after one that never reached the server's application).
    pub transparent_retries: u64,
    /// Retries the retry throttle refused.
    pub retries_throttled: u64,
    /// Calls that failed in the balancer or the transport (not gRPC errors from the service).
    pub failed: u64,
}

/// Ejections by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EjectionCounts {
    /// After connection failures.
    pub connect_failure: u64,
    /// After consecutive failed calls.
    pub consecutive_failures: u64,
    /// By success rate.
    pub success_rate: u64,
    /// By failure percentage.
    pub failure_percentage: u64,
}

impl EjectionCounts {
    /// The count for `reason`.
    pub fn get(&self, reason: EjectionReason) -> u64 {
        match reason {
            EjectionReason::ConnectFailure => self.connect_failure,
            EjectionReason::ConsecutiveFailures => self.consecutive_failures,
            EjectionReason::SuccessRate => self.success_rate,
            EjectionReason::FailurePercentage => self.failure_percentage,
        }
    }
}

impl CallStats {
    /// All picks.
    pub fn picks(&self) -> u64 {
        self.local + self.remote + self.unknown
    }
}

/// The adaptive zone controller's state.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AdaptiveStats {
    /// The spill level, 0 (everything local) to 1 (spread by capacity).
    pub spill: f64,
    /// The last tick's verdict.
    pub verdict: Verdict,
    /// Median latency of local calls (over `latency_window`).
    pub local_latency: Option<Duration>,
    /// Median latency of calls to other zones (over up to `remote_window`).
    pub remote_latency: Option<Duration>,
    /// The client's own scheduling lag, smoothed: how late the controller's tick runs.
    pub client_lag: Duration,
}

pub(super) fn collect(shared: &Shared, discovery: DiscoveryStatus) -> Stats {
    let table = shared.table();
    let c = &shared.counters;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let zone_picks = shared.zone_picks();
    let local_zone = shared.local_zone();
    let local_zone_id = shared.local_zone_id();
    let locality_of = |name: &Option<String>, id: &Option<String>| {
        locality(
            local_zone.as_deref(),
            local_zone_id.as_deref(),
            name.as_deref(),
            id.as_deref(),
        )
    };
    // Picks by locality, from the per-zone counts: the own zone is resolved before the first
    // table, so every pick into a zone had that zone's locality.
    let (mut local, mut remote, mut unknown) = (0, 0, 0);
    for (name, id, picks) in &zone_picks {
        match locality_of(name, id) {
            Locality::Local => local += picks,
            Locality::Remote => remote += picks,
            Locality::Unknown => unknown += picks,
        }
    }
    let calls = CallStats {
        local,
        remote,
        unknown,
        spilled: load(&c.spilled),
        panic: load(&c.panic),
        connect_failures: load(&c.connect_failures),
        ejections: c.ejections.iter().map(load).sum(),
        ejections_by_reason: EjectionCounts {
            connect_failure: load(&c.ejections[reason_slot(EjectionReason::ConnectFailure)]),
            consecutive_failures: load(
                &c.ejections[reason_slot(EjectionReason::ConsecutiveFailures)],
            ),
            success_rate: load(&c.ejections[reason_slot(EjectionReason::SuccessRate)]),
            failure_percentage: load(&c.ejections[reason_slot(EjectionReason::FailurePercentage)]),
        },
        retries: load(&c.retries),
        transparent_retries: load(&c.transparent_retries),
        retries_throttled: load(&c.retries_throttled),
        failed: load(&c.failed_calls),
    };
    let retry_tokens = shared.throttle.tokens();
    let now = tokio::time::Instant::now();
    let adaptive = shared.controller_view();
    let picks_in = |name: &Option<String>, id: &Option<String>| {
        zone_picks
            .iter()
            .find(|(n, i, _)| n == name && i == id)
            .map_or(0, |&(_, _, picks)| picks)
    };
    let Some(table) = table else {
        return Stats {
            namespace: shared.ident.namespace.clone(),
            service: shared.ident.service.clone(),
            local_zone,
            local_zone_id,
            snapshot: None,
            panic: false,
            local_share: 0.0,
            adaptive,
            instances: Vec::new(),
            zones: Vec::new(),
            calls,
            retry_tokens,
            discovery,
        };
    };
    let instances = table
        .snapshot
        .instances()
        .iter()
        .zip(table.picker.instances())
        .zip(&table.endpoints)
        .map(|((instance, view), endpoint)| {
            let ejection = shared.ejection(&endpoint.key);
            let (successes, failures, consecutive_failures) = endpoint.calls.peek();
            InstanceStats {
            instance: instance.clone(),
            exclusion: view.exclusion,
            candidate: view.candidate,
            base_weight: view.base_weight,
            effective_weight: view.effective_weight(),
            in_flight: endpoint.in_flight(),
            latency: match endpoint.latency.read() {
                (0, _) => None,
                (micros, _) => Some(Duration::from_micros(u64::from(micros))),
            },
            picks: endpoint.picks.load(Ordering::Relaxed),
            connect_failures: endpoint.connect_failures.load(Ordering::Relaxed),
            connected: endpoint.connected(),
            connected_addr: endpoint.connected_addr(),
            ejected_for: ejection.map(|e| e.until.saturating_duration_since(now)),
            ejection_reason: ejection.map(|e| e.reason),
            health: endpoint.health(),
            #[allow(clippy::cast_precision_loss)] // a factor in thousandths
            slow_start_factor: view.slow_start_milli as f64 / 1000.0,
            retries: load(&endpoint.retries.retries),
            transparent_retries: load(&endpoint.retries.transparent),
            retries_throttled: load(&endpoint.retries.throttled),
            connections: load(&endpoint.connections),
            successes,
            failures,
            consecutive_failures,
        }
        })
        .collect();
    let mut zones: Vec<ZoneStats> = table
        .picker
        .zones()
        .iter()
        .map(|z| ZoneStats {
            zone: z.zone.clone(),
            zone_id: z.zone_id.clone(),
            locality: z.locality,
            candidates: z.candidates,
            capacity_share: z.capacity_share,
            spill_share: z.spill_share,
            picks: picks_in(&z.zone, &z.zone_id),
        })
        .collect();
    for (name, id, picks) in &zone_picks {
        if !zones.iter().any(|z| z.zone == *name && z.zone_id == *id) {
            zones.push(ZoneStats {
                zone: name.clone(),
                zone_id: id.clone(),
                locality: if name.is_none() && id.is_none() {
                    Locality::Unknown
                } else {
                    locality_of(name, id)
                },
                candidates: 0,
                capacity_share: 0.0,
                spill_share: 0.0,
                picks: *picks,
            });
        }
    }
    zones.sort_by_key(|z| (z.zone.is_none(), z.zone.clone(), z.zone_id.clone()));
    Stats {
        namespace: shared.ident.namespace.clone(),
        service: shared.ident.service.clone(),
        local_zone,
        local_zone_id,
        panic: table.picker.panic(),
        local_share: table.picker.local_fraction(shared.spill_level()),
        snapshot: Some(Arc::clone(&table.snapshot)),
        adaptive,
        instances,
        zones,
        calls,
        retry_tokens,
        discovery,
    }
}
