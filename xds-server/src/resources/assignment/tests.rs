//! The assignment against the crate's picker: the same shares, the lifecycle mapped as
//! documented, and what gRPC would NACK never produced.

use std::time::{Duration, SystemTime};

use cloudmap_balancer::contract::{LbHealth, LbState, Load, Weight};
use cloudmap_balancer::picker::{Availability, Picker, PickerConfig, SpillLevel, ZoneDemand};
use cloudmap_balancer::{CloudMapHealth, Instance, ZoneMode};
use proptest::prelude::*;

use super::*;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn task(n: u8, zone: &str, weight: u32) -> Instance {
    Instance::new(
        format!("t{n}"),
        format!("10.0.0.{n}:50051").parse().unwrap(),
    )
    .with_zone(zone)
    .with_weight(Weight::saturating(weight))
}

fn zone(name: &str) -> ClientZone {
    ClientZone::parse(name)
}

fn weights(assignment: &Assignment, priority: u32) -> Vec<(String, u32)> {
    assignment
        .localities
        .iter()
        .filter(|l| l.priority == priority && l.health == EndpointHealth::Healthy)
        .map(|l| (l.instance_id.clone(), l.weight))
        .collect()
}

fn run(instances: &[Instance], client: &ClientZone, demand: Option<&ZoneDemand>) -> Assignment {
    assign(
        instances,
        client,
        demand,
        |_| Availability::Available,
        &AssignmentConfig::default(),
        now(),
    )
}

#[test]
fn zone_ids_and_names_are_told_apart() {
    assert_eq!(zone("euc1-az1").id.as_deref(), Some("euc1-az1"));
    assert_eq!(zone("use1-az4").id.as_deref(), Some("use1-az4"));
    assert_eq!(zone("use1-bos1-az1").id.as_deref(), Some("use1-bos1-az1"));
    assert_eq!(zone("eu-central-1a").name.as_deref(), Some("eu-central-1a"));
    assert_eq!(
        zone("us-east-1-bos-1a").name.as_deref(),
        Some("us-east-1-bos-1a")
    );
    assert!(zone("  ").is_unknown());
}

#[test]
fn without_a_zone_the_split_follows_weight_and_load() {
    let fleet = vec![
        task(1, "a", 100),
        task(2, "b", 200),
        task(3, "c", 400).with_load(Load::new(100).unwrap(), Some(now())),
    ];
    let assignment = run(&fleet, &ClientZone::default(), None);
    // 100 : 200 : 400 × 0.25 = 1 : 2 : 1.
    assert_eq!(
        weights(&assignment, 0),
        vec![
            ("t1".into(), 250_000),
            ("t2".into(), 500_000),
            ("t3".into(), 250_000)
        ]
    );
    assert!(weights(&assignment, 1).is_empty());
}

#[test]
fn a_zone_with_capacity_keeps_every_call_and_the_rest_wait_in_priority_one() {
    let fleet = vec![
        task(1, "a", 100),
        task(2, "a", 300),
        task(3, "b", 200),
        task(4, "c", 200),
    ];
    let demand = ZoneDemand::new([
        ("a".to_owned(), 1),
        ("b".to_owned(), 1),
        ("c".to_owned(), 1),
    ]);
    let assignment = run(&fleet, &zone("a"), Some(&demand));
    assert_eq!(
        weights(&assignment, 0),
        vec![("t1".into(), 250_000), ("t2".into(), 750_000)]
    );
    assert_eq!(
        weights(&assignment, 1),
        vec![("t3".into(), 500_000), ("t4".into(), 500_000)]
    );
}

