//! `LB_RUNNING_SINCE`: when the task turned RUNNING, the moment every client ramps a new task up
//! from (slow start), so it must not depend on which event, or which client, came first.
//!
//! ECS `startedAt` is a static fact of the task: every source that reports it (the event detail,
//! `DescribeTasks`) reports the same instant. When no source does (old events, moto's
//! `DescribeTasks`), the time of an event that reports `lastStatus` RUNNING stands in: that event
//! was emitted when the task turned RUNNING, or later. The value written is the **earliest**
//! candidate seen, the written value included. A minimum is a join (commutative, associative,
//! idempotent), so any delivery order of the same events ends in the same value, and since
//! `startedAt` precedes the events that report it, it wins whenever any source has it.
//!
//! No candidate: no value (a client then ramps nothing: full weight). The decision time is never
//! a candidate: a reconciliation discovering a task that has run for days must not make clients
//! treat it as new.

use std::time::SystemTime;

use crate::events::TaskChange;
use crate::task::LastStatus;

/// The earliest of the candidates, `None` when there is none.
pub(crate) fn earliest(
    candidates: impl IntoIterator<Item = Option<SystemTime>>,
) -> Option<SystemTime> {
    candidates.into_iter().flatten().min()
}

/// What an event offers: its `startedAt`, else its own time when it reports the task RUNNING.
pub(crate) fn from_event(change: &TaskChange) -> Option<SystemTime> {
    change.facts.started_at.or_else(|| {
        change
            .lifecycle
            .filter(|l| l.last == LastStatus::Running)
            .and(change.time)
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;
    use crate::task::{DesiredStatus, Group, Lifecycle, TaskFacts, TaskRef};

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn event(
        last: LastStatus,
        started_at: Option<SystemTime>,
        time: Option<SystemTime>,
    ) -> TaskChange {
        TaskChange {
            task: TaskRef::new("arn:aws:ecs:r:1:task/prod/abc", "prod").unwrap(),
            group: Group::Service("echo".into()),
            version: 4,
            lifecycle: Some(Lifecycle {
                last,
                desired: DesiredStatus::Running,
            }),
            stop_code: None,
            facts: TaskFacts {
                started_at,
                ..TaskFacts::default()
            },
            time,
        }
    }

    #[test]
    fn started_at_first_then_the_time_of_a_running_event() {
        use LastStatus::*;
        assert_eq!(
            from_event(&event(Running, Some(at(10)), Some(at(11)))),
            Some(at(10))
        );
        assert_eq!(
            from_event(&event(Running, None, Some(at(11)))),
            Some(at(11))
        );
        assert_eq!(
            from_event(&event(Stopped, Some(at(10)), Some(at(99)))),
            Some(at(10))
        );
        // Not a RUNNING event: its time says nothing about when the task started.
        assert_eq!(from_event(&event(Pending, None, Some(at(5)))), None);
        assert_eq!(from_event(&event(Deactivating, None, Some(at(50)))), None);
        assert_eq!(from_event(&event(Running, None, None)), None);
    }

    proptest! {
        #[test]
        fn earliest_is_a_join(a in prop::option::of(0u64..9), b in prop::option::of(0u64..9), c in prop::option::of(0u64..9)) {
            let (a, b, c) = (a.map(at), b.map(at), c.map(at));
            prop_assert_eq!(earliest([a, b]), earliest([b, a]));
            prop_assert_eq!(earliest([earliest([a, b]), c]), earliest([a, earliest([b, c])]));
            prop_assert_eq!(earliest([a, a]), a);
        }
    }
}
