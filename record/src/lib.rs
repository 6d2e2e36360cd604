//! weir-record: Kafka RecordBatch v2 (magic 2), byte-exact with Kafka's layout.
//!
//! The codec the storage engine keeps on disk, the broker serves and the client produces and
//! consumes, so that a batch crosses the wire and the disk without re-encoding. No I/O.
//!
//! Main types: [`Batch`] (a checked view of one batch), [`BatchHeader`], [`BatchBuilder`],
//! [`Record`] and [`RecordView`].
//!
//! # Guarantees
//! - Parsing never panics and never allocates by a length an input claims.
//! - A batch whose CRC-32C does not match its bytes is refused by [`Batch::parse`].

pub mod batch;
pub mod compression;
pub mod record;

pub use batch::{
    Batch, BatchBuilder, BatchHeader, Compression, InvalidBatch, batches, encode_batch,
};
pub use record::{Header, Record, RecordError, RecordView, Records};
