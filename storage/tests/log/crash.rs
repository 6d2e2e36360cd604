//! A real child process appends with an fsync per append and reports each acknowledged range;
//! the test kills it with SIGKILL at a random moment, reopens the log and checks that every
//! acknowledged record is there, that nothing after a torn byte survived, and that the indexes
//! agree with the log. Three rounds, each child continuing the log the last one left.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_storage::inspect::inspect;
use weir_storage::{Log, LogConfig, Record, encode_batch};

const CHILD_DIR: &str = "WEIR_CRASH_CHILD_DIR";

fn crash_config() -> LogConfig {
    LogConfig {
        segment_size: 256 * 1024,
        index_interval: 1024,
        flush_messages: Some(1),
        ..LogConfig::default()
    }
}

/// The value of the record at `offset`, so any record read back can be checked on its own.
fn value_at(offset: i64) -> Vec<u8> {
    let mut v = format!("{offset:012}-").into_bytes();
    v.resize(v.len() + (offset % 300) as usize, b'x');
    v
}

/// The child: appends until it is killed. Run only by `acknowledged_records_survive_sigkill`.
#[test]
#[ignore = "entry point of the child process that the SIGKILL test starts"]
fn crash_child_appends_until_killed() {
    let dir =
        std::env::var(CHILD_DIR).expect("started by the crash test with WEIR_CRASH_CHILD_DIR");
    let (mut log, _) = Log::open(&dir, crash_config()).expect("child opens the log");
    let mut stdout = std::io::stdout().lock();
    let mut round = 0u64;
    loop {
        round += 1;
        let first = log.log_end_offset();
        // Batches from 1 to 200 records, some of them large enough to be torn by the kill.
        let count = 1 + (round * 37 % 200) as i64;
        let values: Vec<Vec<u8>> = (first..first + count).map(value_at).collect();
        let records: Vec<Record<'_>> = values
            .iter()
            .map(|v| Record {
                timestamp: 1_000 + first,
                value: Some(v),
                ..Record::default()
            })
            .collect();
        let mut bytes = encode_batch(0, &records);
        let appended = log
            .append(&mut bytes, 1)
            .expect("append")
            .durable()
            .expect("fsync");
        writeln!(stdout, "{} {}", appended.first_offset, appended.last_offset).expect("report");
        stdout.flush().expect("report");
    }
}

/// Runs one child until it has acknowledged `acks` appends (or 20 s pass), then kills it.
/// Returns the last acknowledged offset.
fn run_child_and_kill(dir: &Path, acks: usize) -> Option<i64> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash::crash_child_appends_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut fields = line
                .split_whitespace()
                .filter_map(|f| f.parse::<i64>().ok());
            if let (Some(first), Some(last)) = (fields.next(), fields.next())
                && sender.send((first, last)).is_err()
            {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_acknowledged = None;
    let mut expected_first = None;
    for _ in 0..acks {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match receiver.recv_timeout(left) {
            Ok((first, last)) => {
                if let Some(expected) = expected_first {
                    assert_eq!(first, expected, "acknowledged ranges are contiguous");
                }
                expected_first = Some(last + 1);
                last_acknowledged = Some(last);
            }
            Err(_) => break,
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    // Whatever the child acknowledged before it died counts too.
    reader.join().expect("reader thread");
    while let Ok((_, last)) = receiver.try_recv() {
        last_acknowledged = Some(last);
    }
    last_acknowledged
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acknowledged = -1i64;
    let seed = std::process::id() as usize;
    for round in 0..3 {
        let acks = 50 + (seed + round * 131) % 300;
        if let Some(last) = run_child_and_kill(dir.path(), acks) {
            acknowledged = acknowledged.max(last);
        }
        assert!(
            acknowledged >= 0,
            "round {round}: the child acknowledged nothing"
        );

        // Before recovery the only damage allowed is a torn tail in the newest segment: an
        // index never points past what was written.
        let before = inspect(dir.path()).expect("inspect after the kill");
        let newest = before
            .segments
            .last()
            .map(|s| s.path.display().to_string())
            .unwrap_or_default();
        for problem in before.problems() {
            assert!(
                problem.starts_with(&newest) && problem.contains("not a whole batch"),
                "round {round}: {problem}"
            );
        }

        let (log, report) = Log::open(dir.path(), crash_config()).expect("reopen after SIGKILL");
        assert!(!report.clean_shutdown);
        assert!(
            log.log_end_offset() > acknowledged,
            "round {round}: acknowledged {acknowledged}, log ends at {}",
            log.log_end_offset()
        );
        let mut offset = 0;
        while let Some(slice) = log.read(offset, 1 << 20, None).expect("read") {
            for batch in weir_storage::batch::batches(&slice.bytes) {
                let (_, batch) = batch.expect("valid batch");
                for record in batch.records().expect("records") {
                    assert_eq!(
                        record.offset, offset,
                        "round {round}: offsets are contiguous"
                    );
                    assert_eq!(
                        record.value,
                        Some(&value_at(offset)[..]),
                        "round {round}: record {offset}"
                    );
                    offset += 1;
                }
            }
        }
        assert_eq!(offset, log.log_end_offset());
        drop(log);
        let after = inspect(dir.path()).expect("inspect after recovery");
        assert_eq!(
            after.problems(),
            Vec::<String>::new(),
            "round {round}: indexes agree with the log after recovery"
        );
    }
}
