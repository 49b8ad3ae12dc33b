//! The run: set up, start the tasks and the Lambda, then three phases of calls.
//!
//! 1. **In zone.** The client, in eu-central-1c, makes N calls. Its zone has capacity, so every
//!    call should stay there, spread over the zone's three tasks by weight (CPU 256/512/1024 →
//!    LB_WEIGHT 100/200/400) adjusted by load (LB_LOAD 10/10/70 from Container Insights, through
//!    the Lambda's scheduled reconciliation: factor 1 − 0.75 × load/100).
//! 2. **Local zone slow, then recovered.** The zone's tasks answer 40 ms slower: the client
//!    should spill to the other zones, down to the local zone's capacity share and in proportion
//!    to the other zones' capacity, then come back once the tasks are fast again.
//! 3. **A task stops the way ECS stops it.** While calls continue: the DRAINING event (desired
//!    STOPPED, still running), SIGTERM, the process drains and exits, STOPPED event, the instance
//!    is deregistered. No call may fail, and the task must stop getting calls soon after DRAINING.
//!
//! Beside the Rust client, gRPC's Python client (grpcio) calls the same fleet through the xDS
//! control plane (`cloudmap-xds`), from the same zone ([`crate::xds`]): after the Rust client in
//! phase 1, and at the same time as it in phase 3, where the server's own health watch must
//! push DRAINING before Cloud Map says it. It sits out phase 2: grpcio has no latency-driven
//! spill, so it would keep its calls in the slow zone (said in the report).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use cloudmap_balancer::contract::{InstanceAttributes, LbState};
use cloudmap_balancer::{Balancer, Options as BalancerOptions};
use demo::fleet::{CLIENT_ZONE, LAYOUT};
use demo::progress::Progress;
use demo::traffic::{self, Client, Tally, Traffic};
use demo_server::pb::SetLoadRequest;
use demo_server::pb::control_client::ControlClient;
use demo_server::pb::demo_client::DemoClient;

use crate::error::DemoError;
use crate::events::{Change, scheduled, task_state_change};
use crate::lambda::Emulator;
use crate::load;
use crate::report::{
    Check, DrainReport, EventReport, GrpcioDrainReport, InstanceReport, Phase, Report, SpillReport,
    TaskRow, XdsReport, ZoneRow,
};
use crate::stack::{CLUSTER, NAMESPACE, SERVICE, Stack};
use crate::tasks::{self, DRAIN_DELAY, DemoTask, SHUTDOWN_GRACE};
use crate::xds::XdsSide;

/// How long after SIGTERM the DRAINING event is sent to the Lambda in phase 3: two of the demo's
/// Cloud Map polls, so that the client cannot have learnt of the drain from Cloud Map before.
const DRAINING_EVENT_DELAY: Duration = Duration::from_secs(2);
/// The bound phase 3 holds the health watch to (issue 9): no new calls 100 ms after
/// NOT_SERVING. The last call is counted when it was answered, so the bound includes the call.
const DRAIN_WATCH_BOUND: Duration = Duration::from_millis(100);

/// The bound phase 3 holds grpcio to: no new calls 1 s after NOT_SERVING (the xDS server's
/// watch sees it and pushes DRAINING; issue 18 asks for the push within 1 s).
const XDS_DRAIN_BOUND: Duration = Duration::from_secs(1);
/// grpcio's workers: phase 1 calls back to back; phase 3 paces its calls, so that the Python
/// process takes little CPU from the Rust client's phase on a busy machine.
const GRPCIO_CONCURRENCY: u64 = 4;
const GRPCIO_DRAIN_CONCURRENCY: u64 = 2;
const GRPCIO_DRAIN_PAUSE: Duration = Duration::from_millis(5);

/// Latency added to the client's zone in phase 2.
const SLOW: Duration = Duration::from_millis(40);
/// How often the spill is sampled in phase 2.
const WINDOW: Duration = Duration::from_millis(500);
/// Windows in a row that make the settled share in phase 2.
const SETTLED_WINDOWS: u32 = 6;

/// What the run is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Calls in the in-zone phase.
    pub(crate) calls: u64,
    /// Callers at a time.
    pub(crate) concurrency: u64,
    /// Run the Lambda's release build under the emulator.
    pub(crate) release_lambda: bool,
    /// Where logs and event files go.
    pub(crate) work_dir: PathBuf,
    /// The demo-server binary.
    pub(crate) demo_server: PathBuf,
    /// The xDS control plane's binary (`cloudmap-xds`).
    pub(crate) xds_server: PathBuf,
}

