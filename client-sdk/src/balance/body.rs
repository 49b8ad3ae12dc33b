//! The bodies around a call: the request body kept for replay (so a retry can resend it), and
//! the response body that keeps the call counted in flight, records how it ended, and names the
//! instance when its connection breaks.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::{Code, Status};

use super::endpoint::InFlight;
use super::state::Shared;
use super::transport;

/// One poll of a body.
type Polled = Poll<Option<Result<Frame<Bytes>, Status>>>;

/// The request body of one call, shared by its attempts.
///
/// A unary call's body is complete at its first poll (tonic encodes the one message at once):
/// it is kept whole, and every attempt sends the same bytes. Any other body is read by the
/// first attempt, which keeps what it read (up to the limit); a later attempt replays that, then
/// goes on reading. Attempts never run at the same time; a newer attempt takes over from an
/// older one that may still be polled by its (cancelled) stream.
#[derive(Debug, Clone)]
pub(crate) enum Replay {
    /// The whole body (`None`: empty), and whether it is small enough to send again.
    Whole(Option<Bytes>, bool),
    /// A body still being read.
    Streaming(Arc<Mutex<ReplayState>>),
}

#[derive(Debug)]
pub(crate) struct ReplayState {
    source: Option<Body>,
    /// What the caller's body answered to a poll made before the first attempt, to be handed on
    /// before polling it again.
    pending: Option<Polled>,
    frames: Frames,
    trailers: Option<HeaderMap>,
    ended: bool,
    buffered: usize,
    limit: usize,
    /// Kept frames can still be replayed: not committed, not over the limit.
    replayable: bool,
    /// The attempt allowed to read.
    generation: u32,
    /// The caller dropped the committed call's response before its end: the request stream
    /// fails, so that hyper resets the stream (`CANCEL`) instead of half-closing it later.
    cancelled: bool,
    /// The task reading the request body while the caller's body has nothing yet (woken by a
    /// cancellation).
    reader: Option<Waker>,
}

impl Replay {
    /// Takes the caller's body: whole when it is complete at once (the caller's task context is
    /// used to look, without waiting), else as a body to read.
    pub(crate) async fn new(mut body: Body, limit: usize) -> Self {
        if body.is_end_stream() {
            return Self::Whole(None, true);
        }
        let first =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let data = match first {
            Poll::Ready(None) => return Self::Whole(None, true),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    return Self::streaming(body, limit, None, frame.into_trailers().ok());
                }
            },
            Poll::Ready(Some(Err(status))) => {
                return Self::streaming(Body::new(Failed(Some(status))), limit, None, None);
            }
            Poll::Pending => return Self::streaming(body, limit, None, None),
        };
        if body.is_end_stream() {
            let small = data.len() <= limit;
            return Self::Whole(Some(data), small);
        }
        let second =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        if let Poll::Ready(None) = second {
            let small = data.len() <= limit;
            return Self::Whole(Some(data), small);
        }
        // More to come: read on as a stream, what was read first.
        let replay = Self::streaming(body, limit, Some(data), None);
        if let Self::Streaming(shared) = &replay {
            let mut state = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.pending = Some(second);
        }
        replay
    }

    fn streaming(
        source: Body,
        limit: usize,
        first: Option<Bytes>,
        trailers: Option<HeaderMap>,
    ) -> Self {
        let mut frames = Frames::default();
        let mut buffered = 0;
        let mut replayable = true;
        if let Some(first) = first {
            buffered = first.len();
            if buffered > limit {
                replayable = false;
            }
            frames.push(first);
        }
        let ended = trailers.is_some();
        Self::Streaming(Arc::new(Mutex::new(ReplayState {
            source: (!ended).then_some(source),
            pending: None,
            frames,
            trailers,
            ended,
            buffered,
            limit,
            replayable,
            generation: 0,
            cancelled: false,
            reader: None,
        })))
    }

    /// Whether another attempt can send the whole request again.
    pub(crate) fn replayable(&self) -> bool {
        match self {
            Self::Whole(_, replayable) => *replayable,
            Self::Streaming(shared) => lock(shared).replayable,
        }
    }

    /// The body of the next attempt; the previous attempt's body stops yielding.
    pub(crate) fn attempt(&self) -> Body {
        let shared = match self {
            Self::Whole(None, _) => return Body::empty(),
            Self::Whole(Some(data), _) => {
                return Body::new(http_body_util::Full::new(data.clone()));
            }
            Self::Streaming(shared) => shared,
        };
        let generation = {
            let mut state = lock(shared);
            state.generation = state.generation.wrapping_add(1);
            if state.ended && state.frames.is_empty() && state.trailers.is_none() {
                return Body::empty();
            }
            state.generation
        };
        Body::new(AttemptBody {
            shared: Arc::clone(shared),
            generation,
            next: 0,
            done: false,
        })
    }

    /// What cancels the committed call's request stream, for a streaming request (a whole one
    /// was sent complete, and hyper resets its stream once the response is dropped).
    pub(crate) fn canceller(&self) -> Option<Canceller> {
        match self {
            Self::Whole(..) => None,
            Self::Streaming(shared) => Some(Canceller(Arc::clone(shared))),
        }
    }

    /// The call committed: no more attempts, so nothing more is kept.
    pub(crate) fn commit(&self) {
        if let Self::Streaming(shared) = self {
            let mut state = lock(shared);
            state.replayable = false;
            state.frames = Frames::default();
        }
    }
}

