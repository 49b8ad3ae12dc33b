//! The picker's precomputed tables and the pick itself.

use std::time::SystemTime;

use fastrand::Rng;

use super::choice::{CandidateLoad, LatencyAware, prefer_second};
use super::weight::{MILLI, base_weights, load_factor_milli};
use super::zone_id::{ZoneOf, locality, zones_of};
use super::{Availability, Exclusion, Locality, PickerConfig, SpillLevel, ZoneDemand, ZoneMode};
use crate::contract::{LbHealth, LbState};
use crate::instance::{CloudMapHealth, Instance};

/// 1.0 in the 32-bit fixed point that zone fractions use.
const ONE: u64 = 1 << 32;

/// One zone's candidates: `entries[start..end]`.
#[derive(Debug, Clone)]
struct Group {
    start: usize,
    end: usize,
    /// Sum of the candidates' effective weights.
    total: u64,
    locality: Locality,
}

/// How the local zone's share is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    /// No zone affinity: every pick goes by capacity over all zones.
    Spread,
    /// A fixed local share (32-bit fixed point), the rest by `spill_cum`.
    Fixed(u64),
    /// The local share moves between `top`, 1.0 less the probe share (spill level 0), and
    /// `floor`, the local zone's capacity share (spill level 1), following [`SpillLevel`].
    Adaptive { floor: u64, top: u64 },
}

/// Per-instance result of building, for observability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceView {
    /// Why the instance is not eligible, if it is not.
    pub exclusion: Option<Exclusion>,
    /// Whether this table can pick it: eligible, or (in panic mode) merely not stopped.
    pub candidate: bool,
    /// The configured weight after the median fill-in (`LB_WEIGHT` or its replacement).
    pub base_weight: u32,
    /// The weight picks follow, in thousandths: base weight × load factor × slow-start factor
    /// (see the [module docs](super)). 0 for non-candidates.
    pub effective_weight_milli: u64,
    /// The slow-start factor in thousandths (1000: full weight).
    pub slow_start_milli: u64,
}

impl InstanceView {
    /// The effective weight in configured units (base weight × load factor).
    #[allow(clippy::cast_precision_loss)] // for display
    pub fn effective_weight(&self) -> f64 {
        self.effective_weight_milli as f64 / MILLI as f64
    }
}

/// Per-zone result of building, for observability.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneView {
    /// The zone's name (`AVAILABILITY_ZONE`, as the instances' account names it); `None` for
    /// instances without one.
    pub zone: Option<String>,
    /// The zone's AZ ID (`AVAILABILITY_ZONE_ID`), when known.
    pub zone_id: Option<String>,
    /// Local, remote or unknown, relative to the caller's zone.
    pub locality: Locality,
    /// How many instances of the zone the table can pick.
    pub candidates: usize,
    /// The zone's share of the total effective weight, 0 to 1.
    pub capacity_share: f64,
    /// The zone's share of the calls that leave the local zone (or of all calls when there is
    /// no zone affinity), 0 to 1.
    pub spill_share: f64,
}

/// What one pick decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Index of the picked instance in the slice the picker was built from.
    pub index: usize,
    /// Whether it is in the caller's zone.
    pub locality: Locality,
    /// It left the local zone although the local zone had candidates.
    pub spilled: bool,
    /// The table is in panic mode.
    pub panic: bool,
}

/// Precomputed picking tables for one snapshot of instances (see the [module docs](super)).
///
/// Building allocates; picking does not: [`Picker::pick`] is a zone draw (one random number and
/// a search over a handful of zones), two weight-proportional samples in O(1) each (Walker's
/// alias method: one random number, one table lookup), and one comparison of the two
/// candidates' loads ([`LatencyAware`](super::LatencyAware)).
#[derive(Debug, Clone)]
pub struct Picker {
    /// Candidate instance indices, grouped by zone.
    index: Vec<usize>,
    /// Their effective weights.
    weight: Vec<u64>,
    /// Alias tables, per group: column `k` keeps itself with probability `keep[k]` (32-bit
    /// fixed point, 2^32 = always) and otherwise gives its pick to `alias[k]` (an entry of the
    /// same group).
    keep: Vec<u64>,
    alias: Vec<u32>,
    groups: Vec<Group>,
    /// The local zone's group, when zone routing applies and the zone has candidates.
    local: Option<usize>,
    plan: Plan,
    /// Running sums over groups of the weight each gets when leaving the local zone.
    spill_cum: Vec<u64>,
    panic: bool,
    latency_aware: Option<LatencyAware>,
    instances: Vec<InstanceView>,
    zones: Vec<ZoneView>,
}

