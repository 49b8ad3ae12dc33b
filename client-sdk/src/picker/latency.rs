//! Latency histograms: quarter-octave buckets from 4 µs to about 4.3 s, for medians of the calls
//! to a zone. Recording is one bucket index (a leading-zero count and a shift) and one add.

use std::time::Duration;

/// Quarter-octave buckets over 2^12 … 2^32 ns.
pub(crate) const BUCKETS: usize = 80;
const FIRST_OCTAVE: u32 = 12;

/// The bucket of a latency in nanoseconds: `4 × (log2 − 12)` plus the next two bits. Below 4 µs
/// is bucket 0, above 4.3 s the last.
#[inline]
#[cfg_attr(not(feature = "tonic"), allow(dead_code))] // recorded by the channel's endpoints
pub(crate) fn bucket(nanos: u64) -> usize {
    if nanos < 1 << FIRST_OCTAVE {
        return 0;
    }
    let octave = 63 - nanos.leading_zeros();
    let quarter = (nanos >> (octave - 2)) & 3;
    let index = (octave - FIRST_OCTAVE) as usize * 4 + quarter as usize;
    index.min(BUCKETS - 1)
}

/// The lower edge of bucket `b`, in nanoseconds.
fn lower(b: usize) -> f64 {
    let octave = (b / 4) as i32 + FIRST_OCTAVE as i32;
    let quarter = (b % 4) as f64;
    2f64.powi(octave) * (1.0 + quarter / 4.0)
}

/// Counts per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Histogram {
    pub(crate) counts: [u32; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
        }
    }
}

impl Histogram {
    /// Records one latency.
    #[cfg(test)]
    pub(crate) fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let b = bucket(nanos);
        self.counts[b] = self.counts[b].saturating_add(1);
    }

    /// Adds another histogram's counts.
    pub(crate) fn absorb(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// Samples in all.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The `q` quantile (0 to 1), interpolated within its bucket; `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let rank = q.clamp(0.0, 1.0) * (total as f64);
        let mut seen = 0.0;
        for (b, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let c = f64::from(c);
            if seen + c >= rank {
                let within = ((rank - seen) / c).clamp(0.0, 1.0);
                let (low, high) = (lower(b), lower(b + 1));
                // Geometric within the bucket, as the buckets are.
                let nanos = low * (high / low).powf(within);
                return Some(Duration::from_secs_f64(nanos / 1e9));
            }
            seen += c;
        }
        Some(Duration::from_secs_f64(lower(BUCKETS) / 1e9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_quarter_octaves() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(4095), 0);
        assert_eq!(bucket(4096), 0);
        assert_eq!(bucket(5120), 1);
        assert_eq!(bucket(8192), 4);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        // Every bucket's lower edge falls in that bucket.
        for b in 0..BUCKETS {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let edge = lower(b).ceil() as u64;
            assert_eq!(bucket(edge), b, "bucket {b}");
        }
    }

    #[test]
    fn medians_are_within_a_bucket_of_the_truth() {
        let mut h = Histogram::default();
        for ms in 1..=99 {
            h.record(Duration::from_millis(ms));
        }
        let median = h.quantile(0.5).unwrap().as_secs_f64() * 1e3;
        assert!((median / 50.0 - 1.0).abs() < 0.19, "{median}");
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut other = Histogram::default();
        other.record(Duration::from_secs(1));
        h.absorb(&other);
        assert_eq!(h.count(), 100);
    }
}
