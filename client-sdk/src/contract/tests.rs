//! Contract tests: round trips, malformed values, Cloud Map's limits, the merge rule.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sample() -> LbAttributes {
    LbAttributes {
        state: LbState::Running,
        health: LbHealth::Healthy,
        weight: Weight::saturating(400),
        cpu_units: Some(1024),
        memory_mib: Some(2048),
        capacity: Some("FARGATE_SPOT".to_owned()),
        load: Load::new(37),
        task_arn: "arn:aws:ecs:eu-central-1:123456789012:task/prod/0123456789abcdef0".to_owned(),
        task_version: Some(5),
        updated_at: UNIX_EPOCH + Duration::from_millis(1_795_356_600_123),
        running_since: None,
        lambda_owned: false,
    }
}

fn ecs_registered() -> HashMap<String, String> {
    map(&[
        (keys::AWS_INSTANCE_IPV4, "10.0.1.17"),
        (keys::AWS_INSTANCE_PORT, "50051"),
        (keys::AVAILABILITY_ZONE, "eu-central-1a"),
        (keys::REGION, "eu-central-1"),
        (keys::ECS_CLUSTER_NAME, "prod"),
        (keys::ECS_SERVICE_NAME, "echo"),
        (keys::ECS_TASK_DEFINITION_FAMILY, "echo-task"),
    ])
}

#[test]
fn encode_then_decode_round_trips_every_field() {
    let written = sample();
    let merged = merge(&ecs_registered(), &written, &[]).unwrap().attributes;
    let (read, problems) = InstanceAttributes::decode_with_problems(&merged);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(read.state, Some(written.state));
    assert_eq!(read.health, written.health);
    assert_eq!(read.weight, Some(written.weight));
    assert_eq!(read.cpu_units, written.cpu_units);
    assert_eq!(read.memory_mib, written.memory_mib);
    assert_eq!(read.capacity, written.capacity);
    assert_eq!(read.load, written.load);
    assert_eq!(read.task_arn.as_deref(), Some(written.task_arn.as_str()));
    assert_eq!(read.task_version, written.task_version);
    assert_eq!(read.updated_at, Some(written.updated_at));
    assert_eq!(read.schema, Some(SCHEMA_VERSION));
    assert!(!read.lambda_owned);
    assert_eq!(read.ipv4, Some("10.0.1.17".parse().unwrap()));
    assert_eq!(read.port, Some(50051));
    assert_eq!(read.zone.as_deref(), Some("eu-central-1a"));
    assert_eq!(read.region.as_deref(), Some("eu-central-1"));
    assert_eq!(read.cluster.as_deref(), Some("prod"));
    assert_eq!(read.service.as_deref(), Some("echo"));
    assert_eq!(read.task_family.as_deref(), Some("echo-task"));
}

#[test]
fn encoding_spells_values_as_the_console_shows_them() {
    let merged = merge(&HashMap::new(), &sample(), &[]).unwrap().attributes;
    let m = merged.as_map();
    assert_eq!(m[keys::LB_STATE], "RUNNING");
    assert_eq!(m[keys::LB_HEALTH], "HEALTHY");
    assert_eq!(m[keys::LB_WEIGHT], "400");
    assert_eq!(m[keys::LB_LOAD], "37");
    assert_eq!(m[keys::LB_TASK_VERSION], "5");
    assert_eq!(m[keys::LB_UPDATED_AT], "2026-11-22T14:10:00.123Z");
    assert_eq!(m[keys::LB_SCHEMA], "1");
    assert_eq!(m[keys::LB_CAPACITY], "FARGATE_SPOT");
    assert!(!m.contains_key(keys::LB_OWNER));
}

#[test]
fn optional_values_that_are_none_are_absent() {
    let written = LbAttributes {
        cpu_units: None,
        memory_mib: None,
        capacity: None,
        load: None,
        task_version: None,
        ..sample()
    };
    let merged = merge(&HashMap::new(), &written, &[]).unwrap().attributes;
    for key in [
        keys::LB_CPU_UNITS,
        keys::LB_MEMORY_MIB,
        keys::LB_CAPACITY,
        keys::LB_LOAD,
        keys::LB_TASK_VERSION,
        keys::LB_RUNNING_SINCE,
    ] {
        assert!(!merged.as_map().contains_key(key), "{key}");
    }
    let read = InstanceAttributes::decode(&merged);
    assert_eq!(
        (read.cpu_units, read.load, read.capacity),
        (None, None, None)
    );
}

