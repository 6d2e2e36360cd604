//! weir-storage: the partition log every Weir replica keeps on disk.
//!
//! A [`Log`] is a directory of segments, `{base_offset:020}.log`, each holding Kafka
//! RecordBatch v2 batches end to end, with a sparse offset index (`.index`) and a time index
//! (`.timeindex`) memory-mapped beside it, a leader-epoch checkpoint and a recovery-point
//! checkpoint. One format on disk and on the wire: a read returns whole batches as a byte
//! range of a segment file, ready to send without re-encoding.
//!
//! What it is not: no network, no async runtime, no decompression. A broker wraps a `Log` in
//! its own lock and calls it from blocking threads.
//!
//! Main types: [`Log`] (append, read, truncate, retention, recovery), [`LogConfig`] (Kafka's
//! topic settings, typed) and [`LogError`]; [`layout`] maps partitions to directories. The RecordBatch v2 codec is `weir-record`, re-exported here.
//!
//! # Guarantees
//! - An append is all or nothing: every batch of a request is validated (header, lengths,
//!   CRC-32C, records, `max.message.bytes`) before a byte is written.
//! - With a flush policy that asks for it, an append is durable once its [`FlushTicket`] has
//!   been waited on; concurrent appends share fsyncs (group commit).
//! - After a crash, the log reopens at its last whole, valid batch; indexes are rebuilt when
//!   missing or inconsistent; a damaged batch is never returned as data.

mod checkpoint;
pub mod config;
mod epoch;
mod error;
mod files;
mod index;
pub mod inspect;
pub mod layout;
mod log;
#[allow(unsafe_code)] // The crate's only unsafe: memory maps, each block with its SAFETY note.
mod mapped;
mod scan;
mod segment;

pub use config::LogConfig;
pub use epoch::EpochEntry;
pub use error::LogError;
pub use files::SegmentFileCache;
pub use log::{
    Appended, CLEAN_SHUTDOWN_FILE, Clock, FlushTicket, Log, LogOptions, OpenReport,
    RecoveryCheckpoint, RetentionOutcome, SystemClock, TimestampOffset,
};
pub use segment::SegmentSlice;
pub use weir_record::{
    Batch, BatchBuilder, BatchHeader, InvalidBatch, batch, encode_batch, record,
};
pub use weir_record::{Header, Record, RecordView};
