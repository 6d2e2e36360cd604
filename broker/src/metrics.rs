//! The broker's Prometheus metrics.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::partition::PartitionState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: &'static str,
    outcome: &'static str,
}

type HistogramFamily = Family<RpcLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric the broker exports at `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    bytes_in: Family<TopicLabels, Counter>,
    records_in: Family<TopicLabels, Counter>,
    bytes_out: Family<TopicLabels, Counter>,
    records_out: Family<TopicLabels, Counter>,
    request_duration: HistogramFamily,
    log_size: Family<PartitionLabels, Gauge>,
    log_end_offset: Family<PartitionLabels, Gauge>,
    log_start_offset: Family<PartitionLabels, Gauge>,
    group_lag: Family<GroupLabels, Gauge>,
    under_replicated: Gauge,
    isr_shrinks: Counter,
    isr_expands: Counter,
    follower_lag: Family<FollowerLabels, Gauge>,
    unapplied_config: Family<TopicLabels, Gauge>,
    deletion_failures: Counter,
    offline_replicas: Gauge,
    open_segment_files: Gauge,
    connections: Family<ListenerLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    connections_timed_out: Family<ListenerLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabels {
    topic: String,
    partition: String,
    follower: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weir");
        let metrics = Metrics {
            bytes_in: Family::default(),
            records_in: Family::default(),
            bytes_out: Family::default(),
            records_out: Family::default(),
            request_duration: HistogramFamily::new_with_constructor(latency_histogram),
            log_size: Family::default(),
            log_end_offset: Family::default(),
            log_start_offset: Family::default(),
            group_lag: Family::default(),
            under_replicated: Gauge::default(),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            follower_lag: Family::default(),
            unapplied_config: Family::default(),
            deletion_failures: Counter::default(),
            offline_replicas: Gauge::default(),
            open_segment_files: Gauge::default(),
            connections: Family::default(),
            connections_refused: Family::default(),
            connections_timed_out: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "bytes_in",
            "Bytes of record batches produced",
            metrics.bytes_in.clone(),
        );
        registry.register("records_in", "Records produced", metrics.records_in.clone());
        registry.register(
            "bytes_out",
            "Bytes of record batches fetched",
            metrics.bytes_out.clone(),
        );
        registry.register(
            "records_out",
            "Offsets fetched",
            metrics.records_out.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to serve a request",
            metrics.request_duration.clone(),
        );
        registry.register(
            "log_size_bytes",
            "Bytes in a partition's log",
            metrics.log_size.clone(),
        );
        registry.register(
            "log_end_offset",
            "A partition's log end offset",
            metrics.log_end_offset.clone(),
        );
        registry.register(
            "log_start_offset",
            "A partition's log start offset",
            metrics.log_start_offset.clone(),
        );
        registry.register(
            "group_lag",
            "Records between a group's committed offset and the high watermark",
            metrics.group_lag.clone(),
        );
        registry.register(
            "under_replicated_partitions",
            "Partitions led here whose ISR is smaller than their replica list",
            metrics.under_replicated.clone(),
        );
        registry.register(
            "isr_shrinks",
            "ISR shrinks committed for partitions led here",
            metrics.isr_shrinks.clone(),
        );
        registry.register(
            "isr_expands",
            "ISR expansions committed for partitions led here",
            metrics.isr_expands.clone(),
        );
        registry.register(
            "follower_lag",
            "Offsets between a partition leader's log end and a follower's",
            metrics.follower_lag.clone(),
        );
        registry.register(
            "topic_config_unapplied",
            "Config overrides of a topic this broker could not apply (the default stands for each)",
            metrics.unapplied_config.clone(),
        );
        registry.register(
            "deletion_failures",
            "Replicas of deleted topics whose data could not be removed",
            metrics.deletion_failures.clone(),
        );
        registry.register(
            "offline_replicas",
            "Replicas this broker should hold but could not open",
            metrics.offline_replicas.clone(),
        );
        registry.register(
            "open_segment_files",
            "Closed segments whose files are open now (bounded by max_open_segments)",
            metrics.open_segment_files.clone(),
        );
        registry.register(
            "connections",
            "Connections open on a listener",
            metrics.connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because the listener held max_connections",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed for sending no request head in time, or nothing for too long",
            metrics.connections_timed_out.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

/// Observes a request's duration when dropped.
#[derive(Debug)]
pub struct RequestTimer<'a> {
    metrics: &'a Metrics,
    rpc: &'static str,
    started: Instant,
    pub failed: bool,
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        let outcome = if self.failed { "error" } else { "ok" };
        self.metrics
            .request_duration
            .get_or_create(&RpcLabels {
                rpc: self.rpc,
                outcome,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn time(&self, rpc: &'static str) -> RequestTimer<'_> {
        RequestTimer {
            metrics: self,
            rpc,
            started: Instant::now(),
            failed: false,
        }
    }

    pub fn produced(&self, topic: &str, bytes: u64, records: u64) {
        let labels = TopicLabels {
            topic: topic.to_string(),
        };
        self.bytes_in.get_or_create(&labels).inc_by(bytes);
        self.records_in.get_or_create(&labels).inc_by(records);
    }

    pub fn fetched(&self, topic: &str, bytes: u64, offsets: i64) {
        let labels = TopicLabels {
            topic: topic.to_string(),
        };
        self.bytes_out.get_or_create(&labels).inc_by(bytes);
        self.records_out
            .get_or_create(&labels)
            .inc_by(offsets.max(0) as u64);
    }

    /// Counts a committed ISR change.
    pub fn isr_changed(&self, shrunk: bool) {
        if shrunk {
            self.isr_shrinks.inc();
        } else {
            self.isr_expands.inc();
        }
    }

    /// Sets how many of a topic's overrides this broker could not apply.
    pub fn unapplied_config(&self, topic: &str, count: usize) {
        let labels = TopicLabels {
            topic: topic.to_string(),
        };
        if count == 0 {
            self.unapplied_config.remove(&labels);
        } else {
            self.unapplied_config
                .get_or_create(&labels)
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn deletion_failed(&self) {
        self.deletion_failures.inc();
    }

    /// The counters a listener increments itself.
    pub fn listener_stats(&self, listener: &'static str) -> crate::listener::ListenerStats {
        let labels = ListenerLabels { listener };
        crate::listener::ListenerStats {
            refused: self.connections_refused.get_or_create(&labels).clone(),
            timed_out: self.connections_timed_out.get_or_create(&labels).clone(),
        }
    }

    pub fn set_connections(&self, listener: &'static str, open: usize) {
        self.connections
            .get_or_create(&ListenerLabels { listener })
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    pub fn set_open_segment_files(&self, count: usize) {
        self.open_segment_files
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn set_offline_replicas(&self, count: usize) {
        self.offline_replicas
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn set_under_replicated(&self, count: usize) {
        self.under_replicated
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn follower_lag(&self, topic: &str, partition: i32, follower: i32, lag: i64) {
        self.follower_lag
            .get_or_create(&FollowerLabels {
                topic: topic.to_string(),
                partition: partition.to_string(),
                follower: follower.to_string(),
            })
            .set(lag);
    }

    pub fn log_state(&self, topic: &str, partition: i32, state: &PartitionState) {
        let labels = PartitionLabels {
            topic: topic.to_string(),
            partition: partition.to_string(),
        };
        self.log_size.get_or_create(&labels).set(state.size as i64);
        self.log_end_offset
            .get_or_create(&labels)
            .set(state.log_end_offset);
        self.log_start_offset
            .get_or_create(&labels)
            .set(state.log_start_offset);
    }

    /// Replaces every group-lag series: groups and topics that are gone disappear.
    pub fn set_group_lags<'a>(&self, lags: impl IntoIterator<Item = (&'a str, &'a str, i32, i64)>) {
        self.group_lag.clear();
        for (group, topic, partition, lag) in lags {
            let labels = GroupLabels {
                group: group.to_string(),
                topic: topic.to_string(),
                partition: partition.to_string(),
            };
            self.group_lag.get_or_create(&labels).set(lag);
        }
    }

    /// Drops every series of a deleted topic.
    pub fn forget_topic(&self, topic: &str, partitions: i32) {
        let labels = TopicLabels {
            topic: topic.to_string(),
        };
        for family in [
            &self.bytes_in,
            &self.records_in,
            &self.bytes_out,
            &self.records_out,
        ] {
            family.remove(&labels);
        }
        self.unapplied_config.remove(&labels);
        for partition in 0..partitions {
            let labels = PartitionLabels {
                topic: topic.to_string(),
                partition: partition.to_string(),
            };
            for family in [&self.log_size, &self.log_end_offset, &self.log_start_offset] {
                family.remove(&labels);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
