//! The adaptive zone controller (the spill controller): how much of the local zone's traffic to
//! spill when the caller fleet is unknown.
//!
//! It spills only on evidence that the local zone is slower *than the other zones, measured by
//! this client at the same time*, or busier by `LB_LOAD`. A client that is slow itself (its CPU
//! starved by a neighbour, a garbage-collection pause) raises every zone's latency alike, and
//! moves nothing. To always have the other zones' latency at hand, a small share of calls
//! (`probe_share`, 0.5 %) goes to them even when nothing is spilled.
//!
//! Every tick it compares the **median** latency of the local zone's calls over `latency_window`
//! with the median of the other zones' calls (over up to `remote_window`, as the probes are
//! few):
//!
//! - local above `slow_ratio` × remote, and slower by more than the gap: **hot**;
//! - below `recover_ratio` × remote, or within half the gap: **calm**;
//! - in between: the band, where it holds (the hysteresis);
//! - too few calls on either side: no latency signal.
//!
//! The gap is `min_latency_gap`, or `lag_gap_factor` times the client's own scheduling lag,
//! whichever is larger: the lag (how late the controller's own tick runs) is how much delay the
//! client adds to every call itself, so differences within a few lags are the client's noise,
//! not the zone's. Medians, not means: a few slow calls (a pause, a retry) do not move them.
//!
//! `LB_LOAD` is compared too: local more than `cpu_gap` points above the others is hot, within
//! `cpu_recover_gap` calm. Hot on either signal, for `confirm_ticks` ticks in a row, raises the
//! spill by `step_up`; calm on one and no hot on the other, as long, lowers it by the larger
//! `step_down`, so that a zone that recovered gets its calls back within seconds. A change of
//! direction (rising to falling or back) happens at most once per `reversal_interval`: a signal
//! that oscillates cannot make the traffic flap.

// The controller runs in the balancer (feature `tonic`); without it only its options are used.
#![cfg_attr(not(feature = "tonic"), allow(dead_code))]

use std::collections::VecDeque;
use std::time::Duration;

use super::SpillLevel;
use super::latency::Histogram;

/// Settings of the adaptive zone controller (see the [module docs](super#adaptive-mode)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AdaptiveOptions {
    /// How often the controller looks at the latest observations and moves. Default 500 ms.
    pub tick: Duration,
    /// The local zone's median is over the calls of this window. Default 2 s.
    pub latency_window: Duration,
    /// The other zones' median is over up to this window, as long as it takes to have
    /// `min_remote_samples` of their calls (probes are few). Default 10 s.
    pub remote_window: Duration,
    /// The local zone is slow when its median exceeds the other zones' by this factor...
    /// Default 1.5.
    pub slow_ratio: f64,
    /// ...and by more than this (differences below are noise, e.g. sub-millisecond jitter on
    /// a fast service). Default 2 ms.
    pub min_latency_gap: Duration,
    /// ...and by more than this many times the client's own scheduling lag (how late its timer
    /// tick runs): delay the client adds to every call is not the zone's. Default 4.
    pub lag_gap_factor: f64,
    /// The local zone has recovered when its median is below the other zones' times this
    /// factor, or within half of the gap. Default 1.2. Between this and `slow_ratio` the
    /// controller holds (hysteresis).
    pub recover_ratio: f64,
    /// Calls needed on each side for a latency verdict: the local zone's within
    /// `latency_window`, the others' within `remote_window`. Default 20 and 5.
    pub min_local_samples: u32,
    /// See `min_local_samples`.
    pub min_remote_samples: u32,
    /// The local zone is overloaded when its mean `LB_LOAD` exceeds the other zones' by this
    /// many percentage points. Default 20.
    pub cpu_gap: u8,
    /// ...and has recovered when the difference is below this. Default 10.
    pub cpu_recover_gap: u8,
    /// How many consecutive ticks a signal must hold before the level moves (a single slow or
    /// fast tick moves nothing). Default 2.
    pub confirm_ticks: u32,
    /// How much of the spillable range one tick adds while overloaded. Default 0.1.
    pub step_up: f64,
    /// How much one tick gives back while recovered. Default 0.25: a zone that recovered gets
    /// its calls back within a few seconds.
    pub step_down: f64,
    /// The share of calls sent to the other zones while nothing is spilled, so that their
    /// latency is known when it is needed. 0 turns probing off (and with it the latency signal
    /// while nothing is spilled: only `LB_LOAD` can start a spill). Default 0.005.
    pub probe_share: f64,
    /// The spill changes direction (rising to falling, or back) at most once per this interval.
    /// Default 10 s.
    pub reversal_interval: Duration,
}

