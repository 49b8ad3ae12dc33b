//! `cloudmap-xds`: serve ADS for Cloud Map services, or write a gRPC bootstrap.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloudmap_balancer::discovery::{CloudMapSource, Discovery, DiscoveryOptions};
use cloudmap_xds::config::{self, BootstrapConfig, Command, ServeConfig};
use cloudmap_xds::resources::{AssignmentConfig, ClusterPolicy, OutlierPolicy};
use cloudmap_xds::server::StreamConfig;
use cloudmap_xds::services::Services;
use cloudmap_xds::{Error, XdsServer, naming::Names};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

fn main() -> ExitCode {
    // tonic's TLS server uses ring; the AWS SDK's HTTPS client brings aws-lc-rs. With two
    // providers linked rustls has no default and tonic's server would panic: choose ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: HashMap<String, String> = std::env::vars().collect();
    let command = match config::parse(&args, &env) {
        Ok(command) => command,
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "cloudmap-xds: {error}\n\n{}",
                config::USAGE
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match command {
        Command::Help => {
            let _ = writeln!(std::io::stdout(), "{}", config::USAGE);
            Ok(())
        }
        Command::Serve(config) => runtime.block_on(serve(config)),
        Command::Bootstrap(config) => runtime.block_on(write_bootstrap(config)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            tracing::error!(error = %message, "cloudmap-xds failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServeConfig) -> Result<(), Error> {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let region = config
        .region
        .clone()
        .or_else(|| aws.region().map(ToString::to_string))
        .unwrap_or_default();
    let mut options = DiscoveryOptions::default();
    options.poll_interval = config.poll_interval;
    let owner = config.owner.clone();
    let start: cloudmap_xds::services::StartDiscovery = Arc::new(move |name| {
        Discovery::start(
            CloudMapSource::new(&aws, name.namespace.clone(), name.service.clone())
                .with_owner(owner.clone())?,
            name.namespace.clone(),
            name.service.clone(),
            options.clone(),
        )
    });
    let assignment = AssignmentConfig {
        region,
        ip_family: config.ip_family,
        ..AssignmentConfig::default()
    };
    let server = XdsServer::new(
        Services::new(
            start,
            assignment,
            config.health_check.clone(),
            config.linger,
        ),
        StreamConfig {
            names: Names::new(config.aliases.clone()),
            cluster: ClusterPolicy {
                outlier: config.outlier_detection.then(OutlierPolicy::default),
                ..ClusterPolicy::default()
            },
            max_subscriptions: config.max_subscriptions,
        },
    );
    let counters = server.counters();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    // Tests and scripts read the bound address (the port may be 0) from this line.
    let _ = writeln!(std::io::stdout(), "listening {local}");
    let _ = std::io::stdout().flush();
    tracing::info!(%local, "serving ADS");
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let grace = config.shutdown_grace;
    let mut until_stopped = stopped.clone();
    let mut until_grace = stopped;
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &config.tls {
        let read = |path: &std::path::PathBuf| {
            std::fs::read(path).map_err(|source| Error::Tls {
                reason: format!("{}: {source}", path.display()),
            })
        };
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|source| Error::Tls {
                reason: source.to_string(),
            })?;
        tracing::info!(cert = %cert.display(), "ADS over TLS");
    }
    let served = builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(server.into_service())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = until_stopped.wait_for(|&stop| stop).await;
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            tracing::info!(grace = ?grace, "shutting down: open streams end now, clients reconnect to another replica");
        });
    // Streams are long-lived: past the grace period the process exits with them open.
    let outcome = tokio::select! {
        outcome = served => outcome.map_err(Error::Serve),
        () = async {
            let _ = until_grace.wait_for(|&stop| stop).await;
            tokio::time::sleep(grace).await;
        } => Ok(()),
    };
    let summary = serde_json::json!({
        "streams": counters.streams.load(Ordering::Relaxed),
        "pushes": counters.pushes.load(Ordering::Relaxed),
        "acks": counters.acks.load(Ordering::Relaxed),
        "nacks": counters.nacks.load(Ordering::Relaxed),
        "refused": counters.refused.load(Ordering::Relaxed),
    });
    let _ = writeln!(std::io::stdout(), "summary {summary}");
    outcome
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

async fn write_bootstrap(config: BootstrapConfig) -> Result<(), Error> {
    let zone = match &config.zone {
        Some(zone) => Some(zone.clone()),
        None => detect_zone().await,
    };
    let node_id = config
        .node_id
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "cloudmap-xds-client".to_owned());
    let region = config
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok());
    let value = cloudmap_xds::bootstrap::bootstrap(
        &config.server_uri,
        &node_id,
        region.as_deref(),
        zone.as_deref(),
    );
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    match &config.output {
        Some(path) => {
            std::fs::write(path, text + "\n").map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
            tracing::info!(%path, zone = ?zone, "bootstrap written");
        }
        None => {
            let _ = writeln!(std::io::stdout(), "{text}");
        }
    }
    Ok(())
}

/// The task's zone, as the crate finds its own: ECS task metadata, then IMDSv2. The AZ ID when
/// known (the same in every account), else the name; `None` when neither answers.
async fn detect_zone() -> Option<String> {
    use cloudmap_balancer::zone;
    let timeout = Duration::from_secs(2);
    // Task metadata has the zone's name only.
    let named = match std::env::var(zone::METADATA_URI_VAR) {
        Ok(uri) => zone::from_task_metadata(&uri, timeout).await.ok().flatten(),
        Err(_) => None,
    };
    let found = match named {
        Some(name) => Some(zone::Zone::named(name)),
        None if std::env::var(zone::IMDS_DISABLED_VAR)
            .is_ok_and(|v| v.eq_ignore_ascii_case("true")) =>
        {
            None
        }
        None => {
            let endpoint = std::env::var(zone::IMDS_ENDPOINT_VAR)
                .unwrap_or_else(|_| zone::IMDS_ENDPOINT.to_owned());
            zone::from_imds(&endpoint, timeout).await.ok()
        }
    };
    match found {
        Some(found) => found.id.or(found.name),
        None => {
            tracing::warn!(
                "no zone found (no ECS task metadata, no instance metadata): the client gets the zone-agnostic answer"
            );
            None
        }
    }
}
