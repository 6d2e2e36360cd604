//! A real single broker process on loopback, driven by the real CLI and the Rust client.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use weir_client::{
    Acks, Client, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, Reason,
    RetryPolicy, StartAt,
};
use weir_proto::partitioner::partition_for_key;
use weir_proto::v1;
mod cli;
mod dashboard;
mod groups;
mod hardening;
mod harness;
mod kafka;
mod kafka_groups;
mod kafka_wire;
mod restart;

use harness::{BrokerProcess, weir, weir_ok};

fn lines_json(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn cli_round_trip_keeps_keys_in_their_partitions_with_headers_and_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.address.as_str();
    weir_ok(b, &["topic", "create", "events", "--partitions", "6"], "");
    let mut input = String::new();
    for i in 0..60 {
        input.push_str(&format!("user-{}|payload-{i}\n", i % 7));
    }
    let produced = weir(
        b,
        &[
            "produce",
            "events",
            "--key-separator",
            "|",
            "--header",
            "source=cli",
            "--header",
            "n=1",
        ],
        &input,
    );
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );

    let out = weir_ok(
        b,
        &[
            "consume",
            "events",
            "--from-beginning",
            "--max-messages",
            "60",
            "--format",
            "json",
            "--timeout",
            "10s",
        ],
        "",
    );
    let records = lines_json(&out);
    assert_eq!(records.len(), 60);
    let mut partition_of_key: HashMap<String, i64> = HashMap::new();
    let mut values = Vec::new();
    for record in &records {
        let key = record["key"].as_str().expect("key").to_string();
        let partition = record["partition"].as_i64().expect("partition");
        assert_eq!(
            partition,
            i64::from(partition_for_key(key.as_bytes(), 6)),
            "{key} lands where Kafka's partitioner puts it"
        );
        assert_eq!(
            *partition_of_key.entry(key).or_insert(partition),
            partition,
            "the same key, the same partition"
        );
        assert_eq!(record["headers"]["source"], "cli");
        assert_eq!(record["headers"]["n"], "1");
        assert!(record["timestamp"].as_i64().expect("timestamp") > 1_600_000_000_000);
        assert_eq!(record["topic"], "events");
        values.push(record["value"].as_str().expect("value").to_string());
    }
    values.sort();
    let mut expected: Vec<String> = (0..60).map(|i| format!("payload-{i}")).collect();
    expected.sort();
    assert_eq!(values, expected, "every record exactly once");

    // Text output prints values; --partition and --offset pick where to read.
    let first = records
        .iter()
        .find(|r| r["offset"] == 0)
        .expect("a first record");
    let partition = first["partition"].to_string();
    let text = weir_ok(
        b,
        &[
            "consume",
            "events",
            "--partition",
            &partition,
            "--offset",
            "0",
            "--max-messages",
            "1",
            "--timeout",
            "5s",
        ],
        "",
    );
    assert_eq!(text.trim(), first["value"].as_str().expect("value"));

    let described: Value = serde_json::from_str(&weir_ok(
        b,
        &["topic", "describe", "events", "--output", "json"],
        "",
    ))
    .expect("json");
    assert_eq!(described["name"], "events");
    let partitions = described["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 6);
    let total: i64 = partitions
        .iter()
        .map(|p| {
            p["log_end_offset"].as_i64().expect("end")
                - p["log_start_offset"].as_i64().expect("start")
        })
        .sum();
    assert_eq!(total, 60);
    for p in partitions {
        assert_eq!(p["high_watermark"], p["log_end_offset"]);
        assert_eq!(p["replicas"], serde_json::json!([0]));
        assert_eq!(p["isr"], serde_json::json!([0]));
        assert_eq!(p["leader"], 0);
    }
    assert_eq!(described["config"]["cleanup.policy"], "delete");

    let listed = weir_ok(b, &["topic", "list", "--output", "json"], "");
    let listed: Value = serde_json::from_str(&listed).expect("json");
    let names: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["__consumer_offsets", "events"],
        "the internal topic is listed, as Kafka's is"
    );
    weir_ok(
        b,
        &[
            "topic",
            "alter",
            "events",
            "--config",
            "retention.ms=60000",
            "--partitions",
            "8",
        ],
        "",
    );
    let altered: Value = serde_json::from_str(&weir_ok(
        b,
        &["topic", "describe", "events", "--output", "json"],
        "",
    ))
    .expect("json");
    assert_eq!(altered["config"]["retention.ms"], "60000");
    assert_eq!(
        altered["partitions"].as_array().expect("partitions").len(),
        8
    );
    weir_ok(b, &["topic", "delete", "events"], "");
    let gone = weir(b, &["topic", "describe", "events"], "");
    assert_eq!(gone.status.code(), Some(1));
}

