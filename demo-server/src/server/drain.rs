//! The health service as a draining server needs it.
//!
//! tonic-health's `Watch` streams never end, so one health watcher would hold its HTTP/2
//! connection open through a graceful shutdown and turn every drain into a timeout. This wrapper
//! ends `Watch` streams when the server stops accepting calls (after they have carried the
//! `NOT_SERVING` update); `Check` is unchanged.

use std::pin::Pin;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthService;

pub(super) struct DrainingHealth {
    inner: HealthService,
    /// Becomes `true` when the server sends GOAWAY.
    closing: watch::Receiver<bool>,
}

impl DrainingHealth {
    pub(super) fn new(inner: HealthService, closing: watch::Receiver<bool>) -> Self {
        Self { inner, closing }
    }
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut updates = self.inner.watch(request).await?.into_inner();
        let mut closing = self.closing.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // Updates first: the NOT_SERVING sent before closing must reach the watcher.
                    biased;
                    update = updates.next() => match update {
                        Some(update) => {
                            if tx.send(update).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                    () = closed(&mut closing) => break,
                    () = tx.closed() => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Resolves once the server closes (or is gone). The guard `wait_for` returns is not `Send`, so it
/// is dropped here rather than held across the select.
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}
