//! The client's own scheduling lag, for the latency-aware choice: how late a heartbeat timer on
//! the client's runtime runs, as the spill controller measures it on its tick, but every
//! [`ClientLag::PERIOD`] so that stalls of a few milliseconds are seen.
//!
//! A call's latency is measured when its task is polled, not when the answer arrived. When the
//! client's thread stalls (its CPU quota spent and CFS-throttled, a neighbour's work, a blocking
//! call on the runtime), every call in flight is answered at the end of the stall, and looks as
//! slow as the stall was long: on servers that answer in microseconds, that is a thousand times
//! their latency, and it falls on whichever instances had calls in flight. Two defences:
//!
//! - a beat later than [`ClientLag::STALL`] marks a **stall**, from when the beat was due to
//!   when it ran: the part of a call's time that the stall covers (or the time since the
//!   heartbeat became overdue, while one goes on) may be the client's: the answer may have come
//!   at any time in it ([`ClientLag::own_delay`]; the estimate takes the value nearest itself);
//! - smaller lateness is the client's ordinary **jitter**, smoothed into [`ClientLag::lag_us`]:
//!   the latency-aware choice treats differences within `lag_gap_factor` times it as noise.
//!
//! Pure: the heartbeat task and the calls hand in the times (microseconds on
//! [`micros`](super::micros)'s clock).

// The heartbeat runs in the balancer (feature `tonic`).
#![cfg_attr(not(feature = "tonic"), allow(dead_code))]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The heartbeat and what it saw: three relaxed atomics, written by the heartbeat task, read by
/// every answered call and every pick.
#[derive(Debug, Default)]
pub(crate) struct ClientLag {
    /// When the heartbeat last ran; 0 before its first beat.
    beat_us: AtomicU64,
    /// When the last stall began (the late beat was due) and ended (it ran); 0 for none.
    stall_from_us: AtomicU64,
    stall_end_us: AtomicU64,
    /// Smoothed jitter, microseconds.
    lag_us: AtomicU32,
}

impl ClientLag {
    /// How often the heartbeat runs: shorter than the stalls worth seeing (CFS throttling stalls
    /// for tens of milliseconds; a descheduled thread for a few).
    pub(crate) const PERIOD: Duration = Duration::from_millis(5);
    /// Lateness that is the timer's own: tokio's timer wheel fires on whole milliseconds.
    pub(crate) const RESOLUTION: Duration = Duration::from_millis(1);
    /// Lateness beyond [`RESOLUTION`](Self::RESOLUTION) above this is a stall.
    pub(crate) const STALL: Duration = Duration::from_millis(2);
    /// Each beat moves the jitter this far towards its own lateness.
    const SMOOTHING: f64 = 0.125;

    /// One heartbeat, scheduled for `scheduled_us`, running at `now_us`.
    pub(crate) fn beat(&self, scheduled_us: u64, now_us: u64) {
        let late = now_us
            .saturating_sub(scheduled_us)
            .saturating_sub(micros_of(Self::RESOLUTION));
        let stall = micros_of(Self::STALL);
        if late > stall {
            self.stall_from_us.store(scheduled_us, Ordering::Relaxed);
            self.stall_end_us.store(now_us, Ordering::Relaxed);
        }
        // A stall counts as STALL of jitter: the calls it covers count only as far as they
        // prove, so its length says nothing about the noise on the others; this bounds the
        // noise band.
        let sample = late.min(stall);
        let old = u64::from(self.lag_us.load(Ordering::Relaxed));
        #[allow(clippy::cast_precision_loss)] // microseconds, far below 2^52
        let moved = old as f64 + Self::SMOOTHING * (sample as f64 - old as f64);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // within 0..=STALL
        self.lag_us
            .store(moved.floor().max(0.0) as u32, Ordering::Relaxed);
        self.beat_us.store(now_us, Ordering::Relaxed);
    }

