//! The scenarios: what ECS does to the service, as a timeline of task state changes and ECS's
//! own registrations, drawn from a seeded generator.
//!
//! Timings (uniform draws, seconds):
//!
//! | step | after |
//! |---|---|
//! | PROVISIONING → PENDING | 5–15 |
//! | PENDING → ACTIVATING | 10–40 (image pull) |
//! | ACTIVATING → RUNNING (ECS registers the instance) | 2–8 |
//! | RUNNING → health check passes | 10–30 |
//! | desired STOPPED (the Lambda writes DRAINING) → DEACTIVATING | 1–3 |
//! | DEACTIVATING → ECS deregisters the instance | 0–2 |
//! | DEACTIVATING → STOPPING | 5–30 |
//! | STOPPING → DEPROVISIONING | 5–30 (stop timeout) |
//! | DEPROVISIONING → STOPPED | 10–30 |
//! | a state change → its event reaches the Lambda | 0.5–3 |
//!
//! The Lambda's reconciliation runs every minute (the template's `rate(1 minute)`), over every
//! registered instance, with the task's load as CloudWatch would report it.

use std::fmt;
use std::time::Duration;

use cloudmap_sync::task::{DesiredStatus, LastStatus};
use fastrand::Rng;

use crate::ecs::Task;

/// What happens to the service while the fleet polls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// 100 tasks, nothing changes (reconciliation runs and finds nothing to write).
    Steady,
    /// A rolling deployment of a 100-task service with ECS's defaults (minimum healthy 100 %,
    /// maximum 200 %): 100 new tasks start within 20 s; each old task is stopped once its
    /// replacement's health check passes.
    RollingDeployment,
    /// 10 tasks scale out to 100, the new ones starting within 30 s.
    ScaleOut,
    /// 100 tasks whose CPU load sweeps between 15 % and 85 % over 30 minutes, phase-shifted
    /// per task, ±3 points of noise; reconciliation writes `LB_LOAD` when it moved by 10 points.
    LoadSweep,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Self; 4] = [
        Self::Steady,
        Self::RollingDeployment,
        Self::ScaleOut,
        Self::LoadSweep,
    ];

    /// The name on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Steady => "steady",
            Self::RollingDeployment => "deploy",
            Self::ScaleOut => "scale-out",
            Self::LoadSweep => "load-sweep",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// How long the measured window lasts.
    pub const fn duration(self) -> Duration {
        match self {
            Self::Steady => Duration::from_secs(1800),
            Self::RollingDeployment | Self::ScaleOut => Duration::from_secs(900),
            Self::LoadSweep => Duration::from_secs(3600),
        }
    }

    /// Tasks running when the window opens.
    const fn initial_tasks(self) -> usize {
        match self {
            Self::ScaleOut => 10,
            _ => 100,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Steady => "steady, 100 tasks",
            Self::RollingDeployment => "rolling deployment, 100 tasks",
            Self::ScaleOut => "scale-out 10 → 100",
            Self::LoadSweep => "load sweep, 100 tasks",
        })
    }
}

/// A change ECS makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The task moves to this state (and ECS sends its event).
    State {
        /// The task.
        task: usize,
        /// `lastStatus`.
        last: LastStatus,
        /// `desiredStatus`.
        desired: DesiredStatus,
    },
    /// ECS deregisters the task's instance.
    Deregister {
        /// The task.
        task: usize,
    },
}

/// The scenario drawn: the tasks, which of them run at the start, and what ECS does when
/// (times from the opening of the window).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every task that ever exists in the run.
    pub tasks: Vec<Task>,
    /// Tasks running (registered, healthy) before the run starts.
    pub running: Vec<usize>,
    /// ECS's changes.
    pub changes: Vec<(Duration, Change)>,
    /// Whether the load sweeps.
    pub sweep: bool,
}

fn uniform(rng: &mut Rng, low: f64, high: f64) -> Duration {
    Duration::from_secs_f64(low + (high - low) * rng.f64())
}

impl Plan {
    /// Draws the plan of `scenario`.
    pub fn draw(scenario: Scenario, rng: &mut Rng) -> Self {
        let mut plan = Self {
            tasks: Vec::new(),
            running: Vec::new(),
            changes: Vec::new(),
            sweep: scenario == Scenario::LoadSweep,
        };
        for _ in 0..scenario.initial_tasks() {
            let task = plan.new_task(rng);
            plan.running.push(task);
        }
        match scenario {
            Scenario::Steady | Scenario::LoadSweep => {}
            Scenario::ScaleOut => {
                for _ in 0..90 {
                    let launch = uniform(rng, 0.0, 30.0);
                    let task = plan.new_task(rng);
                    plan.start(task, launch, rng);
                }
            }
            Scenario::RollingDeployment => {
                let old = plan.running.clone();
                for old in old {
                    let launch = uniform(rng, 0.0, 20.0);
                    let task = plan.new_task(rng);
                    let healthy = plan.start(task, launch, rng);
                    plan.stop(old, healthy + uniform(rng, 0.0, 5.0), rng);
                }
            }
        }
        plan.changes.sort_by_key(|(at, _)| *at);
        plan
    }

    fn new_task(&mut self, rng: &mut Rng) -> usize {
        let n = self.tasks.len();
        let load = 30 + rng.u32(0..40);
        let phase = rng.f64() * std::f64::consts::TAU;
        self.tasks.push(Task::new(n, load, phase));
        n
    }