/// Runs a failing command and returns its single stderr line.
fn fails(broker: &str, args: &[&str], stdin: &str) -> String {
    let output = weir(broker, args, stdin);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "weir {args:?} should fail: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line on stderr: {stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.address.clone();
    let b = b.as_str();
    weir_ok(
        b,
        &[
            "topic",
            "create",
            "small",
            "--config",
            "max.message.bytes=1000",
        ],
        "",
    );

    assert!(fails(b, &["produce", "nosuch"], "x\n").contains("topic \"nosuch\" does not exist"));
    assert!(fails(b, &["topic", "create", "bad/name"], "").contains("contains '/'"));
    assert!(
        fails(
            b,
            &["topic", "create", "ok", "--config", "flush.mesages=1"],
            ""
        )
        .contains("unknown config key \"flush.mesages\"")
    );
    assert!(
        fails(
            b,
            &["topic", "create", "ok", "--config", "retention.ms=soon"],
            ""
        )
        .contains("retention.ms")
    );
    assert!(
        fails(
            b,
            &["topic", "create", "ok", "--replication-factor", "3"],
            ""
        )
        .contains("replication factor 3")
    );
    assert!(fails(b, &["topic", "create", "small"], "").contains("already exists"));
    let large = format!("{}\n", "x".repeat(2000));
    assert!(
        fails(b, &["produce", "small"], &large).contains("larger than max.message.bytes (1000)")
    );
    assert!(
        fails(
            b,
            &["consume", "small", "--offset", "5", "--timeout", "2s"],
            ""
        )
        .contains("offset 5 is out of range")
    );
    assert_eq!(
        weir(b, &["consume"], "").status.code(),
        Some(2),
        "a usage error"
    );

    // Malformed batch bytes sent straight through the API: refused with a reason.
    let client = Client::connect(b).await.expect("connect");
    let request = v1::ProduceRequest {
        topic: "small".into(),
        acks: v1::Acks::Leader as i32,
        batches: vec![v1::PartitionBatches {
            partition: 0,
            record_batches: Bytes::from_static(&[0, 1, 2, 3, 255, 255, 255, 255, 9]),
            leader_epoch: None,
        }],
        records: Vec::new(),
    };
    let mut raw = weir_proto::v1::weir_client::WeirClient::connect(format!("http://{b}"))
        .await
        .expect("connect");
    let response = raw.produce(request).await.expect("answered").into_inner();
    let error = response.results[0].error.as_ref().expect("refused");
    assert_eq!(error.reason, "INVALID_RECORD", "{}", error.message);
    // A partition that does not exist, and an unknown topic, as statuses with a reason.
    let status = raw
        .fetch(v1::FetchRequest {
            topic: "small".into(),
            partition: 7,
            offset: 0,
            max_bytes: 100,
            min_bytes: 0,
            max_wait_ms: 0,
            current_leader_epoch: None,
        })
        .await
        .expect_err("no partition 7");
    assert_eq!(Reason::of(&status), Some(Reason::UnknownPartition));
    let status = raw
        .fetch(v1::FetchRequest {
            topic: "gone".into(),
            partition: 0,
            offset: 0,
            max_bytes: 100,
            min_bytes: 0,
            max_wait_ms: 0,
            current_leader_epoch: None,
        })
        .await
        .expect_err("no topic");
    assert_eq!(Reason::of(&status), Some(Reason::UnknownTopic));

    let small = client.describe_topic("small").await.expect("describe");
    assert_eq!(
        small.partitions[0].log_end_offset, 0,
        "nothing refused was written"
    );
    assert!(!std::path::Path::new(&dir.path().join("data/nosuch-0")).exists());
    assert!(!std::path::Path::new(&dir.path().join("data/ok-0")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill_with_flush_per_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::start(&data, &[]);
    // Once the broker is killed, a send must not wait the default minute for metadata.
    let client = Client::connect_with(
        &broker.address,
        weir_client::ClientConfig {
            retry: RetryPolicy::default().with_deadline(Duration::from_secs(1)),
        },
    )
    .await
    .expect("connect");
    let config = BTreeMap::from([("flush.messages".to_string(), "1".to_string())]);
    client
        .create_topic("durable", 2, 1, config)
        .await
        .expect("create");

    // Two producers send until the broker dies; every acknowledged record is remembered.
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for producer_id in 0..2 {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        producers.push(tokio::spawn(async move {
            let producer = Producer::new(
                client,
                ProducerConfig {
                    acks: Acks::Leader,
                    retry: RetryPolicy::default().with_deadline(Duration::ZERO),
                    linger: Duration::from_millis(1),
                    ..ProducerConfig::default()
                },
            );
            let mut acknowledged = Vec::new();
            let mut pending = Vec::new();
            for i in 0..200_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let value = format!("p{producer_id}-{i}");
                let record = ProducerRecord {
                    partition: Some(producer_id),
                    ..ProducerRecord::new("durable", value.clone())
                };
                let Ok(delivery) = producer.send(record).await else {
                    break;
                };
                pending.push((value, delivery));
                if pending.len() >= 50 {
                    for (value, delivery) in pending.drain(..) {
                        if let Ok(Ok(metadata)) =
                            tokio::time::timeout(Duration::from_secs(30), delivery.wait()).await
                        {
                            acknowledged.push((
                                metadata.partition,
                                metadata.offset.expect("acks=1 gives offsets"),
                                value,
                            ));
                        }
                    }
                }
            }
            for (value, delivery) in pending {
                if let Ok(metadata) = tokio::time::timeout(Duration::from_secs(10), delivery.wait())
                    .await
                    .unwrap_or(Err(weir_client::ClientError::Closed))
                {
                    acknowledged.push((
                        metadata.partition,
                        metadata.offset.expect("offsets"),
                        value,
                    ));
                }
            }
            acknowledged
        }));
    }
    // Kill in the middle of producing.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ends = client
            .list_offsets("durable", v1::OffsetSpec::Latest, 0)
            .await
            .expect("offsets");
        if ends.iter().all(|o| o.offset.unwrap_or(0) >= 300) || std::time::Instant::now() > deadline
        {
            break;
        }
    }
    broker.kill();
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for producer in producers {
        acknowledged.extend(producer.await.expect("producer task"));
    }
    assert!(
        acknowledged.len() >= 600,
        "only {} acknowledged before the kill",
        acknowledged.len()
    );

    let broker = BrokerProcess::start(&data, &[]);
    let client = Client::connect(&broker.address).await.expect("reconnect");
    let mut consumer = Consumer::assign(
        client,
        "durable",
        None,
        StartAt::Earliest,
        ConsumerConfig::default(),
    )
    .await
    .expect("consumer");
    let mut stored: HashMap<(i32, i64), String> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let records = consumer.poll().await.expect("poll");
        if records.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        for r in records {
            stored.insert(
                (r.partition, r.offset),
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
            );
        }
    }
    for (partition, offset, value) in &acknowledged {
        assert_eq!(
            stored.get(&(*partition, *offset)),
            Some(value),
            "acknowledged record {partition}/{offset} lost or changed"
        );
    }
    eprintln!(
        "{} acknowledged records all present after SIGKILL ({} stored)",
        acknowledged.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_log_cleanly_and_data_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::start(&data, &[]);
    weir_ok(
        &broker.address,
        &["topic", "create", "kept", "--partitions", "2"],
        "",
    );
    weir_ok(
        &broker.address,
        &["produce", "kept", "--partition", "1"],
        "a\nb\nc\n",
    );
    assert_eq!(broker.terminate(), Some(0));
    assert!(broker.log().contains("stopped cleanly"));
    for partition in 0..2 {
        assert!(
            data.join(format!("kept-{partition}/.clean-shutdown"))
                .exists(),
            "partition {partition} closed cleanly"
        );
    }
    let broker = BrokerProcess::start(&data, &[]);
    let out = weir_ok(
        &broker.address,
        &[
            "consume",
            "kept",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout",
            "10s",
        ],
        "",
    );
    assert_eq!(out, "a\nb\nc\n");
}

