//! The power-of-two-choices step: which of two instances sampled in a zone takes the call.
//!
//! The cheaper one takes it: fewer in-flight requests per unit of weight, ties to the first
//! sample, so an idle fleet is picked exactly by weight. In-flight counts alone balance
//! in-flight requests, not latency: with them, an instance 30 times slower than its peers still
//! gets about 1/30 of their calls per in-flight slot, a few percent of all calls, and so owns the
//! client's p99. With [`LatencyAware`] (the default), latency joins in only when it clearly
//! differs: when one candidate's recent latency is more than [`ratio`](LatencyAware::ratio)
//! times the other's, each costs `(in-flight + 1) × latency / weight`, the cost of Finagle's and
//! Linkerd's EWMA balancers. Below that ratio latency noise changes nothing, and the in-flight
//! rule (with its exact shares) decides.
//!
//! Latency is an exponentially weighted moving average over time of answered calls (time to the
//! response headers), per instance ([`LatencyEstimate`]). Only answers count: failures are
//! outlier detection's. An estimate more than [`stale_after`](LatencyAware::stale_after) older
//! than the other candidate's is not compared: a slow instance, which gets no calls while it is
//! slow, is compared by in-flight calls again once its estimate is stale, takes a few calls, and
//! so is measured again: that is how a recovered instance returns, within `stale_after`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Latency-aware power of two choices. Within a zone, of two sampled instances the one with
/// fewer in-flight calls per unit of weight takes the call, except when one's recent latency
/// (an average over time of its answered calls) is more than `ratio` times the other's: then
/// each costs `(in-flight + 1) × latency` per unit of weight, as in Finagle's and Linkerd's EWMA
/// balancers, and a slow instance stops taking calls instead of taking its in-flight share of
/// them. An estimate `stale_after` older than the other's is not compared, so an avoided
/// instance is probed and measured again; below the ratio nothing changes. See the
/// [picker](crate::picker) docs.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LatencyAware {
    /// Latency is compared only when one candidate's estimate exceeds this many times the
    /// other's. Above 1. Default 2.
    pub ratio: f64,
    /// The average's time constant: a call answered `dt` after the previous sample moves the
    /// estimate by `dt / (dt + decay)` of the way to its own latency. Default 100 ms: an
    /// instance answering every millisecond averages its last hundred or so answers, and one
    /// that turns slow is over the ratio after a few slow answers.
    pub decay: Duration,
    /// An estimate older than the other candidate's by more than this is not compared, and the
    /// first answer after a silence this long replaces it. Default 1 s.
    pub stale_after: Duration,
}

impl Default for LatencyAware {
    fn default() -> Self {
        Self {
            ratio: 2.0,
            decay: Duration::from_millis(100),
            stale_after: Duration::from_secs(1),
        }
    }
}

/// What the choice reads of a candidate. `From<u32>` makes an in-flight count alone one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CandidateLoad {
    /// Calls in flight on the instance.
    pub in_flight: u32,
    /// Its latency estimate in microseconds; 0 when it has none.
    pub latency_us: u32,
    /// When the estimate last moved, in microseconds on a monotonic clock common to the process.
    pub latency_at_us: u64,
}

impl From<u32> for CandidateLoad {
    fn from(in_flight: u32) -> Self {
        Self {
            in_flight,
            ..Self::default()
        }
    }
}

/// Whether candidate `b` takes the call rather than `a` (the first sample). Ties keep `a`.
#[inline]
pub(crate) fn prefer_second(
    a: CandidateLoad,
    weight_a: u64,
    b: CandidateLoad,
    weight_b: u64,
    latency: Option<&LatencyAware>,
) -> bool {
    if latency.is_some_and(|l| latencies_differ(a, b, l)) {
        let cost = |load: CandidateLoad, other_weight: u64| {
            u128::from(load.in_flight + 1) * u128::from(load.latency_us) * u128::from(other_weight)
        };
        return cost(b, weight_a) < cost(a, weight_b);
    }
    u64::from(b.in_flight) * weight_a < u64::from(a.in_flight) * weight_b
}

/// Both estimates known, of about the same age, and one over `ratio` times the other.
#[inline]
fn latencies_differ(a: CandidateLoad, b: CandidateLoad, latency: &LatencyAware) -> bool {
    if a.latency_us == 0 || b.latency_us == 0 {
        return false;
    }
    let stale_us = u64::try_from(latency.stale_after.as_micros()).unwrap_or(u64::MAX);
    if a.latency_at_us.abs_diff(b.latency_at_us) > stale_us {
        return false;
    }
    let (high, low) = (
        a.latency_us.max(b.latency_us),
        a.latency_us.min(b.latency_us),
    );
    f64::from(high) > latency.ratio * f64::from(low)
}

