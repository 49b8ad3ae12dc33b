//! `xds-load`: N concurrent ADS streams against the real `cloudmap-xds serve` binary over moto,
//! then one Cloud Map change, timed to every stream (issue 18, BENCHMARKS.md "xDS server:
//! streams, memory, push fan-out").
//!
//! For each N it starts a fresh server (release build, 1 s polls, the endpoint health watch
//! off: the instances' addresses are not dialable), opens N streams spread over a fixed number of
//! HTTP/2 connections and four client zones (three zones and none), each walking the
//! Listener → Cluster → ClusterLoadAssignment chain and ACKing every response as gRPC does. At
//! rest it reads the server's RSS and CPU time from `/proc`. Then it re-registers one instance
//! with a new `LB_WEIGHT` and records when each stream receives an assignment carrying it.
//! Prints one Markdown row per N.
//!
//! ```text
//! scripts/xds-load                     # N = 1,000 and 10,000
//! scripts/xds-load --streams 2000      # or: cargo bench -p cloudmap-xds --bench xds-load -- --help
//! ```
//!
//! The script builds the server as it ships (release profile) and runs this generator against
//! that binary (`--server`, default `target/release/cloudmap-xds`).
//!
//! Everything is bounded: each phase has a deadline, and the run stops with an error when one
//! passes. Loopback only.

use std::collections::HashMap;
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::value;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use cloudmap_xds::resources::METADATA_NAMESPACE;
use cloudmap_xds::server::{CLUSTER, ENDPOINTS, LISTENER};

type BoxError = Box<dyn Error + Send + Sync>;

/// Client zones, round robin over the streams; `""` is a client whose bootstrap names none.
const CLIENT_ZONES: [&str; 4] = ["eu-central-1a", "eu-central-1b", "eu-central-1c", ""];
/// The instance whose weight changes.
const CHANGED: &str = "task-00";
const WEIGHT: u32 = 100;
const NEW_WEIGHT: u32 = 150;

/// Deadlines for each phase (a bound on the run, not a measurement).
const OPEN_DEADLINE: Duration = Duration::from_secs(180);
const SETTLE_QUIET: Duration = Duration::from_secs(3);
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
const REST: Duration = Duration::from_secs(10);
const CHANGE_DEADLINE: Duration = Duration::from_secs(60);

struct Options {
    streams: Vec<usize>,
    connections: usize,
    instances: usize,
    server: PathBuf,
}

