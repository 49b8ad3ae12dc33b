//! The xDS mode's figures: the polling mode's (calls, throttling, staleness, the bill) and a
//! new task's wait for its first call; with an outage, the fallback's load and the return.

use std::fmt::Write as _;
use std::time::Duration;

use super::XdsOutcome;
use crate::report::{
    Calls, DOLLARS_PER_CALL, SECONDS_PER_MONTH, Staleness, dollars, seconds, staleness, thousands,
};

/// How long new tasks waited, from RUNNING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstCall {
    /// New tasks measured.
    pub tasks: usize,
    /// Until Cloud Map held a revision in which the client's picker finds it eligible (the
    /// Lambda's part): the slowest task.
    pub eligible_max: Duration,
    /// Until the first pair held it: median and slowest task.
    pub first_p50: Duration,
    /// Slowest.
    pub first_max: Duration,
    /// Until every pair held it: 99th percentile and slowest task.
    pub all_p99: Duration,
    /// Slowest.
    pub all_max: Duration,
    /// Tasks never eligible, or never held by a pair, before the run ended.
    pub incomplete: usize,
}

/// Calls of one phase of an outage run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// How long it lasted.
    pub length: Duration,
    /// `DiscoverInstances`.
    pub lists: Calls,
    /// `DiscoverInstancesRevision`.
    pub revisions: Calls,
}

/// What an outage did.
#[derive(Debug, Clone, PartialEq)]
pub struct OutageRow {
    /// Before the replicas stopped (replicas polling).
    pub before: Phase,
    /// From the stop to the pairs' lost timeout (the last answer in service, nobody polls).
    pub holding: Phase,
    /// From the lost timeout to the return: the pairs poll Cloud Map directly.
    pub fallback: Phase,
    /// From the return to the end of the window.
    pub after: Phase,
    /// Staleness of the lifecycle writes made during the fallback.
    pub staleness: Option<Staleness>,
    /// From the return until the last pair was back on xDS.
    pub all_back_after: Option<Duration>,
    /// The most pairs on the fallback at once.
    pub on_fallback_peak: u64,
}

/// One line of the xDS table.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsRow {
    /// Pairs.
    pub pairs: usize,
    /// Services and replicas.
    pub services: usize,
    /// Replicas.
    pub replicas: usize,
    /// The scenario's name.
    pub scenario: String,
    /// `DiscoverInstances` over the window.
    pub lists: Calls,
    /// `DiscoverInstancesRevision` over the window.
    pub revisions: Calls,
    /// Staleness over `echo`'s pairs.
    pub staleness: Option<Staleness>,
    /// New tasks' waits.
    pub first_call: Option<FirstCall>,
    /// The account's discovery bill for a month at the window's rate.
    pub dollars_per_month: f64,
    /// Pairs without a snapshot at the end.
    pub pairs_without_snapshot: usize,
    /// Switches to the fallback and back.
    pub to_fallback: u64,
    /// Switches back.
    pub to_xds: u64,
    /// Answers the client's decoding rejected.
    pub nacks: u64,
    /// With an outage: what it did.
    pub outage: Option<OutageRow>,
}

fn rank(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(index).copied().unwrap_or_default()
}

fn first_call(outcome: &XdsOutcome) -> Option<FirstCall> {
    if outcome.new_tasks.is_empty() {
        return None;
    }
    let writes = &outcome.observed.writes;
    let mut eligible = Vec::new();
    let mut first = Vec::new();
    let mut all = Vec::new();
    let mut incomplete = 0;
    for task in &outcome.new_tasks {
        let Some(write) = task.eligible_write.and_then(|i| writes.get(i)) else {
            incomplete += 1;
            continue;
        };
        eligible.push(write.at.saturating_sub(task.running_at));
        match (write.held_by_first_at, write.held_by_all_at) {
            (Some(f), Some(a)) => {
                first.push(f.saturating_sub(task.running_at));
                all.push(a.saturating_sub(task.running_at));
            }
            _ => incomplete += 1,
        }
    }
    for v in [&mut eligible, &mut first, &mut all] {
        v.sort_unstable();
    }
    Some(FirstCall {
        tasks: outcome.new_tasks.len(),
        eligible_max: eligible.last().copied().unwrap_or_default(),
        first_p50: rank(&first, 0.5),
        first_max: first.last().copied().unwrap_or_default(),
        all_p99: rank(&all, 0.99),
        all_max: all.last().copied().unwrap_or_default(),
        incomplete,
    })
}