#[test]
fn owner_mode_is_marked_and_read_back() {
    let written = LbAttributes {
        running_since: None,
        lambda_owned: true,
        ..sample()
    };
    let merged = merge(&HashMap::new(), &written, &[]).unwrap().attributes;
    assert_eq!(merged.as_map()[keys::LB_OWNER], OWNER_LAMBDA);
    assert!(InstanceAttributes::decode(&merged).lambda_owned);
    // Anything but LAMBDA is not ownership.
    assert!(!InstanceAttributes::decode(&map(&[(keys::LB_OWNER, "ECS")])).lambda_owned);
}

#[test]
fn an_empty_map_decodes_to_documented_defaults() {
    let (read, problems) = InstanceAttributes::decode_with_problems(&HashMap::new());
    assert_eq!(read, InstanceAttributes::default());
    assert!(problems.is_empty());
    assert_eq!(read.state, None, "absent state: no lifecycle data");
    assert_eq!(read.health, LbHealth::Unknown);
    assert_eq!(
        read.weight, None,
        "absent weight: the client uses the median"
    );
}

#[test]
fn malformed_values_decode_to_defaults_and_are_reported() {
    let cases: &[(&str, &str)] = &[
        (keys::AWS_INSTANCE_IPV4, "10.0.1"),
        (keys::AWS_INSTANCE_IPV4, "::1"),
        (keys::AWS_INSTANCE_IPV4, "10.0.1.256"),
        (keys::AWS_INSTANCE_PORT, "0"),
        (keys::AWS_INSTANCE_PORT, "65536"),
        (keys::AWS_INSTANCE_PORT, "-1"),
        (keys::AWS_INSTANCE_PORT, "http"),
        (keys::LB_STATE, "PAUSED"),
        (keys::LB_STATE, ""),
        (keys::LB_HEALTH, "GREEN"),
        (keys::LB_WEIGHT, "abc"),
        (keys::LB_WEIGHT, "-5"),
        (keys::LB_WEIGHT, "12.5"),
        (keys::LB_WEIGHT, "1e3"),
        (keys::LB_WEIGHT, ""),
        (keys::LB_WEIGHT, "0x10"),
        (keys::LB_LOAD, "high"),
        (keys::LB_LOAD, "-1"),
        (keys::LB_LOAD, "NaN"),
        (keys::LB_CPU_UNITS, "null"),
        (keys::LB_MEMORY_MIB, "2 GiB"),
        (keys::LB_TASK_VERSION, "v3"),
        (keys::LB_TASK_VERSION, "99999999999999999999999"),
        (keys::LB_UPDATED_AT, "yesterday"),
        (keys::LB_UPDATED_AT, "1795356600"),
        (keys::LB_SCHEMA, "one"),
    ];
    for &(key, value) in cases {
        let attributes = map(&[(key, value)]);
        let (read, problems) = InstanceAttributes::decode_with_problems(&attributes);
        let expected = InstanceAttributes::default();
        assert_eq!(
            read, expected,
            "{key}={value:?} should decode as if missing"
        );
        assert_eq!(problems.len(), 1, "{key}={value:?}: {problems:?}");
        assert_eq!(problems[0].key, key);
        assert_eq!(problems[0].kind, ProblemKind::Ignored);
        assert!(problems[0].to_string().contains(key));
    }
}

#[test]
fn out_of_range_numbers_are_clamped_not_dropped() {
    let (read, problems) = InstanceAttributes::decode_with_problems(&map(&[
        (keys::LB_WEIGHT, "20000"),
        (keys::LB_LOAD, "250"),
    ]));
    assert_eq!(read.weight, Some(Weight::MAX));
    assert_eq!(read.load, Load::new(100));
    assert_eq!(problems.len(), 2);
    assert!(problems.iter().all(|p| p.kind == ProblemKind::Clamped));

    let huge = "9".repeat(40);
    let read = InstanceAttributes::decode(&map(&[(keys::LB_WEIGHT, &huge)]));
    assert_eq!(read.weight, Some(Weight::MAX));
}

