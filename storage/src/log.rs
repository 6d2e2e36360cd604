//! A partition replica's log: an ordered set of segments in one directory.
//!
//! # Write path
//! 1. Validate every batch of the request (header, length, CRC, records, size); refuse the
//!    whole request on the first problem.
//! 2. Stamp base offsets and the leader epoch (12 bytes a batch, outside the CRC's range).
//! 3. Roll first if the active segment is full or old: seal it (final time-index entry,
//!    indexes trimmed, data and indexes fsynced), create the next segment, fsync the directory,
//!    checkpoint the recovery point.
//! 4. Write the request's bytes with one positional write; update the indexes in memory-mapped
//!    files.
//! 5. If the flush policy asks for it, hand back a [`FlushTicket`]: waiting on it fsyncs the
//!    active segment, and concurrent waiters share one fsync (group commit).
//!
//! # Guarantees
//! - After [`FlushTicket::wait`] returns, every batch of that append survives a crash.
//! - After a crash, [`Log::open`] verifies every batch from the recovery point on and cuts the
//!   log at the first invalid byte; below the recovery point, a damaged batch is reported as
//!   [`LogError::Corrupt`] when read and is never returned as data.

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::batch::{self, Batch, BatchHeader, InvalidBatch};
use crate::checkpoint;
use crate::config::LogConfig;
use crate::epoch::{EpochCache, EpochEntry};
use crate::error::LogError;
use crate::files::SegmentFileCache;
use crate::segment::{self, SealedFiles, Segment, SegmentSettings, SegmentSlice};

/// Present while the log is closed after a clean shutdown; removed when it is opened.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point-checkpoint";
/// The log start offset records were deleted up to (Kafka's DeleteRecords), when it is past
/// the first segment's base.
pub(crate) const LOG_START_FILE: &str = "log-start-offset-checkpoint";
const LOCK_FILE: &str = ".lock";

/// A source of wall-clock time in milliseconds since the Unix epoch (tests bring their own).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// What a log shares with its owner's other logs.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub clock: Arc<dyn Clock>,
    /// Where closed segments' files are opened (bounding the descriptors of every log that
    /// shares it).
    pub files: Arc<SegmentFileCache>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            clock: Arc::new(SystemClock),
            files: SegmentFileCache::shared_default(),
        }
    }
}

/// What an append did.
#[derive(Debug)]
#[must_use = "an append may need its flush ticket waited on before it is acknowledged"]
pub struct Appended {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub records: u64,
    /// `Some` when the flush policy asks for an fsync before this append is acknowledged.
    pub flush: Option<FlushTicket>,
}

impl Appended {
    /// Waits for the flush the policy asked for, if any.
    ///
    /// # Errors
    /// `SyncSegment`.
    pub fn durable(mut self) -> Result<Self, LogError> {
        if let Some(ticket) = self.flush.take() {
            ticket.wait()?;
        }
        Ok(self)
    }
}

/// A claim on an fsync covering every offset below `offset`. Several tickets waited on at
/// once share fsyncs: one waiter syncs, the others find their offsets already covered.
#[derive(Debug)]
#[must_use = "the append is not durable until the ticket is waited on"]
pub struct FlushTicket {
    state: Arc<SyncState>,
    offset: i64,
}

impl FlushTicket {
    /// Blocks until every offset below the ticket's is on disk. Call it without holding the
    /// lock that guards the [`Log`], so that other appends can join the next fsync.
    ///
    /// # Errors
    /// `SyncSegment`.
    pub fn wait(self) -> Result<(), LogError> {
        self.state.sync_up_to(self.offset)
    }
}

#[derive(Debug)]
struct SyncTarget {
    file: Arc<File>,
    path: PathBuf,
    /// The log end offset once everything written to `file` so far is synced.
    written: i64,
}

#[derive(Debug)]
struct SyncState {
    target: Mutex<SyncTarget>,
    /// Every offset below this is on disk.
    flushed: AtomicI64,
    /// Held by the one thread running an fsync.
    syncing: Mutex<()>,
    /// Sealed segments whose background fsync has not finished; a flush syncs them too.
    /// With the offset after each: sealed segments not yet known to be on disk.
    unsynced: Mutex<Vec<(SealedFiles, i64)>>,
    /// The recovery point last written to the checkpoint file.
    checkpointed: AtomicI64,
    /// Serializes writes of the recovery-point checkpoint.
    checkpointing: Mutex<()>,
    /// The log's directory, whose entries for new segments must reach the disk before
    /// anything written to them counts as flushed.
    dir: PathBuf,
    /// Segments created by rolls so far.
    rolls: AtomicU64,
    /// How many of those rolls' directory entries are known to be on disk; held during the
    /// directory's fsync, so that a flush never returns before an fsync in flight finishes.
    dir_synced: Mutex<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves no partial state behind: the guarded values
    // are replaced whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SyncState {
    fn sync_up_to(&self, offset: i64) -> Result<(), LogError> {
        if self.flushed.load(Ordering::Acquire) >= offset {
            return Ok(());
        }
        let _syncing = lock(&self.syncing);
        if self.flushed.load(Ordering::Acquire) >= offset {
            return Ok(());
        }
        let (file, path, written) = {
            let target = lock(&self.target);
            (
                Arc::clone(&target.file),
                target.path.clone(),
                target.written,
            )
        };
        // Offsets below `written` may sit in sealed segments whose background fsync has not
        // finished (or failed): they are synced here first, or the flush fails.
        let pending: Vec<(SealedFiles, i64)> = lock(&self.unsynced).clone();
        for (sealed, _) in pending {
            sealed.sync()?;
            lock(&self.unsynced).retain(|(f, _)| !Arc::ptr_eq(&f.log, &sealed.log));
        }
        file.sync_data()
            .map_err(|source| LogError::SyncSegment { path, source })?;
        // The active segment may be new: its name in the directory must be durable too.
        self.sync_dir()?;
        self.flushed.fetch_max(written, Ordering::AcqRel);
        Ok(())
    }

