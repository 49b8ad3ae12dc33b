//! Outlier detection: instances whose calls fail are taken out of the rotation for a while
//! (gRFC A50, after Envoy's outlier detection), and the one registry of ejections that connection
//! failures share.
//!
//! # What counts
//!
//! Every call through the balancer ends in one outcome for the instance that served it: a
//! **failure** when its status is in [`OutlierOptions::failure_codes`] (by default
//! `UNAVAILABLE`, `INTERNAL`, `UNKNOWN` and `DATA_LOSS`: the statuses that say the *server*
//! failed, including a connection that broke under the call), otherwise a **success**.
//! Application statuses (`NOT_FOUND`, `INVALID_ARGUMENT`, `PERMISSION_DENIED`, …) are
//! successes: the server did its job. `DEADLINE_EXCEEDED` and `CANCELLED` never count either
//! way: the caller's own deadline or cancellation says nothing about the server. Neither does a
//! call that ends without a status: one its caller dropped, one whose deadline passed while it
//! waited (whichever timer noticed), or one that failed in a way the balancer does not know (see
//! [`crate::retry`]'s "Transport failures"). A stream the server reset counts by gRPC's mapping
//! of the reset's reason (`CANCEL` is `CANCELLED`: nothing). Counting is one relaxed atomic add
//! per call. [`InstanceStats`](crate::InstanceStats) shows the counts of the current interval
//! and the current run of failures.
//!
//! # When an instance is ejected
//!
//! - **Consecutive failures** (Envoy's `consecutive_5xx`, default 5): ejected as soon as that many
//!   calls in a row failed, without waiting for the interval. This is the trigger that catches an
//!   always-failing instance in a small zone: zone affinity sends calls only to the local zone's
//!   instances, often fewer than the success-rate algorithm's minimum of 5 hosts with enough
//!   volume.
//! - Every [`interval`](OutlierOptions::interval) (10 s), over the calls of that interval:
//!   - **success rate** (A50): among the instances with at least `request_volume` (100) calls,
//!     when there are at least `minimum_hosts` (5) of them, an instance whose success rate is
//!     below `mean − stdev × stdev_factor / 1000` (1900) is ejected;
//!   - **failure percentage** (A50): when the snapshot has at least `minimum_hosts` (5) instances,
//!     an instance with at least `request_volume` (50) calls of which at least `threshold` % (85)
//!     failed is ejected.
//!
//!   Each ejection happens with probability `enforcement_percentage` (100).
//!
//! An ejected instance is out for `base_ejection_time × n` (30 s × n) after its n-th ejection,
//! capped at `max(base_ejection_time, max_ejection_time)` (300 s); it returns at the first
//! interval sweep after that. Each sweep in which it is not ejected lowers n by one, so an
//! instance that stays healthy is forgiven.
//!
//! # How many
//!
//! Outlier detection ejects an instance only if afterwards at most
//! [`max_ejection_percent`](OutlierOptions::max_ejection_percent) (10 %) of the instances are
//! ejected, for whatever reason, except that it may always eject one when none is (Envoy's rule;
//! A50's text would let 10 % eject 2 of 10). Connection failures eject
//! through the same registry (exponential backoff from `ejection_base` to `ejection_max`), and
//! everything together never exceeds the balancer's cap
//! ([`Options::max_ejection_percent`](crate::Options::max_ejection_percent), 50 % of the
//! instances that can be picked): a fleet-wide problem degrades into slow or failing calls, never
//! into no calls. Ejected instances are left out of the picker's table, with the reason, which
//! [`Balancer::stats`](crate::Balancer::stats) shows; panic mode still picks them.
//!
//! # Deviations from A50, and why
//!
//! - Failures are a configurable set of status codes, not every non-`OK` status (A50 does not
//!   say which calls count; grpc-go counts any error, the caller's own `DEADLINE_EXCEEDED` and
//!   `CANCELLED` included): an instance answering `NOT_FOUND` correctly is not an outlier, and
//!   one slower than its callers' deadlines is not ejected for it (the latency-aware choice
//!   steers calls away from it instead).
//! - Failure-percentage ejection is on by default (A50 leaves both algorithms off unless
//!   configured), and consecutive-failure ejection (Envoy's, which A50 does not support) is added,
//!   so that with no configuration an instance failing every call stops getting calls.
//! - The detector runs over the whole snapshot (A50 runs per priority); the success-rate
//!   algorithm only looks at instances with enough calls anyway, which with zone affinity are the
//!   local zone's.

