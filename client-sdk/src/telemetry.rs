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
//! | `cloudmap_balancer_ejections_total` | counter | `reason` = `connect-failure`, `consecutive-failures`, `success-rate`, `failure-percentage` | instances ejected |
//! | `cloudmap_balancer_retries_total` | counter | `kind` = `transparent`, `policy` | attempts after the first (transparent: the earlier one never reached the server's application) |
//! | `cloudmap_balancer_retries_throttled_total` | counter | | retries the retry throttle refused |
//! | `cloudmap_balancer_failed_calls_total` | counter | | calls that failed in the balancer or the transport (not the service's own statuses) |
//! | `cloudmap_balancer_health_changes_total` | counter | `status` = `serving`, `not-serving` | health watch changes of an instance's eligibility |
//! | `cloudmap_balancer_discovery_polls_total` | counter | `kind` = `revision`, `list` | Cloud Map calls made |
//! | `cloudmap_balancer_discovery_errors_total` | counter | `cause` = `throttled`, `service_not_found`, `namespace_not_found`, `access_denied`, `invalid_input`, `unavailable`, `source` (a custom source's error) | Cloud Map calls that failed (the last snapshot stays in service) |
//! | `cloudmap_balancer_discovery_source_switches_total` | counter | `to` = `xds`, `cloud_map_fallback`, `cloud_map`, `custom` | changes of the instances' source (the xDS source's fallback to Cloud Map and its return) |
//! | `cloudmap_balancer_discovery_rejected_answers_total` | counter | | answers the source rejected: the xDS source's NACKs of answers it could not decode (the last accepted one stays in service) |
//! | `cloudmap_balancer_discovery_instances` | gauge | | instances in the latest listing that could be called |
//! | `cloudmap_balancer_discovery_unroutable_instances` | gauge | | instances in the latest listing that cannot be called (no usable address or port), left out of the snapshot |
//! | `cloudmap_balancer_discovery_attribute_problems` | gauge | | instances in the latest listing with attribute values that were not understood |
//! | `cloudmap_balancer_instances` | gauge | | instances in the picker's current snapshot |
//! | `cloudmap_balancer_eligible_instances` | gauge | | instances the picker can pick |
//! | `cloudmap_balancer_local_share` | gauge | | share of calls the zone plan keeps local |
//! | `cloudmap_balancer_not_serving_instances` | gauge | | instances whose health watch says not serving |
//! | `cloudmap_balancer_ejected_instances` | gauge | | instances ejected now |
//!
//! Per instance (labels `instance`, `zone` and `zone_id` as well; one series per instance, gone from
//! [`Balancer::stats`](crate::Balancer::stats) but not from a recorder when it leaves):
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `cloudmap_balancer_instance_health` | gauge | | 1 when the health watch says serving or has no verdict, 0 when not serving |
//! | `cloudmap_balancer_instance_ejections_total` | counter | `reason` | ejections of this instance |
//! | `cloudmap_balancer_instance_retries_total` | counter | `kind` = `transparent`, `policy` | retries sent to this instance |
//! | `cloudmap_balancer_instance_retries_throttled_total` | counter | | retries refused by the throttle after this instance failed |
//! | `cloudmap_balancer_instance_slow_start_factor` | gauge | | the slow-start factor of its weight, 0 to 1 |
//!
//! Every metric also carries `namespace` and `service` labels.

use metrics::{Counter, Gauge, Label};

