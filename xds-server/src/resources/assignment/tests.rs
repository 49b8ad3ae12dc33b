//! The assignment against the crate's picker: the same shares, the lifecycle mapped as
//! documented, and what gRPC would NACK never produced.

use std::collections::{BTreeMap, HashMap};
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
fn endpoints_carry_the_address_of_the_chosen_family() {
    let v6: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
    let v6_only = Instance::new("v6", "[2001:db8::1]:50051".parse().unwrap()).with_zone("a");
    let dual = task(2, "a", 100).with_ipv6(v6);
    let fleet = vec![v6_only, dual];
    let addrs = |family| {
        let config = AssignmentConfig {
            ip_family: family,
            ..AssignmentConfig::default()
        };
        let assignment = assign(
            &fleet,
            &ClientZone::default(),
            None,
            |_| Availability::Available,
            &config,
            now(),
        );
        assignment
            .localities
            .iter()
            .map(|l| (l.instance_id.clone(), l.addr.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let v4_first = addrs(IpFamily::Ipv4First);
    assert_eq!(v4_first["v6"], "[2001:db8::1]:50051");
    assert_eq!(v4_first["t2"], "10.0.0.2:50051");
    for family in [IpFamily::Ipv6, IpFamily::Ipv6First] {
        let chosen = addrs(family);
        assert_eq!(chosen["v6"], "[2001:db8::1]:50051");
        assert_eq!(chosen["t2"], "[2001:db8::2]:50051", "{family}");
    }
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

/// A Cloud Map instance's attributes, odd values included.
fn arbitrary_attributes(
    n: u8,
) -> impl Strategy<Value = (String, HashMap<String, String>, CloudMapHealth)> {
    use cloudmap_balancer::contract::{format_rfc3339_exact, keys};
    let time = (
        1_600_000_000u64..1_900_000_000,
        0u32..1_000_000_000,
        any::<bool>(),
    )
        .prop_map(|(s, n, whole)| {
            format_rfc3339_exact(
                SystemTime::UNIX_EPOCH
                    + Duration::new(s, if whole { n / 1_000_000 * 1_000_000 } else { n }),
            )
        });
    (
        prop::sample::select(vec!["eu-central-1a", "eu-central-1b", ""]),
        prop::option::of(prop::sample::select(vec!["euc1-az1", "euc1-az2"])),
        prop::option::of(prop::sample::select(vec![
            "RUNNING", "DRAINING", "STARTING", "STOPPED", "DRAINNG", "running",
        ])),
        prop::option::of(prop::sample::select(vec![
            "HEALTHY",
            "UNHEALTHY",
            "UNKNOWN",
            "sick",
        ])),
        prop::option::of(prop::sample::select(vec![
            "0", "1", "256", "1000", "abc", "-5",
        ])),
        prop::option::of(prop::sample::select(vec!["0", "37", "100", "250", "x"])),
        prop::option::of(time.clone()),
        prop::option::of(time),
        prop::option::of(prop::sample::select(vec!["FARGATE", "FARGATE_SPOT", "EC2"])),
        (
            1u8..4,
            prop::sample::select(vec![
                CloudMapHealth::Healthy,
                CloudMapHealth::Unhealthy,
                CloudMapHealth::Unknown,
            ]),
            any::<bool>(),
        ),
    )
        .prop_map(
            move |(
                zone,
                zone_id,
                state,
                health,
                weight,
                load,
                updated,
                running,
                capacity,
                (host, cm, schema),
            )| {
                let mut a = HashMap::new();
                // Addresses repeat across instances (a task re-registered, a stale entry).
                // IPv4-only, dual-stack or IPv6-only, by the host number.
                if host != 3 {
                    a.insert(keys::AWS_INSTANCE_IPV4.to_owned(), format!("10.0.0.{host}"));
                }
                if host >= 2 {
                    a.insert(
                        keys::AWS_INSTANCE_IPV6.to_owned(),
                        format!("2001:db8::{host}"),
                    );
                }
                a.insert(keys::AWS_INSTANCE_PORT.to_owned(), "50051".to_owned());
                let mut put = |k: &str, v: Option<&str>| {
                    if let Some(v) = v {
                        a.insert(k.to_owned(), v.to_owned());
                    }
                };
                put(
                    keys::AVAILABILITY_ZONE,
                    Some(zone).filter(|z| !z.is_empty()),
                );
                put(keys::AVAILABILITY_ZONE_ID, zone_id);
                put(keys::LB_STATE, state);
                put(keys::LB_HEALTH, health);
                put(keys::LB_WEIGHT, weight);
                put(keys::LB_LOAD, load);
                put(keys::LB_UPDATED_AT, updated.as_deref());
                put(keys::LB_RUNNING_SINCE, running.as_deref());
                put(keys::LB_CAPACITY, capacity);
                put(keys::LB_SCHEMA, schema.then_some("1"));
                put(
                    keys::LB_TASK_ARN,
                    Some(&format!("arn:aws:ecs:eu-central-1:1:task/c/t{n}")),
                );
                (format!("t{n}"), a, cm)
            },
        )
}

proptest! {
    /// The same fleet through both sources gives the same instances: decoded from Cloud Map's
    /// attributes directly, or served as the `instances/` ClusterLoadAssignment and decoded by
    /// the crate's xDS source.
    #[test]
    fn the_instances_answer_reads_back_to_the_direct_listing(
        fleet in (1usize..10).prop_flat_map(|n| {
            (0..n).map(|i| arbitrary_attributes(u8::try_from(i + 1).unwrap())).collect::<Vec<_>>()
        }),
    ) {
        let direct = cloudmap_balancer::discovery::Listing::decode(
            Some(7),
            fleet.iter().map(|(id, attributes, health)| (id.as_str(), attributes, *health)),
        );
        let assignment = instances(direct.instances());
        let cla = crate::resources::encode::load_assignment("instances/echo.ns", "eu-central-1", &assignment);
        let through_xds = cloudmap_balancer::discovery::xds::decode_listing(&cla, 7).unwrap();
        prop_assert_eq!(through_xds.instances(), direct.instances());
        // What gRPC would NACK is never produced, should a gRPC client ask for it.
        prop_assert!(assignment.localities.iter().all(|l| l.weight > 0));
    }
}
