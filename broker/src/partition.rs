//! One partition replica: its log, its role (leader, follower, or neither yet), and watches
//! on its ends for fetches that wait.
//!
//! As leader it appends producers' batches stamped with its leader epoch, serves followers'
//! fetches (learning their log ends, which move the high watermark) and answers `acks=all`
//! once the high watermark passes a batch. As follower it appends what the leader sends,
//! keeping offsets and epochs, and truncates where its log diverges from the leader's
//! (KIP-101, KIP-279). Roles change only by the controller's decisions.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use weir_proto::Reason;
use weir_storage::{
    Appended, BatchHeader, Log, LogConfig, LogError, LogOptions, OpenReport, SegmentSlice,
};

use crate::failure::Failure;
use crate::producer::{Check, Producers};
use crate::replica::{BrokerId, IsrProposal, LeaderView, Leadership};

/// How long an idempotent producer's batch waits for the batches before it.
const SEQUENCE_WAIT: Duration = Duration::from_secs(1);

/// What this replica does for its partition.
#[derive(Debug, Clone)]
pub enum Role {
    /// Nothing yet (not told by the controller), or no longer a replica.
    None,
    Leader(LeaderView),
    Follower {
        leader: BrokerId,
        leader_epoch: i32,
    },
}

/// How much a producer asks to be acknowledged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckLevel {
    /// Once the leader has appended (and flushed, if the policy says so).
    Leader,
    /// Once every in-sync replica has it and the ISR holds at least `min.insync.replicas`.
    All {
        min_insync_replicas: usize,
        timeout: Duration,
    },
}

/// What a follower's fetch gets.
#[derive(Debug, Clone)]
pub enum ReplicaFetched {
    Batches {
        /// Whole batches from the fetch offset (empty when there is nothing new).
        batches: bytes::Bytes,
        high_watermark: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// The follower's log diverges: it must truncate to `end_offset` of `epoch` at most.
    Diverging { epoch: i32, end_offset: i64 },
}

/// A partition and its log.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: RwLock<Log>,
    /// Idempotent producers' last batches; changed only while the log's write lock is held.
    producers: Mutex<Producers>,
    /// Woken after every append, for early batches waiting for their turn.
    appended: tokio::sync::Notify,
    /// The high watermark, published whenever it moves so that waiting fetches and `acks=all`
    /// answers wake.
    high_watermark: watch::Sender<i64>,
    /// The log end offset, published after every append, for followers' long polls.
    log_end: watch::Sender<i64>,
    role: Mutex<Role>,
    /// The newest leader epoch this replica was told of: a role change for an older one (a
    /// late answer) is ignored. Changed only under the role lock.
    known_epoch: std::sync::atomic::AtomicI32,
    /// Bumped on every change of role or leader epoch: waiters for a leadership that ended
    /// give up.
    generation: watch::Sender<u64>,
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
    /// Opens (recovering if need be) the partition's log in `dir`, with the broker's shared
    /// `options` (its segment file cache).
    ///
    /// # Errors
    /// As [`Log::open`].
    pub fn open(
        dir: &Path,
        topic: &str,
        index: i32,
        config: LogConfig,
        options: LogOptions,
    ) -> Result<(Partition, OpenReport), LogError> {
        let (log, report) = Log::open_with(dir, config, options)?;
        let mut producers = Producers::default();
        log.for_each_batch_header(|header| producers.record(header))?;
        let end = log.log_end_offset();
        let partition = Partition {
            topic: topic.to_string(),
            index,
            log: RwLock::new(log),
            producers: Mutex::new(producers),
            appended: tokio::sync::Notify::new(),
            // What a replica had before the controller says more: everything it holds (a
            // leader's high watermark only moves forward from here, see LeaderView).
            high_watermark: watch::channel(end).0,
            log_end: watch::channel(end).0,
            role: Mutex::new(Role::None),
            known_epoch: std::sync::atomic::AtomicI32::new(-1),
            generation: watch::channel(0).0,
        };
        Ok((partition, report))
    }