/// Cancels a committed call's request stream (see [`Replay::canceller`]).
#[derive(Debug)]
pub(crate) struct Canceller(Arc<Mutex<ReplayState>>);

impl Canceller {
    fn cancel(&self) {
        let reader = {
            let mut state = lock(&self.0);
            state.cancelled = true;
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// The request body's error once its call was cancelled: an h2 `CANCEL` in its source chain is
/// the reason hyper resets the stream with.
fn cancelled() -> Status {
    Status::from_error(Box::new(h2::Error::from(h2::Reason::CANCEL)))
}

fn lock(shared: &Mutex<ReplayState>) -> MutexGuard<'_, ReplayState> {
    // Every change is a whole-field assignment or a push; a poisoned lock holds consistent data.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A body whose first poll failed: the error, once.
struct Failed(Option<Status>);

impl HttpBody for Failed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Poll::Ready(self.0.take().map(Err))
    }
}

/// The data frames read so far: a unary request is one frame, kept without a vector.
#[derive(Debug, Default)]
struct Frames {
    first: Option<Bytes>,
    more: Vec<Bytes>,
}

impl Frames {
    fn get(&self, n: usize) -> Option<&Bytes> {
        match n {
            0 => self.first.as_ref(),
            n => self.more.get(n - 1),
        }
    }