    /// Fsyncs the directory if a roll created a segment since it was last synced. A roll
    /// leaves this to the background thread or the next flush, so that no append waits for it.
    fn sync_dir(&self) -> Result<(), LogError> {
        let mut synced = lock(&self.dir_synced);
        let rolls = self.rolls.load(Ordering::Acquire);
        if *synced >= rolls {
            return Ok(());
        }
        checkpoint::sync_dir(&self.dir).map_err(|source| LogError::Directory {
            path: self.dir.clone(),
            source,
        })?;
        *synced = rolls;
        Ok(())
    }

    /// After a roll: fsyncs the directory (the new segment's name), then the sealed segment.
    /// The sealed segment counts as synced only once the directory holding it is: on failure
    /// its files stay in `unsynced`, for the next flush to sync or report.
    fn sync_rolled(&self, sealed: &SealedFiles, next: i64, dir: &Path) {
        match self.sync_dir() {
            Ok(()) => self.sync_sealed(sealed, next, dir),
            Err(error) => {
                tracing::error!(dir = %dir.display(), error = &error as &dyn std::error::Error, "sync of the log directory failed; the next flush tries again");
            }
        }
    }

    /// Fsyncs a sealed segment, then moves the recovery point to `next` (the offset after
    /// it) and checkpoints it. On failure the file stays in `unsynced` and the recovery
    /// point stays where it was, so a later flush or close syncs it or reports the error.
    fn sync_sealed(&self, sealed: &SealedFiles, next: i64, dir: &Path) {
        if let Err(error) = sealed.sync() {
            tracing::error!(segment = %sealed.log_path.display(), error = &error as &dyn std::error::Error, "background sync of a sealed segment failed");
            return;
        }
        let older_pending = {
            let mut unsynced = lock(&self.unsynced);
            unsynced.retain(|(f, _)| !Arc::ptr_eq(&f.log, &sealed.log));
            unsynced.iter().any(|(_, end)| *end < next)
        };
        // An older segment whose sync failed holds the recovery point below it.
        if !older_pending {
            self.flushed.fetch_max(next, Ordering::AcqRel);
        }
        if let Err(error) = self.write_checkpoint(dir) {
            tracing::warn!(dir = %dir.display(), error = &error as &dyn std::error::Error, "could not checkpoint the recovery point");
        }
    }

    /// Writes the recovery point when it moved since the last write (two fsyncs saved on
    /// every call of an idle log).
    fn write_checkpoint(&self, dir: &Path) -> Result<(), LogError> {
        let _serial = lock(&self.checkpointing);
        let point = self.flushed.load(Ordering::Acquire);
        if self.checkpointed.load(Ordering::Acquire) == point {
            return Ok(());
        }
        checkpoint::write(dir, RECOVERY_POINT_FILE, &format!("{point}\n"))?;
        self.checkpointed.store(point, Ordering::Release);
        Ok(())
    }

    fn set_target(&self, segment: &Segment, written: i64) {
        let mut target = lock(&self.target);
        if !Arc::ptr_eq(&target.file, segment.file()) {
            target.file = Arc::clone(segment.file());
            target.path = segment.path().to_path_buf();
        }
        target.written = written;
    }
}

/// Writes a log's recovery point (see [`Log::recovery_checkpoint`]).
#[derive(Debug)]
pub struct RecoveryCheckpoint {
    state: Arc<SyncState>,
    dir: PathBuf,
}

impl RecoveryCheckpoint {
    /// Writes the recovery point if it moved since the last write.
    ///
    /// # Errors
    /// `WriteCheckpoint`.
    pub fn write(&self) -> Result<(), LogError> {
        self.state.write_checkpoint(&self.dir)
    }
}

/// Where a timestamp search landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub offset: i64,
    pub timestamp: i64,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: i64,
}

/// How an open went: what recovery did, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub clean_shutdown: bool,
    pub segments: usize,
    pub recovered_segments: usize,
    pub recovered_bytes: u64,
    pub truncated_bytes: u64,
    pub deleted_segments: usize,
}

/// A partition replica's log. See the module documentation for the write path.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Invariant: never empty; the last segment is the active one and the only one written.
    segments: BTreeMap<i64, Segment>,
    epochs: EpochCache,
    sync: Arc<SyncState>,
    /// Records appended since the last flush the policy asked for.
    unflushed_records: u64,
    last_flush_ms: i64,
    clock: Arc<dyn Clock>,
    /// Where closed segments' files are opened and kept, shared with the owner's other logs.
    files: Arc<SegmentFileCache>,
    /// The background fsync of the most recently sealed segment, which waits for the one
    /// before it.
    sealed_sync: Option<std::thread::JoinHandle<()>>,
    /// Holds the directory's lock while the log is open.
    lock_file: File,
    /// Records below this were deleted (DeleteRecords) though their segment remains: the log
    /// starts at the greater of this and the first segment's base.
    deleted_before: i64,
}

