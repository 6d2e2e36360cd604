//! Kafka RecordBatch v2 (magic 2): the one format Weir keeps on disk and sends on the wire.
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset              (rewritten by the log on append; not covered by the CRC)
//!      8     4  batchLength             (bytes after this field)
//!     12     4  partitionLeaderEpoch    (rewritten by the leader; not covered by the CRC)
//!     16     1  magic = 2
//!     17     4  crc                     (CRC-32C of every byte from attributes to the end)
//!     21     2  attributes              (bits 0-2 compression, 3 timestamp type, 4 transactional, 5 control)
//!     23     4  lastOffsetDelta
//!     27     8  baseTimestamp
//!     35     8  maxTimestamp
//!     43     8  producerId
//!     51     2  producerEpoch
//!     53     4  baseSequence
//!     57     4  recordCount
//!     61     …  records
//! ```
//!
//! All integers are big-endian. Because the base offset and the leader epoch sit before the
//! CRC's range, the log assigns offsets to a client-encoded batch by rewriting 12 bytes,
//! without re-encoding or recomputing anything.

use crate::record::{Record, RecordError, RecordView, Records, validate_records};

/// Size of the fixed part of a batch, before its records.
pub const HEADER_LEN: usize = 61;
/// Bytes of a batch that `batchLength` does not count (baseOffset and batchLength).
pub const LOG_OVERHEAD: usize = 12;
pub const MAGIC: u8 = 2;
/// Where the CRC's range starts.
const CRC_START: usize = 21;

const COMPRESSION_MASK: u16 = 0x07;
const TIMESTAMP_TYPE_MASK: u16 = 0x08;
const TRANSACTIONAL_MASK: u16 = 0x10;
const CONTROL_MASK: u16 = 0x20;

/// Producer id of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
/// Partition leader epoch of a batch that has not been stamped by a leader yet.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

pub use crate::compression::Compression;

/// Whether a batch's timestamps were set by the producer or by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Why a batch was refused. Nothing of a refused request is appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBatch {
    #[error("batch of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("batch length field says {declared} bytes but {available} follow it")]
    LengthMismatch { declared: i64, available: usize },
    #[error("unsupported magic {magic} (only RecordBatch v2, magic 2, is accepted)")]
    UnsupportedMagic { magic: u8 },
    #[error("crc mismatch: batch says {stored:#010x}, bytes hash to {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unknown compression codec {codec} in attributes")]
    UnknownCompression { codec: u16 },
    #[error(transparent)]
    Decompression(#[from] crate::compression::DecompressError),
    #[error("batch of {size} bytes is larger than max.message.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("invalid record: {0}")]
    Record(#[from] RecordError),
    #[error("the request holds no batch")]
    Empty,
    #[error("control batches are written by the broker, not by producers")]
    ControlBatch,
    #[error("the batch says its largest timestamp is {declared}, its records say {found}")]
    MaxTimestampMismatch { declared: i64, found: i64 },
}

/// A parsed, length-checked view of one batch's header. Copy-cheap; borrows nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the batchLength field; the whole batch is `LOG_OVERHEAD + batch_length`.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: u8,
    pub crc: u32,
    pub attributes: u16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2-byte slice"))
}

impl BatchHeader {
    /// Parses the fixed header at the start of `bytes`.
    ///
    /// # Errors
    /// `TooShort` when fewer than [`HEADER_LEN`] bytes are given, `UnsupportedMagic`, or
    /// `LengthMismatch` when `batchLength` is too small to hold the header.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidBatch> {
        if bytes.len() < HEADER_LEN {
            return Err(InvalidBatch::TooShort { len: bytes.len() });
        }
        let header = BatchHeader {
            base_offset: be_i64(bytes, 0),
            batch_length: be_i32(bytes, 8),
            partition_leader_epoch: be_i32(bytes, 12),
            magic: bytes[16],
            crc: be_u32(bytes, 17),
            attributes: be_i16(bytes, 21) as u16,
            last_offset_delta: be_i32(bytes, 23),
            base_timestamp: be_i64(bytes, 27),
            max_timestamp: be_i64(bytes, 35),
            producer_id: be_i64(bytes, 43),
            producer_epoch: be_i16(bytes, 51),
            base_sequence: be_i32(bytes, 53),
            record_count: be_i32(bytes, 57),
        };
        if header.magic != MAGIC {
            return Err(InvalidBatch::UnsupportedMagic {
                magic: header.magic,
            });
        }
        if (header.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(InvalidBatch::LengthMismatch {
                declared: i64::from(header.batch_length),
                available: bytes.len() - LOG_OVERHEAD,
            });
        }
        Ok(header)
    }

    /// The whole batch's size in bytes, header included.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> Option<Compression> {
        Compression::from_code(self.attributes & COMPRESSION_MASK)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_MASK == 0 {
            TimestampType::CreateTime
        } else {
            TimestampType::LogAppendTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_MASK != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_MASK != 0
    }
}

