//! One partition replica: its log, and a watch on its end for fetches that wait.

use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::watch;
use weir_storage::{Appended, Log, LogConfig, LogError, OpenReport, SegmentSlice};

/// A partition and its log. On a single broker the high watermark is the log end offset.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: RwLock<Log>,
    /// The high watermark, published after every append so that waiting fetches wake.
    high_watermark: watch::Sender<i64>,
}

/// A partition's offsets and size, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionState {
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size: u64,
}

impl Partition {
    /// Opens (recovering if need be) the partition's log in `dir`.
    ///
    /// # Errors
    /// As [`Log::open`].
    pub fn open(
        dir: &Path,
        topic: &str,
        index: i32,
        config: LogConfig,
    ) -> Result<(Partition, OpenReport), LogError> {
        let (log, report) = Log::open(dir, config)?;
        let (high_watermark, _) = watch::channel(log.log_end_offset());
        Ok((
            Partition {
                topic: topic.to_string(),
                index,
                log: RwLock::new(log),
                high_watermark,
            },
            report,
        ))
    }

    fn read_log(&self) -> RwLockReadGuard<'_, Log> {
        // Storage calls return errors rather than panic; a poisoned lock still guards a
        // consistent log.
        self.log
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_log(&self) -> RwLockWriteGuard<'_, Log> {
        self.log
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends client batches, then waits for the fsync the topic's flush policy asks for
    /// (on a blocking thread, so concurrent producers share it).
    ///
    /// # Errors
    /// As [`Log::append`], or `SyncSegment`.
    pub async fn append(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
    ) -> Result<Appended, LogError> {
        let appended = self.write_log().append(batches, leader_epoch)?;
        let appended = match appended.flush {
            None => appended,
            Some(_) => tokio::task::spawn_blocking(move || appended.durable())
                .await
                .map_err(|_| LogError::Failed)??,
        };
        // Only once durable (as the topic's policy defines it) does a record become visible.
        self.high_watermark.send_if_modified(|hw| {
            let changed = *hw < appended.last_offset + 1;
            *hw = (*hw).max(appended.last_offset + 1);
            changed
        });
        Ok(appended)
    }

    /// Whole batches from `offset`, at most `max_bytes` (at least one batch), below the high
    /// watermark.
    ///
    /// # Errors
    /// `OffsetOutOfRange`, `Corrupt`, `ReadSegment`.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<SegmentSlice>, LogError> {
        let bound = *self.high_watermark.borrow();
        self.read_log().read(offset, max_bytes, Some(bound))
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// Waits until the high watermark passes `offset` or `timeout` elapses; returns the high
    /// watermark.
    pub async fn wait_past(&self, offset: i64, timeout: Duration) -> i64 {
        let mut watcher = self.high_watermark.subscribe();
        let _ = tokio::time::timeout(timeout, watcher.wait_for(|&hw| hw > offset)).await;
        *watcher.borrow()
    }

    pub fn state(&self) -> PartitionState {
        let log = self.read_log();
        PartitionState {
            log_start_offset: log.log_start_offset(),
            log_end_offset: log.log_end_offset(),
            high_watermark: self.high_watermark(),
            size: log.size(),
        }
    }

    /// The first offset at or after `timestamp`, with its timestamp.
    ///
    /// # Errors
    /// `Corrupt`, `ReadSegment`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let found = self.read_log().offset_for_timestamp(timestamp)?;
        let bound = self.high_watermark();
        Ok(found
            .filter(|f| f.offset < bound)
            .map(|f| (f.offset, f.timestamp)))
    }

    pub fn set_config(&self, config: LogConfig) {
        self.write_log().set_config(config);
    }

    /// Runs retention; returns the segments deleted.
    ///
    /// # Errors
    /// As [`Log::apply_retention`].
    pub fn apply_retention(&self) -> Result<usize, LogError> {
        Ok(self.write_log().apply_retention()?.deleted_segments)
    }

    /// Flushes when `flush.ms` says it is time, and checkpoints the recovery point.
    ///
    /// # Errors
    /// `SyncSegment`, `WriteCheckpoint`.
    pub fn maintain(&self) -> Result<(), LogError> {
        let ticket = self.write_log().flush_if_due();
        if let Some(ticket) = ticket {
            ticket.wait()?;
        }
        self.read_log().checkpoint_recovery_point()
    }

    /// Closes the log cleanly (the clean-shutdown marker is written).
    ///
    /// # Errors
    /// As [`Log::close`].
    pub fn close(self) -> Result<(), LogError> {
        self.log
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .close()
    }
}