impl Log {
    /// Opens the log in `dir`, creating it when missing, and recovers it if the last run did
    /// not close it cleanly.
    ///
    /// # Errors
    /// `Locked` when another process has the log open; I/O variants naming the failed step.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<(Log, OpenReport), LogError> {
        Log::open_with(dir, config, LogOptions::default())
    }

    /// [`Log::open`] with a clock of the caller's choosing.
    ///
    /// # Errors
    /// As [`Log::open`].
    pub fn open_with_clock(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Log, OpenReport), LogError> {
        Log::open_with(
            dir,
            config,
            LogOptions {
                clock,
                ..LogOptions::default()
            },
        )
    }

    /// [`Log::open`] with the owner's clock and segment file cache.
    ///
    /// # Errors
    /// As [`Log::open`].
    pub fn open_with(
        dir: impl AsRef<Path>,
        config: LogConfig,
        options: LogOptions,
    ) -> Result<(Log, OpenReport), LogError> {
        let LogOptions { clock, files } = options;
        let dir = dir.as_ref().to_path_buf();
        let dir_error = |source| LogError::Directory {
            path: dir.clone(),
            source,
        };
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(dir_error)?;
            if let Some(parent) = dir.parent() {
                checkpoint::sync_dir(parent).map_err(dir_error)?;
            }
        }
        let lock_file = File::create(dir.join(LOCK_FILE)).map_err(dir_error)?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LogError::Locked {
                    path: dir.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(LogError::Locked {
                    path: dir.clone(),
                    source,
                });
            }
        }

        remove_temporary_files(&dir)?;
        let clean_shutdown = dir.join(CLEAN_SHUTDOWN_FILE).exists();
        let bases = segment_bases(&dir)?;
        let recovery_point = match checkpoint::read(&dir, RECOVERY_POINT_FILE)? {
            Some(text) => {
                text.trim()
                    .parse::<i64>()
                    .map_err(|_| LogError::MalformedCheckpoint {
                        path: dir.join(RECOVERY_POINT_FILE),
                        reason: format!("{:?} is not an offset", text.trim()),
                    })?
            }
            None => 0,
        };
        let settings = SegmentSettings {
            index_interval: config.index_interval,
            index_capacity: config.index_capacity,
        };
        let mut report = OpenReport {
            clean_shutdown,
            ..OpenReport::default()
        };
        // Without a clean shutdown, every segment that may hold bytes not yet fsynced is
        // verified: the one holding the recovery point and all after it.
        let first_to_recover = bases
            .iter()
            .rev()
            .find(|&&b| b <= recovery_point)
            .copied()
            .unwrap_or(i64::MIN);
        let mut segments = BTreeMap::new();
        let mut cut_at: Option<i64> = None;
        for (i, &base) in bases.iter().enumerate() {
            if cut_at.is_some() {
                // A segment after a cut would leave a hole in the offsets: its data is gone.
                segment::delete_files(&dir, base)?;
                report.deleted_segments += 1;
                continue;
            }
            let is_last = i + 1 == bases.len();
            let recover = !clean_shutdown && base >= first_to_recover;
            let (segment, truncated) =
                Segment::open(&dir, base, settings, recover, is_last, &files)?;
            if recover {
                // (Segment::open made what it recovered durable.)
                report.recovered_segments += 1;
                report.recovered_bytes += segment.size();
            }
            report.truncated_bytes += truncated;
            if truncated > 0 && !is_last {
                cut_at = Some(segment.next_offset());
            }
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            let segment = Segment::create(&dir, 0, settings, &files)?;
            checkpoint::sync_dir(&dir).map_err(dir_error)?;
            segments.insert(0, segment);
        } else if report.deleted_segments > 0 {
            checkpoint::sync_dir(&dir).map_err(dir_error)?;
        }
        report.segments = segments.len();

        let active = segments
            .values_mut()
            .next_back()
            .expect("segments is not empty");
        active.activate()?;
        let log_end = active.next_offset();
        let log_start = *segments.keys().next().expect("segments is not empty");
        let active = segments
            .values()
            .next_back()
            .expect("segments is not empty");
        let sync = Arc::new(SyncState {
            target: Mutex::new(SyncTarget {
                file: Arc::clone(active.file()),
                path: active.path().to_path_buf(),
                written: log_end,
            }),
            flushed: AtomicI64::new(log_end),
            syncing: Mutex::new(()),
            unsynced: Mutex::new(Vec::new()),
            checkpointed: AtomicI64::new(-1),
            checkpointing: Mutex::new(()),
            dir: dir.clone(),
            rolls: AtomicU64::new(0),
            dir_synced: Mutex::new(0),
        });
        let deleted_before = match checkpoint::read(&dir, LOG_START_FILE)? {
            // Never past the end: a crash may have cut the log below it.
            Some(text) => text
                .trim()
                .parse::<i64>()
                .map_err(|_| LogError::MalformedCheckpoint {
                    path: dir.join(LOG_START_FILE),
                    reason: format!("{:?} is not an offset", text.trim()),
                })?
                .min(log_end),
            None => log_start,
        };
        let log_start = log_start.max(deleted_before);
        let mut epochs = EpochCache::load(&dir)?;
        epochs.truncate_from_end(log_end)?;
        epochs.truncate_from_start(log_start)?;
        let now = clock.now_ms();
        let mut log = Log {
            dir,
            config,
            segments,
            epochs,
            sync,
            unflushed_records: 0,
            last_flush_ms: now,
            clock,
            files,
            sealed_sync: None,
            lock_file,
            deleted_before,
        };
        // A crash after records were deleted may have left their segments behind.
        log.remove_segments_below_start()?;
        log.checkpoint_recovery_point()?;
        if clean_shutdown {
            fs::remove_file(log.dir.join(CLEAN_SHUTDOWN_FILE)).map_err(|source| {
                LogError::Directory {
                    path: log.dir.clone(),
                    source,
                }
            })?;
            checkpoint::sync_dir(&log.dir).map_err(|source| LogError::Directory {
                path: log.dir.clone(),
                source,
            })?;
        }
        if report.truncated_bytes > 0 || report.deleted_segments > 0 {
            tracing::warn!(dir = %log.dir.display(), ?report, "log recovered with data cut off");
        } else {
            tracing::debug!(dir = %log.dir.display(), ?report, "log opened");
        }
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the config; it applies to the next append, roll and retention run.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        let first = *self.segments.keys().next().expect("segments is not empty");
        first.max(self.deleted_before)
    }

    /// Deletes every record below `offset` (Kafka's DeleteRecords): the log start moves
    /// there, durably, and segments wholly below it are removed. Returns the new log start
    /// (unchanged when `offset` is not past it).
    ///
    /// # Errors
    /// `OffsetOutOfRange` past the log end; `WriteCheckpoint`, `DeleteSegment`.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset > end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        if offset <= start {
            return Ok(start);
        }
        // The new start is durable before any segment goes: a crash in between leaves
        // segments that the start already hides.
        checkpoint::write(&self.dir, LOG_START_FILE, &format!("{offset}\n"))?;
        self.deleted_before = offset;
        let deleted = self.remove_segments_below_start()?;
        self.epochs.truncate_from_start(offset)?;
        tracing::info!(dir = %self.dir.display(), log_start_offset = offset, deleted_segments = deleted, "records deleted");
        debug_assert_eq!(self.log_start_offset(), offset);
        Ok(offset)
    }

    /// Removes the segments whose every record is below the log start; how many.
    fn remove_segments_below_start(&mut self) -> Result<usize, LogError> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let below: Vec<i64> = bases
            .windows(2)
            .take_while(|pair| pair[1] <= self.deleted_before)
            .map(|pair| pair[0])
            .collect();
        for base in &below {
            if let Some(segment) = self.segments.remove(base) {
                segment.delete()?;
            }
        }
        if !below.is_empty() {
            checkpoint::sync_dir(&self.dir).map_err(|source| LogError::Directory {
                path: self.dir.clone(),
                source,
            })?;
        }
        Ok(below.len())
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Every offset below this is on disk.
    pub fn recovery_point(&self) -> i64 {
        self.sync.flushed.load(Ordering::Acquire)
    }

    /// Bytes in all segments.
    pub fn size(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("segments is not empty")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("segments is not empty")
    }

    /// Appends the batches in `batches` as leader: checks them, gives them the next offsets and
    /// `leader_epoch`, and writes them all or none.
    ///
    /// # Errors
    /// `InvalidBatch` (nothing written), or an I/O variant (nothing visible was written).
    pub fn append(&mut self, batches: &mut [u8], leader_epoch: i32) -> Result<Appended, LogError> {
        let mut headers = self.validate(batches, true)?;
        let mut next = self.log_end_offset();
        for (position, header) in &mut headers {
            batch::stamp(&mut batches[*position..], next, leader_epoch);
            header.base_offset = next;
            header.partition_leader_epoch = leader_epoch;
            next = header.next_offset();
        }
        let first = headers[0].1.base_offset;
        if leader_epoch >= 0 && self.epochs.latest().is_none_or(|e| e.epoch < leader_epoch) {
            self.epochs.assign(leader_epoch, first)?;
        }
        self.write(batches, &headers)
    }

    /// Appends batches copied from the leader, keeping their offsets and leader epochs.
    ///
    /// # Errors
    /// `InvalidBatch`, `NonContiguousAppend` when the first batch does not start at the log
    /// end offset or offsets do not rise, or an I/O variant.
    pub fn append_replicated(&mut self, batches: &[u8]) -> Result<Appended, LogError> {
        let headers = self.validate(batches, false)?;
        let mut expected = self.log_end_offset();
        for (_, header) in &headers {
            if header.base_offset != expected {
                return Err(LogError::NonContiguousAppend {
                    expected,
                    found: header.base_offset,
                });
            }
            expected = header.next_offset();
        }
        for (_, header) in &headers {
            let epoch = header.partition_leader_epoch;
            if epoch >= 0 && self.epochs.latest().is_none_or(|e| e.epoch < epoch) {
                self.epochs.assign(epoch, header.base_offset)?;
            }
        }
        self.write(batches, &headers)
    }

    fn validate(
        &self,
        bytes: &[u8],
        from_producer: bool,
    ) -> Result<Vec<(usize, BatchHeader)>, LogError> {
        let invalid = |position, source| LogError::InvalidBatch { position, source };
        let mut headers = Vec::new();
        let mut position = 0;
        while position < bytes.len() {
            // The size limit first: a batch too large is refused before its CRC is computed.
            let header =
                BatchHeader::parse(&bytes[position..]).map_err(|e| invalid(position, e))?;
            let size = header.size();
            if size > self.config.max_batch_size {
                return Err(invalid(
                    position,
                    InvalidBatch::TooLarge {
                        size,
                        max: self.config.max_batch_size,
                    },
                ));
            }
            let batch = Batch::parse(&bytes[position..]).map_err(|e| invalid(position, e))?;
            if from_producer {
                batch.validate_records().map_err(|e| invalid(position, e))?;
            } else if batch.header.last_offset_delta < 0 {
                return Err(invalid(
                    position,
                    InvalidBatch::CountMismatch {
                        count: batch.header.record_count,
                        last_offset_delta: batch.header.last_offset_delta,
                    },
                ));
            }
            headers.push((position, batch.header));
            position += size;
        }
        if headers.is_empty() {
            return Err(invalid(0, InvalidBatch::Empty));
        }
        Ok(headers)
    }

    fn write(
        &mut self,
        bytes: &[u8],
        headers: &[(usize, BatchHeader)],
    ) -> Result<Appended, LogError> {
        let now = self.clock.now_ms();
        let first_offset = headers[0].1.base_offset;
        let last_offset = headers[headers.len() - 1].1.last_offset();
        if self.should_roll(bytes.len(), last_offset, now) {
            self.roll()?;
        }
        let active = self.active_mut();
        active.append(bytes, headers)?;
        active.rolling_base_ms.get_or_insert(now);
        let end = last_offset + 1;
        let active = self
            .segments
            .values()
            .next_back()
            .expect("segments is not empty");
        self.sync.set_target(active, end);

        let records: u64 = headers
            .iter()
            .map(|(_, h)| h.record_count.max(0) as u64)
            .sum();
        self.unflushed_records += records;
        let flush = self.flush_due(now).then(|| {
            self.unflushed_records = 0;
            self.last_flush_ms = now;
            FlushTicket {
                state: Arc::clone(&self.sync),
                offset: end,
            }
        });
        Ok(Appended {
            first_offset,
            last_offset,
            max_timestamp: headers
                .iter()
                .map(|(_, h)| h.max_timestamp)
                .max()
                .unwrap_or(-1),
            records,
            flush,
        })
    }

    fn flush_due(&self, now: i64) -> bool {
        self.config
            .flush_messages
            .is_some_and(|n| self.unflushed_records >= n)
            || self.config.flush_interval.is_some_and(|i| {
                self.unflushed_records > 0 && now - self.last_flush_ms >= i.as_millis() as i64
            })
    }

    /// A ticket for the flush that `flush.ms` asks for when no append came to trigger it; the
    /// owner calls this from a timer.
    pub fn flush_if_due(&mut self) -> Option<FlushTicket> {
        let now = self.clock.now_ms();
        self.flush_due(now).then(|| {
            self.unflushed_records = 0;
            self.last_flush_ms = now;
            FlushTicket {
                state: Arc::clone(&self.sync),
                offset: self.log_end_offset(),
            }
        })
    }

    /// A ticket that makes everything appended so far durable.
    pub fn flush_ticket(&self) -> FlushTicket {
        FlushTicket {
            state: Arc::clone(&self.sync),
            offset: self.log_end_offset(),
        }
    }

    /// Fsyncs everything appended so far.
    ///
    /// # Errors
    /// `SyncSegment`.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.unflushed_records = 0;
        self.last_flush_ms = self.clock.now_ms();
        self.flush_ticket().wait()
    }

    fn should_roll(&self, size: usize, last_offset: i64, now: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        active.size() + size as u64 > self.config.segment_size
            || active.cannot_take(size, last_offset)
            || self
                .config
                .segment_age
                .zip(active.rolling_base_ms)
                .is_some_and(|(age, base)| now - base > age.as_millis() as i64)
    }

    /// Closes the active segment and starts a new one at the log end offset. The closed
    /// segment is fsynced on a background thread (as Kafka's scheduled flush), so an append
    /// never waits for a whole segment to reach the disk; the recovery point moves past it
    /// once it has.
    ///
    /// # Errors
    /// I/O variants.
    pub fn roll(&mut self) -> Result<(), LogError> {
        let next = self.log_end_offset();
        if self.active().is_empty() {
            return Ok(());
        }
        self.active_mut().seal()?;
        let sealed = self.active().sealed_files();
        let settings = SegmentSettings {
            index_interval: self.config.index_interval,
            index_capacity: self.config.index_capacity,
        };
        let segment = Segment::create(&self.dir, next, settings, &self.files)?;
        // The new segment's directory entry is synced off this path (the directory's fsync
        // takes milliseconds, and appends would wait behind it), but before any flush
        // returns: see `SyncState::sync_dir`.
        self.sync.rolls.fetch_add(1, Ordering::AcqRel);
        lock(&self.sync.unsynced).push((sealed.clone(), next));
        self.sync.set_target(&segment, next);
        // Closed now: its files move to the cache, which bounds how many stay open.
        self.active_mut().release_files();
        self.segments.insert(next, segment);

        let state = Arc::clone(&self.sync);
        let dir = self.dir.clone();
        let previous = self.sealed_sync.take();
        let files = sealed.clone();
        let job = move || {
            yield_to_appends();
            // In roll order: the recovery point may only pass segments that are all synced.
            if let Some(previous) = previous {
                let _ = previous.join();
            }
            state.sync_rolled(&files, next, &dir);
        };
        match std::thread::Builder::new()
            .name("weir-seal-sync".into())
            .spawn(job)
        {
            Ok(handle) => self.sealed_sync = Some(handle),
            Err(error) => {
                tracing::warn!(%error, "no thread for the background sync; syncing inline");
                self.sync.sync_rolled(&sealed, next, &self.dir);
            }
        }
        tracing::debug!(dir = %self.dir.display(), base_offset = next, "rolled to a new segment");
        Ok(())
    }

    fn wait_for_sealed_sync(&mut self) {
        if let Some(pending) = self.sealed_sync.take() {
            // The thread only logs; a panic in it would already have been reported.
            let _ = pending.join();
        }
    }

    /// Writes the recovery point, so that the next unclean open verifies only what follows.
    ///
    /// # Errors
    /// `WriteCheckpoint`.
    pub fn checkpoint_recovery_point(&self) -> Result<(), LogError> {
        self.sync.write_checkpoint(&self.dir)
    }

    /// A handle that writes the recovery-point checkpoint without the log: the write and its
    /// fsyncs take milliseconds, and appends should not wait behind them.
    pub fn recovery_checkpoint(&self) -> RecoveryCheckpoint {
        RecoveryCheckpoint {
            state: Arc::clone(&self.sync),
            dir: self.dir.clone(),
        }
    }

    /// Reads whole batches from `offset` on: the batch holding `offset` first, at most
    /// `max_bytes` in all unless that first batch alone is larger, never past `upper_bound`
    /// (a high watermark) when given, and from one segment at a time. `None` when there is
    /// nothing yet at `offset` (it is the log end, or at the bound).
    ///
    /// # Errors
    /// `OffsetOutOfRange` outside `[log_start_offset, log_end_offset]`; `Corrupt` when the
    /// first batch fails its CRC; `ReadSegment`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: Option<i64>,
    ) -> Result<Option<SegmentSlice>, LogError> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        let bound = upper_bound.unwrap_or(end).min(end);
        let floor = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(start, |(&b, _)| b);
        for segment in self.segments.range(floor..).map(|(_, s)| s) {
            if segment.base_offset >= bound {
                break;
            }
            if let Some(slice) = segment.read(offset.max(segment.base_offset), max_bytes, bound)? {
                return Ok(Some(slice));
            }
        }
        Ok(None)
    }

    /// The first record whose timestamp is at least `timestamp`, as Kafka's ListOffsets by
    /// time. Inside a compressed batch the batch's first offset stands for it.
    ///
    /// # Errors
    /// `Corrupt`, `ReadSegment`.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<TimestampOffset>, LogError> {
        let start = self.log_start_offset();
        Ok(self
            .find_timestamp(timestamp)?
            .map(|found| TimestampOffset {
                // Records deleted below the start are not answered.
                offset: found.offset.max(start),
                ..found
            }))
    }

    /// The first record with the largest timestamp in the log (Kafka's ListOffsets -3,
    /// KIP-734); `None` for a log without timestamps.
    ///
    /// # Errors
    /// `Corrupt`, `ReadSegment`.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<TimestampOffset>, LogError> {
        let Some(max) = self
            .segments
            .values()
            .map(Segment::max_timestamp)
            .filter(|t| *t >= 0)
            .max()
        else {
            return Ok(None);
        };
        self.offset_for_timestamp(max)
    }

    fn find_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError> {
        for segment in self.segments.values() {
            let Some((position, header)) = segment.find_by_timestamp(timestamp)? else {
                continue;
            };
            if header.compression() != Some(batch::Compression::None) {
                return Ok(Some(TimestampOffset {
                    offset: header.base_offset,
                    timestamp: header.max_timestamp,
                }));
            }
            let bytes = segment.read_batch(position, &header)?;
            let batch = Batch::parse(&bytes).map_err(|source| LogError::Corrupt {
                path: segment.path().to_path_buf(),
                position,
                source,
            })?;
            let records = batch.records().map_err(|source| LogError::Corrupt {
                path: segment.path().to_path_buf(),
                position,
                source,
            })?;
            if let Some(record) = records.iter().find(|r| r.timestamp >= timestamp) {
                return Ok(Some(TimestampOffset {
                    offset: record.offset,
                    timestamp: record.timestamp,
                }));
            }
        }
        Ok(None)
    }

    /// Removes every batch that holds an offset at or after `offset` (a follower's truncation
    /// to the leader's epoch end). The log end may land below `offset` when `offset` falls
    /// inside a batch. Below the log start, the log is emptied and restarts at `offset`.
    ///
    /// # Errors
    /// I/O variants.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset() {
            // No record goes, but an epoch that starts at the log end does: this replica led
            // in it and appended nothing before another leader was elected, and keeping it
            // would have the follower claim an epoch its leader never had (Kafka does the
            // same, KAFKA-9838's note in truncateTo).
            return self.epochs.truncate_from_end(self.log_end_offset());
        }
        if offset <= self.log_start_offset() {
            return self.truncate_fully_and_start_at(offset);
        }
        // A pending background sync must not move the recovery point past the new end.
        self.wait_for_sealed_sync();
        let doomed: Vec<i64> = self.segments.range(offset..).map(|(&b, _)| b).collect();
        for base in doomed {
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete()?;
            }
        }
        checkpoint::sync_dir(&self.dir).map_err(|source| LogError::Directory {
            path: self.dir.clone(),
            source,
        })?;
        // An fsync running now must not move the recovery point back above the new end.
        let sync = Arc::clone(&self.sync);
        let _syncing = lock(&sync.syncing);
        let active = self.active_mut();
        active.truncate_to(offset)?;
        active.activate()?;
        active.sync()?;
        let end = self.log_end_offset();
        let active = self
            .segments
            .values()
            .next_back()
            .expect("segments is not empty");
        self.sync.set_target(active, end);
        self.sync.flushed.fetch_min(end, Ordering::AcqRel);
        self.epochs.truncate_from_end(end)?;
        self.checkpoint_recovery_point()?;
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = end, "truncated");
        Ok(())
    }

    /// Deletes every segment and starts an empty log at `offset`.
    ///
    /// # Errors
    /// I/O variants.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        self.wait_for_sealed_sync();
        let settings = SegmentSettings {
            index_interval: self.config.index_interval,
            index_capacity: self.config.index_capacity,
        };
        // An fsync running now must not move the recovery point back above the new start.
        let sync = Arc::clone(&self.sync);
        let _syncing = lock(&sync.syncing);
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete()?;
        }
        let segment = Segment::create(&self.dir, offset, settings, &self.files)?;
        checkpoint::sync_dir(&self.dir).map_err(|source| LogError::Directory {
            path: self.dir.clone(),
            source,
        })?;
        self.sync.set_target(&segment, offset);
        self.sync.flushed.store(offset, Ordering::Release);
        self.segments.insert(offset, segment);
        if self.deleted_before > offset {
            checkpoint::write(&self.dir, LOG_START_FILE, &format!("{offset}\n"))?;
        }
        self.deleted_before = offset;
        self.epochs.clear()?;
        self.checkpoint_recovery_point()?;
        tracing::info!(dir = %self.dir.display(), offset, "emptied and restarted");
        Ok(())
    }

    /// Calls `visit` with the header of every batch from the log start on, reading headers
    /// only (no CRC check): how a broker rebuilds per-producer state when it opens a log.
    ///
    /// # Errors
    /// `ReadSegment`.
    pub fn for_each_batch_header(
        &self,
        mut visit: impl FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        for segment in self.segments.values() {
            for (_, header) in segment.scan(0, false)?.batches {
                visit(&header);
            }
        }
        Ok(())
    }

    /// Records that leader epoch `epoch` starts at the log end, as a new leader does before
    /// its first append (Kafka's `assign` on becoming leader), so that followers comparing
    /// epochs find where this leader's log agrees with theirs. Older epochs are ignored.
    ///
    /// # Errors
    /// `WriteCheckpoint`.
    pub fn start_epoch(&mut self, epoch: i32) -> Result<(), LogError> {
        if self.epochs.latest().is_some_and(|e| e.epoch >= epoch) {
            return Ok(());
        }
        let end = self.log_end_offset();
        self.epochs.assign(epoch, end)
    }

    /// The latest leader epoch and where it started.
    pub fn latest_epoch(&self) -> Option<EpochEntry> {
        self.epochs.latest()
    }

    pub fn epoch_entries(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    /// Kafka's OffsetsForLeaderEpoch answer: the largest epoch at most `epoch` and the offset
    /// where it ended (the log end for the latest epoch). `None` when the log knows no epoch
    /// at or after `epoch`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Deletes closed segments past `retention.ms` or beyond `retention.bytes`, oldest first,
    /// and moves the log start offset up. The active segment is never deleted.
    ///
    /// # Errors
    /// `DeleteSegment`, `WriteCheckpoint`.
    pub fn apply_retention(&mut self) -> Result<RetentionOutcome, LogError> {
        let now = self.clock.now_ms();
        let closed: Vec<(i64, u64, i64)> = self
            .segments
            .values()
            .take(self.segments.len() - 1)
            .map(|s| (s.base_offset, s.size(), segment_time(s)))
            .collect();
        let mut doomed = 0;
        if let Some(age) = self.config.retention_age {
            doomed = closed
                .iter()
                .take_while(|&&(_, _, time)| now - time > age.as_millis() as i64)
                .count();
        }
        if let Some(limit) = self.config.retention_size {
            let mut excess = self.size() as i128 - i128::from(limit);
            excess -= closed[..doomed]
                .iter()
                .map(|&(_, size, _)| i128::from(size))
                .sum::<i128>();
            for &(_, size, _) in &closed[doomed..] {
                if excess < i128::from(size) {
                    break;
                }
                excess -= i128::from(size);
                doomed += 1;
            }
        }
        let mut outcome = RetentionOutcome {
            log_start_offset: self.log_start_offset(),
            ..Default::default()
        };
        for &(base, size, _) in &closed[..doomed] {
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete()?;
                outcome.deleted_segments += 1;
                outcome.deleted_bytes += size;
            }
        }
        if doomed > 0 {
            checkpoint::sync_dir(&self.dir).map_err(|source| LogError::Directory {
                path: self.dir.clone(),
                source,
            })?;
            outcome.log_start_offset = self.log_start_offset();
            self.epochs.truncate_from_start(outcome.log_start_offset)?;
            tracing::info!(dir = %self.dir.display(), ?outcome, "retention deleted segments");
        }
        Ok(outcome)
    }

    /// Closes the log cleanly: everything fsynced, indexes trimmed, the recovery point at the
    /// log end and the clean-shutdown marker written, so the next open skips recovery.
    ///
    /// # Errors
    /// I/O variants; the marker is then not written and the next open recovers.
    pub fn close(mut self) -> Result<(), LogError> {
        self.wait_for_sealed_sync();
        // A background sync that failed left its files here: sync them now or fail the close.
        let unsynced: Vec<(SealedFiles, i64)> = lock(&self.sync.unsynced).clone();
        for (sealed, _) in unsynced {
            sealed.sync()?;
        }
        self.active_mut().seal()?;
        self.active().sealed_files().sync()?;
        self.sync.sync_dir()?;
        let end = self.log_end_offset();
        self.sync.flushed.fetch_max(end, Ordering::AcqRel);
        self.checkpoint_recovery_point()?;
        checkpoint::write(&self.dir, CLEAN_SHUTDOWN_FILE, "")?;
        tracing::debug!(dir = %self.dir.display(), log_end_offset = end, "closed cleanly");
        Ok(())
    }
}

