//! Configuration: from the environment, then the command line (flags win), parsed and
//! validated once at start. A bad value is an [`Error::Config`] naming the variable or flag.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use cloudmap_balancer::{IpFamily, NamespaceOwner};

use crate::error::Error;
use crate::naming::{ServiceName, parse_aliases};

/// `cloudmap-xds serve` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// `CLOUDMAP_XDS_LISTEN` / `--listen`: where ADS is served. Default `0.0.0.0:18000`.
    pub listen: SocketAddr,
    /// `CLOUDMAP_XDS_REGION` / `--region`: the localities' region. Default: the AWS SDK's
    /// region (`AWS_REGION`).
    pub region: Option<String>,
    /// `CLOUDMAP_XDS_ALIASES` / `--alias` (repeatable): `ALIAS=SERVICE.NAMESPACE`, comma
    /// separated.
    pub aliases: BTreeMap<String, ServiceName>,
    /// `CLOUDMAP_XDS_POLL_INTERVAL` / `--poll-interval`: Cloud Map revision polls per service.
    /// Default 1.75 s: the longest poll with which a write reaches every client within 2 s (a
    /// poll of at most 1.05 × the interval with the crate's jitter, then the push); 100
    /// services on 2 replicas then make 114 revision calls a second, under 5 % of the account's
    /// quota at the busiest second (BENCHMARKS.md, the fleet model's xDS mode).
    pub poll_interval: Duration,
    /// `CLOUDMAP_XDS_MAX_SUBSCRIPTIONS` / `--max-subscriptions`: names one stream may subscribe
    /// to, all types together. Default 1,000.
    pub max_subscriptions: usize,
    /// `CLOUDMAP_XDS_OUTLIER_DETECTION` / `--outlier-detection`: `on` (default) or `off`.
    pub outlier_detection: bool,
    /// `CLOUDMAP_XDS_SHUTDOWN_GRACE` / `--shutdown-grace`: how long open streams get after
    /// SIGTERM before the process exits. Default 5 s.
    pub shutdown_grace: Duration,
    /// `CLOUDMAP_XDS_HEALTH_CHECK` / `--health-check`: `on` (default) watches every endpoint's
    /// gRPC health for the whole server (`""`), `off` does not, any other value names the
    /// service to ask about.
    pub health_check: Option<String>,
    /// `CLOUDMAP_XDS_LINGER` / `--linger`: how long a service stays polled after its last
    /// subscriber left. Default 5 min.
    pub linger: Duration,
    /// `CLOUDMAP_XDS_OWNER_ACCOUNT` / `--owner-account`: the account that owns the namespaces
    /// served, when another account shares them through AWS RAM (sent as `OwnerAccount`), or
    /// `detect` (each namespace's `ResourceOwner`, from `ListNamespaces`). Default: the
    /// server's own account.
    pub owner: NamespaceOwner,
    /// `CLOUDMAP_XDS_IP_FAMILY` / `--ip-family`: which address of a dual-stack instance the
    /// endpoints carry: `ipv4-first` (default: its IPv4 one), `ipv6` or `ipv6-first` (its IPv6
    /// one). IPv6-only instances are sent at their IPv6 address.
    pub ip_family: IpFamily,
    /// `CLOUDMAP_XDS_TLS_CERT` and `CLOUDMAP_XDS_TLS_KEY` / `--tls-cert`, `--tls-key`: PEM
    /// files of the server's certificate chain and private key; ADS is then served over TLS.
    /// Both or neither. Default: plaintext.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 18000)),
            region: None,
            aliases: BTreeMap::new(),
            poll_interval: Duration::from_millis(1750),
            max_subscriptions: 1000,
            outlier_detection: true,
            shutdown_grace: Duration::from_secs(5),
            health_check: Some(String::new()),
            linger: Duration::from_secs(300),
            owner: NamespaceOwner::Caller,
            ip_family: IpFamily::Ipv4First,
            tls: None,
        }
    }
}

/// `cloudmap-xds bootstrap` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootstrapConfig {
    /// `CLOUDMAP_XDS_SERVER_URI` / `--server`: the xDS server, `HOST:PORT`. Required.
    pub server_uri: String,
    /// `CLOUDMAP_XDS_BOOTSTRAP_OUTPUT` / `--output`: the file to write; standard output when
    /// unset.
    pub output: Option<String>,
    /// `CLOUDMAP_XDS_NODE_ID` / `--node-id`: the node ID. Default `$HOSTNAME`, else
    /// `cloudmap-xds-client`.
    pub node_id: Option<String>,
    /// `CLOUDMAP_XDS_ZONE` / `--zone`: the client's zone (name or AZ ID), instead of detecting
    /// it.
    pub zone: Option<String>,
    /// `CLOUDMAP_XDS_REGION` / `--region`: the node's region.
    pub region: Option<String>,
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Serve ADS.
    Serve(ServeConfig),
    /// Print or write a gRPC bootstrap.
    Bootstrap(BootstrapConfig),
    /// Print usage.
    Help,
}

