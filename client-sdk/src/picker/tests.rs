//! The picker, exactly: seeded randomness, many picks, shares compared with what the algorithm
//! promises.

use std::time::{Duration, SystemTime};

use fastrand::Rng;
use proptest::prelude::*;

use super::*;
use crate::contract::{LbHealth, Load, Weight};
use crate::instance::CloudMapHealth;

/// One million picks: the smallest share tested (10 %) then has a standard error of 0.3 %
/// relative, so "within 1 %" holds at more than three standard errors.
const PICKS: usize = 1_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn instance(n: usize, zone: &str, weight: u32) -> Instance {
    Instance::new(
        format!("i-{n}"),
        format!("10.0.0.{}:50051", n + 1).parse().unwrap(),
    )
    .with_zone(zone)
    .with_weight(Weight::saturating(weight))
}

fn config(local: Option<&str>, mode: ZoneMode) -> PickerConfig {
    PickerConfig {
        local_zone: local.map(str::to_owned),
        zone_mode: mode,
        ..PickerConfig::default()
    }
}

fn build(instances: &[Instance], config: &PickerConfig) -> Picker {
    Picker::build(instances, |_| Availability::Available, config, None, now())
}

/// Share of picks per instance index.
fn shares(picker: &Picker, n: usize, spill: SpillLevel) -> Vec<f64> {
    let mut rng = Rng::with_seed(7);
    let mut counts = vec![0usize; n];
    for _ in 0..PICKS {
        let pick = picker.pick(&mut rng, spill, |_| 0).expect("a pick");
        counts[pick.index] += 1;
    }
    counts.iter().map(|&c| c as f64 / PICKS as f64).collect()
}

fn zone_shares(picker: &Picker, instances: &[Instance], spill: SpillLevel) -> Vec<(String, f64)> {
    let per_instance = shares(picker, instances.len(), spill);
    let mut zones: Vec<(String, f64)> = Vec::new();
    for (instance, share) in instances.iter().zip(per_instance) {
        let zone = instance.zone.clone().unwrap_or_default();
        match zones.iter_mut().find(|(z, _)| *z == zone) {
            Some((_, total)) => *total += share,
            None => zones.push((zone, share)),
        }
    }
    zones.sort_by(|a, b| a.0.cmp(&b.0));
    zones
}

#[track_caller]
fn assert_close(actual: f64, expected: f64) {
    let relative = (actual - expected).abs() / expected;
    assert!(
        relative <= 0.01,
        "share {actual:.5}, expected {expected:.5} ({:.2} % off)",
        relative * 100.0
    );
}

#[test]
fn shares_follow_weights() {
    let weights = [100, 200, 300, 400, 1000];
    let instances: Vec<Instance> = weights
        .iter()
        .enumerate()
        .map(|(n, &w)| instance(n, "a", w))
        .collect();
    let picker = build(&instances, &config(None, ZoneMode::Adaptive));
    let total: u32 = weights.iter().sum();
    for (share, w) in shares(&picker, instances.len(), SpillLevel::NONE)
        .into_iter()
        .zip(weights)
    {
        assert_close(share, f64::from(w) / f64::from(total));
    }
}

#[test]
fn envoy_documentation_example() {
    // Caller fleet 40/40/20 % across A/B/C; upstream capacity 25/50/25 %; the caller is in A.
    let instances = vec![
        instance(0, "A", 100),
        instance(1, "B", 100),
        instance(2, "B", 100),
        instance(3, "C", 100),
    ];
    let demand = ZoneDemand::new([("A".into(), 4), ("B".into(), 4), ("C".into(), 2)]);
    let picker = Picker::build(
        &instances,
        |_| Availability::Available,
        &config(Some("A"), ZoneMode::Adaptive),
        Some(&demand),
        now(),
    );
    assert!(
        !picker.is_adaptive(),
        "the caller fleet decides, not the controller"
    );
    assert!((picker.local_fraction(SpillLevel::FULL) - 0.625).abs() < 1e-9);
    let zones = zone_shares(&picker, &instances, SpillLevel::NONE);
    assert_close(zones[0].1, 0.625);
    // The remaining 37.5 % go 2:1 to B and C (residual capacity 10 % and 5 %).
    assert_close(zones[1].1, 0.375 * 2.0 / 3.0);
    assert_close(zones[2].1, 0.375 / 3.0);
    assert_ratio(zones[1].1 / zones[2].1, 2.0);
}

#[test]
fn envoy_direct_routing_when_local_capacity_covers_local_demand() {
    let instances = vec![
        instance(0, "A", 100),
        instance(1, "A", 100),
        instance(2, "B", 100),
    ];
    let demand = ZoneDemand::new([("A".into(), 1), ("B".into(), 1)]);
    let picker = Picker::build(
        &instances,
        |_| Availability::Available,
        &config(Some("A"), ZoneMode::Adaptive),
        Some(&demand),
        now(),
    );
    let zones = zone_shares(&picker, &instances, SpillLevel::NONE);
    assert_eq!(zones[0].1, 1.0);
}

