//! Strict encoding: the Lambda's attributes, Cloud Map's limits, and the merge rule.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::decode::AttributeSource;
use super::keys;
use super::time::format_rfc3339;
use super::values::{LbHealth, LbState, Load, Weight};
use super::{OWNER_LAMBDA, SCHEMA_VERSION};

/// The attributes the sync Lambda writes for one task: every key in [`keys::LAMBDA_OWNED`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbAttributes {
    /// `LB_STATE`.
    pub state: LbState,
    /// `LB_HEALTH`.
    pub health: LbHealth,
    /// `LB_WEIGHT`.
    pub weight: Weight,
    /// `LB_CPU_UNITS`; omitted when `None`.
    pub cpu_units: Option<u32>,
    /// `LB_MEMORY_MIB`; omitted when `None`.
    pub memory_mib: Option<u32>,
    /// `LB_CAPACITY`; omitted when `None`.
    pub capacity: Option<String>,
    /// `LB_LOAD`; omitted when `None` (load unknown).
    pub load: Option<Load>,
    /// `LB_TASK_ARN`.
    pub task_arn: String,
    /// `LB_TASK_VERSION`: the ECS version at which the task was first seen in `state`; omitted
    /// when `None` (not known: the source of a later state gave no version).
    pub task_version: Option<u64>,
    /// `LB_UPDATED_AT`.
    pub updated_at: SystemTime,
    /// `LB_RUNNING_SINCE`: when the task turned RUNNING; omitted when `None` (not yet, or
    /// unknown).
    pub running_since: Option<SystemTime>,
    /// Writes `LB_OWNER=LAMBDA`: the Lambda registered the instance itself (owner mode).
    pub lambda_owned: bool,
}

impl LbAttributes {
    /// The key/value pairs, `LB_SCHEMA` included. Optional values that are `None` are absent.
    pub fn encode(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (keys::LB_STATE, self.state.as_str().to_owned()),
            (keys::LB_HEALTH, self.health.as_str().to_owned()),
            (keys::LB_WEIGHT, self.weight.to_string()),
            (keys::LB_TASK_ARN, self.task_arn.clone()),
            (keys::LB_UPDATED_AT, format_rfc3339(self.updated_at)),
            (keys::LB_SCHEMA, SCHEMA_VERSION.to_string()),
        ];
        let optional = [
            (
                keys::LB_TASK_VERSION,
                self.task_version.map(|v| v.to_string()),
            ),
            (keys::LB_CPU_UNITS, self.cpu_units.map(|v| v.to_string())),
            (keys::LB_MEMORY_MIB, self.memory_mib.map(|v| v.to_string())),
            (keys::LB_CAPACITY, self.capacity.clone()),
            (keys::LB_LOAD, self.load.map(|v| v.to_string())),
            (
                keys::LB_RUNNING_SINCE,
                self.running_since.map(format_rfc3339),
            ),
            (
                keys::LB_OWNER,
                self.lambda_owned.then(|| OWNER_LAMBDA.to_owned()),
            ),
        ];
        pairs.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
        pairs
    }
}

/// Cloud Map's limits on one instance's attributes and ID (the `RegisterInstance` API
/// reference: `AttrKey`, `AttrValue`, `InstanceId`).
pub mod limits {
    /// Custom attributes per instance (reserved `AWS_*` keys excluded).
    pub const MAX_CUSTOM_ATTRIBUTES: usize = 30;
    /// Characters in a key.
    pub const MAX_KEY_LEN: usize = 255;
    /// Characters in a value.
    pub const MAX_VALUE_LEN: usize = 1024;
    /// Characters in all keys and values together.
    pub const MAX_TOTAL_LEN: usize = 5000;
    /// Characters in an instance ID.
    pub const MAX_INSTANCE_ID_LEN: usize = 64;

