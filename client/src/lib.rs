//! weir-client: talk to Weir brokers over gRPC.
//!
//! - [`Client`]: a connection, topic metadata and the admin calls.
//! - [`Producer`]: batches records per partition (linger, batch size), encodes them as
//!   RecordBatch v2 on the caller's thread and sends them on the broker's fast path, with
//!   retries; each record's [`Delivery`] resolves to its offset.
//! - [`Consumer`]: reads partitions it is given from chosen positions.
//! - [`GroupConsumer`]: a member of a consumer group; the broker assigns its partitions.
//!
//! Producers are idempotent by default: a batch retried after a lost answer is written once.

mod admin;
mod consumer;
mod error;
mod group;
mod producer;
mod retry;

use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use weir_proto::v1;
use weir_proto::v1::admin_client::AdminClient;
use weir_proto::v1::groups_client::GroupsClient;
use weir_proto::v1::weir_client::WeirClient;

pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, StartAt, decode};
pub use error::ClientError;
pub use group::{GroupConfig, GroupConsumer};
pub use producer::{Acks, Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use retry::{Retry, RetryPolicy};
pub use weir_proto::Reason;

/// The internal topic whose partitions' leaders coordinate consumer groups.
const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// HTTP/2 flow-control windows, large enough for a batch or a fetch to cross in one go.
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;
/// The largest HTTP/2 frame: small frames cost a write and a parse each.
const MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// The largest gRPC message sent or accepted, as the broker's.
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// What a producer must know of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    pub partitions: u32,
    /// The topic's `max.message.bytes`: no batch may be larger.
    pub max_batch_size: usize,
}

/// How a client behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientConfig {
    /// Retries of metadata, admin and group calls (a broker restarting, a leader moving); its
    /// deadline is Kafka's `default.api.timeout.ms`.
    pub retry: RetryPolicy,
}

/// A connection to a broker, cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    address: String,
    config: ClientConfig,
    weir: WeirClient<Channel>,
    admin: AdminClient<Channel>,
    groups: GroupsClient<Channel>,
    /// What producers must know of topics, and where each partition's leader is, learnt
    /// from Metadata.
    topics: Arc<Mutex<HashMap<String, TopicRoute>>>,
    /// A client per broker address, for requests that must reach a partition's leader.
    /// The channel to the bootstrap broker.
    bootstrap: Channel,
    /// One channel per broker address other than the bootstrap's, shared by every request
    /// to that broker.
    peers: Arc<Mutex<HashMap<String, Channel>>>,
    /// Every broker's address, as the last Metadata answer named them: where to ask when the
    /// bootstrap broker is down.
    known: Arc<Mutex<Vec<String>>>,
}

/// A topic as a client routes to it.
#[derive(Debug, Clone)]
struct TopicRoute {
    limits: TopicLimits,
    /// The leader's address per partition; `None` while a partition has no leader.
    leaders: Arc<[Option<String>]>,
    /// The leader epoch per partition, as the metadata said.
    epochs: Arc<[i32]>,
}

fn endpoint(address: &str) -> Result<Endpoint, ClientError> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|e| ClientError::InvalidArgument(format!("broker address {address:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        // A request never waits for ever (the broker bounds long polls at 60 s), and keepalive
        // pings find a broker that went silent.
        .timeout(Duration::from_secs(65))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        // Batches of a MiB and more: HTTP/2's default 64 KiB windows would stall them.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        // Fetch answers arrive in frames of this size (HTTP/2's default is 16 KiB).
        .max_frame_size(MAX_FRAME_SIZE))
}

