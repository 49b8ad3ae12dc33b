//! The xDS source (feature `xds`): a service's instances pushed by the `cloudmap-xds` server
//! over ADS, with Cloud Map polled directly as the fallback.
//!
//! Every client polling Cloud Map itself costs calls and freshness that grow with the number of
//! clients. With this source, the fleet's Cloud Map reads depend on the number of services and
//! server replicas, and a change reaches the client in the time of one push, not one poll.
//!
//! # What it asks for
//!
//! The ClusterLoadAssignment `instances/SERVICE.NAMESPACE` over an ADS stream (state of the
//! world, gRFC A27), with this client's zone in its node's locality (so the server counts it
//! among the service's callers). The server answers with every instance discovery lists,
//! zone-agnostic, each written whole into its endpoint's metadata
//! ([`contract::xds`](crate::contract::xds)); the source decodes them with the same code as
//! Cloud Map's attributes, so the same snapshot gives the same instances and the balancer makes
//! the same picks. The balancer keeps making its own zone, load, latency, health-watch,
//! outlier and retry decisions: it does not use the server's picks, which are for gRPC's own
//! clients. (It subscribes to no Listener or Cluster: their contents are for gRPC's resolvers
//! and balancers, and this client has its own.) An answer that does not decode is NACKed with
//! the reason and the last accepted one stays in service.
//!
//! # Static stability
//!
//! - **No server answers at start**: after [`XdsOptions::start_timeout`] (default 2 s, under
//!   the balancer's 5 s `first_snapshot_timeout`, so calls waiting for the first snapshot do
//!   not fail) the source polls Cloud Map directly, as a balancer without xDS would.
//! - **The server is lost later**: the last answer stays in service while the source tries the
//!   next server of its list (at once after a stream that had answered, then backing off from
//!   [`XdsOptions::backoff_base`] to [`XdsOptions::backoff_max`]); after
//!   [`XdsOptions::lost_timeout`] (default 15 s, plus 0–50 % jitter so that a fleet does not
//!   fall back in one second) without an answer it polls Cloud Map directly, at its usual poll
//!   interval (a failed reconnection does not wake the poller).
//! - **A server answers again**: its answers are served at once.
//!
//! Every switch is logged (a warning), counted
//! (`cloudmap_balancer_discovery_source_switches_total{to}`, [`DiscoveryStatus::source_switches`](super::DiscoveryStatus::source_switches)),
//! and [`DiscoveryStatus::source`](super::DiscoveryStatus::source) says what is served now.
//!
//! # Configuration
//!
//! The servers come from [`XdsOptions::servers`], or from the environment
//! ([`Bootstrap::from_env`]): `CLOUDMAP_XDS_SERVERS` (comma-separated `host:port` or
//! `http://host:port`), or the gRPC bootstrap other languages' clients read, as it is
//! (`GRPC_XDS_BOOTSTRAP_CONFIG`, or the file `GRPC_XDS_BOOTSTRAP` names): its servers (with
//! `insecure` or `tls` channel credentials), `node.id` and `node.locality`. TLS to a server run
//! with `--tls-cert` (feature `tls`): `https://` servers, verified against
//! [`XdsOptions::tls_ca_pem`] (from the bootstrap's `ca_certificate_file`, gRFC A65); no client
//! certificate.

mod bootstrap;
mod decode;
mod stream;
pub mod switch;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

pub use bootstrap::{BOOTSTRAP_CONFIG_ENV, BOOTSTRAP_ENV, Bootstrap, SERVERS_ENV};

/// The listing a ClusterLoadAssignment carries, at `revision`: each endpoint's instance from
/// its metadata ([`contract::xds`](crate::contract::xds)), decoded as Cloud Map's attributes
/// are; an endpoint without it from Envoy's fields. An endpoint that is not a socket address is
/// an error (the source NACKs the answer).
pub fn decode_listing(
    cla: &envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment,
    revision: i64,
) -> Result<Listing, String> {
    decode::listing(cla, revision)
}

use super::AbortOnDrop;
use super::source::{BoxFuture, InstanceSource, Listing, SourceKind};
use crate::contract::xds::INSTANCES_PREFIX;
use crate::error::Error;
use switch::{Serving, Switch};

/// How the xDS source connects, and when it falls back to Cloud Map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct XdsOptions {
    /// The servers, tried in order: `http://host:port` or `host:port`. At least one.
    pub servers: Vec<String>,
    /// The node ID this client presents (default: `cloudmap-balancer-PID`).
    pub node_id: String,
    /// The zone in the node's locality, an AZ name or ID (so the server counts this client
    /// among the service's callers in that zone). Default: the balancer's own zone when it
    /// was set on the builder, else none.
    pub zone: Option<String>,
    /// The region in the node's locality. Default none.
    pub region: Option<String>,
    /// With no answer this long after start, Cloud Map is polled directly. Default 2 s.
    pub start_timeout: Duration,
    /// With the stream lost and no answer for this long (plus 0–50 % jitter per source, so
    /// that a fleet does not fall back in one second), Cloud Map is polled directly. Default
    /// 15 s (15 to 22.5 s).
    pub lost_timeout: Duration,
    /// Connection timeout per server. Default 1 s.
    pub connect_timeout: Duration,
    /// First wait after a round of servers that did not answer; doubles, ±20 %. Default 250 ms.
    pub backoff_base: Duration,
    /// Longest wait between rounds. Default 5 s.
    pub backoff_max: Duration,
    /// The CA (PEM) that `https://` servers' certificates are verified against (feature
    /// `tls`; the server's `--tls-cert`). Required for `https://` servers. Default none.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// The name the servers' certificates carry, when it is not the host in their URI.
    /// Default: the URI's host.
    pub tls_domain: Option<String>,
}

