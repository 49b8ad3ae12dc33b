//! Events in: every payload the function accepts, parsed once into an [`Invocation`].
//!
//! The payload is read as JSON first and dispatched on `source` and `detail-type`, so that a
//! payload of an unexpected shape is a value to log, never a deserialisation failure of the
//! runtime (which Lambda would retry for nothing). What is accepted:
//!
//! | payload | becomes |
//! |---|---|
//! | EventBridge, `source` `aws.ecs`, `detail-type` `ECS Task State Change` | [`Invocation::TaskChange`] |
//! | EventBridge, `source` `aws.ecs`, any other `detail-type` (service actions, deployments, container instances) | [`Invocation::Ignored`] |
//! | EventBridge, `source` `aws.events`, `detail-type` `Scheduled Event` (a schedule rule) | [`Invocation::Reconcile`] of everything configured |
//! | `{"action": "reconcile"}` (on demand, or an EventBridge Scheduler payload) | [`Invocation::Reconcile`] of everything configured |
//! | `{"action": "reconcile", "cluster": "C", "service": "S"}` | [`Invocation::Reconcile`] of one ECS service |
//! | anything else | [`Invocation::Rejected`] with the reason |
//!
//! The task state change detail is typed ([`TaskStateDetail`] inside `aws_lambda_events`'
//! `EventBridgeEvent`) but every field of it is lenient; [`TaskChange::from_detail`] then checks
//! that the three fields it cannot do without (task ARN, cluster, version) are there.

mod ecs_task;
mod lenient;

use std::fmt;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use cloudmap_balancer::contract::parse_rfc3339;
use serde_json::Value;

pub use ecs_task::{
    Attachment, Container, NameValue, NetworkInterface, TaskChange, TaskStateDetail,
};

/// `detail-type` of ECS task state change events.
pub const TASK_STATE_CHANGE: &str = "ECS Task State Change";
/// `detail-type` of EventBridge schedule rules.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// What one invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// A task changed state.
    TaskChange(Box<TaskChange>),
    /// Reconcile Cloud Map with ECS.
    Reconcile(ReconcileScope),
    /// A well-formed event this function does not act on (another ECS detail-type).
    Ignored {
        /// `source`.
        source: String,
        /// `detail-type`.
        detail_type: String,
    },
    /// A payload that cannot be acted on, and why. Logged once and acknowledged: retrying
    /// would not make it better.
    Rejected(Rejection),
}

/// Which services a reconciliation covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileScope {
    /// Every configured cluster's services with registries, and every owner-mode mapping.
    All,
    /// One ECS service.
    Service {
        /// Cluster name or ARN.
        cluster: String,
        /// Service name.
        service: String,
    },
}

/// Why a payload was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a JSON object.
    NotAnObject,
    /// An object that is neither an EventBridge event nor a known action.
    UnknownShape,
    /// An EventBridge event from a source or of a type this function does not handle.
    UnknownEvent {
        /// `source`.
        source: String,
        /// `detail-type`.
        detail_type: String,
    },
    /// `{"action": ...}` with an action other than `reconcile`.
    UnknownAction(String),
    /// A reconcile action naming a cluster without a service, or the reverse.
    IncompleteScope,
    /// The event's `detail` is not an object.
    MalformedDetail(String),
    /// No task ARN in `detail.taskArn` or `resources`.
    MissingTaskArn,
    /// No cluster ARN, and an old-format task ARN without the cluster segment.
    MissingCluster,
    /// No `detail.version`: the event cannot be ordered against others.
    MissingVersion,
    /// The task ID (the ARN's last segment) cannot be a Cloud Map instance ID (1 to 64
    /// characters of `0-9 a-z A-Z _ / : . @ -`), so no instance can carry it: the value, cut to
    /// 64 characters.
    InvalidTaskId(String),
}

