//! Where a keyed record lands: Kafka's default partitioner, so that a key goes to the same
//! partition in Weir as in Kafka.

/// Kafka's `Utils.murmur2` (32-bit MurmurHash2, seed 0x9747b28c), as an unsigned value.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`
/// (`toPositive(murmur2(key)) % partitions`).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from kafka-python 3.0.12's `kafka.partitioner.default.murmur2`, which ports
    /// Kafka's; the signed ones are those of Kafka's own `UtilsTest`.
    #[test]
    fn matches_kafkas_murmur2() {
        for (key, hash, partition_of_6) in [
            (&b"21"[..], 3_321_034_988u32, 0),
            (b"foobar", 3_504_634_814, 0),
            (b"a-little-bit-long-string", 3_308_985_760, 2),
            (b"a-little-bit-longer-string", 2_808_662_467, 5),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                4_236_069_325,
                5,
            ),
            (b"abc", 479_470_107, 3),
            (b"", 275_646_681, 3),
            (b"key-1", 193_331_640, 0),
            (b"user-42", 1_459_644_460, 4),
        ] {
            assert_eq!(murmur2(key), hash, "{:?}", String::from_utf8_lossy(key));
            assert_eq!(partition_for_key(key, 6), partition_of_6);
        }
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
    }
}