impl Picker {
    /// Builds the tables for `instances`.
    ///
    /// `availability(i)` is what the client observed of instance `i` (health watch, ejections).
    /// `demand` is the caller fleet's distribution over zones, when known. `now` dates `LB_LOAD`
    /// against `LB_UPDATED_AT` and slow start against `LB_RUNNING_SINCE`.
    pub fn build(
        instances: &[Instance],
        availability: impl Fn(usize) -> Availability,
        config: &PickerConfig,
        demand: Option<&ZoneDemand>,
        now: SystemTime,
    ) -> Self {
        let base = base_weights(instances);
        let exclusions: Vec<Option<Exclusion>> = instances
            .iter()
            .zip(&base)
            .enumerate()
            .map(|(i, (instance, &weight))| exclusion(instance, weight, availability(i)))
            .collect();

        let live = |i: usize| is_live(&instances[i], base[i]);
        let total: u64 = (0..instances.len())
            .filter(|&i| live(i))
            .map(|i| u64::from(base[i]))
            .sum();
        let eligible: u64 = (0..instances.len())
            .filter(|&i| exclusions[i].is_none())
            .map(|i| u64::from(base[i]))
            .sum();
        #[allow(clippy::cast_precision_loss)] // weights are far below 2^52
        let panic = total > 0 && (eligible as f64) < config.panic_threshold * total as f64;
        let candidate = |i: usize| {
            if panic {
                live(i)
            } else {
                exclusions[i].is_none()
            }
        };

        // Zones (by ID when known, else name: see `zone_id`) in a stable order (by name, then ID,
        // zone-less last) so views and tests are deterministic.
        let of = zones_of(instances);
        let mut zones: Vec<&ZoneOf> = Vec::new();
        for (i, zone) in of.iter().enumerate() {
            if candidate(i) && !zones.iter().any(|z| z.key == zone.key) {
                zones.push(zone);
            }
        }
        zones.sort_by(|a, b| {
            (a.key.is_none(), &a.name, &a.key).cmp(&(b.key.is_none(), &b.name, &b.key))
        });

        let local_name = config.local_zone.as_deref();
        let local_id = config.local_zone_id.as_deref();
        let mut picker = Self {
            index: Vec::new(),
            weight: Vec::new(),
            keep: Vec::new(),
            alias: Vec::new(),
            groups: Vec::with_capacity(zones.len()),
            local: None,
            plan: Plan::Spread,
            spill_cum: Vec::new(),
            panic,
            latency_aware: config.latency_aware,
            instances: Vec::with_capacity(instances.len()),
            zones: Vec::with_capacity(zones.len()),
        };
        let mut effective = vec![0u64; instances.len()];
        let slow: Vec<u64> = instances
            .iter()
            .map(|i| {
                config
                    .slow_start
                    .map_or(MILLI, |s| s.factor_milli(i.running_since, now))
            })
            .collect();
        for zone in &zones {
            let start = picker.index.len();
            let mut running = 0u64;
            for (i, instance) in instances.iter().enumerate() {
                if !candidate(i) || of[i].key != zone.key {
                    continue;
                }
                let factor =
                    load_factor_milli(instance.load, instance.updated_at, now, config.load_max_age);
                let w = u64::from(base[i]) * factor * slow[i] / MILLI;
                effective[i] = w;
                running += w;
                picker.index.push(i);
                picker.weight.push(w);
            }
            let (keep, alias) = alias_table(&picker.weight[start..], running);
            picker.keep.extend(keep);
            picker.alias.extend(alias.into_iter().map(|a| {
                // Group sizes are bounded by the instance count, far below 2^32.
                u32::try_from(a).unwrap_or(u32::MAX)
            }));
            picker.groups.push(Group {
                start,
                end: picker.index.len(),
                total: running,
                locality: if zone.key.is_none() {
                    Locality::Unknown
                } else {
                    locality(
                        local_name,
                        local_id,
                        zone.name.as_deref(),
                        zone.id.as_deref(),
                    )
                },
            });
        }
        picker.instances = (0..instances.len())
            .map(|i| InstanceView {
                exclusion: exclusions[i],
                candidate: candidate(i),
                base_weight: base[i],
                effective_weight_milli: effective[i],
                slow_start_milli: slow[i],
            })
            .collect();

        let spill = picker.plan_zones(config, demand, &zones);
        let capacity: u64 = picker.groups.iter().map(|g| g.total).sum();
        let spill_total: u64 = spill.iter().sum();
        let mut running = 0;
        picker.spill_cum = spill
            .iter()
            .map(|w| {
                running += w;
                running
            })
            .collect();
        picker.zones = zones
            .iter()
            .zip(&picker.groups)
            .zip(&spill)
            .map(|((zone, group), &spill)| ZoneView {
                zone: zone.name.clone(),
                zone_id: zone.id.clone(),
                locality: group.locality,
                candidates: group.end - group.start,
                capacity_share: ratio(group.total, capacity),
                spill_share: ratio(spill, spill_total),
            })
            .collect();
        picker
    }

