//! `local-demo`: the whole system on one machine, with no AWS account.
//!
//! moto serves Cloud Map and ECS on loopback; six real demo-server processes play ECS tasks in
//! three zones; the real sync Lambda runs under cargo-lambda's emulator and gets the ECS events
//! those tasks would produce; a client in one zone calls through the balancer, and gRPC's Python
//! client (grpcio) in the same zone calls through the xDS control plane (`cloudmap-xds`). It
//! prints the Cloud Map attributes, where the calls went against where they should have gone, and
//! what happened when a task was slowed and when one was stopped. `--json` prints the same as
//! JSON.
//!
//! ```text
//! local-demo [--json] [--calls N] [--concurrency N] [--debug-lambda]
//! ```
//!
//! Exit status: 0 when every check passed, 1 when a check failed, 2 when the run could not
//! complete, 64 for a bad command line.

mod error;
mod events;
mod lambda;
mod load;
mod report;
mod scenario;
mod stack;
mod tasks;
mod xds;

use std::io::Write;
use std::process::ExitCode;

use demo::progress::Progress;

const USAGE: &str = "usage: local-demo [--json] [--calls N] [--concurrency N] [--debug-lambda]";

struct Args {
    json: bool,
    calls: u64,
    concurrency: u64,
    release_lambda: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        json: false,
        calls: 6000,
        concurrency: 8,
        release_lambda: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name} takes a positive number"))
        };
        match arg.as_str() {
            "--json" => args.json = true,
            "--calls" => args.calls = number("--calls")?,
            "--concurrency" => args.concurrency = number("--concurrency")?,
            "--debug-lambda" => args.release_lambda = false,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
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
    let demo_server = match demo::fleet::demo_server_binary(|step| progress.step(step)) {
        Ok(path) => path,
        Err(message) => return fail(message),
    };
    let xds_server = match demo::fleet::xds_server_binary(|step| progress.step(step)) {
        Ok(path) => path,
        Err(message) => return fail(message),
    };
    let work_dir = local_stack::workspace_root().join(".local/local-demo");
    let _ = std::fs::remove_dir_all(&work_dir);
    if let Err(e) = std::fs::create_dir_all(&work_dir) {
        return fail(format!("creating {}: {e}", work_dir.display()));
    }
    let work_dir = work_dir.canonicalize().unwrap_or(work_dir);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("starting the runtime: {e}")),
    };
    let options = scenario::Options {
        calls: args.calls,
        concurrency: args.concurrency,
        release_lambda: args.release_lambda,
        work_dir,
        demo_server,
        xds_server,
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = scenario::run(&options, &progress) => Some(outcome),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Dropping the scenario's future (above) and the runtime stops every process it started.
    drop(runtime);

    match outcome {
        None => fail("interrupted; everything started was stopped".into()),
        Some(Err(error)) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            fail(message)
        }
        Some(Ok(report)) => {
            let text = if args.json {
                serde_json::to_string_pretty(&report).unwrap_or_default()
            } else {
                report.render()
            };
            let _ = writeln!(std::io::stdout(), "{text}");
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