/// The usage text.
pub const USAGE: &str = "\
usage: cloudmap-xds serve [--listen ADDR] [--region REGION] [--alias ALIAS=SERVICE.NAMESPACE]...
                          [--poll-interval DURATION] [--max-subscriptions N]
                          [--outlier-detection on|off] [--shutdown-grace DURATION]
                          [--health-check on|off|SERVICE] [--linger DURATION]
                          [--owner-account ACCOUNT|detect] [--ip-family ipv4-first|ipv6|ipv6-first]
                          [--tls-cert PEM --tls-key PEM]
       cloudmap-xds bootstrap --server HOST:PORT [--output PATH] [--node-id ID] [--zone ZONE]
                              [--region REGION]

Every flag has an environment variable (CLOUDMAP_XDS_LISTEN, CLOUDMAP_XDS_REGION,
CLOUDMAP_XDS_ALIASES, CLOUDMAP_XDS_POLL_INTERVAL, CLOUDMAP_XDS_MAX_SUBSCRIPTIONS,
CLOUDMAP_XDS_OUTLIER_DETECTION, CLOUDMAP_XDS_SHUTDOWN_GRACE, CLOUDMAP_XDS_HEALTH_CHECK,
CLOUDMAP_XDS_LINGER, CLOUDMAP_XDS_OWNER_ACCOUNT, CLOUDMAP_XDS_IP_FAMILY, CLOUDMAP_XDS_TLS_CERT,
CLOUDMAP_XDS_TLS_KEY, CLOUDMAP_XDS_SERVER_URI,
CLOUDMAP_XDS_BOOTSTRAP_OUTPUT, CLOUDMAP_XDS_NODE_ID, CLOUDMAP_XDS_ZONE); flags win.
Durations: 500ms, 2s, 1m, or seconds.";

