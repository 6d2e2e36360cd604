//! The history checker of ../shared/TESTING.md §4: every send a test makes is logged as
//! acknowledged (at its offset), definitely failed (the broker refused it before writing it)
//! or unknown (a timeout, a lost connection, written on the leader but not enough replicas);
//! every read of the partition is logged too. After the faults heal and the partition is
//! drained, [`History::check`] holds the log against what the partition holds.

use std::collections::{BTreeMap, BTreeSet};

use weir_client::{ClientError, Reason};

/// How one send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this offset.
    Ok(i64),
    /// Refused before it was written: it must never be seen.
    Failed,
    /// May or may not have been written.
    Unknown,
}

impl Outcome {
    /// The outcome of one attempt (a producer without retries) that failed with `error`.
    pub fn of_error(error: &ClientError) -> Outcome {
        // Refusals a broker makes before it appends anything.
        let refused_before_writing = matches!(
            error.reason(),
            Some(
                Reason::NotEnoughReplicas
                    | Reason::NotLeader
                    | Reason::FencedLeaderEpoch
                    | Reason::UnknownLeaderEpoch
                    | Reason::LeaderNotAvailable
                    | Reason::OutOfOrderSequence
                    | Reason::InvalidRecord
                    | Reason::RecordTooLarge
                    | Reason::BrokerStarting
            )
        );
        if refused_before_writing {
            Outcome::Failed
        } else {
            Outcome::Unknown
        }
    }
}

/// What a test did and saw on one partition written by one producer, values `v-<sequence>`.
#[derive(Debug, Default)]
pub struct History {
    sends: BTreeMap<u64, Outcome>,
    /// Each read: the (offset, sequence) pairs it returned, below the high watermark.
    reads: Vec<Vec<(i64, u64)>>,
}

/// What the drained partition and the log add up to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub acknowledged: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Unknown sends found written.
    pub unknown_written: usize,
}

pub fn value(sequence: u64) -> String {
    format!("v-{sequence}")
}

fn sequence_of(value: &str) -> Option<u64> {
    value.strip_prefix("v-")?.parse().ok()
}

impl History {
    pub fn sent(&mut self, sequence: u64, outcome: Outcome) {
        self.sends.insert(sequence, outcome);
    }

    /// A read from `from`: values at consecutive offsets.
    pub fn read(&mut self, from: i64, values: &[String]) {
        let read = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((from + i as i64, sequence_of(v)?)))
            .collect();
        self.reads.push(read);
    }

    pub fn acknowledged(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.sends.iter().filter_map(|(s, o)| match o {
            Outcome::Ok(offset) => Some((*s, *offset)),
            _ => None,
        })
    }

    /// Checks `drained` (the whole partition from offset 0 after every fault healed) against
    /// the log:
    /// 1. one value per offset (the drained list itself), and offsets never go backwards
    ///    across reads: a value read at an offset is there later;
    /// 2. every acknowledged send is present at its acknowledged offset;
    /// 3. no value twice;
    /// 4. no value of a definitely failed send;
    /// 5. sequence order is offset order (one producer, idempotent).
    ///
    /// # Errors
    /// Every violation found, described.
    pub fn check(&self, drained: &[String]) -> Result<Summary, Vec<String>> {
        let mut problems = Vec::new();
        let held: Vec<Option<u64>> = drained.iter().map(|v| sequence_of(v)).collect();
        if let Some(i) = held.iter().position(Option::is_none) {
            problems.push(format!(
                "offset {i} holds {:?}, not a value of this test",
                drained[i]
            ));
        }
        let held: Vec<u64> = held.into_iter().flatten().collect();
        for (sequence, offset) in self.acknowledged() {
            if held.get(offset as usize) != Some(&sequence) {
                problems.push(format!(
                    "lost: v-{sequence} was acknowledged at offset {offset}, which holds {:?}",
                    held.get(offset as usize)
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (offset, sequence) in held.iter().enumerate() {
            if !seen.insert(*sequence) {
                problems.push(format!("duplicated: v-{sequence} again at offset {offset}"));
            }
            if self.sends.get(sequence) == Some(&Outcome::Failed) {
                problems.push(format!(
                    "v-{sequence} definitely failed, yet is at offset {offset}"
                ));
            }
        }
        if let Some(w) = held.windows(2).find(|w| w[0] >= w[1]) {
            problems.push(format!("out of order: v-{} before v-{}", w[0], w[1]));
        }
        for (i, read) in self.reads.iter().enumerate() {
            for (offset, sequence) in read {
                if held.get(*offset as usize) != Some(sequence) {
                    problems.push(format!(
                        "read {i} saw v-{sequence} at offset {offset}, later gone (now {:?})",
                        held.get(*offset as usize)
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let count =
            |wanted: fn(&Outcome) -> bool| self.sends.values().filter(|o| wanted(o)).count();
        Ok(Summary {
            acknowledged: count(|o| matches!(o, Outcome::Ok(_))),
            failed: count(|o| *o == Outcome::Failed),
            unknown: count(|o| *o == Outcome::Unknown),
            unknown_written: self
                .sends
                .iter()
                .filter(|(s, o)| **o == Outcome::Unknown && seen.contains(s))
                .count(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(sequences: &[u64]) -> Vec<String> {
        sequences.iter().map(|s| value(*s)).collect()
    }

    #[test]
    fn a_good_history_passes_and_each_violation_is_named() {
        let mut history = History::default();
        history.sent(0, Outcome::Ok(0));
        history.sent(1, Outcome::Unknown);
        history.sent(2, Outcome::Failed);
        history.sent(3, Outcome::Ok(2));
        history.read(0, &values(&[0, 1]));
        let summary = history.check(&values(&[0, 1, 3])).expect("fine");
        assert_eq!(summary.unknown_written, 1);

        let lost = history.check(&values(&[0, 1])).expect_err("v-3 lost");
        assert!(lost.iter().any(|p| p.starts_with("lost: v-3")), "{lost:?}");
        let failed_seen = history.check(&values(&[0, 1, 3, 2])).expect_err("v-2 seen");
        assert!(
            failed_seen.iter().any(|p| p.contains("definitely failed")),
            "{failed_seen:?}"
        );
        let twice = history.check(&values(&[0, 1, 3, 3])).expect_err("twice");
        assert!(
            twice.iter().any(|p| p.starts_with("duplicated")),
            "{twice:?}"
        );
        let mut gone = History::default();
        gone.sent(0, Outcome::Unknown);
        gone.read(0, &values(&[0]));
        let problems = gone.check(&[]).expect_err("read, then gone");
        assert!(
            problems.iter().any(|p| p.contains("later gone")),
            "{problems:?}"
        );
    }
}
