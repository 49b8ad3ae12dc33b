//! CloudWatch embedded metric format (EMF): JSON lines on stdout that CloudWatch Logs turns into
//! metrics, with no `PutMetricData` call and no extra permission.
//!
//! One invocation writes:
//!
//! - one line with dimension `Kind` (`task_change`, `reconcile`, `ignored`, `rejected`) and the
//!   metrics `Events`, `Reconciliations`, `Writes`, `Creates`, `Deregistrations`, `Skips`,
//!   `Errors`, `Rejected`;
//! - one line per skip reason, dimensions `Kind` and `Reason`, metric `Skips`;
//! - one line per error class, dimensions `Kind` and `ErrorClass`, metric `Errors`;
//! - one line per attribute key and reason the writes left out, dimensions `Kind`, `Key` and
//!   `Reason`, metric `OmittedAttributes`;
//! - one line per reason writes went out without `AVAILABILITY_ZONE_ID`, dimensions `Kind` and
//!   `Reason`, metric `ZoneIdUnavailable`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::report::{InvocationKind, Report};
use crate::error::SyncError;

/// Renders the EMF lines of one invocation. `failure` is the retryable error that fails it, if
/// any. Pure: the caller writes the lines.
pub fn render(
    namespace: &str,
    report: &Report,
    failure: Option<&SyncError>,
    timestamp: SystemTime,
) -> Vec<String> {
    let millis = timestamp
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let kind = report.kind.as_str();
    let skips = report.skips();
    let mut errors = report.handled_errors.clone();
    if let Some(error) = failure {
        *errors.entry(error.class()).or_insert(0) += 1;
    }
    let flag = |k| u32::from(report.kind == k);
    let totals = [
        ("Events", flag(InvocationKind::TaskChange)),
        ("Reconciliations", flag(InvocationKind::Reconcile)),
        ("Writes", report.writes()),
        ("Creates", report.creates()),
        ("Deregistrations", report.deregistrations()),
        ("Skips", skips.values().sum()),
        ("Errors", errors.values().sum()),
        ("Rejected", flag(InvocationKind::Rejected)),
    ];
    let mut lines = vec![document(namespace, millis, &[("Kind", kind)], &totals)];
    lines.extend(skips.iter().map(|(reason, count)| {
        document(
            namespace,
            millis,
            &[("Kind", kind), ("Reason", reason)],
            &[("Skips", *count)],
        )
    }));
    lines.extend(errors.iter().map(|(class, count)| {
        document(
            namespace,
            millis,
            &[("Kind", kind), ("ErrorClass", class)],
            &[("Errors", *count)],
        )
    }));
    lines.extend(
        report
            .omitted_by_key()
            .iter()
            .map(|((key, reason), count)| {
                document(
                    namespace,
                    millis,
                    &[("Kind", kind), ("Key", key), ("Reason", reason)],
                    &[("OmittedAttributes", *count)],
                )
            }),
    );
    lines.extend(report.zone_id_unavailable.iter().map(|(reason, count)| {
        document(
            namespace,
            millis,
            &[("Kind", kind), ("Reason", reason)],
            &[("ZoneIdUnavailable", *count)],
        )
    }));
    lines
}

