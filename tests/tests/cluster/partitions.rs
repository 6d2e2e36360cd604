//! Network partitions between real processes: every broker is reached through a proxy of its
//! own (its advertised address) and reaches the controller through another, so a test cuts
//! one link and heals it. Each test logs every send and read in a [`History`] and checks it
//! against the drained partition.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_client::{Client, ClientError};
use weir_proto::v1;
use weir_proto::v1::weir_client::WeirClient;

use super::history::{History, Outcome, value};
use super::proxy::Proxy;
use super::{ControllerProcess, DEADLINE, read_all};
use crate::harness::{BrokerProcess, free_port};

/// A controller and three brokers, each behind its proxies.
struct ProxiedCluster {
    brokers: Vec<BrokerProcess>,
    /// Into each broker: what its peers and clients reach it by (its advertised address).
    inbound: Vec<Proxy>,
    /// From each broker to the controller.
    to_controller: Vec<Proxy>,
    _controller: ControllerProcess,
    _root: tempfile::TempDir,
}

impl ProxiedCluster {
    async fn start(topic: &str) -> ProxiedCluster {
        let root = tempfile::tempdir().expect("dir");
        let controller = ControllerProcess::start(&root.path().join("controller"));
        let mut brokers = Vec::new();
        let mut inbound = Vec::new();
        let mut to_controller = Vec::new();
        for id in 1..=3 {
            let listen = format!("127.0.0.1:{}", free_port());
            let into = Proxy::start(listen.clone()).await;
            let out = Proxy::start(controller.address.clone()).await;
            let dir: PathBuf = root.path().join(format!("broker-{id}"));
            let broker = BrokerProcess::launch(
                &dir,
                &listen,
                &[
                    "--id",
                    &id.to_string(),
                    "--controller",
                    &out.address,
                    "--cluster-secret-file",
                    &controller.secret_file.display().to_string(),
                    "--advertised-address",
                    &into.address,
                    "--replica-lag-time-max",
                    "2s",
                    "--replication-timeout",
                    "3s",
                ],
            )
            .ready();
            brokers.push(broker);
            inbound.push(into);
            to_controller.push(out);
        }
        let client = Client::connect(&brokers[0].address).await.expect("connect");
        client
            .create_topic(
                topic,
                1,
                3,
                [("min.insync.replicas".to_string(), "2".to_string())].into(),
            )
            .await
            .expect("create");
        let cluster = ProxiedCluster {
            brokers,
            inbound,
            to_controller,
            _controller: controller,
            _root: root,
        };
        cluster.wait_for(topic, |p| p.isr.len() == 3).await;
        cluster
    }

    /// Partition 0 as the first broker that answers sees it (through real addresses).
    async fn partition(&self, topic: &str) -> Option<v1::PartitionDescription> {
        for broker in &self.brokers {
            let Ok(mut client) = WeirClient::connect(format!("http://{}", broker.address)).await
            else {
                continue;
            };
            let answer = client
                .metadata(v1::MetadataRequest {
                    topics: vec![topic.into()],
                })
                .await;
            if let Ok(answer) = answer
                && let Some(p) = answer.into_inner().topics.first()?.partitions.first()
            {
                return Some(p.clone());
            }
        }
        None
    }