impl Rejection {
    /// A short stable name, for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotAnObject => "not_an_object",
            Self::UnknownShape => "unknown_shape",
            Self::UnknownEvent { .. } => "unknown_event",
            Self::UnknownAction(_) => "unknown_action",
            Self::IncompleteScope => "incomplete_scope",
            Self::MalformedDetail(_) => "malformed_detail",
            Self::MissingTaskArn => "missing_task_arn",
            Self::MissingCluster => "missing_cluster",
            Self::MissingVersion => "missing_version",
            Self::InvalidTaskId(_) => "invalid_task_id",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAnObject => f.write_str("the payload is not a JSON object"),
            Self::UnknownShape => {
                f.write_str("the payload is neither an EventBridge event nor an action")
            }
            Self::UnknownEvent {
                source,
                detail_type,
            } => write!(f, "no handler for {source:?} / {detail_type:?}"),
            Self::UnknownAction(action) => write!(f, "unknown action {action:?}"),
            Self::IncompleteScope => {
                f.write_str("a reconcile action needs both `cluster` and `service`, or neither")
            }
            Self::MalformedDetail(why) => write!(f, "the event detail is malformed: {why}"),
            Self::MissingTaskArn => f.write_str("the event names no task ARN"),
            Self::MissingCluster => f.write_str("the event names no cluster"),
            Self::MissingVersion => f.write_str("the event has no detail.version"),
            Self::InvalidTaskId(id) => write!(
                f,
                "the task ID {id:?} cannot be a Cloud Map instance ID (1 to 64 characters of 0-9 a-z A-Z _ / : . @ -)"
            ),
        }
    }
}

/// Parses a payload. Never fails: what cannot be used is an [`Invocation::Rejected`].
pub fn parse(payload: Value) -> Invocation {
    let Value::Object(object) = &payload else {
        return Invocation::Rejected(Rejection::NotAnObject);
    };
    if let Some(action) = object.get("action") {
        return parse_action(action, object);
    }
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    let (Some(source), Some(detail_type)) = (text("source"), text("detail-type")) else {
        return Invocation::Rejected(Rejection::UnknownShape);
    };
    match (source.as_str(), detail_type.as_str()) {
        ("aws.ecs", TASK_STATE_CHANGE) => parse_task_change(payload),
        ("aws.ecs", _) => Invocation::Ignored {
            source,
            detail_type,
        },
        ("aws.events", SCHEDULED_EVENT) => Invocation::Reconcile(ReconcileScope::All),
        _ => Invocation::Rejected(Rejection::UnknownEvent {
            source,
            detail_type,
        }),
    }
}

fn parse_action(action: &Value, object: &serde_json::Map<String, Value>) -> Invocation {
    let action = action.as_str().unwrap_or_default().trim();
    if !action.eq_ignore_ascii_case("reconcile") {
        return Invocation::Rejected(Rejection::UnknownAction(action.chars().take(64).collect()));
    }
    let text = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match (text("cluster"), text("service")) {
        (None, None) => Invocation::Reconcile(ReconcileScope::All),
        (Some(cluster), Some(service)) => {
            Invocation::Reconcile(ReconcileScope::Service { cluster, service })
        }
        _ => Invocation::Rejected(Rejection::IncompleteScope),
    }
}