/// One batch, checked: its length is consistent and its CRC matches its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Checks the batch at the start of `bytes`: header, length and CRC. Does not look at
    /// the records (see [`Batch::validate_records`]).
    ///
    /// # Errors
    /// Any [`InvalidBatch`] variant about the header, its length or its CRC.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, InvalidBatch> {
        let header = BatchHeader::parse(bytes)?;
        let size = header.size();
        if size > bytes.len() {
            return Err(InvalidBatch::LengthMismatch {
                declared: i64::from(header.batch_length),
                available: bytes.len() - LOG_OVERHEAD,
            });
        }
        let bytes = &bytes[..size];
        let computed = crc32c::crc32c(&bytes[CRC_START..]);
        if computed != header.crc {
            return Err(InvalidBatch::CrcMismatch {
                stored: header.crc,
                computed,
            });
        }
        Ok(Batch { header, bytes })
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Checks what a producer's batch must satisfy beyond its CRC: a known codec, a record
    /// count that matches the offset deltas and, when uncompressed, records whose lengths and
    /// offset deltas are consistent (Kafka's broker checks the same).
    ///
    /// # Errors
    /// `UnknownCompression`, `CountMismatch` or `Record`.
    pub fn validate_records(&self) -> Result<(), InvalidBatch> {
        let header = &self.header;
        let compression = header
            .compression()
            .ok_or(InvalidBatch::UnknownCompression {
                codec: header.attributes & COMPRESSION_MASK,
            })?;
        if header.is_control() {
            return Err(InvalidBatch::ControlBatch);
        }
        // A producer's batch holds at least one record, at consecutive offsets (only a
        // compacted log has fewer records than offsets, and only the broker writes one).
        if header.record_count < 1 || header.last_offset_delta != header.record_count - 1 {
            return Err(InvalidBatch::CountMismatch {
                count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        if compression == Compression::None {
            let max_delta = validate_records(&self.bytes[HEADER_LEN..], header.record_count)?;
            let max_timestamp = header.base_timestamp.wrapping_add(max_delta);
            // Lookups by time trust a batch's max timestamp, so it must be its records' own.
            if header.timestamp_type() == TimestampType::CreateTime
                && max_timestamp != header.max_timestamp
            {
                return Err(InvalidBatch::MaxTimestampMismatch {
                    declared: header.max_timestamp,
                    found: max_timestamp,
                });
            }
        }
        Ok(())
    }

    /// Decodes the records of an uncompressed batch.
    ///
    /// # Errors
    /// `UnknownCompression` for a compressed batch (the storage layer never decompresses),
    /// `Record` for malformed records.
    pub fn records(&self) -> Result<Vec<RecordView<'a>>, InvalidBatch> {
        Ok(self.iter_records()?.collect::<Result<Vec<_>, _>>()?)
    }

    /// The batch's records section, decompressed when the batch is compressed (at most
    /// `limit` bytes), to read with [`Batch::records_in`].
    ///
    /// # Errors
    /// `UnknownCompression`, `Decompression`.
    pub fn records_section(
        &self,
        limit: usize,
    ) -> Result<std::borrow::Cow<'a, [u8]>, InvalidBatch> {
        let header = &self.header;
        let codec = header
            .compression()
            .ok_or(InvalidBatch::UnknownCompression {
                codec: header.attributes & COMPRESSION_MASK,
            })?;
        let section = &self.bytes[HEADER_LEN..];
        Ok(match codec {
            Compression::None => std::borrow::Cow::Borrowed(section),
            codec => {
                std::borrow::Cow::Owned(crate::compression::decompress(codec, section, limit)?)
            }
        })
    }

    /// The records in `section` (this batch's [`Batch::records_section`]), one at a time.
    pub fn records_in<'b>(&self, section: &'b [u8]) -> Records<'b> {
        Records::new(
            section,
            self.header.base_offset,
            self.header.base_timestamp,
            self.header.record_count,
        )
    }

    /// The records of an uncompressed batch, one at a time, with no collection in between.
    ///
    /// # Errors
    /// `UnknownCompression` for a compressed batch; each item is an error for a malformed
    /// record.
    pub fn iter_records(&self) -> Result<Records<'a>, InvalidBatch> {
        let header = &self.header;
        if header.compression() != Some(Compression::None) {
            return Err(InvalidBatch::UnknownCompression {
                codec: header.attributes & COMPRESSION_MASK,
            });
        }
        Ok(Records::new(
            &self.bytes[HEADER_LEN..],
            header.base_offset,
            header.base_timestamp,
            header.record_count,
        ))
    }
}