mod counter;
mod ejections;
mod sweep;

use std::time::Duration;

use tonic::Code;

use crate::codes::StatusCodes;
use crate::error::Error;

pub(crate) use counter::CallCounter;
pub(crate) use ejections::{Ejection, Ejections, Limits, Outcome};
pub(crate) use sweep::{HostCounts, sweep};

/// Why an instance is ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EjectionReason {
    /// Connecting to it failed (exponential backoff per consecutive failure).
    ConnectFailure,
    /// `consecutive_failures` calls in a row failed.
    ConsecutiveFailures,
    /// Its success rate was a statistical outlier among the instances with enough calls.
    SuccessRate,
    /// At least `threshold` % of its calls in one interval failed.
    FailurePercentage,
}

impl EjectionReason {
    /// A short name, e.g. `consecutive-failures` (also the metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectFailure => "connect-failure",
            Self::ConsecutiveFailures => "consecutive-failures",
            Self::SuccessRate => "success-rate",
            Self::FailurePercentage => "failure-percentage",
        }
    }

    /// Every reason, for metric handles.
    pub(crate) const ALL: [Self; 4] = [
        Self::ConnectFailure,
        Self::ConsecutiveFailures,
        Self::SuccessRate,
        Self::FailurePercentage,
    ];
}

impl std::fmt::Display for EjectionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outlier detection's settings (see the [module docs](self)). On by default; A50's defaults.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutlierOptions {
    /// Whether calls are counted and instances ejected for failing. Default `true`.
    pub enabled: bool,
    /// Time between sweeps of the success-rate and failure-percentage algorithms. Default 10 s.
    pub interval: Duration,
    /// Ejection time after the first ejection; the n-th lasts n times this. Default 30 s.
    pub base_ejection_time: Duration,
    /// Longest ejection (at least `base_ejection_time`). Default 300 s.
    pub max_ejection_time: Duration,
    /// Outlier detection ejects only while at most this share of the instances end up ejected
    /// (for any reason); one can always be when none is. 0 to 100. Default 10.
    pub max_ejection_percent: u8,
    /// Eject after this many failed calls in a row; `None` turns the trigger off. Default 5.
    pub consecutive_failures: Option<u32>,
    /// The success-rate algorithm; `None` turns it off. Default A50's.
    pub success_rate: Option<SuccessRateEjection>,
    /// The failure-percentage algorithm; `None` turns it off. Default A50's.
    pub failure_percentage: Option<FailurePercentageEjection>,
    /// The statuses that count as the server failing. Default `UNAVAILABLE`, `INTERNAL`,
    /// `UNKNOWN`, `DATA_LOSS`. `OK`, `DEADLINE_EXCEEDED` and `CANCELLED` are never counted as
    /// failures, whatever this holds.
    pub failure_codes: StatusCodes,
}

impl Default for OutlierOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            consecutive_failures: Some(5),
            success_rate: Some(SuccessRateEjection::default()),
            failure_percentage: Some(FailurePercentageEjection::default()),
            failure_codes: StatusCodes::new([
                Code::Unavailable,
                Code::Internal,
                Code::Unknown,
                Code::DataLoss,
            ]),
        }
    }
}

/// A50's success-rate ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuccessRateEjection {
    /// Ejection threshold: `mean − stdev × stdev_factor / 1000`. Default 1900.
    pub stdev_factor: u32,
    /// Chance, in percent, that a detected outlier is ejected. Default 100.
    pub enforcement_percentage: u8,
    /// Instances with enough calls needed to run at all. Default 5.
    pub minimum_hosts: u32,
    /// Calls in the interval for an instance to take part. Default 100.
    pub request_volume: u32,
}

impl Default for SuccessRateEjection {
    fn default() -> Self {
        Self {
            stdev_factor: 1900,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 100,
        }
    }
}

