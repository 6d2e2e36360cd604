//! Topics as this broker serves them and its replicas of them, the controller's typed topic
//! config turned into the storage engine's, and the metadata file of single-node brokers from
//! before the controller.
//! Names and config keys are checked by the controller (`weir_controller::topic_config`),
//! the one authority on them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_proto::{Reason, v1};
use weir_storage::LogConfig;

use crate::failure::Failure;
use crate::partition::Partition;

pub use weir_controller::topic_config::{ConfigError, TopicConfig, is_internal, validate_name};

/// A topic as served: replaced whole when it changes.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: String,
    pub config: TopicConfig,
    /// Only the keys set on this topic.
    pub overrides: BTreeMap<String, String>,
    /// Every partition as the controller decided it (replicas, leader, epochs, ISR).
    pub layout: Vec<v1::ClusterPartition>,
    /// The replicas this broker holds, by partition index.
    pub replicas: BTreeMap<i32, Arc<Partition>>,
    /// The replicas this broker should hold but could not open, with why: requests for them
    /// fail with the cause, and the broker is not ready while any is here.
    pub failed: BTreeMap<i32, String>,
    /// Override keys this broker could not apply (unknown here, or a value it refuses), with
    /// why; the topic runs with the default for each, and every other override applies.
    pub unapplied: BTreeMap<String, String>,
}

impl Topic {
    pub fn partition_count(&self) -> usize {
        self.layout.len()
    }
}

/// This broker's replica of partition `index` of `topic`.
///
/// # Errors
/// `UnknownPartition`; `StorageError` when this broker could not open its replica;
/// `NotLeader` when the partition exists but lives on other brokers.
pub fn local_replica(topic: &Topic, index: i32) -> Result<Arc<Partition>, Failure> {
    if let Some(replica) = topic.replicas.get(&index) {
        return Ok(Arc::clone(replica));
    }
    if let Some(why) = topic.failed.get(&index) {
        return Err(Failure::new(
            Reason::StorageError,
            format!(
                "this broker could not open its replica of {}-{index}: {why}",
                topic.name
            ),
        ));
    }
    match usize::try_from(index)
        .ok()
        .and_then(|i| topic.layout.get(i))
    {
        Some(p) => Err(Failure::new(
            Reason::NotLeader,
            format!(
                "this broker holds no replica of {}-{index}; its leader is {}",
                topic.name,
                p.leader
                    .map_or_else(|| "none now".to_string(), |l| format!("broker {l}"))
            ),
        )),
        None => Err(Failure::new(
            Reason::UnknownPartition,
            format!(
                "topic {:?} has {} partitions; there is no partition {index}",
                topic.name,
                topic.partition_count()
            ),
        )),
    }
}

/// The storage engine's settings of a topic.
pub fn log_config(config: &TopicConfig) -> LogConfig {
    LogConfig {
        segment_size: config.segment_size,
        segment_age: config.segment_age,
        retention_age: config.retention_age,
        retention_size: config.retention_size,
        max_batch_size: config.max_batch_size,
        index_interval: config.index_interval,
        index_capacity: config.index_capacity,
        flush_messages: config.flush_messages,
        flush_interval: config.flush_interval,
    }
}

/// A topic as the metadata file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Unique per creation, so a topic deleted and created again is a new topic.
    pub id: String,
    pub partitions: i32,
    /// Only the keys set on this topic; the rest come from the broker's defaults.
    pub config: BTreeMap<String, String>,
}

/// The topics a broker holds: `<data_dir>/metadata.json`, replaced atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub topics: BTreeMap<String, TopicRecord>,
    /// The next producer id to give an idempotent producer.
    #[serde(default)]
    pub next_producer_id: i64,
}

const METADATA_FILE: &str = "metadata.json";

/// Why the metadata file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid metadata: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    #[error("write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Metadata {
    /// Loads `<data_dir>/metadata.json`; empty when it does not exist yet.
    ///
    /// # Errors
    /// `Read` or `Malformed`.
    pub fn load(data_dir: &Path) -> Result<Metadata, MetadataError> {
        let path = data_dir.join(METADATA_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| MetadataError::Malformed {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Metadata::default()),
            Err(source) => Err(MetadataError::Read { path, source }),
        }
    }

    /// Writes the file atomically: temporary file, fsync, rename, fsync of the directory.
    ///
    /// # Errors
    /// `Write`.
    pub fn save(&self, data_dir: &Path) -> Result<(), MetadataError> {
        use std::io::Write;
        let path = data_dir.join(METADATA_FILE);
        let temporary = data_dir.join(format!("{METADATA_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).expect("metadata serializes");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(data_dir)?.sync_all()
        };
        write().map_err(|source| MetadataError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_survives_a_save_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Metadata::load(dir.path()).expect("empty"),
            Metadata::default()
        );
        let mut metadata = Metadata::default();
        metadata.topics.insert(
            "orders".into(),
            TopicRecord {
                id: "abc".into(),
                partitions: 3,
                config: BTreeMap::from([("retention.ms".into(), "1000".into())]),
            },
        );
        metadata.save(dir.path()).expect("save");
        assert_eq!(Metadata::load(dir.path()).expect("load"), metadata);
        std::fs::write(dir.path().join(METADATA_FILE), "{ not json").expect("write");
        assert!(matches!(
            Metadata::load(dir.path()),
            Err(MetadataError::Malformed { .. })
        ));
    }
}
