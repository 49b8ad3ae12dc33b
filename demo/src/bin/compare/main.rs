//! `compare`: cloudmap-balancer side by side with what users would pick instead, on the local
//! demo's fleet, in one run.
//!
//! Six demo-server processes over three zones of uneven capacity (the local demo's layout),
//! registered in Cloud Map (moto) with the attributes the sync Lambda would write, each call
//! delayed by the network round trip it would have had on AWS (in zone 0.335 ms, across zones
//! 1.035 ms, one more in-zone round trip per proxy hop). The same callers and calls go through:
//!
//! - (a) `cloudmap_balancer::Balancer`, defaults, own zone fixed to the client's;
//! - (b) the same in `ZoneMode::Fixed { local_percent: 50 }`, the aws-samples resolver's policy;
//! - (c) tonic's `Channel::balance_list` over every instance;
//! - (d) a plain tonic `Channel` to HAProxy (`mode http`, h2 to the servers, `leastconn`);
//!
//! in five scenarios (balanced; one instance 20 ms slow; the client CPU-starved; the local zone
//! 40 ms slow, then recovered; one instance killed), interleaved in rounds. The client runs in a
//! process of its own pinned to one core; the servers, HAProxy and moto on the others.
//!
//! ```text
//! compare [--smoke] [--rounds N] [--concurrency N] [--out DIR] [--scenarios LIST] [--grpcio]
//! ```
//!
//! `--scenarios` runs only the named ones (comma separated: `balanced`, `slow-instance`,
//! `starved`, `slow-zone`, `killed`; default all).
//!
//! `--grpcio` runs instead the xDS columns on the same fleet, balanced scenario only: gRPC's
//! Python client through the xDS control plane and with `round_robin` over the instances'
//! addresses, and the Rust balancer fed by the same xDS server, beside (a) ([`grpcio`]); it
//! writes `grpcio.md` and `grpcio.json`.
//!
//! In the balanced and CPU-starved scenarios each task in the client's zone is reported with its
//! share of the zone's calls against the share its weight × load promises (`task_shares`).
//!
//! Writes `results.md` (the table and the goals), `results.json` and `compare.svg` to `--out`
//! (default `.local/compare`). Exit status: 0 when the run completed (goals met or not), 2 when
//! it could not, 64 for a bad command line.

mod attributes;
mod client;
mod fleet;
mod grpcio;
mod haproxy;
mod harness;
mod machine;
mod measure;
mod pin;
mod plan;
mod report;
mod svg;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use demo::progress::Progress;
use serde::Serialize;

use crate::harness::Outcome;
use crate::machine::Machine;
use crate::pin::CpuPlan;
use crate::plan::Scenario;
use crate::report::{Conditions, Goal, Row};

/// What an unpinned run means for its results.
const UNPINNED: &str = "the client shares its CPUs with the servers, and the CPU-starved scenario starves the servers too";

const USAGE: &str = "usage: compare [--smoke] [--rounds N] [--concurrency N] [--out DIR] [--scenarios LIST] [--grpcio]";

