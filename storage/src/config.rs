//! Per-log configuration, typed. Parsing Kafka's key strings (and their bounds) is the
//! controller's (`weir_controller::topic_config`), the one authority on topic configs.

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

impl LogConfig {
    /// Whether every append must be fsynced before it is acknowledged.
    pub fn flushes_every_append(&self) -> bool {
        self.flush_messages == Some(1) || self.flush_interval == Some(Duration::ZERO)
    }
}
