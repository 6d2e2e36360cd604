//! The log's API, one behaviour a test.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use weir_storage::batch::{InvalidBatch, batches};
use weir_storage::{BatchHeader, Clock, Log, LogConfig, LogError, Record, encode_batch};

use crate::{append_values, batch, open, read_all, small_segments, value};

#[derive(Debug, Default)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn append_assigns_consecutive_offsets_and_reads_return_whole_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default());
    let mut first = batch(&[b"a", b"b", b"c"], 1000);
    let appended = log.append(&mut first, 3).expect("append");
    assert_eq!(
        (
            appended.first_offset,
            appended.last_offset,
            appended.records
        ),
        (0, 2, 3)
    );
    assert!(
        appended.flush.is_none(),
        "the default policy leaves flushing to the OS"
    );
    let mut second = batch(&[b"d"], 1001);
    let appended = log.append(&mut second, 3).expect("append");
    assert_eq!((appended.first_offset, appended.last_offset), (3, 3));
    assert_eq!(log.log_end_offset(), 4);

    // Reading from the middle of a batch returns the whole batch it is in.
    let slice = log.read(1, 1 << 20, None).expect("read").expect("data");
    assert_eq!(slice.first_offset, 0);
    assert_eq!(slice.next_offset, 4);
    assert_eq!(slice.bytes.len(), first.len() + second.len());
    let headers: Vec<BatchHeader> = batches(&slice.bytes)
        .map(|b| b.expect("valid").1.header)
        .collect();
    assert_eq!(headers.len(), 2);
    assert_eq!(
        headers[0].partition_leader_epoch, 3,
        "the leader epoch is stamped"
    );
    assert_eq!(headers[1].base_offset, 3);
    // The bytes on disk are the caller's bytes with offset and epoch stamped: no re-encoding.
    assert_eq!(&slice.bytes[..first.len()], &first[..]);

    assert!(
        log.read(4, 1 << 20, None)
            .expect("read at the end")
            .is_none()
    );
    assert!(matches!(
        log.read(5, 1 << 20, None),
        Err(LogError::OffsetOutOfRange {
            requested: 5,
            log_start_offset: 0,
            log_end_offset: 4
        })
    ));
}

#[test]
fn max_bytes_limits_a_read_but_always_returns_one_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default());
    append_values(&mut log, 0, 10, 1000);
    let one = log.read(0, 1, None).expect("read").expect("data");
    assert_eq!((one.first_offset, one.next_offset), (0, 1));
    let batch_size = one.bytes.len();
    let three = log
        .read(0, batch_size * 3 + batch_size / 2, None)
        .expect("read")
        .expect("data");
    assert_eq!(three.next_offset, 3);
}

#[test]
fn upper_bound_hides_batches_at_or_past_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default());
    append_values(&mut log, 0, 5, 1000);
    let slice = log.read(0, 1 << 20, Some(3)).expect("read").expect("data");
    assert_eq!(slice.next_offset, 3);
    assert!(log.read(3, 1 << 20, Some(3)).expect("read").is_none());
}

