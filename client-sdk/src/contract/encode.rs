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

/// Cloud Map's limits on one instance's attributes.
pub mod limits {
    /// Custom attributes per instance (reserved `AWS_*` keys excluded).
    pub const MAX_CUSTOM_ATTRIBUTES: usize = 30;
    /// Characters in a key.
    pub const MAX_KEY_LEN: usize = 255;
    /// Characters in a value.
    pub const MAX_VALUE_LEN: usize = 1024;
    /// Characters in all keys and values together.
    pub const MAX_TOTAL_LEN: usize = 5000;
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
    /// A value contains a character that is not printable ASCII.
    #[error("attribute {key} has a character that is not printable ASCII at position {position}")]
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
            if let Some(position) = value.bytes().position(|c| !(b' '..=b'~').contains(&c)) {
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

/// The merge rule of the contract: the Lambda owns exactly [`keys::LAMBDA_OWNED`]; everything
/// else is preserved as is.
///
/// Starting from `existing`, every owned key is removed and `owned` is written in its place (so an
/// owned value that is now `None`, like an unknown load, disappears). Then each of `if_missing`
/// (e.g. `AVAILABILITY_ZONE`, or the address in owner mode) is added only where the key is absent
/// or blank. Every other key, ECS's and users' alike, comes through untouched. The result is
/// checked against Cloud Map's limits.
pub fn merge<S: std::hash::BuildHasher>(
    existing: &std::collections::HashMap<String, String, S>,
    owned: &LbAttributes,
    if_missing: &[(&str, String)],
) -> Result<AttributeSet, LimitError> {
    let mut merged: BTreeMap<String, String> = existing
        .iter()
        .filter(|(key, _)| !keys::LAMBDA_OWNED.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in owned.encode() {
        merged.insert(key.to_owned(), value);
    }
    for (key, value) in if_missing {
        let present = merged.get(*key).is_some_and(|v| !v.trim().is_empty());
        if !present {
            merged.insert((*key).to_owned(), value.clone());
        }
    }
    AttributeSet::new(merged)
}
