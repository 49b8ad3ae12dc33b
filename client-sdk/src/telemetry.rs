//! Counters and gauges through the [`metrics`] facade. Handles are registered once per balancer
//! (labelled with namespace and service), so the per-call cost is an atomic add when a recorder
//! is installed and nothing when none is.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `cloudmap_balancer_calls_total` | counter | `locality` = `local`, `remote`, `unknown` | calls picked, by the instance's zone relative to the caller's |
//! | `cloudmap_balancer_spills_total` | counter | | calls sent to another zone although the local zone had candidates |
//! | `cloudmap_balancer_panic_picks_total` | counter | | calls picked in panic mode |
//! | `cloudmap_balancer_connect_failures_total` | counter | | connection attempts that failed |
//! | `cloudmap_balancer_ejections_total` | counter | | instances ejected after a connection failure |
//! | `cloudmap_balancer_repicks_total` | counter | | calls re-picked transparently after a connection failure |
//! | `cloudmap_balancer_discovery_polls_total` | counter | `kind` = `revision`, `list` | Cloud Map calls made |
//! | `cloudmap_balancer_discovery_errors_total` | counter | `cause` = `throttled`, `service_not_found`, `namespace_not_found`, `access_denied`, `invalid_input`, `unavailable`, `source` (a custom source's error) | Cloud Map calls that failed (the last snapshot stays in service) |
//! | `cloudmap_balancer_discovery_instances` | gauge | | instances in the latest listing that could be called |
//! | `cloudmap_balancer_discovery_unroutable_instances` | gauge | | instances in the latest listing that cannot be called (no usable address or port), left out of the snapshot |
//! | `cloudmap_balancer_discovery_attribute_problems` | gauge | | instances in the latest listing with attribute values that were not understood |
//! | `cloudmap_balancer_instances` | gauge | | instances in the picker's current snapshot |
//! | `cloudmap_balancer_eligible_instances` | gauge | | instances the picker can pick |
//! | `cloudmap_balancer_local_share` | gauge | | share of calls the zone plan keeps local |
//!
//! Every metric also carries `namespace` and `service` labels.

use metrics::{Counter, Gauge, Label};

/// Which service a balancer or poller serves, for logs, errors and metric labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ident {
    pub(crate) namespace: String,
    pub(crate) service: String,
}

impl Ident {
    fn labels(&self) -> Vec<Label> {
        vec![
            Label::new("namespace", self.namespace.clone()),
            Label::new("service", self.service.clone()),
        ]
    }

    fn counter(&self, name: &'static str, extra: Option<(&'static str, &'static str)>) -> Counter {
        let mut labels = self.labels();
        if let Some((key, value)) = extra {
            labels.push(Label::new(key, value));
        }
        metrics::counter!(name, labels)
    }

    fn gauge(&self, name: &'static str) -> Gauge {
        metrics::gauge!(name, self.labels())
    }
}

/// The discovery poller's metrics.
#[derive(Clone)]
pub(crate) struct DiscoveryMetrics {
    pub(crate) revision_polls: Counter,
    pub(crate) lists: Counter,
    errors: Vec<(&'static str, Counter)>,
    pub(crate) instances: Gauge,
    pub(crate) unroutable: Gauge,
    pub(crate) attribute_problems: Gauge,
}

/// The `cause` label values of `cloudmap_balancer_discovery_errors_total`.
const ERROR_CAUSES: [&str; 7] = [
    "throttled",
    "service_not_found",
    "namespace_not_found",
    "access_denied",
    "invalid_input",
    "unavailable",
    "source",
];

impl DiscoveryMetrics {
    pub(crate) fn new(ident: &Ident) -> Self {
        let polls = "cloudmap_balancer_discovery_polls_total";
        let errors = "cloudmap_balancer_discovery_errors_total";
        Self {
            revision_polls: ident.counter(polls, Some(("kind", "revision"))),
            lists: ident.counter(polls, Some(("kind", "list"))),
            errors: ERROR_CAUSES
                .iter()
                .map(|&cause| (cause, ident.counter(errors, Some(("cause", cause)))))
                .collect(),
            instances: ident.gauge("cloudmap_balancer_discovery_instances"),
            unroutable: ident.gauge("cloudmap_balancer_discovery_unroutable_instances"),
            attribute_problems: ident.gauge("cloudmap_balancer_discovery_attribute_problems"),
        }
    }

    /// The error counter for `cause` (one of [`ERROR_CAUSES`]; anything else counts as
    /// `source`).
    pub(crate) fn error(&self, cause: &str) -> &Counter {
        let index = self
            .errors
            .iter()
            .position(|(c, _)| *c == cause)
            .unwrap_or(self.errors.len() - 1);
        &self.errors[index].1
    }
}

/// The balancer's metrics.
#[cfg(feature = "tonic")]
#[derive(Clone)]
pub(crate) struct BalancerMetrics {
    pub(crate) local: Counter,
    pub(crate) remote: Counter,
    pub(crate) unknown: Counter,
    pub(crate) spills: Counter,
    pub(crate) panic_picks: Counter,
    pub(crate) connect_failures: Counter,
    pub(crate) ejections: Counter,
    pub(crate) repicks: Counter,
    pub(crate) instances: Gauge,
    pub(crate) eligible: Gauge,
    pub(crate) local_share: Gauge,
}

#[cfg(feature = "tonic")]
impl BalancerMetrics {
    pub(crate) fn new(ident: &Ident) -> Self {
        let calls = "cloudmap_balancer_calls_total";
        Self {
            local: ident.counter(calls, Some(("locality", "local"))),
            remote: ident.counter(calls, Some(("locality", "remote"))),
            unknown: ident.counter(calls, Some(("locality", "unknown"))),
            spills: ident.counter("cloudmap_balancer_spills_total", None),
            panic_picks: ident.counter("cloudmap_balancer_panic_picks_total", None),
            connect_failures: ident.counter("cloudmap_balancer_connect_failures_total", None),
            ejections: ident.counter("cloudmap_balancer_ejections_total", None),
            repicks: ident.counter("cloudmap_balancer_repicks_total", None),
            instances: ident.gauge("cloudmap_balancer_instances"),
            eligible: ident.gauge("cloudmap_balancer_eligible_instances"),
            local_share: ident.gauge("cloudmap_balancer_local_share"),
        }
    }
}