#[test]
fn an_empty_local_zone_spreads_by_capacity() {
    let instances = vec![
        instance(0, "B", 100),
        instance(1, "C", 100),
        instance(2, "C", 200),
    ];
    for mode in [
        ZoneMode::Adaptive,
        ZoneMode::Fixed { local_percent: 90 },
        ZoneMode::Off,
    ] {
        let picker = build(&instances, &config(Some("A"), mode));
        let zones = zone_shares(&picker, &instances, SpillLevel::NONE);
        assert_close(zones[0].1, 0.25);
        assert_close(zones[1].1, 0.75);
    }
}

#[test]
fn an_empty_local_zone_with_a_caller_fleet_goes_by_residual_capacity() {
    // Callers 40/40/20 % across A/B/C; capacity 0/50/50 %; the caller is in A. B and C keep
    // their own callers local (c >= d), so A's calls go by residual capacity, 10 % : 30 %, and
    // every instance ends up with half of all calls (spreading by capacity would give B 60 %).
    let instances = vec![instance(0, "B", 100), instance(1, "C", 100)];
    let demand = ZoneDemand::new([("A".into(), 4), ("B".into(), 4), ("C".into(), 2)]);
    let picker = Picker::build(
        &instances,
        |_| Availability::Available,
        &config(Some("A"), ZoneMode::Adaptive),
        Some(&demand),
        now(),
    );
    assert!(!picker.has_local());
    assert!(!picker.is_adaptive());
    assert_eq!(picker.local_fraction(SpillLevel::NONE), 0.0);
    let spill: Vec<f64> = picker.zones().iter().map(|z| z.spill_share).collect();
    assert!((spill[0] - 0.25).abs() < 1e-9, "{spill:?}");
    assert!((spill[1] - 0.75).abs() < 1e-9, "{spill:?}");
    let zones = zone_shares(&picker, &instances, SpillLevel::NONE);
    assert_close(zones[0].1, 0.25);
    assert_close(zones[1].1, 0.75);
    // Without callers in the own zone the caller fleet says nothing about it: by capacity.
    let elsewhere = ZoneDemand::new([("B".into(), 4), ("C".into(), 2)]);
    let picker = Picker::build(
        &instances,
        |_| Availability::Available,
        &config(Some("A"), ZoneMode::Adaptive),
        Some(&elsewhere),
        now(),
    );
    let zones = zone_shares(&picker, &instances, SpillLevel::NONE);
    assert_close(zones[0].1, 0.5);
    assert_close(zones[1].1, 0.5);
}

#[test]
fn a_fully_ineligible_local_zone_is_not_an_error() {
    let instances = vec![
        instance(0, "A", 100).with_state(LbState::Draining),
        instance(1, "A", 100).with_health(LbHealth::Unhealthy),
        instance(2, "B", 100),
        instance(3, "B", 100),
        instance(4, "C", 100),
        instance(5, "C", 100),
    ];
    let picker = build(&instances, &config(Some("A"), ZoneMode::Adaptive));
    assert!(!picker.panic());
    let s = shares(&picker, instances.len(), SpillLevel::NONE);
    assert_eq!(s[0] + s[1], 0.0);
    for share in &s[2..] {
        assert_close(*share, 0.25);
    }
}

#[test]
fn draining_unhealthy_stopped_and_starting_instances_get_nothing() {
    let instances = vec![
        instance(0, "a", 100),
        instance(1, "a", 100).with_state(LbState::Draining),
        instance(2, "a", 100).with_health(LbHealth::Unhealthy),
        instance(3, "a", 100).with_cloud_map_health(CloudMapHealth::Unhealthy),
        instance(4, "a", 100).with_state(LbState::Stopped),
        instance(5, "a", 100).with_state(LbState::Starting),
        instance(6, "a", 100),
        instance(7, "a", 100),
        instance(8, "a", 100),
        instance(9, "a", 100),
        instance(10, "a", 100),
    ];
    let picker = build(&instances, &config(None, ZoneMode::Adaptive));
    assert!(!picker.panic(), "6 of 10 live instances are eligible");
    let s = shares(&picker, instances.len(), SpillLevel::NONE);
    for (i, share) in s.iter().enumerate().take(6).skip(1) {
        assert_eq!(*share, 0.0, "instance {i}");
    }
    let views = picker.instances();
    assert_eq!(views[1].exclusion, Some(Exclusion::Draining));
    assert_eq!(views[2].exclusion, Some(Exclusion::Unhealthy));
    assert_eq!(views[3].exclusion, Some(Exclusion::CloudMapUnhealthy));
    assert_eq!(views[4].exclusion, Some(Exclusion::Stopped));
    assert_eq!(views[5].exclusion, Some(Exclusion::Starting));
    for i in [0, 6, 7, 8, 9, 10] {
        assert_close(s[i], 1.0 / 6.0);
    }
}

