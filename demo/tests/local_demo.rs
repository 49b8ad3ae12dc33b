//! The project's end-to-end test: the local run, as a user runs it, with its JSON read the way a
//! machine reads it. Real binaries throughout: moto, six demo-server processes, the sync Lambda
//! under cargo-lambda's emulator, the balancer in a client, and `cloudmap-xds` with grpcio
//! (Python) clients.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

fn share(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn the_local_run_balances_spills_and_drains_as_documented() {
    // The Lambda's debug build by default (the test build already compiled most of it);
    // LOCAL_DEMO_LAMBDA=release (scripts/test, after building it) runs the release binary.
    let release = std::env::var("LOCAL_DEMO_LAMBDA").is_ok_and(|v| v == "release");
    let output = Command::new(env!("CARGO_BIN_EXE_local-demo"))
        .args(["--json", "--calls", "2000"])
        .args((!release).then_some("--debug-lambda"))
        .output()
        .expect("local-demo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("local-demo printed no JSON ({e}); its progress:\n{stderr}"));
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] != Value::Bool(true))
        .collect();
    assert!(
        failed.is_empty(),
        "failed checks: {failed:#?}\nprogress:\n{stderr}"
    );
    assert_eq!(report["ok"], Value::Bool(true));
    assert!(
        output.status.success(),
        "exit {:?}\n{stderr}",
        output.status
    );

    // The Cloud Map view: six tasks in three zones, each enriched by the Lambda.
    let instances = report["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 6);
    for instance in instances {
        let attributes = &instance["attributes"];
        for key in [
            "AWS_INSTANCE_IPV4",
            "AVAILABILITY_ZONE",
            "AVAILABILITY_ZONE_ID",
            "ECS_SERVICE_NAME",
            "LB_STATE",
            "LB_WEIGHT",
            "LB_LOAD",
            "LB_TASK_VERSION",
            "LB_SCHEMA",
        ] {
            assert!(attributes[key].is_string(), "{key} missing on {instance}");
        }
        assert_eq!(attributes["LB_STATE"], "RUNNING");
        assert_eq!(
            attributes["LB_TASK_VERSION"], "3",
            "the stale and duplicate events were dropped"
        );
    }

    // Phase 1: everything local, spread by weight.
    let in_zone = &report["in_zone"];
    assert_eq!(in_zone["failed"], 0);
    assert!(share(&in_zone["local_share"]) >= 0.95);
    for task in in_zone["tasks"].as_array().unwrap() {
        assert!(
            (share(&task["share"]) - share(&task["expected_share"])).abs() <= 0.05,
            "{task}"
        );
    }

    // Phase 2: spill to about the zone's capacity share, split by capacity, and back.
    let spill = &report["spill"];
    assert_eq!(spill["failed"], 0);
    assert!(spill["spilled_after_seconds"].is_number());
    assert!(
        (share(&spill["settled_local_share"]) - share(&spill["expected_settled_local_share"]))
            .abs()
            <= 0.1
    );
    assert!(spill["recovered_after_seconds"].is_number());

    // Phase 3: a drained and stopped task costs no call.
    let drain = &report["drain"];
    assert_eq!(drain["failed"], 0);
    assert_eq!(drain["server_exit_code"], 0);
    assert_eq!(drain["state_after_draining_event"], "DRAINING");
    // The health watch emptied the task within 100 ms of SIGTERM, before Cloud Map said
    // DRAINING.
    let last = drain["last_call_after_sigterm_ms"].as_u64().unwrap();
    assert!(last <= 100, "{drain}");
    assert!(
        last < drain["draining_event_after_sigterm_ms"].as_u64().unwrap(),
        "{drain}"
    );
    // grpcio (Python) through the xDS server, from the same zone: the same in-zone split by
    // weight in phase 1, and off the stopped task within 1 s of SIGTERM in phase 3 (the
    // server's health watch pushed DRAINING), before Cloud Map said DRAINING. No NACK.
    let xds = &report["xds"];
    assert_eq!(xds["in_zone"]["failed"], 0, "{xds}");
    assert_eq!(xds["in_zone"]["calls"], 2000, "{xds}");
    assert!(share(&xds["in_zone"]["local_share"]) >= 0.95, "{xds}");
    for task in xds["in_zone"]["tasks"].as_array().unwrap() {
        assert!(
            (share(&task["share"]) - share(&task["expected_share"])).abs() <= 0.05,
            "grpcio: {task}"
        );
    }
    assert_eq!(xds["drain"]["failed"], 0, "{xds}");
    assert!(
        xds["drain"]["stopped_task_calls"].as_u64().unwrap() > 0,
        "{xds}"
    );
    let last = xds["drain"]["last_call_after_sigterm_ms"].as_u64().unwrap();
    assert!(
        last <= 1000 && last < drain["draining_event_after_sigterm_ms"].as_u64().unwrap(),
        "{xds}"
    );
    assert_eq!(xds["server_summary"]["nacks"], 0, "{xds}");

    // Both names of the client's zone are known, and each zone row carries its ID.
    assert!(report["client_zone_id"].is_string(), "{report}");
    for zone in in_zone["zones"].as_array().unwrap() {
        assert!(zone["zone_id"].is_string(), "{zone}");
    }
}
