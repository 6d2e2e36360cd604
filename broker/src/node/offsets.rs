//! Partition offsets as their leaders have them, asked of other brokers when this one does
//! not lead: for group lag, offset resets and listings.

use std::collections::BTreeMap;

use weir_proto::v1;

use super::Node;
use crate::failure::error_chain;
use crate::topic::Topic;

impl Node {
    /// Each partition's offset for `spec` (earliest, latest = high watermark, or the first at
    /// or after `timestamp`), as its leader has it: from the replica here when this broker
    /// leads it, else asked of the leader. A partition whose leader cannot answer is given
    /// from the replica here, if there is one, and otherwise left out; `None`: no record at or
    /// after the timestamp.
    pub async fn offsets_from_leaders(
        &self,
        topic: &Topic,
        spec: v1::OffsetSpec,
        timestamp: i64,
    ) -> BTreeMap<i32, Option<i64>> {
        let local = |index: i32| -> Option<Option<i64>> {
            let partition = topic.replicas.get(&index)?;
            let state = partition.state();
            Some(match spec {
                v1::OffsetSpec::Earliest => Some(state.log_start_offset),
                v1::OffsetSpec::Latest => Some(state.high_watermark),
                v1::OffsetSpec::Timestamp => partition
                    .offset_for_timestamp(timestamp)
                    .ok()
                    .flatten()
                    .map(|(offset, _)| offset),
            })
        };
        let me = self.config.broker_id;
        let mut offsets = BTreeMap::new();
        let mut remote: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        {
            let brokers = self.brokers();
            for p in &topic.layout {
                match p.leader.filter(|l| *l != me).and_then(|l| brokers.get(&l)) {
                    Some(leader) => remote
                        .entry(leader.address.clone())
                        .or_default()
                        .push(p.partition),
                    None => {
                        if let Some(offset) = local(p.partition) {
                            offsets.insert(p.partition, offset);
                        }
                    }
                }
            }
        }
        for (address, partitions) in remote {
            let request = v1::ListOffsetsRequest {
                topic: topic.name.clone(),
                partitions: partitions.clone(),
                spec: spec as i32,
                timestamp,
            };
            let answer = match self.peer_channel(&address) {
                Ok(channel) => v1::weir_client::WeirClient::new(channel)
                    .list_offsets(request)
                    .await
                    .map_err(|s| weir_proto::status_text(&s)),
                Err(e) => Err(error_chain(&e)),
            };
            match answer {
                Ok(answer) => {
                    for o in answer.into_inner().offsets {
                        offsets.insert(o.partition, o.offset);
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %topic.name, leader = %address, error = %e, "cannot ask a leader for offsets; using this broker's replicas");
                    for index in partitions {
                        if let Some(offset) = local(index) {
                            offsets.insert(index, offset);
                        }
                    }
                }
            }
        }
        offsets
    }

    /// Each partition's range (log start offset, high watermark) as its leader has it, for the
    /// partitions whose leader (or the replica here) answered both.
    pub async fn ranges_from_leaders(&self, topic: &Topic) -> BTreeMap<i32, (i64, i64)> {
        let starts = self
            .offsets_from_leaders(topic, v1::OffsetSpec::Earliest, 0)
            .await;
        let ends = self
            .offsets_from_leaders(topic, v1::OffsetSpec::Latest, 0)
            .await;
        ends.into_iter()
            .filter_map(|(partition, end)| match (starts.get(&partition), end) {
                (Some(Some(start)), Some(end)) => Some((partition, (*start, end))),
                _ => None,
            })
            .collect()
    }
}
