//! The picker: which instance takes the next call. Pure: no I/O, no clock, no global
//! randomness; the caller passes the random number generator, the time and the in-flight counts.
//!
//! [`Picker::build`] turns a snapshot of [`Instance`]s into precomputed tables once per change
//! (snapshot, ejection, caller fleet); [`Picker::pick`] then costs a few random numbers and a
//! binary search, and allocates nothing.
//!
//! # Eligibility
//!
//! An instance is eligible when its `LB_STATE` is `RUNNING` (or absent: no lifecycle data), its
//! `LB_HEALTH` is not `UNHEALTHY`, its Cloud Map health status is not `UNHEALTHY`, its gRPC health
//! watch does not say `NOT_SERVING`, it is not ejected locally (connection failures, outlier
//! detection), and its weight is above 0 ([`Exclusion`] names the first reason that applies;
//! [`Availability`] carries what the client itself observed).
//!
//! **Panic mode** (after Envoy's panic threshold): when the eligible instances carry less than
//! [`PickerConfig::panic_threshold`] (default 50 %) of the total weight of the instances that are
//! not `STOPPED`, the picker picks among all instances that are not `STOPPED` and have a weight
//! above 0, and ignores zones. Better to load a draining or failing fleet than to fail every call.
//!
//! # Weights
//!
//! The base weight is `LB_WEIGHT`; when missing or malformed, the median of the known positive
//! weights (or 1 when no instance has one). Reported load adjusts it:
//!
//! ```text
//! effective = base × (1 − 0.75 × LB_LOAD / 100)      factor in [0.25, 1]
//! ```
//!
//! so an instance at 100 % CPU gets a quarter of the share of an idle one of the same size, and
//! never less: a stale or odd `LB_LOAD` can shift traffic but not starve an instance. Load whose
//! `LB_UPDATED_AT` is older than [`PickerConfig::load_max_age`] (default 5 minutes) is ignored.
//! With [`PickerConfig::slow_start`], a task within its window after `LB_RUNNING_SINCE` is also
//! scaled by the [slow-start](SlowStart) factor (from 10 % up to 1).
//!
//! # Retries
//!
//! [`Picker::pick_excluding`] picks for a retry: an instance the call has not tried, in the local
//! zone while it has one, else in the other zones by their spill shares; the same instance again
//! only when every candidate was tried.
//!
//! # Zones
//!
//! Zone names are per account, AZ IDs are not: zones are compared by AZ ID when both the caller
//! and the instance know theirs ([`PickerConfig::local_zone_id`], `AVAILABILITY_ZONE_ID`, or the ID
//! another instance of the same zone name carries), and by name otherwise; instances are grouped
//! by ID where known. So a caller in another account stays in its own *physical* zone.
//!
//! The capacity of a zone, c_z, is its share of the candidates' effective weight. With
//! [`ZoneMode::Adaptive`] (the default):
//!
//! - **Caller fleet known** ([`ZoneDemand`]: how many callers run in each zone, share d_z):
//!   Envoy's [zone-aware routing]. If c_local ≥ d_local every call stays local; otherwise
//!   c_local / d_local of the calls stay and the rest go to the other zones in proportion to
//!   their residual capacity max(0, c_z − d_z). This keeps every instance at the same number of
//!   calls per unit of weight across the whole fleet, while keeping as much traffic local as that
//!   allows. (Envoy's example: callers 40/40/20 % across zones A/B/C, capacity 25/50/25 %, a
//!   caller in A keeps 62.5 % local and sends the rest 2:1 to B and C.) Unlike Envoy there is no
//!   minimum cluster size, and shares are by weight rather than host count.
//! - **Caller fleet unknown**: the local share moves between 1 (everything local) and c_local
//!   (spread by capacity) with a spill level that a controller sets from what the client observes
//!   (see [adaptive mode](#adaptive-mode)). Calls that leave the zone go to the other zones in
//!   proportion to their capacity.
//!
//! [`ZoneMode::Fixed`] keeps a fixed percentage local (what AWS's sample resolver does with 50 %)
//! and [`ZoneMode::Off`] ignores zones. An unknown own zone or panic mode falls back to spreading
//! by capacity, and so does a local zone without candidates, with one exception: when the caller
//! fleet has callers in the own zone, every call leaves it by residual capacity
//! max(0, c_z − d_z), the formula above with c_local = 0 (when rounding leaves no residual
//! anywhere, by capacity). Envoy leaves zone-aware routing in that case and spreads by capacity;
//! going by residual capacity keeps the calls per unit of weight even across the fleet, since the
//! other zones' callers still keep their calls local. An empty or fully ineligible zone is never
//! an error.
//!
//! Within the chosen zone the picker takes two distinct weight-proportional samples and keeps the
//! one with fewer in-flight requests per unit of weight (power of two choices, as in tower's `p2c`
//! and linkerd; ties keep the first sample, so an idle fleet is picked exactly by weight). When
//! one sample's recent latency is more than twice the other's and higher by more than the noise
//! (2 ms plus four times the client's own scheduling jitter), latency joins the comparison
//! ([`LatencyAware`]), so one slow instance stops taking calls rather than taking its in-flight
//! share of them; the client's own stalls are kept out of the estimates. The second sample is drawn again when it repeats the first, and is the next
//! instance of the zone if it repeats again: with replacement, an instance holding 41 % of a zone's
//! weight would be compared with nothing on 17 % of the picks.
//!
//! # Adaptive mode
//!
//! Without the caller fleet, the client watches its own calls: the local share moves between
//! 1 − [`PickerConfig::probe_share`] (nothing spilled; the probes keep the other zones' latency
//! measured) and the local zone's capacity share (everything spilled), following a spill level
//! that the spill controller sets every [`AdaptiveOptions::tick`]. It spills only when the local
//! zone is slower than the other zones *as this client measures them at the same time*, by
//! their median latency and by more than the client's own scheduling noise, or busier by
//! `LB_LOAD`; a slow client slows every zone alike and moves nothing. Hysteresis, confirmation
//! over two ticks and at most one change of direction per 10 s keep it from flapping; a zone
//! that recovered gets its calls back within seconds. See [`AdaptiveOptions`] for every knob.
//!
//! In-flight counts are not compared across zones: with a known call rate they carry the same
//! information as latency (Little's law) but scale with each zone's share of the calls, which is
//! exactly what the controller changes. Within a zone, the P2C step uses them.
//!
//! [zone-aware routing]: https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/zone_aware