/// Parses the command line (without the program name) over the environment `env`.
pub fn parse(args: &[String], env: &HashMap<String, String>) -> Result<Command, Error> {
    let Some((command, flags)) = args.split_first() else {
        return Ok(Command::Help);
    };
    let mut settings: Vec<(String, String)> = Vec::new();
    let mut rest = flags.iter();
    while let Some(flag) = rest.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let Some(name) = flag.strip_prefix("--") else {
            return Err(invalid(
                flag,
                "",
                "an unexpected argument (flags start with --)",
            ));
        };
        let (name, value) = match name.split_once('=') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => match rest.next() {
                Some(value) => (name.to_owned(), value.clone()),
                None => return Err(invalid(flag, "", "needs a value")),
            },
        };
        settings.push((name, value));
    }
    let lookup = |flag: &str, var: &str| -> Option<(String, String)> {
        let from_flags: Vec<&String> = settings
            .iter()
            .filter(|(n, _)| n == flag)
            .map(|(_, v)| v)
            .collect();
        match from_flags.last() {
            Some(value) => Some((format!("--{flag}"), (*value).clone())),
            None => env
                .get(var)
                .filter(|v| !v.is_empty())
                .map(|v| (var.to_owned(), v.clone())),
        }
    };
    match command.as_str() {
        "serve" => {
            let known = [
                "listen",
                "region",
                "alias",
                "poll-interval",
                "max-subscriptions",
                "outlier-detection",
                "shutdown-grace",
                "health-check",
                "linger",
                "owner-account",
                "ip-family",
                "tls-cert",
                "tls-key",
            ];
            reject_unknown(&settings, &known)?;
            let mut config = ServeConfig::default();
            if let Some((name, value)) = lookup("listen", "CLOUDMAP_XDS_LISTEN") {
                config.listen = value
                    .parse()
                    .map_err(|_| invalid(&name, &value, "not an IP:PORT address"))?;
            }
            config.region = lookup("region", "CLOUDMAP_XDS_REGION").map(|(_, v)| v);
            if let Some((name, value)) = lookup("_", "CLOUDMAP_XDS_ALIASES") {
                config.aliases =
                    parse_aliases(&value).map_err(|reason| invalid(&name, &value, &reason))?;
            }
            for (_, value) in settings.iter().filter(|(n, _)| n == "alias") {
                let more =
                    parse_aliases(value).map_err(|reason| invalid("--alias", value, &reason))?;
                config.aliases.extend(more);
            }
            if let Some((name, value)) = lookup("poll-interval", "CLOUDMAP_XDS_POLL_INTERVAL") {
                config.poll_interval =
                    parse_duration(&value).map_err(|reason| invalid(&name, &value, reason))?;
                if config.poll_interval < Duration::from_secs(1) {
                    return Err(invalid(&name, &value, "must be at least 1s"));
                }
            }
            if let Some((name, value)) =
                lookup("max-subscriptions", "CLOUDMAP_XDS_MAX_SUBSCRIPTIONS")
            {
                config.max_subscriptions = value
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .ok_or_else(|| invalid(&name, &value, "not a whole number above 0"))?;
            }
            if let Some((name, value)) =
                lookup("outlier-detection", "CLOUDMAP_XDS_OUTLIER_DETECTION")
            {
                config.outlier_detection = match value.as_str() {
                    "on" | "true" | "1" => true,
                    "off" | "false" | "0" => false,
                    _ => return Err(invalid(&name, &value, "on or off")),
                };
            }
            if let Some((name, value)) = lookup("shutdown-grace", "CLOUDMAP_XDS_SHUTDOWN_GRACE") {
                config.shutdown_grace =
                    parse_duration(&value).map_err(|reason| invalid(&name, &value, reason))?;
            }
            if let Some((name, value)) = lookup("linger", "CLOUDMAP_XDS_LINGER") {
                config.linger =
                    parse_duration(&value).map_err(|reason| invalid(&name, &value, reason))?;
            }
            if let Some((name, value)) = lookup("owner-account", "CLOUDMAP_XDS_OWNER_ACCOUNT") {
                config.owner = value.parse().map_err(|_| {
                    invalid(
                        &name,
                        &value,
                        "an AWS account ID (12 digits), detect or caller",
                    )
                })?;
            }
            if let Some((name, value)) = lookup("ip-family", "CLOUDMAP_XDS_IP_FAMILY") {
                config.ip_family = value
                    .parse()
                    .map_err(|_| invalid(&name, &value, "ipv4-first, ipv6 or ipv6-first"))?;
            }
            match (
                lookup("tls-cert", "CLOUDMAP_XDS_TLS_CERT"),
                lookup("tls-key", "CLOUDMAP_XDS_TLS_KEY"),
            ) {
                (Some((_, cert)), Some((_, key))) => config.tls = Some((cert.into(), key.into())),
                (Some((name, value)), None) => {
                    return Err(invalid(
                        &name,
                        &value,
                        "needs --tls-key (CLOUDMAP_XDS_TLS_KEY) too",
                    ));
                }
                (None, Some((name, value))) => {
                    return Err(invalid(
                        &name,
                        &value,
                        "needs --tls-cert (CLOUDMAP_XDS_TLS_CERT) too",
                    ));
                }
                (None, None) => {}
            }
            if let Some((_, value)) = lookup("health-check", "CLOUDMAP_XDS_HEALTH_CHECK") {
                config.health_check = match value.as_str() {
                    "on" | "true" | "1" => Some(String::new()),
                    "off" | "false" | "0" => None,
                    service => Some(service.to_owned()),
                };
            }
            Ok(Command::Serve(config))
        }
        "bootstrap" => {
            let known = ["server", "output", "node-id", "zone", "region"];
            reject_unknown(&settings, &known)?;
            let server_uri = lookup("server", "CLOUDMAP_XDS_SERVER_URI")
                .map(|(_, v)| v)
                .ok_or_else(|| {
                    invalid(
                        "--server",
                        "",
                        "required (or CLOUDMAP_XDS_SERVER_URI): the xDS server's HOST:PORT",
                    )
                })?;
            match server_uri.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                _ => return Err(invalid("--server", &server_uri, "not HOST:PORT")),
            }
            Ok(Command::Bootstrap(BootstrapConfig {
                server_uri,
                output: lookup("output", "CLOUDMAP_XDS_BOOTSTRAP_OUTPUT").map(|(_, v)| v),
                node_id: lookup("node-id", "CLOUDMAP_XDS_NODE_ID").map(|(_, v)| v),
                zone: lookup("zone", "CLOUDMAP_XDS_ZONE").map(|(_, v)| v),
                region: lookup("region", "CLOUDMAP_XDS_REGION").map(|(_, v)| v),
            }))
        }
        "help" | "-h" | "--help" => Ok(Command::Help),
        other => Err(invalid("command", other, "not serve, bootstrap or help")),
    }
}

fn reject_unknown(settings: &[(String, String)], known: &[&str]) -> Result<(), Error> {
    match settings
        .iter()
        .find(|(name, _)| !known.contains(&name.as_str()))
    {
        Some((name, value)) => Err(invalid(
            &format!("--{name}"),
            value,
            "not a flag of this command",
        )),
        None => Ok(()),
    }
}

