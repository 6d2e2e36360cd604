//! Topic names and topic configs, with Kafka's keys, values and bounds: the one definition the
//! controller validates every request against, whichever door it came through (a broker's
//! Admin API, the operator's `Topic` resources), and that brokers apply.
//!
//! - [`validate_name`]: Kafka's rules for topic names.
//! - [`TopicConfig`]: a topic's effective configuration, typed. [`TopicConfig::set`] parses
//!   one key; [`validate_overrides`] checks a whole set strictly (the controller refuses a
//!   request with any bad key); [`TopicConfig::apply`] applies a set key by key and reports
//!   the keys it could not apply without dropping the others (a broker meeting a key it does
//!   not know, from a newer controller, keeps every other override).
//! - Internal topics ([`OFFSETS_TOPIC`]): made by the controller on a broker's request, never
//!   created, changed or deleted through client APIs.

use std::collections::BTreeMap;
use std::time::Duration;

/// The longest topic name Kafka allows.
pub const MAX_TOPIC_NAME: usize = 249;

/// The internal topic holding consumer groups' committed offsets and metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of [`OFFSETS_TOPIC`].
pub const OFFSETS_PARTITIONS: usize = 4;
/// The most replicas [`OFFSETS_TOPIC`] gets (fewer while fewer brokers are alive).
pub const OFFSETS_MAX_REPLICATION: usize = 3;

/// `segment.bytes` lower bound: Kafka 4's (KIP-1030). Below it, a segment per record would
/// exhaust file descriptors and inodes.
pub const MIN_SEGMENT_BYTES: i64 = 1 << 20;
/// `segment.index.bytes` lower bound: one page. Kafka's is 4 bytes, which holds no entry and
/// would roll a segment at every batch.
pub const MIN_SEGMENT_INDEX_BYTES: i64 = 4096;

/// Whether `name` is one of Weir's own topics (`__consumer_offsets`): written and shaped by
/// brokers and the controller, not by clients.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
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

/// A config key or value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config key {key:?}")]
    UnknownKey { key: String },
    #[error("config {key}={value:?} is not {expected}")]
    InvalidValue {
        key: String,
        value: String,
        expected: &'static str,
    },
}

impl ConfigError {
    pub fn key(&self) -> &str {
        match self {
            ConfigError::UnknownKey { key } | ConfigError::InvalidValue { key, .. } => key,
        }
    }
}

/// What `cleanup.policy` may say. Only `delete` is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
}

/// A topic's effective configuration. `Default` gives Kafka's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// `segment.bytes`: roll the active segment before it grows past this.
    pub segment_size: u64,
    /// `segment.ms`: roll a non-empty active segment this long after its first batch.
    pub segment_age: Option<Duration>,
    /// `retention.ms`: delete closed segments whose newest timestamp is older than this.
    pub retention_age: Option<Duration>,
    /// `retention.bytes`: delete the oldest closed segments while the log is larger.
    pub retention_size: Option<u64>,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_batch_size: usize,
    /// `index.interval.bytes`: log bytes between two offset-index entries.
    pub index_interval: usize,
    /// `segment.index.bytes`: the most an offset index may grow to; a full index rolls.
    pub index_capacity: usize,
    /// `flush.messages`: fsync once this many records are unflushed. `None`: the OS's.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: fsync when the last fsync is older than this. `None`: the OS's.
    pub flush_interval: Option<Duration>,
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
            segment_size: 1 << 30,
            segment_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_size: None,
            max_batch_size: 1_048_588,
            index_interval: 4096,
            index_capacity: 10 << 20,
            flush_messages: None,
            flush_interval: None,
            min_insync_replicas: 1,
            cleanup_policy: CleanupPolicy::Delete,
            unclean_leader_election: false,
        }
    }
}

