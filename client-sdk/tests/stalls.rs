//! The latency-aware choice with a client whose runtime thread stalls, through real tonic
//! servers on 127.0.0.1:0. A test binary of its own: the other component tests' servers and
//! callers, running in parallel with it, would load the machine and make its servers unequal
//! for real.

#![cfg(feature = "tonic")]
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use cloudmap_balancer::contract::Weight;
use cloudmap_balancer::discovery::StaticSource;
use cloudmap_balancer::{Balancer, Options};
use support::{TestServer, call};
use tonic_health::pb::health_client::HealthClient;

const CLIENTS: usize = 8;

fn balancer(source: &Arc<StaticSource>, options: Options) -> Balancer {
    Balancer::builder_with_source(Arc::clone(source), "test", "health")
        .local_zone("a")
        .options(options)
        .rng_seed(5)
        .build()
        .unwrap()
}

/// `clients` concurrent callers make `total` calls in all; returns the failures.
async fn run(balancer: &Balancer, clients: usize, total: u64) -> u64 {
    let per_client = total / clients as u64;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let mut client = HealthClient::new(balancer.channel());
            tokio::spawn(async move {
                let mut failures = 0;
                for _ in 0..per_client {
                    if call(&mut client).await.is_err() {
                        failures += 1;
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = 0;
    for task in tasks {
        failures += task.await.unwrap();
    }
    failures
}

/// Blocks the thread of the runtime it is started on for 5 to 30 ms, at seeded moments 20 to
/// 150 ms apart: the stalls of a CFS-throttled task at its CPU limit, or of a blocking call on
/// the client's runtime.
struct Stalls {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<u32>,
}

impl Stalls {
    fn start(seed: u64) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let running = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut stalls = 0;
            while !running.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(rng.u64(20..=150))).await;
                std::thread::sleep(Duration::from_millis(rng.u64(5..=30)));
                stalls += 1;
            }
            stalls
        });
        Self { stop, task }
    }

    /// Stops; returns how many stalls there were.
    async fn stop(self) -> u32 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_stalling_client_keeps_the_weight_shares_and_still_avoids_a_slow_instance() {
    // Zone a's three instances, weighted 1:2:3, answer at once; the client's one runtime
    // thread stalls for 5 to 30 ms every 20 to 150 ms. A balancer without the latency-aware
    // choice takes turns with the default one, 1,200 calls at a time, under the same stalls.
    // (Real time: the servers are real, and paused time would jump while the client waits on
    // them.)
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start("a")).collect();
    let source = Arc::new(StaticSource::new(
        servers
            .iter()
            .enumerate()
            .map(|(n, s)| {
                s.instance(&format!("task-{n}"))
                    .with_weight(Weight::saturating(100 * (n as u32 + 1)))
            })
            .collect(),
    ));
    let aware = balancer(&source, Options::default());
    let mut options = Options::default();
    options.latency_aware = None;
    let blind = balancer(&source, options);
    for balancer in [&aware, &blind] {
        balancer.ready().await.unwrap();
        assert_eq!(run(balancer, CLIENTS, 800).await, 0);
    }
    let stalls = Stalls::start(21);
    let turns = || async {
        let mut served = [vec![0; 3], vec![0; 3]];
        for _ in 0..5 {
            for (n, balancer) in [&aware, &blind].into_iter().enumerate() {
                let before: Vec<u64> = servers.iter().map(TestServer::served).collect();
                assert_eq!(run(balancer, CLIENTS, 1_200).await, 0);
                for (total, (s, b)) in served[n].iter_mut().zip(servers.iter().zip(&before)) {
                    *total += s.served() - b;
                }
            }
        }
        served
    };
    let [even, even_blind] = turns().await;
    let estimates: Vec<_> = aware.stats().instances.iter().map(|i| i.latency).collect();
    eprintln!(
        "equally fast: latency-aware {even:?}, in-flight alone {even_blind:?}; latency estimates {estimates:?}"
    );
    support::assert_shares(
        "equally fast, stalling client",
        &even,
        &even_blind,
        &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0],
    );

    // The middle one turns 20 ms slow: it drops below 2 % of the calls, stalls or not.
    servers[1].set_delay(Duration::from_millis(20));
    let [slow, slow_blind] = turns().await;
    let stalled = stalls.stop().await;
    let estimates: Vec<_> = aware.stats().instances.iter().map(|i| i.latency).collect();
    eprintln!(
        "task-1 20 ms slower: latency-aware {slow:?}, in-flight alone {slow_blind:?}; {stalled} \
         stalls in all; latency estimates {estimates:?}"
    );
    assert!(stalled >= 5, "{stalled} stalls: the injector ran");
    // What it keeps: a probe every few hundred milliseconds, and the calls that its cost, (in
    // flight + 1) × latency per unit of weight, wins while the others are loaded. A machine busy
    // enough to make the fast servers' own answers take milliseconds adds them to every
    // estimate; the cost takes latency up to the noise level off both, so 20 ms slower stays
    // many times theirs. The estimates say how far the machine went.
    assert!(
        slow[1] < 120,
        "{slow:?}: 2 % of 6,000 is 120 (latency estimates {estimates:?})"
    );
}
