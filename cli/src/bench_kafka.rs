//! `weir bench kafka-produce|kafka-consume`: throughput through Kafka's wire protocol, with a
//! minimal client of its own (one connection to the broker leading partition 0; batches built
//! by weir-record; fetches counted by their batch headers), against any broker that speaks the
//! protocol: Weir's Kafka port, or another Kafka-compatible broker, measured by the same client.
//! No Weir gRPC endpoint is needed.
//!
//! Produce: Produce v8 requests of `--batch-size` bytes of records, `--max-in-flight` at once,
//! acks=1. Consume: Fetch v11 from offset 0, one at a time (as Kafka's consumers fetch), up to
//! 50 MB a response and 8 MiB a partition.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Output;

const PRODUCE_VERSION: i16 = 8;
const FETCH_VERSION: i16 = 11;
/// The largest response this client reads (a Fetch is at most 50 MB).
const MAX_RESPONSE: usize = 64 << 20;
/// How long one response may take.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KafkaMode {
    Produce,
    Consume,
}

#[derive(Args, Clone)]
pub struct KafkaBenchArgs {
    /// produce or consume.
    #[arg(value_enum)]
    mode: KafkaMode,
    /// The topic (it must exist; partition 0 is used).
    topic: String,
    /// The Kafka address of the broker leading partition 0.
    #[arg(long)]
    kafka: String,
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Bytes of record values in one Produce request (one batch; with the records' own
    /// overhead it must stay under the topic's max.message.bytes, 1 MiB by default).
    #[arg(long, default_value_t = 900_000)]
    batch_size: usize,
    /// Produce requests in flight.
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// text (for people) or json (for scripts).
    #[arg(long = "format", value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(args: KafkaBenchArgs) -> anyhow::Result<ExitCode> {
    let mut connection = Connection::open(&args.kafka).await?;
    let started = Instant::now();
    match args.mode {
        KafkaMode::Produce => produce(&mut connection, &args).await?,
        KafkaMode::Consume => consume(&mut connection, &args).await?,
    }
    let seconds = started.elapsed().as_secs_f64();
    let records_per_sec = args.records as f64 / seconds;
    let mb_per_sec = records_per_sec * args.record_size as f64 / 1e6;
    let mode = match args.mode {
        KafkaMode::Produce => "kafka-produce",
        KafkaMode::Consume => "kafka-consume",
    };
    match args.output {
        Output::Json => outln!(
            "{}",
            json!({
                "mode": mode,
                "topic": args.topic,
                "records": args.records,
                "record_size": args.record_size,
                "seconds": seconds,
                "records_per_sec": records_per_sec,
                "mb_per_sec": mb_per_sec,
            })
        ),
        Output::Text => outln!(
            "{mode}: {} records of {} B in {seconds:.2} s: {records_per_sec:.0} records/s, {mb_per_sec:.1} MB/s",
            args.records,
            args.record_size
        ),
    }
    Ok(ExitCode::SUCCESS)
}

struct Connection {
    stream: TcpStream,
    next_correlation: i32,
    buffer: BytesMut,
}

impl Connection {
    async fn open(address: &str) -> anyhow::Result<Connection> {
        let stream = tokio::time::timeout(RESPONSE_DEADLINE, TcpStream::connect(address))
            .await
            .with_context(|| format!("connect to {address}: no answer"))?
            .with_context(|| format!("connect to {address}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            next_correlation: 0,
            buffer: BytesMut::new(),
        })
    }

    /// Sends a request; its correlation id.
    async fn send(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &impl Encodable,
    ) -> anyhow::Result<i32> {
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next_correlation)
            .with_client_id(Some(StrBytes::from_static_str("weir-bench")));
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0; 4]);
        header.encode(&mut self.buffer, key.request_header_version(version))?;
        body.encode(&mut self.buffer, version)?;
        let length = i32::try_from(self.buffer.len() - 4)?;
        self.buffer[..4].copy_from_slice(&length.to_be_bytes());
        self.stream.write_all(&self.buffer).await?;
        Ok(self.next_correlation)
    }

    /// Reads the next response, which must answer `correlation`: its body.
    async fn receive(
        &mut self,
        key: ApiKey,
        version: i16,
        correlation: i32,
    ) -> anyhow::Result<Bytes> {
        let read = async {
            let length = self.stream.read_i32().await?;
            let length = usize::try_from(length)
                .ok()
                .filter(|n| *n <= MAX_RESPONSE)
                .with_context(|| format!("a response of {length} bytes"))?;
            let mut frame = BytesMut::zeroed(length);
            self.stream.read_exact(&mut frame).await?;
            anyhow::Ok(frame.freeze())
        };
        let mut frame = tokio::time::timeout(RESPONSE_DEADLINE, read)
            .await
            .context("no response within 30 s")??;
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))?;
        if header.correlation_id != correlation {
            bail!(
                "response {} came for request {correlation}",
                header.correlation_id
            );
        }
        Ok(frame)
    }
}

