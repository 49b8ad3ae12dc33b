//! Which instances are ejected, why, and until when: one registry for connection failures and
//! outlier detection, so that both share one cap. Pure bookkeeping: the caller passes the time.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

use super::EjectionReason;

/// One ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ejection {
    pub(crate) reason: EjectionReason,
    /// Connection failures: ejected until then. Outlier ejections: released at the first sweep
    /// at or after it (A50).
    pub(crate) until: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Consecutive connection failures.
    connect_failures: u32,
    /// A50's ejection multiplier: up by one per outlier ejection, down by one per sweep while
    /// not ejected.
    multiplier: u32,
    ejection: Option<Ejection>,
}

impl Entry {
    fn ejected_at(&self, now: Instant) -> Option<Ejection> {
        self.ejection.filter(|e| match e.reason {
            EjectionReason::ConnectFailure => e.until > now,
            _ => true,
        })
    }

    fn is_idle(&self) -> bool {
        self.connect_failures == 0 && self.multiplier == 0 && self.ejection.is_none()
    }
}

/// What an ejection request led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Ejected for this long.
    Ejected(Duration),
    /// Already ejected (another call saw the same failure, or another reason came first).
    AlreadyEjected,
    /// Not ejected: the cap is reached.
    AtCapacity,
}

/// The registry. `live` in the methods below is the number of instances the picker can pick at
/// all (not stopped, weight above 0: [`live_count`](crate::picker::live_count)); the caps are
/// shares of it.
#[derive(Debug)]
pub(crate) struct Ejections<K> {
    entries: HashMap<K, Entry>,
    connect_base: Duration,
    connect_max: Duration,
    outlier_base: Duration,
    outlier_longest: Duration,
    /// After any ejection at most this percentage of `live` is ejected.
    cap_percent: u8,
    /// After an outlier ejection at most this percentage is ejected (one is always allowed).
    outlier_cap_percent: u8,
}

/// The settings of an [`Ejections`] registry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) connect_base: Duration,
    pub(crate) connect_max: Duration,
    pub(crate) outlier_base: Duration,
    pub(crate) outlier_longest: Duration,
    pub(crate) cap_percent: u8,
    pub(crate) outlier_cap_percent: u8,
}

