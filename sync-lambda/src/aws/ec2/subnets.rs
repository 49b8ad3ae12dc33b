//! `DescribeSubnets` of one subnet: its `AvailabilityZoneId`.

use aws_smithy_xml::decode::Document;

use super::{Ec2, read_answer, text};
use crate::error::BoxError;
use crate::ports::{ZoneIdGap, ZoneIdLookupError};

const SERVICE: &str = "ec2";
const OPERATION: &str = "DescribeSubnets";

impl Ec2 {
    /// The zone ID of `subnet_id`.
    pub(super) async fn subnet_zone_id(
        &self,
        subnet_id: &str,
    ) -> Result<String, ZoneIdLookupError> {
        if !valid_subnet_id(subnet_id) {
            // What EC2 would answer (`InvalidSubnetID.Malformed`), without the call.
            return Err(ZoneIdLookupError {
                what: subnet_id.to_owned(),
                gap: ZoneIdGap::SubnetNotFound,
                source: None,
            });
        }
        // `subnet_id` passed `valid_subnet_id`: nothing in it needs form encoding.
        let outcome = self
            .call(OPERATION, &format!("SubnetId.1={subnet_id}"))
            .await;
        read_answer(
            (SERVICE, OPERATION),
            subnet_id,
            outcome,
            |xml| zone_id_in(xml, subnet_id),
            ZoneIdGap::SubnetNotFound,
        )
    }
}

/// `subnet-` and letters or digits: the only shape EC2 knows, and one that needs no encoding in
/// the form body. Anything else comes from a malformed event.
fn valid_subnet_id(id: &str) -> bool {
    id.strip_prefix("subnet-").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// The `availabilityZoneId` of the subnet `subnet_id` in a `DescribeSubnetsResponse`, if the
/// answer lists it with one. Subnet items nest other `item`s (tags, IPv6 blocks): only the
/// direct children of `subnetSet/item` are read.
fn zone_id_in(xml: &str, subnet_id: &str) -> Result<Option<String>, BoxError> {
    let mut doc = Document::new(xml);
    let mut root = doc.root_element()?;
    if !root.start_el().matches("DescribeSubnetsResponse") {
        return Err(format!("the root element is {}", root.start_el().local()).into());
    }
    while let Some(mut set) = root.next_tag() {
        if !set.start_el().matches("subnetSet") {
            continue;
        }
        while let Some(mut item) = set.next_tag() {
            if !item.start_el().matches("item") {
                continue;
            }
            let (mut id, mut zone_id) = (None, None);
            while let Some(mut field) = item.next_tag() {
                if field.start_el().matches("subnetId") {
                    id = Some(text(&mut field)?);
                } else if field.start_el().matches("availabilityZoneId") {
                    zone_id = Some(text(&mut field)?);
                }
            }
            if id.as_deref().map(str::trim) == Some(subnet_id) {
                return Ok(zone_id
                    .map(|z| z.trim().to_owned())
                    .filter(|z| !z.is_empty()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_subnet_ids_of_ec2s_shape_are_sent() {
        assert!(valid_subnet_id("subnet-0123456789abcdef0"));
        assert!(valid_subnet_id("subnet-0000deadbeef"));
        for bad in [
            "",
            "subnet-",
            "sg-0123",
            "subnet-01&Action=RunInstances",
            "subnet-01 2",
            "subnet-ü",
        ] {
            assert!(!valid_subnet_id(bad), "{bad}");
        }
        assert!(!valid_subnet_id(&format!("subnet-{}", "a".repeat(65))));
    }

    /// EC2's answer shape (abridged from the API reference), with a nested `item` in each subnet
    /// that must not be mistaken for a subnet.
    const ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSubnetsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</requestId>
  <subnetSet>
    <item>
      <subnetId>subnet-0aaa</subnetId>
      <tagSet><item><key>subnetId</key><value>subnet-0bbb</value></item></tagSet>
      <availabilityZone>eu-central-1a</availabilityZone>
      <availabilityZoneId>euc1-az2</availabilityZoneId>
    </item>
    <item>
      <subnetId>subnet-0bbb</subnetId>
      <ipv6CidrBlockAssociationSet><item><associationId>a</associationId></item></ipv6CidrBlockAssociationSet>
      <availabilityZoneId> euc1-az3 </availabilityZoneId>
    </item>
    <item><subnetId>subnet-0ccc</subnetId></item>
  </subnetSet>
</DescribeSubnetsResponse>"#;

    #[test]
    fn the_zone_id_is_the_named_subnets_own() {
        assert_eq!(
            zone_id_in(ANSWER, "subnet-0aaa").unwrap().as_deref(),
            Some("euc1-az2")
        );
        assert_eq!(
            zone_id_in(ANSWER, "subnet-0bbb").unwrap().as_deref(),
            Some("euc1-az3")
        );
        assert_eq!(
            zone_id_in(ANSWER, "subnet-0ccc").unwrap(),
            None,
            "no zone ID"
        );
        assert_eq!(
            zone_id_in(ANSWER, "subnet-0ddd").unwrap(),
            None,
            "not listed"
        );
        assert!(zone_id_in("<Response/>", "subnet-0aaa").is_err());
        assert!(zone_id_in("not xml", "subnet-0aaa").is_err());
    }
}
