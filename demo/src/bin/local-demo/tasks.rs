//! demo-server tasks: started in ECS (moto), run as real processes ([`demo::fleet::DemoTask`]),
//! registered in Cloud Map the way ECS registers a service's tasks, and stopped the way ECS stops
//! them.

use std::path::Path;
use std::time::Duration;

pub(crate) use demo::fleet::DemoTask;
/// A task as ECS knows it: what the events and the registration say about it.
pub(crate) use local_stack::ecs_service::Task as TaskSpec;

use crate::error::DemoError;
use crate::stack::Stack;

/// After SIGTERM a task keeps serving this long with health NOT_SERVING: long enough for the
/// Lambda's DRAINING to reach clients that poll every second, with room for a loaded machine
/// (phase 3 checks that the client moved away before this ran out).
pub(crate) const DRAIN_DELAY: Duration = Duration::from_secs(5);
/// Then, after GOAWAY, calls in flight get this long.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Starts a task of `cpu` units in `zone` with ECS's RunTask, as the service scheduler would.
pub(crate) async fn run_task(stack: &Stack, zone: &str, cpu: u32) -> Result<TaskSpec, DemoError> {
    Ok(stack.run_task(zone, cpu).await?)
}

/// Starts `binary` as the task's container, draining as [`DRAIN_DELAY`] and [`SHUTDOWN_GRACE`]
/// say; its log goes to `log_dir`.
pub(crate) async fn start(
    binary: &Path,
    spec: TaskSpec,
    log_dir: &Path,
) -> Result<DemoTask, DemoError> {
    let env = [
        ("DEMO_DRAIN_DELAY_MS", DRAIN_DELAY.as_millis().to_string()),
        (
            "DEMO_SHUTDOWN_GRACE_MS",
            SHUTDOWN_GRACE.as_millis().to_string(),
        ),
    ];
    Ok(DemoTask::start(binary, spec, log_dir, &env).await?)
}

/// Registers the task in Cloud Map as ECS does: the task ID is the instance ID.
pub(crate) async fn register_as_ecs(stack: &Stack, task: &DemoTask) -> Result<(), DemoError> {
    Ok(stack.register_as_ecs(task).await?)
}

/// Deregisters the task, as ECS does once the task stopped.
pub(crate) async fn deregister_as_ecs(stack: &Stack, task_id: &str) -> Result<(), DemoError> {
    Ok(stack.service.deregister(&stack.moto, task_id).await?)
}

/// Stops the task in ECS (moto), so DescribeTasks says STOPPED.
pub(crate) async fn stop_in_ecs(stack: &Stack, task: &TaskSpec) -> Result<(), DemoError> {
    Ok(stack
        .service
        .stop_task(
            &stack.moto,
            &task.task_arn,
            "Scaling activity initiated by the local demo",
        )
        .await?)
}