    /// Decides the zone plan and returns the weight each group gets when a pick leaves the local
    /// zone (Envoy's residual capacity, or plain capacity).
    fn plan_zones(
        &mut self,
        config: &PickerConfig,
        demand: Option<&ZoneDemand>,
        zones: &[&ZoneOf],
    ) -> Vec<u64> {
        let capacity: Vec<u64> = self.groups.iter().map(|g| g.total).collect();
        let local_name = config.local_zone.as_deref();
        let local_id = config.local_zone_id.as_deref();
        if self.panic || (local_name.is_none() && local_id.is_none()) {
            return capacity;
        }
        let local = self
            .groups
            .iter()
            .position(|g| g.locality == Locality::Local);
        let others = |weights: &[u64]| -> Vec<u64> {
            weights
                .iter()
                .enumerate()
                .map(|(g, &w)| if Some(g) == local { 0 } else { w })
                .collect()
        };
        match config.zone_mode {
            ZoneMode::Off => capacity,
            ZoneMode::Fixed { local_percent } => {
                self.local = local;
                self.plan = Plan::Fixed(ONE * u64::from(local_percent.min(100)) / 100);
                others(&capacity)
            }
            ZoneMode::Adaptive => {
                let total: u64 = capacity.iter().sum();
                let callers = demand.map_or(0, ZoneDemand::total);
                let demand_in = |name: Option<&str>, id: Option<&str>| {
                    demand.map_or(0, |d| d.count_for(name, id))
                };
                let local_callers = demand_in(local_name, local_id);
                self.local = local;
                if local_callers == 0 {
                    // No caller fleet, or it says nothing about our zone: the load-driven
                    // controller decides, starting from "everything local".
                    let floor = local.map_or(0, |g| fraction(capacity[g], total));
                    // Clamped first, so the cast cannot truncate.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let probe = (config.probe_share.clamp(0.0, 1.0) * ONE as f64) as u64;
                    let top = (ONE - probe).max(floor);
                    self.plan = Plan::Adaptive { floor, top };
                    return others(&capacity);
                }
                // Envoy's zone-aware routing over capacity shares c and demand shares d:
                // c_local >= d_local keeps everything local; otherwise c_local / d_local stays
                // and the rest goes by residual capacity max(0, c_z - d_z). Compared as
                // cap_z * D against demand_z * C to stay exact in integers.
                let scaled = |g: usize| u128::from(capacity[g]) * u128::from(callers);
                let wanted_local = u128::from(local_callers) * u128::from(total);
                let wanted = |g: usize| {
                    let zone = zones[g];
                    let callers = if zone.key.is_none() {
                        0
                    } else {
                        demand_in(zone.name.as_deref(), zone.id.as_deref())
                    };
                    u128::from(callers) * u128::from(total)
                };
                let local_fraction = match local {
                    Some(g) if scaled(g) >= wanted_local => ONE,
                    Some(g) => {
                        let f = scaled(g) * u128::from(ONE) / wanted_local.max(1);
                        u64::try_from(f).unwrap_or(ONE)
                    }
                    None => 0,
                };
                self.plan = Plan::Fixed(local_fraction);
                let residual: Vec<u128> = (0..self.groups.len())
                    .map(|g| {
                        if Some(g) == local {
                            0
                        } else {
                            scaled(g).saturating_sub(wanted(g))
                        }
                    })
                    .collect();
                if residual.iter().all(|&r| r == 0) {
                    // Only rounding leaves no residual anywhere: spread by capacity.
                    return others(&capacity);
                }
                // Scale down so the running sums fit in u64.
                let max = residual.iter().copied().max().unwrap_or(0);
                let shift = (128 - max.leading_zeros()).saturating_sub(48);
                residual
                    .iter()
                    .map(|&r| u64::try_from(r >> shift).unwrap_or(u64::MAX >> 16))
                    .collect()
            }
        }
    }

