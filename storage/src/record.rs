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

/// A cursor over the record section of an uncompressed batch.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
    index: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor {
            bytes,
            position: 0,
            index: 0,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn varlong(&mut self) -> Result<i64, RecordError> {
        // Most fields of small records fit one byte.
        if let Some(&byte) = self.bytes.get(self.position)
            && byte & 0x80 == 0
        {
            self.position += 1;
            return Ok(i64::from(byte >> 1) ^ -i64::from(byte & 1));
        }
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.position) else {
                return Err(RecordError::Truncated { index: self.index });
            };
            self.position += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(RecordError::VarintOverflow { index: self.index })
    }

    fn varint(&mut self) -> Result<i32, RecordError> {
        let value = self.varlong()?;
        i32::try_from(value).map_err(|_| RecordError::VarintOverflow { index: self.index })
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .position
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(RecordError::Truncated { index: self.index })?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn nullable_bytes(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, RecordError> {
        let length = self.varint()?;
        match length {
            -1 => Ok(None),
            l if l < 0 => Err(RecordError::NegativeLength {
                index: self.index,
                field,
                length: i64::from(l),
            }),
            l => self.take(l as usize).map(Some),
        }
    }

    /// Decodes the next record, checking that its declared length matches its fields.
    pub(crate) fn next_record(
        &mut self,
        base_offset: i64,
        base_timestamp: i64,
    ) -> Result<RecordView<'a>, RecordError> {
        let index = self.index;
        let declared = self.varlong()?;
        if declared < 0 {
            return Err(RecordError::NegativeLength {
                index,
                field: "record",
                length: declared,
            });
        }
        let start = self.position;
        let _attributes = self.take(1)?;
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varint()?;
        let key = self.nullable_bytes("key")?;
        let value = self.nullable_bytes("value")?;
        let header_count = self.varint()?;
        if header_count < 0 {
            return Err(RecordError::NegativeLength {
                index,
                field: "headers",
                length: i64::from(header_count),
            });
        }
        // Each header takes at least two bytes, which bounds the allocation by the input.
        let mut headers = Vec::with_capacity((header_count as usize).min(self.remaining() / 2));
        for _ in 0..header_count {
            let key = self
                .nullable_bytes("header key")?
                .ok_or(RecordError::NegativeLength {
                    index,
                    field: "header key",
                    length: -1,
                })?;
            let key =
                std::str::from_utf8(key).map_err(|_| RecordError::HeaderKeyNotUtf8 { index })?;
            let value = self.nullable_bytes("header value")?;
            headers.push(Header { key, value });
        }
        let used = self.position - start;
        if used as i64 != declared {
            return Err(RecordError::LengthMismatch {
                index,
                declared,
                used,
            });
        }
        self.index += 1;
        Ok(RecordView {
            offset: base_offset + i64::from(offset_delta),
            timestamp: base_timestamp.wrapping_add(timestamp_delta),
            key,
            value,
            headers,
        })
    }

    /// Walks every record without collecting it: checks lengths, offset deltas and count.
    /// This runs on every produced batch, so it reads fields in place with a one-byte fast
    /// path for varints instead of going through [`Cursor::next_record`].
    pub(crate) fn validate_all(self, declared_count: i32) -> Result<(), RecordError> {
        let bytes = &self.bytes[self.position..];
        let mut position = 0usize;
        let mut found = 0usize;
        while position < bytes.len() {
            let index = found;
            let truncated = RecordError::Truncated { index };
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
                .ok_or(truncated.clone())?;
            let record = &bytes[..end];
            // attributes (1 byte), then the timestamp delta
            let (_, at) = varlong_at(record, at + 1, index)?;
            let (offset_delta, at) = varlong_at(record, at, index)?;
            if offset_delta != found as i64 {
                return Err(RecordError::OffsetDelta {
                    index,
                    expected: found as i32,
                    found: i32::try_from(offset_delta).unwrap_or(i32::MAX),
                });
            }
            let at = skip_nullable(record, at, index, "key")?;
            let at = skip_nullable(record, at, index, "value")?;
            let (header_count, mut at) = varlong_at(record, at, index)?;
            if header_count < 0 {
                return Err(RecordError::NegativeLength {
                    index,
                    field: "headers",
                    length: header_count,
                });
            }
            for _ in 0..header_count {
                let (key_length, key_at) = varlong_at(record, at, index)?;
                if key_length < 0 {
                    return Err(RecordError::NegativeLength {
                        index,
                        field: "header key",
                        length: key_length,
                    });
                }
                let key_end = key_at
                    .checked_add(key_length as usize)
                    .filter(|&e| e <= end)
                    .ok_or(truncated.clone())?;
                std::str::from_utf8(&record[key_at..key_end])
                    .map_err(|_| RecordError::HeaderKeyNotUtf8 { index })?;
                at = skip_nullable(record, key_end, index, "header value")?;
            }
            if at != end {
                return Err(RecordError::LengthMismatch {
                    index,
                    declared,
                    used: at.saturating_sub(end - declared as usize),
                });
            }
            position = end;
            found += 1;
        }
        if found != declared_count as usize {
            return Err(RecordError::CountMismatch {
                declared: declared_count,
                found,
            });
        }
        Ok(())
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

/// Skips a nullable byte field (varint length, -1 for null) inside `record`.
#[inline(always)]
fn skip_nullable(
    record: &[u8],
    position: usize,
    index: usize,
    field: &'static str,
) -> Result<usize, RecordError> {
    let (length, at) = varlong_at(record, position, index)?;
    match length {
        -1 => Ok(at),
        l if l < 0 => Err(RecordError::NegativeLength {
            index,
            field,
            length: l,
        }),
        l => at
            .checked_add(l as usize)
            .filter(|&end| end <= record.len())
            .ok_or(RecordError::Truncated { index }),
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
            assert_eq!(Cursor::new(&bytes).varlong(), Ok(value));
        }
    }

    proptest! {
        #[test]
        fn varlong_round_trips(value in any::<i64>()) {
            let mut buffer = Vec::new();
            put_varlong(&mut buffer, value);
            prop_assert_eq!(buffer.len(), varlong_len(value));
            let mut cursor = Cursor::new(&buffer);
            prop_assert_eq!(cursor.varlong(), Ok(value));
            prop_assert_eq!(cursor.remaining(), 0);
        }

        #[test]
        fn truncated_varints_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut cursor = Cursor::new(&bytes);
            let _ = cursor.varlong();
        }
    }
}
