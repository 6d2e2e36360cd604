//! A log on a disk that is full: every failure is an error, never a SIGBUS from a memory-mapped
//! page that has no disk block behind it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use weir_storage::LogConfig;

use crate::{append_values, batch, open, read_all};

/// A tmpfs of `mib` MiB, unmounted when dropped; `None` where mounting is not allowed (except
/// in CI, which runs as root).
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status();
        if status.is_ok_and(|s| s.success()) {
            return Some(SmallDisk { path, _dir: dir });
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (run as root)"
        );
        eprintln!("skipped: cannot mount a tmpfs here");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes a file until the disk has no block left.
fn fill(dir: &Path) {
    let mut filler = std::fs::File::create(dir.join("filler")).expect("filler");
    let chunk = vec![0xAB_u8; 4096];
    loop {
        match filler.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => return,
            Err(e) => panic!("fill: {e}"),
        }
    }
}

#[test]
fn closing_a_log_on_a_full_disk_touches_only_reserved_index_pages() {
    let Some(disk) = SmallDisk::mount(4) else {
        return;
    };
    let dir = disk.path.join("log");
    let mut log = open(&dir, LogConfig::default());
    // Too little for an index entry: the first entry of the time index is written by the
    // close (the seal), onto a page no append has touched.
    append_values(&mut log, 0, 1, 1000);
    fill(&disk.path);
    log.close()
        .expect("closes cleanly: the pages it writes were reserved before");
    let log = open(&dir, LogConfig::default());
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn an_append_on_a_full_disk_fails_whole_and_the_log_stays_valid() {
    let Some(disk) = SmallDisk::mount(4) else {
        return;
    };
    let dir = disk.path.join("log");
    let mut log = open(&dir, LogConfig::default());
    append_values(&mut log, 0, 10, 1000);
    fill(&disk.path);
    let mut failures = 0;
    let value = vec![b'v'; 8192];
    for _ in 0..20 {
        let mut bytes = batch(&[&value], 2000);
        match log.append(&mut bytes, 0) {
            Ok(appended) => drop(appended),
            Err(e) => {
                let text = weir_proto::error_chain(&e);
                assert!(text.contains("No space left on device"), "{text}");
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "the disk was full");
    let end = log.log_end_offset();
    std::fs::remove_file(disk.path.join("filler")).expect("free space");
    log.close().expect("close");
    let log = open(&dir, LogConfig::default());
    assert_eq!(
        log.log_end_offset(),
        end,
        "nothing half-written became visible"
    );
}
