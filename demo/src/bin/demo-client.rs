//! `demo-client`: the client task of the SAM template's demo stack.
//!
//! It calls the demo service's `Describe` through the balancer, forever, and every interval
//! prints one JSON line to standard output: its own zone, how many calls went to each zone and
//! task, how many failed, and the share kept in its zone. Its zone comes from the ECS task
//! metadata endpoint; credentials, region and endpoint from the AWS SDK's usual sources.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CLOUDMAP_NAMESPACE` | required | Cloud Map namespace of the demo service |
//! | `CLOUDMAP_SERVICE` | required | Cloud Map service name |
//! | `DEMO_CLIENT_CONCURRENCY` | `4` | callers at a time |
//! | `DEMO_CLIENT_PAUSE_MS` | `50` | pause of each caller between calls |
//! | `DEMO_CLIENT_REPORT_SECS` | `10` | interval of the JSON lines |

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use cloudmap_balancer::Balancer;
use demo::traffic::{Client, Traffic};
use demo_server::pb::demo_client::DemoClient;
use serde_json::json;

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn number(name: &str, default: u64) -> Result<u64, String> {
    var(name).map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| format!("{name}={v:?} is not a number"))
    })
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "demo-client: {message}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let (Some(namespace), Some(service)) = (var("CLOUDMAP_NAMESPACE"), var("CLOUDMAP_SERVICE"))
    else {
        return fail("set CLOUDMAP_NAMESPACE and CLOUDMAP_SERVICE");
    };
    let settings = (|| {
        Ok::<_, String>((
            number("DEMO_CLIENT_CONCURRENCY", 4)?.max(1),
            Duration::from_millis(number("DEMO_CLIENT_PAUSE_MS", 50)?),
            Duration::from_secs(number("DEMO_CLIENT_REPORT_SECS", 10)?.max(1)),
        ))
    })();
    let (concurrency, pause, interval) = match settings {
        Ok(settings) => settings,
        Err(message) => return fail(&message),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("starting the runtime: {e}")),
    };
    runtime.block_on(async move {
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let balancer = match Balancer::builder(&aws, &namespace, &service).build() {
            Ok(balancer) => balancer,
            Err(e) => return fail(&format!("building the balancer: {e}")),
        };
        let client: Client = DemoClient::new(balancer.channel());
        let traffic = Traffic::start(&client, concurrency, pause);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::signal::ctrl_c() => break,
            }
            let tally = traffic.take();
            let zone = balancer.local_zone();
            let line = json!({
                "zone": zone,
                "calls": tally.succeeded(),
                "failed": tally.failed_calls(),
                "local_share": zone.as_deref().map(|z| tally.zone_share(z)),
                "per_zone": tally.per_zone(),
                "per_task": tally.tasks.iter().map(|(id, t)| (id.clone(), t.calls)).collect::<std::collections::BTreeMap<_, _>>(),
                "failures": tally.failures,
            });
            let _ = writeln!(std::io::stdout(), "{line}");
        }
        let _ = traffic.stop().await;
        ExitCode::SUCCESS
    })
}
