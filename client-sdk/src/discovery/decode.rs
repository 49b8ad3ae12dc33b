//! The boundary: Cloud Map instances (ID, attribute map, Cloud Map health) into [`Instance`]s,
//! with a record of everything that could not be used as it was. Nothing is dropped silently:
//!
//! - an instance without a usable address (`AWS_INSTANCE_IPV4` or `AWS_INSTANCE_IPV6`) or
//!   `AWS_INSTANCE_PORT` cannot be called.
//!   It is left out of the instances and listed in [`Listing::unroutable`] with the reason;
//! - an instance with odd attribute values is kept, each value decoded as the
//!   [contract](crate::contract) documents, and listed in [`Listing::attribute_problems`];
//! - an unrecognised `LB_STATE` on an instance that says it follows this contract version
//!   (`LB_SCHEMA` 1) cannot come from a newer contract: it is a typo or a corrupted write
//!   (`DRAINNG`). The instance is taken as `DRAINING`: it finishes what it has, gets nothing new,
//!   and panic mode may still pick it, so a fleet-wide typo does not black-hole the service.
//!   Without `LB_SCHEMA`, or under a newer one, the contract's rule stands: eligible, so that a
//!   state a newer Lambda introduces cannot take a fleet out of service during a rollout.

use crate::contract::{
    AttributeProblem, AttributeSource, InstanceAttributes, LbState, SCHEMA_VERSION, keys,
};
use crate::instance::{CloudMapHealth, Instance, Unroutable};

use super::source::Listing;

/// A listed instance that cannot be called, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnroutableInstance {
    /// The Cloud Map instance ID.
    pub id: String,
    /// What is missing.
    pub reason: Unroutable,
    /// Its odd attribute values (the unusable address or port among them).
    pub problems: Vec<AttributeProblem>,
}

/// An instance in service whose attributes were not all understood.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttributeProblems {
    /// The Cloud Map instance ID.
    pub id: String,
    /// The odd values, and how each was decoded.
    pub problems: Vec<AttributeProblem>,
    /// `LB_STATE` was not recognised under `LB_SCHEMA` 1, so the instance is taken as
    /// `DRAINING` (see [discovery](super), "Odd answers").
    pub taken_as_draining: bool,
}

impl Listing {
    /// Decodes Cloud Map instances (ID, attributes, Cloud Map health status) into a listing at
    /// `revision`, exactly as [`CloudMapSource`](super::CloudMapSource) does: instances that
    /// cannot be called go to [`Listing::unroutable`], odd values to
    /// [`Listing::attribute_problems`], and an unrecognised `LB_STATE` under `LB_SCHEMA` 1
    /// makes the instance `DRAINING`.
    pub fn decode<'a, A: AttributeSource + 'a>(
        revision: Option<i64>,
        entries: impl IntoIterator<Item = (&'a str, &'a A, CloudMapHealth)>,
    ) -> Self {
        let mut instances = Vec::new();
        let mut unroutable = Vec::new();
        let mut attribute_problems = Vec::new();
        let mut carries_lb_health = true;
        let mut any = false;
        for (id, attributes, health) in entries {
            any = true;
            carries_lb_health &= attributes.attribute(keys::LB_HEALTH).is_some();
            let (decoded, problems) = InstanceAttributes::decode_with_problems(attributes);
            match Instance::from_attributes(id, attributes, health) {
                Err(reason) => unroutable.push(UnroutableInstance {
                    id: id.to_owned(),
                    reason,
                    problems,
                }),
                Ok(instance) => {
                    let taken_as_draining = state_is_a_typo(&decoded, &problems);
                    let instance = if taken_as_draining {
                        instance.with_state(LbState::Draining)
                    } else {
                        instance
                    };
                    if !problems.is_empty() {
                        attribute_problems.push(AttributeProblems {
                            id: id.to_owned(),
                            problems,
                            taken_as_draining,
                        });
                    }
                    instances.push(instance);
                }
            }
        }
        Self::from_parts(
            revision,
            instances,
            unroutable,
            attribute_problems,
            any && carries_lb_health,
        )
    }
}

