//! What the xDS server (`cloudmap-xds`) and the crate's xDS source agree on, beyond Envoy's
//! protos: how a Rust client asks for a service's instances, and where each endpoint carries
//! its instance.
//!
//! gRPC clients ask for `SERVICE.NAMESPACE` and get the server's picks for their zone. A Rust
//! client makes its own picks, so it asks for the ClusterLoadAssignment
//! [`INSTANCES_PREFIX`]`SERVICE.NAMESPACE`: every instance discovery lists (starting, stopped,
//! draining and weight-0 ones too), zone-agnostic, each endpoint carrying its instance in its
//! metadata under [`METADATA_NAMESPACE`] as string values: the Cloud Map attributes
//! [`Instance::attributes`](crate::Instance::attributes) writes, plus [`INSTANCE_ID`] and
//! [`CLOUD_MAP_HEALTH`]. Reading them back with
//! [`Instance::from_attributes`](crate::Instance::from_attributes) gives the same instance.

/// The ClusterLoadAssignment name prefix of a service's instances: `instances/echo.prod.internal`.
/// (`/` is in no Cloud Map name, so it cannot clash with a service.)
pub const INSTANCES_PREFIX: &str = "instances/";

/// The `filter_metadata` namespace of every endpoint's contract values.
pub const METADATA_NAMESPACE: &str = "cloudmap";

/// The metadata key of the Cloud Map instance ID.
pub const INSTANCE_ID: &str = "INSTANCE_ID";

/// The metadata key of Cloud Map's health status (`HEALTHY`, `UNHEALTHY`, `UNKNOWN`).
pub const CLOUD_MAP_HEALTH: &str = "CLOUD_MAP_HEALTH";
