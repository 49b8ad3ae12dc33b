//! Real tonic servers on 127.0.0.1:0 (or `[::1]`, or both at one port: [`Listen`]) for the
//! balancer's component tests and benchmarks.
//!
//! Each server runs the standard gRPC health service behind a layer that counts the calls it
//! served and can delay them (an overloaded server), answer them with a status of the test's
//! choosing, and records the retry metadata of each, on a Tokio runtime of its own, so that
//! [`TestServer::kill`] drops every socket at once, as a killed process would. The balancer's
//! own health watch (`Health/Watch`) goes to the health service and is not counted.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

pub mod h2_script;

use std::future::Future;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cloudmap_balancer::Instance;
use cloudmap_balancer::contract::Weight;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::body::Body;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower_service::Service;

/// What every server of a test shares with the test.
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls served.
    pub served: AtomicU64,
    /// Delay added to each call, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Open connections.
    pub open: AtomicUsize,
    /// Connections accepted over IPv4, ever.
    pub accepted_v4: AtomicUsize,
    /// Connections accepted over IPv6, ever.
    pub accepted_v6: AtomicUsize,
    /// Answer every call with this status (after the delay) instead of serving it.
    pub fail: Mutex<Option<Fail>>,
    /// Answer every n-th call with `UNAVAILABLE` (0: none).
    pub fail_every: AtomicU64,
    /// The retry metadata of every call, in arrival order.
    pub seen: Mutex<Vec<Seen>>,
}

/// A status to answer with.
#[derive(Debug, Clone)]
pub struct Fail {
    pub code: tonic::Code,
    /// `grpc-retry-pushback-ms` to send with it.
    pub pushback: Option<&'static str>,
}

/// What a call carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `x-call-id`, set by the test's client.
    pub call_id: Option<String>,
    /// `grpc-timeout`.
    pub timeout: Option<String>,
    /// `grpc-previous-rpc-attempts`.
    pub previous_attempts: Option<String>,
}

/// How a test server treats the balancer's health watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The standard health service: SERVING until told otherwise.
    Served,
    /// No health service: `Watch` answers `UNIMPLEMENTED` (calls are still served).
    Absent,
}

/// Where a test server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// `127.0.0.1:0`.
    V4,
    /// `[::1]:0`.
    V6,
    /// `127.0.0.1:P` and `[::1]:P`, one port: a dual-stack task.
    Dual,
}

/// Whether this machine has an IPv6 loopback address to serve on; says why not when it does
/// not, so a test can skip with that message.
pub fn ipv6_loopback() -> Result<(), String> {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
        .map(drop)
        .map_err(|e| format!("no IPv6 loopback on this machine (binding [::1]:0: {e})"))
}

pub struct TestServer {
    /// The IPv4 address (`Listen::V4` and `Listen::Dual`), or the IPv6 one (`Listen::V6`).
    pub addr: SocketAddr,
    /// The IPv6 address of a `Listen::Dual` server (same port as `addr`).
    pub addr_v6: Option<SocketAddr>,
    pub zone: String,
    pub counters: Arc<Counters>,
    reporter: tonic_health::server::HealthReporter,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// Starts a server tagged with `zone`.
    pub fn start(zone: &str) -> Self {
        Self::with_health(zone, Health::Served)
    }

    /// Starts a server tagged with `zone`, listening as `listen`.
    pub fn start_on(zone: &str, listen: Listen) -> Self {
        Self::serve(zone, Health::Served, listen)
    }

    /// Starts a server tagged with `zone`, with or without a health service.
    pub fn with_health(zone: &str, health_mode: Health) -> Self {
        Self::serve(zone, health_mode, Listen::V4)
    }

    fn serve(zone: &str, health_mode: Health, listen: Listen) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let counters = Arc::new(Counters::default());
        // Bound here, so the address is known (and connectable) before this returns; served on
        // the server's own runtime. (No block_on: tests call this from inside a runtime.)
        let listeners = bind(listen);
        for listener in &listeners {
            listener.set_nonblocking(true).unwrap();
        }
        let addr = listeners[0].local_addr().unwrap();
        let addr_v6 = listeners.get(1).map(|l| l.local_addr().unwrap());
        // The overall service ("") starts SERVING.
        let (reporter, health) = tonic_health::server::health_reporter();
        let service = Counted {
            inner: health,
            counters: Arc::clone(&counters),
            health: health_mode,
        };
        let server_counters = Arc::clone(&counters);
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let keep = reporter.clone();
        runtime.spawn(async move {
            // Keep the reporter alive for as long as the server runs.
            let _reporter = keep;
            let incoming = Incoming {
                listeners: listeners
                    .into_iter()
                    .map(|l| TcpListener::from_std(l).unwrap())
                    .collect(),
                counters: server_counters,
            };
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(service, incoming, async {
                    let _ = stop.await;
                })
                .await;
        });
        Self {
            addr,
            addr_v6,
            zone: zone.to_owned(),
            counters,
            reporter,
            shutdown: Some(shutdown),
            runtime: Some(runtime),
        }
    }

    /// Answers every call with `code` (after the delay, if one is set); `None` serves again.
    pub fn fail_with(&self, fail: Option<Fail>) {
        *self.counters.fail.lock().unwrap() = fail;
    }

    /// Answers every `n`-th call with `UNAVAILABLE` (0: none).
    pub fn fail_every(&self, n: u64) {
        self.counters.fail_every.store(n, Ordering::SeqCst);
    }

    /// Reports the whole server (`""`) as serving or not on its health service.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
    }

    /// Stops the server gracefully, as tonic does: `GOAWAY`, calls in flight finish, the listener
    /// closes.
    pub fn shutdown_gracefully(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// The retry metadata of every call so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.counters.seen.lock().unwrap().clone()
    }

    /// An instance record for this server.
    pub fn instance(&self, id: &str) -> Instance {
        Instance::new(id, self.addr)
            .with_zone(self.zone.clone())
            .with_weight(Weight::saturating(100))
    }

    /// Connections accepted over IPv4 and over IPv6, ever.
    pub fn accepted(&self) -> (usize, usize) {
        (
            self.counters.accepted_v4.load(Ordering::SeqCst),
            self.counters.accepted_v6.load(Ordering::SeqCst),
        )
    }

    pub fn served(&self) -> u64 {
        self.counters.served.load(Ordering::SeqCst)
    }

    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.counters.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Kills the server: its runtime, listener and every connection go away at once.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Makes one health-check call.
