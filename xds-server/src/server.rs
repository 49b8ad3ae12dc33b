//! The ADS service (state of the world, v3): wiring only. Each stream is a task that applies
//! requests to its [`TypeState`]s, keeps a [`Subscription`] per service its names resolve to,
//! and sends a type's resources whenever their version differs from what the client has.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use futures_util::Stream;
use prost::Message;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::ack::{TypeState, Verdict};
use cloudmap_balancer::contract::xds::INSTANCES_PREFIX;

use crate::naming::{self, Names, ServiceName};
use crate::resources::{ClientZone, ClusterPolicy, encode};
use crate::services::{Resolution, Services, Subscription};
use crate::version;

/// `type_url` of Listeners.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `type_url` of Clusters.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `type_url` of ClusterLoadAssignments.
pub const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

const TYPES: [&str; 3] = [LISTENER, CLUSTER, ENDPOINTS];

/// What the server has done, for tests and the shutdown summary.
#[derive(Debug, Default)]
pub struct Counters {
    /// Streams opened.
    pub streams: AtomicU64,
    /// Responses sent.
    pub pushes: AtomicU64,
    /// ACKs received.
    pub acks: AtomicU64,
    /// NACKs received.
    pub nacks: AtomicU64,
    /// Streams closed for subscribing to more names than allowed.
    pub refused: AtomicU64,
}

/// The server's settings for every stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Name resolution.
    pub names: Names,
    /// What every Cluster carries.
    pub cluster: ClusterPolicy,
    /// Most names one stream may subscribe to, over all types.
    pub max_subscriptions: usize,
}

/// The ADS service.
#[derive(Debug, Clone)]
pub struct XdsServer {
    services: Services,
    config: Arc<StreamConfig>,
    counters: Arc<Counters>,
}

impl XdsServer {
    /// A server over `services`.
    pub fn new(services: Services, config: StreamConfig) -> Self {
        Self {
            services,
            config: Arc::new(config),
            counters: Arc::new(Counters::default()),
        }
    }

    /// What it has done so far.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// The services it polls.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The tonic service to add to a router.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let peer = request.remote_addr();
        let (tx, rx) = mpsc::channel(16);
        self.counters.streams.fetch_add(1, Ordering::Relaxed);
        let stream = AdsStream {
            server: self.clone(),
            peer,
            node: None,
            zone: ClientZone::default(),
            types: Default::default(),
            subscriptions: HashMap::new(),
            force: [false; 3],
            nonce: 0,
            wake: Arc::new(Notify::new()),
            tx,
        };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "incremental (delta) xDS is not served: use state-of-the-world ADS",
        ))
    }
}

/// A service subscribed to by a stream, and the task that wakes the stream on its changes.
struct Subscribed {
    subscription: Subscription,
    forwarder: tokio::task::JoinHandle<()>,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

struct AdsStream {
    server: XdsServer,
    peer: Option<SocketAddr>,
    node: Option<Node>,
    zone: ClientZone,
    types: [TypeState; 3],
    subscriptions: HashMap<ServiceName, Subscribed>,
    /// Types whose subscription changed since their last response: answered even when the
    /// version is the same (so a name the server cannot serve is reported absent at once).
    force: [bool; 3],
    nonce: u64,
    wake: Arc<Notify>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
}

impl AdsStream {
    async fn run(mut self, mut requests: Streaming<DiscoveryRequest>) {
        metrics::gauge!("cloudmap_xds_streams").increment(1.0);
        let wake = Arc::clone(&self.wake);
        let outcome = loop {
            tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(request)) => {
                        if let Err(status) = self.on_request(&request) {
                            break Err(status);
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(status) => {
                        tracing::debug!(peer = ?self.peer, %status, "stream ended by the client");
                        break Ok(());
                    }
                },
                () = wake.notified() => {}
                () = self.tx.closed() => break Ok(()),
            }
            if self.push_all().await.is_err() {
                break Ok(());
            }
        };
        if let Err(status) = outcome {
            let _ = self.tx.send(Err(status)).await;
        }
        metrics::gauge!("cloudmap_xds_streams").decrement(1.0);
        for (i, state) in self.types.iter().enumerate() {
            metrics::gauge!("cloudmap_xds_subscribed_names", "type" => short(TYPES[i]))
                .decrement(state.subscribed().len() as f64);
        }
        tracing::debug!(peer = ?self.peer, node = ?self.node.as_ref().map(|n| &n.id), "stream closed");
    }