#[test]
fn a_zone_short_of_capacity_spills_by_envoys_formula() {
    // Envoy's example: callers 40/40/20 % over A/B/C, capacity 25/50/25 %: a caller in A keeps
    // 62.5 % local and sends the rest 2:1 to B and C.
    let fleet = vec![task(1, "a", 100), task(2, "b", 200), task(3, "c", 100)];
    let demand = ZoneDemand::new([
        ("a".to_owned(), 2),
        ("b".to_owned(), 2),
        ("c".to_owned(), 1),
    ]);
    let assignment = run(&fleet, &zone("a"), Some(&demand));
    assert_eq!(
        weights(&assignment, 0),
        vec![
            ("t1".into(), 625_000),
            ("t2".into(), 250_000),
            ("t3".into(), 125_000)
        ]
    );
}

#[test]
fn the_lifecycle_maps_to_health_status_and_presence() {
    let fleet = vec![
        task(1, "a", 100),
        task(2, "a", 100).with_state(LbState::Draining),
        task(3, "a", 100).with_health(LbHealth::Unhealthy),
        task(4, "a", 100).with_cloud_map_health(CloudMapHealth::Unhealthy),
        task(5, "a", 100).with_state(LbState::Starting),
        task(6, "a", 100).with_state(LbState::Stopped),
        task(7, "a", 0),
        task(8, "a", 100),
        task(9, "a", 100),
        task(10, "a", 100),
        task(11, "a", 100),
        task(12, "a", 100),
    ];
    // Six of ten live tasks eligible: above the panic threshold.
    let assignment = run(&fleet, &ClientZone::default(), None);
    let status: Vec<(&str, EndpointHealth, u32)> = assignment
        .localities
        .iter()
        .map(|l| (l.instance_id.as_str(), l.health, l.weight))
        .collect();
    assert_eq!(
        status,
        vec![
            ("t1", EndpointHealth::Healthy, 166_667),
            ("t10", EndpointHealth::Healthy, 166_667),
            ("t11", EndpointHealth::Healthy, 166_667),
            ("t12", EndpointHealth::Healthy, 166_667),
            ("t2", EndpointHealth::Draining, 1),
            ("t3", EndpointHealth::Unhealthy, 1),
            ("t4", EndpointHealth::Unhealthy, 1),
            ("t8", EndpointHealth::Healthy, 166_667),
            ("t9", EndpointHealth::Healthy, 166_667),
        ]
    );
    assert!(!assignment.panic);
}

#[test]
fn panic_mode_serves_every_task_not_stopped_as_healthy() {
    let fleet = vec![
        task(1, "a", 100),
        task(2, "a", 100).with_state(LbState::Draining),
        task(3, "b", 100).with_state(LbState::Draining),
    ];
    let assignment = run(&fleet, &zone("a"), None);
    assert!(assignment.panic);
    assert!(
        assignment
            .localities
            .iter()
            .all(|l| l.health == EndpointHealth::Healthy && l.priority == 0)
    );
    assert_eq!(assignment.localities.len(), 3);
}

#[test]
fn an_address_twice_is_served_once() {
    let stale = Instance::new("old", "10.0.0.1:50051".parse().unwrap())
        .with_zone("a")
        .with_state(LbState::Draining);
    let fleet = vec![task(1, "a", 100), stale];
    let assignment = run(&fleet, &ClientZone::default(), None);
    assert_eq!(assignment.localities.len(), 1);
    assert_eq!(assignment.localities[0].instance_id, "t1");
    assert_eq!(assignment.duplicates, vec!["old".to_owned()]);
}

#[test]
fn the_metadata_carries_the_contract_values() {
    let fleet = vec![
        task(1, "a", 100)
            .with_zone_id("euc1-az1")
            .with_state(LbState::Running),
    ];
    let assignment = run(&fleet, &ClientZone::default(), None);
    let entry = &assignment.localities[0];
    assert_eq!(entry.zone, "euc1-az1");
    let get = |key: &str| {
        entry
            .metadata
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("LB_STATE"), Some("RUNNING"));
    assert_eq!(get("LB_WEIGHT"), Some("100"));
    assert_eq!(get("AVAILABILITY_ZONE"), Some("a"));
    assert_eq!(get("AVAILABILITY_ZONE_ID"), Some("euc1-az1"));
    assert_eq!(get("INSTANCE_ID"), Some("t1"));
    let keys: Vec<&str> = entry.metadata.iter().map(|(k, _)| *k).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "ordered, so versions are stable");
}