    /// Picks an instance: a zone by the plan (`spill` sets the local share in adaptive mode),
    /// then the cheaper of two distinct weight-proportional samples in that zone
    /// ([`LatencyAware`]: in-flight requests per unit of weight, and latency when it
    /// clearly differs). `load(i)` reads instance `i`'s [`CandidateLoad`] (an in-flight count
    /// alone will do). `None` when nothing can be picked.
    #[inline]
    pub fn pick<L: Into<CandidateLoad>>(
        &self,
        rng: &mut Rng,
        spill: SpillLevel,
        load: impl Fn(usize) -> L,
    ) -> Option<Pick> {
        let (group, spilled) = self.choose_group(rng, spill)?;
        let g = &self.groups[group];
        let a = self.sample(g, rng);
        let chosen = if g.end - g.start == 1 {
            a
        } else {
            // A second sample distinct from the first: drawn again once, then the neighbour.
            let mut b = self.sample(g, rng);
            if b == a {
                b = self.sample(g, rng);
            }
            if b == a {
                b = if a + 1 < g.end { a + 1 } else { g.start };
            }
            self.cheaper(a, b, &load)
        };
        Some(Pick {
            index: self.index[chosen],
            locality: g.locality,
            spilled,
            panic: self.panic,
        })
    }

    /// Picks for a retry: a candidate `tried(i)` says the call has not tried yet, in the local
    /// zone while it has one, else in another zone by the plan's spill shares; within the zone the
    /// better of two weight-proportional samples by in-flight requests, as [`pick`](Self::pick).
    /// Only when every candidate was tried does it fall back to [`pick`](Self::pick), repeats
    /// allowed. `None` when nothing can be picked at all.
    ///
    /// Allocates nothing; costs a few samples, and a scan of a zone's candidates when most of
    /// them were tried.
    pub fn pick_excluding<L: Into<CandidateLoad>>(
        &self,
        rng: &mut Rng,
        spill: SpillLevel,
        load: impl Fn(usize) -> L,
        tried: impl Fn(usize) -> bool,
    ) -> Option<Pick> {
        let open = |g: &Group| (g.start..g.end).any(|e| !tried(self.index[e]));
        let group = match self.local.filter(|&l| open(&self.groups[l])) {
            Some(local) => Some((local, false)),
            None => {
                // Other zones with an untried candidate, weighted by their spill shares (by
                // capacity when the plan has none for them).
                let weight = |g: usize| {
                    let previous = if g == 0 { 0 } else { self.spill_cum[g - 1] };
                    let spill_weight = self.spill_cum.get(g).map_or(0, |c| c - previous);
                    if spill_weight > 0 {
                        spill_weight
                    } else {
                        self.groups[g].total
                    }
                };
                let eligible = |g: usize| Some(g) != self.local && open(&self.groups[g]);
                let total: u64 = (0..self.groups.len())
                    .filter(|&g| eligible(g))
                    .map(weight)
                    .sum();
                if total == 0 {
                    None
                } else {
                    let mut r = rng.u64(..total);
                    (0..self.groups.len())
                        .filter(|&g| eligible(g))
                        .find_map(|g| {
                            let w = weight(g);
                            if r < w {
                                Some((g, self.local.is_some()))
                            } else {
                                r -= w;
                                None
                            }
                        })
                }
            }
        };
        let Some((group, spilled)) = group else {
            return self.pick(rng, spill, load);
        };
        let g = &self.groups[group];
        let untried = |e: usize| !tried(self.index[e]);
        // Two untried weight-proportional samples from the alias table, a few tries each...
        let mut sample = || (0..4).map(|_| self.sample(g, rng)).find(|&e| untried(e));
        let (a, b) = (sample(), sample());
        let chosen = match (a, b) {
            (Some(a), Some(b)) if a != b => self.cheaper(a, b, &load),
            (Some(a), _) | (None, Some(a)) => a,
            // ...else, when most were tried, one weight-proportional draw over the untried.
            (None, None) => {
                let total: u64 = (g.start..g.end)
                    .filter(|&e| untried(e))
                    .map(|e| self.weight[e])
                    .sum();
                let mut r = rng.u64(..total.max(1));
                (g.start..g.end)
                    .filter(|&e| untried(e))
                    .find(|&e| {
                        if r < self.weight[e] {
                            true
                        } else {
                            r -= self.weight[e];
                            false
                        }
                    })
                    .or_else(|| (g.start..g.end).find(|&e| untried(e)))?
            }
        };
        Some(Pick {
            index: self.index[chosen],
            locality: g.locality,
            spilled,
            panic: self.panic,
        })
    }