#[cfg(feature = "tonic")]
use crate::outlier::EjectionReason;

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
    /// Answers the source rejected (the xDS source's NACKs).
    pub(crate) rejected_answers: Counter,
    ident: Ident,
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
            rejected_answers: ident
                .counter("cloudmap_balancer_discovery_rejected_answers_total", None),
            ident: ident.clone(),
        }
    }

    /// The counter of changes of source to `to` (`xds`, `cloud_map_fallback`, ...).
    pub(crate) fn source_switch(&self, to: &'static str) -> Counter {
        self.ident.counter(
            "cloudmap_balancer_discovery_source_switches_total",
            Some(("to", to)),
        )
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
    /// One per [`EjectionReason::ALL`], in that order.
    pub(crate) ejections: [Counter; 4],
    pub(crate) retries: Counter,
    pub(crate) transparent_retries: Counter,
    pub(crate) retries_throttled: Counter,
    pub(crate) failed_calls: Counter,
    pub(crate) became_serving: Counter,
    pub(crate) became_not_serving: Counter,
    pub(crate) instances: Gauge,
    pub(crate) eligible: Gauge,
    pub(crate) local_share: Gauge,
    pub(crate) not_serving: Gauge,
    pub(crate) ejected: Gauge,
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
            ejections: EjectionReason::ALL.map(|reason| {
                ident.counter(
                    "cloudmap_balancer_ejections_total",
                    Some(("reason", reason.as_str())),
                )
            }),
            retries: ident.counter("cloudmap_balancer_retries_total", Some(("kind", "policy"))),
            transparent_retries: ident.counter(
                "cloudmap_balancer_retries_total",
                Some(("kind", "transparent")),
            ),
            retries_throttled: ident.counter("cloudmap_balancer_retries_throttled_total", None),
            failed_calls: ident.counter("cloudmap_balancer_failed_calls_total", None),
            became_serving: ident.counter(
                "cloudmap_balancer_health_changes_total",
                Some(("status", "serving")),
            ),
            became_not_serving: ident.counter(
                "cloudmap_balancer_health_changes_total",
                Some(("status", "not-serving")),
            ),
            instances: ident.gauge("cloudmap_balancer_instances"),
            eligible: ident.gauge("cloudmap_balancer_eligible_instances"),
            local_share: ident.gauge("cloudmap_balancer_local_share"),
            not_serving: ident.gauge("cloudmap_balancer_not_serving_instances"),
            ejected: ident.gauge("cloudmap_balancer_ejected_instances"),
        }
    }
}

/// One instance's metrics, registered when the balancer first sees it.
#[cfg(feature = "tonic")]
#[derive(Clone)]
pub(crate) struct InstanceMetrics {
    pub(crate) health: Gauge,
    /// One per [`EjectionReason::ALL`], in that order.
    pub(crate) ejections: [Counter; 4],
    pub(crate) retries: Counter,
    pub(crate) transparent_retries: Counter,
    pub(crate) retries_throttled: Counter,
    pub(crate) slow_start: Gauge,
}

#[cfg(feature = "tonic")]
impl std::fmt::Debug for InstanceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceMetrics").finish_non_exhaustive()
    }
}

#[cfg(feature = "tonic")]
impl InstanceMetrics {
    pub(crate) fn new(
        ident: &Ident,
        instance: &str,
        zone: Option<&str>,
        zone_id: Option<&str>,
    ) -> Self {
        let labels = |extra: Option<(&'static str, &'static str)>| {
            let mut labels = ident.labels();
            labels.push(Label::new("instance", instance.to_owned()));
            labels.push(Label::new("zone", zone.unwrap_or("").to_owned()));
            labels.push(Label::new("zone_id", zone_id.unwrap_or("").to_owned()));
            if let Some((key, value)) = extra {
                labels.push(Label::new(key, value));
            }
            labels
        };
        Self {
            health: metrics::gauge!("cloudmap_balancer_instance_health", labels(None)),
            ejections: EjectionReason::ALL.map(|reason| {
                metrics::counter!(
                    "cloudmap_balancer_instance_ejections_total",
                    labels(Some(("reason", reason.as_str())))
                )
            }),
            retries: metrics::counter!(
                "cloudmap_balancer_instance_retries_total",
                labels(Some(("kind", "policy")))
            ),
            transparent_retries: metrics::counter!(
                "cloudmap_balancer_instance_retries_total",
                labels(Some(("kind", "transparent")))
            ),
            retries_throttled: metrics::counter!(
                "cloudmap_balancer_instance_retries_throttled_total",
                labels(None)
            ),
            slow_start: metrics::gauge!(
                "cloudmap_balancer_instance_slow_start_factor",
                labels(None)
            ),
        }
    }
}
