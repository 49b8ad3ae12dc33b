//! What a run does: the variants, the scenarios, their timing, and the interleaved order of the
//! segments (one variant in one scenario). Pure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What users would pick, and ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Variant {
    /// (a) `cloudmap_balancer::Balancer` with its defaults, own zone fixed to the client's.
    Balancer,
    /// (b) the same balancer keeping a fixed 50 % in zone: the aws-samples Cloud Map resolver's
    /// policy (a coin flip between the own zone and the rest).
    Fixed50,
    /// (c) tonic's `Channel::balance_list` over every instance Cloud Map lists.
    BalanceList,
    /// (d) a plain tonic `Channel` to an L7 load balancer (HAProxy, `balance leastconn`, h2 to
    /// the servers) on loopback.
    Haproxy,
    /// (g) the balancer of (a), fed by the `cloudmap-xds` server instead of polling Cloud Map
    /// (the crate's `xds` feature). Only in `compare --grpcio`, not in [`Variant::ALL`].
    BalancerXds,
}

impl Variant {
    pub(crate) const ALL: [Self; 4] = [
        Self::Balancer,
        Self::Fixed50,
        Self::BalanceList,
        Self::Haproxy,
    ];

    /// `a` to `d`, as the brief and the tables name them.
    pub(crate) fn letter(self) -> char {
        match self {
            Self::Balancer => 'a',
            Self::Fixed50 => 'b',
            Self::BalanceList => 'c',
            Self::Haproxy => 'd',
            Self::BalancerXds => 'g',
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Balancer => "cloudmap-balancer (defaults)",
            Self::Fixed50 => "cloudmap-balancer, Fixed 50 % (aws-samples' policy)",
            Self::BalanceList => "tonic balance_list",
            Self::Haproxy => "HAProxy hop (leastconn)",
            Self::BalancerXds => "cloudmap-balancer via xDS (cloudmap-xds)",
        }
    }

    /// A short name for the command line and file names.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Balancer => "balancer",
            Self::Fixed50 => "fixed-50",
            Self::BalanceList => "balance-list",
            Self::Haproxy => "haproxy",
            Self::BalancerXds => "balancer-xds",
        }
    }
}

/// The conditions each variant is run under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Scenario {
    /// Every task healthy and fast.
    Balanced,
    /// One task in the client's zone (the largest) answers 20 ms slower throughout.
    SlowInstance,
    /// The client's own CPU is starved (busy threads on its core); the servers are untouched.
    ClientStarved,
    /// The client's zone answers 40 ms slower for a while, then recovers.
    SlowZone,
    /// One task in the client's zone (the largest) is SIGKILLed mid-segment; ECS deregisters it
    /// shortly after, and starts a replacement once the segment is over.
    Killed,
}

impl Scenario {
    pub(crate) const ALL: [Self; 5] = [
        Self::Balanced,
        Self::SlowInstance,
        Self::ClientStarved,
        Self::SlowZone,
        Self::Killed,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Balanced => "balanced",
            Self::SlowInstance => "one instance 20 ms slow",
            Self::ClientStarved => "client CPU-starved",
            Self::SlowZone => "local zone 40 ms slow, then recovered",
            Self::Killed => "one instance killed (SIGKILL)",
        }
    }

    /// A short name for `--scenarios`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Balanced => "balanced",
            Self::SlowInstance => "slow-instance",
            Self::ClientStarved => "starved",
            Self::SlowZone => "slow-zone",
            Self::Killed => "killed",
        }
    }

    /// The scenarios a comma-separated list of [`name`](Self::name)s names, in the run's order.
    pub(crate) fn parse_list(list: &str) -> Result<Vec<Self>, String> {
        let mut chosen = Vec::new();
        for name in list.split(',').map(str::trim) {
            let scenario = Self::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                    format!(
                        "--scenarios: no scenario {name:?} (one of {})",
                        names.join(", ")
                    )
                })?;
            chosen.push(scenario);
        }
        Ok(Self::ALL
            .into_iter()
            .filter(|s| chosen.contains(s))
            .collect())
    }
}

/// How long the parts of a segment take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Timing {
    /// Calls before measuring (connections, the balancer's first snapshot and latency baseline).
    pub(crate) warmup: Duration,
    /// Measured calls, in every scenario but the slow zone.
    pub(crate) measure: Duration,
    /// Slow zone: measured before the zone slows down.
    pub(crate) before_slow: Duration,
    /// Slow zone: how long it stays slow.
    pub(crate) slow: Duration,
    /// Slow zone: measured after it recovered.
    pub(crate) after_slow: Duration,
    /// Killed: when, into the measured part, the task is killed.
    pub(crate) kill_at: Duration,
    /// Killed: how long after the kill ECS deregisters the task's instance.
    pub(crate) deregister_after: Duration,
    /// The windows the timelines are cut into.
    pub(crate) window: Duration,
}

impl Timing {
    /// The benchmark: long enough for the slow zone's spill and return to show.
    pub(crate) const FULL: Self = Self {
        warmup: Duration::from_secs(2),
        measure: Duration::from_secs(10),
        before_slow: Duration::from_secs(5),
        slow: Duration::from_secs(15),
        after_slow: Duration::from_secs(25),
        kill_at: Duration::from_secs(3),
        deregister_after: Duration::from_secs(2),
        window: Duration::from_millis(500),
    };