fn arbitrary_instance(n: u8) -> impl Strategy<Value = Instance> {
    (
        prop::sample::select(vec!["a", "b", "c"]),
        0u32..1000,
        prop::option::of(0u32..=100),
        prop::sample::select(vec![
            None,
            Some(LbState::Running),
            Some(LbState::Draining),
            Some(LbState::Starting),
        ]),
        any::<bool>(),
    )
        .prop_map(move |(zone, weight, load, state, healthy)| {
            let mut instance = task(n, zone, weight);
            if let Some(load) = load {
                instance = instance.with_load(Load::new(load).unwrap(), Some(now()));
            }
            if let Some(state) = state {
                instance = instance.with_state(state);
            }
            if !healthy {
                instance = instance.with_health(LbHealth::Unhealthy);
            }
            instance
        })
}

fn arbitrary_fleet() -> impl Strategy<Value = Vec<Instance>> {
    (1usize..12).prop_flat_map(|n| {
        (0..n)
            .map(|i| arbitrary_instance(u8::try_from(i + 1).unwrap()))
            .collect::<Vec<_>>()
    })
}

proptest! {
    /// For any fleet and client zone, the priority-0 locality weights are the shares the
    /// crate's picker gives a caller in that zone, to the rounding of one in a million; and
    /// nothing gRPC NACKs is ever produced.
    #[test]
    fn weights_are_the_pickers_shares(
        fleet in arbitrary_fleet(),
        client in prop::sample::select(vec!["", "a", "b", "d"]),
        callers in prop::collection::vec(0u64..5, 3),
    ) {
        let demand = ZoneDemand::new(["a", "b", "c"].iter().zip(&callers).map(|(z, &n)| ((*z).to_owned(), n)));
        let demand = (demand.total() > 0).then_some(&demand);
        let client = zone(client);
        let assignment = run(&fleet, &client, demand);

        let mut config = PickerConfig::default();
        config.local_zone.clone_from(&client.name);
        config.local_zone_id.clone_from(&client.id);
        config.zone_mode = ZoneMode::Adaptive;
        config.latency_aware = None;
        let picker = Picker::build(&fleet, |_| Availability::Available, &config, demand, now());
        let shares = picker.shares(SpillLevel::NONE);
        for (i, instance) in fleet.iter().enumerate() {
            let served = assignment.localities.iter().find(|l| l.instance_id == instance.id);
            if shares[i] > 0.0 {
                let served = served.expect("a task with a share is served");
                prop_assert_eq!(served.priority, 0);
                prop_assert_eq!(served.health, EndpointHealth::Healthy);
                let expected = (shares[i] * WEIGHT_TOTAL).round().max(1.0);
                prop_assert!((f64::from(served.weight) - expected).abs() < 1.0, "{} vs {}", served.weight, expected);
            } else if let Some(served) = served {
                prop_assert!(served.priority == 1 || served.health != EndpointHealth::Healthy || assignment.localities.iter().all(|l| l.priority == 0));
            }
        }
        // What gRPC NACKs: weight 0, an address twice, a priority gap, sums over 2^32.
        prop_assert!(assignment.localities.iter().all(|l| l.weight > 0));
        let mut addrs: Vec<_> = assignment.localities.iter().map(|l| l.addr).collect();
        addrs.sort();
        addrs.dedup();
        prop_assert_eq!(addrs.len(), assignment.localities.len());
        if assignment.localities.iter().any(|l| l.priority == 1) {
            prop_assert!(assignment.localities.iter().any(|l| l.priority == 0));
        }
        let sum: u64 = assignment.localities.iter().map(|l| u64::from(l.weight)).sum();
        prop_assert!(sum < 1 << 32);
    }
}
