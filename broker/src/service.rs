//! The gRPC services: translate requests to [`Node`] calls and results to messages.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use weir_proto::Reason;
use weir_proto::v1::{self, Acks, OffsetSpec};

use crate::failure::Failure;
use crate::node::{MAX_FETCH_BYTES, Node};
use crate::partition::ReplicaFetched;
use crate::topic::Topic;

/// Both services over one node.
#[derive(Debug, Clone)]
pub struct Service {
    node: Arc<Node>,
    /// Becomes true when the broker stops: open Subscribe streams end.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Service {
    pub fn new(node: Arc<Node>, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        Service { node, stopping }
    }

    /// A topic's partitions as the controller decided them, with the offsets of the
    /// replicas this broker holds (-1 for those it does not).
    fn describe(&self, topic: &Topic) -> v1::TopicDescription {
        v1::TopicDescription {
            name: topic.name.clone(),
            partitions: topic
                .layout
                .iter()
                .map(|p| {
                    let state = topic.replicas.get(&p.partition).map(|r| {
                        let state = r.state();
                        self.node
                            .metrics
                            .log_state(&topic.name, p.partition, &state);
                        state
                    });
                    v1::PartitionDescription {
                        partition: p.partition,
                        leader: p.leader.unwrap_or(-1),
                        leader_epoch: p.leader_epoch,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        log_start_offset: state.map_or(-1, |s| s.log_start_offset),
                        log_end_offset: state.map_or(-1, |s| s.log_end_offset),
                        high_watermark: state.map_or(-1, |s| s.high_watermark),
                        size_bytes: state.map_or(0, |s| s.size),
                        adding: p.adding.clone(),
                        removing: p.removing.clone(),
                    }
                })
                .collect(),
            config: topic.config.to_properties().into_iter().collect(),
            unapplied_config: topic.unapplied.clone().into_iter().collect(),
            id: topic.id.clone(),
        }
    }
}