impl Drop for Log {
    /// A log dropped without [`Log::close`] is left as a crash would leave it (no clean-shutdown
    /// marker), but its background sync finishes first, so nothing of this log still writes
    /// into the directory once the lock is released.
    fn drop(&mut self) {
        self.wait_for_sealed_sync();
        // Closing the descriptor is not enough: a child forked meanwhile holds a copy of it
        // until it execs, and the lock belongs to the shared open file description.
        let _ = self.lock_file.unlock();
    }
}

/// The time retention judges a segment by: its newest timestamp, or its file's modification
/// time when no batch carries one (as Kafka).
fn segment_time(segment: &Segment) -> i64 {
    if segment.max_timestamp() >= 0 {
        return segment.max_timestamp();
    }
    fs::metadata(segment.path())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(i64::MAX, |d| d.as_millis() as i64)
}

/// Base offsets of the `.log` files in `dir`, ascending.
pub(crate) fn segment_bases(dir: &Path) -> Result<Vec<i64>, LogError> {
    let dir_error = |source| LogError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(dir_error)? {
        let name = entry.map_err(dir_error)?.file_name();
        if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log"))
            && stem.len() == 20
            && let Ok(base) = stem.parse::<i64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Removes the temporary files of a checkpoint write that a crash interrupted.
fn remove_temporary_files(dir: &Path) -> Result<(), LogError> {
    let dir_error = |source| LogError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            fs::remove_file(entry.path()).map_err(dir_error)?;
        }
    }
    Ok(())
}