    /// Waits for partition 0 to satisfy `test` as `broker` sees it.
    async fn wait_on(
        &self,
        broker: usize,
        topic: &str,
        test: impl Fn(&v1::PartitionDescription) -> bool,
    ) -> v1::PartitionDescription {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(mut client) =
                WeirClient::connect(format!("http://{}", self.brokers[broker].address)).await
                && let Ok(answer) = client
                    .metadata(v1::MetadataRequest {
                        topics: vec![topic.into()],
                    })
                    .await
                && let Some(p) = answer
                    .into_inner()
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                && test(p)
            {
                return p.clone();
            }
            assert!(
                Instant::now() < deadline,
                "partition 0 of {topic} never got there"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for(
        &self,
        topic: &str,
        test: impl Fn(&v1::PartitionDescription) -> bool + Copy,
    ) -> v1::PartitionDescription {
        let mut last = None;
        for broker in 0..self.brokers.len() {
            last = Some(self.wait_on(broker, topic, test).await);
        }
        last.expect("three brokers")
    }

    fn real(&self, id: i32) -> &str {
        &self.brokers[id as usize - 1].address
    }
}

/// One acks=all send of `v-<sequence>` straight to `broker` (its real address), no retries.
pub(super) async fn send(broker: &str, topic: &str, sequence: u64) -> Outcome {
    send_with_key(broker, topic, sequence, None).await
}

/// [`send`] with a key (a large one makes each record take new disk blocks).
pub(super) async fn send_with_key(
    broker: &str,
    topic: &str,
    sequence: u64,
    key: Option<Bytes>,
) -> Outcome {
    let attempt = async {
        let mut client = WeirClient::connect(format!("http://{broker}")).await?;
        let answer = client
            .produce(v1::ProduceRequest {
                topic: topic.into(),
                acks: v1::Acks::All as i32,
                batches: Vec::new(),
                records: vec![v1::ProduceRecord {
                    partition: Some(0),
                    key: key.clone(),
                    value: Some(Bytes::from(value(sequence))),
                    ..Default::default()
                }],
            })
            .await?
            .into_inner();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(answer)) => match answer.results.into_iter().next() {
            Some(v1::PartitionProduceResult { error: Some(e), .. }) => {
                Outcome::of_error(&ClientError::Broker {
                    reason: weir_proto::Reason::parse(&e.reason),
                    code: tonic::Code::Aborted,
                    message: e.message,
                })
            }
            Some(result) => result.base_offset.map_or(Outcome::Unknown, Outcome::Ok),
            None => Outcome::Unknown,
        },
        Ok(Err(_)) | Err(_) => Outcome::Unknown,
    }
}

/// Sends `count` values from `next` to `broker`, logging each.
async fn send_many(
    history: &mut History,
    next: &mut u64,
    broker: &str,
    topic: &str,
    count: u64,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for _ in 0..count {
        let outcome = send(broker, topic, *next).await;
        history.sent(*next, outcome);
        outcomes.push(outcome);
        *next += 1;
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_its_followers_shrinks_its_isr_by_lag_and_heals() {
    let cluster = ProxiedCluster::start("cut").await;
    let leader = cluster.partition("cut").await.expect("described").leader;
    let (mut history, mut next) = (History::default(), 0u64);
    let ok = send_many(&mut history, &mut next, cluster.real(leader), "cut", 30).await;
    assert!(ok.iter().all(|o| matches!(o, Outcome::Ok(_))), "{ok:?}");

    // The followers can no longer fetch from the leader, but all three still heartbeat: the
    // leader shrinks the ISR to itself because they lag (replica.lag.time.max 2 s).
    cluster.inbound[leader as usize - 1].cut();
    let shrunk = cluster
        .wait_on(leader as usize - 1, "cut", |p| p.isr.len() == 1)
        .await;
    assert_eq!(shrunk.isr, [leader]);
    assert_eq!(
        shrunk.leader, leader,
        "the leader stays: it still heartbeats"
    );
    // Below min.insync.replicas: acks=all is refused before anything is written.
    let refused = send_many(&mut history, &mut next, cluster.real(leader), "cut", 5).await;
    assert!(
        refused.iter().all(|o| *o == Outcome::Failed),
        "NOT_ENOUGH_REPLICAS: {refused:?}"
    );

    cluster.inbound[leader as usize - 1].heal();
    cluster.wait_for("cut", |p| p.isr.len() == 3).await;
    let after = send_many(&mut history, &mut next, cluster.real(leader), "cut", 30).await;
    assert!(
        after.iter().all(|o| matches!(o, Outcome::Ok(_))),
        "{after:?}"
    );

    let drained = read_all(cluster.real(leader), "cut").await;
    let summary = history.check(&drained).unwrap_or_else(|p| panic!("{p:#?}"));
    println!("leader cut from followers: {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_the_controller_is_replaced_and_its_late_writes_are_fenced() {
    let cluster = ProxiedCluster::start("zombie").await;
    let old = cluster.partition("zombie").await.expect("described").leader;
    let (mut history, mut next) = (History::default(), 0u64);
    let ok = send_many(&mut history, &mut next, cluster.real(old), "zombie", 30).await;
    assert!(ok.iter().all(|o| matches!(o, Outcome::Ok(_))), "{ok:?}");
    let before = history.acknowledged().count();
    history.read(0, &read_all(cluster.real(old), "zombie").await);

    // Cut from the controller, the old leader misses its heartbeats: a new leader is elected
    // from the ISR. The old one, told nothing, still takes writes, which cannot be
    // acknowledged with acks=all (its followers follow the new leader).
    cluster.to_controller[old as usize - 1].cut();
    let other = (1..=3).find(|&b| b != old).expect("another broker");
    let moved = cluster
        .wait_on(other as usize - 1, "zombie", |p| {
            p.leader >= 0 && p.leader != old
        })
        .await;
    let new = moved.leader;
    let zombie = send_many(&mut history, &mut next, cluster.real(old), "zombie", 3).await;
    assert!(
        zombie.iter().all(|o| !matches!(o, Outcome::Ok(_))),
        "the deposed leader acknowledged a write: {zombie:?}"
    );
    let fresh = send_many(&mut history, &mut next, cluster.real(new), "zombie", 20).await;
    assert!(
        fresh.iter().all(|o| matches!(o, Outcome::Ok(_))),
        "{fresh:?}"
    );

    // Healed, the old leader learns the new epoch, truncates what only it had, and follows.
    cluster.to_controller[old as usize - 1].heal();
    cluster
        .wait_for("zombie", |p| p.isr.len() == 3 && p.leader >= 0)
        .await;
    let summary = history
        .check(&read_all(cluster.real(new), "zombie").await)
        .unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(summary.acknowledged, before + 20);
    println!("leader cut from the controller: {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_cut_from_the_leader_waits_and_writes_each_record_once() {
    use weir_client::{Acks, Producer, ProducerConfig, ProducerRecord};
    let cluster = ProxiedCluster::start("client").await;
    let leader = cluster.partition("client").await.expect("described").leader;
    let follower = (1..=3).find(|&b| b != leader).expect("a follower");
    // The producer finds the leader through metadata: through its proxy.
    let client = Client::connect(cluster.real(follower))
        .await
        .expect("connect");
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut history = History::default();
    let mut deliveries = Vec::new();
    for sequence in 0..40u64 {
        if sequence == 20 {
            cluster.inbound[leader as usize - 1].cut();
        }
        let record = ProducerRecord {
            partition: Some(0),
            ..ProducerRecord::new("client", value(sequence))
        };
        deliveries.push((sequence, producer.send(record).await.expect("queued")));
    }
    // A few seconds of partition, then it heals; the producer resumes by itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.inbound[leader as usize - 1].heal();
    for (sequence, delivery) in deliveries {
        let outcome = match delivery.wait().await {
            Ok(metadata) => Outcome::Ok(metadata.offset.expect("acks=all gives offsets")),
            Err(e) => panic!("v-{sequence} not delivered after the heal: {e}"),
        };
        history.sent(sequence, outcome);
    }
    producer.close().await;
    let summary = history
        .check(&read_all(cluster.real(leader), "client").await)
        .unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(summary.acknowledged, 40);
}
