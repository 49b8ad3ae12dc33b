//! A service's endpoints for one client zone: which tasks, in which priority, with what weight
//! and health.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use cloudmap_balancer::Instance;
use cloudmap_balancer::contract::xds;
use cloudmap_balancer::picker::{
    Availability, Exclusion, Picker, PickerConfig, SpillLevel, ZoneDemand,
};
use cloudmap_balancer::{IpFamily, ZoneMode};

/// The `filter_metadata` namespace of every endpoint's contract values.
pub const METADATA_NAMESPACE: &str = xds::METADATA_NAMESPACE;

/// The sum of the priority-0 locality weights (before rounding each up to at least 1): a share
/// of 1 in a million is the finest split served. gRPC NACKs sums over 2³².
pub const WEIGHT_TOTAL: f64 = 1_000_000.0;

/// The client's own zone, as its bootstrap's `node.locality.zone` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClientZone {
    /// The zone name, e.g. `eu-central-1a`.
    pub name: Option<String>,
    /// The AZ ID, e.g. `euc1-az1`.
    pub id: Option<String>,
}

impl ClientZone {
    /// From `node.locality.zone`: an AZ ID (`euc1-az1`, `use1-az4`) or a zone name; empty is
    /// no zone.
    pub fn parse(zone: &str) -> Self {
        let zone = zone.trim();
        if zone.is_empty() {
            Self::default()
        } else if is_zone_id(zone) {
            Self {
                name: None,
                id: Some(zone.to_owned()),
            }
        } else {
            Self {
                name: Some(zone.to_owned()),
                id: None,
            }
        }
    }

    /// Whether the client named no zone (it gets the zone-agnostic answer).
    pub fn is_unknown(&self) -> bool {
        self.name.is_none() && self.id.is_none()
    }
}

/// AZ IDs look like `euc1-az1`, Local Zone IDs like `use1-bos1-az1`: a region code of letters
/// and a digit (and a location code), `-az`, digits.
fn is_zone_id(zone: &str) -> bool {
    let Some((region, number)) = zone.rsplit_once("-az") else {
        return false;
    };
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && region.len() >= 3
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.bytes().any(|b| b.is_ascii_digit())
}

/// Settings of the computation: the picker's, for every client alike.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentConfig {
    /// The `region` of every locality.
    pub region: String,
    /// The picker's panic threshold (see [`PickerConfig::panic_threshold`]). Default 0.5.
    pub panic_threshold: f64,
    /// `LB_LOAD` older than this is ignored. Default 5 minutes.
    pub load_max_age: Duration,
    /// Which address of a dual-stack instance is the endpoint's: the first of its
    /// [`IpFamily`] order (one address per endpoint; see the README for why there is no
    /// fallback here). IPv6-only instances are sent at their IPv6 address whatever this says.
    /// Default [`IpFamily::Ipv4First`].
    pub ip_family: IpFamily,
}

impl Default for AssignmentConfig {
    fn default() -> Self {
        let picker = PickerConfig::default();
        Self {
            region: String::new(),
            panic_threshold: picker.panic_threshold,
            load_max_age: picker.load_max_age,
            ip_family: IpFamily::Ipv4First,
        }
    }
}

/// What an endpoint's `health_status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointHealth {
    /// Takes calls.
    Healthy,
    /// `LB_STATE` `DRAINING`, or its gRPC health says `NOT_SERVING`: no new calls.
    Draining,
    /// Unhealthy by `LB_HEALTH` or Cloud Map's health: no calls.
    Unhealthy,
}

/// One task: its own locality (`zone`, `sub_zone` = the instance ID) holding its one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalityAssignment {
    /// The instance ID (the locality's `sub_zone`).
    pub instance_id: String,
    /// The locality's `zone`: the AZ ID where known, else the zone name, else empty.
    pub zone: String,
    /// 0, or 1 for tasks that take calls only when priority 0 has none that can.
    pub priority: u32,
    /// The locality weight, and the endpoint's `load_balancing_weight`: at least 1.
    pub weight: u32,
    /// Where to call.
    pub addr: SocketAddr,
    /// Its health status.
    pub health: EndpointHealth,
    /// The contract values, for the endpoint's metadata (key, value), ordered by key.
    pub metadata: Vec<(&'static str, String)>,
}