    /// A task's way up from `at`; returns when its health check passes.
    fn start(&mut self, task: usize, at: Duration, rng: &mut Rng) -> Duration {
        let running = DesiredStatus::Running;
        let mut t = at;
        for (last, after) in [
            (LastStatus::Provisioning, (0.0, 0.0)),
            (LastStatus::Pending, (5.0, 15.0)),
            (LastStatus::Activating, (10.0, 40.0)),
            (LastStatus::Running, (2.0, 8.0)),
        ] {
            t += uniform(rng, after.0, after.1);
            self.state(t, task, last, running);
        }
        let healthy = t + uniform(rng, 10.0, 30.0);
        self.tasks[task].healthy_at = Some(healthy);
        healthy
    }

    /// A task's way down from `at` (its desired status turns STOPPED).
    fn stop(&mut self, task: usize, at: Duration, rng: &mut Rng) {
        let stopped = DesiredStatus::Stopped;
        self.state(at, task, LastStatus::Running, stopped);
        let deactivating = at + uniform(rng, 1.0, 3.0);
        self.state(deactivating, task, LastStatus::Deactivating, stopped);
        self.changes.push((
            deactivating + uniform(rng, 0.0, 2.0),
            Change::Deregister { task },
        ));
        let mut t = deactivating;
        for (last, after) in [
            (LastStatus::Stopping, (5.0, 30.0)),
            (LastStatus::Deprovisioning, (5.0, 30.0)),
            (LastStatus::Stopped, (10.0, 30.0)),
        ] {
            t += uniform(rng, after.0, after.1);
            self.state(t, task, last, stopped);
        }
    }

    fn state(&mut self, at: Duration, task: usize, last: LastStatus, desired: DesiredStatus) {
        self.changes.push((
            at,
            Change::State {
                task,
                last,
                desired,
            },
        ));
    }

    /// The CPU load of `task` at `since_open` (time from the opening of the window; negative
    /// before it), as CloudWatch reports it for minute `minute`.
    pub fn load(&self, task: usize, since_open: f64, minute: u64, seed: u64) -> u32 {
        let task_state = &self.tasks[task];
        if !self.sweep {
            return task_state.base_load;
        }
        let wave = (std::f64::consts::TAU * since_open / 1800.0 + task_state.phase).sin();
        let mut noise = Rng::with_seed(seed ^ (task as u64).rotate_left(32) ^ minute);
        let value = 50.0 + 35.0 * wave + (noise.f64() * 6.0 - 3.0);
        // Checked against the range first: the cast cannot truncate or wrap.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let load = value.clamp(0.0, 100.0).round() as u32;
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolling_deployment_replaces_every_task_once() {
        let plan = Plan::draw(Scenario::RollingDeployment, &mut Rng::with_seed(1));
        assert_eq!(plan.tasks.len(), 200);
        assert_eq!(plan.running.len(), 100);
        let count = |wanted: LastStatus, desired: DesiredStatus| {
            plan.changes
                .iter()
                .filter(|(_, c)| {
                    matches!(c, Change::State { last, desired: d, .. } if *last == wanted && *d == desired)
                })
                .count()
        };
        assert_eq!(count(LastStatus::Running, DesiredStatus::Running), 100);
        assert_eq!(count(LastStatus::Running, DesiredStatus::Stopped), 100);
        assert_eq!(count(LastStatus::Stopped, DesiredStatus::Stopped), 100);
        let deregistrations = plan
            .changes
            .iter()
            .filter(|(_, c)| matches!(c, Change::Deregister { .. }))
            .count();
        assert_eq!(deregistrations, 100);
        assert!(plan.changes.windows(2).all(|w| w[0].0 <= w[1].0));
        // Every old task stops after its replacement is healthy: nothing ends before 30 s.
        let first_stop = plan
            .changes
            .iter()
            .find(|(_, c)| {
                matches!(
                    c,
                    Change::State {
                        desired: DesiredStatus::Stopped,
                        ..
                    }
                )
            })
            .map(|(at, _)| *at)
            .unwrap();
        assert!(first_stop >= Duration::from_secs(27), "{first_stop:?}");
    }

    #[test]
    fn the_same_seed_draws_the_same_plan() {
        let a = Plan::draw(Scenario::ScaleOut, &mut Rng::with_seed(3));
        let b = Plan::draw(Scenario::ScaleOut, &mut Rng::with_seed(3));
        assert_eq!(a.changes, b.changes);
        assert_eq!(a.tasks, b.tasks);
        assert_eq!(a.tasks.len(), 100);
    }

    #[test]
    fn loads_sweep_only_in_the_sweep() {
        let sweep = Plan::draw(Scenario::LoadSweep, &mut Rng::with_seed(5));
        let loads: Vec<u32> = (0..30_u32)
            .map(|minute| sweep.load(0, f64::from(minute) * 60.0, u64::from(minute), 9))
            .collect();
        let (low, high) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(*low <= 20 && *high >= 80, "{loads:?}");
        let steady = Plan::draw(Scenario::Steady, &mut Rng::with_seed(5));
        assert_eq!(steady.load(3, 0.0, 0, 9), steady.load(3, 900.0, 15, 9));
    }
}
