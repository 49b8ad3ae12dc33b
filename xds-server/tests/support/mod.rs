//! What the tests share: an ADS client of our own that speaks as gRPC's xDS clients do.

#![allow(dead_code, unreachable_pub)]

pub mod fleet;
pub mod replay;

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// One ADS stream, as a gRPC xDS client speaks it.
pub struct Client {
    pub requests: mpsc::Sender<DiscoveryRequest>,
    pub responses: Streaming<DiscoveryResponse>,
    node: Option<Node>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, node_id: &str, zone: &str) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (requests, rx) = mpsc::channel(16);
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self {
            requests,
            responses,
            node: Some(Node {
                id: node_id.to_owned(),
                locality: Some(Locality {
                    zone: zone.to_owned(),
                    ..Locality::default()
                }),
                ..Node::default()
            }),
        }
    }

    /// Sends a request; the node goes with the first only.
    pub async fn send(
        &mut self,
        type_url: &str,
        names: &[&str],
        version: &str,
        nonce: &str,
        error: Option<&str>,
    ) {
        self.requests
            .send(DiscoveryRequest {
                node: self.node.take(),
                type_url: type_url.to_owned(),
                resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
                version_info: version.to_owned(),
                response_nonce: nonce.to_owned(),
                error_detail: error.map(|message| RpcStatus {
                    code: 3,
                    message: message.to_owned(),
                    ..RpcStatus::default()
                }),
                ..DiscoveryRequest::default()
            })
            .await
            .unwrap();
    }

    /// The next response (a hang guard of 20 s, not a timing check).
    pub async fn next(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(20), self.responses.message())
            .await
            .expect("a response")
            .expect("the stream is open")
            .expect("a message")
    }

    /// Subscribes and returns the response, ACKing it.
    pub async fn get(&mut self, type_url: &str, names: &[&str]) -> DiscoveryResponse {
        self.send(type_url, names, "", "", None).await;
        let response = self.next().await;
        assert_eq!(response.type_url, type_url);
        self.send(
            type_url,
            names,
            &response.version_info,
            &response.nonce,
            None,
        )
        .await;
        response
    }

    /// Whether a response arrives within `wait` (used to show one does not: nothing else is
    /// pending, so waiting longer changes nothing).
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.responses.message())
            .await
            .is_err()
    }
}