pub async fn call<T>(client: &mut HealthClient<T>) -> Result<(), tonic::Status>
where
    T: tonic::client::GrpcService<Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// Counts and optionally delays or fails the calls a server serves.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    counters: Arc<Counters>,
    health: Health,
}

/// A trailers-only gRPC response.
fn status_response(code: tonic::Code, pushback: Option<&str>) -> http::Response<Body> {
    let mut response = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", (code as i32).to_string())
        .header("grpc-message", "injected%20by%20the%20test%20server");
    if let Some(pushback) = pushback {
        response = response.header("grpc-retry-pushback-ms", pushback);
    }
    response.body(Body::empty()).unwrap()
}

impl<S> Service<http::Request<Body>> for Counted<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let counters = Arc::clone(&self.counters);
        // The balancer's own health watch is not a call of the test's.
        if request.uri().path() == "/grpc.health.v1.Health/Watch" {
            if self.health == Health::Absent {
                return Box::pin(async { Ok(status_response(tonic::Code::Unimplemented, None)) });
            }
            return Box::pin(self.inner.call(request));
        }
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        counters.seen.lock().unwrap().push(Seen {
            call_id: header("x-call-id"),
            timeout: header("grpc-timeout"),
            previous_attempts: header("grpc-previous-rpc-attempts"),
        });
        let fail = counters.fail.lock().unwrap().clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let delay = counters.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let n = counters.served.fetch_add(1, Ordering::SeqCst) + 1;
            let every = counters.fail_every.load(Ordering::SeqCst);
            let fail = fail.or_else(|| {
                (every > 0 && n.is_multiple_of(every)).then_some(Fail {
                    code: tonic::Code::Unavailable,
                    pushback: None,
                })
            });
            match fail {
                Some(fail) => Ok(status_response(fail.code, fail.pushback)),
                None => future.await,
            }
        })
    }
}

/// The listeners of `listen`: for `Dual`, the IPv4 one first, then the IPv6 one on its port
/// (another port pair is tried while something else holds the IPv6 one).
fn bind(listen: Listen) -> Vec<std::net::TcpListener> {
    match listen {
        Listen::V4 => vec![std::net::TcpListener::bind("127.0.0.1:0").unwrap()],
        Listen::V6 => vec![std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap()],
        Listen::Dual => {
            for _ in 0..50 {
                let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let port = v4.local_addr().unwrap().port();
                if let Ok(v6) = std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
                    return vec![v4, v6];
                }
            }
            panic!("no port free on both 127.0.0.1 and [::1]");
        }
    }
}

/// Accepted connections, counted while open and by address family.
struct Incoming {
    listeners: Vec<TcpListener>,
    counters: Arc<Counters>,
}

impl futures_util::Stream for Incoming {
    type Item = io::Result<CountedStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        for listener in &self.listeners {
            match listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, peer))) => {
                    stream.set_nodelay(true)?;
                    self.counters.open.fetch_add(1, Ordering::SeqCst);
                    let family = if peer.is_ipv6() {
                        &self.counters.accepted_v6
                    } else {
                        &self.counters.accepted_v4
                    };
                    family.fetch_add(1, Ordering::SeqCst);
                    return Poll::Ready(Some(Ok(CountedStream {
                        stream,
                        counters: Arc::clone(&self.counters),
                    })));
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error))),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

struct CountedStream {
    stream: TcpStream,
    counters: Arc<Counters>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connected for CountedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Checks the shares of calls a latency-aware balancer gave each instance (`aware`) against
/// what weight × load promises (`promised`, fractions): the largest deviation within 3 points,
/// or, where in-flight counts alone (`blind`, a balancer without the latency-aware choice that
/// took turns with it over the same servers, so the machine's load hit both alike) miss the
/// promise on this machine, within 2 points of their largest deviation. On a busy machine the
/// servers' threads wait for a CPU for milliseconds at a time, which makes them unequal for
/// real, and both choices follow that; the latency-aware choice must add little to it.
pub fn assert_shares(what: &str, aware: &[u64], blind: &[u64], promised: &[f64]) {
    let worst = |served: &[u64]| {
        let total = served.iter().sum::<u64>() as f64;
        served
            .iter()
            .zip(promised)
            .map(|(&s, &p)| (s as f64 / total - p).abs())
            .fold(0.0, f64::max)
    };
    let (got, alone) = (worst(aware), worst(blind));
    assert!(
        got < 0.03 || got <= alone + 0.02,
        "{what}: largest deviation from weight × load {:.1} points latency-aware, {:.1} by \
         in-flight counts alone (latency-aware {aware:?}, in-flight alone {blind:?}, promised \
         {promised:?})",
        got * 100.0,
        alone * 100.0,
    );
}