#[test]
fn segments_roll_by_size_and_reads_cross_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments());
    append_values(&mut log, 0, 200, 1000);
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    let all = read_all(&log);
    assert_eq!(all.len(), 200);
    for (i, (offset, v)) in all.iter().enumerate() {
        assert_eq!((*offset, v), (i as i64, &value(i as u64)));
    }
    // Every read lands on its own offset, wherever the index entry before it is.
    for offset in [0, 1, 37, 99, 150, 199] {
        let slice = log.read(offset, 1, None).expect("read").expect("data");
        assert_eq!(slice.first_offset, offset);
    }
    log.close().expect("close");
    let (log, report) = Log::open(dir.path(), small_segments()).expect("reopen");
    assert!(report.clean_shutdown);
    assert_eq!(report.recovered_segments, 0);
    assert_eq!(read_all(&log).len(), 200);
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::default());
    let config = LogConfig {
        segment_age: Some(Duration::from_secs(60)),
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open_with_clock(dir.path(), config, clock.clone()).expect("open");
    append_values(&mut log, 0, 3, 1000);
    clock.0.store(59_000, Ordering::SeqCst);
    append_values(&mut log, 3, 1, 1000);
    assert_eq!(log.segment_count(), 1);
    clock.0.store(60_001, Ordering::SeqCst);
    append_values(&mut log, 4, 1, 1000);
    assert_eq!(log.segment_bases(), vec![0, 4]);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments());
    for i in 0..300i64 {
        let v = value(i as u64);
        let mut bytes = encode_batch(
            0,
            &[Record {
                timestamp: 10_000 + i * 10,
                value: Some(&v),
                ..Record::default()
            }],
        );
        let _ = log.append(&mut bytes, 0).expect("append");
    }
    // Records inside a batch keep their own timestamps.
    let mut inner = encode_batch(
        0,
        &[
            Record {
                timestamp: 20_000,
                value: Some(b"x"),
                ..Record::default()
            },
            Record {
                timestamp: 20_005,
                value: Some(b"y"),
                ..Record::default()
            },
        ],
    );
    let _ = log.append(&mut inner, 0).expect("append");
    assert!(log.segment_count() > 2);
    let found = |t| {
        log.offset_for_timestamp(t)
            .expect("lookup")
            .map(|f| (f.offset, f.timestamp))
    };
    assert_eq!(found(0), Some((0, 10_000)));
    assert_eq!(found(10_000), Some((0, 10_000)));
    assert_eq!(found(10_001), Some((1, 10_010)));
    assert_eq!(found(12_345), Some((235, 12_350)));
    assert_eq!(found(20_001), Some((301, 20_005)));
    assert_eq!(found(20_006), None);
    assert_eq!(
        found(i64::MIN),
        Some((0, 10_000)),
        "the smallest timestamp does not overflow"
    );
}

#[test]
fn truncate_removes_whole_batches_and_appends_continue_from_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments());
    append_values(&mut log, 0, 100, 1000);
    let mut three = batch(&[b"x", b"y", b"z"], 2000);
    let _ = log.append(&mut three, 1).expect("append");
    assert_eq!(log.log_end_offset(), 103);
    // Offset 101 is inside the last batch: the whole batch goes.
    log.truncate_to(101).expect("truncate");
    assert_eq!(log.log_end_offset(), 100);
    assert_eq!(
        log.end_offset_for_epoch(1),
        None,
        "epoch 1's only batch is gone"
    );
    log.truncate_to(40).expect("truncate across segments");
    assert_eq!(log.log_end_offset(), 40);
    append_values(&mut log, 1000, 10, 3000);
    let all = read_all(&log);
    assert_eq!(all.len(), 50);
    assert_eq!(all[39], (39, value(39)));
    assert_eq!(all[40], (40, value(1000)));
    // After an unclean stop the truncated state is what comes back.
    drop(log);
    let log = open(dir.path(), small_segments());
    assert_eq!(read_all(&log), all);
}

#[test]
fn truncate_below_the_start_restarts_the_log_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default());
    append_values(&mut log, 0, 5, 1000);
    log.truncate_fully_and_start_at(500).expect("restart");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    append_values(&mut log, 0, 1, 1000);
    assert_eq!(read_all(&log), vec![(500, value(0))]);
}

#[test]
fn deleted_records_stay_deleted_across_a_reopen_and_whole_segments_below_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments());
    append_values(&mut log, 0, 200, 1000);
    let segments = log.segment_count();
    assert_eq!(log.delete_records_before(10).expect("delete"), 10);
    // Mid-segment: the log starts there, reads below are out of range.
    assert_eq!(log.log_start_offset(), 10);
    assert!(log.read(9, 1024, None).is_err());
    assert_eq!(read_all(&log).first(), Some(&(10, value(10))));
    // Not backwards, and not past the end.
    assert_eq!(log.delete_records_before(5).expect("no-op"), 10);
    assert!(log.delete_records_before(201).is_err());
    assert_eq!(log.delete_records_before(150).expect("delete"), 150);
    assert!(
        log.segment_count() < segments,
        "segments below 150 are gone"
    );
    assert_eq!(read_all(&log).len(), 50);
    // The start survives a crash (no clean close) and a clean reopen.
    drop(log);
    let log = open(dir.path(), small_segments());
    assert_eq!(log.log_start_offset(), 150);
    assert_eq!(read_all(&log).first(), Some(&(150, value(150))));
    log.close().expect("close");
    let mut log = open(dir.path(), small_segments());
    assert_eq!(log.log_start_offset(), 150);
    // Everything: the log is empty but keeps its end.
    assert_eq!(log.delete_records_before(200).expect("delete all"), 200);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (200, 200));
    assert!(read_all(&log).is_empty());
}

