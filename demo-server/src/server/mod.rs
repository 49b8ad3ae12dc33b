//! The running server and its shutdown sequence.
//!
//! See [`DemoServer`] for the shutdown sequence.

mod drain;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::ServingStatus;
use tonic_health::server::{HealthReporter, HealthService};
use tower::layer::util::{Identity as NoLayer, Stack};

use crate::config::{DEFAULT_DRAIN_DELAY, DEFAULT_SHUTDOWN_GRACE};
use crate::network::{EmulatedNetworkLayer, NetworkEmulation};
use crate::service::{ControlService, DemoService, Load, ServerState};
use crate::{Error, Identity, pb};

/// How a server drains and the artificial load it starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long to keep serving after health turns `NOT_SERVING` and before GOAWAY.
    pub drain_delay: Duration,
    /// How long calls in flight at GOAWAY may take to finish.
    pub shutdown_grace: Duration,
    /// The artificial load at start.
    pub load: Load,
    /// Emulated network round trips per call (see [`NetworkEmulation`]); `None`: none.
    pub network: Option<NetworkEmulation>,
}

impl Default for ServeOptions {
    /// The binary's defaults: 5 s drain delay, 20 s grace, no artificial load, no network
    /// emulation.
    fn default() -> Self {
        Self {
            drain_delay: DEFAULT_DRAIN_DELAY,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            load: Load::default(),
            network: None,
        }
    }
}

/// How a server stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every call in flight finished and every connection closed.
    Drained,
    /// The grace ran out, or the server was aborted, with connections still open; `in_flight`
    /// Demo calls were still running and have been cut (0 when only health or reflection streams
    /// were left).
    Cut {
        /// Demo calls in flight when the server gave up on them.
        in_flight: u32,
    },
}

/// The health-checked names: the whole server and each service.
const HEALTH_NAMES: [&str; 3] = [
    "",
    <pb::demo_server::DemoServer<DemoService> as NamedService>::NAME,
    <pb::control_server::ControlServer<ControlService> as NamedService>::NAME,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    Draining,
    Aborting,
}

/// A demo server running on the current tokio runtime.
///
/// # Shutdown, as ECS stops a task
///
/// ECS sends SIGTERM, waits the container's `stopTimeout` (30 s by default) and then sends
/// SIGKILL. Clients learn that the task is going away from Cloud Map (the sync Lambda marks it
/// `DRAINING`, ECS deregisters it) and from health checks, both with some delay. So on
/// [`shutdown`](Self::shutdown) (what SIGTERM triggers) the server:
///
/// 1. reports `NOT_SERVING` for the whole server (`""`) and each of its services, on `Check` and
///    to every `Watch`er, and marks answers `draining`;
/// 2. keeps serving normally for the **drain delay**, so clients that have not yet noticed still
///    succeed while they move their traffic away;
/// 3. stops accepting: closes the listening socket, so new connections are refused, and sends
///    HTTP/2 GOAWAY on every connection, so clients start no new calls on it (a call that crossed
///    the GOAWAY is refused unprocessed, which gRPC clients may retry elsewhere); ends health
///    `Watch` streams;
/// 4. waits up to the **shutdown grace** for the calls in flight to finish and their connections
///    to close, then reports how it ended: [`Stopped::Drained`], or [`Stopped::Cut`] with the calls
///    still in flight.
///
/// Keep drain delay + grace below the task's `stopTimeout`. [`abort`](Self::abort) (a second
/// signal) skips what is left of the sequence.
///
/// Dropping the handle without [`wait`](Self::wait)ing stops the server at once: the listener
/// closes; connections already open are tonic's tasks and end with the runtime.
#[derive(Debug)]
pub struct DemoServer {
    local_addr: SocketAddr,
    state: Arc<ServerState>,
    phase: Arc<watch::Sender<Phase>>,
    task: Option<JoinHandle<Result<Stopped, Error>>>,
}

