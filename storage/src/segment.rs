//! One segment: `{base_offset:020}.log` with its `.index` and `.timeindex`.
//!
//! A segment holds whole batches end to end. Its in-memory `size` is the length of the
//! complete batches it holds; nothing past `size` is ever read, so a torn write is invisible
//! even before recovery cuts it off.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{Batch, BatchHeader, HEADER_LEN, InvalidBatch};
use crate::error::LogError;
use crate::files::{FilesRef, SegmentFileCache, SegmentFiles};
use crate::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::layout::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, file_name};
use crate::scan::{ScanEnd, Scanned, Scanner, Step, scan_file};

/// Deletes the files of the segment at `base_offset`; missing files are fine.
pub(crate) fn delete_files(dir: &Path, base_offset: i64) -> Result<(), LogError> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = dir.join(file_name(base_offset, suffix));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(LogError::DeleteSegment { path, source }),
        }
    }
    Ok(())
}

/// Settings a segment needs from its log's config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentSettings {
    pub(crate) index_interval: usize,
    pub(crate) index_capacity: usize,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    log_path: PathBuf,
    /// Owned while the segment is active (or being opened or changed); `None` once it is
    /// closed, when its files are opened on demand through `cache`. Invariant: a log's last
    /// segment always owns its files.
    files: Option<SegmentFiles>,
    cache: Arc<SegmentFileCache>,
    /// This segment's key in `cache`.
    id: u64,
    /// Invariant: bytes `[0, size)` of the file are whole batches; `size <= i32::MAX`.
    size: u64,
    /// The offset after the last batch; `base_offset` when empty.
    next_offset: i64,
    /// Largest batch max timestamp in the segment, -1 when none.
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    bytes_since_last_index_entry: usize,
    /// The time a roll by `segment.ms` is measured from.
    pub(crate) rolling_base_ms: Option<i64>,
    /// Where bytes that are not whole batches begin in a segment below the recovery point,
    /// and why: reads that reach them fail as corrupt.
    damaged: Option<(u64, InvalidBatch)>,
    settings: SegmentSettings,
}

/// Whole batches read from one segment.
#[derive(Debug, Clone)]
pub struct SegmentSlice {
    /// Position of the first batch in the segment file.
    pub position: u64,
    pub bytes: Bytes,
    pub first_offset: i64,
    /// The offset after the last batch returned.
    pub next_offset: i64,
}

