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
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use cloudmap_balancer::contract::keys;
use common::Stack;
use local_stack::MotoServer;
use local_stack::fault::{Fault, FaultProxy};
use local_stack::lambda::{Emulator, Function, Invoked};
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

fn response(invoked: &Invoked) -> Value {
    invoked
        .answer()
        .unwrap_or_else(|| panic!("invoke failed: {}{}", invoked.stdout, invoked.stderr))
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

    let work_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(local_stack::unique_name("e2e"));
    std::fs::create_dir_all(&work_dir).unwrap();
    let mut emulator = Emulator::start(Function::External, &work_dir)
        .await
        .unwrap();

    let binary = std::env::var_os("SYNC_E2E_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_cloudmap-sync")),
        PathBuf::from,
    );
    let mut function = spawn_group(
        Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", emulator.runtime_api())
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

    // A RUNNING event: DescribeServices (then cached), DescribeTasks, GetInstance,
    // DescribeSubnets (the zone ID, then cached), RegisterInstance.
    let (subnet, zone_id) = common::task_subnet().await;
    let event = |fixture, task, version| {
        common::in_subnet(stack.event(fixture, task, version), Some(&subnet))
    };
    proxy.reset_counts();
    let first = response(
        &emulator
            .invoke("_", &event("fargate_running.json", &tasks[0], 4))
            .await
            .unwrap(),
    );
    assert_eq!(
        (first["kind"].as_str(), writes(&first)),
        (Some("task_change"), 1)
    );
    let cold_calls = proxy.counts();
    assert_eq!(
        cold_calls.values().sum::<u64>(),
        5,
        "DescribeServices, DescribeTasks, GetInstance, DescribeSubnets, RegisterInstance: {cold_calls:?}"
    );
    let attrs = stack.attributes(&tasks[0].id).await.unwrap();
    assert_eq!(attrs[keys::LB_STATE], "RUNNING");
    assert_eq!(attrs[keys::AVAILABILITY_ZONE_ID], zone_id);
    assert_eq!(attrs["team"], "payments");

    // Steady state: another task's event, then its duplicate.
    proxy.reset_counts();
    let second = response(
        &emulator
            .invoke("_", &event("fargate_running.json", &tasks[1], 4))
            .await
            .unwrap(),
    );
    assert_eq!(writes(&second), 1);
    let event_calls = proxy.counts();
    assert_eq!(
        event_calls.values().sum::<u64>(),
        3,
        "DescribeTasks, GetInstance, RegisterInstance: {event_calls:?}"
    );
    proxy.reset_counts();
    let duplicate = response(
        &emulator
            .invoke("_", &event("fargate_running.json", &tasks[1], 4))
            .await
            .unwrap(),
    );
    assert_eq!(duplicate["decisions"][0]["action"], "stale");
    let duplicate_calls = proxy.counts();
    assert_eq!(
        duplicate_calls.get("RegisterInstance"),
        None,
        "{duplicate_calls:?}"
    );

    // Bad input is acknowledged, with no AWS call.
    proxy.reset_counts();
    let rejected = response(
        &emulator
            .invoke("_", &common::fixture_json("missing_task_arn.json"))
            .await
            .unwrap(),
    );
    assert_eq!(rejected["note"], "missing_task_arn");
    assert!(proxy.counts().is_empty());

    // Throttled Cloud Map: the invocation fails (Lambda would retry it), nothing is written.
    proxy.fail("RegisterInstance", Fault::Throttle);
    let spot_warning = event("spot_interruption_warning.json", &tasks[0], 5);
    let failed = emulator.invoke("_", &spot_warning).await.unwrap();
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
    let retried = response(&emulator.invoke("_", &spot_warning).await.unwrap());
    assert_eq!(writes(&retried), 1);
    assert_eq!(
        stack.attributes(&tasks[0].id).await.unwrap()[keys::LB_STATE],
        "DRAINING"
    );

    // The schedule: reconciliation of the cluster's service.
    proxy.reset_counts();
    let reconciled = response(
        &emulator
            .invoke("_", &common::fixture_json("scheduled.json"))
            .await
            .unwrap(),
    );
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
