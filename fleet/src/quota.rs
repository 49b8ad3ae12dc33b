//! Cloud Map's request quotas: one token bucket per operation, per account and region, shared
//! by every caller (AWS Cloud Map Developer Guide, "DiscoverInstances API request throttling").

use std::time::Duration;

/// The documented quotas, in requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quotas {
    /// `DiscoverInstances`: refill rate.
    pub discover_rate: f64,
    /// `DiscoverInstances`: bucket size (the burst).
    pub discover_burst: f64,
    /// `DiscoverInstancesRevision`: refill rate.
    pub revision_rate: f64,
    /// `DiscoverInstancesRevision`: bucket size. The quota table gives only the rate; the
    /// bucket is taken to hold one second of it.
    pub revision_burst: f64,
}

impl Quotas {
    /// 1,000/s with a 2,000 burst for `DiscoverInstances`, 3,000/s for
    /// `DiscoverInstancesRevision`.
    pub const AWS: Self = Self {
        discover_rate: 1000.0,
        discover_burst: 2000.0,
        revision_rate: 3000.0,
        revision_burst: 3000.0,
    };

    /// Every quota times `factor` (small test fleets against proportionally small quotas).
    #[must_use]
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            discover_rate: self.discover_rate * factor,
            discover_burst: self.discover_burst * factor,
            revision_rate: self.revision_rate * factor,
            revision_burst: self.revision_burst * factor,
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` held; a call takes one token, or
/// is throttled when there is none (a throttled call takes nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Duration,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            at: Duration::ZERO,
        }
    }

    /// A call at `now` (time since the model started; never earlier than the last call's):
    /// `true` when it gets a token, `false` when it is throttled.
    pub fn take(&mut self, now: Duration) -> bool {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_serves_its_burst_then_its_rate() {
        let mut bucket = TokenBucket::new(1000.0, 2000.0);
        let at = Duration::from_secs(10);
        let served = (0..2500).filter(|_| bucket.take(at)).count();
        assert_eq!(served, 2000, "the burst, all in one instant");
        // One second later, one second of refill.
        let later = at + Duration::from_secs(1);
        let served = (0..2500).filter(|_| bucket.take(later)).count();
        assert_eq!(served, 1000);
    }

    #[test]
    fn a_steady_rate_at_the_quota_is_never_throttled() {
        let mut bucket = TokenBucket::new(1000.0, 2000.0);
        let throttled = (0..100_000_u64)
            .filter(|&i| !bucket.take(Duration::from_micros(i * 1000)))
            .count();
        assert_eq!(throttled, 0);
    }

    #[test]
    fn above_the_rate_the_excess_is_throttled() {
        let mut bucket = TokenBucket::new(100.0, 200.0);
        // 300 calls a second for 10 s: 200 of burst + 100/s of refill get through.
        let served = (0..3000_u64)
            .filter(|&i| bucket.take(Duration::from_micros(i * 3333)))
            .count();
        assert!((1190..=1210).contains(&served), "{served}");
    }
}