#[test]
fn values_are_trimmed_and_case_insensitive() {
    let read = InstanceAttributes::decode(&map(&[
        (keys::LB_STATE, " draining "),
        (keys::LB_HEALTH, "unhealthy\t"),
        (keys::LB_WEIGHT, " 0 "),
        (keys::AWS_INSTANCE_IPV4, " 10.1.2.3"),
        (keys::AWS_INSTANCE_PORT, "8080 "),
        (keys::AVAILABILITY_ZONE, "  "),
    ]));
    assert_eq!(read.state, Some(LbState::Draining));
    assert_eq!(read.health, LbHealth::Unhealthy);
    assert_eq!(read.weight, Some(Weight::ZERO));
    assert_eq!(read.ipv4, Some("10.1.2.3".parse().unwrap()));
    assert_eq!(read.port, Some(8080));
    assert_eq!(read.zone, None, "a blank zone is no zone");
}

#[test]
fn a_newer_schema_is_decoded_and_reported() {
    let (read, problems) = InstanceAttributes::decode_with_problems(&map(&[
        (keys::LB_SCHEMA, "2"),
        (keys::LB_STATE, "RUNNING"),
    ]));
    assert_eq!(read.schema, Some(2));
    assert_eq!(read.state, Some(LbState::Running));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].kind, ProblemKind::NewerSchema);
}

#[test]
fn problem_values_are_truncated() {
    let long = "x".repeat(500);
    let (_, problems) = InstanceAttributes::decode_with_problems(&map(&[(keys::LB_WEIGHT, &long)]));
    assert_eq!(problems[0].value.len(), 64);
}

#[test]
fn merge_keeps_every_key_it_does_not_own_exactly() {
    let mut existing = ecs_registered();
    existing.insert("team".into(), "payments".into());
    existing.insert("lb_state".into(), "lower-case keys are not ours".into());
    existing.insert("LB_FUTURE_KEY".into(), "kept".into());
    existing.insert("EMPTY".into(), String::new());
    let merged = merge(&existing, &sample(), &[]).unwrap().attributes;
    for (key, value) in &existing {
        assert_eq!(merged.as_map().get(key), Some(value), "{key}");
    }
}

#[test]
fn merge_replaces_every_owned_key_and_drops_stale_ones() {
    let mut existing = ecs_registered();
    existing.insert(keys::LB_STATE.into(), "STARTING".into());
    existing.insert(keys::LB_LOAD.into(), "90".into());
    existing.insert(keys::LB_OWNER.into(), "LAMBDA".into());
    let written = LbAttributes {
        load: None,
        ..sample()
    };
    let merged = merge(&existing, &written, &[]).unwrap().attributes;
    assert_eq!(merged.as_map()[keys::LB_STATE], "RUNNING");
    assert!(
        !merged.as_map().contains_key(keys::LB_LOAD),
        "load now unknown"
    );
    assert!(!merged.as_map().contains_key(keys::LB_OWNER));
}

#[test]
fn merge_fills_only_missing_or_blank_keys() {
    let fill = [
        (keys::AVAILABILITY_ZONE, "eu-central-1b".to_owned()),
        (keys::AWS_INSTANCE_IPV4, "10.9.9.9".to_owned()),
    ];
    let merged = merge(&ecs_registered(), &sample(), &fill)
        .unwrap()
        .attributes;
    assert_eq!(
        merged.as_map()[keys::AVAILABILITY_ZONE],
        "eu-central-1a",
        "ECS's zone wins"
    );
    assert_eq!(merged.as_map()[keys::AWS_INSTANCE_IPV4], "10.0.1.17");

    let blank_zone = map(&[(keys::AVAILABILITY_ZONE, " ")]);
    let merged = merge(&blank_zone, &sample(), &fill).unwrap().attributes;
    assert_eq!(merged.as_map()[keys::AVAILABILITY_ZONE], "eu-central-1b");
    assert_eq!(merged.as_map()[keys::AWS_INSTANCE_IPV4], "10.9.9.9");
}

#[test]
fn same_as_ignores_the_listed_keys_only() {
    let existing = merge(&ecs_registered(), &sample(), &[]).unwrap().attributes;
    let existing: HashMap<_, _> = existing.into_map().into_iter().collect();
    let later = LbAttributes {
        updated_at: sample().updated_at + Duration::from_secs(60),
        ..sample()
    };
    let merged = merge(&existing, &later, &[]).unwrap().attributes;
    assert!(merged.same_as(&existing, &[keys::LB_UPDATED_AT]));
    assert!(!merged.same_as(&existing, &[]));

    let drained = LbAttributes {
        state: LbState::Draining,
        ..later
    };
    let merged = merge(&existing, &drained, &[]).unwrap().attributes;
    assert!(!merged.same_as(&existing, &[keys::LB_UPDATED_AT]));

    let mut fewer = existing.clone();
    fewer.remove(keys::REGION);
    assert!(
        !merge(&existing, &sample(), &[])
            .unwrap()
            .attributes
            .same_as(&fewer, &[])
    );
}

