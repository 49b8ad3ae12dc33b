//! The run's results: what a person reads, and the same as JSON for machines (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

/// Everything the run found out.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Whether every check passed.
    pub(crate) ok: bool,
    pub(crate) client_zone: String,
    /// The client's zone ID, as the balancer holds it.
    pub(crate) client_zone_id: Option<String>,
    /// The Cloud Map instances before the calls, as the console shows them.
    pub(crate) instances: Vec<InstanceReport>,
    /// The events sent to the Lambda and what it did with each.
    pub(crate) events: Vec<EventReport>,
    pub(crate) in_zone: Phase,
    pub(crate) spill: SpillReport,
    pub(crate) drain: DrainReport,
    /// gRPC's Python client through the xDS control plane, in the same phases.
    pub(crate) xds: XdsReport,
    pub(crate) checks: Vec<Check>,
    pub(crate) elapsed_seconds: f64,
    /// Where the processes' logs are.
    pub(crate) logs: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct InstanceReport {
    pub(crate) id: String,
    pub(crate) zone: String,
    /// `AVAILABILITY_ZONE_ID`, when written.
    pub(crate) zone_id: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) weight: u32,
    pub(crate) load: Option<u32>,
    /// `LB_WEIGHT × (1 − 0.75 × LB_LOAD / 100)`: the weight the client's picks should follow.
    pub(crate) effective_weight: f64,
    pub(crate) cpu: u32,
    pub(crate) attributes: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct EventReport {
    pub(crate) task_id: String,
    pub(crate) event: String,
    pub(crate) outcome: String,
}

/// A fixed number of calls and where they went.
#[derive(Debug, Serialize)]
pub(crate) struct Phase {
    pub(crate) calls: u64,
    pub(crate) failed: u64,
    pub(crate) local_share: f64,
    pub(crate) expected_local_share: f64,
    pub(crate) zones: Vec<ZoneRow>,
    pub(crate) tasks: Vec<TaskRow>,
    /// The largest deviation from the expected shares of the reference balancer (in-flight
    /// counts alone) that took turns with the client (phase 1 only).
    pub(crate) reference_worst: Option<f64>,
}

impl Phase {
    /// The largest deviation of a task's share from its expected share.
    pub(crate) fn worst_deviation(&self) -> f64 {
        self.tasks
            .iter()
            .map(|t| (t.share - t.expected_share).abs())
            .fold(0.0, f64::max)
    }

