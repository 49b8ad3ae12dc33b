//! The run's results: medians over rounds per variant and scenario, the goals they are judged
//! against, and the Markdown table. Pure.

use std::fmt::Write as _;

use serde::Serialize;

use demo::fleet::CLIENT_ZONE;

use crate::harness::Record;
use crate::measure::{self, Spill, cross_zone_per_billion_calls};
use crate::plan::{Scenario, Variant};

/// One variant in one scenario, over the rounds it ran.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: Scenario,
    pub(crate) variant: Variant,
    pub(crate) rounds: usize,
    /// Medians over the rounds.
    pub(crate) calls_per_s: f64,
    pub(crate) calls_per_s_min: f64,
    pub(crate) calls_per_s_max: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) local_share: f64,
    /// The share of calls the slowed or killed task served (median), in those scenarios.
    pub(crate) faulted_share: Option<f64>,
    /// Failed calls, summed over the rounds.
    pub(crate) failed: u64,
    pub(crate) calls: u64,
    /// The slow zone's spill and return, per round.
    pub(crate) spills: Vec<Spill>,
    /// The local share per window, averaged over the rounds (slow zone only).
    pub(crate) timeline: Vec<[f64; 2]>,
    /// When the zone slowed and recovered (first round; the schedule is the same in all).
    pub(crate) slowed_s: Option<f64>,
    pub(crate) recovered_s: Option<f64>,
    /// Balanced and client CPU-starved: each of the client's zone's tasks, its share of the
    /// zone's calls against its weight × load share of the zone (medians over rounds).
    pub(crate) task_shares: Vec<TaskShare>,
}

/// One task's share of its zone's calls and the share its weight × load promises.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskShare {
    pub(crate) task_id: String,
    pub(crate) zone: String,
    pub(crate) share: f64,
    pub(crate) expected_share: f64,
}

impl TaskShare {
    /// How far the share is from the promise, in points.
    pub(crate) fn deviation_points(&self) -> f64 {
        (self.share - self.expected_share).abs() * 100.0
    }
}

/// Per-task shares of the client's zone's calls, medians over the rounds. A round's task list
/// is the fleet it ran against; the tasks of the first round are reported.
fn task_shares(records: &[&Record], zone: &str) -> Vec<TaskShare> {
    let Some(first) = records.first() else {
        return Vec::new();
    };
    first
        .tasks
        .iter()
        .filter(|t| t.zone == zone)
        .map(|task| {
            let per_round = |get: &dyn Fn(&Record) -> Option<f64>| {
                median(records.iter().filter_map(|r| get(r)).collect()).unwrap_or(0.0)
            };
            let share = per_round(&|r| {
                let in_zone = r.result.per_zone.get(zone).copied().unwrap_or(0);
                let mine = r.result.per_task.get(&task.task_id).copied().unwrap_or(0);
                (in_zone > 0).then(|| f(mine) / f(in_zone))
            });
            let expected_share = per_round(&|r| {
                let total: f64 = r
                    .tasks
                    .iter()
                    .filter(|t| t.zone == zone)
                    .map(|t| t.effective_weight)
                    .sum();
                let mine = r.tasks.iter().find(|t| t.task_id == task.task_id)?;
                (total > 0.0).then(|| mine.effective_weight / total)
            });
            TaskShare {
                task_id: task.task_id.clone(),
                zone: zone.to_owned(),
                share,
                expected_share,
            }
        })
        .collect()
}

impl Row {
    /// The median over rounds of the seconds to spill, `None` if any round did not.
    pub(crate) fn spilled_after_s(&self) -> Option<f64> {
        median_all(self.spills.iter().map(|s| s.spilled_after_s))
    }

    /// The median over rounds of the seconds to come back, `None` if any round did not.
    pub(crate) fn back_after_s(&self) -> Option<f64> {
        median_all(self.spills.iter().map(|s| s.back_after_s))
    }
}

/// The median, `None` when empty.
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| !v.is_nan());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some(f64::midpoint(values[n / 2 - 1], values[n / 2])),
    }
}

fn median_all(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    values.collect::<Option<Vec<f64>>>().and_then(median)
}

#[allow(clippy::cast_precision_loss)] // microseconds and call counts
fn f(n: u64) -> f64 {
    n as f64
}

