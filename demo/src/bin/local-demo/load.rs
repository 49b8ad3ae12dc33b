//! Task CPU as Container Insights reports it: the data the sync Lambda's reconciliation turns
//! into `LB_LOAD`.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use crate::error::DemoError;
use crate::stack::{CLUSTER, SERVICE, Stack};
use crate::tasks::TaskSpec;

/// The namespace and metrics the Lambda reads by default (`SYNC_LOAD_*`).
const NAMESPACE: &str = "ECS/ContainerInsights";

/// Reports one data point of CPU units used and reserved for `task`, `percent` busy, half a
/// minute ago (Container Insights data arrives late).
pub(crate) async fn report_cpu(
    stack: &Stack,
    task: &TaskSpec,
    percent: u32,
) -> Result<(), DemoError> {
    let at = DateTime::from(SystemTime::now() - Duration::from_secs(30));
    let dimensions = [
        ("ClusterName", CLUSTER),
        ("ServiceName", SERVICE),
        ("TaskId", task.task_id.as_str()),
    ]
    .map(|(name, value)| Dimension::builder().name(name).value(value).build());
    let datum = |name: &str, value: f64| {
        MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dimensions.to_vec()))
            .timestamp(at)
            .value(value)
            .unit(StandardUnit::None)
            .build()
    };
    let cpu = f64::from(task.cpu);
    stack
        .moto
        .cloudwatch()
        .put_metric_data()
        .namespace(NAMESPACE)
        .metric_data(datum("CpuUtilized", cpu * f64::from(percent) / 100.0))
        .metric_data(datum("CpuReserved", cpu))
        .send()
        .await
        .map_err(DemoError::aws("cloudwatch:PutMetricData"))?;
    Ok(())
}
