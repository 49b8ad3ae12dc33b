//! The ADS stream: one at a time, to each configured server in turn, subscribing to the
//! service's `instances/` ClusterLoadAssignment and ACKing or NACKing each answer by nonce
//! (gRFC A27, state of the world).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Shared, decode};

/// The ClusterLoadAssignment type URL.
pub(crate) const ENDPOINTS: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// How the stream connects and retries.
#[derive(Debug, Clone)]
pub(crate) struct StreamSettings {
    pub(crate) servers: Vec<String>,
    pub(crate) node: Node,
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) tls_ca_pem: Option<Vec<u8>>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) tls_domain: Option<String>,
}

/// The node this client presents: its ID, zone and region, and who it is.
pub(crate) fn node(id: &str, zone: Option<&str>, region: Option<&str>) -> Node {
    Node {
        id: if id.is_empty() {
            format!("cloudmap-balancer-{}", std::process::id())
        } else {
            id.to_owned()
        },
        locality: Some(Locality {
            region: region.unwrap_or_default().to_owned(),
            zone: zone.unwrap_or_default().to_owned(),
            ..Locality::default()
        }),
        user_agent_name: "cloudmap-balancer".to_owned(),
        ..Node::default()
    }
}

/// Runs until the source is dropped (the task is aborted).
pub(crate) async fn run(shared: Arc<Shared>, settings: StreamSettings, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut failures: u32 = 0;
    for server in settings.servers.iter().cycle() {
        match session(&shared, server, &settings).await {
            Ok(answered) | Err((answered, _)) if answered => failures = 0,
            _ => failures = failures.saturating_add(1),
        }
        shared.lost(server);
        // A server that answered is retried (the next one) at once; a round of servers that
        // did not backs off, doubling, ±20 %.
        if failures >= 1 {
            let exponent = (failures - 1).min(16);
            let wait = settings
                .backoff_base
                .saturating_mul(1 << exponent)
                .min(settings.backoff_max)
                .mul_f64(0.8 + 0.4 * rng.f64());
            tokio::time::sleep(wait).await;
        }
    }
}

/// One stream to `server`. Returns whether it delivered an answer, with the error that ended
/// it, if any.
async fn session(
    shared: &Shared,
    server: &str,
    settings: &StreamSettings,
) -> Result<bool, (bool, String)> {
    let endpoint = tonic::transport::Endpoint::from_shared(server.to_owned())
        .map_err(|e| (false, e.to_string()))?;
    #[cfg(feature = "tls")]
    let endpoint = match (&settings.tls_ca_pem, server.starts_with("https://")) {
        (Some(ca), true) => {
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            if let Some(domain) = &settings.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint
                .tls_config(tls)
                .map_err(|e| (false, e.to_string()))?
        }
        _ => endpoint,
    };
    let endpoint = endpoint
        .connect_timeout(settings.connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(|e| {
        tracing::debug!(%server, error = %e, "xDS server not reachable");
        (false, e.to_string())
    })?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (requests, rx) = mpsc::channel(4);
    let resource = shared.resource.clone();
    let request = |version: &str, nonce: &str, error: Option<String>, first: bool| {
        DiscoveryRequest {
            node: first.then(|| settings.node.clone()),
            type_url: ENDPOINTS.to_owned(),
            resource_names: vec![resource.clone()],
            version_info: version.to_owned(),
            response_nonce: nonce.to_owned(),
            error_detail: error.map(|message| RpcStatus {
                code: 3, // INVALID_ARGUMENT, as gRPC's clients NACK
                message,
                ..RpcStatus::default()
            }),
            ..DiscoveryRequest::default()
        }
    };
    // The channel holds 4; the first request cannot fail to fit.
    let _ = requests.try_send(request("", "", None, true));
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|status| (false, status.to_string()))?
        .into_inner();
    tracing::info!(%server, resource = %shared.resource, "xDS stream open");
    let mut accepted = String::new();
    let mut answered = false;
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(answered),
            Err(status) => return Err((answered, status.to_string())),
        };
        if response.type_url != ENDPOINTS {
            continue;
        }
        match take(&response, &shared.resource) {
            Ok(Some(cla)) => {
                match decode::listing(&cla, decode::revision(&response.version_info)) {
                    Ok(listing) => {
                        accepted.clone_from(&response.version_info);
                        answered = true;
                        shared.answer(server, listing);
                        let _ = requests
                            .send(request(&accepted, &response.nonce, None, false))
                            .await;
                    }
                    Err(reason) => {
                        nack(shared, server, &response, &reason);
                        let _ = requests
                            .send(request(&accepted, &response.nonce, Some(reason), false))
                            .await;
                    }
                }
            }
            // Not ours (an EDS answer need not list every name): ACK, nothing changes.
            Ok(None) => {
                accepted.clone_from(&response.version_info);
                let _ = requests
                    .send(request(&accepted, &response.nonce, None, false))
                    .await;
            }
            Err(reason) => {
                nack(shared, server, &response, &reason);
                let _ = requests
                    .send(request(&accepted, &response.nonce, Some(reason), false))
                    .await;
            }
        }
    }
}

/// The ClusterLoadAssignment named `resource` in a response, if it has one.
fn take(
    response: &DiscoveryResponse,
    resource: &str,
) -> Result<Option<ClusterLoadAssignment>, String> {
    for any in &response.resources {
        if any.type_url != ENDPOINTS {
            return Err(format!(
                "a resource of type {} in a ClusterLoadAssignment response",
                any.type_url
            ));
        }
        let cla = ClusterLoadAssignment::decode(any.value.as_slice())
            .map_err(|e| format!("a ClusterLoadAssignment that does not decode: {e}"))?;
        if cla.cluster_name == resource {
            return Ok(Some(cla));
        }
    }
    Ok(None)
}

fn nack(shared: &Shared, server: &str, response: &DiscoveryResponse, reason: &str) {
    shared.nacked();
    tracing::warn!(%server, resource = %shared.resource, version = %response.version_info, %reason, "xDS answer rejected (NACK): the last accepted one stays in service");
}