/// One row per variant and scenario that ran, in scenario order, then variant order.
pub(crate) fn rows(records: &[Record]) -> Vec<Row> {
    let mut rows = Vec::new();
    for scenario in Scenario::ALL {
        for variant in Variant::ALL {
            let mine: Vec<&Record> = records
                .iter()
                .filter(|r| r.scenario == scenario && r.variant == variant)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let of = |get: &dyn Fn(&Record) -> f64| {
                median(mine.iter().map(|r| get(r)).collect()).unwrap_or(0.0)
            };
            let rates: Vec<f64> = mine.iter().map(|r| r.result.calls_per_second()).collect();
            let spills = mine
                .iter()
                .filter_map(|r| {
                    Some(measure::spill(
                        &r.result.windows,
                        r.slowed_s?,
                        r.recovered_s?,
                    ))
                })
                .collect();
            rows.push(Row {
                scenario,
                variant,
                rounds: mine.len(),
                calls_per_s: of(&|r| r.result.calls_per_second()),
                calls_per_s_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
                calls_per_s_max: rates.iter().copied().fold(0.0, f64::max),
                p50_ms: of(&|r| f(r.result.p50_us) / 1000.0),
                p99_ms: of(&|r| f(r.result.p99_us) / 1000.0),
                local_share: of(&|r| r.result.local_share()),
                faulted_share: median(
                    mine.iter()
                        .filter_map(|r| Some(r.result.task_share(r.faulted_task.as_deref()?)))
                        .collect(),
                ),
                failed: mine.iter().map(|r| r.result.failed()).sum(),
                calls: mine.iter().map(|r| r.result.ok + r.result.failed()).sum(),
                spills,
                timeline: if scenario == Scenario::SlowZone {
                    mean_timeline(&mine)
                } else {
                    Vec::new()
                },
                slowed_s: mine.first().and_then(|r| r.slowed_s),
                recovered_s: mine.first().and_then(|r| r.recovered_s),
                task_shares: if matches!(scenario, Scenario::Balanced | Scenario::ClientStarved) {
                    task_shares(&mine, CLIENT_ZONE)
                } else {
                    Vec::new()
                },
            });
        }
    }
    rows
}

/// The local share per window, averaged over the rounds (windows line up: every round runs the
/// same schedule). A window without calls is left out of the mean.
fn mean_timeline(records: &[&Record]) -> Vec<[f64; 2]> {
    let longest = records
        .iter()
        .map(|r| r.result.windows.len())
        .max()
        .unwrap_or(0);
    (0..longest)
        .filter_map(|i| {
            let shares: Vec<f64> = records
                .iter()
                .filter_map(|r| r.result.windows.get(i)?.local_share())
                .collect();
            let end = records.iter().find_map(|r| r.result.windows.get(i))?.end_s;
            let mean = shares.iter().sum::<f64>() / f(shares.len() as u64);
            (!shares.is_empty()).then_some([end, mean])
        })
        .collect()
}

/// One goal the table is judged against.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Goal {
    pub(crate) goal: String,
    pub(crate) measured: String,
    /// `None` when what it needs did not run.
    pub(crate) met: Option<bool>,
}

fn find(rows: &[Row], scenario: Scenario, variant: Variant) -> Option<&Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.variant == variant)
}

