//! The leader-epoch checkpoint: which leader epoch began at which offset (Kafka's
//! `leader-epoch-checkpoint`, KIP-101 and KIP-279).
//!
//! File format, as Kafka's: a version line `0`, a count line, then `epoch start_offset` lines.

use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::LogError;

pub(crate) const FILE_NAME: &str = "leader-epoch-checkpoint";

/// Epoch `epoch` wrote the log from `start_offset` until the next entry's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug)]
pub(crate) struct EpochCache {
    dir: PathBuf,
    /// Invariant: strictly increasing in both epoch and start offset.
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub(crate) fn load(dir: &Path) -> Result<Self, LogError> {
        let mut cache = EpochCache {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        };
        let Some(text) = checkpoint::read(dir, FILE_NAME)? else {
            return Ok(cache);
        };
        let malformed = |reason: String| LogError::MalformedCheckpoint {
            path: dir.join(FILE_NAME),
            reason,
        };
        let mut lines = text.lines();
        match lines.next() {
            Some("0") => {}
            other => {
                return Err(malformed(format!(
                    "version line is {other:?}, expected \"0\""
                )));
            }
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| malformed("missing entry count".into()))?;
        for line in lines.by_ref().take(count) {
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(start), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed(format!("bad entry line {line:?}")));
            };
            let entry = EpochEntry {
                epoch: epoch
                    .parse()
                    .map_err(|_| malformed(format!("bad epoch in {line:?}")))?,
                start_offset: start
                    .parse()
                    .map_err(|_| malformed(format!("bad offset in {line:?}")))?,
            };
            if cache
                .entries
                .last()
                .is_some_and(|l| l.epoch >= entry.epoch || l.start_offset >= entry.start_offset)
            {
                return Err(malformed(format!(
                    "entry {line:?} is not after the previous one"
                )));
            }
            cache.entries.push(entry);
        }
        if cache.entries.len() != count {
            return Err(malformed(format!(
                "declares {count} entries, holds {}",
                cache.entries.len()
            )));
        }
        Ok(cache)
    }

    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`. Entries it contradicts (a later or equal
    /// epoch, or a start at or after this one) are dropped first, as Kafka does.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        if epoch < 0
            || self
                .latest()
                .is_some_and(|l| l.epoch == epoch && l.start_offset <= start_offset)
        {
            return Ok(());
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()
    }

    /// Kafka's `endOffsetFor`: the largest epoch at most `epoch` and the offset where the next
    /// epoch starts (the log end offset for the latest epoch). `None` when unknown.
    pub(crate) fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let latest = self.latest()?;
        if epoch == latest.epoch {
            return Some((epoch, log_end_offset));
        }
        let higher = self.entries.iter().find(|e| e.epoch > epoch)?;
        match self.entries.iter().rev().find(|e| e.epoch <= epoch) {
            Some(floor) => Some((floor.epoch, higher.start_offset)),
            None => Some((epoch, higher.start_offset)),
        }
    }

    /// Drops entries that start at or after `end_offset` (the log was truncated there).
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), LogError> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        if self.entries.len() != before {
            self.persist()
        } else {
            Ok(())
        }
    }

    /// Moves the first entries up to the new log start offset.
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), LogError> {
        let covering = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset);
        let Some(covering) = covering else {
            return Ok(());
        };
        if covering == 0 && self.entries[0].start_offset == start_offset {
            return Ok(());
        }
        self.entries.drain(..covering);
        self.entries[0].start_offset = start_offset;
        self.persist()
    }

    pub(crate) fn clear(&mut self) -> Result<(), LogError> {
        self.entries.clear();
        self.persist()
    }

    fn persist(&self) -> Result<(), LogError> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        checkpoint::write(&self.dir, FILE_NAME, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(entries: &[(i32, i64)]) -> (tempfile::TempDir, EpochCache) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = EpochCache::load(dir.path()).expect("load");
        for &(epoch, start) in entries {
            cache.assign(epoch, start).expect("assign");
        }
        (dir, cache)
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let (_dir, cache) = cache_with(&[(1, 0), (3, 100), (6, 250)]);
        assert_eq!(cache.end_offset_for(6, 400), Some((6, 400)));
        assert_eq!(cache.end_offset_for(3, 400), Some((3, 250)));
        // An epoch the log never saw: the floor epoch and where the next one starts.
        assert_eq!(cache.end_offset_for(4, 400), Some((3, 250)));
        assert_eq!(cache.end_offset_for(0, 400), Some((0, 0)));
        assert_eq!(cache.end_offset_for(7, 400), None);
    }

    #[test]
    fn survives_reload_and_truncation() {
        let (dir, mut cache) = cache_with(&[(1, 0), (3, 100), (6, 250)]);
        cache.truncate_from_end(250).expect("truncate");
        cache.truncate_from_start(50).expect("truncate");
        let reloaded = EpochCache::load(dir.path()).expect("reload");
        assert_eq!(
            reloaded.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 50
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 100
                }
            ]
        );
    }

    #[test]
    fn a_conflicting_assignment_replaces_later_entries() {
        let (_dir, mut cache) = cache_with(&[(1, 0), (3, 100)]);
        cache.assign(2, 50).expect("assign");
        assert_eq!(
            cache.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 50
                }
            ]
        );
    }

    #[test]
    fn a_malformed_checkpoint_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE_NAME), "0\n2\n1 0\n").expect("write");
        assert!(matches!(
            EpochCache::load(dir.path()),
            Err(LogError::MalformedCheckpoint { .. })
        ));
    }
}
