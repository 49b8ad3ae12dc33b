//! What a segment measured, and what follows from it: percentiles, the local share per window,
//! when a spill started and ended, the cross-zone traffic it implies. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One call as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    /// When it ended, since the measurement began.
    pub(crate) ended: Duration,
    /// How long it took.
    pub(crate) latency: Duration,
    /// Whether the task that answered was in the client's zone; `None` when the call failed.
    pub(crate) local: Option<bool>,
}

/// One window of a segment's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Window {
    /// Its end, in seconds since the measurement began.
    pub(crate) end_s: f64,
    /// Calls that succeeded in it.
    pub(crate) ok: u64,
    /// Of those, the calls served in the client's zone.
    pub(crate) local: u64,
    /// Calls that failed in it.
    pub(crate) failed: u64,
}

impl Window {
    /// The local share of its successful calls, `None` when it has none.
    pub(crate) fn local_share(&self) -> Option<f64> {
        share(self.local, self.ok)
    }
}

/// What one client process reports for its segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SegmentResult {
    /// Seconds measured.
    pub(crate) measured_s: f64,
    /// Calls that succeeded.
    pub(crate) ok: u64,
    /// Calls that failed, per gRPC status code.
    pub(crate) failures: BTreeMap<String, u64>,
    /// The first failure's message.
    pub(crate) first_failure: Option<String>,
    /// Successful calls per zone that served them.
    pub(crate) per_zone: BTreeMap<String, u64>,
    /// Successful calls per task (ID) that served them.
    pub(crate) per_task: BTreeMap<String, u64>,
    /// Successful calls served in the client's zone.
    pub(crate) local: u64,
    /// Median latency of the successful calls, in microseconds.
    pub(crate) p50_us: u64,
    /// 99th percentile.
    pub(crate) p99_us: u64,
    /// The timeline.
    pub(crate) windows: Vec<Window>,
}

impl SegmentResult {
    /// From the calls of a measurement of `measured`, cut into windows of `window`.
    pub(crate) fn from_calls(
        calls: &[Call],
        per_zone: BTreeMap<String, u64>,
        per_task: BTreeMap<String, u64>,
        failures: BTreeMap<String, u64>,
        first_failure: Option<String>,
        measured: Duration,
        window: Duration,
    ) -> Self {
        let mut latencies: Vec<Duration> = calls
            .iter()
            .filter(|c| c.local.is_some())
            .map(|c| c.latency)
            .collect();
        latencies.sort_unstable();
        let micros =
            |d: Option<Duration>| d.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let count = |f: fn(&Call) -> bool| calls.iter().filter(|c| f(c)).count() as u64;
        Self {
            measured_s: measured.as_secs_f64(),
            ok: count(|c| c.local.is_some()),
            failures,
            first_failure,
            per_zone,
            per_task,
            local: count(|c| c.local == Some(true)),
            p50_us: micros(percentile(&latencies, 0.5)),
            p99_us: micros(percentile(&latencies, 0.99)),
            windows: windows(calls, measured, window),
        }
    }

    /// Failed calls.
    pub(crate) fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Successful calls per second.
    pub(crate) fn calls_per_second(&self) -> f64 {
        if self.measured_s > 0.0 {
            as_f64(self.ok) / self.measured_s
        } else {
            0.0
        }
    }

    /// The share of successful calls served in the client's zone.
    pub(crate) fn local_share(&self) -> f64 {
        share(self.local, self.ok).unwrap_or(0.0)
    }

    /// The share of successful calls that `task_id` served.
    pub(crate) fn task_share(&self, task_id: &str) -> f64 {
        share(self.per_task.get(task_id).copied().unwrap_or(0), self.ok).unwrap_or(0.0)
    }
}

#[allow(clippy::cast_precision_loss)] // call counts stay far below 2^52
fn as_f64(n: u64) -> f64 {
    n as f64
}

/// `part / whole`, `None` when `whole` is 0.
pub(crate) fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| as_f64(part) / as_f64(whole))
}

