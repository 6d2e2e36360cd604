//! Idempotent producers: per partition, the last batches of each producer id, so that a batch
//! retried after a lost answer is recognised and not written twice, and a gap in a producer's
//! sequence is refused (as Kafka, which keeps five).

use std::collections::{HashMap, VecDeque};

use weir_proto::Reason;
use weir_storage::BatchHeader;

/// Batches remembered per producer: a producer has at most this many requests in flight.
pub const BATCHES_KEPT: usize = weir_proto::MAX_IN_FLIGHT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMeta {
    first_sequence: i32,
    last_sequence: i32,
    first_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Default)]
struct Entry {
    epoch: i16,
    /// Oldest first; at most `BATCHES_KEPT`.
    batches: VecDeque<BatchMeta>,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Append it.
    Append,
    /// Already written at these offsets: answer with them and write nothing.
    Duplicate { first_offset: i64, last_offset: i64 },
    /// Its sequence is ahead of the producer's next one: earlier batches are still to come.
    Early,
}

/// The producers a partition has seen.
#[derive(Debug, Default)]
pub struct Producers {
    entries: HashMap<i64, Entry>,
}

/// The sequence after `sequence`, wrapping to 0 after `i32::MAX` as Kafka's does.
fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

fn last_sequence(header: &BatchHeader) -> i32 {
    let last = i64::from(header.base_sequence) + i64::from(header.last_offset_delta);
    (last % (i64::from(i32::MAX) + 1)) as i32
}

impl Producers {
    /// Decides what to do with a batch before it is appended.
    ///
    /// # Errors
    /// `InvalidProducerEpoch` for an epoch older than the producer's; `OutOfOrderSequence`
    /// for a sequence that does not follow the producer's last batch.
    pub fn check(&self, header: &BatchHeader) -> Result<Check, (Reason, String)> {
        if header.producer_id < 0 {
            return Ok(Check::Append);
        }
        let Some(entry) = self.entries.get(&header.producer_id) else {
            // A producer's first batch starts at sequence 0; a later one waits for it (a
            // pipelining producer's batches can arrive out of order).
            return Ok(if header.base_sequence == 0 {
                Check::Append
            } else {
                Check::Early
            });
        };
        if header.producer_epoch < entry.epoch {
            return Err((
                Reason::InvalidProducerEpoch,
                format!(
                    "producer {} epoch {} is older than its epoch {}",
                    header.producer_id, header.producer_epoch, entry.epoch
                ),
            ));
        }
        if header.producer_epoch > entry.epoch {
            return if header.base_sequence == 0 {
                Ok(Check::Append)
            } else {
                Err((
                    Reason::OutOfOrderSequence,
                    format!(
                        "a new producer epoch starts at sequence 0, not {}",
                        header.base_sequence
                    ),
                ))
            };
        }
        let last = last_sequence(header);
        if let Some(seen) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last)
        {
            return Ok(Check::Duplicate {
                first_offset: seen.first_offset,
                last_offset: seen.last_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| next_sequence(b.last_sequence));
        // A batch sent while its predecessors are still on the way (a pipelining producer):
        // its turn may come.
        let ahead = i64::from(header.base_sequence) - i64::from(expected);
        if (1..i64::from(i32::MAX) / 2).contains(&ahead) {
            return Ok(Check::Early);
        }
        if header.base_sequence != expected {
            return Err((
                Reason::OutOfOrderSequence,
                format!(
                    "producer {} sent sequence {}; the next one is {expected}",
                    header.producer_id, header.base_sequence
                ),
            ));
        }
        Ok(Check::Append)
    }

    /// Remembers a batch written at its header's offsets.
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let entry = self.entries.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence(header),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        while entry.batches.len() > BATCHES_KEPT {
            entry.batches.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        records: i32,
        base_offset: i64,
    ) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut producers = Producers::default();
        for (sequence, offset) in [(0, 0), (3, 3), (6, 6)] {
            let h = header(7, 0, sequence, 3, offset);
            assert_eq!(producers.check(&h), Ok(Check::Append));
            producers.record(&h);
        }
        assert_eq!(
            producers.check(&header(7, 0, 3, 3, 99)),
            Ok(Check::Duplicate {
                first_offset: 3,
                last_offset: 5
            })
        );
        assert_eq!(producers.check(&header(7, 0, 9, 1, 99)), Ok(Check::Append));
        assert_eq!(
            producers.check(&header(7, 0, 12, 1, 99)),
            Ok(Check::Early),
            "ahead: may wait for its turn"
        );
        assert_eq!(
            producers.check(&header(7, 0, 4, 1, 99)).map_err(|e| e.0),
            Err(Reason::OutOfOrderSequence),
            "behind and not a retry"
        );
        assert_eq!(
            producers.check(&header(8, 0, 40, 1, 99)),
            Ok(Check::Early),
            "an unknown producer's later batch waits for its first"
        );
        assert_eq!(producers.check(&header(8, 0, 0, 1, 99)), Ok(Check::Append));
        assert_eq!(
            producers.check(&header(-1, -1, -1, 1, 99)),
            Ok(Check::Append)
        );
    }

    #[test]
    fn epochs_fence_old_producers_and_restart_sequences() {
        let mut producers = Producers::default();
        producers.record(&header(7, 2, 0, 1, 0));
        assert_eq!(
            producers.check(&header(7, 1, 1, 1, 1)).map_err(|e| e.0),
            Err(Reason::InvalidProducerEpoch)
        );
        assert_eq!(producers.check(&header(7, 3, 0, 1, 1)), Ok(Check::Append));
        assert_eq!(
            producers.check(&header(7, 3, 5, 1, 1)).map_err(|e| e.0),
            Err(Reason::OutOfOrderSequence)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut producers = Producers::default();
        for i in 0..7 {
            producers.record(&header(7, 0, i, 1, i64::from(i)));
        }
        assert_eq!(
            producers.check(&header(7, 0, 1, 1, 0)).map_err(|e| e.0),
            Err(Reason::OutOfOrderSequence)
        );
        assert!(matches!(
            producers.check(&header(7, 0, 2, 1, 0)),
            Ok(Check::Duplicate { .. })
        ));
        producers.record(&header(9, 0, i32::MAX, 1, 100));
        assert_eq!(producers.check(&header(9, 0, 0, 1, 101)), Ok(Check::Append));
    }
}
