//! Weights: the configured capacity of each instance and its adjustment by reported load.

use std::time::{Duration, SystemTime};

use crate::contract::Load;
use crate::instance::Instance;

/// Load-adjusted weights are kept in thousandths of a configured weight unit, so the adjustment
/// stays in integers.
pub(crate) const MILLI: u64 = 1000;

/// The weight each instance is configured with: `LB_WEIGHT`, or, when it is missing or malformed,
/// the median of the known positive weights (the lower median for an even count), or 1 when no
/// instance has one.
///
/// Zeros do not count towards the median: a 0 is an operator's "never pick", not a capacity, and
/// counting them could make every unweighted instance unpickable.
pub(crate) fn base_weights(instances: &[Instance]) -> Vec<u32> {
    let mut known: Vec<u32> = instances
        .iter()
        .filter_map(|i| i.weight.map(|w| w.get()))
        .filter(|&w| w > 0)
        .collect();
    let fallback = if known.is_empty() {
        1
    } else {
        let middle = (known.len() - 1) / 2;
        *known.select_nth_unstable(middle).1
    };
    instances
        .iter()
        .map(|i| i.weight.map_or(fallback, |w| w.get()))
        .collect()
}

/// The factor, in thousandths, that reported load applies to an instance's weight:
/// `1 − 0.75 × load / 100`, so 1.0 at 0 % CPU and 0.25 at 100 %.
///
/// Bounded below by 0.25: a stale, wrong or spiking load value can shift traffic away from an
/// instance but never starve it. Load older than `max_age` (by `LB_UPDATED_AT`) is ignored
/// (factor 1.0); load without a timestamp is used as is, since the bound keeps it harmless.
pub(crate) fn load_factor_milli(
    load: Option<Load>,
    updated_at: Option<SystemTime>,
    now: SystemTime,
    max_age: Duration,
) -> u64 {
    let Some(load) = load else {
        return MILLI;
    };
    let stale = updated_at
        .and_then(|at| now.duration_since(at).ok())
        .is_some_and(|age| age > max_age);
    if stale {
        return MILLI;
    }
    MILLI - u64::from(load.get()) * 750 / 100
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Weight;

    fn with_weights(weights: &[Option<u32>]) -> Vec<Instance> {
        weights
            .iter()
            .enumerate()
            .map(|(n, w)| {
                let mut i = Instance::new(n.to_string(), "127.0.0.1:1".parse().unwrap());
                i.weight = w.map(Weight::saturating);
                i
            })
            .collect()
    }

    #[test]
    fn missing_weights_take_the_median_of_known_positive_weights() {
        let instances = with_weights(&[Some(100), None, Some(300), Some(0), Some(200)]);
        assert_eq!(base_weights(&instances), vec![100, 200, 300, 0, 200]);
        let even = with_weights(&[Some(100), Some(400), None]);
        assert_eq!(base_weights(&even), vec![100, 400, 100]);
    }

    #[test]
    fn without_any_weight_everyone_weighs_one() {
        let instances = with_weights(&[None, None, Some(0)]);
        assert_eq!(base_weights(&instances), vec![1, 1, 0]);
    }

    #[test]
    fn load_factor_is_bounded_and_ignores_stale_load() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let max_age = Duration::from_secs(300);
        let f = |load: u32, at: Option<SystemTime>| {
            load_factor_milli(Load::new(load), at, now, max_age)
        };
        assert_eq!(load_factor_milli(None, None, now, max_age), 1000);
        assert_eq!(f(0, None), 1000);
        assert_eq!(f(40, Some(now)), 700);
        assert_eq!(f(100, Some(now)), 250);
        assert_eq!(f(100, Some(now - Duration::from_secs(301))), 1000);
        assert_eq!(f(100, Some(now - Duration::from_secs(299))), 250);
        // A timestamp in the future (clock skew) counts as fresh.
        assert_eq!(f(100, Some(now + Duration::from_secs(60))), 250);
        for load in 0..=100 {
            let factor = f(load, None);
            assert!((250..=1000).contains(&factor), "{load} -> {factor}");
        }
    }
}