impl Default for AdaptiveOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            latency_window: Duration::from_secs(2),
            remote_window: Duration::from_secs(10),
            slow_ratio: 1.5,
            min_latency_gap: Duration::from_millis(2),
            lag_gap_factor: 4.0,
            recover_ratio: 1.2,
            min_local_samples: 20,
            min_remote_samples: 5,
            cpu_gap: 20,
            cpu_recover_gap: 10,
            confirm_ticks: 2,
            step_up: 0.1,
            step_down: 0.25,
            probe_share: 0.005,
            reversal_interval: Duration::from_secs(10),
        }
    }
}

/// One tick's observations, handed to [`ZoneController::observe`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Observation {
    /// Time since the controller started.
    pub(crate) now: Duration,
    /// Latency of the calls served in the local zone since the last tick.
    pub(crate) local: Histogram,
    /// Latency of the calls served in other zones since the last tick.
    pub(crate) remote: Histogram,
    /// Capacity-weighted mean `LB_LOAD` of the local zone, when known.
    pub(crate) cpu_local: Option<f64>,
    /// Capacity-weighted mean `LB_LOAD` of the other zones, when known.
    pub(crate) cpu_remote: Option<f64>,
    /// How late this tick ran: the client's own scheduling delay.
    pub(crate) lag: Duration,
}

/// What a tick decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The local zone is slow or overloaded relative to the others: spill more.
    Overloaded,
    /// Inside the hysteresis band, nothing to go by, or a reversal too soon: keep the level.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Rising,
    Falling,
}

/// The controller: a spill level in [0, 1] that rises step by step while the local zone is
/// overloaded, falls step by step once it has recovered, and holds in between.
#[derive(Debug, Clone)]
pub(crate) struct ZoneController {
    options: AdaptiveOptions,
    spill: f64,
    /// The last ticks' histograms, newest last, as many as `remote_window` holds.
    local: VecDeque<Histogram>,
    remote: VecDeque<Histogram>,
    /// The client's scheduling lag, smoothed.
    lag: Option<f64>,
    last: Verdict,
    hot_streak: u32,
    calm_streak: u32,
    direction: Option<Direction>,
    last_reversal: Option<Duration>,
    /// The medians of the last tick that had them, for stats.
    local_median: Option<Duration>,
    remote_median: Option<Duration>,
}

impl ZoneController {
    pub(crate) fn new(options: AdaptiveOptions) -> Self {
        Self {
            options,
            spill: 0.0,
            local: VecDeque::new(),
            remote: VecDeque::new(),
            lag: None,
            last: Verdict::Hold,
            hot_streak: 0,
            calm_streak: 0,
            direction: None,
            last_reversal: None,
            local_median: None,
            remote_median: None,
        }
    }

    fn ticks(&self, window: Duration) -> usize {
        let tick = self.options.tick.as_secs_f64().max(1e-3);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small and positive
        let n = (window.as_secs_f64() / tick).ceil() as usize;
        n.max(1)
    }

    /// The latency signal: local median vs remote median, against the gap.
    fn latency_signal(&mut self) -> Signal {
        let o = &self.options;
        let mut local = Histogram::default();
        for h in self.local.iter().rev().take(self.ticks(o.latency_window)) {
            local.absorb(h);
        }
        let mut remote = Histogram::default();
        for h in self.remote.iter().rev() {
            remote.absorb(h);
            if remote.count() >= u64::from(o.min_remote_samples) {
                break;
            }
        }
        if local.count() < u64::from(o.min_local_samples)
            || remote.count() < u64::from(o.min_remote_samples)
        {
            return Signal::Unknown;
        }
        let (Some(l), Some(r)) = (local.quantile(0.5), remote.quantile(0.5)) else {
            return Signal::Unknown;
        };
        self.local_median = Some(l);
        self.remote_median = Some(r);
        let (l, r) = (l.as_secs_f64(), r.as_secs_f64());
        let gap = o
            .min_latency_gap
            .as_secs_f64()
            .max(o.lag_gap_factor * self.lag.unwrap_or(0.0));
        if l > r * o.slow_ratio && l - r > gap {
            Signal::Hot
        } else if l < r * o.recover_ratio || l - r < gap / 2.0 {
            Signal::Calm
        } else {
            Signal::Band
        }
    }

