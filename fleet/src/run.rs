//! One run: a scenario, N pairs, one discovery configuration, on a current-thread Tokio runtime
//! with paused time.
//!
//! The run's clock:
//!
//! 1. at 0 s the initial tasks are running, registered by ECS and written by the Lambda (an
//!    event and a reconciliation each);
//! 2. the pairs start at uniformly drawn instants over the first 300 s, as a client fleet
//!    rolling out would (each lists at once, then polls);
//! 3. at 600 s the measured window opens (every pair has started and its full refreshes are
//!    spread out) and the scenario's changes begin;
//! 4. the window closes after the scenario's duration; the run goes on for 300 s more so that
//!    the window's last writes reach every pair, then stops.
//!
//! Every pair is a real [`Discovery`] over a [`PairSource`]; nothing of the poller is copied.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use cloudmap_balancer::contract::Load;
use cloudmap_balancer::discovery::{Discovery, DiscoveryOptions};
use cloudmap_sync::task::{DesiredStatus, LastStatus};
use fastrand::Rng;

use crate::cloud_map::{
    CloudMap, NAMESPACE, Observed, PairSource, SERVICE, ThrottleAnswer, Writer,
};
use crate::lambda::{Lambda, LambdaCounts};
use crate::quota::Quotas;
use crate::scenario::{Change, Plan, Scenario};

/// When the pairs have all started.
pub(crate) const PAIRS_STARTED_BY: Duration = Duration::from_secs(300);
/// When the measured window opens.
pub const WINDOW_OPENS: Duration = Duration::from_secs(600);
/// How long the run goes on after the window closes.
pub(crate) const TAIL: Duration = Duration::from_secs(300);
pub(crate) const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// One run's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Client-service pairs: pollers of the one service.
    pub pairs: usize,
    /// What ECS does meanwhile.
    pub scenario: Scenario,
    /// The pairs' discovery options.
    pub discovery: DiscoveryOptions,
    /// How the model answers past a quota.
    pub throttle: ThrottleAnswer,
    /// The account's quotas.
    pub quotas: Quotas,
    /// Seeds the plan, the pairs' start times and their jitter.
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The run's settings.
    pub config: Config,
    /// Calls and writes in the window.
    pub observed: Observed,
    /// What the Lambda did over the whole run.
    pub lambda: LambdaCounts,
    /// Pairs that had no snapshot in service when the run ended (static stability: 0 unless a
    /// pair never got its first listing).
    pub pairs_without_snapshot: usize,
}

/// Something that happens at an instant of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    StartPair(usize),
    OpenWindow,
    Ecs(usize),
    Deliver { task: usize, event: usize },
    Reconcile,
    End,
}

/// The run's agenda: happenings in time order, ties in the order they were added.
pub(crate) struct Agenda<H> {
    queue: BinaryHeap<Reverse<(Duration, u64, H)>>,
    added: u64,
}

impl<H: Ord> Default for Agenda<H> {
    fn default() -> Self {
        Self {
            queue: BinaryHeap::new(),
            added: 0,
        }
    }
}

impl<H: Ord> Agenda<H> {
    pub(crate) fn add(&mut self, at: Duration, happening: H) {
        self.added += 1;
        self.queue.push(Reverse((at, self.added, happening)));
    }

    pub(crate) fn next(&mut self) -> Option<(Duration, H)> {
        self.queue.pop().map(|Reverse((at, _, h))| (at, h))
    }
}

/// Runs `config` to the end and reports what it measured.
///
/// # Panics
///
/// When the Tokio runtime cannot be built (it needs nothing but memory).
pub fn run(config: &Config) -> Outcome {
    #[allow(clippy::expect_used)] // nothing to run without it
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(drive(config))
}

