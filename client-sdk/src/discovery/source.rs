//! Where instances come from: the narrow trait the poller drives, and a static source.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::error::Error;
use crate::instance::Instance;

/// A boxed, sendable future (what [`InstanceSource`] methods return, so the trait stays
/// object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One complete listing of a service's instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The revision the listing belongs to, when the source has revisions.
    pub revision: Option<i64>,
    /// The instances that can be called; the source has already dropped (and logged) those it
    /// could not decode into an [`Instance`].
    pub instances: Vec<Instance>,
}

/// A source of instances for the discovery poller: Cloud Map ([`CloudMapSource`]) in
/// production, [`StaticSource`] for fixed lists, or your own.
///
/// The poller calls [`revision`](InstanceSource::revision) every poll interval and
/// [`list`](InstanceSource::list) when the revision changed or the full-refresh interval passed;
/// it never calls them concurrently. Errors keep the last good snapshot in service.
///
/// [`CloudMapSource`]: super::CloudMapSource
pub trait InstanceSource: Send + Sync + 'static {
    /// The current revision. A cheap call; `None` when the source has no revisions (then every
    /// poll lists).
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>>;

    /// Every instance.
    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>>;
}

/// A fixed list of instances that can be replaced at run time; each replacement is a new
/// revision. For services outside Cloud Map, local runs and tests.
#[derive(Debug, Default)]
pub struct StaticSource {
    state: Mutex<Listing>,
}

impl StaticSource {
    /// A source serving `instances` at revision 1.
    pub fn new(instances: Vec<Instance>) -> Self {
        Self {
            state: Mutex::new(Listing {
                revision: Some(1),
                instances,
            }),
        }
    }

    /// Replaces the instances and moves to the next revision.
    pub fn set(&self, instances: Vec<Instance>) {
        let mut state = self.lock();
        state.revision = Some(state.revision.unwrap_or(0) + 1);
        state.instances = instances;
    }

    /// Changes the instances in place (e.g. one instance's state) and moves to the next
    /// revision.
    pub fn update(&self, change: impl FnOnce(&mut Vec<Instance>)) {
        let mut state = self.lock();
        change(&mut state.instances);
        state.revision = Some(state.revision.unwrap_or(0) + 1);
    }

    /// The instances served now.
    pub fn instances(&self) -> Vec<Instance> {
        self.lock().instances.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Listing> {
        // A panic while holding the lock cannot leave a half-written listing: every write
        // replaces whole fields.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl InstanceSource for StaticSource {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        let revision = self.lock().revision;
        Box::pin(async move { Ok(revision) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        let listing = self.lock().clone();
        Box::pin(async move { Ok(listing) })
    }
}

impl<S: InstanceSource> InstanceSource for std::sync::Arc<S> {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        (**self).revision()
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        (**self).list()
    }
}
