//! Which zone an instance is in, as the picker compares zones.
//!
//! Zone names are per account: `eu-central-1a` in two accounts can be different physical zones.
//! AZ IDs (`euc1-az2`) are the same in every account. So zones are compared **by ID when both
//! sides know theirs, and by name otherwise**:
//!
//! - an instance's ID is its `AVAILABILITY_ZONE_ID`, or, when it has none, the ID another
//!   instance of the snapshot with the same `AVAILABILITY_ZONE` carries (instances of one
//!   service share one account's names);
//! - instances are grouped by that ID when there is one, by name otherwise;
//! - a zone is the caller's own when both IDs are known and equal, or, when either ID is
//!   unknown, when the names are equal.
//!
//! A caller that knows no ID of its own, and instances that carry none (a Lambda from before
//! `AVAILABILITY_ZONE_ID`), match by name, as before.

use std::collections::HashMap;

use super::Locality;
use crate::instance::Instance;

/// How the picker groups an instance: by AZ ID when known, else by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ZoneKey {
    /// An AZ ID, e.g. `euc1-az2`.
    Id(String),
    /// A zone name, when no ID is known.
    Name(String),
}

/// One instance's zone: the key it is grouped by, and its name and ID as far as known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ZoneOf {
    pub(crate) key: Option<ZoneKey>,
    pub(crate) name: Option<String>,
    pub(crate) id: Option<String>,
}

/// The zone of each of `instances`, IDs filled in from the instances' own name → ID pairs.
pub(crate) fn zones_of(instances: &[Instance]) -> Vec<ZoneOf> {
    let mut ids: HashMap<&str, &str> = HashMap::new();
    for instance in instances {
        if let (Some(name), Some(id)) = (instance.zone.as_deref(), instance.zone_id.as_deref()) {
            ids.entry(name).or_insert(id);
        }
    }
    instances
        .iter()
        .map(|instance| {
            let name = instance.zone.clone();
            let id = instance.zone_id.clone().or_else(|| {
                name.as_deref()
                    .and_then(|n| ids.get(n))
                    .map(|&id| id.to_owned())
            });
            let key = id
                .clone()
                .map(ZoneKey::Id)
                .or_else(|| name.clone().map(ZoneKey::Name));
            ZoneOf { key, name, id }
        })
        .collect()
}

/// Where a zone (`name`, `id`) is relative to the caller's (`local_name`, `local_id`).
pub(crate) fn locality(
    local_name: Option<&str>,
    local_id: Option<&str>,
    name: Option<&str>,
    id: Option<&str>,
) -> Locality {
    let same = |a: &str, b: &str| {
        if a == b {
            Locality::Local
        } else {
            Locality::Remote
        }
    };
    match (local_id, id) {
        (Some(local), Some(id)) => same(local, id),
        _ => match (local_name, name) {
            (Some(local), Some(name)) => same(local, name),
            _ => Locality::Unknown,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(zone: Option<&str>, id: Option<&str>) -> Instance {
        let mut i = Instance::new("i", "127.0.0.1:1".parse().unwrap());
        i.zone = zone.map(str::to_owned);
        i.zone_id = id.map(str::to_owned);
        i
    }

    #[test]
    fn ids_are_filled_in_from_the_instances_own_names() {
        let zones = zones_of(&[
            instance(Some("eu-central-1a"), Some("euc1-az2")),
            instance(Some("eu-central-1a"), None),
            instance(Some("eu-central-1b"), None),
            instance(None, Some("euc1-az3")),
            instance(None, None),
        ]);
        let keys: Vec<Option<ZoneKey>> = zones.iter().map(|z| z.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                Some(ZoneKey::Id("euc1-az2".into())),
                Some(ZoneKey::Id("euc1-az2".into())),
                Some(ZoneKey::Name("eu-central-1b".into())),
                Some(ZoneKey::Id("euc1-az3".into())),
                None,
            ]
        );
    }

    #[test]
    fn ids_when_both_sides_know_them_names_otherwise() {
        // Account A calls account B: the same name is another physical zone.
        assert_eq!(
            locality(
                Some("eu-central-1a"),
                Some("euc1-az2"),
                Some("eu-central-1a"),
                Some("euc1-az1")
            ),
            Locality::Remote
        );
        assert_eq!(
            locality(
                Some("eu-central-1a"),
                Some("euc1-az2"),
                Some("eu-central-1b"),
                Some("euc1-az2")
            ),
            Locality::Local
        );
        // Either ID unknown: names.
        assert_eq!(
            locality(
                Some("eu-central-1a"),
                None,
                Some("eu-central-1a"),
                Some("euc1-az1")
            ),
            Locality::Local
        );
        assert_eq!(
            locality(
                Some("eu-central-1a"),
                Some("euc1-az2"),
                Some("eu-central-1a"),
                None
            ),
            Locality::Local
        );
        assert_eq!(
            locality(None, Some("euc1-az2"), Some("eu-central-1a"), None),
            Locality::Unknown
        );
        assert_eq!(locality(None, None, None, Some("x")), Locality::Unknown);
    }
}
