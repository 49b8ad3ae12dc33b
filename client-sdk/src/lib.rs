//! Per-call gRPC balancing for services on ECS, driven by AWS Cloud Map.
//!
//! The [`contract`] module is the interface between the sync Lambda, which writes lifecycle,
//! health, capacity and load onto each task's Cloud Map instance, and the client, which reads them.
//! It has no optional dependencies, so a crate that only needs the contract can depend on this
//! crate with `default-features = false`.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `aws` | yes (via `tonic`) | the Cloud Map client: the [`aws`] module |
//! | `tonic` | yes | the balanced tonic channel |

pub mod contract;

#[cfg(feature = "aws")]
pub mod aws;