#[test]
fn leader_epochs_are_checkpointed_and_answer_end_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default());
    for (epoch, count) in [(1, 3), (2, 4), (5, 2)] {
        for _ in 0..count {
            let mut bytes = batch(&[b"v"], 1000);
            let _ = log.append(&mut bytes, epoch).expect("append");
        }
    }
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 3)));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 7)));
    assert_eq!(log.end_offset_for_epoch(3), Some((2, 7)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 9)));
    assert_eq!(log.end_offset_for_epoch(6), None);
    drop(log);
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 7)));
    assert_eq!(
        log.latest_epoch().map(|e| (e.epoch, e.start_offset)),
        Some((5, 7))
    );
}

#[test]
fn replicated_appends_keep_the_leaders_offsets_and_epochs() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(leader_dir.path(), LogConfig::default());
    let mut follower = open(follower_dir.path(), LogConfig::default());
    append_values(&mut leader, 0, 5, 1000);
    let mut later = batch(&[b"epoch-4"], 1000);
    let _ = leader.append(&mut later, 4).expect("append");
    let slice = leader.read(0, 1 << 20, None).expect("read").expect("data");
    let _ = follower.append_replicated(&slice.bytes).expect("replicate");
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(follower.end_offset_for_epoch(0), Some((0, 5)));
    // A gap or an overlap is refused.
    assert!(matches!(
        follower.append_replicated(&slice.bytes),
        Err(LogError::NonContiguousAppend {
            expected: 6,
            found: 0
        })
    ));
}

#[test]
fn retention_by_size_deletes_oldest_closed_segments_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention_size: Some(10_000),
        retention_age: None,
        ..small_segments()
    };
    let mut log = open(dir.path(), config);
    append_values(&mut log, 0, 400, 1000);
    let before = log.size();
    let outcome = log.apply_retention().expect("retention");
    assert!(outcome.deleted_segments > 0);
    assert!(
        log.size() <= 10_000 + 4096,
        "size {} after retention",
        log.size()
    );
    assert_eq!(before - log.size(), outcome.deleted_bytes);
    assert_eq!(outcome.log_start_offset, log.log_start_offset());
    assert_eq!(
        read_all(&log).first().map(|r| r.0),
        Some(log.log_start_offset())
    );
    assert!(matches!(
        log.read(0, 100, None),
        Err(LogError::OffsetOutOfRange { requested: 0, .. })
    ));

    // Even a limit of zero keeps the active segment.
    let mut config = log.config().clone();
    config.retention_size = Some(0);
    log.set_config(config);
    let _ = log.apply_retention().expect("retention");
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), 400);
}

#[test]
fn retention_by_time_uses_each_segments_newest_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::default());
    let config = LogConfig {
        retention_age: Some(Duration::from_secs(100)),
        ..small_segments()
    };
    let (mut log, _) = Log::open_with_clock(dir.path(), config, clock.clone()).expect("open");
    append_values(&mut log, 0, 60, 1_000);
    append_values(&mut log, 60, 60, 150_000);
    let segments = log.segment_count();
    clock.0.store(200_000, Ordering::SeqCst);
    let outcome = log.apply_retention().expect("retention");
    assert!(outcome.deleted_segments > 0 && outcome.deleted_segments < segments);
    // The segment holding both old and new records stays; nothing newer than 100 s goes.
    assert!(log.log_start_offset() <= 60);
    assert_eq!(read_all(&log).last().map(|r| r.0), Some(119));
}