fn invalid(name: &str, value: &str, reason: &str) -> Error {
    Error::Config {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// `500ms`, `2s`, `1m` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| "not a duration (500ms, 2s, 1m)")?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err("not a duration (500ms, 2s, 1m)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_environment_and_flags_in_that_order() {
        let Command::Serve(config) = parse(&args(&["serve"]), &env(&[])).unwrap() else {
            panic!()
        };
        assert_eq!(config, ServeConfig::default());
        let environment = env(&[
            ("CLOUDMAP_XDS_LISTEN", "127.0.0.1:1"),
            ("CLOUDMAP_XDS_POLL_INTERVAL", "5s"),
            ("CLOUDMAP_XDS_ALIASES", "echo=echo.prod.internal"),
        ]);
        let Command::Serve(config) = parse(
            &args(&["serve", "--listen", "127.0.0.1:2", "--alias=x=y.z"]),
            &environment,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(config.listen, "127.0.0.1:2".parse().unwrap());
        assert_eq!(config.poll_interval, Duration::from_secs(5));
        assert_eq!(config.aliases.len(), 2);
    }

    #[test]
    fn bad_values_name_the_setting() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case<'_>; 12] = [
            (&["serve", "--tls-cert", "c.pem"], &[], "needs --tls-key"),
            (
                &["serve"],
                &[("CLOUDMAP_XDS_TLS_KEY", "k.pem")],
                "needs --tls-cert",
            ),
            (&["serve", "--listen", "nowhere"], &[], "--listen"),
            (
                &["serve"],
                &[("CLOUDMAP_XDS_POLL_INTERVAL", "fast")],
                "CLOUDMAP_XDS_POLL_INTERVAL",
            ),
            (&["serve", "--poll-interval", "500ms"], &[], "at least 1s"),
            (
                &["serve", "--max-subscriptions", "0"],
                &[],
                "--max-subscriptions",
            ),
            (&["serve", "--colour", "blue"], &[], "--colour"),
            (
                &["serve", "--owner-account", "12345"],
                &[],
                "--owner-account",
            ),
            (
                &["serve"],
                &[(
                    "CLOUDMAP_XDS_OWNER_ACCOUNT",
                    "arn:aws:iam::111122223333:root",
                )],
                "12 digits",
            ),
            (&["serve", "--ip-family", "ipv4"], &[], "--ip-family"),
            (&["bootstrap"], &[], "--server"),
            (&["bootstrap", "--server", "xds:0"], &[], "HOST:PORT"),
        ];
        for (line, environment, expected) in cases {
            let error = parse(&args(line), &env(environment))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{line:?}: {error}");
        }
    }

    #[test]
    fn every_flag_in_the_usage_is_taken() {
        let line = [
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--region",
            "r",
            "--alias",
            "a=b.c",
            "--poll-interval",
            "3s",
            "--max-subscriptions",
            "5",
            "--outlier-detection",
            "off",
            "--shutdown-grace",
            "1s",
            "--health-check",
            "off",
            "--linger",
            "1m",
            "--owner-account",
            "111122223333",
            "--ip-family",
            "ipv6-first",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ];
        let Command::Serve(config) = parse(&args(&line), &env(&[])).unwrap() else {
            panic!()
        };
        assert_eq!(config.owner, NamespaceOwner::Account("111122223333".into()));
        assert_eq!(config.ip_family, IpFamily::Ipv6First);
        assert_eq!(config.tls, Some(("c.pem".into(), "k.pem".into())));
        let detect = env(&[
            ("CLOUDMAP_XDS_OWNER_ACCOUNT", "detect"),
            ("CLOUDMAP_XDS_IP_FAMILY", "ipv6"),
        ]);
        let Command::Serve(from_env) = parse(&args(&["serve"]), &detect).unwrap() else {
            panic!()
        };
        assert_eq!(from_env.owner, NamespaceOwner::Detect);
        assert_eq!(from_env.ip_family, IpFamily::Ipv6);
        assert_eq!(config.health_check, None);
        assert_eq!(config.linger, Duration::from_secs(60));
        assert!(!config.outlier_detection);
        let Command::Serve(config) = parse(
            &args(&["serve", "--health-check", "grpc.demo.Demo"]),
            &env(&[]),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(config.health_check.as_deref(), Some("grpc.demo.Demo"));
        let bootstrap = [
            "bootstrap",
            "--server",
            "x:1",
            "--output",
            "o",
            "--node-id",
            "n",
            "--zone",
            "z",
            "--region",
            "r",
        ];
        assert!(matches!(
            parse(&args(&bootstrap), &env(&[])),
            Ok(Command::Bootstrap(_))
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("").is_err());
    }
}
