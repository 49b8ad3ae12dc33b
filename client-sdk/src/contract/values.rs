//! Typed values of the contract: what each attribute may hold and how it is spelled.

use std::fmt;

/// Lifecycle of a task as the balancer sees it (`LB_STATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LbState {
    /// Provisioning, pending or activating: not ready for calls yet.
    Starting,
    /// Running and meant to keep running: takes calls.
    Running,
    /// Still running but about to stop (scale-in, deployment, Spot interruption): finish what is in
    /// flight, send nothing new.
    Draining,
    /// Stopping or stopped: never pick.
    Stopped,
}

impl LbState {
    /// All states, in lifecycle order.
    pub const ALL: [Self; 4] = [Self::Starting, Self::Running, Self::Draining, Self::Stopped];

    /// The attribute value, e.g. `RUNNING`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "STARTING",
            Self::Running => "RUNNING",
            Self::Draining => "DRAINING",
            Self::Stopped => "STOPPED",
        }
    }

    /// Parses an attribute value. Case and surrounding whitespace are ignored; anything else that
    /// is not one of the four values gives `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        Self::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(value))
    }
}

impl fmt::Display for LbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health of a task as ECS reports it (`LB_HEALTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LbHealth {
    /// The task's health check passes.
    Healthy,
    /// The task's health check fails: never pick (outside panic mode).
    Unhealthy,
    /// No health check, or not known yet. Treated like healthy.
    #[default]
    Unknown,
}

impl LbHealth {
    /// All values.
    pub const ALL: [Self; 3] = [Self::Healthy, Self::Unhealthy, Self::Unknown];

    /// The attribute value, e.g. `HEALTHY`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "HEALTHY",
            Self::Unhealthy => "UNHEALTHY",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// Parses an attribute value. Case and surrounding whitespace are ignored; anything else gives
    /// `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        Self::ALL
            .into_iter()
            .find(|health| health.as_str().eq_ignore_ascii_case(value))
    }
}

impl fmt::Display for LbHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Relative capacity of an instance (`LB_WEIGHT`): 0 to [`Weight::MAX`]. Zero means "never pick".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(u16);

impl Weight {
    /// The largest weight, 10000.
    pub const MAX: Self = Self(10_000);
    /// Weight zero: the instance is never picked.
    pub const ZERO: Self = Self(0);

    /// A weight, or `None` when `value` is above [`Weight::MAX`].
    pub const fn new(value: u32) -> Option<Self> {
        if value <= Self::MAX.0 as u32 {
            Some(Self(value as u16))
        } else {
            None
        }
    }

    /// A weight, with values above [`Weight::MAX`] lowered to it.
    pub const fn saturating(value: u32) -> Self {
        if value <= Self::MAX.0 as u32 {
            Self(value as u16)
        } else {
            Self::MAX
        }
    }

    /// The value, 0 to 10000.
    pub const fn get(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Recent CPU utilisation of a task in percent (`LB_LOAD`), 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Load(u8);

impl Load {
    /// A load, or `None` above 100.
    pub const fn new(percent: u32) -> Option<Self> {
        if percent <= 100 {
            Some(Self(percent as u8))
        } else {
            None
        }
    }

    /// A load from a measured utilisation, rounded and clamped to 0–100. `NaN` gives `None`.
    pub fn from_utilisation(percent: f64) -> Option<Self> {
        if percent.is_nan() {
            return None;
        }
        // Clamped first, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rounded = percent.clamp(0.0, 100.0).round() as u8;
        Some(Self(rounded))
    }

    /// The value, 0 to 100.
    pub const fn get(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_parse_leniently() {
        for state in LbState::ALL {
            assert_eq!(LbState::parse(state.as_str()), Some(state));
            assert_eq!(LbState::parse(&state.as_str().to_lowercase()), Some(state));
            assert_eq!(LbState::parse(&format!("  {state}\n")), Some(state));
        }
        for odd in [
            "", "RUN", "RUNNINGX", "PENDING", "STOPPING", "null", "RUN NING",
        ] {
            assert_eq!(LbState::parse(odd), None, "{odd:?}");
        }
    }

    #[test]
    fn health_round_trips_and_parses_leniently() {
        for health in LbHealth::ALL {
            assert_eq!(LbHealth::parse(health.as_str()), Some(health));
            assert_eq!(
                LbHealth::parse(&health.as_str().to_lowercase()),
                Some(health)
            );
        }
        assert_eq!(LbHealth::parse("OK"), None);
        assert_eq!(LbHealth::default(), LbHealth::Unknown);
    }

    #[test]
    fn weight_bounds() {
        assert_eq!(Weight::new(0), Some(Weight::ZERO));
        assert_eq!(Weight::new(10_000), Some(Weight::MAX));
        assert_eq!(Weight::new(10_001), None);
        assert_eq!(Weight::saturating(u32::MAX), Weight::MAX);
        assert_eq!(Weight::saturating(7).get(), 7);
    }

    #[test]
    fn load_bounds_and_rounding() {
        assert_eq!(Load::new(100).map(Load::get), Some(100));
        assert_eq!(Load::new(101), None);
        assert_eq!(Load::from_utilisation(49.5).map(Load::get), Some(50));
        assert_eq!(Load::from_utilisation(-3.0).map(Load::get), Some(0));
        assert_eq!(Load::from_utilisation(250.0).map(Load::get), Some(100));
        assert_eq!(
            Load::from_utilisation(f64::INFINITY).map(Load::get),
            Some(100)
        );
        assert_eq!(Load::from_utilisation(f64::NAN), None);
    }
}
