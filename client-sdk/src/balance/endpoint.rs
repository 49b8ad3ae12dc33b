//! One instance's connection: a tonic `Channel` connected on first use, whose liveness we can
//! see before sending a request on it.

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

use crate::discovery::BoxFuture;
use crate::error::BoxError;

/// What identifies an endpoint across snapshots: the instance ID and its address.
pub(crate) type EndpointKey = (String, SocketAddr);

/// Why a connection could not be made. Shared by every call that waited for the same attempt.
pub(crate) type ConnectFailure = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Calls and latency of one zone, harvested by the adaptive controller every tick.
#[derive(Debug, Default)]
pub(crate) struct ZoneCounters {
    /// Picks into this zone, ever.
    pub(crate) picks: AtomicU64,
    /// Calls completed since the last harvest.
    pub(crate) calls: AtomicU64,
    /// Their summed latency in nanoseconds.
    pub(crate) latency_nanos: AtomicU64,
}

impl ZoneCounters {
    pub(crate) fn record(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes (calls, summed latency) since the last harvest.
    pub(crate) fn harvest(&self) -> (u64, u64) {
        (
            self.calls.swap(0, Ordering::Relaxed),
            self.latency_nanos.swap(0, Ordering::Relaxed),
        )
    }
}

/// An open connection and whether its socket is still up.
#[derive(Debug)]
struct Conn {
    channel: Channel,
    alive: Arc<AtomicBool>,
}

/// One instance's runtime state. Shared by the table and by every call in flight on it, so its
/// connection closes only when the instance has left the snapshot *and* its last call finished.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) key: EndpointKey,
    pub(crate) zone: Arc<ZoneCounters>,
    in_flight: AtomicU32,
    pub(crate) picks: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    template: TonicEndpoint,
    conn: ArcSwapOption<Conn>,
    /// One connection attempt at a time; the others wait for its outcome.
    connecting: tokio::sync::Mutex<()>,
    attempts: AtomicU64,
    last_failure: Mutex<Option<ConnectFailure>>,
    connect_timeout: Duration,
}

impl Endpoint {
    pub(crate) fn new(
        key: EndpointKey,
        zone: Arc<ZoneCounters>,
        template: TonicEndpoint,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            key,
            zone,
            in_flight: AtomicU32::new(0),
            picks: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            template,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            connect_timeout,
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

    /// Whether a live connection is open.
    pub(crate) fn connected(&self) -> bool {
        self.conn
            .load()
            .as_ref()
            .is_some_and(|c| c.alive.load(Ordering::Acquire))
    }

    /// A channel on the live connection, if there is one.
    #[inline]
    pub(crate) fn live_channel(&self) -> Option<Channel> {
        self.conn
            .load()
            .as_ref()
            .filter(|conn| conn.alive.load(Ordering::Acquire))
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

    /// Forgets the connection, so the next call connects anew (its socket failed under a call).
    pub(crate) fn mark_dead(&self) {
        if let Some(conn) = self.conn.load().as_ref() {
            conn.alive.store(false, Ordering::Release);
        }
    }

    async fn connect(&self) -> Result<(Channel, bool), ConnectFailure> {
        let seen = self.attempts.load(Ordering::Acquire);
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(conn) = self.conn.load().as_ref()
            && conn.alive.load(Ordering::Acquire)
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
        let alive = Arc::new(AtomicBool::new(true));
        let connector = WatchedConnector {
            addr: self.addr(),
            alive: Arc::clone(&alive),
        };
        // The endpoint's connect timeout covers TCP (and TLS); this one also bounds the HTTP/2
        // handshake.
        let result = match tokio::time::timeout(
            self.connect_timeout.saturating_mul(2),
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
                self.conn.store(Some(Arc::new(Conn {
                    channel: channel.clone(),
                    alive,
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

/// Connects over TCP and watches the socket: end of stream or an I/O error marks the connection
/// dead, which is how a call learns *before sending* that it must reconnect (and, if that fails,
/// pick another instance with the request still in hand).
#[derive(Debug, Clone)]
struct WatchedConnector {
    addr: SocketAddr,
    alive: Arc<AtomicBool>,
}

impl tower_service::Service<Uri> for WatchedConnector {
    type Response = TokioIo<WatchedIo>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let addr = self.addr;
        let alive = Arc::clone(&self.alive);
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            alive.store(true, Ordering::Release);
            Ok(TokioIo::new(WatchedIo { stream, alive }))
        })
    }
}

/// A TCP stream that records when it has failed or been closed by the peer.
#[derive(Debug)]
pub(crate) struct WatchedIo {
    stream: TcpStream,
    alive: Arc<AtomicBool>,
}

impl WatchedIo {
    fn failed<T>(&self, result: &Poll<io::Result<T>>) {
        if matches!(result, Poll::Ready(Err(_))) {
            self.alive.store(false, Ordering::Release);
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
        let eof = matches!(result, Poll::Ready(Ok(())))
            && buf.filled().len() == before
            && buf.remaining() > 0;
        if eof {
            self.alive.store(false, Ordering::Release);
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
        self.alive.store(false, Ordering::Release);
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