/// Every key [`TopicConfig::set`] understands.
pub const KEYS: &[&str] = &[
    "cleanup.policy",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// Checks every override strictly: a request carrying any unknown key or bad value is refused.
///
/// # Errors
/// The first bad key or value.
pub fn validate_overrides(overrides: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let mut config = TopicConfig::default();
    for (key, value) in overrides {
        config.set(key, value)?;
    }
    Ok(())
}

impl TopicConfig {
    /// Sets one key from its Kafka string form. `-1` means "unlimited" or "left to the OS"
    /// where Kafka allows it, as does Kafka's `Long.MAX_VALUE` for the flush keys. A refused
    /// value changes nothing.
    ///
    /// # Errors
    /// `UnknownKey`, or `InvalidValue` with what the key expects.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |expected| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        let number = |min: i64, max: i64, expected| -> Result<i64, ConfigError> {
            value
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| invalid(expected))
        };
        let int_max = i64::from(i32::MAX);
        // -1 and Long.MAX_VALUE: no limit.
        let optional = |n: i64| (n >= 0 && n != i64::MAX).then_some(n as u64);
        match key {
            "segment.bytes" => {
                self.segment_size = number(
                    MIN_SEGMENT_BYTES,
                    int_max,
                    "an integer from 1048576 (1 MiB) to 2147483647",
                )? as u64;
            }
            "segment.ms" => {
                self.segment_age = Some(Duration::from_millis(number(
                    1,
                    i64::MAX,
                    "a positive number of milliseconds",
                )? as u64));
            }
            "segment.index.bytes" => {
                self.index_capacity = number(
                    MIN_SEGMENT_INDEX_BYTES,
                    int_max,
                    "an integer from 4096 to 2147483647",
                )? as usize;
            }
            "index.interval.bytes" => {
                self.index_interval =
                    number(0, int_max, "an integer from 0 to 2147483647")? as usize;
            }
            "retention.ms" => {
                self.retention_age = optional(number(
                    -1,
                    i64::MAX,
                    "-1 or a non-negative number of milliseconds",
                )?)
                .map(Duration::from_millis);
            }
            "retention.bytes" => {
                self.retention_size = optional(number(
                    -1,
                    i64::MAX,
                    "-1 or a non-negative number of bytes",
                )?);
            }
            "max.message.bytes" => {
                self.max_batch_size =
                    number(0, int_max, "an integer from 0 to 2147483647")? as usize;
            }
            "flush.messages" => {
                let n = number(-1, i64::MAX, "-1 or a positive number of messages")?;
                if n == 0 {
                    return Err(invalid("-1 or a positive number of messages"));
                }
                self.flush_messages = optional(n);
            }
            "flush.ms" => {
                self.flush_interval = optional(number(
                    -1,
                    i64::MAX,
                    "-1 or a non-negative number of milliseconds",
                )?)
                .map(Duration::from_millis);
            }
            "min.insync.replicas" => {
                self.min_insync_replicas =
                    number(1, int_max, "a positive number of replicas")? as i32;
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
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: key.to_string(),
                });
            }
        }
        Ok(())
    }

    /// `defaults` with each of `overrides` applied that can be, and the keys that could not
    /// (unknown or bad), which leave the defaults' value in place.
    pub fn apply(
        defaults: &TopicConfig,
        overrides: &BTreeMap<String, String>,
    ) -> (TopicConfig, Vec<ConfigError>) {
        let mut config = defaults.clone();
        let mut refused = Vec::new();
        for (key, value) in overrides {
            if let Err(e) = config.set(key, value) {
                refused.push(e);
            }
        }
        (config, refused)
    }

    /// Every key with its effective value (`-1` for unlimited).
    pub fn to_properties(&self) -> BTreeMap<String, String> {
        let millis =
            |d: Option<Duration>| d.map_or("-1".to_string(), |d| d.as_millis().to_string());
        let count = |n: Option<u64>| n.map_or("-1".to_string(), |n| n.to_string());
        let properties = BTreeMap::from([
            ("cleanup.policy", "delete".to_string()),
            ("flush.messages", count(self.flush_messages)),
            ("flush.ms", millis(self.flush_interval)),
            ("index.interval.bytes", self.index_interval.to_string()),
            ("max.message.bytes", self.max_batch_size.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            ("retention.bytes", count(self.retention_size)),
            ("retention.ms", millis(self.retention_age)),
            ("segment.bytes", self.segment_size.to_string()),
            ("segment.index.bytes", self.index_capacity.to_string()),
            ("segment.ms", millis(self.segment_age)),
            (
                "unclean.leader.election.enable",
                self.unclean_leader_election.to_string(),
            ),
        ]);
        debug_assert!(properties.keys().copied().eq(KEYS.iter().copied()));
        properties
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// Whether every append must be fsynced before it is acknowledged.
    pub fn flushes_every_append(&self) -> bool {
        self.flush_messages == Some(1) || self.flush_interval == Some(Duration::ZERO)
    }
}

/// The overrides of [`OFFSETS_TOPIC`]: every commit on disk before it is acknowledged, kept
/// until compaction exists.
pub fn offsets_topic_config() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("flush.messages".to_string(), "1".to_string()),
        ("retention.ms".to_string(), "-1".to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for good in ["orders", "a.b_c-d", "x", "...", &"n".repeat(249)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/name",
            "/abs",
            "../x",
            "ünïcode",
            "nul\0",
            &"n".repeat(250),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kafka_values_parse_and_print_back() {
        let mut config = TopicConfig::default();
        for (key, value) in [
            ("segment.bytes", "1048576"),
            ("retention.ms", "-1"),
            ("retention.bytes", "5000000"),
            ("flush.messages", "1"),
            ("flush.ms", "9223372036854775807"),
            ("min.insync.replicas", "2"),
            ("unclean.leader.election.enable", "true"),
        ] {
            config.set(key, value).expect(key);
        }
        assert_eq!(config.segment_size, 1 << 20);
        assert_eq!(config.retention_age, None);
        assert_eq!(config.retention_size, Some(5_000_000));
        assert!(config.flushes_every_append());
        assert_eq!(config.flush_interval, None);
        assert_eq!(config.min_insync_replicas, 2);
        assert!(config.unclean_leader_election);
        let properties = config.to_properties();
        assert_eq!(properties["retention.ms"], "-1");
        assert_eq!(properties.len(), KEYS.len());
        for key in KEYS {
            let mut copy = config.clone();
            copy.set(key, &properties[*key])
                .expect("printed values parse back");
            assert_eq!(copy, config, "{key}");
        }
    }

    #[test]
    fn kafkas_lower_bounds_hold_and_a_refused_value_changes_nothing() {
        let mut config = TopicConfig::default();
        for (key, value) in [
            ("segment.bytes", "14"),
            ("segment.bytes", "1048575"),
            ("segment.bytes", "4294967296"),
            ("segment.bytes", "3GiB"),
            ("segment.ms", "0"),
            ("segment.index.bytes", "8"),
            ("flush.messages", "0"),
            ("min.insync.replicas", "0"),
            ("cleanup.policy", "compact"),
            ("unclean.leader.election.enable", "yes"),
        ] {
            assert!(
                matches!(
                    config.set(key, value),
                    Err(ConfigError::InvalidValue { .. })
                ),
                "{key}={value} accepted"
            );
        }
        assert_eq!(config, TopicConfig::default());
        assert_eq!(
            config.set("flush.mesages", "1").unwrap_err().to_string(),
            "unknown config key \"flush.mesages\""
        );
    }

    #[test]
    fn one_bad_key_costs_only_itself() {
        let overrides = BTreeMap::from([
            ("flush.messages".to_string(), "1".to_string()),
            ("retention.ms".to_string(), "soon".to_string()),
            ("some.future.key".to_string(), "x".to_string()),
        ]);
        let (config, refused) = TopicConfig::apply(&TopicConfig::default(), &overrides);
        assert_eq!(config.flush_messages, Some(1), "the good key applies");
        assert_eq!(
            config.retention_age,
            TopicConfig::default().retention_age,
            "the bad one keeps the default"
        );
        let keys: Vec<&str> = refused.iter().map(ConfigError::key).collect();
        assert_eq!(keys, ["retention.ms", "some.future.key"]);
        assert!(validate_overrides(&overrides).is_err());
        assert!(validate_overrides(&offsets_topic_config()).is_ok());
    }
}