fn percent(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

fn seconds(s: Option<f64>) -> String {
    s.map_or("never".into(), |s| format!("{s:.1} s"))
}

/// The goals of the issue, each with what was measured.
pub(crate) fn goals(rows: &[Row]) -> Vec<Goal> {
    use Scenario::{Balanced, ClientStarved, Killed, SlowInstance, SlowZone};
    use Variant::{BalanceList, Balancer, Fixed50, Haproxy};
    let mut goals = Vec::new();
    let mut goal = |goal: &str, measured: Option<(String, bool)>| {
        goals.push(Goal {
            goal: goal.to_owned(),
            measured: measured
                .as_ref()
                .map_or("not run".into(), |(m, _)| m.clone()),
            met: measured.map(|(_, met)| met),
        });
    };
    let share_goal = |scenario, variant, test: &dyn Fn(f64) -> bool| {
        find(rows, scenario, variant).map(|r| (percent(r.local_share), test(r.local_share)))
    };
    goal(
        "balanced: (a) keeps ≥ 99 % of calls in zone",
        share_goal(Balanced, Balancer, &|s| s >= 0.99),
    );
    goal(
        "balanced: (b) keeps ≈ 50 % in zone (within 5 points)",
        share_goal(Balanced, Fixed50, &|s| (s - 0.5).abs() <= 0.05),
    );
    goal(
        "balanced: (c) keeps ≈ 33 % in zone (within 5 points)",
        share_goal(Balanced, BalanceList, &|s| (s - 1.0 / 3.0).abs() <= 0.05),
    );
    goal(
        "balanced: (d) keeps ≈ 33 % in zone (within 5 points)",
        share_goal(Balanced, Haproxy, &|s| (s - 1.0 / 3.0).abs() <= 0.05),
    );
    let (a, d) = (
        find(rows, Balanced, Balancer),
        find(rows, Balanced, Haproxy),
    );
    goal(
        "balanced: (a) makes ≥ 1.3× the calls/s of (d)",
        a.zip(d).map(|(a, d)| {
            let ratio = a.calls_per_s / d.calls_per_s.max(f64::MIN_POSITIVE);
            (
                format!(
                    "{ratio:.2}× ({:.0} vs {:.0} calls/s)",
                    a.calls_per_s, d.calls_per_s
                ),
                ratio >= 1.3,
            )
        }),
    );
    goal(
        "balanced: (a) has a lower p50 than (d)",
        a.zip(d).map(|(a, d)| {
            (
                format!("{:.2} ms vs {:.2} ms", a.p50_ms, d.p50_ms),
                a.p50_ms < d.p50_ms,
            )
        }),
    );
    goal(
        "one instance 20 ms slow: (a)'s p99 is at most half of (c)'s",
        find(rows, SlowInstance, Balancer)
            .zip(find(rows, SlowInstance, BalanceList))
            .map(|(a, c)| {
                (
                    format!(
                        "{:.2} ms vs {:.2} ms ({:.2}×)",
                        a.p99_ms,
                        c.p99_ms,
                        a.p99_ms / c.p99_ms.max(f64::MIN_POSITIVE)
                    ),
                    a.p99_ms <= c.p99_ms / 2.0,
                )
            }),
    );
    goal(
        "client CPU-starved: (a) keeps ≥ 99 % in zone",
        share_goal(ClientStarved, Balancer, &|s| s >= 0.99),
    );
    goal(
        "client CPU-starved: (a) gives each task in zone its weight × load share of the zone's calls (within 3 points)",
        find(rows, ClientStarved, Balancer)
            .filter(|r| !r.task_shares.is_empty())
            .map(|r| {
                let worst = r
                    .task_shares
                    .iter()
                    .map(TaskShare::deviation_points)
                    .fold(0.0, f64::max);
                (format!("largest deviation {worst:.1} points"), worst <= 3.0)
            }),
    );
    let slow = find(rows, SlowZone, Balancer);
    goal(
        "local zone slow: (a) spills within 5 s",
        slow.map(|r| {
            let per_round: Vec<String> = r
                .spills
                .iter()
                .map(|s| seconds(s.spilled_after_s))
                .collect();
            let within = r
                .spills
                .iter()
                .all(|s| s.spilled_after_s.is_some_and(|t| t <= 5.0));
            (
                format!(
                    "{} (rounds: {})",
                    seconds(r.spilled_after_s()),
                    per_round.join(", ")
                ),
                !r.spills.is_empty() && within,
            )
        }),
    );
    goal(
        "local zone slow: (a) is back in zone within 5 s of the recovery",
        slow.map(|r| {
            let per_round: Vec<String> = r.spills.iter().map(|s| seconds(s.back_after_s)).collect();
            let within = r
                .spills
                .iter()
                .all(|s| s.back_after_s.is_some_and(|t| t <= 5.0));
            (
                format!(
                    "{} (rounds: {}; measured for {:.0} s after the recovery)",
                    seconds(r.back_after_s()),
                    per_round.join(", "),
                    r.timeline.last().map_or(0.0, |w| w[0]) - r.recovered_s.unwrap_or(0.0)
                ),
                !r.spills.is_empty() && within,
            )
        }),
    );
    goal(
        "instance killed: (a) fails no call",
        find(rows, Killed, Balancer).map(|r| {
            (
                format!("{} failed of {} calls", r.failed, r.calls),
                r.failed == 0,
            )
        }),
    );
    goals
}

/// How the run was made, for the report's heading.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Conditions {
    pub(crate) command: String,
    pub(crate) rounds: usize,
    pub(crate) concurrency: u64,
    pub(crate) machine: String,
    pub(crate) pinning: String,
    pub(crate) timing: String,
    pub(crate) network: String,
    pub(crate) haproxy: String,
    pub(crate) elapsed_s: f64,
}