/// Whether `LB_STATE` was present but not recognised on an instance written under a contract
/// version this crate knows.
fn state_is_a_typo(decoded: &InstanceAttributes, problems: &[AttributeProblem]) -> bool {
    decoded.state.is_none()
        && decoded.schema.is_some_and(|v| v <= SCHEMA_VERSION)
        && problems.iter().any(|p| p.key == keys::LB_STATE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::contract::ProblemKind;

    fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = [
            (keys::AWS_INSTANCE_IPV4, "10.0.0.1"),
            (keys::AWS_INSTANCE_PORT, "50051"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in pairs {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        map
    }

    fn decode(entries: &[(&str, BTreeMap<String, String>)]) -> Listing {
        Listing::decode(
            Some(7),
            entries
                .iter()
                .map(|(id, a)| (*id, a, CloudMapHealth::Healthy)),
        )
    }

    #[test]
    fn an_unusable_port_is_listed_as_unroutable_with_the_reason() {
        let listing = decode(&[
            ("ok", attributes(&[])),
            ("bad", attributes(&[(keys::AWS_INSTANCE_PORT, "abc")])),
        ]);
        assert_eq!(listing.instances().len(), 1);
        assert_eq!(listing.instances()[0].id, "ok");
        let [bad] = listing.unroutable() else {
            panic!("{:?}", listing.unroutable())
        };
        assert_eq!(bad.id, "bad");
        assert_eq!(bad.reason, Unroutable::NoPort);
        assert_eq!(bad.problems[0].key, keys::AWS_INSTANCE_PORT);
        assert_eq!(bad.problems[0].value, "abc");
        assert!(!listing.is_empty());
    }

    #[test]
    fn a_typo_in_the_state_under_schema_1_is_reported_and_taken_as_draining() {
        let listing = decode(&[(
            "typo",
            attributes(&[(keys::LB_STATE, "DRAINNG"), (keys::LB_SCHEMA, "1")]),
        )]);
        assert_eq!(listing.instances()[0].state, Some(LbState::Draining));
        let [report] = listing.attribute_problems() else {
            panic!("{:?}", listing.attribute_problems())
        };
        assert!(report.taken_as_draining);
        assert_eq!(report.problems[0].key, keys::LB_STATE);
        assert_eq!(report.problems[0].value, "DRAINNG");
        assert_eq!(report.problems[0].kind, ProblemKind::Ignored);
    }

    #[test]
    fn an_unknown_state_from_a_newer_or_no_schema_stays_eligible_but_is_reported() {
        for schema in [Some("2"), None] {
            let mut attrs = attributes(&[(keys::LB_STATE, "WARMING")]);
            if let Some(schema) = schema {
                attrs.insert(keys::LB_SCHEMA.to_owned(), schema.to_owned());
            }
            let listing = decode(&[("new", attrs)]);
            assert_eq!(listing.instances()[0].state, None, "{schema:?}");
            let report = &listing.attribute_problems()[0];
            assert!(!report.taken_as_draining);
            assert!(report.problems.iter().any(|p| p.key == keys::LB_STATE));
        }
    }

    #[test]
    fn clean_instances_report_nothing_and_lb_health_is_noticed() {
        let listing = decode(&[
            ("a", attributes(&[(keys::LB_HEALTH, "HEALTHY")])),
            ("b", attributes(&[(keys::LB_HEALTH, "UNKNOWN")])),
        ]);
        assert!(listing.attribute_problems().is_empty());
        assert!(listing.unroutable().is_empty());
        assert!(listing.carries_lb_health());
        let mixed = decode(&[
            ("a", attributes(&[(keys::LB_HEALTH, "HEALTHY")])),
            ("b", attributes(&[])),
        ]);
        assert!(!mixed.carries_lb_health());
        assert!(!decode(&[]).carries_lb_health());
        assert!(decode(&[]).is_empty());
    }

    #[test]
    fn instances_come_out_ordered_by_id() {
        let listing = decode(&[("c", attributes(&[])), ("a", attributes(&[]))]);
        let ids: Vec<&str> = listing.instances().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(listing.revision(), Some(7));
    }
}
