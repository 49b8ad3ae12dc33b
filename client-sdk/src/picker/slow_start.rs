//! Slow start: a growing share for a task that just turned RUNNING (see [`SlowStart`]).

use std::time::{Duration, SystemTime};

use super::weight::MILLI;

/// Slow start (Envoy's slow start mode): a task that just turned RUNNING takes a growing share
/// of its weight over a window, so its caches and JIT warm up before it takes a full share.
///
/// ```text
/// factor = max(min_weight_percent / 100, time_factor ^ (1 / aggression))
/// time_factor = max(seconds since LB_RUNNING_SINCE, 1) / window in seconds
/// ```
///
/// and 1 once the window has passed. The time comes from `LB_RUNNING_SINCE`, which the sync
/// Lambda writes from ECS's `startedAt`, so every client ramps a task from the same moment,
/// clients started later included; an instance that has run longer than the window, or carries
/// no `LB_RUNNING_SINCE`, takes its full weight at once. (Envoy ramps from the moment a host joins
/// the *client's* cluster and exempts hosts of the first update; a shared start time makes that
/// exemption unnecessary.)
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SlowStart {
    /// How long a new task ramps up. Default 60 s.
    pub window: Duration,
    /// The curve: 1 is linear, above 1 ramps faster early, below 1 slower. Above 0. Default 1.
    pub aggression: f64,
    /// The share of its weight a task starts with, in percent (1 to 100). Default 10.
    pub min_weight_percent: u8,
}

impl Default for SlowStart {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            aggression: 1.0,
            min_weight_percent: 10,
        }
    }
}

impl SlowStart {
    /// Slow start over `window`, with Envoy's default curve (linear, from 10 %).
    pub fn over(window: Duration) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }

    /// The factor, in thousandths, that an instance running since `since` gets at `now`.
    pub(crate) fn factor_milli(&self, since: Option<SystemTime>, now: SystemTime) -> u64 {
        let Some(since) = since else {
            return MILLI;
        };
        // A start time in the future (clock skew) counts as just started.
        let age = now.duration_since(since).unwrap_or(Duration::ZERO);
        if age >= self.window {
            return MILLI;
        }
        let time_factor = age.as_secs_f64().max(1.0) / self.window.as_secs_f64();
        let curve = time_factor.powf(1.0 / self.aggression);
        let floor = f64::from(self.min_weight_percent) / 100.0;
        // In [floor, 1], so the cast cannot overflow or go negative.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let milli = (curve.max(floor).min(1.0) * 1000.0).round() as u64;
        milli.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    #[test]
    fn envoys_curve() {
        let linear = SlowStart::over(Duration::from_secs(100));
        let since = Some(at(0));
        let f = |s: &SlowStart, seconds| s.factor_milli(since, at(seconds));
        assert_eq!(f(&linear, 0), 100, "the minimum weight at first");
        assert_eq!(f(&linear, 5), 100);
        assert_eq!(f(&linear, 25), 250);
        assert_eq!(f(&linear, 50), 500);
        assert_eq!(f(&linear, 75), 750);
        assert_eq!(f(&linear, 99), 990);
        assert_eq!(f(&linear, 100), 1000);
        assert_eq!(f(&linear, 1_000_000), 1000);
        // Aggression 2: square root, faster early.
        let eager = SlowStart {
            aggression: 2.0,
            ..linear
        };
        assert_eq!(f(&eager, 25), 500);
        // Aggression 0.5: square, slower early.
        let careful = SlowStart {
            aggression: 0.5,
            min_weight_percent: 1,
            ..linear
        };
        assert_eq!(f(&careful, 50), 250);
        assert_eq!(f(&careful, 1), 10, "(1/100)^2 is below the 1 % floor");
        // No start time: full weight; a start time in the future: just started.
        assert_eq!(linear.factor_milli(None, at(0)), 1000);
        assert_eq!(linear.factor_milli(Some(at(60)), at(0)), 100);
    }
}