mod adaptive;
mod choice;
mod lag;
mod latency;
mod slow_start;
mod table;
mod weight;
mod zone_id;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use adaptive::{AdaptiveOptions, Verdict};
#[cfg(feature = "tonic")]
pub(crate) use adaptive::{Observation, ZoneController};
pub use choice::{CandidateLoad, LatencyAware};
#[cfg(feature = "tonic")]
pub(crate) use choice::{LatencyEstimate, micros};
#[cfg(feature = "tonic")]
pub(crate) use lag::ClientLag;
#[cfg(feature = "tonic")]
pub(crate) use latency::{BUCKETS, Histogram, bucket};
pub use slow_start::SlowStart;
#[cfg(feature = "tonic")]
pub(crate) use table::live_count;
pub use table::{InstanceView, Pick, Picker, ZoneView};
#[cfg(feature = "tonic")]
pub(crate) use zone_id::ZoneKey;
pub(crate) use zone_id::{locality, zones_of};

use crate::contract::LbState;
use crate::instance::Instance;

/// How calls are kept in the caller's own zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZoneMode {
    /// Envoy's zone-aware routing when the caller fleet is known, else a load-driven local share
    /// (see the [module docs](self#zones)). The default.
    #[default]
    Adaptive,
    /// Keep this percentage of calls local (0 to 100) and spread the rest over the other zones
    /// by capacity. For comparison with simpler resolvers.
    Fixed {
        /// Percent of calls kept local.
        local_percent: u8,
    },
    /// No zone affinity: every call goes by weight over all zones.
    Off,
}

/// The picker's settings.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PickerConfig {
    /// The caller's availability zone name; with `local_zone_id`, `None` for both turns zone
    /// affinity off.
    pub local_zone: Option<String>,
    /// The caller's AZ ID, when known: zones are then matched by ID where the instances carry
    /// one (see [zones](self#zones)).
    pub local_zone_id: Option<String>,
    /// How calls are kept local. Default [`ZoneMode::Adaptive`].
    pub zone_mode: ZoneMode,
    /// Panic mode starts when eligible instances hold less than this share of the total weight.
    /// 0 disables panic mode. Default 0.5.
    pub panic_threshold: f64,
    /// `LB_LOAD` older than this (by `LB_UPDATED_AT`) is ignored. Default 5 minutes.
    pub load_max_age: Duration,
    /// Ramp new tasks up by `LB_RUNNING_SINCE`. Default `None` (off).
    pub slow_start: Option<SlowStart>,
    /// Adaptive mode without a caller fleet: the share of calls that goes to the other zones
    /// while nothing is spilled, so the controller can compare their latency with the local
    /// zone's. 0 to 1. Default 0.
    pub probe_share: f64,
    /// The two-choices step weighs latency when it clearly differs (see [`LatencyAware`]).
    /// Default on; `None` compares in-flight requests per unit of weight alone.
    pub latency_aware: Option<LatencyAware>,
}

impl Default for PickerConfig {
    fn default() -> Self {
        Self {
            local_zone: None,
            local_zone_id: None,
            zone_mode: ZoneMode::Adaptive,
            panic_threshold: 0.5,
            load_max_age: Duration::from_secs(300),
            slow_start: None,
            probe_share: 0.0,
            latency_aware: Some(LatencyAware::default()),
        }
    }
}

/// What the client itself knows about an instance, beyond what the snapshot says: its health
/// watch and its ejections. [`Picker::build`] takes one per instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Availability {
    /// Nothing against it.
    #[default]
    Available,
    /// Its gRPC health watch says `NOT_SERVING` (or `SERVICE_UNKNOWN`).
    NotServing,
    /// Ejected: connection failures or outlier detection.
    Ejected,
}

