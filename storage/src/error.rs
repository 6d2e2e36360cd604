//! The errors a caller of the log matches on.

use std::io;
use std::path::PathBuf;

use crate::batch::InvalidBatch;

/// What went wrong in a [`crate::Log`] operation.
///
/// Expected outcomes (`InvalidBatch`, `OffsetOutOfRange`, `Corrupt`) are values a broker maps
/// to a client error; the I/O variants name the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid batch at byte {position} of the request")]
    InvalidBatch {
        position: usize,
        #[source]
        source: InvalidBatch,
    },
    #[error(
        "offset {requested} is out of range: the log holds [{log_start_offset}, {log_end_offset})"
    )]
    OffsetOutOfRange {
        requested: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("corrupt batch in {} at byte {position}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        #[source]
        source: InvalidBatch,
    },
    #[error("replicated batch starts at offset {found} but the log ends at {expected}")]
    NonContiguousAppend { expected: i64, found: i64 },
    #[error("log directory {} is in use by another process", path.display())]
    Locked {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open segment {}", path.display())]
    OpenSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write segment {}", path.display())]
    WriteSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read segment {}", path.display())]
    ReadSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sync segment {}", path.display())]
    SyncSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("truncate segment {}", path.display())]
    TruncateSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("delete segment {}", path.display())]
    DeleteSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reserve disk space for index {}", path.display())]
    ReserveIndex {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open index {}", path.display())]
    OpenIndex {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write checkpoint {}", path.display())]
    WriteCheckpoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read checkpoint {}", path.display())]
    ReadCheckpoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint {} is malformed: {reason}", path.display())]
    MalformedCheckpoint { path: PathBuf, reason: String },
    #[error("log directory {}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
