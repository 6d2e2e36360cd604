//! The broker's configuration: a TOML file whose unknown keys are an error, then `WEIR_*`
//! environment variables and flags on top, all validated before any port is bound. Each
//! setting is declared once ([`BrokerConfig::SETTINGS`]); its file key, flag and variable
//! are made from that one declaration, and a `WEIR_*` variable no setting has is an error.

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
/// The Kafka protocol port of `weir-broker dev`: Kafka's own default.
pub const DEV_KAFKA_PORT: u16 = 9092;

/// One setting of the broker: its key in the TOML file, its flag (`--key-with-dashes`) and
/// its variable (`WEIR_KEY`), all made from the key, with the help text people read.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub help: &'static str,
}

impl Setting {
    /// The command-line flag: `data_dir` is `--data-dir`.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// The environment variable: `data_dir` is `WEIR_DATA_DIR`.
    pub fn variable(&self) -> String {
        format!("WEIR_{}", self.key.to_ascii_uppercase())
    }
}

/// A value a setting takes from its text form (a flag's or a variable's).
pub trait SettingValue: Sized {
    /// # Errors
    /// Why the text is not a value of this setting, for a person.
    fn parse_setting(text: &str) -> Result<Self, String>;
}

impl SettingValue for PathBuf {
    fn parse_setting(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
}

impl SettingValue for String {
    fn parse_setting(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
}

impl SettingValue for Duration {
    fn parse_setting(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))
    }
}

macro_rules! parsed_setting {
    ($($ty:ty),*) => {$(
        impl SettingValue for $ty {
            fn parse_setting(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|e| format!("{text:?}: {e}"))
            }
        }
    )*};
}
parsed_setting!(SocketAddr, i32, usize, u64, bool);

impl<T: SettingValue> SettingValue for Option<T> {
    fn parse_setting(text: &str) -> Result<Self, String> {
        T::parse_setting(text).map(Some)
    }
}

/// `key=value,key=value`, as `topic_defaults` is given on the command line.
impl SettingValue for BTreeMap<String, String> {
    fn parse_setting(text: &str) -> Result<Self, String> {
        text.split(',')
            .filter(|pair| !pair.trim().is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| format!("{pair:?} is not key=value"))
            })
            .collect()
    }
}

/// Declares the broker's settings once: the struct (read from TOML with unknown keys refused),
/// its defaults, and the list [`BrokerConfig::SETTINGS`] that the flags and variables are
/// made from.
macro_rules! settings {
    ($(
        $(#[$meta:meta])*
        $field:ident: $ty:ty = $default:expr, $help:literal;
    )*) => {
        /// Everything a broker needs. `Default` is the dev broker's configuration.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct BrokerConfig {
            $(
                #[doc = $help]
                $(#[$meta])*
                pub $field: $ty,
            )*
        }

        impl Default for BrokerConfig {
            fn default() -> Self {
                BrokerConfig { $($field: $default,)* }
            }
        }

        impl BrokerConfig {
            /// Every setting, in the order of the file's documentation.
            pub const SETTINGS: &'static [Setting] = &[
                $(Setting { key: stringify!($field), help: $help },)*
            ];

            /// Sets one setting from its text form (a flag's or a variable's value).
            ///
            /// # Errors
            /// An unknown key, or text that is not a value of the setting.
            pub fn set(&mut self, key: &str, text: &str) -> Result<(), ConfigError> {
                match key {
                    $(stringify!($field) => {
                        self.$field = <$ty as SettingValue>::parse_setting(text)
                            .map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))?;
                    })*
                    _ => return Err(ConfigError::Invalid(format!("unknown setting {key:?}"))),
                }
                Ok(())
            }
        }
    };
}

