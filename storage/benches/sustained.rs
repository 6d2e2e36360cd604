//! The storage engine's sustained append rate: one log keeps everything it is given (as a
//! broker's partition does, with the default topic config and flushing left to the OS), so
//! the kernel's writeback of earlier data weighs on later appends as it does on a broker. This
//! is the figure `weir bench produce` is compared with; the `ratio` bench measures bursts.
//!
//! `cargo bench -p weir-storage --bench sustained` with `WEIR_BENCH_RECORD_SIZE` (default
//! 1024), `WEIR_BENCH_BATCH_BYTES` (default 1 MiB) and `WEIR_BENCH_TOTAL_MIB` (default 1024).

use std::time::Instant;

use weir_storage::{Log, LogConfig};

#[allow(
    dead_code,
    reason = "this bench needs only part of what the benches share"
)]
mod disk;

use disk::{bench_dir, encoded_batch};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let record_size = setting("WEIR_BENCH_RECORD_SIZE", 1024);
    let batch_bytes = setting("WEIR_BENCH_BATCH_BYTES", 1 << 20);
    let total = setting("WEIR_BENCH_TOTAL_MIB", 1024) << 20;
    // Records per batch as the producer fills one: up to batch_bytes and the topic's
    // max.message.bytes.
    let limit = batch_bytes.min(LogConfig::default().max_batch_size);
    let mut per_batch = (batch_bytes / record_size).max(1);
    let mut template = encoded_batch(record_size, per_batch);
    while template.len() > limit && per_batch > 1 {
        per_batch -= 1;
        template = encoded_batch(record_size, per_batch);
    }
    let dir = bench_dir();
    let (mut log, _) = Log::open(dir.path(), LogConfig::default()).expect("open");
    let mut bytes = template.clone();
    let (mut written, mut records) = (0usize, 0usize);
    let started = Instant::now();
    while written < total {
        bytes.copy_from_slice(&template);
        let appended = log.append(&mut bytes, 0).expect("append");
        written += bytes.len();
        records += appended.records as usize;
    }
    let seconds = started.elapsed().as_secs_f64();
    log.close().expect("close");
    println!(
        "sustained appends: {records} records of {record_size} B in batches of {per_batch} ({} MiB in all) in {seconds:.2} s: {:.0} records/s, {:.1} MB/s",
        written >> 20,
        records as f64 / seconds,
        written as f64 / seconds / 1e6,
    );
}