impl Options {
    fn parse() -> Result<Self, BoxError> {
        let mut options = Self {
            streams: vec![1_000, 10_000],
            connections: 100,
            instances: 20,
            server: local_stack::workspace_root().join("target/release/cloudmap-xds"),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                // `cargo bench` passes this to every bench.
                "--bench" => {}
                "--streams" => {
                    options.streams = value()?
                        .split(',')
                        .map(|n| n.trim().replace('_', "").parse())
                        .collect::<Result<_, _>>()?;
                }
                "--connections" => options.connections = value()?.parse()?,
                "--instances" => options.instances = value()?.parse()?,
                "--server" => options.server = value()?.into(),
                "--help" | "-h" => {
                    return Err(
                        "usage: xds-load [--streams 1000,10000] [--connections 100] \
                                [--instances 20] [--server target/release/cloudmap-xds]"
                            .into(),
                    );
                }
                other => return Err(format!("unknown argument {other:?} (try --help)").into()),
            }
        }
        if options.connections == 0 || options.instances == 0 || options.streams.contains(&0) {
            return Err("--streams, --connections and --instances must be at least 1".into());
        }
        if !options.server.is_file() {
            return Err(format!(
                "{} is missing: build it with `cargo build --release --locked -p cloudmap-xds` \
                 (or pass --server)",
                options.server.display()
            )
            .into());
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    let outcome = Options::parse().and_then(|options| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(&options))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "xds-load: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: &Options) -> Result<(), BoxError> {
    let fds = Command::new("sh").args(["-c", "ulimit -n"]).output()?;
    let ticks: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
        .trim()
        .parse()?;
    let moto = local_stack::MotoServer::start()?;
    let cloudmap = moto.servicediscovery();
    let mut rows = Vec::new();
    for &n in &options.streams {
        let namespace = local_stack::cloudmap::create_http_namespace(
            &cloudmap,
            &local_stack::unique_name("xdsload"),
        )
        .await?;
        let service =
            local_stack::cloudmap::create_service(&cloudmap, &namespace, "echo", false).await?;
        for i in 0..options.instances {
            register(&cloudmap, &service.id, i, WEIGHT).await?;
        }
        let resource = format!("echo.{}", namespace.name);
        progress(&format!(
            "N = {n}: {} instances, {} connections, open files limit {}",
            options.instances,
            options.connections.min(n),
            String::from_utf8_lossy(&fds.stdout).trim()
        ));
        let row = measure(options, n, &moto, &cloudmap, &service.id, &resource, ticks).await?;
        progress(&row);
        rows.push(row);
    }
    moto.stop();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| streams | connections | server RSS before → with streams (peak) | per stream | CPU at rest | open + first answers | write → stream p50 / p99 / max | first stream → stream p50 / p99 / max | CPU from the write to the last stream: server / generator | pushes, ACKs, NACKs |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|")?;
    for row in rows {
        writeln!(out, "{row}")?;
    }
    Ok(())
}

/// Registers instance `i` (`127.0.0.1:20000+i`, zones round robin) with `weight`, resending
/// every attribute as `RegisterInstance` replaces them all.
async fn register(
    cloudmap: &aws_sdk_servicediscovery::Client,
    service_id: &str,
    i: usize,
    weight: u32,
) -> Result<(), BoxError> {
    let zone = CLIENT_ZONES[i % 3];
    let attributes = HashMap::from([
        ("AWS_INSTANCE_IPV4".to_owned(), "127.0.0.1".to_owned()),
        ("AWS_INSTANCE_PORT".to_owned(), (20_000 + i).to_string()),
        ("AVAILABILITY_ZONE".to_owned(), zone.to_owned()),
        ("LB_STATE".to_owned(), "RUNNING".to_owned()),
        ("LB_WEIGHT".to_owned(), weight.to_string()),
    ]);
    cloudmap
        .register_instance()
        .service_id(service_id)
        .instance_id(format!("task-{i:02}"))
        .set_attributes(Some(attributes))
        .send()
        .await?;
    Ok(())
}

/// What a stream saw: one per response.
struct Event {
    stream: usize,
    at: Instant,
    type_url: &'static str,
    version: String,
    /// The changed instance's `LB_WEIGHT` in an assignment.
    changed_weight: Option<String>,
}

/// The server's `/proc` figures.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    peak_kib: u64,
    cpu_ticks: u64,
}

fn usage(pid: u32) -> Result<Usage, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<u64, BoxError> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or("an empty line")?
            .parse()?)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').ok_or("no ')' in stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).ok_or("short stat")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("short stat")?.parse()?;
    Ok(Usage {
        rss_kib: kib("VmRSS:")?,
        peak_kib: kib("VmHWM:")?,
        cpu_ticks: utime + stime,
    })
}

/// The `cloudmap-xds serve` process, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    stdout: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(binary: &PathBuf, moto: &str) -> Result<Self, BoxError> {
        let mut child = Command::new(binary)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", moto)
            .env("AWS_REGION", local_stack::REGION)
            .env("AWS_ACCESS_KEY_ID", "local-stack")
            .env("AWS_SECRET_ACCESS_KEY", "local-stack")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("CLOUDMAP_XDS_LISTEN", "127.0.0.1:0")
            .env("CLOUDMAP_XDS_POLL_INTERVAL", "1s")
            .env("CLOUDMAP_XDS_HEALTH_CHECK", "off")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (tx, stdout) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = stdout.recv_timeout(Duration::from_secs(60))?;
        let addr = first
            .strip_prefix("listening ")
            .ok_or_else(|| format!("the server printed {first:?}"))?
            .parse()?;
        Ok(Self {
            child,
            addr,
            stdout,
        })
    }

    /// SIGTERM, then the summary it prints on the way out.
    fn stop(mut self) -> Result<serde_json::Value, BoxError> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stdout.recv_timeout(left)?;
            if let Some(json) = line.strip_prefix("summary ") {
                let _ = self.child.wait();
                return Ok(serde_json::from_str(json)?);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::too_many_lines)]