/// Sets the base offset and partition leader epoch of the batch at the start of `bytes`.
/// Neither field is covered by the CRC, so the batch stays valid. The caller has checked that
/// `bytes` holds at least a header.
pub fn stamp(bytes: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
    bytes[12..16].copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// Sets the producer id, epoch and base sequence of the whole batch in `bytes` (an idempotent
/// producer that starts over under a new identity) and its CRC, which covers them. The caller
/// has checked that `bytes` is one whole batch.
pub fn set_producer(bytes: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
    bytes[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    bytes[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates over the batches laid end to end in `bytes`, checking each one.
pub fn batches(bytes: &[u8]) -> Batches<'_> {
    Batches { bytes, position: 0 }
}

/// Iterator returned by [`batches`]; yields `(position, Batch)` and stops at the first error.
#[derive(Debug)]
pub struct Batches<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<(usize, Batch<'a>), InvalidBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.bytes.len() {
            return None;
        }
        let position = self.position;
        match Batch::parse(&self.bytes[position..]) {
            Ok(batch) => {
                self.position += batch.header.size();
                Some(Ok((position, batch)))
            }
            Err(e) => {
                self.position = self.bytes.len();
                Some(Err(e))
            }
        }
    }
}

/// Builds an uncompressed RecordBatch v2, the way a Kafka producer does.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_offset: i64,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    partition_leader_epoch: i32,
    transactional: bool,
    count: i32,
    /// The whole batch: `HEADER_LEN` bytes that `build` fills in, then the records.
    buffer: Vec<u8>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new(0)
    }
}

impl BatchBuilder {
    pub fn new(base_offset: i64) -> Self {
        BatchBuilder::with_capacity(base_offset, 0)
    }

