//! Which xDS servers to ask, and who this client is: from the builder, `CLOUDMAP_XDS_SERVERS`,
//! or the gRPC bootstrap file every other language's client reads (gRFC A27:
//! `GRPC_XDS_BOOTSTRAP`, a path, or `GRPC_XDS_BOOTSTRAP_CONFIG`, the JSON itself).
//!
//! Pure: the environment is handed in.

use serde_json::Value;

use crate::error::Error;

/// The environment variable naming xDS servers, comma-separated URIs or `host:port`.
pub const SERVERS_ENV: &str = "CLOUDMAP_XDS_SERVERS";
/// gRPC's bootstrap file path.
pub const BOOTSTRAP_ENV: &str = "GRPC_XDS_BOOTSTRAP";
/// gRPC's inline bootstrap.
pub const BOOTSTRAP_CONFIG_ENV: &str = "GRPC_XDS_BOOTSTRAP_CONFIG";

/// What a bootstrap says that this client uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bootstrap {
    /// The servers, in order, as `http://host:port` URIs.
    pub servers: Vec<String>,
    /// `node.id`; empty when not given.
    pub node_id: String,
    /// `node.locality.zone`; `None` when not given.
    pub zone: Option<String>,
    /// `node.locality.region`; `None` when not given.
    pub region: Option<String>,
    /// The CA file of `tls` channel credentials (gRFC A65's `ca_certificate_file`), when the
    /// servers use them.
    pub ca_certificate_file: Option<String>,
}

impl Bootstrap {
    /// Parses a gRPC bootstrap (gRFC A27). Each entry of `xds_servers` is used with its first
    /// channel credentials type this crate supports: `insecure`, or `tls` with a
    /// `config.ca_certificate_file` (gRFC A65; the server's certificate is verified against
    /// that CA, without a client certificate); a server offering only others is an error naming
    /// them, as gRPC's clients fail on a bootstrap they cannot use. `server_uri` is a gRPC
    /// target: `host:port`, `dns:///host:port` or `ipv4:` are accepted.
    pub fn parse(json: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidOption {
            name: "xds bootstrap",
            reason,
        };
        let value: Value =
            serde_json::from_str(json).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let servers = value
            .get("xds_servers")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("no xds_servers".to_owned()))?;
        let mut uris = Vec::with_capacity(servers.len());
        let mut ca_certificate_file = None;
        for server in servers {
            let target = server
                .get("server_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("an xds_servers entry without server_uri".to_owned()))?;
            let list: Vec<&Value> = server
                .get("channel_creds")
                .and_then(Value::as_array)
                .map(|list| list.iter().collect())
                .unwrap_or_default();
            let creds: Vec<&str> = list
                .iter()
                .filter_map(|c| c.get("type").and_then(Value::as_str))
                .collect();
            // The first supported type, in the bootstrap's order.
            let chosen = list
                .iter()
                .find_map(|c| match c.get("type").and_then(Value::as_str) {
                    Some("insecure") => Some(None),
                    Some("tls") => c
                        .get("config")
                        .and_then(|config| config.get("ca_certificate_file"))
                        .and_then(Value::as_str)
                        .map(|ca| Some(ca.to_owned())),
                    _ => None,
                });
            let host = uri(target).map_err(invalid)?;
            match chosen {
                Some(None) => uris.push(host),
                Some(Some(ca)) => {
                    uris.push(host.replacen("http://", "https://", 1));
                    ca_certificate_file = Some(ca);
                }
                None => {
                    return Err(invalid(format!(
                        "server {target}: channel_creds {creds:?}: supported are \"insecure\" and \"tls\" with config.ca_certificate_file"
                    )));
                }
            }
        }
        let node = value.get("node");
        let text = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let locality = node.and_then(|n| n.get("locality"));
        Ok(Self {
            servers: uris,
            node_id: text(node.and_then(|n| n.get("id"))).unwrap_or_default(),
            zone: text(locality.and_then(|l| l.get("zone"))),
            region: text(locality.and_then(|l| l.get("region"))),
            ca_certificate_file,
        })
    }

    /// From the environment (`var` reads a variable, `read` a file): `CLOUDMAP_XDS_SERVERS`
    /// first, then `GRPC_XDS_BOOTSTRAP_CONFIG`, then the file `GRPC_XDS_BOOTSTRAP` names.
    /// `Ok(None)` when none is set.
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
        read: impl Fn(&str) -> std::io::Result<String>,
    ) -> Result<Option<Self>, Error> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if let Some(list) = set(SERVERS_ENV) {
            let servers = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(uri)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| Error::InvalidOption {
                    name: SERVERS_ENV,
                    reason,
                })?;
            return Ok(Some(Self {
                servers,
                ..Self::default()
            }));
        }
        if let Some(json) = set(BOOTSTRAP_CONFIG_ENV) {
            return Self::parse(&json).map(Some);
        }
        if let Some(path) = set(BOOTSTRAP_ENV) {
            let json = read(&path).map_err(|e| Error::InvalidOption {
                name: BOOTSTRAP_ENV,
                reason: format!("{path}: {e}"),
            })?;
            return Self::parse(&json).map(Some);
        }
        Ok(None)
    }
}

