//! One instance's connection and counters: a tonic `Channel` per connection, connected on first
//! use, whose liveness we can see before sending a request on it.
//!
//! Each connection is its own tonic `Channel`, which never reconnects underneath a call: the
//! balancer's connector refuses a second connection. When the connection breaks or the server
//! sends `GOAWAY`, the connection takes no new calls from that moment; a call that races it gets
//! a "connection gone" error before anything is sent, and the balancer retries it transparently.
//! The next call to the instance connects anew through [`Endpoint::channel`], with its timeout
//! and ejection accounting.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use super::health::{self, HealthCell, HealthCheck, HealthStatus};
use crate::discovery::{AbortOnDrop, BoxFuture};
use crate::error::BoxError;
use crate::outlier::CallCounter;
use crate::picker::{BUCKETS, CandidateLoad, Histogram, LatencyEstimate, bucket};
use crate::telemetry::InstanceMetrics;

/// What identifies an endpoint across snapshots: the instance ID and its address.
pub(crate) type EndpointKey = (String, SocketAddr);

/// Why a connection could not be made. Shared by every call that waited for the same attempt.
pub(crate) type ConnectFailure = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Calls and latency of one zone, harvested by the adaptive controller every tick.
#[derive(Debug)]
pub(crate) struct ZoneCounters {
    /// The zone's name, as the instances' account names it.
    pub(crate) name: Option<String>,
    /// The zone's AZ ID, when known.
    pub(crate) id: Option<String>,
    /// Picks into this zone, ever.
    pub(crate) picks: AtomicU64,
    /// Latency of the calls completed since the last harvest, by histogram bucket.
    latency: [AtomicU32; BUCKETS],
}

