//! A6's retry throttle: a token count shared by every call of a balancer, in atomics.

use std::sync::atomic::{AtomicU32, Ordering};

use super::RetryThrottling;

/// Tokens in thousandths, so `token_ratio` (up to 3 decimals) stays an integer.
#[derive(Debug)]
pub(crate) struct Throttle {
    milli: AtomicU32,
    max: u32,
    ratio: u32,
}

impl Throttle {
    pub(crate) fn new(settings: &RetryThrottling) -> Self {
        let max = settings.max_tokens.saturating_mul(1000);
        // Validated: 0 < ratio <= max_tokens, so the rounded value fits.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ratio = ((settings.token_ratio * 1000.0).round() as u32).clamp(1, max.max(1));
        Self {
            milli: AtomicU32::new(max),
            max,
            ratio,
        }
    }

    /// A retryable failure: takes a token. Returns whether retries are still allowed (the count
    /// is above half of the maximum).
    pub(crate) fn on_failure(&self) -> bool {
        let before = self
            .milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(1000))
            })
            .unwrap_or(0);
        before.saturating_sub(1000) > self.max / 2
    }

    /// A successful call: gives `token_ratio` back, up to the maximum. A load and nothing more
    /// while the count is full, the common case.
    #[inline]
    pub(crate) fn on_success(&self) {
        if self.milli.load(Ordering::Relaxed) >= self.max {
            return;
        }
        let _ = self
            .milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(self.ratio).min(self.max))
            });
    }

    /// The token count now.
    pub(crate) fn tokens(&self) -> f64 {
        f64::from(self.milli.load(Ordering::Relaxed)) / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stop_at_half_and_come_back_with_successes() {
        let t = Throttle::new(&RetryThrottling::default());
        // 10 → 9, 8, 7, 6 allow; 5 is at the threshold and does not.
        let allowed: Vec<bool> = (0..6).map(|_| t.on_failure()).collect();
        assert_eq!(allowed, vec![true, true, true, true, false, false]);
        assert!((t.tokens() - 4.0).abs() < 1e-9);
        // Eleven successes bring it to 5.1; a failure counts before the check, so it takes the
        // count to 4.1 and is still not retried. Twenty more (6.1) and the next failure is.
        for _ in 0..11 {
            t.on_success();
        }
        assert!((t.tokens() - 5.1).abs() < 1e-9);
        assert!(!t.on_failure());
        for _ in 0..20 {
            t.on_success();
        }
        assert!(t.on_failure());
        assert!((t.tokens() - 5.1).abs() < 1e-9);
        // Never below 0, never above the maximum.
        for _ in 0..20 {
            t.on_failure();
        }
        assert_eq!(t.tokens(), 0.0);
        for _ in 0..1000 {
            t.on_success();
        }
        assert!((t.tokens() - 10.0).abs() < 1e-9);
    }
}
