//! Sub-millisecond sleeps for async code, without spinning.
//!
//! tokio's timer wheel has 1 ms slots, so `tokio::time::sleep(335 µs)` takes 1–2 ms. Here one
//! thread per process keeps the deadlines in a heap and waits for the earliest on a condition
//! variable with a nanosecond timeout (a futex wait, which Linux backs with a high-resolution
//! timer: it wakes within the thread's timer slack, 50 µs by default, of the deadline). It then
//! wakes the tasks whose deadlines have passed. Per sleep that is one lock, one heap push and at
//! most one notification; the thread sleeps whenever nothing is due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Waits `duration`, to within the timer slack (see the module docs).
pub(crate) fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: Instant::now() + duration,
    }
}

/// The future of [`sleep`].
#[derive(Debug)]
pub(crate) struct Sleep {
    deadline: Instant,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        // A poll before the deadline queues the current waker; an entry left from an earlier
        // poll wakes a task that has moved on, which costs it a spurious poll and nothing else.
        Timer::global().schedule(self.deadline, cx.waker().clone());
        Poll::Pending
    }
}

struct Entry {
    deadline: Instant,
    /// Breaks ties, so entries order totally without comparing wakers.
    sequence: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.sequence) == (other.deadline, other.sequence)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.sequence).cmp(&(other.deadline, other.sequence))
    }
}

#[derive(Default)]
struct Queue {
    entries: BinaryHeap<Reverse<Entry>>,
    sequence: u64,
}

struct Timer {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Timer {
    /// The process's timer, its thread started on first use.
    fn global() -> &'static Self {
        static TIMER: OnceLock<&'static Timer> = OnceLock::new();
        TIMER.get_or_init(|| {
            let timer: &'static Self = Box::leak(Box::new(Self {
                queue: Mutex::new(Queue::default()),
                changed: Condvar::new(),
            }));
            // Without the thread every sleep would hang: failing to start it is fatal, like a
            // failure to start the runtime.
            std::thread::Builder::new()
                .name("rtt-timer".into())
                .spawn(move || timer.run())
                .expect("starting the round-trip timer thread");
            timer
        })
    }

    fn schedule(&self, deadline: Instant, waker: Waker) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let earliest = queue
            .entries
            .peek()
            .is_none_or(|Reverse(first)| deadline < first.deadline);
        queue.sequence += 1;
        let sequence = queue.sequence;
        queue.entries.push(Reverse(Entry {
            deadline,
            sequence,
            waker,
        }));
        drop(queue);
        // Only a new earliest deadline changes how long the thread should wait.
        if earliest {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut due = Vec::new();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            while queue
                .entries
                .peek()
                .is_some_and(|Reverse(first)| first.deadline <= now)
            {
                if let Some(Reverse(entry)) = queue.entries.pop() {
                    due.push(entry.waker);
                }
            }
            if !due.is_empty() {
                // Wake outside the lock: a woken task may schedule again at once.
                drop(queue);
                due.drain(..).for_each(Waker::wake);
                queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            queue = match queue.entries.peek() {
                None => self
                    .changed
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(Reverse(first)) => {
                    let wait = first.deadline.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_never_ends_before_its_deadline() {
        // Lower bounds only: how late a sleep ends depends on the machine and belongs in a
        // benchmark (see BENCHMARKS.md), not in a test.
        for micros in [0, 1, 50, 335, 1035, 2_500] {
            let duration = Duration::from_micros(micros);
            let start = Instant::now();
            sleep(duration).await;
            assert!(start.elapsed() >= duration, "{micros} µs");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sleeps_each_end_after_their_own_deadline() {
        let mut tasks = tokio::task::JoinSet::new();
        // Deadlines pushed in an order unlike their order in time.
        for micros in [900u64, 100, 500, 300, 700, 100, 0] {
            tasks.spawn(async move {
                let duration = Duration::from_micros(micros);
                let start = Instant::now();
                sleep(duration).await;
                (micros, start.elapsed() >= duration)
            });
        }
        let mut ended = 0;
        while let Some(outcome) = tasks.join_next().await {
            let (micros, after_deadline) = outcome.unwrap_or((0, false));
            assert!(after_deadline, "{micros} µs");
            ended += 1;
        }
        assert_eq!(ended, 7);
    }
}
