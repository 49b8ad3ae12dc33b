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

// The xDS mode (fleet/src/xds): small fleets over 4 services and 2 replicas.

use fleet::xds::report::XdsRow;
use fleet::xds::{LostWakes, Outage, XdsConfig};

fn xds(pairs: usize, scenario: Scenario) -> XdsConfig {
    let mut config = XdsConfig::new(pairs, scenario);
    config.services = 4;
    config.seed = 7;
    config
}

/// The server's poll interval plus its ±5 % jitter, plus the slowest push.
fn server_poll_and_push(config: &XdsConfig) -> Duration {
    config.server.poll_interval.mul_f64(1.05) + config.push_range().1
}

#[test]
fn xds_cloud_map_calls_do_not_depend_on_the_number_of_pairs() {
    let few = XdsRow::of(&fleet::xds::run(&xds(8, Scenario::Steady)));
    let many = XdsRow::of(&fleet::xds::run(&xds(48, Scenario::Steady)));
    assert_eq!(few.lists, many.lists, "{few:?}\n{many:?}");
    assert_eq!(few.revisions, many.revisions, "{few:?}\n{many:?}");
    // 4 services × 2 replicas, each one revision check per server poll.
    let poll = xds(8, Scenario::Steady).server.poll_interval.as_secs_f64();
    let expected = 8.0 / poll;
    assert!(
        (many.revisions.per_second / expected - 1.0).abs() < 0.03,
        "{many:?}"
    );
    assert_eq!(many.lists.throttled + many.revisions.throttled, 0);
    assert_eq!((many.to_fallback, many.pairs_without_snapshot), (0, 0));
}

#[test]
fn xds_a_deployment_reaches_every_pair_within_a_server_poll_and_a_push() {
    let config = xds(40, Scenario::RollingDeployment);
    let row = XdsRow::of(&fleet::xds::run(&config));
    let bound = server_poll_and_push(&config);
    let staleness = row.staleness.unwrap();
    assert!(staleness.lifecycle);
    assert_eq!(staleness.incomplete, 0, "{row:?}");
    assert!(staleness.max <= bound, "{staleness:?} vs {bound:?}");
    assert!(staleness.p50 >= config.push_range().0, "{staleness:?}");
    // 100 new tasks; each reaches its first pair, and every pair, within the same bound.
    let first = row.first_call.unwrap();
    assert_eq!((first.tasks, first.incomplete), (100, 0), "{first:?}");
    assert!(first.all_max <= bound + first.eligible_max, "{first:?}");
    assert!(first.first_p50 < first.all_p99, "{first:?}");
    assert_eq!(row.lists.throttled + row.revisions.throttled, 0);
    assert_eq!(
        (row.to_fallback, row.nacks, row.pairs_without_snapshot),
        (0, 0, 0)
    );
}

#[test]
fn xds_both_replicas_down_fall_back_to_cloud_map_and_back() {
    let mut config = xds(40, Scenario::RollingDeployment);
    config.outage = Some(Outage::TEN_MINUTES);
    let outcome = fleet::xds::run(&config);
    assert_eq!(
        (
            outcome.to_fallback,
            outcome.to_xds,
            outcome.on_fallback_at_end
        ),
        (40, 40, 0),
        "every pair fell back once and came back"
    );
    assert_eq!(outcome.on_fallback_peak, 40);
    let row = XdsRow::of(&outcome);
    let o = row.outage.clone().unwrap();
    // Until the lost timeout the pairs keep the last answer and nobody calls Cloud Map.
    assert_eq!(o.holding.length, config.xds.lost_timeout);
    assert_eq!(
        o.holding.lists.per_second + o.holding.revisions.per_second,
        0.0
    );
    // Then every pair polls Cloud Map itself, at least once per poll interval.
    let direct = 40.0 / config.client.poll_interval.as_secs_f64();
    assert!(o.fallback.revisions.per_second >= direct * 0.9, "{o:?}");
    // Writes made meanwhile reach every pair by polling.
    let staleness = o.staleness.unwrap();
    assert_eq!(staleness.incomplete, 0, "{o:?}");
    assert!(
        staleness.max <= config.client.poll_interval.mul_f64(1.05),
        "{staleness:?}"
    );
    // Back on xDS within one retry wait and a push of the return; then the replicas' calls
    // alone, as before.
    let back = o.all_back_after.unwrap();
    assert!(
        back <= config.xds.backoff_max.mul_f64(1.2) + server_poll_and_push(&config),
        "{back:?}"
    );
    let before = o.before.lists.per_second + o.before.revisions.per_second;
    let after = o.after.revisions.per_second;
    assert!((after / before - 1.0).abs() < 0.1, "{o:?}");
    assert_eq!(row.lists.throttled + row.revisions.throttled, 0);
    assert_eq!(row.pairs_without_snapshot, 0, "static stability");
}

#[test]
fn xds_on_the_fallback_a_pair_polls_per_failed_reconnection_or_per_poll_interval() {
    let mut config = xds(40, Scenario::Steady);
    config.outage = Some(Outage::TEN_MINUTES);
    assert_eq!(
        config.lost_wakes,
        LostWakes::NewDeadline,
        "the crate's behaviour"
    );
    let once = XdsRow::of(&fleet::xds::run(&config)).outage.unwrap();
    config.lost_wakes = LostWakes::EveryLoss;
    let every = XdsRow::of(&fleet::xds::run(&config)).outage.unwrap();
    let direct = 40.0 / poll();
    // A loss that moves no deadline wakes nobody: direct polling's rate.
    let rate = once.fallback.revisions.per_second;
    assert!((rate / direct - 1.0).abs() < 0.1, "{once:?}");
    // As the crate's XdsSource did before: every failed reconnection (every 4–6 s once the backoff
    // is at its 5 s cap) wakes the poller, which asks Cloud Map.
    let rate = every.fallback.revisions.per_second;
    let per_reconnection = 40.0 / config.xds.backoff_max.as_secs_f64();
    assert!(
        rate > 0.8 * per_reconnection && rate > 3.0 * direct,
        "{every:?}"
    );
}

#[test]
fn fleet_sim_prints_the_xds_tables() {
    let output = Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
        .args([
            "--xds",
            "--pairs",
            "20",
            "--services",
            "2",
            "--scenarios",
            "steady",
            "--outage",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("xDS mode: 2 services × 2 replicas, server poll 1.75 s"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("| pairs (services × replicas) |"),
        "{stdout}"
    );
    assert!(
        lines[4].starts_with(
            "| 20 (2 × 2) | steady, 100 tasks | 0.0 · 0.1 % | 2.3 · 0.1 % | 0 | no writes |"
        ),
        "{stdout}"
    );
    assert!(lines[5].contains("both replicas down 10 min"), "{stdout}");
    assert!(
        lines[7].starts_with("| pairs | replicas polling"),
        "{stdout}"
    );
    // Replicas polling, then nobody until the lost timeout, then the pairs.
    let cells: Vec<&str> = lines[9].split(" | ").collect();
    assert_eq!(cells[0], "| 20", "{stdout}");
    assert!(cells[1].starts_with("2.3"), "{stdout}");
    assert_eq!(cells[2], "0.0", "{stdout}");
    assert_eq!(lines.len(), 10, "{stdout}");

    let bad = Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
        .args(["--outage"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(stderr.contains("need --xds"), "{stderr}");
}