    /// Takes one tick's observations and moves the spill level.
    pub(crate) fn observe(&mut self, obs: &Observation) -> Verdict {
        let keep = self.ticks(self.options.remote_window.max(self.options.latency_window));
        self.local.push_back(obs.local.clone());
        self.remote.push_back(obs.remote.clone());
        while self.local.len() > keep {
            self.local.pop_front();
        }
        while self.remote.len() > keep {
            self.remote.pop_front();
        }
        let lag = obs.lag.as_secs_f64();
        // Smoothed over a few ticks; a single late tick counts as much as it lasts.
        self.lag = Some(self.lag.map_or(lag, |old| old + 0.3 * (lag - old)));

        let latency = self.latency_signal();
        let o = &self.options;
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
        let mut verdict = match signal {
            Verdict::Overloaded if self.hot_streak >= confirm && self.spill < 1.0 => {
                Verdict::Overloaded
            }
            Verdict::Recovered if self.calm_streak >= confirm && self.spill > 0.0 => {
                Verdict::Recovered
            }
            _ => Verdict::Hold,
        };
        let wanted = match verdict {
            Verdict::Overloaded => Some(Direction::Rising),
            Verdict::Recovered => Some(Direction::Falling),
            Verdict::Hold => None,
        };
        if let (Some(wanted), Some(current)) = (wanted, self.direction)
            && wanted != current
        {
            let too_soon = self
                .last_reversal
                .is_some_and(|at| obs.now.saturating_sub(at) < o.reversal_interval);
            if too_soon {
                verdict = Verdict::Hold;
            } else {
                self.last_reversal = Some(obs.now);
            }
        }
        self.spill = match verdict {
            Verdict::Overloaded => (self.spill + o.step_up).min(1.0),
            Verdict::Recovered => (self.spill - o.step_down).max(0.0),
            Verdict::Hold => self.spill,
        };
        if verdict != Verdict::Hold {
            self.direction = wanted;
        }
        self.last = verdict;
        verdict
    }

    /// The spill level, 0 (everything local, but the probes) to 1 (spread by capacity).
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

    /// Median latency of local calls, when known.
    pub(crate) fn local_latency(&self) -> Option<Duration> {
        self.local_median
    }

    /// Median latency of calls to other zones, when known.
    pub(crate) fn remote_latency(&self) -> Option<Duration> {
        self.remote_median
    }

