//! The comparison harness in its smoke mode, so it cannot rot: every variant makes successful
//! calls through the real fleet (moto, six demo-server processes, HAProxy when it can be had),
//! every scenario's fault is injected and undone, and the table and the chart are written and
//! parse. Seconds per segment: this checks the harness, it measures nothing.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn the_smoke_run_calls_through_every_variant_and_writes_a_table_and_a_chart() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_compare"))
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("compare runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\n{stderr}",
        output.status
    );

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let outcome = &results["outcome"];
    let variants: Vec<&str> = outcome["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    if outcome["haproxy_skipped"].is_null() {
        assert_eq!(variants.len(), 4, "{variants:?}");
    } else {
        assert!(
            stderr.contains("NOTICE: variant (d) skipped"),
            "a skipped HAProxy is said so:\n{stderr}"
        );
        assert_eq!(variants, ["Balancer", "Fixed50", "BalanceList"]);
    }

    let records = outcome["records"].as_array().unwrap();
    for variant in &variants {
        assert!(
            records
                .iter()
                .any(|r| r["variant"] == *variant && r["scenario"] == "Balanced"),
            "{variant} ran in the balanced scenario"
        );
    }
    for scenario in [
        "Balanced",
        "SlowInstance",
        "ClientStarved",
        "SlowZone",
        "Killed",
    ] {
        assert!(
            records.iter().any(|r| r["scenario"] == scenario),
            "{scenario} ran"
        );
    }
    for record in records {
        let ok = record["result"]["ok"].as_u64().unwrap();
        assert!(ok > 0, "no successful call: {record}");
        match record["scenario"].as_str().unwrap() {
            "SlowZone" => {
                assert!(
                    record["slowed_s"].as_f64().unwrap() < record["recovered_s"].as_f64().unwrap()
                );
            }
            "Killed" => assert!(record["killed_s"].is_number(), "{record}"),
            _ => {}
        }
    }
    // The balancer keeps its calls in the client's zone while nothing is wrong, as the local
    // run checks too (≥ 95 %); the other shares depend on the machine's load.
    let balanced_a = &records
        .iter()
        .find(|r| r["variant"] == "Balancer" && r["scenario"] == "Balanced")
        .unwrap()["result"];
    let (local, ok) = (
        balanced_a["local"].as_u64().unwrap(),
        balanced_a["ok"].as_u64().unwrap(),
    );
    assert!(local * 100 >= ok * 95, "{local} of {ok} in zone");

    // The table: a row per variant and scenario that ran, each with every column.
    let markdown = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    let table: Vec<&str> = markdown
        .lines()
        .skip_while(|l| !l.starts_with("| scenario | variant |"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(table.len(), 2 + records.len(), "{markdown}");
    assert!(
        table.iter().all(|row| row.matches('|').count() == 10),
        "{markdown}"
    );
    assert!(markdown.contains("## Goals"));

    // The chart: well-formed SVG, two bars per row (in zone, p99), a line per variant that ran
    // in the slow zone.
    let svg = std::fs::read_to_string(out.path().join("compare.svg")).unwrap();
    let document = roxmltree::Document::parse(&svg).expect("compare.svg is well-formed XML");
    assert_eq!(document.root_element().tag_name().name(), "svg");
    let count = |class: &str| {
        document
            .descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .count()
    };
    assert_eq!(count("bar"), 2 * records.len());
    let slow_zone = records
        .iter()
        .filter(|r| r["scenario"] == "SlowZone")
        .count();
    assert_eq!(count("share"), slow_zone);
}
