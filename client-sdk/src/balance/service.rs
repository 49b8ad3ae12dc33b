//! The balanced channel: a `tower::Service` that picks an instance per call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use fastrand::Rng;
use tonic::Status;
use tonic::body::Body;
use tower_service::Service;

use super::Inner;
use super::call;
use super::state::Shared;
use crate::error::Error;

/// The balanced channel: what a generated tonic client is built on
/// (`EchoClient::new(balancer.channel())`).
///
/// Cheap to clone (an `Arc` and a random number generator seed); each clone picks independently.
/// It is always ready: each call picks an instance, waits for that instance's connection, and
/// applies backpressure there. A call made before the first snapshot arrived waits for it up to
/// the first-snapshot timeout, or fails at once when Cloud Map answered with a configuration
/// error.
///
/// Errors are [`tonic::Status`]es: `FAILED_PRECONDITION` when Cloud Map says the service or
/// namespace does not exist or access is denied (before any snapshot); `UNAVAILABLE` with a
/// message naming namespace and service when there is nothing to call; `UNAVAILABLE` naming the
/// instance and its address when connecting failed or the connection broke (see the
/// [crate docs](crate#resilience) for which failures are retried); `DEADLINE_EXCEEDED` when the
/// call's deadline passed first; and the service's own statuses as the server sent them.
pub struct BalancedChannel {
    inner: Arc<Inner>,
    rng: Rng,
}

impl BalancedChannel {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        let rng = Rng::with_seed(inner.shared.next_seed());
        Self { inner, rng }
    }
}

impl Clone for BalancedChannel {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.inner))
    }
}

impl fmt::Debug for BalancedChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancedChannel")
            .field("namespace", &self.inner.shared.ident.namespace)
            .field("service", &self.inner.shared.ident.service)
            .finish_non_exhaustive()
    }
}

impl Service<http::Request<Body>> for BalancedChannel {
    type Response = http::Response<Body>;
    type Error = Status;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let seed = self.rng.u64(..);
        // The common case picks here, synchronously, with this handle's generator. A guard
        // rather than a clone of the table's Arc, which changes with every snapshot. The call's
        // future does hold a clone of the balancer's state (`inner`: counters, retries and the
        // connect path need it), one shared reference count per call; measured in
        // BENCHMARKS.md as part of the balancer's per-call cost.
        let shared = &self.inner.shared;
        let picked = shared.with_table(|table| shared.pick(table, &mut self.rng));
        let inner = Arc::clone(&self.inner);
        ResponseFuture(match picked {
            Some(Some(picked)) => Box::pin(call::run(inner, picked, request, seed)),
            Some(None) => {
                let error = no_instances(&inner.shared);
                inner.shared.count_failed();
                Box::pin(std::future::ready(Err(error.into())))
            }
            None => Box::pin(first_call(inner, request, seed)),
        })
    }
}

/// A call made before the first table: waits for it, then picks and sends.
async fn first_call(
    inner: Arc<Inner>,
    request: http::Request<Body>,
    seed: u64,
) -> Result<http::Response<Body>, Status> {
    let table = match inner.first_table().await {
        Ok(table) => table,
        Err(error) => {
            inner.shared.count_failed();
            return Err(error.into());
        }
    };
    let mut rng = Rng::with_seed(seed);
    match inner.shared.pick(&table, &mut rng) {
        Some(picked) => call::run(inner, picked, request, seed.rotate_left(17)).await,
        None => {
            inner.shared.count_failed();
            Err(no_instances(&inner.shared).into())
        }
    }
}

/// The future of one call through a [`BalancedChannel`].
pub struct ResponseFuture(
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Status>> + Send + 'static>>,
);

impl Future for ResponseFuture {
    type Output = Result<http::Response<Body>, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

fn no_instances(shared: &Shared) -> Error {
    Error::NoInstances {
        namespace: shared.ident.namespace.clone(),
        service: shared.ident.service.clone(),
    }
}