#[test]
fn weight_zero_is_never_picked_even_in_panic_mode() {
    let instances = vec![
        instance(0, "a", 0),
        instance(1, "a", 100).with_health(LbHealth::Unhealthy),
        instance(2, "a", 100).with_health(LbHealth::Unhealthy),
        instance(3, "a", 100),
    ];
    let picker = build(&instances, &config(None, ZoneMode::Adaptive));
    assert!(picker.panic());
    let s = shares(&picker, instances.len(), SpillLevel::NONE);
    assert_eq!(s[0], 0.0);
    assert_eq!(picker.instances()[0].exclusion, Some(Exclusion::ZeroWeight));
}

#[test]
fn panic_mode_picks_among_everything_not_stopped_and_ignores_zones() {
    let instances = vec![
        instance(0, "a", 100),
        instance(1, "a", 100).with_state(LbState::Draining),
        instance(2, "b", 100).with_health(LbHealth::Unhealthy),
        instance(3, "b", 100).with_state(LbState::Stopped),
    ];
    // Eligible: 100 of 300 live weight, below half.
    let picker = build(&instances, &config(Some("a"), ZoneMode::Adaptive));
    assert!(picker.panic());
    assert!(!picker.has_local());
    let s = shares(&picker, instances.len(), SpillLevel::NONE);
    for share in &s[..3] {
        assert_close(*share, 1.0 / 3.0);
    }
    assert_eq!(s[3], 0.0);

    // At exactly half it is not panic.
    let half = vec![
        instance(0, "a", 100),
        instance(1, "a", 100).with_state(LbState::Draining),
    ];
    assert!(!build(&half, &config(None, ZoneMode::Adaptive)).panic());
    // A threshold of 0 never panics.
    let mut no_panic = config(None, ZoneMode::Adaptive);
    no_panic.panic_threshold = 0.0;
    assert!(!build(&instances, &no_panic).panic());
}

#[test]
fn ejected_instances_are_excluded() {
    let instances: Vec<Instance> = (0..4).map(|n| instance(n, "a", 100)).collect();
    let picker = Picker::build(
        &instances,
        |i| {
            if i == 2 {
                Availability::Ejected
            } else {
                Availability::Available
            }
        },
        &config(None, ZoneMode::Adaptive),
        None,
        now(),
    );
    let s = shares(&picker, instances.len(), SpillLevel::NONE);
    assert_eq!(s[2], 0.0);
    assert_eq!(picker.instances()[2].exclusion, Some(Exclusion::Ejected));
}

#[test]
fn nothing_to_pick_is_none() {
    let picker = build(&[], &config(Some("a"), ZoneMode::Adaptive));
    assert!(picker.is_empty());
    assert_eq!(
        picker.pick(&mut Rng::with_seed(1), SpillLevel::NONE, |_| 0),
        None
    );
    let stopped = vec![instance(0, "a", 100).with_state(LbState::Stopped)];
    let picker = build(&stopped, &config(Some("a"), ZoneMode::Adaptive));
    assert_eq!(
        picker.pick(&mut Rng::with_seed(1), SpillLevel::FULL, |_| 0),
        None
    );
}

/// A ratio of two shares that are each within 1 % is within 2 %.
#[track_caller]
fn assert_ratio(actual: f64, expected: f64) {
    let relative = (actual - expected).abs() / expected;
    assert!(
        relative <= 0.02,
        "ratio {actual:.4}, expected {expected:.4}"
    );
}

fn three_zones() -> Vec<Instance> {
    vec![
        instance(0, "a", 100),
        instance(1, "b", 100),
        instance(2, "b", 100),
        instance(3, "c", 100),
    ]
}

#[test]
fn adaptive_spill_level_moves_the_local_share_between_all_and_capacity() {
    let instances = three_zones();
    let picker = build(&instances, &config(Some("a"), ZoneMode::Adaptive));
    assert!(picker.is_adaptive());
    let none = zone_shares(&picker, &instances, SpillLevel::NONE);
    assert_eq!(none[0].1, 1.0);
    let full = zone_shares(&picker, &instances, SpillLevel::FULL);
    assert_close(full[0].1, 0.25);
    assert_close(full[1].1, 0.5);
    assert_close(full[2].1, 0.25);
    let half = zone_shares(&picker, &instances, SpillLevel::from_fraction(0.5));
    assert_close(half[0].1, 1.0 - 0.5 * 0.75);
    // The spill goes by capacity: b gets twice what c gets.
    assert_ratio(half[1].1 / half[2].1, 2.0);
    assert!((picker.local_fraction(SpillLevel::from_fraction(0.5)) - 0.625).abs() < 1e-6);
}

#[test]
fn fixed_mode_keeps_its_percentage() {
    let instances = three_zones();
    let picker = build(
        &instances,
        &config(Some("a"), ZoneMode::Fixed { local_percent: 50 }),
    );
    let zones = zone_shares(&picker, &instances, SpillLevel::FULL);
    assert_close(zones[0].1, 0.5);
    assert_close(zones[1].1, 0.5 * 2.0 / 3.0);
}

#[test]
fn off_mode_and_unknown_own_zone_ignore_zones() {
    let instances = three_zones();
    for config in [
        config(Some("a"), ZoneMode::Off),
        config(None, ZoneMode::Adaptive),
    ] {
        let picker = build(&instances, &config);
        assert!(!picker.has_local());
        let zones = zone_shares(&picker, &instances, SpillLevel::NONE);
        assert_close(zones[0].1, 0.25);
        assert_close(zones[1].1, 0.5);
    }
}

