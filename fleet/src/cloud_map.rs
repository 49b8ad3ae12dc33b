//! The in-process Cloud Map: one service's instances and revision, the discovery quotas, and
//! the bookkeeping the report needs (calls per second, writes, which revision each pair holds).
//!
//! What it does as Cloud Map does:
//!
//! - `RegisterInstance` replaces every attribute; it, `DeregisterInstance` and every attribute
//!   update move the revision, by one, forwards only;
//! - `DiscoverInstances` returns every instance with the revision; `DiscoverInstancesRevision`
//!   returns the revision;
//! - each discovery operation draws from its own account-wide [token bucket](crate::quota);
//!   past it, the call fails with `RequestLimitExceeded`, built as the AWS SDK builds that
//!   error and handed to the client through [`CloudMapSource::error`], so the client's poller
//!   sees exactly what it sees from AWS.
//!
//! For the xDS mode it also serves the account's other services, which never change
//! ([`CloudMap::freeze_quiet_services`], [`QuietSource`]: their calls share the quotas), the
//! server's replicas ([`ReplicaSource`]: calls that count, no staleness measured), and pushed
//! listings ([`CloudMap::record_received`]).
//!
//! What it leaves out: propagation delay inside Cloud Map (a write is visible to the next call),
//! Cloud Map health statuses (every instance is healthy; `LB_HEALTH` carries the task's health),
//! and the write APIs' own quotas.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_servicediscovery::operation::discover_instances::DiscoverInstancesError;
use aws_sdk_servicediscovery::operation::discover_instances_revision::DiscoverInstancesRevisionError;
use aws_sdk_servicediscovery::types::error::RequestLimitExceeded;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::ErrorMetadata;
use cloudmap_balancer::contract::keys;
use cloudmap_balancer::discovery::{BoxFuture, CloudMapSource, InstanceSource, Listing};
use cloudmap_balancer::{CloudMapHealth, Error};
use tokio::time::Instant;

use crate::quota::{Quotas, TokenBucket};

/// The namespace and service every pair discovers.
pub const NAMESPACE: &str = "prod.internal";
/// The service every pair discovers.
pub const SERVICE: &str = "echo";

/// The two discovery operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `DiscoverInstances`.
    DiscoverInstances,
    /// `DiscoverInstancesRevision`.
    DiscoverInstancesRevision,
}

/// How an exhausted bucket answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleAnswer {
    /// `RequestLimitExceeded`, as Cloud Map answers.
    RequestLimitExceeded,
    /// A code the client does not know as throttling (`ServiceUnavailable`): how a client that
    /// treats throttling as an outage, as this one did before, sees it.
    AsOutage,
}

/// Who wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// ECS registering or deregistering a task's instance.
    Ecs,
    /// The sync Lambda (its decisions for events and reconciliation).
    Lambda,
}

/// One write that moved the revision, inside the measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// When.
    pub at: Duration,
    /// Who.
    pub writer: Writer,
    /// An instance appeared or went, or its `LB_STATE` or `LB_HEALTH` changed (as opposed to
    /// load, weight or bookkeeping values).
    pub lifecycle: bool,
    /// When the last pair received a listing at this revision or later; `None` if some pair
    /// never did before the run ended.
    pub held_by_all_at: Option<Duration>,
    /// When the first pair did (a new instance's first call, when the write made it
    /// eligible).
    pub held_by_first_at: Option<Duration>,
}

/// Calls in one second of the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    /// `DiscoverInstances` answered.
    pub lists: u32,
    /// `DiscoverInstances` throttled.
    pub lists_throttled: u32,
    /// `DiscoverInstancesRevision` answered.
    pub revisions: u32,
    /// `DiscoverInstancesRevision` throttled.
    pub revisions_throttled: u32,
}

/// What the model saw in the measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Calls per second of the window.
    pub seconds: Vec<Second>,
    /// Writes in the window, in revision order: write `i` moved the revision to
    /// `base_revision + i + 1`.
    pub writes: Vec<Write>,
    /// The revision when the window opened.
    pub base_revision: i64,
}