fn failed(timer: &mut crate::metrics::RequestTimer<'_>, failure: Failure) -> Status {
    timer.failed = true;
    failure.status()
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<v1::FetchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl v1::weir_server::Weir for Service {
    async fn produce(
        &self,
        request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        let mut timer = self.node.metrics.time("produce");
        let request = request.into_inner();
        let topic = self
            .node
            .client_topic(&request.topic)
            .map_err(|f| failed(&mut timer, f))?;
        let acks = Acks::try_from(request.acks).map_err(|_| {
            failed(
                &mut timer,
                Failure::new(
                    Reason::InvalidRequest,
                    format!("unknown acks value {}", request.acks),
                ),
            )
        })?;
        let mut work: Vec<(i32, bytes::Bytes, Option<i32>)> = request
            .batches
            .into_iter()
            .map(|b| (b.partition, b.record_batches, b.leader_epoch))
            .collect();
        if !request.records.is_empty() {
            work.extend(
                self.node
                    .encode_records(&topic, &request.records)
                    .map_err(|f| failed(&mut timer, f))?
                    .into_iter()
                    .map(|(p, b)| (p, b, None)),
            );
        }
        if work.is_empty() {
            return Err(failed(
                &mut timer,
                Failure::new(
                    Reason::InvalidRequest,
                    "the produce request holds no records",
                ),
            ));
        }
        let mut results = Vec::with_capacity(work.len());
        for (partition, bytes, leader_epoch) in work {
            let result = match self
                .node
                .append(&topic, partition, bytes, acks, leader_epoch)
                .await
            {
                Ok((base, last)) if acks != Acks::None => v1::PartitionProduceResult {
                    partition,
                    base_offset: Some(base),
                    last_offset: Some(last),
                    error: None,
                },
                Ok(_) => v1::PartitionProduceResult {
                    partition,
                    ..Default::default()
                },
                Err(failure) => {
                    timer.failed = true;
                    v1::PartitionProduceResult {
                        partition,
                        error: Some(failure.reason.error(failure.message)),
                        ..Default::default()
                    }
                }
            };
            results.push(result);
        }
        Ok(Response::new(v1::ProduceResponse { results }))
    }

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::FetchResponse>, Status> {
        let mut timer = self.node.metrics.time("fetch");
        let r = request.into_inner();
        // A client may not hold a fetch longer than the broker allows.
        let max_wait = Duration::from_millis(u64::try_from(r.max_wait_ms).unwrap_or(0))
            .min(self.node.config.fetch_max_wait);
        let (slice, partition) = self
            .node
            .fetch(
                &r.topic,
                r.partition,
                r.offset,
                r.max_bytes.max(1) as usize,
                r.min_bytes.max(0) as usize,
                max_wait,
                r.current_leader_epoch,
            )
            .await
            .map_err(|f| failed(&mut timer, f))?;
        let state = partition.state();
        Ok(Response::new(v1::FetchResponse {
            partition: r.partition,
            next_offset: slice.as_ref().map_or(r.offset, |s| s.next_offset),
            record_batches: slice.map(|s| s.bytes).unwrap_or_default(),
            high_watermark: state.high_watermark,
            log_start_offset: state.log_start_offset,
        }))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        let partition = self
            .node
            .partition(&r.topic, r.partition)
            .map_err(|f| f.status())?;
        let max_bytes = (r.max_bytes.max(1) as usize).min(MAX_FETCH_BYTES);
        let node = Arc::clone(&self.node);
        let mut stopping = self.stopping.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut offset = r.offset;
            loop {
                let read = partition
                    .read(offset, max_bytes)
                    .map_err(|e| Failure::from(e).status());
                let message = match read {
                    Ok(Some(slice)) => {
                        node.metrics.fetched(
                            &r.topic,
                            slice.bytes.len() as u64,
                            slice.next_offset - slice.first_offset,
                        );
                        offset = slice.next_offset;
                        let state = partition.state();
                        Ok(v1::FetchResponse {
                            partition: r.partition,
                            record_batches: slice.bytes,
                            next_offset: slice.next_offset,
                            high_watermark: state.high_watermark,
                            log_start_offset: state.log_start_offset,
                        })
                    }
                    Ok(None) => {
                        // Wake on new records, and now and then to notice a client gone.
                        tokio::select! {
                            _ = partition.wait_past(offset, Duration::from_secs(5)) => {}
                            () = sender.closed() => return,
                            _ = stopping.changed() => {}
                        }
                        if *stopping.borrow() {
                            let _ = sender
                                .send(Err(
                                    Reason::ShuttingDown.status("the broker is shutting down")
                                ))
                                .await;
                            return;
                        }
                        continue;
                    }
                    Err(status) => Err(status),
                };
                let stop = message.is_err();
                if sender.send(message).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        let mut timer = self.node.metrics.time("list_offsets");
        let r = request.into_inner();
        let topic = self
            .node
            .topic(&r.topic)
            .map_err(|f| failed(&mut timer, f))?;
        let spec = OffsetSpec::try_from(r.spec).map_err(|_| {
            failed(
                &mut timer,
                Failure::new(
                    Reason::InvalidRequest,
                    format!("unknown offset spec {}", r.spec),
                ),
            )
        })?;
        let wanted: Vec<i32> = if r.partitions.is_empty() {
            (0..topic.partition_count() as i32).collect()
        } else {
            r.partitions
        };
        let mut offsets = Vec::with_capacity(wanted.len());
        for index in wanted {
            let partition = self
                .node
                .partition(&topic.name, index)
                .map_err(|f| failed(&mut timer, f))?;
            let state = partition.state();
            let (offset, timestamp) = match spec {
                OffsetSpec::Earliest => (Some(state.log_start_offset), None),
                OffsetSpec::Latest => (Some(state.high_watermark), None),
                OffsetSpec::Timestamp => match partition
                    .offset_for_timestamp(r.timestamp)
                    .map_err(|e| failed(&mut timer, e.into()))?
                {
                    Some((offset, timestamp)) => (Some(offset), Some(timestamp)),
                    None => (None, None),
                },
            };
            offsets.push(v1::PartitionOffset {
                partition: index,
                offset,
                timestamp,
            });
        }
        Ok(Response::new(v1::ListOffsetsResponse { offsets }))
    }

    async fn init_producer_id(
        &self,
        _request: Request<v1::InitProducerIdRequest>,
    ) -> Result<Response<v1::InitProducerIdResponse>, Status> {
        let mut timer = self.node.metrics.time("init_producer_id");
        let (producer_id, epoch) = self
            .node
            .init_producer_id()
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(v1::InitProducerIdResponse {
            producer_id,
            producer_epoch: i32::from(epoch),
        }))
    }

    async fn metadata(
        &self,
        request: Request<v1::MetadataRequest>,
    ) -> Result<Response<v1::MetadataResponse>, Status> {
        let mut timer = self.node.metrics.time("metadata");
        let names = match request.into_inner().topics {
            names if names.is_empty() => self.node.topic_names(),
            names => names,
        };
        let mut topics = Vec::with_capacity(names.len());
        for name in names {
            let topic = self.node.topic(&name).map_err(|f| failed(&mut timer, f))?;
            topics.push(self.describe(&topic));
        }
        Ok(Response::new(v1::MetadataResponse {
            brokers: self
                .node
                .cluster_brokers()
                .into_iter()
                .filter(|b| b.alive)
                .map(|b| v1::Broker {
                    id: b.id,
                    address: b.address,
                    rack: b.rack,
                })
                .collect(),
            controller_id: -1,
            topics,
        }))
    }
}

#[tonic::async_trait]
impl v1::admin_server::Admin for Service {
    async fn create_topic(
        &self,
        request: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::TopicDescription>, Status> {
        let mut timer = self.node.metrics.time("create_topic");
        let r = request.into_inner();
        let topic = self
            .node
            .create_topic(
                &r.name,
                r.partitions,
                r.replication_factor,
                r.config.into_iter().collect(),
            )
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(self.describe(&topic)))
    }

    async fn delete_topic(
        &self,
        request: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        let mut timer = self.node.metrics.time("delete_topic");
        self.node
            .delete_topic(&request.into_inner().name)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _request: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        let _timer = self.node.metrics.time("list_topics");
        let topics = self
            .node
            .topic_names()
            .iter()
            .filter_map(|name| self.node.topic(name).ok())
            .map(|topic| self.describe(&topic))
            .collect();
        Ok(Response::new(v1::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::TopicDescription>, Status> {
        let mut timer = self.node.metrics.time("describe_topic");
        let topic = self
            .node
            .topic(&request.into_inner().name)
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(self.describe(&topic)))
    }

    async fn alter_topic_config(
        &self,
        request: Request<v1::AlterTopicConfigRequest>,
    ) -> Result<Response<v1::TopicDescription>, Status> {
        let mut timer = self.node.metrics.time("alter_topic_config");
        let r = request.into_inner();
        let topic = self
            .node
            .alter_topic_config(&r.name, r.set.into_iter().collect(), r.delete)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(self.describe(&topic)))
    }

    async fn add_partitions(
        &self,
        request: Request<v1::AddPartitionsRequest>,
    ) -> Result<Response<v1::TopicDescription>, Status> {
        let mut timer = self.node.metrics.time("add_partitions");
        let r = request.into_inner();
        let topic = self
            .node
            .add_partitions(&r.name, r.partitions)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(self.describe(&topic)))
    }

    async fn alter_reassignments(
        &self,
        request: Request<v1::AlterReassignmentsRequest>,
    ) -> Result<Response<v1::AlterReassignmentsResponse>, Status> {
        let mut timer = self.node.metrics.time("alter_reassignments");
        let response = self
            .node
            .alter_reassignments(request.into_inner())
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(response))
    }

    async fn list_reassignments(
        &self,
        _request: Request<v1::ListReassignmentsRequest>,
    ) -> Result<Response<v1::ListReassignmentsResponse>, Status> {
        let mut timer = self.node.metrics.time("list_reassignments");
        let response = self
            .node
            .list_reassignments()
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl v1::groups_server::Groups for Service {
    async fn heartbeat(
        &self,
        request: Request<v1::GroupHeartbeatRequest>,
    ) -> Result<Response<v1::GroupHeartbeatResponse>, Status> {
        let mut timer = self.node.metrics.time("group_heartbeat");
        let request = request.into_inner();
        self.node
            .group_coordinator(&request.group_id)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        let answer = self
            .node
            .coordinator
            .heartbeat(&*self.node, request)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(answer))
    }

    async fn commit_offsets(
        &self,
        request: Request<v1::CommitOffsetsRequest>,
    ) -> Result<Response<v1::CommitOffsetsResponse>, Status> {
        let mut timer = self.node.metrics.time("commit_offsets");
        let request = request.into_inner();
        self.node
            .group_coordinator(&request.group_id)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        self.node
            .coordinator
            .commit(&*self.node, request)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(v1::CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<v1::FetchOffsetsRequest>,
    ) -> Result<Response<v1::FetchOffsetsResponse>, Status> {
        let mut timer = self.node.metrics.time("fetch_offsets");
        let r = request.into_inner();
        self.node
            .group_coordinator(&r.group_id)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(v1::FetchOffsetsResponse {
            offsets: self.node.coordinator.fetch(&r.group_id, &r.topics),
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<v1::ListGroupsRequest>,
    ) -> Result<Response<v1::ListGroupsResponse>, Status> {
        // The groups this broker coordinates; a client asks every broker.
        Ok(Response::new(v1::ListGroupsResponse {
            groups: self
                .node
                .coordinator
                .list()
                .into_iter()
                .filter(|g| self.node.coordinates(&g.group_id))
                .collect(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<v1::DescribeGroupRequest>,
    ) -> Result<Response<v1::GroupDescription>, Status> {
        let mut timer = self.node.metrics.time("describe_group");
        let group = request.into_inner().group_id;
        self.node
            .group_coordinator(&group)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        let description = self
            .node
            .coordinator
            .describe(&*self.node, &group)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(description))
    }

    async fn delete_group(
        &self,
        request: Request<v1::DeleteGroupRequest>,
    ) -> Result<Response<v1::DeleteGroupResponse>, Status> {
        let mut timer = self.node.metrics.time("delete_group");
        let group = request.into_inner().group_id;
        self.node
            .group_coordinator(&group)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        self.node
            .coordinator
            .delete(&*self.node, &group)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(v1::DeleteGroupResponse {}))
    }

    async fn reset_offsets(
        &self,
        request: Request<v1::ResetOffsetsRequest>,
    ) -> Result<Response<v1::CommitOffsetsResponse>, Status> {
        let mut timer = self.node.metrics.time("reset_offsets");
        let request = request.into_inner();
        self.node
            .group_coordinator(&request.group_id)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        self.node
            .coordinator
            .reset(&*self.node, request)
            .await
            .map_err(|f| failed(&mut timer, f))?;
        Ok(Response::new(v1::CommitOffsetsResponse {}))
    }
}

type ReplicaStream = Pin<Box<dyn Stream<Item = Result<v1::ReplicaFetchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl v1::replication_server::Replication for Service {
    type ReplicaFetchStream = ReplicaStream;

    /// One answer per request, in order, until the follower closes the stream or a request
    /// fails (its status ends the stream).
    async fn replica_fetch(
        &self,
        request: Request<tonic::Streaming<v1::ReplicaFetchRequest>>,
    ) -> Result<Response<Self::ReplicaFetchStream>, Status> {
        let mut incoming = request.into_inner();
        let node = Arc::clone(&self.node);
        let mut stopping = self.stopping.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = incoming.message() => next,
                    _ = stopping.wait_for(|&stop| stop) => return,
                };
                let request = match next {
                    Ok(Some(request)) => request,
                    Ok(None) | Err(_) => return,
                };
                let answer = replica_fetch(&node, request).await;
                let failed = answer.is_err();
                if sender.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// One follower's fetch, answered.
async fn replica_fetch(
    node: &Node,
    r: v1::ReplicaFetchRequest,
) -> Result<v1::ReplicaFetchResponse, Status> {
    let partition = node
        .partition(&r.topic, r.partition)
        .map_err(|f| f.status())?;
    let max_wait = Duration::from_millis(u64::try_from(r.max_wait_ms).unwrap_or(0).min(30_000));
    let fetched = partition
        .replica_fetch(
            r.replica_id,
            r.leader_epoch,
            r.fetch_offset,
            r.last_fetched_epoch,
            usize::try_from(r.max_bytes)
                .unwrap_or(1)
                .clamp(1, MAX_FETCH_BYTES),
            max_wait,
        )
        .await
        .map_err(|f| f.status())?;
    let state = partition.state();
    Ok(match fetched {
        ReplicaFetched::Batches {
            batches,
            high_watermark,
            log_start_offset,
            log_end_offset,
        } => {
            node.metrics.follower_lag(
                &r.topic,
                r.partition,
                r.replica_id,
                log_end_offset.saturating_sub(r.fetch_offset),
            );
            v1::ReplicaFetchResponse {
                record_batches: batches,
                high_watermark,
                log_start_offset,
                log_end_offset,
                diverging: None,
            }
        }
        ReplicaFetched::Diverging { epoch, end_offset } => v1::ReplicaFetchResponse {
            record_batches: bytes::Bytes::new(),
            high_watermark: state.high_watermark,
            log_start_offset: state.log_start_offset,
            log_end_offset: state.log_end_offset,
            diverging: Some(v1::EpochEndOffset { epoch, end_offset }),
        },
    })
}
