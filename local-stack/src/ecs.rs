//! What a Fargate task needs to start in moto (its network configuration) and what RunTask says
//! about its ENI. The service around the tasks is [`crate::ecs_service`].

use aws_sdk_ecs::types::{AssignPublicIp, AwsVpcConfiguration, NetworkConfiguration, Task};

use crate::{Error, MotoServer};

/// An awsvpc network configuration in the default subnet of `zone` (the first zone when `None`)
/// with the default security group, as Fargate tasks need.
pub fn awsvpc(moto: &MotoServer, zone: Option<&str>) -> Result<NetworkConfiguration, Error> {
    let subnets = moto.default_subnets()?;
    let subnet = match zone {
        Some(zone) => subnets.into_iter().find(|s| s.zone == zone),
        None => subnets.into_iter().next(),
    }
    .ok_or_else(|| Error::Unexpected {
        what: "DescribeSubnets".into(),
        detail: format!("no default subnet in {}", zone.unwrap_or("any zone")),
    })?;
    let awsvpc = AwsVpcConfiguration::builder()
        .subnets(subnet.id)
        .security_groups(moto.default_security_group()?)
        .assign_public_ip(AssignPublicIp::Disabled)
        .build()
        .map_err(|e| Error::Unexpected {
            what: "AwsVpcConfiguration".into(),
            detail: e.to_string(),
        })?;
    Ok(NetworkConfiguration::builder()
        .awsvpc_configuration(awsvpc)
        .build())
}

/// The task's ENI address (`privateIPv4Address`), as RunTask and DescribeTasks report it.
pub fn private_ipv4(task: &Task) -> Option<&str> {
    task.attachments()
        .iter()
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())
}
