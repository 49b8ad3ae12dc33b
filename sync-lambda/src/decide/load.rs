//! `LB_LOAD`: CPU utilisation from Container Insights, written only when it moved enough.
//!
//! Utilisation is `100 × used / reserved` (Container Insights' `CpuUtilized` over `CpuReserved`,
//! both in CPU units), rounded and clamped to 0–100. Load changes every minute; writing every
//! change would move every client's revision every minute, so a new value is written only when it
//! differs from the written one by at least the configured step (default 10 points), or when it
//! appears or disappears.

use cloudmap_balancer::contract::Load;

/// Utilisation in percent from used and reserved CPU units. `None` when either is not a finite
/// number or nothing is reserved.
pub(crate) fn utilisation(used: f64, reserved: f64) -> Option<Load> {
    if !used.is_finite() || !reserved.is_finite() || reserved <= 0.0 {
        return None;
    }
    Load::from_utilisation(100.0 * used / reserved)
}

/// Whether `measured` differs enough from `written` to be worth a write.
pub(crate) fn moved(written: Option<Load>, measured: Option<Load>, step: u32) -> bool {
    match (written, measured) {
        (Some(old), Some(new)) => old.get().abs_diff(new.get()) >= step.max(1),
        (None, None) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilisation_points() {
        assert_eq!(utilisation(128.0, 256.0), Load::new(50));
        assert_eq!(utilisation(300.0, 256.0), Load::new(100));
        assert_eq!(utilisation(0.0, 1024.0), Load::new(0));
        assert_eq!(utilisation(10.0, 0.0), None);
        assert_eq!(utilisation(f64::NAN, 256.0), None);
        assert_eq!(utilisation(10.0, f64::INFINITY), None);
    }

    #[test]
    fn only_a_step_or_an_appearance_counts() {
        let l = |v| Load::new(v);
        assert!(!moved(l(40), l(49), 10));
        assert!(moved(l(40), l(50), 10));
        assert!(moved(l(50), l(40), 10));
        assert!(moved(None, l(3), 10));
        assert!(moved(l(3), None, 10));
        assert!(!moved(None, None, 10));
        // A step of 0 would write on every equal value: treated as 1.
        assert!(!moved(l(7), l(7), 0));
    }
}
