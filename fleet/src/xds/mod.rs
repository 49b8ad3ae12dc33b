//! The xDS mode: the same fleet fed by the `cloudmap-xds` server (issue 19).
//!
//! The account has [`XdsConfig::services`] services (100 by default), every one of 100 tasks.
//! One of them, `echo`, goes through the scenario (a rolling deployment, ...), with ECS's
//! writes and the sync Lambda's real decisions as in the polling mode ([`run`](mod@crate::run));
//! the others never change (their Cloud Map answers are frozen copies of `echo`'s initial
//! listing). The client-service pairs are spread evenly over the services.
//!
//! - **The server's replicas are the real server's discovery.** Each of the
//!   [`XdsConfig::replicas`] replicas runs, per service, the crate's [`Discovery`] poller over
//!   the Cloud Map model with the server's options (the crate's defaults, and the server's
//!   poll interval, `cloudmap_xds::config::ServeConfig::default().poll_interval`, 1.75 s). On
//!   every snapshot it computes the server's real answer for the `instances/` name
//!   ([`cloudmap_xds::services::compute_instances`]), encoded as the server encodes it, and
//!   decoded once per answer as every client decodes it
//!   ([`cloudmap_balancer::discovery::xds::decode_listing`]).
//! - **Each pair is the client's real poller** ([`Discovery`], the client's default options)
//!   over a model of the crate's `XdsSource` (`xds/client.rs`): the same switch rules (nothing
//!   served until the first answer; Cloud Map polled directly after `start_timeout`, 2 s, with
//!   no answer at start, or `lost_timeout`, 15 s, after the stream is lost; back to xDS at once
//!   when a server answers), the poller woken through `InstanceSource::changed()` on every
//!   answer and every switch, and the stream's retry schedule (each replica in turn; after a
//!   stream that had answered the next at once, else 250 ms doubling to 5 s, ±20 %). The
//!   fallback is the same Cloud Map model, polled by the same poller. Pair `i` uses service
//!   `i mod services` and tries replica `(i / services) mod replicas` first.
//! - **The push is modelled**: each stream receives each answer after a delay drawn uniformly
//!   from [`XdsConfig::push_range`]: unless [`XdsConfig::push_delay`] sets it, the fan-out
//!   `scripts/xds-load` measured (BENCHMARKS.md, "xDS server: streams, memory, push fan-out")
//!   for the smallest number of streams at least as large as one change wakes on one replica
//!   (a service's push wakes only that service's streams: `pairs / services / replicas`, 500
//!   at 100,000 pairs over 100 services and 2 replicas). Each measurement's first stream →
//!   stream p50 and p99 give the uniform range with the same p50 and p99 ([`MEASURED_PUSH`]).
//!   Past the largest measured count the largest one's range grows in proportion.
//!   The first answer on a new stream takes a delay from the same range.
//!
//! **Why the crate's `XdsSource` is not run here**: it opens a real tonic channel to a URI
//! (`tonic::transport::Endpoint::connect`), so it cannot be given an in-memory transport; it
//! seeds its retry jitter from `fastrand::u64(..)`, so runs would not repeat; and each source
//! decodes every answer itself, which at 100,000 pairs is 100,000 decodes of a 100-endpoint
//! answer per push where the model decodes each answer once. And 100,000
//! real HTTP/2 streams are out of reach of one process on this machine (the server alone
//! measured 27 KiB per stream: 2.7 GB). What this model restates of the crate is the stream
//! around the switch: the source's serving rules and the stream's retry schedule
//! (`client.rs`); the switch itself ([`switch`]), the poller, the server's discovery, its
//! answers and the client's decoding are the crate's.
//!
//! **Down replicas**: with [`XdsConfig::outage`], both replicas stop (their pollers stop, every
//! stream ends at once, as when the server process exits; a connection is refused at once
//! while they are down), and start again after the outage, each polling every service afresh.
//!
//! **Measured**, beside the polling mode's figures (calls, throttling, staleness as "a write
//! until every measured pair holds a listing at that revision or later", on `echo`'s pairs):
//! each new task's wait for its first call, from ECS registering it as it turns RUNNING until
//! the first pair holds a listing in which the client's own [`Picker`] finds it eligible (and
//! until every pair does); switches to and from the fallback; when the last pair is back on
//! xDS after an outage.
//!
//! [`Discovery`]: cloudmap_balancer::discovery::Discovery
//! [`Picker`]: cloudmap_balancer::picker::Picker