fn document(
    namespace: &str,
    millis: u64,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, u32)],
) -> String {
    let mut doc = json!({
        "_aws": {
            "Timestamp": millis,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions.iter().map(|(name, _)| *name).collect::<Vec<_>>()],
                "Metrics": metrics
                    .iter()
                    .map(|(name, _)| json!({"Name": name, "Unit": "Count"}))
                    .collect::<Vec<_>>(),
            }],
        },
    });
    if let Value::Object(members) = &mut doc {
        for (name, value) in dimensions {
            members.insert((*name).to_owned(), json!(value));
        }
        for (name, value) in metrics {
            members.insert((*name).to_owned(), json!(value));
        }
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorKind;
    use crate::observe::report::DecisionRecord;

    fn record(action: &'static str, wrote: bool) -> DecisionRecord {
        DecisionRecord {
            task: "t".into(),
            cloudmap_service: "srv-1".into(),
            instance: "t".into(),
            action,
            wrote,
            old_state: None,
            new_state: Some("RUNNING"),
        }
    }

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn a_reconciliation_with_writes_skips_and_a_failure() {
        let mut report = Report::new(InvocationKind::Reconcile);
        report.decisions = vec![
            record("update", true),
            record("create", true),
            record("deregister_owned", true),
            record("unchanged", false),
            record("unchanged", false),
            record("stale", false),
        ];
        report.handled_error("limits");
        report.omitted.push(crate::observe::OmittedAttribute {
            instance: "t".into(),
            key: "LB_CAPACITY".into(),
            reason: "invalid_value",
        });
        report.zone_id_unavailable("access_denied");
        let failure = SyncError::Aws {
            service: "servicediscovery",
            operation: "RegisterInstance",
            kind: ErrorKind::Retryable,
            code: Some("ThrottlingException".into()),
            source: "throttled".into(),
        };
        let at = UNIX_EPOCH + Duration::from_millis(1_795_356_600_123);
        let lines: Vec<Value> = render("CloudMapSync", &report, Some(&failure), at)
            .iter()
            .map(|l| parse(l))
            .collect();
        assert_eq!(lines.len(), 1 + 2 + 2 + 1 + 1);

        let main = &lines[0];
        assert_eq!(main["_aws"]["Timestamp"], 1_795_356_600_123u64);
        let directive = &main["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "CloudMapSync");
        assert_eq!(directive["Dimensions"], json!([["Kind"]]));
        // The directive names exactly the documented metrics, each a member of the document.
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Events",
                "Reconciliations",
                "Writes",
                "Creates",
                "Deregistrations",
                "Skips",
                "Errors",
                "Rejected",
            ]
        );
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(main[name].is_number(), "{name}");
            assert_eq!(metric["Unit"], "Count");
        }
        assert_eq!(main["Kind"], "reconcile");
        assert_eq!(main["Reconciliations"], 1);
        assert_eq!(main["Events"], 0);
        assert_eq!(main["Writes"], 2);
        assert_eq!(main["Creates"], 1);
        assert_eq!(main["Deregistrations"], 1);
        assert_eq!(main["Skips"], 3);
        assert_eq!(main["Errors"], 2);

        let skip = |reason: &str| lines.iter().find(|l| l["Reason"] == reason).cloned();
        assert_eq!(skip("unchanged").unwrap()["Skips"], 2);
        assert_eq!(skip("stale").unwrap()["Skips"], 1);
        assert_eq!(
            skip("stale").unwrap()["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Kind", "Reason"]])
        );
        let error = |class: &str| lines.iter().find(|l| l["ErrorClass"] == class).cloned();
        assert_eq!(error("aws_retryable").unwrap()["Errors"], 1);
        assert_eq!(error("limits").unwrap()["Errors"], 1);
        let omitted = lines.iter().find(|l| l["Key"] == "LB_CAPACITY").unwrap();
        assert_eq!(omitted["Reason"], "invalid_value");
        assert_eq!(omitted["OmittedAttributes"], 1);
        let zone = lines
            .iter()
            .find(|l| l["ZoneIdUnavailable"].is_number())
            .unwrap();
        assert_eq!(zone["Reason"], "access_denied");
        assert_eq!(zone["ZoneIdUnavailable"], 1);
        assert_eq!(
            omitted["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Kind", "Key", "Reason"]])
        );
    }

    #[test]
    fn a_rejected_payload_is_one_line() {
        let report = Report::new(InvocationKind::Rejected);
        let lines = render("NS", &report, None, UNIX_EPOCH);
        assert_eq!(lines.len(), 1);
        let main = parse(&lines[0]);
        assert_eq!(
            (main["Kind"].as_str(), main["Rejected"].as_u64()),
            (Some("rejected"), Some(1))
        );
        assert_eq!(main["Errors"], 0);
    }
}
