//! The server's configuration: environment variables, read and checked once at start.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::Error;
use crate::identity::IdentityOverrides;
use crate::network::NetworkEmulation;
use crate::server::ServeOptions;
use crate::service::Load;

/// The port when `DEMO_PORT` is unset.
pub const DEFAULT_PORT: u16 = 50051;
/// The drain delay when `DEMO_DRAIN_DELAY_MS` is unset.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);
/// The shutdown grace when `DEMO_SHUTDOWN_GRACE_MS` is unset. With the default drain delay it
/// stays under ECS's default `stopTimeout` of 30 s, after which ECS sends SIGKILL.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The environment variable ECS sets to the task metadata endpoint v4.
pub const METADATA_URI_VARIABLE: &str = "ECS_CONTAINER_METADATA_URI_V4";

/// Everything the binary reads from its environment (see the crate docs for the table).
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen: `DEMO_BIND`:`DEMO_PORT`.
    pub listen: SocketAddr,
    /// The task metadata endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4`), when running on ECS.
    pub metadata_uri: Option<String>,
    /// Identity values that win over the task metadata (`DEMO_ZONE`, `DEMO_TASK_ARN`, ...).
    pub identity: IdentityOverrides,
    /// Drain timing and the initial artificial load.
    pub serve: ServeOptions,
    /// The `tracing` filter (`RUST_LOG`), `info` when unset.
    pub log_filter: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a variable's value, `None` when unset). An empty
    /// value counts as unset, so a deployment template can pass `""` for "not configured".
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let bind = parse(var, "DEMO_BIND", "an IP address", |v| {
            v.parse::<IpAddr>().ok()
        })?
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let port = parse(var, "DEMO_PORT", "a port number 0-65535", |v| {
            v.parse::<u16>().ok()
        })?
        .unwrap_or(DEFAULT_PORT);
        let millis = |name: &'static str| {
            parse(var, name, "a whole number of milliseconds", |v| {
                v.parse::<u64>().ok().map(Duration::from_millis)
            })
        };
        let drain_delay = millis("DEMO_DRAIN_DELAY_MS")?.unwrap_or(DEFAULT_DRAIN_DELAY);
        let shutdown_grace = millis("DEMO_SHUTDOWN_GRACE_MS")?.unwrap_or(DEFAULT_SHUTDOWN_GRACE);
        let latency = millis("DEMO_LATENCY_MS")?.unwrap_or_default();
        let cpu_work = millis("DEMO_CPU_WORK_MS")?.unwrap_or_default();
        let load = Load::new(latency, cpu_work).ok_or_else(|| Error::Config {
            variable: "DEMO_LATENCY_MS/DEMO_CPU_WORK_MS",
            value: format!("{}/{}", latency.as_millis(), cpu_work.as_millis()),
            expected: "at most 600000 ms of latency and 60000 ms of CPU work",
        })?;

        let micros = |name: &'static str| {
            parse(var, name, "a whole number of microseconds", |v| {
                v.parse::<u64>().ok().map(Duration::from_micros)
            })
        };
        let network = match (
            micros("DEMO_RTT_IN_ZONE_US")?,
            micros("DEMO_RTT_CROSS_ZONE_US")?,
        ) {
            (None, None) => None,
            (Some(in_zone), Some(cross_zone)) => Some(
                NetworkEmulation::new(in_zone, cross_zone).ok_or_else(|| Error::Config {
                    variable: "DEMO_RTT_IN_ZONE_US/DEMO_RTT_CROSS_ZONE_US",
                    value: format!("{}/{}", in_zone.as_micros(), cross_zone.as_micros()),
                    expected: "at most 1000000 µs each",
                })?,
            ),
            (in_zone, cross_zone) => {
                return Err(Error::Config {
                    variable: "DEMO_RTT_IN_ZONE_US/DEMO_RTT_CROSS_ZONE_US",
                    value: format!(
                        "{}/{}",
                        in_zone.map_or("unset".into(), |d| d.as_micros().to_string()),
                        cross_zone.map_or("unset".into(), |d| d.as_micros().to_string())
                    ),
                    expected: "both set (network emulation) or both unset (none)",
                });
            }
        };

        Ok(Self {
            listen: SocketAddr::new(bind, port),
            metadata_uri: var(METADATA_URI_VARIABLE),
            identity: IdentityOverrides {
                zone: var("DEMO_ZONE"),
                task_arn: var("DEMO_TASK_ARN"),
                cluster: var("DEMO_CLUSTER"),
                family: var("DEMO_FAMILY"),
                revision: var("DEMO_REVISION"),
                host: var("DEMO_HOST"),
            },
            serve: ServeOptions {
                drain_delay,
                shutdown_grace,
                load,
                network,
            },
            log_filter: var("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
        })
    }

    /// The address a health check on this machine should call: the bound IP when it is a
    /// specific one, else loopback.
    pub fn local_health_addr(&self) -> SocketAddr {
        let ip = match self.listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.listen.port())
    }
}