#[test]
fn metrics_and_health_endpoints_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(&broker.address, &["topic", "create", "watched"], "");
    weir_ok(&broker.address, &["produce", "watched"], "one\ntwo\n");
    weir_ok(
        &broker.address,
        &[
            "consume",
            "watched",
            "--from-beginning",
            "--max-messages",
            "2",
            "--timeout",
            "10s",
        ],
        "",
    );
    let (status, body) = broker.http_get("/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");
    let (status, _) = broker.http_get("/readyz");
    assert!(status.contains("200"), "{status}");
    // Log gauges are refreshed by the maintenance timer (every 200 ms).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (status, metrics) = loop {
        let (status, metrics) = broker.http_get("/metrics");
        if metrics.contains("weir_log_end_offset{topic=\"watched\",partition=\"0\"} 2")
            || std::time::Instant::now() > deadline
        {
            break (status, metrics);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.contains("200"), "{status}");
    assert!(
        metrics.contains("weir_records_in_total{topic=\"watched\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_records_out_total{topic=\"watched\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_request_duration_seconds_bucket{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_log_end_offset{topic=\"watched\",partition=\"0\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_log_size_bytes{topic=\"watched\",partition=\"0\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_pushes_batches_as_they_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let client = Client::connect(&broker.address).await.expect("connect");
    client
        .create_topic("pushed", 1, 1, BTreeMap::new())
        .await
        .expect("create");
    let mut raw =
        weir_proto::v1::weir_client::WeirClient::connect(format!("http://{}", broker.address))
            .await
            .expect("connect");
    let mut stream = raw
        .subscribe(v1::SubscribeRequest {
            topic: "pushed".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let producer = Producer::new(client, ProducerConfig::default());
    let mut received = Vec::new();
    for round in 0..3 {
        let value = format!("round-{round}");
        let delivery = producer
            .send(ProducerRecord::new("pushed", value.clone()))
            .await
            .expect("send");
        tokio::time::timeout(Duration::from_secs(30), delivery.wait())
            .await
            .expect("in time")
            .expect("acknowledged");
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("pushed in time")
            .expect("stream")
            .expect("a message");
        let mut records = Vec::new();
        weir_client::decode(
            &"pushed".into(),
            0,
            &message.record_batches,
            0,
            &mut records,
        )
        .expect("valid batches");
        received.extend(
            records.into_iter().map(|r| {
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
            }),
        );
        assert_eq!(received.last(), Some(&value));
    }
    assert_eq!(received, ["round-0", "round-1", "round-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_written_once_and_a_sequence_gap_is_refused() {
    use weir_record::{BatchBuilder, Record};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::start(&data, &[]);
    let client = Client::connect(&broker.address).await.expect("connect");
    client
        .create_topic("once", 1, 1, BTreeMap::new())
        .await
        .expect("create");
    let (producer_id, epoch) = client.init_producer_id().await.expect("producer id");

    let batch = |sequence: i32, values: &[&str]| {
        let mut builder = BatchBuilder::new(0).producer(producer_id, epoch, sequence);
        for v in values {
            builder.push(&Record {
                timestamp: 1,
                value: Some(v.as_bytes()),
                ..Record::default()
            });
        }
        Bytes::from(builder.build())
    };
    let produce = |address: String, bytes: Bytes| async move {
        let mut raw = weir_proto::v1::weir_client::WeirClient::connect(format!("http://{address}"))
            .await
            .expect("connect");
        let request = v1::ProduceRequest {
            topic: "once".into(),
            acks: v1::Acks::Leader as i32,
            batches: vec![v1::PartitionBatches {
                partition: 0,
                record_batches: bytes,
                leader_epoch: None,
            }],
            records: Vec::new(),
        };
        raw.produce(request)
            .await
            .expect("answered")
            .into_inner()
            .results
            .remove(0)
    };
    let first = produce(broker.address.clone(), batch(0, &["a", "b", "c"])).await;
    assert_eq!((first.base_offset, first.last_offset), (Some(0), Some(2)));
    // The answer was "lost" and the producer sends the same batch again.
    let retried = produce(broker.address.clone(), batch(0, &["a", "b", "c"])).await;
    assert_eq!(
        (retried.base_offset, retried.last_offset, retried.error),
        (Some(0), Some(2), None)
    );
    let gap = produce(broker.address.clone(), batch(10, &["x"])).await;
    assert_eq!(
        gap.error.expect("refused").reason,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    let next = produce(broker.address.clone(), batch(3, &["d"])).await;
    assert_eq!(next.base_offset, Some(3));

    // After a crash the broker rebuilds what it knows of producers from the log.
    broker.kill();
    let broker = BrokerProcess::start(&data, &[]);
    let again = produce(broker.address.clone(), batch(3, &["d"])).await;
    assert_eq!((again.base_offset, again.error), (Some(3), None));
    let client = Client::connect(&broker.address).await.expect("reconnect");
    let ends = client
        .list_offsets("once", v1::OffsetSpec::Latest, 0)
        .await
        .expect("offsets");
    assert_eq!(ends[0].offset, Some(4), "nothing was written twice");
    let (next_id, _) = client.init_producer_id().await.expect("producer id");
    assert!(next_id > producer_id, "producer ids are never given twice");

    // The client's producer is idempotent by default: its batches carry an id and sequences.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_size: 200,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..20 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("once", format!("value-{i:03}")))
                .await
                .expect("send"),
        );
    }
    for delivery in deliveries {
        tokio::time::timeout(Duration::from_secs(30), delivery.wait())
            .await
            .expect("in time")
            .expect("acknowledged");
    }
    let mut raw =
        weir_proto::v1::weir_client::WeirClient::connect(format!("http://{}", broker.address))
            .await
            .expect("connect");
    let fetched = raw
        .fetch(v1::FetchRequest {
            topic: "once".into(),
            partition: 0,
            offset: 4,
            max_bytes: 1 << 20,
            min_bytes: 0,
            max_wait_ms: 0,
            current_leader_epoch: None,
        })
        .await
        .expect("fetch")
        .into_inner();
    let headers: Vec<weir_record::BatchHeader> = weir_record::batches(&fetched.record_batches)
        .map(|b| b.expect("valid").1.header)
        .collect();
    assert!(headers.len() > 1, "several batches");
    let mut sequence = 0;
    for header in &headers {
        assert!(header.producer_id > producer_id);
        assert_eq!(
            header.base_sequence, sequence,
            "sequences follow each other"
        );
        sequence += header.record_count;
    }
    assert_eq!(sequence, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_topics_cannot_be_written_changed_or_deleted_by_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.address.as_str();
    for args in [
        &[
            "topic",
            "alter",
            "__consumer_offsets",
            "--config",
            "retention.ms=1",
        ][..],
        &["topic", "alter", "__consumer_offsets", "--partitions", "9"][..],
        &["topic", "delete", "__consumer_offsets"][..],
        &["topic", "create", "__mine"][..],
    ] {
        let output = weir(b, args, "");
        assert_eq!(output.status.code(), Some(1), "weir {args:?}");
    }
    let refused = weir(b, &["produce", "__consumer_offsets"], "o/g/t/0\n");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("internal topic"));
    let client = Client::connect(b).await.expect("connect");
    let described = client
        .describe_topic("__consumer_offsets")
        .await
        .expect("describe");
    assert_eq!(described.partitions.len(), 4, "unchanged");
    assert!(
        described.partitions.iter().all(|p| p.log_end_offset == 0),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_subscribe_streams_and_the_broker_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let client = Client::connect(&broker.address).await.expect("connect");
    client
        .create_topic("watched", 1, 1, BTreeMap::new())
        .await
        .expect("create");
    let mut raw =
        weir_proto::v1::weir_client::WeirClient::connect(format!("http://{}", broker.address))
            .await
            .expect("connect");
    let mut stream = raw
        .subscribe(v1::SubscribeRequest {
            topic: "watched".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
        })
        .await
        .expect("subscribe")
        .into_inner();
    // The stream is open and idle when the broker is told to stop.
    let exit = tokio::task::spawn_blocking(move || broker.terminate());
    let ended = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the stream ends in time");
    let status = ended.expect_err("ended by the broker");
    assert_eq!(Reason::of(&status), Some(Reason::ShuttingDown));
    assert_eq!(exit.await.expect("join"), Some(0));
    assert!(dir.path().join("data/watched-0/.clean-shutdown").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_broker_cannot_serve_are_refused_with_a_reason() {
    use weir_record::{BatchBuilder, Record};
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let client = Client::connect(&broker.address).await.expect("connect");
    client
        .create_topic("strict", 1, 1, BTreeMap::new())
        .await
        .expect("create");
    let url = format!("http://{}", broker.address);

    // A heartbeat for a group the broker does not know is from a member it forgot.
    let mut groups = weir_proto::v1::groups_client::GroupsClient::connect(url.clone())
        .await
        .expect("connect");
    let status = groups
        .heartbeat(v1::GroupHeartbeatRequest {
            group_id: "nobody".into(),
            member_id: "m".into(),
            member_epoch: 3,
            ..Default::default()
        })
        .await
        .expect_err("unknown");
    assert_eq!(Reason::of(&status), Some(Reason::UnknownMemberId));
    assert!(
        client.list_groups().await.expect("groups").is_empty(),
        "no empty group was left behind"
    );

    // Two idempotent batches in one request.
    let (id, epoch) = client.init_producer_id().await.expect("id");
    let mut bytes = Vec::new();
    for sequence in [0, 1] {
        let mut builder = BatchBuilder::new(0).producer(id, epoch, sequence);
        builder.push(&Record {
            timestamp: 1,
            value: Some(b"v"),
            ..Record::default()
        });
        bytes.extend(builder.build());
    }
    let mut raw = weir_proto::v1::weir_client::WeirClient::connect(url)
        .await
        .expect("connect");
    let answer = raw
        .produce(v1::ProduceRequest {
            topic: "strict".into(),
            acks: v1::Acks::Leader as i32,
            batches: vec![v1::PartitionBatches {
                partition: 0,
                record_batches: Bytes::from(bytes),
                leader_epoch: None,
            }],
            records: Vec::new(),
        })
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(
        answer.results[0].error.as_ref().map(|e| e.reason.as_str()),
        Some("INVALID_REQUEST")
    );

    // A deleted topic's metrics go with it.
    weir_ok(&broker.address, &["produce", "strict"], "x\n");
    weir_ok(&broker.address, &["topic", "delete", "strict"], "");
    let (_, metrics) = broker.http_get("/metrics");
    assert!(!metrics.contains("topic=\"strict\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_costs_only_itself_and_keyless_records_spread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.address.as_str();
    weir_ok(
        b,
        &[
            "topic",
            "create",
            "small",
            "--config",
            "max.message.bytes=1000",
        ],
        "",
    );
    // The idempotent producer refuses the large line itself; the lines after it still go.
    let input = format!("before\n{}\nafter-1\nafter-2\n", "x".repeat(2000));
    let output = weir(b, &["produce", "small", "--partition", "0"], &input);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("1 of 4 records were not acknowledged")
            && stderr.contains("max.message.bytes (1000)"),
        "{stderr}"
    );
    let out = weir_ok(
        b,
        &[
            "consume",
            "small",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout",
            "10s",
        ],
        "",
    );
    assert_eq!(out, "before\nafter-1\nafter-2\n");

    // Keyless records move to another partition each time a batch leaves.
    let client = Client::connect(b).await.expect("connect");
    client
        .create_topic("spread", 4, 1, BTreeMap::new())
        .await
        .expect("create");
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_size: 300,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..100 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("spread", format!("v{i}")))
                .await
                .expect("send"),
        );
    }
    let mut partitions = std::collections::BTreeSet::new();
    for delivery in deliveries {
        let metadata = tokio::time::timeout(Duration::from_secs(30), delivery.wait())
            .await
            .expect("in time")
            .expect("acknowledged");
        partitions.insert(metadata.partition);
    }
    assert_eq!(
        partitions.len(),
        4,
        "batches went to every partition: {partitions:?}"
    );

    // A producer dropped with records not yet sent: their deliveries fail, they do not hang.
    let lingering = Producer::new(
        client,
        ProducerConfig {
            linger: Duration::from_secs(3600),
            ..ProducerConfig::default()
        },
    );
    let delivery = lingering
        .send(ProducerRecord::new("spread", "never sent"))
        .await
        .expect("send");
    drop(lingering);
    let outcome = tokio::time::timeout(Duration::from_secs(10), delivery.wait())
        .await
        .expect("resolved, not hanging");
    assert!(outcome.is_err());
}

#[test]
fn a_data_directory_from_before_the_controller_keeps_its_topics() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    // What the broker wrote before topics moved to the controller.
    std::fs::write(
        data.join("metadata.json"),
        r#"{"topics":{"legacy":{"id":"00000000000000000000000000000001","partitions":2,"config":{"retention.ms":"86400000"}}},"next_producer_id":7}"#,
    )
    .expect("write metadata.json");
    let broker = BrokerProcess::start(&data, &[]);
    let listed = weir_ok(
        &broker.address,
        &["topic", "describe", "legacy", "--output", "json"],
        "",
    );
    let described: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(2));
    assert_eq!(described["config"]["retention.ms"], "86400000");
    weir_ok(
        &broker.address,
        &["produce", "legacy", "--partition", "1"],
        "kept\n",
    );
    let read = weir_ok(
        &broker.address,
        &[
            "consume",
            "legacy",
            "--from-beginning",
            "--max-messages",
            "1",
            "--timeout",
            "10s",
        ],
        "",
    );
    assert_eq!(read.trim(), "kept");
    assert!(data.join("metadata.json.imported").exists());
    assert!(!data.join("metadata.json").exists());
}
