//! Decompression of a batch's records section, for consumers of batches Kafka clients
//! compressed: gzip, snappy (raw, or in the xerial framing Java's client writes), lz4 (frame
//! format) and zstd. The broker never decompresses (batches are stored and served as they
//! came); this is the reader's side.
//!
//! Output is capped: a few compressed bytes cannot expand past `limit` (a decompression
//! bomb is an error, not an allocation).

use std::io::Read;

/// The compression codec named by a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec of Kafka's code (a batch's attributes' lowest three bits).
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Records that do not decompress.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decompress the {codec:?} records: {why}")]
pub struct DecompressError {
    pub codec: Compression,
    pub why: String,
}

/// The xerial snappy framing's magic, at the start of what Java's client compresses.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// The records section of a batch compressed with `codec`, decompressed, at most `limit`
/// bytes.
///
/// # Errors
/// `Decompression` for bytes the codec cannot read, or output past `limit`.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let failed = |why: String| DecompressError { codec, why };
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => read_capped(flate2::read::GzDecoder::new(input), limit, codec),
        Compression::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(input), limit, codec),
        Compression::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| failed(e.to_string()))?;
            read_capped(decoder, limit, codec)
        }
        Compression::Snappy => {
            if input.starts_with(XERIAL_MAGIC) {
                xerial(input, limit, codec)
            } else {
                raw_snappy(input, limit, codec)
            }
        }
    }
}

fn read_capped(
    reader: impl Read,
    limit: usize,
    codec: Compression,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError {
            codec,
            why: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecompressError {
            codec,
            why: format!("the records expand past {limit} bytes"),
        });
    }
    Ok(out)
}

fn raw_snappy(input: &[u8], limit: usize, codec: Compression) -> Result<Vec<u8>, DecompressError> {
    let failed = |why: String| DecompressError { codec, why };
    let length = snap::raw::decompress_len(input).map_err(|e| failed(e.to_string()))?;
    if length > limit {
        return Err(failed(format!("the records expand past {limit} bytes")));
    }
    snap::raw::Decoder::new()
        .decompress_vec(input)
        .map_err(|e| failed(e.to_string()))
}

/// xerial's framing: the magic, two 4-byte versions, then blocks of a 4-byte length and raw
/// snappy.
fn xerial(input: &[u8], limit: usize, codec: Compression) -> Result<Vec<u8>, DecompressError> {
    let failed = |why: &str| DecompressError {
        codec,
        why: why.to_string(),
    };
    let mut rest = input
        .get(XERIAL_MAGIC.len() + 8..)
        .ok_or_else(|| failed("a short xerial header"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (length, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| failed("a short xerial block length"))?;
        let length = u32::from_be_bytes(*length) as usize;
        let block = after
            .get(..length)
            .ok_or_else(|| failed("a short xerial block"))?;
        out.extend(raw_snappy(block, limit.saturating_sub(out.len()), codec)?);
        rest = &after[length..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn sample() -> Vec<u8> {
        (0..20_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_a_bomb_is_an_error() {
        let plain = sample();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&plain).expect("gzip");
        let gzip = gzip.finish().expect("gzip");
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&plain).expect("lz4");
        let lz4 = lz4.finish().expect("lz4");
        let snappy = snap::raw::Encoder::new()
            .compress_vec(&plain)
            .expect("snappy");
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend([0, 0, 0, 1, 0, 0, 0, 1]);
        for chunk in plain.chunks(30_000) {
            let block = snap::raw::Encoder::new()
                .compress_vec(chunk)
                .expect("snappy");
            xerial.extend((block.len() as u32).to_be_bytes());
            xerial.extend(block);
        }
        let zstd = ruzstd::encoding::compress_to_vec(
            &plain[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        for (codec, compressed) in [
            (Compression::Gzip, &gzip),
            (Compression::Lz4, &lz4),
            (Compression::Snappy, &snappy),
            (Compression::Snappy, &xerial),
            (Compression::Zstd, &zstd),
        ] {
            assert_eq!(
                decompress(codec, compressed, 1 << 20).expect("decompress"),
                plain,
                "{codec:?}"
            );
            assert!(
                decompress(codec, compressed, plain.len() - 1).is_err(),
                "{codec:?} past its limit"
            );
            assert!(
                decompress(codec, &compressed[..compressed.len() / 2], 1 << 20).is_err(),
                "{codec:?} cut short"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        let garbage = [0x5a; 64];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(decompress(codec, &garbage, 1 << 20).is_err(), "{codec:?}");
        }
    }
}
