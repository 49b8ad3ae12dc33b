//! AWS calls: the [`ports`](crate::ports) traits on the AWS SDK. Each method is one operation
//! (paginated or batched where AWS limits the size), parses the answer into domain values at
//! once, and classifies failures (see [`ErrorKind`](crate::error::ErrorKind)).
//!
//! The endpoint, region and credentials come from the SDK's standard configuration, so
//! `AWS_ENDPOINT_URL` points the same binary at the local stack. EC2's two reads are signed by hand
//! with the SDK's parts rather than through `aws-sdk-ec2` (see [`Ec2`]).

mod cloudmap;
mod cloudwatch;
mod ec2;
mod ecs;
mod errors;

pub use cloudmap::CloudMap;
pub use cloudwatch::CloudWatch;
pub use ec2::Ec2;
pub use ecs::Ecs;

use aws_config::SdkConfig;

use crate::config::Config;

/// The four AWS clients, built once from one SDK configuration.
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// Cloud Map.
    pub cloudmap: CloudMap,
    /// ECS.
    pub ecs: Ecs,
    /// CloudWatch.
    pub cloudwatch: CloudWatch,
    /// EC2 (zone IDs: subnets', and the account's zone names').
    pub ec2: Ec2,
}

impl AwsClients {
    /// Builds the clients.
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        Self {
            cloudmap: CloudMap::new(aws_sdk_servicediscovery::Client::new(sdk)),
            ecs: Ecs::new(aws_sdk_ecs::Client::new(sdk), config.weight_tag.clone()),
            cloudwatch: CloudWatch::new(aws_sdk_cloudwatch::Client::new(sdk), config.load.clone()),
            ec2: Ec2::new(sdk),
        }
    }
}
