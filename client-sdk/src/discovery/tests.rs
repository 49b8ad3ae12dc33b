//! The poller under paused time, against a source whose revision, attributes and failures the
//! test controls (Cloud Map itself is exercised against moto in `tests/discovery.rs`). The
//! source builds its listings with [`Listing::decode`], as Cloud Map's does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::contract::{LbState, keys};
use crate::error::CloudMapErrorKind;
use crate::instance::CloudMapHealth;

/// How the scripted source answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Normally,
    /// Every call fails with this kind of Cloud Map error.
    Fail(CloudMapErrorKind),
}

type Attributes = BTreeMap<String, String>;

/// The revision and the instances (ID, attributes, Cloud Map health) the source serves.
type Served = (Option<i64>, Vec<(String, Attributes, CloudMapHealth)>);

struct Scripted {
    state: Mutex<Served>,
    answer: Mutex<Answer>,
    revisions: AtomicU64,
    lists: AtomicU64,
    /// When each call was made (paused time, from the test's start).
    calls: Mutex<Vec<Duration>>,
    started: tokio::time::Instant,
}

fn attributes(i: usize, extra: &[(&str, &str)]) -> Attributes {
    let mut map: Attributes = [
        (
            keys::AWS_INSTANCE_IPV4,
            format!("10.0.{}.{}", i / 250, i % 250 + 1),
        ),
        (keys::AWS_INSTANCE_PORT, "50051".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    map
}

impl Scripted {
    fn with(instances: usize) -> Arc<Self> {
        let source = Arc::new(Self {
            state: Mutex::new((Some(0), Vec::new())),
            answer: Mutex::new(Answer::Normally),
            revisions: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            calls: Mutex::new(Vec::new()),
            started: tokio::time::Instant::now(),
        });
        source.set(instances, &[], true);
        source
    }

    /// Sets `n` instances with `extra` attributes each; moves the revision only when asked
    /// (Cloud Map does not move it for health changes).
    fn set(&self, n: usize, extra: &[(&str, &str)], new_revision: bool) {
        let mut state = self.state.lock().unwrap();
        state.1 = (0..n)
            .map(|i| {
                (
                    format!("i-{i:04}"),
                    attributes(i, extra),
                    CloudMapHealth::Unknown,
                )
            })
            .collect();
        if new_revision {
            state.0 = Some(state.0.unwrap_or(0) + 1);
        }
    }

    fn set_revision(&self, revision: i64) {
        self.state.lock().unwrap().0 = Some(revision);
    }

    fn set_health(&self, health: CloudMapHealth) {
        for instance in &mut self.state.lock().unwrap().1 {
            instance.2 = health;
        }
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn calls(&self) -> (u64, u64) {
        (
            self.revisions.load(Ordering::SeqCst),
            self.lists.load(Ordering::SeqCst),
        )
    }

    fn call_times(&self) -> Vec<Duration> {
        self.calls.lock().unwrap().clone()
    }

    fn failure(&self, operation: &'static str) -> Option<Error> {
        self.calls.lock().unwrap().push(self.started.elapsed());
        match *self.answer.lock().unwrap() {
            Answer::Normally => None,
            Answer::Fail(kind) => Some(Error::CloudMap {
                operation,
                namespace: "ns".into(),
                service: "svc".into(),
                kind,
                source: kind.as_str().into(),
            }),
        }
    }
}

impl InstanceSource for Scripted {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        self.revisions.fetch_add(1, Ordering::SeqCst);
        let result = match self.failure("DiscoverInstancesRevision") {
            Some(error) => Err(error),
            None => Ok(self.state.lock().unwrap().0),
        };
        Box::pin(async move { result })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let result = match self.failure("DiscoverInstances") {
            Some(error) => Err(error),
            None => {
                let state = self.state.lock().unwrap();
                Ok(Listing::decode(
                    state.0,
                    state.1.iter().map(|(id, a, h)| (id.as_str(), a, *h)),
                ))
            }
        };
        Box::pin(async move { result })
    }
}

/// Polling every 5 s without jitter, so that counts are exact.
fn options() -> DiscoveryOptions {
    DiscoveryOptions {
        poll_interval: Duration::from_secs(5),
        poll_jitter_percent: 0,
        throttle_backoff_max: Duration::from_secs(40),
        ..DiscoveryOptions::default()
    }
}

fn spawn_with(source: &Arc<Scripted>, options: DiscoveryOptions, seed: u64) -> Discovery {
    Discovery::start_with_seed(Arc::clone(source), "ns", "svc", options, seed).unwrap()
}

fn spawn(source: &Arc<Scripted>) -> Discovery {
    spawn_with(source, options(), 42)
}

async fn advance(duration: Duration) {
    tokio::time::sleep(duration).await;
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn lists_at_once_then_checks_the_revision_every_poll() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(Duration::from_millis(1)).await;
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 2);
    assert_eq!(source.calls(), (0, 1));

    // 5, 10, ... 30 s: six revision checks, no listing.
    advance(secs(31)).await;
    assert_eq!(source.calls(), (6, 1));
    let times = source.call_times();
    assert_eq!(times[1..], [5, 10, 15, 20, 25, 30].map(secs));
}

#[tokio::test(start_paused = true)]
async fn a_revision_change_is_listed_within_one_poll() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(secs(7)).await;
    source.set(3, &[], true);
    advance(secs(4)).await;
    let snapshot = discovery.snapshot().unwrap();
    assert_eq!(snapshot.instances().len(), 3);
    assert_eq!(snapshot.generation(), 2);
    assert_eq!(
        source.calls(),
        (2, 2),
        "listed by the first check after the change"
    );
}

