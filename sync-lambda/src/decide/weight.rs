//! `LB_WEIGHT`: relative capacity from the task's CPU size, or the task's `lb:weight` tag.
//!
//! Formula: `LB_WEIGHT = round(cpu_units × 100 / 256)`, clamped to 1–10000. A quarter vCPU (256
//! units) is 100, one vCPU 400, four vCPUs 1600; the smallest Fargate size (128 units) is 50.
//! The formula never gives 0 (0 means "never pick"): only a tag can take a task out that way.
//! Unknown CPU (an EC2 task without a CPU reservation) gives the configured default weight.
//!
//! A valid task tag `lb:weight` (an integer 0–10000, e.g. propagated from the service) overrides
//! the formula; an invalid one is logged by the caller and ignored.

use cloudmap_balancer::contract::Weight;

use crate::task::WeightTag;

/// Weight for `cpu_units` by the formula above.
pub(crate) fn from_cpu_units(cpu_units: u32) -> Weight {
    let scaled = (u64::from(cpu_units) * 100 + 128) / 256;
    let clamped = scaled.clamp(1, u64::from(Weight::MAX.get()));
    Weight::saturating(u32::try_from(clamped).unwrap_or(u32::MAX))
}

/// The weight to write: a valid tag, else the formula, else `default`.
pub(crate) fn weight(tag: Option<&WeightTag>, cpu_units: Option<u32>, default: Weight) -> Weight {
    match tag {
        Some(WeightTag::Valid(weight)) => *weight,
        _ => cpu_units.map_or(default, from_cpu_units),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_points() {
        for (units, expected) in [
            (1, 1),
            (128, 50),
            (256, 100),
            (512, 200),
            (1024, 400),
            (4096, 1600),
            (16_384, 6400),
            (196_608, 10_000),
            (u32::MAX, 10_000),
        ] {
            assert_eq!(from_cpu_units(units).get(), expected, "{units} units");
        }
    }

    #[test]
    fn a_valid_tag_overrides_and_an_invalid_one_does_not() {
        let default = Weight::saturating(100);
        let tag = WeightTag::Valid(Weight::ZERO);
        assert_eq!(weight(Some(&tag), Some(1024), default), Weight::ZERO);
        let bad = WeightTag::Invalid("heavy".into());
        assert_eq!(weight(Some(&bad), Some(1024), default).get(), 400);
        assert_eq!(weight(None, None, default), default);
    }
}
