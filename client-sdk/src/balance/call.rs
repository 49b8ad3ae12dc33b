//! One call through the balancer: attempts until it is answered, fails for good, or runs out of
//! time. Transparent retries and policy retries (see [`crate::retry`]) pick an instance the call
//! has not tried; every attempt is sent with the time left before the call's deadline.

use std::sync::Arc;
use std::time::Duration;

use fastrand::Rng;
use http::{HeaderName, HeaderValue};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower_service::Service;

use super::Inner;
use super::body::{Replay, Tracked, grpc_status};
use super::endpoint::{ConnectFailure, Endpoint, EndpointKey, InFlight};
use super::state::{Picked, Shared};
use super::transport::{self, Failure};
use crate::error::Error;
use crate::picker::micros;
use crate::retry::{
    Decision, GiveUp, MAX_TRANSPARENT, Pushback, RetryState, after_failure, format_timeout,
    parse_timeout,
};

// Static names: looking a header up by a `&str` parses the name on every call.
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const PREVIOUS_ATTEMPTS: HeaderName = HeaderName::from_static("grpc-previous-rpc-attempts");
const PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// How one attempt ended.
enum Attempt {
    /// The call's deadline passed while the attempt was waiting for its response (whichever
    /// timer noticed it): the call ends `DEADLINE_EXCEEDED`, nothing recorded.
    Deadline,
    /// Answered: the call returns this response (committed, or a final status in its headers).
    Answered(http::Response<Body>),
    /// Nothing reached the server's application: it may be retried transparently.
    Unsent(Status),
    /// Failed after it may have reached the application: a policy may retry it. `response` is
    /// the trailers-only response, returned as it is when the call is not retried (so the
    /// caller sees the server's status with its metadata).
    Failed {
        status: Status,
        pushback: Pushback,
        response: Option<http::Response<Body>>,
        /// The instance is ejected now: the failure does not count against the retry throttle
        /// (it says the instance is bad, not the fleet).
        outlier: bool,
    },
}

/// Runs a call whose first instance was picked already.
pub(super) async fn run(
    inner: Arc<Inner>,
    first: Picked,
    request: http::Request<Body>,
    seed: u64,
) -> Result<http::Response<Body>, Status> {
    let shared = &inner.shared;
    let (parts, body) = request.into_parts();
    let timeout = parts
        .headers
        .get(&GRPC_TIMEOUT)
        .and_then(|v| parse_timeout(v.as_bytes()));
    let deadline = timeout.map(|t| Instant::now() + t);
    let policy = shared.retry_policy(parts.uri.path());
    let replay = Replay::new(body, shared.settings.retry.buffer_limit).await;
    let mut rng = Rng::with_seed(seed);
    let mut tried: Vec<EndpointKey> = Vec::new();
    let mut retry = RetryState::default();
    let mut transparent = 0u32;
    let mut sent = 0u32;
    let mut attempts = 0u32;
    let mut picked = first;
    loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            return Err(deadline_exceeded(shared, timeout, attempts));
        }
        // The head again for every attempt. Not the extensions: they are for the layers above
        // the channel, and nothing below it (tonic's channel, hyper) reads them.
        let mut request = http::Request::new(replay.attempt());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        if let Some(left) = remaining
            && let Ok(value) = HeaderValue::from_str(&format_timeout(left))
        {
            request.headers_mut().insert(GRPC_TIMEOUT, value);
        }
        if sent > 0 {
            request
                .headers_mut()
                .insert(PREVIOUS_ATTEMPTS, HeaderValue::from(sent));
        }
        attempts += 1;
        let endpoint = Arc::clone(&picked.endpoint);
        let outcome = match deadline {
            Some(deadline) => {
                tokio::select! {
                    biased;
                    outcome = attempt(shared, picked, request, &replay, Some(deadline)) => outcome,
                    () = tokio::time::sleep_until(deadline) => {
                        return Err(deadline_exceeded(shared, timeout, attempts));
                    }
                }
            }
            None => attempt(shared, picked, request, &replay, None).await,
        };
        match outcome {
            Attempt::Answered(response) => return Ok(response),
            Attempt::Deadline => return Err(deadline_exceeded(shared, timeout, attempts)),
            Attempt::Unsent(status) => {
                tried.push(endpoint.key.clone());
                if transparent < MAX_TRANSPARENT
                    && replay.replayable()
                    && let Some(next) = shared.repick(&mut rng, &tried)
                {
                    transparent += 1;
                    shared.count_retry(&next.endpoint, true);
                    picked = next;
                    continue;
                }
                return Err(failed(shared, status));
            }
            Attempt::Failed {
                status,
                pushback,
                response,
                outlier,
            } => {
                sent += 1;
                tried.push(endpoint.key.clone());
                let give_up = |status: Status, response: Option<http::Response<Body>>| {
                    response.ok_or_else(|| failed(shared, status))
                };
                let Some(policy) = policy.filter(|_| replay.replayable()) else {
                    return give_up(status, response);
                };
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if left == Some(Duration::ZERO) {
                    // No attempt starts after the deadline, and a status the server answered
                    // as it passed (its own `DEADLINE_EXCEEDED`, say) reaches the caller as it
                    // is, without taking a retry token.
                    return give_up(status, response);
                }
                let decision = after_failure(
                    policy,
                    &mut retry,
                    status.code(),
                    pushback,
                    || outlier || shared.throttle.on_failure(),
                    left,
                    rng.f64(),
                );
                match decision {
                    Decision::Retry(delay) => {
                        drop(response);
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let Some(next) = shared.repick(&mut rng, &tried) else {
                            return Err(failed(shared, status));
                        };
                        shared.count_retry(&next.endpoint, false);
                        picked = next;
                    }
                    Decision::GiveUp(why) => {
                        if why == GiveUp::Throttled {
                            shared.count_throttled(&endpoint);
                        }
                        return give_up(status, response);
                    }
                }
            }
        }
    }
}

