//! Per-log configuration, with Kafka's key names and meanings.

use std::collections::BTreeMap;
use std::time::Duration;

/// How a log is laid out, kept and flushed. `Default` gives Kafka's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
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
    /// `segment.index.bytes`: preallocated size of an offset index; a full index rolls.
    pub index_capacity: usize,
    /// `flush.messages`: fsync once this many records are unflushed (1: every append, with
    /// group commit). `None`: leave it to the OS.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: fsync when the last fsync is older than this. `None`: leave it to the OS.
    pub flush_interval: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size: 1 << 30,
            segment_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_size: None,
            max_batch_size: 1_048_588,
            index_interval: 4096,
            index_capacity: 10 << 20,
            flush_messages: None,
            flush_interval: None,
        }
    }
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

/// Every key [`LogConfig::set`] understands.
pub const KEYS: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "retention.ms",
    "retention.bytes",
    "max.message.bytes",
    "index.interval.bytes",
    "segment.index.bytes",
    "flush.messages",
    "flush.ms",
];

impl LogConfig {
    /// Sets one key from its Kafka string form. `-1` means "unlimited" or "left to the OS"
    /// where Kafka allows it, as does Kafka's `Long.MAX_VALUE` for the flush keys.
    ///
    /// # Errors
    /// `UnknownKey`, or `InvalidValue` with what the key expects.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |expected| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        let number = |min: i64, expected| -> Result<i64, ConfigError> {
            value
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|&n| n >= min)
                .ok_or_else(|| invalid(expected))
        };
        let optional = |n: i64| (n >= 0 && n != i64::MAX).then_some(n as u64);
        match key {
            "segment.bytes" => {
                let n = number(14, "an integer from 14 to 2147483647")?;
                if n > i64::from(i32::MAX) {
                    return Err(invalid("an integer from 14 to 2147483647"));
                }
                self.segment_size = n as u64;
            }
            "segment.ms" => {
                self.segment_age = optional(number(-1, "-1 or a positive number of milliseconds")?)
                    .map(Duration::from_millis)
            }
            "retention.ms" => {
                self.retention_age = optional(number(-1, "-1 or a number of milliseconds")?)
                    .map(Duration::from_millis)
            }
            "retention.bytes" => {
                self.retention_size = optional(number(-1, "-1 or a number of bytes")?)
            }
            "max.message.bytes" => {
                let n = number(0, "an integer from 0 to 2147483647")?;
                self.max_batch_size =
                    usize::try_from(n.min(i64::from(i32::MAX))).map_err(|_| invalid("a size"))?;
            }
            "index.interval.bytes" => {
                self.index_interval = usize::try_from(number(0, "a non-negative number of bytes")?)
                    .map_err(|_| invalid("a size"))?;
            }
            "segment.index.bytes" => {
                let n = number(8, "at least 8 bytes")?;
                self.index_capacity =
                    usize::try_from(n.min(i64::from(i32::MAX))).map_err(|_| invalid("a size"))?;
            }
            "flush.messages" => {
                let n = number(-1, "-1 or a positive number of messages")?;
                if n == 0 {
                    return Err(invalid("-1 or a positive number of messages"));
                }
                self.flush_messages = optional(n);
            }
            "flush.ms" => {
                self.flush_interval =
                    optional(number(-1, "-1 or a non-negative number of milliseconds")?)
                        .map(Duration::from_millis)
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: key.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The config as Kafka key/value strings (`-1` for unlimited).
    pub fn to_properties(&self) -> BTreeMap<&'static str, String> {
        let millis =
            |d: Option<Duration>| d.map_or("-1".to_string(), |d| d.as_millis().to_string());
        let bytes = |b: Option<u64>| b.map_or("-1".to_string(), |b| b.to_string());
        BTreeMap::from([
            ("segment.bytes", self.segment_size.to_string()),
            ("segment.ms", millis(self.segment_age)),
            ("retention.ms", millis(self.retention_age)),
            ("retention.bytes", bytes(self.retention_size)),
            ("max.message.bytes", self.max_batch_size.to_string()),
            ("index.interval.bytes", self.index_interval.to_string()),
            ("segment.index.bytes", self.index_capacity.to_string()),
            ("flush.messages", bytes(self.flush_messages)),
            ("flush.ms", millis(self.flush_interval)),
        ])
    }

    /// Whether every append must be fsynced before it is acknowledged.
    pub fn flushes_every_append(&self) -> bool {
        self.flush_messages == Some(1) || self.flush_interval == Some(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_values_parse_and_print_back() {
        let mut config = LogConfig::default();
        for (key, value) in [
            ("segment.bytes", "1048576"),
            ("retention.ms", "-1"),
            ("retention.bytes", "5000000"),
            ("flush.messages", "1"),
            ("flush.ms", "9223372036854775807"),
        ] {
            config.set(key, value).expect(key);
        }
        assert_eq!(config.segment_size, 1 << 20);
        assert_eq!(config.retention_age, None);
        assert_eq!(config.retention_size, Some(5_000_000));
        assert!(config.flushes_every_append());
        assert_eq!(config.flush_interval, None);
        let properties = config.to_properties();
        assert_eq!(properties["retention.ms"], "-1");
        assert_eq!(properties["flush.ms"], "-1");
        assert_eq!(properties.len(), KEYS.len());
        for key in KEYS {
            let mut copy = config.clone();
            copy.set(key, &properties[key])
                .expect("printed values parse back");
            assert_eq!(copy, config, "{key}");
        }
    }

    #[test]
    fn bad_keys_and_values_say_what_is_wrong() {
        let mut config = LogConfig::default();
        assert_eq!(
            config.set("flush.mesages", "1").unwrap_err().to_string(),
            "unknown config key \"flush.mesages\""
        );
        let error = config.set("segment.bytes", "3GiB").unwrap_err().to_string();
        assert_eq!(
            error,
            "config segment.bytes=\"3GiB\" is not an integer from 14 to 2147483647"
        );
        assert!(config.set("segment.bytes", "4294967296").is_err());
        assert!(config.set("flush.messages", "0").is_err());
        assert_eq!(
            config,
            LogConfig::default(),
            "a refused value changes nothing"
        );
    }
}
