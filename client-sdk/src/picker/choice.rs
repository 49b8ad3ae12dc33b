//! The power-of-two-choices step: which of two instances sampled in a zone takes the call.
//!
//! The cheaper one takes it: fewer in-flight requests per unit of weight, ties to the first
//! sample, so an idle fleet is picked exactly by weight. In-flight counts alone balance
//! in-flight requests, not latency: with them, an instance 30 times slower than its peers still
//! gets about 1/30 of their calls per in-flight slot, a few percent of all calls, and so owns the
//! client's p99. With [`LatencyAware`] (the default), latency joins in only when it clearly
//! differs: when one candidate's recent latency is more than [`ratio`](LatencyAware::ratio)
//! times the other's *and* more than the noise above it, each costs
//! `(in-flight + 1) × latency / weight`, the cost of Finagle's and Linkerd's EWMA balancers,
//! with the delay common to every call taken off (see below). Otherwise the in-flight rule
//! (with its exact shares) decides.
//!
//! Latency is an exponentially weighted moving average over time of answered calls (time to the
//! response headers), per instance ([`LatencyEstimate`]). Only answers count: failures are
//! outlier detection's. A slow instance gets no calls while it is slow, so no answer can show it
//! fast again: when its estimate is the older and the higher of the two, it decays towards the
//! other's by `exp(-age / decay)` (as tower's and Linkerd's PeakEWMA decay theirs), so after a
//! few hundred milliseconds it is within the ratio again, takes a call by the in-flight rule,
//! and is measured: that is how a recovered instance returns, and why a slowness that lasted
//! moments costs little. An estimate more than [`stale_after`](LatencyAware::stale_after) older
//! than the other candidate's is not compared at all.
//!
//! # Noise: the client's own delay
//!
//! A latency is measured when the call's task is polled, so it includes the client's own
//! delay. On servers that answer in microseconds, or a client whose thread stalls (CFS
//! throttling at a CPU limit, a busy machine), that delay is most of what is measured, and it
//! lands on whichever instances had calls in flight. Three guards keep it from moving calls
//! (Linkerd's and Finagle's EWMA balancers have none of them):
//!
//! - **Stalls prove only what they prove.** A heartbeat on the client's runtime measures its
//!   scheduling lag (as the spill controller's tick does, but every 5 ms). A call that a stall
//!   of the client covers may have been answered any time from the stall's start to its end:
//!   it counts as the latency in that range nearest the instance's estimate (see `ClientLag`
//!   and [`LatencyEstimate::record_stalled`]). So a stall neither makes a fast instance slow
//!   nor, on a busy client whose stalls cover many calls, a slow one fast.
//! - **Differences within the noise are ignored.** Latencies are compared only when they differ
//!   by more than [`min_latency_gap`](LatencyAware::min_latency_gap) plus
//!   [`lag_gap_factor`](LatencyAware::lag_gap_factor) times the client's smoothed jitter, on
//!   top of the ratio.
//! - **A difference must persist.** An answer above the estimate's noise band (over `ratio` ×
//!   the estimate and over the gap) counts at the band's edge until such answers have lasted
//!   [`persist`](LatencyAware::persist): the burst of late answers after one pause moves the
//!   estimate by little, an instance that stays slow counts in full from then on, and one that
//!   is slow on part of its calls still raises its estimate.
//!
//! An instance 20 ms slower than its peers is avoided within a few tens of milliseconds, as
//! before; a latency difference under the gap (2 ms plus four times the jitter by default) is
//! left to the in-flight rule. The cost takes the delay common to every call off both
//! estimates: the client's jitter, and latency up to the noise level (that same gap), which may
//! be scheduling of the servers' and the client's threads alike, as far as the estimates'
//! difference is past that level and at most nine tenths of the lower one. On a busy machine,
//! where servers that answer at once measure 3 to 7 ms, a task 20 ms slower is then still many
//! times slower than its peers rather than 4 to 6 times, and does not win calls whenever they
//! have a few in flight; a difference just past the noise band, which may be partly noise
//! itself, is weighed nearly as measured, and so are latencies well above the noise level (10
//! against 25 ms on an idle client as 8 against 23). Once two estimates differ, the noise band
//! has done its work:
//! the decayed estimate is compared on cost until it is within `ratio` of the other, and only
//! then probed, so a busy client (wide band, fewer calls) probes a slow instance no more often
//! than an idle one.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Latency-aware power of two choices. Within a zone, of two sampled instances the one with
/// fewer in-flight calls per unit of weight takes the call, except when one's recent latency
/// (an average over time of its answered calls) is more than `ratio` times the other's and
/// higher by more than the noise (`min_latency_gap` plus `lag_gap_factor` times the client's own
/// scheduling jitter): then each costs `(in-flight + 1) × latency` per unit of weight, as in
/// Finagle's and Linkerd's EWMA balancers but with the delay common to every call taken off
/// both latencies (the client's jitter, and up to the noise level as far as the difference is
/// past it), and a slow instance stops taking calls instead of taking its in-flight share of
/// them. A call that a stall of the client covers counts as the latency nearest the estimate
/// that the stall leaves possible, and slow answers count in full only once they have lasted
/// `persist`. The older of two estimates, when it is the higher, decays towards the other's
/// with its age (PeakEWMA's decay), so an avoided instance is probed and measured again within
/// a few hundred milliseconds. See the [picker](crate::picker) docs.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LatencyAware {
    /// Latency is compared only when one candidate's estimate exceeds this many times the
    /// other's. Above 1. Default 2.
    pub ratio: f64,
    /// ...and exceeds it by more than this: smaller differences are noise (scheduling of the
    /// servers' and the client's threads), however large their ratio on a fast service.
    /// Default 2 ms, as the spill controller's `min_latency_gap`.
    pub min_latency_gap: Duration,
    /// ...plus this many times the client's own scheduling jitter (how late a 5 ms heartbeat
    /// on its runtime runs, smoothed, counting at most 2 ms): delay the client adds to every
    /// call is not the instance's. 0 or more. Default 4, as the spill controller's
    /// `lag_gap_factor`.
    pub lag_gap_factor: f64,
    /// An answer over `ratio` times the estimate and over the gap above it moves the estimate
    /// as if it were at that edge until such answers have lasted this long, with none within
    /// the band in between: one stall of the client, whose late answers all arrive at once, is
    /// not a slow instance. Default 10 ms.
    pub persist: Duration,
    /// The average's time constant: a call answered `dt` after the previous sample moves the
    /// estimate by `dt / (dt + decay)` of the way to its own latency. Default 100 ms: an
    /// instance answering every millisecond averages its last hundred or so answers, and one
    /// that turns slow is over the ratio after a few slow answers. Also the time constant with
    /// which an older, higher estimate decays towards the other candidate's when they are
    /// compared: an instance 20 ms slower than peers at 1 ms is probed again about 200 ms
    /// after its last answer.
    pub decay: Duration,
    /// An estimate older than the other candidate's by more than this is not compared, and the
    /// first answer after a silence this long replaces it. Default 1 s.
    pub stale_after: Duration,
}

