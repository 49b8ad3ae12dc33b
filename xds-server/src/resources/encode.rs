//! Envoy's protos from names and an [`Assignment`]: Listener, Cluster, ClusterLoadAssignment.
//!
//! What gRPC needs of each (gRFC A27, A28, A50) and what it rejects (FACTS.md, "gRPC xDS
//! clients"): an API listener whose HttpConnectionManager ends its `http_filters` with the router
//! (an empty list is NACKed); a Cluster of type EDS whose `eds_config` is ADS; locality weights
//! on every locality (a locality without one is dropped silently); no endpoint weight 0, no
//! address twice, no priority gap. grpc-js 1.14 crashes on an `outlier_detection` without
//! explicit success-rate settings, so they are always sent.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, OutlierDetection, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus, Locality, Metadata,
    SocketAddress, address, config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, cluster_load_assignment,
    lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{self as pb, Struct, UInt32Value, Value, value};
use envoy_types::util::pack_any;

use super::assignment::{Assignment, EndpointHealth, METADATA_NAMESPACE};

/// The load-balancing policy a Cluster names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LbPolicy {
    /// `ROUND_ROBIN` over each locality's endpoints, localities by weight (gRPC's
    /// `xds_wrr_locality`). Our localities hold one task each, so calls follow the weights.
    #[default]
    RoundRobin,
}

/// The Cluster's outlier detection (gRFC A50), failure-percentage based.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutlierPolicy {
    /// How often clients sweep. Default 2 s (A50's 10 s lets a failing task fail 10 s of calls).
    pub interval: Duration,
    /// The n-th ejection lasts n × this. Default 30 s.
    pub base_ejection_time: Duration,
    /// The longest ejection. Default 300 s.
    pub max_ejection_time: Duration,
    /// At most this share of the endpoints ejected (one always may be). Default 50 %.
    pub max_ejection_percent: u32,
    /// A task failing more than this percentage of its calls in an interval is ejected.
    /// Default 85 (A50's).
    pub failure_percentage_threshold: u32,
    /// Calls a task needs in an interval to be judged. Default 20 (A50's 50 at 10 s).
    pub failure_percentage_request_volume: u32,
    /// Tasks with that many calls needed for any verdict. Default 2 (A50's 5 would never eject
    /// in a service of 3 or 4 tasks).
    pub failure_percentage_minimum_hosts: u32,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
            failure_percentage_threshold: 85,
            failure_percentage_request_volume: 20,
            failure_percentage_minimum_hosts: 2,
        }
    }
}

/// What every Cluster carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ClusterPolicy {
    /// The load-balancing policy.
    pub lb_policy: LbPolicy,
    /// Outlier detection; `None` sends none.
    pub outlier: Option<OutlierPolicy>,
}

/// The Listener `name` for `xds:///name`: an API listener routing every call to `cluster`.
pub fn listener(name: &str, cluster: &str) -> Listener {
    let route_config = RouteConfiguration {
        name: format!("{name}/route"),
        virtual_hosts: vec![VirtualHost {
            name: name.to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
                    ..RouteMatch::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.to_owned(),
                    )),
                    ..RouteAction::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    let manager = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            route_config,
        )),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..HttpFilter::default()
        }],
        ..HttpConnectionManager::default()
    };
    Listener {
        name: name.to_owned(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(manager)),
        }),
        ..Listener::default()
    }
}

/// The Cluster `name`: its endpoints from EDS over ADS (ClusterLoadAssignment `name`).
pub fn cluster(name: &str, policy: &ClusterPolicy) -> Cluster {
    let LbPolicy::RoundRobin = policy.lb_policy;
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource::default(),
                )),
                resource_api_version: ApiVersion::V3 as i32,
                ..ConfigSource::default()
            }),
            service_name: name.to_owned(),
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        // For Envoy: locality weights count only with this set, and Envoy's own panic mode
        // (by host count) is off: the server's picker decides panic by weight and then serves
        // every candidate healthy.
        common_lb_config: Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            locality_config_specifier: Some(
                cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    cluster::common_lb_config::LocalityWeightedLbConfig::default(),
                ),
            ),
            ..cluster::CommonLbConfig::default()
        }),
        outlier_detection: policy.outlier.as_ref().map(outlier_detection),
        ..Cluster::default()
    }
}

