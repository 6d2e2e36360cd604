//! Records inside an uncompressed RecordBatch v2: zigzag varints, encoding and decoding.
//!
//! Layout of one record (Kafka's `DefaultRecord`):
//!
//! ```text
//! length: varint            (bytes that follow, excluding this field)
//! attributes: int8          (unused, 0)
//! timestampDelta: varlong   (from the batch's base timestamp)
//! offsetDelta: varint       (from the batch's base offset)
//! keyLength: varint         (-1 for a null key)
//! key: bytes
//! valueLength: varint       (-1 for a null value)
//! value: bytes
//! headersCount: varint
//! headers: [headerKeyLength: varint, headerKey: utf8, headerValueLength: varint, headerValue: bytes]
//! ```

use std::fmt;

/// A record as a producer hands it over (owned by the caller).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<Header<'a>>,
}

/// One record header; Kafka requires the key to be UTF-8 and allows a null value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// A record decoded from a batch; borrows the batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<Header<'a>>,
}

/// Why the records of a batch could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record {index}: truncated varint or field")]
    Truncated { index: usize },
    #[error("record {index}: varint longer than its type allows")]
    VarintOverflow { index: usize },
    #[error("record {index}: declared length {declared} but its fields use {used} bytes")]
    LengthMismatch {
        index: usize,
        declared: i64,
        used: usize,
    },
    #[error("record {index}: negative length {length} for {field}")]
    NegativeLength {
        index: usize,
        field: &'static str,
        length: i64,
    },
    #[error("record {index}: header key is not valid UTF-8")]
    HeaderKeyNotUtf8 { index: usize },
    #[error("record {index}: offset delta {found}, expected {expected}")]
    OffsetDelta {
        index: usize,
        expected: i32,
        found: i32,
    },
    #[error("batch declares {declared} records but holds {found}")]
    CountMismatch { declared: i32, found: usize },
    #[error("{trailing} bytes after the last record")]
    TrailingBytes { trailing: usize },
}

pub(crate) fn put_varint(buffer: &mut Vec<u8>, value: i32) {
    put_varlong(buffer, i64::from(value));
}

pub(crate) fn put_varlong(buffer: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        buffer.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    buffer.push(zigzag as u8);
}

pub(crate) fn varlong_len(value: i64) -> usize {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - zigzag.leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

fn bytes_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varlong_len(-1),
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

fn put_bytes(buffer: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buffer, -1),
        Some(b) => {
            put_varlong(buffer, b.len() as i64);
            buffer.extend_from_slice(b);
        }
    }
}

impl Record<'_> {
    /// Appends this record's encoding to `buffer`.
    pub(crate) fn encode(&self, buffer: &mut Vec<u8>, offset_delta: i32, timestamp_delta: i64) {
        let body = self.body_len(offset_delta, timestamp_delta);
        put_varlong(buffer, body as i64);
        buffer.push(0);
        put_varlong(buffer, timestamp_delta);
        put_varint(buffer, offset_delta);
        put_bytes(buffer, self.key);
        put_bytes(buffer, self.value);
        put_varlong(buffer, self.headers.len() as i64);
        for header in &self.headers {
            put_bytes(buffer, Some(header.key.as_bytes()));
            put_bytes(buffer, header.value);
        }
    }

    /// The bytes this record takes in a batch, at the given deltas (the first record of a
    /// batch has both at 0): the batch of it alone is [`crate::batch::HEADER_LEN`] more.
    pub fn encoded_len(&self, offset_delta: i32, timestamp_delta: i64) -> usize {
        let body = self.body_len(offset_delta, timestamp_delta);
        varlong_len(body as i64) + body
    }

    fn body_len(&self, offset_delta: i32, timestamp_delta: i64) -> usize {
        1 + varlong_len(timestamp_delta)
            + varlong_len(i64::from(offset_delta))
            + bytes_len(self.key)
            + bytes_len(self.value)
            + varlong_len(self.headers.len() as i64)
            + self
                .headers
                .iter()
                .map(|h| bytes_len(Some(h.key.as_bytes())) + bytes_len(h.value))
                .sum::<usize>()
    }
}