    fn push(&mut self, frame: Bytes) {
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.more.push(frame);
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

struct AttemptBody {
    shared: Arc<Mutex<ReplayState>>,
    generation: u32,
    /// The next kept frame to replay.
    next: usize,
    done: bool,
}

impl HttpBody for AttemptBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let mut state = this
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.generation != this.generation {
            // A newer attempt took over: this one's stream is being cancelled anyway.
            this.done = true;
            return Poll::Ready(None);
        }
        if state.cancelled {
            this.done = true;
            return Poll::Ready(Some(Err(cancelled())));
        }
        if let Some(frame) = state.frames.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(frame.clone()))));
        }
        if state.ended {
            this.done = true;
            return Poll::Ready(state.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let polled = match state.pending.take() {
            Some(Poll::Ready(polled)) => Poll::Ready(polled),
            _ => {
                let Some(source) = state.source.as_mut() else {
                    this.done = true;
                    return Poll::Ready(None);
                };
                Pin::new(source).poll_frame(cx)
            }
        };
        match polled {
            Poll::Pending => {
                if !state
                    .reader
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    state.reader = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                state.ended = true;
                state.source = None;
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => {
                state.ended = true;
                state.source = None;
                state.replayable = false;
                this.done = true;
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    if state.replayable {
                        state.buffered += data.len();
                        if state.buffered > state.limit {
                            // Too large to replay: the call is committed to this attempt.
                            state.replayable = false;
                            state.frames = Frames::default();
                        } else {
                            state.frames.push(data.clone());
                            this.next = state.frames.len();
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        state.trailers = Some(trailers.clone());
                        state.ended = true;
                        state.source = None;
                        this.done = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    // Neither data nor trailers: nothing hyper can send; skip it.
                    drop(state);
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            },
        }
    }
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The gRPC status a response's headers or trailers carry, if any.
#[inline]
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(&GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// A response body that keeps its call counted in flight (and its instance's connection open)
/// until the body ends — the whole stream for streaming calls — and records how the call ended
/// for outlier detection and the retry throttle: the status in the trailers, or a transport
/// failure, which it reports naming the instance. A body dropped before its end (the caller
/// cancelled) records nothing.
pub(crate) struct Tracked {
    body: Body,
    guard: Option<InFlight>,
    shared: Arc<Shared>,
    /// The call's deadline: a transport failure after it is the deadline's, not the instance's.
    deadline: Option<Instant>,
    /// Cancels a streaming request when the body is dropped before its end.
    cancel: Option<Canceller>,
}

impl Tracked {
    pub(crate) fn new(
        body: Body,
        guard: InFlight,
        shared: Arc<Shared>,
        deadline: Option<Instant>,
        cancel: Option<Canceller>,
    ) -> Self {
        Self {
            body,
            guard: Some(guard),
            shared,
            deadline,
            cancel,
        }
    }

    fn end(&mut self, code: Option<Code>) {
        if let Some(guard) = self.guard.take()
            && let Some(code) = code
        {
            let _ = self.shared.record(guard.endpoint(), code);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Dropped before its end: the caller cancelled the call. A stream whose request is still
        // open is reset now (hyper would otherwise wait for the request stream to end and then
        // half-close it, so the server would never see the cancellation).
        if self.guard.is_some()
            && let Some(cancel) = self.cancel.take()
        {
            cancel.cancel();
        }
    }
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
        match &frame {
            Poll::Ready(Some(Ok(f))) => {
                let Some(trailers) = f.trailers_ref() else {
                    return frame;
                };
                // No grpc-status in the trailers is a protocol error (tonic reports it).
                let code = grpc_status(trailers).unwrap_or(Code::Unknown);
                this.end(Some(code));
                if code == Code::Cancelled && this.deadline.is_some_and(|d| Instant::now() >= d) {
                    // A server that gave up on the call at its deadline and said `CANCELLED` (as
                    // tonic's server does): the deadline's, as gRPC says.
                    let mut trailers = trailers.clone();
                    trailers.insert(GRPC_STATUS, HeaderValue::from_static("4"));
                    trailers.insert(
                        GRPC_MESSAGE,
                        HeaderValue::from_static(
                            "the deadline passed; the server cancelled the call",
                        ),
                    );
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                frame
            }
            Poll::Ready(Some(Err(status))) => {
                let Some(guard) = this.guard.take() else {
                    return frame;
                };
                let endpoint = Arc::clone(guard.endpoint());
                drop(guard);
                // The connection broke, or the server reset the stream, mid-call: the call was
                // committed, so it fails, naming the instance. Once the deadline has passed,
                // the failure is the deadline's (a server may reset the stream when it gives up
                // on the call) and nothing counts against the instance.
                let expired = this.deadline.is_some_and(|d| Instant::now() >= d);
                let (failure, status) =
                    transport::broken_mid_call(&this.shared, &endpoint, status, expired);
                if failure.recorded() && !expired {
                    let _ = this.shared.record(&endpoint, status.code());
                }
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(None) => {
                // Ended without trailers: a protocol error, unless the status came in the
                // headers (recorded then) — either way nothing more to record here.
                this.guard = None;
                frame
            }
            Poll::Pending => frame,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn chunks(parts: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, Status>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    async fn read(body: Body) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_retry_replays_what_the_first_attempt_read() {
        let replay = Replay::new(chunks(&[b"ab", b"cd", b"ef"]), 1024).await;
        let mut first = replay.attempt();
        // The first attempt reads two frames, then fails.
        let a = first.frame().await.unwrap().unwrap().into_data().unwrap();
        let b = first.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!((&a[..], &b[..]), (&b"ab"[..], &b"cd"[..]));
        assert!(replay.replayable());
        // The second gets everything, replayed then read on.
        let second = replay.attempt();
        assert_eq!(read(second).await, b"abcdef");
        // The first, superseded, yields nothing more.
        assert!(first.frame().await.is_none());
        // And a third still gets all of it.
        assert_eq!(read(replay.attempt()).await, b"abcdef");
    }

    #[tokio::test]
    async fn over_the_limit_or_committed_it_is_not_replayable() {
        let replay = Replay::new(chunks(&[b"abc", b"def"]), 4).await;
        assert_eq!(read(replay.attempt()).await, b"abcdef");
        assert!(!replay.replayable());
        let small = Replay::new(chunks(&[b"abc", b"d"]), 4).await;
        assert_eq!(read(small.attempt()).await, b"abcd");
        assert!(small.replayable());
        small.commit();
        assert!(!small.replayable());
        // A body complete at once (a unary call) is kept whole: every attempt gets it all.
        let whole = Replay::new(chunks(&[b"unary"]), 1024).await;
        assert!(matches!(whole, Replay::Whole(Some(_), true)));
        assert_eq!(read(whole.attempt()).await, b"unary");
        assert_eq!(read(whole.attempt()).await, b"unary");
        let large = Replay::new(chunks(&[b"too large"]), 4).await;
        assert!(!large.replayable());
    }

    #[tokio::test]
    async fn an_empty_body_stays_empty() {
        let replay = Replay::new(Body::empty(), 16).await;
        assert!(replay.attempt().is_end_stream());
        assert!(replay.replayable());
    }
}
