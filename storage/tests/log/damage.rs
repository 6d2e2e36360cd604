//! Damaged files: each test hurts a log on disk the way a crash or a bad disk would, reopens
//! it, and checks what the storage issue specifies.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use weir_storage::inspect::inspect;
use weir_storage::{Log, LogError};

use crate::{append_values, open, read_all, small_segments, value};

/// Six full segments of 49 records and an active one of 26.
const RECORDS: u64 = 320;

/// A log of `RECORDS` one-record batches over several small segments, closed cleanly or not.
fn written_log(clean: bool) -> (tempfile::TempDir, Vec<(i64, Vec<u8>)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments());
    append_values(&mut log, 0, RECORDS, 1000);
    assert!(log.segment_count() >= 4);
    let all = read_all(&log);
    if clean {
        log.close().expect("close");
    } else {
        drop(log);
    }
    (dir, all)
}

fn segment_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == suffix))
        .collect();
    files.sort();
    files
}

fn assert_inspects_clean(dir: &Path) {
    let report = inspect(dir).expect("inspect");
    assert_eq!(report.problems(), Vec::<String>::new());
}

#[test]
fn torn_tail_is_truncated_on_restart() {
    for clean in [true, false] {
        let (dir, all) = written_log(clean);
        let last = segment_files(dir.path(), "log").pop().expect("a segment");
        let len = std::fs::metadata(&last).expect("metadata").len();
        OpenOptions::new()
            .write(true)
            .open(&last)
            .expect("open")
            .set_len(len - 5)
            .expect("cut inside the last batch");

        let (mut log, report) = Log::open(dir.path(), small_segments()).expect("reopen");
        assert!(report.truncated_bytes > 0, "clean={clean}: {report:?}");
        assert_eq!(
            log.log_end_offset(),
            RECORDS as i64 - 1,
            "only the torn batch is gone"
        );
        assert_eq!(read_all(&log), all[..all.len() - 1]);
        append_values(&mut log, 5000, 1, 1000);
        assert_eq!(
            read_all(&log).last(),
            Some(&(RECORDS as i64 - 1, value(5000)))
        );
        log.close().expect("close");
        assert_inspects_clean(dir.path());
    }
}

#[test]
fn junk_after_the_last_batch_is_cut_off() {
    for clean in [true, false] {
        let (dir, all) = written_log(clean);
        let last = segment_files(dir.path(), "log").pop().expect("a segment");
        let mut file = OpenOptions::new().append(true).open(&last).expect("open");
        file.write_all(&[0xAB; 100]).expect("junk");
        // A plausible-looking header that claims more bytes than exist.
        file.write_all(&[0, 0, 0, 0, 0, 0, 1, 0, 0x7F, 0xFF, 0xFF, 0xFF])
            .expect("junk");
        drop(file);

        let (log, report) = Log::open(dir.path(), small_segments()).expect("reopen");
        assert_eq!(report.truncated_bytes, 112, "clean={clean}");
        assert_eq!(read_all(&log), all);
        log.close().expect("close");
        assert_inspects_clean(dir.path());
    }
}

#[test]
fn zeroed_truncated_or_deleted_indexes_are_rebuilt_from_the_log() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 5] = [
        ("zeroed offset index", |p| {
            let len = std::fs::metadata(p).expect("metadata").len();
            std::fs::write(p, vec![0u8; len as usize]).expect("zero");
        }),
        ("offset index cut mid-entry", |p| {
            let len = std::fs::metadata(p).expect("metadata").len();
            OpenOptions::new()
                .write(true)
                .open(p)
                .expect("open")
                .set_len(len - 3)
                .expect("cut");
        }),
        ("offset index deleted", |p| {
            std::fs::remove_file(p).expect("delete")
        }),
        ("time index deleted", |p| {
            std::fs::remove_file(p.with_extension("timeindex")).expect("delete")
        }),
        ("offset index pointing at the wrong place", |p| {
            let mut bytes = std::fs::read(p).expect("read");
            assert!(bytes.len() >= 16, "the index has entries to damage");
            let n = bytes.len();
            bytes[n - 1] ^= 0x10;
            std::fs::write(p, bytes).expect("write");
        }),
    ];
    for (what, damage) in damages {
        let (dir, all) = written_log(true);
        let indexes = segment_files(dir.path(), "index");
        // A closed segment (below the recovery point) and the active one.
        for index in [&indexes[1], indexes.last().expect("an index")] {
            damage(index);
        }
        let (log, report) = Log::open(dir.path(), small_segments()).expect("reopen");
        assert_eq!(
            report.truncated_bytes, 0,
            "{what}: no data is lost for an index"
        );
        assert_eq!(read_all(&log), all, "{what}");
        for offset in [0, 57, 123, 250, RECORDS as i64 - 1] {
            let slice = log.read(offset, 1, None).expect("read").expect("data");
            assert_eq!(slice.first_offset, offset, "{what}");
        }
        log.close().expect("close");
        assert_inspects_clean(dir.path());
    }
}