fn parse<T>(
    var: impl Fn(&str) -> Option<String>,
    variable: &'static str,
    expected: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, Error> {
    var(variable)
        .map(|value| {
            parse(value.trim()).ok_or(Error::Config {
                variable,
                value,
                expected,
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_listen_on_every_interface_and_drain_within_ecs_stop_timeout() {
        let config = config(&[]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(
            config.local_health_addr(),
            "127.0.0.1:50051".parse().unwrap()
        );
        assert_eq!(config.metadata_uri, None);
        assert_eq!(config.identity, IdentityOverrides::default());
        assert!(config.serve.drain_delay + config.serve.shutdown_grace < Duration::from_secs(30));
        assert_eq!(config.serve.load, Load::default());
        assert_eq!(config.serve.network, None);
        assert_eq!(config.log_filter, "info");
    }

    #[test]
    fn reads_every_variable() {
        let config = config(&[
            ("DEMO_BIND", "127.0.0.1"),
            ("DEMO_PORT", "0"),
            ("DEMO_ZONE", "eu-central-1b"),
            (
                "DEMO_TASK_ARN",
                "arn:aws:ecs:eu-central-1:123456789012:task/demo/abc",
            ),
            ("DEMO_CLUSTER", "demo"),
            ("DEMO_FAMILY", "demo-server"),
            ("DEMO_REVISION", "7"),
            ("DEMO_HOST", "10.0.1.5"),
            ("DEMO_DRAIN_DELAY_MS", "250"),
            ("DEMO_SHUTDOWN_GRACE_MS", " 4000 "),
            ("DEMO_LATENCY_MS", "30"),
            ("DEMO_CPU_WORK_MS", "2"),
            ("DEMO_RTT_IN_ZONE_US", "335"),
            ("DEMO_RTT_CROSS_ZONE_US", "1035"),
            (
                "ECS_CONTAINER_METADATA_URI_V4",
                "http://169.254.170.2/v4/abc",
            ),
            ("RUST_LOG", "debug"),
        ])
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.local_health_addr(), "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.identity.zone.as_deref(), Some("eu-central-1b"));
        assert_eq!(config.identity.cluster.as_deref(), Some("demo"));
        assert_eq!(config.identity.family.as_deref(), Some("demo-server"));
        assert_eq!(config.identity.revision.as_deref(), Some("7"));
        assert_eq!(config.identity.host.as_deref(), Some("10.0.1.5"));
        assert_eq!(
            config.identity.task_arn.as_deref(),
            Some("arn:aws:ecs:eu-central-1:123456789012:task/demo/abc")
        );
        assert_eq!(config.serve.drain_delay, Duration::from_millis(250));
        assert_eq!(config.serve.shutdown_grace, Duration::from_secs(4));
        assert_eq!(config.serve.load.latency(), Duration::from_millis(30));
        assert_eq!(config.serve.load.cpu_work(), Duration::from_millis(2));
        assert_eq!(config.serve.network, Some(NetworkEmulation::AWS));
        assert_eq!(
            config.metadata_uri.as_deref(),
            Some("http://169.254.170.2/v4/abc")
        );
        assert_eq!(config.log_filter, "debug");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = config(&[
            ("DEMO_PORT", ""),
            ("DEMO_ZONE", "  "),
            (METADATA_URI_VARIABLE, ""),
        ])
        .unwrap();
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert_eq!(config.identity.zone, None);
        assert_eq!(config.metadata_uri, None);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (variable, value) in [
            ("DEMO_PORT", "70000"),
            ("DEMO_BIND", "localhost"),
            ("DEMO_DRAIN_DELAY_MS", "5s"),
            ("DEMO_SHUTDOWN_GRACE_MS", "-1"),
        ] {
            let error = config(&[(variable, value)]).unwrap_err();
            assert!(
                matches!(&error, Error::Config { variable: v, value: got, .. } if *v == variable && got == value),
                "{variable}={value}: {error}"
            );
        }
    }

    #[test]
    fn network_emulation_needs_both_round_trips_within_a_second() {
        let both = config(&[
            ("DEMO_RTT_IN_ZONE_US", "1000000"),
            ("DEMO_RTT_CROSS_ZONE_US", "0"),
        ])
        .unwrap();
        assert_eq!(
            both.serve.network,
            NetworkEmulation::new(Duration::from_secs(1), Duration::ZERO)
        );
        for vars in [
            &[("DEMO_RTT_IN_ZONE_US", "335")][..],
            &[("DEMO_RTT_CROSS_ZONE_US", "1035")],
            &[
                ("DEMO_RTT_IN_ZONE_US", "335"),
                ("DEMO_RTT_CROSS_ZONE_US", "1000001"),
            ],
            &[
                ("DEMO_RTT_IN_ZONE_US", "0.3"),
                ("DEMO_RTT_CROSS_ZONE_US", "1"),
            ],
        ] {
            assert!(
                matches!(config(vars), Err(Error::Config { variable, .. }) if variable.starts_with("DEMO_RTT_")),
                "{vars:?}"
            );
        }
    }

    #[test]
    fn artificial_load_is_bounded() {
        assert!(config(&[("DEMO_LATENCY_MS", "600000")]).is_ok());
        assert!(matches!(
            config(&[("DEMO_LATENCY_MS", "600001")]),
            Err(Error::Config { .. })
        ));
        assert!(matches!(
            config(&[("DEMO_CPU_WORK_MS", "60001")]),
            Err(Error::Config { .. })
        ));
    }
}