fn weir_client(channel: Channel) -> WeirClient<Channel> {
    WeirClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

impl Client {
    /// Connects to `address` (`host:port`, or a URL), waiting (as [`ClientConfig`]'s retry
    /// policy allows) while the broker cannot be reached or is starting.
    ///
    /// # Errors
    /// `InvalidArgument` for an address that is not one; the broker's last error when it
    /// cannot be reached before the deadline.
    pub async fn connect(address: &str) -> Result<Client, ClientError> {
        Client::connect_with(address, ClientConfig::default()).await
    }

    /// [`Client::connect`] with a config of the caller's.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with(address: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let channel = endpoint(address)?.connect_lazy();
        let client = Client::from_channel(address, channel, config);
        let what = format!("waiting for the broker at {address}");
        client
            .retrying(&what, || async {
                client
                    .weir()
                    .metadata(v1::MetadataRequest { topics: Vec::new() })
                    .await
                    .map_err(ClientError::from)
            })
            .await?;
        Ok(client)
    }

    fn from_channel(address: &str, channel: Channel, config: ClientConfig) -> Client {
        Client {
            address: address.to_string(),
            config,
            weir: weir_client(channel.clone()),
            admin: AdminClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            groups: GroupsClient::new(channel.clone()),
            bootstrap: channel,
            topics: Arc::new(Mutex::new(HashMap::default())),
            peers: Arc::new(Mutex::new(HashMap::default())),
            known: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The retry policy of metadata, admin and group calls.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.config.retry
    }

    /// Runs `call` until it succeeds, fails for good, or the retry policy's deadline comes;
    /// between tries, pauses as the policy says and says what it waits for (`what`).
    ///
    /// # Errors
    /// The last error.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut retry = self.config.retry.start();
        loop {
            match call().await {
                Ok(answer) => return Ok(answer),
                Err(error) => {
                    if !retry.pause(what, &error).await {
                        return Err(error);
                    }
                }
            }
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn weir(&self) -> WeirClient<Channel> {
        self.weir.clone()
    }

    pub(crate) fn groups(&self) -> GroupsClient<Channel> {
        self.groups.clone()
    }

    /// The leader epoch of a partition as the cached metadata has it (KIP-320: requests carry
    /// it, so a deposed leader refuses them).
    pub(crate) fn leader_epoch(&self, topic: &str, partition: i32) -> Option<i32> {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = *topics
            .get(topic)?
            .epochs
            .get(usize::try_from(partition).ok()?)?;
        (epoch >= 0).then_some(epoch)
    }

    /// A client of the broker that coordinates `group`: the leader of the group's partition
    /// of `__consumer_offsets` (Kafka's murmur2 of the group id). Before that topic exists,
    /// the bootstrap broker (which creates it). [`Client::forget_coordinators`] after a
    /// `NOT_COORDINATOR`.
    ///
    /// # Errors
    /// As [`Client::leader`].
    pub(crate) async fn coordinator(
        &self,
        group: &str,
    ) -> Result<GroupsClient<Channel>, ClientError> {
        let route = match self.route(OFFSETS_TOPIC).await {
            Ok(route) => route,
            Err(e) if e.reason() == Some(Reason::UnknownTopic) => return Ok(self.groups()),
            Err(e) => return Err(e),
        };
        let partition = weir_proto::partitioner::partition_for_key(
            group.as_bytes(),
            route.limits.partitions.max(1),
        ) as usize;
        let Some(address) = route.leaders.get(partition).cloned().flatten() else {
            self.forget(OFFSETS_TOPIC);
            return Err(ClientError::Broker {
                reason: Some(Reason::NotCoordinator),
                code: tonic::Code::Unavailable,
                message: format!("group {group:?} has no coordinator now"),
            });
        };
        if address == self.address {
            return Ok(self.groups());
        }
        Ok(GroupsClient::new(self.channel(&address)?))
    }

    /// The channel to the broker at `address` (the bootstrap's own for its address), made the
    /// first time it is needed.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        if address == self.address {
            return Ok(self.bootstrap.clone());
        }
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = peers.get(address) {
            return Ok(channel.clone());
        }
        let channel = endpoint(address)?.connect_lazy();
        peers.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Forgets where groups are coordinated (after `NOT_COORDINATOR`).
    pub(crate) fn forget_coordinators(&self) {
        self.forget(OFFSETS_TOPIC);
    }

    /// Every broker's address as the last Metadata named them (the bootstrap's first).
    pub(crate) async fn brokers(&self) -> Vec<String> {
        if let Ok(answer) = self
            .weir()
            .metadata(v1::MetadataRequest { topics: Vec::new() })
            .await
        {
            *self.known.lock().unwrap_or_else(|p| p.into_inner()) = answer
                .into_inner()
                .brokers
                .into_iter()
                .map(|b| b.address)
                .collect();
        }
        let mut all = vec![self.address.clone()];
        all.extend(
            self.known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|a| **a != self.address)
                .cloned(),
        );
        all
    }

    /// The number of partitions of `topic`, from a cache filled by Metadata.
    ///
    /// # Errors
    /// The broker's error, e.g. `UNKNOWN_TOPIC`.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        Ok(self.topic_limits(topic).await?.partitions)
    }

    /// What a producer must know of `topic`, from a cache filled by Metadata.
    ///
    /// # Errors
    /// The broker's error, e.g. `UNKNOWN_TOPIC`.
    pub async fn topic_limits(&self, topic: &str) -> Result<TopicLimits, ClientError> {
        // Once per record sent: no clone of the route when it is cached.
        if let Some(route) = self
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return Ok(route.limits);
        }
        Ok(self.route(topic).await?.limits)
    }

    /// A client of the broker that leads `partition` of `topic`, from the cached metadata
    /// (refreshed when absent; [`Client::forget`] it after a leadership error).
    ///
    /// # Errors
    /// The broker's error for the topic; `LEADER_NOT_AVAILABLE` while the partition has no
    /// leader.
    pub(crate) async fn leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<WeirClient<Channel>, ClientError> {
        self.leader_at(topic, partition)
            .await
            .map(|(client, _)| client)
    }

    /// [`Client::leader`], with the address it reaches (to name it when the connection fails:
    /// an advertised address this client cannot resolve or reach).
    ///
    /// # Errors
    /// As [`Client::leader`].
    pub(crate) async fn leader_at(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(WeirClient<Channel>, String), ClientError> {
        let route = self.route(topic).await?;
        let address = usize::try_from(partition)
            .ok()
            .and_then(|p| route.leaders.get(p))
            .cloned()
            .flatten();
        let Some(address) = address else {
            self.forget(topic);
            return Err(ClientError::Broker {
                reason: Some(Reason::LeaderNotAvailable),
                code: tonic::Code::Unavailable,
                message: format!("{topic}-{partition} has no leader now"),
            });
        };
        if address == self.address {
            return Ok((self.weir(), address));
        }
        Ok((weir_client(self.channel(&address)?), address))
    }

    /// Metadata of `topic` from the bootstrap broker, or, when it cannot be reached, from
    /// the other brokers the last answer named.
    async fn metadata(&self, topic: &str) -> Result<v1::MetadataResponse, ClientError> {
        let what = format!("waiting for metadata of topic {topic:?}");
        self.retrying(&what, || self.metadata_once(topic)).await
    }

    async fn metadata_once(&self, topic: &str) -> Result<v1::MetadataResponse, ClientError> {
        let request = v1::MetadataRequest {
            topics: vec![topic.to_string()],
        };
        let first = match self.weir().metadata(request.clone()).await {
            Ok(answer) => return Ok(answer.into_inner()),
            Err(status) => ClientError::from(status),
        };
        if !first.is_retryable() {
            return Err(first);
        }
        let others: Vec<String> = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|a| **a != self.address)
            .cloned()
            .collect();
        for address in others {
            let mut client = weir_client(self.channel(&address)?);
            if let Ok(answer) = client.metadata(request.clone()).await {
                return Ok(answer.into_inner());
            }
        }
        Err(first)
    }

    async fn route(&self, topic: &str) -> Result<TopicRoute, ClientError> {
        if let Some(route) = self
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return Ok(route.clone());
        }
        let response = self.metadata(topic).await?;
        let described = response
            .topics
            .iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!("the broker did not describe topic {topic:?}"))
            })?;
        let limits = TopicLimits {
            partitions: described.partitions.len() as u32,
            max_batch_size: described
                .config
                .get("max.message.bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX),
        };
        let address = |id: i32| {
            response
                .brokers
                .iter()
                .find(|b| b.id == id)
                .map(|b| b.address.clone())
        };
        let mut leaders = vec![None; described.partitions.len()];
        let mut epochs = vec![-1; described.partitions.len()];
        for p in &described.partitions {
            if let Ok(i) = usize::try_from(p.partition)
                && i < leaders.len()
            {
                leaders[i] = address(p.leader);
                epochs[i] = p.leader_epoch;
            }
        }
        let route = TopicRoute {
            limits,
            leaders: leaders.into(),
            epochs: epochs.into(),
        };
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) =
            response.brokers.iter().map(|b| b.address.clone()).collect();
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string(), route.clone());
        Ok(route)
    }

    /// A producer id and epoch for an idempotent producer.
    ///
    /// # Errors
    /// The broker's error.
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ClientError> {
        let answer = self
            .retrying("waiting for a producer id", || async {
                self.weir()
                    .init_producer_id(v1::InitProducerIdRequest {})
                    .await
                    .map_err(ClientError::from)
            })
            .await?
            .into_inner();
        Ok((answer.producer_id, answer.producer_epoch as i16))
    }

    /// Forgets cached metadata of `topic` (after it changed).
    pub fn forget(&self, topic: &str) {
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
    }

    /// Offsets of every partition of `topic`.
    ///
    /// # Errors
    /// The broker's error.
    pub async fn list_offsets(
        &self,
        topic: &str,
        spec: v1::OffsetSpec,
        timestamp: i64,
    ) -> Result<Vec<v1::PartitionOffset>, ClientError> {
        let count = self.partition_count(topic).await? as i32;
        let all: Vec<i32> = (0..count).collect();
        self.list_partition_offsets(topic, &all, spec, timestamp)
            .await
    }

    /// Offsets of `partitions` of `topic`.
    ///
    /// # Errors
    /// The broker's error.
    pub async fn list_partition_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: v1::OffsetSpec,
        timestamp: i64,
    ) -> Result<Vec<v1::PartitionOffset>, ClientError> {
        // Each partition's leader answers for it.
        let mut offsets = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let request = v1::ListOffsetsRequest {
                topic: topic.to_string(),
                partitions: vec![partition],
                spec: spec as i32,
                timestamp,
            };
            let what = format!("waiting for the offsets of {topic}-{partition}");
            let answer = self
                .retrying(&what, || async {
                    let answer = self
                        .leader(topic, partition)
                        .await?
                        .list_offsets(request.clone())
                        .await;
                    answer.map_err(|status| {
                        self.forget(topic);
                        ClientError::from(status)
                    })
                })
                .await?;
            offsets.extend(answer.into_inner().offsets);
        }
        Ok(offsets)
    }
}
