//! A broken ADS server: it answers every stream with one ClusterLoadAssignment response
//! captured from the real server, and, once told to, with one that does not decode. It records
//! every request it receives, so a test can read the client's ACKs and NACKs.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponses = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// The version and nonce of the answer that does not decode.
pub const GARBAGE_VERSION: &str = "garbage-1";

/// The server, on `127.0.0.1:0`; stops when dropped.
pub struct Replay {
    pub addr: SocketAddr,
    garbage: watch::Sender<bool>,
    requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Replay {
    /// Serves `answer` (its nonce replaced) to every stream's first request.
    pub async fn start(answer: DiscoveryResponse) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (garbage, watching) = watch::channel(false);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let service = Service {
            answer,
            garbage: watching,
            requests: Arc::clone(&requests),
        };
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Self {
            addr,
            garbage,
            requests,
            server,
        }
    }

    /// Every open stream (and every later one, after its first answer) gets one answer whose
    /// ClusterLoadAssignment is not protobuf.
    pub fn send_garbage(&self) {
        self.garbage.send_replace(true);
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<DiscoveryRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct Service {
    answer: DiscoveryResponse,
    garbage: watch::Receiver<bool>,
    requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
}

impl Service {
    fn record(&self, request: DiscoveryRequest) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }

    async fn serve(
        self,
        mut incoming: Streaming<DiscoveryRequest>,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) {
        let Ok(Some(first)) = incoming.message().await else {
            return;
        };
        self.record(first);
        let mut answer = self.answer.clone();
        answer.nonce = "1".to_owned();
        if tx.send(Ok(answer)).await.is_err() {
            return;
        }
        let mut garbage = self.garbage.clone();
        let mut sent = false;
        loop {
            tokio::select! {
                request = incoming.message() => match request {
                    Ok(Some(request)) => self.record(request),
                    _ => return,
                },
                told = async { garbage.wait_for(|g| *g).await.is_ok() }, if !sent => {
                    if !told {
                        return;
                    }
                    sent = true;
                    let bad = DiscoveryResponse {
                        version_info: GARBAGE_VERSION.to_owned(),
                        type_url: self.answer.type_url.clone(),
                        nonce: "2".to_owned(),
                        resources: vec![Any {
                            type_url: self.answer.type_url.clone(),
                            // A tag whose varint never ends: no protobuf decodes it.
                            value: vec![0xff, 0xff, 0xff, 0xff],
                        }],
                        ..DiscoveryResponse::default()
                    };
                    if tx.send(Ok(bad)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream = DeltaResponses;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.clone().serve(request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponses>, Status> {
        Err(Status::unimplemented("state of the world only"))
    }
}
