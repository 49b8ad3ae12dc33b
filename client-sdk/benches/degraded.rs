//! One of six instances degraded: every 5th call failing `UNAVAILABLE`, then 20 ms slower. Side
//! by side in one run, interleaved in rounds over the same real servers on loopback: our
//! balancer with defaults, ours with a retry policy, tonic's `Channel::balance_list`. Reports
//! failed calls, p50 and p99 latency and calls per second (stderr, one table per scenario).
//!
//! `cargo bench -p cloudmap-balancer --bench degraded` (about 90 s; `DEGRADED_ROUNDS`
//! and `DEGRADED_CALLS` change the size).

#![allow(clippy::unwrap_used, clippy::print_stderr, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use cloudmap_balancer::discovery::StaticSource;
use cloudmap_balancer::retry::RetryPolicy;
use cloudmap_balancer::{Balancer, Options};
use support::TestServer;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Calls in flight at once.
const CONCURRENCY: u64 = 32;

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: u64,
    elapsed: Duration,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        self.elapsed += other.elapsed;
    }

    fn quantile(&mut self, q: f64) -> Duration {
        self.latencies.sort();
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

async fn run<T>(channel: T, calls: u64) -> Tally
where
    T: tonic::client::GrpcService<Body> + Clone + Send + 'static,
    T::Error: Into<tonic::codegen::StdError>,
    T::Future: Send,
    T::ResponseBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|n| {
            let mut client = HealthClient::new(channel.clone());
            let share = calls / CONCURRENCY + u64::from(n < calls % CONCURRENCY);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for _ in 0..share {
                    let t = Instant::now();
                    let request = HealthCheckRequest {
                        service: String::new(),
                    };
                    match client.check(request).await {
                        Ok(_) => tally.latencies.push(t.elapsed()),
                        Err(_) => tally.failed += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.absorb(task.await.unwrap());
    }
    tally.elapsed = started.elapsed();
    tally
}

fn main() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // 20 rounds: about 30 s of calls per scenario, so outlier detection (10 s interval) acts.
    let rounds = env("DEGRADED_ROUNDS", 20);
    let calls = env("DEGRADED_CALLS", 10_000);
    let servers: Vec<TestServer> = (0..6).map(|_| TestServer::start("eu-central-1a")).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let instances = || {
        StaticSource::new(
            servers
                .iter()
                .enumerate()
                .map(|(n, s)| s.instance(&format!("task-{n}")))
                .collect(),
        )
    };
    let names = [
        "balancer, defaults",
        "balancer, retry policy",
        "balance_list",
    ];
    for (scenario, degrade) in [
        ("every 5th call on one instance fails UNAVAILABLE", 0),
        ("one instance 20 ms slower", 1),
    ] {
        for server in &servers {
            server.fail_every(0);
            server.set_delay(Duration::ZERO);
        }
        // Fresh balancers per scenario: no ejection carried over.
        let (ours, retrying, listed) = runtime.block_on(async {
            let ours = Balancer::builder_with_source(instances(), "bench", "health")
                .local_zone("eu-central-1a")
                .build()
                .unwrap();
            let mut options = Options::default();
            let mut policy = RetryPolicy::default();
            policy.initial_backoff = Duration::from_millis(5);
            policy.max_backoff = Duration::from_millis(50);
            options.retry.policy = Some(policy);
            let retrying = Balancer::builder_with_source(instances(), "bench", "health-retry")
                .local_zone("eu-central-1a")
                .options(options)
                .build()
                .unwrap();
            ours.ready().await.unwrap();
            retrying.ready().await.unwrap();
            let listed = Channel::balance_list(
                servers
                    .iter()
                    .map(|s| Endpoint::from_shared(format!("http://{}", s.addr)).unwrap()),
            );
            // Warm every connection before degrading.
            run(ours.channel(), 2_000).await;
            run(retrying.channel(), 2_000).await;
            run(listed.clone(), 2_000).await;
            (ours, retrying, listed)
        });
        if degrade == 0 {
            servers[0].fail_every(5);
        } else {
            servers[0].set_delay(Duration::from_millis(20));
        }
        let mut tallies: [Tally; 3] = Default::default();
        for _ in 0..rounds {
            let round = runtime.block_on(async {
                [
                    run(ours.channel(), calls).await,
                    run(retrying.channel(), calls).await,
                    run(listed.clone(), calls).await,
                ]
            });
            for (tally, round) in tallies.iter_mut().zip(round) {
                tally.absorb(round);
            }
        }
        eprintln!(
            "\n{scenario} ({rounds} interleaved rounds of {calls} calls, {CONCURRENCY} in flight):"
        );
        eprintln!("| variant | failed calls | p50 | p99 | calls/s |");
        eprintln!("|---|---|---|---|---|");
        for (name, tally) in names.iter().zip(tallies.iter_mut()) {
            let total = rounds * calls;
            let rate = total as f64 / tally.elapsed.as_secs_f64();
            let (p50, p99) = (tally.quantile(0.5), tally.quantile(0.99));
            eprintln!(
                "| {name} | {} of {total} ({:.2} %) | {:.2} ms | {:.2} ms | {rate:.0} |",
                tally.failed,
                100.0 * tally.failed as f64 / total as f64,
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
            );
        }
        let stats = ours.stats();
        eprintln!(
            "balancer (defaults): ejections {:?}; retry policy: {} retries, {} throttled",
            stats.calls.ejections_by_reason,
            retrying.stats().calls.retries,
            retrying.stats().calls.retries_throttled,
        );
    }
    drop(servers);
}