    /// Adds the reference balancer's shares (in-flight counts alone) and the client's latency
    /// estimates per task.
    pub(crate) fn add_reference(
        &mut self,
        reference: &demo::traffic::Tally,
        stats: &cloudmap_balancer::Stats,
    ) {
        let served = reference.succeeded();
        let mut worst: f64 = 0.0;
        for task in &mut self.tasks {
            let calls = reference.tasks.get(&task.task_id).map_or(0, |t| t.calls);
            let share = demo::traffic::share(calls, served);
            worst = worst.max((share - task.expected_share).abs());
            task.reference_share = Some(share);
            task.latency_ms = stats
                .instances
                .iter()
                .find(|i| i.instance.id == task.task_id)
                .and_then(|i| i.latency)
                .map(|l| l.as_secs_f64() * 1e3);
        }
        self.reference_worst = Some(worst);
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ZoneRow {
    pub(crate) zone: String,
    /// The zone's ID, as the Lambda wrote it on the zone's instances.
    pub(crate) zone_id: Option<String>,
    pub(crate) calls: u64,
    pub(crate) share: f64,
    pub(crate) expected_share: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct TaskRow {
    pub(crate) task_id: String,
    pub(crate) zone: String,
    pub(crate) cpu: u32,
    pub(crate) weight: u32,
    pub(crate) load: Option<u32>,
    pub(crate) calls: u64,
    pub(crate) share: f64,
    pub(crate) expected_share: f64,
    /// The share the reference balancer (in-flight counts alone) gave it (phase 1).
    pub(crate) reference_share: Option<f64>,
    /// The client's latency estimate of it at the end of the phase (phase 1).
    pub(crate) latency_ms: Option<f64>,
}

/// The slow-zone phase.
#[derive(Debug, Serialize)]
pub(crate) struct SpillReport {
    pub(crate) added_latency_ms: u64,
    pub(crate) calls: u64,
    pub(crate) failed: u64,
    /// Seconds from slowing the zone to the first half-second window with under 90 % local.
    pub(crate) spilled_after_seconds: Option<f64>,
    /// Local share over the windows where the spill had settled near its floor.
    pub(crate) settled_local_share: f64,
    /// The local zone's capacity share: the floor the adaptive mode spills down to.
    pub(crate) expected_settled_local_share: f64,
    pub(crate) settled_calls: u64,
    /// How the settled windows' spilled calls split over the other zones, vs their capacity.
    pub(crate) spill_split: Vec<ZoneRow>,
    /// Seconds from making the zone fast again to ≥ 95 % local (held for three windows).
    pub(crate) recovered_after_seconds: Option<f64>,
    /// Seconds from slowing the zone to making it fast again.
    pub(crate) fast_again_seconds: f64,
    /// `[seconds since slowed, local share]` per half-second window.
    pub(crate) timeline: Vec<[f64; 2]>,
}

/// The stop-a-task phase.
#[derive(Debug, Serialize)]
pub(crate) struct DrainReport {
    pub(crate) task_id: String,
    pub(crate) calls: u64,
    pub(crate) failed: u64,
    pub(crate) first_failure: Option<String>,
    pub(crate) state_after_draining_event: Option<String>,
    /// Milliseconds from SIGTERM (the server's NOT_SERVING) to the stopped task's last answered
    /// call; 0 when it was answered before.
    pub(crate) last_call_after_sigterm_ms: Option<u64>,
    /// Milliseconds from SIGTERM to sending the DRAINING event to the Lambda.
    pub(crate) draining_event_after_sigterm_ms: u64,
    /// Milliseconds from SIGTERM to when the server stops accepting new calls on its own (its
    /// drain delay).
    pub(crate) stops_accepting_after_sigterm_ms: u64,
    pub(crate) server_exit_code: Option<i32>,
    /// The zone's remaining tasks after the stop, vs their effective weight share.
    pub(crate) after: Vec<TaskRow>,
}

/// What grpcio does differently from the Rust client, for the report.
pub(crate) const GRPCIO_DIFFERENCES: [&str; 5] = [
    "its picks come from the xDS server: the crate's picker computes each task's share for a caller in the client's zone (weight × load, zone affinity), sent as one locality per task; grpcio splits calls by those weights with weighted round robin over localities, round robin inside",
    "zone affinity is Envoy's formula over the callers connected to the server per zone (here one in each zone: the two others idle), not the Rust client's latency-driven spill",
    "no latency-aware choice: a slow task keeps its share (so it sits out phase 2: it would not spill from the slow zone)",
    "no health watch of its own: the xDS server watches every task's gRPC health and pushes DRAINING to its clients (phase 3)",
    "retries only through a route retry policy (none is sent); outlier detection (A50, failure percentage) comes from the server's Cluster",
];

/// grpcio through the xDS server.
#[derive(Debug, Serialize)]
pub(crate) struct XdsReport {
    /// Where `cloudmap-xds serve` listened.
    pub(crate) server: String,
    /// The target grpcio called.
    pub(crate) target: String,
    /// grpcio's version.
    pub(crate) grpcio: String,
    /// The zone its bootstrap named (`node.locality.zone`: the client's AZ ID).
    pub(crate) client_zone_id: String,
    /// The zones (IDs) of the idle callers connected beside it.
    pub(crate) caller_zones: Vec<String>,
    /// Phase 1, its calls.
    pub(crate) in_zone: Phase,
    /// Phase 1's latency percentiles (µs), as the Python client measured them.
    pub(crate) latency_us: BTreeMap<String, Option<u64>>,
    /// Phase 3, its calls.
    pub(crate) drain: GrpcioDrainReport,
    /// The server's summary on shutdown (streams, pushes, ACKs, NACKs).
    pub(crate) server_summary: serde_json::Value,
    /// What it does differently from the Rust client.
    pub(crate) differences: Vec<String>,
}

/// grpcio's calls in the stop-a-task phase.
#[derive(Debug, Serialize)]
pub(crate) struct GrpcioDrainReport {
    pub(crate) calls: u64,
    pub(crate) failed: u64,
    pub(crate) first_failure: Option<String>,
    /// Its calls the stopped task answered in this phase.
    pub(crate) stopped_task_calls: u64,
    /// Milliseconds from SIGTERM to the stopped task's last answer to grpcio; 0 when before.
    pub(crate) last_call_after_sigterm_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

impl Check {
    pub(crate) fn new(name: &str, ok: bool, detail: String) -> Self {
        Self {
            name: name.to_owned(),
            ok,
            detail,
        }
    }
}

/// The local share over time as one line of block characters, one per window: `▁` for none,
/// `█` for all, a `|` where the zone was fast again (before the first window that ends after
/// `mark`).
pub(crate) fn sparkline(timeline: &[[f64; 2]], mark: Option<f64>) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut line = String::new();
    let mut marked = mark.is_none();
    for &[end, share] in timeline {
        if !marked && mark.is_some_and(|m| end > m) {
            line.push('|');
            marked = true;
        }
        // Clamped to 0–7 first, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let level = (share.clamp(0.0, 1.0) * 7.0).round() as usize;
        line.push(BLOCKS[level]);
    }
    if !marked {
        line.push('|');
    }
    line
}

fn percent(share: f64) -> String {
    format!("{:5.1} %", share * 100.0)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Report {
    /// The report for a person.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "\nCloud Map instances of {}/{} (as the console shows them)",
            crate::stack::NAMESPACE,
            crate::stack::SERVICE
        )?;
        for instance in &self.instances {
            writeln!(
                out,
                "  {} ({}, zone ID {}, {} CPU units)",
                instance.id,
                instance.zone,
                instance.zone_id.as_deref().unwrap_or("-"),
                instance.cpu
            )?;
            for (key, value) in &instance.attributes {
                writeln!(out, "      {key:<28} {value}")?;
            }
        }

        writeln!(out, "\nEvents sent to the sync Lambda")?;
        for event in &self.events {
            writeln!(
                out,
                "  {} {:<30} {}",
                short(&event.task_id),
                event.event,
                event.outcome
            )?;
        }

        let phase = &self.in_zone;
        let grpcio = &self.xds.in_zone;
        writeln!(
            out,
            "\nPhase 1: {} calls from {} (zone ID {}) through the Rust balancer, {} failed; then {} through the xDS server by grpcio {} (Python), {} failed",
            phase.calls,
            self.client_zone,
            self.client_zone_id.as_deref().unwrap_or("-"),
            phase.failed,
            grpcio.calls,
            self.xds.grpcio,
            grpcio.failed
        )?;
        writeln!(
            out,
            "  {:<16} {:<10} {:>7} {:>8} {:>7} {:>8} {:>9}",
            "zone", "zone ID", "Rust", "share", "grpcio", "share", "expected"
        )?;
        for (zone, by_grpcio) in phase.zones.iter().zip(&grpcio.zones) {
            writeln!(
                out,
                "  {:<16} {:<10} {:>7} {:>8} {:>7} {:>8} {:>9}",
                zone.zone,
                zone.zone_id.as_deref().unwrap_or("-"),
                zone.calls,
                percent(zone.share),
                by_grpcio.calls,
                percent(by_grpcio.share),
                percent(zone.expected_share)
            )?;
        }
        writeln!(
            out,
            "  {:<12} {:<16} {:>5} {:>6} {:>5} {:>7} {:>8} {:>7} {:>8} {:>9} {:>8} {:>9}",
            "task",
            "zone",
            "cpu",
            "weight",
            "load",
            "Rust",
            "share",
            "grpcio",
            "share",
            "expected",
            "alone",
            "latency"
        )?;
        for (task, by_grpcio) in phase.tasks.iter().zip(&grpcio.tasks) {
            writeln!(
                out,
                "  {:<12} {:<16} {:>5} {:>6} {:>5} {:>7} {:>8} {:>7} {:>8} {:>9} {:>8} {:>9}",
                short(&task.task_id),
                task.zone,
                task.cpu,
                task.weight,
                task.load.map_or("-".into(), |l| format!("{l} %")),
                task.calls,
                percent(task.share),
                by_grpcio.calls,
                percent(by_grpcio.share),
                percent(task.expected_share),
                task.reference_share.map_or("-".into(), percent),
                task.latency_ms
                    .map_or("-".into(), |ms| format!("{ms:.2} ms")),
            )?;
        }
        writeln!(
            out,
            "  kept in zone: Rust {}, grpcio {}",
            percent(phase.local_share).trim(),
            percent(grpcio.local_share).trim()
        )?;
        let turns = crate::scenario::reference_turns(phase.calls);
        writeln!(
            out,
            "  (alone: the Rust balancer by in-flight counts alone, taking turns with it, {turns} × about {} calls; latency: the Rust client's estimates after the phase)",
            phase.calls / turns
        )?;

        let spill = &self.spill;
        writeln!(
            out,
            "\nPhase 2: {} slowed by {} ms ({} calls, {} failed)",
            self.client_zone, spill.added_latency_ms, spill.calls, spill.failed
        )?;
        writeln!(
            out,
            "  spilled after {}; settled at {} local (the zone's capacity share: {})",
            spill
                .spilled_after_seconds
                .map_or("never".into(), |s| format!("{s:.1} s")),
            percent(spill.settled_local_share).trim(),
            percent(spill.expected_settled_local_share).trim()
        )?;
        for zone in &spill.spill_split {
            writeln!(
                out,
                "  spilled to {:<16} {:<10} {:>7} calls {:>8} (by capacity: {})",
                zone.zone,
                zone.zone_id.as_deref().unwrap_or("-"),
                zone.calls,
                percent(zone.share),
                percent(zone.expected_share).trim()
            )?;
        }
        writeln!(
            out,
            "  back in zone {} after the zone was fast again",
            spill
                .recovered_after_seconds
                .map_or("never".into(), |s| format!("{s:.1} s"))
        )?;
        writeln!(
            out,
            "  local share per 0.5 s window from the slowdown (▁ 0 % … █ 100 %, | fast again at {:.1} s):",
            spill.fast_again_seconds
        )?;
        writeln!(
            out,
            "  {}",
            sparkline(&spill.timeline, Some(spill.fast_again_seconds))
        )?;

        let drain = &self.drain;
        writeln!(
            out,
            "\nPhase 3: task {} stopped the way ECS stops it ({} calls, {} failed)",
            short(&drain.task_id),
            drain.calls,
            drain.failed
        )?;
        writeln!(
            out,
            "  LB_STATE after the DRAINING event: {}",
            drain.state_after_draining_event.as_deref().unwrap_or("-")
        )?;
        writeln!(
            out,
            "  its last call was answered {} after SIGTERM (NOT_SERVING; it would have refused calls from {} ms, and the DRAINING event was sent at {} ms); demo-server exited with {}",
            drain
                .last_call_after_sigterm_ms
                .map_or("no call in this phase: never".into(), |ms| format!(
                    "{ms} ms"
                )),
            drain.stops_accepting_after_sigterm_ms,
            drain.draining_event_after_sigterm_ms,
            drain
                .server_exit_code
                .map_or("a signal".into(), |c| c.to_string())
        )?;
        for task in &drain.after {
            writeln!(
                out,
                "  then {:<12} weight {:>4}: {:>6} calls {:>8} (expected {})",
                short(&task.task_id),
                task.weight,
                task.calls,
                percent(task.share),
                percent(task.expected_share).trim()
            )?;
        }
        let by_grpcio = &self.xds.drain;
        writeln!(
            out,
            "  grpcio via xDS, at the same time: {} calls, {} failed; the stopped task answered {} of them, the last {} after SIGTERM (the xDS server's health watch pushed DRAINING; Cloud Map said it at {} ms)",
            by_grpcio.calls,
            by_grpcio.failed,
            by_grpcio.stopped_task_calls,
            by_grpcio
                .last_call_after_sigterm_ms
                .map_or("never".into(), |ms| format!("{ms} ms")),
            drain.draining_event_after_sigterm_ms
        )?;

        let xds = &self.xds;
        writeln!(
            out,
            "\ngrpcio {} through the xDS server ({}, target {}; bootstrap zone {}, idle callers in {})",
            xds.grpcio,
            xds.server,
            xds.target,
            xds.client_zone_id,
            xds.caller_zones.join(", ")
        )?;
        writeln!(
            out,
            "  phase 1 latency: p50 {} µs, p99 {} µs (Python's own overhead included)",
            xds.latency_us
                .get("p50")
                .copied()
                .flatten()
                .map_or("-".into(), |v| v.to_string()),
            xds.latency_us
                .get("p99")
                .copied()
                .flatten()
                .map_or("-".into(), |v| v.to_string())
        )?;
        writeln!(out, "  what it does differently from the Rust client:")?;
        for difference in &xds.differences {
            writeln!(out, "  - {difference}")?;
        }
        writeln!(
            out,
            "  server: {} NACKs, {} ACKs, {} pushes",
            xds.server_summary["nacks"], xds.server_summary["acks"], xds.server_summary["pushes"]
        )?;

        writeln!(out, "\nChecks")?;
        for check in &self.checks {
            writeln!(
                out,
                "  [{}] {} ({})",
                if check.ok { " ok " } else { "FAIL" },
                check.name,
                check.detail
            )?;
        }
        writeln!(
            out,
            "\n{} in {:.0} s. Logs: {}",
            if self.ok {
                "All checks passed"
            } else {
                "SOME CHECKS FAILED"
            },
            self.elapsed_seconds,
            self.logs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::sparkline;

    #[test]
    fn the_sparkline_has_a_block_per_window_by_share_and_marks_the_recovery() {
        let timeline = [[0.5, 1.0], [1.0, 0.5], [1.5, 0.0], [2.0, 0.45], [2.5, 1.2]];
        assert_eq!(sparkline(&timeline, Some(1.5)), "█▅▁|▄█");
        assert_eq!(sparkline(&timeline, None), "█▅▁▄█");
        assert_eq!(
            sparkline(&timeline, Some(9.0)),
            "█▅▁▄█|",
            "a mark after the end"
        );
        assert_eq!(sparkline(&[], None), "");
    }
}