fn custom(n: usize) -> BTreeMap<String, String> {
    (0..n).map(|i| (format!("K{i}"), "v".to_owned())).collect()
}

#[test]
fn thirty_custom_attributes_pass_thirty_one_are_refused() {
    assert!(AttributeSet::new(custom(30)).is_ok());
    let err = AttributeSet::new(custom(31)).unwrap_err();
    assert_eq!(err, LimitError::TooManyAttributes { count: 31, max: 30 });
    assert!(err.to_string().contains("at most 30"));
}

#[test]
fn reserved_keys_do_not_count_towards_thirty() {
    let mut attributes = custom(30);
    attributes.insert(keys::AWS_INSTANCE_IPV4.into(), "10.0.0.1".into());
    attributes.insert(keys::AWS_INSTANCE_PORT.into(), "80".into());
    assert!(AttributeSet::new(attributes).is_ok());
}

#[test]
fn past_thirty_optional_keys_go_first_and_what_cannot_go_is_refused() {
    // 15 user keys + ECS's 5 custom keys + our 11 = 31: the ARN goes, the rest is written.
    let mut existing = ecs_registered();
    existing.extend((0..15).map(|i| (format!("user{i}"), "x".to_owned())));
    let merged = merge(&existing, &sample(), &[]).unwrap();
    assert_eq!(
        merged.omitted,
        [Omitted {
            key: keys::LB_TASK_ARN.into(),
            reason: OmitReason::TooManyAttributes
        }]
    );
    assert_eq!(merged.attributes.as_map()[keys::LB_STATE], "RUNNING");
    assert_eq!(merged.attributes.as_map()["user14"], "x");

    // 20 user keys: even without every optional key (31) it does not fit. Users' keys are never
    // dropped, so nothing is written.
    existing.extend((15..20).map(|i| (format!("user{i}"), "x".to_owned())));
    let err = merge(&existing, &sample(), &[]).unwrap_err();
    assert!(
        matches!(err, LimitError::TooManyAttributes { count: 31, max: 30 }),
        "{err}"
    );
}

#[test]
fn past_the_total_length_optional_keys_go_in_order() {
    let plain = merge(&ecs_registered(), &sample(), &[]).unwrap().attributes;
    let used: usize = plain.as_map().iter().map(|(k, v)| k.len() + v.len()).sum();
    // User values that leave `over` characters too many, in values of at most 1,000.
    let crowded = |over: usize| {
        let mut existing = ecs_registered();
        let mut missing = limits::MAX_TOTAL_LEN - used + over;
        for i in 0.. {
            let key = format!("u{i}");
            let len = missing.saturating_sub(key.len()).min(1000);
            missing -= key.len() + len;
            existing.insert(key, "x".repeat(len));
            if missing == 0 {
                break;
            }
        }
        existing
    };
    // 10 too many: the ARN (the first optional key) goes, nothing else.
    let merged = merge(&crowded(10), &sample(), &[]).unwrap();
    assert_eq!(
        merged.omitted,
        [Omitted {
            key: keys::LB_TASK_ARN.into(),
            reason: OmitReason::TotalTooLong
        }]
    );
    let total: usize = merged
        .attributes
        .as_map()
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert!(total <= limits::MAX_TOTAL_LEN, "{total}");
    // More than the ARN: the capacity goes next.
    let merged = merge(&crowded(85), &sample(), &[]).unwrap();
    let dropped: Vec<&str> = merged.omitted.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(dropped, [keys::LB_TASK_ARN, keys::LB_CAPACITY]);
    assert!(merged.attributes.as_map().contains_key(keys::LB_STATE));

    // More than every optional key: no dropping of ours makes room.
    assert!(matches!(
        merge(&crowded(400), &sample(), &[]),
        Err(LimitError::TotalTooLong { .. })
    ));
}

