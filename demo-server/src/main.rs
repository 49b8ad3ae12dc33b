//! The `demo-server` binary: reads the environment, resolves the task's identity, serves until
//! SIGTERM/SIGINT and drains; `demo-server healthcheck` is the ECS container health check.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use demo_server::{Config, DemoServer, Error, Identity, Stopped};
use tokio::signal::unix::{Signal, SignalKind, signal};

const USAGE: &str = "\
usage: demo-server                 serve (configured by DEMO_* variables; see the README)
       demo-server healthcheck [--addr HOST:PORT] [--service NAME]
                                   exit 0 when the server answers SERVING, else 1";

/// Exit code when the drain cut calls that were still in flight.
const EXIT_CUT: u8 = 2;
/// Exit code for a command line that cannot be understood.
const EXIT_USAGE: u8 = 64;
/// How long the health check may take: under ECS's default health check timeout of 5 s.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = Config::from_env();
    let log_filter = config
        .as_ref()
        .map_or("info", |config| config.log_filter.as_str());
    init_tracing(log_filter);
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(error = %chain(&error), "cannot start");
            return ExitCode::FAILURE;
        }
    };

    match args.as_slice() {
        [] => serve(&config),
        ["healthcheck", options @ ..] => healthcheck(&config, options),
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            println!("{USAGE}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries the one `listening ADDR` line that tools wait for.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn serve(config: &Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(Stopped::Drained | Stopped::Cut { in_flight: 0 }) => ExitCode::SUCCESS,
        Ok(Stopped::Cut { .. }) => ExitCode::from(EXIT_CUT),
        Err(error) => {
            tracing::error!(error = %chain(&error), "demo-server failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &Config) -> Result<Stopped, Error> {
    // Signal handlers go in before the server is announced: a SIGTERM right after the
    // `listening` line must drain, not kill.
    let terminate = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let interrupt = signal(SignalKind::interrupt()).map_err(Error::Signal)?;

    let identity = Identity::resolve(config.metadata_uri.as_deref(), &config.identity).await?;
    let server = DemoServer::bind(config.listen, identity, config.serve).await?;
    println!("listening {}", server.local_addr());

    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        let mut signals = Signals {
            terminate,
            interrupt,
        };
        let name = signals.next().await;
        tracing::info!(signal = name, "shutting down");
        stop.shutdown();
        let name = signals.next().await;
        tracing::warn!(signal = name, "second signal: stopping now");
        stop.abort();
    });
    server.wait().await
}

/// SIGTERM (ECS stopping the task) and SIGINT (Ctrl-C in a local run).
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

fn healthcheck(config: &Config, mut options: &[&str]) -> ExitCode {
    let mut addr = config.local_health_addr();
    let mut service = "";
    loop {
        match options {
            [] => break,
            ["--addr", value, rest @ ..] => {
                match value.parse::<SocketAddr>() {
                    Ok(value) => addr = value,
                    Err(_) => {
                        println!("healthcheck: --addr {value:?} is not HOST:PORT\n{USAGE}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                }
                options = rest;
            }
            ["--service", value, rest @ ..] => {
                service = value;
                options = rest;
            }
            _ => {
                println!("{USAGE}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("healthcheck: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo_server::check_health(
        addr,
        service,
        HEALTHCHECK_TIMEOUT,
    )) {
        Ok(()) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("{}", chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources on one line, for logs and the health check's output.
fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