/// A service's endpoints for one client zone, in a stable order (priority, then instance ID).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Assignment {
    /// One entry per task served.
    pub localities: Vec<LocalityAssignment>,
    /// Instances left out because another instance has the same address (gRPC NACKs an address
    /// repeated in a cluster): their IDs.
    pub duplicates: Vec<String>,
    /// Whether the picker was in panic mode: every task not stopped takes calls, zones ignored.
    pub panic: bool,
}

/// The endpoints of `instances` for a client in `zone`, given the callers' spread over zones
/// (`demand`, counted from the server's own connected clients) and what the server itself
/// observed of each instance (`availability`, by index).
///
/// Each task's share is [`Picker::shares`] of the crate's picker in
/// [`ZoneMode::Adaptive`] for a caller in `zone`: with the demand, Envoy's zone-aware routing;
/// without a zone, spread by capacity. Tasks with a share take priority 0 with weight
/// `share × WEIGHT_TOTAL` (at least 1). Candidates with no share (other zones while the client's
/// zone keeps every call) take priority 1 by their effective weight: gRPC's priority policy
/// reaches them only when priority 0 has nothing that connects. `DRAINING` tasks are served as
/// `DRAINING`, unhealthy ones as `UNHEALTHY` (weight 1, priority 0); `STARTING`, `STOPPED` and
/// weight-0 tasks are left out. In the picker's panic mode every task not stopped is a candidate
/// and is served healthy.
pub fn assign(
    instances: &[Instance],
    zone: &ClientZone,
    demand: Option<&ZoneDemand>,
    availability: impl Fn(usize) -> Availability,
    config: &AssignmentConfig,
    now: SystemTime,
) -> Assignment {
    let mut picker_config = PickerConfig::default();
    picker_config.local_zone = zone.name.clone();
    picker_config.local_zone_id = zone.id.clone();
    picker_config.zone_mode = ZoneMode::Adaptive;
    picker_config.panic_threshold = config.panic_threshold;
    picker_config.load_max_age = config.load_max_age;
    picker_config.latency_aware = None;
    let picker = Picker::build(instances, availability, &picker_config, demand, now);
    let shares = picker.shares(SpillLevel::NONE);
    let views = picker.instances();

    let fallback_total: u64 = views
        .iter()
        .zip(&shares)
        .filter(|(view, share)| view.candidate && **share == 0.0)
        .map(|(view, _)| view.effective_weight_milli)
        .sum();
    let mut localities = Vec::with_capacity(instances.len());
    for ((instance, view), &share) in instances.iter().zip(views).zip(&shares) {
        let (priority, weight, health) = if view.candidate && share > 0.0 {
            (0, scale(share), EndpointHealth::Healthy)
        } else if view.candidate {
            #[allow(clippy::cast_precision_loss)] // weights are far below 2^52
            let part = view.effective_weight_milli as f64 / fallback_total.max(1) as f64;
            (1, scale(part), EndpointHealth::Healthy)
        } else {
            match view.exclusion {
                // A task whose own health says NOT_SERVING is draining (what a server does on
                // SIGTERM), before Cloud Map knows.
                Some(Exclusion::Draining | Exclusion::NotServing) => {
                    (0, 1, EndpointHealth::Draining)
                }
                Some(Exclusion::Unhealthy | Exclusion::CloudMapUnhealthy | Exclusion::Ejected) => {
                    (0, 1, EndpointHealth::Unhealthy)
                }
                Some(Exclusion::Stopped | Exclusion::Starting | Exclusion::ZeroWeight) | None => {
                    continue;
                }
            }
        };
        localities.push(LocalityAssignment {
            instance_id: instance.id.clone(),
            zone: instance
                .zone_id
                .clone()
                .or_else(|| instance.zone.clone())
                .unwrap_or_default(),
            priority,
            weight,
            addr: instance.dial_order(config.ip_family).0,
            health,
            metadata: metadata(instance),
        });
    }
    // An address twice in a cluster is NACKed: keep the entry that takes calls (priority 0
    // healthy first), then the heavier, then the smaller instance ID.
    localities.sort_by(|a, b| {
        (
            a.addr,
            a.health != EndpointHealth::Healthy,
            a.priority,
            std::cmp::Reverse(a.weight),
            &a.instance_id,
        )
            .cmp(&(
                b.addr,
                b.health != EndpointHealth::Healthy,
                b.priority,
                std::cmp::Reverse(b.weight),
                &b.instance_id,
            ))
    });
    let mut duplicates = Vec::new();
    localities.dedup_by(|later, kept| {
        let same = later.addr == kept.addr;
        if same {
            duplicates.push(later.instance_id.clone());
        }
        same
    });
    // Priorities must have no gap: with nothing in priority 0, priority 1 is priority 0.
    if !localities.iter().any(|l| l.priority == 0) {
        for locality in &mut localities {
            locality.priority = 0;
        }
    }
    localities.sort_by(|a, b| (a.priority, &a.instance_id).cmp(&(b.priority, &b.instance_id)));
    duplicates.sort();
    Assignment {
        localities,
        duplicates,
        panic: picker.panic(),
    }
}