/// Why an instance is not eligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exclusion {
    /// `LB_STATE` is `STOPPED`: never picked, not even in panic mode.
    Stopped,
    /// `LB_STATE` is `STARTING`.
    Starting,
    /// `LB_STATE` is `DRAINING`.
    Draining,
    /// The weight is 0: never picked, not even in panic mode.
    ZeroWeight,
    /// `LB_HEALTH` is `UNHEALTHY`.
    Unhealthy,
    /// Cloud Map's health status is `UNHEALTHY`.
    CloudMapUnhealthy,
    /// Its gRPC health watch says it is not serving.
    NotServing,
    /// Ejected locally: connection failures or outlier detection.
    Ejected,
}

impl Exclusion {
    /// A short name, e.g. `draining`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Draining => "draining",
            Self::ZeroWeight => "zero-weight",
            Self::Unhealthy => "unhealthy",
            Self::CloudMapUnhealthy => "cloud-map-unhealthy",
            Self::NotServing => "not-serving",
            Self::Ejected => "ejected",
        }
    }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a picked instance is, relative to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Locality {
    /// In the caller's zone.
    Local,
    /// In another zone.
    Remote,
    /// The caller's or the instance's zone is unknown.
    Unknown,
}

impl Locality {
    /// `local`, `remote` or `unknown` (metric label values).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Remote => "remote",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far the adaptive mode has moved from "everything local" (0) towards "spread by capacity"
/// (1), in 32-bit fixed point so a pick needs no floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SpillLevel(u32);

impl SpillLevel {
    /// Everything local.
    pub const NONE: Self = Self(0);
    /// Spread by capacity.
    pub const FULL: Self = Self(u32::MAX);

    /// A level from a fraction, clamped to [0, 1].
    pub fn from_fraction(fraction: f64) -> Self {
        if fraction.is_nan() {
            return Self::NONE;
        }
        // Clamped first, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let level = (fraction.clamp(0.0, 1.0) * f64::from(u32::MAX)).round() as u32;
        Self(level)
    }

    /// The raw fixed-point value (for storing in an atomic).
    pub const fn to_bits(self) -> u32 {
        self.0
    }

    /// From [`SpillLevel::to_bits`].
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }
}

/// The caller fleet's distribution over zones, for Envoy's zone-aware routing. Callers' zones
/// are matched against the instances' the same way the caller's own is: by AZ ID when both know
/// it, by name otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneDemand {
    zones: Vec<(String, u64)>,
    /// (name, ID, callers), one entry per distinct pair.
    detailed: Vec<(Option<String>, Option<String>, u64)>,
}

impl ZoneDemand {
    /// From (zone name, number of callers) pairs; repeated zones add up.
    pub fn new(counts: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self::with_ids(counts.into_iter().map(|(zone, n)| (Some(zone), None, n)))
    }

    /// From (zone name, AZ ID, number of callers); repeated pairs add up.
    pub fn with_ids(
        counts: impl IntoIterator<Item = (Option<String>, Option<String>, u64)>,
    ) -> Self {
        let mut demand = Self::default();
        for (name, id, count) in counts {
            if name.is_none() && id.is_none() {
                continue;
            }
            match demand
                .detailed
                .iter_mut()
                .find(|(n, i, _)| *n == name && *i == id)
            {
                Some((_, _, total)) => *total += count,
                None => demand.detailed.push((name.clone(), id.clone(), count)),
            }
            let label = name.or(id).unwrap_or_default();
            match demand.zones.iter_mut().find(|(z, _)| *z == label) {
                Some((_, total)) => *total += count,
                None => demand.zones.push((label, count)),
            }
        }
        demand
    }

    /// Counts the caller fleet's instances per zone: those with a zone that are running (or
    /// carry no lifecycle data) and not unhealthy. Their zone IDs are filled in from their own
    /// name → ID pairs, as an upstream snapshot's are.
    pub fn from_instances(instances: &[Instance]) -> Self {
        let zones = zones_of(instances);
        Self::with_ids(
            instances
                .iter()
                .zip(zones)
                .filter(|(i, _)| matches!(i.state, None | Some(LbState::Running)))
                .filter(|(i, _)| i.health != crate::contract::LbHealth::Unhealthy)
                .map(|(_, z)| (z.name, z.id, 1)),
        )
    }

    /// Callers in the zone named `zone`.
    pub fn get(&self, zone: &str) -> u64 {
        self.zones
            .iter()
            .find(|(z, _)| z == zone)
            .map_or(0, |&(_, n)| n)
    }

    /// Callers in the zone (`name`, `id`): by ID where both know it, else by name.
    pub(crate) fn count_for(&self, name: Option<&str>, id: Option<&str>) -> u64 {
        self.detailed
            .iter()
            .filter(|(n, i, _)| locality(name, id, n.as_deref(), i.as_deref()) == Locality::Local)
            .map(|&(_, _, count)| count)
            .sum()
    }

    /// All callers.
    pub fn total(&self) -> u64 {
        self.detailed.iter().map(|&(_, _, n)| n).sum()
    }

    /// The (zone, callers) pairs, by zone name (the ID where a caller has no name).
    pub fn zones(&self) -> &[(String, u64)] {
        &self.zones
    }
}
