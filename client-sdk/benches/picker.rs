//! Pick cost at 10, 100 and 1,000 instances with zone choice, and the cost of rebuilding the
//! tables for a new snapshot.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use cloudmap_balancer::contract::{Weight, keys};
use cloudmap_balancer::picker::{Availability, Picker, PickerConfig, SpillLevel, ZoneDemand};
use cloudmap_balancer::{CloudMapHealth, Instance, ZoneMode};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fastrand::Rng;

const ZONES: [&str; 3] = ["eu-central-1a", "eu-central-1b", "eu-central-1c"];

fn fleet(n: usize) -> Vec<Instance> {
    (0..n)
        .map(|i| {
            Instance::new(
                format!("task-{i}"),
                format!("10.0.{}.{}:50051", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap(),
            )
            .with_zone(ZONES[i % 3])
            .with_weight(Weight::saturating(100 + (i as u32 % 7) * 50))
        })
        .collect()
}

/// What Cloud Map returns for such a fleet: attribute maps as ECS and the sync Lambda write them.
fn listing(n: usize) -> Vec<(String, HashMap<String, String>)> {
    (0..n)
        .map(|i| {
            let id = format!("{i:032x}");
            let attributes: HashMap<String, String> = [
                (
                    keys::AWS_INSTANCE_IPV4,
                    format!("10.0.{}.{}", i / 250, i % 250 + 1),
                ),
                (keys::AWS_INSTANCE_PORT, "50051".to_owned()),
                (keys::AVAILABILITY_ZONE, ZONES[i % 3].to_owned()),
                (keys::REGION, "eu-central-1".to_owned()),
                (keys::ECS_CLUSTER_NAME, "prod".to_owned()),
                (keys::ECS_SERVICE_NAME, "echo".to_owned()),
                (keys::ECS_TASK_DEFINITION_FAMILY, "echo".to_owned()),
                (keys::LB_STATE, "RUNNING".to_owned()),
                (keys::LB_HEALTH, "HEALTHY".to_owned()),
                (keys::LB_WEIGHT, (100 + (i % 7) * 50).to_string()),
                (keys::LB_CPU_UNITS, "1024".to_owned()),
                (keys::LB_MEMORY_MIB, "2048".to_owned()),
                (keys::LB_CAPACITY, "FARGATE".to_owned()),
                (keys::LB_LOAD, (i % 90).to_string()),
                (
                    keys::LB_TASK_ARN,
                    format!("arn:aws:ecs:eu-central-1:111122223333:task/prod/{id}"),
                ),
                (keys::LB_TASK_VERSION, "3".to_owned()),
                (keys::LB_UPDATED_AT, "2026-11-22T14:10:00.123Z".to_owned()),
                (keys::LB_SCHEMA, "1".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            (id, attributes)
        })
        .collect()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_356_700)
}

fn config(mode: ZoneMode) -> PickerConfig {
    let mut config = PickerConfig::default();
    config.local_zone = Some(ZONES[0].to_owned());
    config.zone_mode = mode;
    config
}

fn pick(c: &mut Criterion) {
    let demand = ZoneDemand::new([
        (ZONES[0].to_owned(), 5),
        (ZONES[1].to_owned(), 3),
        (ZONES[2].to_owned(), 2),
    ]);
    let mut group = c.benchmark_group("pick");
    for n in [10usize, 100, 1000] {
        let instances = fleet(n);
        let in_flight: Vec<AtomicU32> = (0..n).map(|i| AtomicU32::new(i as u32 % 5)).collect();
        let load = |i: usize| in_flight[i].load(Ordering::Relaxed);
        // Adaptive, 40 % of the way to spreading: every pick draws the zone.
        let adaptive = Picker::build(
            &instances,
            |_| Availability::Available,
            &config(ZoneMode::Adaptive),
            None,
            now(),
        );
        let spill = SpillLevel::from_fraction(0.4);
        let mut rng = Rng::with_seed(1);
        group.bench_with_input(BenchmarkId::new("adaptive", n), &n, |b, _| {
            b.iter(|| black_box(adaptive.pick(&mut rng, spill, load)));
        });
        // Envoy's zone-aware plan from a caller fleet.
        let envoy = Picker::build(
            &instances,
            |_| Availability::Available,
            &config(ZoneMode::Adaptive),
            Some(&demand),
            now(),
        );
        group.bench_with_input(BenchmarkId::new("envoy", n), &n, |b, _| {
            b.iter(|| black_box(envoy.pick(&mut rng, SpillLevel::NONE, load)));
        });
        // No zones: weighted P2C over everything.
        let off = Picker::build(
            &instances,
            |_| Availability::Available,
            &config(ZoneMode::Off),
            None,
            now(),
        );
        group.bench_with_input(BenchmarkId::new("no-zones", n), &n, |b, _| {
            b.iter(|| black_box(off.pick(&mut rng, SpillLevel::NONE, load)));
        });
    }
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    let demand = ZoneDemand::new([
        (ZONES[0].to_owned(), 5),
        (ZONES[1].to_owned(), 3),
        (ZONES[2].to_owned(), 2),
    ]);
    for n in [100usize, 1000] {
        let instances = fleet(n);
        group.bench_with_input(BenchmarkId::new("tables", n), &n, |b, _| {
            b.iter(|| {
                black_box(Picker::build(
                    &instances,
                    |i| {
                        if i % 97 == 0 {
                            Availability::Ejected
                        } else {
                            Availability::Available
                        }
                    },
                    &config(ZoneMode::Adaptive),
                    Some(&demand),
                    now(),
                ))
            });
        });
        // From Cloud Map's attribute maps: decode every instance, then build.
        let raw = listing(n);
        group.bench_with_input(BenchmarkId::new("decode+tables", n), &n, |b, _| {
            b.iter(|| {
                let decoded: Vec<Instance> = raw
                    .iter()
                    .filter_map(|(id, attributes)| {
                        Instance::from_attributes(id.as_str(), attributes, CloudMapHealth::Healthy)
                            .ok()
                    })
                    .collect();
                black_box(Picker::build(
                    &decoded,
                    |_| Availability::Available,
                    &config(ZoneMode::Adaptive),
                    None,
                    now(),
                ))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, pick, rebuild);
criterion_main!(benches);
