//! Where partition replicas live below a data directory, and which topic each belongs to.
//!
//! - `<data_dir>/<topic>-<partition>/` holds one replica's log. [`partition_dir`] is the only
//!   way a path is made from a topic name: it refuses any name that is not one plain path
//!   component, so no request can reach outside the data directory.
//! - `partition.metadata` in it names the topic id the directory belongs to (as Kafka's
//!   KIP-516 file). [`claim_partition_dir`] removes a predecessor's directory (a topic deleted
//!   and created again under the same name is a new topic with a new id) before a new log is
//!   opened there, so a deleted topic's data is never served again, even when its deletion
//!   could not complete.
//! - A deleted replica's directory is first renamed to a short hidden name ending in
//!   `.delete`, then removed; [`remove_deleted`] finishes what a crash interrupted.
//!
//! # Guarantees
//! - Every path returned is `data_dir` joined with exactly one normal component.
//! - After [`claim_partition_dir`] returns, the directory exists, its `partition.metadata`
//!   names the given topic id, and both are durable.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::checkpoint;

/// A segment's files: `<base offset, 20 digits>.<suffix>` in its partition's directory.
pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

pub(crate) fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

/// The file naming the topic id a partition directory belongs to.
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// What a replica's directory is renamed to end with before it is removed.
const DELETE_SUFFIX: &str = ".delete";
/// Directories a deletion of an earlier version renamed (`<dir>.<id>-delete`).
const LEGACY_DELETE_SUFFIX: &str = "-delete";
/// The longest file name Linux file systems take.
const MAX_FILE_NAME: usize = 255;
/// How much of a deleted directory's name its hidden name keeps, for a person looking.
const DELETED_NAME_KEEPS: usize = 100;

/// Why a partition directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("topic name {name:?} cannot name a directory: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("partition {0} is negative")]
    InvalidPartition(i32),
    #[error("topic id {0:?} cannot be recorded (empty, or holds a line break)")]
    InvalidTopicId(String),
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} belongs to topic id {found:?}, not {expected:?}, and could not be removed",
        path.display()
    )]
    Predecessor {
        path: PathBuf,
        found: String,
        expected: String,
        #[source]
        source: Box<LayoutError>,
    },
}

fn io_error<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LayoutError + 'a {
    move |source| LayoutError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory of `partition` of `topic` below `data_dir`: `<data_dir>/<topic>-<partition>`.
///
/// # Errors
/// `InvalidName` for a name that is empty, `.` or `..`, holds `/` or NUL, or makes a directory
/// name longer than 255 bytes; `InvalidPartition` for a negative partition.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> Result<PathBuf, LayoutError> {
    let invalid = |reason| LayoutError::InvalidName {
        name: topic.to_string(),
        reason,
    };
    if topic.is_empty() {
        return Err(invalid("it is empty"));
    }
    if topic == "." || topic == ".." {
        return Err(invalid("it is a relative path"));
    }
    if topic.contains(['/', '\0']) {
        return Err(invalid("it holds '/' or NUL"));
    }
    if partition < 0 {
        return Err(LayoutError::InvalidPartition(partition));
    }
    let name = format!("{topic}-{partition}");
    if name.len() > MAX_FILE_NAME {
        return Err(invalid("the directory name would be longer than 255 bytes"));
    }
    let mut components = Path::new(&name).components();
    let single = matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    );
    if !single {
        return Err(invalid("it is not a single plain path component"));
    }
    let dir = data_dir.join(&name);
    assert_eq!(
        dir.parent(),
        Some(data_dir),
        "a partition directory is one component below the data directory"
    );
    Ok(dir)
}