impl Default for LatencyAware {
    fn default() -> Self {
        Self {
            ratio: 2.0,
            min_latency_gap: Duration::from_millis(2),
            lag_gap_factor: 4.0,
            persist: Duration::from_millis(10),
            decay: Duration::from_millis(100),
            stale_after: Duration::from_secs(1),
        }
    }
}

impl LatencyAware {
    /// The difference, in microseconds, below which latencies are noise, given the client's
    /// jitter.
    #[inline]
    fn noise_us(&self, client_lag_us: u32) -> f64 {
        self.min_latency_gap.as_secs_f64() * 1e6 + self.lag_gap_factor * f64::from(client_lag_us)
    }

    /// How much of two latencies that clearly differ the cost takes off both as the delay
    /// common to every call (microseconds), given the lower latency, the difference between
    /// the estimates before decay, and the client's jitter: the jitter itself, the client's
    /// own; and latency up to the noise level, which may be scheduling of the servers' and the
    /// client's threads alike (a busy machine makes servers that answer at once take
    /// milliseconds), as far as the difference is past that level. So a difference just past
    /// it, which may be partly noise itself, is weighed nearly as measured, and one well past
    /// it is not shrunk by the machine's delay, while its estimate decays too. Never over
    /// [`COMMON_SHARE`] of the lower latency.
    #[inline]
    fn common_us(&self, low: f64, difference: f64, client_lag_us: u32) -> f64 {
        let noise = self.noise_us(client_lag_us);
        (difference - noise)
            .min(noise)
            .max(f64::from(client_lag_us))
            .min(COMMON_SHARE * low)
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
    /// The client's own scheduling jitter when the load was read, in microseconds (see
    /// [`LatencyAware::lag_gap_factor`]); 0 when unknown.
    pub client_lag_us: u32,
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
    match latency.map_or(Judgement::Alike, |l| judge(a, b, l)) {
        Judgement::Differ(latency_a, latency_b) => {
            let cost = |load: CandidateLoad, latency: f64, other_weight: u64| {
                f64::from(load.in_flight + 1) * latency * u64_f64(other_weight)
            };
            return cost(b, latency_b, weight_a) < cost(a, latency_a, weight_b);
        }
        // One probe at a time: while the probed instance has a call in flight, the other takes
        // the next.
        Judgement::Probe { first: true } if a.in_flight > 0 => return true,
        Judgement::Probe { first: false } if b.in_flight > 0 => return false,
        _ => {}
    }
    u64::from(b.in_flight) * weight_a < u64::from(a.in_flight) * weight_b
}

/// The most of the lower estimate that the cost takes off as common delay: a tenth of it is
/// always the instance's own.
const COMMON_SHARE: f64 = 0.9;

#[allow(clippy::cast_precision_loss)] // weights far below 2^52
fn u64_f64(n: u64) -> f64 {
    n as f64
}

/// What latency says about two candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Judgement {
    /// Nothing that counts: the in-flight rule decides.
    Alike,
    /// They clearly differ: compare costs with these latencies (decayed, and with the delay
    /// common to both taken off).
    Differ(f64, f64),
    /// The older, higher estimate (the first candidate's, or not) differs from the other's but
    /// has decayed to within the ratio: it may take one call at a time, to be measured again.
    Probe { first: bool },
}

