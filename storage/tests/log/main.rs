//! Integration tests of weir-storage: whole logs in temporary directories, real files, and a
//! real child process killed mid-append.

mod behaviour;
mod crash;
mod damage;
mod descriptors;
mod full_disk;
mod model;
mod tool;

use std::path::Path;

use weir_storage::{Log, LogConfig, Record, encode_batch};

/// A batch of records with the given values, all at `timestamp`.
pub fn batch(values: &[&[u8]], timestamp: i64) -> Vec<u8> {
    let records: Vec<Record<'_>> = values
        .iter()
        .map(|v| Record {
            timestamp,
            key: None,
            value: Some(v),
            headers: Vec::new(),
        })
        .collect();
    encode_batch(0, &records)
}

/// Values named by their sequence number, so a test can tell which one it reads.
pub fn value(sequence: u64) -> Vec<u8> {
    format!("value-{sequence:08}").into_bytes()
}

pub fn small_segments() -> LogConfig {
    LogConfig {
        segment_size: 4096,
        index_interval: 256,
        ..LogConfig::default()
    }
}

pub fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, config).expect("open log").0
}

/// Every record from the log start to its end, as (offset, value).
pub fn read_all(log: &Log) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while let Some(slice) = log.read(offset, 64 * 1024, None).expect("read") {
        for batch in weir_storage::batch::batches(&slice.bytes) {
            let (_, batch) = batch.expect("read returns valid batches");
            for record in batch.records().expect("records decode") {
                if record.offset >= offset {
                    out.push((record.offset, record.value.unwrap_or_default().to_vec()));
                }
            }
        }
        offset = slice.next_offset;
    }
    out
}

/// Appends `count` single-record batches with values `value(first..first+count)`.
pub fn append_values(log: &mut Log, first: u64, count: u64, timestamp: i64) {
    for sequence in first..first + count {
        let mut bytes = batch(&[&value(sequence)], timestamp);
        let _ = log
            .append(&mut bytes, 0)
            .expect("append")
            .durable()
            .expect("durable");
    }
}
