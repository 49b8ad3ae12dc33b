//! What AWS would have before the first task starts: a Cloud Map namespace and service, an ECS
//! cluster, task definitions and a service whose ServiceRegistries point at the Cloud Map service
//! (the demo fleet's, [`demo::fleet::Stack`]).

pub(crate) use demo::fleet::{CLUSTER, NAMESPACE, REGION, SERVICE, Stack};