impl DemoServer {
    /// Starts serving on `listener` as `identity`.
    ///
    /// # Errors
    ///
    /// When the listener's address cannot be read, or the reflection service cannot be built.
    pub async fn start(
        listener: TcpListener,
        identity: Identity,
        options: ServeOptions,
    ) -> Result<Self, Error> {
        let local_addr = listener.local_addr().map_err(Error::LocalAddr)?;
        let state = Arc::new(ServerState::new(
            task(&identity, local_addr.port()),
            options.load,
        ));

        let reporter = HealthReporter::new();
        for name in HEALTH_NAMES {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let (closing, closing_rx) = watch::channel(false);
        let network = EmulatedNetworkLayer::new(options.network, &identity.zone);
        let router = router(&state, &reporter, closing_rx, network)?;

        let (phase, phase_rx) = watch::channel(Phase::Serving);
        let task = tokio::spawn(run(
            router,
            listener,
            reporter,
            Arc::clone(&state),
            phase_rx,
            closing,
            options,
        ));
        tracing::info!(
            addr = %local_addr,
            zone = %state.task().zone,
            task_id = %state.task().task_id,
            "serving"
        );
        Ok(Self {
            local_addr,
            state,
            phase: Arc::new(phase),
            task: Some(task),
        })
    }

    /// Binds `addr` and starts serving on it (see [`start`](Self::start)).
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(
        addr: SocketAddr,
        identity: Identity,
        options: ServeOptions,
    ) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        Self::start(listener, identity, options).await
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's load now: calls, calls in flight, the artificial load, whether it drains.
    pub fn load(&self) -> pb::ServerLoad {
        self.state.report()
    }

    /// Changes the artificial load of calls that start from now on (what `Control.SetLoad` does).
    pub fn set_load(&self, load: Load) {
        self.state.set_load(load);
    }

    /// Begins the shutdown sequence (what SIGTERM does; see above). Returns at once;
    /// [`wait`](Self::wait) for the end. Calling it again changes nothing.
    pub fn shutdown(&self) {
        self.shutdown_handle().shutdown();
    }

    /// Stops at once (what a second signal does): no more drain delay or grace; calls in flight
    /// are cut.
    pub fn abort(&self) {
        self.shutdown_handle().abort();
    }

    /// A handle that can begin the shutdown from elsewhere (a signal handler) while this one
    /// [`wait`](Self::wait)s.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            phase: Arc::clone(&self.phase),
        }
    }

    /// Waits until the server has stopped.
    ///
    /// # Errors
    ///
    /// When the server failed while serving.
    pub async fn wait(mut self) -> Result<Stopped, Error> {
        match self.task.take() {
            Some(task) => task.await.map_err(Error::ServerTask)?,
            None => Ok(Stopped::Cut { in_flight: 0 }),
        }
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Begins or cuts short a [`DemoServer`]'s shutdown; cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    phase: Arc<watch::Sender<Phase>>,
}

impl ShutdownHandle {
    /// See [`DemoServer::shutdown`].
    pub fn shutdown(&self) {
        self.phase.send_if_modified(|phase| {
            let begin = *phase < Phase::Draining;
            if begin {
                *phase = Phase::Draining;
            }
            begin
        });
    }

    /// See [`DemoServer::abort`].
    pub fn abort(&self) {
        self.phase.send_replace(Phase::Aborting);
    }
}

/// The task as answers report it.
fn task(identity: &Identity, port: u16) -> pb::Task {
    pb::Task {
        zone: identity.zone.clone(),
        task_arn: identity.task_arn.clone(),
        task_id: identity.task_id.clone(),
        cluster: identity.cluster.clone(),
        family: identity.family.clone(),
        revision: identity.revision.clone(),
        host: identity.host.clone(),
        port: port.into(),
    }
}

/// The router: every service behind the network emulation layer.
type DemoRouter = Router<Stack<EmulatedNetworkLayer, NoLayer>>;

