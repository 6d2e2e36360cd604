//! Consumer groups against a real broker process.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_client::{
    Client, GroupConfig, GroupConsumer, Producer, ProducerConfig, ProducerRecord, Reason, StartAt,
};
use weir_proto::v1;

use crate::harness::{BrokerProcess, weir, weir_ok};

/// A broker whose groups heartbeat every 100 ms and expire members after 3 s.
fn fast_group_broker(dir: &std::path::Path) -> BrokerProcess {
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        "group_heartbeat_interval = \"100ms\"\ngroup_session_timeout = \"3s\"\n",
    )
    .expect("write config");
    BrokerProcess::start(
        &dir.join("data"),
        &["--config", &config.display().to_string()],
    )
}

async fn produce(client: &Client, topic: &str, values: impl Iterator<Item = String>) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for value in values {
        let record = ProducerRecord {
            key: Some(value.clone().into()),
            ..ProducerRecord::new(topic, value)
        };
        deliveries.push(producer.send(record).await.expect("send"));
    }
    for delivery in deliveries {
        tokio::time::timeout(Duration::from_secs(30), delivery.wait())
            .await
            .expect("in time")
            .expect("acknowledged");
    }
    producer.close().await;
}

fn group_config() -> GroupConfig {
    GroupConfig {
        reset: StartAt::Earliest,
        auto_commit_interval: Duration::from_millis(200),
        max_wait: Duration::from_millis(100),
        ..GroupConfig::default()
    }
}

