//! Availability zone IDs: the subnet's `AvailabilityZoneId` from EC2 `DescribeSubnets`, cached in
//! the warm Lambda (a subnet never moves between zones), so steady state costs no call.
//!
//! The zone ID is enrichment: a lookup that fails (no subnet known, the subnet unknown to EC2, a
//! missing `ec2:DescribeSubnets` permission, throttling, anything else) never stops a write. The
//! instance is written without `AVAILABILITY_ZONE_ID`, the write is counted by reason
//! (`ZoneIdUnavailable`), the failure is logged once per subnet (again only when the reason
//! changes), and the lookup is retried [`RETRY_AFTER`] later, on whichever event or
//! reconciliation needs the subnet next. A failure is never cached for longer.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use cloudmap_balancer::contract::keys;
use tracing::{debug, warn};

use super::Handler;
use crate::decide::{Action, Decision, Mode};
use crate::observe::Report;
use crate::ports::{Clock, Metrics, Registry, Subnets, Tasks, ZoneIdGap};

/// How long a failed lookup is not repeated.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Per subnet: its zone ID, or the last failure and when to try again.
#[derive(Debug, Default)]
pub(crate) struct ZoneIdCache {
    entries: HashMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Known(String),
    Failed {
        gap: ZoneIdGap,
        retry_at: SystemTime,
    },
}

impl ZoneIdCache {
    /// What is known about `subnet` at `now`: the zone ID, or a failure not due for a retry.
    /// `None`: look it up.
    fn get(&self, subnet: &str, now: SystemTime) -> Option<Result<String, ZoneIdGap>> {
        match self.entries.get(subnet)? {
            Entry::Known(id) => Some(Ok(id.clone())),
            Entry::Failed { gap, retry_at } => (now < *retry_at).then_some(Err(*gap)),
        }
    }

    /// Records a lookup's outcome. Returns what changed for the log: `Some(true)` a failure
    /// that is news (first for this subnet, or another reason), `Some(false)` a repeated one,
    /// `None` a success.
    fn put(
        &mut self,
        subnet: &str,
        outcome: &Result<String, ZoneIdGap>,
        now: SystemTime,
    ) -> Option<bool> {
        let entry = match outcome {
            Ok(id) => Entry::Known(id.clone()),
            Err(gap) => Entry::Failed {
                gap: *gap,
                retry_at: now + RETRY_AFTER,
            },
        };
        let before = self.entries.insert(subnet.to_owned(), entry);
        match outcome {
            Ok(_) => None,
            Err(gap) => {
                Some(!matches!(before, Some(Entry::Failed { gap: old, .. }) if old == *gap))
            }
        }
    }
}

/// Whether a write to an instance with these attributes (`None`: none yet) in `mode` could add
/// `AVAILABILITY_ZONE_ID`: it lacks one, or owner mode may create it.
pub(crate) fn wanted(existing: Option<&HashMap<String, String>>, mode: Mode) -> bool {
    match existing {
        Some(attributes) => attributes
            .get(keys::AVAILABILITY_ZONE_ID)
            .is_none_or(|v| v.trim().is_empty()),
        None => matches!(mode, Mode::Owner { .. }),
    }
}

/// Counts a write that goes out without `AVAILABILITY_ZONE_ID` because the lookup failed.
pub(crate) fn count_gap(decision: &Decision, gap: Option<ZoneIdGap>, report: &mut Report) {
    let Some(gap) = gap else {
        return;
    };
    if let Action::Register { attributes, .. } = &decision.action
        && !attributes.as_map().contains_key(keys::AVAILABILITY_ZONE_ID)
    {
        report.zone_id_unavailable(gap.as_str());
    }
}

impl<R: Registry, T: Tasks, M: Metrics, C: Clock, S: Subnets> Handler<R, T, M, C, S> {
    /// The zone ID of `subnet`: from the cache, else from EC2 (and cached). Never an error that
    /// stops the caller: a failure is the reason the zone ID is unknown.
    pub(crate) async fn zone_id(&self, subnet: Option<&str>) -> Result<String, ZoneIdGap> {
        let Some(subnet) = subnet else {
            return Err(ZoneIdGap::NoSubnet);
        };
        let now = self.clock.now();
        if let Some(known) = self.zone_ids().get(subnet, now) {
            return known;
        }
        let looked_up = self.subnets.zone_id(subnet).await;
        let outcome = looked_up.as_ref().map(Clone::clone).map_err(|e| e.gap);
        let news = self.zone_ids().put(subnet, &outcome, now);
        match (&looked_up, news) {
            (Ok(zone_id), _) => debug!(subnet, zone_id, "zone ID looked up"),
            (Err(error), Some(true)) => warn!(
                subnet,
                reason = error.gap.as_str(),
                error = %error,
                source = error.source.as_ref().map(tracing::field::display),
                retry_after_secs = RETRY_AFTER.as_secs(),
                "zone ID unavailable; writing without AVAILABILITY_ZONE_ID"
            ),
            (Err(error), _) => debug!(
                subnet,
                reason = error.gap.as_str(),
                "zone ID still unavailable"
            ),
        }
        outcome
    }

    fn zone_ids(&self) -> std::sync::MutexGuard<'_, ZoneIdCache> {
        self.zone_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn a_zone_id_stays_and_a_failure_waits_for_its_retry() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let mut cache = ZoneIdCache::default();
        assert_eq!(cache.get("subnet-a", t0), None);
        assert_eq!(cache.put("subnet-a", &Ok("euc1-az2".into()), t0), None);
        assert_eq!(
            cache.get("subnet-a", t0 + Duration::from_secs(86_400 * 365)),
            Some(Ok("euc1-az2".into()))
        );

        let denied = Err(ZoneIdGap::AccessDenied);
        assert_eq!(
            cache.put("subnet-b", &denied, t0),
            Some(true),
            "first: logged"
        );
        assert_eq!(
            cache.get("subnet-b", t0 + RETRY_AFTER - Duration::from_secs(1)),
            Some(denied.clone())
        );
        assert_eq!(cache.get("subnet-b", t0 + RETRY_AFTER), None, "due again");
        assert_eq!(
            cache.put("subnet-b", &denied, t0 + RETRY_AFTER),
            Some(false),
            "same: not logged again"
        );
        assert_eq!(
            cache.put("subnet-b", &Err(ZoneIdGap::Throttled), t0 + RETRY_AFTER * 2),
            Some(true),
            "another reason: logged"
        );
        assert_eq!(
            cache.put("subnet-b", &Ok("euc1-az1".into()), t0 + RETRY_AFTER * 3),
            None
        );
        assert_eq!(cache.get("subnet-b", t0), Some(Ok("euc1-az1".into())));
    }

    #[test]
    fn only_a_write_that_could_add_the_key_wants_it() {
        let with = HashMap::from([(keys::AVAILABILITY_ZONE_ID.to_owned(), "euc1-az2".to_owned())]);
        let blank = HashMap::from([(keys::AVAILABILITY_ZONE_ID.to_owned(), " ".to_owned())]);
        assert!(!wanted(Some(&with), Mode::Enrich));
        assert!(wanted(Some(&blank), Mode::Enrich));
        assert!(wanted(Some(&HashMap::new()), Mode::Enrich));
        assert!(!wanted(None, Mode::Enrich), "enrich mode never creates");
        assert!(wanted(None, Mode::Owner { port: 1 }));
    }
}
