//! The fleet model at a small size: what it prints, and that what it measures follows from the
//! client's schedule and the Lambda's decisions (so that neither the model nor what it models
//! can rot unnoticed). Small fleets, so this stays a few seconds in a debug build.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use cloudmap_balancer::discovery::DiscoveryOptions;
use fleet::cloud_map::ThrottleAnswer;
use fleet::quota::Quotas;
use fleet::report::{DOLLARS_PER_CALL, Row, SECONDS_PER_MONTH};
use fleet::{Config, Scenario, run};

/// The default poll interval, in seconds: what the figures below follow from.
fn poll() -> f64 {
    DiscoveryOptions::default().poll_interval.as_secs_f64()
}

/// A pair's monthly bill when it makes one call per poll interval.
fn one_call_per_poll() -> f64 {
    SECONDS_PER_MONTH / poll() * DOLLARS_PER_CALL
}

fn config(pairs: usize, scenario: Scenario) -> Config {
    Config {
        pairs,
        scenario,
        discovery: DiscoveryOptions::default(),
        throttle: ThrottleAnswer::RequestLimitExceeded,
        quotas: Quotas::AWS,
        seed: 11,
    }
}

#[test]
fn at_rest_every_pair_makes_one_call_per_poll_interval() {
    let row = Row::of(&run(&config(150, Scenario::Steady)));
    assert_eq!(
        row.writes, 0,
        "reconciliation of a steady service writes nothing"
    );
    // 150 pairs × one call per poll interval (a full listing replaces a revision check every
    // 300 s, as every instance carries LB_HEALTH).
    let calls = row.lists.per_second + row.revisions.per_second;
    let expected = 150.0 / poll();
    assert!(
        (calls / expected - 1.0).abs() < 0.03,
        "{calls} vs {expected}"
    );
    let lists = row.lists.per_second / (150.0 / 300.0);
    assert!((0.8..=1.2).contains(&lists), "{}", row.lists.per_second);
    assert_eq!(row.lists.throttled + row.revisions.throttled, 0);
    let per_pair = row.dollars_per_pair_month();
    assert!(
        (per_pair / one_call_per_poll() - 1.0).abs() < 0.03,
        "{per_pair}"
    );
}

#[test]
fn a_deployment_reaches_every_pair_within_one_poll_interval() {
    let row = Row::of(&run(&config(150, Scenario::RollingDeployment)));
    // ECS registers 100 new tasks and deregisters 100 old ones; the Lambda writes each task's
    // states, health and load.
    assert_eq!(row.ecs_writes, 200);
    assert!(row.writes > 400, "{row:?}");
    assert!(row.lifecycle_writes > 300, "{row:?}");
    let staleness = row.staleness.unwrap();
    assert!(staleness.lifecycle);
    assert_eq!(staleness.incomplete, 0);
    // The poll interval ± 5 % between polls: every pair has listed by 1.05 intervals after a
    // write, and the last of 150 pairs needs most of that.
    assert!(
        staleness.p99 <= Duration::from_secs_f64(poll() * 1.05),
        "{staleness:?}"
    );
    assert!(
        staleness.p50 >= Duration::from_secs_f64(poll() * 0.75),
        "{staleness:?}"
    );
    assert_eq!(row.lists.throttled + row.revisions.throttled, 0);
    // At rest a pair lists every 300 s; while the deployment moves the revision, every poll.
    assert!(
        row.lists.per_second > 2.0 * 150.0 / 300.0,
        "pairs list on most polls: {row:?}"
    );
}

#[test]
fn past_the_quota_the_fleet_slows_down_and_every_write_still_arrives() {
    // 100 pairs polling every 5 s during a deployment ask for about 20 listings a second;
    // the account here allows 7.
    let mut tight = config(100, Scenario::RollingDeployment);
    tight.quotas = Quotas::AWS.scaled(0.007);
    tight.discovery.poll_interval = Duration::from_secs(5);
    let throttled = |config: &Config| {
        let row = Row::of(&run(config));
        (row.lists.throttled + row.revisions.throttled, row)
    };
    let (aware, row) = throttled(&tight);
    assert!(aware > 0, "{row:?}");
    assert_eq!(row.staleness.unwrap().incomplete, 0, "{row:?}");
    assert_eq!(row.pairs_without_snapshot, 0, "static stability");
    // A client that takes throttling for an outage retries after 1 s and is throttled far
    // more often.
    let (blind, _) = throttled(&Config {
        throttle: ThrottleAnswer::AsOutage,
        ..tight
    });
    assert!(
        blind > aware * 3 / 2,
        "throttle-aware {aware}, outage-like {blind}"
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = Row::of(&run(&config(60, Scenario::ScaleOut)));
    let b = Row::of(&run(&config(60, Scenario::ScaleOut)));
    assert_eq!(a, b);
    assert_eq!(a.ecs_writes, 90, "90 tasks registered");
}

#[test]
fn fleet_sim_prints_the_table() {
    let output = Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
        .args([
            "--pairs",
            "100",
            "--scenarios",
            "steady,scale-out",
            "--seed",
            "4",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let describe = format!(
        "defaults: poll {} s ±5 %, full refresh 60 s (300 s with LB_HEALTH)",
        poll()
    );
    assert!(lines[0].starts_with(&describe), "{stdout}");
    assert!(lines[2].starts_with("| pairs | scenario |"), "{stdout}");
    assert!(
        lines[4].starts_with("| 100 | steady, 100 tasks | 0 (0, 0) · 0 |"),
        "{stdout}"
    );
    assert!(lines[4].contains("| 0 | no writes |"), "{stdout}");
    let per_pair = format!("| ${:.3} |", one_call_per_poll());
    assert!(lines[4].ends_with(&per_pair), "{per_pair} in {stdout}");
    // 90 new tasks: ECS registers each, the Lambda writes each one's states and health.
    let scale_out = lines[5];
    assert!(
        scale_out.starts_with("| 100 | scale-out 10 → 100 | "),
        "{stdout}"
    );
    assert!(scale_out.contains(", 90) · "), "{stdout}");
    assert!(!scale_out.contains("never reached"), "{stdout}");
    assert_eq!(lines.len(), 6, "{stdout}");

    let bad = Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
        .args(["--poll-interval", "0.5"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(stderr.contains("poll_interval"), "{stderr}");
}
