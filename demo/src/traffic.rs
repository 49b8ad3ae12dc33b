//! Calls to the demo service through the balancer, and a tally of who served them.
//!
//! Every `Describe` answer names the task and zone that served it, so the tally is what the
//! servers saw, not what the balancer meant to do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cloudmap_balancer::BalancedChannel;
use demo_server::pb::DescribeRequest;
use demo_server::pb::demo_client::DemoClient;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A `Describe` client over the balanced channel.
pub type Client = DemoClient<BalancedChannel>;

/// Deadline of each call: generous, so that only a real failure counts as one.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls served by one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCalls {
    /// The zone the task reported.
    pub zone: String,
    /// Calls it served.
    pub calls: u64,
    /// When it last served a call.
    pub last_served: Option<Instant>,
}

/// Who served how many calls, and how many failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Per task ID.
    pub tasks: BTreeMap<String, TaskCalls>,
    /// Failed calls, per gRPC status code name.
    pub failures: BTreeMap<String, u64>,
    /// The first failure's message, for the report.
    pub first_failure: Option<String>,
}

impl Tally {
    /// Records a call served by `task_id` in `zone`.
    pub fn served(&mut self, task_id: &str, zone: &str, at: Instant) {
        let entry = self
            .tasks
            .entry(task_id.to_owned())
            .or_insert_with(|| TaskCalls {
                zone: zone.to_owned(),
                calls: 0,
                last_served: None,
            });
        entry.calls += 1;
        entry.last_served = Some(entry.last_served.map_or(at, |last| last.max(at)));
    }

    /// Records a failed call.
    pub fn failed(&mut self, status: &tonic::Status) {
        *self
            .failures
            .entry(format!("{:?}", status.code()))
            .or_default() += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(status.message().to_owned());
        }
    }

    /// Calls that succeeded.
    pub fn succeeded(&self) -> u64 {
        self.tasks.values().map(|t| t.calls).sum()
    }

    /// Calls that failed.
    pub fn failed_calls(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Successful calls per zone.
    pub fn per_zone(&self) -> BTreeMap<String, u64> {
        let mut zones = BTreeMap::new();
        for task in self.tasks.values() {
            *zones.entry(task.zone.clone()).or_default() += task.calls;
        }
        zones
    }

    /// The share of successful calls served in `zone` (0 when there were none).
    pub fn zone_share(&self, zone: &str) -> f64 {
        share(
            self.per_zone().get(zone).copied().unwrap_or(0),
            self.succeeded(),
        )
    }

    /// Adds `other`'s counts to this tally.
    pub fn absorb(&mut self, other: Self) {
        for (id, task) in other.tasks {
            let entry = self.tasks.entry(id).or_insert_with(|| TaskCalls {
                calls: 0,
                ..task.clone()
            });
            entry.calls += task.calls;
            entry.last_served = entry.last_served.max(task.last_served);
        }
        for (code, count) in other.failures {
            *self.failures.entry(code).or_default() += count;
        }
        self.first_failure = self.first_failure.take().or(other.first_failure);
    }
}

/// `part / whole`, 0 when `whole` is 0.
#[allow(clippy::cast_precision_loss)] // call counts stay far below 2^52
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

async fn call(client: &mut Client, tally: &Mutex<Tally>) {
    let mut request = tonic::Request::new(DescribeRequest {});
    request.set_timeout(CALL_TIMEOUT);
    let outcome = client.describe(request).await;
    let at = Instant::now();
    let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    match outcome {
        Ok(answer) => {
            let task = answer.into_inner().task.unwrap_or_default();
            tally.served(&task.task_id, &task.zone, at);
        }
        Err(status) => tally.failed(&status),
    }
}

/// Makes `calls` calls with `concurrency` callers at a time and returns the tally.
pub async fn run_calls(client: &Client, calls: u64, concurrency: u64) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut workers = JoinSet::new();
    for worker in 0..concurrency.max(1) {
        // Spread `calls` over the workers; the first ones take the remainder.
        let mine = calls / concurrency.max(1) + u64::from(worker < calls % concurrency.max(1));
        let (mut client, tally) = (client.clone(), Arc::clone(&tally));
        workers.spawn(async move {
            for _ in 0..mine {
                call(&mut client, &tally).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    take(&tally)
}

fn take(tally: &Mutex<Tally>) -> Tally {
    std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Calls that keep going in the background until stopped; the tally can be read off in slices.
#[derive(Debug)]
pub struct Traffic {
    tally: Arc<Mutex<Tally>>,
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
}

impl Traffic {
    /// Starts `concurrency` callers, each pausing `pause` between calls.
    pub fn start(client: &Client, concurrency: u64, pause: Duration) -> Self {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (stop, stopped) = watch::channel(false);
        let mut workers = JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (mut client, tally, stopped) =
                (client.clone(), Arc::clone(&tally), stopped.clone());
            workers.spawn(async move {
                while !*stopped.borrow() {
                    call(&mut client, &tally).await;
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            });
        }
        Self {
            tally,
            stop,
            workers,
        }
    }

    /// The calls since the last `take` (or the start), leaving the count at zero.
    pub fn take(&self) -> Tally {
        take(&self.tally)
    }

    /// Stops the callers (calls in flight finish) and returns the calls since the last `take`.
    pub async fn stop(mut self) -> Tally {
        let _ = self.stop.send(true);
        while self.workers.join_next().await.is_some() {}
        take(&self.tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_per_task_and_zone() {
        let mut tally = Tally::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        tally.served("a1", "eu-central-1a", t1);
        tally.served("a1", "eu-central-1a", t0);
        tally.served("b1", "eu-central-1b", t0);
        tally.failed(&tonic::Status::unavailable("gone"));
        assert_eq!(tally.succeeded(), 3);
        assert_eq!(tally.failed_calls(), 1);
        assert_eq!(
            tally.tasks["a1"].last_served,
            Some(t1),
            "the latest call wins"
        );
        assert_eq!(tally.per_zone()["eu-central-1a"], 2);
        assert!((tally.zone_share("eu-central-1b") - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(tally.zone_share("eu-central-1c"), 0.0);
        assert_eq!(tally.failures["Unavailable"], 1);
        assert_eq!(tally.first_failure.as_deref(), Some("gone"));
    }

    #[test]
    fn absorb_adds_counts() {
        let t0 = Instant::now();
        let mut a = Tally::default();
        a.served("x", "z1", t0);
        let mut b = Tally::default();
        b.served("x", "z1", t0 + Duration::from_millis(1));
        b.served("y", "z2", t0);
        b.failed(&tonic::Status::internal("boom"));
        a.absorb(b);
        assert_eq!(a.tasks["x"].calls, 2);
        assert_eq!(
            a.tasks["x"].last_served,
            Some(t0 + Duration::from_millis(1))
        );
        assert_eq!(a.tasks["y"].calls, 1);
        assert_eq!(a.failed_calls(), 1);
    }

    #[test]
    fn share_of_nothing_is_zero() {
        assert_eq!(share(3, 0), 0.0);
        assert_eq!(share(1, 4), 0.25);
    }
}
