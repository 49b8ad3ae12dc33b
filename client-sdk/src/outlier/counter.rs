//! One instance's call counter: successes and failures since the last sweep, and the current run
//! of consecutive failures. Written by calls (relaxed atomics), read by the sweep.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Calls of one instance. A50's two buckets become an atomic swap: the sweep takes the counts of
/// the interval that ended and the calls count into a fresh one.
#[derive(Debug, Default)]
pub(crate) struct CallCounter {
    successes: AtomicU64,
    failures: AtomicU64,
    consecutive: AtomicU32,
}

impl CallCounter {
    /// A call succeeded: one add, and a store only when a failure run ends.
    #[inline]
    pub(crate) fn success(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// A call failed; returns the length of the failure run it extends.
    #[inline]
    pub(crate) fn failure(&self) -> u32 {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// Starts a new failure run (after the instance was ejected for the last one).
    pub(crate) fn reset_run(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
    }

    /// (successes, failures) since the last harvest, and the current failure run, left as they
    /// are (for stats).
    pub(crate) fn peek(&self) -> (u64, u64, u32) {
        (
            self.successes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.consecutive.load(Ordering::Relaxed),
        )
    }

    /// Takes (successes, failures) since the last harvest.
    pub(crate) fn harvest(&self) -> (u64, u64) {
        (
            self.successes.swap(0, Ordering::Relaxed),
            self.failures.swap(0, Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_and_harvests() {
        let c = CallCounter::default();
        assert_eq!(c.failure(), 1);
        assert_eq!(c.failure(), 2);
        c.success();
        assert_eq!(c.failure(), 1);
        assert_eq!(c.peek(), (1, 3, 1));
        assert_eq!(c.harvest(), (1, 3));
        assert_eq!(c.harvest(), (0, 0));
        c.reset_run();
        assert_eq!(c.failure(), 1);
    }
}