/// Makes `partition` of `topic` below `data_dir` a directory of topic `topic_id`: created
/// (with its `partition.metadata`) when missing, adopted when it has no metadata file (made by
/// a version before topic ids were recorded), kept when it names the same id, and replaced by
/// an empty one when it names another (a predecessor's data, never to be served again).
///
/// # Errors
/// As [`partition_dir`]; `InvalidTopicId`; `Predecessor` when a predecessor's directory
/// cannot be removed; `Io` naming the step.
pub fn claim_partition_dir(
    data_dir: &Path,
    topic: &str,
    partition: i32,
    topic_id: &str,
) -> Result<PathBuf, LayoutError> {
    if topic_id.is_empty() || topic_id.contains(['\n', '\r']) {
        return Err(LayoutError::InvalidTopicId(topic_id.to_string()));
    }
    let dir = partition_dir(data_dir, topic, partition)?;
    match read_topic_id(&dir)? {
        Recorded::NoDirectory => {}
        Recorded::Id(found) if found == topic_id => return Ok(dir),
        Recorded::Missing => {
            tracing::info!(dir = %dir.display(), topic_id, "recording the topic id of a directory made before ids were recorded");
            write_topic_id(&dir, topic_id)?;
            return Ok(dir);
        }
        Recorded::Id(found) => {
            tracing::warn!(dir = %dir.display(), found, expected = topic_id, "removing a deleted topic's directory before a new topic of the same name uses it");
            delete_dir(data_dir, &dir).map_err(|source| LayoutError::Predecessor {
                path: dir.clone(),
                found,
                expected: topic_id.to_string(),
                source: Box::new(source),
            })?;
        }
    }
    fs::create_dir(&dir).map_err(io_error("create partition directory", &dir))?;
    write_topic_id(&dir, topic_id)?;
    checkpoint::sync_dir(data_dir).map_err(io_error("sync data directory", data_dir))?;
    Ok(dir)
}

/// The topic id recorded in a partition directory, if it exists and records one.
///
/// # Errors
/// `Io` when the file exists but cannot be read.
pub fn recorded_topic_id(dir: &Path) -> Result<Option<String>, LayoutError> {
    Ok(match read_topic_id(dir)? {
        Recorded::Id(id) => Some(id),
        Recorded::NoDirectory | Recorded::Missing => None,
    })
}

/// Deletes the directory of `partition` of `topic`: renamed to a short hidden name first (so
/// that a crash leaves only a name [`remove_deleted`] removes at the next start), then
/// removed. Returns false when there was no such directory.
///
/// # Errors
/// As [`partition_dir`]; `Io` naming the step that failed (the directory is then either still
/// in place, to be replaced by [`claim_partition_dir`], or renamed, to be removed at the next
/// start).
pub fn delete_partition_dir(
    data_dir: &Path,
    topic: &str,
    partition: i32,
) -> Result<bool, LayoutError> {
    let dir = partition_dir(data_dir, topic, partition)?;
    if !dir.exists() {
        return Ok(false);
    }
    delete_dir(data_dir, &dir)?;
    Ok(true)
}