impl Segment {
    pub(crate) fn create(
        dir: &Path,
        base_offset: i64,
        settings: SegmentSettings,
        cache: &Arc<SegmentFileCache>,
    ) -> Result<Self, LogError> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(|source| LogError::OpenSegment {
                path: log_path.clone(),
                source,
            })?;
        let index_path = dir.join(file_name(base_offset, INDEX_SUFFIX));
        let offset_index =
            OffsetIndex::create(&index_path, settings.index_capacity).map_err(|source| {
                LogError::OpenIndex {
                    path: index_path,
                    source,
                }
            })?;
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_SUFFIX));
        let time_index =
            TimeIndex::create(&time_path, time_index_capacity(settings.index_capacity)).map_err(
                |source| LogError::OpenIndex {
                    path: time_path,
                    source,
                },
            )?;
        let files = SegmentFiles {
            log: Arc::new(log),
            offset_index,
            time_index,
        };
        Ok(Segment::assemble(
            base_offset,
            log_path,
            files,
            0,
            settings,
            cache,
        ))
    }

    /// A segment owning `files`, `size` bytes long, before anything is known of its batches.
    fn assemble(
        base_offset: i64,
        log_path: PathBuf,
        files: SegmentFiles,
        size: u64,
        settings: SegmentSettings,
        cache: &Arc<SegmentFileCache>,
    ) -> Segment {
        Segment {
            base_offset,
            log_path,
            files: Some(files),
            id: cache.next_id(),
            cache: Arc::clone(cache),
            size,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            bytes_since_last_index_entry: 0,
            rolling_base_ms: None,
            damaged: None,
            settings,
        }
    }

    /// Opens an existing segment. With `recover`, every batch is verified, the file is cut at
    /// the first invalid byte and both indexes are rebuilt; otherwise the indexes are checked
    /// and rebuilt only when they fail the check. The active segment (`is_active`) is
    /// recovered whenever its check fails, since appends go after its last whole batch.
    /// Returns the segment and the bytes cut off.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        settings: SegmentSettings,
        recover: bool,
        is_active: bool,
        cache: &Arc<SegmentFileCache>,
    ) -> Result<(Self, u64), LogError> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|source| LogError::OpenSegment {
                path: log_path.clone(),
                source,
            })?;
        let file_size = log
            .metadata()
            .map_err(|source| LogError::OpenSegment {
                path: log_path.clone(),
                source,
            })?
            .len();
        let index_path = dir.join(file_name(base_offset, INDEX_SUFFIX));
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_SUFFIX));
        let open_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::OpenIndex { path, source }
        };
        let trusted = if recover {
            None
        } else {
            let offsets =
                OffsetIndex::open_trimmed(&index_path).map_err(open_error(&index_path))?;
            let times = TimeIndex::open_trimmed(&time_path).map_err(open_error(&time_path))?;
            offsets.zip(times)
        };
        let (offset_index, time_index, trusted) = match trusted {
            Some((offsets, times)) => (offsets, times, true),
            None => (
                OffsetIndex::create(&index_path, settings.index_capacity)
                    .map_err(open_error(&index_path))?,
                TimeIndex::create(&time_path, time_index_capacity(settings.index_capacity))
                    .map_err(open_error(&time_path))?,
                false,
            ),
        };
        let files = SegmentFiles {
            log: Arc::new(log),
            offset_index,
            time_index,
        };
        let mut segment =
            Segment::assemble(base_offset, log_path, files, file_size, settings, cache);
        let mut truncated = 0;
        if !(trusted && segment.load_from_indexes()?) {
            if !recover {
                tracing::warn!(segment = %segment.log_path.display(), "index missing or inconsistent; rebuilding it");
            }
            truncated = segment.rebuild(recover || is_active)?;
            // A rebuilt index is written preallocated; trimmed, the next open can trust it
            // (the log grows the active segment's again).
            segment.trim_indexes()?;
        }
        segment.rolling_base_ms = segment.first_batch_timestamp()?;
        if recover {
            // What recovery read may be only in the page cache: made durable before it is
            // counted below the recovery point.
            segment.sealed_files().sync()?;
        }
        if !is_active {
            // Closed: its files open again when it is read.
            segment.files = None;
        }
        Ok((segment, truncated))
    }

    /// The segment's files, opened through the cache when the segment is closed.
    ///
    /// # Errors
    /// `OpenSegment` when a closed segment's log cannot be opened.
    pub(crate) fn files(&self) -> Result<FilesRef<'_>, LogError> {
        match &self.files {
            Some(files) => Ok(FilesRef::Owned(files)),
            None => self
                .cache
                .get_or_open(self.id, || SegmentFiles::open_closed(&self.log_path))
                .map(FilesRef::Cached),
        }
    }

    /// The segment's own files, to change it: a closed segment's are opened read-write (it
    /// becomes active again, or is truncated or sealed).
    ///
    /// # Errors
    /// `OpenSegment`, `OpenIndex`.
    fn owned(&mut self) -> Result<&mut SegmentFiles, LogError> {
        if self.files.is_none() {
            self.cache.forget(self.id);
            let log = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.log_path)
                .map_err(|source| LogError::OpenSegment {
                    path: self.log_path.clone(),
                    source,
                })?;
            let index_path = self.log_path.with_extension(INDEX_SUFFIX);
            let time_path = self.log_path.with_extension(TIME_INDEX_SUFFIX);
            let open_error = |path: &Path| {
                let path = path.to_path_buf();
                move |source| LogError::OpenIndex { path, source }
            };
            let offset_index = OffsetIndex::open_trimmed(&index_path)
                .map_err(open_error(&index_path))?
                .ok_or_else(|| LogError::OpenIndex {
                    path: index_path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "missing or damaged"),
                })?;
            let time_index = TimeIndex::open_trimmed(&time_path)
                .map_err(open_error(&time_path))?
                .ok_or_else(|| LogError::OpenIndex {
                    path: time_path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "missing or damaged"),
                })?;
            self.files = Some(SegmentFiles {
                log: Arc::new(log),
                offset_index,
                time_index,
            });
        }
        Ok(self.files.as_mut().expect("set just above"))
    }

    /// The files this segment owns. Only called where they are owned: while it is opened,
    /// and after [`Segment::owned`] in every method that changes it.
    fn own(&self) -> &SegmentFiles {
        self.files
            .as_ref()
            .expect("a segment being opened or changed owns its files")
    }

    fn own_mut(&mut self) -> &mut SegmentFiles {
        self.files
            .as_mut()
            .expect("a segment being opened or changed owns its files")
    }

    /// Gives up the segment's own files once it is closed (sealed): they stay open in the
    /// cache, which closes them when others have been read more recently.
    pub(crate) fn release_files(&mut self) {
        if let Some(files) = self.files.take() {
            self.cache.insert(self.id, files);
        }
    }

    /// Trusts indexes that pass a check: entries in order and inside the file, the last entry
    /// pointing at a batch whose offsets match. Walks the batches after the last entry to
    /// learn the segment's end. Returns false when the indexes must be rebuilt.
    fn load_from_indexes(&mut self) -> Result<bool, LogError> {
        if self.own().offset_index.check_order().is_err()
            || self.own().time_index.check_order().is_err()
        {
            return Ok(false);
        }
        let start = match self.own().offset_index.last() {
            None => 0,
            Some(entry) => {
                if u64::from(entry.position) >= self.size {
                    return Ok(false);
                }
                match self.header_at(u64::from(entry.position))? {
                    Some(header)
                        if header.last_offset()
                            == self.base_offset + i64::from(entry.relative_offset) =>
                    {
                        u64::from(entry.position)
                    }
                    _ => return Ok(false),
                }
            }
        };
        let scanned = self.scan(start, false)?;
        if !matches!(scanned.end, ScanEnd::Clean) {
            return Ok(false);
        }
        if let Some(last) = self.own().time_index.last() {
            self.max_timestamp = last.timestamp;
            self.offset_of_max_timestamp = self.base_offset + i64::from(last.relative_offset);
        }
        if let Some(&(_, last)) = scanned.batches.last() {
            if self.own().time_index.last().is_some_and(|t| {
                i64::from(t.relative_offset) > last.last_offset() - self.base_offset
            }) {
                return Ok(false);
            }
            self.next_offset = last.next_offset();
        } else if self.own().offset_index.len() > 0 {
            return Ok(false);
        }
        for &(_, header) in &scanned.batches {
            self.observe_timestamp(&header);
        }
        self.bytes_since_last_index_entry = (self.size - start) as usize;
        Ok(true)
    }

    /// Rebuilds both indexes from the log. With `verify`, checks every CRC and cuts the
    /// file at the first bad byte; returns the number of bytes cut.
    fn rebuild(&mut self, verify: bool) -> Result<u64, LogError> {
        let scanned = self.scan(0, verify)?;
        self.own_mut().offset_index.truncate_entries(0);
        self.own_mut().time_index.truncate_entries(0);
        self.activate()?;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = self.base_offset;
        self.bytes_since_last_index_entry = 0;
        self.next_offset = self.base_offset;
        let mut previous_next: Option<i64> = None;
        let mut valid_end = 0u64;
        let mut end = scanned.end;
        for &(position, header) in &scanned.batches {
            // Offsets must rise from batch to batch and stay inside this segment.
            let out_of_order = header.base_offset < self.base_offset
                || previous_next.is_some_and(|next| header.base_offset < next)
                || header.last_offset() - self.base_offset > i64::from(i32::MAX);
            if out_of_order {
                end = ScanEnd::Invalid {
                    position,
                    reason: InvalidBatch::CountMismatch {
                        count: header.record_count,
                        last_offset_delta: header.last_offset_delta,
                    },
                };
                break;
            }
            self.index_batch(position, &header)?;
            previous_next = Some(header.next_offset());
            valid_end = position + header.size() as u64;
        }
        self.size = valid_end;
        let file_size = self.file_len()?;
        let cut = file_size - valid_end;
        match end {
            ScanEnd::Clean => {}
            ScanEnd::Torn { position } | ScanEnd::Invalid { position, .. } if !verify => {
                // Without verification this is an index rebuild below the recovery point: the
                // bytes stay on disk, and a read that reaches them reports them as corrupt.
                tracing::warn!(segment = %self.log_path.display(), position, "unreadable batch while rebuilding the index");
                let reason = match end {
                    ScanEnd::Invalid { reason, .. } => reason,
                    _ => InvalidBatch::TooShort {
                        len: (file_size - position) as usize,
                    },
                };
                self.damaged = Some((position, reason));
                self.size = file_size;
                return Ok(0);
            }
            ScanEnd::Torn { position } => {
                tracing::warn!(segment = %self.log_path.display(), position, cut, "torn tail: truncating to the last whole batch");
            }
            ScanEnd::Invalid { position, reason } => {
                tracing::warn!(segment = %self.log_path.display(), position, cut, %reason, "invalid batch: truncating the log before it");
            }
        }
        if cut > 0 && verify {
            self.own()
                .log
                .set_len(valid_end)
                .map_err(|source| LogError::TruncateSegment {
                    path: self.log_path.clone(),
                    source,
                })?;
        }
        Ok(if verify { cut } else { 0 })
    }

    fn file_len(&self) -> Result<u64, LogError> {
        Ok(self
            .files()?
            .log
            .metadata()
            .map_err(|source| LogError::ReadSegment {
                path: self.log_path.clone(),
                source,
            })?
            .len())
    }

    fn observe_timestamp(&mut self, header: &BatchHeader) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.last_offset();
        }
    }

    /// Updates the in-memory state and indexes for a batch written at `position`.
    ///
    /// # Errors
    /// `ReserveIndex` when an index entry needs disk space that cannot be had (never after
    /// [`Segment::reserve_index_space`] for the batches of an append).
    fn index_batch(&mut self, position: u64, header: &BatchHeader) -> Result<(), LogError> {
        if self.bytes_since_last_index_entry > self.settings.index_interval {
            self.push_index_entries(header.last_offset(), position)?;
            self.bytes_since_last_index_entry = 0;
        }
        self.observe_timestamp(header);
        self.bytes_since_last_index_entry += header.size();
        self.next_offset = header.next_offset();
        Ok(())
    }

    fn push_index_entries(&mut self, last_offset: i64, position: u64) -> Result<(), LogError> {
        let relative_offset = (last_offset - self.base_offset) as u32;
        self.owned()?;
        if !self.own().offset_index.is_full()
            && self
                .own()
                .offset_index
                .last()
                .is_none_or(|e| e.relative_offset < relative_offset)
        {
            self.own_mut()
                .offset_index
                .push(OffsetEntry {
                    relative_offset,
                    position: position as u32,
                })
                .map_err(|source| self.reserve_error(INDEX_SUFFIX, source))?;
        }
        self.push_time_entry()
    }

    fn push_time_entry(&mut self) -> Result<(), LogError> {
        self.owned()?;
        if self.max_timestamp < 0 || self.own().time_index.is_full() {
            return Ok(());
        }
        if self
            .own()
            .time_index
            .last()
            .is_none_or(|e| e.timestamp < self.max_timestamp)
        {
            let entry = TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: (self.offset_of_max_timestamp - self.base_offset) as u32,
            };
            self.own_mut()
                .time_index
                .push(entry)
                .map_err(|source| self.reserve_error(TIME_INDEX_SUFFIX, source))?;
        }
        Ok(())
    }

    fn reserve_error(&self, suffix: &str, source: io::Error) -> LogError {
        LogError::ReserveIndex {
            path: self.log_path.with_extension(suffix),
            source,
        }
    }

    /// Reserves disk space for the index entries `batches` more batches may add (one per
    /// batch in each index, and the time entry a seal adds), so that appending them cannot
    /// meet a full disk halfway.
    ///
    /// # Errors
    /// `ReserveIndex` (`ENOSPC` on a full disk).
    fn reserve_index_space(&mut self, batches: usize) -> Result<(), LogError> {
        self.owned()?;
        self.own_mut()
            .offset_index
            .reserve(batches)
            .map_err(|source| self.reserve_error(INDEX_SUFFIX, source))?;
        self.own_mut()
            .time_index
            .reserve(batches + 1)
            .map_err(|source| self.reserve_error(TIME_INDEX_SUFFIX, source))
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub(crate) fn path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn file(&self) -> &Arc<File> {
        &self.own().log
    }

    /// Whether a batch of `size` bytes ending at `last_offset` would overflow this segment's
    /// 32-bit relative offsets or positions, or its full indexes.
    pub(crate) fn cannot_take(&self, size: usize, last_offset: i64) -> bool {
        !self.is_empty()
            && (self.own().offset_index.is_full()
                || last_offset - self.base_offset > i64::from(i32::MAX)
                || self.size + size as u64 > i32::MAX as u64)
    }

    /// Writes `bytes` (whole, already validated and stamped batches) at the end of the file.
    ///
    /// # Errors
    /// `ReserveIndex` (nothing written), `WriteSegment`. On error the file is cut back to its
    /// previous length when possible; the in-memory state is unchanged either way, so nothing
    /// partial is ever read.
    pub(crate) fn append(
        &mut self,
        bytes: &[u8],
        headers: &[(usize, BatchHeader)],
    ) -> Result<(), LogError> {
        self.reserve_index_space(headers.len())?;
        let log = Arc::clone(&self.own().log);
        if let Err(source) = log.write_all_at(bytes, self.size) {
            if let Err(cut) = log.set_len(self.size) {
                tracing::error!(segment = %self.log_path.display(), error = %cut, "could not cut a failed write");
            }
            return Err(LogError::WriteSegment {
                path: self.log_path.clone(),
                source,
            });
        }
        let start = self.size;
        let indexed = (self.own().offset_index.len(), self.own().time_index.len());
        for &(relative_position, header) in headers {
            if let Err(e) = self.index_batch(start + relative_position as u64, &header) {
                // Unreachable after the reservation above; if it is reached anyway, nothing
                // of this append stays visible.
                self.own_mut().offset_index.truncate_entries(indexed.0);
                self.own_mut().time_index.truncate_entries(indexed.1);
                return Err(e);
            }
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// The header of the batch at `position`, or `None` when no whole header is there.
    fn header_at(&self, position: u64) -> Result<Option<BatchHeader>, LogError> {
        if position + HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut buffer = [0u8; HEADER_LEN];
        self.files()?
            .log
            .read_exact_at(&mut buffer, position)
            .map_err(|source| LogError::ReadSegment {
                path: self.log_path.clone(),
                source,
            })?;
        Ok(BatchHeader::parse(&buffer).ok())
    }

    /// Walks the batches from `position` to the end of the segment. With `verify`, each
    /// batch's CRC is checked; otherwise only headers are read.
    pub(crate) fn scan(&self, position: u64, verify: bool) -> Result<Scanned, LogError> {
        scan_file(&self.files()?.log, self.size, position, verify).map_err(|source| {
            LogError::ReadSegment {
                path: self.log_path.clone(),
                source,
            }
        })
    }

    /// The position of the first batch whose last offset is at least `offset`, and that batch.
    fn find(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if offset >= self.next_offset {
            // Past the last readable batch of a damaged segment: report, do not skip ahead.
            return match &self.damaged {
                Some((position, reason)) => Err(self.corrupt(*position, reason.clone())),
                None => Ok(None),
            };
        }
        let files = self.files()?;
        let start = files
            .offset_index
            .floor(offset - self.base_offset)
            .map_or(0, |e| u64::from(e.position));
        // The target is at most about one index interval past its entry: read only that far.
        let mut scanner = Scanner::new(&files.log, self.size, start, false)
            .with_chunk(self.settings.index_interval + HEADER_LEN);
        loop {
            match scanner.next().map_err(|source| LogError::ReadSegment {
                path: self.log_path.clone(),
                source,
            })? {
                Step::Batch(position, header) if header.last_offset() >= offset => {
                    return Ok(Some((position, header)));
                }
                Step::Batch(..) => {}
                Step::End(ScanEnd::Clean) => return Ok(None),
                Step::End(ScanEnd::Torn { position }) => {
                    return Err(self.corrupt(
                        position,
                        InvalidBatch::TooShort {
                            len: (self.size - position) as usize,
                        },
                    ));
                }
                Step::End(ScanEnd::Invalid { position, reason }) => {
                    return Err(self.corrupt(position, reason));
                }
            }
        }
    }

    fn corrupt(&self, position: u64, source: InvalidBatch) -> LogError {
        LogError::Corrupt {
            path: self.log_path.clone(),
            position,
            source,
        }
    }

    /// Reads whole batches starting with the one that holds `offset`: at most `max_bytes`
    /// unless the first batch alone is larger (so a consumer never gets stuck), and only
    /// batches whose last offset is below `upper_bound`. Every batch's CRC is checked.
    ///
    /// # Errors
    /// `Corrupt` when the first batch fails its check (later bad batches end the slice
    /// early, so the next read reports them); `ReadSegment`.
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<Option<SegmentSlice>, LogError> {
        let Some((position, first)) = self.find(offset)? else {
            return Ok(None);
        };
        if first.last_offset() >= upper_bound {
            return Ok(None);
        }
        let available = (self.size - position) as usize;
        let want = max_bytes.min(available).max(first.size().min(available));
        let files = self.files()?;
        let buffer =
            read_at(&files.log, position, want).map_err(|source| LogError::ReadSegment {
                path: self.log_path.clone(),
                source,
            })?;
        let mut buffer = buffer;
        let mut end = 0usize;
        let mut next_offset = first.base_offset;
        while end < buffer.len() {
            let batch = match Batch::parse(&buffer[end..]) {
                Ok(batch) => batch,
                Err(InvalidBatch::TooShort { .. } | InvalidBatch::LengthMismatch { .. })
                    if end > 0 =>
                {
                    break;
                }
                Err(reason) if end == 0 => return Err(self.corrupt(position, reason)),
                Err(_) => break,
            };
            if batch.header.last_offset() >= upper_bound {
                break;
            }
            next_offset = batch.header.next_offset();
            end += batch.header.size();
        }
        buffer.truncate(end);
        Ok(Some(SegmentSlice {
            position,
            bytes: Bytes::from(buffer),
            first_offset: first.base_offset,
            next_offset,
        }))
    }

    /// The first batch whose max timestamp is at least `timestamp`.
    pub(crate) fn find_by_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let files = self.files()?;
        let from_offset = files
            .time_index
            .floor(timestamp.saturating_sub(1))
            .map_or(self.base_offset, |e| {
                self.base_offset + i64::from(e.relative_offset)
            });
        let start = files
            .offset_index
            .floor(from_offset - self.base_offset)
            .map_or(0, |e| u64::from(e.position));
        let mut scanner = Scanner::new(&files.log, self.size, start, false);
        loop {
            match scanner.next().map_err(|source| LogError::ReadSegment {
                path: self.log_path.clone(),
                source,
            })? {
                Step::Batch(position, header) if header.max_timestamp >= timestamp => {
                    return Ok(Some((position, header)));
                }
                Step::Batch(..) => {}
                Step::End(ScanEnd::Clean) => return Ok(None),
                Step::End(ScanEnd::Torn { position }) => {
                    return Err(self.corrupt(
                        position,
                        InvalidBatch::TooShort {
                            len: (self.size - position) as usize,
                        },
                    ));
                }
                Step::End(ScanEnd::Invalid { position, reason }) => {
                    return Err(self.corrupt(position, reason));
                }
            }
        }
    }

    /// Reads the whole batch at `position` and checks it.
    pub(crate) fn read_batch(
        &self,
        position: u64,
        header: &BatchHeader,
    ) -> Result<Vec<u8>, LogError> {
        let mut buffer = vec![0u8; header.size()];
        self.files()?
            .log
            .read_exact_at(&mut buffer, position)
            .map_err(|source| LogError::ReadSegment {
                path: self.log_path.clone(),
                source,
            })?;
        Batch::parse(&buffer).map_err(|reason| self.corrupt(position, reason))?;
        Ok(buffer)
    }

    fn first_batch_timestamp(&self) -> Result<Option<i64>, LogError> {
        Ok(self.header_at(0)?.map(|h| h.max_timestamp))
    }

    /// Removes every batch whose last offset is at least `offset`.
    /// Returns the new next offset of this segment.
    pub(crate) fn truncate_to(&mut self, offset: i64) -> Result<i64, LogError> {
        let Some((position, header)) = self.find(offset)? else {
            return Ok(self.next_offset);
        };
        self.owned()?
            .log
            .set_len(position)
            .map_err(|source| LogError::TruncateSegment {
                path: self.log_path.clone(),
                source,
            })?;
        self.size = position;
        let cut_from = header.base_offset - self.base_offset;
        self.own_mut()
            .offset_index
            .truncate_while(|e| i64::from(e.relative_offset) < cut_from);
        self.own_mut()
            .time_index
            .truncate_while(|e| i64::from(e.relative_offset) < cut_from);
        // Recompute what the removed batches may have contributed.
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = self.base_offset;
        if let Some(last) = self.own().time_index.last() {
            self.max_timestamp = last.timestamp;
            self.offset_of_max_timestamp = self.base_offset + i64::from(last.relative_offset);
        }
        let start = self
            .own()
            .offset_index
            .last()
            .map_or(0, |e| u64::from(e.position));
        let scanned = self.scan(start, false)?;
        for &(_, h) in &scanned.batches {
            self.observe_timestamp(&h);
            self.next_offset = h.next_offset();
        }
        self.bytes_since_last_index_entry = (self.size - start) as usize;
        if self.is_empty() {
            self.rolling_base_ms = None;
        }
        Ok(self.next_offset)
    }

    /// Makes the segment read-only: a final time-index entry and indexes trimmed. Syncing is
    /// the caller's, through [`Segment::sealed_files`].
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        if self.file_len()? != self.size {
            // A failed write left bytes past the last whole batch.
            let size = self.size;
            self.owned()?
                .log
                .set_len(size)
                .map_err(|source| LogError::TruncateSegment {
                    path: self.log_path.clone(),
                    source,
                })?;
        }
        self.push_time_entry()?;
        self.trim_indexes()
    }

    /// What another thread needs to fsync this segment once it is sealed.
    pub(crate) fn sealed_files(&self) -> SealedFiles {
        SealedFiles {
            log: Arc::clone(&self.own().log),
            log_path: self.log_path.clone(),
            index_paths: [
                self.log_path.with_extension(INDEX_SUFFIX),
                self.log_path.with_extension(TIME_INDEX_SUFFIX),
            ],
        }
    }

    pub(crate) fn trim_indexes(&mut self) -> Result<(), LogError> {
        let path = self.log_path.clone();
        self.owned()?
            .offset_index
            .trim()
            .map_err(|source| LogError::OpenIndex {
                path: path.clone(),
                source,
            })?;
        self.own_mut()
            .time_index
            .trim()
            .map_err(|source| LogError::OpenIndex { path, source })
    }

    /// Grows the indexes back to their preallocated size so the segment can take appends.
    pub(crate) fn activate(&mut self) -> Result<(), LogError> {
        let capacity = self.settings.index_capacity;
        let path = self.log_path.clone();
        self.owned()?
            .offset_index
            .preallocate(capacity)
            .map_err(|source| LogError::OpenIndex {
                path: path.clone(),
                source,
            })?;
        self.own_mut()
            .time_index
            .preallocate(time_index_capacity(capacity))
            .map_err(|source| LogError::OpenIndex { path, source })
    }

    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.files()?
            .log
            .sync_data()
            .map_err(|source| LogError::SyncSegment {
                path: self.log_path.clone(),
                source,
            })
    }

    /// Deletes the segment's files.
    pub(crate) fn delete(self) -> Result<(), LogError> {
        let dir = self
            .log_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let base = self.base_offset;
        drop(self);
        delete_files(&dir, base)
    }
}