/// Lowers the calling thread to the lowest priority (nice 19). The background fsync of a
/// sealed segment spends tens of milliseconds of CPU in the kernel's writeback (block
/// allocation, building the I/O) per 64 MiB; at normal priority it took the core from the
/// appending threads, and produce latency paid for it. Best effort: a failure only costs that.
fn yield_to_appends() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::debug!(%error, "could not lower the background sync thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Record, encode_batch};

    /// Appends one record; the default policy leaves flushing to the OS.
    fn append_one(log: &mut Log, value: &[u8]) {
        let record = Record {
            timestamp: 1000,
            key: None,
            value: Some(value),
            headers: Vec::new(),
        };
        let mut bytes = encode_batch(0, &[record]);
        let appended = log.append(&mut bytes, 0).expect("append");
        assert!(appended.flush.is_none());
    }

    fn dir_unsynced(log: &Log) -> bool {
        *lock(&log.sync.dir_synced) < log.sync.rolls.load(Ordering::Acquire)
    }

    #[test]
    fn truncating_at_the_end_drops_an_epoch_that_never_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), LogConfig::default()).expect("open");
        log.start_epoch(0).expect("epoch 0");
        append_one(&mut log, b"a");
        append_one(&mut log, b"b");
        // Led in epoch 1 without appending, then demoted: the leader never had epoch 1.
        log.start_epoch(1).expect("epoch 1");
        assert_eq!(log.latest_epoch().map(|e| e.epoch), Some(1));
        log.truncate_to(log.log_end_offset())
            .expect("truncate at the end");
        assert_eq!(log.latest_epoch().map(|e| e.epoch), Some(0));
        assert_eq!(log.log_end_offset(), 2, "no record goes");
    }

    #[test]
    fn a_roll_leaves_the_directory_sync_to_the_background_and_a_flush_waits_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_size: 4096,
            index_interval: 256,
            ..LogConfig::default()
        };
        let (mut log, _) = Log::open(dir.path(), config).expect("open");
        let value = [b'v'; 1000];
        while log.segment_count() < 2 {
            append_one(&mut log, &value);
        }
        assert_eq!(log.sync.rolls.load(Ordering::Acquire), 1);
        // The background thread syncs the directory before the sealed segment; once it is
        // done, nothing is left for a flush.
        log.wait_for_sealed_sync();
        assert!(
            !dir_unsynced(&log),
            "the background sync did not sync the directory"
        );

        // A roll whose background sync has not run yet: the next flush syncs the directory.
        let previous = log.sealed_sync.take();
        let gate = Arc::new(Mutex::new(()));
        let held = lock(&gate);
        log.sealed_sync = Some({
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                drop(lock(&gate));
                if let Some(previous) = previous {
                    let _ = previous.join();
                }
            })
        });
        while log.segment_count() < 3 {
            append_one(&mut log, &value);
        }
        // The new roll's thread waits behind the gated one, so the directory is still
        // unsynced here, and a flush must sync it itself.
        assert!(dir_unsynced(&log));
        log.flush_ticket().wait().expect("flush");
        assert!(
            !dir_unsynced(&log),
            "a flush returned before the directory was synced"
        );
        drop(held);
        log.close().expect("close");
    }
}