/// Removes the directories a deletion renamed but did not get to remove; returns how many.
///
/// # Errors
/// `Io` naming the directory.
pub fn remove_deleted(data_dir: &Path) -> Result<usize, LayoutError> {
    let mut removed = 0;
    for entry in fs::read_dir(data_dir).map_err(io_error("list data directory", data_dir))? {
        let entry = entry.map_err(io_error("list data directory", data_dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let doomed = name.ends_with(DELETE_SUFFIX) || name.ends_with(LEGACY_DELETE_SUFFIX);
        if doomed && entry.path().is_dir() {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(io_error("remove deleted directory", &path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

enum Recorded {
    NoDirectory,
    Missing,
    Id(String),
}

fn read_topic_id(dir: &Path) -> Result<Recorded, LayoutError> {
    if !dir.exists() {
        return Ok(Recorded::NoDirectory);
    }
    let path = dir.join(PARTITION_METADATA_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recorded::Missing),
        Err(source) => {
            return Err(LayoutError::Io {
                step: "read",
                path,
                source,
            });
        }
    };
    let id = text
        .lines()
        .find_map(|line| line.strip_prefix("topic_id:"))
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty());
    // A file without an id (torn by a crash before its rename: impossible with the atomic
    // write, but cheap to cover) is as good as none.
    Ok(id.map_or(Recorded::Missing, Recorded::Id))
}

fn write_topic_id(dir: &Path, topic_id: &str) -> Result<(), LayoutError> {
    checkpoint::write(
        dir,
        PARTITION_METADATA_FILE,
        &format!("version: 0\ntopic_id: {topic_id}\n"),
    )
    .map_err(|e| match e {
        crate::LogError::WriteCheckpoint { path, source } => LayoutError::Io {
            step: "write",
            path,
            source,
        },
        other => LayoutError::Io {
            step: "write",
            path: dir.join(PARTITION_METADATA_FILE),
            source: io::Error::other(other.to_string()),
        },
    })
}

/// Renames `dir` to a hidden name unique to this deletion, makes the rename durable, then
/// removes it.
fn delete_dir(data_dir: &Path, dir: &Path) -> Result<(), LayoutError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kept: String = name.chars().take(DELETED_NAME_KEEPS).collect();
    let doomed = data_dir.join(format!(
        ".{kept}.{}{DELETE_SUFFIX}",
        uuid::Uuid::new_v4().simple()
    ));
    debug_assert!(doomed.file_name().is_some_and(|n| n.len() <= MAX_FILE_NAME));
    fs::rename(dir, &doomed).map_err(io_error("rename for deletion", dir))?;
    checkpoint::sync_dir(data_dir).map_err(io_error("sync data directory", data_dir))?;
    fs::remove_dir_all(&doomed).map_err(io_error("remove", &doomed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_plain_component_below_the_data_directory_is_ever_named() {
        let data = Path::new("/var/lib/weir");
        assert_eq!(
            partition_dir(data, "orders", 3).expect("plain name"),
            Path::new("/var/lib/weir/orders-3")
        );
        assert!(partition_dir(data, "...", 0).is_ok(), "dots are a name");
        for hostile in [
            "",
            ".",
            "..",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "nul\0byte",
        ] {
            assert!(
                partition_dir(data, hostile, 0).is_err(),
                "{hostile:?} accepted"
            );
        }
        assert!(partition_dir(data, &"n".repeat(249), 0).is_ok());
        assert!(partition_dir(data, &"n".repeat(255), 0).is_err());
        assert!(matches!(
            partition_dir(data, "orders", -1),
            Err(LayoutError::InvalidPartition(-1))
        ));
    }

    #[test]
    fn a_new_topic_of_an_old_name_never_sees_its_predecessors_data() {
        let data = tempfile::tempdir().expect("tempdir");
        let name = "t".repeat(249);
        let dir = claim_partition_dir(data.path(), &name, 7, "old-id").expect("claim");
        fs::write(dir.join("00000000000000000000.log"), b"old records").expect("write");
        assert_eq!(
            claim_partition_dir(data.path(), &name, 7, "old-id").expect("same id"),
            dir
        );
        assert!(dir.join("00000000000000000000.log").exists(), "kept");

        let dir = claim_partition_dir(data.path(), &name, 7, "new-id").expect("claim again");
        assert!(!dir.join("00000000000000000000.log").exists(), "replaced");
        assert_eq!(
            recorded_topic_id(&dir).expect("read").as_deref(),
            Some("new-id")
        );
        let names: Vec<_> = fs::read_dir(data.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "nothing left behind: {names:?}");
    }

    #[test]
    fn a_directory_from_before_ids_is_adopted() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = data.path().join("orders-0");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("00000000000000000000.log"), b"records").expect("write");
        claim_partition_dir(data.path(), "orders", 0, "id-1").expect("claim");
        assert!(dir.join("00000000000000000000.log").exists());
        assert_eq!(
            recorded_topic_id(&dir).expect("read").as_deref(),
            Some("id-1")
        );
    }

    #[test]
    fn deletion_of_a_longest_name_completes_and_leftovers_are_removed_at_start() {
        let data = tempfile::tempdir().expect("tempdir");
        let name = "x".repeat(249);
        let dir = claim_partition_dir(data.path(), &name, 9999, "id").expect("claim");
        fs::write(dir.join("00000000000000000000.log"), b"records").expect("write");
        assert!(delete_partition_dir(data.path(), &name, 9999).expect("delete"));
        assert!(!dir.exists());
        assert!(!delete_partition_dir(data.path(), &name, 9999).expect("again"));

        // What a crash between the rename and the removal leaves.
        fs::create_dir(data.path().join(".orders-0.abc.delete")).expect("mkdir");
        fs::create_dir(data.path().join("orders-1.123-delete")).expect("mkdir");
        fs::create_dir(data.path().join("orders-2")).expect("mkdir");
        assert_eq!(remove_deleted(data.path()).expect("remove"), 2);
        assert!(data.path().join("orders-2").exists());
    }

    #[test]
    fn deletion_never_follows_a_hostile_name_outside() {
        let parent = tempfile::tempdir().expect("tempdir");
        let data = parent.path().join("data");
        fs::create_dir(&data).expect("mkdir");
        let victim = parent.path().join("x-0");
        fs::create_dir(&victim).expect("mkdir");
        fs::write(victim.join("precious"), b"keep me").expect("write");
        assert!(delete_partition_dir(&data, "../x", 0).is_err());
        assert!(claim_partition_dir(&data, "../x", 0, "id").is_err());
        assert!(victim.join("precious").exists());
    }
}
