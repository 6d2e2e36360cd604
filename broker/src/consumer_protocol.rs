//! Kafka's consumer protocol: what a consumer puts in its JoinGroup (its subscription) and
//! what the leader hands each member in SyncGroup (its assignment), opaque to the group
//! protocol itself. Weir reads the topics and partitions out of them to show classic groups
//! (members, lag) as it shows its own, and writes them to show its own groups to Kafka's tools.
//!
//! Every version starts with the fields read here (a version, then the topics); later fields
//! (user data, owned partitions, generation, rack) are skipped. Counts on the wire are checked
//! against the bytes left before anything is allocated: a member's metadata is a client's bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(i16::try_from(s.len()).unwrap_or(i16::MAX));
    out.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

/// ConsumerProtocolSubscription v0: the topics, no user data.
pub fn subscription(topics: &[String]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i32(topics.len() as i32);
    for topic in topics {
        put_string(&mut out, topic);
    }
    out.put_i32(-1);
    out.freeze()
}

/// ConsumerProtocolAssignment v0: the partitions of each topic, no user data.
pub fn assignment<'a>(assigned: impl IntoIterator<Item = (&'a str, &'a [i32])>) -> Bytes {
    let assigned: Vec<(&str, &[i32])> = assigned.into_iter().collect();
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i32(assigned.len() as i32);
    for (topic, partitions) in assigned {
        put_string(&mut out, topic);
        out.put_i32(partitions.len() as i32);
        for partition in partitions {
            out.put_i32(*partition);
        }
    }
    out.put_i32(-1);
    out.freeze()
}

/// A count that fits in what is left (each element takes at least `each` bytes).
fn count(buf: &mut &[u8], each: usize) -> Option<usize> {
    if buf.remaining() < 4 {
        return None;
    }
    let n = usize::try_from(buf.get_i32()).ok()?;
    (n.checked_mul(each)? <= buf.remaining()).then_some(n)
}

fn string(buf: &mut &[u8]) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let n = usize::try_from(buf.get_i16()).ok()?;
    if n > buf.remaining() {
        return None;
    }
    let s = std::str::from_utf8(&buf[..n]).ok()?.to_string();
    buf.advance(n);
    Some(s)
}

/// The topics of a ConsumerProtocolSubscription (any version), or `None` if it is not one.
pub fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut buf = metadata;
    if buf.remaining() < 2 || buf.get_i16() < 0 {
        return None;
    }
    let n = count(&mut buf, 2)?;
    (0..n).map(|_| string(&mut buf)).collect()
}

/// The partitions of a ConsumerProtocolAssignment (any version), by topic, or `None` if it
/// is not one. An empty assignment (no bytes) assigns nothing.
pub fn assigned_partitions(assignment: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    if assignment.is_empty() {
        return Some(Vec::new());
    }
    let mut buf = assignment;
    if buf.remaining() < 2 || buf.get_i16() < 0 {
        return None;
    }
    let n = count(&mut buf, 6)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let topic = string(&mut buf)?;
        let partitions = count(&mut buf, 4)?;
        topics.push((topic, (0..partitions).map(|_| buf.get_i32()).collect()));
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let topics = vec!["orders".to_string(), "a.b".to_string()];
        assert_eq!(subscribed_topics(&subscription(&topics)), Some(topics));
        let written = assignment([("orders", &[0, 2][..]), ("x", &[][..])]);
        assert_eq!(
            assigned_partitions(&written),
            Some(vec![("orders".into(), vec![0, 2]), ("x".into(), vec![])])
        );
    }

    #[test]
    fn hostile_counts_are_refused_before_any_allocation() {
        // Version 0, then two billion topics in ten bytes.
        let hostile = [0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 1, b'a', 0];
        assert_eq!(subscribed_topics(&hostile), None);
        assert_eq!(assigned_partitions(&hostile), None);
        assert_eq!(subscribed_topics(&[0, 0, 0, 0, 0, 1]), None);
        assert_eq!(assigned_partitions(&[]), Some(Vec::new()));
    }
}