fn router(
    state: &Arc<ServerState>,
    reporter: &HealthReporter,
    closing: watch::Receiver<bool>,
    network: EmulatedNetworkLayer,
) -> Result<DemoRouter, Error> {
    let health = tonic_health::pb::health_server::HealthServer::new(drain::DrainingHealth::new(
        HealthService::from_health_reporter(reporter.clone()),
        closing,
    ));
    // Each version lists itself; registering the other one too makes both list every service
    // this server serves.
    let reflection = |other_version| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(other_version)
    };
    let reflection_v1 = reflection(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(Error::Reflection)?;
    let reflection_v1alpha = reflection(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(Error::Reflection)?;

    Ok(tonic::transport::Server::builder()
        .layer(network)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::demo_server::DemoServer::new(DemoService::new(
            Arc::clone(state),
        )))
        .add_service(pb::control_server::ControlServer::new(ControlService::new(
            Arc::clone(state),
        ))))
}

/// Serves until asked to stop, then runs the shutdown sequence of the module docs.
async fn run(
    router: DemoRouter,
    listener: TcpListener,
    reporter: HealthReporter,
    state: Arc<ServerState>,
    phase: watch::Receiver<Phase>,
    closing: watch::Sender<bool>,
    options: ServeOptions,
) -> Result<Stopped, Error> {
    let mut goaway = closing.subscribe();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let serve = router.serve_with_incoming_shutdown(incoming, async move {
        let _ = goaway.wait_for(|closing| *closing).await;
    });
    tokio::pin!(serve);

    // The handle owns the phase sender and aborts this task when dropped, so `reached` only
    // fails while the task is being cancelled anyway.
    let reached = |phase: &watch::Receiver<Phase>, wanted: Phase| {
        let mut phase = phase.clone();
        async move {
            let _ = phase.wait_for(|phase| *phase >= wanted).await;
        }
    };

    tokio::select! {
        result = &mut serve => return ended_early(result),
        () = reached(&phase, Phase::Draining) => {}
    }

    // 1. NOT_SERVING.
    state.set_draining();
    for name in HEALTH_NAMES {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    tracing::info!(
        drain_delay_ms = options.drain_delay.as_millis(),
        in_flight = state.in_flight(),
        "draining: health NOT_SERVING, still serving for the drain delay"
    );

    // 2. The drain delay.
    let aborted = tokio::select! {
        result = &mut serve => return ended_early(result),
        () = tokio::time::sleep(options.drain_delay) => false,
        () = reached(&phase, Phase::Aborting) => true,
    };

    // 3. GOAWAY: stop accepting connections and calls.
    let _ = closing.send(true);
    if aborted {
        return Ok(cut(&state, "aborted"));
    }
    tracing::info!(
        shutdown_grace_ms = options.shutdown_grace.as_millis(),
        in_flight = state.in_flight(),
        "stopped accepting calls (GOAWAY); waiting for calls in flight"
    );

    // 4. Calls in flight finish, within the grace.
    tokio::select! {
        result = &mut serve => {
            result.map_err(Error::Serve)?;
            tracing::info!("drained: every call finished");
            Ok(Stopped::Drained)
        }
        () = tokio::time::sleep(options.shutdown_grace) => Ok(cut(&state, "shutdown grace expired")),
        () = reached(&phase, Phase::Aborting) => Ok(cut(&state, "aborted")),
    }
}

fn cut(state: &ServerState, why: &'static str) -> Stopped {
    let in_flight = state.in_flight();
    tracing::warn!(in_flight, why, "stopping with connections still open");
    Stopped::Cut { in_flight }
}

/// The server ended before it was asked to: the listener failed.
fn ended_early(result: Result<(), tonic::transport::Error>) -> Result<Stopped, Error> {
    result.map_err(Error::Serve)?;
    tracing::warn!("the listener closed before shutdown was requested");
    Ok(Stopped::Drained)
}