settings! {
    data_dir: PathBuf = PathBuf::from("./weir-data"),
        "Where partition logs and metadata live.";
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], DEV_PORT)),
        "The gRPC listener for clients and other brokers.";
    http_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], DEV_HTTP_PORT)),
        "The HTTP listener for /metrics, /healthz and /readyz.";
    kafka_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], DEV_KAFKA_PORT)),
        "The Kafka protocol listener, for Kafka clients.";
    kafka_advertised_address: Option<String> = None,
        "The address Kafka clients are told to use (`host:port`); the Kafka listen address when absent.";
    socket_request_max_bytes: usize = 100 << 20,
        "The largest Kafka request accepted (Kafka's socket.request.max.bytes); a larger one closes its connection.";
    queued_max_request_bytes: usize = 512 << 20,
        "Bytes of Kafka requests read but not yet answered and of fetched records not yet written, over all connections; reading waits, and fetches read less, while they are more (Kafka's queued.max.request.bytes).";
    broker_id: i32 = 0,
        "The broker's id, unique in the cluster.";
    advertised_address: Option<String> = None,
        "The address clients and other brokers are told to use (`host:port`); the listen address when absent.";
    rack: Option<String> = None,
        "The rack (or zone) the broker is in: replicas of a partition go to different racks.";
    controller: Option<String> = None,
        "The controller's address, or several separated by commas (tried in turn). Absent: the broker embeds its own controller, reachable only from itself, and is a cluster of one.";
    cluster: Option<String> = None,
        "The cluster this broker belongs to (`namespace/name` of its Cluster resource), for an operator's controller.";
    cluster_secret_file: Option<PathBuf> = None,
        "A file holding the cluster secret, presented to the controller and to other brokers (the controller's --cluster-secret-file). Needed with `controller`.";
    default_partitions: i32 = 1,
        "Partitions of a topic created without a count.";
    default_replication_factor: i32 = 1,
        "Replicas of a topic created without a replication factor.";
    #[serde(with = "humantime_serde_compat")]
    replica_lag_time_max: Duration = Duration::from_secs(10),
        "A follower that has not caught up for this long leaves the ISR (Kafka's replica.lag.time.max.ms).";
    #[serde(with = "humantime_serde_compat")]
    replica_fetch_wait: Duration = Duration::from_millis(500),
        "How long a follower's fetch waits at the leader for new records.";
    #[serde(with = "humantime_serde_compat")]
    replication_timeout: Duration = Duration::from_secs(10),
        "How long an acks=all produce waits for the ISR to have its records.";
    topic_defaults: BTreeMap<String, String> = BTreeMap::new(),
        "Broker-wide defaults of topic configs, with Kafka's key names (`retention.ms=86400000,flush.messages=1` on the command line).";
    #[serde(with = "humantime_serde_compat")]
    retention_check_interval: Duration = Duration::from_secs(300),
        "How often retention runs (Kafka's log.retention.check.interval.ms).";
    #[serde(with = "humantime_serde_compat")]
    shutdown_timeout: Duration = Duration::from_secs(30),
        "How long a clean shutdown may take before it gives up.";
    reassignment_throttle: u64 = 0,
        "Bytes per second at which the replicas a reassignment adds to this broker copy their partitions, all together (Kafka's follower.replication.throttled.rate); 0 is unlimited. Replicas catching up after a restart are not throttled.";
    #[serde(with = "humantime_serde_compat")]
    controlled_shutdown_timeout: Duration = Duration::from_secs(20),
        "How long a stopping broker (SIGTERM) waits for the controller to hand its leaderships to other in-sync replicas before it closes; 0 stops at once (Kafka's controlled.shutdown.enable=false).";
    #[serde(with = "humantime_serde_compat")]
    group_heartbeat_interval: Duration = Duration::from_secs(1),
        "How often group members are asked to heartbeat.";
    #[serde(with = "humantime_serde_compat")]
    group_session_timeout: Duration = Duration::from_secs(10),
        "A member that does not heartbeat for this long leaves its group, unless it asked for another timeout when it joined.";
    #[serde(with = "humantime_serde_compat")]
    group_min_session_timeout: Duration = Duration::from_secs(6),
        "The shortest session timeout a member may ask for (Kafka's group.min.session.timeout.ms).";
    #[serde(with = "humantime_serde_compat")]
    group_max_session_timeout: Duration = Duration::from_secs(30 * 60),
        "The longest session timeout a member may ask for (Kafka's group.max.session.timeout.ms).";
    #[serde(with = "humantime_serde_compat")]
    group_initial_rebalance_delay: Duration = Duration::from_secs(3),
        "How long the first rebalance of an empty group of Kafka consumers waits for more members to join (Kafka's group.initial.rebalance.delay.ms).";
    #[serde(with = "humantime_serde_compat")]
    fetch_max_wait: Duration = Duration::from_secs(30),
        "The longest a fetch may wait for records; a client asking for longer waits this long.";
    max_connections: usize = 10_000,
        "Connections each listener holds at most; one more is closed at once.";
    #[serde(with = "humantime_serde_compat")]
    connection_handshake_timeout: Duration = Duration::from_secs(10),
        "A connection that has not sent a whole request head (the HTTP/2 preface, an HTTP request's headers) within this is closed.";
    #[serde(with = "humantime_serde_compat")]
    connection_idle_timeout: Duration = Duration::from_secs(600),
        "A connection that sends nothing for this long is closed (Kafka's connections.max.idle.ms); clients' keepalive pings count.";
    max_open_segments: usize = 1_000,
        "Closed segments whose files are kept open at once (least recently read closed first); active segments are always open.";
}

