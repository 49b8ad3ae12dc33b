//! Availability zone IDs, cached in the warm Lambda so that steady state costs no call:
//!
//! - a task with a subnet (awsvpc: Fargate, EC2, Managed Instances): the subnet's
//!   `AvailabilityZoneId` from EC2 `DescribeSubnets`, cached per subnet (a subnet never moves
//!   between zones);
//! - a task without one (EC2 or Managed Instances in bridge or host mode): its zone name
//!   (`availabilityZone`) through the name → ID map of `DescribeAvailabilityZones`, one call per
//!   account and region. Zone names are per account, and the call answers for the function's own
//!   account and region only, so the map is used only for a task `DescribeTasks` describes
//!   (which proves it is the function's account's, in its region) and keyed by the account and
//!   region of the task's ARN. A name the map lacks (a zone added since) refreshes the map, at most
//!   once per [`RETRY_AFTER`].
//!
//! The subnet is used where there is one: it names the zone exactly, and its lookup was the only
//! source before the name map; a failed subnet lookup does not fall back to the name.
//!
//! The zone ID is enrichment: a lookup that fails (no subnet or zone known, the subnet or zone
//! unknown to EC2, a task ECS does not describe, a missing `ec2:DescribeSubnets` or
//! `ec2:DescribeAvailabilityZones` permission, throttling, anything else) never stops a write.
//! The instance is written without `AVAILABILITY_ZONE_ID`, the write is counted by reason
//! (`ZoneIdUnavailable`), the failure is logged once per subnet or region (again only when the
//! reason changes), and the lookup is retried [`RETRY_AFTER`] later, on whichever event or
//! reconciliation needs it next. A failure is never cached for longer.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use cloudmap_balancer::contract::keys;
use tracing::{debug, warn};

use super::Handler;
use crate::decide::{Action, Decision, Mode};
use crate::observe::Report;
use crate::ports::{Clock, Metrics, Registry, Tasks, ZoneIdGap, Zones};

/// How long a failed lookup is not repeated.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Per subnet: its zone ID, or the last failure and when to try again. Per account and region:
/// the zone name → ID map, or the last failure.
#[derive(Debug, Default)]
pub(crate) struct ZoneIdCache {
    entries: HashMap<String, Entry>,
    regions: HashMap<(String, String), RegionEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RegionEntry {
    Known {
        zones: HashMap<String, String>,
        /// When a name the map lacks may refresh it.
        refresh_at: SystemTime,
    },
    Failed {
        gap: ZoneIdGap,
        retry_at: SystemTime,
    },
}

/// Where a task's zone ID can come from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ZoneSource<'a> {
    /// The ENI's subnet.
    pub(crate) subnet: Option<&'a str>,
    /// The zone name (`availabilityZone`).
    pub(crate) zone: Option<&'a str>,
    /// The account and region of the task's ARN, when `DescribeTasks` describes the task: then
    /// they are the function's own, whose zone names `DescribeAvailabilityZones` maps.
    pub(crate) home: Option<(&'a str, &'a str)>,
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

impl ZoneIdCache {
    /// What the map of `region` says about `zone` at `now`. `None`: fetch the map.
    fn zone(
        &self,
        region: &(String, String),
        zone: &str,
        now: SystemTime,
    ) -> Option<Result<String, ZoneIdGap>> {
        match self.regions.get(region)? {
            RegionEntry::Known { zones, refresh_at } => match zones.get(zone) {
                Some(id) => Some(Ok(id.clone())),
                None => (now < *refresh_at).then_some(Err(ZoneIdGap::ZoneNotFound)),
            },
            RegionEntry::Failed { gap, retry_at } => (now < *retry_at).then_some(Err(*gap)),
        }
    }

