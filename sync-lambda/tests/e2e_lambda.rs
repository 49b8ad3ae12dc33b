//! End to end: the real `cloudmap-sync` binary under cargo-lambda's Lambda emulator
//! (`cargo lambda watch`), events sent with `cargo lambda invoke --data-file`, AWS answered by
//! moto behind the fault proxy (which also counts the calls).
//!
//! The emulator runs with `--only-lambda-apis` and the test starts the function binary itself,
//! so the test builds nothing: `SYNC_E2E_BINARY` names the binary, and `scripts/test` (CI) points
//! it at the release build, what `sam build` ships. Without it, the test runs the debug binary
//! Cargo built for this test (`CARGO_BIN_EXE_cloudmap-sync`); a release build inside the test
//! would add minutes to every `cargo test`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudmap_balancer::contract::keys;
use common::Stack;
use local_stack::MotoServer;
use local_stack::fault::{Fault, FaultProxy};
use serde_json::Value;

/// A child process in its own process group, killed with its group when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id();
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_group(command: &mut Command) -> Group {
    Group(command.process_group(0).spawn().unwrap())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `PATH` with the stack virtualenv first (cargo-lambda finds zig through it).
fn path_with_venv(cargo_lambda: &std::path::Path) -> String {
    let venv_bin = cargo_lambda.parent().unwrap().display().to_string();
    format!("{venv_bin}:{}", std::env::var("PATH").unwrap_or_default())
}

fn wait_for_port(port: u16, timeout: Duration) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < timeout, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Emulator {
    cargo_lambda: PathBuf,
    port: u16,
    events_dir: PathBuf,
    sent: u32,
}

/// The outcome of one `cargo lambda invoke`.
struct Invoked {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Emulator {
    fn invoke(&mut self, event: &Value) -> Invoked {
        self.sent += 1;
        let file = self.events_dir.join(format!("event-{}.json", self.sent));
        std::fs::write(&file, serde_json::to_vec_pretty(event).unwrap()).unwrap();
        let mut child = Command::new(&self.cargo_lambda)
            .args(["lambda", "invoke", "_", "-A", "127.0.0.1", "-P"])
            .arg(self.port.to_string())
            .arg("--data-file")
            .arg(&file)
            .env("PATH", path_with_venv(&self.cargo_lambda))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(120), "invoke hangs");
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        Invoked {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

fn response(invoked: &Invoked) -> Value {
    assert!(
        invoked.ok,
        "invoke failed: {}{}",
        invoked.stdout, invoked.stderr
    );
    serde_json::from_str(invoked.stdout.trim()).unwrap()
}

fn writes(response: &Value) -> usize {
    response["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["wrote"] == true)
        .count()
}

#[tokio::test]
async fn the_binary_under_the_emulator_enriches_and_fails_retryably() {
    let moto = MotoServer::shared();
    let stack = Stack::new().await;
    let tasks = stack.run_tasks(2, &[]).await;
    for task in &tasks {
        stack.register_like_ecs(task).await;
    }
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();

    let cargo_lambda = local_stack::venv_bin("cargo-lambda").unwrap();
    let port = free_port();
    let _watch = spawn_group(
        Command::new(&cargo_lambda)
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .env("PATH", path_with_venv(&cargo_lambda))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(port, Duration::from_secs(30));

    let binary = std::env::var_os("SYNC_E2E_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_cloudmap-sync")),
        PathBuf::from,
    );
    let mut function = spawn_group(
        Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env("AWS_REGION", local_stack::REGION)
            .env("AWS_ACCESS_KEY_ID", "local-stack")
            .env("AWS_SECRET_ACCESS_KEY", "local-stack")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "2")
            .env("SYNC_CLUSTERS", &stack.cluster)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let pid = function.0.id();
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let collected = Arc::clone(&logs);
    let stdout = function.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });

    let mut emulator = Emulator {
        cargo_lambda,
        port,
        events_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(local_stack::unique_name("e2e")),
        sent: 0,
    };
    std::fs::create_dir_all(&emulator.events_dir).unwrap();

    // A RUNNING event: DescribeServices (then cached), DescribeTasks, GetInstance, RegisterInstance.
    proxy.reset_counts();
    let first = response(&emulator.invoke(&stack.event("fargate_running.json", &tasks[0], 4)));
    assert_eq!(
        (first["kind"].as_str(), writes(&first)),
        (Some("task_change"), 1)
    );
    let cold_calls = proxy.counts();
    assert_eq!(
        cold_calls.values().sum::<u64>(),
        4,
        "DescribeServices, DescribeTasks, GetInstance, RegisterInstance: {cold_calls:?}"
    );
    let attrs = stack.attributes(&tasks[0].id).await.unwrap();
    assert_eq!(attrs[keys::LB_STATE], "RUNNING");
    assert_eq!(attrs["team"], "payments");

    // Steady state: another task's event, then its duplicate.
    proxy.reset_counts();
    let second = response(&emulator.invoke(&stack.event("fargate_running.json", &tasks[1], 4)));
    assert_eq!(writes(&second), 1);
    let event_calls = proxy.counts();
    assert_eq!(
        event_calls.values().sum::<u64>(),
        3,
        "DescribeTasks, GetInstance, RegisterInstance: {event_calls:?}"
    );
    proxy.reset_counts();
    let duplicate = response(&emulator.invoke(&stack.event("fargate_running.json", &tasks[1], 4)));
    assert_eq!(duplicate["decisions"][0]["action"], "stale");
    let duplicate_calls = proxy.counts();
    assert_eq!(
        duplicate_calls.get("RegisterInstance"),
        None,
        "{duplicate_calls:?}"
    );

    // Bad input is acknowledged, with no AWS call.
    proxy.reset_counts();
    let rejected = response(&emulator.invoke(&common::fixture_json("missing_task_arn.json")));
    assert_eq!(rejected["note"], "missing_task_arn");
    assert!(proxy.counts().is_empty());

    // Throttled Cloud Map: the invocation fails (Lambda would retry it), nothing is written.
    proxy.fail("RegisterInstance", Fault::Throttle);
    let spot_warning = stack.event("spot_interruption_warning.json", &tasks[0], 5);
    let failed = emulator.invoke(&spot_warning);
    assert!(!failed.ok, "{}", failed.stdout);
    let error_text = format!("{}{}", failed.stdout, failed.stderr);
    assert!(
        error_text.contains("CloudMapSync.aws_retryable"),
        "{error_text}"
    );
    assert_eq!(
        stack.attributes(&tasks[0].id).await.unwrap()[keys::LB_STATE],
        "RUNNING"
    );
    // The retry, once Cloud Map answers again.
    proxy.clear();
    let retried = response(&emulator.invoke(&spot_warning));
    assert_eq!(writes(&retried), 1);
    assert_eq!(
        stack.attributes(&tasks[0].id).await.unwrap()[keys::LB_STATE],
        "DRAINING"
    );

    // The schedule: reconciliation of the cluster's service.
    proxy.reset_counts();
    let reconciled = response(&emulator.invoke(&common::fixture_json("scheduled.json")));
    assert_eq!(reconciled["kind"], "reconcile");
    assert_eq!(reconciled["decisions"].as_array().unwrap().len(), 2);
    let reconcile_calls = proxy.counts();
    // The cluster's service listing is not cached yet (events cache the service's registries
    // only), then the four reads of one service (load is on: both tasks run), then one
    // RegisterInstance per write.
    let reconcile_writes = u64::try_from(writes(&reconciled)).unwrap();
    for operation in [
        "ListServices",
        "DescribeServices",
        "ListTasks",
        "ListInstances",
        "DescribeTasks",
        "GetMetricData",
    ] {
        assert_eq!(
            reconcile_calls.get(operation),
            Some(&1),
            "{operation}: {reconcile_calls:?}"
        );
    }
    assert_eq!(
        reconcile_calls.values().sum::<u64>(),
        6 + reconcile_writes,
        "the six reads and one RegisterInstance per write: {reconcile_calls:?}"
    );

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().to_owned())
        .unwrap();
    drop(function);

    // The logs: JSON lines, one per decision with its fields, EMF lines, the init time.
    let logs = logs.lock().unwrap().clone();
    let parsed: Vec<Value> = logs
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let init_ms = parsed
        .iter()
        .find(|l| l["message"] == "initialised")
        .map(|l| l["init_ms"].as_f64().unwrap())
        .unwrap();
    let decision = parsed
        .iter()
        .find(|l| l["message"] == "decision" && l["action"] == "update")
        .unwrap();
    for field in [
        "task",
        "cluster",
        "service",
        "cloudmap_service",
        "instance",
        "new_state",
        "action",
        "wrote",
    ] {
        assert!(
            !decision[field].is_null(),
            "decision log without {field}: {decision}"
        );
    }
    // The Spot warning's decision line says why the task stops.
    assert!(
        parsed.iter().any(|l| l["message"] == "decision"
            && l["new_state"] == "DRAINING"
            && l["stop_code"] == "SpotInterruption"),
        "no decision line with the stop code"
    );
    assert!(
        parsed
            .iter()
            .any(|l| l["_aws"]["CloudWatchMetrics"].is_array())
    );

    println!(
        "e2e {}: init {init_ms:.1} ms, peak RSS {peak_kb}; calls: first event {cold_calls:?}, \
         steady event {event_calls:?}, duplicate {duplicate_calls:?}, reconcile (2 tasks) \
         {reconcile_calls:?}",
        binary.display()
    );
}