    /// The smoke run: every code path, seconds in all.
    pub(crate) const SMOKE: Self = Self {
        warmup: Duration::from_millis(200),
        measure: Duration::from_millis(800),
        before_slow: Duration::from_millis(400),
        slow: Duration::from_millis(600),
        after_slow: Duration::from_millis(600),
        kill_at: Duration::from_millis(300),
        deregister_after: Duration::from_millis(200),
        window: Duration::from_millis(200),
    };

    /// The measured part of a segment of `scenario`.
    pub(crate) fn measured(&self, scenario: Scenario) -> Duration {
        match scenario {
            Scenario::SlowZone => self.before_slow + self.slow + self.after_slow,
            _ => self.measure,
        }
    }
}

/// One variant in one scenario, in one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) round: usize,
    pub(crate) scenario: Scenario,
    pub(crate) variant: Variant,
}

/// The segments in the order they run: round by round, scenario by scenario, and within a
/// scenario every variant in turn, starting one further in each round and scenario, so that
/// drift of the machine's load hits no variant more than another.
///
/// A smoke run runs every variant in the balanced scenario and the other scenarios with the
/// first and the last variant only: every code path once, in a few seconds each.
pub(crate) fn schedule(rounds: usize, variants: &[Variant], smoke: bool) -> Vec<Segment> {
    let mut segments = Vec::new();
    for round in 0..rounds {
        for (s, &scenario) in Scenario::ALL.iter().enumerate() {
            let chosen: Vec<Variant> = if smoke && scenario != Scenario::Balanced {
                let mut ends = vec![variants[0]];
                ends.extend(variants.last().filter(|&&last| last != variants[0]));
                ends
            } else {
                variants.to_vec()
            };
            for k in 0..chosen.len() {
                segments.push(Segment {
                    round,
                    scenario,
                    variant: chosen[(k + round + s) % chosen.len()],
                });
            }
        }
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_chosen_by_name_in_the_run_order() {
        assert_eq!(
            Scenario::parse_list("starved,balanced"),
            Ok(vec![Scenario::Balanced, Scenario::ClientStarved])
        );
        assert_eq!(
            Scenario::parse_list("balanced,slow-instance,starved,slow-zone,killed"),
            Ok(Scenario::ALL.to_vec())
        );
        let error = Scenario::parse_list("balanced,slow").unwrap_err();
        assert!(
            error.contains("\"slow\"") && error.contains("slow-zone"),
            "{error}"
        );
    }

    #[test]
    fn every_variant_runs_every_scenario_once_per_round_in_a_turning_order() {
        let segments = schedule(4, &Variant::ALL, false);
        assert_eq!(segments.len(), 4 * 5 * 4);
        for round in 0..4 {
            for scenario in Scenario::ALL {
                let mut order: Vec<Variant> = segments
                    .iter()
                    .filter(|s| s.round == round && s.scenario == scenario)
                    .map(|s| s.variant)
                    .collect();
                assert_eq!(order.len(), 4);
                order.sort();
                assert_eq!(order, Variant::ALL, "round {round}, {scenario:?}");
            }
        }
        // Over four rounds each variant opens the balanced scenario once.
        let mut first: Vec<Variant> = (0..4)
            .map(|round| {
                segments
                    .iter()
                    .find(|s| s.round == round && s.scenario == Scenario::Balanced)
                    .map(|s| s.variant)
                    .unwrap_or(Variant::Balancer)
            })
            .collect();
        first.sort();
        assert_eq!(first, Variant::ALL);
    }

    #[test]
    fn a_smoke_run_covers_every_variant_and_every_scenario() {
        let segments = schedule(1, &Variant::ALL, true);
        for variant in Variant::ALL {
            assert!(
                segments
                    .iter()
                    .any(|s| s.variant == variant && s.scenario == Scenario::Balanced)
            );
        }
        for scenario in Scenario::ALL {
            let variants: Vec<Variant> = segments
                .iter()
                .filter(|s| s.scenario == scenario)
                .map(|s| s.variant)
                .collect();
            assert!(variants.contains(&Variant::Balancer), "{scenario:?}");
            assert!(variants.contains(&Variant::Haproxy), "{scenario:?}");
        }
        assert_eq!(segments.len(), 4 + 4 * 2);
        // Without HAProxy the smoke run is the three others.
        let without = [Variant::Balancer, Variant::Fixed50, Variant::BalanceList];
        let segments = schedule(1, &without, true);
        assert!(segments.iter().all(|s| s.variant != Variant::Haproxy));
        assert_eq!(segments.len(), 3 + 4 * 2);
    }

    #[test]
    fn the_slow_zone_is_measured_before_during_and_after() {
        let t = Timing::FULL;
        assert_eq!(t.measured(Scenario::SlowZone), Duration::from_secs(45));
        assert_eq!(t.measured(Scenario::Killed), t.measure);
        assert!(t.kill_at + t.deregister_after < t.measure);
        let s = Timing::SMOKE;
        assert!(s.kill_at + s.deregister_after < s.measure);
    }
}
