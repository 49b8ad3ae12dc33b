//! Unary calls per second through the balanced channel, a plain tonic `Channel` to one server
//! and tonic's `Channel::balance_list`, in one run against the same real servers on loopback.

#![allow(clippy::unwrap_used, clippy::print_stderr, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use cloudmap_balancer::discovery::StaticSource;
use cloudmap_balancer::{Balancer, Options};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use support::{TestServer, call};
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

/// Calls in flight at once.
const CONCURRENCY: u64 = 32;

async fn run<T>(channel: T, calls: u64) -> Duration
where
    T: tonic::client::GrpcService<Body> + Clone + Send + 'static,
    T::Error: Into<tonic::codegen::StdError>,
    T::Future: Send,
    T::ResponseBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|n| {
            let mut client = HealthClient::new(channel.clone());
            let share = calls / CONCURRENCY + u64::from(n < calls % CONCURRENCY);
            tokio::spawn(async move {
                for _ in 0..share {
                    call(&mut client).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

fn unary(c: &mut Criterion) {
    let servers = [
        TestServer::start("eu-central-1a"),
        TestServer::start("eu-central-1a"),
        TestServer::start("eu-central-1a"),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let endpoint = |s: &TestServer| Endpoint::from_shared(format!("http://{}", s.addr)).unwrap();
    let (plain, listed, ours, ours_one) = runtime.block_on(async {
        let plain: Channel = endpoint(&servers[0]).connect().await.unwrap();
        let listed = Channel::balance_list(servers.iter().map(endpoint));
        let source = StaticSource::new(
            servers
                .iter()
                .enumerate()
                .map(|(n, s)| s.instance(&format!("task-{n}")))
                .collect(),
        );
        let ours = Balancer::builder_with_source(source, "bench", "health")
            .local_zone("eu-central-1a")
            .options(Options::default())
            .build()
            .unwrap();
        ours.ready().await.unwrap();
        let one = Balancer::builder_with_source(
            StaticSource::new(vec![servers[0].instance("task-0")]),
            "bench",
            "health-one",
        )
        .local_zone("eu-central-1a")
        .build()
        .unwrap();
        one.ready().await.unwrap();
        // Warm every connection.
        run(plain.clone(), 1_000).await;
        run(listed.clone(), 1_000).await;
        run(ours.channel(), 1_000).await;
        run(one.channel(), 1_000).await;
        (plain, listed, ours, one)
    });

    // The machine is shared and its load drifts over minutes, which criterion's one-after-
    // another groups turn into differences between variants. Interleaved rounds give every
    // variant the same conditions; the medians and their ratios are the comparison.
    let rounds = 15;
    let calls = 20_000;
    let mut rates: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        let elapsed = runtime.block_on(async {
            [
                run(plain.clone(), calls).await,
                run(listed.clone(), calls).await,
                run(ours.channel(), calls).await,
                run(ours_one.channel(), calls).await,
            ]
        });
        for (rate, elapsed) in rates.iter_mut().zip(elapsed) {
            rate.push(calls as f64 / elapsed.as_secs_f64());
        }
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let [plain_rate, listed_rate, ours_rate, one_rate] = rates.each_mut().map(median);
    eprintln!(
        "interleaved medians over {rounds} rounds of {calls} calls ({CONCURRENCY} in flight): \
         plain {plain_rate:.0}/s, balance_list {listed_rate:.0}/s, balancer {ours_rate:.0}/s, \
         balancer on one server {one_rate:.0}/s; balancer/plain {:.3}, balancer/balance_list \
         {:.3}, one-server balancer/plain {:.3}",
        ours_rate / plain_rate,
        ours_rate / listed_rate,
        one_rate / plain_rate,
    );

    let mut group = c.benchmark_group("unary");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("plain-channel-1-server", |b| {
        b.iter_custom(|calls| runtime.block_on(run(plain.clone(), calls)));
    });
    group.bench_function("balance-list-3-servers", |b| {
        b.iter_custom(|calls| runtime.block_on(run(listed.clone(), calls)));
    });
    group.bench_function("balancer-3-servers", |b| {
        let channel = ours.channel();
        b.iter_custom(|calls| runtime.block_on(run(channel.clone(), calls)));
    });
    group.bench_function("balancer-1-server", |b| {
        let channel = ours_one.channel();
        b.iter_custom(|calls| runtime.block_on(run(channel.clone(), calls)));
    });
    group.finish();
    let stats = ours.stats();
    eprintln!(
        "balancer: {} picks, {} failed, per instance {:?}",
        stats.calls.picks(),
        stats.calls.failed,
        stats.instances.iter().map(|i| i.picks).collect::<Vec<_>>()
    );
    drop(servers);
}

criterion_group!(benches, unary);
criterion_main!(benches);