    fn on_request(&mut self, request: &DiscoveryRequest) -> Result<(), Status> {
        if self.node.is_none() {
            let node = request.node.clone().unwrap_or_default();
            self.zone = ClientZone::parse(node.locality.as_ref().map_or("", |l| l.zone.as_str()));
            tracing::info!(peer = ?self.peer, node = %node.id, zone = ?self.zone, "stream opened");
            self.node = Some(node);
        }
        let Some(index) = TYPES.iter().position(|t| *t == request.type_url) else {
            tracing::debug!(type_url = %request.type_url, "a type this server does not serve: ignored");
            return Ok(());
        };
        let others: usize = self
            .types
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, t)| t.subscribed().len())
            .sum();
        let max = self.server.config.max_subscriptions;
        if others + request.resource_names.len() > max {
            self.server.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = ?self.node.as_ref().map(|n| &n.id), names = others + request.resource_names.len(), max, "stream closed: too many names");
            return Err(Status::resource_exhausted(format!(
                "this stream subscribes to {} resource names; the server allows {max} per stream (CLOUDMAP_XDS_MAX_SUBSCRIPTIONS)",
                others + request.resource_names.len()
            )));
        }
        let before = self.types[index].subscribed().len();
        let (verdict, changed) = self.types[index].on_request(
            &request.resource_names,
            &request.response_nonce,
            &request.version_info,
            request.error_detail.as_ref().map(|e| e.message.as_str()),
        );
        let after = self.types[index].subscribed().len();
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("cloudmap_xds_subscribed_names", "type" => short(TYPES[index]))
            .increment(after as f64 - before as f64);
        match verdict {
            Verdict::Nack {
                version,
                accepted,
                detail,
            } => {
                self.server.counters.nacks.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("cloudmap_xds_nacks_total", "type" => short(TYPES[index]))
                    .increment(1);
                tracing::warn!(node = ?self.node.as_ref().map(|n| &n.id), type_url = TYPES[index], rejected = %version, accepted = %accepted, detail = %detail, "client rejected a response (NACK): it keeps what it accepted");
            }
            Verdict::Ack { .. } => {
                self.server.counters.acks.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Initial | Verdict::Stale => {}
        }
        if changed {
            self.resubscribe();
            // Listener and Cluster answers list every subscribed resource, so a changed
            // subscription is answered even with the same content (a name the server cannot
            // serve is then known absent at once). A ClusterLoadAssignment answer goes out when
            // there is one: an absent one says nothing in EDS.
            self.force[index] = TYPES[index] != ENDPOINTS;
        }
        Ok(())
    }

    /// Keeps one subscription per service any subscribed name resolves to.
    fn resubscribe(&mut self) {
        let names = &self.server.config.names;
        let wanted: BTreeSet<ServiceName> = self
            .types
            .iter()
            .flat_map(|t| t.subscribed().iter())
            .filter_map(|name| names.resolve(name).ok())
            .collect();
        self.subscriptions.retain(|name, _| wanted.contains(name));
        for name in wanted {
            if self.subscriptions.contains_key(&name) {
                continue;
            }
            match self.server.services.subscribe(&name, &self.zone) {
                Ok(subscription) => {
                    let mut changes = subscription.changes();
                    let wake = Arc::clone(&self.wake);
                    let forwarder = tokio::spawn(async move {
                        while changes.changed().await.is_ok() {
                            wake.notify_one();
                        }
                    });
                    self.subscriptions.insert(
                        name,
                        Subscribed {
                            subscription,
                            forwarder,
                        },
                    );
                }
                Err(error) => {
                    tracing::error!(service = %name, error = %error, "discovery could not start");
                }
            }
        }
    }

    async fn push_all(&mut self) -> Result<(), ()> {
        for index in 0..TYPES.len() {
            let force = std::mem::take(&mut self.force[index]);
            if let Some(response) = self.response(index, force) {
                self.tx.send(Ok(response)).await.map_err(|_| ())?;
            }
        }
        Ok(())
    }

    /// The response for type `index`, when one should go out.
    fn response(&mut self, index: usize, force: bool) -> Option<DiscoveryResponse> {
        let state = &self.types[index];
        if !state.requested() {
            return None;
        }
        let names = &self.server.config.names;
        // What to send, by name, with each resource's version. Versions come from the inputs,
        // not the encoding, so a wake that changes nothing costs a few hashes; resources are
        // encoded (or copied) only for a response that goes out.
        let mut resources: BTreeMap<&str, (String, Source)> = BTreeMap::new();
        let mut fetched_at: Option<SystemTime> = None;
        for name in state.subscribed() {
            let Ok(service) = names.resolve(name) else {
                tracing::debug!(%name, "not a service name: the client is told it does not exist");
                continue;
            };
            let instances = naming::is_instances(name);
            let resolution = self
                .subscriptions
                .get(&service)
                .map_or(Resolution::Pending, |s| {
                    if instances && TYPES[index] == ENDPOINTS {
                        s.subscription.resolve_instances()
                    } else {
                        s.subscription.resolve()
                    }
                });
            let canonical = if instances {
                format!("{INSTANCES_PREFIX}{}", service.resource_name())
            } else {
                service.resource_name()
            };
            let entry = match (TYPES[index], resolution) {
                (_, Resolution::Rejected(_)) => continue,
                (LISTENER, _) => (
                    version::of(&(ENCODING, "Listener", name, &canonical)),
                    Source::Listener(canonical),
                ),
                (CLUSTER, _) => (
                    version::of(&(ENCODING, "Cluster", name, &self.server.config.cluster)),
                    Source::Cluster,
                ),
                (_, Resolution::Pending) => continue,
                (_, Resolution::Ready(answer)) => {
                    fetched_at =
                        Some(fetched_at.map_or(answer.fetched_at, |t| t.max(answer.fetched_at)));
                    (answer.version.clone(), Source::Endpoints(answer, canonical))
                }
            };
            resources.insert(name.as_str(), entry);
        }
        let version = version::of_response(
            TYPES[index],
            resources.iter().map(|(name, (v, _))| (*name, v.as_str())),
        );
        // An empty ClusterLoadAssignment answer would say nothing (EDS answers need not list
        // every subscribed name): wait until there is one to give.
        if (TYPES[index] == ENDPOINTS && resources.is_empty())
            || !self.types[index].should_send(&version, force)
        {
            return None;
        }
        let region = &self.server.services.config().region;
        let resources: Vec<Any> = resources
            .into_iter()
            .map(|(name, (_, source))| match source {
                Source::Listener(canonical) => pack_any(encode::listener(name, &canonical)),
                Source::Cluster => pack_any(encode::cluster(name, &self.server.config.cluster)),
                // Encoded once per (service, zone); an alias is encoded for this stream.
                Source::Endpoints(answer, canonical) if name == canonical => answer.encoded.clone(),
                Source::Endpoints(answer, _) => {
                    pack_any(encode::load_assignment(name, region, &answer.assignment))
                }
            })
            .collect();
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        self.types[index].sent(version.clone(), nonce.clone());
        self.server.counters.pushes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cloudmap_xds_pushes_total", "type" => short(TYPES[index])).increment(1);
        if let Some(at) = fetched_at
            && let Ok(age) = SystemTime::now().duration_since(at)
        {
            metrics::histogram!("cloudmap_xds_push_latency_seconds").record(age.as_secs_f64());
        }
        tracing::debug!(node = ?self.node.as_ref().map(|n| &n.id), type_url = TYPES[index], %version, resources = resources.len(), "push");
        Some(DiscoveryResponse {
            version_info: version,
            resources,
            type_url: TYPES[index].to_owned(),
            nonce,
            ..DiscoveryResponse::default()
        })
    }
}

/// Part of every Listener and Cluster version: a release that encodes them differently gives
/// them new versions, so clients of replicas running different releases are not told two
/// different resources are the same.
const ENCODING: &str = env!("CARGO_PKG_VERSION");

/// What a resource is made from, until it is encoded.
enum Source {
    Listener(String),
    Cluster,
    Endpoints(Arc<crate::services::Answer>, String),
}

/// `Listener`, `Cluster` or `ClusterLoadAssignment`: a metric label.
fn short(type_url: &str) -> &'static str {
    match type_url {
        LISTENER => "Listener",
        CLUSTER => "Cluster",
        _ => "ClusterLoadAssignment",
    }
}

/// Decodes a resource of a response (for tests and clients of this crate).
pub fn decode<M: Message + Default>(any: &Any) -> Result<M, prost::DecodeError> {
    M::decode(any.value.as_slice())
}