#[test]
fn reported_load_shifts_weight_within_bounds() {
    let instances = vec![
        instance(0, "a", 100).with_load(Load::new(0).unwrap(), Some(now())),
        instance(1, "a", 100).with_load(Load::new(100).unwrap(), Some(now())),
        // Stale: ignored.
        instance(2, "a", 100).with_load(
            Load::new(100).unwrap(),
            Some(now() - Duration::from_secs(3600)),
        ),
    ];
    let picker = build(&instances, &config(None, ZoneMode::Adaptive));
    let s = shares(&picker, instances.len(), SpillLevel::NONE);
    assert_close(s[0], 1000.0 / 2250.0);
    assert_close(s[1], 250.0 / 2250.0);
    assert_close(s[2], 1000.0 / 2250.0);
}

#[test]
fn missing_weights_use_the_median() {
    let mut unweighted = instance(3, "a", 1);
    unweighted.weight = None;
    let instances = vec![
        instance(0, "a", 100),
        instance(1, "a", 200),
        instance(2, "a", 300),
        unweighted,
    ];
    let picker = build(&instances, &config(None, ZoneMode::Adaptive));
    assert_eq!(picker.instances()[3].base_weight, 200);
    let s = shares(&picker, instances.len(), SpillLevel::NONE);
    assert_close(s[3], 0.25);
}

#[test]
fn two_choices_prefer_fewer_in_flight_per_weight() {
    let instances: Vec<Instance> = (0..2).map(|n| instance(n, "a", 100)).collect();
    let picker = build(&instances, &config(None, ZoneMode::Adaptive));
    let mut rng = Rng::with_seed(3);
    let busy = |i: usize| if i == 0 { 5 } else { 0 };
    let mut zero = 0;
    for _ in 0..PICKS {
        if picker.pick(&mut rng, SpillLevel::NONE, busy).unwrap().index == 0 {
            zero += 1;
        }
    }
    // The two samples are distinct, so the busy instance always meets the idle one and loses
    // (with replacement it won whenever both samples were it: a quarter of the time).
    assert_eq!(zero, 0);

    // Per unit of weight: 4 in flight on weight 400 is as loaded as 1 on weight 100.
    let weighted = vec![instance(0, "a", 400), instance(1, "a", 100)];
    let picker = build(&weighted, &config(None, ZoneMode::Adaptive));
    let even = |i: usize| if i == 0 { 4 } else { 1 };
    let s0 = (0..PICKS)
        .filter(|_| picker.pick(&mut rng, SpillLevel::NONE, even).unwrap().index == 0)
        .count();
    assert_close(s0 as f64 / PICKS as f64, 0.8);
}

#[test]
fn a_much_slower_instance_is_not_picked_and_latency_within_the_ratio_changes_nothing() {
    let instances: Vec<Instance> = (0..3).map(|n| instance(n, "a", 100)).collect();
    let latency = |slow_us: u32| {
        move |i: usize| CandidateLoad {
            in_flight: 0,
            latency_us: if i == 0 { slow_us } else { 700 },
            latency_at_us: 5_000_000,
            client_lag_us: 0,
        }
    };
    let count = |picker: &Picker, slow_us: u32| {
        let mut rng = Rng::with_seed(11);
        (0..PICKS)
            .filter(|_| {
                picker
                    .pick(&mut rng, SpillLevel::NONE, latency(slow_us))
                    .unwrap()
                    .index
                    == 0
            })
            .count() as f64
            / PICKS as f64
    };
    let aware = build(&instances, &config(None, ZoneMode::Adaptive));
    assert_eq!(count(&aware, 20_700), 0.0, "30× slower: never");
    // 1.9× slower is noise: all idle, so ties keep the first sample and shares follow weight.
    assert_close(count(&aware, 1_330), 1.0 / 3.0);
    let mut blind = config(None, ZoneMode::Adaptive);
    blind.latency_aware = None;
    let blind = build(&instances, &blind);
    assert_close(count(&blind, 20_700), 1.0 / 3.0);
}

#[test]
fn picks_report_locality_and_spill() {
    let instances = three_zones();
    let picker = build(&instances, &config(Some("a"), ZoneMode::Adaptive));
    let mut rng = Rng::with_seed(5);
    for _ in 0..10_000 {
        let pick = picker.pick(&mut rng, SpillLevel::FULL, |_| 0).unwrap();
        let local = instances[pick.index].zone.as_deref() == Some("a");
        assert_eq!(pick.locality == Locality::Local, local);
        assert_eq!(pick.spilled, !local);
        assert!(!pick.panic);
    }
}