impl XdsOptions {
    /// Options for these servers, with the defaults.
    pub fn new(servers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            servers: servers.into_iter().map(Into::into).collect(),
            node_id: String::new(),
            zone: None,
            region: None,
            start_timeout: Duration::from_secs(2),
            lost_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(1),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            tls_ca_pem: None,
            tls_domain: None,
        }
    }

    /// Options from a gRPC bootstrap's servers and node.
    pub fn from_bootstrap(bootstrap: Bootstrap) -> Self {
        let mut options = Self::new(bootstrap.servers);
        options.node_id = bootstrap.node_id;
        options.zone = bootstrap.zone;
        options.region = bootstrap.region;
        options
    }

    /// Options from the environment (see [`Bootstrap::from_env`]); `Ok(None)` when it names
    /// no server. A bootstrap's `tls` credentials' CA file is read here.
    pub fn from_env() -> Result<Option<Self>, Error> {
        let Some(bootstrap) = Bootstrap::from_env(
            |name| std::env::var(name).ok(),
            |path| std::fs::read_to_string(path),
        )?
        else {
            return Ok(None);
        };
        let ca = bootstrap.ca_certificate_file.clone();
        let mut options = Self::from_bootstrap(bootstrap);
        if let Some(path) = ca {
            options.tls_ca_pem = Some(std::fs::read(&path).map_err(|e| Error::InvalidOption {
                name: "xds bootstrap",
                reason: format!("ca_certificate_file {path}: {e}"),
            })?);
        }
        Ok(Some(options))
    }

    fn validate(&self) -> Result<Vec<String>, Error> {
        let invalid = |name, reason: String| Error::InvalidOption { name, reason };
        if self.servers.is_empty() {
            return Err(invalid("xds.servers", "at least one server".to_owned()));
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return Err(invalid(
                "xds.backoff_base",
                "must be above 0 and at most backoff_max".to_owned(),
            ));
        }
        let servers = self
            .servers
            .iter()
            .map(|s| bootstrap::uri(s).map_err(|reason| invalid("xds.servers", reason)))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(server) = servers.iter().find(|s| s.starts_with("https://")) {
            if !cfg!(feature = "tls") {
                return Err(invalid(
                    "xds.servers",
                    format!("{server}: TLS to the xDS server needs the crate's `tls` feature"),
                ));
            }
            if self.tls_ca_pem.is_none() {
                return Err(invalid(
                    "xds.tls_ca_pem",
                    format!(
                        "{server}: an https:// server needs the CA its certificate is verified against"
                    ),
                ));
            }
        }
        Ok(servers)
    }
}

/// A service's instances from an xDS server, with a fallback [`InstanceSource`] (Cloud Map) for
/// when no server answers. See the [module docs](self).
pub struct XdsSource {
    shared: Arc<Shared>,
    fallback: Arc<dyn InstanceSource>,
    _stream: AbortOnDrop,
}

impl std::fmt::Debug for XdsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsSource")
            .field("resource", &self.shared.resource)
            .finish_non_exhaustive()
    }
}

/// What the stream task and the source share.
pub(crate) struct Shared {
    resource: String,
    state: Mutex<State>,
    /// Bumped on every answer (rejected ones too) and every switch.
    changes: watch::Sender<u64>,
    /// The change the poller last looked at (by `revision` or `list`).
    seen: std::sync::atomic::AtomicU64,
}

struct State {
    switch: Switch,
    /// The last accepted answer.
    latest: Option<Listing>,
    /// The server that gave it.
    server: String,
    nacks: u64,
}

