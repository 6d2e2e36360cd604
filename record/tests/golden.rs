//! Golden batches: bytes derived by hand from Kafka's documented RecordBatch v2 layout, and
//! bytes produced by a real Kafka client's encoder (kafka-python 3.0.12's
//! `DefaultRecordBatchBuilder`, recorded in `kafka_python_batches.json`).

use weir_record::{Batch, BatchBuilder, Header, Record};

/// CRC-32C written out bit by bit (reflected Castagnoli polynomial 0x82F63B78), independent of
/// the `crc32c` crate the codec uses.
fn crc32c_bitwise(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn bitwise_crc32c_matches_the_standard_check_value() {
    assert_eq!(crc32c_bitwise(b"123456789"), 0xE306_9283);
}

#[test]
fn one_record_batch_matches_the_hand_derived_bytes() {
    let timestamp = 1_700_000_000_000i64; // 0x0000018BCFE56800
    let record: &[u8] = &[
        0x10, // record length 8, zigzag varint
        0x00, // attributes
        0x00, // timestamp delta 0
        0x00, // offset delta 0
        0x02, b'k', // key length 1, key
        0x02, b'v', // value length 1, value
        0x00, // header count 0
    ];
    let mut expected = Vec::new();
    expected.extend_from_slice(&0i64.to_be_bytes()); // base offset
    expected.extend_from_slice(&(49 + record.len() as i32).to_be_bytes()); // batch length: 61 - 12 + records
    expected.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch: none yet
    expected.push(2); // magic
    let crc_at = expected.len();
    expected.extend_from_slice(&[0; 4]); // crc, filled in below
    expected.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression, create time
    expected.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    expected.extend_from_slice(&[0x00, 0x00, 0x01, 0x8B, 0xCF, 0xE5, 0x68, 0x00]); // base timestamp
    expected.extend_from_slice(&[0x00, 0x00, 0x01, 0x8B, 0xCF, 0xE5, 0x68, 0x00]); // max timestamp
    expected.extend_from_slice(&[0xFF; 8]); // producer id -1
    expected.extend_from_slice(&[0xFF; 2]); // producer epoch -1
    expected.extend_from_slice(&[0xFF; 4]); // base sequence -1
    expected.extend_from_slice(&1i32.to_be_bytes()); // record count
    expected.extend_from_slice(record);
    let crc = crc32c_bitwise(&expected[21..]);
    expected[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());

    let mut builder = BatchBuilder::new(0);
    builder.push(&Record {
        timestamp,
        key: Some(b"k"),
        value: Some(b"v"),
        headers: Vec::new(),
    });
    assert_eq!(builder.build(), expected);
    assert_eq!(expected.len(), 70);
}

#[test]
fn batches_match_kafka_python_byte_for_byte() {
    let cases: serde_json::Value =
        serde_json::from_str(include_str!("kafka_python_batches.json")).expect("fixture is JSON");
    let cases = cases.as_array().expect("a list of cases");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let producer: Vec<i64> = case["producer"]
            .as_array()
            .expect("producer")
            .iter()
            .map(|v| v.as_i64().expect("int"))
            .collect();
        let records = case["records"].as_array().expect("records");
        let text = |v: &serde_json::Value| v.as_str().map(|s| s.as_bytes().to_vec());
        let owned: Vec<OwnedRecord> = records
            .iter()
            .map(|r| {
                let headers = r["headers"]
                    .as_array()
                    .expect("headers")
                    .iter()
                    .map(|h| (h[0].as_str().expect("header key").to_string(), text(&h[1])))
                    .collect();
                (
                    r["ts"].as_i64().expect("ts"),
                    text(&r["key"]),
                    text(&r["value"]),
                    headers,
                )
            })
            .collect();

        // kafka-python leaves the partition leader epoch at 0 where the Java client writes -1;
        // the field is outside the CRC's range, so both are valid.
        let mut builder = BatchBuilder::new(0).partition_leader_epoch(0).producer(
            producer[0],
            producer[1] as i16,
            producer[2] as i32,
        );
        for (timestamp, key, value, headers) in &owned {
            builder.push(&Record {
                timestamp: *timestamp,
                key: key.as_deref(),
                value: value.as_deref(),
                headers: headers
                    .iter()
                    .map(|(k, v)| Header {
                        key: k,
                        value: v.as_deref(),
                    })
                    .collect(),
            });
        }
        let ours = builder.build();
        let theirs = hex(case["hex"].as_str().expect("hex"));
        assert_eq!(ours, theirs, "case {name}");

        let batch = Batch::parse(&theirs).expect("their batch parses");
        batch.validate_records().expect("their records validate");
        let decoded = batch.records().expect("their records decode");
        assert_eq!(decoded.len(), owned.len());
        for (view, (timestamp, key, value, headers)) in decoded.iter().zip(&owned) {
            assert_eq!(view.timestamp, *timestamp, "case {name}");
            assert_eq!(view.key, key.as_deref(), "case {name}");
            assert_eq!(view.value, value.as_deref(), "case {name}");
            assert_eq!(view.headers.len(), headers.len(), "case {name}");
        }
    }
}

/// Timestamp, key, value and headers of one record of a fixture.
type OwnedRecord = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}