/// A call that fails in the balancer or the transport: counted.
fn failed(shared: &Shared, status: Status) -> Status {
    shared.count_failed();
    status
}

fn deadline_exceeded(shared: &Shared, timeout: Option<Duration>, attempts: u32) -> Status {
    Error::DeadlineExceeded {
        service: shared.ident.service.clone(),
        deadline: timeout.unwrap_or_default(),
        attempts,
    }
    .into()
}

/// The status of a failed connection attempt, naming the instance.
pub(super) fn connect_error(
    shared: &Shared,
    endpoint: &Endpoint,
    failure: ConnectFailure,
) -> Status {
    Error::Connect {
        instance: endpoint.id().to_owned(),
        addr: endpoint.addr(),
        service: shared.ident.service.clone(),
        source: failure,
    }
    .into()
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

/// One attempt on `picked`: connect if needed, send, and read the response headers.
async fn attempt(
    shared: &Arc<Shared>,
    picked: Picked,
    request: http::Request<Body>,
    replay: &Replay,
    deadline: Option<Instant>,
) -> Attempt {
    let Picked {
        endpoint,
        zone_latency,
        latency_aware,
    } = picked;
    // The fast path is synchronous; the connect path is boxed so that its (large) state does
    // not make every call's future large.
    let live = endpoint.live_channel();
    // An answer on a connection this attempt opened includes its set-up (the HTTP/2 and TLS
    // handshakes may finish under the first call): it would make a new connection look slow to
    // the latency-aware choice, which then avoids the instance for a second.
    let fresh = live.is_none();
    let (guard, mut channel) = match live {
        Some(channel) => (InFlight::new(endpoint), channel),
        None => match Box::pin(connect(shared, endpoint)).await {
            Ok(connected) => connected,
            Err((endpoint, failure)) => {
                return Attempt::Unsent(connect_error(shared, &endpoint, failure));
            }
        },
    };
    if let Err(error) = std::future::poll_fn(|cx| Service::poll_ready(&mut channel, cx)).await {
        let endpoint = Arc::clone(guard.endpoint());
        drop(guard);
        endpoint.mark_dead();
        let failure = Failure::NotSent { connect: false };
        return Attempt::Unsent(transport::attempt_failed(
            shared,
            &endpoint,
            failure,
            Box::new(error),
        ));
    }
    // Only the adaptive controller and the latency-aware choice read latency: without them a
    // call costs no clock reads.
    let started = (zone_latency || latency_aware.is_some()).then(Instant::now);
    let answered = |endpoint: &Endpoint| {
        if let Some(started) = started {
            let latency = started.elapsed();
            if zone_latency {
                endpoint.zone.record(latency);
            }
            if let Some(l) = latency_aware.as_ref().filter(|_| !fresh) {
                // A call in flight across a stall of the client measures the stall too: the
                // part the stall covers may be the client's, not the instance's.
                let (from, to) = (
                    micros(started.into_std()),
                    micros((started + latency).into_std()),
                );
                let stalled = Duration::from_micros(shared.lag.own_delay(from, to));
                endpoint
                    .latency
                    .record_stalled(latency, stalled, to, shared.lag.lag_us(), l);
            }
        }
    };
    match Service::call(&mut channel, request).await {
        Ok(response) => {
            let Some(code) = grpc_status(response.headers()) else {
                // Response headers: the call is committed.
                answered(guard.endpoint());
                replay.commit();
                let shared = Arc::clone(shared);
                let cancel = replay.canceller();
                return Attempt::Answered(
                    response
                        .map(|body| Body::new(Tracked::new(body, guard, shared, deadline, cancel))),
                );
            };
            // Trailers-only: the status is in the headers, and nothing is committed.
            if code == Code::Cancelled && deadline.is_some_and(|d| Instant::now() >= d) {
                // A server that gave up on the call at its deadline and said `CANCELLED` (as
                // tonic's server does): the deadline's, as gRPC says.
                return Attempt::Deadline;
            }
            let outlier = shared.record(guard.endpoint(), code);
            if code == Code::Ok {
                answered(guard.endpoint());
                replay.commit();
            }
            let status = Status::from_header_map(response.headers())
                .unwrap_or_else(|| Status::new(code, ""));
            let pushback =
                Pushback::parse(response.headers().get(&PUSHBACK).map(HeaderValue::as_bytes));
            let response = response.map(|body| {
                Body::new(Tracked::new(
                    body,
                    guard,
                    Arc::clone(shared),
                    deadline,
                    None,
                ))
            });
            if code == Code::Ok {
                return Attempt::Answered(response);
            }
            Attempt::Failed {
                status,
                pushback,
                response: Some(response),
                outlier,
            }
        }
        Err(error) => {
            let endpoint = Arc::clone(guard.endpoint());
            drop(guard);
            // By the error's type (see `transport`): an error not known is not a broken
            // connection.
            let failure = transport::classify(&error);
            if failure.ends_connection() {
                endpoint.mark_dead();
            }
            // Whichever timer fired first (this balancer's, or tonic's enforcement of the
            // `grpc-timeout` it was sent with, which cannot fire before the deadline), or
            // whatever failed as the deadline passed: the caller's deadline, which says nothing
            // about the instance. (tonic's timeout before the deadline is one set on the
            // instances' tonic `Endpoint`: the attempt's own timeout, which fails the attempt
            // `DEADLINE_EXCEEDED` below.)
            let expired = deadline.is_some_and(|deadline| Instant::now() >= deadline);
            let connect = failure == Failure::NotSent { connect: true };
            if expired && !connect {
                return Attempt::Deadline;
            }
            let status = transport::attempt_failed(shared, &endpoint, failure, Box::new(error));
            if connect {
                // A connection that could not be made is the instance's, deadline or not.
                let cause: ConnectFailure = Arc::new(status.clone());
                shared.connect_failed(&endpoint, &cause);
                if expired {
                    return Attempt::Deadline;
                }
            }
            if failure.unsent() {
                return Attempt::Unsent(status);
            }
            let outlier = failure.recorded() && shared.record(&endpoint, status.code());
            Attempt::Failed {
                status,
                pushback: Pushback::None,
                response: None,
                outlier,
            }
        }
    }
}
