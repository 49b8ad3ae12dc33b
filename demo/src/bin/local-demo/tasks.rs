//! demo-server tasks: started in ECS (moto), run as real processes, registered in Cloud Map the
//! way ECS registers a service's tasks, and stopped the way ECS stops them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_ecs::types::LaunchType;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use cloudmap_balancer::contract::keys;

use crate::error::DemoError;
use crate::stack::{CLUSTER, FAMILY, REGION, SERVICE, Stack};

/// How long a demo-server may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// After SIGTERM a task keeps serving this long with health NOT_SERVING: long enough for the
/// Lambda's DRAINING to reach clients that poll every second, with room for a loaded machine
/// (phase 3 checks that the client moved away before this ran out).
pub(crate) const DRAIN_DELAY: Duration = Duration::from_secs(5);
/// Then, after GOAWAY, calls in flight get this long.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A task as ECS knows it: what the events and the registration say about it.
#[derive(Debug, Clone)]
pub(crate) struct TaskSpec {
    pub(crate) task_arn: String,
    pub(crate) task_id: String,
    pub(crate) cluster_arn: String,
    pub(crate) task_definition_arn: String,
    pub(crate) revision: i32,
    pub(crate) zone: String,
    pub(crate) cpu: u32,
    pub(crate) memory: u32,
    pub(crate) subnet_id: String,
    /// The ENI address ECS (moto) gave the task. The process itself listens on loopback.
    pub(crate) ecs_ipv4: String,
    pub(crate) service: String,
}

/// Starts a task of `cpu` units in `zone` with ECS's RunTask, as the service scheduler would.
pub(crate) async fn run_task(stack: &Stack, zone: &str, cpu: u32) -> Result<TaskSpec, DemoError> {
    let definition = stack
        .task_definitions
        .get(&cpu)
        .ok_or_else(|| DemoError::Process {
            what: "RunTask".into(),
            detail: format!("no task definition of {cpu} CPU units"),
        })?;
    let subnet = stack.subnet(zone).ok_or_else(|| DemoError::Process {
        what: "RunTask".into(),
        detail: format!("no subnet in {zone}"),
    })?;
    let run = stack
        .moto
        .ecs()
        .run_task()
        .cluster(CLUSTER)
        .task_definition(&definition.arn)
        .launch_type(LaunchType::Fargate)
        .group(format!("service:{SERVICE}"))
        .started_by("ecs-svc/0123456789012345678")
        .network_configuration(local_stack::ecs::awsvpc(&stack.moto, Some(zone))?)
        .send()
        .await
        .map_err(DemoError::aws("ecs:RunTask"))?;
    let task = run.tasks().first().ok_or_else(|| DemoError::Process {
        what: "RunTask".into(),
        detail: "no task started".into(),
    })?;
    let task_arn = task.task_arn().unwrap_or_default().to_owned();
    let ecs_ipv4 = local_stack::ecs::private_ipv4(task)
        .unwrap_or("10.0.0.1")
        .to_owned();
    Ok(TaskSpec {
        task_id: task_arn.rsplit('/').next().unwrap_or_default().to_owned(),
        task_arn,
        cluster_arn: stack.cluster_arn.clone(),
        task_definition_arn: definition.arn.clone(),
        revision: definition.revision,
        zone: zone.to_owned(),
        cpu,
        memory: definition.memory,
        subnet_id: subnet.id.clone(),
        ecs_ipv4,
        service: SERVICE.to_owned(),
    })
}

/// A running demo-server process for a task.
#[derive(Debug)]
pub(crate) struct DemoTask {
    pub(crate) spec: TaskSpec,
    pub(crate) addr: SocketAddr,
    pub(crate) log: PathBuf,
    child: Child,
}