    /// Records a fetch of `region`'s map. Returns whether a failure is news (as
    /// [`ZoneIdCache::put`]); `None` for a success.
    fn put_region(
        &mut self,
        region: (String, String),
        outcome: Result<HashMap<String, String>, ZoneIdGap>,
        now: SystemTime,
    ) -> Option<bool> {
        let (entry, gap) = match outcome {
            Ok(zones) => (
                RegionEntry::Known {
                    zones,
                    refresh_at: now + RETRY_AFTER,
                },
                None,
            ),
            Err(gap) => (
                RegionEntry::Failed {
                    gap,
                    retry_at: now + RETRY_AFTER,
                },
                Some(gap),
            ),
        };
        let before = self.regions.insert(region, entry);
        gap.map(|gap| !matches!(before, Some(RegionEntry::Failed { gap: old, .. }) if old == gap))
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

impl<R: Registry, T: Tasks, M: Metrics, C: Clock, S: Zones> Handler<R, T, M, C, S> {
    /// The zone ID of a task: its subnet's (see the module docs), else its zone name's. Never an
    /// error that stops the caller: a failure is the reason the zone ID is unknown.
    pub(crate) async fn zone_id(&self, source: ZoneSource<'_>) -> Result<String, ZoneIdGap> {
        match (source.subnet, source.zone) {
            (Some(subnet), _) => self.subnet_zone_id(subnet).await,
            (None, Some(zone)) => match source.home {
                Some((account, region)) => self.named_zone_id(account, region, zone).await,
                None => Err(ZoneIdGap::TaskUnknown),
            },
            (None, None) => Err(ZoneIdGap::NoZone),
        }
    }

    /// The zone ID of `subnet`: from the cache, else from EC2 (and cached).
    async fn subnet_zone_id(&self, subnet: &str) -> Result<String, ZoneIdGap> {
        let now = self.clock.now();
        if let Some(known) = self.zone_ids().get(subnet, now) {
            return known;
        }
        let looked_up = self.zones.zone_id(subnet).await;
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

    /// The zone ID of the zone named `zone` in `account` and `region` (the function's own):
    /// from the cached map, else from EC2's (and cached).
    async fn named_zone_id(
        &self,
        account: &str,
        region: &str,
        zone: &str,
    ) -> Result<String, ZoneIdGap> {
        let key = (account.to_owned(), region.to_owned());
        let now = self.clock.now();
        if let Some(known) = self.zone_ids().zone(&key, zone, now) {
            return known;
        }
        let fetched = self.zones.zone_ids().await;
        let outcome = fetched.as_ref().map(Clone::clone).map_err(|e| e.gap);
        let news = self.zone_ids().put_region(key.clone(), outcome, now);
        match (&fetched, news) {
            (Ok(zones), _) if !zones.contains_key(zone) => warn!(
                account,
                region,
                zone,
                zones = zones.len(),
                refresh_after_secs = RETRY_AFTER.as_secs(),
                "zone name not among the account's zones; writing without AVAILABILITY_ZONE_ID"
            ),
            (Ok(zones), _) => debug!(account, region, zones = zones.len(), "zone names mapped"),
            (Err(error), Some(true)) => warn!(
                account,
                region,
                zone,
                reason = error.gap.as_str(),
                error = %error,
                source = error.source.as_ref().map(tracing::field::display),
                retry_after_secs = RETRY_AFTER.as_secs(),
                "zone ID unavailable; writing without AVAILABILITY_ZONE_ID"
            ),
            (Err(error), _) => debug!(
                account,
                region,
                reason = error.gap.as_str(),
                "zone IDs still unavailable"
            ),
        }
        let found = self.zone_ids().zone(&key, zone, now);
        match found {
            Some(answer) => answer,
            // Just fetched, so the entry is there; a name missing from a fresh map is unknown.
            None => Err(ZoneIdGap::ZoneNotFound),
        }
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
    fn a_zone_map_answers_its_names_and_refreshes_for_a_new_one_at_most_once_per_interval() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let home = ("123456789012".to_owned(), "eu-central-1".to_owned());
        let mut cache = ZoneIdCache::default();
        assert_eq!(cache.zone(&home, "eu-central-1a", t0), None, "fetch");
        let zones = HashMap::from([("eu-central-1a".to_owned(), "euc1-az2".to_owned())]);
        assert_eq!(cache.put_region(home.clone(), Ok(zones), t0), None);
        let later = t0 + Duration::from_secs(86_400);
        assert_eq!(
            cache.zone(&home, "eu-central-1a", later),
            Some(Ok("euc1-az2".into())),
            "a known name never expires"
        );
        assert_eq!(
            cache.zone(
                &home,
                "eu-central-1d",
                t0 + RETRY_AFTER - Duration::from_secs(1)
            ),
            Some(Err(ZoneIdGap::ZoneNotFound))
        );
        assert_eq!(
            cache.zone(&home, "eu-central-1d", t0 + RETRY_AFTER),
            None,
            "an unknown name refreshes the map once the interval is past"
        );
        let other = ("210987654321".to_owned(), "eu-central-1".to_owned());
        assert_eq!(cache.zone(&other, "eu-central-1a", t0), None, "per account");

        assert_eq!(
            cache.put_region(other.clone(), Err(ZoneIdGap::AccessDenied), t0),
            Some(true)
        );
        assert_eq!(
            cache.zone(&other, "eu-central-1a", t0),
            Some(Err(ZoneIdGap::AccessDenied))
        );
        assert_eq!(cache.zone(&other, "eu-central-1a", t0 + RETRY_AFTER), None);
        assert_eq!(
            cache.put_region(other, Err(ZoneIdGap::AccessDenied), t0 + RETRY_AFTER),
            Some(false),
            "the same failure again: not news"
        );
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
