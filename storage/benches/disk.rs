//! What the storage benchmarks share: where files go, how batches are made, and the plain
//! file writer that stands for the disk's own rate.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use weir_storage::{Record, encode_batch};

pub const SEGMENT_SIZE: u64 = 256 << 20;

pub fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("WEIR_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(PathBuf::from(dir)).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Flush {
    Os,
    EveryAppend,
}

impl Flush {
    pub fn name(self) -> &'static str {
        match self {
            Flush::Os => "os",
            Flush::EveryAppend => "every-append",
        }
    }
}

pub fn encoded_batch(record_size: usize, records: usize) -> Vec<u8> {
    let value = vec![b'v'; record_size];
    let records: Vec<Record<'_>> = (0..records)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + i as i64,
            value: Some(&value),
            ..Record::default()
        })
        .collect();
    encode_batch(0, &records)
}

/// Plain files written like a log's segments. With `sync_on_rotate`, each full file is
/// fsynced on a background thread as the log does when a segment rolls.
pub struct PlainFiles {
    sync_on_rotate: bool,
    syncing: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
    file: File,
    written: u64,
    created: usize,
    names: std::collections::VecDeque<PathBuf>,
}

impl PlainFiles {
    pub fn new(dir: &std::path::Path, sync_on_rotate: bool) -> Self {
        let path = dir.join("00000.plain");
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        PlainFiles {
            sync_on_rotate,
            syncing: None,
            dir: dir.to_path_buf(),
            file,
            written: 0,
            created: 1,
            names: [path].into(),
        }
    }

    pub fn write(&mut self, bytes: &[u8], sync: bool) {
        if self.written + bytes.len() as u64 > SEGMENT_SIZE {
            let path = self.dir.join(format!("{:05}.plain", self.created));
            self.created += 1;
            let full = std::mem::replace(
                &mut self.file,
                OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(&path)
                    .expect("open"),
            );
            if self.sync_on_rotate {
                let previous = self.syncing.take();
                self.syncing = Some(std::thread::spawn(move || {
                    if let Some(previous) = previous {
                        let _ = previous.join();
                    }
                    full.sync_data().expect("fdatasync");
                }));
            }
            self.names.push_back(path);
            self.written = 0;
        }
        self.file.write_all(bytes).expect("write");
        if sync {
            self.file.sync_data().expect("fdatasync");
        }
        self.written += bytes.len() as u64;
    }

    /// Keeps the same bytes as the log's `retention.bytes = 2 * SEGMENT_SIZE`.
    pub fn apply_retention(&mut self) {
        while self.names.len() > 3 {
            let oldest = self.names.pop_front().expect("more than three files");
            std::fs::remove_file(oldest).expect("remove");
        }
    }
}
