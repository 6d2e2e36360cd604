//! The open files of segments: a segment's log file and its two mapped indexes.
//!
//! The active segment of a log owns its files for as long as it is active. A closed segment
//! opens them only when it is read, through a [`SegmentFileCache`] shared by every log of a
//! broker, which keeps the most recently read ones open up to its capacity and closes the
//! least recently read beyond it. So a broker's descriptors (and memory maps) grow with its
//! active segments and the cache's capacity, not with every segment it holds.

use std::fs::{File, OpenOptions};
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::LogError;
use crate::index::{OffsetIndex, TimeIndex};

/// The capacity of the cache logs use when their owner gives none.
const DEFAULT_CAPACITY: usize = 1000;

/// A segment's open files.
#[derive(Debug)]
pub(crate) struct SegmentFiles {
    pub(crate) log: Arc<File>,
    pub(crate) offset_index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
}

impl SegmentFiles {
    /// Opens a closed segment's files: the log read-only, the trimmed indexes. An index that
    /// is missing or damaged since the segment was opened is replaced by an empty one in
    /// memory (reads then scan from the segment's start; nothing is written).
    pub(crate) fn open_closed(log_path: &Path) -> Result<SegmentFiles, LogError> {
        let log = OpenOptions::new()
            .read(true)
            .open(log_path)
            .map_err(|source| LogError::OpenSegment {
                path: log_path.to_path_buf(),
                source,
            })?;
        let index_path = log_path.with_extension(crate::layout::INDEX_SUFFIX);
        let time_path = log_path.with_extension(crate::layout::TIME_INDEX_SUFFIX);
        let offset_index = match OffsetIndex::open_trimmed(&index_path) {
            Ok(Some(index)) => index,
            outcome => {
                tracing::warn!(index = %index_path.display(), ?outcome, "a closed segment's index is gone or damaged; reading without it");
                OffsetIndex::empty(&index_path)
            }
        };
        let time_index = match TimeIndex::open_trimmed(&time_path) {
            Ok(Some(index)) => index,
            outcome => {
                tracing::warn!(index = %time_path.display(), ?outcome, "a closed segment's time index is gone or damaged; reading without it");
                TimeIndex::empty(&time_path)
            }
        };
        Ok(SegmentFiles {
            log: Arc::new(log),
            offset_index,
            time_index,
        })
    }
}

/// The open files of closed segments, least recently read closed first.
#[derive(Debug)]
pub struct SegmentFileCache {
    open: Mutex<lru::LruCache<u64, Arc<SegmentFiles>>>,
    next_id: AtomicU64,
}

impl SegmentFileCache {
    /// A cache that keeps at most `capacity` closed segments' files open (at least one).
    pub fn new(capacity: usize) -> SegmentFileCache {
        SegmentFileCache {
            open: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            next_id: AtomicU64::new(0),
        }
    }

    /// The cache of logs opened without one of their owner's.
    pub fn shared_default() -> Arc<SegmentFileCache> {
        static DEFAULT: OnceLock<Arc<SegmentFileCache>> = OnceLock::new();
        Arc::clone(DEFAULT.get_or_init(|| Arc::new(SegmentFileCache::new(DEFAULT_CAPACITY))))
    }

    /// How many closed segments have their files open now.
    pub fn open_segments(&self) -> usize {
        self.lock().len()
    }

    /// The most closed segments kept open.
    pub fn capacity(&self) -> usize {
        self.lock().cap().get()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<u64, Arc<SegmentFiles>>> {
        // The cache holds no invariant a panic could break halfway.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The files of segment `id`, opened by `open` unless the cache has them.
    pub(crate) fn get_or_open(
        &self,
        id: u64,
        open: impl FnOnce() -> Result<SegmentFiles, LogError>,
    ) -> Result<Arc<SegmentFiles>, LogError> {
        let mut cache = self.lock();
        if let Some(files) = cache.get(&id) {
            return Ok(Arc::clone(files));
        }
        let files = Arc::new(open()?);
        cache.put(id, Arc::clone(&files));
        Ok(files)
    }

    /// Keeps a just-closed segment's files open (it is likely read soon).
    pub(crate) fn insert(&self, id: u64, files: SegmentFiles) {
        self.lock().put(id, Arc::new(files));
    }

    /// Closes segment `id`'s files (it is deleted, or active again).
    pub(crate) fn forget(&self, id: u64) {
        self.lock().pop(&id);
    }
}

/// A segment's files, owned (the active segment's) or shared from the cache.
#[derive(Debug)]
pub(crate) enum FilesRef<'a> {
    Owned(&'a SegmentFiles),
    Cached(Arc<SegmentFiles>),
}

impl Deref for FilesRef<'_> {
    type Target = SegmentFiles;

    fn deref(&self) -> &SegmentFiles {
        match self {
            FilesRef::Owned(files) => files,
            FilesRef::Cached(files) => files,
        }
    }
}
