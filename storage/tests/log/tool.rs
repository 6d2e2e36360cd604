//! The `weir-storage` tool on real directories: what it prints, its exit codes, and that it
//! leaves the directory exactly as it found it.

use std::path::Path;
use std::process::{Command, Output};

use crate::{append_values, open, small_segments};

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir-storage"))
        .args(args)
        .arg(dir)
        .output()
        .expect("run weir-storage")
}

/// Every file name, length and content hash in `dir`, to show nothing changed.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn dump_prints_batches_and_records_and_exits_zero_on_a_healthy_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments());
    append_values(&mut log, 0, 120, 1000);
    log.close().expect("close");
    let before = snapshot(dir.path());

    let output = run(&["dump", "--records"], dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("batch offsets=0..=0 position=0"),
        "{stdout}"
    );
    assert!(stdout.contains("value=\"value-00000119\""), "{stdout}");
    assert!(stdout.contains("120 records"), "{stdout}");
    assert!(stdout.contains("clean shutdown: yes"), "{stdout}");
    assert!(!stdout.contains("PROBLEM"), "{stdout}");
    assert_eq!(snapshot(dir.path()), before, "dump wrote to the directory");
}

#[test]
fn verify_reports_damage_with_exit_code_one_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments());
    append_values(&mut log, 0, 120, 1000);
    drop(log);
    let first = dir.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[200] ^= 0xFF;
    std::fs::write(&first, bytes).expect("write");
    let before = snapshot(dir.path());

    let output = run(&["verify"], dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("PROBLEM") && stdout.contains("00000000000000000000.log"),
        "{stdout}"
    );
    assert!(stdout.contains("clean shutdown: no"), "{stdout}");
    assert_eq!(
        snapshot(dir.path()),
        before,
        "verify wrote to the directory"
    );
}

#[test]
fn a_missing_directory_is_one_clear_line_and_exit_code_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run(&["verify"], &dir.path().join("nope"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("weir-storage: log directory") && stderr.contains("No such file"),
        "{stderr}"
    );
}

#[test]
fn an_empty_segment_just_rolled_before_a_crash_is_not_a_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments());
    append_values(&mut log, 0, 10, 1000);
    log.roll().expect("roll");
    drop(log);
    let output = run(&["verify"], dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
}

#[test]
fn an_active_index_reserved_in_chunks_before_a_crash_is_not_a_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_segments());
    append_values(&mut log, 0, 30, 1000);
    // Dropped without a close: the active segment's indexes keep their reserved chunk.
    drop(log);
    let output = run(&["verify"], dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("preallocated slots"), "{stdout}");
}
