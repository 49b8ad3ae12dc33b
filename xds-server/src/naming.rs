//! Resource names: what a client writes after `xds:///`, and which Cloud Map service it means.
//!
//! A client asks for the Listener `SERVICE.NAMESPACE` (target `xds:///echo.prod.internal`):
//! the first label is the Cloud Map service, the rest its namespace. A `:PORT` suffix is
//! ignored (the port comes from Cloud Map). Aliases map other names (`echo`, or a service whose
//! own name has dots) to a service. Clusters and ClusterLoadAssignments are named by the
//! canonical `SERVICE.NAMESPACE`, whatever name the Listener was asked by, so that clients using
//! an alias and clients using the full name share one answer.

use std::collections::BTreeMap;
use std::fmt;

use cloudmap_balancer::contract::xds::INSTANCES_PREFIX;

use crate::error::NameError;

/// A Cloud Map service: its namespace and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    /// The namespace, e.g. `prod.internal`.
    pub namespace: String,
    /// The service, e.g. `echo`.
    pub service: String,
}

impl ServiceName {
    /// A service in a namespace.
    pub fn new(namespace: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            service: service.into(),
        }
    }

    /// The canonical resource name, `SERVICE.NAMESPACE`: the Cluster and ClusterLoadAssignment
    /// names.
    pub fn resource_name(&self) -> String {
        format!("{}.{}", self.service, self.namespace)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.service, self.namespace)
    }
}

/// Longest name accepted: Cloud Map service names are at most 127 characters, namespace names
/// at most 1,024.
const MAX_NAME: usize = 127 + 1 + 1024;

/// Resolves resource names to services: aliases first, then `SERVICE.NAMESPACE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    aliases: BTreeMap<String, ServiceName>,
}

impl Names {
    /// Resolution with these aliases (name → service).
    pub fn new(aliases: BTreeMap<String, ServiceName>) -> Self {
        Self { aliases }
    }

    /// The aliases.
    pub fn aliases(&self) -> &BTreeMap<String, ServiceName> {
        &self.aliases
    }

    /// The service a resource name means. `instances/NAME` (a Rust client's ask for every
    /// instance, see [`is_instances`]) means the service `NAME` means.
    pub fn resolve(&self, name: &str) -> Result<ServiceName, NameError> {
        let name = name.strip_prefix(INSTANCES_PREFIX).unwrap_or(name);
        let host = strip_port(name);
        if host.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(service) = self.aliases.get(host).or_else(|| self.aliases.get(name)) {
            return Ok(service.clone());
        }
        if host.len() > MAX_NAME {
            return Err(NameError::TooLong(name.to_owned()));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(NameError::BadCharacter(name.to_owned()));
        }
        match host.split_once('.') {
            Some((service, namespace)) if !service.is_empty() && !namespace.is_empty() => {
                Ok(ServiceName::new(namespace, service))
            }
            _ => Err(NameError::NoNamespace(name.to_owned())),
        }
    }
}

/// Whether `name` asks for the service's instances rather than the picks: the
/// ClusterLoadAssignment `instances/SERVICE.NAMESPACE` the crate's xDS source subscribes to.
pub fn is_instances(name: &str) -> bool {
    name.starts_with(INSTANCES_PREFIX)
}

/// `name` without a trailing `:PORT`.
fn strip_port(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => name,
    }
}

/// Parses `ALIAS=SERVICE.NAMESPACE` pairs separated by commas (the `CLOUDMAP_XDS_ALIASES`
/// format). An entry without `=` or with a target that is not `SERVICE.NAMESPACE` is an error
/// naming the entry.
pub fn parse_aliases(text: &str) -> Result<BTreeMap<String, ServiceName>, String> {
    let mut aliases = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((alias, target)) = entry.split_once('=') else {
            return Err(format!("{entry:?} is not ALIAS=SERVICE.NAMESPACE"));
        };
        let (alias, target) = (alias.trim(), target.trim());
        if alias.is_empty() {
            return Err(format!("{entry:?} has an empty alias"));
        }
        let service = Names::default()
            .resolve(target)
            .map_err(|error| format!("{entry:?}: {error}"))?;
        if aliases.insert(alias.to_owned(), service).is_some() {
            return Err(format!("alias {alias:?} is given twice"));
        }
    }
    Ok(aliases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_label_is_the_service_and_the_rest_the_namespace() {
        let names = Names::default();
        assert_eq!(
            names.resolve("echo.prod.internal"),
            Ok(ServiceName::new("prod.internal", "echo"))
        );
        assert_eq!(
            names.resolve("echo.prod.internal:50051"),
            Ok(ServiceName::new("prod.internal", "echo"))
        );
        assert_eq!(
            ServiceName::new("prod.internal", "echo").resource_name(),
            "echo.prod.internal"
        );
        // A Rust client's ask for the instances names the same service.
        assert_eq!(
            names.resolve("instances/echo.prod.internal"),
            Ok(ServiceName::new("prod.internal", "echo"))
        );
        assert!(is_instances("instances/echo.prod.internal"));
        assert!(!is_instances("echo.prod.internal"));
        assert!(matches!(
            names.resolve("instances/instances/echo.ns"),
            Err(NameError::BadCharacter(_))
        ));
    }

    #[test]
    fn aliases_come_first() {
        let aliases = parse_aliases("echo=echo.prod.internal, dotted = my.svc.ns").unwrap();
        let names = Names::new(aliases);
        assert_eq!(
            names.resolve("echo"),
            Ok(ServiceName::new("prod.internal", "echo"))
        );
        assert_eq!(
            names.resolve("dotted:443"),
            Ok(ServiceName::new("svc.ns", "my"))
        );
    }

    #[test]
    fn odd_names_say_why() {
        let names = Names::default();
        assert_eq!(names.resolve(""), Err(NameError::Empty));
        assert_eq!(names.resolve(":80"), Err(NameError::Empty));
        assert!(matches!(
            names.resolve("echo"),
            Err(NameError::NoNamespace(_))
        ));
        assert!(matches!(
            names.resolve("echo."),
            Err(NameError::NoNamespace(_))
        ));
        assert!(matches!(
            names.resolve(".ns"),
            Err(NameError::NoNamespace(_))
        ));
        assert!(matches!(
            names.resolve("a b.ns"),
            Err(NameError::BadCharacter(_))
        ));
        assert!(matches!(
            names.resolve(&format!("a.{}", "n".repeat(2000))),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn bad_alias_lists_name_the_entry() {
        assert!(parse_aliases("echo").unwrap_err().contains("\"echo\""));
        assert!(parse_aliases("=a.b").unwrap_err().contains("empty alias"));
        assert!(parse_aliases("a=b").unwrap_err().contains("\"a=b\""));
        assert!(parse_aliases("a=b.c,a=d.e").unwrap_err().contains("twice"));
        assert!(parse_aliases("").unwrap().is_empty());
    }
}
