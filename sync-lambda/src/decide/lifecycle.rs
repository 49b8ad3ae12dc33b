//! Combining observations of a task's lifecycle: the join that makes delivery order irrelevant.

use cloudmap_balancer::contract::LbState;

/// Position of a state in the lifecycle: its index in [`LbState::ALL`], which lists the states
/// in lifecycle order (always `Some`). ECS moves a task only forwards (`lastStatus` never goes
/// back, `desiredStatus` only goes from RUNNING to STOPPED), and
/// [`crate::task::Lifecycle::phase`] is monotone, so a later observation never has a lower rank.
fn rank(state: LbState) -> Option<usize> {
    LbState::ALL.iter().position(|&s| s == state)
}

/// The furthest-along of the observed states, `None` when nothing was observed.
///
/// This is a join (commutative, associative, idempotent): combining observations in any order,
/// any number of times, gives the same state.
pub(crate) fn join(states: impl IntoIterator<Item = Option<LbState>>) -> Option<LbState> {
    states.into_iter().flatten().max_by_key(|&s| rank(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state() -> impl Strategy<Value = Option<LbState>> {
        prop::option::of(prop::sample::select(LbState::ALL.to_vec()))
    }

    #[test]
    fn the_furthest_state_wins() {
        use LbState::*;
        assert_eq!(join([Some(Running), Some(Starting)]), Some(Running));
        assert_eq!(join([Some(Draining), None, Some(Running)]), Some(Draining));
        assert_eq!(join([Some(Stopped), Some(Draining)]), Some(Stopped));
        assert_eq!(join([None, None]), None);
        // The order comes from `LbState::ALL`: pin it.
        let ranks = [Starting, Running, Draining, Stopped].map(rank);
        assert_eq!(ranks, [Some(0), Some(1), Some(2), Some(3)]);
    }

    proptest! {
        #[test]
        fn join_is_a_semilattice(a in state(), b in state(), c in state()) {
            prop_assert_eq!(join([a, b]), join([b, a]));
            prop_assert_eq!(join([join([a, b]), c]), join([a, join([b, c])]));
            prop_assert_eq!(join([a, a]), a);
        }
    }
}
