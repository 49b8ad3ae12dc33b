//! The bodies around a call: the request body kept for replay (so a retry can resend it), and
//! the response body that keeps the call counted in flight, records how it ended, and names the
//! instance when its connection breaks.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::{Code, Status};

use super::endpoint::InFlight;
use super::state::Shared;
use super::transport;

/// The request body of one call, shared by its attempts: the first attempt reads the caller's
/// body and keeps what it read (up to the limit); a later attempt replays that, then goes on
/// reading. Attempts never run at the same time; a newer attempt takes over from an older one
/// that may still be polled by its (cancelled) stream.
#[derive(Debug, Clone)]
pub(crate) struct Replay {
    shared: Arc<Mutex<ReplayState>>,
}

#[derive(Debug)]
struct ReplayState {
    source: Option<Body>,
    frames: Frames,
    trailers: Option<HeaderMap>,
    ended: bool,
    buffered: usize,
    limit: usize,
    /// Kept frames can still be replayed: not committed, not over the limit.
    replayable: bool,
    /// The attempt allowed to read.
    generation: u32,
}

impl Replay {
    pub(crate) fn new(body: Body, limit: usize) -> Self {
        let ended = body.is_end_stream();
        Self {
            shared: Arc::new(Mutex::new(ReplayState {
                source: (!ended).then_some(body),
                frames: Frames::default(),
                trailers: None,
                ended,
                buffered: 0,
                limit,
                replayable: true,
                generation: 0,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, ReplayState> {
        // Every change is a whole-field assignment or a push; a poisoned lock holds consistent
        // data.
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether another attempt can send the whole request again.
    pub(crate) fn replayable(&self) -> bool {
        self.state().replayable
    }

    /// The body of the next attempt; the previous attempt's body stops yielding.
    pub(crate) fn attempt(&self) -> Body {
        let generation = {
            let mut state = self.state();
            state.generation = state.generation.wrapping_add(1);
            if state.ended && state.frames.is_empty() && state.trailers.is_none() {
                return Body::empty();
            }
            state.generation
        };
        Body::new(AttemptBody {
            shared: Arc::clone(&self.shared),
            generation,
            next: 0,
            done: false,
        })
    }

    /// The call committed: no more attempts, so nothing more is kept.
    pub(crate) fn commit(&self) {
        let mut state = self.state();
        state.replayable = false;
        state.frames = Frames::default();
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
        if let Some(frame) = state.frames.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(frame.clone()))));
        }
        if state.ended {
            this.done = true;
            return Poll::Ready(state.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let Some(source) = state.source.as_mut() else {
            this.done = true;
            return Poll::Ready(None);
        };
        let polled = Pin::new(source).poll_frame(cx);
        match polled {
            Poll::Pending => Poll::Pending,
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
/// failure, which it reports as `UNAVAILABLE` naming the instance.
pub(crate) struct Tracked {
    body: Body,
    guard: Option<InFlight>,
    shared: Arc<Shared>,
}

impl Tracked {
    pub(crate) fn new(body: Body, guard: InFlight, shared: Arc<Shared>) -> Self {
        Self {
            body,
            guard: Some(guard),
            shared,
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
                if let Some(trailers) = f.trailers_ref() {
                    // No grpc-status in the trailers is a protocol error (tonic reports it).
                    let code = grpc_status(trailers).unwrap_or(Code::Unknown);
                    this.end(Some(code));
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
                // committed, so it fails, naming the instance.
                let status = transport::broken_mid_call(&this.shared, &endpoint, status);
                let _ = this.shared.record(&endpoint, status.code());
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
        let replay = Replay::new(chunks(&[b"ab", b"cd", b"ef"]), 1024);
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
        let replay = Replay::new(chunks(&[b"abc", b"def"]), 4);
        assert_eq!(read(replay.attempt()).await, b"abcdef");
        assert!(!replay.replayable());
        let small = Replay::new(chunks(&[b"abc"]), 4);
        assert_eq!(read(small.attempt()).await, b"abc");
        assert!(small.replayable());
        small.commit();
        assert!(!small.replayable());
    }

    #[tokio::test]
    async fn an_empty_body_stays_empty() {
        let replay = Replay::new(Body::empty(), 16);
        assert!(replay.attempt().is_end_stream());
        assert!(replay.replayable());
    }
}
