//! Topics: names, configs with Kafka's keys, and the metadata file that lists them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_storage::{ConfigError, LogConfig};

/// The longest topic name Kafka allows.
pub const MAX_TOPIC_NAME: usize = 249;

/// What `cleanup.policy` may say. Only `delete` is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
}

/// A topic's effective configuration: the storage keys plus the topic-level ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub log: LogConfig,
    /// `min.insync.replicas`: how many replicas must have a record for acks=all.
    pub min_insync_replicas: i32,
    pub cleanup_policy: CleanupPolicy,
    /// `unclean.leader.election.enable`: whether the controller may elect a replica outside
    /// the ISR when none in it is alive (losing what only the ISR had).
    pub unclean_leader_election: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            log: LogConfig::default(),
            min_insync_replicas: 1,
            cleanup_policy: CleanupPolicy::Delete,
            unclean_leader_election: false,
        }
    }
}

impl TopicConfig {
    /// Sets one key from its Kafka string form.
    ///
    /// # Errors
    /// `UnknownKey` or `InvalidValue`, as the storage layer's.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |expected| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        match key {
            "min.insync.replicas" => {
                self.min_insync_replicas = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&n: &i32| n >= 1)
                    .ok_or_else(|| invalid("a positive number of replicas"))?;
            }
            "unclean.leader.election.enable" => {
                self.unclean_leader_election = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("true or false")),
                };
            }
            "cleanup.policy" => match value.trim() {
                "delete" => self.cleanup_policy = CleanupPolicy::Delete,
                _ => return Err(invalid("\"delete\" (compaction is not supported yet)")),
            },
            _ => self.log.set(key, value)?,
        }
        Ok(())
    }

    /// Every key with its effective value.
    pub fn to_properties(&self) -> BTreeMap<String, String> {
        let mut properties: BTreeMap<String, String> = self
            .log
            .to_properties()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        properties.insert(
            "min.insync.replicas".into(),
            self.min_insync_replicas.to_string(),
        );
        properties.insert("cleanup.policy".into(), "delete".into());
        properties.insert(
            "unclean.leader.election.enable".into(),
            self.unclean_leader_election.to_string(),
        );
        properties
    }

    /// `defaults` with `overrides` applied.
    ///
    /// # Errors
    /// The first bad key or value.
    pub fn with_overrides(
        defaults: &TopicConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, ConfigError> {
        let mut config = defaults.clone();
        for (key, value) in overrides {
            config.set(key, value)?;
        }
        Ok(config)
    }
}

/// Checks a topic name against Kafka's rules: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
///
/// # Errors
/// Why the name is refused, for a person.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > MAX_TOPIC_NAME {
        return Err(format!(
            "topic name is {} characters long; the limit is {MAX_TOPIC_NAME}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} contains {bad:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
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

/// The directory of one partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for good in ["orders", "a.b_c-d", "x", &"n".repeat(249)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/name",
            "ünïcode",
            &"n".repeat(250),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn topic_config_knows_topic_keys_and_refuses_compaction() {
        let mut config = TopicConfig::default();
        config.set("min.insync.replicas", "2").expect("valid");
        config.set("retention.bytes", "1000").expect("valid");
        assert_eq!(config.min_insync_replicas, 2);
        assert_eq!(config.to_properties()["retention.bytes"], "1000");
        assert!(config.set("cleanup.policy", "compact").is_err());
        assert!(!config.unclean_leader_election);
        config
            .set("unclean.leader.election.enable", "true")
            .expect("valid");
        assert!(config.unclean_leader_election);
        assert!(config.set("unclean.leader.election.enable", "yes").is_err());
        assert!(matches!(
            config.set("no.such.key", "1"),
            Err(ConfigError::UnknownKey { .. })
        ));
    }

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