/// Whether the two latencies clearly differ: both known, of about the same age, and one over
/// `ratio` times the other and above it by more than the noise. Once they do, the decayed
/// estimates are compared on cost until the older is within `ratio` of the other.
///
/// The older estimate, when it is the higher, first decays towards the newer by
/// `exp(-age / decay)`, its age counted from the newer one's last answer (tower's and
/// Linkerd's PeakEWMA decay theirs with time in the same way): an instance avoided for being
/// slow gets no answers that could show it fast again, so after a few `decay`s without one it
/// is within the ratio again and is probed, one call at a time, until an answer measures it. A
/// slowness that lasted moments costs its instance a few hundred milliseconds of calls, not
/// `stale_after`, and a lasting one costs one call every few hundred milliseconds.
#[inline]
fn judge(a: CandidateLoad, b: CandidateLoad, latency: &LatencyAware) -> Judgement {
    if a.latency_us == 0 || b.latency_us == 0 {
        return Judgement::Alike;
    }
    let stale_us = u64::try_from(latency.stale_after.as_micros()).unwrap_or(u64::MAX);
    if a.latency_at_us.abs_diff(b.latency_at_us) > stale_us {
        return Judgement::Alike;
    }
    let noise = latency.noise_us(a.client_lag_us.max(b.client_lag_us));
    let differ = |x: f64, y: f64| {
        let (high, low) = (x.max(y), x.min(y));
        high > latency.ratio * low && high - low > noise
    };
    let (raw_a, raw_b) = (f64::from(a.latency_us), f64::from(b.latency_us));
    let decay_us = latency.decay.as_secs_f64() * 1e6;
    let decayed = |older: f64, newer: f64, age_us: u64| {
        #[allow(clippy::cast_precision_loss)] // microsecond ages far below 2^52
        let factor = (-(age_us as f64) / decay_us).exp();
        (older * factor).max(newer)
    };
    let (mut latency_a, mut latency_b) = (raw_a, raw_b);
    if a.latency_at_us < b.latency_at_us && raw_a > raw_b {
        latency_a = decayed(raw_a, raw_b, b.latency_at_us - a.latency_at_us);
    } else if b.latency_at_us < a.latency_at_us && raw_b > raw_a {
        latency_b = decayed(raw_b, raw_a, a.latency_at_us - b.latency_at_us);
    }
    // Decay only lowers the higher estimate, so latencies that differ decayed differ raw too.
    // Once the raw estimates differ beyond the noise, the noise band has done its work: the
    // decayed ones are compared on cost until the older is within the ratio, and only then
    // probed. (Probing as soon as it decayed into the noise band would probe a slow instance
    // as much more often as the client is busier, and a busy client makes fewer calls: a 20 ms
    // slower instance would keep several percent of them.)
    if !differ(raw_a, raw_b) {
        Judgement::Alike
    } else if latency_a.max(latency_b) > latency.ratio * latency_a.min(latency_b) {
        let common = latency.common_us(
            latency_a.min(latency_b),
            (raw_a - raw_b).abs(),
            a.client_lag_us.max(b.client_lag_us),
        );
        Judgement::Differ(latency_a - common, latency_b - common)
    } else {
        Judgement::Probe {
            first: latency_a < raw_a,
        }
    }
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
    /// When the current run of answers above the noise band began; 0 for none.
    high_since_us: AtomicU64,
}

