//! When the poller asks Cloud Map next, and whether it lists: a pure function of the last
//! attempt's outcome, the failure streaks and a random draw. The poller (`poll.rs`) only makes
//! the calls.
//!
//! | outcome | next attempt after |
//! |---|---|
//! | revision unchanged, or a listing arrived | `poll_interval ± poll_jitter_percent` |
//! | empty listing held for confirmation | `backoff_base`, then a listing |
//! | throttled, n-th time in a row | `poll_interval × 2^(n−1)`, at most `throttle_backoff_max` (or `poll_interval` if longer), × a uniform draw in `[0.5, 1.5)` |
//! | configuration error | `poll_interval ± poll_jitter_percent` (the service may be created later) |
//! | any other failure, n-th in a row | `backoff_base × 2^(n−1)`, at most `backoff_max`, ±10 % |
//!
//! A listing is due, instead of a revision check, when none was made yet, when the last one is
//! older than the full-refresh interval (`full_refresh_interval_with_lb_health` when every
//! instance of the last listing carries `LB_HEALTH`, else `full_refresh_interval`), or when one
//! of the rows above asks for it. The first full refresh after a poller's first listing comes
//! earlier, at a random point in the second half of the interval (`½ × interval × draw` early),
//! so that pollers started together (a fleet deployed at once, a server's pollers for every
//! service its clients ask for) do not list in the same second every interval after.

use std::time::Duration;

use tokio::time::Instant;

use super::DiscoveryOptions;

/// How an attempt went, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The revision is the one the snapshot in service was listed at.
    Unchanged,
    /// A listing arrived; `carries_lb_health` when every instance in it has `LB_HEALTH`.
    Listed { carries_lb_health: bool },
    /// An empty listing arrived while the snapshot in service has instances: it is held until
    /// one more listing confirms it.
    EmptyHeld,
    /// Cloud Map throttled the call.
    Throttled,
    /// A configuration error (no such service or namespace, access denied).
    Rejected,
    /// Anything else failed.
    Failed,
}

#[derive(Debug)]
pub(super) struct Schedule {
    options: DiscoveryOptions,
    failures: u32,
    throttles: u32,
    last_list: Option<Instant>,
    full_refresh: Duration,
    list_next: bool,
}

impl Schedule {
    pub(super) fn new(options: DiscoveryOptions) -> Self {
        Self {
            full_refresh: options.full_refresh_interval,
            options,
            failures: 0,
            throttles: 0,
            last_list: None,
            list_next: false,
        }
    }

    /// Whether the attempt at `now` lists (rather than checks the revision first).
    pub(super) fn list_due(&self, now: Instant) -> bool {
        self.list_next
            || self
                .last_list
                .is_none_or(|at| now.saturating_duration_since(at) >= self.full_refresh)
    }

    /// Records the outcome of the attempt made at `now`; returns how long to wait before the
    /// next one. `draw` is uniform in `[0, 1)`.
    pub(super) fn after(&mut self, outcome: Outcome, now: Instant, draw: f64) -> Duration {
        let options = &self.options;
        match outcome {
            Outcome::Unchanged | Outcome::Rejected => {
                self.failures = 0;
                self.throttles = 0;
                self.poll(draw)
            }
            Outcome::Listed { carries_lb_health } => {
                self.failures = 0;
                self.throttles = 0;
                self.list_next = false;
                self.full_refresh = if carries_lb_health {
                    options.full_refresh_interval_with_lb_health
                } else {
                    options.full_refresh_interval
                };
                // The first listing counts as made up to half an interval earlier: that spreads
                // the phase of pollers that started together. The same draw sets the next poll;
                // both are uniform, and their correlation within one poller spreads nothing less.
                let early = if self.last_list.is_none() {
                    self.full_refresh.mul_f64(0.5 * draw)
                } else {
                    Duration::ZERO
                };
                self.last_list = Some(now.checked_sub(early).unwrap_or(now));
                self.poll(draw)
            }
            Outcome::EmptyHeld => {
                self.failures = 0;
                self.throttles = 0;
                self.list_next = true;
                options.backoff_base
            }
            Outcome::Throttled => {
                self.throttles = self.throttles.saturating_add(1);
                let nominal = doubled(options.poll_interval, self.throttles)
                    .min(options.throttle_backoff_max.max(options.poll_interval));
                nominal.mul_f64(0.5 + draw)
            }
            Outcome::Failed => {
                self.failures = self.failures.saturating_add(1);
                let nominal = doubled(options.backoff_base, self.failures).min(options.backoff_max);
                nominal.mul_f64(0.9 + 0.2 * draw)
            }
        }
    }

    /// `poll_interval ± poll_jitter_percent`.
    fn poll(&self, draw: f64) -> Duration {
        let jitter = f64::from(self.options.poll_jitter_percent.min(50)) / 100.0;
        self.options
            .poll_interval
            .mul_f64(1.0 - jitter + 2.0 * jitter * draw)
    }
}