impl Drop for Segment {
    /// A segment gone (deleted, or its log closed) closes its files in the cache too.
    fn drop(&mut self) {
        self.cache.forget(self.id);
    }
}

/// A sealed segment's files, to be fsynced away from the appending thread.
#[derive(Debug, Clone)]
pub(crate) struct SealedFiles {
    pub(crate) log: Arc<File>,
    pub(crate) log_path: PathBuf,
    index_paths: [PathBuf; 2],
}

impl SealedFiles {
    /// Fsyncs the log data and the indexes (whose mapped pages are in the page cache, so an
    /// fsync through any descriptor writes them). A file deleted meanwhile needs nothing.
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.log
            .sync_data()
            .map_err(|source| LogError::SyncSegment {
                path: self.log_path.clone(),
                source,
            })?;
        for path in &self.index_paths {
            match File::open(path).and_then(|f| f.sync_all()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(LogError::SyncSegment {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The time index holds at most one entry per offset-index entry, plus the final one written
/// when the segment is sealed, so it never fills before the offset index does.
fn time_index_capacity(offset_index_capacity: usize) -> usize {
    (offset_index_capacity / 8 + 1) * 12
}

/// Reads `len` bytes of `file` at `position` into a new buffer, straight into its unwritten
/// capacity (a zeroed buffer would cost a pass over memory the read overwrites anyway: a
/// tenth of a fetch's broker CPU).
///
/// # Errors
/// The read's; `UnexpectedEof` when the file ends first.
fn read_at(file: &File, position: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::with_capacity(len);
    while buffer.len() < len {
        let at = position + buffer.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buffer), at) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    buffer.truncate(len);
    Ok(buffer)
}
