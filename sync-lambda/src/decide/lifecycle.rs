//! Combining observations of a task's lifecycle: the join that makes delivery order irrelevant.
//!
//! An observation is a contract state and the ECS version it was seen at. The written
//! `LB_STATE`/`LB_TASK_VERSION` pair is one such element, so the next decision joins it with the
//! event's and `DescribeTasks`' observations.
//!
//! The order: a further state is above an earlier one; for the same state, an **earlier**
//! version is above a later one, and an unknown version is below every known one. The join (the
//! maximum in that order) is therefore "the furthest state, labelled with the first version at
//! which it was seen". Versions of later events of the same state (PENDING after PROVISIONING,
//! STOPPING after DEACTIVATING, a health change while RUNNING) lose to the first one, so they
//! change nothing that is written: only a state change moves the pair.

use cloudmap_balancer::contract::LbState;

use crate::task::{LastStatus, Lifecycle};

/// Position of a state in the lifecycle: its index in [`LbState::ALL`], which lists the states
/// in lifecycle order (always `Some`). ECS moves a task only forwards (`lastStatus` never goes
/// back, `desiredStatus` only goes from RUNNING to STOPPED), and
/// [`crate::task::Lifecycle::phase`] is monotone, so a later observation never has a lower rank.
fn rank(state: LbState) -> Option<usize> {
    LbState::ALL.iter().position(|&s| s == state)
}

/// Whether `a` comes before `b` in the lifecycle.
pub(crate) fn earlier(a: LbState, b: LbState) -> bool {
    rank(a) < rank(b)
}

/// One observation: the state, and the ECS version of the task it was seen at (`None` when the
/// source does not say: moto's `DescribeTasks`, a task ECS has forgotten, an older write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Observed {
    pub(crate) state: LbState,
    pub(crate) version: Option<u64>,
}

impl Observed {
    /// What a lifecycle seen at `version` says.
    ///
    /// A task told to stop before it ran is DRAINING from that moment, but an instance (ECS's or
    /// an owner-mode one) exists only once it runs. Such an observation names the state but not
    /// its first version: otherwise a late one, delivered after the instance appeared, would
    /// label DRAINING with a version that in-order delivery never had an instance to write.
    pub(crate) fn of(lifecycle: Lifecycle, version: Option<u64>) -> Self {
        let state = lifecycle.phase();
        let ran = lifecycle.last >= LastStatus::Running;
        Self {
            state,
            version: version.filter(|_| state != LbState::Draining || ran),
        }
    }
}

/// The join of the observations: the furthest state, and the smallest known version among the
/// observations of that state (`None` when none of them knows it). `None` when nothing was
/// observed.
///
/// This is a join of a semilattice (commutative, associative, idempotent): combining
/// observations in any order, any number of times, gives the same pair.
pub(crate) fn join(observations: impl IntoIterator<Item = Option<Observed>>) -> Option<Observed> {
    observations
        .into_iter()
        .flatten()
        .fold(None, |acc: Option<Observed>, next| match acc {
            None => Some(next),
            Some(acc) if rank(next.state) > rank(acc.state) => Some(next),
            Some(acc) if rank(next.state) < rank(acc.state) => Some(acc),
            Some(acc) => Some(Observed {
                state: acc.state,
                version: match (acc.version, next.version) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            }),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use LbState::*;
    use proptest::prelude::*;

    fn seen(state: LbState, version: Option<u64>) -> Option<Observed> {
        Some(Observed { state, version })
    }

    fn observation() -> impl Strategy<Value = Option<Observed>> {
        prop::option::of(
            (
                prop::sample::select(LbState::ALL.to_vec()),
                prop::option::of(1u64..6),
            )
                .prop_map(|(state, version)| Observed { state, version }),
        )
    }

    #[test]
    fn the_furthest_state_wins() {
        assert_eq!(
            join([seen(Running, Some(4)), seen(Starting, Some(9))]),
            seen(Running, Some(4))
        );
        assert_eq!(
            join([seen(Draining, None), None, seen(Running, Some(7))]),
            seen(Draining, None)
        );
        assert_eq!(join([None, None]), None);
        // The order comes from `LbState::ALL`: pin it.
        let ranks = [Starting, Running, Draining, Stopped].map(rank);
        assert_eq!(ranks, [Some(0), Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn within_a_state_the_first_known_version_wins() {
        // DEACTIVATING (6), STOPPING (7), STOPPED (8): all STOPPED, labelled 6 in any order.
        let stopped = [
            seen(Stopped, Some(8)),
            seen(Stopped, Some(6)),
            seen(Stopped, Some(7)),
        ];
        assert_eq!(join(stopped), seen(Stopped, Some(6)));
        // An unknown version never replaces a known one, and is replaced by one.
        assert_eq!(
            join([seen(Stopped, None), seen(Stopped, Some(7))]),
            seen(Stopped, Some(7))
        );
        assert_eq!(
            join([seen(Stopped, Some(7)), seen(Stopped, None)]),
            seen(Stopped, Some(7))
        );
    }

    #[test]
    fn told_to_stop_before_it_ran_names_draining_without_a_version() {
        use crate::task::DesiredStatus;
        let l = |last| Lifecycle {
            last,
            desired: DesiredStatus::Stopped,
        };
        assert_eq!(
            Observed::of(l(LastStatus::Pending), Some(2)),
            Observed {
                state: Draining,
                version: None
            }
        );
        assert_eq!(
            Observed::of(l(LastStatus::Running), Some(3)).version,
            Some(3)
        );
        assert_eq!(
            Observed::of(l(LastStatus::Stopping), Some(8)).version,
            Some(8)
        );
    }

    proptest! {
        #[test]
        fn join_is_a_semilattice(a in observation(), b in observation(), c in observation()) {
            prop_assert_eq!(join([a, b]), join([b, a]));
            prop_assert_eq!(join([join([a, b]), c]), join([a, join([b, c])]));
            prop_assert_eq!(join([a, a]), a);
            prop_assert_eq!(join([a, b, c]), join([join([a, b]), c]));
        }
    }
}