struct Args {
    smoke: bool,
    grpcio: bool,
    scenarios: Vec<Scenario>,
    rounds: Option<usize>,
    concurrency: u64,
    out: PathBuf,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        smoke: false,
        grpcio: false,
        scenarios: Scenario::ALL.to_vec(),
        rounds: None,
        concurrency: 8,
        out: local_stack::workspace_root().join(".local/compare"),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name} takes a positive number"))
        };
        match arg.as_str() {
            "--smoke" => parsed.smoke = true,
            "--grpcio" => parsed.grpcio = true,
            "--scenarios" => {
                let list = it
                    .next()
                    .ok_or_else(|| "--scenarios takes a comma-separated list".to_owned())?;
                parsed.scenarios = Scenario::parse_list(list)?;
            }
            "--rounds" => {
                parsed.rounds = Some(usize::try_from(number("--rounds")?).unwrap_or(usize::MAX));
            }
            "--concurrency" => parsed.concurrency = number("--concurrency")?,
            "--out" => {
                parsed.out = it
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| "--out takes a directory".to_owned())?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // The processes the harness starts.
        Some("client") => return client_main(args.get(1).map_or("", String::as_str)),
        Some("hog") => client::hog(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1)),
        _ => {}
    }
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(message) => {
            let _ = writeln!(
                std::io::stderr(),
                "{message}{}{USAGE}",
                if message.is_empty() { "" } else { "\n" }
            );
            return ExitCode::from(64);
        }
    };
    let progress = Progress::new();
    let fail = |message: String| {
        progress.step(format!("FAILED: {message}"));
        ExitCode::from(2)
    };

    // The client alone on one core, everything else (this process and what it starts) on the
    // others. Done before the runtime starts its threads.
    let cpus = CpuPlan::from_allowed(&pin::allowed_cpus()).and_then(|plan| {
        match pin::pin_self(&plan.others_list()) {
            Ok(()) => {
                progress.step(format!(
                    "client on CPU {}; servers, HAProxy and moto on CPU {}",
                    plan.client,
                    plan.others_list()
                ));
                Some(plan)
            }
            Err(e) => {
                progress.step(format!("NOTICE: nothing is pinned ({e}): {UNPINNED}"));
                None
            }
        }
    });
    if cpus.is_none() && pin::allowed_cpus().len() < 2 {
        progress.step(format!("NOTICE: fewer than two CPUs: {UNPINNED}"));
    }

    let demo_server = match demo::fleet::demo_server_binary(|step| progress.step(step)) {
        Ok(path) => path,
        Err(message) => return fail(message),
    };
    let me = match std::env::current_exe() {
        Ok(me) => me,
        Err(e) => return fail(format!("finding compare's own path: {e}")),
    };
    let work_dir = local_stack::workspace_root().join(".local/compare-work");
    let _ = std::fs::remove_dir_all(&work_dir);
    for dir in [&work_dir, &args.out] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return fail(format!("creating {}: {e}", dir.display()));
        }
    }
    let options = harness::Options {
        smoke: args.smoke,
        rounds: args.rounds.unwrap_or(if args.smoke { 1 } else { 3 }),
        scenarios: args.scenarios.clone(),
        concurrency: args.concurrency,
        work_dir: work_dir.canonicalize().unwrap_or(work_dir),
        demo_server,
        me,
        cpus,
    };
    let load_before = machine::load_average();
    if args.grpcio {
        return grpcio_main(&args, &options, &progress);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("starting the runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = harness::run(&options, &progress) => Some(outcome),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Dropping the run's future (above) and the runtime stops every process it started.
    drop(runtime);
    let outcome = match outcome {
        None => return fail("interrupted; everything started was stopped".into()),
        Some(Err(error)) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            return fail(message);
        }
        Some(Ok(outcome)) => outcome,
    };

    let machine = Machine {
        cpus: pin::allowed_cpus()
            .len()
            .max(options.cpus.as_ref().map_or(1, |c| c.others.len() + 1)),
        cpu_model: machine::cpu_model(),
        load_average_before: load_before,
        load_average_after: machine::load_average(),
        client_cpu: options.cpus.as_ref().map(|c| c.client),
        other_cpus: options.cpus.as_ref().map(CpuPlan::others_list),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    };
    match write_outputs(&args, &options, &outcome, &machine) {
        Ok(written) => {
            progress.step(format!(
                "wrote {} in {:.0} s",
                written.join(", "),
                outcome.elapsed_s
            ));
            ExitCode::SUCCESS
        }
        Err(message) => fail(message),
    }
}

/// Everything `results.json` holds.
#[derive(Serialize)]
struct Results<'a> {
    conditions: &'a Conditions,
    machine: &'a Machine,
    rows: &'a [Row],
    goals: &'a [Goal],
    outcome: &'a Outcome,
}

