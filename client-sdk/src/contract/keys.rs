//! Attribute keys of the contract, one constant per key.
//!
//! Keys written by ECS are listed so that both sides name them the same way; the sync Lambda never
//! overwrites them (except the address and zone, and only where they are missing).

/// IPv4 address the instance serves on. Written by ECS; by the Lambda only in owner mode.
pub const AWS_INSTANCE_IPV4: &str = "AWS_INSTANCE_IPV4";
/// IPv6 address the instance serves on (awsvpc tasks in IPv6-only or dual-stack subnets).
/// Written by ECS; a client calls `[addr]:port` when the instance has no IPv4 address, and
/// chooses by its IP family option when it has both.
pub const AWS_INSTANCE_IPV6: &str = "AWS_INSTANCE_IPV6";
/// TCP port the instance serves on. Written by ECS; by the Lambda only in owner mode.
pub const AWS_INSTANCE_PORT: &str = "AWS_INSTANCE_PORT";
/// Availability zone name, e.g. `eu-central-1a`. Written by ECS; by the Lambda when missing.
pub const AVAILABILITY_ZONE: &str = "AVAILABILITY_ZONE";
/// Availability zone ID, e.g. `euc1-az2`: the same physical zone in every account, where zone
/// names are per account. Written by the Lambda when missing (from the task's subnet).
pub const AVAILABILITY_ZONE_ID: &str = "AVAILABILITY_ZONE_ID";
/// AWS region of the task. Read-only context written by ECS.
pub const REGION: &str = "REGION";
/// ECS cluster name. Read-only context written by ECS.
pub const ECS_CLUSTER_NAME: &str = "ECS_CLUSTER_NAME";
/// ECS service name. Read-only context written by ECS.
pub const ECS_SERVICE_NAME: &str = "ECS_SERVICE_NAME";
/// Task definition family. Read-only context written by ECS.
pub const ECS_TASK_DEFINITION_FAMILY: &str = "ECS_TASK_DEFINITION_FAMILY";

/// Lifecycle: `STARTING`, `RUNNING`, `DRAINING` or `STOPPED`. Written by the Lambda.
pub const LB_STATE: &str = "LB_STATE";
/// Task health: `HEALTHY`, `UNHEALTHY` or `UNKNOWN`. Written by the Lambda.
pub const LB_HEALTH: &str = "LB_HEALTH";
/// Relative capacity, an integer 0–10000; 0 means never pick. Written by the Lambda.
pub const LB_WEIGHT: &str = "LB_WEIGHT";
/// Task CPU units (1024 = one vCPU). Written by the Lambda.
pub const LB_CPU_UNITS: &str = "LB_CPU_UNITS";
/// Task memory in MiB. Written by the Lambda.
pub const LB_MEMORY_MIB: &str = "LB_MEMORY_MIB";
/// Capacity provider (`FARGATE`, `FARGATE_SPOT`, ...) or launch type. Written by the Lambda.
pub const LB_CAPACITY: &str = "LB_CAPACITY";
/// Recent CPU utilisation, an integer 0–100; absent when unknown. Written by the Lambda.
pub const LB_LOAD: &str = "LB_LOAD";
/// The task's ARN. Written by the Lambda.
pub const LB_TASK_ARN: &str = "LB_TASK_ARN";
/// The ECS task `version` at which the task was first seen in the written `LB_STATE` (later
/// versions of the same state do not change it); absent when unknown. Written by the Lambda.
pub const LB_TASK_VERSION: &str = "LB_TASK_VERSION";
/// RFC 3339 UTC time of the state written. Written by the Lambda.
pub const LB_UPDATED_AT: &str = "LB_UPDATED_AT";
/// RFC 3339 UTC time the task turned RUNNING (ECS `startedAt`): every client ramps a new task up
/// from the same moment (slow start). Written by the Lambda.
pub const LB_RUNNING_SINCE: &str = "LB_RUNNING_SINCE";
/// Contract version; this crate writes [`SCHEMA_VERSION`](super::SCHEMA_VERSION). Written by the Lambda.
pub const LB_SCHEMA: &str = "LB_SCHEMA";

/// Every key the sync Lambda owns. [`merge`](super::merge) replaces exactly these and keeps every
/// other key as it is.
pub const LAMBDA_OWNED: [&str; 13] = [
    LB_STATE,
    LB_HEALTH,
    LB_WEIGHT,
    LB_CPU_UNITS,
    LB_MEMORY_MIB,
    LB_CAPACITY,
    LB_LOAD,
    LB_TASK_ARN,
    LB_TASK_VERSION,
    LB_UPDATED_AT,
    LB_RUNNING_SINCE,
    LB_SCHEMA,
    LB_OWNER,
];

/// The keys the Lambda may leave out of a write when it cannot write them within Cloud Map's
/// limits (see [`merge`](super::merge)), in the order it drops them when a set is too large:
/// first what only informs (the ARN echoes the instance ID; size and capacity are already in the
/// weight), then what clients read (load, slow start, zone ID, zone), then the owner-mode labels
/// reconciliation pairs by. Every other key the Lambda writes is required.
pub const OMITTABLE: [&str; 10] = [
    LB_TASK_ARN,
    LB_CAPACITY,
    LB_MEMORY_MIB,
    LB_CPU_UNITS,
    LB_LOAD,
    LB_RUNNING_SINCE,
    AVAILABILITY_ZONE_ID,
    AVAILABILITY_ZONE,
    ECS_CLUSTER_NAME,
    ECS_SERVICE_NAME,
];

/// `LAMBDA` when the sync Lambda registered the instance itself (owner mode) and may deregister
/// it; absent on instances ECS registered. Written by the Lambda.
pub const LB_OWNER: &str = "LB_OWNER";

/// Keys Cloud Map reserves. They do not count towards the limit of 30 custom attributes.
pub const RESERVED: [&str; 7] = [
    AWS_INSTANCE_IPV4,
    AWS_INSTANCE_IPV6,
    AWS_INSTANCE_PORT,
    "AWS_INSTANCE_CNAME",
    "AWS_ALIAS_DNS_NAME",
    "AWS_EC2_INSTANCE_ID",
    "AWS_INIT_HEALTH_STATUS",
];
