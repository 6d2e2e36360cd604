//! A read-only look at a log directory, for someone debugging a disk: every batch verified,
//! every index entry checked against the batch it names. Nothing is written, locked or
//! repaired, so it is safe on a directory a broker has open or one that needs recovery.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use std::os::unix::fs::FileExt;

use crate::batch::{BatchHeader, HEADER_LEN};
use crate::checkpoint;
use crate::epoch;
use crate::error::LogError;
use crate::index::{Entry, OffsetEntry, TimeEntry};
use crate::layout::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, file_name};
use crate::log::{CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_FILE, segment_bases};
use crate::scan::ScanEnd;

/// What [`inspect`] found in a log directory.
#[derive(Debug, Clone)]
pub struct DirReport {
    pub dir: PathBuf,
    pub clean_shutdown: bool,
    pub recovery_point: Option<String>,
    pub leader_epochs: Option<String>,
    pub segments: Vec<SegmentReport>,
}

impl DirReport {
    /// Every problem found, each prefixed with its segment.
    pub fn problems(&self) -> Vec<String> {
        self.segments
            .iter()
            .flat_map(|s| {
                s.problems
                    .iter()
                    .map(move |p| format!("{}: {p}", s.path.display()))
            })
            .collect()
    }
}

/// What [`inspect`] found in one segment.
#[derive(Debug, Clone)]
pub struct SegmentReport {
    pub path: PathBuf,
    pub base_offset: i64,
    pub file_size: u64,
    /// Batches with whole, valid bytes, with their positions.
    pub batches: Vec<(u64, BatchHeader)>,
    pub offset_index_entries: usize,
    pub time_index_entries: usize,
    /// Zeroed entries at the end of an index reserved for appends (not a problem).
    pub preallocated_slots: usize,
    pub problems: Vec<String>,
}

/// Reads and checks every segment of the log in `dir`.
///
/// # Errors
/// `Directory`, `ReadSegment`, `ReadCheckpoint` when files cannot be read at all; damage to
/// their contents is reported in the returned [`DirReport`], not as an error.
pub fn inspect(dir: &Path) -> Result<DirReport, LogError> {
    let mut report = DirReport {
        dir: dir.to_path_buf(),
        clean_shutdown: dir.join(CLEAN_SHUTDOWN_FILE).exists(),
        recovery_point: checkpoint::read(dir, RECOVERY_POINT_FILE)?.map(|t| t.trim().to_string()),
        leader_epochs: checkpoint::read(dir, epoch::FILE_NAME)?,
        segments: Vec::new(),
    };
    let bases = segment_bases(dir)?;
    let mut expected_next: Option<i64> = None;
    for base in bases {
        let segment = inspect_segment(dir, base, expected_next)?;
        expected_next = segment
            .batches
            .last()
            .map(|(_, h)| h.next_offset())
            .or(Some(base));
        report.segments.push(segment);
    }
    Ok(report)
}