impl ZoneCounters {
    pub(crate) fn new(name: Option<String>, id: Option<String>) -> Self {
        Self {
            name,
            id,
            picks: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// One call's latency: one relaxed add.
    #[inline]
    pub(crate) fn record(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the latency histogram of the calls since the last harvest.
    pub(crate) fn harvest(&self) -> Histogram {
        let mut histogram = Histogram::default();
        for (count, bucket) in histogram.counts.iter_mut().zip(&self.latency) {
            *count = bucket.swap(0, Ordering::Relaxed);
        }
        histogram
    }
}

/// Whether a connection is still up: set by its socket, awaited by its health watch.
#[derive(Debug)]
pub(crate) struct Liveness {
    alive: AtomicBool,
    gone: tokio::sync::Notify,
    /// The address the connection reached (of a dual-stack instance: either of its two).
    peer: std::sync::OnceLock<SocketAddr>,
}

impl Liveness {
    fn new() -> Self {
        Self {
            alive: AtomicBool::new(true),
            gone: tokio::sync::Notify::new(),
            peer: std::sync::OnceLock::new(),
        }
    }

    #[inline]
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// The connection is dead (or going away): no new calls on it.
    pub(crate) fn kill(&self) {
        if self.alive.swap(false, Ordering::AcqRel) {
            self.gone.notify_waiters();
        }
    }

    /// Returns once the connection is dead.
    pub(crate) async fn gone(&self) {
        let notified = self.gone.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_alive() {
            notified.await;
        }
    }
}

/// An open connection, whether its socket is still up, and its health watch.
#[derive(Debug)]
struct Conn {
    channel: Channel,
    alive: Arc<Liveness>,
    _watch: Option<AbortOnDrop>,
}

/// How endpoints connect: the same for every endpoint of a balancer.
#[derive(Debug)]
pub(crate) struct ConnectSettings {
    pub(crate) connect_timeout: Duration,
    /// Which address of a dual-stack instance is dialled first.
    pub(crate) ip_family: crate::IpFamily,
    pub(crate) health: Arc<HealthCheck>,
    /// HTTP/2 runs in the clear on the socket, so the connector can see `GOAWAY` frames.
    pub(crate) plaintext: bool,
}

/// Per-instance counters of retries, for stats and metrics.
#[derive(Debug, Default)]
pub(crate) struct RetryCounters {
    /// Policy retries that went to this instance.
    pub(crate) retries: AtomicU64,
    /// Transparent retries that went to this instance.
    pub(crate) transparent: AtomicU64,
    /// Retries the throttle refused after a failure on this instance.
    pub(crate) throttled: AtomicU64,
}

/// One instance's runtime state. Shared by the table and by every call in flight on it, so its
/// connection closes only when the instance has left the snapshot *and* its last call finished.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// The instance ID and the address dialled first.
    pub(crate) key: EndpointKey,
    /// The address a connection falls back to (a dual-stack instance's other family).
    pub(crate) fallback: Option<SocketAddr>,
    pub(crate) zone: Arc<ZoneCounters>,
    in_flight: AtomicU32,
    /// Latency of answered calls, for the latency-aware choice.
    pub(crate) latency: LatencyEstimate,
    pub(crate) picks: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    /// Connections opened, ever.
    pub(crate) connections: AtomicU64,
    /// Outlier detection's call counter.
    pub(crate) calls: CallCounter,
    pub(crate) retries: RetryCounters,
    pub(crate) health: Arc<HealthCell>,
    pub(crate) metrics: InstanceMetrics,
    template: TonicEndpoint,
    settings: Arc<ConnectSettings>,
    conn: ArcSwapOption<Conn>,
    /// One connection attempt at a time; the others wait for its outcome.
    connecting: tokio::sync::Mutex<()>,
    attempts: AtomicU64,
    last_failure: Mutex<Option<ConnectFailure>>,
    seed: u64,
}

impl Endpoint {
    #[allow(clippy::too_many_arguments)] // Each is one part of the endpoint, named at the call.
    pub(crate) fn new(
        key: EndpointKey,
        fallback: Option<SocketAddr>,
        zone: Arc<ZoneCounters>,
        template: TonicEndpoint,
        settings: Arc<ConnectSettings>,
        health: Arc<HealthCell>,
        metrics: InstanceMetrics,
        seed: u64,
    ) -> Self {
        Self {
            key,
            fallback,
            zone,
            in_flight: AtomicU32::new(0),
            latency: LatencyEstimate::default(),
            picks: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            calls: CallCounter::default(),
            retries: RetryCounters::default(),
            health,
            metrics,
            template,
            settings,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            seed,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.key.0
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.key.1
    }

    /// Calls in flight on this instance (P2C's load).
    #[inline]
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// What the two-choices step compares: in-flight calls and the latency estimate, with the
    /// client's own jitter (`client_lag_us`) that the estimate's noise includes.
    #[inline]
    pub(crate) fn load(&self, client_lag_us: u32) -> CandidateLoad {
        let (latency_us, latency_at_us) = self.latency.read();
        CandidateLoad {
            in_flight: self.in_flight(),
            latency_us,
            latency_at_us,
            client_lag_us,
        }
    }

    /// The address the live connection reached, if one is open.
    pub(crate) fn connected_addr(&self) -> Option<SocketAddr> {
        self.conn
            .load()
            .as_ref()
            .filter(|c| c.alive.is_alive())
            .and_then(|c| c.alive.peer.get().copied())
    }

    /// Whether a live connection is open.
    pub(crate) fn connected(&self) -> bool {
        self.conn
            .load()
            .as_ref()
            .is_some_and(|c| c.alive.is_alive())
    }

    /// The health watch's status of the current connection.
    pub(crate) fn health(&self) -> HealthStatus {
        self.health.get()
    }

    /// A channel on the live connection, if there is one.
    #[inline]
    pub(crate) fn live_channel(&self) -> Option<Channel> {
        self.conn
            .load()
            .as_ref()
            .filter(|conn| conn.alive.is_alive())
            .map(|conn| conn.channel.clone())
    }

    /// A channel on a live connection, connecting first when there is none; `true` with it when
    /// this call made the connection. An error means nothing was sent.
    pub(crate) async fn channel(&self) -> Result<(Channel, bool), ConnectFailure> {
        if let Some(channel) = self.live_channel() {
            return Ok((channel, false));
        }
        self.connect().await
    }

    /// Forgets the connection, so the next call connects anew (it broke, or went away).
    pub(crate) fn mark_dead(&self) {
        if let Some(conn) = self.conn.load().as_ref() {
            conn.alive.kill();
        }
    }

    async fn connect(&self) -> Result<(Channel, bool), ConnectFailure> {
        let seen = self.attempts.load(Ordering::Acquire);
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(conn) = self.conn.load().as_ref()
            && conn.alive.is_alive()
        {
            return Ok((conn.channel.clone(), false));
        }
        if self.attempts.load(Ordering::Acquire) != seen {
            // An attempt failed while this call waited: share its outcome rather than try again
            // at once (the instance is being ejected).
            let failure = self
                .last_failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
        let alive = Arc::new(Liveness::new());
        let connector = WatchedConnector {
            addr: self.addr(),
            fallback: self.fallback,
            alive: Arc::clone(&alive),
            used: Arc::new(AtomicBool::new(false)),
            scan_frames: self.settings.plaintext,
        };
        // The endpoint's connect timeout covers TCP (and TLS); this one also bounds the HTTP/2
        // handshake.
        let result = match tokio::time::timeout(
            self.settings.connect_timeout.saturating_mul(2),
            self.template.connect_with_connector(connector),
        )
        .await
        {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(error)) => Err(Arc::new(error) as ConnectFailure),
            Err(elapsed) => Err(Arc::new(elapsed) as ConnectFailure),
        };
        self.attempts.fetch_add(1, Ordering::AcqRel);
        let mut last_failure = self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(channel) => {
                *last_failure = None;
                self.connections.fetch_add(1, Ordering::Relaxed);
                let watch = self.settings.health.enabled.then(|| {
                    self.health.set(HealthStatus::Unknown);
                    let attempt = self.attempts.load(Ordering::Relaxed);
                    AbortOnDrop(tokio::spawn(health::watch(
                        channel.clone(),
                        Arc::clone(&self.settings.health),
                        Arc::clone(&self.health),
                        Arc::clone(&alive),
                        self.seed ^ attempt,
                    )))
                });
                self.conn.store(Some(Arc::new(Conn {
                    channel: channel.clone(),
                    alive,
                    _watch: watch,
                })));
                Ok((channel, true))
            }
            Err(failure) => {
                *last_failure = Some(Arc::clone(&failure));
                self.conn.store(None);
                Err(failure)
            }
        }
    }
}

/// Counts a call in flight on an endpoint until dropped (at the end of the response body for
/// streams). Holds the endpoint, and so its connection, open.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub(crate) fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(endpoint)
    }

