//! One instance of the balanced service, as the balancer sees it.
//!
//! [`Instance::from_attributes`] is the boundary: it turns a Cloud Map instance (its ID, attribute
//! map and Cloud Map health) into a validated value once, through the lenient
//! [`InstanceAttributes::decode`]. Everything after it works on plain data.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use crate::contract::{
    AttributeSource, InstanceAttributes, LbHealth, LbState, Load, Weight, format_rfc3339_exact,
    keys,
};

/// Cloud Map's own health status of an instance, as `DiscoverInstances` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CloudMapHealth {
    /// The instance passes its Cloud Map health check (or custom health status).
    Healthy,
    /// The instance fails it: never picked outside panic mode.
    Unhealthy,
    /// The service has no health check, or the status is not known. Treated like healthy.
    #[default]
    Unknown,
}

impl CloudMapHealth {
    /// The API's spelling, e.g. `HEALTHY`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "HEALTHY",
            Self::Unhealthy => "UNHEALTHY",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// From the API's spelling; anything else is [`Unknown`](Self::Unknown).
    pub fn parse(text: &str) -> Self {
        match text {
            "HEALTHY" => Self::Healthy,
            "UNHEALTHY" => Self::Unhealthy,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for CloudMapHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance of the balanced service: where to call it and what the balancer needs to decide
/// whether and how often to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Instance {
    /// The Cloud Map instance ID (for ECS-registered instances, the task ID).
    pub id: String,
    /// Where to call it: `AWS_INSTANCE_IPV4` and `AWS_INSTANCE_PORT`; for an instance with only
    /// `AWS_INSTANCE_IPV6` (an IPv6-only task), `[AWS_INSTANCE_IPV6]:AWS_INSTANCE_PORT`.
    pub addr: SocketAddr,
    /// A dual-stack instance's IPv6 address (`AWS_INSTANCE_IPV6`, same port), beside its IPv4
    /// `addr`; `None` when the instance has one address. [`Instance::dial_order`] says which is
    /// tried first.
    pub ipv6_addr: Option<SocketAddr>,
    /// `AVAILABILITY_ZONE`; `None` when missing (the instance belongs to no zone and is never
    /// "local").
    pub zone: Option<String>,
    /// `AVAILABILITY_ZONE_ID`, e.g. `euc1-az2`; `None` when missing. Zones are matched by ID when
    /// both the caller and the instance know theirs (names differ between accounts), else by name.
    pub zone_id: Option<String>,
    /// `LB_STATE`; `None` when missing or unrecognised, which counts as running.
    pub state: Option<LbState>,
    /// `LB_HEALTH`: the task's health as ECS reports it.
    pub health: LbHealth,
    /// Cloud Map's health status from `DiscoverInstances`.
    pub cloud_map_health: CloudMapHealth,
    /// `LB_WEIGHT`; `None` when missing or malformed (the picker then uses the median of the
    /// known weights).
    pub weight: Option<Weight>,
    /// `LB_LOAD`, recent CPU utilisation in percent; `None` when unknown.
    pub load: Option<Load>,
    /// `LB_UPDATED_AT`: when the sync Lambda wrote the state (and load) last.
    pub updated_at: Option<SystemTime>,
    /// `LB_RUNNING_SINCE`: when the task turned RUNNING (slow start ramps from here).
    pub running_since: Option<SystemTime>,
    /// `LB_TASK_ARN`.
    pub task_arn: Option<String>,
    /// `LB_CAPACITY`: capacity provider or launch type.
    pub capacity: Option<String>,
}

/// Which address of a dual-stack instance (one with both `AWS_INSTANCE_IPV4` and
/// `AWS_INSTANCE_IPV6`) a connection dials. An instance with one address is always dialled at
/// that address, whatever the family.
///
/// The `…First` orders try the other address of the same instance, for that connection only,
/// when the first fails to connect or has not connected within 250 ms (the Connection Attempt
/// Delay of "Happy Eyeballs", RFC 8305, which gRFC A61 adopts for endpoints with several
/// addresses): both attempts then race and the first to connect is kept. So a task whose IPv6
/// listener is down, or a caller without an IPv6 route, costs a connection attempt, not the
/// instance. Like A61, the IPv4-first default also falls back, to IPv6: the instance is one
/// endpoint with two addresses, and either one answering is the instance answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum IpFamily {
    /// IPv4 first, IPv6 as the fallback. The default: what every ECS task in a VPC has had.
    #[default]
    Ipv4First,
    /// IPv6 only for dual-stack instances: no fallback to IPv4 (instances with only an IPv4
    /// address are still dialled over IPv4).
    Ipv6,
    /// IPv6 first, IPv4 as the fallback.
    Ipv6First,
}

impl IpFamily {
    /// The spelling in configuration: `ipv4-first`, `ipv6` or `ipv6-first`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4First => "ipv4-first",
            Self::Ipv6 => "ipv6",
            Self::Ipv6First => "ipv6-first",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IpFamily {
    type Err = UnknownIpFamily;

    /// Reads [`IpFamily::as_str`]'s spelling, in any case, with `_` for `-`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "ipv4-first" => Ok(Self::Ipv4First),
            "ipv6" => Ok(Self::Ipv6),
            "ipv6-first" => Ok(Self::Ipv6First),
            _ => Err(UnknownIpFamily(value.to_owned())),
        }
    }
}