#[test]
fn zone_views_describe_the_plan() {
    let instances = three_zones();
    let demand = ZoneDemand::new([("a".into(), 4), ("b".into(), 4), ("c".into(), 2)]);
    let picker = Picker::build(
        &instances,
        |_| Availability::Available,
        &config(Some("a"), ZoneMode::Adaptive),
        Some(&demand),
        now(),
    );
    let zones = picker.zones();
    assert_eq!(zones.len(), 3);
    assert_eq!(zones[0].zone.as_deref(), Some("a"));
    assert_eq!(zones[0].locality, Locality::Local);
    assert!((zones[1].capacity_share - 0.5).abs() < 1e-9);
    assert!((zones[1].spill_share - 2.0 / 3.0).abs() < 1e-6);
    assert!((zones[2].spill_share - 1.0 / 3.0).abs() < 1e-6);
}

fn arbitrary_instance() -> impl Strategy<Value = Instance> {
    (
        0usize..1000,
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        prop::option::of(prop::sample::select(LbState::ALL.to_vec())),
        prop::sample::select(LbHealth::ALL.to_vec()),
        prop::sample::select(vec![
            CloudMapHealth::Healthy,
            CloudMapHealth::Unhealthy,
            CloudMapHealth::Unknown,
        ]),
        prop::option::of(0u32..=10_000),
        prop::option::of(0u32..=100),
    )
        .prop_map(|(n, zone, state, health, cm, weight, load)| {
            let mut i = Instance::new(format!("i-{n}"), "127.0.0.1:1".parse().unwrap());
            i.zone = zone.map(str::to_owned);
            i.state = state;
            i.health = health;
            i.cloud_map_health = cm;
            i.weight = weight.map(Weight::saturating);
            i.load = load.and_then(Load::new);
            i
        })
}

