//! The balanced channel: a `tower::Service` that picks an instance per call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use fastrand::Rng;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Bytes;
use std::time::Instant;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::Channel;
use tower_service::Service;

use super::Inner;
use super::endpoint::{ConnectFailure, Endpoint, InFlight};
use super::state::{Picked, Shared};
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
/// namespace does not exist or access is denied (before any snapshot), `UNAVAILABLE` with a
/// message naming namespace and service when there is nothing to call, `UNAVAILABLE` naming the
/// instance and its address when connecting failed before the request was sent, and whatever
/// tonic's own `Channel` reports for other transport failures.
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
        // future does hold a clone of the balancer's state (`inner`: the failure counters and
        // the connect path need it), one shared reference count per call; measured in
        // BENCHMARKS.md as part of the balancer's per-call cost.
        let shared = &self.inner.shared;
        let picked = shared.with_table(|table| shared.pick(table, &mut self.rng));
        let inner = Arc::clone(&self.inner);
        ResponseFuture(match picked {
            Some(Some(picked)) => Box::pin(send(inner, picked, request, seed)),
            Some(None) => {
                let error = no_instances(&inner.shared);
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
    let table = inner.first_table().await?;
    let mut rng = Rng::with_seed(seed);
    match inner.shared.pick(&table, &mut rng) {
        Some(picked) => send(inner, picked, request, seed.rotate_left(17)).await,
        None => Err(no_instances(&inner.shared).into()),
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

fn connect_error(shared: &Shared, endpoint: &Endpoint, failure: ConnectFailure) -> Error {
    Error::Connect {
        instance: endpoint.id().to_owned(),
        addr: endpoint.addr(),
        service: shared.ident.service.clone(),
        source: failure,
    }
}

/// Connects (or reuses the connection), counting the call in flight meanwhile.
async fn connect(
    shared: &Shared,
    endpoint: Arc<Endpoint>,
) -> Result<(InFlight, Channel), (Arc<Endpoint>, ConnectFailure)> {
    let guard = InFlight::new(endpoint);
    match guard.endpoint().channel().await {
        Ok((channel, fresh)) => {
            if fresh {
                shared.connect_succeeded(guard.endpoint());
            }
            Ok((guard, channel))
        }
        Err(failure) => {
            let endpoint = Arc::clone(guard.endpoint());
            drop(guard);
            shared.connect_failed(&endpoint, &failure);
            Err((endpoint, failure))
        }
    }
}

/// The slow path of [`send`]: no live connection, so connect, and when that fails (nothing was
/// sent) pick another instance once, transparently. Returns whether the call that goes ahead
/// is timed (that of the re-pick, when there was one).
async fn connect_or_repick(
    shared: &Shared,
    picked: Picked,
    seed: u64,
) -> Result<(InFlight, Channel, bool), Status> {
    match connect(shared, picked.endpoint).await {
        Ok((guard, channel)) => Ok((guard, channel, picked.timed)),
        Err((failed, failure)) => {
            let mut rng = Rng::with_seed(seed);
            let Some(next) = shared.repick(&failed, &mut rng) else {
                shared.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
                return Err(connect_error(shared, &failed, failure).into());
            };
            match connect(shared, next.endpoint).await {
                Ok((guard, channel)) => Ok((guard, channel, next.timed)),
                Err((failed, failure)) => {
                    shared.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
                    Err(connect_error(shared, &failed, failure).into())
                }
            }
        }
    }
}

async fn send(
    inner: Arc<Inner>,
    picked: Picked,
    request: http::Request<Body>,
    seed: u64,
) -> Result<http::Response<Body>, Status> {
    let shared = &inner.shared;
    // The fast path is synchronous; the connect path is boxed so that its (large) state does
    // not make every call's future large.
    let (guard, mut channel, timed) = match picked.endpoint.live_channel() {
        Some(channel) => (InFlight::new(picked.endpoint), channel, picked.timed),
        None => Box::pin(connect_or_repick(shared, picked, seed)).await?,
    };

    let ready = std::future::poll_fn(|cx| Service::poll_ready(&mut channel, cx)).await;
    if let Err(error) = ready {
        shared.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
        guard.endpoint().mark_dead();
        return Err(Status::from_error(Box::new(error)));
    }
    // Only the adaptive controller reads latency: other tables cost no clock reads.
    let started = timed.then(Instant::now);
    match Service::call(&mut channel, request).await {
        Ok(response) => {
            if let Some(started) = started {
                guard.endpoint().zone.record(started.elapsed());
            }
            Ok(response.map(|body| {
                Body::new(Tracked {
                    body,
                    guard: Some(guard),
                })
            }))
        }
        Err(error) => {
            // A transport failure (gRPC errors arrive as responses): the connection is suspect,
            // so the next call on this instance connects anew, before sending.
            shared.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
            let endpoint = Arc::clone(guard.endpoint());
            drop(guard);
            endpoint.mark_dead();
            if is_connect_error(&error) {
                let failure: ConnectFailure = Arc::new(error);
                shared.connect_failed(&endpoint, &failure);
                return Err(connect_error(shared, &endpoint, failure).into());
            }
            Err(Status::from_error(Box::new(error)))
        }
    }
}

/// Whether tonic failed to (re)connect underneath a call: the request was not sent, but it is
/// gone, so the call fails with the same [`Error::Connect`] as a failed re-pick; the instance is
/// ejected for the next ones.
fn is_connect_error(error: &tonic::transport::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A response body that keeps its call counted in flight (and its instance's connection open)
/// until the body ends: the whole stream for streaming calls.
struct Tracked {
    body: Body,
    guard: Option<InFlight>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