mod client;
mod replica;
pub mod report;
/// The crate's own fallback state machine, which the modelled client drives.
pub use cloudmap_balancer::discovery::xds::switch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloudmap_balancer::discovery::xds::XdsOptions;
use cloudmap_balancer::discovery::{Discovery, DiscoveryOptions, InstanceSource};
use cloudmap_balancer::picker::{Availability, Picker, PickerConfig};
use cloudmap_sync::task::{DesiredStatus, LastStatus};
use fastrand::Rng;

use crate::cloud_map::{
    CloudMap, NAMESPACE, Observed, PairSource, QuietSource, ReplicaSource, SERVICE, ThrottleAnswer,
};
use crate::lambda::{Lambda, LambdaCounts};
use crate::quota::Quotas;
use crate::run::{Agenda, PAIRS_STARTED_BY, RECONCILE_EVERY, TAIL, WINDOW_OPENS, World};
use crate::scenario::{Change, Plan, Scenario};
pub use client::LostWakes;
use client::{Client, ClientSource, Retry, Switches};
use replica::Replica;

/// The server's push fan-out, measured by `scripts/xds-load` (BENCHMARKS.md, "xDS server:
/// streams, memory, push fan-out"): streams woken by one change, and the uniform range (ms)
/// with the measured first stream → stream p50 and p99 (`low = p50 − (p99 − p50) / 0.98`,
/// `high = low + (p99 − p50) / 0.49`). 1,000: p50 54 ms, p99 85 ms (the quieter machine);
/// 10,000: the slowest run, p50 436 ms, p99 719 ms.
pub const MEASURED_PUSH: [(usize, (u64, u64)); 2] = [(1_000, (22, 86)), (10_000, (147, 725))];

/// Both replicas down for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// When they stop, from the opening of the window.
    pub at: Duration,
    /// How long they stay down.
    pub length: Duration,
    /// When the scenario's changes begin, from the opening of the window (so that writes
    /// happen while the pairs poll Cloud Map directly).
    pub changes_at: Duration,
}

impl Outage {
    /// Down 60 s into the window for 10 minutes; the scenario's changes begin 120 s in (45 s
    /// after the pairs fell back).
    pub const TEN_MINUTES: Self = Self {
        at: Duration::from_secs(60),
        length: Duration::from_secs(600),
        changes_at: Duration::from_secs(120),
    };
}

/// One xDS-mode run's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsConfig {
    /// Client-service pairs, over every service.
    pub pairs: usize,
    /// Services in the account (the first goes through the scenario).
    pub services: usize,
    /// Server replicas.
    pub replicas: usize,
    /// What ECS does to `echo`.
    pub scenario: Scenario,
    /// Both replicas down for a while, if at all.
    pub outage: Option<Outage>,
    /// The replicas' discovery options (the server's).
    pub server: DiscoveryOptions,
    /// The pairs' discovery options.
    pub client: DiscoveryOptions,
    /// The client's xDS timeouts and retry schedule (only `start_timeout`, `lost_timeout`,
    /// `backoff_base` and `backoff_max` are used).
    pub xds: XdsOptions,
    /// A stream's delay for an answer, uniform over this range; `None`: the measured fan-out
    /// for this many streams per service and replica ([`XdsConfig::push_range`]).
    pub push_delay: Option<(Duration, Duration)>,
    /// When the stream's losses wake the pair's poller (default: as the crate does).
    pub lost_wakes: LostWakes,
    /// How the model answers past a quota.
    pub throttle: ThrottleAnswer,
    /// The account's quotas.
    pub quotas: Quotas,
    /// Seeds everything.
    pub seed: u64,
}

impl XdsConfig {
    /// `pairs` over 100 services, 2 replicas, the server's, the client's and the xDS source's
    /// defaults, the measured push delay.
    pub fn new(pairs: usize, scenario: Scenario) -> Self {
        let mut server = DiscoveryOptions::default();
        server.poll_interval = cloudmap_xds::config::ServeConfig::default().poll_interval;
        Self {
            pairs,
            services: 100,
            replicas: 2,
            scenario,
            outage: None,
            server,
            client: DiscoveryOptions::default(),
            xds: XdsOptions::new(["http://xds.prod.internal:18000"]),
            push_delay: None,
            lost_wakes: LostWakes::NewDeadline,
            throttle: ThrottleAnswer::RequestLimitExceeded,
            quotas: Quotas::AWS,
            seed: 1,
        }
    }