fn inspect_segment(
    dir: &Path,
    base: i64,
    expected_first: Option<i64>,
) -> Result<SegmentReport, LogError> {
    let path = dir.join(file_name(base, LOG_SUFFIX));
    let read_error = |source| LogError::ReadSegment {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(read_error)?;
    let file_size = file.metadata().map_err(read_error)?.len();
    let mut problems = Vec::new();
    let mut batches = Vec::new();
    let mut position = 0;
    loop {
        let scanned =
            crate::scan::scan_file(&file, file_size, position, true).map_err(read_error)?;
        batches.extend(scanned.batches);
        match scanned.end {
            ScanEnd::Clean => break,
            ScanEnd::Torn { position } => {
                problems.push(format!(
                    "bytes {position}..{file_size} are not a whole batch (torn write or junk)"
                ));
                break;
            }
            ScanEnd::Invalid {
                position: at,
                reason,
            } => {
                problems.push(format!("invalid batch at byte {at}: {reason}"));
                // When only the contents are bad, the header still says where the next batch
                // starts: keep going, so one bad batch does not hide the rest of the segment.
                let mut header = [0u8; HEADER_LEN];
                let readable = file.read_exact_at(&mut header, at).is_ok();
                match BatchHeader::parse(&header) {
                    Ok(h) if readable && at + h.size() as u64 <= file_size => {
                        batches.push((at, h));
                        position = at + h.size() as u64;
                    }
                    _ => break,
                }
            }
        }
    }
    if let (Some(expected), Some((_, first))) = (expected_first, batches.first())
        && first.base_offset != expected
    {
        problems.push(format!(
            "first offset {} does not follow the previous segment's end {expected}",
            first.base_offset
        ));
    }
    let mut previous_next = base;
    for (position, header) in &batches {
        if header.base_offset < previous_next {
            problems.push(format!(
                "batch at byte {position} starts at offset {} before {previous_next}",
                header.base_offset
            ));
        }
        previous_next = header.next_offset();
    }

    let (offset_entries, offset_slots) = read_entries::<OffsetEntry>(
        &dir.join(file_name(base, INDEX_SUFFIX)),
        &mut problems,
        "offset index",
    );
    let (time_entries, time_slots) = read_entries::<TimeEntry>(
        &dir.join(file_name(base, TIME_INDEX_SUFFIX)),
        &mut problems,
        "time index",
    );
    for (i, entry) in offset_entries.iter().enumerate() {
        let offset = base + i64::from(entry.relative_offset);
        match batches.binary_search_by_key(&u64::from(entry.position), |&(p, _)| p) {
            Ok(at) if batches[at].1.last_offset() == offset => {}
            _ => problems.push(format!(
                "offset index entry {i} (offset {offset} at byte {}) names no batch",
                entry.position
            )),
        }
    }
    for (i, entry) in time_entries.iter().enumerate() {
        let offset = base + i64::from(entry.relative_offset);
        let known = batches
            .iter()
            .any(|(_, h)| h.last_offset() == offset && h.max_timestamp <= entry.timestamp);
        if !known {
            problems.push(format!(
                "time index entry {i} (timestamp {} at offset {offset}) names no batch",
                entry.timestamp
            ));
        }
    }
    Ok(SegmentReport {
        path,
        base_offset: base,
        file_size,
        batches,
        offset_index_entries: offset_entries.len(),
        time_index_entries: time_entries.len(),
        preallocated_slots: offset_slots + time_slots,
        problems,
    })
}

/// The entries of an index file, without its trailing zeroed slots (and their count).
fn read_entries<E: Entry>(path: &Path, problems: &mut Vec<String>, what: &str) -> (Vec<E>, usize) {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            problems.push(format!("{what} {}: {e}", path.display()));
            return (Vec::new(), 0);
        }
    };
    let tail = &bytes[bytes.len() - bytes.len() % E::SIZE..];
    // An active index is reserved on disk in page-sized chunks: a zeroed tail shorter than
    // an entry is reserved space, not damage.
    if !tail.iter().all(|&b| b == 0) {
        problems.push(format!(
            "{what} is {} bytes, not a whole number of {}-byte entries",
            bytes.len(),
            E::SIZE
        ));
    }
    let mut entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::read).collect();
    let mut slots = 0;
    // An all-zero entry is never written: the first batch of a segment is not indexed, so
    // relative offset 0 never gets an entry. Zeroes are preallocated space, even at the start.
    while !entries.is_empty()
        && bytes[(entries.len() - 1) * E::SIZE..entries.len() * E::SIZE]
            .iter()
            .all(|&b| b == 0)
    {
        entries.pop();
        slots += 1;
    }
    for pair in entries.windows(2) {
        if pair[0].key() >= pair[1].key() {
            problems.push(format!(
                "{what} entries out of order: {:?} then {:?}",
                pair[0], pair[1]
            ));
            break;
        }
    }
    (entries, slots)
}