impl XdsRow {
    /// The row of a run.
    pub fn of(outcome: &XdsOutcome) -> Self {
        let config = &outcome.config;
        let seconds = &outcome.observed.seconds;
        let quotas = config.quotas;
        let phase = |from: Duration, to: Duration| {
            let from = usize::try_from(from.as_secs())
                .unwrap_or(0)
                .min(seconds.len());
            let to = usize::try_from(to.as_secs())
                .unwrap_or(0)
                .clamp(from, seconds.len());
            let slice = &seconds[from..to];
            Phase {
                length: Duration::from_secs((to - from) as u64),
                lists: Calls::lists(slice, quotas.discover_rate),
                revisions: Calls::revisions(slice, quotas.revision_rate),
            }
        };
        let lists = Calls::lists(seconds, quotas.discover_rate);
        let revisions = Calls::revisions(seconds, quotas.revision_rate);
        let outage = config.outage.map(|o| {
            let lost = o.at + config.xds.lost_timeout;
            let back = o.at + o.length;
            let during: Vec<_> = outcome
                .observed
                .writes
                .iter()
                .filter(|w| w.at >= lost && w.at < back)
                .cloned()
                .collect();
            OutageRow {
                before: phase(Duration::ZERO, o.at),
                holding: phase(o.at, lost),
                fallback: phase(lost, back),
                after: phase(back, config.window()),
                staleness: staleness(&during),
                all_back_after: outcome.all_back_at.map(|at| at.saturating_sub(back)),
                on_fallback_peak: outcome.on_fallback_peak,
            }
        });
        let scenario = match config.outage {
            Some(o) => format!(
                "{}, both replicas down {} min",
                config.scenario,
                o.length.as_secs() / 60
            ),
            None => config.scenario.to_string(),
        };
        Self {
            pairs: config.pairs,
            services: config.services,
            replicas: config.replicas,
            scenario,
            lists,
            revisions,
            staleness: staleness(&outcome.observed.writes),
            first_call: first_call(outcome),
            dollars_per_month: (lists.per_second + revisions.per_second)
                * SECONDS_PER_MONTH
                * DOLLARS_PER_CALL,
            pairs_without_snapshot: outcome.pairs_without_snapshot,
            to_fallback: outcome.to_fallback,
            to_xds: outcome.to_xds,
            nacks: outcome.nacks,
            outage,
        }
    }
}

fn share(calls: &Calls) -> String {
    format!(
        "{:.1} · {:.1} %",
        calls.per_second,
        calls.peak_share * 100.0
    )
}

fn staleness_text(s: Option<Staleness>) -> String {
    s.map_or_else(
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
    )
}

/// The xDS table's header (Markdown).
pub fn header() -> String {
    "| pairs (services × replicas) | scenario | DiscoverInstances /s · peak % of 1,000/s | DiscoverInstancesRevision /s · peak % of 3,000/s | throttled | staleness p50 / p99 / max (s) | new task: eligible in Cloud Map · first pair p50 / max · every pair p99 (s) | $/month | pairs on the fallback (switches) |\n\
     |---|---|---|---|---|---|---|---|---|"
        .to_owned()
}

/// One row of the xDS table (Markdown).
pub fn line(row: &XdsRow) -> String {
    let first = row.first_call.map_or_else(
        || "no new task".to_owned(),
        |f| {
            let mut text = format!(
                "{} · {} / {} · {}",
                seconds(f.eligible_max),
                seconds(f.first_p50),
                seconds(f.first_max),
                seconds(f.all_p99),
            );
            if f.incomplete > 0 {
                let _ = write!(text, ", {} never reached", f.incomplete);
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
    if row.nacks > 0 {
        let _ = write!(throttled, " ({} answers NACKed)", row.nacks);
    }
    format!(
        "| {} ({} × {}) | {} | {} | {} | {} | {} | {} | {} | {} |",
        thousands(row.pairs as u64),
        row.services,
        row.replicas,
        row.scenario,
        share(&row.lists),
        share(&row.revisions),
        throttled,
        staleness_text(row.staleness),
        first,
        dollars(row.dollars_per_month),
        if row.to_fallback == 0 {
            "none".to_owned()
        } else {
            format!(
                "{} to, {} back",
                thousands(row.to_fallback),
                thousands(row.to_xds)
            )
        },
    )
}

/// The outage table's header (Markdown).
pub fn outage_header() -> String {
    "| pairs | replicas polling: calls /s (List + Revision) | down, before the lost timeout: calls /s | fallback: DiscoverInstances /s · peak %, Revision /s · peak % | throttled in the fallback | staleness in the fallback p50 / p99 / max (s) | after the return: calls /s · throttled | last pair back on xDS after the return |\n\
     |---|---|---|---|---|---|---|---|"
        .to_owned()
}

/// One row of the outage table (Markdown); `None` without an outage.
pub fn outage_line(row: &XdsRow) -> Option<String> {
    let o = row.outage.as_ref()?;
    let total = |p: &Phase| p.lists.per_second + p.revisions.per_second;
    Some(format!(
        "| {} | {:.1} | {:.1} | {}, {} | {} | {} | {:.1} · {} | {} |",
        thousands(row.pairs as u64),
        total(&o.before),
        total(&o.holding),
        share(&o.fallback.lists),
        share(&o.fallback.revisions),
        thousands(o.fallback.lists.throttled + o.fallback.revisions.throttled),
        staleness_text(o.staleness),
        total(&o.after),
        thousands(o.after.lists.throttled + o.after.revisions.throttled),
        o.all_back_after
            .map_or_else(|| "not all".to_owned(), |d| format!("{} s", seconds(d))),
    ))
}
