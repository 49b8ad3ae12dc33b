//! The balancer: discovery, the picker and per-instance tonic channels behind one
//! `tower::Service`.
//!
//! A [`Balancer`] owns a discovery poller (the balanced service, and optionally the caller
//! fleet) and a background task that turns every new snapshot, caller-fleet change and ejection
//! into a new picker table, published atomically. [`Balancer::channel`] hands out
//! [`BalancedChannel`]s, the `tower::Service<http::Request<tonic::body::Body>>` that generated
//! clients take as they take a tonic `Channel`.
//!
//! Per call, the channel:
//!
//! 1. picks an instance ([`picker`](crate::picker): zone plan, then power of two choices by
//!    in-flight requests, over the instances that are eligible: not draining, not ejected, not
//!    reported `NOT_SERVING` by their health watch);
//! 2. takes that instance's connection, connecting it first if it has none (connections are
//!    made on first use and kept while the instance stays in the snapshot; each gets a health
//!    watch). The connection's socket is watched, so a connection the server closed, or sent
//!    `GOAWAY` on, is known to be gone *before* a request is put on it;
//! 3. sends the request with the time left before its deadline, keeping what it sent for
//!    replay, and reads the response headers. A failure before the server's application saw the
//!    request (connecting failed, the connection was gone, the stream was refused) is retried
//!    on another instance at once, transparently; a failure after it (a status in the policy's
//!    retryable codes, or a connection that broke) is retried by the retry policy, if there is
//!    one, after its backoff, within the throttle and the deadline ([`crate::retry`]);
//! 4. keeps the call counted in flight until its response body ends, so an instance that leaves
//!    the snapshot keeps its connection until its last call finishes, and records how the call
//!    ended for outlier detection ([`crate::outlier`]).
//!
//! A call in flight when its connection breaks fails `UNAVAILABLE` naming the instance and its
//! address. So a killed server costs at most the calls in flight on it (none with a retry
//! policy that retries `UNAVAILABLE`), and a drained one (health `NOT_SERVING`, then `GOAWAY`)
//! costs none.

mod body;
mod builder;
mod call;
mod endpoint;
mod health;
mod service;
mod state;
mod stats;
mod transport;

use std::sync::Arc;

pub use builder::{Builder, Options};
pub use health::{HealthCheck, HealthStatus};
pub use service::{BalancedChannel, ResponseFuture};
pub use stats::{AdaptiveStats, CallStats, EjectionCounts, InstanceStats, Stats, ZoneStats};

use crate::discovery::{AbortOnDrop, Discovery, InstanceSource, Snapshot};
use crate::error::Error;

/// Balances gRPC calls over the instances of one Cloud Map service. Cheap to clone; the
/// background tasks stop when the last clone, and the last [`BalancedChannel`], is dropped.
#[derive(Clone)]
pub struct Balancer {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<state::Shared>,
    discovery: Discovery,
    caller: Option<Discovery>,
    _task: AbortOnDrop,
}

impl Inner {
    /// The table, once there is one: waits up to the first-snapshot timeout, and fails at once
    /// when discovery is stuck on a configuration error.
    async fn first_table(&self) -> Result<Arc<state::Table>, Error> {
        tokio::select! {
            biased;
            table = self.shared.first_table() => table.map_err(|why| {
                state::no_table(&self.shared, why, self.discovery.status().last_error)
            }),
            error = self.discovery.configuration_error() => Err(Error::Discovery(error)),
        }
    }
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("namespace", &self.inner.shared.ident.namespace)
            .field("service", &self.inner.shared.ident.service)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// A builder for balancing over `service` in the Cloud Map namespace `namespace` (HTTP or
    /// DNS, as ECS service discovery creates it), discovered with the credentials, region and
    /// endpoint of `config` (an `SdkConfig` pointed at moto or LocalStack works; see
    /// [`crate::aws`]). Balancers of one process that name the same service the same way share
    /// one poller (see [`discovery`](crate::discovery)).
    pub fn builder(
        config: &aws_types::SdkConfig,
        namespace: impl Into<String>,
        service: impl Into<String>,
    ) -> Builder {
        Builder::cloud_map(config, namespace.into(), service.into())
    }

    /// A builder over any [`InstanceSource`] (e.g. a [`StaticSource`](crate::discovery::StaticSource)).
    /// `namespace` and `service` name it in logs, errors and metrics.
    pub fn builder_with_source(
        source: impl InstanceSource,
        namespace: impl Into<String>,
        service: impl Into<String>,
    ) -> Builder {
        Builder::with_source(Arc::new(source), namespace.into(), service.into())
    }

    /// A channel for generated clients: `EchoClient::new(balancer.channel())`.
    pub fn channel(&self) -> BalancedChannel {
        BalancedChannel::new(Arc::clone(&self.inner))
    }

    /// Waits until the first snapshot is in service, up to the first-snapshot timeout. Calls do
    /// this by themselves; use it to fail fast at start-up.
    ///
    /// Ends at once with the discovery error (an [`Error::Discovery`] whose
    /// [`Error::cloud_map_kind`] is a configuration error, status `FAILED_PRECONDITION`) when
    /// Cloud Map answers that the service or namespace does not exist or that access is denied.
    /// Discovery keeps polling: a service created later is picked up at the next poll.
    pub async fn ready(&self) -> Result<(), Error> {
        self.inner.first_table().await.map(|_| ())
    }

    /// Lists the instances now (instead of at the next poll) and returns once the picker works
    /// from the result.
    pub async fn refresh(&self) -> Result<(), Error> {
        // Discovery's errors are already this crate's: hand them on as they are.
        let generation = self
            .inner
            .discovery
            .refresh()
            .await
            .map_err(Error::Discovery)?;
        let demand = match &self.inner.caller {
            Some(caller) => caller.refresh().await.map_err(Error::Discovery)?,
            None => 0,
        };
        self.inner.shared.table_at(generation, demand).await;
        Ok(())
    }

    /// The snapshot the picker works from, `None` before the first one.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner.shared.table().map(|t| Arc::clone(&t.snapshot))
    }

    /// The latest snapshot of the caller fleet, when one is configured.
    pub fn caller_snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner.caller.as_ref().and_then(Discovery::snapshot)
    }

    /// The caller's own zone name, once resolved (`None` while detecting, or when unknown).
    pub fn local_zone(&self) -> Option<String> {
        self.inner.shared.local_zone()
    }

    /// The caller's own AZ ID, once resolved (`None` while detecting, or when unknown).
    pub fn local_zone_id(&self) -> Option<String> {
        self.inner.shared.local_zone_id()
    }

    /// Instances, zones, counters and discovery status, read consistently from the current
    /// table.
    pub fn stats(&self) -> Stats {
        stats::collect(&self.inner.shared, self.inner.discovery.status())
    }
}