    /// Whether `id` can be a Cloud Map instance ID: 1 to 64 characters of `0-9 a-z A-Z _ / : . @ -`
    /// (the API reference's pattern `^[0-9a-zA-Z_/:.@-]+$`).
    pub fn is_instance_id(id: &str) -> bool {
        (1..=MAX_INSTANCE_ID_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_/:.@-".contains(&c))
    }

    /// Where `value` breaks the API reference's value pattern
    /// `^([!-~][ \t!-~]*){0,1}[!-~]{0,1}$`: printable ASCII, with spaces and tabs allowed except
    /// as the first character. `None` when it does not (the empty value is allowed).
    pub(crate) fn invalid_value_position(value: &str) -> Option<usize> {
        value.bytes().enumerate().position(|(i, c)| {
            let graphic = c.is_ascii_graphic();
            if i == 0 {
                !graphic
            } else {
                !(graphic || c == b' ' || c == b'\t')
            }
        })
    }
}

/// Why an attribute set would be refused by Cloud Map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// More than 30 custom attributes.
    #[error("{count} custom attributes; Cloud Map allows at most {max}")]
    TooManyAttributes {
        /// Custom attributes in the set.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A key is empty, too long, or has characters other than printable ASCII without space.
    #[error("attribute key {key:?} is not 1 to {max} printable ASCII characters without spaces")]
    InvalidKey {
        /// The key, truncated to 64 characters.
        key: String,
        /// The length limit.
        max: usize,
    },
    /// A value is longer than 1,024 characters.
    #[error("attribute {key} has a value of {len} characters; Cloud Map allows at most {max}")]
    ValueTooLong {
        /// The key.
        key: String,
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value contains a character Cloud Map refuses: not printable ASCII, or a leading space or
    /// tab.
    #[error("attribute {key} has a character Cloud Map refuses at position {position}")]
    InvalidValue {
        /// The key.
        key: String,
        /// Byte position of the first offending character.
        position: usize,
    },
    /// Keys and values together are longer than 5,000 characters.
    #[error("attributes total {total} characters; Cloud Map allows at most {max}")]
    TotalTooLong {
        /// The total.
        total: usize,
        /// The limit.
        max: usize,
    },
}

/// An attribute map that Cloud Map will accept: every limit in [`limits`] was checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttributeSet(BTreeMap<String, String>);

impl AttributeSet {
    /// Checks `attributes` against Cloud Map's limits.
    pub fn new(attributes: BTreeMap<String, String>) -> Result<Self, LimitError> {
        let mut custom = 0;
        let mut total = 0;
        for (key, value) in &attributes {
            let key_ok = (1..=limits::MAX_KEY_LEN).contains(&key.len())
                && key.bytes().all(|c| c.is_ascii_graphic());
            if !key_ok {
                let key = key.chars().take(64).collect();
                return Err(LimitError::InvalidKey {
                    key,
                    max: limits::MAX_KEY_LEN,
                });
            }
            if value.len() > limits::MAX_VALUE_LEN {
                let (key, len) = (key.clone(), value.len());
                return Err(LimitError::ValueTooLong {
                    key,
                    len,
                    max: limits::MAX_VALUE_LEN,
                });
            }
            if let Some(position) = limits::invalid_value_position(value) {
                return Err(LimitError::InvalidValue {
                    key: key.clone(),
                    position,
                });
            }
            if !keys::RESERVED.contains(&key.as_str()) {
                custom += 1;
            }
            total += key.len() + value.len();
        }
        if custom > limits::MAX_CUSTOM_ATTRIBUTES {
            let max = limits::MAX_CUSTOM_ATTRIBUTES;
            return Err(LimitError::TooManyAttributes { count: custom, max });
        }
        if total > limits::MAX_TOTAL_LEN {
            return Err(LimitError::TotalTooLong {
                total,
                max: limits::MAX_TOTAL_LEN,
            });
        }
        Ok(Self(attributes))
    }

    /// The attributes.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The attributes, e.g. to build a `RegisterInstance` request.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }

    /// Whether this set holds exactly the same keys and values as `other`, leaving out `ignored`
    /// keys (e.g. `LB_UPDATED_AT`, which changes on every write).
    pub fn same_as<S: std::hash::BuildHasher>(
        &self,
        other: &std::collections::HashMap<String, String, S>,
        ignored: &[&str],
    ) -> bool {
        let relevant = |key: &str| !ignored.contains(&key);
        let ours = self.0.iter().filter(|(k, _)| relevant(k));
        let theirs = other.iter().filter(|(k, _)| relevant(k)).count();
        ours.clone().count() == theirs && ours.into_iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl AttributeSource for AttributeSet {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// A key the Lambda meant to write but left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Omitted {
    /// The key, e.g. `LB_CAPACITY`.
    pub key: String,
    /// Why.
    pub reason: OmitReason,
}

/// Why a key was left out of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OmitReason {
    /// Its value has a character Cloud Map refuses.
    InvalidValue,
    /// Its value is longer than 1,024 characters.
    ValueTooLong,
    /// With it, the instance would have more than 30 custom attributes.
    TooManyAttributes,
    /// With it, keys and values would total more than 5,000 characters.
    TotalTooLong,
}

impl OmitReason {
    /// A short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidValue => "invalid_value",
            Self::ValueTooLong => "value_too_long",
            Self::TooManyAttributes => "too_many_attributes",
            Self::TotalTooLong => "total_too_long",
        }
    }
}

/// What [`merge`] produced: the attributes to write, and the keys it had to leave out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The attribute set (Cloud Map's limits checked).
    pub attributes: AttributeSet,
    /// The optional keys left out, in the order they were dropped; empty when everything fit.
    pub omitted: Vec<Omitted>,
}

