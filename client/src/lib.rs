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
pub use producer::{Acks, Delivery, Producer, ProducerConfig, ProducerRecord};
pub use weir_proto::Reason;

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

/// A connection to a broker, cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    address: String,
    weir: WeirClient<Channel>,
    admin: AdminClient<Channel>,
    groups: GroupsClient<Channel>,
    /// What producers must know of topics, learnt from Metadata.
    topics: Arc<Mutex<HashMap<String, TopicLimits>>>,
}

impl Client {
    /// Connects to `address` (`host:port`, or a URL).
    ///
    /// # Errors
    /// `Connect` when the broker cannot be reached within a few seconds.
    pub async fn connect(address: &str) -> Result<Client, ClientError> {
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| {
                ClientError::InvalidArgument(format!("bootstrap address {address:?}: {e}"))
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Batches of a MiB and more: HTTP/2's default 64 KiB windows would stall them.
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
            // Fetch answers arrive in frames of this size (HTTP/2's default is 16 KiB).
            .max_frame_size(MAX_FRAME_SIZE);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                address: address.to_string(),
                source,
            })?;
        Ok(Client {
            address: address.to_string(),
            weir: WeirClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            admin: AdminClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            groups: GroupsClient::new(channel),
            topics: Arc::new(Mutex::new(HashMap::default())),
        })
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
        if let Some(&limits) = self
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return Ok(limits);
        }
        let response = self
            .weir()
            .metadata(v1::MetadataRequest {
                topics: vec![topic.to_string()],
            })
            .await?
            .into_inner();
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
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string(), limits);
        Ok(limits)
    }

    /// A producer id and epoch for an idempotent producer.
    ///
    /// # Errors
    /// The broker's error.
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ClientError> {
        let answer = self
            .weir()
            .init_producer_id(v1::InitProducerIdRequest {})
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
        let request = v1::ListOffsetsRequest {
            topic: topic.to_string(),
            partitions: Vec::new(),
            spec: spec as i32,
            timestamp,
        };
        Ok(self
            .weir()
            .list_offsets(request)
            .await?
            .into_inner()
            .offsets)
    }
}