#[test]
fn bad_batches_are_refused_and_nothing_is_appended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        max_batch_size: 1000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    append_values(&mut log, 0, 2, 1000);
    let good = batch(&[b"fine"], 1000);
    let refuse = |log: &mut Log, mut bytes: Vec<u8>| match log.append(&mut bytes, 0) {
        Err(LogError::InvalidBatch { source, .. }) => source,
        other => panic!("expected an invalid batch, got {other:?}"),
    };

    let mut wrong_crc = good.clone();
    let last = wrong_crc.len() - 1;
    wrong_crc[last] ^= 0xFF;
    assert!(matches!(
        refuse(&mut log, wrong_crc),
        InvalidBatch::CrcMismatch { .. }
    ));

    let mut wrong_magic = good.clone();
    wrong_magic[16] = 1;
    assert!(matches!(
        refuse(&mut log, wrong_magic),
        InvalidBatch::UnsupportedMagic { magic: 1 }
    ));

    let mut long_length = good.clone();
    long_length[8..12].copy_from_slice(&(good.len() as i32).to_be_bytes());
    assert!(matches!(
        refuse(&mut log, long_length),
        InvalidBatch::LengthMismatch { .. }
    ));

    let truncated = good[..good.len() - 3].to_vec();
    assert!(matches!(
        refuse(&mut log, truncated),
        InvalidBatch::LengthMismatch { .. }
    ));

    let big = vec![7u8; 1000];
    assert!(matches!(
        refuse(&mut log, batch(&[&big], 1000)),
        InvalidBatch::TooLarge { max: 1000, .. }
    ));

    // A valid batch followed by a bad one: the whole request is refused.
    let mut pair = good.clone();
    pair.extend_from_slice(&good[..20]);
    assert!(matches!(
        refuse(&mut log, pair),
        InvalidBatch::TooShort { .. }
    ));

    assert!(matches!(refuse(&mut log, Vec::new()), InvalidBatch::Empty));

    // A batch with no record would take no offset and share the next batch's.
    let no_records = weir_storage::BatchBuilder::new(0).build();
    assert!(matches!(
        refuse(&mut log, no_records),
        InvalidBatch::CountMismatch { count: 0, .. }
    ));
    // Control batches are the broker's to write.
    let mut control = good.clone();
    control[22] |= 0x20;
    let crc = crc32c::crc32c(&control[21..]);
    control[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        refuse(&mut log, control),
        InvalidBatch::ControlBatch
    ));
    // A max timestamp its records do not have would mislead lookups by time.
    let mut lying = good.clone();
    lying[35..43].copy_from_slice(&99_999i64.to_be_bytes());
    let crc = crc32c::crc32c(&lying[21..]);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        refuse(&mut log, lying),
        InvalidBatch::MaxTimestampMismatch {
            declared: 99_999,
            found: 1000
        }
    ));
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(read_all(&log).len(), 2);
    drop(log);
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(read_all(&log).len(), 2, "nothing refused reached the disk");
}

#[test]
fn a_second_opener_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _log = open(dir.path(), LogConfig::default());
    assert!(matches!(
        Log::open(dir.path(), LogConfig::default()),
        Err(LogError::Locked { .. })
    ));
}

#[test]
fn flush_per_message_hands_out_tickets_that_concurrent_appenders_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        flush_messages: Some(1),
        ..LogConfig::default()
    };
    let log = std::sync::Mutex::new(open(dir.path(), config));
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            let log = &log;
            scope.spawn(move || {
                for i in 0..50 {
                    let mut bytes = batch(&[&value(thread * 1000 + i)], 1000);
                    let appended = log
                        .lock()
                        .expect("lock")
                        .append(&mut bytes, 0)
                        .expect("append");
                    let ticket = appended.flush.expect("every append asks for a flush");
                    ticket.wait().expect("fsync");
                }
            });
        }
    });
    let log = log.into_inner().expect("lock");
    assert_eq!(log.recovery_point(), 200);
    assert_eq!(read_all(&log).len(), 200);
}

#[test]
fn flush_every_n_messages_asks_for_a_flush_every_n() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        flush_messages: Some(3),
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    let mut asked = Vec::new();
    for _ in 0..7 {
        let mut bytes = batch(&[b"v"], 1000);
        let appended = log.append(&mut bytes, 0).expect("append");
        asked.push(appended.flush.is_some());
        let _ = appended.durable().expect("durable");
    }
    assert_eq!(asked, [false, false, true, false, false, true, false]);
    assert_eq!(log.recovery_point(), 6);
}

#[test]
fn sealed_segments_are_synced_in_the_background_so_recovery_scans_only_the_active_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments());
    append_values(&mut log, 0, 200, 1000);
    let segments = log.segment_count();
    assert!(segments > 3);
    // A flush covers sealed segments whose background sync may still be running.
    log.flush().expect("flush");
    assert_eq!(log.recovery_point(), 200);
    append_values(&mut log, 200, 1, 1000);
    drop(log);
    let (log, report) = Log::open(dir.path(), small_segments()).expect("reopen");
    assert!(!report.clean_shutdown);
    assert_eq!(report.recovered_segments, 1, "{report:?}");
    assert_eq!(read_all(&log).len(), 201);
}