/// The merge rule of the contract: the Lambda owns exactly [`keys::LAMBDA_OWNED`]; everything
/// else is preserved as is; and it writes what it can.
///
/// Starting from `existing`, every owned key is removed and `owned` is written in its place (so an
/// owned value that is now `None`, like an unknown load, disappears). Then each of `if_missing`
/// (e.g. `AVAILABILITY_ZONE`, or the address in owner mode) is added only where the key is absent
/// or blank. Every other key, ECS's and users' alike, comes through untouched.
///
/// The keys in [`keys::OMITTABLE`] are optional: one whose value Cloud Map would refuse (a
/// character it refuses, more than 1,024 characters) is left out, never truncated (each is an
/// identifier or a number a reader matches exactly, and a cut one names something else). If the
/// set is then still over 30 custom attributes or 5,000 characters, optional keys the Lambda adds
/// are left out in [`keys::OMITTABLE`]'s order until it fits. Every omission is in
/// [`Merged::omitted`]. What cannot be dropped (the lifecycle, health, weight, version, time,
/// schema, owner and address keys, and every key the Lambda does not own) is checked as it is:
/// when the set does not fit without dropping one of them, the merge fails with the
/// [`LimitError`] and nothing is written.
pub fn merge<S: std::hash::BuildHasher>(
    existing: &std::collections::HashMap<String, String, S>,
    owned: &LbAttributes,
    if_missing: &[(&str, String)],
) -> Result<Merged, LimitError> {
    let mut merged: BTreeMap<String, String> = existing
        .iter()
        .filter(|(key, _)| !keys::LAMBDA_OWNED.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut ours: Vec<(String, String)> = owned
        .encode()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for (key, value) in if_missing {
        let present = merged.get(*key).is_some_and(|v| !v.trim().is_empty());
        if !present && !ours.iter().any(|(k, _)| k == key) {
            ours.push(((*key).to_owned(), value.clone()));
        }
    }
    let mut omitted = Vec::new();
    let mut added = Vec::new();
    for (key, value) in ours {
        let optional = keys::OMITTABLE.contains(&key.as_str());
        let reason = if value.len() > limits::MAX_VALUE_LEN {
            Some(OmitReason::ValueTooLong)
        } else if limits::invalid_value_position(&value).is_some() {
            Some(OmitReason::InvalidValue)
        } else {
            None
        };
        match reason {
            // A required value Cloud Map refuses is left in, for `AttributeSet::new` to refuse.
            Some(reason) if optional => omitted.push(Omitted { key, reason }),
            _ => {
                added.push(key.clone());
                merged.insert(key, value);
            }
        }
    }
    // Over the count or total limit: drop what the Lambda adds, least useful first.
    let mut droppable = keys::OMITTABLE
        .iter()
        .filter(|key| added.iter().any(|k| k == *key));
    loop {
        let reason = if custom_count(&merged) > limits::MAX_CUSTOM_ATTRIBUTES {
            OmitReason::TooManyAttributes
        } else if total_len(&merged) > limits::MAX_TOTAL_LEN {
            OmitReason::TotalTooLong
        } else {
            break;
        };
        let Some(key) = droppable.next() else {
            break;
        };
        merged.remove(*key);
        omitted.push(Omitted {
            key: (*key).to_owned(),
            reason,
        });
    }
    Ok(Merged {
        attributes: AttributeSet::new(merged)?,
        omitted,
    })
}

fn custom_count(attributes: &BTreeMap<String, String>) -> usize {
    attributes
        .keys()
        .filter(|k| !keys::RESERVED.contains(&k.as_str()))
        .count()
}

fn total_len(attributes: &BTreeMap<String, String>) -> usize {
    attributes.iter().map(|(k, v)| k.len() + v.len()).sum()
}
