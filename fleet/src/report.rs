//! From what a run observed to the figures the issue asks for: calls per second and the peak
//! share of each quota, throttled calls, staleness, and the monthly bill.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cloud_map::{Second, Write};
use crate::run::Outcome;

/// Cloud Map's price: $1.00 per million discovery API calls.
pub const DOLLARS_PER_CALL: f64 = 1.0e-6;
/// A month of 30 days, as AWS prices count it.
pub const SECONDS_PER_MONTH: f64 = 30.0 * 24.0 * 3600.0;

/// One operation's calls over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calls {
    /// Calls answered, per second, on average.
    pub per_second: f64,
    /// The busiest second's calls (answered and throttled) as a share of the quota's rate.
    pub peak_share: f64,
    /// Calls throttled.
    pub throttled: u64,
}

impl Calls {
    /// `DiscoverInstances` over `seconds`, against the quota's `rate`.
    pub fn lists(seconds: &[Second], rate: f64) -> Self {
        Self::over(seconds, |s| s.lists, |s| s.lists_throttled, rate)
    }

    /// `DiscoverInstancesRevision` over `seconds`, against the quota's `rate`.
    pub fn revisions(seconds: &[Second], rate: f64) -> Self {
        Self::over(seconds, |s| s.revisions, |s| s.revisions_throttled, rate)
    }

    fn over(
        seconds: &[Second],
        answered: fn(&Second) -> u32,
        throttled: fn(&Second) -> u32,
        rate: f64,
    ) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let length = seconds.len().max(1) as f64;
        let total: u64 = seconds.iter().map(|s| u64::from(answered(s))).sum();
        let peak = seconds
            .iter()
            .map(|s| answered(s) + throttled(s))
            .max()
            .unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        Self {
            per_second: total as f64 / length,
            peak_share: f64::from(peak) / rate,
            throttled: seconds.iter().map(|s| u64::from(throttled(s))).sum(),
        }
    }
}

/// How long writes took to reach every pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    /// Which writes: lifecycle writes when the scenario has any, else all of them (load).
    pub lifecycle: bool,
    /// Writes measured.
    pub writes: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
    /// Writes some pair had not received when the run ended.
    pub incomplete: usize,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Pairs.
    pub pairs: usize,
    /// The scenario's name.
    pub scenario: String,
    /// Writes that moved the revision, in the window.
    pub writes: usize,
    /// Of those, lifecycle writes.
    pub lifecycle_writes: usize,
    /// Of those, ECS's own.
    pub ecs_writes: usize,
    /// The busiest minute's writes.
    pub peak_writes_per_minute: usize,
    /// `DiscoverInstances`.
    pub lists: Calls,
    /// `DiscoverInstancesRevision`.
    pub revisions: Calls,
    /// Staleness, when there were writes.
    pub staleness: Option<Staleness>,
    /// The whole fleet's discovery bill for a month at the window's rate.
    pub dollars_per_month: f64,
    /// Pairs without a snapshot at the end of the run.
    pub pairs_without_snapshot: usize,
}

impl Row {
    /// The bill per pair.
    pub fn dollars_per_pair_month(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // pair counts are far below 2^52
        let pairs = self.pairs as f64;
        self.dollars_per_month / pairs
    }

    /// Computes the row of a run.
    pub fn of(outcome: &Outcome) -> Self {
        let seconds = &outcome.observed.seconds;
        let quotas = outcome.config.quotas;
        let lists = Calls::lists(seconds, quotas.discover_rate);
        let revisions = Calls::revisions(seconds, quotas.revision_rate);
        let writes = &outcome.observed.writes;
        let mut per_minute = vec![0_usize; seconds.len() / 60 + 1];
        for write in writes {
            let minute = usize::try_from(write.at.as_secs() / 60).unwrap_or(0);
            if let Some(count) = per_minute.get_mut(minute) {
                *count += 1;
            }
        }
        Self {
            pairs: outcome.config.pairs,
            scenario: outcome.config.scenario.to_string(),
            writes: writes.len(),
            lifecycle_writes: writes.iter().filter(|w| w.lifecycle).count(),
            ecs_writes: writes
                .iter()
                .filter(|w| w.writer == crate::cloud_map::Writer::Ecs)
                .count(),
            peak_writes_per_minute: per_minute.into_iter().max().unwrap_or(0),
            lists,
            revisions,
            staleness: staleness(writes),
            dollars_per_month: (lists.per_second + revisions.per_second)
                * SECONDS_PER_MONTH
                * DOLLARS_PER_CALL,
            pairs_without_snapshot: outcome.pairs_without_snapshot,
        }
    }
}