/// A Produce request of about `batch_size` bytes of records: the request, and its records.
fn produce_request(args: &KafkaBenchArgs, first: u64, value: &[u8]) -> (ProduceRequest, u64) {
    let per_batch = (args.batch_size / args.record_size.max(1)).max(1) as u64;
    let count = per_batch.min(args.records - first);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut builder = weir_record::BatchBuilder::new(0);
    for _ in 0..count {
        builder.push(&weir_record::Record {
            timestamp: now,
            key: None,
            value: Some(value),
            headers: Vec::new(),
        });
    }
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(Bytes::from(builder.build())));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(args.topic.clone())))
        .with_partition_data(vec![partition]);
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![topic]);
    (request, count)
}

async fn produce(connection: &mut Connection, args: &KafkaBenchArgs) -> anyhow::Result<()> {
    let value = vec![b'x'; args.record_size];
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut in_flight: VecDeque<(i32, u64)> = VecDeque::new();
    while acked < args.records {
        while sent < args.records && in_flight.len() < args.max_in_flight.max(1) {
            let (request, count) = produce_request(args, sent, &value);
            let correlation = connection
                .send(ApiKey::Produce, PRODUCE_VERSION, &request)
                .await?;
            in_flight.push_back((correlation, count));
            sent += count;
        }
        let (correlation, count) = in_flight.pop_front().context("nothing in flight")?;
        let mut body = connection
            .receive(ApiKey::Produce, PRODUCE_VERSION, correlation)
            .await?;
        let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION)?;
        for topic in &response.responses {
            for partition in &topic.partition_responses {
                if partition.error_code != 0 {
                    bail!(
                        "{}-{}: error code {}",
                        topic.name.0,
                        partition.index,
                        partition.error_code
                    );
                }
            }
        }
        acked += count;
    }
    Ok(())
}

/// Records in `batches` (record batches laid end to end, the last maybe cut short) from
/// `offset` on, and the offset after the last whole batch, from the batch headers alone.
fn count_records(mut batches: &[u8], offset: i64) -> (u64, i64) {
    let (mut count, mut next) = (0, offset);
    while let Ok(header) = weir_record::BatchHeader::parse(batches) {
        if header.size() > batches.len() {
            break;
        }
        if header.last_offset() >= offset {
            // A batch may begin before the fetch offset: count only what follows it.
            let skipped = (offset - header.base_offset).max(0);
            count += (i64::from(header.record_count) - skipped).max(0) as u64;
            next = header.next_offset();
        }
        batches = &batches[header.size()..];
    }
    (count, next)
}

async fn consume(connection: &mut Connection, args: &KafkaBenchArgs) -> anyhow::Result<()> {
    let (mut offset, mut got) = (0i64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(600);
    while got < args.records {
        if Instant::now() > deadline {
            bail!("read {got} of {} records in 600 s", args.records);
        }
        let partition = FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(8 << 20);
        let topic = FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(args.topic.clone())))
            .with_partitions(vec![partition]);
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(50_000_000)
            .with_session_epoch(-1)
            .with_topics(vec![topic]);
        let correlation = connection
            .send(ApiKey::Fetch, FETCH_VERSION, &request)
            .await?;
        let mut body = connection
            .receive(ApiKey::Fetch, FETCH_VERSION, correlation)
            .await?;
        let response = FetchResponse::decode(&mut body, FETCH_VERSION)?;
        if response.error_code != 0 {
            bail!("fetch: error code {}", response.error_code);
        }
        for topic in &response.responses {
            for partition in &topic.partitions {
                if partition.error_code != 0 {
                    bail!("fetch of partition 0: error code {}", partition.error_code);
                }
                if let Some(records) = &partition.records {
                    let (count, next) = count_records(records, offset);
                    got += count;
                    offset = next;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_from_the_fetch_offset_and_a_cut_batch_is_left() {
        let batch = |base: i64, n: usize| {
            let mut builder = weir_record::BatchBuilder::new(base);
            for _ in 0..n {
                builder.push(&weir_record::Record {
                    timestamp: 1,
                    key: None,
                    value: Some(b"v"),
                    headers: Vec::new(),
                });
            }
            builder.build()
        };
        let mut bytes = batch(0, 10);
        bytes.extend(batch(10, 5));
        assert_eq!(count_records(&bytes, 0), (15, 15));
        assert_eq!(count_records(&bytes, 4), (11, 15));
        let cut = bytes.len() - 3;
        assert_eq!(count_records(&bytes[..cut], 0), (10, 10));
    }
}
