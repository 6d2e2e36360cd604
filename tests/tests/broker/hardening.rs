//! What an adversary tried against one broker, each as a test that failed before the fix:
//! the controller on the client port, hostile topic names reaching outside the data
//! directory, deleted data coming back, and one bad config key dropping every override.

use std::collections::BTreeMap;

use weir_client::{Client, Reason};
use weir_proto::v1;
use weir_proto::v1::controller_client::ControllerClient;

use crate::harness::{BrokerProcess, free_port, weir_ok};

/// Every entry of `dir`, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_controller_is_not_served_on_the_client_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut controller = ControllerClient::connect(format!("http://{}", broker.address))
        .await
        .expect("connect");
    let impostor = controller
        .register_broker(v1::RegisterBrokerRequest {
            broker_id: 0,
            address: "10.9.9.9:1".into(),
            rack: None,
            incarnation: 1,
            kafka_address: None,
        })
        .await
        .expect_err("no controller here");
    assert_eq!(impostor.code(), tonic::Code::Unimplemented, "{impostor:?}");
    let deleted = controller
        .delete_topic(v1::DeleteTopicRequest {
            name: "__consumer_offsets".into(),
        })
        .await
        .expect_err("no controller here");
    assert_eq!(deleted.code(), tonic::Code::Unimplemented);
    // Nor can a client pose as a follower: replica fetches need the cluster secret.
    let mut replication =
        v1::replication_client::ReplicationClient::connect(format!("http://{}", broker.address))
            .await
            .expect("connect");
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender
        .send(v1::ReplicaFetchRequest {
            replica_id: 1,
            topic: "__consumer_offsets".into(),
            partition: 0,
            leader_epoch: 0,
            fetch_offset: 0,
            last_fetched_epoch: -1,
            max_bytes: 1000,
            max_wait_ms: 0,
        })
        .await
        .expect("queued");
    let refused = replication
        .replica_fetch(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect_err("not a broker");
    assert_eq!(
        Reason::of(&refused),
        Some(Reason::ClusterAuthorizationFailed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_topic_names_never_reach_outside_the_data_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let broker = BrokerProcess::start(&data, &[]);
    // A directory beside the data directory, with something in it.
    let victim = dir.path().join("x-0");
    std::fs::create_dir(&victim).expect("mkdir");
    std::fs::write(victim.join("precious"), b"keep me").expect("write");
    let absolute = dir.path().join("abs");
    let beside = listing(dir.path());

    let client = Client::connect(&broker.address).await.expect("connect");
    let absolute_name = absolute.display().to_string();
    for name in [absolute_name.as_str(), "../x", "..", ".", "a/../../x"] {
        let refused = client
            .create_topic(name, 1, 1, BTreeMap::new())
            .await
            .expect_err("hostile name");
        assert_eq!(
            refused.reason(),
            Some(Reason::InvalidTopic),
            "{name}: {refused}"
        );
        let refused = client.delete_topic(name).await.expect_err("hostile name");
        assert_eq!(
            refused.reason(),
            Some(Reason::InvalidTopic),
            "{name}: {refused}"
        );
    }
    assert_eq!(
        listing(dir.path()),
        beside,
        "nothing made or removed beside the data"
    );
    assert_eq!(
        std::fs::read(victim.join("precious")).expect("still there"),
        b"keep me"
    );
    assert!(!absolute.with_file_name("abs-0").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_with_the_longest_name_never_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let broker = BrokerProcess::start(&data, &[]);
    let b = broker.address.as_str();
    let name = "d".repeat(249);
    weir_ok(b, &["topic", "create", &name], "");
    weir_ok(b, &["produce", &name], "old-1\nold-2\nold-3\n");
    weir_ok(b, &["topic", "delete", &name], "");
    assert!(
        !listing(&data).iter().any(|n| n.contains("ddd")),
        "the data is gone: {:?}",
        listing(&data)
    );
    weir_ok(b, &["topic", "create", &name], "");
    weir_ok(b, &["produce", &name], "new-1\n");
    let consumed = weir_ok(
        b,
        &["consume", &name, "--from-beginning", "--timeout", "2s"],
        "",
    );
    let values: Vec<&str> = consumed.lines().collect();
    assert_eq!(values, ["new-1"], "only the new topic's record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_override_a_broker_cannot_apply_costs_only_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::start(&data, &[]);
    weir_ok(
        &broker.address,
        &[
            "topic",
            "create",
            "durable",
            "--config",
            "flush.messages=1",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    assert_eq!(broker.terminate(), Some(0));
    // A key this broker does not know, as a newer controller might store.
    let store = data.join("controller/cluster.json");
    let text = std::fs::read_to_string(&store).expect("read the store");
    let mut stored: serde_json::Value = serde_json::from_str(&text).expect("json");
    let config = stored
        .pointer_mut("/state/topics/durable/config")
        .and_then(serde_json::Value::as_object_mut)
        .unwrap_or_else(|| panic!("the topic's config in {text}"));
    config.insert("some.future.key".into(), "x".into());
    std::fs::write(&store, serde_json::to_vec(&stored).expect("json")).expect("write");

    let broker = BrokerProcess::start(&data, &[]);
    let client = Client::connect(&broker.address).await.expect("connect");
    let described = client.describe_topic("durable").await.expect("describe");
    assert_eq!(
        described.config["flush.messages"], "1",
        "kept: {described:?}"
    );
    assert_eq!(described.config["retention.ms"], "3600000");
    assert!(
        described.unapplied_config.contains_key("some.future.key"),
        "{described:?}"
    );
    let (_, metrics) = broker.http_get("/metrics");
    assert!(
        metrics.contains("weir_topic_config_unapplied{topic=\"durable\"} 1"),
        "{metrics}"
    );
    // And the CLI shows it, to people and to scripts.
    let text = weir_ok(&broker.address, &["topic", "describe", "durable"], "");
    assert!(
        text.contains("not applied") && text.contains("some.future.key"),
        "{text}"
    );
    let json = weir_ok(
        &broker.address,
        &["topic", "describe", "durable", "--format", "json"],
        "",
    );
    let json: serde_json::Value = serde_json::from_str(json.trim()).expect("json");
    assert!(
        json.pointer("/unapplied_config/some.future.key").is_some(),
        "{json}"
    );
}

/// Produces 32 KiB records with acks=1 until the broker refuses one; returns the refusal.
async fn produce_until_refused(address: &str, topic: &str) -> v1::Error {
    let mut raw = v1::weir_client::WeirClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    let value = bytes::Bytes::from(vec![b'x'; 32 << 10]);
    for _ in 0..100_000 {
        let answer = raw
            .produce(v1::ProduceRequest {
                topic: topic.into(),
                acks: v1::Acks::Leader as i32,
                batches: Vec::new(),
                records: vec![
                    v1::ProduceRecord {
                        value: Some(value.clone()),
                        ..Default::default()
                    };
                    4
                ],
            })
            .await
            .expect("answered")
            .into_inner();
        if let Some(error) = answer.results.into_iter().find_map(|r| r.error) {
            return error;
        }
    }
    panic!("the disk never filled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_sigterm_still_stops_cleanly() {
    // The recipe that killed the broker with SIGBUS in 2 of 9 tries, three times over.
    for round in 0..3 {
        let Some(disk) = crate::harness::SmallDisk::mount(24) else {
            return;
        };
        let data = disk.path.join("data");
        let mut broker = BrokerProcess::start(&data, &[]);
        weir_ok(
            &broker.address,
            &[
                "topic",
                "create",
                "full",
                "--partitions",
                "2",
                "--config",
                "flush.messages=1",
                "--config",
                "segment.bytes=1048576",
            ],
            "",
        );
        let refused = produce_until_refused(&broker.address, "full").await;
        assert_eq!(
            refused.reason, "STORAGE_ERROR",
            "round {round}: {refused:?}"
        );
        assert!(
            refused.message.contains("No space left on device"),
            "round {round}: the cause is named: {}",
            refused.message
        );
        // The last free blocks too, then a decision the controller cannot store says why,
        // ENOSPC included.
        {
            use std::io::Write;
            let mut filler = std::fs::File::create(disk.path.join("filler")).expect("filler");
            while filler.write_all(&[0u8; 4096]).is_ok() {}
        }
        let output = crate::harness::weir(
            &broker.address,
            &["topic", "create", "another", "--api-timeout", "1s"],
            "",
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("No space left on device"),
            "round {round}: {stderr}"
        );
        assert!(
            broker.log().contains("No space left on device"),
            "the broker's log keeps the cause"
        );
        // The broker still answers, and a SIGTERM stops it with exit code 0, not a signal.
        let client = Client::connect(&broker.address).await.expect("connect");
        client.describe_topic("full").await.expect("still serving");
        let log = broker.log();
        assert_eq!(broker.terminate(), Some(0), "round {round}: {log}");
        // What was acknowledged reads back after a restart once space is there again.
        drop(disk);
    }
}

/// Descriptors the process `pid` holds.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the broker's descriptors")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_grow_with_active_segments_not_with_all_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &["--max-open-segments", "4"]);
    let b = broker.address.as_str();
    // A segment per record, as `segment.bytes=14` made, is refused now (Kafka's bound).
    let output = crate::harness::weir(
        b,
        &["topic", "create", "tiny", "--config", "segment.bytes=14"],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("segment.bytes"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    weir_ok(
        b,
        &[
            "topic",
            "create",
            "many",
            "--config",
            "segment.bytes=1048576",
        ],
        "",
    );
    let pid = broker.pid().expect("running");
    let before = descriptors(pid);
    // About 40 segments of 1 MiB.
    let record = "r".repeat(60_000);
    let input: String = (0..700).map(|_| format!("{record}\n")).collect();
    weir_ok(b, &["produce", "many", "--acks", "1"], &input);
    let consumed = weir_ok(
        b,
        &["consume", "many", "--from-beginning", "--timeout", "3s"],
        "",
    );
    assert_eq!(consumed.lines().count(), 700);
    let segments = std::fs::read_dir(dir.path().join("data/many-0"))
        .expect("partition dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count();
    assert!(segments >= 30, "{segments} segments");
    // Every segment was read; at most 4 closed ones stay open (and sealed segments whose
    // background fsync is still to run, waited for here).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        let now = descriptors(pid);
        if now <= before + 4 || std::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        after <= before + 4,
        "{before} descriptors before, {after} after {segments} segments"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_open_makes_the_broker_unready_and_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::start(&data, &[]);
    weir_ok(
        &broker.address,
        &["topic", "create", "half", "--partitions", "2"],
        "",
    );
    weir_ok(
        &broker.address,
        &["produce", "half", "--partition", "0"],
        "kept\n",
    );
    assert_eq!(broker.terminate(), Some(0));
    // Partition 1's directory becomes a plain file: it cannot be opened.
    std::fs::remove_dir_all(data.join("half-1")).expect("remove");
    std::fs::write(data.join("half-1"), b"not a directory").expect("write");

    let broker = BrokerProcess::start(&data, &[]);
    let (status, body) = broker.http_get("/readyz");
    assert!(status.contains("503"), "{status}: {body}");
    assert!(body.contains("half-1"), "the partition is named: {body}");
    let client = Client::connect(&broker.address).await.expect("connect");
    let mut raw = v1::weir_client::WeirClient::connect(format!("http://{}", broker.address))
        .await
        .expect("connect");
    let refused = raw
        .fetch(v1::FetchRequest {
            topic: "half".into(),
            partition: 1,
            offset: 0,
            max_bytes: 1000,
            min_bytes: 0,
            max_wait_ms: 0,
            current_leader_epoch: None,
        })
        .await
        .expect_err("cannot be served");
    assert_eq!(
        Reason::of(&refused),
        Some(Reason::StorageError),
        "{refused:?}"
    );
    assert!(
        refused.message().contains("half-1"),
        "{}",
        refused.message()
    );
    // The other partition still serves.
    let consumed = weir_ok(
        &broker.address,
        &[
            "consume",
            "half",
            "--partition",
            "0",
            "--from-beginning",
            "--timeout",
            "2s",
        ],
        "",
    );
    assert_eq!(consumed.trim(), "kept");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_broker_says_so_and_never_calls_an_existing_topic_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut broker = BrokerProcess::launch(&data, &listen, &[]).ready();
    // Enough partitions that opening them takes a while.
    weir_ok(
        &broker.address,
        &["topic", "create", "wide", "--partitions", "300"],
        "",
    );
    assert_eq!(broker.terminate(), Some(0));

    let starting = BrokerProcess::launch(&data, &listen, &[]);
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ready = loop {
        if let Some(line) = starting.is_ready() {
            break Some(line);
        }
        assert!(std::time::Instant::now() < deadline, "not ready in 30 s");
        let answer = match v1::weir_client::WeirClient::connect(format!("http://{listen}")).await {
            Err(_) => "not listening yet".to_string(),
            Ok(mut client) => match client
                .metadata(v1::MetadataRequest {
                    topics: vec!["wide".into()],
                })
                .await
            {
                Ok(_) => "described".to_string(),
                Err(status) => Reason::of(&status)
                    .map_or_else(|| format!("{:?}", status.code()), |r| r.to_string()),
            },
        };
        *answers.entry(answer).or_default() += 1;
    };
    let broker = starting.into_process(ready);
    assert!(
        !answers.contains_key("UNKNOWN_TOPIC"),
        "an existing topic was called unknown while the broker started: {answers:?}"
    );
    assert!(
        answers
            .keys()
            .all(|a| ["not listening yet", "described", "BROKER_STARTING"].contains(&a.as_str())),
        "{answers:?}"
    );
    let client = Client::connect(&broker.address).await.expect("connect");
    assert_eq!(
        client
            .describe_topic("wide")
            .await
            .expect("described")
            .partitions
            .len(),
        300
    );
    println!("answers while starting: {answers:?}");
}

/// Whether the broker closes `stream` (a read ends) within `within`.
fn closed_within(stream: &mut std::net::TcpStream, within: std::time::Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut buffer = [0u8; 256];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn silent_and_surplus_connections_are_closed() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--connection-handshake-timeout",
            "500ms",
            "--max-connections",
            "4",
        ],
    );
    let seconds = std::time::Duration::from_secs(5);
    // No HTTP/2 preface: closed at the handshake deadline.
    let mut silent = std::net::TcpStream::connect(&broker.address).expect("connect");
    assert!(
        closed_within(&mut silent, seconds),
        "a silent connection stays"
    );
    // An HTTP request whose headers never end.
    let mut slow = std::net::TcpStream::connect(&broker.http_address).expect("connect");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    assert!(
        closed_within(&mut slow, seconds),
        "unfinished headers hold a connection"
    );
    // Four connections past their handshake hold every place; a fifth is closed at once.
    let held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&broker.address).expect("connect");
            stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .expect("preface");
            stream
        })
        .collect();
    let mut surplus = std::net::TcpStream::connect(&broker.address).expect("connect");
    assert!(
        closed_within(&mut surplus, seconds),
        "a fifth connection is held"
    );
    drop(held);
    let (_, metrics) = broker.http_get("/metrics");
    assert!(
        metrics.contains("weir_connections_refused_total{listener=\"grpc\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_connections_timed_out_total{listener=\"grpc\"} 1")
            || metrics.contains("weir_connections_timed_out_total{listener=\"grpc\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_client_values_meet_the_brokers_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &["--fetch-max-wait", "1s"]);
    weir_ok(&broker.address, &["topic", "create", "bounded"], "");
    let endpoint = format!("http://{}", broker.address);
    let mut groups = v1::groups_client::GroupsClient::connect(endpoint.clone())
        .await
        .expect("connect");
    let refused = groups
        .heartbeat(v1::GroupHeartbeatRequest {
            group_id: "forever".into(),
            member_id: String::new(),
            member_epoch: 0,
            topics: vec!["bounded".into()],
            owned: Vec::new(),
            session_timeout_ms: i32::MAX,
        })
        .await
        .expect_err("a 24-day session");
    assert_eq!(
        Reason::of(&refused),
        Some(Reason::InvalidSessionTimeout),
        "{refused:?}"
    );
    assert!(
        refused.message().contains("1800000"),
        "{}",
        refused.message()
    );
    // A fetch asking to wait 24 days is answered after the broker's own ceiling.
    let mut weir = v1::weir_client::WeirClient::connect(endpoint)
        .await
        .expect("connect");
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        weir.fetch(v1::FetchRequest {
            topic: "bounded".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1000,
            min_bytes: 1,
            max_wait_ms: i32::MAX,
            current_leader_epoch: None,
        }),
    )
    .await
    .expect("answered within the broker's fetch ceiling, not the client's wish")
    .expect("an empty answer");
    assert!(answered.into_inner().record_batches.is_empty());
}

/// Sends raw bytes as a gRPC message to `path` and returns the status.
async fn raw_call(address: &str, path: &'static str, body: &'static [u8]) -> tonic::Status {
    #[derive(Debug, Clone, Default)]
    struct Raw;
    #[derive(Debug, Clone, Default)]
    struct RawEncoder;
    #[derive(Debug, Clone, Default)]
    struct RawDecoder;
    impl tonic::codec::Encoder for RawEncoder {
        type Item = bytes::Bytes;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: bytes::Bytes,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }
    impl tonic::codec::Decoder for RawDecoder {
        type Item = bytes::Bytes;
        type Error = tonic::Status;
        fn decode(
            &mut self,
            src: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<bytes::Bytes>, tonic::Status> {
            let len = bytes::Buf::remaining(src);
            Ok(Some(bytes::Buf::copy_to_bytes(src, len)))
        }
    }
    impl tonic::codec::Codec for Raw {
        type Encode = bytes::Bytes;
        type Decode = bytes::Bytes;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(bytes::Bytes::from_static(body)),
        http::uri::PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .expect_err("garbage is refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_the_senders_error_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(&broker.address, &["topic", "create", "stamped"], "");
    // Not protobuf at all (a field with wire type 7).
    let status = raw_call(
        &broker.address,
        "/weir.v1.Weir/Produce",
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
    )
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(Reason::of(&status), Some(Reason::InvalidRequest));
    assert!(
        status.message().contains("ProduceRequest"),
        "{}",
        status.message()
    );

    // A negative timestamp in the per-record form is named as such.
    let mut weir = v1::weir_client::WeirClient::connect(format!("http://{}", broker.address))
        .await
        .expect("connect");
    let answer = weir
        .produce(v1::ProduceRequest {
            topic: "stamped".into(),
            acks: v1::Acks::Leader as i32,
            batches: Vec::new(),
            records: vec![v1::ProduceRecord {
                value: Some(bytes::Bytes::from_static(b"x")),
                timestamp: Some(-5),
                ..Default::default()
            }],
        })
        .await;
    let status = answer.expect_err("a negative timestamp");
    assert_eq!(Reason::of(&status), Some(Reason::InvalidRecord));
    assert!(
        status.message().contains("timestamp -5"),
        "{}",
        status.message()
    );
}

#[test]
fn a_misspelt_variable_stops_the_broker_and_every_setting_has_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir-broker-under-test"))
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .env("WEIR_RETENTION_CHECK_INTERVL", "1s")
        .output()
        .expect("run the broker");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("WEIR_RETENTION_CHECK_INTERVL"), "{stderr}");
    assert!(
        stderr.contains("WEIR_RETENTION_CHECK_INTERVAL"),
        "the real ones are listed: {stderr}"
    );
    // The variable the README promised works, and logs off a terminal carry no colour.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir-broker-under-test"))
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .env("WEIR_RETENTION_CHECK_INTERVAL", "soon")
        .output()
        .expect("run the broker");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("retention_check_interval"), "{stderr}");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    assert!(!broker.log().contains('\u{1b}'), "ANSI codes in a log file");
}
