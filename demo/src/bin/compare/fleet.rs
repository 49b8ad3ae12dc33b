//! The fleet as the harness runs it: the local demo's tasks with the network emulation on,
//! registered with the attributes the sync Lambda would write, slowed, killed and replaced.

use std::time::{Duration, Instant, SystemTime};

use demo::fleet::{CLIENT_ZONE, DemoTask, Stack};
use demo_server::NetworkEmulation;
use demo_server::pb::SetLoadRequest;
use demo_server::pb::control_client::ControlClient;

use crate::attributes::as_the_lambda_writes;
use crate::harness::{HarnessError, Options};

/// One task of the fleet and its reported CPU load.
pub(crate) struct Member {
    pub(crate) task: DemoTask,
    pub(crate) load: u32,
}

/// moto with the demo's service, its running tasks, and when they were last registered.
pub(crate) struct Fleet {
    pub(crate) stack: Stack,
    pub(crate) members: Vec<Member>,
    pub(crate) refreshed: Instant,
}

impl Fleet {
    /// Registers every member with the attributes the Lambda would have written now.
    pub(crate) async fn register_all(&mut self) -> Result<(), HarnessError> {
        for member in &self.members {
            register(&self.stack, member).await?;
        }
        self.refreshed = Instant::now();
        Ok(())
    }

    /// The largest task in the client's zone: the one that carries most of its calls.
    pub(crate) fn target(&self) -> usize {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.task.spec.zone == CLIENT_ZONE)
            .max_by_key(|(_, m)| m.task.spec.cpu)
            .map_or(0, |(i, _)| i)
    }

    /// HAProxy's backend servers: a name (zone and task ID) and the address of each task.
    pub(crate) fn servers(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.members
            .iter()
            .map(|m| {
                let id = &m.task.spec.task_id;
                let short = &id[..id.len().min(8)];
                (format!("{}-{short}", m.task.spec.zone), m.task.addr)
            })
            .collect()
    }
}

/// ECS's attributes for the task's loopback address, merged with the Lambda's.
async fn register(stack: &Stack, member: &Member) -> Result<(), HarnessError> {
    let task = &member.task;
    let ecs = stack.service.ecs_attributes(
        &task.addr.ip().to_string(),
        task.addr.port(),
        &task.spec.zone,
    );
    let attributes = as_the_lambda_writes(&ecs, &task.spec, member.load, SystemTime::now())
        .map_err(|e| HarnessError::Step {
            what: "the Lambda's attributes".into(),
            detail: e.to_string(),
        })?;
    stack
        .service
        .register(&stack.moto, &task.spec.task_id, attributes)
        .await?;
    Ok(())
}

/// The demo servers' network emulation: AWS's round trips.
fn network_env() -> [(&'static str, String); 2] {
    let rtt = NetworkEmulation::AWS;
    [
        ("DEMO_RTT_IN_ZONE_US", rtt.in_zone.as_micros().to_string()),
        (
            "DEMO_RTT_CROSS_ZONE_US",
            rtt.cross_zone.as_micros().to_string(),
        ),
    ]
}

/// Starts a task of `cpu` units in `zone` (RunTask, then the process) and registers it with
/// `load`.
pub(crate) async fn start_member(
    stack: &Stack,
    options: &Options,
    zone: &str,
    cpu: u32,
    load: u32,
) -> Result<Member, HarnessError> {
    let spec = stack.run_task(zone, cpu).await?;
    let task = DemoTask::start(
        &options.demo_server,
        spec,
        &options.work_dir,
        &network_env(),
    )
    .await?;
    let member = Member { task, load };
    register(stack, &member).await?;
    Ok(member)
}

/// `Control.SetLoad` on each task: `latency` before every answer from now on.
pub(crate) async fn set_latency(
    tasks: &[&DemoTask],
    latency: Duration,
) -> Result<(), HarnessError> {
    for task in tasks {
        let failed = |e: &dyn std::fmt::Display| HarnessError::Step {
            what: format!("Control.SetLoad on {}", task.addr),
            detail: e.to_string(),
        };
        let mut control = ControlClient::connect(format!("http://{}", task.addr))
            .await
            .map_err(|e| failed(&e))?;
        control
            .set_load(SetLoadRequest {
                latency_ms: u32::try_from(latency.as_millis()).unwrap_or(u32::MAX),
                cpu_work_ms: 0,
            })
            .await
            .map_err(|e| failed(&e))?;
    }
    Ok(())
}
