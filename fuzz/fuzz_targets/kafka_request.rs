//! Any bytes as a Kafka request frame (after its length), checked and decoded as the broker's
//! Kafka listener does: never a panic, and memory bounded by the frame (libFuzzer's malloc
//! limit catches an allocation sized by a count on the wire).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weir_broker::kafka::decode_frame(bytes::Bytes::copy_from_slice(data));
});
