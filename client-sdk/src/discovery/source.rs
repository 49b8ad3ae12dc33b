//! Where instances come from: the narrow trait the poller drives, one listing, and a static
//! source.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use super::decode::{AttributeProblems, UnroutableInstance};
use crate::error::Error;
use crate::instance::Instance;

/// A boxed, sendable future (what [`InstanceSource`] methods return, so the trait stays
/// object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One complete listing of a service's instances, with what could not be used as it was.
///
/// Built by [`Listing::new`] from instances, or by [`Listing::decode`] from Cloud Map's
/// attribute maps (the way [`CloudMapSource`](super::CloudMapSource) does). Instances are kept
/// ordered by ID. Cloning is cheap: the parts are shared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub(super) revision: Option<i64>,
    pub(super) instances: Arc<[Instance]>,
    pub(super) unroutable: Arc<[UnroutableInstance]>,
    pub(super) attribute_problems: Arc<[AttributeProblems]>,
    pub(super) carries_lb_health: bool,
}

impl Listing {
    /// A listing of `instances` at `revision` (`None` when the source has no revisions). Whether
    /// the instances carry `LB_HEALTH` is unknown here, so the plain
    /// [`full_refresh_interval`](super::DiscoveryOptions::full_refresh_interval) applies.
    pub fn new(revision: Option<i64>, instances: Vec<Instance>) -> Self {
        Self::from_parts(revision, instances, Vec::new(), Vec::new(), false)
    }

    pub(super) fn from_parts(
        revision: Option<i64>,
        mut instances: Vec<Instance>,
        mut unroutable: Vec<UnroutableInstance>,
        mut attribute_problems: Vec<AttributeProblems>,
        carries_lb_health: bool,
    ) -> Self {
        // Cloud Map lists in random order; a stable order makes "unchanged" cheap to see and
        // snapshots easy to read.
        instances.sort_by(|a, b| a.id.cmp(&b.id).then(a.addr.cmp(&b.addr)));
        unroutable.sort_by(|a, b| a.id.cmp(&b.id));
        attribute_problems.sort_by(|a, b| a.id.cmp(&b.id));
        Self {
            revision,
            instances: instances.into(),
            unroutable: unroutable.into(),
            attribute_problems: attribute_problems.into(),
            carries_lb_health,
        }
    }

    /// The revision the listing belongs to, when the source has revisions.
    pub fn revision(&self) -> Option<i64> {
        self.revision
    }

    /// The instances that can be called, ordered by instance ID.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Instances the source listed that cannot be called (no usable address or port), with the
    /// reason. They are not in [`instances`](Self::instances).
    pub fn unroutable(&self) -> &[UnroutableInstance] {
        &self.unroutable
    }

    /// Instances in [`instances`](Self::instances) whose attributes had odd values, and what
    /// was made of them.
    pub fn attribute_problems(&self) -> &[AttributeProblems] {
        &self.attribute_problems
    }

    /// Whether every listed instance carries an `LB_HEALTH` attribute (the sync Lambda writes
    /// it): health changes then move the revision, and discovery lists less often (see
    /// [`full_refresh_interval_with_lb_health`](super::DiscoveryOptions::full_refresh_interval_with_lb_health)).
    pub fn carries_lb_health(&self) -> bool {
        self.carries_lb_health
    }

    /// Whether the source listed nothing at all (no instance, routable or not).
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.unroutable.is_empty()
    }

    /// The same instances and reports (the revision aside): nothing a reader would notice.
    pub(super) fn same_content(&self, other: &Self) -> bool {
        fn same<T: PartialEq>(a: &Arc<[T]>, b: &Arc<[T]>) -> bool {
            Arc::ptr_eq(a, b) || a == b
        }
        same(&self.instances, &other.instances)
            && same(&self.unroutable, &other.unroutable)
            && same(&self.attribute_problems, &other.attribute_problems)
    }
}