/// One record's fields, read in place from an uncompressed batch; headers still encoded.
struct RawRecord<'a> {
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    header_count: i64,
    /// From the first header to the record's declared end.
    headers: &'a [u8],
    /// The record's declared length, for error messages.
    declared: i64,
}

impl<'a> RawRecord<'a> {
    /// Reads the record at `position` of `bytes`; returns it and the position after it.
    /// Every field must lie inside the record's declared length.
    #[inline(always)]
    fn read(bytes: &'a [u8], position: usize, index: usize) -> Result<(Self, usize), RecordError> {
        let (declared, at) = varlong_at(bytes, position, index)?;
        if declared < 0 {
            return Err(RecordError::NegativeLength {
                index,
                field: "record",
                length: declared,
            });
        }
        let end = at
            .checked_add(declared as usize)
            .filter(|&end| end <= bytes.len())
            .ok_or(RecordError::Truncated { index })?;
        let record = &bytes[..end];
        // One attributes byte (unused), then the deltas.
        let (timestamp_delta, at) = varlong_at(record, at + 1, index)?;
        let (offset_delta, at) = varlong_at(record, at, index)?;
        // Kafka's offset delta is a 32-bit varint.
        if i32::try_from(offset_delta).is_err() {
            return Err(RecordError::VarintOverflow { index });
        }
        let (key, at) = nullable_at(record, at, index, "key")?;
        let (value, at) = nullable_at(record, at, index, "value")?;
        let (header_count, at) = varlong_at(record, at, index)?;
        if header_count < 0 {
            return Err(RecordError::NegativeLength {
                index,
                field: "headers",
                length: header_count,
            });
        }
        let raw = RawRecord {
            timestamp_delta,
            offset_delta,
            key,
            value,
            header_count,
            headers: &record[at..],
            declared,
        };
        Ok((raw, end))
    }

    /// Walks the headers, handing each to `visit`; they must fill the record exactly.
    fn each_header(
        &self,
        index: usize,
        mut visit: impl FnMut(Header<'a>),
    ) -> Result<(), RecordError> {
        let mut at = 0;
        for _ in 0..self.header_count {
            let (key, key_end) = nullable_at(self.headers, at, index, "header key")?;
            let key = key.ok_or(RecordError::NegativeLength {
                index,
                field: "header key",
                length: -1,
            })?;
            let key =
                std::str::from_utf8(key).map_err(|_| RecordError::HeaderKeyNotUtf8 { index })?;
            let (value, end) = nullable_at(self.headers, key_end, index, "header value")?;
            visit(Header { key, value });
            at = end;
        }
        if at != self.headers.len() {
            let used = self.declared as usize - (self.headers.len() - at);
            return Err(RecordError::LengthMismatch {
                index,
                declared: self.declared,
                used,
            });
        }
        Ok(())
    }
}

/// Checks the record section of an uncompressed batch without collecting it: lengths,
/// offset deltas 0, 1, 2… and the count. This runs on every produced batch. Returns the
/// largest timestamp delta.
pub(crate) fn validate_records(bytes: &[u8], declared_count: i32) -> Result<i64, RecordError> {
    let mut position = 0;
    let mut found = 0usize;
    let mut max_timestamp_delta = i64::MIN;
    while position < bytes.len() {
        let (record, next) = RawRecord::read(bytes, position, found)?;
        if record.offset_delta != found as i64 {
            return Err(RecordError::OffsetDelta {
                index: found,
                expected: found as i32,
                found: i32::try_from(record.offset_delta).unwrap_or(i32::MAX),
            });
        }
        record.each_header(found, |_| {})?;
        max_timestamp_delta = max_timestamp_delta.max(record.timestamp_delta);
        position = next;
        found += 1;
    }
    if found != declared_count as usize {
        return Err(RecordError::CountMismatch {
            declared: declared_count,
            found,
        });
    }
    Ok(max_timestamp_delta)
}

/// The records of an uncompressed batch, decoded one at a time; ends with a `CountMismatch`
/// error when the batch holds another number of records than it declares.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
    position: usize,
    index: usize,
    base_offset: i64,
    base_timestamp: i64,
    declared_count: i32,
    done: bool,
}

