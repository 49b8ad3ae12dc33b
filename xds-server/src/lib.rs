//! An xDS control plane for AWS Cloud Map: every gRPC client (grpc-go, grpc-java, C-core and so
//! Python, Ruby, PHP and C++, `@grpc/grpc-js-xds`) and Envoy get the same zone-aware, weighted,
//! drain-aware split of calls over an ECS service's tasks as the `cloudmap-balancer` crate
//! computes, with no sidecar and no hop.
//!
//! # What a client gets
//!
//! A client names a service as `xds:///SERVICE.NAMESPACE` (see [`naming`]; aliases map other
//! names). Over one ADS stream (state of the world, v3, gRFC A27) it asks for:
//!
//! - the **Listener** `SERVICE.NAMESPACE`: an API listener (HttpConnectionManager with an
//!   inline route to the Cluster and the router filter);
//! - the **Cluster** `SERVICE.NAMESPACE`: EDS over ADS, round robin over localities by weight,
//!   outlier detection (A50, failure percentage);
//! - the **ClusterLoadAssignment** `SERVICE.NAMESPACE`: one locality per task (`zone` = its AZ
//!   ID where known, else its zone name; `sub_zone` = the instance ID), weighted by the share of
//!   calls the crate's [`Picker`](cloudmap_balancer::picker::Picker) gives that task for a caller
//!   in the client's zone ([`resources::assign`]).
//!
//! **Zone affinity is computed here**, per client zone, because gRPC clients have none: a client
//! whose bootstrap names its zone (`node.locality.zone`, a zone name or an AZ ID) gets Envoy's
//! zone-aware routing with the callers' spread counted from the streams connected to this
//! replica; a client without one gets the split by capacity. Answers are cached per (service,
//! zone), not per client. `DRAINING` tasks are sent `DRAINING`, unhealthy ones `UNHEALTHY`;
//! `STARTING`, `STOPPED` and weight-0 tasks are left out. Every contract value rides in the
//! endpoint's metadata under [`resources::METADATA_NAMESPACE`].
//!
//! # Deploying
//!
//! `xds-server/Dockerfile` builds the image (`serve` by default). The repository's SAM template
//! runs it with `XdsServer=on`: two Fargate tasks in a cluster of yours, registered by ECS as
//! `xds` in a Cloud Map private DNS namespace, so clients dial `xds.NAMESPACE:18000`. A client
//! task writes its bootstrap with the same image (`bootstrap --server xds.NAMESPACE:18000
//! --output /bootstrap/xds.json`) in an init container and sets `GRPC_XDS_BOOTSTRAP`. The task
//! role needs only `servicediscovery:DiscoverInstances` and
//! `servicediscovery:DiscoverInstancesRevision`; the server also dials every task it serves, on
//! its service port, for gRPC health. README "Deploying with SAM" has the parameters and the
//! client task definition.
//!
//! # Modules
//!
//! - [`naming`]: resource names ↔ Cloud Map services.
//! - [`resources`]: the resources, pure functions of a snapshot and a client zone.
//! - [`version`]: versions as content hashes, equal across replicas.
//! - [`ack`]: ACK and NACK bookkeeping per stream and type.
//! - [`services`]: one Cloud Map poller per subscribed service, the callers' spread, cached
//!   answers.
//! - [`health`]: the server's own gRPC health watch on every endpoint, so a task that starts
//!   draining is served `DRAINING` before Cloud Map says so.
//! - [`server`]: the tonic ADS service (wiring only).
//! - [`config`], [`bootstrap`]: the binary's configuration, and the gRPC bootstrap it writes.

pub mod ack;
pub mod bootstrap;
pub mod config;
mod error;
pub mod health;
pub mod naming;
pub mod resources;
pub mod server;
pub mod services;
pub mod version;

pub use error::{Error, NameError};
pub use server::XdsServer;