async fn drive(config: &Config) -> Outcome {
    let mut rng = Rng::with_seed(config.seed);
    let plan = Plan::draw(config.scenario, &mut rng);
    let cloud_map = CloudMap::new(config.pairs, config.quotas, config.throttle);
    let mut world = World {
        plan,
        cloud_map: Arc::clone(&cloud_map),
        lambda: Lambda::default(),
        events: Vec::new(),
        seed: config.seed,
    };
    world.start_running_tasks();

    let mut agenda = Agenda::default();
    for pair in 0..config.pairs {
        agenda.add(
            Duration::from_secs_f64(PAIRS_STARTED_BY.as_secs_f64() * rng.f64()),
            Happening::StartPair(pair),
        );
    }
    agenda.add(WINDOW_OPENS, Happening::OpenWindow);
    for (index, (at, _)) in world.plan.changes.iter().enumerate() {
        agenda.add(WINDOW_OPENS + *at, Happening::Ecs(index));
    }
    let end = WINDOW_OPENS + config.scenario.duration() + TAIL;
    let mut reconcile = RECONCILE_EVERY / 2;
    while reconcile < end {
        agenda.add(reconcile, Happening::Reconcile);
        reconcile += RECONCILE_EVERY;
    }
    agenda.add(end, Happening::End);

    let epoch = tokio::time::Instant::now();
    let mut pairs: Vec<Discovery> = Vec::with_capacity(config.pairs);
    while let Some((at, happening)) = agenda.next() {
        tokio::time::sleep_until(epoch + at).await;
        match happening {
            Happening::StartPair(pair) => {
                let source = PairSource {
                    pair,
                    cloud_map: Arc::clone(&cloud_map),
                };
                let seed = config.seed ^ (pair as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                match Discovery::start_with_seed(
                    source,
                    NAMESPACE,
                    SERVICE,
                    config.discovery.clone(),
                    seed,
                ) {
                    Ok(discovery) => pairs.push(discovery),
                    Err(error) => panic!("invalid discovery options: {error}"),
                }
            }
            Happening::OpenWindow => cloud_map.open_window(config.scenario.duration()),
            Happening::Ecs(index) => {
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
    }
    let pairs_without_snapshot = pairs.iter().filter(|d| d.snapshot().is_none()).count();
    drop(pairs);
    Outcome {
        config: config.clone(),
        observed: cloud_map.observed(),
        lambda: world.lambda.counts,
        pairs_without_snapshot,
    }
}

impl Change {
    pub(crate) fn task(self) -> usize {
        match self {
            Self::State { task, .. } | Self::Deregister { task } => task,
        }
    }
}

/// ECS, the Lambda and the model together.
pub(crate) struct World {
    pub(crate) plan: Plan,
    pub(crate) cloud_map: Arc<CloudMap>,
    pub(crate) lambda: Lambda,
    /// Every event ECS sent, for delivery.
    pub(crate) events: Vec<cloudmap_sync::events::TaskChange>,
    pub(crate) seed: u64,
}

impl World {
    /// The initial tasks, as a service that has been running for a while leaves them:
    /// registered by ECS, their RUNNING event handled, reconciled once.
    pub(crate) fn start_running_tasks(&mut self) {
        for index in self.plan.running.clone() {
            let task = &mut self.plan.tasks[index];
            for last in [
                LastStatus::Provisioning,
                LastStatus::Pending,
                LastStatus::Activating,
                LastStatus::Running,
            ] {
                task.advance(last, DesiredStatus::Running);
            }
            task.healthy_at = Some(Duration::ZERO);
            let task = &self.plan.tasks[index];
            self.cloud_map
                .register(&task.id, task.ecs_attributes(), Writer::Ecs);
            let event = task.event();
            self.lambda
                .on_event(&self.cloud_map, &event, task, Duration::ZERO);
            let load = self.load(index, Duration::ZERO);
            self.lambda
                .on_reconcile(&self.cloud_map, task, load, Duration::ZERO);
        }
    }

    /// ECS's change number `index`; returns the event it sends, if any.
    pub(crate) fn ecs(&mut self, index: usize) -> Option<usize> {
        match self.plan.changes[index].1 {
            Change::State {
                task,
                last,
                desired,
            } => {
                let state = &mut self.plan.tasks[task];
                state.advance(last, desired);
                if last == LastStatus::Running && desired == DesiredStatus::Running {
                    // ECS registers the task's instance as the task turns RUNNING.
                    self.cloud_map
                        .register(&state.id, state.ecs_attributes(), Writer::Ecs);
                }
                self.events.push(state.event());
                Some(self.events.len() - 1)
            }
            Change::Deregister { task } => {
                self.cloud_map
                    .deregister(&self.plan.tasks[task].id, Writer::Ecs);
                None
            }
        }
    }

    pub(crate) fn deliver(&mut self, task: usize, event: usize, at: Duration) {
        self.lambda.on_event(
            &self.cloud_map,
            &self.events[event],
            &self.plan.tasks[task],
            at,
        );
    }

    /// The scheduled reconciliation: every registered instance with its task.
    pub(crate) fn reconcile(&mut self, at: Duration) {
        for id in self.cloud_map.instance_ids() {
            let Some(index) = self.plan.tasks.iter().position(|t| t.id == id) else {
                continue;
            };
            let load = self.load(index, at);
            self.lambda
                .on_reconcile(&self.cloud_map, &self.plan.tasks[index], load, at);
        }
    }

    fn load(&self, task: usize, at: Duration) -> Option<Load> {
        let since_open = at.as_secs_f64() - WINDOW_OPENS.as_secs_f64();
        Load::new(
            self.plan
                .load(task, since_open, at.as_secs() / 60, self.seed),
        )
    }
}