    fn role(&self) -> MutexGuard<'_, Role> {
        self.role
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn producers(&self) -> MutexGuard<'_, Producers> {
        self.producers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Becomes (or stays) leader at `leader_epoch` with this ISR. A new epoch starts a new
    /// view of the followers; the same epoch only takes the committed ISR.
    pub fn become_leader(
        &self,
        me: BrokerId,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
    ) {
        let durable_end = self.durable_end();
        // The log first (the lock order is log, then role): a new epoch starts at the log
        // end in the epoch cache before anything is appended, so followers that fetch with a
        // later epoch than this log has batches of are answered where the logs agree.
        let mut log = self.write_log();
        let mut role = self.role();
        let known = self.known_epoch.load(Ordering::Acquire);
        if leader_epoch < known {
            tracing::debug!(topic = %self.topic, partition = self.index, leader_epoch, known, "ignored a stale leadership");
            return;
        }
        if let Role::Leader(view) = &mut *role
            && view.leader_epoch == leader_epoch
        {
            if partition_epoch < view.partition_epoch {
                // An older decision arriving late (an ISR change answered after metadata).
                return;
            }
            view.set_replicas(replicas, Instant::now());
            let hw = view.set_isr(isr, partition_epoch, durable_end);
            drop(role);
            drop(log);
            self.publish_high_watermark(hw);
            return;
        }
        if let Err(e) = log.start_epoch(leader_epoch) {
            tracing::error!(topic = %self.topic, partition = self.index, leader_epoch, error = %crate::failure::error_chain(&e), "cannot record the new leader epoch; not leading");
            return;
        }
        let epoch_start = log.log_end_offset();
        drop(log);
        self.known_epoch.store(leader_epoch, Ordering::Release);
        let leadership = Leadership {
            me,
            leader_epoch,
            partition_epoch,
            replicas,
            isr,
        };
        let view = LeaderView::new(
            leadership,
            self.high_watermark(),
            epoch_start,
            Instant::now(),
        );
        *role = Role::Leader(view);
        let hw = match &mut *role {
            Role::Leader(view) => view.on_append(durable_end),
            _ => self.high_watermark(),
        };
        drop(role);
        self.generation.send_modify(|g| *g += 1);
        self.publish_high_watermark(hw);
        tracing::info!(topic = %self.topic, partition = self.index, leader_epoch, "leading");
    }

    /// Becomes (or stays) a follower of `leader` at `leader_epoch`.
    pub fn become_follower(&self, leader: BrokerId, leader_epoch: i32) {
        let mut role = self.role();
        if matches!(&*role, Role::Follower { leader: l, leader_epoch: e } if *l == leader && *e == leader_epoch)
        {
            return;
        }
        if leader_epoch < self.known_epoch.load(Ordering::Acquire) {
            return;
        }
        self.known_epoch.store(leader_epoch, Ordering::Release);
        *role = Role::Follower {
            leader,
            leader_epoch,
        };
        drop(role);
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(topic = %self.topic, partition = self.index, leader, leader_epoch, "following");
    }