async fn measure(
    options: &Options,
    n: usize,
    moto: &local_stack::MotoServer,
    cloudmap: &aws_sdk_servicediscovery::Client,
    service_id: &str,
    resource: &str,
    ticks: f64,
) -> Result<String, BoxError> {
    let server = Server::start(&options.server, moto.endpoint())?;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = usage(pid)?;

    let connections = options.connections.min(n);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            Endpoint::from_shared(format!("http://{}", server.addr))?
                .connect()
                .await?,
        );
    }
    let (events, mut received) = mpsc::unbounded_channel();
    let opened = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(tokio::spawn(stream(
            i,
            channels[i % connections].clone(),
            CLIENT_ZONES[i % CLIENT_ZONES.len()],
            resource.to_owned(),
            events.clone(),
        )));
    }
    drop(events);

    // Every stream has its Listener, Cluster and assignment; then the pushes caused by the
    // callers' spread moving while streams opened die down.
    let mut latest: Vec<Option<String>> = vec![None; n];
    let mut types_seen = vec![0u8; n];
    let mut complete = 0;
    let deadline = opened + OPEN_DEADLINE;
    while complete < n {
        let event = next_event(&mut received, deadline).await?;
        let bit = match event.type_url {
            LISTENER => 1,
            CLUSTER => 2,
            _ => 4,
        };
        if types_seen[event.stream] != 7 {
            types_seen[event.stream] |= bit;
            if types_seen[event.stream] == 7 {
                complete += 1;
            }
        }
        if event.type_url == ENDPOINTS {
            latest[event.stream] = Some(event.version);
        }
    }
    let ramp = opened.elapsed();
    let settle_deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        match tokio::time::timeout(SETTLE_QUIET, received.recv()).await {
            Err(_) => break,
            Ok(None) => return Err("every stream ended".into()),
            Ok(Some(event)) => {
                if event.type_url == ENDPOINTS {
                    latest[event.stream] = Some(event.version);
                }
                if Instant::now() > settle_deadline {
                    return Err("pushes did not settle".into());
                }
            }
        }
    }

    // At rest.
    let rest_start = usage(pid)?;
    tokio::time::sleep(REST).await;
    let rest_end = usage(pid)?;
    #[allow(clippy::cast_precision_loss)]
    let rest_cpu =
        (rest_end.cpu_ticks - rest_start.cpu_ticks) as f64 / ticks / REST.as_secs_f64() * 100.0;
    while let Ok(event) = received.try_recv() {
        if event.type_url == ENDPOINTS {
            latest[event.stream] = Some(event.version);
        }
    }
    let baseline: Vec<String> = latest.into_iter().map(Option::unwrap_or_default).collect();

    // The change: moto has accepted the write when `RegisterInstance` returns.
    register(cloudmap, service_id, 0, NEW_WEIGHT).await?;
    let written = Instant::now();
    let change_cpu_start = usage(pid)?;
    let own_cpu_start = usage(std::process::id())?;
    let mut updated: Vec<Option<Instant>> = vec![None; n];
    let mut count = 0;
    let deadline = written + CHANGE_DEADLINE;
    while count < n {
        let event = next_event(&mut received, deadline).await.map_err(|e| {
            format!("{e}: {count} of {n} streams had the change when the deadline passed")
        })?;
        if event.type_url != ENDPOINTS || updated[event.stream].is_some() {
            continue;
        }
        if event.version != baseline[event.stream]
            && event.changed_weight.as_deref() == Some(&NEW_WEIGHT.to_string())
        {
            updated[event.stream] = Some(event.at);
            count += 1;
        }
    }
    let change_cpu_end = usage(pid)?;
    let own_cpu_end = usage(std::process::id())?;
    let at: Vec<Instant> = updated.into_iter().flatten().collect();
    let first = at.iter().min().copied().ok_or("no stream")?;
    let mut from_write: Vec<Duration> = at.iter().map(|t| t.duration_since(written)).collect();
    let mut from_first: Vec<Duration> = at.iter().map(|t| t.duration_since(first)).collect();
    from_write.sort_unstable();
    from_first.sort_unstable();

    for task in &tasks {
        task.abort();
    }
    drop(channels);
    let summary = server.stop()?;
    let mib = |kib: u64| {
        #[allow(clippy::cast_precision_loss)]
        let m = kib as f64 / 1024.0;
        m
    };
    #[allow(clippy::cast_precision_loss)]
    let per_stream = (rest_end.rss_kib.saturating_sub(before.rss_kib)) as f64 * 1024.0 / n as f64;
    #[allow(clippy::cast_precision_loss)]
    let change_cpu = (change_cpu_end.cpu_ticks - change_cpu_start.cpu_ticks) as f64 / ticks;
    #[allow(clippy::cast_precision_loss)]
    let own_cpu = (own_cpu_end.cpu_ticks - own_cpu_start.cpu_ticks) as f64 / ticks;
    Ok(format!(
        "| {n} | {connections} | {:.1} → {:.1} MiB ({:.1}) | {:.1} KiB | {rest_cpu:.1} % of a core | {:.2} s | {} / {} / {} | {} / {} / {} | {change_cpu:.2} s / {own_cpu:.2} s | {}, {}, {} |",
        mib(before.rss_kib),
        mib(rest_end.rss_kib),
        mib(change_cpu_end.peak_kib),
        per_stream / 1024.0,
        ramp.as_secs_f64(),
        ms(quantile(&from_write, 0.50)),
        ms(quantile(&from_write, 0.99)),
        ms(quantile(&from_write, 1.0)),
        ms(quantile(&from_first, 0.50)),
        ms(quantile(&from_first, 0.99)),
        ms(quantile(&from_first, 1.0)),
        summary["pushes"],
        summary["acks"],
        summary["nacks"],
    ))
}

