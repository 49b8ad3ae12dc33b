//! Instructions per unary call, for `scripts/callgrind-calls`: N sequential calls through a
//! plain tonic `Channel`, or through the balancer over the same single server, in one process
//! (the server's work is counted too, the same in both). Run under
//! `valgrind --tool=callgrind` at two values of N; the difference divided by the difference in
//! calls is the cost of one call, set-up and warm-up cancelled out.
//!
//! ```text
//! instructions plain|balancer|balancer-no-health|balancer-bare CALLS
//! ```
//!
//! `balancer` has the defaults (health watch and outlier detection on); `balancer-no-health`
//! turns the health watch off; `balancer-bare` turns outlier detection off as well.

#![allow(clippy::unwrap_used, clippy::print_stderr, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use cloudmap_balancer::discovery::StaticSource;
use cloudmap_balancer::{Balancer, Options};
use support::{TestServer, call};
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_default();
    let calls: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let server = TestServer::start("eu-central-1a");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match variant.as_str() {
            "plain" => {
                let channel = Endpoint::from_shared(format!("http://{}", server.addr))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut client = HealthClient::new(channel);
                for _ in 0..100 + calls {
                    call(&mut client).await.unwrap();
                }
            }
            "balancer" | "balancer-no-health" | "balancer-bare" => {
                let mut options = Options::default();
                if variant != "balancer" {
                    options.health_check.enabled = false;
                }
                if variant == "balancer-bare" {
                    options.outlier = cloudmap_balancer::outlier::OutlierOptions::disabled();
                }
                let balancer = Balancer::builder_with_source(
                    StaticSource::new(vec![server.instance("task-0")]),
                    "bench",
                    "health",
                )
                .local_zone("eu-central-1a")
                .options(options)
                .build()
                .unwrap();
                balancer.ready().await.unwrap();
                let mut client = HealthClient::new(balancer.channel());
                for _ in 0..100 + calls {
                    call(&mut client).await.unwrap();
                }
            }
            other => panic!("unknown variant {other:?}"),
        }
    });
    eprintln!("{variant}: {calls} calls");
}