pub(crate) fn staleness(writes: &[Write]) -> Option<Staleness> {
    let lifecycle = writes.iter().any(|w| w.lifecycle);
    let chosen: Vec<&Write> = writes
        .iter()
        .filter(|w| w.lifecycle || !lifecycle)
        .collect();
    if chosen.is_empty() {
        return None;
    }
    let mut delays: Vec<Duration> = chosen
        .iter()
        .filter_map(|w| w.held_by_all_at.map(|at| at.saturating_sub(w.at)))
        .collect();
    delays.sort_unstable();
    let rank = |p: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((p * delays.len() as f64).ceil() as usize).clamp(1, delays.len().max(1)) - 1;
        delays.get(index).copied().unwrap_or_default()
    };
    Some(Staleness {
        lifecycle,
        writes: chosen.len(),
        p50: rank(0.50),
        p99: rank(0.99),
        max: delays.last().copied().unwrap_or_default(),
        incomplete: chosen.len() - delays.len(),
    })
}

/// `12,345`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

pub(crate) fn dollars(amount: f64) -> String {
    if amount >= 100.0 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = amount.round() as u64;
        format!("${}", thousands(whole))
    } else {
        format!("${amount:.2}")
    }
}

/// The report's table header (Markdown).
pub fn header() -> String {
    "| pairs | scenario | writes (lifecycle, ECS) · peak/min | DiscoverInstances /s · peak % of 1,000/s | DiscoverInstancesRevision /s · peak % of 3,000/s | throttled | staleness p50 / p99 / max (s) | $/month fleet | $/pair-month |\n\
     |---|---|---|---|---|---|---|---|---|"
        .to_owned()
}

/// One row of the table (Markdown).
pub fn line(row: &Row) -> String {
    let staleness = row.staleness.map_or_else(
        || "no writes".to_owned(),
        |s| {
            let mut text = format!(
                "{} / {} / {}{}",
                seconds(s.p50),
                seconds(s.p99),
                seconds(s.max),
                if s.lifecycle { "" } else { " (load)" }
            );
            if s.incomplete > 0 {
                let _ = write!(text, ", {} never reached all", s.incomplete);
            }
            text
        },
    );
    let mut throttled = thousands(row.lists.throttled + row.revisions.throttled);
    if row.pairs_without_snapshot > 0 {
        let _ = write!(
            throttled,
            " ({} pairs without a snapshot)",
            row.pairs_without_snapshot
        );
    }
    format!(
        "| {} | {} | {} ({}, {}) · {} | {:.1} · {:.0} % | {:.1} · {:.0} % | {} | {} | {} | ${:.3} |",
        thousands(row.pairs as u64),
        row.scenario,
        thousands(row.writes as u64),
        thousands(row.lifecycle_writes as u64),
        row.ecs_writes,
        row.peak_writes_per_minute,
        row.lists.per_second,
        row.lists.peak_share * 100.0,
        row.revisions.per_second,
        row.revisions.peak_share * 100.0,
        throttled,
        staleness,
        dollars(row.dollars_per_month),
        row.dollars_per_pair_month(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud_map::Writer;

    fn write(at: u64, held: Option<u64>, lifecycle: bool) -> Write {
        Write {
            at: Duration::from_secs(at),
            writer: Writer::Lambda,
            lifecycle,
            held_by_all_at: held.map(Duration::from_secs),
            held_by_first_at: None,
        }
    }

    #[test]
    fn staleness_counts_lifecycle_writes_when_there_are_any() {
        let writes: Vec<Write> = (0..100)
            .map(|i| write(i, Some(i + 1 + i % 10), true))
            .chain([write(5, Some(500), false), write(6, None, true)])
            .collect();
        let s = staleness(&writes).unwrap();
        assert!(s.lifecycle);
        assert_eq!(s.writes, 101);
        assert_eq!(s.incomplete, 1);
        assert_eq!(s.p50, Duration::from_secs(5));
        assert_eq!(s.p99, Duration::from_secs(10));
        assert_eq!(
            s.max,
            Duration::from_secs(10),
            "the load write is not counted"
        );
        let load_only = staleness(&[write(0, Some(30), false)]).unwrap();
        assert!(!load_only.lifecycle);
        assert_eq!(load_only.max, Duration::from_secs(30));
        assert_eq!(staleness(&[]), None);
    }

    #[test]
    fn money_and_numbers_read_as_people_write_them() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(dollars(2592.4), "$2,592");
        assert_eq!(dollars(5.184), "$5.18");
        // A 5 s poll: 518,400 calls, $0.52 a month.
        let per_month = SECONDS_PER_MONTH / 5.0 * DOLLARS_PER_CALL;
        assert!((per_month - 0.5184).abs() < 1e-9);
    }
}