fn outlier_detection(policy: &OutlierPolicy) -> OutlierDetection {
    let u32v = |value| Some(UInt32Value { value });
    OutlierDetection {
        interval: Some(duration(policy.interval)),
        base_ejection_time: Some(duration(policy.base_ejection_time)),
        max_ejection_time: Some(duration(policy.max_ejection_time)),
        max_ejection_percent: u32v(policy.max_ejection_percent),
        // Consecutive failures are Envoy's, not A50's: off, so both kinds of client agree.
        enforcing_consecutive_5xx: u32v(0),
        enforcing_consecutive_gateway_failure: u32v(0),
        enforcing_consecutive_local_origin_failure: u32v(0),
        // Success rate off, but every field explicit: grpc-js 1.14 crashes without them.
        enforcing_success_rate: u32v(0),
        success_rate_minimum_hosts: u32v(5),
        success_rate_request_volume: u32v(100),
        success_rate_stdev_factor: u32v(1900),
        failure_percentage_threshold: u32v(policy.failure_percentage_threshold),
        enforcing_failure_percentage: u32v(100),
        failure_percentage_minimum_hosts: u32v(policy.failure_percentage_minimum_hosts),
        failure_percentage_request_volume: u32v(policy.failure_percentage_request_volume),
        ..OutlierDetection::default()
    }
}

fn duration(d: Duration) -> pb::Duration {
    pb::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The ClusterLoadAssignment `name` for an assignment: one locality per task.
pub fn load_assignment(name: &str, region: &str, assignment: &Assignment) -> ClusterLoadAssignment {
    let endpoints = assignment
        .localities
        .iter()
        .map(|entry| LocalityLbEndpoints {
            locality: Some(Locality {
                region: region.to_owned(),
                zone: entry.zone.clone(),
                sub_zone: entry.instance_id.clone(),
            }),
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: entry.addr.ip().to_string(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(
                                u32::from(entry.addr.port()),
                            )),
                            ..SocketAddress::default()
                        })),
                    }),
                    ..Endpoint::default()
                })),
                health_status: match entry.health {
                    EndpointHealth::Healthy => HealthStatus::Healthy,
                    EndpointHealth::Draining => HealthStatus::Draining,
                    EndpointHealth::Unhealthy => HealthStatus::Unhealthy,
                } as i32,
                metadata: Some(Metadata {
                    filter_metadata: HashMap::from([(
                        METADATA_NAMESPACE.to_owned(),
                        Struct {
                            fields: entry
                                .metadata
                                .iter()
                                .map(|(key, text)| {
                                    (
                                        (*key).to_owned(),
                                        Value {
                                            kind: Some(value::Kind::StringValue(text.clone())),
                                        },
                                    )
                                })
                                .collect(),
                        },
                    )]),
                    ..Metadata::default()
                }),
                load_balancing_weight: Some(UInt32Value {
                    value: entry.weight,
                }),
            }],
            load_balancing_weight: Some(UInt32Value {
                value: entry.weight,
            }),
            priority: entry.priority,
            ..LocalityLbEndpoints::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints,
        // For Envoy: priority 0 keeps every call while it has a healthy task (its default 140
        // would move calls to priority 1 as soon as some of priority 0 drain).
        policy: Some(cluster_load_assignment::Policy {
            overprovisioning_factor: Some(UInt32Value { value: 100_000 }),
            ..cluster_load_assignment::Policy::default()
        }),
        ..ClusterLoadAssignment::default()
    }
}
