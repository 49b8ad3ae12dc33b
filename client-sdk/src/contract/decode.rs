//! Lenient, total decoding of an instance's attribute map.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use super::SCHEMA_VERSION;
use super::keys;
use super::time::parse_rfc3339;
use super::values::{LbHealth, LbState, Load, Weight};

/// What a client (or the Lambda, reading before it writes) knows about one instance, decoded from
/// its Cloud Map attributes.
///
/// Decoding never fails and never drops the instance. Each field documents what a missing,
/// unrecognised or malformed value becomes; [`InstanceAttributes::decode_with_problems`] also says
/// which values were odd, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct InstanceAttributes {
    /// `AWS_INSTANCE_IPV4`. `None` when missing or not an IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// `AWS_INSTANCE_IPV6`. `None` when missing or not an IPv6 address (a zone-scoped
    /// link-local address such as `fe80::1%eth0` is not one). An instance with neither address
    /// cannot be called.
    pub ipv6: Option<Ipv6Addr>,
    /// `AWS_INSTANCE_PORT`. `None` when missing, not a number, or 0.
    pub port: Option<u16>,
    /// `AVAILABILITY_ZONE`, trimmed. `None` when missing or blank: the instance belongs to no zone
    /// (a client gives it no zone affinity).
    pub zone: Option<String>,
    /// `AVAILABILITY_ZONE_ID`, trimmed; `None` when missing or blank (zones are then matched by
    /// name).
    pub zone_id: Option<String>,
    /// `REGION`, trimmed; `None` when missing or blank.
    pub region: Option<String>,
    /// `ECS_CLUSTER_NAME`, trimmed; `None` when missing or blank.
    pub cluster: Option<String>,
    /// `ECS_SERVICE_NAME`, trimmed; `None` when missing or blank.
    pub service: Option<String>,
    /// `ECS_TASK_DEFINITION_FAMILY`, trimmed; `None` when missing or blank.
    pub task_family: Option<String>,
    /// `LB_STATE`. `None` when missing or unrecognised. A client treats `None` as "no lifecycle
    /// data": eligible, like `RUNNING`. An unrecognised value most likely comes from a newer
    /// contract; refusing it would black-hole a whole fleet during a rollout.
    pub state: Option<LbState>,
    /// `LB_HEALTH`. [`LbHealth::Unknown`] when missing or unrecognised (treated like healthy).
    pub health: LbHealth,
    /// `LB_WEIGHT`. `None` when missing, not an unsigned integer, or blank; a client then uses the
    /// median of the other instances' weights. Values above 10000 are lowered to 10000.
    pub weight: Option<Weight>,
    /// `LB_CPU_UNITS`; `None` when missing or not an unsigned integer.
    pub cpu_units: Option<u32>,
    /// `LB_MEMORY_MIB`; `None` when missing or not an unsigned integer.
    pub memory_mib: Option<u32>,
    /// `LB_CAPACITY`, trimmed; `None` when missing or blank.
    pub capacity: Option<String>,
    /// `LB_LOAD`. `None` when missing or not an unsigned integer ("load unknown"). Values above
    /// 100 are lowered to 100.
    pub load: Option<Load>,
    /// `LB_TASK_ARN`, trimmed; `None` when missing or blank.
    pub task_arn: Option<String>,
    /// `LB_TASK_VERSION`: the ECS version at which the task was first seen in `state`. `None` when
    /// missing or not an unsigned integer (the sync Lambda then takes the next observation of
    /// that state as the first).
    pub task_version: Option<u64>,
    /// `LB_UPDATED_AT`; `None` when missing or not RFC 3339.
    pub updated_at: Option<SystemTime>,
    /// `LB_RUNNING_SINCE`; `None` when missing or not RFC 3339 (a client then ramps nothing up).
    pub running_since: Option<SystemTime>,
    /// `LB_SCHEMA`; `None` when missing or not an unsigned integer. A newer schema is decoded
    /// anyway, as far as its keys are known.
    pub schema: Option<u32>,
    /// `LB_OWNER` is `LAMBDA`: the sync Lambda registered this instance (owner mode).
    pub lambda_owned: bool,
}

/// A value that [`InstanceAttributes::decode_with_problems`] could not take as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeProblem {
    /// The attribute key.
    pub key: &'static str,
    /// The value found (truncated to 64 characters).
    pub value: String,
    /// What was done about it.
    pub kind: ProblemKind,
}

/// How an odd attribute value was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Not understood; decoded as if the key were missing.
    Ignored,
    /// Out of range; lowered to the largest valid value.
    Clamped,
    /// A newer contract version than this crate knows.
    NewerSchema,
}

impl fmt::Display for AttributeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ProblemKind::Ignored => "ignored",
            ProblemKind::Clamped => "clamped to the largest valid value",
            ProblemKind::NewerSchema => "newer contract than this client; decoded as far as known",
        };
        write!(f, "{}={:?}: {what}", self.key, self.value)
    }
}

