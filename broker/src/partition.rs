//! One partition replica: its log, and a watch on its end for fetches that wait.

use std::path::Path;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::watch;
use weir_proto::Reason;
use weir_storage::{Appended, BatchHeader, Log, LogConfig, LogError, OpenReport, SegmentSlice};

use crate::node::Failure;
use crate::producer::{Check, Producers};

/// How long an idempotent producer's batch waits for the batches before it.
const SEQUENCE_WAIT: Duration = Duration::from_secs(1);

/// A partition and its log. On a single broker the high watermark is the log end offset.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: RwLock<Log>,
    /// Idempotent producers' last batches; changed only while the log's write lock is held.
    producers: Mutex<Producers>,
    /// Woken after every append, for early batches waiting for their turn.
    appended: tokio::sync::Notify,
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
        let mut producers = Producers::default();
        log.for_each_batch_header(|header| producers.record(header))?;
        let (high_watermark, _) = watch::channel(log.log_end_offset());
        let partition = Partition {
            topic: topic.to_string(),
            index,
            log: RwLock::new(log),
            producers: Mutex::new(producers),
            appended: tokio::sync::Notify::new(),
            high_watermark,
        };
        Ok((partition, report))
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
    /// (on a blocking thread, so concurrent producers share it). A batch an idempotent
    /// producer already wrote is not written again: the answer carries its first offsets.
    ///
    /// # Errors
    /// The log's refusal (`InvalidRecord`, `RecordTooLarge`, `StorageError`), or
    /// `OutOfOrderSequence` / `InvalidProducerEpoch` for an idempotent producer.
    pub async fn append(&self, batches: &mut [u8], leader_epoch: i32) -> Result<Appended, Failure> {
        // A pipelining idempotent producer's batch may arrive before its predecessor: it waits
        // for its turn, and only a gap that does not fill in time is refused.
        let deadline = tokio::time::Instant::now() + SEQUENCE_WAIT;
        let appended = loop {
            let turn = self.appended.notified();
            tokio::pin!(turn);
            turn.as_mut().enable();
            match self.try_append(batches, leader_epoch)? {
                Some(appended) => break appended,
                None if tokio::time::Instant::now() < deadline => {
                    let _ = tokio::time::timeout_at(deadline, turn).await;
                }
                None => {
                    let header = headers_of(batches).first().copied();
                    let sequence = header.map_or(-1, |h| h.base_sequence);
                    return Err(Failure::new(
                        Reason::OutOfOrderSequence,
                        format!(
                            "sequence {sequence} came, but the batches before it did not within {SEQUENCE_WAIT:?}"
                        ),
                    ));
                }
            }
        };
        self.appended.notify_waiters();
        let appended = match appended.flush {
            None => appended,
            Some(_) => tokio::task::spawn_blocking(move || appended.durable())
                .await
                .map_err(|_| Failure::new(Reason::StorageError, "the flush thread failed"))??,
        };
        // Only once durable (as the topic's policy defines it) does a record become visible.
        self.high_watermark.send_if_modified(|hw| {
            let changed = *hw < appended.last_offset + 1;
            *hw = (*hw).max(appended.last_offset + 1);
            changed
        });
        Ok(appended)
    }

    /// Appends unless an idempotent producer's batch is early (`None`: wait for its turn).
    fn try_append(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
    ) -> Result<Option<Appended>, Failure> {
        let mut log = self.write_log();
        let headers = headers_of(batches);
        // Sequences are checked against the state before the request: one idempotent batch
        // per request (as Kafka's producers send), or its later batches would look early.
        if headers.len() > 1 && headers.iter().any(|h| h.producer_id >= 0) {
            return Err(Failure::new(
                Reason::InvalidRequest,
                "an idempotent producer sends one batch per partition per request",
            ));
        }
        let mut producers = self
            .producers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut duplicate = None;
        for header in &headers {
            match producers
                .check(header)
                .map_err(|(reason, message)| Failure::new(reason, message))?
            {
                Check::Duplicate {
                    first_offset,
                    last_offset,
                } => duplicate = Some((first_offset, last_offset)),
                Check::Early => return Ok(None),
                Check::Append => {}
            }
        }
        if let Some((first_offset, last_offset)) = duplicate {
            if headers.len() != 1 {
                return Err(Failure::new(
                    Reason::InvalidRequest,
                    "a retried request must hold its one batch alone",
                ));
            }
            // The first attempt may still be waiting for its fsync: this answer waits too.
            let flush = log
                .config()
                .flushes_every_append()
                .then(|| log.flush_ticket());
            return Ok(Some(Appended {
                first_offset,
                last_offset,
                max_timestamp: -1,
                records: 0,
                flush,
            }));
        }
        let appended = log.append(batches, leader_epoch)?;
        let mut next = appended.first_offset;
        for mut header in headers {
            header.base_offset = next;
            next = header.next_offset();
            producers.record(&header);
        }
        Ok(Some(appended))
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
        // Not under the log's lock: appends would wait for the checkpoint's fsyncs.
        let checkpoint = self.read_log().recovery_checkpoint();
        checkpoint.write()
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

/// The headers of the batches laid end to end in `bytes`, as far as they parse (the log
/// refuses the rest with a precise error).
fn headers_of(bytes: &[u8]) -> Vec<BatchHeader> {
    let mut headers = Vec::new();
    let mut position = 0;
    while let Some(Ok(header)) = bytes.get(position..).map(BatchHeader::parse) {
        let size = header.size();
        if size == 0 || position + size > bytes.len() {
            break;
        }
        headers.push(header);
        position += size;
    }
    headers
}