/// Answers an estimate needs before it is compared. Until then it is their plain mean, so that
/// one slow first answer (a cold server, a connection's first round trips) cannot make an
/// instance look slow for a whole `stale_after`.
pub(crate) const MIN_SAMPLES: u32 = 16;

/// `high_since_us` once a run of high answers has lasted `persist`: they count in full.
const CONFIRMED: u64 = u64::MAX;

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

    /// Folds in a call answered at `now_us` after `latency`, the client's jitter being
    /// `client_lag_us`, with no stall of the client in it. See [`Self::record_stalled`].
    #[cfg(test)]
    pub(crate) fn record(
        &self,
        latency: Duration,
        now_us: u64,
        client_lag_us: u32,
        config: &LatencyAware,
    ) {
        self.record_stalled(latency, Duration::ZERO, now_us, client_lag_us, config);
    }

    /// Folds in a call answered at `now_us` after `latency`, of which a stall of the client
    /// covered `stalled` (`ClientLag::own_delay`), the client's jitter being `client_lag_us`.
    ///
    /// A stall hides when the answer came: anywhere from `latency - stalled` (it was ready as
    /// the stall began) to `latency` (as it ended). The answer counts as the value in that
    /// range nearest the estimate, so that a stall moves the estimate only as far as the call
    /// proves: a fast instance's call held up by a stall does not make it slow, and a slow
    /// instance's call that a stall covered does not make it fast (taking the whole stall off,
    /// as a busy client's calls to a 20 ms slower instance often are, would).
    ///
    /// The first answer, and the first after a silence of more than `stale_after` (a probe of
    /// an instance that was avoided), set the estimate to their own latency; the next answers
    /// up to [`MIN_SAMPLES`] average with it (after a first answer only: an estimate that
    /// had its samples is compared again from the first answer after a silence); later ones
    /// move it by `dt / (dt + decay)`. An
    /// answer above the noise band (over `ratio` × the estimate and over the gap above it)
    /// counts at the band's edge until a run of such answers has lasted `persist`.
    #[inline]
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))] // recorded by the channel's calls
    pub(crate) fn record_stalled(
        &self,
        latency: Duration,
        stalled: Duration,
        now_us: u64,
        client_lag_us: u32,
        config: &LatencyAware,
    ) {
        let us = |d: Duration| f64::from(u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1));
        let (highest, lowest) = (us(latency), us(latency.saturating_sub(stalled)));
        let (old, at) = self.raw();
        let gap = now_us.saturating_sub(at);
        let samples = self.samples.load(Ordering::Relaxed);
        let restart = old == 0 || u128::from(gap) > config.stale_after.as_micros();
        let old = f64::from(old);
        let sample = if restart {
            lowest
        } else {
            old.clamp(lowest, highest)
        };
        // What this answer counts as: itself within the band; above it, the band's edge until
        // the run of high answers has lasted `persist`. The answer that completes the run
        // carries the whole run's time, so that a slow instance is over the band at once then.
        let mut dt = gap;
        let target = if restart {
            self.high_since_us.store(0, Ordering::Relaxed);
            sample
        } else {
            let edge = (config.ratio * old).max(old + config.noise_us(client_lag_us));
            let since = self.high_since_us.load(Ordering::Relaxed);
            if sample <= edge {
                self.high_since_us.store(0, Ordering::Relaxed);
                sample
            } else if since == CONFIRMED {
                sample
            } else {
                let since = if since == 0 {
                    self.high_since_us.store(now_us.max(1), Ordering::Relaxed);
                    now_us
                } else {
                    since
                };
                let lasted = now_us.saturating_sub(since);
                if u128::from(lasted) >= config.persist.as_micros() {
                    self.high_since_us.store(CONFIRMED, Ordering::Relaxed);
                    dt = dt.max(lasted);
                    sample
                } else {
                    edge
                }
            }
        };
        // How far the estimate moves towards it: all the way when (re)starting, by a plain mean
        // while it has fewer than MIN_SAMPLES answers, then by the time-decayed step.
        let step = if restart {
            // After a silence the connection is warm and the instance was measured before:
            // its first answer is compared at once. (Waiting for MIN_SAMPLES again would let
            // an instance avoided for longer than `stale_after` take its in-flight share of
            // calls until it had answered sixteen of them.)
            let known = samples >= MIN_SAMPLES;
            self.samples
                .store(if known { MIN_SAMPLES } else { 1 }, Ordering::Relaxed);
            1.0
        } else if samples < MIN_SAMPLES {
            self.samples.store(samples + 1, Ordering::Relaxed);
            1.0 / f64::from(samples + 1)
        } else {
            #[allow(clippy::cast_precision_loss)] // microsecond gaps far below 2^52
            let dt = dt as f64;
            dt / (dt + config.decay.as_secs_f64() * 1e6)
        };
        let moved = old + step * (target - old);
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
            client_lag_us: 0,
        }
    }

    /// An estimate with `MIN_SAMPLES` answers of `latency_us`, 1 ms apart, the last at `at_us`.
    fn settled(latency_us: u64, at_us: u64, config: &LatencyAware) -> LatencyEstimate {
        let e = LatencyEstimate::default();
        for n in (0..u64::from(MIN_SAMPLES)).rev() {
            e.record(Duration::from_micros(latency_us), at_us - n * MS, 0, config);
        }
        assert_eq!(e.read(), (u32::try_from(latency_us).unwrap(), at_us));
        e
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
        // 20.7 ms idle against 0.7 ms with 7 in flight. Latency up to the noise level (the 2 ms
        // gap on an idle client), as far as nine tenths of the lower estimate, is taken off
        // both: (0 + 1) × 20,070 > (7 + 1) × 70.
        let slow = load(0, 20_700, 50 * MS);
        let fast = load(7, 700, 50 * MS);
        assert!(prefer_second(slow, 1, fast, 1, Some(&l)));
        assert!(!prefer_second(fast, 1, slow, 1, Some(&l)));
        // Per unit of weight: with 4 × the weight it is still the dearer (20,070 / 4 > 8 × 70),
        // and it is the cheaper only past 285 in flight on the fast one (287 × 70 > 20,070).
        assert!(!prefer_second(fast, 1, slow, 4, Some(&l)));
        let loaded = |n| load(n, 700, 50 * MS);
        assert!(!prefer_second(loaded(285), 1, slow, 1, Some(&l)));
        assert!(prefer_second(loaded(286), 1, slow, 1, Some(&l)));
        // Latencies well above the noise level are compared nearly as measured (Finagle's
        // cost): 25 ms idle is the cheaper against 10 ms with 2 in flight, 23 < 3 × 8, and
        // not against 1, 23 > 2 × 8.
        let (ten, twenty_five) = (|n| load(n, 10_000, 50 * MS), load(0, 25_000, 50 * MS));
        assert!(!prefer_second(ten(1), 1, twenty_five, 1, Some(&l)));
        assert!(prefer_second(ten(2), 1, twenty_five, 1, Some(&l)));
        // Off: the idle one wins, as by in-flight counts.
        assert!(!prefer_second(slow, 1, fast, 1, None));
    }

    #[test]
    fn an_avoided_instance_decays_towards_the_others_and_is_measured_again() {
        let l = LatencyAware::default();
        let slow = load(0, 20_700, 5_000 * MS);
        let fast = |age_ms: u64| load(3, 700, (5_000 + age_ms) * MS);
        // Measured together: avoided.
        assert!(prefer_second(slow, 1, fast(0), 1, Some(&l)));
        // 100 ms without an answer (one decay): 20,700 / e = 7,615, still over 2 × and 2 ms
        // above the other's 700.
        assert!(prefer_second(slow, 1, fast(100), 1, Some(&l)));
        // 250 ms: 1,699, within 2 ms of it but over twice it: still compared on cost, with the
        // common delay that the 20 ms difference before decay allows taken off, and even idle
        // it is the dearer, (0 + 1) × (1,699 - 630) > (3 + 1) × 70.
        assert!(prefer_second(slow, 1, fast(250), 1, Some(&l)));
        // 300 ms: 1,031, within twice the other's: probed, by the in-flight rule (0 against 3
        // in flight)...
        assert!(!prefer_second(slow, 1, fast(300), 1, Some(&l)));
        assert!(prefer_second(fast(300), 1, slow, 1, Some(&l)));
        // ...one call at a time: with that probe in flight, the other takes the next, however
        // many it has.
        let probing = load(1, 20_700, 5_000 * MS);
        assert!(prefer_second(probing, 1, fast(300), 1, Some(&l)));
        assert!(!prefer_second(fast(300), 1, probing, 1, Some(&l)));
        // It never decays below the other: no rush of calls to an instance because it is old.
        let slower_peers = |age_ms: u64| load(3, 10_000, (5_000 + age_ms) * MS);
        assert!(!prefer_second(slow, 1, slower_peers(900), 1, Some(&l)));
        // An older estimate that is the lower one does not decay: the newer slow one loses.
        let old_fast = load(3, 700, 4_000 * MS);
        assert!(prefer_second(slow, 1, old_fast, 1, Some(&l)));
        // Over `stale_after` apart, or unknown: in-flight.
        assert!(!prefer_second(slow, 1, fast(1_001), 1, Some(&l)));
        assert!(!prefer_second(load(0, 0, 0), 1, fast(0), 1, Some(&l)));
        assert!(prefer_second(fast(0), 1, load(0, 0, 0), 1, Some(&l)));
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
        e.record(Duration::from_micros(5_000), 100 * MS, 0, &decay);
        assert_eq!(e.raw(), (5_000, 100 * MS), "the first answer starts it");
        assert_eq!(e.read(), (0, 100 * MS), "one answer is not compared");
        for n in 1..MIN_SAMPLES {
            e.record(
                Duration::from_micros(700),
                100 * MS + u64::from(n),
                0,
                &decay,
            );
        }
        // (5,000 + 15 × 700) / 16 = 968.75 (968 after rounding each step): one slow first answer
        // does not make it slow.
        assert_eq!(e.read(), (968, 100 * MS + 15));
        // Then over time. A 20.7 ms answer 10 ms later is above the noise band (2 ms over the
        // estimate): it counts as the band's edge, 2,968, and moves it by 10 / 1,010 of that gap.
        let at = 100 * MS + 15;
        e.record(Duration::from_micros(20_700), at + 10 * MS, 0, &decay);
        assert_eq!(e.read(), (988, at + 10 * MS));
        // 900 ms later, still high: the run has lasted `persist`, so it counts in full,
        // 900 / 1,900 of the way.
        e.record(Duration::from_micros(20_700), at + 910 * MS, 0, &decay);
        assert_eq!(e.read(), (10_325, at + 910 * MS));
        // After a silence over `stale_after` (1 s), the answer starts it again.
        e.record(Duration::from_micros(700), at + 1_911 * MS, 0, &decay);
        assert_eq!(
            e.read(),
            (700, at + 1_911 * MS),
            "compared at once: it had its samples before the silence"
        );
        // The same instant or earlier: no move in time.
        e.record(Duration::from_micros(700), at + 1_000 * MS, 0, &decay);
        assert_eq!(e.raw(), (700, at + 1_911 * MS));
        // Sub-microsecond answers count as 1 µs; a latency over u32::MAX µs saturates.
        let e = LatencyEstimate::default();
        e.record(Duration::from_nanos(10), 1, 0, &decay);
        assert_eq!(e.raw().0, 1);
        let e = LatencyEstimate::default();
        e.record(Duration::from_secs(10_000), 1, 0, &decay);
        assert_eq!(e.raw().0, u32::MAX);
    }

    #[test]
    fn differences_within_the_noise_change_nothing() {
        let l = LatencyAware::default();
        // A fast service: 150 µs against 40 µs is 3.75×, but 110 µs apart: in-flight decides.
        assert!(!prefer_second(
            load(0, 150, MS),
            1,
            load(1, 40, MS),
            1,
            Some(&l)
        ));
        // 2.5 ms against 0.4 ms: over the ratio and 2.1 ms apart, over the 2 ms gap.
        let (slow, fast) = (load(0, 2_500, MS), load(1, 400, MS));
        assert!(prefer_second(slow, 1, fast, 1, Some(&l)));
        // The client's jitter widens the gap: 300 µs of it makes 2 + 4 × 0.3 = 3.2 ms.
        let jittery = |c: CandidateLoad| CandidateLoad {
            client_lag_us: 300,
            ..c
        };
        assert!(!prefer_second(jittery(slow), 1, jittery(fast), 1, Some(&l)));
        let no_jitter = LatencyAware {
            lag_gap_factor: 0.0,
            ..l
        };
        assert!(prefer_second(
            jittery(slow),
            1,
            jittery(fast),
            1,
            Some(&no_jitter)
        ));
        // A really slow instance is well outside it.
        assert!(prefer_second(
            jittery(load(0, 20_400, MS)),
            1,
            jittery(fast),
            1,
            Some(&l)
        ));
    }

    #[test]
    fn a_busy_client_probes_an_avoided_instance_no_more_often() {
        // The client's jitter at its 2 ms bound widens the noise band to 2 + 4 × 2 = 10 ms.
        let l = LatencyAware::default();
        let busy = |c: CandidateLoad| CandidateLoad {
            client_lag_us: 2_000,
            ..c
        };
        let slow = busy(load(0, 20_700, 5_000 * MS));
        let fast = |age_ms: u64| busy(load(0, 700, (5_000 + age_ms) * MS));
        // 100 ms on, it has decayed to 7,615, within the band of 700 but over twice it: still
        // compared on cost, so the idle fast one takes the call, as on an idle client.
        assert!(prefer_second(slow, 1, fast(100), 1, Some(&l)));
        assert!(!prefer_second(fast(100), 1, slow, 1, Some(&l)));
        // Probed once within the ratio, as on an idle client: 300 ms on (1,031).
        assert!(prefer_second(slow, 1, fast(200), 1, Some(&l)));
        assert!(!prefer_second(slow, 1, fast(300), 1, Some(&l)));
        assert_eq!(
            judge(slow, fast(300), &l),
            judge(load(0, 20_700, 5_000 * MS), load(0, 700, 5_300 * MS), &l)
        );
    }

    #[test]
    fn latency_up_to_the_noise_level_is_taken_off_both_costs() {
        let l = LatencyAware::default();
        let busy = |c: CandidateLoad| CandidateLoad {
            client_lag_us: 1_000,
            ..c
        };
        // A busy machine: servers that answer at once measure 5.2 ms, and one 20 ms slower
        // 22.6 ms. Idle on weight 2 against 5.2 ms with 2 in flight on weight 1, as measured it
        // would be the cheaper: 22.6 / 2 = 11.3 < 3 × 5.2. Up to the noise level (2 + 4 × 1 =
        // 6 ms), as far as nine tenths of the lower estimate (4.68 ms), latency may be every
        // call's alike: (22.6 - 4.68) / 2 = 8.96 > 3 × 0.52, it is not...
        let slow = busy(load(0, 22_600, 50 * MS));
        let fast = |n| busy(load(n, 5_200, 50 * MS));
        assert!(prefer_second(slow, 2, fast(2), 1, Some(&l)));
        assert!(!prefer_second(fast(2), 1, slow, 2, Some(&l)));
        // ...until the fast one has 17 in flight, 18 × 0.52 > 8.96.
        assert!(!prefer_second(fast(16), 1, slow, 2, Some(&l)));
        assert!(prefer_second(fast(17), 1, slow, 2, Some(&l)));
        // On an idle client the noise level is the 2 ms gap: the same latencies are 3.2 and
        // 20.6 ms above it, and the slow one is the cheaper once the other has 3 in flight,
        // 20.6 / 2 < 4 × 3.2.
        let idle = |c: CandidateLoad| CandidateLoad {
            client_lag_us: 0,
            ..c
        };
        assert!(!prefer_second(idle(fast(2)), 1, idle(slow), 2, Some(&l)));
        assert!(prefer_second(idle(fast(3)), 1, idle(slow), 2, Some(&l)));
        // Only as far as the difference (before decay) is past the noise level: 8.6 against
        // 2.5 ms on the busy client differs by 6.1 ms, 0.1 ms past its 6 ms, and only its
        // jitter (1 ms) is taken off. The slower one is the cheaper once the other has 5 in
        // flight, 7.6 < 6 × 1.5, not 4, 7.6 > 5 × 1.5; taking 90 % of 2.5 ms off both would
        // have made it 25 times dearer rather than 5 times, for a difference that may be partly
        // noise itself.
        assert_eq!(l.common_us(2_500.0, 6_100.0, 1_000), 1_000.0);
        let (quick, slower) = (
            |n| busy(load(n, 2_500, 50 * MS)),
            busy(load(0, 8_600, 50 * MS)),
        );
        assert!(!prefer_second(quick(4), 1, slower, 1, Some(&l)));
        assert!(prefer_second(quick(5), 1, slower, 1, Some(&l)));
        // A difference of 9.6 ms is 3.6 ms past it, more than 90 % of the lower latency: that
        // much is taken off.
        assert_eq!(l.common_us(2_500.0, 9_600.0, 1_000), 0.9 * 2_500.0);
    }

    #[test]
    fn a_stall_moves_the_estimate_only_as_far_as_the_call_proves() {
        let l = LatencyAware::default();
        // A fast instance's call held up by a 25 ms stall of the client: the answer may have
        // come at any time in it, as early as 200 µs, which is the nearest to its 100 µs estimate.
        let fast = settled(100, 50 * MS, &l);
        fast.record_stalled(
            Duration::from_micros(25_200),
            Duration::from_micros(25_000),
            80 * MS,
            0,
            &l,
        );
        assert_eq!(fast.read().0, 123, "moved towards 200 µs, by 30 / 130");
        // A 20 ms slower instance's call that a 15 ms stall covered: 21 ms measured, 6 to 21
        // ms proven. Taking the whole stall off would have made it 6 ms; it counts as the
        // estimate, 20.7 ms, and leaves it there.
        let slow = settled(20_700, 50 * MS, &l);
        slow.record_stalled(
            Duration::from_micros(21_000),
            Duration::from_micros(15_000),
            80 * MS,
            0,
            &l,
        );
        assert_eq!(slow.read().0, 20_700);
        // A call the stall did not cover counts as it is.
        slow.record_stalled(Duration::from_micros(900), Duration::ZERO, 90 * MS, 0, &l);
        assert!(slow.read().0 < 20_700);
        // With nothing to be near (the first answer), the least the call proves.
        let new = LatencyEstimate::default();
        new.record_stalled(
            Duration::from_micros(25_200),
            Duration::from_micros(25_000),
            80 * MS,
            0,
            &l,
        );
        assert_eq!(new.raw().0, 200);
    }

    #[test]
    fn one_burst_of_late_answers_moves_the_estimate_little() {
        let l = LatencyAware::default();
        // 100 µs answers; then a 30 ms pause of the client that went unseen, after which three
        // calls in flight are answered at once, 25 to 30 ms late, and the next ones are fast.
        let e = settled(100, 50 * MS, &l);
        for late in [30_000, 27_000, 25_000] {
            e.record(Duration::from_micros(late), 80 * MS, 0, &l);
        }
        // The first, 30 ms after the last move, counts at the band's edge (2.1 ms), by 30 / 130.
        assert_eq!(e.read().0, 562);
        for n in 1..=20 {
            e.record(Duration::from_micros(100), 80 * MS + n * 200, 0, &l);
        }
        let (after, _) = e.read();
        assert!(after < 560, "{after}: back towards 100 µs");
        // Against a peer at 100 µs it is within the noise: not compared.
        assert!(!prefer_second(
            load(0, after, 84 * MS),
            1,
            load(3, 100, 84 * MS),
            1,
            Some(&l)
        ));
        // Without the persistence rule the same burst would have lifted it to 7 ms, 70 times
        // its peer's latency and over the gap: its calls would have gone to the others.
        let eager = LatencyAware {
            persist: Duration::ZERO,
            ..l
        };
        let e = settled(100, 50 * MS, &eager);
        e.record(Duration::from_micros(30_000), 80 * MS, 0, &eager);
        assert_eq!(e.read().0, 7_000);
    }

    #[test]
    fn an_instance_that_stays_slow_counts_in_full_after_persist() {
        let l = LatencyAware::default();
        // 700 µs, then 20.7 ms on every answer, one every 2 ms (several callers).
        let e = settled(700, 100 * MS, &l);
        let peer = load(0, 700, 100 * MS);
        let mut avoided_at = None;
        for n in 1..=40 {
            let now = 120 * MS + n * 2 * MS;
            e.record(Duration::from_micros(20_700), now, 0, &l);
            let (latency_us, at) = e.read();
            if avoided_at.is_none() && prefer_second(load(0, latency_us, at), 1, peer, 1, Some(&l))
            {
                avoided_at = Some(now);
            }
        }
        // The run began at 122 ms; at 132 ms it has lasted `persist` and counts in full, with
        // the run's 10 ms: that takes the estimate over 2 × 700 µs and 2 ms above it at once.
        assert_eq!(avoided_at, Some(132 * MS));
        assert!(e.read().0 > 10_000, "{:?}", e.read());
    }

    #[test]
    fn an_instance_slow_on_half_its_calls_still_looks_slow() {
        let l = LatencyAware::default();
        // 1 ms and 50 ms answers in turn, one every 5 ms: no run of slow answers lasts, but
        // each still pulls the estimate to the band's edge, which moves up with it.
        let e = settled(1_000, 100 * MS, &l);
        for n in 1..=200 {
            let latency = if n % 2 == 0 { 1_000 } else { 50_000 };
            e.record(Duration::from_micros(latency), 100 * MS + n * 5 * MS, 0, &l);
        }
        let (latency_us, at) = e.read();
        // Half-way up in a second (their mean is 25.5 ms), and clearly slower than its peer.
        assert!(latency_us > 4_000, "{latency_us}");
        assert!(prefer_second(
            load(0, latency_us, at),
            1,
            load(2, 1_000, at),
            1,
            Some(&l)
        ));
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
