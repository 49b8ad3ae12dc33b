//! [`Metrics`] on CloudWatch `GetMetricData`.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};

use super::errors::aws_error;
use crate::config::{self, LoadConfig};
use crate::error::SyncError;
use crate::ports::{CpuSample, LoadQuery, Metrics};

const SERVICE: &str = "cloudwatch";
/// `GetMetricData` takes at most 500 queries per call.
const MAX_QUERIES: usize = 500;

/// CloudWatch through the AWS SDK.
#[derive(Debug, Clone)]
pub struct CloudWatch {
    client: Client,
    load: Option<LoadConfig>,
}

impl CloudWatch {
    /// Wraps a client. With `load` `None` (load disabled) every answer is empty and nothing is
    /// called.
    pub fn new(client: Client, load: Option<LoadConfig>) -> Self {
        Self { client, load }
    }
}

/// Which query ID belongs to which task and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Used,
    Reserved,
}

impl Metrics for CloudWatch {
    async fn cpu_samples(
        &self,
        queries: &[LoadQuery],
        now: SystemTime,
    ) -> Result<HashMap<String, CpuSample>, SyncError> {
        let Some(load) = &self.load else {
            return Ok(HashMap::new());
        };
        let mut samples: HashMap<String, CpuSample> = HashMap::new();
        let per_task = if load.reserved_metric.is_some() { 2 } else { 1 };
        let start = now
            .checked_sub(load.window)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for batch in queries.chunks(MAX_QUERIES / per_task) {
            let mut roles: HashMap<String, (usize, Role)> = HashMap::new();
            let mut metric_queries = Vec::with_capacity(batch.len() * per_task);
            for (i, query) in batch.iter().enumerate() {
                let mut add = |id: String, name: &str, role| {
                    metric_queries.push(metric_query(load, query, &id, name));
                    roles.insert(id, (i, role));
                };
                add(format!("u{i}"), &load.used_metric, Role::Used);
                if let Some(reserved) = &load.reserved_metric {
                    add(format!("r{i}"), reserved, Role::Reserved);
                }
            }
            let mut next_token = None;
            loop {
                let page = self
                    .client
                    .get_metric_data()
                    .start_time(DateTime::from(start))
                    .end_time(DateTime::from(now))
                    .scan_by(ScanBy::TimestampDescending)
                    .set_metric_data_queries(Some(metric_queries.clone()))
                    .set_next_token(next_token)
                    .send()
                    .await
                    .map_err(aws_error(SERVICE, "GetMetricData"))?;
                for result in page.metric_data_results() {
                    let Some(&(i, role)) = result.id().and_then(|id| roles.get(id)) else {
                        continue;
                    };
                    // Newest first: the first value is the latest data point. A later page only
                    // adds older points of the same query, which do not replace a newer one.
                    let Some(&value) = result.values().first() else {
                        continue;
                    };
                    let sample = samples.entry(batch[i].task_id.clone()).or_default();
                    let slot = match role {
                        Role::Used => &mut sample.used,
                        Role::Reserved => &mut sample.reserved,
                    };
                    slot.get_or_insert(value);
                }
                next_token = page.next_token.filter(|t| !t.is_empty());
                if next_token.is_none() {
                    break;
                }
            }
        }
        Ok(samples)
    }
}

fn metric_query(load: &LoadConfig, task: &LoadQuery, id: &str, metric: &str) -> MetricDataQuery {
    let dimensions = load
        .dimensions
        .iter()
        .filter_map(|d| {
            let value = match d {
                config::Dimension::ClusterName => Some(task.cluster.as_str()),
                config::Dimension::ServiceName => Some(task.service.as_str()),
                config::Dimension::TaskId => Some(task.task_id.as_str()),
                config::Dimension::TaskDefinitionFamily => task.family.as_deref(),
            }?;
            Some(Dimension::builder().name(d.name()).value(value).build())
        })
        .collect();
    let period = i32::try_from(load.period.as_secs()).unwrap_or(60);
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(&load.namespace)
                        .metric_name(metric)
                        .set_dimensions(Some(dimensions))
                        .build(),
                )
                .period(period)
                .stat(&load.statistic)
                .build(),
        )
        .return_data(true)
        .build()
}
