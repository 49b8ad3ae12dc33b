//! The run: the fleet, then every segment of the schedule in turn, each with its own client
//! process (and HAProxy for variant (d)), its scenario's fault injected and undone around it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use demo::fleet::{CLIENT_ZONE, DemoTask, LAYOUT, Stack};
use demo::progress::Progress;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::client::ClientSpec;
use crate::fleet::{Fleet, set_latency, start_member};
use crate::haproxy::{self, Haproxy};
use crate::measure::SegmentResult;
use crate::pin::{self, CpuPlan};
use crate::plan::{Scenario, Segment, Timing, Variant, schedule};

/// Latency of the slow instance.
const SLOW_INSTANCE: Duration = Duration::from_millis(20);
/// Latency of the client's zone while it is slow.
const SLOW_ZONE: Duration = Duration::from_millis(40);
/// Busy threads on the client's core in the CPU-starved scenario: with the client's one runtime
/// thread they share the core four ways.
const HOG_THREADS: usize = 3;
/// The Lambda's reconciliation rewrites `LB_LOAD` every minute; the balancer ignores a load
/// older than five minutes.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// What the run is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) smoke: bool,
    pub(crate) rounds: usize,
    /// The scenarios run (`--scenarios`; default every one).
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) concurrency: u64,
    /// Where logs and HAProxy's configuration go.
    pub(crate) work_dir: PathBuf,
    pub(crate) demo_server: PathBuf,
    /// This program, for the client and hog processes.
    pub(crate) me: PathBuf,
    pub(crate) cpus: Option<CpuPlan>,
}

/// Why the run could not go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HarnessError {
    #[error(transparent)]
    Fleet(#[from] demo::Error),
    #[error(transparent)]
    Stack(#[from] local_stack::Error),
    #[error("{what}: {detail}")]
    Step { what: String, detail: String },
}

fn step_error(what: impl Into<String>) -> impl FnOnce(String) -> HarnessError {
    let what = what.into();
    move |detail| HarnessError::Step { what, detail }
}

/// One segment's outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    pub(crate) round: usize,
    pub(crate) scenario: Scenario,
    pub(crate) variant: Variant,
    pub(crate) result: SegmentResult,
    /// Slow zone: when the zone slowed and recovered, seconds into the measurement.
    pub(crate) slowed_s: Option<f64>,
    pub(crate) recovered_s: Option<f64>,
    /// Killed: when the task was killed.
    pub(crate) killed_s: Option<f64>,
    /// The slowed or killed task's ID, in those scenarios.
    pub(crate) faulted_task: Option<String>,
    /// Every task of the fleet, with the weight its picks should follow.
    pub(crate) tasks: Vec<TaskWeight>,
}

/// A task and its weight × load: `LB_WEIGHT` (from its CPU size, as the Lambda writes it)
/// scaled by `1 − 0.75 × LB_LOAD / 100`, as the client crate documents, computed here from
/// what the harness registered, independently of the client.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskWeight {
    pub(crate) task_id: String,
    pub(crate) zone: String,
    pub(crate) effective_weight: f64,
}

impl TaskWeight {
    pub(crate) fn of(member: &crate::fleet::Member) -> Self {
        let weight = f64::from(crate::attributes::weight_of(member.task.spec.cpu));
        Self {
            task_id: member.task.spec.task_id.clone(),
            zone: member.task.spec.zone.clone(),
            effective_weight: weight * (1.0 - 0.75 * f64::from(member.load.min(100)) / 100.0),
        }
    }
}

/// Everything the run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    pub(crate) records: Vec<Record>,
    pub(crate) variants: Vec<Variant>,
    /// Why (d) did not run, when it did not.
    pub(crate) haproxy_skipped: Option<String>,
    pub(crate) haproxy_version: Option<String>,
    pub(crate) timing: Timing,
    pub(crate) elapsed_s: f64,
}