    pub(crate) fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the connector answers tonic when it tries to reconnect underneath a call: the
/// connection this `Channel` stood for is gone, and nothing was sent. The balancer retries the
/// call elsewhere and connects anew itself.
#[derive(Debug, thiserror::Error)]
#[error("the connection is gone (closed or GOAWAY); the balancer reconnects it")]
pub(crate) struct ConnectionGone;

/// Connects over TCP once and watches the socket: end of stream, an I/O error or an HTTP/2
/// `GOAWAY` marks the connection dead, which is how a call learns *before sending* that it must
/// go elsewhere.
#[derive(Debug, Clone)]
struct WatchedConnector {
    addr: SocketAddr,
    /// Tried when `addr` fails or is slow (see [`connect_in_order`]).
    fallback: Option<SocketAddr>,
    alive: Arc<Liveness>,
    used: Arc<AtomicBool>,
    scan_frames: bool,
}

impl tower_service::Service<Uri> for WatchedConnector {
    type Response = TokioIo<WatchedIo>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let (addr, fallback) = (self.addr, self.fallback);
        let alive = Arc::clone(&self.alive);
        let scanner = self.scan_frames.then(FrameScanner::default);
        let first = !self.used.swap(true, Ordering::AcqRel);
        Box::pin(async move {
            if !first {
                return Err(Box::new(ConnectionGone) as BoxError);
            }
            let (stream, peer) =
                connect_in_order(addr, fallback, ATTEMPT_DELAY, TcpStream::connect).await?;
            let _ = alive.peer.set(peer);
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(WatchedIo {
                stream,
                alive,
                scanner,
            }))
        })
    }
}

/// RFC 8305's Connection Attempt Delay, A61's default: how long the first address of a
/// dual-stack instance has to itself before the fallback address is tried beside it.
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Both addresses of a dual-stack instance failed to connect.
#[derive(Debug, thiserror::Error)]
#[error("connecting to {first} failed ({first_error}), and to its fallback {second}")]
pub(crate) struct BothFailed {
    first: SocketAddr,
    first_error: io::Error,
    second: SocketAddr,
    #[source]
    second_error: io::Error,
}

