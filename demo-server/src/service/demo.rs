//! `cloudmap.demo.v1.Demo`: the four kinds of call, each answering with the serving task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::load::ServerState;
use crate::pb;

/// The most answers one `DescribeStream` call may ask for.
const MAX_STREAM_COUNT: u32 = 10_000;
/// The longest pause between streamed answers.
const MAX_STREAM_INTERVAL: Duration = Duration::from_secs(60);
/// Streamed answers buffered ahead of a slow reader.
const STREAM_BUFFER: usize = 16;

pub(crate) struct DemoService {
    state: Arc<ServerState>,
}

impl DemoService {
    pub(crate) fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }
}

type ResponseStream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl pb::demo_server::Demo for DemoService {
    async fn describe(
        &self,
        _request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let call = self.state.begin_call();
        call.apply_load().await;
        tracing::debug!("describe");
        Ok(Response::new(pb::DescribeResponse {
            task: Some(self.state.task()),
            load: Some(self.state.report()),
        }))
    }

    type DescribeStreamStream = ResponseStream<pb::DescribeStreamResponse>;

    async fn describe_stream(
        &self,
        request: Request<pb::DescribeStreamRequest>,
    ) -> Result<Response<Self::DescribeStreamStream>, Status> {
        let pb::DescribeStreamRequest { count, interval_ms } = request.into_inner();
        if !(1..=MAX_STREAM_COUNT).contains(&count) {
            return Err(Status::invalid_argument(format!(
                "count must be 1 to {MAX_STREAM_COUNT}, got {count}"
            )));
        }
        let interval = Duration::from_millis(interval_ms.into());
        if interval > MAX_STREAM_INTERVAL {
            return Err(Status::invalid_argument(format!(
                "interval_ms must be at most {}, got {interval_ms}",
                MAX_STREAM_INTERVAL.as_millis()
            )));
        }

        let call = self.state.begin_call();
        let state = Arc::clone(&self.state);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            for sequence in 0..count {
                if sequence > 0 && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                call.apply_load().await;
                let answer = pb::DescribeStreamResponse {
                    sequence,
                    task: Some(state.task()),
                    load: Some(state.report()),
                };
                if tx.send(Ok(answer)).await.is_err() {
                    tracing::debug!(sequence, "describe_stream: the client went away");
                    break;
                }
            }
            // The call stays in flight until its last answer is handed over.
            drop(call);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn collect(
        &self,
        request: Request<Streaming<pb::CollectRequest>>,
    ) -> Result<Response<pb::CollectResponse>, Status> {
        let call = self.state.begin_call();
        let mut inbound = request.into_inner();
        let (mut messages, mut bytes) = (0u64, 0u64);
        while let Some(message) = inbound.message().await? {
            messages += 1;
            bytes += message.payload.len() as u64;
        }
        call.apply_load().await;
        tracing::debug!(messages, bytes, "collect");
        Ok(Response::new(pb::CollectResponse {
            messages,
            bytes,
            task: Some(self.state.task()),
            load: Some(self.state.report()),
        }))
    }

    type EchoStream = ResponseStream<pb::EchoResponse>;

    async fn echo(
        &self,
        request: Request<Streaming<pb::EchoRequest>>,
    ) -> Result<Response<Self::EchoStream>, Status> {
        let call = self.state.begin_call();
        let state = Arc::clone(&self.state);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            loop {
                let answer = match inbound.message().await {
                    Ok(Some(pb::EchoRequest { sequence, payload })) => {
                        call.apply_load().await;
                        Ok(pb::EchoResponse {
                            sequence,
                            payload,
                            task: Some(state.task()),
                            load: Some(state.report()),
                        })
                    }
                    // The client finished sending: the call ends here.
                    Ok(None) => break,
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
            drop(call);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