    /// Stops leading or following (the partition went offline or moved away).
    pub fn become_none(&self) {
        *self.role() = Role::None;
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn role_now(&self) -> Role {
        self.role().clone()
    }

    /// The leader epoch this replica leads at.
    ///
    /// # Errors
    /// `NotLeader` unless it leads.
    pub fn leading_epoch(&self) -> Result<i32, Failure> {
        match &*self.role() {
            Role::Leader(view) => Ok(view.leader_epoch),
            Role::Follower { leader, .. } => Err(Failure::new(
                Reason::NotLeader,
                format!(
                    "broker does not lead {}-{}; broker {leader} does",
                    self.topic, self.index
                ),
            )),
            Role::None => Err(Failure::new(
                Reason::NotLeader,
                format!("{}-{} has no leader here now", self.topic, self.index),
            )),
        }
    }

    /// Checks a client's leader epoch (KIP-320) against this leader's.
    ///
    /// # Errors
    /// `NotLeader`; `FencedLeaderEpoch` for an older epoch, `UnknownLeaderEpoch` for a newer.
    pub fn check_client_epoch(&self, epoch: Option<i32>) -> Result<(), Failure> {
        let current = self.leading_epoch()?;
        match epoch {
            Some(e) if e < current => Err(Failure::new(
                Reason::FencedLeaderEpoch,
                format!(
                    "leader epoch {e} of {}-{} is stale; it is {current}: refresh the metadata",
                    self.topic, self.index
                ),
            )),
            Some(e) if e > current => Err(Failure::new(
                Reason::UnknownLeaderEpoch,
                format!(
                    "leader epoch {e} of {}-{} is newer than this broker knows ({current})",
                    self.topic, self.index
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The ISR change to ask the controller for, with the epochs it was computed at.
    pub fn isr_proposal(&self, max_lag: Duration) -> Option<(Vec<BrokerId>, i32, i32)> {
        match &*self.role() {
            Role::Leader(view) => view.proposal(max_lag, Instant::now()).map(|p| {
                let isr = view.proposed_isr(&p);
                if let IsrProposal::Shrink(out) = &p {
                    tracing::warn!(topic = %self.topic, partition = self.index, lagging = ?out, "followers lag: asking to shrink the ISR");
                }
                (isr, view.leader_epoch, view.partition_epoch)
            }),
            _ => None,
        }
    }

    /// The log end offset up to which everything is durable under the flush policy.
    fn durable_end(&self) -> i64 {
        let log = self.read_log();
        if log.config().flushes_every_append() {
            log.recovery_point()
        } else {
            log.log_end_offset()
        }
    }

    fn publish_high_watermark(&self, hw: i64) {
        self.high_watermark.send_if_modified(|current| {
            let changed = *current != hw;
            *current = hw;
            changed
        });
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
    pub async fn append(&self, batches: &mut [u8], acks: AckLevel) -> Result<Appended, Failure> {
        let generation = *self.generation.borrow();
        let leader_epoch = self.leading_epoch()?;
        if let AckLevel::All {
            min_insync_replicas,
            ..
        } = acks
        {
            let isr = match &*self.role() {
                Role::Leader(view) => view.isr.len(),
                _ => 0,
            };
            if isr < min_insync_replicas {
                return Err(Failure::new(
                    Reason::NotEnoughReplicas,
                    format!(
                        "{}-{} has {isr} in-sync replica(s), fewer than min.insync.replicas={min_insync_replicas}; nothing was written",
                        self.topic, self.index
                    ),
                ));
            }
        }
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
        self.log_end.send_if_modified(|end| {
            std::mem::replace(end, (*end).max(appended.last_offset + 1)) != *end
        });
        let appended = match appended.flush {
            None => appended,
            Some(_) => tokio::task::spawn_blocking(move || appended.durable())
                .await
                .map_err(|_| Failure::new(Reason::StorageError, "the flush thread failed"))??,
        };
        // Only once durable (as the topic's policy defines it) does the leader count a record
        // as its own; the high watermark then needs the ISR's followers too.
        let hw = match &mut *self.role() {
            Role::Leader(view) if view.leader_epoch == leader_epoch => {
                Some(view.on_append(appended.last_offset + 1))
            }
            _ => None,
        };
        if let Some(hw) = hw {
            self.publish_high_watermark(hw);
        }
        if let AckLevel::All {
            min_insync_replicas,
            timeout,
        } = acks
        {
            self.await_replication(&appended, generation, min_insync_replicas, timeout)
                .await?;
        }
        Ok(appended)
    }

    /// Waits until the high watermark passes the batch. Fails (the batch written here, but
    /// perhaps nowhere else) when leadership moves, or the ISR is too small once it passes,
    /// or the time runs out.
    async fn await_replication(
        &self,
        appended: &Appended,
        generation: u64,
        min_insync_replicas: usize,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let mut hw = self.high_watermark.subscribe();
        let mut roles = self.generation.subscribe();
        let past = |hw: &i64| *hw > appended.last_offset;
        let outcome = tokio::time::timeout(timeout, async {
            tokio::select! {
                _ = hw.wait_for(past) => true,
                _ = roles.wait_for(|g| *g != generation) => false,
            }
        })
        .await;
        let unknown = |why: &str| {
            Failure::new(
                Reason::NotEnoughReplicasAfterAppend,
                format!(
                    "offsets {}..={} of {}-{} were written on the leader but {why}: they may or may not survive",
                    appended.first_offset, appended.last_offset, self.topic, self.index
                ),
            )
        };
        match outcome {
            Ok(true) => {
                let isr = match &*self.role() {
                    Role::Leader(view) => view.isr.len(),
                    _ => 0,
                };
                if isr < min_insync_replicas {
                    return Err(unknown(&format!(
                        "the ISR shrank to {isr}, below min.insync.replicas={min_insync_replicas}"
                    )));
                }
                Ok(())
            }
            Ok(false) => Err(Failure::new(
                Reason::NotLeader,
                format!(
                    "leadership of {}-{} moved before offsets {}..={} were replicated: they may or may not survive",
                    self.topic, self.index, appended.first_offset, appended.last_offset
                ),
            )),
            Err(_) => Err(unknown(&format!(
                "not replicated to the ISR within {timeout:?}"
            ))),
        }
    }

    /// A follower's fetch: checks its leader epoch, finds where its log diverges (KIP-320's
    /// last fetched epoch), learns its log end (moving the high watermark), and returns what
    /// follows, waiting up to `max_wait` for something.
    ///
    /// # Errors
    /// `NotLeader`, `FencedLeaderEpoch` (the follower is behind), `UnknownLeaderEpoch` (this
    /// leader is), `OffsetOutOfRange`, `StorageError`.
    #[allow(clippy::too_many_arguments)]
    pub async fn replica_fetch(
        &self,
        follower: BrokerId,
        leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<ReplicaFetched, Failure> {
        let current = self.leading_epoch()?;
        if leader_epoch < current {
            return Err(Failure::new(
                Reason::FencedLeaderEpoch,
                format!(
                    "leader epoch {leader_epoch} of {}-{} is stale; it is {current}",
                    self.topic, self.index
                ),
            ));
        }
        if leader_epoch > current {
            return Err(Failure::new(
                Reason::UnknownLeaderEpoch,
                format!(
                    "leader epoch {leader_epoch} of {}-{} is newer than this leader's {current}",
                    self.topic, self.index
                ),
            ));
        }
        {
            let log = self.read_log();
            if last_fetched_epoch >= 0 {
                match log.end_offset_for_epoch(last_fetched_epoch) {
                    Some((epoch, end)) if epoch == last_fetched_epoch && end >= fetch_offset => {}
                    Some((epoch, end)) => {
                        return Ok(ReplicaFetched::Diverging {
                            epoch,
                            end_offset: end,
                        });
                    }
                    None => {
                        // An epoch newer than any this log knows (it cannot be, once a leader
                        // records its epoch on taking over): the follower keeps no more than
                        // this log's end.
                        return Ok(ReplicaFetched::Diverging {
                            epoch: log.latest_epoch().map_or(-1, |e| e.epoch),
                            end_offset: log.log_end_offset(),
                        });
                    }
                }
            }
            let (start, end) = (log.log_start_offset(), log.log_end_offset());
            if fetch_offset < start {
                // Retention removed what the follower lacks: it starts over at the start.
                return Ok(ReplicaFetched::Batches {
                    batches: bytes::Bytes::new(),
                    high_watermark: self.high_watermark(),
                    log_start_offset: start,
                    log_end_offset: end,
                });
            }
            if fetch_offset > end {
                return Err(LogError::OffsetOutOfRange {
                    requested: fetch_offset,
                    log_start_offset: start,
                    log_end_offset: end,
                }
                .into());
            }
        }
        let durable_end = self.durable_end();
        let hw = match &mut *self.role() {
            Role::Leader(view) if view.leader_epoch == current => {
                Some(view.on_fetch(follower, fetch_offset, durable_end, Instant::now()))
            }
            _ => None,
        };
        if let Some(hw) = hw {
            self.publish_high_watermark(hw);
        }
        if *self.log_end.borrow() <= fetch_offset && !max_wait.is_zero() {
            let mut end = self.log_end.subscribe();
            let mut roles = self.generation.subscribe();
            let generation = *roles.borrow();
            let _ = tokio::time::timeout(max_wait, async {
                tokio::select! {
                    _ = end.wait_for(|&e| e > fetch_offset) => {}
                    _ = roles.wait_for(|g| *g != generation) => {}
                }
            })
            .await;
        }
        let log = self.read_log();
        let slice = log.read(fetch_offset, max_bytes, None)?;
        Ok(ReplicaFetched::Batches {
            batches: slice.map(|s| s.bytes).unwrap_or_default(),
            high_watermark: self.high_watermark(),
            log_start_offset: log.log_start_offset(),
            log_end_offset: log.log_end_offset(),
        })
    }

    /// The follower's side: appends batches from the leader at `leader_epoch`, keeping their
    /// offsets and epochs; waits for the flush policy's fsync. Returns the new log end.
    ///
    /// # Errors
    /// `NotLeader` unless following at that epoch; the log's refusal.
    pub async fn append_from_leader(
        &self,
        batches: &[u8],
        leader_epoch: i32,
    ) -> Result<i64, Failure> {
        let appended = {
            let mut log = self.write_log();
            self.check_following(leader_epoch)?;
            let appended = log.append_replicated(batches)?;
            let mut producers = self.producers();
            for header in headers_of(batches) {
                producers.record(&header);
            }
            appended
        };
        let end = appended.last_offset + 1;
        self.log_end.send_replace(end);
        if appended.flush.is_some() {
            let _durable = tokio::task::spawn_blocking(move || appended.durable())
                .await
                .map_err(|_| Failure::new(Reason::StorageError, "the flush thread failed"))??;
        }
        Ok(end)
    }

    /// Kafka's OffsetsForLeaderEpoch answer from this leader's log: the largest epoch at most
    /// `epoch` and where it ended (the log end for the current epoch); `None` when the log
    /// knows no such epoch.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.read_log().end_offset_for_epoch(epoch)
    }

    /// The follower's side of a divergence: truncates to the lesser of the leader's end of
    /// `epoch` and this log's own end of that epoch (KIP-279), so that another round finds the
    /// point where both logs agree (an epoch of this log that starts there goes too). Returns
    /// the new log end.
    ///
    /// # Errors
    /// The log's.
    pub fn truncate_diverging(
        &self,
        epoch: i32,
        leader_end: i64,
        leader_epoch: i32,
    ) -> Result<i64, Failure> {
        let mut log = self.write_log();
        self.check_following(leader_epoch)?;
        let own_end = if epoch < 0 {
            leader_end
        } else {
            log.end_offset_for_epoch(epoch)
                .map_or(leader_end, |(_, end)| end)
        };
        let to = leader_end.min(own_end).min(log.log_end_offset());
        if to < log.log_start_offset() {
            log.truncate_fully_and_start_at(leader_end.max(0))?;
        } else {
            log.truncate_to(to)?;
        }
        let end = log.log_end_offset();
        // Producer state follows the log.
        let mut producers = Producers::default();
        log.for_each_batch_header(|header| producers.record(header))?;
        *self.producers() = producers;
        drop(log);
        tracing::warn!(topic = %self.topic, partition = self.index, epoch, leader_end, truncated_to = end, "log diverged from the leader's: truncated");
        self.log_end.send_replace(end);
        self.publish_high_watermark(self.high_watermark().min(end));
        Ok(end)
    }

    /// The follower's side of an offset out of range: the leader's log starts after this
    /// one's end; start over there.
    ///
    /// # Errors
    /// The log's.
    pub fn restart_at(&self, offset: i64, leader_epoch: i32) -> Result<(), Failure> {
        let mut log = self.write_log();
        self.check_following(leader_epoch)?;
        log.truncate_fully_and_start_at(offset)?;
        *self.producers() = Producers::default();
        drop(log);
        self.log_end.send_replace(offset);
        self.publish_high_watermark(offset);
        Ok(())
    }

    /// The follower's side of one fetch answer: append what came, or truncate where the logs
    /// diverge.
    ///
    /// # Errors
    /// As [`Partition::append_from_leader`] and [`Partition::truncate_diverging`].
    pub async fn apply_fetched(
        &self,
        fetched: ReplicaFetched,
        leader_epoch: i32,
    ) -> Result<(), Failure> {
        match fetched {
            ReplicaFetched::Batches {
                batches,
                high_watermark,
                log_start_offset,
                ..
            } => {
                if !batches.is_empty() {
                    self.append_from_leader(&batches, leader_epoch).await?;
                }
                let log = self.read_log();
                self.check_following(leader_epoch)?;
                self.follow_high_watermark(high_watermark);
                drop(log);
                self.follow_log_start(log_start_offset)?;
            }
            ReplicaFetched::Diverging { epoch, end_offset } => {
                self.truncate_diverging(epoch, end_offset, leader_epoch)?;
            }
        }
        Ok(())
    }

    /// Fails unless this replica follows at `leader_epoch` (call with the log locked, so the
    /// role cannot change before the caller's change to the log is done).
    fn check_following(&self, leader_epoch: i32) -> Result<(), Failure> {
        if matches!(&*self.role(), Role::Follower { leader_epoch: e, .. } if *e == leader_epoch) {
            Ok(())
        } else {
            Err(Failure::new(
                Reason::NotLeader,
                format!(
                    "{}-{} no longer follows at epoch {leader_epoch}",
                    self.topic, self.index
                ),
            ))
        }
    }

    /// The follower's high watermark: the leader's, as far as this log reaches.
    pub fn follow_high_watermark(&self, leader_high_watermark: i64) {
        let end = *self.log_end.borrow();
        self.publish_high_watermark(leader_high_watermark.min(end));
    }

    /// The follower's next fetch position: its log end and the epoch of its last batch.
    pub fn fetch_position(&self) -> (i64, i32) {
        let log = self.read_log();
        (
            log.log_end_offset(),
            log.latest_epoch().map_or(-1, |e| e.epoch),
        )
    }

    /// Appends unless an idempotent producer's batch is early (`None`: wait for its turn).
    fn try_append(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
    ) -> Result<Option<Appended>, Failure> {
        let mut log = self.write_log();
        // Still the leader at that epoch, now that the log is held (a waiting batch may have
        // outlived the leadership).
        if !matches!(&*self.role(), Role::Leader(view) if view.leader_epoch == leader_epoch) {
            return Err(Failure::new(
                Reason::NotLeader,
                format!(
                    "this broker no longer leads {}-{} at epoch {leader_epoch}",
                    self.topic, self.index
                ),
            ));
        }
        let headers = headers_of(batches);
        // Sequences are checked against the state before the request: one idempotent batch
        // per request (as Kafka's producers send), or its later batches would look early.
        if headers.len() > 1 && headers.iter().any(|h| h.producer_id >= 0) {
            return Err(Failure::new(
                Reason::InvalidRequest,
                "an idempotent producer sends one batch per partition per request",
            ));
        }
        let mut producers = self.producers();
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

    /// Whole batches from `offset` up to the log end, past the high watermark: for a new
    /// leader replaying its own log (everything in it will be committed, since a leader's
    /// log is never truncated while it leads).
    ///
    /// # Errors
    /// As [`Partition::read`].
    pub fn read_to_end(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<SegmentSlice>, LogError> {
        self.read_log().read(offset, max_bytes, None)
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

    /// Deletes the records below `offset` on this leader (Kafka's DeleteRecords; -1 is the
    /// high watermark): the log start moves there, durably. Followers follow the start the
    /// leader tells them in their fetches. Returns the new log start (Kafka's low watermark).
    ///
    /// # Errors
    /// `NotLeader`; `OffsetOutOfRange` past the high watermark; `StorageError`.
    pub fn delete_records(&self, offset: i64) -> Result<i64, Failure> {
        self.leading_epoch()?;
        let high_watermark = self.high_watermark();
        let offset = if offset == -1 { high_watermark } else { offset };
        if !(0..=high_watermark).contains(&offset) {
            return Err(Failure::new(
                Reason::OffsetOutOfRange,
                format!(
                    "records of {}-{} can be deleted up to the high watermark {high_watermark}, not {offset}",
                    self.topic, self.index
                ),
            ));
        }
        Ok(self.write_log().delete_records_before(offset)?)
    }

    /// A follower's side of the leader's log start: records the leader deleted go here too,
    /// up to what this replica knows is committed.
    fn follow_log_start(&self, leader_log_start: i64) -> Result<(), Failure> {
        let to = leader_log_start.min(self.high_watermark());
        if to <= self.read_log().log_start_offset() {
            return Ok(());
        }
        let mut log = self.write_log();
        if to > log.log_start_offset() && to <= log.log_end_offset() {
            log.delete_records_before(to)?;
        }
        Ok(())
    }

    /// The first offset with the largest timestamp, with that timestamp (below the high
    /// watermark only).
    ///
    /// # Errors
    /// `Corrupt`, `ReadSegment`.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let found = self.read_log().offset_of_max_timestamp()?;
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
