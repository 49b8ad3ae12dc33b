//! `DescribeAvailabilityZones` of the function's account and region: every zone's name and ID.
//!
//! Zone names are per account (`eu-central-1a` in two accounts can be different physical zones);
//! the IDs are the same everywhere. The answer is therefore the mapping of the account whose
//! credentials sign the call, in the region the call goes to: the function's own.

use std::collections::HashMap;

use aws_smithy_xml::decode::Document;

use super::{Ec2, read_answer, text};
use crate::error::BoxError;
use crate::ports::{ZoneIdGap, ZoneIdLookupError};

const SERVICE: &str = "ec2";
const OPERATION: &str = "DescribeAvailabilityZones";

impl Ec2 {
    /// Zone name → zone ID, for every zone the account sees in the region (availability zones,
    /// and the Local and Wavelength Zones it opted in to).
    pub(super) async fn zone_ids_by_name(
        &self,
    ) -> Result<HashMap<String, String>, ZoneIdLookupError> {
        let outcome = self.call(OPERATION, "").await;
        read_answer(
            (SERVICE, OPERATION),
            "the region's zones",
            outcome,
            |xml| zones_in(xml).map(Some),
            ZoneIdGap::ZoneNotFound,
        )
    }
}

/// The `zoneName` → `zoneId` pairs of a `DescribeAvailabilityZonesResponse`. Items without
/// either are skipped; nested items (`messageSet`) are not read as zones.
fn zones_in(xml: &str) -> Result<HashMap<String, String>, BoxError> {
    let mut doc = Document::new(xml);
    let mut root = doc.root_element()?;
    if !root.start_el().matches("DescribeAvailabilityZonesResponse") {
        return Err(format!("the root element is {}", root.start_el().local()).into());
    }
    let mut zones = HashMap::new();
    while let Some(mut set) = root.next_tag() {
        if !set.start_el().matches("availabilityZoneInfo") {
            continue;
        }
        while let Some(mut item) = set.next_tag() {
            if !item.start_el().matches("item") {
                continue;
            }
            let (mut name, mut id) = (None, None);
            while let Some(mut field) = item.next_tag() {
                if field.start_el().matches("zoneName") {
                    name = Some(text(&mut field)?);
                } else if field.start_el().matches("zoneId") {
                    id = Some(text(&mut field)?);
                }
            }
            let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
            let id = id.map(|i| i.trim().to_owned()).filter(|i| !i.is_empty());
            if let (Some(name), Some(id)) = (name, id) {
                zones.insert(name, id);
            }
        }
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EC2's answer shape (the API reference's example, with a Local Zone and a zone message).
    const ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeAvailabilityZonesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
  <availabilityZoneInfo>
    <item>
      <zoneName>us-east-1a</zoneName>
      <zoneState>available</zoneState>
      <regionName>us-east-1</regionName>
      <messageSet><item><message>zoneName us-east-1z</message></item></messageSet>
      <zoneId>use1-az6</zoneId>
      <zoneType>availability-zone</zoneType>
    </item>
    <item>
      <zoneName> us-east-1b </zoneName>
      <zoneId>use1-az1</zoneId>
    </item>
    <item>
      <zoneName>us-east-1-bos-1a</zoneName>
      <zoneId>use1-bos1-az1</zoneId>
      <zoneType>local-zone</zoneType>
    </item>
    <item><zoneName>us-east-1c</zoneName></item>
  </availabilityZoneInfo>
</DescribeAvailabilityZonesResponse>"#;

    #[test]
    fn every_listed_zone_maps_its_name_to_its_id() {
        let zones = zones_in(ANSWER).unwrap();
        assert_eq!(
            zones,
            HashMap::from([
                ("us-east-1a".to_owned(), "use1-az6".to_owned()),
                ("us-east-1b".to_owned(), "use1-az1".to_owned()),
                ("us-east-1-bos-1a".to_owned(), "use1-bos1-az1".to_owned()),
            ]),
            "a zone without an ID is left out; a message item is no zone"
        );
        let empty = zones_in(
            "<DescribeAvailabilityZonesResponse><availabilityZoneInfo/></DescribeAvailabilityZonesResponse>",
        )
        .unwrap();
        assert!(empty.is_empty());
        assert!(zones_in("<Response/>").is_err());
        assert!(zones_in("not xml").is_err());
    }
}