struct Registered {
    attributes: BTreeMap<String, String>,
}

struct Window {
    start: Duration,
    length: Duration,
    seconds: Vec<Second>,
    /// The revision before the window's first write.
    base: i64,
    writes: Vec<Write>,
    /// Pairs that received each write.
    holders: Vec<u32>,
}

struct State {
    instances: BTreeMap<String, Registered>,
    revision: i64,
    listing: Option<Listing>,
    /// The other services' listing (the xDS mode's quiet services), frozen.
    quiet: Option<Listing>,
    list_bucket: TokenBucket,
    revision_bucket: TokenBucket,
    answer: ThrottleAnswer,
    /// The revision of the last listing each pair received (0: none yet).
    held: Vec<i64>,
    window: Option<Window>,
}

/// The model. Shared by the pairs (through [`PairSource`]), ECS and the Lambda.
pub struct CloudMap {
    epoch: Instant,
    state: Mutex<State>,
}

impl std::fmt::Debug for CloudMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudMap").finish_non_exhaustive()
    }
}

impl CloudMap {
    /// An empty service for `pairs` pairs, with `quotas`, its clock starting now.
    pub fn new(pairs: usize, quotas: Quotas, answer: ThrottleAnswer) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            state: Mutex::new(State {
                instances: BTreeMap::new(),
                revision: 1,
                listing: None,
                quiet: None,
                list_bucket: TokenBucket::new(quotas.discover_rate, quotas.discover_burst),
                revision_bucket: TokenBucket::new(quotas.revision_rate, quotas.revision_burst),
                answer,
                held: vec![0; pairs],
                window: None,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Time since the model started.
    pub fn now(&self) -> Duration {
        Instant::now() - self.epoch
    }

    /// Starts counting calls and writes now, for `length`.
    pub fn open_window(&self, length: Duration) {
        let start = self.now();
        let mut state = self.state();
        let base = state.revision;
        let seconds = vec![Second::default(); usize::try_from(length.as_secs()).unwrap_or(0)];
        state.window = Some(Window {
            start,
            length,
            seconds,
            base,
            writes: Vec::new(),
            holders: Vec::new(),
        });
    }

    /// What the window saw.
    pub fn observed(&self) -> Observed {
        let state = self.state();
        state.window.as_ref().map_or(
            Observed {
                seconds: Vec::new(),
                writes: Vec::new(),
                base_revision: state.revision,
            },
            |w| Observed {
                seconds: w.seconds.clone(),
                writes: w.writes.clone(),
                base_revision: w.base,
            },
        )
    }

    /// `RegisterInstance`: creates or replaces the instance with exactly `attributes`.
    pub fn register(&self, id: &str, attributes: BTreeMap<String, String>, writer: Writer) {
        let now = self.now();
        let mut state = self.state();
        let lifecycle = state.instances.get(id).is_none_or(|old| {
            [keys::LB_STATE, keys::LB_HEALTH]
                .iter()
                .any(|key| old.attributes.get(*key) != attributes.get(*key))
        });
        state
            .instances
            .insert(id.to_owned(), Registered { attributes });
        state.wrote(now, writer, lifecycle);
    }

    /// `DeregisterInstance`; nothing when there is no such instance.
    pub fn deregister(&self, id: &str, writer: Writer) {
        let now = self.now();
        let mut state = self.state();
        if state.instances.remove(id).is_some() {
            state.wrote(now, writer, true);
        }
    }

    /// `GetInstance`: the attributes, as the Lambda reads them before it decides.
    pub fn get(&self, id: &str) -> Option<HashMap<String, String>> {
        self.state().instances.get(id).map(|r| {
            r.attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// The registered instance IDs (what reconciliation lists).
    pub fn instance_ids(&self) -> Vec<String> {
        self.state().instances.keys().cloned().collect()
    }

    /// The service's listing now, as `DiscoverInstances` would answer, without a call (what
    /// the report checks new instances against).
    pub fn listing_now(&self) -> Listing {
        let mut state = self.state();
        state.decoded().clone()
    }

    /// The other services of the account (the xDS mode's quiet services): from now on they
    /// answer with the service's listing as it is now, and never change. Their calls draw from
    /// the same quotas and count in the same seconds; nobody's staleness is measured on them.
    pub fn freeze_quiet_services(&self) {
        let mut state = self.state();
        let listing = state.decoded().clone();
        state.quiet = Some(listing);
    }

    /// A pair received the listing at `revision` by another way than a call (pushed by the
    /// xDS server): it now holds every write up to it.
    pub fn record_received(&self, pair: usize, revision: i64) {
        let now = self.now();
        self.state().received(now, pair, revision);
    }

    /// `DiscoverInstancesRevision` from `pair`.
    fn discover_revision(&self, _pair: Option<usize>) -> Result<Option<i64>, Error> {
        let now = self.now();
        let mut state = self.state();
        let served = state.revision_bucket.take(now);
        state.count(now, Operation::DiscoverInstancesRevision, served);
        if !served {
            return Err(throttled_revision(state.answer));
        }
        Ok(Some(state.revision))
    }

    /// `DiscoverInstances` from `pair` (`None`: a caller whose staleness is not measured, an
    /// xDS server replica).
    fn discover(&self, pair: Option<usize>) -> Result<Listing, Error> {
        let now = self.now();
        let mut state = self.state();
        let served = state.list_bucket.take(now);
        state.count(now, Operation::DiscoverInstances, served);
        if !served {
            return Err(throttled_list(state.answer));
        }
        let revision = state.revision;
        let listing = state.decoded().clone();
        if let Some(pair) = pair {
            state.received(now, pair, revision);
        }
        Ok(listing)
    }

    /// A quiet service's `DiscoverInstancesRevision` (see [`Self::freeze_quiet_services`]).
    fn discover_quiet_revision(&self) -> Result<Option<i64>, Error> {
        let now = self.now();
        let mut state = self.state();
        let served = state.revision_bucket.take(now);
        state.count(now, Operation::DiscoverInstancesRevision, served);
        if !served {
            return Err(throttled_revision(state.answer));
        }
        Ok(state.quiet.as_ref().and_then(Listing::revision))
    }

    /// A quiet service's `DiscoverInstances`.
    fn discover_quiet(&self) -> Result<Listing, Error> {
        let now = self.now();
        let mut state = self.state();
        let served = state.list_bucket.take(now);
        state.count(now, Operation::DiscoverInstances, served);
        if !served {
            return Err(throttled_list(state.answer));
        }
        Ok(state.quiet.clone().unwrap_or_default())
    }
}

impl State {
    /// The listing at the current revision, decoded once per revision, the way the client
    /// decodes Cloud Map's answer.
    fn decoded(&mut self) -> &Listing {
        let revision = self.revision;
        if self.listing.as_ref().and_then(Listing::revision) != Some(revision) {
            let listing = Listing::decode(
                Some(revision),
                self.instances
                    .iter()
                    .map(|(id, r)| (id.as_str(), &r.attributes, CloudMapHealth::Healthy)),
            );
            self.listing = Some(listing);
        }
        self.listing.get_or_insert_default()
    }

    fn wrote(&mut self, now: Duration, writer: Writer, lifecycle: bool) {
        self.revision += 1;
        if let Some(window) = &mut self.window
            && now < window.start + window.length
        {
            debug_assert_eq!(
                window.base + i64::try_from(window.writes.len()).unwrap_or(0) + 1,
                self.revision
            );
            window.writes.push(Write {
                at: now - window.start,
                writer,
                lifecycle,
                held_by_all_at: None,
                held_by_first_at: None,
            });
            window.holders.push(0);
        }
    }

    fn count(&mut self, now: Duration, operation: Operation, served: bool) {
        let Some(window) = &mut self.window else {
            return;
        };
        let Some(offset) = now.checked_sub(window.start) else {
            return;
        };
        let Some(second) = usize::try_from(offset.as_secs())
            .ok()
            .and_then(|s| window.seconds.get_mut(s))
        else {
            return;
        };
        let counter = match (operation, served) {
            (Operation::DiscoverInstances, true) => &mut second.lists,
            (Operation::DiscoverInstances, false) => &mut second.lists_throttled,
            (Operation::DiscoverInstancesRevision, true) => &mut second.revisions,
            (Operation::DiscoverInstancesRevision, false) => &mut second.revisions_throttled,
        };
        *counter += 1;
    }

    /// `pair` received a listing at `revision`: it now holds every write up to it.
    fn received(&mut self, now: Duration, pair: usize, revision: i64) {
        let pairs = u32::try_from(self.held.len()).unwrap_or(u32::MAX);
        // Only forwards: a pair that receives an older listing (a pushed answer computed before
        // the Cloud Map listing it already has) still holds what it held.
        if revision <= self.held[pair] {
            return;
        }
        let before = std::mem::replace(&mut self.held[pair], revision);
        let Some(window) = &mut self.window else {
            return;
        };
        // Writes are numbered by revision from the window's base: write i moved it to
        // base + i + 1.
        let first = usize::try_from((before.max(window.base) - window.base).max(0)).unwrap_or(0);
        let last = usize::try_from((revision - window.base).max(0))
            .unwrap_or(0)
            .min(window.writes.len());
        for i in first..last {
            window.holders[i] += 1;
            if window.holders[i] == 1 {
                window.writes[i].held_by_first_at = Some(now - window.start);
            }
            if window.holders[i] == pairs {
                window.writes[i].held_by_all_at = Some(now - window.start);
            }
        }
    }
}

fn limit_exceeded(answer: ThrottleAnswer) -> (ErrorMetadata, &'static str) {
    let code = match answer {
        ThrottleAnswer::RequestLimitExceeded => "RequestLimitExceeded",
        ThrottleAnswer::AsOutage => "ServiceUnavailable",
    };
    let meta = ErrorMetadata::builder()
        .code(code)
        .message("Rate exceeded")
        .build();
    (meta, code)
}

fn http_400() -> Response {
    let status = StatusCode::try_from(400_u16).expect("400 is an HTTP status");
    Response::new(status, SdkBody::empty())
}

fn throttled_list(answer: ThrottleAnswer) -> Error {
    let (meta, code) = limit_exceeded(answer);
    let error = if code == "RequestLimitExceeded" {
        DiscoverInstancesError::RequestLimitExceeded(
            RequestLimitExceeded::builder()
                .message("Rate exceeded")
                .meta(meta)
                .build(),
        )
    } else {
        DiscoverInstancesError::generic(meta)
    };
    CloudMapSource::error(
        "DiscoverInstances",
        NAMESPACE,
        SERVICE,
        SdkError::service_error(error, http_400()),
    )
}

fn throttled_revision(answer: ThrottleAnswer) -> Error {
    let (meta, code) = limit_exceeded(answer);
    let error = if code == "RequestLimitExceeded" {
        DiscoverInstancesRevisionError::RequestLimitExceeded(
            RequestLimitExceeded::builder()
                .message("Rate exceeded")
                .meta(meta)
                .build(),
        )
    } else {
        DiscoverInstancesRevisionError::generic(meta)
    };
    CloudMapSource::error(
        "DiscoverInstancesRevision",
        NAMESPACE,
        SERVICE,
        SdkError::service_error(error, http_400()),
    )
}

/// One client-service pair's view of the model: what its real [`Discovery`] polls.
///
/// [`Discovery`]: cloudmap_balancer::discovery::Discovery
#[derive(Debug, Clone)]
pub struct PairSource {
    /// The pair's index.
    pub pair: usize,
    /// The model.
    pub cloud_map: Arc<CloudMap>,
}

impl InstanceSource for PairSource {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        let result = self.cloud_map.discover_revision(Some(self.pair));
        Box::pin(async move { result })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        let result = self.cloud_map.discover(Some(self.pair));
        Box::pin(async move { result })
    }
}

/// An xDS server replica's view of the service: the calls count, nobody's staleness is
/// measured on them (the replica's clients are measured instead).
#[derive(Debug, Clone)]
pub struct ReplicaSource {
    /// The model.
    pub cloud_map: Arc<CloudMap>,
}

impl InstanceSource for ReplicaSource {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        let result = self.cloud_map.discover_revision(None);
        Box::pin(async move { result })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        let result = self.cloud_map.discover(None);
        Box::pin(async move { result })
    }
}

/// One of the account's other services, which never change (see
/// [`CloudMap::freeze_quiet_services`]): its calls draw from the same quotas.
#[derive(Debug, Clone)]
pub struct QuietSource {
    /// The model.
    pub cloud_map: Arc<CloudMap>,
}

impl InstanceSource for QuietSource {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        let result = self.cloud_map.discover_quiet_revision();
        Box::pin(async move { result })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        let result = self.cloud_map.discover_quiet();
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudmap_balancer::CloudMapErrorKind;

    fn attributes(state: &str) -> BTreeMap<String, String> {
        [
            (keys::AWS_INSTANCE_IPV4, "10.0.0.1"),
            (keys::AWS_INSTANCE_PORT, "50051"),
            (keys::LB_STATE, state),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn every_write_moves_the_revision_forwards() {
        let model = CloudMap::new(1, Quotas::AWS, ThrottleAnswer::RequestLimitExceeded);
        let first = model.discover_revision(Some(0)).unwrap().unwrap();
        model.register("a", attributes("RUNNING"), Writer::Ecs);
        model.register("a", attributes("DRAINING"), Writer::Lambda);
        model.deregister("a", Writer::Ecs);
        model.deregister("a", Writer::Ecs);
        assert_eq!(model.discover_revision(Some(0)).unwrap(), Some(first + 3));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bucket_the_client_sees_request_limit_exceeded() {
        let quotas = Quotas::AWS.scaled(0.001); // 1/s, burst 2
        let model = CloudMap::new(1, quotas, ThrottleAnswer::RequestLimitExceeded);
        assert!(model.discover(Some(0)).is_ok());
        assert!(model.discover(Some(0)).is_ok());
        let error = model.discover(Some(0)).unwrap_err();
        assert_eq!(error.cloud_map_kind(), Some(CloudMapErrorKind::Throttled));
        assert!(error.to_string().contains("DiscoverInstances"), "{error}");
        let outage = CloudMap::new(1, quotas, ThrottleAnswer::AsOutage);
        let _ = (outage.discover(Some(0)), outage.discover(Some(0)));
        assert_eq!(
            outage.discover(Some(0)).unwrap_err().cloud_map_kind(),
            Some(CloudMapErrorKind::Unavailable)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_held_by_all_once_every_pair_listed_after_it() {
        let model = CloudMap::new(2, Quotas::AWS, ThrottleAnswer::RequestLimitExceeded);
        model.open_window(Duration::from_secs(60));
        model.register("a", attributes("RUNNING"), Writer::Ecs);
        model.register("a", attributes("RUNNING"), Writer::Lambda);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = model.discover(Some(0)).unwrap();
        assert_eq!(model.observed().writes[0].held_by_all_at, None);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let _ = model.discover(Some(1)).unwrap();
        let observed = model.observed();
        assert_eq!(
            observed.writes[0].held_by_all_at,
            Some(Duration::from_secs(7))
        );
        assert!(observed.writes[0].lifecycle);
        assert!(!observed.writes[1].lifecycle, "the same state again");
        assert_eq!(observed.seconds[3].lists, 1);
        assert_eq!(observed.seconds[7].lists, 1);
    }
}