impl<'a> Records<'a> {
    pub(crate) fn new(
        bytes: &'a [u8],
        base_offset: i64,
        base_timestamp: i64,
        declared_count: i32,
    ) -> Self {
        Records {
            bytes,
            position: 0,
            index: 0,
            base_offset,
            base_timestamp,
            declared_count,
            done: false,
        }
    }

    fn decode_next(&mut self) -> Result<RecordView<'a>, RecordError> {
        let index = self.index;
        let (record, next) = RawRecord::read(self.bytes, self.position, index)?;
        let mut headers = Vec::new();
        record.each_header(index, |h| headers.push(h))?;
        self.position = next;
        self.index += 1;
        Ok(RecordView {
            offset: self.base_offset.saturating_add(record.offset_delta),
            timestamp: self.base_timestamp.wrapping_add(record.timestamp_delta),
            key: record.key,
            value: record.value,
            headers,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.position >= self.bytes.len() {
            self.done = true;
            let declared = self.declared_count.max(0) as usize;
            return (self.index != declared).then_some(Err(RecordError::CountMismatch {
                declared: self.declared_count,
                found: self.index,
            }));
        }
        let record = self.decode_next();
        self.done = record.is_err();
        Some(record)
    }
}

/// Decodes the zigzag varlong at `position`; returns it and the position after it.
#[inline(always)]
fn varlong_at(bytes: &[u8], position: usize, index: usize) -> Result<(i64, usize), RecordError> {
    let Some(&first) = bytes.get(position) else {
        return Err(RecordError::Truncated { index });
    };
    if first & 0x80 == 0 {
        return Ok((i64::from(first >> 1) ^ -i64::from(first & 1), position + 1));
    }
    let mut value = u64::from(first & 0x7f);
    for (i, shift) in (7..64).step_by(7).enumerate() {
        let Some(&byte) = bytes.get(position + 1 + i) else {
            return Err(RecordError::Truncated { index });
        };
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((
                ((value >> 1) as i64) ^ -((value & 1) as i64),
                position + 2 + i,
            ));
        }
    }
    Err(RecordError::VarintOverflow { index })
}

/// Reads a nullable byte field (varint length, -1 for null) at `position` of `record`;
/// returns it and the position after it.
#[inline(always)]
fn nullable_at<'a>(
    record: &'a [u8],
    position: usize,
    index: usize,
    field: &'static str,
) -> Result<(Option<&'a [u8]>, usize), RecordError> {
    let (length, at) = varlong_at(record, position, index)?;
    match length {
        -1 => Ok((None, at)),
        l if l < 0 => Err(RecordError::NegativeLength {
            index,
            field,
            length: l,
        }),
        l => {
            let end = at
                .checked_add(l as usize)
                .filter(|&end| end <= record.len())
                .ok_or(RecordError::Truncated { index })?;
            Ok((Some(&record[at..end]), end))
        }
    }
}

impl fmt::Display for RecordView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |b: Option<&[u8]>| match b {
            None => "null".to_string(),
            Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
        };
        write!(
            f,
            "offset={} timestamp={} key={} value={} headers={}",
            self.offset,
            self.timestamp,
            show(self.key),
            show(self.value),
            self.headers.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zigzag_varints_match_kafka_examples() {
        // From the protobuf/Kafka zigzag table: 0→0, -1→1, 1→2, -2→3, 63→126, -64→127, 64→128.
        for (value, bytes) in [
            (0i64, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-2, vec![0x03]),
            (63, vec![0x7e]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (300, vec![0xd8, 0x04]),
        ] {
            let mut buffer = Vec::new();
            put_varlong(&mut buffer, value);
            assert_eq!(buffer, bytes, "encoding {value}");
            assert_eq!(varlong_len(value), bytes.len());
            assert_eq!(varlong_at(&bytes, 0, 0), Ok((value, bytes.len())));
        }
    }

    proptest! {
        #[test]
        fn varlong_round_trips(value in any::<i64>()) {
            let mut buffer = Vec::new();
            put_varlong(&mut buffer, value);
            prop_assert_eq!(buffer.len(), varlong_len(value));
            prop_assert_eq!(varlong_at(&buffer, 0, 0), Ok((value, buffer.len())));
        }

        #[test]
        fn truncated_varints_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = varlong_at(&bytes, 0, 0);
        }
    }
}
