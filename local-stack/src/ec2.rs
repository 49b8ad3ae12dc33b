//! The two EC2 facts ECS tasks need in moto (a subnet per zone and a security group), read through
//! EC2's query API so the local stack does not compile the very large EC2 SDK crate.

use crate::{Error, REGION, http};

/// A default subnet of the local stack's VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// The subnet ID (random per moto start).
    pub id: String,
    /// Its availability zone, e.g. `eu-central-1a`.
    pub zone: String,
    /// The zone's ID, e.g. `euc1-az2`, as `DescribeSubnets` gives it (what the sync Lambda
    /// writes as `AVAILABILITY_ZONE_ID`).
    pub zone_id: String,
}

fn query(port: u16, action_and_params: &str) -> Result<String, Error> {
    // moto takes the region from the credential scope; the signature is not checked.
    let body = format!("Action={action_and_params}&Version=2016-11-15");
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=local/20260101/{REGION}/ec2/aws4_request, \
         SignedHeaders=host, Signature=0"
    );
    let headers = [
        (
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
        ("Authorization", authorization.as_str()),
    ];
    let what = action_and_params
        .split('&')
        .next()
        .unwrap_or_default()
        .to_owned();
    match http::exchange(port, "POST", "/", &headers, &body)? {
        (200, xml) => Ok(xml),
        (status, xml) => Err(Error::Unexpected {
            what,
            detail: format!("status {status}: {xml}"),
        }),
    }
}

/// Texts of every `<tag>...</tag>` in document order.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.match_indices(&open)
        .filter_map(|(at, _)| {
            let start = at + open.len();
            xml[start..]
                .find(&close)
                .map(|len| &xml[start..start + len])
        })
        .collect()
}

pub(crate) fn default_subnets(port: u16) -> Result<Vec<Subnet>, Error> {
    let xml = query(
        port,
        "DescribeSubnets&Filter.1.Name=default-for-az&Filter.1.Value.1=true",
    )?;
    // In each subnet item `subnetId` precedes `availabilityZone` and `availabilityZoneId`;
    // default subnets have no nested items, so the lists pair up in order.
    let ids = elements(&xml, "subnetId");
    let zones = elements(&xml, "availabilityZone");
    let zone_ids = elements(&xml, "availabilityZoneId");
    if ids.is_empty() || ids.len() != zones.len() || ids.len() != zone_ids.len() {
        let detail = format!(
            "{} subnet IDs, {} zones and {} zone IDs",
            ids.len(),
            zones.len(),
            zone_ids.len()
        );
        return Err(Error::Unexpected {
            what: "DescribeSubnets".into(),
            detail,
        });
    }
    let mut subnets: Vec<Subnet> = ids
        .into_iter()
        .zip(zones)
        .zip(zone_ids)
        .map(|((id, zone), zone_id)| Subnet {
            id: id.to_owned(),
            zone: zone.to_owned(),
            zone_id: zone_id.to_owned(),
        })
        .collect();
    subnets.sort_by(|a, b| a.zone.cmp(&b.zone));
    Ok(subnets)
}

pub(crate) fn default_security_group(port: u16) -> Result<String, Error> {
    let xml = query(
        port,
        "DescribeSecurityGroups&Filter.1.Name=group-name&Filter.1.Value.1=default",
    )?;
    elements(&xml, "groupId")
        .first()
        .map(|id| (*id).to_owned())
        .ok_or_else(|| Error::Unexpected {
            what: "DescribeSecurityGroups".into(),
            detail: "no default group".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::elements;

    #[test]
    fn elements_are_found_in_order() {
        let xml = "<a><id>1</id><z>x</z></a><a><id>2</id><z>y</z></a><id>unterminated";
        assert_eq!(elements(xml, "id"), ["1", "2"]);
        assert_eq!(elements(xml, "z"), ["x", "y"]);
        assert!(elements(xml, "missing").is_empty());
    }
}
