//! The sync Lambda: keeps the Cloud Map instances of ECS tasks annotated with the balancing
//! attributes of the [contract](cloudmap_balancer::contract) (lifecycle, health, weight, size,
//! capacity, load), from ECS task state change events and a periodic reconciliation.
//!
//! The crate reads as its folders:
//!
//! | module | what it is |
//! |---|---|
//! | [`events`] | events in: payload → [`Invocation`](events::Invocation), lenient parsing |
//! | [`task`] | what is known about a task, from an event or `DescribeTasks` |
//! | [`decide`] | pure decisions: event/description + attributes → write, deregister or skip; the ordering design |
//! | [`ports`] | the narrow traits over Cloud Map, ECS, CloudWatch, EC2 and the clock |
//! | [`aws`] | the traits on the AWS SDK |
//! | [`handler`] | one invocation: the event flow, the edge (retryable vs acknowledged) |
//! | [`reconcile`] | the scheduled comparison of instances with tasks |
//! | [`observe`] | the report, JSON logs, EMF metrics |
//! | [`config`], [`error`] | environment configuration; the error type |
//!
//! Wiring (what `main.rs` does):
//!
//! ```no_run
//! use cloudmap_sync::{Config, Handler, SystemClock, aws::AwsClients};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_env()?;
//! let sdk = aws_config::load_from_env().await;
//! let aws = AwsClients::new(&sdk, &config);
//! let handler = Handler::new(
//!     config,
//!     aws.cloudmap,
//!     aws.ecs,
//!     aws.cloudwatch,
//!     SystemClock,
//!     aws.ec2,
//! );
//! let payload = serde_json::json!({"action": "reconcile"});
//! let response = handler.invoke(payload, std::io::stdout()).await?;
//! # Ok(()) }
//! ```

pub mod aws;
pub mod config;
pub mod decide;
pub mod error;
pub mod events;
pub mod handler;
pub mod observe;
pub mod ports;
pub mod reconcile;
pub mod task;

pub use config::Config;
pub use error::{ErrorKind, SyncError};
pub use handler::Handler;
pub use ports::{Clock, SystemClock};