#[test]
fn a_flipped_byte_in_a_closed_segment_is_never_served() {
    let (dir, all) = written_log(true);
    let second = &segment_files(dir.path(), "log")[1];
    let report = inspect(dir.path()).expect("inspect");
    let segment = report
        .segments
        .iter()
        .find(|s| &s.path == second)
        .expect("segment report");
    // Flip a byte in the value of the third batch of the second segment.
    let (position, header) = segment.batches[2];
    let at = position + header.size() as u64 - 3;
    let mut bytes = std::fs::read(second).expect("read");
    bytes[at as usize] ^= 0x01;
    std::fs::write(second, &bytes).expect("write");

    let (log, report) = Log::open(dir.path(), small_segments()).expect("reopen");
    assert!(report.clean_shutdown);
    let bad = header.base_offset;
    match log.read(bad, 1 << 20, None) {
        Err(LogError::Corrupt { position: p, .. }) => assert_eq!(p, position),
        other => panic!("expected corruption at offset {bad}, got {other:?}"),
    }
    // A read that starts before the bad batch stops short of it.
    let before = log
        .read(bad - 2, 1 << 20, None)
        .expect("read")
        .expect("data");
    assert_eq!(before.next_offset, bad);
    // Batches after it are served.
    let after = log
        .read(bad + 1, 1 << 20, None)
        .expect("read")
        .expect("data");
    assert_eq!(after.first_offset, bad + 1);
    assert_eq!(all[bad as usize + 1].0, bad + 1);
    let problems = inspect(dir.path()).expect("inspect").problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("crc mismatch"), "{problems:?}");
}

#[test]
fn a_flipped_byte_in_the_active_segment_cuts_the_log_there_after_a_crash() {
    let (dir, all) = written_log(false);
    let last = segment_files(dir.path(), "log").pop().expect("a segment");
    let report = inspect(dir.path()).expect("inspect");
    let segment = report
        .segments
        .iter()
        .find(|s| s.path == last)
        .expect("segment report");
    let (position, header) = segment.batches[1];
    let mut bytes = std::fs::read(&last).expect("read");
    bytes[position as usize + 30] ^= 0x40;
    std::fs::write(&last, &bytes).expect("write");

    let (log, report) = Log::open(dir.path(), small_segments()).expect("reopen");
    assert!(!report.clean_shutdown && report.truncated_bytes > 0);
    assert_eq!(log.log_end_offset(), header.base_offset);
    assert_eq!(read_all(&log), all[..header.base_offset as usize]);
}

#[test]
fn a_rebuilt_index_is_trimmed_so_the_next_open_trusts_it() {
    let (dir, all) = written_log(true);
    let index = segment_files(dir.path(), "index")[1].clone();
    let length = std::fs::metadata(&index).expect("metadata").len();
    std::fs::remove_file(&index).expect("delete");
    let log = open(dir.path(), small_segments());
    drop(log);
    assert_eq!(
        std::fs::metadata(&index).expect("rebuilt").len(),
        length,
        "rebuilt to its trimmed length"
    );
    let (log, report) = Log::open(dir.path(), small_segments()).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_all(&log), all);
}

#[test]
fn damage_below_the_recovery_point_is_reported_not_skipped() {
    let (dir, _) = written_log(true);
    let second = segment_files(dir.path(), "log")[1].clone();
    let report = inspect(dir.path()).expect("inspect");
    let segment = report
        .segments
        .iter()
        .find(|s| s.path == second)
        .expect("segment report");
    // The length field of a batch in the middle is garbage, and the index is gone, so the
    // rebuild cannot walk past it.
    let (position, header) = segment.batches[5];
    let mut bytes = std::fs::read(&second).expect("read");
    bytes[position as usize + 8..position as usize + 12].copy_from_slice(&(-7i32).to_be_bytes());
    std::fs::write(&second, &bytes).expect("write");
    std::fs::remove_file(second.with_extension("index")).expect("delete index");

    let (log, report) = Log::open(dir.path(), small_segments()).expect("reopen");
    assert!(report.clean_shutdown);
    assert!(
        log.read(header.base_offset - 1, 100, None)
            .expect("before the damage")
            .is_some()
    );
    for offset in [header.base_offset, header.base_offset + 3] {
        assert!(
            matches!(log.read(offset, 100, None), Err(LogError::Corrupt { .. })),
            "offset {offset} must be reported as corrupt, not skipped"
        );
    }
}