/// Connects to `first`; with a `fallback`, the way Happy Eyeballs (RFC 8305, gRFC A61) does for
/// one endpoint with two addresses: the fallback is tried as soon as `first` fails, or beside it
/// once `first` has had `delay` to itself; the first connection made wins and the other attempt
/// is dropped. Returns the connection and the address it reached.
async fn connect_in_order<S, F, Fut>(
    first: SocketAddr,
    fallback: Option<SocketAddr>,
    delay: Duration,
    connect: F,
) -> Result<(S, SocketAddr), BoxError>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>>,
{
    let Some(second) = fallback else {
        return Ok((connect(first).await?, first));
    };
    let both = |first_error, second_error| {
        Box::new(BothFailed {
            first,
            first_error,
            second,
            second_error,
        }) as BoxError
    };
    let first_attempt = connect(first);
    tokio::pin!(first_attempt);
    let head_start = tokio::select! {
        result = &mut first_attempt => Some(result),
        () = tokio::time::sleep(delay) => None,
    };
    match head_start {
        Some(Ok(stream)) => return Ok((stream, first)),
        Some(Err(first_error)) => {
            tracing::debug!(
                %first, %second, error = %first_error,
                "connect failed; trying the other address"
            );
            return match connect(second).await {
                Ok(stream) => Ok((stream, second)),
                Err(second_error) => Err(both(first_error, second_error)),
            };
        }
        None => {
            tracing::debug!(%first, %second, ?delay, "connect slow; trying the other address too");
        }
    }
    let second_attempt = connect(second);
    tokio::pin!(second_attempt);
    let (mut first_error, mut second_error) = (None, None);
    loop {
        tokio::select! {
            result = &mut first_attempt, if first_error.is_none() => match result {
                Ok(stream) => return Ok((stream, first)),
                Err(error) => first_error = Some(error),
            },
            result = &mut second_attempt, if second_error.is_none() => match result {
                Ok(stream) => return Ok((stream, second)),
                Err(error) => second_error = Some(error),
            },
        }
        if first_error.is_some() && second_error.is_some() {
            let (Some(a), Some(b)) = (first_error, second_error) else {
                unreachable!("both checked above")
            };
            return Err(both(a, b));
        }
    }
}

/// A channel to `addr` through the balancer's own connector, as [`Endpoint::channel`] makes
/// them (for the transport tests).
#[cfg(test)]
pub(crate) async fn watched_channel(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    let connector = WatchedConnector {
        addr,
        fallback: None,
        alive: Arc::new(Liveness::new()),
        used: Arc::new(AtomicBool::new(false)),
        scan_frames: true,
    };
    TonicEndpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(connector)
        .await
}

/// Finds HTTP/2 `GOAWAY` frames in what the server sends: frame headers are 9 bytes (24-bit
/// length, type, flags, stream), `GOAWAY` is type 7. Skips payloads without looking at them.
#[derive(Debug, Default)]
struct FrameScanner {
    header: [u8; 9],
    filled: usize,
    skip: usize,
}

impl FrameScanner {
    /// Feeds bytes read from the server; true when a `GOAWAY` frame began in them.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut goaway = false;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == 9 {
                let h = &self.header;
                self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                goaway |= h[3] == 0x7;
                self.filled = 0;
            }
        }
        goaway
    }
}

/// A TCP stream that records when it has failed, been closed by the peer, or been told
/// `GOAWAY`.
#[derive(Debug)]
pub(crate) struct WatchedIo {
    stream: TcpStream,
    alive: Arc<Liveness>,
    scanner: Option<FrameScanner>,
}

