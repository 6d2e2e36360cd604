//! The log's append rate as a share of the disk's own rate, measured in one run by
//! interleaving short rounds of log appends and plain writes of the same bytes, so the
//! machine's drift hits both alike. Prints one line per configuration and the median of the
//! per-round ratios, against two baselines: plain writes, and plain writes whose full files
//! are fsynced in the background as the log's rolled segments are.
//!
//! `cargo bench -p weir-storage --bench ratio` (`WEIR_BENCH_ROUNDS`, default 15).

use std::time::{Duration, Instant};

use weir_storage::{Log, LogConfig};

mod disk;

use disk::{Flush, PlainFiles, SEGMENT_SIZE, bench_dir, encoded_batch};

const ROUND: Duration = Duration::from_millis(200);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("WEIR_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    println!(
        "{:<28} {:>10} {:>12} {:>7} {:>17} {:>7}",
        "configuration", "log MiB/s", "plain MiB/s", "ratio", "plain+roll MiB/s", "ratio"
    );
    for record_size in [100usize, 1024] {
        for records in [1usize, 100, 1000] {
            for flush in [Flush::Os, Flush::EveryAppend] {
                measure(record_size, records, flush, rounds);
            }
        }
    }
}

fn measure(record_size: usize, records: usize, flush: Flush, rounds: usize) {
    let batch = encoded_batch(record_size, records);
    let log_dir = bench_dir();
    let plain_dir = bench_dir();
    let rolled_dir = bench_dir();
    let config = LogConfig {
        segment_size: SEGMENT_SIZE,
        retention_size: Some(2 * SEGMENT_SIZE),
        flush_messages: matches!(flush, Flush::EveryAppend).then_some(1),
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(log_dir.path(), config).expect("open");
    let mut plain = PlainFiles::new(plain_dir.path(), false);
    let mut rolled = PlainFiles::new(rolled_dir.path(), true);
    let mut bytes = batch.clone();
    let sync = matches!(flush, Flush::EveryAppend);
    let (mut log_total, mut plain_total, mut rolled_total) = (0f64, 0f64, 0f64);
    let mut ratios = Vec::with_capacity(rounds);
    let mut rolled_ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (appended, log_time) = timed(|| {
            let appended = log.append(&mut bytes, 0).expect("append");
            if let Some(ticket) = appended.flush {
                ticket.wait().expect("fsync");
            }
        });
        let _ = log.apply_retention().expect("retention");
        let (written, plain_time) = timed(|| plain.write(&batch, sync));
        plain.apply_retention();
        let (rolled_written, rolled_time) = timed(|| rolled.write(&batch, sync));
        rolled.apply_retention();
        let log_rate = (appended * batch.len()) as f64 / log_time.as_secs_f64();
        let plain_rate = (written * batch.len()) as f64 / plain_time.as_secs_f64();
        let rolled_rate = (rolled_written * batch.len()) as f64 / rolled_time.as_secs_f64();
        log_total += log_rate;
        plain_total += plain_rate;
        rolled_total += rolled_rate;
        ratios.push(log_rate / plain_rate);
        rolled_ratios.push(log_rate / rolled_rate);
    }
    ratios.sort_by(f64::total_cmp);
    rolled_ratios.sort_by(f64::total_cmp);
    let mib = (1u64 << 20) as f64 * rounds as f64;
    println!(
        "{:<28} {:>10.1} {:>12.1} {:>6.0}% {:>17.1} {:>6.0}%",
        format!("{record_size}B x {records} / {}", flush.name()),
        log_total / mib,
        plain_total / mib,
        ratios[ratios.len() / 2] * 100.0,
        rolled_total / mib,
        rolled_ratios[rolled_ratios.len() / 2] * 100.0,
    );
}

/// Runs `step` for one round; returns how many times it ran and how long that took.
fn timed(mut step: impl FnMut()) -> (usize, Duration) {
    let start = Instant::now();
    let mut count = 0;
    while start.elapsed() < ROUND {
        step();
        count += 1;
    }
    (count, start.elapsed())
}