proptest! {
    #[test]
    fn a_pick_is_always_a_candidate_and_never_stopped_or_weightless(
        instances in prop::collection::vec(arbitrary_instance(), 0..40),
        local in prop::option::of(prop::sample::select(vec!["a", "b", "c", "d"])),
        mode in prop::sample::select(vec![
            ZoneMode::Adaptive, ZoneMode::Off, ZoneMode::Fixed { local_percent: 30 },
        ]),
        spill in 0.0f64..=1.0,
        seed in any::<u64>(),
        ejected in any::<u64>(),
    ) {
        let cfg = config(local, mode);
        let availability = |i: usize| match ejected >> (i % 32 * 2) & 3 {
            1 => Availability::Ejected,
            2 => Availability::NotServing,
            _ => Availability::Available,
        };
        let picker = Picker::build(&instances, availability, &cfg, None, now());
        let mut rng = Rng::with_seed(seed);
        let views = picker.instances();
        let any_candidate = views.iter().any(|v| v.candidate);
        for _ in 0..50 {
            match picker.pick(&mut rng, SpillLevel::from_fraction(spill), |i| (i % 3) as u32) {
                Some(pick) => {
                    let view = views[pick.index];
                    prop_assert!(view.candidate);
                    prop_assert!(view.effective_weight_milli > 0);
                    prop_assert_ne!(instances[pick.index].state, Some(LbState::Stopped));
                    prop_assert_ne!(view.exclusion, Some(Exclusion::ZeroWeight));
                    if !picker.panic() {
                        prop_assert_eq!(view.exclusion, None);
                    }
                }
                None => prop_assert!(!any_candidate),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Retries: no repeat while an untried candidate exists; the local zone first; slow start.

fn zoned_fleet(n: usize) -> Vec<Instance> {
    (0..n)
        .map(|i| instance(i, ["a", "b", "c"][i % 3], 100 + (i as u32 % 4) * 100))
        .collect()
}

#[test]
fn a_retry_stays_in_the_local_zone_while_it_has_an_untried_instance() {
    let instances = zoned_fleet(9);
    let cfg = config(Some("a"), ZoneMode::Adaptive);
    let picker = Picker::build(&instances, |_| Availability::Available, &cfg, None, now());
    let mut rng = Rng::with_seed(3);
    let local: Vec<usize> = (0..9).filter(|i| i % 3 == 0).collect();
    for _ in 0..200 {
        let pick = picker
            .pick_excluding(&mut rng, SpillLevel::NONE, |_| 0, |i| i == 0)
            .unwrap();
        assert!(local.contains(&pick.index) && pick.index != 0, "{pick:?}");
        assert!(!pick.spilled);
    }
    // Every local instance tried: another zone, counted as spilled.
    let pick = picker
        .pick_excluding(&mut rng, SpillLevel::NONE, |_| 0, |i| i % 3 == 0)
        .unwrap();
    assert_ne!(pick.index % 3, 0);
    assert!(pick.spilled);
    assert_eq!(pick.locality, Locality::Remote);
    // Everything tried: any candidate again.
    assert!(
        picker
            .pick_excluding(&mut rng, SpillLevel::NONE, |_| 0, |_| true)
            .is_some()
    );
}

#[test]
fn slow_start_scales_a_new_instance_by_envoys_curve() {
    let window = Duration::from_secs(100);
    let mut cfg = config(None, ZoneMode::Off);
    cfg.slow_start = Some(SlowStart::over(window));
    let started = now() - Duration::from_secs(25);
    let instances = vec![
        instance(0, "a", 100),
        instance(1, "a", 100).with_running_since(started),
        instance(2, "a", 100),
    ];
    let picker = Picker::build(&instances, |_| Availability::Available, &cfg, None, now());
    let views = picker.instances();
    assert_eq!(views[0].slow_start_milli, 1000);
    assert_eq!(views[1].slow_start_milli, 250);
    assert_eq!(
        views[2].slow_start_milli, 1000,
        "no LB_RUNNING_SINCE: full weight"
    );
    assert!((views[1].effective_weight() - 25.0).abs() < 1e-9);
    assert!(picker.ramping());
    // Past the window, or with slow start off: full weight.
    let later = Picker::build(
        &instances,
        |_| Availability::Available,
        &cfg,
        None,
        now() + Duration::from_secs(75),
    );
    assert_eq!(later.instances()[1].slow_start_milli, 1000);
    assert!(!later.ramping());
    let off = Picker::build(
        &instances,
        |_| Availability::Available,
        &config(None, ZoneMode::Off),
        None,
        now(),
    );
    assert_eq!(off.instances()[1].slow_start_milli, 1000);
}

#[test]
fn not_serving_is_an_exclusion_that_panic_mode_overrides() {
    let instances = zoned_fleet(4);
    let cfg = config(Some("a"), ZoneMode::Adaptive);
    let picker = Picker::build(
        &instances,
        |i| {
            if i == 0 {
                Availability::NotServing
            } else {
                Availability::Available
            }
        },
        &cfg,
        None,
        now(),
    );
    assert_eq!(picker.instances()[0].exclusion, Some(Exclusion::NotServing));
    assert!(!picker.instances()[0].candidate);
    let everyone_down = Picker::build(&instances, |_| Availability::NotServing, &cfg, None, now());
    assert!(everyone_down.panic());
    assert!(everyone_down.instances().iter().all(|v| v.candidate));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// While an untried candidate exists, a retry never goes to an instance the call tried.
    #[test]
    fn retries_never_repeat_while_an_untried_candidate_exists(
        instances in prop::collection::vec(arbitrary_instance(), 0..40),
        local in prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        mode in prop::sample::select(vec![
            ZoneMode::Adaptive, ZoneMode::Off, ZoneMode::Fixed { local_percent: 70 },
        ]),
        spill in 0.0f64..=1.0,
        seed in any::<u64>(),
        tried_bits in any::<u64>(),
    ) {
        let cfg = config(local, mode);
        let picker = Picker::build(&instances, |_| Availability::Available, &cfg, None, now());
        let views = picker.instances();
        let tried = |i: usize| tried_bits >> (i % 64) & 1 == 1;
        let untried_exists = views.iter().enumerate().any(|(i, v)| v.candidate && !tried(i));
        let mut rng = Rng::with_seed(seed);
        for _ in 0..20 {
            let pick = picker.pick_excluding(
                &mut rng,
                SpillLevel::from_fraction(spill),
                |i| (i % 4) as u32,
                tried,
            );
            match pick {
                Some(pick) => {
                    prop_assert!(views[pick.index].candidate);
                    if untried_exists {
                        prop_assert!(!tried(pick.index), "repeated {}", pick.index);
                    }
                }
                None => prop_assert!(views.iter().all(|v| !v.candidate)),
            }
        }
    }
}

#[test]
fn zones_match_by_id_across_accounts_and_by_name_otherwise() {
    // The instances' account names its zones differently from the caller's.
    let instances: Vec<Instance> = [("a", "az1"), ("b", "az2"), ("c", "az3")]
        .iter()
        .enumerate()
        .map(|(n, (zone, id))| instance(n, zone, 100).with_zone_id(*id))
        .collect();
    let mut cfg = config(Some("a"), ZoneMode::Fixed { local_percent: 100 });
    cfg.local_zone_id = Some("az2".into());
    let picker = build(&instances, &cfg);
    let local: Vec<_> = picker
        .zones()
        .iter()
        .filter(|z| z.locality == Locality::Local)
        .map(|z| (z.zone.clone(), z.zone_id.clone()))
        .collect();
    assert_eq!(local, vec![(Some("b".into()), Some("az2".into()))]);
    assert_eq!(shares(&picker, 3, SpillLevel::NONE)[1], 1.0);

    // An instance without an ID takes the one its zone name carries elsewhere in the snapshot.
    let mut mixed = instances.clone();
    mixed.push(instance(3, "b", 100));
    let picker = build(&mixed, &cfg);
    let zone_b = picker
        .zones()
        .iter()
        .find(|z| z.zone.as_deref() == Some("b"))
        .unwrap();
    assert_eq!(zone_b.candidates, 2);
    assert_eq!(zone_b.locality, Locality::Local);

    // No ID on the caller's side: names.
    let by_name = build(
        &instances,
        &config(Some("a"), ZoneMode::Fixed { local_percent: 100 }),
    );
    assert_eq!(shares(&by_name, 3, SpillLevel::NONE)[0], 1.0);

    // No ID on the instances' side (a Lambda from before the key): names, as before.
    let old: Vec<Instance> = (0..3)
        .map(|n| instance(n, ["a", "b", "c"][n], 100))
        .collect();
    assert_eq!(shares(&build(&old, &cfg), 3, SpillLevel::NONE)[0], 1.0);
}

#[test]
fn caller_fleet_demand_is_matched_by_id_too() {
    // Callers in the caller's own account (ids az1..az3 for names a..c); upstream in another
    // (names shifted). Envoy's plan must see the callers' demand in the right upstream zones.
    let callers: Vec<Instance> = (0..10)
        .map(|n| {
            let (zone, id) = if n < 8 { ("a", "az1") } else { ("b", "az2") };
            instance(n, zone, 1).with_zone_id(id)
        })
        .collect();
    let demand = ZoneDemand::from_instances(&callers);
    assert_eq!(demand.total(), 10);
    assert_eq!(demand.get("a"), 8);
    let upstream: Vec<Instance> = [("x", "az1"), ("y", "az2")]
        .iter()
        .enumerate()
        .map(|(n, (zone, id))| instance(n, zone, 100).with_zone_id(*id))
        .collect();
    let mut cfg = config(Some("a"), ZoneMode::Adaptive);
    cfg.local_zone_id = Some("az1".into());
    let picker = Picker::build(
        &upstream,
        |_| Availability::Available,
        &cfg,
        Some(&demand),
        now(),
    );
    // 80 % of callers in az1, 50 % of capacity there: 62.5 % stays local (0.5 / 0.8).
    assert!((picker.local_fraction(SpillLevel::NONE) - 0.625).abs() < 1e-6);
}

/// A model of a client whose thread stalls, driving the real picker, latency estimates and
/// lag heartbeat in virtual time (microseconds): `callers` loop over calls; each instance
/// answers after its own latency plus a seeded jitter, on its own threads; the client handles
/// one event at a time (an answer, then its caller's next pick; a heartbeat beat), each costing
/// it `CLIENT_COST`, and handles nothing while stalled. Stalls last 5 to 30 ms and begin 20 to
/// 150 ms after the last one ended, at seeded moments.
mod stalled_client {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use super::super::choice::LatencyEstimate;
    use super::super::lag::ClientLag;
    use super::*;

    const MS: u64 = 1_000;
    /// What handling one answer and picking the next call costs the client's thread.
    const CLIENT_COST: u64 = 20;

    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Event {
        /// Instance `1` answers the call started at `0`.
        Answer(u64, usize),
        /// The heartbeat scheduled for this time.
        Beat,
    }

    pub(super) struct Outcome {
        /// Answers per instance.
        pub(super) served: Vec<u64>,
        /// How many stalls there were.
        pub(super) stalls: usize,
    }

    /// `calls` answered calls over instances of these weights and latencies (µs), with
    /// `callers` calls in flight; `guarded`: the heartbeat runs and the stalls' part of calls is
    /// taken off (off: as before this change, with `latency` set to match).
    pub(super) fn run(
        weights: &[u32],
        latency_us: &[u64],
        latency: LatencyAware,
        guarded: bool,
        callers: usize,
        calls: u64,
        seed: u64,
    ) -> Outcome {
        let instances: Vec<Instance> = weights
            .iter()
            .enumerate()
            .map(|(n, &w)| instance(n, "a", w))
            .collect();
        let mut config = config(Some("a"), ZoneMode::Adaptive);
        config.latency_aware = Some(latency);
        let picker = build(&instances, &config);
        let estimates: Vec<LatencyEstimate> = instances
            .iter()
            .map(|_| LatencyEstimate::default())
            .collect();
        let lag = ClientLag::default();
        let mut in_flight = vec![0u32; instances.len()];
        let mut served = vec![0u64; instances.len()];
        let mut rng = Rng::with_seed(seed);
        let mut picks = Rng::with_seed(seed ^ 0x5eed);
        // Stalls as (start, end), generated as time goes on.
        let mut stall = (50 * MS, 50 * MS + rng.u64(5 * MS..=30 * MS));
        let mut stalls = 0;
        let mut events = BinaryHeap::new();
        let mut free_at = 0u64;
        // Start at 1 ms: the clock's 0 means "never" to the estimates.
        let start = MS;
        let pick = |now: u64,
                    in_flight: &mut Vec<u32>,
                    picks: &mut Rng,
                    rng: &mut Rng,
                    events: &mut BinaryHeap<Reverse<(u64, Event)>>| {
            let client_lag_us = lag.lag_us();
            let i = picker
                .pick(picks, SpillLevel::NONE, |i| {
                    let (latency_us, latency_at_us) = estimates[i].read();
                    CandidateLoad {
                        in_flight: in_flight[i],
                        latency_us,
                        latency_at_us,
                        client_lag_us,
                    }
                })
                .unwrap()
                .index;
            in_flight[i] += 1;
            // Jitter, and now and then (one answer in 50) a server thread that was not
            // scheduled for up to 5 ms, as on a busy machine.
            let mut answer = now + latency_us[i] + rng.u64(0..=latency_us[i] / 2 + 20);
            if rng.u32(0..50) == 0 {
                answer += rng.u64(0..=5 * MS);
            }
            events.push(Reverse((answer, Event::Answer(now, i))));
        };
        for _ in 0..callers {
            pick(start, &mut in_flight, &mut picks, &mut rng, &mut events);
        }
        if guarded {
            events.push(Reverse((start, Event::Beat)));
        }
        let mut answered = 0;
        while answered < calls {
            let Reverse((at, event)) = events.pop().unwrap();
            // The client's thread takes it when free and not stalled.
            let mut now = at.max(free_at);
            while now >= stall.0 {
                if now < stall.1 {
                    now = stall.1;
                }
                stalls += 1;
                let begins = stall.1 + rng.u64(20 * MS..=150 * MS);
                stall = (begins, begins + rng.u64(5 * MS..=30 * MS));
            }
            free_at = now + CLIENT_COST;
            match event {
                Event::Beat => {
                    lag.beat(at, now);
                    events.push(Reverse((now + 5 * MS, Event::Beat)));
                }
                Event::Answer(started, i) => {
                    in_flight[i] -= 1;
                    served[i] += 1;
                    answered += 1;
                    let own = if guarded {
                        lag.own_delay(started, now)
                    } else {
                        0
                    };
                    estimates[i].record(
                        Duration::from_micros(now - started - own),
                        now,
                        lag.lag_us(),
                        &latency,
                    );
                    pick(now, &mut in_flight, &mut picks, &mut rng, &mut events);
                }
            }
        }
        Outcome { served, stalls }
    }

    /// The largest difference between a share and its weight's share, in points.
    pub(super) fn worst(served: &[u64], weights: &[u32]) -> f64 {
        let total = served.iter().sum::<u64>() as f64;
        let weight = weights.iter().map(|&w| f64::from(w)).sum::<f64>();
        served
            .iter()
            .zip(weights)
            .map(|(&s, &w)| (s as f64 / total - f64::from(w) / weight).abs() * 100.0)
            .fold(0.0, f64::max)
    }
}

/// Callers of the model, as in the scenario.
const CALLERS: usize = 8;

#[test]
fn a_stalling_client_picks_equally_fast_instances_as_in_flight_counts_alone_do() {
    // 8 callers, instances weighted 1:2:3 answering in 200 to 300 µs (one answer in 50 up to
    // 5 ms late), 20,000 calls; the client stalls for 5 to 30 ms every 20 to 150 ms. Nothing
    // is slow, so latency must change no pick: the shares are exactly those of the in-flight
    // rule, whose own distance from the weights (P2C with integer in-flight counts favours the
    // light instance a little) is not the latency-aware choice's to fix.
    let weights = [100, 200, 300];
    let fast = [200, 200, 200];
    let in_flight_only = LatencyAware {
        ratio: f64::MAX,
        ..LatencyAware::default()
    };
    let unguarded = LatencyAware {
        min_latency_gap: Duration::ZERO,
        lag_gap_factor: 0.0,
        persist: Duration::ZERO,
        ..LatencyAware::default()
    };
    let mut moved_unguarded: f64 = 0.0;
    for seed in 1..=5 {
        let run = |latency, guarded| {
            stalled_client::run(&weights, &fast, latency, guarded, CALLERS, 20_000, seed)
        };
        let baseline = run(in_flight_only, true);
        let guarded = run(LatencyAware::default(), true);
        assert!(guarded.stalls >= 8, "{} stalls", guarded.stalls);
        assert_eq!(guarded.served, baseline.served, "seed {seed}");
        let worst = stalled_client::worst(&guarded.served, &weights);
        // The same client without the guards (as before them: no gap, no persistence, stalled
        // calls timed) moves calls by the noise.
        let unguarded = run(unguarded, false);
        let moved = unguarded
            .served
            .iter()
            .zip(&baseline.served)
            .map(|(&u, &b)| (u as f64 - b as f64).abs() / 200.0)
            .fold(0.0, f64::max);
        eprintln!(
            "seed {seed}: in-flight alone and guarded {:?} ({worst:.1} points from the weights, {} stalls); unguarded {:?}, {moved:.1} points moved",
            baseline.served, guarded.stalls, unguarded.served
        );
        moved_unguarded = moved_unguarded.max(moved);
    }
    assert!(moved_unguarded > 2.0, "{moved_unguarded:.1} points");
}

#[test]
fn a_stalling_client_still_avoids_an_instance_20_ms_slower() {
    // The same client; the instance with half the weight answers 20 ms later than the others.
    let weights = [100, 200, 300];
    let slow = [200, 200, 20_200];
    let in_flight_only = LatencyAware {
        ratio: f64::MAX,
        ..LatencyAware::default()
    };
    for seed in 1..=5 {
        let run = |latency| {
            stalled_client::run(&weights, &slow, latency, true, CALLERS, 20_000, seed).served
        };
        let (aware, alone) = (run(LatencyAware::default()), run(in_flight_only));
        eprintln!("seed {seed}: latency-aware {aware:?}, in-flight alone {alone:?}");
        let share = aware[2] as f64 / aware.iter().sum::<u64>() as f64;
        assert!(share < 0.02, "seed {seed}: {aware:?}");
    }
}