/// A share of 1 as [`WEIGHT_TOTAL`], never 0.
fn scale(share: f64) -> u32 {
    // Shares are in [0, 1]: the product fits in u32.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let weight = (share.clamp(0.0, 1.0) * WEIGHT_TOTAL).round() as u32;
    weight.max(1)
}

/// The contract values of an instance, as the attribute table spells them, with its ID and
/// Cloud Map health: what the crate's xDS source reads back (see the crate's `contract::xds`).
fn metadata(instance: &Instance) -> Vec<(&'static str, String)> {
    let mut values = instance.attributes();
    values.push((xds::INSTANCE_ID, instance.id.clone()));
    values.push((
        xds::CLOUD_MAP_HEALTH,
        instance.cloud_map_health.as_str().to_owned(),
    ));
    values.sort_by_key(|(key, _)| *key);
    values
}

/// Every instance of a snapshot, zone-agnostic and unpicked, for Rust clients that pick for
/// themselves (the `instances/` names): one locality each, in priority 0, weighted by
/// `LB_WEIGHT` (1 when it has none or 0), `DRAINING` when its state says so, `UNHEALTHY` when
/// Cloud Map or `LB_HEALTH` says so. Nothing is left out, not even two instances at one
/// address: the metadata carries each instance whole.
pub fn instances(instances: &[Instance]) -> Assignment {
    let mut localities: Vec<LocalityAssignment> = instances
        .iter()
        .map(|instance| LocalityAssignment {
            instance_id: instance.id.clone(),
            zone: instance
                .zone_id
                .clone()
                .or_else(|| instance.zone.clone())
                .unwrap_or_default(),
            priority: 0,
            // At most 4,000,000 each: 1,000 instances stay under gRPC's 2³² sum.
            weight: instance.weight.map_or(1, |w| w.get().clamp(1, 4_000_000)),
            addr: instance.addr,
            health: if instance.state == Some(cloudmap_balancer::contract::LbState::Draining) {
                EndpointHealth::Draining
            } else if instance.cloud_map_health == cloudmap_balancer::CloudMapHealth::Unhealthy
                || instance.health == cloudmap_balancer::contract::LbHealth::Unhealthy
            {
                EndpointHealth::Unhealthy
            } else {
                EndpointHealth::Healthy
            },
            metadata: metadata(instance),
        })
        .collect();
    localities.sort_by(|a, b| (&a.instance_id, a.addr).cmp(&(&b.instance_id, b.addr)));
    Assignment {
        localities,
        duplicates: Vec::new(),
        panic: false,
    }
}

#[cfg(test)]
mod tests;