/// A string that names no [`IpFamily`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown IP family {0:?}: expected ipv4-first, ipv6 or ipv6-first")]
pub struct UnknownIpFamily(String);

/// Why a Cloud Map instance cannot be called, so [`Instance::from_attributes`] skipped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    /// Neither `AWS_INSTANCE_IPV4` (an IPv4 address) nor `AWS_INSTANCE_IPV6` (an IPv6
    /// address) is usable.
    #[error("no usable AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6")]
    NoAddress,
    /// `AWS_INSTANCE_PORT` is missing, not a number, or 0.
    #[error("no usable AWS_INSTANCE_PORT")]
    NoPort,
}

impl Instance {
    /// An instance at `addr` with no attributes: no zone, no lifecycle data (eligible), unknown
    /// health, weight and load. For static lists and tests; discovery uses
    /// [`Instance::from_attributes`].
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            id: id.into(),
            addr,
            ipv6_addr: None,
            zone: None,
            zone_id: None,
            state: None,
            health: LbHealth::Unknown,
            cloud_map_health: CloudMapHealth::Unknown,
            weight: None,
            load: None,
            updated_at: None,
            running_since: None,
            task_arn: None,
            capacity: None,
        }
    }

    /// Decodes a Cloud Map instance. Fails only when it cannot be called at all (no IPv4 or IPv6
    /// address, or no port); every other odd value becomes the default [`InstanceAttributes`]
    /// documents.
    pub fn from_attributes(
        id: impl Into<String>,
        attributes: &impl AttributeSource,
        cloud_map_health: CloudMapHealth,
    ) -> Result<Self, Unroutable> {
        let decoded = InstanceAttributes::decode(attributes);
        let (addr, ipv6_addr) = match (decoded.ipv4, decoded.ipv6) {
            (Some(v4), v6) => (IpAddr::V4(v4), v6),
            (None, Some(v6)) => (IpAddr::V6(v6), None),
            (None, None) => return Err(Unroutable::NoAddress),
        };
        let port = decoded.port.ok_or(Unroutable::NoPort)?;
        Ok(Self {
            id: id.into(),
            addr: SocketAddr::new(addr, port),
            ipv6_addr: ipv6_addr.map(|ip| SocketAddr::new(IpAddr::V6(ip), port)),
            zone: decoded.zone,
            zone_id: decoded.zone_id,
            state: decoded.state,
            health: decoded.health,
            cloud_map_health,
            weight: decoded.weight,
            load: decoded.load,
            updated_at: decoded.updated_at,
            running_since: decoded.running_since,
            task_arn: decoded.task_arn,
            capacity: decoded.capacity,
        })
    }

    /// The instance as Cloud Map attributes that [`Instance::from_attributes`] reads back to an
    /// equal instance (with the same Cloud Map health): the address (`AWS_INSTANCE_IPV4`, or
    /// `AWS_INSTANCE_IPV6` for an IPv6-only instance; a dual-stack one's IPv6 address too) and
    /// port, and every
    /// contract value it has, times with the precision they have. Ordered by key. How the xDS
    /// server hands a snapshot to Rust clients (endpoint metadata), so that both sources give
    /// the same instances.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let address = match self.addr {
            SocketAddr::V4(_) => keys::AWS_INSTANCE_IPV4,
            SocketAddr::V6(_) => keys::AWS_INSTANCE_IPV6,
        };
        let mut values = vec![
            (address, self.addr.ip().to_string()),
            (keys::AWS_INSTANCE_PORT, self.addr.port().to_string()),
            (keys::LB_HEALTH, self.health.as_str().to_owned()),
        ];
        let mut optional = |key: &'static str, value: Option<String>| {
            if let Some(value) = value {
                values.push((key, value));
            }
        };
        optional(
            keys::AWS_INSTANCE_IPV6,
            self.ipv6_addr
                .filter(|_| self.addr.is_ipv4())
                .map(|addr| addr.ip().to_string()),
        );
        optional(keys::AVAILABILITY_ZONE, self.zone.clone());
        optional(keys::AVAILABILITY_ZONE_ID, self.zone_id.clone());
        optional(keys::LB_STATE, self.state.map(|s| s.as_str().to_owned()));
        optional(keys::LB_WEIGHT, self.weight.map(|w| w.to_string()));
        optional(keys::LB_LOAD, self.load.map(|l| l.to_string()));
        optional(
            keys::LB_UPDATED_AT,
            self.updated_at.map(format_rfc3339_exact),
        );
        optional(
            keys::LB_RUNNING_SINCE,
            self.running_since.map(format_rfc3339_exact),
        );
        optional(keys::LB_TASK_ARN, self.task_arn.clone());
        optional(keys::LB_CAPACITY, self.capacity.clone());
        values.sort_by_key(|(key, _)| *key);
        values
    }

    /// The address a connection dials first under `family`, and the one it falls back to (see
    /// [`IpFamily`]): `(addr, None)` for an instance with one address.
    pub fn dial_order(&self, family: IpFamily) -> (SocketAddr, Option<SocketAddr>) {
        match (self.ipv6_addr, family) {
            (None, _) => (self.addr, None),
            (Some(v6), IpFamily::Ipv4First) => (self.addr, Some(v6)),
            (Some(v6), IpFamily::Ipv6) => (v6, None),
            (Some(v6), IpFamily::Ipv6First) => (v6, Some(self.addr)),
        }
    }

    /// The ECS task ID: the last segment of `LB_TASK_ARN` when known, else the instance ID
    /// (which ECS sets to the task ID when it registers the instance).
    pub fn task_id(&self) -> &str {
        self.task_arn
            .as_deref()
            .and_then(|arn| arn.rsplit('/').next())
            .filter(|id| !id.is_empty())
            .unwrap_or(&self.id)
    }

    /// Adds an IPv6 address at `addr`'s port, making an instance at an IPv4 `addr` dual-stack
    /// (for static lists and tests). On an instance whose `addr` is IPv6 it replaces `addr`.
    #[must_use]
    pub fn with_ipv6(mut self, ip: std::net::Ipv6Addr) -> Self {
        let v6 = SocketAddr::new(IpAddr::V6(ip), self.addr.port());
        if self.addr.is_ipv6() {
            self.addr = v6;
        } else {
            self.ipv6_addr = Some(v6);
        }
        self
    }

    /// Sets the zone (for static lists and tests).
    #[must_use]
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets the zone ID (for static lists and tests).
    #[must_use]
    pub fn with_zone_id(mut self, zone_id: impl Into<String>) -> Self {
        self.zone_id = Some(zone_id.into());
        self
    }

    /// Sets `LB_RUNNING_SINCE` (for static lists and tests).
    #[must_use]
    pub fn with_running_since(mut self, at: SystemTime) -> Self {
        self.running_since = Some(at);
        self
    }

    /// Sets `LB_STATE` (for static lists and tests).
    #[must_use]
    pub fn with_state(mut self, state: LbState) -> Self {
        self.state = Some(state);
        self
    }

    /// Sets `LB_HEALTH` (for static lists and tests).
    #[must_use]
    pub fn with_health(mut self, health: LbHealth) -> Self {
        self.health = health;
        self
    }

    /// Sets Cloud Map's health status (for static lists and tests).
    #[must_use]
    pub fn with_cloud_map_health(mut self, health: CloudMapHealth) -> Self {
        self.cloud_map_health = health;
        self
    }

    /// Sets `LB_WEIGHT` (for static lists and tests).
    #[must_use]
    pub fn with_weight(mut self, weight: Weight) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Sets `LB_LOAD` and the time it was written (for static lists and tests).
    #[must_use]
    pub fn with_load(mut self, load: Load, updated_at: Option<SystemTime>) -> Self {
        self.load = Some(load);
        self.updated_at = updated_at;
        self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::contract::keys;

    fn attributes(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn decodes_a_full_instance() {
        let attrs = attributes(&[
            (keys::AWS_INSTANCE_IPV4, "10.0.1.17"),
            (keys::AWS_INSTANCE_PORT, "50051"),
            (keys::AVAILABILITY_ZONE, "eu-central-1a"),
            (keys::LB_STATE, "DRAINING"),
            (keys::LB_WEIGHT, "400"),
            (keys::LB_LOAD, "37"),
            (
                keys::LB_TASK_ARN,
                "arn:aws:ecs:eu-central-1:1:task/prod/abc123",
            ),
        ]);
        let instance =
            Instance::from_attributes("abc123", &attrs, CloudMapHealth::Healthy).unwrap();
        assert_eq!(instance.addr, "10.0.1.17:50051".parse().unwrap());
        assert_eq!(instance.zone.as_deref(), Some("eu-central-1a"));
        assert_eq!(instance.state, Some(LbState::Draining));
        assert_eq!(instance.weight, Weight::new(400));
        assert_eq!(instance.load, Load::new(37));
        assert_eq!(instance.task_id(), "abc123");
    }

    #[test]
    fn unroutable_instances_say_why() {
        let no_ip = attributes(&[(keys::AWS_INSTANCE_PORT, "1")]);
        assert_eq!(
            Instance::from_attributes("x", &no_ip, CloudMapHealth::Unknown),
            Err(Unroutable::NoAddress)
        );
        let bad_port = attributes(&[
            (keys::AWS_INSTANCE_IPV4, "10.0.0.1"),
            (keys::AWS_INSTANCE_PORT, "http"),
        ]);
        assert_eq!(
            Instance::from_attributes("x", &bad_port, CloudMapHealth::Unknown),
            Err(Unroutable::NoPort)
        );
    }

    #[test]
    fn an_ipv6_only_instance_is_called_at_its_ipv6_address() {
        let attrs = attributes(&[
            (keys::AWS_INSTANCE_IPV6, "2001:db8::17"),
            (keys::AWS_INSTANCE_PORT, "50051"),
        ]);
        let instance = Instance::from_attributes("x", &attrs, CloudMapHealth::Unknown).unwrap();
        assert_eq!(instance.addr, "[2001:db8::17]:50051".parse().unwrap());
        assert_eq!(instance.ipv6_addr, None);
        for family in [IpFamily::Ipv4First, IpFamily::Ipv6, IpFamily::Ipv6First] {
            assert_eq!(
                instance.dial_order(family),
                (instance.addr, None),
                "{family}"
            );
        }
        // A malformed IPv6 address (a zone-scoped link-local one) and no IPv4: unroutable.
        let scoped = attributes(&[
            (keys::AWS_INSTANCE_IPV6, "fe80::1%eth0"),
            (keys::AWS_INSTANCE_PORT, "50051"),
        ]);
        assert_eq!(
            Instance::from_attributes("x", &scoped, CloudMapHealth::Unknown),
            Err(Unroutable::NoAddress)
        );
    }

    #[test]
    fn a_dual_stack_instance_is_dialled_in_the_family_order() {
        let attrs = attributes(&[
            (keys::AWS_INSTANCE_IPV4, "10.0.1.17"),
            (keys::AWS_INSTANCE_IPV6, " 2001:db8::17 "),
            (keys::AWS_INSTANCE_PORT, "50051"),
        ]);
        let instance = Instance::from_attributes("x", &attrs, CloudMapHealth::Unknown).unwrap();
        let v4: SocketAddr = "10.0.1.17:50051".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::17]:50051".parse().unwrap();
        assert_eq!(instance.addr, v4);
        assert_eq!(instance.ipv6_addr, Some(v6));
        assert_eq!(instance.dial_order(IpFamily::default()), (v4, Some(v6)));
        assert_eq!(instance.dial_order(IpFamily::Ipv6), (v6, None));
        assert_eq!(instance.dial_order(IpFamily::Ipv6First), (v6, Some(v4)));
        // An IPv4-only instance is dialled over IPv4 whatever the family.
        let v4_only = Instance::new("y", v4);
        assert_eq!(v4_only.dial_order(IpFamily::Ipv6), (v4, None));
        // A malformed IPv6 address beside a good IPv4 one: IPv4 only, and the problem is named.
        let bad = attributes(&[
            (keys::AWS_INSTANCE_IPV4, "10.0.1.17"),
            (keys::AWS_INSTANCE_IPV6, "10.0.1.18"),
            (keys::AWS_INSTANCE_PORT, "50051"),
        ]);
        let instance = Instance::from_attributes("x", &bad, CloudMapHealth::Unknown).unwrap();
        assert_eq!(instance.dial_order(IpFamily::Ipv6), (v4, None));
        let (_, problems) = InstanceAttributes::decode_with_problems(&bad);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, keys::AWS_INSTANCE_IPV6);
    }

    #[test]
    fn ip_families_read_their_spelling() {
        for family in [IpFamily::Ipv4First, IpFamily::Ipv6, IpFamily::Ipv6First] {
            assert_eq!(family.as_str().parse::<IpFamily>(), Ok(family));
        }
        assert_eq!("IPV6_FIRST".parse::<IpFamily>(), Ok(IpFamily::Ipv6First));
        assert!("ipv4".parse::<IpFamily>().is_err());
    }

    #[test]
    fn task_id_falls_back_to_the_instance_id() {
        let instance = Instance::new("task-1", "127.0.0.1:1".parse().unwrap());
        assert_eq!(instance.task_id(), "task-1");
    }

    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "\\PC{0,12}",
            (0u32..2_000).prop_map(|n| n.to_string()),
            Just(" 70 ".to_owned()),
            prop::sample::select(vec![
                "RUNNING",
                "DRAINING",
                "STARTING",
                "STOPPED",
                "HEALTHY",
                "UNHEALTHY",
                "UNKNOWN",
                "euc1-az1",
                "eu-central-1a",
                "FARGATE_SPOT",
            ])
            .prop_map(str::to_owned),
            (0u64..4_000_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| {
                format_rfc3339_exact(std::time::UNIX_EPOCH + std::time::Duration::new(s, n))
            }),
            (0u64..4_000_000_000).prop_map(|s| format!(
                "{}+02:00",
                &crate::contract::format_rfc3339(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)
                )[..19]
            )),
        ]
    }

    proptest::proptest! {
        /// Whatever Cloud Map holds, the instance it decodes to survives being written out as
        /// attributes and read back (the xDS server's endpoint metadata relies on it).
        #[test]
        fn attributes_read_back_to_the_same_instance(
            values in proptest::collection::hash_map(
                proptest::sample::select(vec![
                    keys::AVAILABILITY_ZONE, keys::AVAILABILITY_ZONE_ID, keys::LB_STATE,
                    keys::LB_HEALTH, keys::LB_WEIGHT, keys::LB_LOAD, keys::LB_UPDATED_AT,
                    keys::LB_RUNNING_SINCE, keys::LB_TASK_ARN, keys::LB_CAPACITY, keys::LB_SCHEMA,
                ]),
                value(),
                0..11,
            ),
            ip in proptest::prelude::any::<[u8; 4]>(),
            // IPv4 only, dual-stack, or IPv6 only.
            (with_v4, v6) in (
                proptest::prelude::any::<bool>(),
                proptest::option::of(proptest::prelude::any::<[u16; 8]>()),
            ),
            port in 1u16..,
            health in proptest::sample::select(vec![
                CloudMapHealth::Healthy, CloudMapHealth::Unhealthy, CloudMapHealth::Unknown,
            ]),
        ) {
            let mut raw: HashMap<String, String> =
                values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if with_v4 || v6.is_none() {
                raw.insert(keys::AWS_INSTANCE_IPV4.to_owned(), std::net::Ipv4Addr::from(ip).to_string());
            }
            if let Some(v6) = v6 {
                raw.insert(keys::AWS_INSTANCE_IPV6.to_owned(), std::net::Ipv6Addr::from(v6).to_string());
            }
            raw.insert(keys::AWS_INSTANCE_PORT.to_owned(), port.to_string());
            let instance = Instance::from_attributes("task-1", &raw, health).unwrap();
            let written: HashMap<String, String> = instance
                .attributes()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            let read = Instance::from_attributes("task-1", &written, health).unwrap();
            proptest::prop_assert_eq!(read, instance);
            proptest::prop_assert_eq!(CloudMapHealth::parse(health.as_str()), health);
        }
    }
}
