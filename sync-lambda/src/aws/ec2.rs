//! [`Subnets`] on EC2 `DescribeSubnets`.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::ProvideErrorMetadata;

use super::errors::{THROTTLING_CODES, aws_error};
use crate::ports::{Subnets, ZoneIdGap, ZoneIdLookupError};

const SERVICE: &str = "ec2";

/// Error codes of a subnet EC2 does not know.
const NOT_FOUND_CODES: &[&str] = &["InvalidSubnetID.NotFound", "InvalidSubnetID.Malformed"];
/// Error codes of a missing permission.
const DENIED_CODES: &[&str] = &[
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
];

/// EC2 through the AWS SDK.
#[derive(Debug, Clone)]
pub struct Ec2 {
    client: Client,
}

impl Ec2 {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Subnets for Ec2 {
    async fn zone_id(&self, subnet_id: &str) -> Result<String, ZoneIdLookupError> {
        let failed = |gap, source| ZoneIdLookupError {
            subnet: subnet_id.to_owned(),
            gap,
            source,
        };
        match self
            .client
            .describe_subnets()
            .subnet_ids(subnet_id)
            .send()
            .await
        {
            Ok(output) => output
                .subnets()
                .iter()
                .find(|s| s.subnet_id() == Some(subnet_id))
                .and_then(|s| s.availability_zone_id())
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| failed(ZoneIdGap::SubnetNotFound, None)),
            Err(error) => {
                let code = error.code().map(str::to_owned);
                let status = error.raw_response().map(|r| r.status().as_u16());
                let gap = gap(code.as_deref(), status);
                Err(failed(
                    gap,
                    Some(aws_error(SERVICE, "DescribeSubnets")(error)),
                ))
            }
        }
    }
}

/// Why a failed call leaves the zone ID unknown: by the error code when the answer had a readable
/// one, else by the HTTP status (403: access; 429: throttling), else unavailable.
fn gap(code: Option<&str>, status: Option<u16>) -> ZoneIdGap {
    match (code, status) {
        (Some(code), _) if NOT_FOUND_CODES.contains(&code) => ZoneIdGap::SubnetNotFound,
        (Some(code), _) if DENIED_CODES.contains(&code) => ZoneIdGap::AccessDenied,
        (Some(code), _) if THROTTLING_CODES.contains(&code) => ZoneIdGap::Throttled,
        (None, Some(403)) => ZoneIdGap::AccessDenied,
        (None, Some(429)) => ZoneIdGap::Throttled,
        _ => ZoneIdGap::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_by_code_then_status() {
        use ZoneIdGap::*;
        assert_eq!(
            gap(Some("InvalidSubnetID.NotFound"), Some(400)),
            SubnetNotFound
        );
        assert_eq!(gap(Some("UnauthorizedOperation"), Some(403)), AccessDenied);
        assert_eq!(gap(Some("RequestLimitExceeded"), Some(503)), Throttled);
        assert_eq!(gap(Some("InternalError"), Some(500)), Unavailable);
        assert_eq!(gap(None, Some(403)), AccessDenied);
        assert_eq!(gap(None, Some(429)), Throttled);
        assert_eq!(gap(None, Some(500)), Unavailable);
        assert_eq!(gap(None, None), Unavailable, "timeouts, connection errors");
    }
}