/// Variables of Weir's other programs (the CLI, the controller, the operator, tests and
/// tools), which a broker sharing their environment ignores rather than refuses.
pub const OTHER_PROGRAMS_VARIABLES: &[&str] = &[
    "WEIR_BOOTSTRAP",
    "WEIR_CACHE",
    "WEIR_CONTROLLER_ADDRESS",
    "WEIR_CRASH_CHILD_DIR",
    "WEIR_HEARTBEAT_INTERVAL",
    "WEIR_HELM",
    "WEIR_KUBE_APISERVER",
    "WEIR_SESSION_TIMEOUT",
    "WEIR_WATCH_NAMESPACE",
];

/// The variable naming the broker's config file.
pub const CONFIG_VARIABLE: &str = "WEIR_CONFIG";

/// Refuses a `WEIR_*` variable that no setting has: a misspelt variable must fail loudly,
/// not leave a setting at its default.
///
/// # Errors
/// `Invalid`, naming the variable.
pub fn check_environment(variables: impl Iterator<Item = String>) -> Result<(), ConfigError> {
    let known: Vec<String> = BrokerConfig::SETTINGS
        .iter()
        .map(Setting::variable)
        .collect();
    for name in variables {
        let ours = name.starts_with("WEIR_");
        let other =
            OTHER_PROGRAMS_VARIABLES.contains(&name.as_str()) || name.starts_with("WEIR_BENCH_");
        if ours && name != CONFIG_VARIABLE && !other && !known.contains(&name) {
            return Err(ConfigError::Invalid(format!(
                "unknown environment variable {name}: the broker's are {CONFIG_VARIABLE} and {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
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
        let listeners = [
            ("listen", self.listen),
            ("http_listen", self.http_listen),
            ("kafka_listen", self.kafka_listen),
        ];
        for (i, (a, x)) in listeners.iter().enumerate() {
            for (b, y) in &listeners[i + 1..] {
                if x == y && x.port() != 0 {
                    return Err(ConfigError::Invalid(format!("{a} and {b} are both {x}")));
                }
            }
        }
        if self.socket_request_max_bytes < 1024
            || self.queued_max_request_bytes < self.socket_request_max_bytes
        {
            return Err(ConfigError::Invalid(format!(
                "socket_request_max_bytes must be at least 1024 and at most queued_max_request_bytes ({}), not {}",
                self.queued_max_request_bytes, self.socket_request_max_bytes
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
        if self.group_min_session_timeout > self.group_max_session_timeout {
            return Err(ConfigError::Invalid(format!(
                "group_min_session_timeout ({:?}) is above group_max_session_timeout ({:?})",
                self.group_min_session_timeout, self.group_max_session_timeout
            )));
        }
        if self.controller.is_some() && self.cluster_secret_file.is_none() {
            return Err(ConfigError::Invalid(
                "a broker joining a controller needs the cluster secret: set cluster_secret_file (--cluster-secret-file) to the file the controller uses".into(),
            ));
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

    /// The address Kafka clients are told to connect to.
    pub fn kafka_advertised(&self) -> Option<String> {
        Some(
            self.kafka_advertised_address
                .clone()
                .unwrap_or_else(|| self.kafka_listen.to_string()),
        )
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
        assert_eq!(defaults.flush_messages, Some(1));
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