impl XdsSource {
    /// Starts the ADS stream on the current Tokio runtime for `service` in `namespace`,
    /// falling back to `fallback`. Fails on invalid options or outside a runtime.
    pub fn start(
        options: &XdsOptions,
        namespace: &str,
        service: &str,
        fallback: Arc<dyn InstanceSource>,
    ) -> Result<Self, Error> {
        let servers = options.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let shared = Arc::new(Shared {
            resource: format!("{INSTANCES_PREFIX}{service}.{namespace}"),
            state: Mutex::new(State {
                // The lost timeout gets 0-50 % jitter, so that a fleet whose servers all went
                // away does not fall back to Cloud Map in one second.
                switch: Switch::new(
                    tokio::time::Instant::now(),
                    options.start_timeout,
                    options.lost_timeout.mul_f64(1.0 + 0.5 * fastrand::f64()),
                ),
                latest: None,
                server: servers[0].clone(),
                nacks: 0,
            }),
            changes: watch::Sender::new(0),
            seen: std::sync::atomic::AtomicU64::new(0),
        });
        let settings = stream::StreamSettings {
            servers,
            node: stream::node(
                &options.node_id,
                options.zone.as_deref(),
                options.region.as_deref(),
            ),
            connect_timeout: options.connect_timeout,
            backoff_base: options.backoff_base,
            backoff_max: options.backoff_max,
            tls_ca_pem: options.tls_ca_pem.clone(),
            tls_domain: options.tls_domain.clone(),
        };
        let task = runtime.spawn(stream::run(
            Arc::clone(&shared),
            settings,
            fastrand::u64(..),
        ));
        Ok(Self {
            shared,
            fallback,
            _stream: AbortOnDrop(task),
        })
    }

    /// The ClusterLoadAssignment name it subscribes to.
    pub fn resource(&self) -> &str {
        &self.shared.resource
    }

    /// Answers rejected (NACKed) so far.
    pub fn nacks(&self) -> u64 {
        self.shared.lock().nacks
    }

    /// What is served now, after applying the timeouts; waits while nothing is decided (no
    /// answer yet, within the start timeout).
    async fn serving(&self) -> Serving {
        loop {
            let mut changes = self.shared.changes.subscribe();
            let deadline = {
                let mut state = self.shared.lock();
                self.shared.tick(&mut state);
                match state.switch.serving() {
                    Serving::Undecided => state.switch.deadline(),
                    decided => return decided,
                }
            };
            let deadline = deadline.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Applies the timeouts; logs and bumps on a switch.
    fn tick(&self, state: &mut State) {
        if let Some(serving) = state.switch.tick(tokio::time::Instant::now()) {
            tracing::warn!(resource = %self.resource, ?serving, "no xDS answer in time: polling Cloud Map directly");
            self.bump();
        }
    }

    /// A server's answer was accepted.
    fn answer(&self, server: &str, listing: Listing) {
        {
            let mut state = self.lock();
            if let Some(serving) = state.switch.answered() {
                tracing::warn!(resource = %self.resource, %server, ?serving, "xDS answers: serving them");
            }
            state.latest = Some(listing);
            server.clone_into(&mut state.server);
        }
        self.bump();
    }

    /// The stream to `server` ended or could not be opened.
    fn lost(&self, server: &str) {
        let mut state = self.lock();
        let before = state.switch.deadline();
        if state.switch.serving() == Serving::Xds && before.is_none() {
            tracing::warn!(resource = %self.resource, %server, "xDS stream lost: the last answer stays in service while the next server is tried");
        }
        state.switch.lost(tokio::time::Instant::now());
        let moved = state.switch.deadline() != before;
        drop(state);
        // Only a new deadline wakes the poller (its wait includes it): a wake per failed
        // reconnection would be a Cloud Map call per attempt once falling back.
        if moved {
            self.bump();
        }
    }

    /// An answer was rejected (NACKed): counted, and the poller woken so that its status and
    /// metric say so (it finds the revision unchanged).
    fn nacked(&self) {
        self.lock().nacks += 1;
        self.bump();
    }

    fn seen_now(&self) {
        self.seen
            .store(*self.changes.borrow(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl InstanceSource for XdsSource {
    fn revision(&self) -> BoxFuture<'_, Result<Option<i64>, Error>> {
        Box::pin(async move {
            self.shared.seen_now();
            match self.serving().await {
                Serving::CloudMap => self.fallback.revision().await,
                _ => Ok(self
                    .shared
                    .lock()
                    .latest
                    .as_ref()
                    .and_then(Listing::revision)),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, Error>> {
        Box::pin(async move {
            self.shared.seen_now();
            match self.serving().await {
                Serving::CloudMap => self.fallback.list().await,
                _ => Ok(self.shared.lock().latest.clone().unwrap_or_default()),
            }
        })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let mut changes = self.shared.changes.subscribe();
                if *changes.borrow_and_update()
                    != self.shared.seen.load(std::sync::atomic::Ordering::Relaxed)
                {
                    return;
                }
                let deadline = {
                    let mut state = self.shared.lock();
                    self.shared.tick(&mut state);
                    state.switch.deadline()
                };
                match deadline {
                    Some(deadline) => tokio::select! {
                        _ = changes.changed() => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    },
                    None => {
                        let _ = changes.changed().await;
                    }
                }
            }
        })
    }

    fn rejected_answers(&self) -> u64 {
        self.nacks()
    }

    fn kind(&self) -> SourceKind {
        let state = self.shared.lock();
        match state.switch.serving() {
            Serving::CloudMap => SourceKind::CloudMapFallback,
            _ => SourceKind::Xds {
                server: state.server.clone(),
            },
        }
    }
}
