//! Storage benchmarks. Each log figure comes with the disk's own rate for the same bytes in
//! the same run, so BENCHMARKS.md can state ratios rather than raw numbers from a noisy
//! machine.
//!
//! `cargo bench -p weir-storage --bench log` (set `WEIR_BENCH_DIR` to put the files on
//! another disk; the default is the system temporary directory).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weir_storage::{Log, LogConfig};

mod disk;

use disk::{Flush, PlainFiles, SEGMENT_SIZE, bench_dir, encoded_batch};

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for record_size in [100usize, 1024] {
        for records in [1usize, 100, 1000] {
            for flush in [Flush::Os, Flush::EveryAppend] {
                let batch = encoded_batch(record_size, records);
                group.throughput(Throughput::Bytes(batch.len() as u64));
                let id = BenchmarkId::new(
                    format!("{record_size}B/{}", flush.name()),
                    format!("batch-{records}"),
                );
                group.bench_function(id, |b| {
                    let dir = bench_dir();
                    let config = LogConfig {
                        segment_size: SEGMENT_SIZE,
                        retention_size: Some(2 * SEGMENT_SIZE),
                        flush_messages: matches!(flush, Flush::EveryAppend).then_some(1),
                        ..LogConfig::default()
                    };
                    let (mut log, _) = Log::open(dir.path(), config).expect("open");
                    let mut bytes = batch.clone();
                    b.iter_custom(|iterations| {
                        let start = Instant::now();
                        for _ in 0..iterations {
                            let appended = log.append(&mut bytes, 0).expect("append");
                            if let Some(ticket) = appended.flush {
                                ticket.wait().expect("fsync");
                            }
                        }
                        let elapsed = start.elapsed();
                        let _ = log.apply_retention().expect("retention");
                        elapsed
                    });
                });
            }
        }
    }
    group.finish();
}

/// The disk's own rate: the same batch bytes written with plain `write` calls, with and
/// without an fdatasync after each, to files that rotate and are deleted exactly as the log's
/// segments are (a new file every `SEGMENT_SIZE`, the oldest deleted beyond the same
/// retention), so the two differ only in what the log does itself.
fn plain_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("plain-write");
    for record_size in [100usize, 1024] {
        for records in [1usize, 100, 1000] {
            for flush in [Flush::Os, Flush::EveryAppend] {
                let batch = encoded_batch(record_size, records);
                group.throughput(Throughput::Bytes(batch.len() as u64));
                let id = BenchmarkId::new(
                    format!("{record_size}B/{}", flush.name()),
                    format!("batch-{records}"),
                );
                group.bench_function(id, |b| {
                    let dir = bench_dir();
                    let mut files = PlainFiles::new(dir.path(), false);
                    b.iter_custom(|iterations| {
                        let start = Instant::now();
                        for _ in 0..iterations {
                            files.write(&batch, matches!(flush, Flush::EveryAppend));
                        }
                        let elapsed = start.elapsed();
                        files.apply_retention();
                        elapsed
                    });
                });
            }
        }
    }
    group.finish();
}

/// A log of about 256 MiB of 1 KiB records in batches of 10 (about 10 KiB, so reads of
/// 64 KiB and 1 MiB return close to what they ask for).
fn filled_log(dir: &std::path::Path) -> Log {
    let (mut log, _) = Log::open(dir, LogConfig::default()).expect("open");
    let mut batch = encoded_batch(1024, 10);
    while log.size() < 256 << 20 {
        let _ = log.append(&mut batch, 0).expect("append");
    }
    log
}

fn read(c: &mut Criterion) {
    let dir = bench_dir();
    let log = filled_log(dir.path());
    let mut group = c.benchmark_group("read");
    for max_bytes in [64usize << 10, 1 << 20] {
        group.throughput(Throughput::Bytes(max_bytes as u64));
        group.bench_function(
            BenchmarkId::new("sequential", format!("max-{}KiB", max_bytes >> 10)),
            |b| {
                let mut offset = 0;
                b.iter(|| {
                    let slice = match log.read(offset, max_bytes, None).expect("read") {
                        Some(slice) => slice,
                        None => log.read(0, max_bytes, None).expect("read").expect("data"),
                    };
                    offset = slice.next_offset;
                    slice.bytes.len()
                });
            },
        );
        // The page cache's own rate: plain positional reads of the same file, same sizes.
        group.bench_function(
            BenchmarkId::new("plain-pread", format!("max-{}KiB", max_bytes >> 10)),
            |b| {
                use std::os::unix::fs::FileExt;
                let segment = std::fs::File::open(dir.path().join(format!("{:020}.log", 0)))
                    .expect("segment");
                let length = segment.metadata().expect("metadata").len();
                let mut position = 0u64;
                b.iter(|| {
                    if position + max_bytes as u64 > length {
                        position = 0;
                    }
                    let mut buffer = vec![0u8; max_bytes];
                    segment.read_exact_at(&mut buffer, position).expect("pread");
                    position += max_bytes as u64;
                    buffer.len()
                });
            },
        );
    }
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let dir = bench_dir();
    let log = filled_log(dir.path());
    let size = log.size();
    drop(log);
    let mut group = c.benchmark_group("recovery");
    group.throughput(Throughput::Bytes(size));
    group.bench_function("scan-256MiB", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                // Without a clean-shutdown marker and with the recovery point at 0, open
                // verifies every batch of every segment.
                std::fs::write(dir.path().join("recovery-point-checkpoint"), "0\n")
                    .expect("reset recovery point");
                let start = Instant::now();
                let (log, report) = Log::open(dir.path(), LogConfig::default()).expect("open");
                total += start.elapsed();
                assert_eq!(report.recovered_bytes, size);
                drop(log);
            }
            total
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = append, plain_write, read, recovery
}
criterion_main!(benches);