#[tokio::test(start_paused = true)]
async fn a_revision_that_goes_backwards_is_a_change_too() {
    let source = Scripted::with(2);
    source.set_revision(9);
    let discovery = spawn(&source);
    advance(secs(1)).await;
    assert_eq!(discovery.snapshot().unwrap().revision(), Some(9));
    // moto lowers its revision when an instance is deregistered; Cloud Map compares with `!=`.
    source.set(1, &[], false);
    source.set_revision(4);
    advance(secs(5)).await;
    let snapshot = discovery.snapshot().unwrap();
    assert_eq!(snapshot.revision(), Some(4));
    assert_eq!(snapshot.instances().len(), 1);
}

/// Advances paused time a second at a time until the source has listed `lists` times; returns
/// how long that took.
async fn until_listed(source: &Scripted, lists: u64) -> Duration {
    let start = tokio::time::Instant::now();
    while source.calls().1 < lists {
        assert!(start.elapsed() < secs(3600), "never listed {lists} times");
        advance(secs(1)).await;
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn health_changes_arrive_with_the_full_refresh() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(secs(1)).await;
    source.set_health(CloudMapHealth::Unhealthy);
    advance(secs(28)).await;
    assert_eq!(
        discovery.snapshot().unwrap().instances()[0].cloud_map_health,
        CloudMapHealth::Unknown,
        "the revision did not move, and the first full refresh comes no earlier than half the \
         interval"
    );
    // The first full refresh: within the second half of the 60 s interval (a poll is 5 s).
    let waited = until_listed(&source, 2).await + secs(29);
    assert!(waited >= secs(30) && waited <= secs(65), "{waited:?}");
    let snapshot = discovery.snapshot().unwrap();
    assert_eq!(
        snapshot.instances()[0].cloud_map_health,
        CloudMapHealth::Unhealthy
    );
    // Every later one a whole interval after the one before.
    source.set_health(CloudMapHealth::Healthy);
    assert_eq!(until_listed(&source, 3).await, secs(60));
    assert_eq!(
        discovery.snapshot().unwrap().instances()[0].cloud_map_health,
        CloudMapHealth::Healthy
    );
}

#[tokio::test(start_paused = true)]
async fn instances_with_lb_health_are_fully_refreshed_every_five_minutes() {
    let source = Scripted::with(0);
    source.set(3, &[(keys::LB_HEALTH, "HEALTHY")], true);
    let discovery = spawn(&source);
    advance(secs(149)).await;
    assert_eq!(
        source.calls(),
        (29, 1),
        "a revision check every 5 s, one listing"
    );
    // The first full refresh within the second half of five minutes, replacing a check.
    let first = until_listed(&source, 2).await + secs(149);
    assert!(first <= secs(305), "{first:?}");
    let checks = source.calls().0;
    // The next five minutes later: 59 checks between them.
    assert_eq!(until_listed(&source, 3).await, secs(300));
    assert_eq!(source.calls(), (checks + 59, 3));
    assert!(discovery.snapshot().unwrap().listing.carries_lb_health());
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_listing_publishes_nothing() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    let mut seen = discovery.subscribe();
    advance(secs(1)).await;
    seen.mark_unchanged();
    advance(secs(130)).await;
    assert_eq!(source.calls().1, 3);
    assert!(!seen.has_changed().unwrap());
    assert_eq!(discovery.snapshot().unwrap().generation(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_outage_keeps_the_last_snapshot_and_backs_off() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(secs(1)).await;
    source.answer(Answer::Fail(CloudMapErrorKind::Unavailable));

    let before = source.calls();
    advance(secs(120)).await;
    let after = source.calls();
    let attempts = (after.0 - before.0) + (after.1 - before.1);
    // 5 s to the first failure, then about 1, 2, 4, 8, 16, 30, 30, 30 s: far fewer attempts
    // than the 24 polls of a healthy two minutes.
    assert!((7..=11).contains(&attempts), "{attempts} attempts");
    let status = discovery.status();
    assert_eq!(status.errors, attempts);
    assert_eq!(status.throttled, 0);
    assert_eq!(u64::from(status.consecutive_errors), attempts);
    assert!(status.last_error.is_some());
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 2);

    // Recovery: the next attempt succeeds and the failure count resets.
    source.answer(Answer::Normally);
    source.set(4, &[], true);
    advance(secs(35)).await;
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 4);
    assert_eq!(discovery.status().consecutive_errors, 0);
}

#[tokio::test(start_paused = true)]
async fn throttling_keeps_the_snapshot_and_slows_down_by_poll_intervals() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(secs(1)).await;
    source.answer(Answer::Fail(CloudMapErrorKind::Throttled));

    let before = source.call_times().len();
    advance(secs(180)).await;
    let times = source.call_times();
    let throttled = &times[before..];
    // The first throttled check at 5 s; then waits of 5, 10, 20, 40, 40 ... s, each drawn from
    // [0.5, 1.5) of that: at least 2.5, 5, 10, 20, 20 s apart, never the 1 s of an outage.
    let gaps: Vec<Duration> = throttled.windows(2).map(|w| w[1] - w[0]).collect();
    let nominal = [5, 10, 20, 40, 40, 40, 40, 40].map(secs);
    for (gap, nominal) in gaps.iter().zip(nominal) {
        assert!(*gap >= nominal / 2 && *gap < nominal * 3 / 2, "{gaps:?}");
    }
    assert!(
        throttled.len() <= 10,
        "{} attempts in 3 minutes",
        throttled.len()
    );
    let status = discovery.status();
    assert_eq!(status.throttled, throttled.len() as u64);
    assert_eq!(status.errors, status.throttled);
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 2);

    source.answer(Answer::Normally);
    source.set(3, &[], true);
    advance(secs(60)).await;
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_configuration_error_before_any_snapshot_is_reported_then_cleared() {
    let source = Scripted::with(2);
    source.answer(Answer::Fail(CloudMapErrorKind::ServiceNotFound));
    let discovery = spawn(&source);
    let error = tokio::time::timeout(secs(1), discovery.configuration_error())
        .await
        .expect("the first attempt's answer is a configuration error");
    assert_eq!(
        error.cloud_map_kind(),
        Some(CloudMapErrorKind::ServiceNotFound)
    );
    assert!(discovery.snapshot().is_none());

    // Retried at the poll interval, not in a tight loop, nor after a long backoff.
    advance(secs(16)).await;
    assert_eq!(source.call_times(), [0, 5, 10, 15].map(secs));

    // The service appears: the next poll lists it, and the error is gone.
    source.answer(Answer::Normally);
    advance(secs(5)).await;
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 2);
    assert!(
        tokio::time::timeout(secs(1), discovery.configuration_error())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_configuration_error_with_a_snapshot_in_service_keeps_the_snapshot() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(secs(1)).await;
    source.answer(Answer::Fail(CloudMapErrorKind::ServiceNotFound));
    advance(secs(30)).await;
    assert!(discovery.status().errors >= 5);
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 2);
    assert!(
        tokio::time::timeout(secs(1), discovery.configuration_error())
            .await
            .is_err(),
        "static stability: a deleted service keeps the last snapshot in service"
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_listing_after_a_full_one_waits_for_a_second_listing() {
    let source = Scripted::with(3);
    let discovery = spawn(&source);
    advance(secs(1)).await;

    // A glitch: one empty answer (the check at 5 s), then the instances are back for the
    // confirming listing at 6 s.
    source.set(0, &[], true);
    advance(Duration::from_millis(4_500)).await;
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 3, "held");
    source.set(3, &[], true);
    advance(secs(2)).await;
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 3);
    assert_eq!(
        discovery.snapshot().unwrap().generation(),
        1,
        "never published"
    );

    // Really empty (at 7.5 s): held at the check at 11 s, confirmed by the listing at 12 s.
    source.set(0, &[], true);
    advance(secs(4)).await;
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 3);
    advance(secs(1)).await;
    assert!(discovery.snapshot().unwrap().instances().is_empty());
    assert_eq!(discovery.snapshot().unwrap().generation(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_listing_above_a_thousand_instances_is_taken_whole() {
    // Cloud Map caps a service at 1,000 instances and DiscoverInstances at 1,000 results; a
    // custom source may list more. Nothing is dropped: the picker works on any number.
    let source = Scripted::with(1500);
    let discovery = spawn(&source);
    advance(secs(1)).await;
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 1500);
}

#[tokio::test(start_paused = true)]
async fn odd_instances_are_reported_in_the_snapshot() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(secs(1)).await;
    assert!(discovery.snapshot().unwrap().unroutable().is_empty());
    {
        let mut state = source.state.lock().unwrap();
        state.1[0]
            .1
            .insert(keys::AWS_INSTANCE_PORT.to_owned(), "abc".to_owned());
        state.1[1].1.extend([
            (keys::LB_STATE.to_owned(), "DRAINNG".to_owned()),
            (keys::LB_SCHEMA.to_owned(), "1".to_owned()),
        ]);
        state.0 = Some(state.0.unwrap_or(0) + 1);
    }
    advance(secs(5)).await;
    let snapshot = discovery.snapshot().unwrap();
    assert_eq!(snapshot.instances().len(), 1);
    assert_eq!(snapshot.instances()[0].state, Some(LbState::Draining));
    assert_eq!(snapshot.unroutable()[0].id, "i-0000");
    assert_eq!(snapshot.unroutable()[0].reason, crate::Unroutable::NoPort);
    assert_eq!(snapshot.attribute_problems()[0].id, "i-0001");
    assert!(snapshot.attribute_problems()[0].taken_as_draining);
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_makes_the_same_calls_at_the_same_instants() {
    let jittered = DiscoveryOptions {
        poll_jitter_percent: 10,
        ..options()
    };
    let run = |seed| {
        let source = Scripted::with(2);
        let discovery = spawn_with(&source, jittered.clone(), seed);
        (source, discovery)
    };
    let (a, _a) = run(7);
    let (b, _b) = run(7);
    let (c, _c) = run(8);
    advance(secs(60)).await;
    assert_eq!(a.call_times(), b.call_times());
    assert_ne!(a.call_times(), c.call_times());
    assert!(a.call_times().len() >= 11);
}

#[tokio::test(start_paused = true)]
async fn refresh_lists_now() {
    let source = Scripted::with(1);
    let discovery = spawn(&source);
    advance(Duration::from_millis(1)).await;
    source.set(5, &[], false);
    let generation = discovery.refresh().await.unwrap();
    assert_eq!(generation, 2);
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 5);

    source.answer(Answer::Fail(CloudMapErrorKind::Unavailable));
    let error = discovery.refresh().await.unwrap_err();
    assert_eq!(error.cloud_map_kind(), Some(CloudMapErrorKind::Unavailable));
}

