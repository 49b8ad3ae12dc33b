//! A pick allocates nothing: counted with an instrumented global allocator. (Alone in its test
//! binary, so no other test's allocations are counted. The allocator counts every thread's,
//! though, and libtest's own main thread allocates now and then, once in a while while the
//! first window runs on a busy machine: so each case takes the best of three windows of 100,000
//! picks. A pick that allocated, even once in 100,000, would allocate in all three.)

#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use cloudmap_balancer::contract::Weight;
use cloudmap_balancer::picker::{Availability, Picker, PickerConfig, SpillLevel, ZoneDemand};
use cloudmap_balancer::{Instance, ZoneMode};
use fastrand::Rng;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn fleet(n: usize) -> Vec<Instance> {
    (0..n)
        .map(|i| {
            Instance::new(
                format!("task-{i}"),
                format!("10.0.{}.{}:50051", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap(),
            )
            .with_zone(["eu-central-1a", "eu-central-1b", "eu-central-1c"][i % 3])
            .with_weight(Weight::saturating(100 + (i as u32 % 7) * 50))
        })
        .collect()
}

#[test]
fn picks_do_not_allocate() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let demand = ZoneDemand::new([
        ("eu-central-1a".to_owned(), 5),
        ("eu-central-1b".to_owned(), 3),
        ("eu-central-1c".to_owned(), 2),
    ]);
    for n in [10, 100, 1000] {
        let instances = fleet(n);
        let in_flight: Vec<AtomicU32> = (0..n).map(|i| AtomicU32::new(i as u32 % 5)).collect();
        for (mode, demand) in [
            (ZoneMode::Adaptive, None),
            (ZoneMode::Adaptive, Some(&demand)),
            (ZoneMode::Fixed { local_percent: 50 }, None),
            (ZoneMode::Off, None),
        ] {
            let mut config = PickerConfig::default();
            config.local_zone = Some("eu-central-1a".to_owned());
            config.zone_mode = mode;
            let picker = Picker::build(
                &instances,
                |_| Availability::Available,
                &config,
                demand,
                now,
            );
            let mut rng = Rng::with_seed(9);
            let spill = SpillLevel::from_fraction(0.4);
            let mut windows = Vec::new();
            for _ in 0..3 {
                let region = Region::new(GLOBAL);
                for _ in 0..100_000 {
                    black_box(
                        picker.pick(&mut rng, spill, |i| in_flight[i].load(Ordering::Relaxed)),
                    );
                }
                let change = region.change();
                windows.push(change);
                if (change.allocations, change.reallocations) == (0, 0) {
                    break;
                }
            }
            assert!(
                windows
                    .iter()
                    .any(|c| (c.allocations, c.reallocations) == (0, 0)),
                "{n} instances, {mode:?}: every window allocated: {windows:?}"
            );
        }
    }
}
