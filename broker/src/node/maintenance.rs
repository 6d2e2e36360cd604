//! The broker's periodic housekeeping: group expiry and lag, retention, `flush.ms` flushes,
//! recovery-point checkpoints and the gauges that describe the logs.

use std::sync::Arc;

use weir_proto::v1;

use super::Node;
use crate::failure::error_chain;
use crate::topic::Topic;

impl Node {
    /// Runs retention, `flush.ms` flushes and recovery-point checkpoints on every partition,
    /// and refreshes the log gauges.
    pub fn maintain(&self, retention: bool) {
        self.coordinator.expire();
        let described: Vec<v1::GroupDescription> = self
            .coordinator
            .list()
            .iter()
            .filter_map(|g| self.coordinator.describe_local(self, &g.group_id).ok())
            .collect();
        self.metrics.set_group_lags(described.iter().flat_map(|d| {
            d.partitions
                .iter()
                .map(move |p| (d.group_id.as_str(), p.topic.as_str(), p.partition, p.lag))
        }));
        let topics: Vec<Arc<Topic>> = self.topics().values().cloned().collect();
        let me = self.config.broker_id;
        let under_replicated = topics
            .iter()
            .flat_map(|t| &t.layout)
            .filter(|p| p.leader == Some(me) && p.isr.len() < p.replicas.len())
            .count();
        self.metrics.set_under_replicated(under_replicated);
        self.metrics
            .set_offline_replicas(topics.iter().map(|t| t.failed.len()).sum::<usize>());
        self.metrics
            .set_open_segment_files(self.segment_files.open_segments());
        for topic in topics {
            for partition in topic.replicas.values() {
                if retention && let Err(e) = partition.apply_retention() {
                    tracing::error!(topic = %topic.name, partition = partition.index, error = %error_chain(&e), "retention failed");
                }
                if let Err(e) = partition.maintain() {
                    tracing::error!(topic = %topic.name, partition = partition.index, error = %error_chain(&e), "flush failed");
                }
                self.metrics
                    .log_state(&topic.name, partition.index, &partition.state());
            }
        }
    }
}