/// A source of instances for the discovery poller: Cloud Map ([`CloudMapSource`]) in
/// production, [`StaticSource`] for fixed lists, or your own.
///
/// The poller calls [`revision`](InstanceSource::revision) every poll interval and
/// [`list`](InstanceSource::list) when the revision changed or the full-refresh interval passed;
/// it never calls them concurrently. Errors keep the last good snapshot in service; a source
/// that fronts Cloud Map reports Cloud Map's errors as [`CloudMapSource::error`] does, so that
/// throttling and configuration errors are handled as such.
///
/// [`CloudMapSource`]: super::CloudMapSource
/// [`CloudMapSource::error`]: super::CloudMapSource::error
pub trait InstanceSource: Send + Sync + 'static {
    /// The current revision. A cheap call; `None` when the source has no revisions (then every
    /// poll lists).
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>>;

    /// Every instance.
    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>>;

    /// Resolves when the source may have something new, so that the poller asks at once
    /// instead of at its next poll: a source that is pushed to (the xDS source) says so here.
    /// The poller then checks the [`revision`](InstanceSource::revision) as it does on a
    /// poll. Must be cancel-safe (the poller drops it when its timer fires first). Default:
    /// never (the source is polled).
    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    /// Where the instances come from now, for [`DiscoveryStatus::source`](super::DiscoveryStatus::source).
    /// Default [`SourceKind::Custom`].
    fn kind(&self) -> SourceKind {
        SourceKind::Custom
    }

    /// Answers the source rejected so far (the xDS source's NACKs), for
    /// [`DiscoveryStatus::rejected_answers`](super::DiscoveryStatus::rejected_answers) and
    /// `cloudmap_balancer_discovery_rejected_answers_total`. Default 0.
    fn rejected_answers(&self) -> u64 {
        0
    }
}

/// Where a discovery poller's instances come from now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SourceKind {
    /// Cloud Map, polled directly.
    CloudMap,
    /// An xDS server, pushing (the crate's xDS source), at this URI.
    Xds {
        /// The server's URI.
        server: String,
    },
    /// Cloud Map polled directly because the xDS servers did not answer in time (the xDS
    /// source's fallback).
    CloudMapFallback,
    /// A source of the application's own, or a static list.
    #[default]
    Custom,
}

impl SourceKind {
    /// A short name for logs and metric labels: `cloud_map`, `xds`, `cloud_map_fallback`,
    /// `custom`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::CloudMap => "cloud_map",
            Self::Xds { .. } => "xds",
            Self::CloudMapFallback => "cloud_map_fallback",
            Self::Custom => "custom",
        }
    }
}

/// A fixed list of instances that can be replaced at run time; each replacement is a new
/// revision. For services outside Cloud Map, local runs and tests.
#[derive(Debug, Default)]
pub struct StaticSource {
    state: Mutex<(Option<i64>, Vec<Instance>)>,
}

impl StaticSource {
    /// A source serving `instances` at revision 1.
    pub fn new(instances: Vec<Instance>) -> Self {
        Self {
            state: Mutex::new((Some(1), instances)),
        }
    }

    /// Replaces the instances and moves to the next revision.
    pub fn set(&self, instances: Vec<Instance>) {
        self.update(|current| *current = instances);
    }

    /// Changes the instances in place (e.g. one instance's state) and moves to the next
    /// revision.
    pub fn update(&self, change: impl FnOnce(&mut Vec<Instance>)) {
        let mut state = self.lock();
        change(&mut state.1);
        state.0 = Some(state.0.unwrap_or(0) + 1);
    }

    /// The instances served now.
    pub fn instances(&self) -> Vec<Instance> {
        self.lock().1.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<i64>, Vec<Instance>)> {
        // A panic while holding the lock cannot leave a half-written listing: every write
        // replaces whole fields.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl InstanceSource for StaticSource {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        let revision = self.lock().0;
        Box::pin(async move { Ok(revision) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        let (revision, instances) = self.lock().clone();
        Box::pin(async move { Ok(Listing::new(revision, instances)) })
    }
}

impl<S: InstanceSource> InstanceSource for Arc<S> {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        (**self).revision()
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        (**self).list()
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        (**self).changed()
    }

    fn kind(&self) -> SourceKind {
        (**self).kind()
    }
}