    /// The client's smoothed jitter in microseconds.
    #[inline]
    pub(crate) fn lag_us(&self) -> u32 {
        self.lag_us.load(Ordering::Relaxed)
    }

    /// How much of the time from `started_us` to `now_us` (a call's) the client was stalled:
    /// the overlap with the last stall, plus, while the heartbeat is overdue by more than a
    /// stall, the time since it was due (a stall going on that no beat has seen yet). That
    /// delay is the client's, not the instance's. 0 before the first beat: without a heartbeat
    /// nothing is taken off.
    #[inline]
    pub(crate) fn own_delay(&self, started_us: u64, now_us: u64) -> u64 {
        let beat = self.beat_us.load(Ordering::Relaxed);
        if beat == 0 {
            return 0;
        }
        let overlap = |from: u64, to: u64| to.min(now_us).saturating_sub(from.max(started_us));
        let last = overlap(
            self.stall_from_us.load(Ordering::Relaxed),
            self.stall_end_us.load(Ordering::Relaxed),
        );
        let due = beat + micros_of(Self::PERIOD + Self::RESOLUTION);
        let ongoing = if now_us.saturating_sub(due) > micros_of(Self::STALL) {
            overlap(due, now_us)
        } else {
            0
        };
        last + ongoing
    }
}

fn micros_of(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    #[test]
    fn on_time_beats_leave_no_lag_and_time_every_call() {
        let lag = ClientLag::default();
        for n in 1..=20 {
            // The timer's own millisecond is not lag.
            lag.beat(n * 5 * MS, n * 5 * MS + 900);
        }
        assert_eq!(lag.lag_us(), 0);
        assert_eq!(lag.own_delay(60 * MS, 101 * MS), 0);
    }

    #[test]
    fn jitter_is_smoothed_and_bounded_by_a_stall() {
        let lag = ClientLag::default();
        // 1.8 ms late: 0.8 ms beyond the timer's resolution, an eighth of the way.
        lag.beat(5 * MS, 6_800);
        assert_eq!(lag.lag_us(), 100);
        assert_eq!(lag.own_delay(MS, 7 * MS), 0, "jitter is not a stall");
        // A 30 ms stall counts as 2 ms of jitter.
        lag.beat(10 * MS, 41 * MS);
        assert_eq!(lag.lag_us(), 337, "100 + (2,000 - 100) / 8");
        for n in 0..40 {
            lag.beat(50 * MS + n * 5 * MS, 50 * MS + n * 5 * MS);
        }
        assert!(lag.lag_us() < 10, "{}", lag.lag_us());
    }

    #[test]
    fn the_part_of_a_call_that_a_stall_covers_is_the_clients() {
        let lag = ClientLag::default();
        assert_eq!(lag.own_delay(0, 50 * MS), 0, "no heartbeat yet");
        lag.beat(5 * MS, 5 * MS);
        // The thread stalls from about 10 to 31 ms; the beat due at 10 ms runs at 31 ms.
        // Before that beat, a call answered at 31 ms sees the heartbeat overdue since 11 ms
        // (due at 10, plus the timer's millisecond).
        assert_eq!(lag.own_delay(6 * MS, 31 * MS), 20 * MS);
        // 8 ms after the beat is not yet overdue by more than a stall: nothing taken off.
        assert_eq!(lag.own_delay(12 * MS, 13 * MS), 0);
        lag.beat(10 * MS, 31 * MS);
        // Once seen: the overlap with 10..31 ms.
        assert_eq!(lag.own_delay(6 * MS, 32 * MS), 21 * MS);
        assert_eq!(lag.own_delay(20 * MS, 32 * MS), 11 * MS);
        assert_eq!(lag.own_delay(31 * MS, 33 * MS), 0, "started as it ended");
        assert_eq!(lag.own_delay(2 * MS, 8 * MS), 0, "before it");
        // Jitter is not taken off.
        lag.beat(36 * MS, 37_500);
        assert_eq!(lag.own_delay(32 * MS, 38 * MS), 0);
    }
}
