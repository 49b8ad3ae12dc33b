//! `cloudmap.demo.v1.Control`: changes the artificial load of one server at runtime.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::load::{Load, ServerState};
use crate::pb;

pub(crate) struct ControlService {
    state: Arc<ServerState>,
}

impl ControlService {
    pub(crate) fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn set_load(
        &self,
        request: Request<pb::SetLoadRequest>,
    ) -> Result<Response<pb::SetLoadResponse>, Status> {
        let pb::SetLoadRequest {
            latency_ms,
            cpu_work_ms,
        } = request.into_inner();
        let load = Load::new(
            Duration::from_millis(latency_ms.into()),
            Duration::from_millis(cpu_work_ms.into()),
        )
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "latency_ms must be at most {} and cpu_work_ms at most {}, got {latency_ms} and {cpu_work_ms}",
                Load::MAX_LATENCY.as_millis(),
                Load::MAX_CPU_WORK.as_millis()
            ))
        })?;
        self.state.set_load(load);
        tracing::info!(latency_ms, cpu_work_ms, "artificial load changed");
        Ok(Response::new(pb::SetLoadResponse {
            load: Some(self.state.report()),
        }))
    }

    async fn get_load(
        &self,
        _request: Request<pb::GetLoadRequest>,
    ) -> Result<Response<pb::GetLoadResponse>, Status> {
        Ok(Response::new(pb::GetLoadResponse {
            task: Some(self.state.task()),
            load: Some(self.state.report()),
        }))
    }
}