/// A50's failure-percentage ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailurePercentageEjection {
    /// Eject at this failure percentage or more. Default 85.
    pub threshold: u8,
    /// Chance, in percent, that a detected outlier is ejected. Default 100.
    pub enforcement_percentage: u8,
    /// Instances in the snapshot needed to run at all. Default 5.
    pub minimum_hosts: u32,
    /// Calls in the interval for an instance to take part. Default 50.
    pub request_volume: u32,
}

impl Default for FailurePercentageEjection {
    fn default() -> Self {
        Self {
            threshold: 85,
            enforcement_percentage: 100,
            minimum_hosts: 5,
            request_volume: 50,
        }
    }
}

impl OutlierOptions {
    /// Outlier detection off: nothing is counted, only connection failures eject.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Whether a call that ended with `code` counts as a failure (`Some(true)`), a success
    /// (`Some(false)`), or not at all (`None`: the caller's deadline or cancellation).
    #[inline]
    pub(crate) fn classify(&self, code: Code) -> Option<bool> {
        match code {
            Code::Ok => Some(false),
            Code::DeadlineExceeded | Code::Cancelled => None,
            code => Some(self.failure_codes.contains(code)),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |name: &'static str, reason: &str| {
            Err(Error::InvalidOption {
                name,
                reason: reason.to_owned(),
            })
        };
        if self.interval.is_zero() {
            return invalid("outlier.interval", "must be above 0");
        }
        if self.base_ejection_time.is_zero() {
            return invalid("outlier.base_ejection_time", "must be above 0");
        }
        if self.max_ejection_percent > 100 {
            return invalid("outlier.max_ejection_percent", "must be at most 100");
        }
        if self.consecutive_failures == Some(0) {
            return invalid(
                "outlier.consecutive_failures",
                "must be at least 1 (None turns the trigger off)",
            );
        }
        if let Some(s) = &self.success_rate
            && s.enforcement_percentage > 100
        {
            return invalid(
                "outlier.success_rate.enforcement_percentage",
                "must be at most 100",
            );
        }
        if let Some(f) = &self.failure_percentage
            && (f.threshold > 100 || f.enforcement_percentage > 100)
        {
            return invalid(
                "outlier.failure_percentage",
                "threshold and enforcement_percentage must be at most 100",
            );
        }
        Ok(())
    }

    /// The longest ejection: `max(base_ejection_time, max_ejection_time)` (A50).
    pub(crate) fn longest_ejection(&self) -> Duration {
        self.max_ejection_time.max(self.base_ejection_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_failure_codes() {
        let options = OutlierOptions::default();
        assert_eq!(options.classify(Code::Ok), Some(false));
        for code in [
            Code::Unavailable,
            Code::Internal,
            Code::Unknown,
            Code::DataLoss,
        ] {
            assert_eq!(options.classify(code), Some(true), "{code:?}");
        }
        for code in [
            Code::NotFound,
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::AlreadyExists,
            Code::ResourceExhausted,
        ] {
            assert_eq!(options.classify(code), Some(false), "{code:?}");
        }
        assert_eq!(options.classify(Code::DeadlineExceeded), None);
        assert_eq!(options.classify(Code::Cancelled), None);
        // Even when listed, the caller's deadline never counts.
        let odd = OutlierOptions {
            failure_codes: StatusCodes::new([Code::DeadlineExceeded, Code::NotFound]),
            ..OutlierOptions::default()
        };
        assert_eq!(odd.classify(Code::DeadlineExceeded), None);
        assert_eq!(odd.classify(Code::NotFound), Some(true));
    }

    #[test]
    fn validation_names_the_option() {
        let bad = OutlierOptions {
            max_ejection_percent: 101,
            ..OutlierOptions::default()
        };
        assert!(
            matches!(bad.validate(), Err(Error::InvalidOption { name, .. }) if name == "outlier.max_ejection_percent")
        );
        let zero = OutlierOptions {
            consecutive_failures: Some(0),
            ..OutlierOptions::default()
        };
        assert!(zero.validate().is_err());
        assert!(OutlierOptions::default().validate().is_ok());
        assert_eq!(
            OutlierOptions {
                max_ejection_time: Duration::from_secs(1),
                ..OutlierOptions::default()
            }
            .longest_ejection(),
            Duration::from_secs(30)
        );
    }
}
