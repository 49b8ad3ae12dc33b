//! The resources a client gets: pure functions of a service's snapshot and the client's zone.
//!
//! - [`assign`] turns a snapshot's instances into an [`Assignment`]: one locality per task, its
//!   weight the share of calls the crate's own [`Picker`](cloudmap_balancer::picker::Picker)
//!   gives that task for a caller in the client's zone, with the callers' spread over zones
//!   (Envoy's zone-aware routing, computed here because gRPC clients have none);
//! - [`encode`] turns names and an assignment into Envoy's protos: the Listener (an API listener
//!   with an inline route to the Cluster), the Cluster (EDS over ADS, outlier detection, the
//!   load-balancing policy) and the ClusterLoadAssignment.
//!
//! Nothing here does I/O or reads a clock: the caller passes `now`.

mod assignment;
pub mod encode;

pub use assignment::{
    Assignment, AssignmentConfig, ClientZone, EndpointHealth, LocalityAssignment,
    METADATA_NAMESPACE, WEIGHT_TOTAL, assign, instances,
};
pub use encode::{ClusterPolicy, LbPolicy, OutlierPolicy};