    /// Streams one change of a service wakes on one replica.
    pub fn streams_per_push(&self) -> usize {
        self.pairs
            .div_ceil(self.services.max(1) * self.replicas.max(1))
            .max(1)
    }

    /// A stream's delay for an answer: `push_delay`, or the measured fan-out of the smallest
    /// measured stream count at least [`streams_per_push`](Self::streams_per_push); past the
    /// largest, that one's range times the ratio.
    pub fn push_range(&self) -> (Duration, Duration) {
        if let Some(range) = self.push_delay {
            return range;
        }
        let streams = self.streams_per_push();
        let ms = Duration::from_millis;
        match MEASURED_PUSH.iter().find(|(n, _)| *n >= streams) {
            Some((_, (low, high))) => (ms(*low), ms(*high)),
            None => {
                let (n, (low, high)) = MEASURED_PUSH[MEASURED_PUSH.len() - 1];
                let scale = streams as f64 / n as f64;
                (ms(low).mul_f64(scale), ms(high).mul_f64(scale))
            }
        }
    }

    /// The measured window's length.
    pub fn window(&self) -> Duration {
        let scenario = self.scenario.duration();
        self.outage.map_or(scenario, |o| {
            scenario.max(o.at + o.length + Duration::from_secs(300))
        })
    }
}

/// A task that turned RUNNING in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewTask {
    /// When ECS registered it (RUNNING), from the opening of the window.
    pub running_at: Duration,
    /// The write that made it eligible for the client's picker, if one did (index into
    /// [`Observed::writes`]).
    pub eligible_write: Option<usize>,
}

/// What an xDS-mode run measured.
#[derive(Debug, Clone)]
pub struct XdsOutcome {
    /// The run's settings.
    pub config: XdsConfig,
    /// Calls and writes in the window (staleness over `echo`'s pairs).
    pub observed: Observed,
    /// What the Lambda did.
    pub lambda: LambdaCounts,
    /// The tasks that turned RUNNING in the window.
    pub new_tasks: Vec<NewTask>,
    /// Pairs without a snapshot when the run ended.
    pub pairs_without_snapshot: usize,
    /// Switches to the fallback, and back to xDS, over the run.
    pub to_fallback: u64,
    /// Switches back to xDS.
    pub to_xds: u64,
    /// The most pairs on the fallback at once, and how many were still on it at the end.
    pub on_fallback_peak: u64,
    /// Pairs on the fallback when the run ended.
    pub on_fallback_at_end: u64,
    /// After an outage: when the last pair was back on xDS, from the opening of the window.
    pub all_back_at: Option<Duration>,
    /// Answers the client's decoding rejected.
    pub nacks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    StartReplicas,
    StartPair(usize),
    OpenWindow,
    Ecs(usize),
    Deliver { task: usize, event: usize },
    Reconcile,
    ReplicasDown,
    End,
}

/// Runs `config` to the end and reports what it measured.
///
/// # Panics
///
/// When the Tokio runtime cannot be built, or the options are invalid.
pub fn run(config: &XdsConfig) -> XdsOutcome {
    #[allow(clippy::expect_used)] // nothing to run without it
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(drive(config))
}

fn service_name(service: usize) -> String {
    if service == 0 {
        SERVICE.to_owned()
    } else {
        format!("quiet-{service:03}")
    }
}