    /// The cheaper of entries `a` (the first sample: it keeps ties) and `b` (see `choice`).
    #[inline]
    fn cheaper<L: Into<CandidateLoad>>(
        &self,
        a: usize,
        b: usize,
        load: impl Fn(usize) -> L,
    ) -> usize {
        let (load_a, load_b) = (load(self.index[a]).into(), load(self.index[b]).into());
        if prefer_second(
            load_a,
            self.weight[a],
            load_b,
            self.weight[b],
            self.latency_aware.as_ref(),
        ) {
            b
        } else {
            a
        }
    }

    #[inline]
    fn choose_group(&self, rng: &mut Rng, spill: SpillLevel) -> Option<(usize, bool)> {
        let spill_total = self.spill_cum.last().copied().unwrap_or(0);
        if let Some(local) = self.local {
            let keep = self.local_fraction_fixed(spill);
            if keep >= ONE || spill_total == 0 || u64::from(rng.u32(..)) < keep {
                return Some((local, false));
            }
            return Some((self.sample_group(rng, spill_total), true));
        }
        if spill_total == 0 {
            return None;
        }
        Some((self.sample_group(rng, spill_total), false))
    }

    #[inline]
    fn local_fraction_fixed(&self, spill: SpillLevel) -> u64 {
        match self.plan {
            Plan::Spread => 0,
            Plan::Fixed(keep) => keep,
            Plan::Adaptive { floor, top } => top - ((u64::from(spill.0) * (top - floor)) >> 32),
        }
    }

    #[inline]
    fn sample_group(&self, rng: &mut Rng, spill_total: u64) -> usize {
        let r = rng.u64(..spill_total);
        self.spill_cum.partition_point(|&c| c <= r)
    }

    /// One weight-proportional sample from group `g`: the high half of a random number picks a
    /// column, the low half tosses its coin.
    #[inline]
    fn sample(&self, g: &Group, rng: &mut Rng) -> usize {
        let r = rng.u64(..);
        let n = (g.end - g.start) as u64;
        // Lemire's multiply-shift: bias at most n / 2^32, below 3e-7 at 1,000 instances.
        let column = g.start + usize::try_from(((r >> 32) * n) >> 32).unwrap_or(0);
        if (r & 0xFFFF_FFFF) < self.keep[column] {
            column
        } else {
            g.start + self.alias[column] as usize
        }
    }

    /// Whether nothing can be picked.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether a candidate is still within its slow-start window (its weight grows with time,
    /// so the table should be rebuilt as it does).
    pub fn ramping(&self) -> bool {
        self.instances
            .iter()
            .any(|v| v.candidate && v.slow_start_milli < MILLI)
    }

    /// Whether the table is in panic mode: less than the panic threshold of the total weight
    /// was eligible, so every instance that is not stopped is a candidate and zone affinity is
    /// off.
    pub fn panic(&self) -> bool {
        self.panic
    }

    /// Whether the caller's zone has candidates and the plan keeps calls there.
    pub fn has_local(&self) -> bool {
        self.local.is_some()
    }

    /// The share of picks that stay in the local zone at `spill` (0 when there is no local zone
    /// to keep them in).
    pub fn local_fraction(&self, spill: SpillLevel) -> f64 {
        if self.local.is_none() {
            return 0.0;
        }
        if self.spill_cum.last().copied().unwrap_or(0) == 0 {
            return 1.0;
        }
        ratio(self.local_fraction_fixed(spill).min(ONE), ONE)
    }

    /// Whether the local share follows the load-driven controller (adaptive mode without a
    /// caller fleet).
    pub fn is_adaptive(&self) -> bool {
        matches!(self.plan, Plan::Adaptive { .. }) && self.local.is_some()
    }

