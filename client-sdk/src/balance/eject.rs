//! Local ejection after connection failures: exponential backoff, never more than half of the
//! fleet.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Consecutive connection failures.
    failures: u32,
    /// Ejected until then.
    until: Option<Instant>,
}

/// Which instances are ejected, and for how long. Pure bookkeeping: the caller passes the time.
#[derive(Debug)]
pub(crate) struct Ejections<K> {
    entries: HashMap<K, Entry>,
    base: Duration,
    max: Duration,
}

/// What a connection failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Ejected for this long.
    Ejected(Duration),
    /// Already ejected (another call saw the same failure).
    AlreadyEjected,
    /// Not ejected: half of the live instances are ejected already.
    AtCapacity,
}

impl<K: Eq + Hash + Clone> Ejections<K> {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            base,
            max,
        }
    }

    /// Records a connection failure. `live` is the number of live instances (not stopped, weight
    /// above 0: [`live_count`](crate::picker::live_count)): at most `live / 2` are ejected at any
    /// time, so a fleet-wide problem (a bad deployment, a
    /// network partition) degrades into slow calls rather than no calls.
    pub(crate) fn on_failure(&mut self, key: &K, now: Instant, live: usize) -> Outcome {
        let ejected = self.ejected_count(now);
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            until: None,
        });
        if entry.until.is_some_and(|until| until > now) {
            return Outcome::AlreadyEjected;
        }
        entry.failures = entry.failures.saturating_add(1);
        if (ejected + 1) * 2 > live {
            return Outcome::AtCapacity;
        }
        let exponent = entry.failures.saturating_sub(1).min(16);
        let duration = self.base.saturating_mul(1 << exponent).min(self.max);
        entry.until = Some(now + duration);
        Outcome::Ejected(duration)
    }

    /// Records a successful connection: the failure streak ends.
    pub(crate) fn on_success(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Whether `key` is ejected at `now`.
    pub(crate) fn is_ejected(&self, key: &K, now: Instant) -> bool {
        self.entries
            .get(key)
            .and_then(|e| e.until)
            .is_some_and(|until| until > now)
    }

    /// How much longer `key` stays ejected.
    pub(crate) fn remaining(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.entries.get(key)?.until?;
        (until > now).then(|| until - now)
    }

    /// The earliest time an ejection ends.
    pub(crate) fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| e.until)
            .filter(|&until| until > now)
            .min()
    }

    /// Forgets instances that left the snapshot.
    pub(crate) fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.entries.retain(|key, _| keep(key));
    }

    fn ejected_count(&self, now: Instant) -> usize {
        self.entries
            .values()
            .filter(|e| e.until.is_some_and(|until| until > now))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ejections() -> Ejections<u32> {
        Ejections::new(Duration::from_secs(1), Duration::from_secs(30))
    }

    #[test]
    fn backoff_doubles_per_consecutive_failure_up_to_the_cap() {
        let mut e = ejections();
        let mut now = Instant::now();
        let mut durations = Vec::new();
        for _ in 0..8 {
            match e.on_failure(&1, now, 10) {
                Outcome::Ejected(d) => durations.push(d.as_secs()),
                other => panic!("{other:?}"),
            }
            assert!(e.is_ejected(&1, now));
            now += Duration::from_secs(31);
            assert!(!e.is_ejected(&1, now));
        }
        assert_eq!(durations, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        e.on_success(&1);
        assert_eq!(
            e.on_failure(&1, now, 10),
            Outcome::Ejected(Duration::from_secs(1))
        );
    }

    #[test]
    fn never_more_than_half_are_ejected() {
        let mut e = ejections();
        let now = Instant::now();
        assert!(matches!(e.on_failure(&1, now, 4), Outcome::Ejected(_)));
        assert!(matches!(e.on_failure(&2, now, 4), Outcome::Ejected(_)));
        assert_eq!(e.on_failure(&3, now, 4), Outcome::AtCapacity);
        assert!(!e.is_ejected(&3, now));
        // A single instance is never ejected.
        let mut single = ejections();
        assert_eq!(single.on_failure(&1, now, 1), Outcome::AtCapacity);
        // Three: one.
        let mut three = ejections();
        assert!(matches!(three.on_failure(&1, now, 3), Outcome::Ejected(_)));
        assert_eq!(three.on_failure(&2, now, 3), Outcome::AtCapacity);
    }

    #[test]
    fn half_is_counted_over_the_instances_the_picker_can_pick() {
        use crate::contract::{LbState, Weight};
        use crate::instance::Instance;
        use crate::picker::live_count;

        let instance = |n: u8, weight: u32| {
            Instance::new(format!("i-{n}"), ([10, 0, 0, n], 50051).into())
                .with_weight(Weight::saturating(weight))
        };
        // Two pickable instances; three of weight 0 and a stopped one are never picked.
        let instances = vec![
            instance(1, 10),
            instance(2, 10),
            instance(3, 0),
            instance(4, 0),
            instance(5, 0),
            instance(6, 10).with_state(LbState::Stopped),
        ];
        let live = live_count(&instances);
        assert_eq!(live, 2);
        let mut e = ejections();
        let now = Instant::now();
        assert!(matches!(e.on_failure(&1, now, live), Outcome::Ejected(_)));
        // Ejecting the second would leave nothing to pick (a count of everything not stopped,
        // 5, would have allowed it).
        assert_eq!(e.on_failure(&2, now, live), Outcome::AtCapacity);
        assert!(!e.is_ejected(&2, now));
    }

    #[test]
    fn repeated_reports_of_one_failure_eject_once() {
        let mut e = ejections();
        let now = Instant::now();
        assert!(matches!(e.on_failure(&1, now, 4), Outcome::Ejected(_)));
        assert_eq!(e.on_failure(&1, now, 4), Outcome::AlreadyEjected);
        assert_eq!(e.remaining(&1, now), Some(Duration::from_secs(1)));
    }

    #[test]
    fn expiry_and_forgetting() {
        let mut e = ejections();
        let now = Instant::now();
        e.on_failure(&1, now, 10);
        e.on_failure(&2, now, 10);
        e.on_failure(&2, now + Duration::from_secs(2), 10);
        assert_eq!(e.next_expiry(now), Some(now + Duration::from_secs(1)));
        e.retain(|k| *k == 2);
        assert!(!e.is_ejected(&1, now));
        assert_eq!(
            e.next_expiry(now + Duration::from_millis(1500)),
            Some(now + Duration::from_secs(4))
        );
    }
}