/// Microseconds since the first call of this function in the process: the clock of
/// [`CandidateLoad::latency_at_us`], common to every balancer.
#[cfg_attr(not(feature = "tonic"), allow(dead_code))] // read by the channel's calls
pub(crate) fn micros(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| at);
    u64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}

/// One instance's latency estimate. Updated with relaxed atomics by every answered call;
/// concurrent updates may lose one another's sample, which an average can afford.
#[derive(Debug, Default)]
pub(crate) struct LatencyEstimate {
    latency_us: AtomicU32,
    at_us: AtomicU64,
    /// Answers since the estimate was (re)started, up to [`MIN_SAMPLES`].
    samples: AtomicU32,
}

/// Answers an estimate needs before it is compared. Until then it is their plain mean, so that
/// one slow first answer (a cold server, a connection's first round trips) cannot make an
/// instance look slow for a whole `stale_after`.
pub(crate) const MIN_SAMPLES: u32 = 16;

impl LatencyEstimate {
    /// The estimate and when it last moved; (0, 0) before the first answer, and 0 while it has
    /// fewer than [`MIN_SAMPLES`] answers.
    #[inline]
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))] // read by the channel's picks
    pub(crate) fn read(&self) -> (u32, u64) {
        let (latency, at) = self.raw();
        if self.samples.load(Ordering::Relaxed) < MIN_SAMPLES {
            (0, at)
        } else {
            (latency, at)
        }
    }

    #[inline]
    fn raw(&self) -> (u32, u64) {
        (
            self.latency_us.load(Ordering::Relaxed),
            self.at_us.load(Ordering::Relaxed),
        )
    }

    /// Folds in a call answered at `now_us` after `latency`. The first answer, and the first
    /// after a silence of more than `stale_after` (a probe of an instance that was avoided), set
    /// the estimate to their own latency; the next answers up to [`MIN_SAMPLES`] average with
    /// it; later ones move it by `dt / (dt + decay)`.
    #[inline]
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))] // recorded by the channel's calls
    pub(crate) fn record(&self, latency: Duration, now_us: u64, config: &LatencyAware) {
        let sample = u32::try_from(latency.as_micros())
            .unwrap_or(u32::MAX)
            .max(1);
        let (old, at) = self.raw();
        let gap = now_us.saturating_sub(at);
        let samples = self.samples.load(Ordering::Relaxed);
        // How far the estimate moves towards this answer: all the way when (re)starting, by a
        // plain mean while it has fewer than MIN_SAMPLES answers, then by the time-decayed step.
        let step = if old == 0 || u128::from(gap) > config.stale_after.as_micros() {
            self.samples.store(1, Ordering::Relaxed);
            1.0
        } else if samples < MIN_SAMPLES {
            self.samples.store(samples + 1, Ordering::Relaxed);
            1.0 / f64::from(samples + 1)
        } else {
            #[allow(clippy::cast_precision_loss)] // microsecond gaps far below 2^52
            let dt = gap as f64;
            dt / (dt + config.decay.as_secs_f64() * 1e6)
        };
        let moved = f64::from(old) + step * (f64::from(sample) - f64::from(old));
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // within u32
        let new = moved.round().clamp(1.0, f64::from(u32::MAX)) as u32;
        self.latency_us.store(new, Ordering::Relaxed);
        self.at_us.store(now_us.max(at), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    fn load(in_flight: u32, latency_us: u32, latency_at_us: u64) -> CandidateLoad {
        CandidateLoad {
            in_flight,
            latency_us,
            latency_at_us,
        }
    }

    #[test]
    fn without_latency_fewer_in_flight_per_weight_wins_and_ties_keep_the_first() {
        let l = LatencyAware::default();
        for latency in [None, Some(&l)] {
            assert!(prefer_second(3.into(), 1, 1.into(), 1, latency));
            assert!(!prefer_second(1.into(), 1, 3.into(), 1, latency));
            assert!(!prefer_second(2.into(), 1, 2.into(), 1, latency), "tie");
            assert!(!prefer_second(0.into(), 1, 0.into(), 1, latency), "idle");
            // Per unit of weight: 3 on weight 4 is cheaper than 1 on weight 1.
            assert!(prefer_second(1.into(), 1, 3.into(), 4, latency));
        }
    }

    #[test]
    fn latency_within_the_ratio_changes_nothing() {
        let l = LatencyAware::default();
        // 1.9× slower, same age: in-flight counts decide, ties keep the first.
        let a = load(1, 1_900, 10 * MS);
        let b = load(1, 1_000, 10 * MS);
        assert!(!prefer_second(a, 1, b, 1, Some(&l)));
        assert!(!prefer_second(b, 1, a, 1, Some(&l)));
        assert!(prefer_second(
            load(2, 1_000, 0),
            1,
            load(1, 1_900, 0),
            1,
            Some(&l)
        ));
    }

    #[test]
    fn a_much_slower_instance_loses_even_when_idle() {
        let l = LatencyAware::default();
        // 20.7 ms idle against 0.7 ms with 7 in flight: (0 + 1) × 20,700 > (7 + 1) × 700.
        let slow = load(0, 20_700, 50 * MS);
        let fast = load(7, 700, 50 * MS);
        assert!(prefer_second(slow, 1, fast, 1, Some(&l)));
        assert!(!prefer_second(fast, 1, slow, 1, Some(&l)));
        // Per unit of weight: with 4 × the weight it is the cheaper (20,700 / 4 < 8 × 700).
        assert!(prefer_second(fast, 1, slow, 4, Some(&l)));
        // Past 29 in flight on the fast one, the slow one is cheaper.
        assert!(prefer_second(load(29, 700, 50 * MS), 1, slow, 1, Some(&l)));
        // Off: the idle one wins, as by in-flight counts.
        assert!(!prefer_second(slow, 1, fast, 1, None));
    }

    #[test]
    fn a_stale_or_missing_estimate_is_not_compared() {
        let l = LatencyAware::default();
        let fast = load(3, 700, 5_000 * MS);
        // The slow one's estimate is 1.5 s older than the fast one's: compared by in-flight.
        let stale = load(0, 20_700, 3_500 * MS);
        assert!(!prefer_second(stale, 1, fast, 1, Some(&l)));
        // Exactly at the limit it still counts.
        let fresh = load(0, 20_700, 4_000 * MS);
        assert!(prefer_second(fresh, 1, fast, 1, Some(&l)));
        // Unknown latency: in-flight.
        assert!(!prefer_second(load(0, 0, 0), 1, fast, 1, Some(&l)));
        assert!(prefer_second(fast, 1, load(0, 0, 0), 1, Some(&l)));
    }

    #[test]
    fn the_estimate_averages_over_time() {
        let decay = LatencyAware {
            decay: Duration::from_secs(1),
            ..LatencyAware::default()
        };
        let e = LatencyEstimate::default();
        assert_eq!(e.read(), (0, 0));
        // The first answers: their plain mean, not compared until there are MIN_SAMPLES.
        e.record(Duration::from_micros(5_000), 100 * MS, &decay);
        assert_eq!(e.raw(), (5_000, 100 * MS), "the first answer starts it");
        assert_eq!(e.read(), (0, 100 * MS), "one answer is not compared");
        for n in 1..MIN_SAMPLES {
            e.record(Duration::from_micros(700), 100 * MS + u64::from(n), &decay);
        }
        // (5,000 + 15 × 700) / 16 = 968.75 (968 after rounding each step): one slow first answer
        // does not make it slow.
        assert_eq!(e.read(), (968, 100 * MS + 15));
        // Then over time: a 20.7 ms answer 10 ms later moves it by 10 / 1,010 of the gap.
        let at = 100 * MS + 15;
        e.record(Duration::from_micros(20_700), at + 10 * MS, &decay);
        assert_eq!(e.read(), (1_163, at + 10 * MS));
        // 900 ms later: 900 / 1,900 of the way.
        e.record(Duration::from_micros(20_700), at + 910 * MS, &decay);
        assert_eq!(e.read(), (10_417, at + 910 * MS));
        // After a silence over `stale_after` (1 s), the answer starts it again.
        e.record(Duration::from_micros(700), at + 1_911 * MS, &decay);
        assert_eq!(e.raw(), (700, at + 1_911 * MS));
        assert_eq!(e.read().0, 0, "not compared until it has answers again");
        // The same instant or earlier: no move in time.
        e.record(Duration::from_micros(700), at + 1_000 * MS, &decay);
        assert_eq!(e.raw(), (700, at + 1_911 * MS));
        // Sub-microsecond answers count as 1 µs; a latency over u32::MAX µs saturates.
        let e = LatencyEstimate::default();
        e.record(Duration::from_nanos(10), 1, &decay);
        assert_eq!(e.raw().0, 1);
        let e = LatencyEstimate::default();
        e.record(Duration::from_secs(10_000), 1, &decay);
        assert_eq!(e.raw().0, u32::MAX);
    }

    #[test]
    fn the_clock_is_monotonic_from_its_first_use() {
        let now = Instant::now();
        let first = micros(now);
        assert!(micros(now + Duration::from_millis(5)) >= first + 5_000);
        if let Some(earlier) = now.checked_sub(Duration::from_secs(3600)) {
            assert_eq!(micros(earlier), 0, "before the epoch");
        }
    }
}
