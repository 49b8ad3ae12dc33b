//! The demo service on this machine: moto with the demo's ECS service and Cloud Map service
//! ([`local_stack::ecs_service`]), and real `demo-server` processes as its tasks.
//!
//! The local run and the comparison harness use the same fleet: six tasks over three zones of
//! uneven capacity ([`LAYOUT`]), a client in [`CLIENT_ZONE`].

mod binary;
mod task;

pub use binary::{demo_server_binary, xds_server_binary};
pub use task::DemoTask;

use local_stack::MotoServer;
use local_stack::ecs_service::{EcsService, RunTasks, ServiceSpec, Task};

use crate::Error;

pub use local_stack::REGION;

/// The Cloud Map namespace (HTTP) the demo service is discovered in.
pub const NAMESPACE: &str = "demo.local";
/// The ECS service and the Cloud Map service share this name, as ECS service discovery does.
pub const SERVICE: &str = "demo-server";
/// The ECS cluster.
pub const CLUSTER: &str = "demo";
/// The task definition family.
pub const FAMILY: &str = "demo-server";

/// Zone, CPU units and CPU utilisation (%, as Container Insights reports it) of each task:
/// uneven capacity over three zones. The big task in the client's zone is busy; the zones' mean
/// loads stay close (44 % here, 40 % elsewhere), so load shifts picks within the zone without
/// making the zone as a whole look overloaded.
pub const LAYOUT: [(&str, u32, u32); 6] = [
    ("eu-central-1a", 1024, 40),
    ("eu-central-1b", 512, 40),
    ("eu-central-1b", 512, 40),
    ("eu-central-1c", 256, 10),
    ("eu-central-1c", 512, 10),
    ("eu-central-1c", 1024, 70),
];

/// The client's zone.
pub const CLIENT_ZONE: &str = "eu-central-1c";

/// moto with the demo's resources in it.
#[derive(Debug)]
pub struct Stack {
    /// The local AWS stack.
    pub moto: MotoServer,
    /// The ECS service and its Cloud Map registry.
    pub service: EcsService,
}

impl Stack {
    /// Starts moto and creates the namespace, the Cloud Map service (with a custom health
    /// check, as the SAM demo stack has), the cluster, a task definition per size in
    /// `cpu_sizes` and the ECS service.
    pub async fn create(cpu_sizes: &[u32]) -> Result<Self, Error> {
        let moto = tokio::task::spawn_blocking(MotoServer::start)
            .await
            .map_err(|e| Error::process("starting moto", e))??;
        let spec = ServiceSpec {
            namespace: NAMESPACE.to_owned(),
            service: SERVICE.to_owned(),
            cluster: CLUSTER.to_owned(),
            family: FAMILY.to_owned(),
            cpu_sizes,
            custom_health: true,
        };
        let service = EcsService::create(&moto, &spec).await?;
        Ok(Self { moto, service })
    }

    /// Starts a task of `cpu` units in `zone` with ECS's RunTask, as the service scheduler
    /// would.
    pub async fn run_task(&self, zone: &str, cpu: u32) -> Result<Task, Error> {
        let run = RunTasks {
            zone: Some(zone),
            cpu: Some(cpu),
            ..RunTasks::default()
        };
        let mut tasks = self.service.run_tasks(&self.moto, run).await?;
        tasks
            .pop()
            .ok_or_else(|| Error::process("RunTask", "no task started"))
    }

    /// Registers the running task in Cloud Map as ECS does (task ID as instance ID, ECS's
    /// attributes), at the loopback address the process listens on.
    pub async fn register_as_ecs(&self, task: &DemoTask) -> Result<(), Error> {
        self.service
            .register_as_ecs(
                &self.moto,
                &task.spec,
                &task.addr.ip().to_string(),
                task.addr.port(),
            )
            .await?;
        Ok(())
    }
}
