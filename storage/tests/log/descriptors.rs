//! Descriptors and memory maps grow with active segments and the cache of closed ones, not
//! with every segment a log holds.

use std::path::Path;
use std::sync::Arc;

use weir_storage::{Log, LogConfig, LogOptions, SegmentFileCache};

use crate::{append_values, read_all};

/// This process's descriptors and memory maps that point into `dir`.
fn held_in(dir: &Path) -> (usize, usize) {
    let dir = dir.canonicalize().expect("canonical dir");
    let descriptors = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter(|line| line.contains(dir.to_str().expect("utf-8 path")))
        .count();
    (descriptors, maps)
}

#[test]
fn closed_segments_hold_no_descriptors_beyond_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = Arc::new(SegmentFileCache::new(4));
    let config = LogConfig {
        segment_size: 2048,
        index_interval: 256,
        ..LogConfig::default()
    };
    let options = LogOptions {
        files: Arc::clone(&files),
        ..LogOptions::default()
    };
    let (mut log, _) = Log::open_with(dir.path(), config.clone(), options.clone()).expect("open");
    append_values(&mut log, 0, 600, 1000);
    assert!(
        log.segment_count() >= 20,
        "{} segments",
        log.segment_count()
    );
    log.flush().expect("flush");
    // Every segment read, from the first.
    assert_eq!(read_all(&log).len(), 600);
    assert!(files.open_segments() <= 4);
    // The lock file and the active segment's log, and at most 4 closed segments' logs; two
    // index maps for each of those segments. (A segment just rolled keeps its log open until
    // its background fsync has run: waited for here, with a deadline.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (descriptors, maps) = loop {
        let held = held_in(dir.path());
        if held.0 <= 2 + 4 || std::time::Instant::now() > deadline {
            break held;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(descriptors <= 2 + 4, "{descriptors} descriptors open");
    assert!(maps <= 2 * (1 + 4), "{maps} maps");

    // After a clean close and a reopen, the same bound holds without reading anything.
    log.close().expect("close");
    let (log, _) = Log::open_with(dir.path(), config, options).expect("reopen");
    let (descriptors, maps) = held_in(dir.path());
    assert!(
        descriptors <= 2 + 4,
        "{descriptors} descriptors after reopen"
    );
    assert!(maps <= 2 * (1 + 4), "{maps} maps after reopen");
    assert_eq!(read_all(&log).len(), 600);
}