    /// The latency-aware choice, when configured: calls should then be timed.
    pub fn latency_aware(&self) -> Option<&LatencyAware> {
        self.latency_aware.as_ref()
    }

    /// One view per instance the table was built from, in the same order.
    pub fn instances(&self) -> &[InstanceView] {
        &self.instances
    }

    /// One view per zone with candidates, by zone name (zone-less last).
    pub fn zones(&self) -> &[ZoneView] {
        &self.zones
    }

    /// The share of picks each instance takes at `spill` while nothing is in flight and no
    /// latency differs: the zone draw's share for its zone times its share of the zone's
    /// effective weight (an idle two-choices step keeps the first, weight-proportional sample).
    /// One entry per instance the table was built from, in the same order; 0 for those it cannot
    /// pick. The entries sum to 1 when anything can be picked, else all are 0.
    ///
    /// This is what the xDS server serves as locality weights, so that clients that only follow
    /// weights split calls as this picker does.
    pub fn shares(&self, spill: SpillLevel) -> Vec<f64> {
        let mut shares = vec![0.0; self.instances.len()];
        let spill_total = self.spill_cum.last().copied().unwrap_or(0);
        let keep = match self.local {
            Some(_) if spill_total == 0 => 1.0,
            Some(_) => ratio(self.local_fraction_fixed(spill).min(ONE), ONE),
            None => 0.0,
        };
        for (g, group) in self.groups.iter().enumerate() {
            let zone_share = if Some(g) == self.local {
                keep
            } else {
                let previous = if g == 0 { 0 } else { self.spill_cum[g - 1] };
                (1.0 - keep) * ratio(self.spill_cum[g] - previous, spill_total)
            };
            for e in group.start..group.end {
                shares[self.index[e]] += zone_share * ratio(self.weight[e], group.total);
            }
        }
        shares
    }
}

/// Walker's alias table (Vose's construction) for `weights` summing to `total`: exact in
/// integers, so every entry is sampled with probability weight / total up to 2^-32.
fn alias_table(weights: &[u64], total: u64) -> (Vec<u64>, Vec<usize>) {
    let n = weights.len();
    let mut keep = vec![ONE; n];
    let mut alias: Vec<usize> = (0..n).collect();
    if n == 0 || total == 0 {
        return (keep, alias);
    }
    // Each column holds `total` units; entry i brings weight_i × n of them.
    let total = u128::from(total);
    let mut units: Vec<u128> = weights.iter().map(|&w| u128::from(w) * n as u128).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| units[i] < total);
    while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
        keep[s] = u64::try_from(units[s] * u128::from(ONE) / total).unwrap_or(ONE);
        alias[s] = l;
        units[l] -= total - units[s];
        if units[l] < total {
            large.pop();
            small.push(l);
        }
    }
    // What is left is full up to rounding: keeps itself always (the default).
    (keep, alias)
}

/// Why an instance is not eligible, in the order checked.
fn exclusion(
    instance: &Instance,
    base_weight: u32,
    availability: Availability,
) -> Option<Exclusion> {
    match instance.state {
        Some(LbState::Stopped) => return Some(Exclusion::Stopped),
        Some(LbState::Starting) => return Some(Exclusion::Starting),
        Some(LbState::Draining) => return Some(Exclusion::Draining),
        Some(LbState::Running) | None => {}
    }
    if base_weight == 0 {
        Some(Exclusion::ZeroWeight)
    } else if instance.health == LbHealth::Unhealthy {
        Some(Exclusion::Unhealthy)
    } else if instance.cloud_map_health == CloudMapHealth::Unhealthy {
        Some(Exclusion::CloudMapUnhealthy)
    } else {
        match availability {
            Availability::Available => None,
            Availability::NotServing => Some(Exclusion::NotServing),
            Availability::Ejected => Some(Exclusion::Ejected),
        }
    }
}

/// Whether an instance is live: not `STOPPED` and with a base weight above 0. Panic mode picks
/// among the live instances, the panic threshold is a share of their weight, and local ejection
/// keeps at most half of them out ([`live_count`]).
fn is_live(instance: &Instance, base_weight: u32) -> bool {
    instance.state != Some(LbState::Stopped) && base_weight > 0
}

/// How many of `instances` are live, exactly as [`Picker::build`] counts them (weights after the
/// median fill-in).
#[cfg_attr(not(feature = "tonic"), allow(dead_code))]
pub(crate) fn live_count(instances: &[Instance]) -> usize {
    instances
        .iter()
        .zip(base_weights(instances))
        .filter(|(instance, base)| is_live(instance, *base))
        .count()
}