/// Runs the whole comparison.
pub(crate) async fn run(options: &Options, progress: &Progress) -> Result<Outcome, HarnessError> {
    let started = Instant::now();
    let timing = if options.smoke {
        Timing::SMOKE
    } else {
        Timing::FULL
    };

    let found =
        tokio::task::spawn_blocking(move || haproxy::binary(|line| Progress::new().step(line)))
            .await
            .map_err(|e| HarnessError::Step {
                what: "looking for HAProxy".into(),
                detail: e.to_string(),
            })?;
    let (haproxy_binary, haproxy_skipped) = match found {
        Ok(binary) => (Some(binary), None),
        Err(why) => {
            progress.step(format!(
                "NOTICE: variant (d) skipped, HAProxy is not available: {why}"
            ));
            (None, Some(why))
        }
    };
    let haproxy_version = haproxy_binary.as_deref().map(haproxy::version);
    if let Some(version) = &haproxy_version {
        progress.step(format!("variant (d) runs {version}"));
    }
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| *v != Variant::Haproxy || haproxy_binary.is_some())
        .collect();

    let mut fleet = start_fleet(options, progress).await?;

    let mut segments = schedule(options.rounds, &variants, options.smoke);
    segments.retain(|s| options.scenarios.contains(&s.scenario));
    let mut records = Vec::new();
    for (n, segment) in segments.iter().enumerate() {
        if fleet.refreshed.elapsed() >= REFRESH_EVERY {
            fleet.register_all().await?;
        }
        let record = run_segment(
            &mut fleet,
            options,
            &timing,
            *segment,
            haproxy_binary.as_deref(),
            None,
        )
        .await?;
        let r = &record.result;
        progress.step(format!(
            "[{}/{}] round {} · {} · ({}) {}: {:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} % in zone, {} failed",
            n + 1,
            segments.len(),
            segment.round + 1,
            segment.scenario.label(),
            segment.variant.letter(),
            segment.variant.label(),
            r.calls_per_second(),
            ms(r.p50_us),
            ms(r.p99_us),
            r.local_share() * 100.0,
            r.failed()
        ));
        records.push(record);
    }
    Ok(Outcome {
        records,
        variants,
        haproxy_skipped,
        haproxy_version,
        timing,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// moto with the demo's service, and the six tasks running, registered as the Lambda would
/// leave them.
pub(crate) async fn start_fleet(
    options: &Options,
    progress: &Progress,
) -> Result<Fleet, HarnessError> {
    progress.step("starting moto and creating the ECS service and its Cloud Map service");
    let sizes: Vec<u32> = LAYOUT.iter().map(|(_, cpu, _)| *cpu).collect();
    let stack = Stack::create(&sizes).await?;
    let mut members = Vec::new();
    for (zone, cpu, load) in LAYOUT {
        let member = start_member(&stack, options, zone, cpu, load).await?;
        progress.step(format!(
            "  task {} in {zone}, {cpu} CPU units, load {load} %, on {}, registered with the Lambda's attributes",
            &member.task.spec.task_id[..8.min(member.task.spec.task_id.len())],
            member.task.addr
        ));
        members.push(member);
    }
    Ok(Fleet {
        stack,
        members,
        refreshed: Instant::now(),
    })
}

#[allow(clippy::cast_precision_loss)] // microseconds of a call
pub(crate) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(crate) async fn run_segment(
    fleet: &mut Fleet,
    options: &Options,
    timing: &Timing,
    segment: Segment,
    haproxy_binary: Option<&std::path::Path>,
    xds_server: Option<std::net::SocketAddr>,
) -> Result<Record, HarnessError> {
    let target = fleet.target();
    let faulted_task = matches!(segment.scenario, Scenario::SlowInstance | Scenario::Killed)
        .then(|| fleet.members[target].task.spec.task_id.clone());
    let client_cpu = options.cpus.as_ref().map(|c| c.client);

    // The scenario's standing condition.
    let mut hog = None;
    match segment.scenario {
        Scenario::SlowInstance => {
            set_latency(&[&fleet.members[target].task], SLOW_INSTANCE).await?;
        }
        Scenario::ClientStarved => {
            let child = pin::on_cpu(client_cpu, &options.me)
                .args(["hog", &HOG_THREADS.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| HarnessError::Step {
                    what: "starting the CPU hog".into(),
                    detail: e.to_string(),
                })?;
            hog = Some(child);
        }
        _ => {}
    }
    let proxy = match (segment.variant, haproxy_binary) {
        (Variant::Haproxy, Some(binary)) => Some(
            Haproxy::start(binary, &fleet.servers(), &options.work_dir)
                .await
                .map_err(step_error("starting HAProxy"))?,
        ),
        _ => None,
    };

    let measured = timing.measured(segment.scenario);
    let spec = ClientSpec {
        variant: segment.variant,
        moto_endpoint: fleet.stack.moto.endpoint().to_owned(),
        proxy: proxy.as_ref().map(Haproxy::listen),
        xds_server,
        zone: CLIENT_ZONE.to_owned(),
        concurrency: options.concurrency,
        warmup_ms: millis(timing.warmup),
        measure_ms: millis(measured),
        window_ms: millis(timing.window),
    };
    let spec_json = serde_json::to_string(&spec).map_err(|e| HarnessError::Step {
        what: "the client's spec".into(),
        detail: e.to_string(),
    })?;
    let client_log = options.work_dir.join(format!(
        "client-r{}-{:?}-{}.log",
        segment.round + 1,
        segment.scenario,
        segment.variant.name()
    ));
    let log = std::fs::File::create(&client_log).map_err(|e| HarnessError::Step {
        what: format!("creating {}", client_log.display()),
        detail: e.to_string(),
    })?;
    let mut client = pin::on_cpu(client_cpu, &options.me)
        .args(["client", &spec_json])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HarnessError::Step {
            what: "starting the client".into(),
            detail: e.to_string(),
        })?;
    let stdout = client.stdout.take().ok_or_else(|| HarnessError::Step {
        what: "the client".into(),
        detail: "no stdout".into(),
    })?;
    let mut lines = BufReader::new(stdout).lines();
    let client_failed = |detail: String| HarnessError::Step {
        what: format!(
            "the client of ({}) in {} (log: {})",
            segment.variant.letter(),
            segment.scenario.label(),
            client_log.display()
        ),
        detail,
    };
    let ready = tokio::time::timeout(timing.warmup + Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| client_failed("no `ready` line".into()))?
        .map_err(|e| client_failed(e.to_string()))?;
    if ready.as_deref() != Some("ready") {
        return Err(client_failed(format!(
            "printed {ready:?} instead of `ready`"
        )));
    }
    let t0 = Instant::now();
    let since = |at: Instant| at.duration_since(t0).as_secs_f64();

    let (mut slowed_s, mut recovered_s, mut killed_s) = (None, None, None);
    match segment.scenario {
        Scenario::SlowZone => {
            let local: Vec<&DemoTask> = fleet
                .members
                .iter()
                .filter(|m| m.task.spec.zone == CLIENT_ZONE)
                .map(|m| &m.task)
                .collect();
            tokio::time::sleep_until((t0 + timing.before_slow).into()).await;
            set_latency(&local, SLOW_ZONE).await?;
            slowed_s = Some(since(Instant::now()));
            tokio::time::sleep_until((t0 + timing.before_slow + timing.slow).into()).await;
            set_latency(&local, Duration::ZERO).await?;
            recovered_s = Some(since(Instant::now()));
        }
        Scenario::Killed => {
            tokio::time::sleep_until((t0 + timing.kill_at).into()).await;
            fleet.members[target].task.sigkill()?;
            killed_s = Some(since(Instant::now()));
            // ECS notices the task stopped and removes its instance.
            tokio::time::sleep(timing.deregister_after).await;
            let task = &fleet.members[target].task.spec;
            fleet
                .stack
                .service
                .stop_task(
                    &fleet.stack.moto,
                    &task.task_arn,
                    "Essential container in task exited",
                )
                .await?;
            fleet
                .stack
                .service
                .deregister(&fleet.stack.moto, &task.task_id)
                .await?;
        }
        _ => {}
    }

    let answer = tokio::time::timeout(measured + Duration::from_secs(60), lines.next_line())
        .await
        .map_err(|_| client_failed("no result".into()))?
        .map_err(|e| client_failed(e.to_string()))?
        .unwrap_or_default();
    let result: SegmentResult =
        serde_json::from_str(&answer).map_err(|e| client_failed(format!("{e}: {answer:?}")))?;
    let _ = tokio::time::timeout(Duration::from_secs(10), client.wait()).await;

    // Undo the scenario (the hog is killed on drop).
    drop(hog);
    if let Some(proxy) = proxy {
        proxy.stop().await;
    }
    match segment.scenario {
        Scenario::SlowInstance => {
            set_latency(&[&fleet.members[target].task], Duration::ZERO).await?;
        }
        Scenario::Killed => {
            // ECS starts a replacement, as the service scheduler does.
            let old = &fleet.members[target];
            let (zone, cpu, load) = (old.task.spec.zone.clone(), old.task.spec.cpu, old.load);
            let _ = fleet.members[target]
                .task
                .wait(Duration::from_secs(5))
                .await;
            fleet.members[target] = start_member(&fleet.stack, options, &zone, cpu, load).await?;
        }
        _ => {}
    }
    Ok(Record {
        round: segment.round,
        scenario: segment.scenario,
        variant: segment.variant,
        result,
        slowed_s,
        recovered_s,
        killed_s,
        faulted_task,
        tasks: fleet.members.iter().map(TaskWeight::of).collect(),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
