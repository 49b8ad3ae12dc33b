//! The adaptive zone controller: how much of the local zone's traffic to spill when the caller
//! fleet is unknown.

// The controller runs in the balancer (feature `tonic`); without it only its options are used.
#![cfg_attr(not(feature = "tonic"), allow(dead_code))]

use std::time::Duration;

use super::SpillLevel;

/// Settings of the adaptive zone controller (see the [module docs](super#adaptive-mode)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AdaptiveOptions {
    /// How often the controller looks at the latest observations and moves. Default 500 ms.
    pub tick: Duration,
    /// Time constant of the latency averages (exponentially weighted). Default 2 s.
    pub latency_window: Duration,
    /// The local zone is slow when its latency exceeds the reference by this factor...
    /// Default 1.5.
    pub slow_ratio: f64,
    /// ...and by at least this much (differences below are noise, e.g. sub-millisecond
    /// jitter on a fast service). Default 2 ms.
    pub min_latency_gap: Duration,
    /// The local zone has recovered when its latency is below the reference times this factor,
    /// or within half of `min_latency_gap` of it. Default 1.2. Between this and `slow_ratio`
    /// the controller holds (hysteresis).
    pub recover_ratio: f64,
    /// The local zone is overloaded when its mean `LB_LOAD` exceeds the other zones' by this
    /// many percentage points. Default 20.
    pub cpu_gap: u8,
    /// ...and has recovered when the difference is below this. Default 10.
    pub cpu_recover_gap: u8,
    /// How many consecutive ticks a signal must hold before the level moves (a single slow or
    /// fast tick, e.g. a garbage-collection pause or a scheduling hiccup, moves nothing).
    /// Default 2.
    pub confirm_ticks: u32,
    /// How much of the spillable range one tick adds while overloaded. Default 0.1.
    pub step_up: f64,
    /// How much one tick gives back while recovered: slower than `step_up`, so a zone that just
    /// recovered is not flooded at once. Default 0.05.
    pub step_down: f64,
    /// The local latency baseline is the lowest average seen over this window while nothing is
    /// spilled; it is frozen while spilling, so an overload never becomes the new normal.
    /// Default 60 s.
    pub baseline_window: Duration,
    /// Remote latency is compared against only while it is this recent (calls left the zone
    /// lately); otherwise the local baseline is the reference. The local latency must be this
    /// recent too: without local calls for this long there is no latency signal at all (only
    /// `LB_LOAD` counts). Default 10 s.
    pub remote_fresh: Duration,
}

impl Default for AdaptiveOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            latency_window: Duration::from_secs(2),
            slow_ratio: 1.5,
            min_latency_gap: Duration::from_millis(2),
            recover_ratio: 1.2,
            cpu_gap: 20,
            cpu_recover_gap: 10,
            confirm_ticks: 2,
            step_up: 0.1,
            step_down: 0.05,
            baseline_window: Duration::from_secs(60),
            remote_fresh: Duration::from_secs(10),
        }
    }
}

/// Calls completed since the last tick, in one direction (local or remote).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LatencySample {
    /// Completed calls.
    pub(crate) calls: u64,
    /// Sum of their latencies.
    pub(crate) total_nanos: u64,
}

impl LatencySample {
    #[allow(clippy::cast_precision_loss)]
    fn mean_seconds(self) -> Option<f64> {
        (self.calls > 0).then(|| self.total_nanos as f64 / self.calls as f64 / 1e9)
    }
}

/// What the controller sees at one tick.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Observation {
    /// Monotonic time of the tick.
    pub(crate) now: Duration,
    /// Calls served in the local zone since the last tick.
    pub(crate) local: LatencySample,
    /// Calls served in other zones since the last tick.
    pub(crate) remote: LatencySample,
    /// Capacity-weighted mean `LB_LOAD` of the local zone, when known.
    pub(crate) cpu_local: Option<f64>,
    /// Capacity-weighted mean `LB_LOAD` of the other zones, when known.
    pub(crate) cpu_remote: Option<f64>,
}

/// What a tick decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The local zone is slow or overloaded relative to the reference: spill more.
    Overloaded,
    /// Inside the hysteresis band, or nothing to go by: keep the spill level.
    Hold,
    /// The local zone is back within the band: spill less.
    Recovered,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Signal {
    Hot,
    Band,
    Calm,
    Unknown,
}

/// Exponentially weighted moving average over irregular samples.
#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    value: Option<f64>,
    last: Duration,
}