/// The Markdown report: conditions, the table, the slow zone's spill, the goals.
pub(crate) fn markdown(rows: &[Row], goals: &[Goal], conditions: &Conditions) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_markdown(&mut out, rows, goals, conditions);
    out
}

fn write_markdown(
    out: &mut String,
    rows: &[Row],
    goals: &[Goal],
    c: &Conditions,
) -> std::fmt::Result {
    writeln!(
        out,
        "# Side by side: cloudmap-balancer and what users would pick instead\n"
    )?;
    writeln!(out, "- command: `{}`", c.command)?;
    writeln!(
        out,
        "- {} round(s), interleaved; {} callers in one client process, closed loop, unary `Describe`",
        c.rounds, c.concurrency
    )?;
    writeln!(out, "- machine: {}", c.machine)?;
    writeln!(out, "- pinning: {}", c.pinning)?;
    writeln!(out, "- segments: {}", c.timing)?;
    writeln!(out, "- network: {}", c.network)?;
    writeln!(out, "- (d): {}", c.haproxy)?;
    writeln!(out, "- run time: {:.0} s\n", c.elapsed_s)?;
    writeln!(
        out,
        "Medians over rounds. In zone: calls served in the client's zone. Cross-zone traffic at \
         {} bytes per call ({} each way), billed ${:.2} per GB crossed ($0.01 out, $0.01 in). \
         To the faulted task: the share of successful calls the slowed or killed task served (it \
         has 18 % of the fleet's load-adjusted weight and 41 % of the client zone's).\n",
        measure::BYTES_PER_CALL,
        measure::BYTES_PER_CALL / 2,
        measure::DOLLARS_PER_GB_CROSSED
    )?;
    writeln!(
        out,
        "| scenario | variant | calls/s (min–max) | p50 | p99 | in zone | cross-zone per 10⁹ calls | to the faulted task | failed |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for row in rows {
        let (gigabytes, dollars) = cross_zone_per_billion_calls(1.0 - row.local_share);
        writeln!(
            out,
            "| {} | ({}) {} | {:.0} ({:.0}–{:.0}) | {:.2} ms | {:.2} ms | {} | {:.0} GB, ${:.2} | {} | {} of {} |",
            row.scenario.label(),
            row.variant.letter(),
            row.variant.label(),
            row.calls_per_s,
            row.calls_per_s_min,
            row.calls_per_s_max,
            row.p50_ms,
            row.p99_ms,
            percent(row.local_share),
            gigabytes,
            dollars,
            row.faulted_share.map_or("–".into(), percent),
            row.failed,
            row.calls
        )?;
    }
    let slow: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario == Scenario::SlowZone)
        .collect();
    if !slow.is_empty() {
        writeln!(
            out,
            "\nLocal zone 40 ms slow: spilled = the first of two {:.1} s windows in a row at least 10 points \
             below the share before the slowdown; back = the first of three windows in a row within 5 points \
             of it. Times are medians over rounds; \"never\" when a round did not.\n",
            slow[0].timeline.first().map_or(0.0, |w| w[0])
        )?;
        writeln!(
            out,
            "| variant | in zone before | spilled after | back in zone after the recovery |"
        )?;
        writeln!(out, "|---|---|---|---|")?;
        for row in slow {
            let before = median(row.spills.iter().map(|s| s.baseline).collect()).unwrap_or(0.0);
            writeln!(
                out,
                "| ({}) {} | {} | {} | {} |",
                row.variant.letter(),
                row.variant.label(),
                percent(before),
                seconds(row.spilled_after_s()),
                if row.spilled_after_s().is_some() {
                    seconds(row.back_after_s())
                } else {
                    "–".into()
                }
            )?;
        }
    }
    let shared: Vec<&Row> = rows.iter().filter(|r| !r.task_shares.is_empty()).collect();
    if !shared.is_empty() {
        writeln!(
            out,
            "\nShares of the client's zone's calls per task, against the share its weight × load \
             promises (`LB_WEIGHT` × (1 − 0.75 × `LB_LOAD` / 100) over the zone's; medians over rounds):\n"
        )?;
        writeln!(
            out,
            "| scenario | variant | task | share of the zone's calls | weight × load share | deviation |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|")?;
        for row in shared {
            for task in &row.task_shares {
                writeln!(
                    out,
                    "| {} | ({}) {} | {} | {} | {} | {:.1} points |",
                    row.scenario.label(),
                    row.variant.letter(),
                    row.variant.label(),
                    &task.task_id[..task.task_id.len().min(8)],
                    percent(task.share),
                    percent(task.expected_share),
                    task.deviation_points()
                )?;
            }
        }
    }
    writeln!(out, "\n## Goals\n")?;
    writeln!(out, "| goal | measured | met |")?;
    writeln!(out, "|---|---|---|")?;
    for goal in goals {
        writeln!(
            out,
            "| {} | {} | {} |",
            goal.goal,
            goal.measured,
            match goal.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not run",
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::measure::{SegmentResult, Window};

    fn result(ok: u64, local: u64, p99_us: u64, failed: u64) -> SegmentResult {
        SegmentResult {
            measured_s: 1.0,
            ok,
            failures: if failed > 0 {
                BTreeMap::from([("Unavailable".to_owned(), failed)])
            } else {
                BTreeMap::new()
            },
            first_failure: None,
            per_zone: BTreeMap::new(),
            per_task: BTreeMap::new(),
            local,
            p50_us: p99_us / 2,
            p99_us,
            windows: vec![Window {
                end_s: 1.0,
                ok,
                local,
                failed,
            }],
        }
    }

    fn record(round: usize, scenario: Scenario, variant: Variant, r: SegmentResult) -> Record {
        Record {
            round,
            scenario,
            variant,
            result: r,
            slowed_s: None,
            recovered_s: None,
            killed_s: None,
            faulted_task: None,
            tasks: Vec::new(),
        }
    }

    #[test]
    fn medians_take_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn rows_take_medians_over_rounds_and_sum_failures() {
        let records = [
            record(
                0,
                Scenario::Balanced,
                Variant::Balancer,
                result(1000, 1000, 900, 0),
            ),
            record(
                1,
                Scenario::Balanced,
                Variant::Balancer,
                result(3000, 2970, 1100, 2),
            ),
            record(
                2,
                Scenario::Balanced,
                Variant::Balancer,
                result(2000, 2000, 1000, 0),
            ),
            record(
                0,
                Scenario::Balanced,
                Variant::Haproxy,
                result(1000, 500, 2000, 0),
            ),
        ];
        let rows = rows(&records);
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!((a.variant, a.rounds), (Variant::Balancer, 3));
        assert!((a.calls_per_s - 2000.0).abs() < 1e-9);
        assert!((a.calls_per_s_min - 1000.0).abs() < 1e-9);
        assert!((a.calls_per_s_max - 3000.0).abs() < 1e-9);
        assert!((a.p99_ms - 1.0).abs() < 1e-9);
        assert!((a.local_share - 1.0).abs() < 1e-9);
        assert_eq!((a.failed, a.calls), (2, 6002));
    }

    #[test]
    fn goals_say_met_missed_or_not_run() {
        let records = [
            record(
                0,
                Scenario::Balanced,
                Variant::Balancer,
                result(2600, 2600, 900, 0),
            ),
            record(
                0,
                Scenario::Balanced,
                Variant::Haproxy,
                result(1000, 500, 2000, 0),
            ),
            record(
                0,
                Scenario::Killed,
                Variant::Balancer,
                result(1000, 1000, 900, 3),
            ),
        ];
        let goals = goals(&rows(&records));
        let met = |text: &str| {
            goals
                .iter()
                .find(|g| g.goal.contains(text))
                .map(|g| g.met)
                .unwrap_or(Some(false))
        };
        assert_eq!(met("(a) keeps ≥ 99 % of calls in zone"), Some(true));
        assert_eq!(met("1.3×"), Some(true), "2600 vs 1000 calls/s");
        assert_eq!(met("lower p50"), Some(true));
        assert_eq!(met("(d) keeps ≈ 33 %"), Some(false), "50 % is not a third");
        assert_eq!(met("fails no call"), Some(false));
        assert_eq!(met("(b) keeps"), None, "(b) did not run");
        assert_eq!(met("spills within 5 s"), None);
    }

    #[test]
    fn the_starved_client_is_judged_on_each_tasks_share_of_its_zone() {
        use crate::harness::TaskWeight;
        let task = |id: &str, zone: &str, effective_weight: f64| TaskWeight {
            task_id: id.into(),
            zone: zone.into(),
            effective_weight,
        };
        let starved = |round, calls: [u64; 3]| {
            let mut r = result(calls.iter().sum(), calls[0] + calls[1], 900, 0);
            r.per_zone = BTreeMap::from([
                (CLIENT_ZONE.to_owned(), calls[0] + calls[1]),
                ("other".to_owned(), calls[2]),
            ]);
            r.per_task = BTreeMap::from([
                ("t1".to_owned(), calls[0]),
                ("t2".to_owned(), calls[1]),
                ("t3".to_owned(), calls[2]),
            ]);
            let mut record = record(round, Scenario::ClientStarved, Variant::Balancer, r);
            // t1 weighs 100 at no load, t2 200 at 50 % load: 125.
            record.tasks = vec![
                task("t1", CLIENT_ZONE, 100.0),
                task("t2", CLIENT_ZONE, 125.0),
                task("t3", "other", 100.0),
            ];
            record
        };
        // 100 / 225 = 44.4 % and 55.6 % promised.
        let rows = rows(&[starved(0, [450, 550, 10]), starved(1, [520, 480, 10])]);
        let shares = &rows[0].task_shares;
        assert_eq!(shares.len(), 2, "the client's zone only");
        assert!((shares[0].expected_share - 100.0 / 225.0).abs() < 1e-9);
        // Medians over two rounds: the mean of 45 % and 52 %.
        assert!((shares[0].share - 0.485).abs() < 1e-9);
        let goal = |rows: &[Row]| {
            goals(rows)
                .into_iter()
                .find(|g| g.goal.contains("weight × load share"))
                .unwrap()
        };
        let missed = goal(&rows);
        assert_eq!(missed.met, Some(false), "{}", missed.measured);
        assert!(
            missed.measured.contains("4.1 points"),
            "{}",
            missed.measured
        );
        let rows = super::rows(&[starved(0, [450, 550, 10]), starved(1, [440, 560, 10])]);
        assert_eq!(goal(&rows).met, Some(true));
        let conditions = Conditions {
            command: "c".into(),
            rounds: 2,
            concurrency: 8,
            machine: "m".into(),
            pinning: "p".into(),
            timing: "t".into(),
            network: "n".into(),
            haproxy: "h".into(),
            elapsed_s: 1.0,
        };
        let text = markdown(&rows, &goals(&rows), &conditions);
        assert!(text.contains("| client CPU-starved | (a) "), "{text}");
        assert!(text.contains("| 44.4 % |"), "{text}");
    }

    #[test]
    fn the_markdown_table_has_a_row_per_variant_and_scenario() {
        let records = [
            record(
                0,
                Scenario::Balanced,
                Variant::Balancer,
                result(2600, 2600, 900, 0),
            ),
            record(
                0,
                Scenario::Killed,
                Variant::Haproxy,
                result(1000, 500, 2000, 4),
            ),
        ];
        let rows = rows(&records);
        let conditions = Conditions {
            command: "scripts/compare".into(),
            rounds: 1,
            concurrency: 8,
            machine: "test".into(),
            pinning: "none".into(),
            timing: "t".into(),
            network: "n".into(),
            haproxy: "h".into(),
            elapsed_s: 1.0,
        };
        let text = markdown(&rows, &goals(&rows), &conditions);
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("| scenario |"))
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert_eq!(table.len(), 2 + 2, "header, separator, two rows:\n{text}");
        assert!(table.iter().all(|l| l.matches('|').count() == 10));
        assert!(table[3].contains("4 of 1004"));
        assert!(text.contains("| goal | measured | met |"));
    }
}