    /// A builder whose buffer is allocated for `capacity` bytes of batch at once.
    pub fn with_capacity(base_offset: i64, capacity: usize) -> Self {
        let mut buffer = Vec::with_capacity(capacity.max(HEADER_LEN));
        buffer.resize(HEADER_LEN, 0);
        BatchBuilder {
            base_offset,
            base_timestamp: None,
            max_timestamp: -1,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            transactional: false,
            count: 0,
            buffer,
        }
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Changes the producer fields of a batch being built (an idempotent producer that
    /// starts over under a new identity).
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    pub fn push(&mut self, record: &Record<'_>) {
        let base_timestamp = *self.base_timestamp.get_or_insert(record.timestamp);
        record.encode(
            &mut self.buffer,
            self.count,
            record.timestamp.wrapping_sub(base_timestamp),
        );
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The size the batch will have once built.
    pub fn size(&self) -> usize {
        self.buffer.len()
    }

    /// Encodes the batch: fills in the header before the records already written, in place.
    /// A batch with no record is legal but a log refuses it.
    pub fn build(self) -> Vec<u8> {
        let mut out = self.buffer;
        let batch_length = (out.len() - LOG_OVERHEAD) as i32;
        let attributes: u16 = if self.transactional {
            TRANSACTIONAL_MASK
        } else {
            0
        };
        let header = &mut out[..HEADER_LEN];
        header[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        header[8..12].copy_from_slice(&batch_length.to_be_bytes());
        header[12..16].copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        header[16] = MAGIC;
        header[21..23].copy_from_slice(&attributes.to_be_bytes());
        header[23..27].copy_from_slice(&(self.count - 1).max(-1).to_be_bytes());
        header[27..35].copy_from_slice(&self.base_timestamp.unwrap_or(-1).to_be_bytes());
        header[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        header[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        header[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        header[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        header[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

/// Encodes `records` as one batch (a convenience for tests, tools and benchmarks).
pub fn encode_batch(base_offset: i64, records: &[Record<'_>]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(base_offset);
    for record in records {
        builder.push(record);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Header;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
    }

    #[derive(Debug, Clone)]
    struct OwnedRecord {
        timestamp: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(String, Option<Vec<u8>>)>,
    }

    fn arb_record() -> impl Strategy<Value = OwnedRecord> {
        (
            0i64..4_000_000_000_000,
            arb_bytes(),
            arb_bytes(),
            proptest::collection::vec(("[a-z]{0,8}", arb_bytes()), 0..3),
        )
            .prop_map(|(timestamp, key, value, headers)| OwnedRecord {
                timestamp,
                key,
                value,
                headers,
            })
    }

    fn borrow(r: &OwnedRecord) -> Record<'_> {
        Record {
            timestamp: r.timestamp,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: k,
                    value: v.as_deref(),
                })
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn batches_round_trip(
            base_offset in 0i64..1 << 40,
            records in proptest::collection::vec(arb_record(), 1..20),
            producer in proptest::option::of((0i64..1000, 0i16..10, 0i32..1000)),
        ) {
            let mut builder = BatchBuilder::new(base_offset);
            if let Some((id, epoch, sequence)) = producer {
                builder = builder.producer(id, epoch, sequence);
            }
            let borrowed: Vec<Record<'_>> = records.iter().map(borrow).collect();
            for r in &borrowed {
                builder.push(r);
            }
            let bytes = builder.build();
            let batch = Batch::parse(&bytes).expect("valid batch");
            batch.validate_records().expect("valid records");
            prop_assert_eq!(batch.header.size(), bytes.len());
            prop_assert_eq!(batch.header.record_count as usize, records.len());
            prop_assert_eq!(batch.header.last_offset(), base_offset + records.len() as i64 - 1);
            prop_assert_eq!(batch.header.max_timestamp, records.iter().map(|r| r.timestamp).max().unwrap_or(-1));
            let decoded = batch.records().expect("decodes");
            for (i, (view, original)) in decoded.iter().zip(&borrowed).enumerate() {
                prop_assert_eq!(view.offset, base_offset + i as i64);
                prop_assert_eq!(view.timestamp, original.timestamp);
                prop_assert_eq!(view.key, original.key);
                prop_assert_eq!(view.value, original.value);
                prop_assert_eq!(&view.headers, &original.headers);
            }
        }

        #[test]
        fn any_flipped_byte_after_the_epoch_is_rejected(
            records in proptest::collection::vec(arb_record(), 1..5),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let borrowed: Vec<Record<'_>> = records.iter().map(borrow).collect();
            let mut bytes = encode_batch(0, &borrowed);
            let at = 16 + flip.index(bytes.len() - 16);
            bytes[at] ^= 1 << bit;
            let rejected = Batch::parse(&bytes).and_then(|b| b.validate_records());
            prop_assert!(rejected.is_err(), "flip at {} bit {} accepted", at, bit);
        }

        #[test]
        fn arbitrary_record_bytes_behind_a_valid_header_never_panic(
            records in proptest::collection::vec(any::<u8>(), 0..200),
            count in -2i32..8,
        ) {
            // A real header with a CRC that matches, so decoding reaches the records.
            let mut bytes = BatchBuilder::new(0).build();
            bytes.extend_from_slice(&records);
            let length = (bytes.len() - LOG_OVERHEAD) as i32;
            bytes[8..12].copy_from_slice(&length.to_be_bytes());
            bytes[57..61].copy_from_slice(&count.to_be_bytes());
            bytes[23..27].copy_from_slice(&(count - 1).to_be_bytes());
            let crc = crc32c::crc32c(&bytes[CRC_START..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            let batch = Batch::parse(&bytes).expect("a valid header and CRC");
            let _ = batch.validate_records();
            let _ = batch.records();
            if let Ok(records) = batch.iter_records() {
                for record in records {
                    let _ = record;
                }
            }
        }
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut bytes = encode_batch(
            0,
            &[Record {
                timestamp: 5,
                value: Some(b"x"),
                ..Default::default()
            }],
        );
        stamp(&mut bytes, 1234, 7);
        let batch = Batch::parse(&bytes).expect("still valid");
        assert_eq!(batch.header.base_offset, 1234);
        assert_eq!(batch.header.partition_leader_epoch, 7);
    }

    #[test]
    fn length_field_larger_than_the_buffer_is_rejected_without_allocating() {
        let mut bytes = encode_batch(
            0,
            &[Record {
                timestamp: 5,
                value: Some(b"x"),
                ..Default::default()
            }],
        );
        bytes[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            Batch::parse(&bytes),
            Err(InvalidBatch::LengthMismatch { .. })
        ));
        bytes[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            Batch::parse(&bytes),
            Err(InvalidBatch::LengthMismatch { .. })
        ));
    }

    #[test]
    fn a_batch_restamped_with_a_new_producer_is_valid_and_equals_one_built_so() {
        let record = Record {
            timestamp: 5,
            key: Some(b"k"),
            value: Some(b"v"),
            headers: Vec::new(),
        };
        let mut old = BatchBuilder::new(0).producer(7, 0, 40);
        old.push(&record);
        let mut bytes = old.build();
        set_producer(&mut bytes, 9, 1, 0);
        let mut fresh = BatchBuilder::new(0).producer(1, 1, 1);
        fresh.push(&record);
        fresh.set_producer(9, 1, 0);
        assert_eq!(bytes, fresh.build());
        let batch = Batch::parse(&bytes).expect("valid CRC");
        assert_eq!(
            (
                batch.header.producer_id,
                batch.header.producer_epoch,
                batch.header.base_sequence
            ),
            (9, 1, 0)
        );
    }
}