/// `base × 2^(n − 1)` for the n-th attempt in a row.
fn doubled(base: Duration, n: u32) -> Duration {
    base.saturating_mul(1 << n.saturating_sub(1).min(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn options() -> DiscoveryOptions {
        DiscoveryOptions {
            poll_interval: secs(20.0),
            poll_jitter_percent: 5,
            full_refresh_interval: secs(60.0),
            full_refresh_interval_with_lb_health: secs(300.0),
            backoff_base: secs(1.0),
            backoff_max: secs(30.0),
            throttle_backoff_max: secs(120.0),
        }
    }

    #[test]
    fn polls_at_the_interval_within_the_jitter() {
        let mut schedule = Schedule::new(options());
        let now = Instant::now();
        assert!(schedule.list_due(now), "the first attempt lists");
        let listed = Outcome::Listed {
            carries_lb_health: false,
        };
        assert_eq!(schedule.after(listed, now, 0.0), secs(19.0));
        assert_eq!(schedule.after(Outcome::Unchanged, now, 0.5), secs(20.0));
        assert_eq!(schedule.after(Outcome::Unchanged, now, 0.75), secs(20.5));
        assert!(!schedule.list_due(now + secs(59.9)));
        assert!(schedule.list_due(now + secs(60.0)));
    }

    #[test]
    fn instances_that_carry_lb_health_are_listed_less_often() {
        let mut schedule = Schedule::new(options());
        let now = Instant::now();
        let listed = Outcome::Listed {
            carries_lb_health: true,
        };
        schedule.after(listed, now, 0.0);
        assert!(!schedule.list_due(now + secs(299.0)));
        assert!(schedule.list_due(now + secs(300.0)));
        // Back to the short interval as soon as one instance lacks it.
        let later = now + secs(300.0);
        let plain = Outcome::Listed {
            carries_lb_health: false,
        };
        schedule.after(plain, later, 0.5);
        assert!(schedule.list_due(later + secs(60.0)));
    }

    #[test]
    fn the_first_full_refresh_is_spread_over_the_second_half_of_the_interval() {
        let listed = Outcome::Listed {
            carries_lb_health: false,
        };
        let now = Instant::now() + secs(1000.0);
        for (draw, due) in [(0.0, 60.0), (0.5, 45.0), (0.999, 30.03)] {
            let mut schedule = Schedule::new(options());
            schedule.after(listed, now, draw);
            assert!(!schedule.list_due(now + secs(due - 0.01)), "draw {draw}");
            assert!(schedule.list_due(now + secs(due)), "draw {draw}");
            // Every later one comes a whole interval after the listing before it.
            let again = now + secs(due);
            schedule.after(listed, again, draw);
            assert!(!schedule.list_due(again + secs(59.99)), "draw {draw}");
            assert!(schedule.list_due(again + secs(60.0)), "draw {draw}");
        }
    }

    #[test]
    fn throttling_slows_down_by_poll_intervals_with_wide_jitter() {
        let mut schedule = Schedule::new(options());
        let now = Instant::now();
        let waits: Vec<Duration> = (0..5)
            .map(|_| schedule.after(Outcome::Throttled, now, 0.5))
            .collect();
        assert_eq!(
            waits,
            [secs(20.0), secs(40.0), secs(80.0), secs(120.0), secs(120.0)]
        );
        assert_eq!(schedule.after(Outcome::Throttled, now, 0.0), secs(60.0));
        assert_eq!(schedule.after(Outcome::Throttled, now, 0.999), secs(179.88));
        // A success ends the streak.
        schedule.after(Outcome::Unchanged, now, 0.5);
        assert_eq!(schedule.after(Outcome::Throttled, now, 0.5), secs(20.0));
    }

    #[test]
    fn outages_back_off_exponentially_from_the_base() {
        let mut schedule = Schedule::new(options());
        let now = Instant::now();
        let waits: Vec<Duration> = (0..7)
            .map(|_| schedule.after(Outcome::Failed, now, 0.5))
            .collect();
        let expected = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0].map(secs);
        assert_eq!(waits, expected);
        assert_eq!(schedule.after(Outcome::Failed, now, 0.0), secs(27.0));
    }

    #[test]
    fn a_configuration_error_is_retried_at_the_poll_interval() {
        let mut schedule = Schedule::new(options());
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(schedule.after(Outcome::Rejected, now, 0.5), secs(20.0));
        }
        assert!(schedule.list_due(now), "nothing listed yet");
    }

    #[test]
    fn an_empty_listing_is_confirmed_after_the_backoff_base() {
        let mut schedule = Schedule::new(options());
        let now = Instant::now();
        let listed = Outcome::Listed {
            carries_lb_health: false,
        };
        schedule.after(listed, now, 0.5);
        assert_eq!(schedule.after(Outcome::EmptyHeld, now, 0.5), secs(1.0));
        assert!(schedule.list_due(now + secs(1.0)));
        schedule.after(listed, now + secs(1.0), 0.5);
        assert!(!schedule.list_due(now + secs(2.0)));
    }
}
