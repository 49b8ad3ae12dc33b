//! `compare --grpcio`: gRPC's Python client (grpcio, C-core) on the comparison's fleet, beside
//! the Rust balancer, in the balanced scenario, interleaved in rounds:
//!
//! - (a) `cloudmap_balancer::Balancer` with its defaults (the client process of the main run);
//! - (e) grpcio through the xDS control plane: `xds:///demo-server.demo.local`, the real
//!   `cloudmap-xds serve` on the fleet's moto, a bootstrap naming the client's zone, and one idle
//!   grpcio caller in each other zone (the server splits a zone's calls by Envoy's formula over
//!   the callers connected per zone: a fleet has callers everywhere);
//! - (f) grpcio with `round_robin` over an `ipv4:` list of every instance's address: what a
//!   grpcio service does with DNS discovery (a `dns:///` name of a Cloud Map DNS namespace
//!   resolves to the same A records) and the `round_robin` policy;
//! - (g) the Rust balancer of (a) fed by the same `cloudmap-xds` server (the crate's `xds`
//!   feature) instead of polling Cloud Map: the same picks from the same instances, so its
//!   shares, in-zone share and calls per second should be (a)'s (issue 19's goal: within 1 point
//!   and 3 %; the report prints the differences).
//!
//! Every call carries the client's zone in `demo-client-zone`, so the servers wait the emulated
//! round trip of AWS (in zone or across zones) as for every variant. The Python client runs on
//! the client's core, as the Rust client process does. Its latency includes Python's own time per
//! call (the GIL, the thread pool): compare (e) with (f) for what xDS changes, and (a) with (e)
//! for where the calls go, not for raw speed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use demo::fleet::{CLIENT_ZONE, LAYOUT};
use demo::progress::Progress;
use demo::xds::{GrpcioClient, GrpcioRun, GrpcioSummary, XdsServer};
use demo_server::CLIENT_ZONE_HEADER;
use serde::Serialize;

use crate::fleet::Fleet;
use crate::harness::{self, HarnessError, Options, REFRESH_EVERY, TaskWeight};
use crate::measure::SegmentResult;
use crate::plan::{Scenario, Segment, Timing, Variant};

/// The `:authority` of (f)'s calls: the service's DNS name, as a `dns:///` target would send.
const AUTHORITY: &str = "demo-server.demo.local";

/// The four columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) enum Column {
    /// (a) the Rust balancer.
    Balancer,
    /// (e) grpcio through cloudmap-xds.
    GrpcioXds,
    /// (f) grpcio, `round_robin` over every instance's address.
    GrpcioRoundRobin,
    /// (g) the Rust balancer through cloudmap-xds.
    BalancerXds,
}

impl Column {
    const ALL: [Self; 4] = [
        Self::Balancer,
        Self::GrpcioXds,
        Self::GrpcioRoundRobin,
        Self::BalancerXds,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Balancer => "(a) cloudmap-balancer (Rust)",
            Self::GrpcioXds => "(e) grpcio via xDS (cloudmap-xds)",
            Self::GrpcioRoundRobin => "(f) grpcio round_robin (ipv4 list, as DNS)",
            Self::BalancerXds => "(g) cloudmap-balancer (Rust) via xDS (cloudmap-xds)",
        }
    }
}

/// One segment.
#[derive(Debug, Serialize)]
pub(crate) struct GrpcioRecord {
    pub(crate) round: usize,
    pub(crate) column: Column,
    pub(crate) result: SegmentResult,
}

/// What `compare --grpcio` measured.
#[derive(Debug, Serialize)]
pub(crate) struct GrpcioOutcome {
    pub(crate) records: Vec<GrpcioRecord>,
    /// grpcio's version.
    pub(crate) grpcio: String,
    /// The fleet's tasks and the weight × load their picks should follow.
    pub(crate) tasks: Vec<TaskWeight>,
    /// NACKs the xDS server counted over the run.
    pub(crate) xds_nacks: Option<u64>,
    pub(crate) warmup_s: f64,
    pub(crate) measure_s: f64,
    pub(crate) concurrency: u64,
    pub(crate) elapsed_s: f64,
}

