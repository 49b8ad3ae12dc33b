//! The sync Lambda's entry point: logs, configuration and AWS clients once, then the runtime loop.

use std::time::Instant;

use cloudmap_sync::aws::AwsClients;
use cloudmap_sync::{Config, Handler, SystemClock, observe};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    let config = Config::from_env();
    let level = config.as_ref().map_or("info", |c| c.log_level.as_str());
    observe::init_json_logs(level);
    let config = config.inspect_err(|error| {
        tracing::error!(error = %error, "invalid configuration");
    })?;

    let sdk = aws_config::load_from_env().await;
    let aws = AwsClients::new(&sdk, &config);
    let handler = Handler::new(
        config,
        aws.cloudmap,
        aws.ecs,
        aws.cloudwatch,
        SystemClock,
        aws.ec2,
    );
    tracing::info!(
        init_ms = started.elapsed().as_secs_f64() * 1000.0,
        "initialised"
    );

    let handler = &handler;
    // Boxed: the handler's future is deep (SDK calls inside reconciliation), and the runtime's
    // own future nests it again.
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        Box::pin(handler.invoke(event.payload, std::io::stdout()))
    }))
    .await
}