/// A server as an `http://host:port` URI (or `https://` as given), from a URI or a gRPC target.
pub(crate) fn uri(target: &str) -> Result<String, String> {
    let target = target.trim();
    if target.starts_with("http://") || target.starts_with("https://") {
        return Ok(target.to_owned());
    }
    let host = target
        .strip_prefix("dns:///")
        .or_else(|| target.strip_prefix("dns:"))
        .or_else(|| target.strip_prefix("ipv4:"))
        .or_else(|| target.strip_prefix("ipv6:"))
        .unwrap_or(target);
    let valid = host
        .rsplit_once(':')
        .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid || host.contains('/') || host.contains(',') {
        return Err(format!("{target:?} is not host:port"));
    }
    Ok(format!("http://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_other_languages_read_is_read_as_is() {
        // What `cloudmap-xds bootstrap` writes.
        let json = r#"{
            "xds_servers": [
                {"server_uri": "xds.prod.internal:18000", "channel_creds": [{"type": "insecure"}],
                 "server_features": ["xds_v3"]},
                {"server_uri": "dns:///xds-b.prod.internal:18000",
                 "channel_creds": [{"type": "google_default"}, {"type": "insecure"}]}
            ],
            "node": {"id": "task-1", "locality": {"region": "eu-central-1", "zone": "euc1-az1"}}
        }"#;
        assert_eq!(
            Bootstrap::parse(json).unwrap(),
            Bootstrap {
                servers: vec![
                    "http://xds.prod.internal:18000".to_owned(),
                    "http://xds-b.prod.internal:18000".to_owned()
                ],
                node_id: "task-1".to_owned(),
                zone: Some("euc1-az1".to_owned()),
                region: Some("eu-central-1".to_owned()),
                ca_certificate_file: None,
            }
        );
    }

    #[test]
    fn bootstraps_this_crate_cannot_use_say_why() {
        let error = |json: &str| Bootstrap::parse(json).unwrap_err().to_string();
        assert!(error("{").contains("not JSON"));
        assert!(error("{}").contains("no xds_servers"));
        assert!(error(r#"{"xds_servers": []}"#).contains("no xds_servers"));
        assert!(error(r#"{"xds_servers": [{"channel_creds": []}]}"#).contains("server_uri"));
        assert!(
            error(
                r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "tls"}]}]}"#
            )
            .contains("ca_certificate_file"),
            "tls without a CA file is not usable"
        );
        assert!(
            error(r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "google_default"}]}]}"#)
                .contains("google_default")
        );
        // gRFC A65's tls credentials: the server is called over TLS, verified against the CA.
        let tls = Bootstrap::parse(
            r#"{"xds_servers": [{"server_uri": "xds:443", "channel_creds": [
                {"type": "tls", "config": {"ca_certificate_file": "/ca.pem"}}, {"type": "insecure"}]}]}"#,
        )
        .unwrap();
        assert_eq!(tls.servers, ["https://xds:443"]);
        assert_eq!(tls.ca_certificate_file.as_deref(), Some("/ca.pem"));
        assert!(
            error(
                r#"{"xds_servers": [{"server_uri": "a", "channel_creds": [{"type": "insecure"}]}]}"#
            )
            .contains("not host:port")
        );
    }

    #[test]
    fn the_environment_names_servers_or_a_bootstrap() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let no_file = |path: &str| -> std::io::Result<String> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                path.to_owned(),
            ))
        };
        assert_eq!(Bootstrap::from_env(env(&[]), no_file).unwrap(), None);
        let servers = Bootstrap::from_env(
            env(&[(SERVERS_ENV, "a:1, http://b:2"), (BOOTSTRAP_ENV, "/x")]),
            no_file,
        )
        .unwrap()
        .unwrap();
        assert_eq!(servers.servers, ["http://a:1", "http://b:2"]);
        assert!(
            Bootstrap::from_env(env(&[(SERVERS_ENV, "a")]), no_file)
                .unwrap_err()
                .to_string()
                .contains(SERVERS_ENV)
        );
        let missing = Bootstrap::from_env(env(&[(BOOTSTRAP_ENV, "/nope.json")]), no_file)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nope.json"), "{missing}");
        let file = Bootstrap::from_env(env(&[(BOOTSTRAP_ENV, "/b.json")]), |_| {
            Ok(r#"{"xds_servers": [{"server_uri": "x:9", "channel_creds": [{"type": "insecure"}]}]}"#
                .to_owned())
        })
        .unwrap()
        .unwrap();
        assert_eq!(file.servers, ["http://x:9"]);
        assert_eq!(uri("https://a:1").unwrap(), "https://a:1");
    }
}