#[tokio::test]
async fn start_validates_and_runs_on_the_current_runtime() {
    let discovery = Discovery::start(
        StaticSource::new(vec![Instance::new("a", "10.0.0.1:1".parse().unwrap())]),
        "ns",
        "svc",
        DiscoveryOptions::default(),
    )
    .unwrap();
    assert_eq!(discovery.refresh().await.unwrap(), 1);
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 1);
    let fast = DiscoveryOptions {
        full_refresh_interval: Duration::from_millis(10),
        ..DiscoveryOptions::default()
    };
    assert!(Discovery::start(StaticSource::default(), "ns", "svc", fast).is_err());
}

#[test]
fn options_are_validated() {
    assert!(DiscoveryOptions::default().validate().is_ok());
    let invalid = |options: DiscoveryOptions| match options.validate() {
        Err(Error::InvalidOption { name, .. }) => name,
        other => panic!("{other:?}"),
    };
    let base = DiscoveryOptions::default;
    assert_eq!(
        invalid(DiscoveryOptions {
            poll_interval: Duration::from_millis(999),
            ..base()
        }),
        "poll_interval"
    );
    assert_eq!(
        invalid(DiscoveryOptions {
            poll_jitter_percent: 51,
            ..base()
        }),
        "poll_jitter_percent"
    );
    assert_eq!(
        invalid(DiscoveryOptions {
            full_refresh_interval_with_lb_health: Duration::ZERO,
            ..base()
        }),
        "full_refresh_interval_with_lb_health"
    );
    assert_eq!(
        invalid(DiscoveryOptions {
            backoff_max: Duration::from_millis(10),
            ..base()
        }),
        "backoff_max"
    );
    let fastest = DiscoveryOptions {
        poll_interval: secs(1),
        poll_jitter_percent: 50,
        full_refresh_interval: secs(1),
        full_refresh_interval_with_lb_health: secs(1),
        throttle_backoff_max: secs(1),
        ..base()
    };
    assert!(fastest.validate().is_ok());
}