/// The nearest-rank percentile `p` (0 to 1) of sorted values.
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: ceil(p × n), at least 1. The product is small and non-negative.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The calls cut into windows of `window` over `measured` (a call counts in the window it
/// ended in; calls after `measured` count in the last).
fn windows(calls: &[Call], measured: Duration, window: Duration) -> Vec<Window> {
    let width = window.as_secs_f64().max(1e-3);
    // A whole number of windows, at least one.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = ((measured.as_secs_f64() / width).ceil() as usize).max(1);
    let mut out: Vec<Window> = (0..count)
        .map(|i| Window {
            end_s: round3(width * as_f64(i as u64 + 1)),
            ok: 0,
            local: 0,
            failed: 0,
        })
        .collect();
    for call in calls {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let index = ((call.ended.as_secs_f64() / width) as usize).min(count - 1);
        let w = &mut out[index];
        match call.local {
            Some(local) => {
                w.ok += 1;
                w.local += u64::from(local);
            }
            None => w.failed += 1,
        }
    }
    out
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How the local share moved around a slowdown of the client's zone.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct Spill {
    /// The local share before the slowdown.
    pub(crate) baseline: f64,
    /// Seconds from the slowdown to the end of the first of two windows in a row 10 points or
    /// more below the baseline; `None`: it never dropped that far.
    pub(crate) spilled_after_s: Option<f64>,
    /// Seconds from the recovery to the end of the first of three windows in a row back within
    /// 5 points of the baseline; `None`: it did not come back (or never left).
    pub(crate) back_after_s: Option<f64>,
}

/// Points below the baseline that count as a spill.
const SPILL_DROP: f64 = 0.10;
/// Windows in a row that count as a spill: while the zone is slow a closed loop completes few
/// calls per window, and one window of a policy that never moves can dip 10 points by chance.
const SPILL_WINDOWS: usize = 2;
/// Points below the baseline that count as back.
const BACK_WITHIN: f64 = 0.05;
/// Windows in a row that count as back.
const BACK_WINDOWS: usize = 3;

/// Spill and return times from a timeline, the zone slowed at `slowed_s` and recovered at
/// `recovered_s` (seconds since the measurement began).
pub(crate) fn spill(windows: &[Window], slowed_s: f64, recovered_s: f64) -> Spill {
    let (mut ok, mut local) = (0, 0);
    for w in windows.iter().filter(|w| w.end_s <= slowed_s) {
        ok += w.ok;
        local += w.local;
    }
    let baseline = share(local, ok).unwrap_or(0.0);
    let slow: Vec<&Window> = windows
        .iter()
        .filter(|w| w.end_s > slowed_s && w.end_s <= recovered_s)
        .collect();
    let spilled_after_s = slow.windows(SPILL_WINDOWS).find_map(|run| {
        run.iter()
            .all(|w| w.local_share().is_some_and(|s| s <= baseline - SPILL_DROP))
            .then(|| round3(run[0].end_s - slowed_s))
    });
    let back_after_s = spilled_after_s.and_then(|_| {
        let after: Vec<&Window> = windows.iter().filter(|w| w.end_s > recovered_s).collect();
        after.windows(BACK_WINDOWS).find_map(|run| {
            run.iter()
                .all(|w| w.local_share().is_some_and(|s| s >= baseline - BACK_WITHIN))
                .then(|| round3(run[0].end_s - recovered_s))
        })
    });
    Spill {
        baseline,
        spilled_after_s,
        back_after_s,
    }
}

/// The stated message size: 1 kB each way per call.
pub(crate) const BYTES_PER_CALL: u64 = 2_000;
/// AWS's cross-zone price: $0.01 per GB out of a zone and $0.01 per GB into the other.
pub(crate) const DOLLARS_PER_GB_CROSSED: f64 = 0.02;

/// The cross-zone traffic of a billion calls with `cross_zone_share` of them served in another
/// zone: gigabytes (10⁹ bytes) crossing, and what AWS bills for them.
pub(crate) fn cross_zone_per_billion_calls(cross_zone_share: f64) -> (f64, f64) {
    let gigabytes = cross_zone_share * as_f64(BYTES_PER_CALL);
    (gigabytes, gigabytes * DOLLARS_PER_GB_CROSSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn window(end_s: f64, ok: u64, local: u64) -> Window {
        Window {
            end_s,
            ok,
            local,
            failed: 0,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.5), Some(50));
        assert_eq!(percentile(&values, 0.99), Some(99));
        assert_eq!(percentile(&values, 1.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }

    #[test]
    fn a_segment_counts_shares_latencies_and_windows() {
        let calls = [
            Call {
                ended: ms(100),
                latency: ms(1),
                local: Some(true),
            },
            Call {
                ended: ms(200),
                latency: ms(3),
                local: Some(false),
            },
            Call {
                ended: ms(600),
                latency: ms(2),
                local: Some(true),
            },
            Call {
                ended: ms(700),
                latency: ms(50),
                local: None,
            },
            // Ended after the measured second: counts in the last window.
            Call {
                ended: ms(1_100),
                latency: ms(4),
                local: Some(true),
            },
        ];
        let failures = BTreeMap::from([("Unavailable".to_owned(), 1)]);
        let result = SegmentResult::from_calls(
            &calls,
            BTreeMap::new(),
            BTreeMap::from([("t1".to_owned(), 1)]),
            failures,
            Some("gone".into()),
            Duration::from_secs(1),
            ms(500),
        );
        assert_eq!((result.ok, result.local, result.failed()), (4, 3, 1));
        assert!((result.local_share() - 0.75).abs() < 1e-9);
        assert!((result.calls_per_second() - 4.0).abs() < 1e-9);
        assert!((result.task_share("t1") - 0.25).abs() < 1e-9);
        assert_eq!(result.task_share("t2"), 0.0);
        // Failed calls' latencies are left out: 1, 2, 3, 4 ms.
        assert_eq!((result.p50_us, result.p99_us), (2_000, 4_000));
        assert_eq!(
            result.windows,
            [
                window(0.5, 2, 1),
                Window {
                    failed: 1,
                    ..window(1.0, 2, 2)
                }
            ]
        );
    }

    #[test]
    fn a_spill_and_its_return_are_timed_from_the_slowdown_and_the_recovery() {
        // Windows of 0.5 s: all local for 2 s, slowed at 2 s, spilled from 3 s, recovered at
        // 4 s, back for good from 5 s (with a relapse at 4.5 s that restarts the count).
        let shares = [
            1.0, 1.0, 1.0, 1.0, // 0.5 .. 2.0
            0.95, 0.6, 0.5, 0.5, // 2.5 .. 4.0
            0.97, 0.8, 0.96, 0.99, 1.0, // 4.5 .. 6.5
        ];
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let windows: Vec<Window> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| window(0.5 * (i as f64 + 1.0), 100, (s * 100.0) as u64))
            .collect();
        let spill = spill(&windows, 2.0, 4.0);
        assert!((spill.baseline - 1.0).abs() < 1e-9);
        assert_eq!(spill.spilled_after_s, Some(1.0), "the 3.0 s window");
        assert_eq!(
            spill.back_after_s,
            Some(1.5),
            "the 5.5 s window opens three good ones"
        );
    }

    #[test]
    fn a_policy_that_never_moves_neither_spills_nor_returns() {
        // One window dipping 12 points is chance, not a spill.
        let windows: Vec<Window> = (1..=12)
            .map(|i| window(0.5 * f64::from(i), 100, if i == 6 { 38 } else { 50 }))
            .collect();
        let spill = spill(&windows, 2.0, 4.0);
        assert!((spill.baseline - 0.5).abs() < 1e-9);
        assert_eq!((spill.spilled_after_s, spill.back_after_s), (None, None));
    }

    #[test]
    fn a_spill_that_never_ends_has_no_return() {
        let windows: Vec<Window> = (1..=12)
            .map(|i| window(0.5 * f64::from(i), 100, if i <= 4 { 100 } else { 40 }))
            .collect();
        let spill = spill(&windows, 2.0, 4.0);
        assert_eq!(spill.spilled_after_s, Some(0.5));
        assert_eq!(spill.back_after_s, None);
    }

    #[test]
    fn cross_zone_traffic_is_priced_both_ways() {
        // Two thirds of a billion calls of 2 kB cross: 1,333 GB, $0.02 per GB crossed.
        let (gigabytes, dollars) = cross_zone_per_billion_calls(2.0 / 3.0);
        assert!((gigabytes - 1333.333).abs() < 0.01);
        assert!((dollars - 26.667).abs() < 0.01);
        assert_eq!(cross_zone_per_billion_calls(0.0), (0.0, 0.0));
    }
}
