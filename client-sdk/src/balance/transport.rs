//! Transport failures: what a failed attempt's error is, read by its type, and so what it does
//! to the connection, to outlier detection and to retries; and the status a caller sees, which
//! always names the instance and its address.
//!
//! [`classify`] walks the error's source chain and stops at the first error it knows. What it
//! does not know is [`Failure::Unknown`]: it is never taken for a broken connection (a socket
//! that really failed is seen by the connection's own watch, which marks it dead anyway).
//!
//! What each failure does to the connection, to outlier detection and to retries is the table
//! in [`crate::retry`]'s docs ("Transport failures"), which describes [`classify`]: change them
//! together.
//!
//! Whatever the error, an attempt that fails once the call's deadline has passed ends the call
//! with `DEADLINE_EXCEEDED` and records no call against the instance (the connection is still
//! forgotten when the failure says it is gone, and a failed connect still counts).

use std::error::Error as StdError;

use tonic::{Code, Status};

use super::endpoint::{ConnectionGone, Endpoint};
use super::state::Shared;
use crate::error::Error;

/// What a failed attempt's transport error is (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing was sent: a connection could not be made, or it was gone.
    NotSent {
        /// A real connection attempt failed (the instance is ejected), rather than an old
        /// connection found gone.
        connect: bool,
    },
    /// The server's HTTP/2 layer refused the stream (`REFUSED_STREAM`) before its application
    /// saw it; the connection is fine.
    Refused,
    /// The server is closing the connection (`GOAWAY` with `NO_ERROR`) and did not process the
    /// stream.
    GoingAway,
    /// tonic's own timer ended the attempt: its enforcement of the `grpc-timeout` the attempt
    /// was sent with (the call's deadline has passed), or a timeout set on the instance's tonic
    /// `Endpoint` (the attempt's own).
    Deadline,
    /// The server reset this stream (with a reason other than `REFUSED_STREAM`), or h2 reset it
    /// because the server broke the protocol on it. The connection is fine.
    Reset(h2::Reason),
    /// This client reset the stream: its request body failed.
    Local(h2::Reason),
    /// The connection failed; the request may have reached the application.
    Broken,
    /// Not an error this module knows.
    Unknown,
}

impl Failure {
    /// Whether the connection is gone: the balancer forgets it, and the next call connects anew.
    pub(crate) fn ends_connection(self) -> bool {
        matches!(self, Self::NotSent { .. } | Self::GoingAway | Self::Broken)
    }

    /// Whether the server's application cannot have seen the request: retried transparently.
    pub(crate) fn unsent(self) -> bool {
        matches!(self, Self::NotSent { .. } | Self::Refused | Self::GoingAway)
    }

    /// Whether outlier detection records the attempt's code against the instance: only what
    /// the server (or its connection) did, never what this client did or does not know.
    pub(crate) fn recorded(self) -> bool {
        matches!(self, Self::Reset(_) | Self::Broken)
    }

    /// The gRPC code the attempt fails with.
    pub(crate) fn code(self) -> Code {
        match self {
            Self::NotSent { .. } | Self::Refused | Self::GoingAway | Self::Broken => {
                Code::Unavailable
            }
            Self::Deadline => Code::DeadlineExceeded,
            Self::Reset(reason) | Self::Local(reason) => reset_code(reason),
            Self::Unknown => Code::Unknown,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::NotSent { .. } => "the request could not be sent",
            Self::Refused => "the server refused the stream before processing it",
            Self::GoingAway => {
                "the server is closing the connection (GOAWAY) and did not process the stream"
            }
            Self::Deadline => {
                "the attempt timed out (a timeout on the instance's tonic `Endpoint`)"
            }
            Self::Reset(_) => "the server reset the stream before the response",
            Self::Local(_) => "this client reset the stream (its request body failed)",
            Self::Broken => "the connection failed before the response",
            Self::Unknown => "the transport failed before the response",
        }
    }
}

fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// Reads a transport error by the types in its source chain: the first error known decides.
pub(crate) fn classify(error: &(dyn StdError + 'static)) -> Failure {
    for e in chain(error) {
        if e.is::<ConnectionGone>() {
            return Failure::NotSent { connect: false };
        }
        if e.is::<tonic::ConnectError>() {
            // tonic wraps what the connector answers; ours answers `ConnectionGone` when tonic
            // tries to reconnect a connection that is gone.
            let gone = chain(e).any(|e| e.is::<ConnectionGone>());
            return Failure::NotSent { connect: !gone };
        }
        if e.is::<tonic::TimeoutExpired>() {
            return Failure::Deadline;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return of_h2(h2);
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_canceled() || hyper.is_closed() {
                // The request was dropped from hyper's queue, or the queue was gone: the
                // connection's task ended before sending it.
                return Failure::NotSent { connect: false };
            }
            if hyper.is_timeout() {
                // HTTP/2 keep-alive: the connection stopped answering pings.
                return Failure::Broken;
            }
            // An HTTP/2 or I/O error: its cause, next in the chain, says which.
            continue;
        }
        if e.is::<std::io::Error>() {
            return Failure::Broken;
        }
    }
    Failure::Unknown
}

fn of_h2(h2: &h2::Error) -> Failure {
    if h2.is_io() {
        return Failure::Broken;
    }
    let reason = h2.reason().unwrap_or(h2::Reason::INTERNAL_ERROR);
    if h2.is_go_away() {
        // A stream above the `GOAWAY`'s last stream ID was not processed; one with an error is
        // the connection failing.
        return if h2.is_remote() && reason == h2::Reason::NO_ERROR {
            Failure::GoingAway
        } else {
            Failure::Broken
        };
    }
    if h2.is_reset() {
        return if h2.is_remote() {
            if reason == h2::Reason::REFUSED_STREAM {
                Failure::Refused
            } else {
                Failure::Reset(reason)
            }
        } else if h2.is_library() {
            Failure::Reset(reason)
        } else {
            Failure::Local(reason)
        };
    }
    // h2's other errors are misuse of its API (by hyper): nothing about the server.
    Failure::Unknown
}

/// The gRPC code of a stream reset with `reason` (gRPC's HTTP/2 spec, "Errors").
fn reset_code(reason: h2::Reason) -> Code {
    match reason {
        h2::Reason::CANCEL => Code::Cancelled,
        h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        h2::Reason::REFUSED_STREAM => Code::Unavailable,
        // NO_ERROR included: "an explicit gRPC status of OK should have been sent".
        _ => Code::Internal,
    }
}

/// The status of an attempt that failed before its response, naming the instance.
pub(crate) fn attempt_failed(
    shared: &Shared,
    endpoint: &Endpoint,
    failure: Failure,
    error: Box<dyn StdError + Send + Sync + 'static>,
) -> Status {
    Error::Transport {
        instance: endpoint.id().to_owned(),
        addr: endpoint.addr(),
        service: shared.ident.service.clone(),
        code: failure.code(),
        what: failure.what(),
        source: error,
    }
    .into()
}

/// What a committed call's failed response body means: the failure, and the status naming the
/// instance (`DEADLINE_EXCEEDED` when the call's deadline had passed). Nothing can be "not
/// sent" once the response started: the connection's end is a broken call.
pub(crate) fn broken_mid_call(
    shared: &Shared,
    endpoint: &Endpoint,
    status: &Status,
    expired: bool,
) -> (Failure, Status) {
    let failure = match classify(status) {
        Failure::NotSent { .. } | Failure::GoingAway | Failure::Refused => Failure::Broken,
        failure => failure,
    };
    let (code, what) = if expired {
        (
            Code::DeadlineExceeded,
            "the deadline passed while the response was streaming",
        )
    } else {
        (
            failure.code(),
            "the call broke while the response was streaming",
        )
    };
    let status = Error::Transport {
        instance: endpoint.id().to_owned(),
        addr: endpoint.addr(),
        service: shared.ident.service.clone(),
        code,
        what,
        source: Box::new(status.clone()),
    }
    .into();
    (failure, status)
}

/// The scripted HTTP/2 peer the tests below (and the component tests) fail calls against.
#[cfg(test)]
#[path = "../../tests/support/h2_script.rs"]
mod h2_script;

#[cfg(test)]
mod tests {
    //! Every branch, with the errors the real libraries produce: a real tonic `Channel` (and a
    //! raw hyper connection) against a scripted HTTP/2 peer on loopback.

    use std::net::SocketAddr;

    use http_body_util::StreamBody;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpStream;
    use tonic::body::Body;
    use tonic::transport::{Channel, Endpoint as TonicEndpoint};
    use tower::ServiceExt;

    use super::*;
    use crate::balance::endpoint::watched_channel;

    use super::h2_script::{
        CANCEL, ENHANCE_YOUR_CALM, INTERNAL_ERROR, NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM,
        Script, ScriptedPeer,
    };

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrap(#[source] Box<dyn StdError + Send + Sync>);

    fn endpoint(addr: SocketAddr) -> TonicEndpoint {
        TonicEndpoint::from_shared(format!("http://{addr}")).expect("a valid URI")
    }

    fn tcp(
        addr: SocketAddr,
    ) -> impl tower::Service<
        http::Uri,
        Response = TokioIo<TcpStream>,
        Error = std::io::Error,
        Future = impl Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send + Unpin,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |_: http::Uri| {
            Box::pin(async move { TcpStream::connect(addr).await.map(TokioIo::new) })
        })
    }

    async fn channel(endpoint: TonicEndpoint, addr: SocketAddr) -> Channel {
        endpoint
            .connect_with_connector(tcp(addr))
            .await
            .expect("connected")
    }

    fn request(timeout: Option<&'static str>, body: Body) -> http::Request<Body> {
        let mut request = http::Request::builder()
            .method("POST")
            .uri("http://test/grpc.testing.TestService/EmptyCall")
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(timeout) = timeout {
            request = request.header("grpc-timeout", timeout);
        }
        request.body(body).expect("a valid request")
    }

    /// The error a real channel returns for one call to a peer following `script`.
    async fn failure_of(script: Script) -> tonic::transport::Error {
        let peer = ScriptedPeer::start(script).await;
        let channel = channel(endpoint(peer.addr), peer.addr).await;
        channel
            .oneshot(request(None, Body::empty()))
            .await
            .expect_err("the peer never answers")
    }

    #[tokio::test]
    async fn a_refused_stream_is_retried_transparently_and_keeps_the_connection() {
        let failure = classify(&failure_of(Script::Reset(REFUSED_STREAM)).await);
        assert_eq!(failure, Failure::Refused);
        assert!(failure.unsent() && !failure.ends_connection() && !failure.recorded());
        assert_eq!(failure.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn a_reset_stream_keeps_the_connection_and_maps_its_reason() {
        for (code, reason, grpc) in [
            (CANCEL, h2::Reason::CANCEL, Code::Cancelled),
            (INTERNAL_ERROR, h2::Reason::INTERNAL_ERROR, Code::Internal),
            (
                ENHANCE_YOUR_CALM,
                h2::Reason::ENHANCE_YOUR_CALM,
                Code::ResourceExhausted,
            ),
            (NO_ERROR, h2::Reason::NO_ERROR, Code::Internal),
        ] {
            let failure = classify(&failure_of(Script::Reset(code)).await);
            assert_eq!(failure, Failure::Reset(reason), "{reason:?}");
            assert!(!failure.unsent() && !failure.ends_connection() && failure.recorded());
            assert_eq!(failure.code(), grpc, "{reason:?}");
        }
    }

    #[tokio::test]
    async fn a_protocol_error_on_a_stream_is_a_reset_and_on_the_connection_a_broken_one() {
        // Malformed response headers: h2 resets that stream; the connection is fine.
        let error = failure_of(Script::Malformed).await;
        let h2 = chain(&error).find_map(|e| e.downcast_ref::<h2::Error>());
        assert!(
            h2.is_some_and(|h2| h2.is_reset() && h2.is_library()),
            "{error:?}"
        );
        let failure = classify(&error);
        assert_eq!(
            failure,
            Failure::Reset(h2::Reason::PROTOCOL_ERROR),
            "{error:?}"
        );
        assert!(!failure.ends_connection() && failure.recorded());
        assert_eq!(failure.code(), Code::Internal);
        // DATA before any headers: h2 ends the connection with GOAWAY(PROTOCOL_ERROR).
        let error = failure_of(Script::DataFirst).await;
        let h2 = chain(&error).find_map(|e| e.downcast_ref::<h2::Error>());
        assert!(
            h2.is_some_and(|h2| h2.is_go_away() && h2.is_library()),
            "{error:?}"
        );
        assert_eq!(classify(&error), Failure::Broken);
    }

    #[tokio::test]
    async fn goaway_before_processing_is_transparent_and_with_an_error_is_a_broken_connection() {
        let failure = classify(&failure_of(Script::GoAway(NO_ERROR)).await);
        assert_eq!(failure, Failure::GoingAway);
        assert!(failure.unsent() && failure.ends_connection() && !failure.recorded());
        for code in [PROTOCOL_ERROR, ENHANCE_YOUR_CALM] {
            let failure = classify(&failure_of(Script::GoAway(code)).await);
            assert_eq!(failure, Failure::Broken, "GOAWAY {code}");
            assert!(!failure.unsent() && failure.ends_connection() && failure.recorded());
            assert_eq!(failure.code(), Code::Unavailable);
        }
    }

    #[tokio::test]
    async fn a_closed_socket_is_a_broken_connection() {
        let failure = classify(&failure_of(Script::Close).await);
        assert_eq!(failure, Failure::Broken);
        assert!(failure.ends_connection() && failure.recorded());
    }

    #[tokio::test]
    async fn tonics_own_timeout_is_the_deadline_not_a_broken_connection() {
        // tonic enforces the `grpc-timeout` the attempt carries, with `TimeoutExpired`: the
        // error that was taken for a broken connection.
        let peer = ScriptedPeer::start(Script::Silent).await;
        let channel = channel(endpoint(peer.addr), peer.addr).await;
        let error = channel
            .clone()
            .oneshot(request(Some("20m"), Body::empty()))
            .await
            .expect_err("the peer never answers");
        assert!(
            chain(&error).any(|e| e.is::<tonic::TimeoutExpired>()),
            "{error:?}"
        );
        let failure = classify(&error);
        assert_eq!(failure, Failure::Deadline);
        assert!(!failure.unsent() && !failure.ends_connection() && !failure.recorded());
        assert_eq!(failure.code(), Code::DeadlineExceeded);
        // The same connection still carries calls.
        let again = channel
            .oneshot(request(Some("20m"), Body::empty()))
            .await
            .expect_err("the peer never answers");
        assert_eq!(classify(&again), Failure::Deadline);
        // Both requests reached the peer, on one connection (the second may be read after its
        // timeout: wait for it, up to a liveness bound).
        let bound = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while peer.requests() < 2 && tokio::time::Instant::now() < bound {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!((peer.connections(), peer.requests()), (1, 2));
    }

    #[tokio::test]
    async fn a_keep_alive_timeout_is_a_broken_connection() {
        let peer = ScriptedPeer::start(Script::Deaf).await;
        let endpoint = endpoint(peer.addr)
            .http2_keep_alive_interval(std::time::Duration::from_millis(20))
            .keep_alive_timeout(std::time::Duration::from_millis(20))
            .keep_alive_while_idle(true);
        let error = channel(endpoint, peer.addr)
            .await
            .oneshot(request(None, Body::empty()))
            .await
            .expect_err("the peer never answers");
        let hyper = chain(&error).find_map(|e| e.downcast_ref::<hyper::Error>());
        assert!(hyper.is_some_and(hyper::Error::is_timeout), "{error:?}");
        assert_eq!(classify(&error), Failure::Broken);
    }

    #[tokio::test]
    async fn a_request_body_that_fails_is_this_clients_reset() {
        let peer = ScriptedPeer::start(Script::Silent).await;
        let channel = channel(endpoint(peer.addr), peer.addr).await;
        let failing = futures_util::stream::iter([Err::<http_body::Frame<bytes::Bytes>, _>(
            Status::internal("the caller's stream failed"),
        )]);
        let error = channel
            .oneshot(request(None, Body::new(StreamBody::new(failing))))
            .await
            .expect_err("the body failed");
        let failure = classify(&error);
        assert_eq!(
            failure,
            Failure::Local(h2::Reason::INTERNAL_ERROR),
            "{error:?}"
        );
        assert!(!failure.unsent() && !failure.ends_connection() && !failure.recorded());
    }

    #[tokio::test]
    async fn failing_to_connect_is_not_sent_and_a_connect_failure() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
        let addr = closed.local_addr().expect("an address");
        drop(closed);
        let error = endpoint(addr)
            .connect_with_connector_lazy(tcp(addr))
            .oneshot(request(None, Body::empty()))
            .await
            .expect_err("nothing listens");
        assert!(
            chain(&error).any(|e| e.is::<tonic::ConnectError>()),
            "{error:?}"
        );
        let failure = classify(&error);
        assert_eq!(failure, Failure::NotSent { connect: true });
        assert!(failure.unsent() && failure.ends_connection());
    }

    #[tokio::test]
    async fn a_connection_found_gone_is_not_sent() {
        // The balancer's connector refuses tonic's reconnect once its connection is gone.
        let peer = ScriptedPeer::start(Script::Close).await;
        let channel = watched_channel(peer.addr).await.expect("connected");
        let first = channel
            .clone()
            .oneshot(request(None, Body::empty()))
            .await
            .expect_err("closed");
        assert_eq!(classify(&first), Failure::Broken);
        let second = channel
            .oneshot(request(None, Body::empty()))
            .await
            .expect_err("gone");
        assert!(
            chain(&second).any(|e| e.is::<ConnectionGone>()),
            "{second:?}"
        );
        assert_eq!(classify(&second), Failure::NotSent { connect: false });
        assert_eq!(peer.connections(), 1);
    }

    #[tokio::test]
    async fn a_request_hyper_never_sent_is_not_sent() {
        let peer = ScriptedPeer::start(Script::Silent).await;
        let io = TokioIo::new(TcpStream::connect(peer.addr).await.expect("connected"));
        let (mut send, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("handshake");
        // The connection's task is gone before the request is sent.
        drop(connection);
        let error = send
            .send_request(request(None, Body::empty()))
            .await
            .expect_err("no connection");
        assert!(error.is_canceled() || error.is_closed(), "{error:?}");
        assert_eq!(classify(&error), Failure::NotSent { connect: false });
    }

    #[test]
    fn an_error_not_known_is_not_a_broken_connection() {
        let failure = classify(&Wrap(Box::new(std::fmt::Error)));
        assert_eq!(failure, Failure::Unknown);
        assert!(!failure.unsent() && !failure.ends_connection() && !failure.recorded());
        assert_eq!(failure.code(), Code::Unknown);
        // An I/O error anywhere in the chain is the connection failing.
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(classify(&Wrap(Box::new(io))), Failure::Broken);
    }
}
