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

/// A record key, read.
#[derive(Debug, PartialEq, Eq)]
enum Key<'a> {
    Epoch(&'a str),
    Offset {
        group: &'a str,
        topic: &'a str,
        partition: i32,
    },
}

/// Reads a key written by [`epoch_key`] or [`offset_key`].
fn parse_key(key: &str) -> Option<Key<'_>> {
    match key.split_once('/')? {
        ("g", group) => Some(Key::Epoch(group)),
        ("o", rest) => {
            // The group id may hold '/', topic names cannot: split from the right.
            let mut fields = rest.rsplitn(3, '/');
            let (partition, topic, group) = (fields.next()?, fields.next()?, fields.next()?);
            Some(Key::Offset {
                group,
                topic,
                partition: partition.parse().ok()?,
            })
        }
        _ => None,
    }
}

/// Applies one `__consumer_offsets` record; a record without a value (a tombstone) removes
/// what its key names (the group's epoch, or one committed offset).
pub fn apply(groups: &mut BTreeMap<String, Group>, key: &[u8], value: Option<&[u8]>) {
    let Some(parsed) = std::str::from_utf8(key).ok().and_then(parse_key) else {
        tracing::warn!(key = %String::from_utf8_lossy(key), "unknown record in {OFFSETS_TOPIC}");
        return;
    };
    let Some(value) = value else {
        forget(groups, &parsed);
        return;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    match parsed {
        Key::Epoch(group) => {
            if let Ok(epoch) = value.parse::<i32>() {
                let entry = groups
                    .entry(group.to_string())
                    .or_insert_with(|| Group::new(group, epoch));
                entry.epoch = entry.epoch.max(epoch);
                entry.target_epoch = entry.epoch;
            }
        }
        Key::Offset {
            group,
            topic,
            partition,
        } => {
            if let Ok(offset) = value.parse::<i64>() {
                groups
                    .entry(group.to_string())
                    .or_insert_with(|| Group::new(group, 0))
                    .offsets
                    .insert((topic.to_string(), partition), offset);
            }
        }
    }
}

/// Applies a tombstone: the group goes once neither its epoch nor any offset is left.
fn forget(groups: &mut BTreeMap<String, Group>, key: &Key<'_>) {
    let group = match *key {
        Key::Epoch(group) => {
            if let Some(entry) = groups.get_mut(group) {
                entry.epoch = 0;
                entry.target_epoch = 0;
            }
            group
        }
        Key::Offset {
            group,
            topic,
            partition,
        } => {
            if let Some(entry) = groups.get_mut(group) {
                entry.offsets.remove(&(topic.to_string(), partition));
            }
            group
        }
    };
    if groups
        .get(group)
        .is_some_and(|g| g.epoch == 0 && g.offsets.is_empty() && !g.has_members())
    {
        groups.remove(group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_as_written() {
        assert_eq!(parse_key(&epoch_key("a/b")), Some(Key::Epoch("a/b")));
        assert_eq!(
            parse_key(&offset_key("a/b", "orders", 3)),
            Some(Key::Offset {
                group: "a/b",
                topic: "orders",
                partition: 3
            })
        );
        assert_eq!(parse_key("o/g/t/x"), None);
        assert_eq!(parse_key("junk"), None);
    }

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
