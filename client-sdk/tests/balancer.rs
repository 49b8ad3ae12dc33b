//! The balancer through real tonic servers on 127.0.0.1:0, tagged with zones: distribution,
//! ejection of killed servers, draining, removal after in-flight calls, adaptive spill.
//!
//! Discovery here is a [`StaticSource`] behind the same poller Cloud Map uses
//! (`tests/discovery.rs` runs against moto).

#![cfg(feature = "tonic")]
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloudmap_balancer::contract::{LbState, Weight};
use cloudmap_balancer::discovery::StaticSource;
use cloudmap_balancer::picker::Exclusion;
use cloudmap_balancer::{AdaptiveOptions, Balancer, Options, ZoneMode};
use support::{TestServer, call};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn balancer(source: &Arc<StaticSource>, zone: &str, options: Options) -> Balancer {
    Balancer::builder_with_source(Arc::clone(source), "test", "health")
        .local_zone(zone)
        .options(options)
        .rng_seed(11)
        .build()
        .unwrap()
}

/// Runs `calls` health checks on each of `clients` concurrent clients; returns failures per
/// client.
async fn run_clients(balancer: &Balancer, clients: usize, calls: usize) -> Vec<usize> {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let mut client = HealthClient::new(balancer.channel());
            tokio::spawn(async move {
                let mut failures = 0;
                for _ in 0..calls {
                    if call(&mut client).await.is_err() {
                        failures += 1;
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        failures.push(task.await.unwrap());
    }
    failures
}

fn share(part: u64, total: u64) -> f64 {
    part as f64 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_example_through_real_servers() {
    // Upstream capacity 25/50/25 % over zones a/b/c; callers 40/40/20 %; the caller is in a.
    let servers = [
        TestServer::start("a"),
        TestServer::start("b"),
        TestServer::start("b"),
        TestServer::start("c"),
    ];
    let source = Arc::new(StaticSource::new(
        servers
            .iter()
            .enumerate()
            .map(|(n, s)| s.instance(&format!("task-{n}")))
            .collect(),
    ));
    let callers = StaticSource::new(
        [("a", 4), ("b", 4), ("c", 2)]
            .into_iter()
            .flat_map(|(zone, n)| {
                (0..n).map(move |i| {
                    cloudmap_balancer::Instance::new(
                        format!("caller-{zone}-{i}"),
                        "10.9.9.9:1".parse().unwrap(),
                    )
                    .with_zone(zone)
                })
            })
            .collect(),
    );
    let balancer = Balancer::builder_with_source(Arc::clone(&source), "test", "health")
        .local_zone("a")
        .caller_source(callers, "test", "callers")
        .rng_seed(3)
        .build()
        .unwrap();
    balancer.refresh().await.unwrap();
    assert!((balancer.stats().local_share - 0.625).abs() < 1e-9);

    let failures = run_clients(&balancer, 4, 1_500).await;
    assert_eq!(failures, vec![0; 4]);

    let served: Vec<u64> = servers.iter().map(TestServer::served).collect();
    let total: u64 = served.iter().sum();
    assert_eq!(total, 6_000);
    let (a, b, c) = (served[0], served[1] + served[2], served[3]);
    // 6,000 calls: one standard deviation of the local share is 0.6 points.
    assert!((share(a, total) - 0.625).abs() < 0.03, "{served:?}");
    assert!((share(b, total) - 0.25).abs() < 0.03, "{served:?}");
    assert!((share(c, total) - 0.125).abs() < 0.03, "{served:?}");
    assert!(
        (share(b, b + c) - 2.0 / 3.0).abs() < 0.05,
        "spill 2:1, {served:?}"
    );
    // Within zone b both instances share the work.
    assert!((share(served[1], b) - 0.5).abs() < 0.07, "{served:?}");

    // The balancer's own statistics agree with what the servers saw.
    let stats = balancer.stats();
    assert_eq!(stats.calls.picks(), 6_000);
    assert_eq!(stats.calls.local, a);
    assert_eq!(stats.calls.remote, b + c);
    assert_eq!(stats.calls.spilled, b + c);
    for (instance, server) in stats.instances.iter().zip(&served) {
        assert_eq!(instance.picks, *server);
    }
    let zone_b = stats
        .zones
        .iter()
        .find(|z| z.zone.as_deref() == Some("b"))
        .unwrap();
    assert_eq!(zone_b.picks, b);
    assert!((zone_b.spill_share - 2.0 / 3.0).abs() < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_set_the_shares() {
    let servers = [TestServer::start("a"), TestServer::start("a")];
    let source = Arc::new(StaticSource::new(vec![
        servers[0]
            .instance("light")
            .with_weight(Weight::saturating(100)),
        servers[1]
            .instance("heavy")
            .with_weight(Weight::saturating(300)),
    ]));
    let balancer = balancer(&source, "a", Options::default());
    balancer.ready().await.unwrap();
    // One client, one call at a time: P2C has no load to compare, so weights alone decide.
    let failures = run_clients(&balancer, 1, 4_000).await;
    assert_eq!(failures, vec![0]);
    let light = share(servers[0].served(), 4_000);
    assert!((light - 0.25).abs() < 0.025, "light got {light}");
}

/// Zones a (weights 1:2:3), b (2:2) and c (2), instances named `task-N` in that order.
const WEIGHTED: [(&str, u32); 6] = [
    ("a", 100),
    ("a", 200),
    ("a", 300),
    ("b", 200),
    ("b", 200),
    ("c", 200),
];

/// What weight × load promises each instance under `mode` with the caller in zone a and
/// every instance equally loaded: its zone's share of the calls, split by weight.
fn promised(mode: ZoneMode) -> Vec<f64> {
    let zone_weight = |zone: &str| -> f64 {
        WEIGHTED
            .iter()
            .filter(|(z, _)| *z == zone)
            .map(|&(_, w)| f64::from(w))
            .sum()
    };
    let total: f64 = WEIGHTED.iter().map(|&(_, w)| f64::from(w)).sum();
    let remote = total - zone_weight("a");
    let local = match mode {
        ZoneMode::Off => zone_weight("a") / total,
        ZoneMode::Fixed { local_percent } => f64::from(local_percent) / 100.0,
        // No caller fleet and nothing slow: all local but the spill controller's probes.
        _ => 1.0 - AdaptiveOptions::default().probe_share,
    };
    WEIGHTED
        .iter()
        .map(|&(zone, w)| {
            let zone_share = match (zone, mode) {
                (_, ZoneMode::Off) => zone_weight(zone) / total,
                ("a", _) => local,
                _ => (1.0 - local) * zone_weight(zone) / remote,
            };
            zone_share * f64::from(w) / zone_weight(zone)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_answer_at_once_get_their_weight_share_in_every_zone_mode() {
    // Servers that answer in microseconds: their latencies differ only by noise (scheduling of
    // their threads and the client's), which must not move calls between them. 8 callers,
    // 6,000 calls per mode: one standard deviation of a share is under 0.7 points. A balancer
    // without the latency-aware choice takes turns with the default one, 1,200 calls at a
    // time, as the reference of what in-flight counts give on this machine.
    let servers: Vec<TestServer> = WEIGHTED
        .iter()
        .map(|(zone, _)| TestServer::start(zone))
        .collect();
    let source = Arc::new(StaticSource::new(
        servers
            .iter()
            .zip(WEIGHTED)
            .enumerate()
            .map(|(n, (s, (_, w)))| {
                s.instance(&format!("task-{n}"))
                    .with_weight(Weight::saturating(w))
            })
            .collect(),
    ));
    for mode in [
        ZoneMode::Adaptive,
        ZoneMode::Fixed { local_percent: 50 },
        ZoneMode::Off,
    ] {
        let mut options = Options::default();
        options.zone_mode = mode;
        let aware = balancer(&source, "a", options.clone());
        options.latency_aware = None;
        let blind = balancer(&source, "a", options);
        for balancer in [&aware, &blind] {
            balancer.ready().await.unwrap();
            // Warm: connections open and estimates settled, as in a running service.
            assert_eq!(run_clients(balancer, 8, 100).await, vec![0; 8]);
        }
        let mut served = [vec![0; WEIGHTED.len()], vec![0; WEIGHTED.len()]];
        for _ in 0..5 {
            for (n, balancer) in [&aware, &blind].into_iter().enumerate() {
                let before: Vec<u64> = servers.iter().map(TestServer::served).collect();
                assert_eq!(run_clients(balancer, 8, 150).await, vec![0; 8]);
                for (total, (s, b)) in served[n].iter_mut().zip(servers.iter().zip(&before)) {
                    *total += s.served() - b;
                }
            }
        }
        let latencies: Vec<_> = aware.stats().instances.iter().map(|i| i.latency).collect();
        eprintln!(
            "{mode:?}: latency-aware {:?}, in-flight alone {:?}, promised {:?}; latency estimates {latencies:?}",
            served[0],
            served[1],
            promised(mode)
                .iter()
                .map(|p| format!("{:.1} %", p * 100.0))
                .collect::<Vec<_>>()
        );
        assert_eq!(served[0].iter().sum::<u64>(), 6_000);
        support::assert_shares(
            &format!("{mode:?}"),
            &served[0],
            &served[1],
            &promised(mode),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_costs_at_most_one_call_per_client() {
    let mut servers = [
        TestServer::start("a"),
        TestServer::start("a"),
        TestServer::start("a"),
    ];
    let source = Arc::new(StaticSource::new(
        servers
            .iter()
            .enumerate()
            .map(|(n, s)| s.instance(&format!("task-{n}")))
            .collect(),
    ));
    // Four clients, each with a balancer (and so connections) of its own, as separate
    // processes would have.
    let balancers: Vec<Balancer> = (0..4)
        .map(|_| balancer(&source, "a", Options::default()))
        .collect();
    let stop = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for balancer in &balancers {
        balancer.ready().await.unwrap();
        let mut client = HealthClient::new(balancer.channel());
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while stop.load(Ordering::SeqCst) == 0 {
                match call(&mut client).await {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(servers[0].served() > 0);
    servers[0].kill();
    // The instance stays listed (Cloud Map has not caught up): ejections expire and are
    // renewed, each time without a failed call.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(1, Ordering::SeqCst);
    for task in tasks {
        let (ok, failed) = task.await.unwrap();
        assert!(ok > 100, "{ok} calls succeeded");
        assert!(failed <= 1, "{failed} failed calls for one client");
    }
    for balancer in &balancers {
        let stats = balancer.stats();
        assert!(stats.calls.ejections >= 1, "{:?}", stats.calls);
        assert!(stats.calls.connect_failures >= 1);
        assert!(stats.calls.transparent_retries >= 1);
        let dead = &stats.instances[0];
        assert_eq!(dead.instance.id, "task-0");
        assert!(dead.connect_failures >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_drained_first_costs_nothing() {
    let mut servers = [TestServer::start("a"), TestServer::start("a")];
    let source = Arc::new(StaticSource::new(vec![
        servers[0].instance("task-0"),
        servers[1].instance("task-1"),
    ]));
    let balancer = balancer(&source, "a", Options::default());
    balancer.ready().await.unwrap();
    assert_eq!(run_clients(&balancer, 2, 200).await, vec![0, 0]);
    assert!(servers[0].served() > 0);

    // The sync Lambda marks the task DRAINING; the next listing carries it.
    source.update(|instances| instances[0].state = Some(LbState::Draining));
    balancer.refresh().await.unwrap();
    let stats = balancer.stats();
    assert_eq!(stats.instances[0].exclusion, Some(Exclusion::Draining));
    assert_eq!(stats.instances[0].in_flight, 0);
    let served_before = servers[0].served();

    servers[0].kill();
    let failures = run_clients(&balancer, 2, 300).await;
    assert_eq!(failures, vec![0, 0]);
    assert_eq!(servers[0].served(), served_before);
    assert_eq!(balancer.stats().calls.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_instance_is_repicked_transparently() {
    let live = TestServer::start("a");
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = closed.local_addr().unwrap();
    drop(closed);
    let source = Arc::new(StaticSource::new(vec![
        cloudmap_balancer::Instance::new("dead", dead_addr).with_zone("a"),
        live.instance("live"),
    ]));
    let balancer = balancer(&source, "a", Options::default());
    balancer.ready().await.unwrap();
    assert_eq!(run_clients(&balancer, 2, 200).await, vec![0, 0]);
    assert_eq!(live.served(), 400);
    let stats = balancer.stats();
    assert!(stats.calls.transparent_retries >= 1);
    assert!(stats.instances[0].ejected_for.is_some());
    assert_eq!(stats.instances[0].exclusion, Some(Exclusion::Ejected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_instance_closes_after_its_last_call() {
    let servers = [TestServer::start("a"), TestServer::start("a")];
    servers[0].set_delay(Duration::from_millis(700));
    let source = Arc::new(StaticSource::new(vec![servers[0].instance("old")]));
    let balancer = balancer(&source, "a", Options::default());
    balancer.ready().await.unwrap();

    let mut slow = HealthClient::new(balancer.channel());
    let in_flight = tokio::spawn(async move { call(&mut slow).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(servers[0].open_connections(), 1);
    assert_eq!(balancer.stats().instances[0].in_flight, 1);

    // Replaced while its call is in flight.
    source.set(vec![servers[1].instance("new")]);
    balancer.refresh().await.unwrap();
    assert_eq!(run_clients(&balancer, 1, 20).await, vec![0]);
    assert_eq!(servers[1].served(), 20);
    assert_eq!(
        servers[0].open_connections(),
        1,
        "closed under a call in flight"
    );

    in_flight.await.unwrap().unwrap();
    assert_eq!(servers[0].served(), 1);
    let mut waited = Duration::ZERO;
    while servers[0].open_connections() > 0 && waited < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(
        servers[0].open_connections(),
        0,
        "not closed after its last call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_count_in_flight_until_they_end() {
    let server = TestServer::start("a");
    let source = Arc::new(StaticSource::new(vec![server.instance("only")]));
    let balancer = balancer(&source, "a", Options::default());
    let mut client = HealthClient::new(balancer.channel());
    let mut stream = client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(
        first.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    assert_eq!(balancer.stats().instances[0].in_flight, 1);
    drop(stream);
    assert_eq!(balancer.stats().instances[0].in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_local_zone_spills_and_recovers_without_flapping() {
    let servers = [
        TestServer::start("a"),
        TestServer::start("b"),
        TestServer::start("c"),
    ];
    let source = Arc::new(StaticSource::new(
        servers
            .iter()
            .enumerate()
            .map(|(n, s)| s.instance(&format!("task-{n}")))
            .collect(),
    ));
    // A faster controller than the defaults, so the test takes seconds.
    let mut options = Options::default();
    options.adaptive.tick = Duration::from_millis(50);
    options.adaptive.latency_window = Duration::from_millis(250);
    // The overload is 30 ms; loopback latency on a busy two-core machine jitters by a few.
    options.adaptive.min_latency_gap = Duration::from_millis(10);
    options.adaptive.step_up = 0.2;
    options.adaptive.step_down = 0.1;
    // The remote median needs 5 probes in the window. Overloaded, 4 callers make about 130
    // calls a second, whose probes are 1 %: a 1 s window kept the healthy phase's probes for a
    // second only, and a client whose ticks ran late in that second (a busy machine widens the
    // gap by 4 × its lag) never saw the other zones' latency again, and never spilled: the
    // third of three runs of `scripts/test` under four CPU hogs failed so. 10 s, the default,
    // holds about 13.
    options.adaptive.probe_share = 0.01;
    let balancer = balancer(&source, "a", options);
    balancer.ready().await.unwrap();

    let stop = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let mut client = HealthClient::new(balancer.channel());
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                while stop.load(Ordering::SeqCst) == 0 {
                    call(&mut client).await.unwrap();
                }
            })
        })
        .collect();
    let served =
        |s: &[TestServer; 3]| -> [u64; 3] { [s[0].served(), s[1].served(), s[2].served()] };

    // Healthy: everything stays local, but the probes (1 %).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let healthy = served(&servers);
    assert!(healthy[0] > 100);
    assert!(
        share(healthy[1] + healthy[2], healthy.iter().sum()) < 0.02,
        "{healthy:?}"
    );

    // Overloaded: the local server answers in 30 ms, the others in well under 1 ms.
    servers[0].set_delay(Duration::from_millis(30));
    let rising = sample_spill(&balancer, |s| s >= 1.0).await;
    assert!(
        rising.windows(2).all(|w| w[1] >= w[0]),
        "flapped while rising: {rising:?}"
    );
    assert!(rising.len() >= 3, "not gradual: {rising:?}");
    let before = served(&servers);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = served(&servers);
    let local = after[0] - before[0];
    let remote = (after[1] - before[1]) + (after[2] - before[2]);
    // Fully spilled, the local zone keeps its capacity share (a third) of the calls, down
    // from all of them.
    let local_share = share(local, local + remote);
    assert!(local_share < 0.5, "local {local}, remote {remote}");
    let stats = balancer.stats();
    assert!(
        (stats.local_share - 1.0 / 3.0).abs() < 1e-6,
        "{}",
        stats.local_share
    );
    assert!(stats.calls.spilled > 0);

    // Recovered: the spill recedes step by step, back to everything local.
    servers[0].set_delay(Duration::ZERO);
    let falling = sample_spill(&balancer, |s| s == 0.0).await;
    assert!(
        falling.windows(2).all(|w| w[1] <= w[0]),
        "flapped while falling: {falling:?}"
    );
    assert!(falling.len() >= 3, "not gradual: {falling:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = served(&servers);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = served(&servers);
    let remote = after[1] - before[1] + after[2] - before[2];
    assert!(after[0] > before[0]);
    assert!(
        share(remote, remote + after[0] - before[0]) < 0.02,
        "{after:?}"
    );

    stop.store(1, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
}

/// Samples the adaptive spill level every 50 ms until `done` (at most 20 s).
async fn sample_spill(balancer: &Balancer, done: impl Fn(f64) -> bool) -> Vec<f64> {
    let mut samples = Vec::new();
    for _ in 0..400 {
        let spill = balancer.stats().adaptive.map_or(0.0, |a| a.spill);
        samples.push(spill);
        if done(spill) {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Why, in the controller's own figures: its verdict, the local and remote medians it
    // compared, and the client's lag that widens the gap between them.
    panic!(
        "spill never settled: {samples:?}; controller {:?}",
        balancer.stats().adaptive
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_mode_for_comparison() {
    let servers = [TestServer::start("a"), TestServer::start("b")];
    let source = Arc::new(StaticSource::new(vec![
        servers[0].instance("a"),
        servers[1].instance("b"),
    ]));
    let mut options = Options::default();
    options.zone_mode = ZoneMode::Fixed { local_percent: 50 };
    let balancer = balancer(&source, "a", options);
    balancer.ready().await.unwrap();
    assert_eq!(run_clients(&balancer, 2, 1_000).await, vec![0, 0]);
    let local = share(servers[0].served(), 2_000);
    assert!((local - 0.5).abs() < 0.04, "{local}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instances_is_unavailable_naming_the_service() {
    let source = Arc::new(StaticSource::new(Vec::new()));
    let balancer = balancer(&source, "a", Options::default());
    balancer.ready().await.unwrap();
    let mut client = HealthClient::new(balancer.channel());
    let status = call(&mut client).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("`health`"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("`test`"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_options_are_refused() {
    let source = Arc::new(StaticSource::new(Vec::new()));
    let mut options = Options::default();
    options.panic_threshold = 1.5;
    let error = Balancer::builder_with_source(Arc::clone(&source), "test", "health")
        .options(options)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("panic_threshold"), "{error}");
    let mut options = Options::default();
    options.discovery.poll_interval = Duration::from_millis(100);
    assert!(
        Balancer::builder_with_source(source, "test", "health")
            .options(options)
            .build()
            .is_err()
    );
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    let source = StaticSource::new(Vec::new());
    let error = Balancer::builder_with_source(source, "test", "health")
        .build()
        .unwrap_err();
    assert!(matches!(error, cloudmap_balancer::Error::NoRuntime));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_in_another_account_stays_in_its_physical_zone() {
    // The service runs in account B, whose names map to other zones than the caller's (account
    // A): B's "eu-central-1b" is euc1-az2, the caller's own "eu-central-1a". (moto cannot make two
    // accounts' mappings differ; the instances carry B's mapping as the Lambda writes it there.)
    let servers = [
        TestServer::start("eu-central-1a"),
        TestServer::start("eu-central-1b"),
        TestServer::start("eu-central-1c"),
    ];
    let ids = ["euc1-az1", "euc1-az2", "euc1-az3"];
    let source = Arc::new(StaticSource::new(
        servers
            .iter()
            .zip(ids)
            .enumerate()
            .map(|(n, (s, id))| s.instance(&format!("task-{n}")).with_zone_id(id))
            .collect(),
    ));
    let balancer = Balancer::builder_with_source(Arc::clone(&source), "test", "health")
        .local_zone("eu-central-1a")
        .local_zone_id("euc1-az2")
        .options(all_local())
        .rng_seed(2)
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    assert_eq!(run_clients(&balancer, 2, 200).await, vec![0, 0]);
    let served: Vec<u64> = servers.iter().map(TestServer::served).collect();
    assert_eq!(
        served,
        vec![0, 400, 0],
        "by name it would have gone to the first"
    );
    let stats = balancer.stats();
    let local = stats
        .zones
        .iter()
        .find(|z| z.locality == cloudmap_balancer::picker::Locality::Local)
        .unwrap();
    assert_eq!(
        (local.zone.as_deref(), local.zone_id.as_deref()),
        (Some("eu-central-1b"), Some("euc1-az2"))
    );
    assert_eq!(stats.calls.local, 400);

    // Without its own ID the caller matches by name, as before.
    let by_name = balancer_for(&source, "eu-central-1a");
    by_name.ready().await.unwrap();
    let before = servers[0].served();
    assert_eq!(run_clients(&by_name, 1, 100).await, vec![0]);
    assert_eq!(servers[0].served(), before + 100);
}

fn all_local() -> Options {
    let mut options = Options::default();
    options.zone_mode = ZoneMode::Fixed { local_percent: 100 };
    options
}

fn balancer_for(source: &Arc<StaticSource>, zone: &str) -> Balancer {
    Balancer::builder_with_source(Arc::clone(source), "test", "health-by-name")
        .local_zone(zone)
        .options(all_local())
        .build()
        .unwrap()
}