async fn next_event(
    received: &mut mpsc::UnboundedReceiver<Event>,
    deadline: Instant,
) -> Result<Event, BoxError> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, received.recv()).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err("every stream ended".into()),
        Err(_) => Err("deadline passed".into()),
    }
}

/// Nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "xds-load: {line}");
}

/// One ADS stream as gRPC's xDS clients run it: the node on the first request only, the
/// Listener first, the Cluster once the Listener is in, the assignment once the Cluster is in,
/// and an ACK for every response.
async fn stream(
    i: usize,
    channel: Channel,
    zone: &'static str,
    resource: String,
    events: mpsc::UnboundedSender<Event>,
) {
    let (tx, rx) = mpsc::channel(8);
    let request = |type_url: &str, version: String, nonce: String| DiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names: vec![resource.clone()],
        version_info: version,
        response_nonce: nonce,
        ..DiscoveryRequest::default()
    };
    let first = DiscoveryRequest {
        node: Some(Node {
            id: format!("xds-load-{i}"),
            locality: Some(Locality {
                zone: zone.to_owned(),
                ..Locality::default()
            }),
            ..Node::default()
        }),
        ..request(LISTENER, String::new(), String::new())
    };
    if tx.send(first).await.is_err() {
        return;
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = match client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            progress(&format!("stream {i}: {status}"));
            return;
        }
    };
    let (mut asked_cluster, mut asked_endpoints) = (false, false);
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return,
            Err(status) => {
                progress(&format!("stream {i}: {status}"));
                return;
            }
        };
        let at = Instant::now();
        let type_url = match response.type_url.as_str() {
            LISTENER => LISTENER,
            CLUSTER => CLUSTER,
            _ => ENDPOINTS,
        };
        let changed_weight = (type_url == ENDPOINTS)
            .then(|| changed_weight(&response.resources))
            .flatten();
        let ack = request(
            type_url,
            response.version_info.clone(),
            response.nonce.clone(),
        );
        if tx.send(ack).await.is_err() {
            return;
        }
        if events
            .send(Event {
                stream: i,
                at,
                type_url,
                version: response.version_info,
                changed_weight,
            })
            .is_err()
        {
            return;
        }
        // The next type is subscribed once, after the first response of the one before.
        let next = match type_url {
            LISTENER if !asked_cluster => Some(CLUSTER),
            CLUSTER if !asked_endpoints => Some(ENDPOINTS),
            _ => None,
        };
        if let Some(next) = next {
            asked_cluster = true;
            asked_endpoints |= next == ENDPOINTS;
            if tx
                .send(request(next, String::new(), String::new()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The changed instance's `LB_WEIGHT` in an assignment's endpoint metadata.
fn changed_weight(resources: &[envoy_types::pb::google::protobuf::Any]) -> Option<String> {
    resources.iter().find_map(|any| {
        let assignment = ClusterLoadAssignment::decode(any.value.as_slice()).ok()?;
        assignment.endpoints.iter().find_map(|locality| {
            if locality.locality.as_ref()?.sub_zone != CHANGED {
                return None;
            }
            let metadata = locality.lb_endpoints.first()?.metadata.as_ref()?;
            match metadata
                .filter_metadata
                .get(METADATA_NAMESPACE)?
                .fields
                .get("LB_WEIGHT")?
                .kind
                .as_ref()?
            {
                value::Kind::StringValue(text) => Some(text.clone()),
                _ => None,
            }
        })
    })
}