#[test]
fn an_optional_value_cloud_map_refuses_is_left_out_and_the_rest_written() {
    let odd = LbAttributes {
        capacity: Some("FARGATE_SPÖT".into()),
        task_arn: format!("arn:aws:ecs:eu-central-1:1:task/{}/abc", "c".repeat(1100)),
        ..sample()
    };
    let fill = [(keys::AVAILABILITY_ZONE_ID, "euc1\naz2".to_owned())];
    let merged = merge(&ecs_registered(), &odd, &fill).unwrap();
    assert_eq!(
        merged.omitted,
        [
            Omitted {
                key: keys::LB_TASK_ARN.into(),
                reason: OmitReason::ValueTooLong
            },
            Omitted {
                key: keys::LB_CAPACITY.into(),
                reason: OmitReason::InvalidValue
            },
            Omitted {
                key: keys::AVAILABILITY_ZONE_ID.into(),
                reason: OmitReason::InvalidValue
            },
        ]
    );
    let m = merged.attributes.as_map();
    for key in [
        keys::LB_TASK_ARN,
        keys::LB_CAPACITY,
        keys::AVAILABILITY_ZONE_ID,
    ] {
        assert!(!m.contains_key(key), "{key}");
    }
    assert_eq!(m[keys::LB_STATE], "RUNNING");
    assert_eq!(m[keys::LB_WEIGHT], "400");
    assert_eq!(m[keys::LB_CPU_UNITS], "1024");

    // A required key is never left out: a value it could not have is refused as a whole. (The
    // typed fields cannot produce one; a caller's `if_missing` address could.)
    let bad_address = [(keys::AWS_INSTANCE_IPV4, " 10.0.0.1".to_owned())];
    assert!(matches!(
        merge(&HashMap::new(), &sample(), &bad_address),
        Err(LimitError::InvalidValue { .. })
    ));
}