/// A member that polls slowly (a few records at a time, so that rebalances happen while it
/// holds uncommitted progress) until told to stop, recording every value it is given and
/// counting them in `got` as it goes; returns how many it got.
fn member(
    client: Client,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    got: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut consumer = GroupConsumer::join(client, "workers", &["jobs"], group_config())
            .await
            .expect("join");
        while !stop.load(Ordering::Relaxed) {
            let records = consumer.poll_up_to(20).await.expect("poll");
            got.fetch_add(records.len(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut seen = seen.lock().expect("lock");
            seen.extend(records.iter().map(|r| {
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
            }));
        }
        consumer.close().await.expect("leave");
        got.load(Ordering::Relaxed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_consume_every_record_exactly_once_while_members_join_and_leave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = fast_group_broker(dir.path());
    let client = Client::connect(&broker.address).await.expect("connect");
    client
        .create_topic("jobs", 6, 1, BTreeMap::new())
        .await
        .expect("create");
    produce(&client, "jobs", (0..600).map(|i| format!("job-{i}"))).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let start = |i: usize| {
        member(
            client.clone(),
            Arc::clone(&seen),
            Arc::clone(&stops[i]),
            Arc::clone(&counts[i]),
        )
    };
    let a = start(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = start(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = start(2);
    produce(&client, "jobs", (600..1200).map(|i| format!("job-{i}"))).await;
    // B leaves mid-stream, once it has read some (a rebalance on a loaded machine may take
    // longer than any fixed pause); its partitions move to A and C.
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts[1].load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stops[1].store(true, Ordering::Relaxed);
    let b_got = b.await.expect("b");
    produce(&client, "jobs", (1200..1800).map(|i| format!("job-{i}"))).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().expect("lock").len() < 1800 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let description = client.describe_group("workers").await.expect("describe");
    for stop in &stops {
        stop.store(true, Ordering::Relaxed);
    }
    let a_got = a.await.expect("a");
    let c_got = c.await.expect("c");
    assert!(
        a_got > 0 && b_got > 0 && c_got > 0,
        "every member read some: A {a_got}, B {b_got}, C {c_got}"
    );

    let seen = seen.lock().expect("lock").clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for value in &seen {
        *counts.entry(value).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "records consumed twice: {duplicated:?}"
    );
    let missing: Vec<String> = (0..1800)
        .map(|i| format!("job-{i}"))
        .filter(|v| !counts.contains_key(v.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} records never consumed, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(description.members.len(), 2, "A and C remain");
    let assigned: usize = description
        .members
        .iter()
        .flat_map(|m| &m.assignment)
        .map(|a| a.partitions.len())
        .sum();
    assert_eq!(assigned, 6, "every partition has an owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_and_lag_survive_a_restart_and_a_second_group_reads_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = fast_group_broker(dir.path());
    let b = broker.address.clone();
    weir_ok(&b, &["topic", "create", "orders", "--partitions", "3"], "");
    let input: String = (0..200).map(|i| format!("k{i}:order-{i}\n")).collect();
    weir_ok(&b, &["produce", "orders", "--key-separator", ":"], &input);

    let first = weir_ok(
        &b,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--max-messages",
            "120",
            "--timeout",
            "10s",
        ],
        "",
    );
    assert_eq!(first.lines().count(), 120);
    let lag = |broker: &str| -> (i64, i64) {
        let description: Value = serde_json::from_str(&weir_ok(
            broker,
            &["group", "describe", "billing", "--output", "json"],
            "",
        ))
        .expect("json");
        assert_eq!(description["group"], "billing");
        let partitions = description["partitions"]
            .as_array()
            .expect("partitions")
            .clone();
        assert_eq!(partitions.len(), 3);
        let committed: i64 = partitions
            .iter()
            .map(|p| p["committed_offset"].as_i64().unwrap_or(0))
            .sum();
        let lag: i64 = partitions
            .iter()
            .map(|p| p["lag"].as_i64().expect("lag"))
            .sum();
        for p in &partitions {
            assert_eq!(
                p["lag"].as_i64().expect("lag"),
                p["log_end_offset"].as_i64().expect("end")
                    - p["committed_offset"].as_i64().unwrap_or(0)
            );
        }
        (committed, lag)
    };
    assert_eq!(lag(&b), (120, 80));
    assert!(weir_ok(&b, &["group", "list"], "").contains("billing"));
    // The lag is exported for Prometheus, refreshed by the broker's timer.
    let deadline = Instant::now() + Duration::from_secs(15);
    let exported = loop {
        let (_, metrics) = broker.http_get("/metrics");
        let exported: i64 = metrics
            .lines()
            .filter(|l| l.starts_with("weir_group_lag{group=\"billing\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum();
        if exported == 80 || Instant::now() > deadline {
            break exported;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(exported, 80);

    assert_eq!(broker.terminate(), Some(0));
    let broker = fast_group_broker(dir.path());
    let b = broker.address.clone();
    assert_eq!(lag(&b), (120, 80), "offsets survive the restart");
    let rest = weir_ok(
        &b,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--max-messages",
            "80",
            "--timeout",
            "10s",
        ],
        "",
    );
    let mut all: Vec<&str> = first.lines().chain(rest.lines()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        200,
        "the group resumes where it committed: nothing twice, nothing lost"
    );
    assert_eq!(lag(&b), (200, 0));

    // Another group reads every record again (publish/subscribe).
    let again = weir_ok(
        &b,
        &[
            "consume",
            "orders",
            "--group",
            "audit",
            "--from-beginning",
            "--max-messages",
            "200",
            "--timeout",
            "10s",
        ],
        "",
    );
    assert_eq!(again.lines().count(), 200);

    // Offsets move only while the group is empty.
    weir_ok(
        &b,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to",
            "earliest",
        ],
        "",
    );
    assert_eq!(lag(&b), (0, 200));
    weir_ok(
        &b,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to",
            "offset",
            "--offset",
            "10",
        ],
        "",
    );
    assert_eq!(lag(&b).0, 30);
    let client = Client::connect(&b).await.expect("connect");
    let member = GroupConsumer::join(client.clone(), "billing", &["orders"], group_config())
        .await
        .expect("join");
    let refused = weir(
        &b,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to",
            "latest",
        ],
        "",
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop them before resetting"));
    member.close().await.expect("leave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_member_cannot_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = fast_group_broker(dir.path());
    let client = Client::connect(&broker.address).await.expect("connect");
    client
        .create_topic("fenced", 2, 1, BTreeMap::new())
        .await
        .expect("create");
    let mut groups =
        weir_proto::v1::groups_client::GroupsClient::connect(format!("http://{}", broker.address))
            .await
            .expect("connect");
    let joined = groups
        .heartbeat(v1::GroupHeartbeatRequest {
            group_id: "g".into(),
            member_epoch: 0,
            topics: vec!["fenced".into()],
            ..Default::default()
        })
        .await
        .expect("join")
        .into_inner();
    let commit = |epoch: i32| v1::CommitOffsetsRequest {
        group_id: "g".into(),
        member_id: joined.member_id.clone(),
        member_epoch: epoch,
        offsets: vec![v1::PartitionCommit {
            topic: "fenced".into(),
            partition: 0,
            offset: 0,
        }],
    };
    groups
        .commit_offsets(commit(joined.member_epoch))
        .await
        .expect("current epoch commits");
    let stale = groups
        .commit_offsets(commit(joined.member_epoch - 1))
        .await
        .expect_err("stale epoch");
    assert_eq!(Reason::of(&stale), Some(Reason::StaleMemberEpoch));
    // After its session expires (3 s without a heartbeat) the member is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    let gone = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match groups.commit_offsets(commit(joined.member_epoch)).await {
            Err(status) => break status,
            Ok(_) => assert!(Instant::now() < deadline, "the member never expired"),
        }
    };
    assert_eq!(Reason::of(&gone), Some(Reason::UnknownMemberId));
}