impl Ewma {
    fn update(&mut self, now: Duration, sample: f64, window: Duration) {
        self.value = Some(match self.value {
            None => sample,
            Some(value) => {
                let dt = now.saturating_sub(self.last).as_secs_f64();
                let alpha = 1.0 - (-dt / window.as_secs_f64().max(1e-9)).exp();
                value + alpha * (sample - value)
            }
        });
        self.last = now;
    }

    fn fresh(&self, now: Duration, max_age: Duration) -> Option<f64> {
        self.value
            .filter(|_| now.saturating_sub(self.last) <= max_age)
    }
}

/// Minimum over a sliding window, kept in four buckets (no allocation).
#[derive(Debug, Clone, Copy, Default)]
struct WindowedMin {
    buckets: [Option<(u64, f64)>; 4],
    last_known: Option<f64>,
}

impl WindowedMin {
    fn bucket(now: Duration, window: Duration) -> u64 {
        let width = (window.as_nanos() / 4).max(1);
        u64::try_from(now.as_nanos() / width).unwrap_or(u64::MAX)
    }

    fn update(&mut self, now: Duration, value: f64, window: Duration) {
        let id = Self::bucket(now, window);
        #[allow(clippy::cast_possible_truncation)] // id % 4 < 4
        let slot = &mut self.buckets[(id % 4) as usize];
        *slot = match *slot {
            Some((bucket, min)) if bucket == id => Some((id, min.min(value))),
            _ => Some((id, value)),
        };
        self.last_known = self.current(now, window);
    }

    fn current(&self, now: Duration, window: Duration) -> Option<f64> {
        let id = Self::bucket(now, window);
        self.buckets
            .iter()
            .flatten()
            .filter(|(bucket, _)| id.saturating_sub(*bucket) < 4)
            .map(|&(_, min)| min)
            .reduce(f64::min)
    }

    /// The windowed minimum, or the last one known when the window has no samples (frozen).
    fn get(&self, now: Duration, window: Duration) -> Option<f64> {
        self.current(now, window).or(self.last_known)
    }
}

/// The controller: a spill level in [0, 1] that rises step by step while the local zone is
/// overloaded, falls step by step once it has recovered, and holds in between.
#[derive(Debug, Clone)]
pub(crate) struct ZoneController {
    options: AdaptiveOptions,
    spill: f64,
    local: Ewma,
    remote: Ewma,
    baseline: WindowedMin,
    last: Verdict,
    /// Consecutive ticks that said "overloaded" / "recovered".
    hot_streak: u32,
    calm_streak: u32,
}

impl ZoneController {
    pub(crate) fn new(options: AdaptiveOptions) -> Self {
        Self {
            options,
            spill: 0.0,
            local: Ewma::default(),
            remote: Ewma::default(),
            baseline: WindowedMin::default(),
            last: Verdict::Hold,
            hot_streak: 0,
            calm_streak: 0,
        }
    }

    /// Takes one tick's observations and moves the spill level.
    pub(crate) fn observe(&mut self, obs: &Observation) -> Verdict {
        let o = &self.options;
        if let Some(mean) = obs.local.mean_seconds() {
            self.local.update(obs.now, mean, o.latency_window);
            if self.spill == 0.0
                && let Some(value) = self.local.value
            {
                self.baseline.update(obs.now, value, o.baseline_window);
            }
        }
        if let Some(mean) = obs.remote.mean_seconds() {
            self.remote.update(obs.now, mean, o.latency_window);
        }

        let local = self.local.fresh(obs.now, o.remote_fresh);
        let reference = self
            .remote
            .fresh(obs.now, o.remote_fresh)
            .or_else(|| self.baseline.get(obs.now, o.baseline_window));
        let gap = o.min_latency_gap.as_secs_f64();
        let latency = match (local, reference) {
            (Some(l), Some(r)) if l > r * o.slow_ratio && l - r > gap => Signal::Hot,
            (Some(l), Some(r)) if l < r * o.recover_ratio || l - r < gap / 2.0 => Signal::Calm,
            (Some(_), Some(_)) => Signal::Band,
            _ => Signal::Unknown,
        };
        let cpu = match (obs.cpu_local, obs.cpu_remote) {
            (Some(l), Some(r)) if l - r > f64::from(o.cpu_gap) => Signal::Hot,
            (Some(l), Some(r)) if l - r < f64::from(o.cpu_recover_gap) => Signal::Calm,
            (Some(_), Some(_)) => Signal::Band,
            _ => Signal::Unknown,
        };

        let signal = if latency == Signal::Hot || cpu == Signal::Hot {
            Verdict::Overloaded
        } else if latency != Signal::Band
            && cpu != Signal::Band
            && (latency == Signal::Calm || cpu == Signal::Calm)
        {
            Verdict::Recovered
        } else {
            Verdict::Hold
        };
        (self.hot_streak, self.calm_streak) = match signal {
            Verdict::Overloaded => (self.hot_streak.saturating_add(1), 0),
            Verdict::Recovered => (0, self.calm_streak.saturating_add(1)),
            Verdict::Hold => (0, 0),
        };
        let confirm = o.confirm_ticks.max(1);
        let verdict = match signal {
            Verdict::Overloaded if self.hot_streak >= confirm => Verdict::Overloaded,
            Verdict::Recovered if self.calm_streak >= confirm => Verdict::Recovered,
            _ => Verdict::Hold,
        };
        self.spill = match verdict {
            Verdict::Overloaded => (self.spill + o.step_up).min(1.0),
            Verdict::Recovered => (self.spill - o.step_down).max(0.0),
            Verdict::Hold => self.spill,
        };
        self.last = verdict;
        verdict
    }

