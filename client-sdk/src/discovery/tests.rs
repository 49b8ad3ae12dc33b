//! The poller's schedule under paused time, against a source whose revision and failures the
//! test controls (Cloud Map itself is exercised against moto in `tests/discovery.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::instance::CloudMapHealth;

#[derive(Default)]
struct Scripted {
    listing: Mutex<Listing>,
    failing: AtomicBool,
    revisions: AtomicU64,
    lists: AtomicU64,
}

impl Scripted {
    fn with(instances: usize) -> Arc<Self> {
        let source = Arc::new(Self::default());
        source.set(instances, true);
        source
    }

    /// Sets `n` instances; moves the revision only when asked (Cloud Map does not move it for
    /// health changes).
    fn set(&self, n: usize, new_revision: bool) {
        let mut listing = self.listing.lock().unwrap();
        listing.instances = (0..n)
            .map(|i| {
                Instance::new(
                    format!("i-{i}"),
                    format!("10.0.0.{}:1", i + 1).parse().unwrap(),
                )
            })
            .collect();
        if new_revision {
            listing.revision = Some(listing.revision.unwrap_or(0) + 1);
        }
    }

    fn set_health(&self, health: CloudMapHealth) {
        let mut listing = self.listing.lock().unwrap();
        for instance in &mut listing.instances {
            instance.cloud_map_health = health;
        }
    }

    fn calls(&self) -> (u64, u64) {
        (
            self.revisions.load(Ordering::SeqCst),
            self.lists.load(Ordering::SeqCst),
        )
    }
}

impl InstanceSource for Scripted {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        self.revisions.fetch_add(1, Ordering::SeqCst);
        let result = if self.failing.load(Ordering::SeqCst) {
            Err(Error::Source("throttled".into()))
        } else {
            Ok(self.listing.lock().unwrap().revision)
        };
        Box::pin(async move { result })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let result = if self.failing.load(Ordering::SeqCst) {
            Err(Error::Source("throttled".into()))
        } else {
            Ok(self.listing.lock().unwrap().clone())
        };
        Box::pin(async move { result })
    }
}

fn ident() -> Ident {
    Ident {
        namespace: "ns".into(),
        service: "svc".into(),
    }
}

fn spawn(source: &Arc<Scripted>) -> Discovery {
    Discovery::spawn(
        Arc::clone(source) as Arc<dyn InstanceSource>,
        DiscoveryOptions::default(),
        ident(),
        42,
        &tokio::runtime::Handle::current(),
    )
}

async fn advance(duration: Duration) {
    tokio::time::sleep(duration).await;
}

#[tokio::test(start_paused = true)]
async fn lists_at_once_then_checks_the_revision_every_poll() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(Duration::from_millis(1)).await;
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 2);
    assert_eq!(source.calls(), (0, 1));

    // 30 s: about six revision checks (5 s ± 10 %), no listing.
    advance(Duration::from_secs(30)).await;
    let (revisions, lists) = source.calls();
    assert!((5..=7).contains(&revisions), "{revisions} revision checks");
    assert_eq!(lists, 1);
}

#[tokio::test(start_paused = true)]
async fn a_revision_change_is_listed_within_one_poll() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(Duration::from_secs(7)).await;
    let before = source.calls().0;
    source.set(3, true);
    // One poll interval plus its jitter.
    advance(Duration::from_millis(5_500)).await;
    let snapshot = discovery.snapshot().unwrap();
    assert_eq!(snapshot.instances().len(), 3);
    assert_eq!(snapshot.generation(), 2);
    assert_eq!(
        source.calls().0 - before,
        1,
        "picked up by the first poll after the change"
    );
}

#[tokio::test(start_paused = true)]
async fn health_changes_arrive_with_the_full_refresh() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(Duration::from_secs(1)).await;
    source.set_health(CloudMapHealth::Unhealthy);
    advance(Duration::from_secs(50)).await;
    assert_eq!(
        discovery.snapshot().unwrap().instances()[0].cloud_map_health,
        CloudMapHealth::Unknown,
        "the revision did not move, so nothing was listed yet"
    );
    advance(Duration::from_secs(16)).await;
    let snapshot = discovery.snapshot().unwrap();
    assert_eq!(
        snapshot.instances()[0].cloud_map_health,
        CloudMapHealth::Unhealthy
    );
    assert_eq!(source.calls().1, 2);
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_listing_publishes_nothing() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    let mut seen = discovery.subscribe();
    advance(Duration::from_secs(1)).await;
    seen.mark_unchanged();
    advance(Duration::from_secs(130)).await;
    assert!(source.calls().1 >= 3);
    assert!(!seen.has_changed().unwrap());
    assert_eq!(discovery.snapshot().unwrap().generation(), 1);
}

#[tokio::test(start_paused = true)]
async fn errors_keep_the_last_snapshot_and_back_off() {
    let source = Scripted::with(2);
    let discovery = spawn(&source);
    advance(Duration::from_secs(1)).await;
    source.failing.store(true, Ordering::SeqCst);

    let before = source.calls();
    advance(Duration::from_secs(120)).await;
    let after = source.calls();
    let attempts = (after.0 - before.0) + (after.1 - before.1);
    // 5 s to the first failure, then about 1, 2, 4, 8, 16, 30, 30, 30 s: far fewer attempts
    // than the 24 polls of a healthy two minutes.
    assert!((7..=11).contains(&attempts), "{attempts} attempts");
    let status = discovery.status();
    assert_eq!(status.errors, attempts);
    assert_eq!(u64::from(status.consecutive_errors), attempts);
    assert!(status.last_error.is_some());
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 2);

    // Recovery: the next attempt succeeds and the failure count resets.
    source.failing.store(false, Ordering::SeqCst);
    source.set(4, true);
    advance(Duration::from_secs(35)).await;
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 4);
    assert_eq!(discovery.status().consecutive_errors, 0);
}

#[tokio::test(start_paused = true)]
async fn refresh_lists_now() {
    let source = Scripted::with(1);
    let discovery = spawn(&source);
    advance(Duration::from_millis(1)).await;
    source.set(5, false);
    let generation = discovery.refresh().await.unwrap();
    assert_eq!(generation, 2);
    assert_eq!(discovery.snapshot().unwrap().instances().len(), 5);

    source.failing.store(true, Ordering::SeqCst);
    let error = discovery.refresh().await.unwrap_err();
    assert!(matches!(*error, Error::Source(_)));
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
    let mut fast = DiscoveryOptions {
        poll_interval: Duration::from_secs(1),
        full_refresh_interval: Duration::from_secs(1),
        ..DiscoveryOptions::default()
    };
    assert!(fast.validate().is_ok());
    fast.poll_interval = Duration::from_millis(999);
    assert!(matches!(
        fast.validate(),
        Err(Error::InvalidOption {
            name: "poll_interval",
            ..
        })
    ));
    let backoff = DiscoveryOptions {
        backoff_max: Duration::from_millis(10),
        ..DiscoveryOptions::default()
    };
    assert!(backoff.validate().is_err());
}
