//! The records of `__consumer_offsets`, replayed into groups (text, so a dump of the topic
//! reads plainly):
//! - key `o/{group}/{topic}/{partition}`, value: the committed offset;
//! - key `g/{group}`, value: the group's epoch (for classic members: its generation), so
//!   epochs and generations keep rising across restarts.
//!
//! A record without a value (a tombstone) removes what its key names.

use std::collections::BTreeMap;

use super::OFFSETS_TOPIC;
use crate::group::Group;

/// The record key of a group's epoch.
pub fn epoch_key(group: &str) -> String {
    format!("g/{group}")
}

/// The record key of a group's committed offset of one partition.
pub fn offset_key(group: &str, topic: &str, partition: i32) -> String {
    format!("o/{group}/{topic}/{partition}")
}

/// Applies one `__consumer_offsets` record; a record without a value (a tombstone) removes
/// what its key names (the group's epoch, or one committed offset).
pub fn apply(groups: &mut BTreeMap<String, Group>, key: &[u8], value: Option<&[u8]>) {
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    let Some(value) = value else {
        forget(groups, key);
        return;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    let mut parts = key.splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some("g"), Some(group)) => {
            if let Ok(epoch) = value.parse::<i32>() {
                let entry = groups
                    .entry(group.to_string())
                    .or_insert_with(|| Group::new(group, epoch));
                entry.epoch = entry.epoch.max(epoch);
                entry.target_epoch = entry.epoch;
            }
        }
        (Some("o"), Some(rest)) => {
            // The group id may hold '/', topic names cannot: split from the right.
            let mut fields = rest.rsplitn(3, '/');
            let (Some(partition), Some(topic), Some(group)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return;
            };
            if let (Ok(partition), Ok(offset)) = (partition.parse::<i32>(), value.parse::<i64>()) {
                groups
                    .entry(group.to_string())
                    .or_insert_with(|| Group::new(group, 0))
                    .offsets
                    .insert((topic.to_string(), partition), offset);
            }
        }
        _ => tracing::warn!(key, "unknown record in {OFFSETS_TOPIC}"),
    }
}

/// Applies a tombstone: the group goes once neither its epoch nor any offset is left.
fn forget(groups: &mut BTreeMap<String, Group>, key: &str) {
    let mut parts = key.splitn(2, '/');
    let group = match (parts.next(), parts.next()) {
        (Some("g"), Some(group)) => {
            if let Some(entry) = groups.get_mut(group) {
                entry.epoch = 0;
                entry.target_epoch = 0;
            }
            group.to_string()
        }
        (Some("o"), Some(rest)) => {
            let mut fields = rest.rsplitn(3, '/');
            let (Some(partition), Some(topic), Some(group)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return;
            };
            if let (Some(entry), Ok(partition)) = (groups.get_mut(group), partition.parse()) {
                entry.offsets.remove(&(topic.to_string(), partition));
            }
            group.to_string()
        }
        _ => return,
    };
    if groups
        .get(&group)
        .is_some_and(|g| g.epoch == 0 && g.offsets.is_empty() && !g.has_members())
    {
        groups.remove(&group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_replay_into_offsets_and_epochs() {
        let mut groups = BTreeMap::new();
        apply(&mut groups, b"g/billing", Some(b"7"));
        apply(&mut groups, b"o/billing/orders/3", Some(b"42"));
        apply(&mut groups, b"o/a/b/c/orders/0", Some(b"5"));
        apply(&mut groups, b"o/billing/orders/3", Some(b"43"));
        apply(&mut groups, b"junk", Some(b"1"));
        assert_eq!(groups["billing"].epoch, 7);
        assert_eq!(groups["billing"].offsets[&("orders".to_string(), 3)], 43);
        assert_eq!(groups["a/b/c"].offsets[&("orders".to_string(), 0)], 5);
    }

    #[test]
    fn tombstones_delete_a_group_on_replay() {
        let mut groups = BTreeMap::new();
        apply(&mut groups, b"g/gone", Some(b"3"));
        apply(&mut groups, b"o/gone/orders/0", Some(b"10"));
        apply(&mut groups, b"o/gone/orders/1", Some(b"11"));
        apply(&mut groups, b"o/kept/orders/0", Some(b"1"));
        apply(&mut groups, b"o/gone/orders/0", None);
        assert!(groups.contains_key("gone"), "one offset left");
        apply(&mut groups, b"g/gone", None);
        apply(&mut groups, b"o/gone/orders/1", None);
        assert!(!groups.contains_key("gone"));
        assert_eq!(groups["kept"].offsets.len(), 1);
    }
}