    /// The spill level, 0 (everything local) to 1 (spread by capacity).
    pub(crate) fn spill(&self) -> f64 {
        self.spill
    }

    /// The spill level for the picker.
    pub(crate) fn level(&self) -> SpillLevel {
        SpillLevel::from_fraction(self.spill)
    }

    /// The last verdict.
    pub(crate) fn verdict(&self) -> Verdict {
        self.last
    }

    /// Average latency of local calls, when any were seen.
    pub(crate) fn local_latency(&self) -> Option<Duration> {
        self.local.value.map(Duration::from_secs_f64)
    }

    /// Average latency of calls to other zones, when any were seen.
    pub(crate) fn remote_latency(&self) -> Option<Duration> {
        self.remote.value.map(Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(500);

    fn ms(n: u64) -> LatencySample {
        LatencySample {
            calls: 100,
            total_nanos: 100 * n * 1_000_000,
        }
    }

    /// Runs `ticks` ticks with the given latencies (remote only while spilling, as in reality)
    /// and returns the spill level after each.
    fn run(
        controller: &mut ZoneController,
        clock: &mut Duration,
        ticks: usize,
        local_ms: u64,
        remote_ms: u64,
    ) -> Vec<f64> {
        (0..ticks)
            .map(|_| {
                *clock += TICK;
                let remote = if controller.spill() > 0.0 {
                    ms(remote_ms)
                } else {
                    LatencySample::default()
                };
                controller.observe(&Observation {
                    now: *clock,
                    local: ms(local_ms),
                    remote,
                    ..Observation::default()
                });
                controller.spill()
            })
            .collect()
    }

    fn monotonic(levels: &[f64], rising: bool) -> bool {
        levels
            .windows(2)
            .all(|w| if rising { w[1] >= w[0] } else { w[1] <= w[0] })
    }

    #[test]
    fn a_healthy_local_zone_keeps_everything() {
        let mut c = ZoneController::new(AdaptiveOptions::default());
        let mut clock = Duration::ZERO;
        let levels = run(&mut c, &mut clock, 200, 5, 6);
        assert!(levels.iter().all(|&s| s == 0.0));
    }

    /// Whether every move from one level to the next (starting at `from`) is at most `step`.
    fn steps_at_most(from: f64, levels: &[f64], step: f64) -> bool {
        std::iter::once(&from)
            .chain(levels)
            .zip(levels)
            .all(|(a, b)| (b - a).abs() <= step + 1e-9)
    }

    #[test]
    fn a_slow_local_zone_spills_gradually_and_recedes_after_recovery() {
        let options = AdaptiveOptions::default();
        let mut c = ZoneController::new(options.clone());
        let mut clock = Duration::ZERO;
        run(&mut c, &mut clock, 40, 5, 6);
        assert_eq!(c.spill(), 0.0);

        let rising = run(&mut c, &mut clock, 40, 50, 6);
        assert!(monotonic(&rising, true), "{rising:?}");
        // Gradual: one step per tick at most, every tick.
        assert!(steps_at_most(0.0, &rising, options.step_up), "{rising:?}");
        assert!((c.spill() - 1.0).abs() < 1e-9, "{rising:?}");

        let falling = run(&mut c, &mut clock, 60, 5, 6);
        assert!(monotonic(&falling, false), "{falling:?}");
        assert!(
            steps_at_most(1.0, &falling, options.step_down),
            "{falling:?}"
        );
        assert_eq!(c.spill(), 0.0, "{falling:?}");
    }

    #[test]
    fn inside_the_band_it_holds_without_flapping() {
        // Averages that follow within a tick or two, so the test controls the levels.
        let mut c = ZoneController::new(AdaptiveOptions {
            latency_window: Duration::from_millis(250),
            ..AdaptiveOptions::default()
        });
        let mut clock = Duration::ZERO;
        run(&mut c, &mut clock, 40, 10, 11);
        // Overloaded long enough to spill a little...
        run(&mut c, &mut clock, 4, 40, 10);
        // ...then local sits at 1.3x the remote zones: once the averages have settled there,
        // inside the band, nothing moves, whatever the noise between 1.3x and 1.4x.
        let noisy = |n: usize| if n.is_multiple_of(2) { 13 } else { 14 };
        for n in 0..20 {
            run(&mut c, &mut clock, 1, noisy(n), 10);
        }
        let reached = c.spill();
        assert!(reached > 0.0 && reached < 1.0, "{reached}");
        let mut levels = Vec::new();
        for n in 0..100 {
            levels.extend(run(&mut c, &mut clock, 1, noisy(n), 10));
        }
        assert!(levels.iter().all(|&s| s == reached), "{levels:?}");
    }

    #[test]
    fn sub_millisecond_differences_are_noise() {
        let mut c = ZoneController::new(AdaptiveOptions::default());
        let mut clock = Duration::ZERO;
        // 0.2 ms baseline, then 0.9 ms: 4.5x but only 0.7 ms slower.
        let fast = LatencySample {
            calls: 10,
            total_nanos: 10 * 200_000,
        };
        let slower = LatencySample {
            calls: 10,
            total_nanos: 10 * 900_000,
        };
        for sample in [fast; 20].into_iter().chain([slower; 40]) {
            clock += TICK;
            c.observe(&Observation {
                now: clock,
                local: sample,
                ..Observation::default()
            });
        }
        assert_eq!(c.spill(), 0.0);
    }

    #[test]
    fn reported_cpu_gap_spills_and_recovers_with_hysteresis() {
        let mut c = ZoneController::new(AdaptiveOptions {
            confirm_ticks: 1,
            ..AdaptiveOptions::default()
        });
        let mut clock = Duration::ZERO;
        let mut tick = |c: &mut ZoneController, local: f64, remote: f64| {
            clock += TICK;
            c.observe(&Observation {
                now: clock,
                cpu_local: Some(local),
                cpu_remote: Some(remote),
                ..Observation::default()
            })
        };
        assert_eq!(tick(&mut c, 85.0, 50.0), Verdict::Overloaded);
        assert_eq!(tick(&mut c, 85.0, 50.0), Verdict::Overloaded);
        assert!((c.spill() - 0.2).abs() < 1e-9);
        assert_eq!(tick(&mut c, 65.0, 50.0), Verdict::Hold);
        assert_eq!(tick(&mut c, 55.0, 50.0), Verdict::Recovered);
        assert!((c.spill() - 0.15).abs() < 1e-9);
        // Unknown load never moves it.
        clock += TICK;
        assert_eq!(
            c.observe(&Observation {
                now: clock,
                ..Observation::default()
            }),
            Verdict::Hold
        );
    }

    #[test]
    fn a_single_odd_tick_moves_nothing() {
        let mut c = ZoneController::new(AdaptiveOptions::default());
        let mut clock = Duration::ZERO;
        let mut tick = |c: &mut ZoneController, local: f64| {
            clock += TICK;
            c.observe(&Observation {
                now: clock,
                cpu_local: Some(local),
                cpu_remote: Some(40.0),
                ..Observation::default()
            })
        };
        // Hot, calm, hot, calm: never two in a row.
        for _ in 0..10 {
            assert_eq!(tick(&mut c, 90.0), Verdict::Hold);
            assert_eq!(tick(&mut c, 40.0), Verdict::Hold);
        }
        assert_eq!(c.spill(), 0.0);
        assert_eq!(tick(&mut c, 90.0), Verdict::Hold);
        assert_eq!(tick(&mut c, 90.0), Verdict::Overloaded);
        assert!((c.spill() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn the_baseline_is_frozen_while_spilling() {
        let mut c = ZoneController::new(AdaptiveOptions::default());
        let mut clock = Duration::ZERO;
        run(&mut c, &mut clock, 20, 5, 5);
        // Slow for far longer than the baseline window, with no remote traffic seen
        // (remote_ms is only used while spilling; give it the slow value so the only
        // reference that can say "slow" is the frozen baseline).
        let mut levels = Vec::new();
        for _ in 0..400 {
            clock += TICK;
            c.observe(&Observation {
                now: clock,
                local: ms(50),
                ..Observation::default()
            });
            levels.push(c.spill());
        }
        assert!(monotonic(&levels, true), "{levels:?}");
        assert!(
            (c.spill() - 1.0).abs() < 1e-9,
            "overload became the new normal"
        );
    }
}