fn write_outputs(
    args: &Args,
    options: &harness::Options,
    outcome: &Outcome,
    machine: &Machine,
) -> Result<Vec<String>, String> {
    let rows = report::rows(&outcome.records);
    let goals = report::goals(&rows);
    let t = &outcome.timing;
    let conditions = Conditions {
        command: {
            let mut command = if args.smoke {
                "scripts/compare --smoke".to_owned()
            } else {
                format!("scripts/compare --rounds {}", options.rounds)
            };
            if options.scenarios.len() < Scenario::ALL.len() {
                let names: Vec<&str> = options.scenarios.iter().map(|s| s.name()).collect();
                command.push_str(&format!(" --scenarios {}", names.join(",")));
            }
            command
        },
        rounds: options.rounds,
        concurrency: options.concurrency,
        machine: format!(
            "{} CPUs ({}), load average {} before and {} after, {} build",
            machine.cpus,
            machine.cpu_model,
            machine.load_average_before,
            machine.load_average_after,
            machine.build
        ),
        pinning: match (&machine.client_cpu, &machine.other_cpus) {
            (Some(client), Some(others)) => format!(
                "client process on CPU {client}; demo servers, HAProxy and moto on CPU {others}; \
                 CPU-starved: 3 busy threads on CPU {client}"
            ),
            _ => format!("none: {UNPINNED}"),
        },
        timing: format!(
            "{:.1} s warm-up, then {:.1} s measured; slow zone {:.1} s before, {:.1} s slow, {:.1} s after; \
             kill {:.1} s in, deregistered {:.1} s later, replaced after the segment",
            t.warmup.as_secs_f64(),
            t.measure.as_secs_f64(),
            t.before_slow.as_secs_f64(),
            t.slow.as_secs_f64(),
            t.after_slow.as_secs_f64(),
            t.kill_at.as_secs_f64(),
            t.deregister_after.as_secs_f64()
        ),
        network: format!(
            "emulated by the demo servers: {} µs in zone, {} µs across zones, +{} µs per proxy hop",
            demo_server::NetworkEmulation::AWS.in_zone.as_micros(),
            demo_server::NetworkEmulation::AWS.cross_zone.as_micros(),
            demo_server::NetworkEmulation::AWS.in_zone.as_micros()
        ),
        haproxy: outcome.haproxy_version.clone().unwrap_or_else(|| {
            format!(
                "skipped: {}",
                outcome
                    .haproxy_skipped
                    .as_deref()
                    .unwrap_or("not available")
            )
        }),
        elapsed_s: outcome.elapsed_s,
    };
    let markdown = report::markdown(&rows, &goals, &conditions);
    let title = if args.smoke {
        "cloudmap-balancer vs alternatives (smoke run: seconds per segment, not a benchmark)"
    } else {
        "cloudmap-balancer vs alternatives: same fleet, same calls, one run"
    };
    let subtitle = format!(
        "{} round(s), medians · 6 demo servers in 3 zones, client in {} · emulated round trips {} µs in zone, {} µs across · {} build, {} CPUs",
        options.rounds,
        demo::fleet::CLIENT_ZONE,
        demo_server::NetworkEmulation::AWS.in_zone.as_micros(),
        demo_server::NetworkEmulation::AWS.cross_zone.as_micros(),
        machine.build,
        machine.cpus
    );
    let chart = svg::chart(&rows, title, &subtitle);
    let json = serde_json::to_string_pretty(&Results {
        conditions: &conditions,
        machine,
        rows: &rows,
        goals: &goals,
        outcome,
    })
    .map_err(|e| format!("encoding results.json: {e}"))?;
    let mut written = Vec::new();
    for (name, text) in [
        ("results.md", markdown.as_str()),
        ("results.json", json.as_str()),
        ("compare.svg", chart.as_str()),
    ] {
        let path = args.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    let _ = writeln!(std::io::stdout(), "{markdown}");
    Ok(written)
}

/// `compare --grpcio`: the grpcio columns beside (a), written to `grpcio.md` and `grpcio.json`.
fn grpcio_main(args: &Args, options: &harness::Options, progress: &Progress) -> ExitCode {
    let fail = |message: String| {
        progress.step(format!("FAILED: {message}"));
        ExitCode::from(2)
    };
    let xds = match demo::fleet::xds_server_binary(|step| progress.step(step)) {
        Ok(path) => path,
        Err(message) => return fail(message),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("starting the runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = grpcio::run(options, progress, &xds) => Some(outcome),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    drop(runtime);
    let outcome = match outcome {
        None => return fail("interrupted; everything started was stopped".into()),
        Some(Err(error)) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            return fail(message);
        }
        Some(Ok(outcome)) => outcome,
    };
    let command = format!(
        "scripts/compare --grpcio --rounds {}{}",
        options.rounds,
        if args.smoke { " --smoke" } else { "" }
    );
    let markdown = grpcio::markdown(&outcome, &command);
    let json = match serde_json::to_string_pretty(&outcome) {
        Ok(json) => json,
        Err(e) => return fail(format!("encoding grpcio.json: {e}")),
    };
    for (name, text) in [("grpcio.md", markdown.as_str()), ("grpcio.json", &json)] {
        let path = args.out.join(name);
        if let Err(e) = std::fs::write(&path, text) {
            return fail(format!("writing {}: {e}", path.display()));
        }
    }
    let _ = writeln!(std::io::stdout(), "{markdown}");
    progress.step(format!(
        "wrote grpcio.md and grpcio.json to {} in {:.0} s",
        args.out.display(),
        outcome.elapsed_s
    ));
    ExitCode::SUCCESS
}

/// `compare client SPEC`: one segment's client (see [`client`]).
fn client_main(spec: &str) -> ExitCode {
    let spec: client::ClientSpec = match serde_json::from_str(spec) {
        Ok(spec) => spec,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "compare client: bad spec: {e}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "compare client: starting the runtime: {e}"
            );
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(client::run(&spec)) {
        Ok(result) => {
            let line = serde_json::to_string(&result).unwrap_or_default();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            let _ = writeln!(std::io::stderr(), "compare client: {message}");
            ExitCode::from(2)
        }
    }
}
