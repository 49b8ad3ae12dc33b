//! The attribute contract: what the sync Lambda writes on each Cloud Map instance and what a
//! client reads from it. It is also what an operator sees in the Cloud Map console.
//!
//! | key | written by | meaning |
//! |---|---|---|
//! | `AWS_INSTANCE_IPV4`, `AWS_INSTANCE_PORT` | ECS (the Lambda only in owner mode) | address |
//! | `AWS_INSTANCE_IPV6` | ECS, for awsvpc tasks in IPv6-only or dual-stack subnets | IPv6 address, same port. Without `AWS_INSTANCE_IPV4` a client calls `[addr]:port`; with both, the client's IP family option (`Ipv4First` by default, `Ipv6`, `Ipv6First`) chooses, and the other address is the per-connection fallback. Missing or malformed: IPv4 only |
//! | `AVAILABILITY_ZONE` | ECS (the Lambda writes it when missing) | zone name, e.g. `eu-central-1a` |
//! | `AVAILABILITY_ZONE_ID` | the Lambda, when missing | zone ID, e.g. `euc1-az2` (the same zone in every account), from the task's subnet; missing or blank: zones are matched by name |
//! | `REGION`, `ECS_CLUSTER_NAME`, `ECS_SERVICE_NAME`, `ECS_TASK_DEFINITION_FAMILY` | ECS | read-only context |
//! | `LB_STATE` | Lambda | `STARTING`, `RUNNING`, `DRAINING` or `STOPPED` |
//! | `LB_HEALTH` | Lambda | `HEALTHY`, `UNHEALTHY` or `UNKNOWN` |
//! | `LB_WEIGHT` | Lambda | integer 0–10000, relative capacity; 0 = never pick |
//! | `LB_CPU_UNITS`, `LB_MEMORY_MIB` | Lambda | task size |
//! | `LB_CAPACITY` | Lambda | capacity provider (`FARGATE`, `FARGATE_SPOT`, ...) or launch type |
//! | `LB_LOAD` | Lambda | integer 0–100, recent CPU utilisation; absent when unknown |
//! | `LB_TASK_ARN` | Lambda | the task's ARN |
//! | `LB_TASK_VERSION` | Lambda | the ECS `version` at which the task was first seen in the written `LB_STATE`; absent when unknown |
//! | `LB_UPDATED_AT` | Lambda | RFC 3339 UTC time of the state written |
//! | `LB_RUNNING_SINCE` | Lambda | RFC 3339 UTC time the task turned RUNNING (ECS `startedAt`, else the time of its first RUNNING event); absent before, or when unknown. A reader ramps a new task up from it (slow start); missing or malformed: no ramp, full weight |
//! | `LB_SCHEMA` | Lambda | contract version, `1` |
//! | `LB_OWNER` | Lambda | `LAMBDA` when the Lambda registered the instance (owner mode); absent otherwise |
//!
//! Three rules make the contract safe to evolve and to run against real, messy data:
//!
//! - **Decoding is lenient and total.** [`InstanceAttributes::decode`] turns any map into a value;
//!   a missing, unrecognised or malformed value becomes the default its field documents and never
//!   drops the instance. [`InstanceAttributes::decode_with_problems`] says what was odd.
//! - **Encoding is strict.** [`AttributeSet::new`] refuses a map Cloud Map would refuse (see
//!   [`limits`]) and names the limit: nothing that is an `AttributeSet` can be refused.
//! - **Merging preserves, and writes what it can.** [`merge`] replaces the keys in
//!   [`keys::LAMBDA_OWNED`] and nothing else: `RegisterInstance` replaces all attributes, so
//!   whatever ECS or a user wrote must be sent back unchanged. An optional key
//!   ([`keys::OMITTABLE`]) that cannot be written within the limits is left out and reported in
//!   [`Merged::omitted`], so the lifecycle, health and weight are still written; only a set that
//!   does not fit without dropping a required or foreign key is refused.
//!
//! ```
//! use std::collections::HashMap;
//! use std::time::SystemTime;
//! use cloudmap_balancer::contract::{self, keys, InstanceAttributes, LbAttributes, LbHealth, LbState, Weight};
//!
//! // What ECS registered.
//! let existing = HashMap::from([
//!     (keys::AWS_INSTANCE_IPV4.to_owned(), "10.0.1.17".to_owned()),
//!     (keys::AWS_INSTANCE_PORT.to_owned(), "50051".to_owned()),
//!     (keys::AVAILABILITY_ZONE.to_owned(), "eu-central-1a".to_owned()),
//!     ("team".to_owned(), "payments".to_owned()),
//! ]);
//! let ours = LbAttributes {
//!     state: LbState::Running,
//!     health: LbHealth::Healthy,
//!     weight: Weight::saturating(400),
//!     cpu_units: Some(1024),
//!     memory_mib: Some(2048),
//!     capacity: Some("FARGATE".into()),
//!     load: None,
//!     task_arn: "arn:aws:ecs:eu-central-1:123456789012:task/prod/0123456789abcdef".into(),
//!     task_version: Some(3),
//!     updated_at: SystemTime::now(),
//!     running_since: None,
//!     lambda_owned: false,
//! };
//! let merged = contract::merge(&existing, &ours, &[])?.attributes;
//! assert_eq!(merged.as_map()["team"], "payments");
//!
//! let seen = InstanceAttributes::decode(&merged);
//! assert_eq!(seen.state, Some(LbState::Running));
//! assert_eq!(seen.zone.as_deref(), Some("eu-central-1a"));
//! # Ok::<(), contract::LimitError>(())
//! ```

mod decode;
mod encode;
pub mod keys;
mod time;
mod values;
pub mod xds;

#[cfg(test)]
mod tests;

pub use decode::{AttributeProblem, AttributeSource, InstanceAttributes, ProblemKind};
pub use encode::{
    AttributeSet, LbAttributes, LimitError, Merged, OmitReason, Omitted, limits, merge,
};
pub use time::{format_rfc3339, format_rfc3339_exact, parse_rfc3339};
pub use values::{LbHealth, LbState, Load, Weight};

/// The contract version this crate writes to `LB_SCHEMA`.
pub const SCHEMA_VERSION: u32 = 1;

/// The value of `LB_OWNER` on instances the sync Lambda registered itself.
pub const OWNER_LAMBDA: &str = "LAMBDA";
