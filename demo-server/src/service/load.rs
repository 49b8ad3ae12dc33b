//! The server's shared state: identity, call counters and the artificial load knob.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::pb;

/// The artificial load added to every response message: a sleep, then CPU work (a busy loop on
/// a blocking thread, so it shows in CPU metrics such as Container Insights').
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    latency: Duration,
    cpu_work: Duration,
}

impl Load {
    /// The most latency that can be set: ten minutes.
    pub const MAX_LATENCY: Duration = Duration::from_secs(600);
    /// The most CPU work per message that can be set: one minute.
    pub const MAX_CPU_WORK: Duration = Duration::from_secs(60);

    /// A load of `latency` and `cpu_work` per response message; `None` above the maxima.
    pub fn new(latency: Duration, cpu_work: Duration) -> Option<Self> {
        (latency <= Self::MAX_LATENCY && cpu_work <= Self::MAX_CPU_WORK)
            .then_some(Self { latency, cpu_work })
    }

    /// The latency added before each response message.
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// The CPU work done before each response message.
    pub fn cpu_work(&self) -> Duration {
        self.cpu_work
    }

    /// Waits and works as much as this load says.
    pub(crate) async fn apply(self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if !self.cpu_work.is_zero() {
            let work = self.cpu_work;
            // A blocking thread, so the busy loop never stalls the runtime's workers. A join
            // error (a panic in the loop) cannot happen and would only shorten the work.
            let _ = tokio::task::spawn_blocking(move || burn(work)).await;
        }
    }
}

/// Keeps one CPU busy for `work`.
fn burn(work: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < work {
        for _ in 0..1_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// What every service of one server shares.
#[derive(Debug)]
pub(crate) struct ServerState {
    task: pb::Task,
    calls: AtomicU64,
    in_flight: AtomicU32,
    latency_ms: AtomicU32,
    cpu_work_ms: AtomicU32,
    draining: AtomicBool,
}

impl ServerState {
    pub(crate) fn new(task: pb::Task, load: Load) -> Self {
        let state = Self {
            task,
            calls: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            latency_ms: AtomicU32::new(0),
            cpu_work_ms: AtomicU32::new(0),
            draining: AtomicBool::new(false),
        };
        state.set_load(load);
        state
    }

    /// The serving task, as answers report it.
    pub(crate) fn task(&self) -> pb::Task {
        self.task.clone()
    }

    /// Counts a Demo call as started; it counts as in flight until the guard is dropped.
    pub(crate) fn begin_call(self: &Arc<Self>) -> CallGuard {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        CallGuard {
            state: Arc::clone(self),
            load: self.current_load(),
        }
    }

    /// Demo calls in flight now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_load(&self, load: Load) {
        self.latency_ms
            .store(millis(load.latency), Ordering::Relaxed);
        self.cpu_work_ms
            .store(millis(load.cpu_work), Ordering::Relaxed);
    }

    pub(crate) fn current_load(&self) -> Load {
        Load {
            latency: Duration::from_millis(self.latency_ms.load(Ordering::Relaxed).into()),
            cpu_work: Duration::from_millis(self.cpu_work_ms.load(Ordering::Relaxed).into()),
        }
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The load report answers carry.
    pub(crate) fn report(&self) -> pb::ServerLoad {
        pb::ServerLoad {
            calls: self.calls.load(Ordering::Relaxed),
            in_flight: self.in_flight(),
            latency_ms: self.latency_ms.load(Ordering::Relaxed),
            cpu_work_ms: self.cpu_work_ms.load(Ordering::Relaxed),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }
}

/// One Demo call in flight. The load in force when it started applies to all its messages.
#[derive(Debug)]
pub(crate) struct CallGuard {
    state: Arc<ServerState>,
    load: Load,
}

impl CallGuard {
    /// Waits and works as the call's load says, before one response message.
    pub(crate) async fn apply_load(&self) {
        self.load.apply().await;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_bounded() {
        assert!(Load::new(Load::MAX_LATENCY, Load::MAX_CPU_WORK).is_some());
        assert!(Load::new(Load::MAX_LATENCY + Duration::from_millis(1), Duration::ZERO).is_none());
        assert!(
            Load::new(
                Duration::ZERO,
                Load::MAX_CPU_WORK + Duration::from_millis(1)
            )
            .is_none()
        );
    }

    #[test]
    fn calls_count_while_their_guard_lives() {
        let load = Load::new(Duration::from_millis(5), Duration::from_millis(1)).unwrap();
        let state = Arc::new(ServerState::new(pb::Task::default(), load));
        let first = state.begin_call();
        let second = state.begin_call();
        assert_eq!(
            state.report(),
            pb::ServerLoad {
                calls: 2,
                in_flight: 2,
                latency_ms: 5,
                cpu_work_ms: 1,
                draining: false,
            }
        );
        drop(first);
        state.set_load(Load::default());
        state.set_draining();
        let report = state.report();
        assert_eq!((report.calls, report.in_flight), (2, 1));
        assert_eq!((report.latency_ms, report.cpu_work_ms), (0, 0));
        assert!(report.draining);
        // A call keeps the load it started with.
        assert_eq!(second.load, load);
        drop(second);
        assert_eq!(state.in_flight(), 0);
    }

    #[tokio::test]
    async fn cpu_work_is_done_before_the_answer() {
        // A lower bound only: the work cannot end early, however busy the machine is.
        let load = Load::new(Duration::ZERO, Duration::from_millis(20)).unwrap();
        let start = Instant::now();
        load.apply().await;
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_a_sleep_of_that_long() {
        let load = Load::new(Duration::from_millis(1_500), Duration::ZERO).unwrap();
        let start = tokio::time::Instant::now();
        load.apply().await;
        assert_eq!(start.elapsed(), Duration::from_millis(1_500));
    }
}
