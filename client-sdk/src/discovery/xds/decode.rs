//! A ClusterLoadAssignment back into a [`Listing`]: the instances the server wrote into each
//! endpoint's metadata (see [`contract::xds`](crate::contract::xds)), decoded by the same code
//! as Cloud Map's attributes, so both sources give the same instances.
//!
//! An endpoint without our metadata (another xDS server) is still used: its address, its
//! locality's zone, its weight, and its health status (`DRAINING` as `LB_STATE DRAINING`,
//! `UNHEALTHY` as `LB_HEALTH UNHEALTHY`).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::google::protobuf::value;

use crate::contract::{keys, xds};
use crate::discovery::Listing;
use crate::instance::CloudMapHealth;

/// The listing a ClusterLoadAssignment carries, at `revision`. An endpoint that is not a socket
/// address is an error (the response is NACKed); one with an unusable address or port is
/// listed as unroutable, as from Cloud Map.
pub(crate) fn listing(cla: &ClusterLoadAssignment, revision: i64) -> Result<Listing, String> {
    let mut entries: Vec<(String, HashMap<String, String>, CloudMapHealth)> = Vec::new();
    for locality in &cla.endpoints {
        for endpoint in &locality.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(host)) = &endpoint.host_identifier
            else {
                return Err(
                    "an endpoint without an address (named endpoints are not supported)".to_owned(),
                );
            };
            let Some(address::Address::SocketAddress(socket)) =
                host.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                return Err("an endpoint whose address is not a socket address".to_owned());
            };
            let Some(socket_address::PortSpecifier::PortValue(port)) = socket.port_specifier else {
                return Err(format!("endpoint {}: no port value", socket.address));
            };
            let ours = endpoint
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get(xds::METADATA_NAMESPACE));
            let mut attributes: HashMap<String, String> = ours
                .map(|fields| {
                    fields
                        .fields
                        .iter()
                        .filter_map(|(key, v)| match &v.kind {
                            Some(value::Kind::StringValue(text)) => {
                                Some((key.clone(), text.clone()))
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            if ours.is_none() {
                // Not our server's endpoint: what Envoy's fields say.
                let zone = locality.locality.as_ref().map(|l| l.zone.clone());
                if let Some(zone) = zone.filter(|z| !z.is_empty()) {
                    attributes.insert(keys::AVAILABILITY_ZONE.to_owned(), zone);
                }
                let weight = endpoint
                    .load_balancing_weight
                    .or(locality.load_balancing_weight)
                    .map(|w| w.value);
                if let Some(weight) = weight {
                    attributes.insert(keys::LB_WEIGHT.to_owned(), weight.to_string());
                }
                match HealthStatus::try_from(endpoint.health_status) {
                    Ok(HealthStatus::Draining) => {
                        attributes.insert(keys::LB_STATE.to_owned(), "DRAINING".to_owned());
                    }
                    Ok(HealthStatus::Unhealthy | HealthStatus::Timeout) => {
                        attributes.insert(keys::LB_HEALTH.to_owned(), "UNHEALTHY".to_owned());
                    }
                    _ => {}
                }
            }
            // The endpoint's address is where to call, whatever the metadata says: an IPv4 one
            // first (a dual-stack instance's IPv6 address, from the metadata, stays its
            // fallback), an IPv6 one alone.
            if socket.address.parse::<std::net::Ipv6Addr>().is_ok() {
                attributes.remove(keys::AWS_INSTANCE_IPV4);
                attributes.insert(keys::AWS_INSTANCE_IPV6.to_owned(), socket.address.clone());
            } else {
                attributes.insert(keys::AWS_INSTANCE_IPV4.to_owned(), socket.address.clone());
            }
            attributes.insert(keys::AWS_INSTANCE_PORT.to_owned(), port.to_string());
            let id = attributes
                .remove(xds::INSTANCE_ID)
                .or_else(|| {
                    locality
                        .locality
                        .as_ref()
                        .map(|l| l.sub_zone.clone())
                        .filter(|s| !s.is_empty())
                })
                .unwrap_or_else(|| format!("{}:{port}", socket.address));
            let health = attributes
                .remove(xds::CLOUD_MAP_HEALTH)
                .map_or(CloudMapHealth::Unknown, |h| CloudMapHealth::parse(&h));
            entries.push((id, attributes, health));
        }
    }
    Ok(Listing::decode(
        Some(revision),
        entries
            .iter()
            .map(|(id, attributes, health)| (id.as_str(), attributes, *health)),
    ))
}

/// A version string as a revision: FNV-1a, 64 bits. Replicas give the same version for the
/// same content, so a switch between them moves no revision.
pub(crate) fn revision(version: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in version.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{Address, Locality, Metadata, SocketAddress};
    use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};
    use envoy_types::pb::google::protobuf::{Struct, UInt32Value, Value};

    use super::*;
    use crate::contract::{LbHealth, LbState, Weight};

    fn endpoint(ip: &str, port: u32, metadata: Option<&[(&str, &str)]>) -> LbEndpoint {
        LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: ip.to_owned(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                        ..SocketAddress::default()
                    })),
                }),
                ..Endpoint::default()
            })),
            metadata: metadata.map(|pairs| Metadata {
                filter_metadata: HashMap::from([(
                    xds::METADATA_NAMESPACE.to_owned(),
                    Struct {
                        fields: pairs
                            .iter()
                            .map(|(k, v)| {
                                (
                                    (*k).to_owned(),
                                    Value {
                                        kind: Some(value::Kind::StringValue((*v).to_owned())),
                                    },
                                )
                            })
                            .collect(),
                    },
                )]),
                ..Metadata::default()
            }),
            load_balancing_weight: Some(UInt32Value { value: 7 }),
            ..LbEndpoint::default()
        }
    }

    fn cla(endpoints: Vec<(&str, LbEndpoint)>) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: "instances/echo.ns".to_owned(),
            endpoints: endpoints
                .into_iter()
                .map(|(zone, e)| LocalityLbEndpoints {
                    locality: Some(Locality {
                        zone: zone.to_owned(),
                        sub_zone: "from-locality".to_owned(),
                        ..Locality::default()
                    }),
                    lb_endpoints: vec![e],
                    ..LocalityLbEndpoints::default()
                })
                .collect(),
            ..ClusterLoadAssignment::default()
        }
    }

    #[test]
    fn ipv6_endpoints_are_called_at_their_ipv6_address() {
        let listing = listing(
            &cla(vec![
                // IPv6-only, from our server (its metadata has no IPv4 address).
                (
                    "a",
                    endpoint(
                        "2001:db8::1",
                        50051,
                        Some(&[
                            (xds::INSTANCE_ID, "v6-only"),
                            (keys::AWS_INSTANCE_IPV6, "2001:db8::1"),
                        ]),
                    ),
                ),
                // Dual-stack, from our server: the IPv4 endpoint, the IPv6 address in metadata.
                (
                    "a",
                    endpoint(
                        "10.0.0.6",
                        50051,
                        Some(&[
                            (xds::INSTANCE_ID, "dual"),
                            (keys::AWS_INSTANCE_IPV6, "2001:db8::2"),
                        ]),
                    ),
                ),
                // Another server's IPv6 endpoint, without our metadata.
                ("a", endpoint("2001:db8::3", 50051, None)),
            ]),
            1,
        )
        .unwrap();
        assert!(listing.unroutable().is_empty(), "{listing:?}");
        assert!(listing.attribute_problems().is_empty(), "{listing:?}");
        let addrs: HashMap<&str, (String, Option<String>)> = listing
            .instances()
            .iter()
            .map(|i| {
                let v6 = i.ipv6_addr.map(|a| a.to_string());
                (i.id.as_str(), (i.addr.to_string(), v6))
            })
            .collect();
        assert_eq!(addrs["v6-only"], ("[2001:db8::1]:50051".into(), None));
        let dual = ("10.0.0.6:50051".into(), Some("[2001:db8::2]:50051".into()));
        assert_eq!(addrs["dual"], dual);
        assert_eq!(addrs["from-locality"], ("[2001:db8::3]:50051".into(), None));
    }

    #[test]
    fn our_metadata_is_the_instance() {
        let listing = listing(
            &cla(vec![(
                "euc1-az1",
                endpoint(
                    "10.0.0.5",
                    50051,
                    Some(&[
                        (xds::INSTANCE_ID, "task-1"),
                        (xds::CLOUD_MAP_HEALTH, "UNHEALTHY"),
                        (keys::LB_STATE, "STARTING"),
                        (keys::LB_WEIGHT, "300"),
                        (keys::AVAILABILITY_ZONE, "eu-central-1a"),
                    ]),
                ),
            )]),
            42,
        )
        .unwrap();
        assert_eq!(listing.revision(), Some(42));
        let [instance] = listing.instances() else {
            panic!("{listing:?}")
        };
        assert_eq!(instance.id, "task-1");
        assert_eq!(instance.addr, "10.0.0.5:50051".parse().unwrap());
        assert_eq!(instance.cloud_map_health, CloudMapHealth::Unhealthy);
        assert_eq!(instance.state, Some(LbState::Starting));
        assert_eq!(
            instance.weight,
            Weight::new(300),
            "the metadata's, not Envoy's 7"
        );
        assert_eq!(instance.zone.as_deref(), Some("eu-central-1a"));
        assert_eq!(instance.zone_id, None, "the locality's zone is not read");
    }

    #[test]
    fn another_servers_endpoints_are_read_from_envoys_fields() {
        let mut draining = endpoint("10.0.0.6", 80, None);
        draining.health_status = HealthStatus::Draining as i32;
        let mut sick = endpoint("10.0.0.7", 80, None);
        sick.health_status = HealthStatus::Unhealthy as i32;
        let listing = listing(&cla(vec![("eu-central-1b", draining), ("", sick)]), 1).unwrap();
        let [a, b] = listing.instances() else {
            panic!("{listing:?}")
        };
        assert_eq!(a.id, "from-locality");
        assert_eq!(a.zone.as_deref(), Some("eu-central-1b"));
        assert_eq!(a.state, Some(LbState::Draining));
        assert_eq!(a.weight, Weight::new(7));
        assert_eq!(b.health, LbHealth::Unhealthy);
        assert_eq!(b.zone, None);
    }

    #[test]
    fn odd_endpoints_are_unroutable_or_refused() {
        let listing = listing(&cla(vec![("", endpoint("not-an-ip", 80, Some(&[])))]), 1).unwrap();
        assert!(listing.instances().is_empty());
        assert_eq!(listing.unroutable().len(), 1, "listed, with the reason");
        let mut named = endpoint("10.0.0.1", 1, None);
        named.host_identifier = Some(lb_endpoint::HostIdentifier::EndpointName("x".to_owned()));
        assert!(listing_err(named).contains("without an address"));
    }

    fn listing_err(e: LbEndpoint) -> String {
        listing(&cla(vec![("", e)]), 1).unwrap_err()
    }

    #[test]
    fn versions_become_stable_revisions() {
        assert_eq!(revision("abc"), revision("abc"));
        assert_ne!(revision("abc"), revision("abd"));
    }
}