/// Runs the whole scenario. Everything started is stopped when the returned future completes or
/// is dropped (processes are killed on drop).
pub(crate) async fn run(options: &Options, progress: &Progress) -> Result<Report, DemoError> {
    let started = Instant::now();
    progress.step("starting the local AWS stack (moto) and creating the Cloud Map service and the ECS cluster and service");
    let sizes: Vec<u32> = LAYOUT.iter().map(|(_, cpu, _)| *cpu).collect();
    let stack = Stack::create(&sizes).await?;

    progress.step(format!(
        "starting {} demo-server tasks in 3 zones",
        LAYOUT.len()
    ));
    let mut running = Vec::new();
    for (zone, cpu, _) in LAYOUT {
        let spec = tasks::run_task(&stack, zone, cpu).await?;
        let task = tasks::start(&options.demo_server, spec, &options.work_dir).await?;
        tasks::register_as_ecs(&stack, &task).await?;
        progress.step(format!(
            "  task {} in {zone}, {cpu} CPU units, listening on {}, registered in Cloud Map",
            short(&task.spec.task_id),
            task.addr
        ));
        running.push(task);
    }

    progress.step(format!(
        "starting the sync Lambda under cargo lambda watch ({} build; the first start compiles it)",
        if options.release_lambda {
            "release"
        } else {
            "debug"
        }
    ));
    let env = [
        ("AWS_ENDPOINT_URL", stack.moto.endpoint().to_owned()),
        ("AWS_REGION", crate::stack::REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "local-demo".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "local-demo".to_owned()),
        ("SYNC_CLUSTERS", CLUSTER.to_owned()),
        ("SYNC_LOAD_ENABLED", "true".to_owned()),
        ("SYNC_LOG_LEVEL", "info".to_owned()),
    ];
    let mut lambda = Emulator::start(&env, options.release_lambda, &options.work_dir).await?;

    progress
        .step("sending each task's ECS Task State Change events (PENDING, RUNNING) to the Lambda");
    let mut events = Vec::new();
    for (i, task) in running.iter().enumerate() {
        // The first task's events arrive out of order and twice, as EventBridge may deliver them.
        let sequence: &[Change] = if i == 0 {
            &[Change::RUNNING, Change::PENDING, Change::RUNNING]
        } else {
            &[Change::PENDING, Change::RUNNING]
        };
        for &change in sequence {
            events.push(send(&mut lambda, task, change, progress).await?);
        }
    }

    // Read back before the scheduled reconciliation, which would repair a wrong state by itself:
    // what the checks below see is what the events alone wrote.
    let after_events = read_instances(&stack).await?;
    let ordered = after_events
        .iter()
        .filter(|i| {
            i.state.as_deref() == Some("RUNNING")
                && i.attributes.get("LB_TASK_VERSION").map(String::as_str)
                    == Some(Change::RUNNING.version.to_string().as_str())
        })
        .count();
    // The weights the contract's formula gives each task's size (round(cpu × 100 / 256)), from
    // the layout the tasks were started with, not from what the Lambda wrote.
    let weights_right = running
        .iter()
        .zip(LAYOUT)
        .filter(|(task, (_, cpu, _))| {
            after_events
                .iter()
                .any(|i| i.id == task.spec.task_id && i.weight == (cpu * 100 + 128) / 256)
        })
        .count();

    progress.step(
        "reporting each task's CPU to CloudWatch (Container Insights) and running the scheduled reconciliation",
    );
    for (task, (_, _, percent)) in running.iter().zip(LAYOUT) {
        load::report_cpu(&stack, &task.spec, percent).await?;
    }
    let answer = lambda
        .invoke("scheduled reconciliation", &scheduled(SystemTime::now()))
        .await?;
    let outcome = summarise(&answer);
    progress.step(format!("  scheduled reconciliation: {outcome}"));
    events.push(EventReport {
        task_id: String::new(),
        event: "Scheduled Event".to_owned(),
        outcome,
    });

    let instances = read_instances(&stack).await?;
    for instance in &instances {
        progress.step(format!(
            "  Cloud Map {}: {}",
            short(&instance.id),
            instance
                .attributes
                .iter()
                .filter(|(k, _)| k.starts_with("LB_") || k.starts_with("AVAILABILITY_ZONE"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let loads_written = instances
        .iter()
        .filter(|i| {
            let reported = running
                .iter()
                .zip(LAYOUT)
                .find(|(t, _)| t.spec.task_id == i.id)
                .map(|(_, (_, _, percent))| percent);
            i.load.is_some() && i.load == reported
        })
        .count();
    let mut checks = vec![
        Check::new(
            "every task RUNNING at the RUNNING event's version after out-of-order and duplicate events",
            ordered == LAYOUT.len(),
            format!("{ordered} of {} instances", LAYOUT.len()),
        ),
        Check::new(
            "each task's LB_WEIGHT follows its CPU size (round(cpu × 100 / 256))",
            weights_right == LAYOUT.len(),
            format!("{weights_right} of {} instances", LAYOUT.len()),
        ),
        Check::new(
            "the scheduled reconciliation writes each task's CPU load (LB_LOAD)",
            loads_written == LAYOUT.len(),
            format!("{loads_written} of {} instances", LAYOUT.len()),
        ),
    ];

    // The zone IDs the Lambda wrote are the ones EC2 gives the tasks' subnets.
    let subnets = stack.moto.default_subnets()?;
    let zone_id_of = |zone: &str| {
        subnets
            .iter()
            .find(|s| s.zone == zone)
            .map(|s| s.zone_id.clone())
    };
    let ids_right = instances
        .iter()
        .filter(|i| i.zone_id.is_some() && i.zone_id == zone_id_of(&i.zone))
        .count();
    checks.push(Check::new(
        "the Lambda writes each task's zone ID (AVAILABILITY_ZONE_ID, from its subnet)",
        ids_right == LAYOUT.len(),
        format!("{ids_right} of {} instances", LAYOUT.len()),
    ));
    // A Fargate task learns its zone's name from the task metadata, and its ID as the crate
    // docs say (DescribeAvailabilityZones in its own account); here, from the same subnets.
    let client_zone_id = zone_id_of(CLIENT_ZONE).ok_or_else(|| DemoError::Process {
        what: "the client's zone ID".into(),
        detail: format!("no default subnet in {CLIENT_ZONE}"),
    })?;

    progress.step(
        "starting the xDS control plane (cloudmap-xds serve) for the grpcio client, and idle grpcio callers in the other zones",
    );
    let mut xds = XdsSide::start(
        &options.xds_server,
        stack.moto.endpoint(),
        zone_id_of,
        &options.work_dir,
        progress,
    )
    .await?;
    // Connected before the Rust client's phase 1, so that the Python processes' start takes no
    // CPU from its measurement.
    xds.callers_ready().await?;

    progress.step(format!(
        "building the balancer in {CLIENT_ZONE} ({client_zone_id}; Cloud Map polled every second)"
    ));
    let mut balancer_options = BalancerOptions::default();
    balancer_options.discovery.poll_interval = Duration::from_secs(1);
    balancer_options.discovery.full_refresh_interval = Duration::from_secs(5);
    // Phase 1's reference: the same balancer choosing by in-flight counts alone, taking turns
    // with it over the same servers so that the machine's load hits both alike.
    let mut reference_options = balancer_options.clone();
    reference_options.latency_aware = None;
    let balancer = Balancer::builder(&stack.moto.sdk_config(), NAMESPACE, SERVICE)
        .local_zone(CLIENT_ZONE)
        .local_zone_id(&client_zone_id)
        .options(balancer_options)
        .build()?;
    let reference = Balancer::builder(&stack.moto.sdk_config(), NAMESPACE, SERVICE)
        .local_zone(CLIENT_ZONE)
        .local_zone_id(&client_zone_id)
        .options(reference_options)
        .build()?;
    balancer.ready().await?;
    reference.ready().await?;
    let client: Client = DemoClient::new(balancer.channel());
    let reference_client: Client = DemoClient::new(reference.channel());

    // Phase 1.
    progress.step(format!(
        "phase 1: {} calls, {} at a time",
        options.calls, options.concurrency
    ));
    let (mut tally, mut reference_tally) = (Tally::default(), Tally::default());
    let turns = reference_turns(options.calls);
    for turn in 0..turns {
        let calls = options.calls / turns + u64::from(turn < options.calls % turns);
        // Each goes first every other turn, so neither always follows the other.
        for reference_turn in [turn % 2 == 1, turn % 2 == 0] {
            let (who, into) = if reference_turn {
                (&reference_client, &mut reference_tally)
            } else {
                (&client, &mut tally)
            };
            into.absorb(traffic::run_calls(who, calls, options.concurrency).await);
        }
    }
    drop(reference_client);
    let mut in_zone = in_zone_phase(&tally, &instances);
    in_zone.add_reference(&reference_tally, &balancer.stats());
    drop(reference);
    progress.step(format!(
        "  {} calls, {} failed, {:.1} % stayed in {CLIENT_ZONE}",
        tally.succeeded() + tally.failed_calls(),
        tally.failed_calls(),
        in_zone.local_share * 100.0
    ));
    checks.extend(in_zone_checks(&in_zone, "phase 1"));

    progress.step(format!(
        "phase 1, grpcio via xDS: {} calls from {CLIENT_ZONE} ({client_zone_id} in its bootstrap), {GRPCIO_CONCURRENCY} at a time",
        options.calls
    ));
    let grpcio = xds
        .client(
            "phase1",
            Some(options.calls),
            GRPCIO_CONCURRENCY,
            Duration::ZERO,
        )?
        .finish()
        .await?;
    let grpcio_in_zone = in_zone_phase(&grpcio.tally(), &instances);
    progress.step(format!(
        "  {} calls, {} failed, {:.1} % stayed in {CLIENT_ZONE} (grpcio {}; p50 {} µs)",
        grpcio_in_zone.calls,
        grpcio_in_zone.failed,
        grpcio_in_zone.local_share * 100.0,
        grpcio.grpcio,
        grpcio
            .latency_us
            .get("p50")
            .copied()
            .flatten()
            .map_or("-".into(), |us| us.to_string())
    ));
    checks.extend(in_zone_checks(&grpcio_in_zone, "phase 1, grpcio via xDS"));

    // Phase 2.
    let spill = slow_zone_phase(&client, &running, &instances, options, progress).await?;
    checks.extend(spill_checks(&spill));

    // Phase 3.
    let (drain, grpcio_drain) = drain_phase(
        &stack,
        &client,
        &xds,
        &mut lambda,
        &mut running,
        &instances,
        options,
        progress,
        &mut events,
    )
    .await?;
    checks.extend(drain_checks(&drain));
    checks.extend(grpcio_drain_checks(&grpcio_drain, &drain));

    lambda.stop().await;
    let caller_zones = xds.caller_zones.clone();
    let server_addr = xds.server.addr.to_string();
    let summary = xds.stop().await?;
    let nacks = summary["nacks"].as_u64();
    progress.step(format!("  cloudmap-xds stopped: {summary}"));
    checks.push(Check::new(
        "xDS: no client rejected (NACKed) a resource the server sent, in the whole run",
        nacks == Some(0),
        format!(
            "{} NACKs, {} ACKs (the server's counters)",
            nacks.map_or("no count of".into(), |n| n.to_string()),
            summary["acks"]
        ),
    ));
    let xds_report = XdsReport {
        server: server_addr,
        target: demo::xds::target(),
        grpcio: grpcio.grpcio.clone(),
        client_zone_id: client_zone_id.clone(),
        caller_zones,
        in_zone: grpcio_in_zone,
        latency_us: grpcio.latency_us.clone(),
        drain: grpcio_drain,
        server_summary: summary,
        differences: crate::report::GRPCIO_DIFFERENCES
            .iter()
            .map(|&d| d.to_owned())
            .collect(),
    };
    let ok = checks.iter().all(|c| c.ok);
    Ok(Report {
        ok,
        client_zone: CLIENT_ZONE.to_owned(),
        client_zone_id: balancer.local_zone_id(),
        instances,
        events,
        in_zone,
        spill,
        drain,
        xds: xds_report,
        checks,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        logs: options.work_dir.display().to_string(),
    })
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

async fn send(
    lambda: &mut Emulator,
    task: &DemoTask,
    change: Change,
    progress: &Progress,
) -> Result<EventReport, DemoError> {
    let label = format!("{} {}", short(&task.spec.task_id), change.label());
    let event = task_state_change(&task.spec, change, SystemTime::now());
    let answer = lambda.invoke(&label, &event).await?;
    let outcome = summarise(&answer);
    progress.step(format!("  {label}: {outcome}"));
    Ok(EventReport {
        task_id: task.spec.task_id.clone(),
        event: change.label(),
        outcome,
    })
}

/// One line on what the Lambda did, from the report it answers with.
fn summarise(answer: &serde_json::Value) -> String {
    let decisions = answer["decisions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let line = |d: &serde_json::Value| {
        let state = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
        format!(
            "{} ({} → {}){}",
            d["action"].as_str().unwrap_or("?"),
            state("old_state"),
            state("new_state"),
            if d["wrote"].as_bool() == Some(true) {
                ", written"
            } else {
                ""
            }
        )
    };
    match decisions {
        [] => answer["note"].as_str().unwrap_or("no decision").to_owned(),
        [one] => line(one),
        many => {
            let written = many
                .iter()
                .filter(|d| d["wrote"].as_bool() == Some(true))
                .count();
            format!("{} decisions, {written} written", many.len())
        }
    }
}

/// The service's instances as the Cloud Map console shows them: ID and every attribute.
async fn read_instances(stack: &Stack) -> Result<Vec<InstanceReport>, DemoError> {
    let listed = stack
        .moto
        .servicediscovery()
        .list_instances()
        .service_id(&stack.service.cloud_map_service_id)
        .send()
        .await
        .map_err(DemoError::aws("servicediscovery:ListInstances"))?;
    let mut instances: Vec<InstanceReport> = listed
        .instances()
        .iter()
        .map(|summary| {
            let attributes: BTreeMap<String, String> = summary
                .attributes()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            let decoded = InstanceAttributes::decode(&attributes);
            let weight = decoded.weight.map_or(0, |w| w.get());
            let load = decoded.load.map(|l| l.get());
            InstanceReport {
                id: summary.id().unwrap_or_default().to_owned(),
                zone: decoded.zone.clone().unwrap_or_default(),
                zone_id: decoded.zone_id.clone(),
                state: decoded.state.map(|s| s.as_str().to_owned()),
                weight,
                load,
                effective_weight: effective_weight(weight, load),
                cpu: decoded.cpu_units.unwrap_or(0),
                attributes,
            }
        })
        .collect();
    instances.sort_by(|a, b| (&a.zone, a.cpu, &a.id).cmp(&(&b.zone, b.cpu, &b.id)));
    Ok(instances)
}

/// The weight picks should follow, as the client crate documents it: `LB_WEIGHT` scaled by
/// `1 − 0.75 × LB_LOAD / 100`. Computed here from the attributes, independently of the client.
fn effective_weight(weight: u32, load: Option<u32>) -> f64 {
    f64::from(weight) * (1.0 - 0.75 * f64::from(load.unwrap_or(0).min(100)) / 100.0)
}

/// The zone ID the instances in `zone` carry (the first one written).
fn zone_id_in(instances: &[InstanceReport], zone: &str) -> Option<String> {
    instances
        .iter()
        .filter(|i| i.zone == zone)
        .find_map(|i| i.zone_id.clone())
}

/// Effective weight per zone over the instances that are RUNNING.
fn zone_capacity(instances: &[InstanceReport]) -> BTreeMap<String, f64> {
    let mut zones = BTreeMap::new();
    for instance in instances
        .iter()
        .filter(|i| i.state.as_deref() == Some(LbState::Running.as_str()))
    {
        *zones.entry(instance.zone.clone()).or_default() += instance.effective_weight;
    }
    zones
}

/// `part / whole`, 0 when `whole` is 0.
fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

/// One row per instance: the calls it served, and its expected share (its effective weight over
/// the total of the instances for which `takes_calls` holds; 0 for the others).
fn task_rows(
    tally: &Tally,
    instances: &[&InstanceReport],
    takes_calls: impl Fn(&InstanceReport) -> bool,
) -> Vec<TaskRow> {
    let total_weight: f64 = instances
        .iter()
        .filter(|i| takes_calls(i))
        .map(|i| i.effective_weight)
        .sum();
    instances
        .iter()
        .map(|i| {
            let calls = tally.tasks.get(&i.id).map_or(0, |t| t.calls);
            TaskRow {
                reference_share: None,
                latency_ms: None,
                task_id: i.id.clone(),
                zone: i.zone.clone(),
                cpu: i.cpu,
                weight: i.weight,
                load: i.load,
                calls,
                share: traffic::share(calls, tally.succeeded()),
                expected_share: if takes_calls(i) {
                    ratio(i.effective_weight, total_weight)
                } else {
                    0.0
                },
            }
        })
        .collect()
}

fn in_zone_phase(tally: &Tally, instances: &[InstanceReport]) -> Phase {
    let calls = tally.succeeded();
    let all: Vec<&InstanceReport> = instances.iter().collect();
    let tasks = task_rows(tally, &all, |i| i.zone == CLIENT_ZONE);
    Phase {
        reference_worst: None,
        calls: calls + tally.failed_calls(),
        failed: tally.failed_calls(),
        local_share: tally.zone_share(CLIENT_ZONE),
        expected_local_share: 1.0,
        zones: zone_rows(
            tally,
            |zone| if zone == CLIENT_ZONE { 1.0 } else { 0.0 },
            instances,
        ),
        tasks,
    }
}

fn zone_rows(
    tally: &Tally,
    expected: impl Fn(&str) -> f64,
    instances: &[InstanceReport],
) -> Vec<ZoneRow> {
    let per_zone = tally.per_zone();
    zone_capacity(instances)
        .keys()
        .map(|zone| ZoneRow {
            zone: zone.clone(),
            zone_id: zone_id_in(instances, zone),
            calls: per_zone.get(zone).copied().unwrap_or(0),
            share: tally.zone_share(zone),
            expected_share: expected(zone),
        })
        .collect()
}

/// How many turns phase 1's client and its in-flight reference take: turns of about
/// [`REFERENCE_TURN_CALLS`] calls. On a busy machine the servers' speed shifts within a
/// second, so the two must take short turns to see the same machine: with turns of 600 calls
/// (about 200 ms each under two CPU hogs) the reference's own deviation differed from the
/// client's by up to 4 points either way from one run to the next, whichever was better.
pub(crate) fn reference_turns(calls: u64) -> u64 {
    (calls / REFERENCE_TURN_CALLS).max(1)
}

/// Calls per turn of phase 1's client and its reference (see [`reference_turns`]).
pub(crate) const REFERENCE_TURN_CALLS: u64 = 100;

/// The phase-1 checks, named `label: …` (the Rust client's and grpcio's are the same checks).
fn in_zone_checks(phase: &Phase, label: &str) -> Vec<Check> {
    let worst = phase.worst_deviation();
    // Where the machine makes the servers unequal for real (a busy machine makes their
    // processes wait for a CPU), in-flight counts alone miss the promise too: the latency-aware
    // choice must then add little to what they miss. (Only the Rust client has the reference.)
    let alone = phase.reference_worst;
    let estimates = phase
        .tasks
        .iter()
        .filter(|t| t.expected_share > 0.0)
        .map(|t| t.latency_ms.map_or("-".to_owned(), |ms| format!("{ms:.1}")))
        .collect::<Vec<_>>()
        .join(" / ");
    vec![
        Check::new(
            &format!("{label}: no failed calls"),
            phase.failed == 0 && phase.calls > 0,
            format!("{} failed of {}", phase.failed, phase.calls),
        ),
        Check::new(
            &format!("{label}: calls stay in the client's zone while it has capacity (≥ 95 %)"),
            phase.local_share >= 0.95,
            format!("{:.1} % local", phase.local_share * 100.0),
        ),
        Check::new(
            &format!(
                "{label}: each task's share within 5 points of its load-adjusted weight share (or, where in-flight counts alone taking turns with it miss by more on this machine, within 2 points of them)"
            ),
            worst <= 0.05 || alone.is_some_and(|alone| worst <= alone + 0.02),
            format!(
                "largest deviation {:.1} points; in-flight counts alone {}; latency estimates {estimates} ms",
                worst * 100.0,
                alone.map_or("-".to_owned(), |a| format!("{:.1} points", a * 100.0)),
            ),
        ),
    ]
}

async fn set_latency(tasks: &[&DemoTask], latency: Duration) -> Result<(), DemoError> {
    for task in tasks {
        let mut control = ControlClient::connect(format!("http://{}", task.addr))
            .await
            .map_err(|e| DemoError::Process {
                what: "Control.SetLoad".into(),
                detail: e.to_string(),
            })?;
        control
            .set_load(SetLoadRequest {
                latency_ms: u32::try_from(latency.as_millis()).unwrap_or(u32::MAX),
                cpu_work_ms: 0,
            })
            .await
            .map_err(|e| DemoError::Process {
                what: "Control.SetLoad".into(),
                detail: e.to_string(),
            })?;
    }
    Ok(())
}

async fn slow_zone_phase(
    client: &Client,
    running: &[DemoTask],
    instances: &[InstanceReport],
    options: &Options,
    progress: &Progress,
) -> Result<SpillReport, DemoError> {
    let capacity = zone_capacity(instances);
    let total: f64 = capacity.values().sum();
    let local_capacity = ratio(capacity.get(CLIENT_ZONE).copied().unwrap_or(0.0), total);
    let remote_total = total - capacity.get(CLIENT_ZONE).copied().unwrap_or(0.0);
    let local_tasks: Vec<&DemoTask> = running
        .iter()
        .filter(|t| t.spec.zone == CLIENT_ZONE)
        .collect();

    progress.step(format!(
        "phase 2: the {} tasks in {CLIENT_ZONE} get {} ms slower; the client should spill, down to the zone's capacity share ({:.1} %)",
        local_tasks.len(),
        SLOW.as_millis(),
        local_capacity * 100.0
    ));
    let traffic = Traffic::start(client, options.concurrency, Duration::ZERO);
    // A short baseline with the zone fast.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut whole = traffic.take();
    set_latency(&local_tasks, SLOW).await?;
    let slowed = Instant::now();

    // Spill: sample windows until the local share first comes within reach of its floor (or time
    // is up), then take the next SETTLED_WINDOWS windows in a row, whatever they show: the
    // settled share is their mean, so a share that overshoots or flaps shows in the check.
    let mut timeline = Vec::new();
    let mut settled = Tally::default();
    let mut spilled_after = None;
    let mut settled_windows = None;
    while slowed.elapsed() < Duration::from_secs(40)
        && settled_windows.is_none_or(|n| n < SETTLED_WINDOWS)
    {
        tokio::time::sleep(WINDOW).await;
        let window = traffic.take();
        let local = window.zone_share(CLIENT_ZONE);
        timeline.push((slowed.elapsed().as_secs_f64(), local));
        if local < 0.9 && spilled_after.is_none() {
            spilled_after = Some(slowed.elapsed());
        }
        if settled_windows.is_none() && local <= local_capacity + 0.1 {
            settled_windows = Some(0);
        } else if let Some(n) = settled_windows.as_mut() {
            *n += 1;
            settled.absorb(window.clone());
        }
        whole.absorb(window);
    }
    let settled_local = settled.zone_share(CLIENT_ZONE);
    progress.step(format!(
        "  spilled after {}, settled at {:.1} % local",
        spilled_after.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        settled_local * 100.0
    ));

    // Recovery.
    progress.step(format!(
        "  the tasks in {CLIENT_ZONE} are fast again; the calls should come back"
    ));
    set_latency(&local_tasks, Duration::ZERO).await?;
    let recovered_at = Instant::now();
    let fast_again_seconds = recovered_at.duration_since(slowed).as_secs_f64();
    let mut recovered_after = None;
    let mut recovered_windows = 0;
    while recovered_at.elapsed() < Duration::from_secs(60) && recovered_windows < 3 {
        tokio::time::sleep(WINDOW).await;
        let window = traffic.take();
        let local = window.zone_share(CLIENT_ZONE);
        timeline.push((slowed.elapsed().as_secs_f64(), local));
        if local >= 0.95 {
            recovered_windows += 1;
            recovered_after.get_or_insert(recovered_at.elapsed());
        } else {
            recovered_windows = 0;
            recovered_after = None;
        }
        whole.absorb(window);
    }
    if recovered_windows < 3 {
        // Time ran out before three good windows in a row: it did not come back.
        recovered_after = None;
    }
    whole.absorb(traffic.stop().await);
    progress.step(format!(
        "  back in zone after {}; {} calls in this phase, {} failed",
        recovered_after.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        whole.succeeded() + whole.failed_calls(),
        whole.failed_calls()
    ));

    let spilled_calls =
        settled.succeeded() - settled.per_zone().get(CLIENT_ZONE).copied().unwrap_or(0);
    let spill_split = capacity
        .iter()
        .filter(|(zone, _)| zone.as_str() != CLIENT_ZONE)
        .map(|(zone, weight)| ZoneRow {
            zone: zone.clone(),
            zone_id: zone_id_in(instances, zone),
            calls: settled.per_zone().get(zone).copied().unwrap_or(0),
            share: traffic::share(
                settled.per_zone().get(zone).copied().unwrap_or(0),
                spilled_calls,
            ),
            expected_share: ratio(*weight, remote_total),
        })
        .collect();
    Ok(SpillReport {
        added_latency_ms: u64::try_from(SLOW.as_millis()).unwrap_or(u64::MAX),
        calls: whole.succeeded() + whole.failed_calls(),
        failed: whole.failed_calls(),
        spilled_after_seconds: spilled_after.map(|d| d.as_secs_f64()),
        settled_local_share: settled_local,
        expected_settled_local_share: local_capacity,
        settled_calls: settled.succeeded(),
        spill_split,
        recovered_after_seconds: recovered_after.map(|d| d.as_secs_f64()),
        fast_again_seconds: round(fast_again_seconds, 1),
        timeline: timeline
            .into_iter()
            .map(|(t, s)| [round(t, 1), round(s, 3)])
            .collect(),
    })
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn spill_checks(spill: &SpillReport) -> Vec<Check> {
    let worst_split = spill
        .spill_split
        .iter()
        .map(|z| (z.share - z.expected_share).abs())
        .fold(0.0, f64::max);
    vec![
        Check::new(
            "phase 2: no failed calls",
            spill.failed == 0,
            format!("{} failed", spill.failed),
        ),
        Check::new(
            "phase 2: a slow local zone makes the client spill",
            spill.spilled_after_seconds.is_some(),
            seconds_or_never(spill.spilled_after_seconds),
        ),
        Check::new(
            "phase 2: spill settles within 10 points of the local zone's capacity share",
            spill.settled_calls > 0
                && (spill.settled_local_share - spill.expected_settled_local_share).abs() <= 0.1,
            format!(
                "{:.1} % local, capacity share {:.1} %",
                spill.settled_local_share * 100.0,
                spill.expected_settled_local_share * 100.0
            ),
        ),
        Check::new(
            "phase 2: spilled calls split by the other zones' capacity (within 10 points)",
            spill.settled_calls > 0 && worst_split <= 0.1,
            format!("largest deviation {:.1} points", worst_split * 100.0),
        ),
        Check::new(
            "phase 2: calls come back once the zone is fast again",
            spill.recovered_after_seconds.is_some(),
            seconds_or_never(spill.recovered_after_seconds),
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
async fn drain_phase(
    stack: &Stack,
    client: &Client,
    xds: &XdsSide,
    lambda: &mut Emulator,
    running: &mut [DemoTask],
    instances: &[InstanceReport],
    options: &Options,
    progress: &Progress,
    events: &mut Vec<EventReport>,
) -> Result<(DrainReport, GrpcioDrainReport), DemoError> {
    // The largest task in the client's zone: the one that carries most of its calls.
    let index = running
        .iter()
        .enumerate()
        .filter(|(_, t)| t.spec.zone == CLIENT_ZONE)
        .max_by_key(|(_, t)| t.spec.cpu)
        .map(|(i, _)| i)
        .ok_or_else(|| DemoError::Process {
            what: "phase 3".into(),
            detail: "no task in the client's zone".into(),
        })?;
    let task_id = running[index].spec.task_id.clone();
    progress.step(format!(
        "phase 3: stopping task {} ({} CPU units, {CLIENT_ZONE}) the way ECS does, while calls continue",
        short(&task_id),
        running[index].spec.cpu
    ));
    // grpcio calls through the xDS server at the same time, from the same zone, paced.
    let mut grpcio = xds.client("phase3", None, GRPCIO_DRAIN_CONCURRENCY, GRPCIO_DRAIN_PAUSE)?;
    grpcio.ready().await?;
    let traffic = Traffic::start(client, options.concurrency, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut whole = traffic.take();

    // ECS sends SIGTERM to the container as it publishes the state change; the event then takes
    // EventBridge, the Lambda and a client's next poll (25 s by default) to reach the client.
    // Here it is held back for two of the demo's 1 s polls, so what empties the task right after
    // SIGTERM can only be the client's health watch on the server's NOT_SERVING.
    let sigterm_at = Instant::now();
    running[index].sigterm()?;
    progress.step(format!(
        "  SIGTERM sent; the task keeps serving {} ms with health NOT_SERVING, then refuses new calls and finishes the ones in flight",
        DRAIN_DELAY.as_millis()
    ));
    tokio::time::sleep(DRAINING_EVENT_DELAY).await;
    let draining_event_after_sigterm_ms = millis(sigterm_at.elapsed());
    events.push(send(lambda, &running[index], Change::DRAINING, progress).await?);
    let state_after_draining = read_instances(stack)
        .await?
        .into_iter()
        .find(|i| i.id == task_id)
        .and_then(|i| i.state);
    let exit_code = running[index]
        .wait(DRAIN_DELAY + SHUTDOWN_GRACE + Duration::from_secs(10))
        .await?;
    progress.step(format!(
        "  demo-server exited with {} (log: {})",
        exit_code.map_or("a signal".into(), |c| format!("code {c}")),
        running[index].log.display()
    ));

    // ECS: the task is STOPPED (event), and ECS deregisters the instance.
    tasks::stop_in_ecs(stack, &running[index].spec).await?;
    events.push(send(lambda, &running[index], Change::STOPPED, progress).await?);
    tasks::deregister_as_ecs(stack, &task_id).await?;
    progress.step("  instance deregistered, as ECS does");

    // Calls so far belong to the stop; the next two seconds show the zone without the task.
    whole.absorb(traffic.take());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = traffic.stop().await;
    let grpcio = grpcio.finish().await?.tally();
    let mut total = whole.clone();
    total.absorb(after.clone());

    let last_call = total.tasks.get(&task_id).and_then(|t| t.last_served);
    // A last call answered before SIGTERM counts as 0 ms.
    let last_call_after_sigterm_ms =
        last_call.map(|at| millis(at.saturating_duration_since(sigterm_at)));
    // The zone's remaining tasks share its calls by weight.
    let remaining: Vec<&InstanceReport> = instances
        .iter()
        .filter(|i| i.zone == CLIENT_ZONE && i.id != task_id)
        .collect();
    let after_rows = task_rows(&after, &remaining, |_| true);
    progress.step(format!(
        "  {} calls in this phase, {} failed; the stopped task's last call was answered {} after SIGTERM",
        total.succeeded() + total.failed_calls(),
        total.failed_calls(),
        last_call_after_sigterm_ms.map_or("before it".into(), |ms| format!("{ms} ms"))
    ));
    let grpcio_last = grpcio
        .tasks
        .get(&task_id)
        .and_then(|t| t.last_served)
        .map(|at| millis(at.saturating_duration_since(sigterm_at)));
    progress.step(format!(
        "  grpcio via xDS: {} calls, {} failed; its last call to the stopped task was answered {} after SIGTERM",
        grpcio.succeeded() + grpcio.failed_calls(),
        grpcio.failed_calls(),
        grpcio_last.map_or("before it".into(), |ms| format!("{ms} ms"))
    ));
    let grpcio_report = GrpcioDrainReport {
        calls: grpcio.succeeded() + grpcio.failed_calls(),
        failed: grpcio.failed_calls(),
        first_failure: grpcio.first_failure.clone(),
        stopped_task_calls: grpcio.tasks.get(&task_id).map_or(0, |t| t.calls),
        last_call_after_sigterm_ms: grpcio_last,
    };
    let report = DrainReport {
        task_id,
        calls: total.succeeded() + total.failed_calls(),
        failed: total.failed_calls(),
        first_failure: total.first_failure.clone(),
        state_after_draining_event: state_after_draining,
        last_call_after_sigterm_ms,
        draining_event_after_sigterm_ms,
        stops_accepting_after_sigterm_ms: millis(DRAIN_DELAY),
        server_exit_code: exit_code,
        after: after_rows,
    };
    Ok((report, grpcio_report))
}

fn drain_checks(drain: &DrainReport) -> Vec<Check> {
    // The health watch must empty the task within DRAIN_WATCH_BOUND of SIGTERM (NOT_SERVING),
    // before the DRAINING event was even sent. No call at all proves nothing.
    let emptied_by_watch = drain.last_call_after_sigterm_ms.is_some_and(|ms| {
        ms <= millis(DRAIN_WATCH_BOUND) && ms < drain.draining_event_after_sigterm_ms
    });
    vec![
        Check::new(
            "phase 3: no failed calls while a task drains and stops",
            drain.failed == 0,
            format!(
                "{} failed{}",
                drain.failed,
                drain
                    .first_failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(" (first: {f})"))
            ),
        ),
        Check::new(
            "phase 3: the draining task gets no new calls within 100 ms of SIGTERM (NOT_SERVING), before Cloud Map says DRAINING",
            emptied_by_watch,
            drain.last_call_after_sigterm_ms.map_or_else(
                || "the task served no call in this phase".into(),
                |ms| {
                    format!(
                        "last call answered {ms} ms after SIGTERM; the DRAINING event was sent {} ms after",
                        drain.draining_event_after_sigterm_ms
                    )
                },
            ),
        ),
        Check::new(
            "phase 3: the Lambda marks the task DRAINING",
            drain.state_after_draining_event.as_deref() == Some("DRAINING"),
            drain
                .state_after_draining_event
                .clone()
                .unwrap_or_else(|| "no LB_STATE".into()),
        ),
        Check::new(
            "phase 3: demo-server drains and exits 0 on SIGTERM",
            drain.server_exit_code == Some(0),
            drain
                .server_exit_code
                .map_or("killed by a signal".into(), |c| format!("exit code {c}")),
        ),
    ]
}

fn grpcio_drain_checks(grpcio: &GrpcioDrainReport, drain: &DrainReport) -> Vec<Check> {
    // As for the Rust client: the task must have taken grpcio's calls before (no call at all
    // proves nothing), and none after the bound, which ends before the DRAINING event.
    let emptied_by_push = grpcio.stopped_task_calls > 0
        && grpcio.last_call_after_sigterm_ms.is_some_and(|ms| {
            ms <= millis(XDS_DRAIN_BOUND) && ms < drain.draining_event_after_sigterm_ms
        });
    vec![
        Check::new(
            "phase 3, grpcio via xDS: no failed calls while a task drains and stops",
            grpcio.failed == 0 && grpcio.calls > 0,
            format!(
                "{} failed of {}{}",
                grpcio.failed,
                grpcio.calls,
                grpcio
                    .first_failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(" (first: {f})"))
            ),
        ),
        Check::new(
            "phase 3, grpcio via xDS: the draining task gets no new calls within 1 s of SIGTERM (the xDS server's health watch pushes DRAINING), before Cloud Map says DRAINING",
            emptied_by_push,
            match grpcio.last_call_after_sigterm_ms {
                None => "the task served no grpcio call in this phase".into(),
                Some(ms) => format!(
                    "{} of its calls; last answered {ms} ms after SIGTERM; the DRAINING event was sent {} ms after",
                    grpcio.stopped_task_calls, drain.draining_event_after_sigterm_ms
                ),
            },
        ),
    ]
}

/// A duration in seconds for a check's detail, or "never" when it did not happen.
fn seconds_or_never(seconds: Option<f64>) -> String {
    seconds.map_or("never".into(), |s| format!("after {s:.1} s"))
}

/// Whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