impl WatchedIo {
    fn failed<T>(&self, result: &Poll<io::Result<T>>) {
        if matches!(result, Poll::Ready(Err(_))) {
            self.alive.kill();
        }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) {
            let read = &buf.filled()[before..];
            let eof = read.is_empty() && buf.remaining() > 0;
            let this = &mut *self;
            let goaway = this.scanner.as_mut().is_some_and(|s| s.feed(read));
            if eof || goaway {
                this.alive.kill();
            }
        }
        self.failed(&result);
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.failed(&result);
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        self.failed(&result);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.alive.kill();
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.failed(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// How a fake address answers a connection attempt, after how long.
    #[derive(Clone, Copy)]
    enum Answer {
        Connects(u64),
        Refuses(u64),
        Never,
    }

    /// Connects through fake addresses under paused time; returns what it got and when (ms
    /// after the start), and how many attempts were made.
    async fn dial(
        answers: &[(SocketAddr, Answer)],
        first: SocketAddr,
        fallback: Option<SocketAddr>,
    ) -> (Result<SocketAddr, String>, u128, usize) {
        let answers: HashMap<SocketAddr, Answer> = answers.iter().copied().collect();
        let attempts = AtomicUsize::new(0);
        let start = tokio::time::Instant::now();
        let result = connect_in_order(first, fallback, ATTEMPT_DELAY, |addr| {
            attempts.fetch_add(1, Ordering::SeqCst);
            let answer = answers[&addr];
            async move {
                match answer {
                    Answer::Connects(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Ok(addr)
                    }
                    Answer::Refuses(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Err(io::Error::from(io::ErrorKind::ConnectionRefused))
                    }
                    Answer::Never => std::future::pending().await,
                }
            }
        })
        .await;
        let result = result
            .map(|(stream, reached)| {
                assert_eq!(stream, reached, "the stream is the reached address's");
                reached
            })
            .map_err(|e| crate::error::Chain(&*e).to_string());
        (
            result,
            start.elapsed().as_millis(),
            attempts.load(Ordering::SeqCst),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_fallback_is_tried_at_once_after_a_failure_or_beside_a_slow_first_attempt() {
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        use Answer::{Connects, Never, Refuses};
        // A quick first address: the fallback is never dialled.
        assert_eq!(
            dial(&[(v6, Connects(100)), (v4, Connects(0))], v6, Some(v4)).await,
            (Ok(v6), 100, 1)
        );
        // Refused: the fallback at once.
        assert_eq!(
            dial(&[(v6, Refuses(5)), (v4, Connects(10))], v6, Some(v4)).await,
            (Ok(v4), 15, 2)
        );
        // Silent (a black hole, no IPv6 route): the fallback after the attempt delay.
        assert_eq!(
            dial(&[(v6, Never), (v4, Connects(10))], v6, Some(v4)).await,
            (Ok(v4), 260, 2)
        );
        // Slow but first to connect after the fallback started: it wins.
        assert_eq!(
            dial(&[(v6, Connects(300)), (v4, Connects(500))], v6, Some(v4)).await,
            (Ok(v6), 300, 2)
        );
        // The racing fallback fails: the first attempt is still awaited.
        assert_eq!(
            dial(&[(v6, Connects(400)), (v4, Refuses(1))], v6, Some(v4)).await,
            (Ok(v6), 400, 2)
        );
        // Both fail: the error names both addresses.
        let (result, at, attempts) =
            dial(&[(v6, Refuses(300)), (v4, Refuses(100))], v6, Some(v4)).await;
        assert_eq!((at, attempts), (350, 2));
        let error = result.unwrap_err();
        assert!(
            error.contains("[2001:db8::1]:80") && error.contains("10.0.0.1:80"),
            "{error}"
        );
        // No fallback: one attempt, its error as it is.
        let (result, _, attempts) = dial(&[(v4, Refuses(0))], v4, None).await;
        assert_eq!(attempts, 1);
        assert!(result.unwrap_err().contains("refused"));
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_scanner_finds_goaway_across_any_split() {
        let mut bytes = frame(0x4, &[0; 6]); // SETTINGS
        bytes.extend(frame(0x0, &[7; 300])); // DATA
        bytes.extend(frame(0x1, &[0x88])); // HEADERS
        let goaway_at = bytes.len();
        bytes.extend(frame(0x7, &[0, 0, 0, 1, 0, 0, 0, 0])); // GOAWAY
        bytes.extend(frame(0x0, &[7; 20]));
        for chunk in [1, 2, 5, 9, 10, 64, bytes.len()] {
            let mut scanner = FrameScanner::default();
            let mut seen_at = None;
            let mut offset = 0;
            for piece in bytes.chunks(chunk) {
                if scanner.feed(piece) && seen_at.is_none() {
                    seen_at = Some(offset);
                }
                offset += piece.len();
            }
            let at = seen_at.expect("GOAWAY not found");
            assert!(
                at <= goaway_at + 8 && at + chunk > goaway_at,
                "chunk {chunk}: seen in the piece at {at}"
            );
        }
        // No GOAWAY, not even in payload bytes that look like one.
        let mut scanner = FrameScanner::default();
        assert!(!scanner.feed(&frame(0x0, &[0, 0, 0, 7, 0, 0, 0, 0, 0, 7, 7])));
    }
}