#[test]
fn key_limits() {
    let ok_key = "k".repeat(255);
    assert!(AttributeSet::new(BTreeMap::from([(ok_key, "v".into())])).is_ok());
    for bad in [
        "k".repeat(256),
        String::new(),
        "has space".into(),
        "tab\t".into(),
        "é".into(),
    ] {
        let err = AttributeSet::new(BTreeMap::from([(bad.clone(), "v".into())])).unwrap_err();
        assert!(
            matches!(err, LimitError::InvalidKey { max: 255, .. }),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn value_limits() {
    let at_limit = BTreeMap::from([("K".into(), "v".repeat(1024))]);
    assert!(AttributeSet::new(at_limit).is_ok());
    let err = AttributeSet::new(BTreeMap::from([("K".into(), "v".repeat(1025))])).unwrap_err();
    assert_eq!(
        err,
        LimitError::ValueTooLong {
            key: "K".into(),
            len: 1025,
            max: 1024
        }
    );

    // The API reference's pattern: printable ASCII; spaces and tabs, but not first.
    for ok in ["a b ", "a\tb", "", "~"] {
        assert!(
            AttributeSet::new(BTreeMap::from([("K".into(), ok.into())])).is_ok(),
            "{ok:?}"
        );
    }
    for (bad, position) in [
        ("line\nbreak", 4),
        (" a b", 0),
        ("\tx", 0),
        ("zoné", 3),
        ("\u{7f}", 0),
    ] {
        let err = AttributeSet::new(BTreeMap::from([("K".into(), bad.into())])).unwrap_err();
        assert_eq!(
            err,
            LimitError::InvalidValue {
                key: "K".into(),
                position
            },
            "{bad:?}"
        );
    }
}

#[test]
fn total_limit() {
    // Five keys of 1 character with values of 1000: 5005 characters.
    let attributes: BTreeMap<_, _> = ["A", "B", "C", "D", "E"]
        .iter()
        .map(|k| ((*k).to_owned(), "v".repeat(1000)))
        .collect();
    let err = AttributeSet::new(attributes).unwrap_err();
    assert_eq!(
        err,
        LimitError::TotalTooLong {
            total: 5005,
            max: 5000
        }
    );

    let attributes: BTreeMap<_, _> = ["A", "B", "C", "D", "E"]
        .iter()
        .map(|k| ((*k).to_owned(), "v".repeat(999)))
        .collect();
    assert!(AttributeSet::new(attributes).is_ok());
}

#[test]
fn instance_ids() {
    for ok in [
        "3f9c2a7e1b5d4c8a9e6f0b1d2c3a4e5f",
        "9f8e-7d6c",
        "a_b/c:d.e@f-g",
        &"i".repeat(64),
    ] {
        assert!(limits::is_instance_id(ok), "{ok}");
    }
    for bad in ["", &"i".repeat(65), "has space", "zoné", "a+b"] {
        assert!(!limits::is_instance_id(bad), "{bad}");
    }
}

fn arbitrary_lb_attributes() -> impl Strategy<Value = LbAttributes> {
    (
        (
            prop::sample::select(LbState::ALL.to_vec()),
            prop::sample::select(LbHealth::ALL.to_vec()),
        ),
        (
            0u32..=10_000,
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u32>()),
        ),
        (
            prop::option::of("[A-Z_]{1,20}"),
            prop::option::of(0u32..=100),
        ),
        (
            "arn:aws:ecs:[a-z0-9-]{1,20}:[0-9]{12}:task/[a-z]{1,10}/[0-9a-f]{32}",
            prop::option::of(any::<u64>()),
        ),
        (0u64..8_000_000_000_000, any::<bool>()),
    )
        .prop_map(
            |((state, health), (w, cpu, mem), (capacity, load), (arn, version), (ms, owned))| {
                LbAttributes {
                    state,
                    health,
                    weight: Weight::saturating(w),
                    cpu_units: cpu,
                    memory_mib: mem,
                    capacity,
                    load: load.and_then(Load::new),
                    task_arn: arn,
                    task_version: version,
                    updated_at: UNIX_EPOCH + Duration::from_millis(ms),
                    running_since: None,
                    lambda_owned: owned,
                }
            },
        )
}

proptest! {
    #[test]
    fn decode_never_panics_on_arbitrary_maps(
        attributes in prop::collection::hash_map("\\PC{0,20}", "\\PC{0,40}", 0..40),
        known in prop::collection::hash_map(
            prop::sample::select(keys::LAMBDA_OWNED.iter().chain(&[
                keys::AWS_INSTANCE_IPV4, keys::AWS_INSTANCE_PORT, keys::AVAILABILITY_ZONE,
            ]).copied().collect::<Vec<_>>()),
            "\\PC{0,40}",
            0..16,
        ),
    ) {
        let mut attributes = attributes;
        attributes.extend(known.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let (decoded, problems) = InstanceAttributes::decode_with_problems(&attributes);
        prop_assert_eq!(&decoded, &InstanceAttributes::decode(&attributes));
        prop_assert!(problems.len() <= attributes.len());
    }

    #[test]
    fn any_lb_attributes_round_trip(written in arbitrary_lb_attributes()) {
        let merged = merge(&HashMap::new(), &written, &[]).unwrap().attributes;
        let (read, problems) = InstanceAttributes::decode_with_problems(&merged);
        prop_assert!(problems.is_empty());
        prop_assert_eq!(read.state, Some(written.state));
        prop_assert_eq!(read.health, written.health);
        prop_assert_eq!(read.weight, Some(written.weight));
        prop_assert_eq!(read.cpu_units, written.cpu_units);
        prop_assert_eq!(read.memory_mib, written.memory_mib);
        prop_assert_eq!(read.capacity, written.capacity);
        prop_assert_eq!(read.load, written.load);
        prop_assert_eq!(read.task_arn, Some(written.task_arn));
        prop_assert_eq!(read.task_version, written.task_version);
        prop_assert_eq!(read.updated_at, Some(written.updated_at));
        prop_assert_eq!(read.lambda_owned, written.lambda_owned);
    }

    #[test]
    fn merge_preserves_foreign_keys_and_is_idempotent(
        foreign in prop::collection::hash_map("[A-Za-z][A-Za-z0-9_:./-]{0,30}", "([!-~][ -~]{0,59})?", 0..12),
        written in arbitrary_lb_attributes(),
    ) {
        let foreign: HashMap<String, String> = foreign
            .into_iter()
            .filter(|(k, _)| !keys::LAMBDA_OWNED.contains(&k.as_str()))
            .collect();
        let once = merge(&foreign, &written, &[]).unwrap().attributes;
        for (key, value) in &foreign {
            prop_assert_eq!(once.as_map().get(key), Some(value));
        }
        let as_hash: HashMap<_, _> = once.as_map().clone().into_iter().collect();
        let twice = merge(&as_hash, &written, &[]).unwrap().attributes;
        prop_assert_eq!(once, twice);
    }
}