#[allow(clippy::too_many_lines)] // one timeline, read top to bottom
async fn drive(config: &XdsConfig) -> XdsOutcome {
    assert!(
        config.services >= 1 && config.replicas >= 1,
        "at least one service and replica"
    );
    let mut rng = Rng::with_seed(config.seed);
    let plan = Plan::draw(config.scenario, &mut rng);
    // Pair i uses service i mod services: echo's pairs are 0, services, 2 × services, ...
    let measured = config.pairs.div_ceil(config.services);
    let cloud_map = CloudMap::new(measured, config.quotas, config.throttle);
    let mut world = World {
        plan,
        cloud_map: Arc::clone(&cloud_map),
        lambda: Lambda::default(),
        events: Vec::new(),
        seed: config.seed,
    };
    world.start_running_tasks();
    cloud_map.freeze_quiet_services();

    let names: Vec<String> = (0..config.services).map(service_name).collect();
    let replicas: Vec<Arc<Replica>> = (0..config.replicas)
        .map(|r| {
            Replica::new(
                config.services,
                config.push_range(),
                config.seed ^ (0xA11C_E000 + r as u64),
            )
        })
        .collect();
    let sources = |cloud_map: &Arc<CloudMap>| -> Vec<Arc<dyn InstanceSource>> {
        (0..config.services)
            .map(|s| -> Arc<dyn InstanceSource> {
                if s == 0 {
                    Arc::new(ReplicaSource {
                        cloud_map: Arc::clone(cloud_map),
                    })
                } else {
                    Arc::new(QuietSource {
                        cloud_map: Arc::clone(cloud_map),
                    })
                }
            })
            .collect()
    };

    let changes_at = config.outage.map_or(Duration::ZERO, |o| o.changes_at);
    let mut agenda: Agenda<Happening> = Agenda::default();
    agenda.add(Duration::ZERO, Happening::StartReplicas);
    for pair in 0..config.pairs {
        agenda.add(
            Duration::from_secs_f64(PAIRS_STARTED_BY.as_secs_f64() * rng.f64()),
            Happening::StartPair(pair),
        );
    }
    agenda.add(WINDOW_OPENS, Happening::OpenWindow);
    for (index, (at, _)) in world.plan.changes.iter().enumerate() {
        agenda.add(WINDOW_OPENS + changes_at + *at, Happening::Ecs(index));
    }
    if let Some(outage) = config.outage {
        agenda.add(WINDOW_OPENS + outage.at, Happening::ReplicasDown);
        agenda.add(
            WINDOW_OPENS + outage.at + outage.length,
            Happening::StartReplicas,
        );
    }
    let end = WINDOW_OPENS + config.window() + TAIL;
    let mut reconcile = RECONCILE_EVERY / 2;
    while reconcile < end {
        agenda.add(reconcile, Happening::Reconcile);
        reconcile += RECONCILE_EVERY;
    }
    agenda.add(end, Happening::End);

    let switches = Arc::new(Switches::default());
    let retry = Retry {
        base: config.xds.backoff_base,
        max: config.xds.backoff_max,
    };
    let epoch = tokio::time::Instant::now();
    let mut pairs: Vec<Discovery> = Vec::with_capacity(config.pairs);
    let mut streams = Vec::with_capacity(config.pairs);
    let mut new_tasks: BTreeMap<usize, (Duration, Option<i64>)> = BTreeMap::new();
    let mut checked_revision = None;
    let mut down_since: Option<Duration> = None;
    let mut restarts = 0_u64;
    while let Some((at, happening)) = agenda.next() {
        tokio::time::sleep_until(epoch + at).await;
        match happening {
            Happening::StartReplicas => {
                if down_since.is_some() {
                    // Counted from the return: the last pair back on xDS.
                    *switches
                        .all_back_at
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                }
                for (r, replica) in replicas.iter().enumerate() {
                    let seed = config.seed ^ ((r as u64) << 40) ^ (restarts << 48);
                    replica.start(sources(&cloud_map), &names, &config.server, seed);
                }
                restarts += 1;
            }
            Happening::ReplicasDown => {
                down_since = Some(at);
                for replica in &replicas {
                    replica.stop();
                }
            }
            Happening::StartPair(pair) => {
                let service = pair % config.services;
                let tracked = (service == 0).then_some(pair / config.services);
                let client = Client::new(
                    tracked,
                    Arc::clone(&cloud_map),
                    Arc::clone(&switches),
                    config.xds.start_timeout,
                    // The crate's jitter on the lost timeout: 0-50 % per source.
                    config.xds.lost_timeout.mul_f64(1.0 + 0.5 * rng.f64()),
                    config.lost_wakes,
                );
                let fallback: Arc<dyn InstanceSource> = match tracked {
                    Some(index) => Arc::new(PairSource {
                        pair: index,
                        cloud_map: Arc::clone(&cloud_map),
                    }),
                    None => Arc::new(QuietSource {
                        cloud_map: Arc::clone(&cloud_map),
                    }),
                };
                let first = (pair / config.services) % config.replicas;
                let servers: Vec<Arc<Replica>> = (0..config.replicas)
                    .map(|k| Arc::clone(&replicas[(first + k) % config.replicas]))
                    .collect();
                let seed = config.seed ^ (pair as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                streams.push(tokio::spawn(client::stream(
                    Arc::clone(&client),
                    (pair, service),
                    servers,
                    retry,
                    seed.rotate_left(17),
                )));
                let source = ClientSource { client, fallback };
                match Discovery::start_with_seed(
                    source,
                    NAMESPACE,
                    service_name(service),
                    config.client.clone(),
                    seed,
                ) {
                    Ok(discovery) => pairs.push(discovery),
                    Err(error) => panic!("invalid discovery options: {error}"),
                }
            }
            Happening::OpenWindow => cloud_map.open_window(config.window()),
            Happening::Ecs(index) => {
                if let Change::State {
                    task,
                    last: LastStatus::Running,
                    desired: DesiredStatus::Running,
                } = world.plan.changes[index].1
                    && !world.plan.running.contains(&task)
                {
                    new_tasks.insert(task, (at.saturating_sub(WINDOW_OPENS), None));
                }
                if let Some(event) = world.ecs(index) {
                    let delay = Duration::from_secs_f64(0.5 + 2.5 * rng.f64());
                    let task = world.plan.changes[index].1.task();
                    agenda.add(at + delay, Happening::Deliver { task, event });
                }
            }
            Happening::Deliver { task, event } => world.deliver(task, event, at),
            Happening::Reconcile => world.reconcile(at),
            Happening::End => break,
        }
        check_eligible(&world, &mut new_tasks, &mut checked_revision, at);
    }
    let pairs_without_snapshot = pairs.iter().filter(|d| d.snapshot().is_none()).count();
    for stream in &streams {
        stream.abort();
    }
    drop(pairs);
    for replica in &replicas {
        replica.stop();
    }
    let observed = cloud_map.observed();
    let new_tasks = new_tasks
        .into_values()
        .map(|(running_at, revision)| NewTask {
            running_at,
            eligible_write: revision
                .and_then(|r| usize::try_from(r - observed.base_revision - 1).ok()),
        })
        .collect();
    let (on_fallback_at_end, on_fallback_peak) = switches.on_fallback();
    let all_back_at = down_since.and_then(|_| {
        let back = *switches
            .all_back_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        back.map(|at| (at - epoch).saturating_sub(WINDOW_OPENS))
    });
    XdsOutcome {
        config: config.clone(),
        observed,
        lambda: world.lambda.counts,
        new_tasks,
        pairs_without_snapshot,
        to_fallback: switches.to_fallback.load(Ordering::Relaxed),
        to_xds: switches.to_xds.load(Ordering::Relaxed),
        on_fallback_peak,
        on_fallback_at_end,
        all_back_at,
        nacks: replicas
            .iter()
            .map(|r| r.nacks.load(Ordering::Relaxed))
            .sum(),
    }
}

/// After a write: the new tasks that the client's picker now finds eligible, with the
/// revision that made them so.
fn check_eligible(
    world: &World,
    new_tasks: &mut BTreeMap<usize, (Duration, Option<i64>)>,
    checked: &mut Option<i64>,
    at: Duration,
) {
    if new_tasks.values().all(|(_, r)| r.is_some()) {
        return;
    }
    let listing = world.cloud_map.listing_now();
    if listing.revision() == *checked {
        return;
    }
    *checked = listing.revision();
    let picker = Picker::build(
        listing.instances(),
        |_| Availability::Available,
        &PickerConfig::default(),
        None,
        world.lambda.wall_clock(at),
    );
    for (&task, (_, eligible)) in new_tasks.iter_mut() {
        if eligible.is_some() {
            continue;
        }
        let id = &world.plan.tasks[task].id;
        let found = listing
            .instances()
            .iter()
            .zip(picker.instances())
            .any(|(instance, view)| &instance.id == id && view.exclusion.is_none());
        if found {
            *eligible = listing.revision();
        }
    }
}