/// Something an attribute map can be read from: Cloud Map's SDK hands out `HashMap`s, tests and
/// the Lambda's merge use `BTreeMap`s.
pub trait AttributeSource {
    /// The value of `key`, if present.
    fn attribute(&self, key: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher> AttributeSource for HashMap<String, String, S> {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl AttributeSource for std::collections::BTreeMap<String, String> {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl InstanceAttributes {
    /// Decodes an attribute map. Never fails; see each field for its default.
    pub fn decode(attributes: &impl AttributeSource) -> Self {
        Decoder {
            attributes,
            problems: None,
        }
        .decode()
    }

    /// Decodes an attribute map and lists the values that were odd.
    pub fn decode_with_problems(
        attributes: &impl AttributeSource,
    ) -> (Self, Vec<AttributeProblem>) {
        let mut problems = Vec::new();
        let decoded = Decoder {
            attributes,
            problems: Some(&mut problems),
        }
        .decode();
        (decoded, problems)
    }
}

struct Decoder<'a, A> {
    attributes: &'a A,
    problems: Option<&'a mut Vec<AttributeProblem>>,
}

impl<A: AttributeSource> Decoder<'_, A> {
    fn decode(mut self) -> InstanceAttributes {
        let schema = self.unsigned::<u32>(keys::LB_SCHEMA);
        if let Some(version) = schema.filter(|&v| v > SCHEMA_VERSION) {
            self.problem(
                keys::LB_SCHEMA,
                &version.to_string(),
                ProblemKind::NewerSchema,
            );
        }
        InstanceAttributes {
            ipv4: self.parsed(keys::AWS_INSTANCE_IPV4, |v| v.parse().ok()),
            ipv6: self.parsed(keys::AWS_INSTANCE_IPV6, |v| v.parse().ok()),
            port: self.parsed(keys::AWS_INSTANCE_PORT, |v| {
                v.parse().ok().filter(|&p| p != 0)
            }),
            zone: self.text(keys::AVAILABILITY_ZONE),
            zone_id: self.text(keys::AVAILABILITY_ZONE_ID),
            region: self.text(keys::REGION),
            cluster: self.text(keys::ECS_CLUSTER_NAME),
            service: self.text(keys::ECS_SERVICE_NAME),
            task_family: self.text(keys::ECS_TASK_DEFINITION_FAMILY),
            state: self.parsed(keys::LB_STATE, LbState::parse),
            health: self
                .parsed(keys::LB_HEALTH, LbHealth::parse)
                .unwrap_or_default(),
            weight: self
                .clamped(keys::LB_WEIGHT, Weight::MAX.get())
                .map(Weight::saturating),
            cpu_units: self.unsigned(keys::LB_CPU_UNITS),
            memory_mib: self.unsigned(keys::LB_MEMORY_MIB),
            capacity: self.text(keys::LB_CAPACITY),
            load: self.clamped(keys::LB_LOAD, 100).and_then(Load::new),
            task_arn: self.text(keys::LB_TASK_ARN),
            task_version: self.unsigned(keys::LB_TASK_VERSION),
            updated_at: self.parsed(keys::LB_UPDATED_AT, parse_rfc3339),
            running_since: self.parsed(keys::LB_RUNNING_SINCE, parse_rfc3339),
            schema,
            lambda_owned: self
                .attributes
                .attribute(keys::LB_OWNER)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case(super::OWNER_LAMBDA)),
        }
    }

    fn problem(&mut self, key: &'static str, value: &str, kind: ProblemKind) {
        if let Some(problems) = self.problems.as_deref_mut() {
            let value = value.chars().take(64).collect();
            problems.push(AttributeProblem { key, value, kind });
        }
    }

    /// Trimmed text; blank counts as missing.
    fn text(&self, key: &str) -> Option<String> {
        let value = self.attributes.attribute(key)?.trim();
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// A value parsed by `parse`; what it rejects is recorded and ignored.
    fn parsed<T>(&mut self, key: &'static str, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
        let raw = self.attributes.attribute(key)?;
        let value = parse(raw.trim());
        if value.is_none() {
            self.problem(key, raw, ProblemKind::Ignored);
        }
        value
    }

    fn unsigned<T: std::str::FromStr>(&mut self, key: &'static str) -> Option<T> {
        self.parsed(key, |v| v.parse().ok())
    }

    /// An unsigned integer, lowered to `max` when above it.
    fn clamped(&mut self, key: &'static str, max: u32) -> Option<u32> {
        let raw = self.attributes.attribute(key)?;
        let trimmed = raw.trim();
        let value = match trimmed.parse::<u64>() {
            Ok(value) => value,
            // All digits but too long for u64: still "a very large number".
            Err(_) if !trimmed.is_empty() && trimmed.bytes().all(|c| c.is_ascii_digit()) => {
                u64::MAX
            }
            Err(_) => {
                self.problem(key, raw, ProblemKind::Ignored);
                return None;
            }
        };
        if value > u64::from(max) {
            self.problem(key, raw, ProblemKind::Clamped);
            return Some(max);
        }
        u32::try_from(value).ok()
    }
}
