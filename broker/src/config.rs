//! The broker's configuration: a TOML file whose unknown keys are an error, then `WEIR_*`
//! environment variables and flags on top, all validated before any port is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::topic::TopicConfig;
use serde::Deserialize;

/// The gRPC port `weir-broker dev` listens on, and the CLI's default bootstrap address.
pub const DEV_PORT: u16 = 9192;
/// The HTTP port (`/metrics`, `/healthz`, `/readyz`) of `weir-broker dev`.
pub const DEV_HTTP_PORT: u16 = 9193;

/// Everything a broker needs. `Default` is the dev broker's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Where partition logs and metadata live.
    pub data_dir: PathBuf,
    /// The gRPC listener.
    pub listen: SocketAddr,
    /// The HTTP listener for metrics and health.
    pub http_listen: SocketAddr,
    pub broker_id: i32,
    /// The address clients are told to use; `listen` when absent.
    pub advertised_address: Option<String>,
    pub rack: Option<String>,
    /// The controller's gRPC address. Absent: this broker embeds its own controller (its
    /// metadata in `<data_dir>/controller`) and is a cluster of one.
    pub controller: Option<String>,
    /// The cluster this broker belongs to (`namespace/name` of its `Cluster` resource), sent
    /// to the controller with every call; only the operator's controller needs it.
    pub cluster: Option<String>,
    /// Partitions of a topic created without a count.
    pub default_partitions: i32,
    /// Replicas of a topic created without a replication factor.
    pub default_replication_factor: i32,
    /// A follower that has not caught up for this long leaves the ISR (Kafka's
    /// `replica.lag.time.max.ms`).
    #[serde(with = "humantime_serde_compat")]
    pub replica_lag_time_max: Duration,
    /// How long a follower's fetch waits at the leader for new records.
    #[serde(with = "humantime_serde_compat")]
    pub replica_fetch_wait: Duration,
    /// How long an `acks=all` produce waits for the ISR to have its records.
    #[serde(with = "humantime_serde_compat")]
    pub replication_timeout: Duration,
    /// Broker-wide defaults of topic configs, with Kafka's key names (`retention.ms`, ...).
    pub topic_defaults: BTreeMap<String, String>,
    /// How often retention runs (Kafka's `log.retention.check.interval.ms`).
    #[serde(with = "humantime_serde_compat")]
    pub retention_check_interval: Duration,
    /// How long a clean shutdown may take before it gives up.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_timeout: Duration,
    /// How often group members are asked to heartbeat.
    #[serde(with = "humantime_serde_compat")]
    pub group_heartbeat_interval: Duration,
    /// A member that does not heartbeat for this long leaves its group (a member may ask for
    /// another timeout when it joins).
    #[serde(with = "humantime_serde_compat")]
    pub group_session_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from("./weir-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], DEV_PORT)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], DEV_HTTP_PORT)),
            broker_id: 0,
            advertised_address: None,
            rack: None,
            controller: None,
            cluster: None,
            default_partitions: 1,
            default_replication_factor: 1,
            replica_lag_time_max: Duration::from_secs(10),
            replica_fetch_wait: Duration::from_millis(500),
            replication_timeout: Duration::from_secs(10),
            topic_defaults: BTreeMap::new(),
            retention_check_interval: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(30),
            group_heartbeat_interval: Duration::from_secs(1),
            group_session_timeout: Duration::from_secs(10),
        }
    }
}

/// A configuration that cannot be used, said so that a person can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("topic_defaults: {0}")]
    TopicDefaults(String),
    #[error("{0}")]
    Invalid(String),
}

impl BrokerConfig {
    /// Reads a TOML file over the defaults.
    ///
    /// # Errors
    /// `Read`, or `Parse` naming the bad or unknown key.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })
    }

    /// Checks everything that can be checked before binding a port.
    ///
    /// # Errors
    /// `TopicDefaults` for an unknown or bad topic config, `Invalid` otherwise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.default_partitions < 1 {
            return Err(ConfigError::Invalid(format!(
                "default_partitions must be at least 1, not {}",
                self.default_partitions
            )));
        }
        if self.listen == self.http_listen && self.listen.port() != 0 {
            return Err(ConfigError::Invalid(format!(
                "listen and http_listen are both {}",
                self.listen
            )));
        }
        if let Some(cluster) = &self.cluster
            && tonic::metadata::MetadataValue::<tonic::metadata::Ascii>::try_from(cluster.as_str())
                .is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "cluster {cluster:?} is not a valid name (printable ASCII only)"
            )));
        }
        self.topic_defaults().map(|_| ())
    }

    /// The broker-wide topic defaults applied over Kafka's.
    ///
    /// # Errors
    /// `TopicDefaults` naming the key.
    pub fn topic_defaults(&self) -> Result<TopicConfig, ConfigError> {
        let mut config = TopicConfig::default();
        for (key, value) in &self.topic_defaults {
            config
                .set(key, value)
                .map_err(|e| ConfigError::TopicDefaults(e.to_string()))?;
        }
        Ok(config)
    }

    /// The address clients are told to connect to.
    pub fn advertised(&self) -> String {
        self.advertised_address
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}

/// Durations written as humans do (`"300s"`, `"5m"`, `"1h 30m"`).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_defaults_and_durations_read_like_people_write_them() {
        let config: BrokerConfig = toml::from_str(
            r#"
            data_dir = "/var/lib/weir"
            listen = "0.0.0.0:9192"
            retention_check_interval = "1m 30s"
            [topic_defaults]
            "retention.ms" = "3600000"
            "flush.messages" = "1"
            "#,
        )
        .expect("valid config");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/weir"));
        assert_eq!(config.retention_check_interval, Duration::from_secs(90));
        assert_eq!(config.http_listen, BrokerConfig::default().http_listen);
        let defaults = config.topic_defaults().expect("valid topic defaults");
        assert_eq!(defaults.log.flush_messages, Some(1));
    }

    #[test]
    fn a_misspelt_key_is_an_error_not_a_silent_default() {
        let error = toml::from_str::<BrokerConfig>("data_dri = \"/tmp\"").expect_err("unknown key");
        assert!(
            error.to_string().contains("unknown field `data_dri`"),
            "{error}"
        );
        let config = BrokerConfig {
            topic_defaults: BTreeMap::from([("flush.mesages".to_string(), "1".to_string())]),
            ..BrokerConfig::default()
        };
        let error = config.validate().expect_err("unknown topic key");
        assert_eq!(
            error.to_string(),
            "topic_defaults: unknown config key \"flush.mesages\""
        );
    }
}