impl DemoTask {
    /// Starts `binary` as the task's container, with the task's identity, on a free loopback
    /// port; its log goes to `log_dir`.
    pub(crate) async fn start(
        binary: &Path,
        spec: TaskSpec,
        log_dir: &Path,
    ) -> Result<Self, DemoError> {
        let log = log_dir.join(format!("demo-server-{}.log", spec.task_id));
        let log_file = std::fs::File::create(&log)
            .map_err(DemoError::io(format!("creating {}", log.display())))?;
        // The task's configuration is exactly what follows: a DEMO_* variable of the user's
        // shell (say DEMO_LATENCY_MS) must not skew the run.
        let inherited = std::env::vars_os()
            .map(|(name, _)| name)
            .filter(|name| name.to_string_lossy().starts_with("DEMO_"));
        let mut command = Command::new(binary);
        for name in inherited {
            command.env_remove(name);
        }
        let mut child = command
            .env_remove(demo_server::METADATA_URI_VARIABLE)
            .envs([
                ("DEMO_BIND", "127.0.0.1".to_owned()),
                ("DEMO_PORT", "0".to_owned()),
                ("DEMO_ZONE", spec.zone.clone()),
                ("DEMO_TASK_ARN", spec.task_arn.clone()),
                ("DEMO_CLUSTER", CLUSTER.to_owned()),
                ("DEMO_FAMILY", FAMILY.to_owned()),
                ("DEMO_REVISION", spec.revision.to_string()),
                ("DEMO_HOST", "127.0.0.1".to_owned()),
                ("DEMO_DRAIN_DELAY_MS", DRAIN_DELAY.as_millis().to_string()),
                (
                    "DEMO_SHUTDOWN_GRACE_MS",
                    SHUTDOWN_GRACE.as_millis().to_string(),
                ),
                ("RUST_LOG", "info".to_owned()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // Its own process group, so a Ctrl-C of the local run reaches the run, not the task:
            // the task stops when the run does (kill_on_drop) or by the SIGTERM ECS would send.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DemoError::Process {
                what: format!("starting {}", binary.display()),
                detail: e.to_string(),
            })?;

        let stdout = child.stdout.take().ok_or_else(|| DemoError::Process {
            what: "demo-server".into(),
            detail: "no stdout".into(),
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| DemoError::Timeout {
                what: "demo-server listening".into(),
                waited: START_TIMEOUT,
            })?
            .map_err(DemoError::io("reading demo-server's stdout"))?
            .unwrap_or_default();
        let addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| DemoError::Process {
                what: "demo-server".into(),
                detail: format!(
                    "printed {line:?} instead of its address (log: {})",
                    log.display()
                ),
            })?;
        Ok(Self {
            spec,
            addr,
            log,
            child,
        })
    }

    /// Sends SIGTERM, as ECS does to stop a task's container.
    pub(crate) fn sigterm(&self) -> Result<(), DemoError> {
        let pid = self.child.id().ok_or_else(|| DemoError::Process {
            what: "SIGTERM".into(),
            detail: "the process already ended".into(),
        })?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(DemoError::io("running kill"))?;
        if status.success() {
            Ok(())
        } else {
            Err(DemoError::Process {
                what: "kill -TERM".into(),
                detail: status.to_string(),
            })
        }
    }

    /// Waits for the process to exit and returns its exit code (`None`: ended by a signal).
    pub(crate) async fn wait(&mut self, timeout: Duration) -> Result<Option<i32>, DemoError> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| DemoError::Timeout {
                what: "demo-server exit".into(),
                waited: timeout,
            })?
            .map_err(DemoError::io("waiting for demo-server"))?;
        Ok(status.code())
    }
}

/// The attributes ECS writes when it registers a service's task in Cloud Map (the address is
/// where the local process listens).
pub(crate) fn ecs_attributes(task: &DemoTask) -> HashMap<String, String> {
    [
        (keys::AWS_INSTANCE_IPV4, task.addr.ip().to_string()),
        (keys::AWS_INSTANCE_PORT, task.addr.port().to_string()),
        (keys::AVAILABILITY_ZONE, task.spec.zone.clone()),
        (keys::REGION, REGION.to_owned()),
        (keys::ECS_CLUSTER_NAME, CLUSTER.to_owned()),
        (keys::ECS_SERVICE_NAME, SERVICE.to_owned()),
        (keys::ECS_TASK_DEFINITION_FAMILY, FAMILY.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Registers the task in Cloud Map as ECS does: the task ID is the instance ID.
pub(crate) async fn register_as_ecs(stack: &Stack, task: &DemoTask) -> Result<(), DemoError> {
    stack
        .moto
        .servicediscovery()
        .register_instance()
        .service_id(&stack.cloud_map.id)
        .instance_id(&task.spec.task_id)
        .set_attributes(Some(ecs_attributes(task)))
        .send()
        .await
        .map_err(DemoError::aws("servicediscovery:RegisterInstance"))?;
    Ok(())
}

/// Deregisters the task, as ECS does once the task stopped.
pub(crate) async fn deregister_as_ecs(stack: &Stack, task_id: &str) -> Result<(), DemoError> {
    stack
        .moto
        .servicediscovery()
        .deregister_instance()
        .service_id(&stack.cloud_map.id)
        .instance_id(task_id)
        .send()
        .await
        .map_err(DemoError::aws("servicediscovery:DeregisterInstance"))?;
    Ok(())
}

/// Stops the task in ECS (moto), so DescribeTasks says STOPPED.
pub(crate) async fn stop_in_ecs(stack: &Stack, task: &TaskSpec) -> Result<(), DemoError> {
    stack
        .moto
        .ecs()
        .stop_task()
        .cluster(CLUSTER)
        .task(&task.task_arn)
        .reason("Scaling activity initiated by the local demo")
        .send()
        .await
        .map_err(DemoError::aws("ecs:StopTask"))?;
    Ok(())
}