    /// The client's scheduling lag, smoothed.
    pub(crate) fn lag(&self) -> Duration {
        Duration::from_secs_f64(self.lag.unwrap_or(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(500);

    /// `n` calls at `ms` milliseconds.
    fn calls(n: u32, ms: f64) -> Histogram {
        let mut h = Histogram::default();
        for _ in 0..n {
            h.record(Duration::from_secs_f64(ms / 1e3));
        }
        h
    }

    struct Run {
        c: ZoneController,
        clock: Duration,
    }

    impl Run {
        fn new() -> Self {
            Self {
                c: ZoneController::new(AdaptiveOptions::default()),
                clock: Duration::ZERO,
            }
        }

        /// One tick: the local zone served `local` ms calls, the others `remote` ms calls (as
        /// many as the spill sends them, at least the probes), with `lag` of client delay.
        fn tick(&mut self, local: f64, remote: f64, lag_ms: f64) -> f64 {
            self.clock += TICK;
            let spill = self.c.spill();
            let remote_calls = 5 + (spill * 400.0) as u32;
            self.c.observe(&Observation {
                now: self.clock,
                local: calls(400 - (spill * 200.0) as u32, local),
                remote: calls(remote_calls, remote),
                lag: Duration::from_secs_f64(lag_ms / 1e3),
                ..Observation::default()
            });
            self.c.spill()
        }

        fn ticks(&mut self, n: usize, local: f64, remote: f64, lag_ms: f64) -> Vec<f64> {
            (0..n).map(|_| self.tick(local, remote, lag_ms)).collect()
        }
    }

    /// How many times the level changed direction, and the shortest time between two changes.
    fn reversals(levels: &[f64]) -> (usize, Option<usize>) {
        let mut last: Option<bool> = None;
        let mut at: Vec<usize> = Vec::new();
        for (i, w) in levels.windows(2).enumerate() {
            if (w[1] - w[0]).abs() < 1e-12 {
                continue;
            }
            let rising = w[1] > w[0];
            if last.is_some_and(|l| l != rising) {
                at.push(i);
            }
            last = Some(rising);
        }
        let closest = at.windows(2).map(|w| w[1] - w[0]).min();
        (at.len(), closest)
    }

    #[test]
    fn all_zones_slowing_together_spills_nothing() {
        let mut run = Run::new();
        run.ticks(20, 1.0, 1.3, 0.0);
        // The client itself becomes slow: every call, local or not, takes 30 ms longer, and its
        // own tick runs late.
        let levels = run.ticks(60, 31.0, 31.3, 5.0);
        assert!(levels.iter().all(|&s| s == 0.0), "{levels:?}");
        // Busier local connections under a starved client: local a few lags slower. Still the
        // client's noise.
        let levels = run.ticks(60, 45.0, 31.0, 5.0);
        assert!(levels.iter().all(|&s| s == 0.0), "{levels:?}");
    }

    #[test]
    fn the_local_zone_alone_slowing_spills_within_seconds() {
        let mut run = Run::new();
        run.ticks(20, 1.0, 1.3, 0.0);
        let levels = run.ticks(30, 41.0, 1.3, 0.0);
        let first = levels.iter().position(|&s| s > 0.0).unwrap();
        // Confirmed in 2 ticks once the local median has moved: the first step within 2 s.
        assert!(first <= 4, "first spill at tick {first}: {levels:?}");
        assert!((levels.last().unwrap() - 1.0).abs() < 1e-9, "{levels:?}");
        // Gradual: one step per tick at most.
        assert!(levels.windows(2).all(|w| w[1] - w[0] <= 0.1 + 1e-9));
    }

    #[test]
    fn recovery_comes_back_within_five_seconds() {
        let mut run = Run::new();
        run.ticks(20, 1.0, 1.3, 0.0);
        run.ticks(40, 41.0, 1.3, 0.0);
        assert_eq!(run.c.spill(), 1.0);
        let levels = run.ticks(20, 1.0, 1.3, 0.0);
        let back = levels.iter().position(|&s| s == 0.0).unwrap();
        // Ten ticks is five seconds.
        assert!(back < 10, "back at tick {back}: {levels:?}");
    }

    #[test]
    fn an_oscillating_input_reverses_at_most_once_per_ten_seconds() {
        let mut run = Run::new();
        run.ticks(20, 1.0, 1.3, 0.0);
        let mut levels = vec![run.c.spill()];
        // Slow for 2 s, fast for 2 s, for a minute.
        for _ in 0..15 {
            levels.extend(run.ticks(4, 41.0, 1.3, 0.0));
            levels.extend(run.ticks(4, 1.0, 1.3, 0.0));
        }
        let (count, closest) = reversals(&levels);
        assert!(count >= 1, "{levels:?}");
        // Twenty ticks is ten seconds.
        assert!(
            closest.is_none_or(|c| c >= 20),
            "{count} reversals, closest {closest:?} ticks apart: {levels:?}"
        );
    }

    #[test]
    fn inside_the_band_it_holds() {
        let mut run = Run::new();
        run.ticks(20, 10.0, 10.0, 0.0);
        run.ticks(6, 40.0, 10.0, 0.0);
        // 1.3× the others: between recover_ratio and slow_ratio. Once the window holds only
        // such calls, nothing moves.
        run.ticks(4, 13.0, 10.0, 0.0);
        let reached = run.c.spill();
        assert!(reached > 0.0 && reached < 1.0, "{reached}");
        let levels = run.ticks(60, 13.0, 10.0, 0.0);
        assert!(levels.iter().all(|&s| s == reached), "{levels:?}");
    }

    #[test]
    fn sub_millisecond_differences_are_noise() {
        let mut run = Run::new();
        // 0.9 ms against 0.2 ms: 4.5× but only 0.7 ms slower.
        let levels = run.ticks(60, 0.9, 0.2, 0.0);
        assert!(levels.iter().all(|&s| s == 0.0), "{levels:?}");
    }

    #[test]
    fn without_remote_calls_there_is_no_latency_signal() {
        let mut c = ZoneController::new(AdaptiveOptions::default());
        let mut clock = Duration::ZERO;
        for _ in 0..40 {
            clock += TICK;
            c.observe(&Observation {
                now: clock,
                local: calls(400, 100.0),
                ..Observation::default()
            });
        }
        assert_eq!(
            c.spill(),
            0.0,
            "slow with nothing to compare: the client may be slow"
        );
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
        assert!(c.spill().abs() < 1e-9);
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
        let mut run = Run::new();
        run.ticks(20, 1.0, 1.3, 0.0);
        // Hot, calm, hot, calm: never two in a row (the local window is 4 ticks, so single slow
        // ticks do not even move its median).
        for _ in 0..20 {
            run.tick(41.0, 1.3, 0.0);
            run.tick(1.0, 1.3, 0.0);
        }
        assert_eq!(run.c.spill(), 0.0);
    }
}