impl<K: Eq + Hash + Clone> Ejections<K> {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            entries: HashMap::new(),
            connect_base: limits.connect_base,
            connect_max: limits.connect_max,
            outlier_base: limits.outlier_base,
            outlier_longest: limits.outlier_longest,
            cap_percent: limits.cap_percent,
            outlier_cap_percent: limits.outlier_cap_percent,
        }
    }

    /// Whether one more ejection stays within the overall cap: a fleet-wide problem (a bad
    /// deployment, a network partition) degrades into slow or failing calls rather than no calls.
    fn within_cap(&self, now: Instant, live: usize) -> bool {
        (self.ejected_count(now) + 1) * 100 <= live * usize::from(self.cap_percent)
    }

    /// A connection failure: ejects for `connect_base × 2^(n−1)` after the n-th consecutive one,
    /// capped at `connect_max`, within the overall cap.
    pub(crate) fn on_connect_failure(&mut self, key: &K, now: Instant, live: usize) -> Outcome {
        let within = self.within_cap(now, live);
        let entry = self.entries.entry(key.clone()).or_default();
        if entry.ejected_at(now).is_some() {
            return Outcome::AlreadyEjected;
        }
        entry.connect_failures = entry.connect_failures.saturating_add(1);
        if !within {
            return Outcome::AtCapacity;
        }
        let exponent = entry.connect_failures.saturating_sub(1).min(16);
        let duration = self
            .connect_base
            .saturating_mul(1 << exponent)
            .min(self.connect_max);
        entry.ejection = Some(Ejection {
            reason: EjectionReason::ConnectFailure,
            until: now + duration,
        });
        Outcome::Ejected(duration)
    }

    /// A successful connection: the connection-failure streak ends.
    pub(crate) fn on_connect_success(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.connect_failures = 0;
            if entry
                .ejection
                .is_some_and(|e| e.reason == EjectionReason::ConnectFailure)
            {
                entry.ejection = None;
            }
            if entry.is_idle() {
                self.entries.remove(key);
            }
        }
    }

    /// An outlier ejection for `reason`: `base × n` for the n-th (A50's multiplier), capped, if
    /// both caps allow it.
    pub(crate) fn eject_outlier(
        &mut self,
        key: &K,
        reason: EjectionReason,
        now: Instant,
        live: usize,
    ) -> Outcome {
        if self.is_ejected(key, now) {
            return Outcome::AlreadyEjected;
        }
        let ejected = self.ejected_count(now);
        let outlier_ok =
            ejected == 0 || (ejected + 1) * 100 <= live * usize::from(self.outlier_cap_percent);
        if !(outlier_ok && self.within_cap(now, live)) {
            return Outcome::AtCapacity;
        }
        let entry = self.entries.entry(key.clone()).or_default();
        entry.multiplier = entry.multiplier.saturating_add(1);
        let duration = self
            .outlier_base
            .saturating_mul(entry.multiplier)
            .min(self.outlier_longest);
        entry.ejection = Some(Ejection {
            reason,
            until: now + duration,
        });
        Outcome::Ejected(duration)
    }

    /// A50's end of a sweep: outlier ejections whose time is up are released, and the multiplier
    /// of every instance that is not ejected goes down by one. Returns whether anything was
    /// released.
    pub(crate) fn sweep(&mut self, now: Instant) -> bool {
        let mut released = false;
        for entry in self.entries.values_mut() {
            match entry.ejection {
                Some(e) if e.reason != EjectionReason::ConnectFailure && now >= e.until => {
                    entry.ejection = None;
                    released = true;
                }
                Some(e) if e.reason != EjectionReason::ConnectFailure => {}
                _ if entry.ejected_at(now).is_none() => {
                    entry.multiplier = entry.multiplier.saturating_sub(1);
                }
                _ => {}
            }
        }
        self.entries.retain(|_, e| !e.is_idle());
        released
    }

    /// Whether `key` is ejected at `now`.
    pub(crate) fn is_ejected(&self, key: &K, now: Instant) -> bool {
        self.ejection(key, now).is_some()
    }

    /// `key`'s ejection at `now`, if it is ejected.
    pub(crate) fn ejection(&self, key: &K, now: Instant) -> Option<Ejection> {
        self.entries.get(key).and_then(|e| e.ejected_at(now))
    }

    /// The earliest time a connection-failure ejection ends (outlier ejections end at sweeps).
    pub(crate) fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| e.ejection)
            .filter(|e| e.reason == EjectionReason::ConnectFailure && e.until > now)
            .map(|e| e.until)
            .min()
    }

    /// Forgets instances that left the snapshot.
    pub(crate) fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.entries.retain(|key, _| keep(key));
    }

    /// How many instances are ejected at `now`.
    pub(crate) fn ejected_count(&self, now: Instant) -> usize {
        self.entries
            .values()
            .filter(|e| e.ejected_at(now).is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            connect_base: Duration::from_secs(1),
            connect_max: Duration::from_secs(30),
            outlier_base: Duration::from_secs(30),
            outlier_longest: Duration::from_secs(300),
            cap_percent: 50,
            outlier_cap_percent: 10,
        }
    }

    fn ejections() -> Ejections<u32> {
        Ejections::new(limits())
    }

    #[test]
    fn connect_backoff_doubles_per_consecutive_failure_up_to_the_cap() {
        let mut e = ejections();
        let mut now = Instant::now();
        let mut durations = Vec::new();
        for _ in 0..8 {
            match e.on_connect_failure(&1, now, 10) {
                Outcome::Ejected(d) => durations.push(d.as_secs()),
                other => panic!("{other:?}"),
            }
            assert!(e.is_ejected(&1, now));
            now += Duration::from_secs(31);
            assert!(!e.is_ejected(&1, now));
        }
        assert_eq!(durations, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        e.on_connect_success(&1);
        assert_eq!(
            e.on_connect_failure(&1, now, 10),
            Outcome::Ejected(Duration::from_secs(1))
        );
    }

    #[test]
    fn never_more_than_the_cap_of_live_instances() {
        let now = Instant::now();
        let mut e = ejections();
        assert!(matches!(
            e.on_connect_failure(&1, now, 4),
            Outcome::Ejected(_)
        ));
        assert!(matches!(
            e.on_connect_failure(&2, now, 4),
            Outcome::Ejected(_)
        ));
        assert_eq!(e.on_connect_failure(&3, now, 4), Outcome::AtCapacity);
        assert!(!e.is_ejected(&3, now));
        // A single instance is never ejected, for any reason.
        let mut single = ejections();
        assert_eq!(single.on_connect_failure(&1, now, 1), Outcome::AtCapacity);
        assert_eq!(
            single.eject_outlier(&1, EjectionReason::ConsecutiveFailures, now, 1),
            Outcome::AtCapacity
        );
        // Three: one.
        let mut three = ejections();
        assert!(matches!(
            three.on_connect_failure(&1, now, 3),
            Outcome::Ejected(_)
        ));
        assert_eq!(three.on_connect_failure(&2, now, 3), Outcome::AtCapacity);
    }

    #[test]
    fn outlier_and_connect_ejections_share_the_cap() {
        let now = Instant::now();
        let reason = EjectionReason::FailurePercentage;
        // Six instances: the outlier cap (10 %) allows one outlier ejection...
        let mut e = ejections();
        assert_eq!(
            e.eject_outlier(&1, reason, now, 6),
            Outcome::Ejected(Duration::from_secs(30))
        );
        assert_eq!(e.eject_outlier(&2, reason, now, 6), Outcome::AtCapacity);
        // ...and connection failures add up to the overall cap (3 of 6).
        assert!(matches!(
            e.on_connect_failure(&3, now, 6),
            Outcome::Ejected(_)
        ));
        assert!(matches!(
            e.on_connect_failure(&4, now, 6),
            Outcome::Ejected(_)
        ));
        assert_eq!(e.on_connect_failure(&5, now, 6), Outcome::AtCapacity);
        assert_eq!(e.ejected_count(now), 3);
        // When connection failures fill the cap, outlier detection ejects nothing more.
        let mut full = ejections();
        full.on_connect_failure(&1, now, 4);
        full.on_connect_failure(&2, now, 4);
        assert_eq!(full.eject_outlier(&3, reason, now, 4), Outcome::AtCapacity);
        // Already ejected for one reason: not again for another.
        assert_eq!(
            full.eject_outlier(&1, reason, now, 4),
            Outcome::AlreadyEjected
        );
    }

    #[test]
    fn outlier_ejections_grow_and_are_forgiven_by_sweeps() {
        let mut e = ejections();
        let reason = EjectionReason::ConsecutiveFailures;
        let mut now = Instant::now();
        let interval = Duration::from_secs(10);
        let mut durations = Vec::new();
        for _ in 0..12 {
            match e.eject_outlier(&1, reason, now, 10) {
                Outcome::Ejected(d) => durations.push(d.as_secs()),
                other => panic!("{other:?}"),
            }
            // Released only by a sweep at or after the ejection time.
            let until = e.ejection(&1, now).unwrap().until;
            while e.is_ejected(&1, now) {
                now += interval;
                let released = e.sweep(now);
                assert_eq!(released, now >= until);
            }
        }
        assert_eq!(
            durations,
            vec![30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
        // Healthy sweeps lower the multiplier one by one: after 12 sweeps the next ejection is
        // back to the base time.
        for _ in 0..12 {
            now += interval;
            e.sweep(now);
        }
        assert_eq!(
            e.eject_outlier(&1, reason, now, 10),
            Outcome::Ejected(Duration::from_secs(30))
        );
    }

    #[test]
    fn expiry_and_forgetting() {
        let mut e = ejections();
        let now = Instant::now();
        e.on_connect_failure(&1, now, 10);
        e.on_connect_failure(&2, now, 10);
        e.on_connect_failure(&2, now + Duration::from_secs(2), 10);
        e.eject_outlier(&3, EjectionReason::SuccessRate, now, 10);
        // Outlier ejections are not timer-driven.
        assert_eq!(e.next_expiry(now), Some(now + Duration::from_secs(1)));
        e.retain(|k| *k == 2);
        assert!(!e.is_ejected(&1, now));
        assert!(!e.is_ejected(&3, now));
        assert_eq!(
            e.next_expiry(now + Duration::from_millis(1500)),
            Some(now + Duration::from_secs(4))
        );
    }
}
