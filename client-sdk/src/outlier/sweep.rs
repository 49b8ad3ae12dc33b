//! The interval sweep: A50's success-rate and failure-percentage algorithms over one interval's
//! counts. Pure: the caller passes the counts and the random number generator.

use fastrand::Rng;

use super::{EjectionReason, OutlierOptions};

/// One instance in a sweep: its calls in the interval that ended, and whether it is ejected now
/// (for any reason).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HostCounts {
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) ejected: bool,
}

impl HostCounts {
    fn volume(&self) -> u64 {
        self.successes + self.failures
    }

    #[allow(clippy::cast_precision_loss)] // call counts far below 2^52
    fn success_rate(&self) -> f64 {
        self.successes as f64 / self.volume().max(1) as f64
    }
}

/// The instances (indices into `hosts`) to eject now, with the algorithm that found them, in
/// A50's order: success rate first, then failure percentage. An ejection must leave at most
/// `max_ejection_percent` of `hosts` ejected, counting those ejected before and by this sweep,
/// except that one instance may always be ejected when none is. (A50's text stops only once the
/// ejected share is *above* the cap, which lets a 10 % cap eject 2 of 10; Envoy stops at the cap
/// and makes the same one-instance exception. This follows Envoy, so 10 % means at most 10 %.)
pub(crate) fn sweep(
    hosts: &[HostCounts],
    options: &OutlierOptions,
    rng: &mut Rng,
) -> Vec<(usize, EjectionReason)> {
    let mut ejected: Vec<bool> = hosts.iter().map(|h| h.ejected).collect();
    let mut found = Vec::new();
    let over_cap = |ejected: &[bool]| {
        let count = ejected.iter().filter(|&&e| e).count();
        count > 0 && (count + 1) * 100 > hosts.len() * usize::from(options.max_ejection_percent)
    };
    let mut eject = |i: usize, enforcement: u8, reason, ejected: &mut Vec<bool>| {
        if rng.u8(0..100) < enforcement {
            ejected[i] = true;
            found.push((i, reason));
        }
    };

    if let Some(sr) = &options.success_rate {
        let volume = u64::from(sr.request_volume);
        let rates: Vec<f64> = hosts
            .iter()
            .filter(|h| h.volume() >= volume)
            .map(HostCounts::success_rate)
            .collect();
        if !rates.is_empty() && rates.len() >= usize::try_from(sr.minimum_hosts).unwrap_or(0) {
            #[allow(clippy::cast_precision_loss)] // at most a thousand instances
            let n = rates.len() as f64;
            let mean = rates.iter().sum::<f64>() / n;
            let variance = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
            let threshold = mean - variance.sqrt() * f64::from(sr.stdev_factor) / 1000.0;
            for (i, host) in hosts.iter().enumerate() {
                if over_cap(&ejected) {
                    break;
                }
                if ejected[i] || host.volume() < volume {
                    continue;
                }
                if host.success_rate() < threshold {
                    eject(
                        i,
                        sr.enforcement_percentage,
                        EjectionReason::SuccessRate,
                        &mut ejected,
                    );
                }
            }
        }
    }

    if let Some(fp) = &options.failure_percentage
        && hosts.len() >= usize::try_from(fp.minimum_hosts).unwrap_or(0)
    {
        let volume = u64::from(fp.request_volume);
        for (i, host) in hosts.iter().enumerate() {
            if over_cap(&ejected) {
                break;
            }
            if ejected[i] || host.volume() < volume {
                continue;
            }
            // failures / volume >= threshold / 100, in integers.
            if host.failures * 100 >= u64::from(fp.threshold) * host.volume() {
                eject(
                    i,
                    fp.enforcement_percentage,
                    EjectionReason::FailurePercentage,
                    &mut ejected,
                );
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outlier::{FailurePercentageEjection, SuccessRateEjection};

    fn host(successes: u64, failures: u64) -> HostCounts {
        HostCounts {
            successes,
            failures,
            ejected: false,
        }
    }

    fn run(hosts: &[HostCounts], options: &OutlierOptions) -> Vec<(usize, EjectionReason)> {
        sweep(hosts, options, &mut Rng::with_seed(1))
    }

    #[test]
    fn success_rate_finds_the_statistical_outlier() {
        // Nine instances at 99-100 %, one at 80 %: mean ~97.9 %, stdev ~5.7 points, threshold
        // ~87 %.
        let mut hosts = vec![host(200, 0); 9];
        hosts[3] = host(198, 2);
        hosts.push(host(160, 40));
        let options = OutlierOptions {
            failure_percentage: None,
            ..OutlierOptions::default()
        };
        assert_eq!(
            run(&hosts, &options),
            vec![(9, EjectionReason::SuccessRate)]
        );
        // Too few instances with enough volume: nothing.
        let few: Vec<HostCounts> = hosts
            .iter()
            .enumerate()
            .map(|(i, &h)| if i < 6 { host(10, 0) } else { h })
            .collect();
        assert_eq!(run(&few, &options), vec![]);
    }

    #[test]
    fn failure_percentage_needs_hosts_and_volume() {
        let options = OutlierOptions {
            success_rate: None,
            ..OutlierOptions::default()
        };
        // One of six fails 90 % of 100 calls: ejected.
        let mut six = vec![host(100, 0); 6];
        six[2] = host(10, 90);
        assert_eq!(
            run(&six, &options),
            vec![(2, EjectionReason::FailurePercentage)]
        );
        // Exactly at the threshold counts; below does not.
        six[2] = host(15, 85);
        assert_eq!(run(&six, &options).len(), 1);
        six[2] = host(16, 84);
        assert_eq!(run(&six, &options).len(), 0);
        // Below the request volume (50): not judged.
        six[2] = host(0, 49);
        assert_eq!(run(&six, &options).len(), 0);
        // Four instances: below minimum_hosts, nothing, however bad.
        let four = vec![host(0, 500); 4];
        assert_eq!(run(&four, &options).len(), 0);
        // A zone-affine client: only the 3 local instances of a fleet of 6 see calls; the
        // failing one is still judged (the minimum counts instances, not instances with calls).
        let zoned = [
            host(300, 0),
            host(0, 300),
            host(300, 0),
            host(0, 0),
            host(0, 0),
            host(0, 0),
        ];
        assert_eq!(
            run(&zoned, &options),
            vec![(1, EjectionReason::FailurePercentage)]
        );
    }

    #[test]
    fn the_cap_counts_every_ejected_instance_and_allows_at_least_one() {
        let options = OutlierOptions {
            success_rate: None,
            ..OutlierOptions::default()
        };
        // Three of ten fail every call; at 10 % one goes (a second would make 20 %).
        let mut hosts = vec![host(100, 0); 10];
        for i in [1, 4, 7] {
            hosts[i] = host(0, 100);
        }
        let found = run(&hosts, &options);
        assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), vec![1]);
        // Twenty instances: two (10 %).
        let mut twenty = vec![host(100, 0); 20];
        for i in [1, 4, 7] {
            twenty[i] = host(0, 100);
        }
        assert_eq!(run(&twenty, &options).len(), 2);
        // One already ejected (say, a connection failure) and the cap at 0: nothing more, but
        // with none ejected one can always go.
        let zero = OutlierOptions {
            max_ejection_percent: 0,
            ..options
        };
        assert_eq!(run(&hosts, &zero).len(), 1);
        hosts[0].ejected = true;
        assert_eq!(run(&hosts, &zero).len(), 0);
    }

    #[test]
    fn enforcement_is_a_probability() {
        let options = OutlierOptions {
            success_rate: None,
            failure_percentage: Some(FailurePercentageEjection {
                enforcement_percentage: 30,
                ..FailurePercentageEjection::default()
            }),
            max_ejection_percent: 100,
            ..OutlierOptions::default()
        };
        let hosts = vec![host(0, 100); 1000];
        let ejected = sweep(&hosts, &options, &mut Rng::with_seed(7)).len();
        assert!((250..350).contains(&ejected), "{ejected}");
        let never = OutlierOptions {
            success_rate: Some(SuccessRateEjection {
                enforcement_percentage: 0,
                ..SuccessRateEjection::default()
            }),
            failure_percentage: None,
            ..OutlierOptions::default()
        };
        let mut hosts = vec![host(200, 0); 9];
        hosts.push(host(0, 200));
        assert_eq!(run(&hosts, &never).len(), 0);
    }

    #[test]
    fn an_instance_is_ejected_once_per_sweep() {
        // Both algorithms would find host 9; it is ejected by the first only.
        let mut hosts = vec![host(200, 0); 9];
        hosts.push(host(0, 200));
        let found = run(&hosts, &OutlierOptions::default());
        assert_eq!(found, vec![(9, EjectionReason::SuccessRate)]);
    }
}