/// Runs the three columns, `options.rounds` times each, in a turning order.
pub(crate) async fn run(
    options: &Options,
    progress: &Progress,
    xds_binary: &Path,
) -> Result<GrpcioOutcome, HarnessError> {
    let started = Instant::now();
    let timing = if options.smoke {
        Timing::SMOKE
    } else {
        Timing::FULL
    };
    let mut fleet = harness::start_fleet(options, progress).await?;
    let client_cpu = options.cpus.as_ref().map(|c| c.client);

    progress.step("starting cloudmap-xds serve on the fleet's moto, and idle grpcio callers in the other zones");
    let server = XdsServer::start(
        xds_binary,
        fleet.stack.moto.endpoint(),
        Duration::from_secs(1),
        &options.work_dir,
    )
    .await?;
    let mut zones: Vec<&str> = LAYOUT.iter().map(|(zone, _, _)| *zone).collect();
    zones.dedup();
    let target = demo::xds::target();
    let mut bootstrap = None;
    let mut callers = Vec::new();
    for zone in zones {
        let path = options.work_dir.join(format!("bootstrap-{zone}.json"));
        demo::xds::bootstrap(
            xds_binary,
            server.addr,
            &format!("grpcio-{zone}"),
            zone,
            &path,
        )
        .await?;
        if zone == CLIENT_ZONE {
            bootstrap = Some(path);
            continue;
        }
        let mut caller = GrpcioClient::start(&GrpcioRun {
            bootstrap: &path,
            target: &target,
            calls: None,
            concurrency: 1,
            pause: Duration::ZERO,
            warmup: Duration::ZERO,
            cpu: None,
            idle: true,
            metadata: &[],
            lb_policy: None,
            authority: None,
            name: &format!("caller-{zone}"),
            work_dir: &options.work_dir,
        })?;
        caller.ready().await?;
        callers.push(caller);
    }
    let bootstrap = bootstrap.ok_or_else(|| HarnessError::Step {
        what: "the xDS bootstraps".into(),
        detail: format!("no task in {CLIENT_ZONE}"),
    })?;

    let mut records = Vec::new();
    let mut grpcio = String::new();
    let total = options.rounds * Column::ALL.len();
    for round in 0..options.rounds {
        for k in 0..Column::ALL.len() {
            let column = Column::ALL[(k + round) % Column::ALL.len()];
            if fleet.refreshed.elapsed() >= REFRESH_EVERY {
                fleet.register_all().await?;
            }
            let result = match column {
                Column::Balancer | Column::BalancerXds => {
                    let (variant, xds_server) = if column == Column::Balancer {
                        (Variant::Balancer, None)
                    } else {
                        (Variant::BalancerXds, Some(server.addr))
                    };
                    let segment = Segment {
                        round,
                        scenario: Scenario::Balanced,
                        variant,
                    };
                    harness::run_segment(&mut fleet, options, &timing, segment, None, xds_server)
                        .await?
                        .result
                }
                Column::GrpcioXds | Column::GrpcioRoundRobin => {
                    let (target, policy) = if column == Column::GrpcioXds {
                        (target.clone(), None)
                    } else {
                        (ipv4_target(&fleet), Some("round_robin"))
                    };
                    let summary = segment(
                        options,
                        &timing,
                        &bootstrap,
                        &target,
                        policy,
                        client_cpu,
                        &format!("r{}-{column:?}", round + 1),
                    )
                    .await?;
                    grpcio.clone_from(&summary.grpcio);
                    result_of(&summary)
                }
            };
            progress.step(format!(
                "[{}/{total}] round {} · {}: {:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} % in zone, {} failed",
                records.len() + 1,
                round + 1,
                column.label(),
                result.calls_per_second(),
                harness::ms(result.p50_us),
                harness::ms(result.p99_us),
                result.local_share() * 100.0,
                result.failed()
            ));
            records.push(GrpcioRecord {
                round,
                column,
                result,
            });
        }
    }

    for caller in callers {
        let _: GrpcioSummary = caller.finish().await?;
    }
    let summary = server.stop().await?;
    Ok(GrpcioOutcome {
        records,
        grpcio,
        tasks: fleet.members.iter().map(TaskWeight::of).collect(),
        xds_nacks: summary["nacks"].as_u64(),
        warmup_s: timing.warmup.as_secs_f64(),
        measure_s: timing.measure.as_secs_f64(),
        concurrency: options.concurrency,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// `ipv4:ADDR,ADDR,…`: every task's address, as a DNS lookup of the service would list them.
fn ipv4_target(fleet: &Fleet) -> String {
    let addrs: Vec<String> = fleet
        .members
        .iter()
        .map(|m| m.task.addr.to_string())
        .collect();
    format!("ipv4:{}", addrs.join(","))
}

/// One grpcio segment: warm-up, then `timing.measure` of calls from the client's zone.
async fn segment(
    options: &Options,
    timing: &Timing,
    bootstrap: &Path,
    target: &str,
    lb_policy: Option<&str>,
    cpu: Option<usize>,
    name: &str,
) -> Result<GrpcioSummary, HarnessError> {
    let metadata = [(CLIENT_ZONE_HEADER, CLIENT_ZONE.to_owned())];
    let mut client = GrpcioClient::start(&GrpcioRun {
        bootstrap,
        target,
        calls: None,
        concurrency: options.concurrency,
        pause: Duration::ZERO,
        warmup: timing.warmup,
        cpu,
        idle: false,
        metadata: &metadata,
        lb_policy,
        authority: lb_policy.map(|_| AUTHORITY),
        name,
        work_dir: &options.work_dir,
    })?;
    client.ready().await?;
    tokio::time::sleep(timing.warmup + timing.measure).await;
    Ok(client.finish().await?)
}

/// The grpcio client's summary as the harness's [`SegmentResult`] (no timeline).
fn result_of(summary: &GrpcioSummary) -> SegmentResult {
    let mut per_zone = BTreeMap::new();
    let mut per_task = BTreeMap::new();
    for (id, task) in &summary.tasks {
        *per_zone.entry(task.zone.clone()).or_default() += task.calls;
        per_task.insert(id.clone(), task.calls);
    }
    let percentile = |name: &str| summary.latency_us.get(name).copied().flatten().unwrap_or(0);
    SegmentResult {
        measured_s: summary.measured_s,
        ok: summary.ok,
        failures: summary.codes.clone(),
        first_failure: summary.first_error.clone(),
        local: per_zone.get(CLIENT_ZONE).copied().unwrap_or(0),
        per_zone,
        per_task,
        p50_us: percentile("p50"),
        p99_us: percentile("p99"),
        windows: Vec::new(),
    }
}

/// The median of `values` (the lower middle for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0)
}

/// The Markdown table: medians over the rounds, per column.
pub(crate) fn markdown(outcome: &GrpcioOutcome, command: &str) -> String {
    let of = |column: Column| -> Vec<&SegmentResult> {
        outcome
            .records
            .iter()
            .filter(|r| r.column == column)
            .map(|r| &r.result)
            .collect()
    };
    let cell = |column: Column, f: &dyn Fn(&SegmentResult) -> f64| -> f64 {
        median(of(column).into_iter().map(f).collect())
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "grpcio {} beside the Rust balancer, balanced fleet, {} round(s), medians; {} callers, {:.0} s warm-up then {:.0} s measured per segment; `{command}`\n",
        outcome.grpcio,
        outcome
            .records
            .iter()
            .map(|r| r.round)
            .max()
            .map_or(0, |r| r + 1),
        outcome.concurrency,
        outcome.warmup_s,
        outcome.measure_s
    );
    let _ = write!(out, "| |");
    for column in Column::ALL {
        let _ = write!(out, " {} |", column.label());
    }
    let _ = writeln!(out, " expected (weight × load, in zone) |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let row = |out: &mut String, name: &str, f: &dyn Fn(Column) -> String, expected: &str| {
        let _ = write!(out, "| {name} |");
        for column in Column::ALL {
            let _ = write!(out, " {} |", f(column));
        }
        let _ = writeln!(out, " {expected} |");
    };
    row(
        &mut out,
        "calls/s",
        &|c| format!("{:.0}", cell(c, &SegmentResult::calls_per_second)),
        "",
    );
    row(
        &mut out,
        "p50 / p99",
        &|c| {
            format!(
                "{:.2} / {:.2} ms",
                cell(c, &|r| harness::ms(r.p50_us)),
                cell(c, &|r| harness::ms(r.p99_us))
            )
        },
        "",
    );
    row(
        &mut out,
        "in zone",
        &|c| format!("{:.1} %", cell(c, &|r| r.local_share() * 100.0)),
        "100 %",
    );
    let local: Vec<&TaskWeight> = outcome
        .tasks
        .iter()
        .filter(|t| t.zone == CLIENT_ZONE)
        .collect();
    let local_weight: f64 = local.iter().map(|t| t.effective_weight).sum();
    for task in &local {
        let id = task.task_id.clone();
        row(
            &mut out,
            &format!("task {} ({CLIENT_ZONE})", &id[..id.len().min(8)]),
            &|c| format!("{:.1} %", cell(c, &|r| r.task_share(&id) * 100.0)),
            &format!("{:.1} %", task.effective_weight / local_weight * 100.0),
        );
    }
    row(
        &mut out,
        "failed calls",
        &|c| of(c).iter().map(|r| r.failed()).sum::<u64>().to_string(),
        "0",
    );
    let cps = |c| cell(c, &SegmentResult::calls_per_second);
    let largest_share_gap = local
        .iter()
        .map(|t| {
            (cell(Column::BalancerXds, &|r| r.task_share(&t.task_id))
                - cell(Column::Balancer, &|r| r.task_share(&t.task_id)))
            .abs()
        })
        .fold(0.0_f64, f64::max);
    let _ = writeln!(
        out,
        "\n(g) against (a), the same balancer fed by xDS instead of Cloud Map (goal: within 1 point and 3 %): in zone {:+.1} points; largest task share difference {:.1} points; calls/s {:+.1} %.",
        (cell(Column::BalancerXds, &SegmentResult::local_share)
            - cell(Column::Balancer, &SegmentResult::local_share))
            * 100.0,
        largest_share_gap * 100.0,
        (cps(Column::BalancerXds) / cps(Column::Balancer) - 1.0) * 100.0
    );
    let _ = writeln!(
        out,
        "\nxDS server NACKs over the run: {}. The tasks' IDs change every run.",
        outcome
            .xds_nacks
            .map_or("not reported".into(), |n| n.to_string())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpcio_summary_becomes_a_segment_result() {
        let line = r#"{"measured_s": 2.0, "grpcio": "1.85.1", "ok": 4, "failed": 0,
            "codes": {}, "first_error": null, "serving": {"SERVING": 4},
            "tasks": {"a": {"zone": "eu-central-1c", "calls": 3, "last_unix_ms": 1},
                      "b": {"zone": "eu-central-1a", "calls": 1, "last_unix_ms": 1}},
            "latency_us": {"p50": 700, "p90": 900, "p99": 1500}}"#;
        let summary: GrpcioSummary = serde_json::from_str(line).unwrap();
        let result = result_of(&summary);
        assert_eq!(result.local, 3);
        assert!((result.local_share() - 0.75).abs() < 1e-12);
        assert!((result.calls_per_second() - 2.0).abs() < 1e-12);
        assert_eq!((result.p50_us, result.p99_us), (700, 1500));
        assert!((result.task_share("b") - 0.25).abs() < 1e-12);
    }

    #[test]
    fn the_median_takes_the_lower_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.0);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
