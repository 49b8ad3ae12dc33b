//! The demo of cloudmap-balancer: the demo fleet on this machine, traffic through the balancer
//! and a tally of which task and zone served it.
//!
//! Three programs use it:
//!
//! - `local-demo` runs the whole system on one machine with no AWS account: moto for Cloud Map and
//!   ECS, real `demo-server` processes in three zones ([`fleet`]), the real sync Lambda under
//!   cargo-lambda's emulator, and a client built on this crate's [`traffic`]; beside it, gRPC's
//!   Python client through the xDS control plane ([`xds`]). It is the README's first command
//!   (`scripts/demo`) and the project's end-to-end test.
//! - `compare` runs the same fleet through the balancer and through what users would pick
//!   instead (tonic's `balance_list`, an HAProxy hop; with `--grpcio`, grpcio through the xDS
//!   server and with round robin), side by side (`scripts/compare`).
//! - `demo-client` is the client task of the SAM template's demo stack: it calls the demo service
//!   through the balancer forever and logs, every interval, how its calls were spread.

mod error;
pub mod fleet;
pub mod progress;
pub mod traffic;
pub mod xds;

pub use error::Error;