fn parse_task_change(mut payload: Value) -> Invocation {
    // Read before the typed parse, which may drop a malformed `time` below.
    let time = payload
        .get("time")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339);
    if !payload["detail"].is_object() {
        return Invocation::Rejected(Rejection::MalformedDetail(
            "`detail` is not an object".into(),
        ));
    }
    let event = match serde_json::from_value::<EventBridgeEvent<TaskStateDetail>>(payload.clone()) {
        Ok(event) => event,
        Err(_) => {
            // The envelope's optional fields (`time`, `resources`, ...) are informational; a
            // malformed one must not lose the event. Parse again without them.
            if let Value::Object(object) = &mut payload {
                for key in ["version", "id", "account", "time", "region", "resources"] {
                    object.remove(key);
                }
            }
            match serde_json::from_value::<EventBridgeEvent<TaskStateDetail>>(payload) {
                Ok(event) => event,
                Err(error) => {
                    return Invocation::Rejected(Rejection::MalformedDetail(error.to_string()));
                }
            }
        }
    };
    let resources = event.resources.unwrap_or_default();
    match TaskChange::from_detail(&event.detail, &resources) {
        Ok(change) => Invocation::TaskChange(Box::new(TaskChange { time, ..change })),
        Err(rejection) => Invocation::Rejected(rejection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task_event(detail: &Value) -> Value {
        json!({
            "version": "0", "id": "e1", "detail-type": TASK_STATE_CHANGE, "source": "aws.ecs",
            "account": "123456789012", "time": "2026-11-22T14:10:00Z", "region": "eu-central-1",
            "resources": ["arn:aws:ecs:eu-central-1:123456789012:task/prod/abc"],
            "detail": detail
        })
    }

    #[test]
    fn dispatches_on_source_and_detail_type() {
        let change = parse(task_event(&json!({"clusterArn": "prod", "version": 1})));
        assert!(matches!(change, Invocation::TaskChange(c) if c.task.id == "abc"));

        let scheduled =
            json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        assert_eq!(parse(scheduled), Invocation::Reconcile(ReconcileScope::All));

        let service_action =
            json!({"source": "aws.ecs", "detail-type": "ECS Service Action", "detail": {}});
        assert!(matches!(parse(service_action), Invocation::Ignored { .. }));

        let other =
            json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"});
        assert_eq!(
            parse(other).rejection().map(Rejection::as_str),
            Some("unknown_event")
        );
    }

    #[test]
    fn on_demand_actions() {
        assert_eq!(
            parse(json!({"action": "reconcile"})),
            Invocation::Reconcile(ReconcileScope::All)
        );
        assert_eq!(
            parse(json!({"action": "Reconcile", "cluster": "prod", "service": "echo"})),
            Invocation::Reconcile(ReconcileScope::Service {
                cluster: "prod".into(),
                service: "echo".into()
            })
        );
        assert_eq!(
            parse(json!({"action": "reconcile", "cluster": "prod"})).rejection(),
            Some(&Rejection::IncompleteScope)
        );
        assert_eq!(
            parse(json!({"action": "explode"})).rejection(),
            Some(&Rejection::UnknownAction("explode".into()))
        );
    }

    #[test]
    fn shapes_that_are_not_events_are_rejected_not_errors() {
        for payload in [json!(null), json!([1, 2]), json!("reconcile"), json!(42)] {
            assert_eq!(parse(payload).rejection(), Some(&Rejection::NotAnObject));
        }
        assert_eq!(
            parse(json!({"hello": "world"})).rejection(),
            Some(&Rejection::UnknownShape)
        );
        let bad_detail = task_event(&json!("not an object"));
        assert_eq!(
            parse(bad_detail).rejection().map(Rejection::as_str),
            Some("malformed_detail")
        );
    }

    #[test]
    fn a_malformed_envelope_field_does_not_lose_the_event() {
        let detail = json!({"taskArn": "arn:aws:ecs:r:1:task/prod/abc", "version": 4});
        let mut event = task_event(&detail);
        event["time"] = json!("yesterday");
        event["resources"] = json!("not a list");
        assert!(
            matches!(parse(event), Invocation::TaskChange(c) if c.version == 4 && c.time.is_none())
        );
    }

    #[test]
    fn the_event_time_is_kept() {
        let event = task_event(&json!({"clusterArn": "prod", "version": 1}));
        let Invocation::TaskChange(change) = parse(event) else {
            panic!("not a task change");
        };
        assert_eq!(change.time, parse_rfc3339("2026-11-22T14:10:00Z"));
    }

    impl Invocation {
        fn rejection(&self) -> Option<&Rejection> {
            match self {
                Self::Rejected(r) => Some(r),
                _ => None,
            }
        }
    }
}