/// `part / whole` in the 32-bit fixed point.
fn fraction(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    u64::try_from(u128::from(part) * u128::from(ONE) / u128::from(whole)).unwrap_or(ONE)
}

#[allow(clippy::cast_precision_loss)] // shares for display
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probability the alias table gives each entry, computed from the table itself.
    fn implied(weights: &[u64]) -> Vec<f64> {
        let total: u64 = weights.iter().sum();
        let (keep, alias) = alias_table(weights, total);
        let n = weights.len() as f64;
        let mut p = vec![0.0; weights.len()];
        for (k, (&keep, &alias)) in keep.iter().zip(&alias).enumerate() {
            let stay = keep as f64 / ONE as f64;
            p[k] += stay / n;
            p[alias] += (1.0 - stay) / n;
        }
        p
    }

    #[test]
    fn alias_tables_are_exact() {
        for weights in [
            vec![100, 200, 300, 400, 1000],
            vec![1, 1, 1],
            vec![7],
            vec![10_000_000, 1, 250_000, 999_999, 3],
            (1..=1000).map(|i| (i * 7919) % 10_000 + 1).collect(),
        ] {
            let total: u64 = weights.iter().sum();
            for (p, w) in implied(&weights).iter().zip(&weights) {
                let expected = *w as f64 / total as f64;
                assert!((p - expected).abs() < 1e-9, "{p} vs {expected}");
            }
        }
    }

    /// `shares` against 400,000 seeded idle picks, in every plan: the same split within 0.5
    /// points (five standard errors at these sample sizes).
    #[test]
    fn shares_are_what_idle_picks_do() {
        use crate::contract::{LbState, Weight};
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let instance = |n: usize, zone: &str, weight: u32| {
            Instance::new(format!("i-{n}"), format!("10.0.0.{n}:1").parse().unwrap())
                .with_zone(zone)
                .with_weight(Weight::saturating(weight))
        };
        let fleet = vec![
            instance(1, "a", 100),
            instance(2, "a", 300),
            instance(3, "b", 200),
            instance(4, "b", 200).with_state(LbState::Draining),
            instance(5, "c", 400),
            instance(6, "c", 100),
        ];
        let config = |zone: Option<&str>, zone_mode| PickerConfig {
            local_zone: zone.map(str::to_owned),
            zone_mode,
            ..PickerConfig::default()
        };
        let demand = ZoneDemand::new([
            ("a".to_owned(), 4),
            ("b".to_owned(), 1),
            ("c".to_owned(), 1),
        ]);
        let cases = [
            (config(None, ZoneMode::Adaptive), None, SpillLevel::NONE),
            (
                config(Some("a"), ZoneMode::Adaptive),
                None,
                SpillLevel::from_fraction(0.3),
            ),
            (
                config(Some("a"), ZoneMode::Adaptive),
                Some(&demand),
                SpillLevel::NONE,
            ),
            (
                config(Some("b"), ZoneMode::Adaptive),
                Some(&demand),
                SpillLevel::NONE,
            ),
            (
                config(Some("a"), ZoneMode::Fixed { local_percent: 60 }),
                None,
                SpillLevel::NONE,
            ),
            (
                config(Some("z"), ZoneMode::Adaptive),
                Some(&demand),
                SpillLevel::NONE,
            ),
        ];
        for (config, demand, spill) in cases {
            let picker = Picker::build(&fleet, |_| Availability::Available, &config, demand, now);
            let shares = picker.shares(spill);
            assert!(
                (shares.iter().sum::<f64>() - 1.0).abs() < 1e-9,
                "{shares:?}"
            );
            assert_eq!(shares[3], 0.0, "a draining instance gets nothing");
            let mut rng = Rng::with_seed(11);
            let mut counts = [0u32; 6];
            let picks = 400_000;
            for _ in 0..picks {
                counts[picker.pick(&mut rng, spill, |_| 0).unwrap().index] += 1;
            }
            for (i, (&count, share)) in counts.iter().zip(&shares).enumerate() {
                let seen = f64::from(count) / f64::from(picks);
                assert!(
                    (seen - share).abs() < 0.005,
                    "{config:?}: instance {i} took {seen:.4}, shares says {share:.4}"
                );
            }
        }
    }
}
