//! The sparse indexes of a segment, memory-mapped and preallocated.
//!
//! - `.index`: relative offset (u32) → file position (u32), 8 bytes an entry, one entry per
//!   `index.interval.bytes` of log.
//! - `.timeindex`: max timestamp so far (i64) → relative offset (u32), 12 bytes an entry,
//!   written with the offset index whenever the segment's max timestamp has grown.
//!
//! Both are big-endian, as Kafka's. While its segment is active, a file is mapped with room
//! for `segment.index.bytes` but grows on disk only as entries come, in chunks whose blocks
//! are reserved before they are written (no sparse file whose first write could find the disk
//! full); it is trimmed to its entries when the segment rolls or the log closes, so a closed
//! index's length tells how many entries it holds.

use std::io;
use std::marker::PhantomData;
use std::path::Path;

use crate::mapped::MappedFile;

pub(crate) trait Entry: Copy + std::fmt::Debug {
    const SIZE: usize;
    fn read(bytes: &[u8]) -> Self;
    fn write(&self, bytes: &mut [u8]);
    /// The value entries are sorted by and searched on.
    fn key(&self) -> i64;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn read(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes(b[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
        }
    }
    fn write(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        b[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn key(&self) -> i64 {
        i64::from(self.relative_offset)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) relative_offset: u32,
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn read(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
        }
    }
    fn write(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.timestamp.to_be_bytes());
        b[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn key(&self) -> i64 {
        self.timestamp
    }
}

/// A sorted, append-only array of entries in a mapped file.
#[derive(Debug)]
pub(crate) struct Index<E: Entry> {
    mapped: MappedFile,
    /// Invariant: `entries * E::SIZE <= mapped.allocated()`, and entries are strictly
    /// increasing by key.
    entries: usize,
    _entry: PhantomData<E>,
}

pub(crate) type OffsetIndex = Index<OffsetEntry>;
pub(crate) type TimeIndex = Index<TimeEntry>;

impl<E: Entry> Index<E> {
    /// Creates an empty index that may grow to `capacity` bytes (any old content is dropped).
    /// No disk space is taken until entries are pushed.
    pub(crate) fn create(path: &Path, capacity: usize) -> io::Result<Self> {
        let (mapped, _) = MappedFile::open(path, capacity - capacity % E::SIZE, true)?;
        Ok(Index {
            mapped,
            entries: 0,
            _entry: PhantomData,
        })
    }

    /// Opens a trimmed index whose length gives its entry count. `None` when the file is
    /// missing or its length is not a whole number of entries.
    pub(crate) fn open_trimmed(path: &Path) -> io::Result<Option<Self>> {
        if !path.exists() {
            return Ok(None);
        }
        let (mapped, len) = MappedFile::open(path, 0, false)?;
        if len % E::SIZE != 0 {
            return Ok(None);
        }
        Ok(Some(Index {
            mapped,
            entries: len / E::SIZE,
            _entry: PhantomData,
        }))
    }

    /// An index without entries or file, for a closed segment whose index is lost: lookups
    /// find nothing and scan from the segment's start.
    pub(crate) fn empty(path: &Path) -> Self {
        Index {
            mapped: MappedFile::empty(path),
            entries: 0,
            _entry: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    pub(crate) fn entry(&self, i: usize) -> E {
        E::read(&self.mapped.bytes()[i * E::SIZE..(i + 1) * E::SIZE])
    }

    pub(crate) fn last(&self) -> Option<E> {
        self.entries.checked_sub(1).map(|i| self.entry(i))
    }

    /// Whether the index has grown to its capacity (a full offset index rolls the segment).
    pub(crate) fn is_full(&self) -> bool {
        (self.entries + 1) * E::SIZE > self.capacity()
    }

    fn capacity(&self) -> usize {
        let capacity = self.mapped.capacity();
        capacity - capacity % E::SIZE
    }

    /// Reserves disk space for `additional` more entries (fewer when the capacity ends
    /// first), so that pushing them touches no page without a block.
    ///
    /// # Errors
    /// `ENOSPC` and other I/O errors.
    pub(crate) fn reserve(&mut self, additional: usize) -> io::Result<()> {
        let wanted = ((self.entries + additional) * E::SIZE).min(self.capacity());
        self.mapped.reserve(wanted)
    }

    /// Appends `entry`; the caller has checked `!is_full()` and that its key is the largest.
    ///
    /// # Errors
    /// When disk space for it cannot be reserved (nothing is written then).
    pub(crate) fn push(&mut self, entry: E) -> io::Result<()> {
        debug_assert!(!self.is_full());
        debug_assert!(self.last().is_none_or(|last| last.key() < entry.key()));
        self.reserve(1)?;
        let at = self.entries * E::SIZE;
        entry.write(&mut self.mapped.bytes_mut()[at..at + E::SIZE]);
        self.entries += 1;
        debug_assert!(self.entries * E::SIZE <= self.mapped.allocated());
        Ok(())
    }

    /// The last entry whose key is at most `key`.
    pub(crate) fn floor(&self, key: i64) -> Option<E> {
        // partition_point: the number of entries with key <= target.
        let (mut low, mut high) = (0usize, self.entries);
        while low < high {
            let mid = (low + high) / 2;
            if self.entry(mid).key() <= key {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low.checked_sub(1).map(|i| self.entry(i))
    }

    /// Keeps the first `entries` entries.
    pub(crate) fn truncate_entries(&mut self, entries: usize) {
        self.entries = self.entries.min(entries);
    }

    /// Keeps only the entries `keep` says yes to, which must be a prefix.
    pub(crate) fn truncate_while(&mut self, keep: impl Fn(&E) -> bool) {
        let mut kept = self.entries;
        while kept > 0 && !keep(&self.entry(kept - 1)) {
            kept -= 1;
        }
        self.entries = kept;
    }

    /// Shrinks the file to its entries (when the segment rolls or the log closes).
    pub(crate) fn trim(&mut self) -> io::Result<()> {
        self.mapped.truncate(self.entries * E::SIZE)
    }

    /// Lets the index grow to `capacity` bytes again (when a closed segment becomes active
    /// again); nothing is allocated until entries are pushed.
    pub(crate) fn preallocate(&mut self, capacity: usize) -> io::Result<()> {
        let capacity = (capacity - capacity % E::SIZE).max(self.entries * E::SIZE);
        self.mapped.set_capacity(capacity)
    }

    /// Checks the entries' order; returns a description of the first problem found.
    pub(crate) fn check_order(&self) -> Result<(), String> {
        for i in 1..self.entries {
            let (previous, current) = (self.entry(i - 1), self.entry(i));
            if previous.key() >= current.key() {
                return Err(format!(
                    "entry {i} ({current:?}) does not follow entry {} ({previous:?})",
                    i - 1
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_finds_the_last_entry_at_or_below() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = OffsetIndex::create(&dir.path().join("a.index"), 80).expect("create");
        for (offset, position) in [(0, 0), (10, 100), (20, 200)] {
            index
                .push(OffsetEntry {
                    relative_offset: offset,
                    position,
                })
                .expect("push");
        }
        assert_eq!(index.floor(-1), None);
        assert_eq!(index.floor(0).map(|e| e.position), Some(0));
        assert_eq!(index.floor(15).map(|e| e.position), Some(100));
        assert_eq!(index.floor(99).map(|e| e.position), Some(200));
        assert!(!index.is_full());
        index.trim().expect("trim");
        let reopened = OffsetIndex::open_trimmed(&dir.path().join("a.index"))
            .expect("open")
            .expect("valid");
        assert_eq!(reopened.len(), 3);
        assert_eq!(
            reopened.last(),
            Some(OffsetEntry {
                relative_offset: 20,
                position: 200
            })
        );
    }

    #[test]
    fn a_partial_entry_makes_the_index_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.timeindex");
        std::fs::write(&path, [0u8; 13]).expect("write");
        assert!(TimeIndex::open_trimmed(&path).expect("open").is_none());
    }
}
