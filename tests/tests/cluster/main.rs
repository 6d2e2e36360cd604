//! A controller and three brokers as real processes on loopback: a topic with three replicas
//! keeps every record acknowledged with acks=all through the kill -9 of its leader, a new
//! leader is elected from the ISR, and the old leader comes back as a follower and catches
//! up.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weir_client::{
    Acks, Client, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, RetryPolicy,
    StartAt,
};
use weir_proto::v1;
use weir_proto::v1::weir_client::WeirClient;

#[path = "../broker/harness.rs"]
#[allow(dead_code, reason = "the harness serves other tests too")]
mod harness;

mod disk_full;
mod history;
mod kafka;
mod partitions;
mod proxy;

use harness::BrokerProcess;

/// Every wait of these tests has this deadline.
const DEADLINE: Duration = Duration::from_secs(30);

/// A `weir-controller` child process, killed when dropped.
struct ControllerProcess {
    child: Child,
    address: String,
    /// The cluster secret it made in its data directory, for brokers to present.
    secret_file: std::path::PathBuf,
}

impl ControllerProcess {
    fn start(data_dir: &Path) -> ControllerProcess {
        ControllerProcess::start_on(data_dir, "127.0.0.1:0")
    }

    fn start_on(data_dir: &Path, listen: &str) -> ControllerProcess {
        // Leadership stays where failover put it unless a test asks for rebalancing.
        ControllerProcess::start_with(data_dir, listen, &["--leader-rebalance-interval", "0s"])
    }

    fn start_with(data_dir: &Path, listen: &str, extra: &[&str]) -> ControllerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir-controller-under-test"))
            .args([
                "--data-dir",
                &data_dir.display().to_string(),
                "--listen",
                listen,
                "--heartbeat-interval",
                "200ms",
                "--session-timeout",
                "1500ms",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weir-controller");
        let line =
            harness::ready_line(&mut child, DEADLINE).expect("the controller says it is ready");
        let address = harness::ready_field(&line, "grpc");
        ControllerProcess {
            child,
            address,
            secret_file: data_dir.join("cluster-secret"),
        }
    }
}

impl ControllerProcess {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker(dir: &Path, id: i32, controller: &ControllerProcess) -> BrokerProcess {
    BrokerProcess::start(
        dir,
        &[
            "--id",
            &id.to_string(),
            "--controller",
            &controller.address,
            "--cluster-secret-file",
            &controller.secret_file.display().to_string(),
            "--replica-lag-time-max",
            "2s",
        ],
    )
}

/// Partition 0 of `topic` as `broker` sees it, and the brokers' addresses.
async fn partition_zero(
    broker: &str,
    topic: &str,
) -> Option<(v1::PartitionDescription, Vec<v1::Broker>)> {
    let mut client = WeirClient::connect(format!("http://{broker}")).await.ok()?;
    let metadata = client
        .metadata(v1::MetadataRequest {
            topics: vec![topic.to_string()],
        })
        .await
        .ok()?
        .into_inner();
    let partition = metadata.topics.first()?.partitions.first()?.clone();
    Some((partition, metadata.brokers))
}

/// Waits until partition 0 (as `broker` sees it) satisfies `test`.
async fn wait_for_partition(
    broker: &str,
    topic: &str,
    test: impl Fn(&v1::PartitionDescription) -> bool,
) -> (v1::PartitionDescription, Vec<v1::Broker>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some((p, brokers)) = partition_zero(broker, topic).await
            && test(&p)
        {
            return (p, brokers);
        }
        assert!(
            Instant::now() < deadline,
            "partition 0 of {topic} never got there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The addresses of the brokers still running.
fn running_addresses(brokers: &[Option<BrokerProcess>]) -> Vec<String> {
    brokers
        .iter()
        .flatten()
        .map(|b| b.address.clone())
        .collect()
}

fn address_of(brokers: &[v1::Broker], id: i32) -> String {
    brokers
        .iter()
        .find(|b| b.id == id)
        .map(|b| b.address.clone())
        .expect("the leader is a live broker")
}

/// Produces `values` to partition 0 at `leader` with acks=all and no retries; all must be
/// acknowledged.
async fn produce_all(leader: &str, topic: &str, values: &[String]) -> Result<(), String> {
    produce(leader, topic, values, Duration::ZERO).await
}

/// Produces `values` to partition 0 through `bootstrap` (the client finds the leader) with
/// acks=all and the producer's retries (100 ms apart, for 5 s); all must be acknowledged.
async fn produce_routed(bootstrap: &str, topic: &str, values: &[String]) -> Result<(), String> {
    produce(bootstrap, topic, values, Duration::from_secs(5)).await
}

/// Retries 100 ms apart for `retry_for`.
fn steady_retries(retry_for: Duration) -> RetryPolicy {
    RetryPolicy {
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(100),
        deadline: retry_for,
    }
}

async fn produce(
    bootstrap: &str,
    topic: &str,
    values: &[String],
    retry_for: Duration,
) -> Result<(), String> {
    let client = Client::connect(bootstrap)
        .await
        .map_err(|e| e.to_string())?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::All,
            retry: steady_retries(retry_for),
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for value in values {
        let record = ProducerRecord {
            partition: Some(0),
            ..ProducerRecord::new(topic, value.clone())
        };
        deliveries.push(producer.send(record).await.map_err(|e| e.to_string())?);
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.wait().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn read_all(leader: &str, topic: &str) -> Vec<String> {
    let client = Client::connect(leader).await.expect("connect");
    let mut consumer = Consumer::assign(
        client,
        topic,
        Some(vec![0]),
        StartAt::Earliest,
        ConsumerConfig {
            max_bytes: 1 << 20,
            max_wait: Duration::from_millis(200),
        },
    )
    .await
    .expect("consumer");
    let mut values = Vec::new();
    let mut quiet = 0;
    while quiet < 3 {
        let records = consumer.poll().await.expect("poll");
        if records.is_empty() {
            quiet += 1;
        }
        values.extend(
            records
                .into_iter()
                .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned()),
        );
    }
    values
}

/// A controller and three brokers (ids 1 to 3) as processes, with one topic of three replicas
/// and `min.insync.replicas=2` whose ISR is whole as every broker sees it.
struct ThreeBrokers {
    controller: ControllerProcess,
    controller_dir: PathBuf,
    dirs: Vec<PathBuf>,
    brokers: Vec<Option<BrokerProcess>>,
    /// Last, so the directories go only after the processes.
    root: tempfile::TempDir,
}

impl ThreeBrokers {
    async fn with_topic(topic: &str, partitions: i32) -> ThreeBrokers {
        let root = tempfile::tempdir().expect("dir");
        let controller_dir = root.path().join("controller");
        let controller = ControllerProcess::start(&controller_dir);
        let dirs: Vec<PathBuf> = (1..=3)
            .map(|id| root.path().join(format!("broker-{id}")))
            .collect();
        let brokers: Vec<Option<BrokerProcess>> = (1..=3)
            .map(|id| Some(start_broker(&dirs[id as usize - 1], id, &controller)))
            .collect();
        let addresses = running_addresses(&brokers);
        Client::connect(&addresses[0])
            .await
            .expect("connect")
            .create_topic(
                topic,
                partitions,
                3,
                [("min.insync.replicas".to_string(), "2".to_string())].into(),
            )
            .await
            .expect("create a topic with three replicas");
        // Metadata reaches each broker in its own time.
        for broker in &addresses {
            wait_for_partition(broker, topic, |p| p.isr.len() == 3).await;
        }
        ThreeBrokers {
            controller,
            controller_dir,
            dirs,
            brokers,
            root,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_the_leaders_kill_and_it_rejoins_as_follower() {
    let ThreeBrokers {
        controller,
        controller_dir: _,
        dirs,
        mut brokers,
        root: _root,
    } = ThreeBrokers::with_topic("replicated", 1).await;
    let any = brokers[0].as_ref().expect("broker 1").address.clone();
    let (p0, addresses) = wait_for_partition(&any, "replicated", |p| p.isr.len() == 3).await;
    assert_eq!(p0.replicas.len(), 3);
    let leader = p0.leader;
    let leader_address = address_of(&addresses, leader);

    let first: Vec<String> = (0..500).map(|i| format!("before-{i}")).collect();
    produce_all(&leader_address, "replicated", &first)
        .await
        .expect("acks=all with a full ISR");

    // kill -9 the leader; a new one is elected from the ISR at the next epoch.
    let killed_at = Instant::now();
    brokers[leader as usize - 1]
        .as_mut()
        .expect("leader process")
        .kill();
    let survivor = brokers
        .iter()
        .flatten()
        .find(|b| b.address != leader_address)
        .expect("a survivor")
        .address
        .clone();
    let (moved, addresses) = wait_for_partition(&survivor, "replicated", |p| {
        p.leader != leader && p.leader >= 0
    })
    .await;
    assert!(p0.isr.contains(&moved.leader));
    assert!(moved.leader_epoch > p0.leader_epoch);
    let new_leader = address_of(&addresses, moved.leader);

    // The next acks=all produce succeeds once the ISR has shrunk to the two survivors.
    let second: Vec<String> = (0..500).map(|i| format!("after-{i}")).collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match produce_all(&new_leader, "replicated", &second[..1]).await {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no acks=all produce after the kill: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    println!(
        "recovery: {:?} from kill -9 of the leader to the next acks=all produce",
        killed_at.elapsed()
    );
    produce_all(&new_leader, "replicated", &second[1..])
        .await
        .expect("acks=all on two of three replicas");

    // The old leader restarts, truncates what it alone had, and rejoins the ISR.
    brokers[leader as usize - 1] = Some(start_broker(
        &dirs[leader as usize - 1],
        leader,
        &controller,
    ));
    wait_for_partition(&survivor, "replicated", |p| p.isr.len() == 3).await;

    let read = read_all(&new_leader, "replicated").await;
    let expected: Vec<String> = first.iter().chain(second.iter()).cloned().collect();
    let unique: BTreeSet<&String> = read.iter().collect();
    assert_eq!(unique.len(), read.len(), "a record was read twice");
    for value in &expected {
        assert!(unique.contains(value), "acknowledged {value} is missing");
    }
    assert_eq!(
        read, expected,
        "records in the order they were acknowledged"
    );
    drop(brokers);
    drop(controller);
}

/// How a send ended, as the producer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok(i64),
    /// An error after the producer's retries: some attempt may have been written.
    Unknown,
}

/// Finds the leader of partition 0 from any of `live` brokers.
async fn current_leader(live: &[String], topic: &str) -> (i32, String, v1::PartitionDescription) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for broker in live {
            if let Some((p, brokers)) = partition_zero(broker, topic).await
                && p.leader >= 0
                && let Some(b) = brokers.iter().find(|b| b.id == p.leader)
            {
                return (p.leader, b.address.clone(), p);
            }
        }
        assert!(Instant::now() < deadline, "no leader for {topic}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_five_times_while_producing_loses_and_duplicates_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let ThreeBrokers {
        controller,
        controller_dir: _,
        dirs,
        mut brokers,
        root: _root,
    } = ThreeBrokers::with_topic("chase", 1).await;
    let addresses = running_addresses(&brokers);

    // One idempotent producer sends numbered values until told to stop, through whichever
    // broker it can reach, and logs how each send ended.
    let stop = Arc::new(AtomicBool::new(false));
    // (sequence, outcome, when it was sent, when it was answered)
    let log = Arc::new(std::sync::Mutex::new(
        Vec::<(u64, Outcome, Instant, Instant)>::new(),
    ));
    let producing = {
        let (stop, log, bootstrap) = (Arc::clone(&stop), Arc::clone(&log), addresses.clone());
        tokio::spawn(async move {
            let client = Client::connect(&bootstrap[2]).await.expect("connect");
            let producer = Producer::new(
                client,
                ProducerConfig {
                    acks: Acks::All,
                    retry: steady_retries(Duration::from_secs(10)),
                    ..ProducerConfig::default()
                },
            );
            let mut sequence = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut round = Vec::new();
                let sent = Instant::now();
                for _ in 0..20 {
                    let record = ProducerRecord {
                        partition: Some(0),
                        ..ProducerRecord::new("chase", format!("v-{sequence}"))
                    };
                    match producer.send(record).await {
                        Ok(delivery) => round.push((sequence, delivery)),
                        Err(_) => log.lock().expect("log").push((
                            sequence,
                            Outcome::Unknown,
                            sent,
                            Instant::now(),
                        )),
                    }
                    sequence += 1;
                }
                for (sequence, delivery) in round {
                    let outcome = match delivery.wait().await {
                        Ok(metadata) => {
                            Outcome::Ok(metadata.offset.expect("acks=all gives offsets"))
                        }
                        Err(_) => Outcome::Unknown,
                    };
                    log.lock()
                        .expect("log")
                        .push((sequence, outcome, sent, Instant::now()));
                }
            }
            producer.close().await;
        })
    };

    let mut recoveries = Vec::new();
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let live = running_addresses(&brokers);
        let (leader, _, before) = current_leader(&live, "chase").await;
        let killed_at = Instant::now();
        brokers[leader as usize - 1]
            .as_mut()
            .expect("leader")
            .kill();
        brokers[leader as usize - 1] = None;
        let live = running_addresses(&brokers);
        let deadline = Instant::now() + DEADLINE;
        // Recovery: the first acknowledgement of a send made after the kill.
        let recovered = loop {
            let first_ok = log
                .lock()
                .expect("log")
                .iter()
                .filter(|(_, o, sent, _)| matches!(o, Outcome::Ok(_)) && *sent > killed_at)
                .map(|(_, _, _, at)| *at)
                .min();
            if let Some(at) = first_ok {
                break at.duration_since(killed_at);
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no acknowledgement after the kill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (after, _) =
            wait_for_partition(&live[0], "chase", |p| p.leader >= 0 && p.leader != leader).await;
        let new_leader = after.leader;
        assert!(after.leader_epoch > before.leader_epoch);
        assert!(before.isr.contains(&new_leader), "elected outside the ISR");
        println!(
            "round {round}: leader {leader} killed; broker {new_leader} leads; recovery {recovered:?}"
        );
        recoveries.push(recovered);
        // It comes back and catches up before the next round.
        brokers[leader as usize - 1] = Some(start_broker(
            &dirs[leader as usize - 1],
            leader,
            &controller,
        ));
        wait_for_partition(&live[0], "chase", |p| p.isr.len() == 3).await;
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(DEADLINE, producing)
        .await
        .expect("the producer stops")
        .expect("producer task");

    // Drain the partition from its leader and check the history.
    let live = running_addresses(&brokers);
    let (_, leader_address, _) = current_leader(&live, "chase").await;
    let read = read_all(&leader_address, "chase").await;
    let log = log.lock().expect("log").clone();
    let mut history = history::History::default();
    for (sequence, outcome, _, _) in &log {
        history.sent(
            *sequence,
            match outcome {
                Outcome::Ok(offset) => history::Outcome::Ok(*offset),
                Outcome::Unknown => history::Outcome::Unknown,
            },
        );
    }
    let summary = history.check(&read).unwrap_or_else(|p| panic!("{p:#?}"));
    let acknowledged = summary.acknowledged;
    println!(
        "history: {} sends, {summary:?}, {} records in the log; recoveries {recoveries:?}",
        log.len(),
        read.len()
    );
    assert!(
        acknowledged > 100,
        "too little was acknowledged to mean anything"
    );
    drop(brokers);
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_out_of_sync_is_never_elected_and_a_paused_follower_rejoins() {
    let ThreeBrokers {
        controller,
        controller_dir: _,
        dirs,
        mut brokers,
        root: _root,
    } = ThreeBrokers::with_topic("guarded", 1).await;
    let address = |brokers: &[Option<BrokerProcess>], id: i32| {
        brokers[id as usize - 1]
            .as_ref()
            .expect("running")
            .address
            .clone()
    };
    let (p0, _) = partition_zero(&address(&brokers, 1), "guarded")
        .await
        .expect("described");
    let leader = p0.leader;
    let followers: Vec<i32> = p0
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != leader)
        .collect();
    let (in_sync, paused) = (followers[0], followers[1]);

    let first: Vec<String> = (0..200).map(|i| format!("a-{i}")).collect();
    produce_routed(&address(&brokers, leader), "guarded", &first)
        .await
        .expect("acks=all with a full ISR");

    // A follower pauses (SIGSTOP) past its deadline: the ISR shrinks, produce goes on.
    brokers[paused as usize - 1]
        .as_ref()
        .expect("follower")
        .signal("STOP");
    wait_for_partition(&address(&brokers, leader), "guarded", |p| {
        !p.isr.contains(&paused) && p.isr.len() == 2
    })
    .await;
    let second: Vec<String> = (0..200).map(|i| format!("b-{i}")).collect();
    produce_routed(&address(&brokers, leader), "guarded", &second)
        .await
        .expect("acks=all on the two replicas left in sync");

    // The two in-sync replicas die; the paused one wakes up. It must not lead: it lacks
    // acknowledged records.
    for id in [leader, in_sync] {
        brokers[id as usize - 1].as_mut().expect("running").kill();
        brokers[id as usize - 1] = None;
    }
    brokers[paused as usize - 1]
        .as_ref()
        .expect("follower")
        .signal("CONT");
    let woke = address(&brokers, paused);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        if let Some((p, _)) = partition_zero(&woke, "guarded").await {
            assert!(
                p.leader != paused,
                "broker {paused} was elected though it was out of sync: {p:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = produce_all(&woke, "guarded", &["c-refused".to_string()]).await;
    assert!(
        refused.is_err(),
        "a produce succeeded with no in-sync replica alive"
    );

    // The last in-sync replica (whichever of the two the controller saw die last) returns:
    // it leads, and nothing acknowledged is lost.
    let (offline, _) = wait_for_partition(&woke, "guarded", |p| p.leader < 0).await;
    assert_eq!(offline.isr.len(), 1, "{offline:?}");
    let returned_at = Instant::now();
    let last = offline.isr[0];
    assert!(last == leader || last == in_sync, "{offline:?}");
    brokers[last as usize - 1] = Some(start_broker(&dirs[last as usize - 1], last, &controller));
    let in_sync = last;
    let (back, addresses) = wait_for_partition(&woke, "guarded", |p| p.leader == in_sync).await;
    println!(
        "recovery: {:?} from the last in-sync replica's restart to its leadership",
        returned_at.elapsed()
    );
    assert!(back.leader_epoch > p0.leader_epoch);
    // The woken follower catches up and rejoins the ISR, and then says it is ready (it said
    // not while outside the ISR of a partition it follows).
    wait_for_partition(&address_of(&addresses, in_sync), "guarded", |p| {
        p.isr.contains(&paused)
    })
    .await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = brokers[paused as usize - 1]
            .as_ref()
            .expect("running")
            .http_get("/readyz");
        if status.contains("200") {
            break;
        }
        assert!(
            body.contains("guarded-0"),
            "not ready for another reason: {status} {body}"
        );
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = read_all(&address_of(&addresses, in_sync), "guarded").await;
    let expected: Vec<String> = first.iter().chain(second.iter()).cloned().collect();
    assert_eq!(read, expected, "every acknowledged record, once, in order");
    drop(brokers);
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_comes_back_fenced_and_its_late_write_is_never_acknowledged() {
    let ThreeBrokers {
        controller,
        controller_dir: _,
        dirs: _,
        brokers,
        root: _root,
    } = ThreeBrokers::with_topic("zombie", 1).await;
    let brokers: Vec<BrokerProcess> = brokers.into_iter().flatten().collect();
    let (p0, addresses) = partition_zero(&brokers[0].address, "zombie")
        .await
        .expect("described");
    let old = p0.leader;
    let old_address = address_of(&addresses, old);
    let first: Vec<String> = (0..100).map(|i| format!("a-{i}")).collect();
    produce_all(&old_address, "zombie", &first)
        .await
        .expect("acks=all");

    // The leader pauses past its deadline; another takes over at the next epoch.
    let zombie = &brokers[old as usize - 1];
    let paused_at = Instant::now();
    zombie.signal("STOP");
    let other = brokers
        .iter()
        .find(|b| b.address != old_address)
        .expect("another broker");
    let (moved, addresses) = wait_for_partition(&other.address, "zombie", |p| {
        p.leader >= 0 && p.leader != old
    })
    .await;
    assert!(moved.leader_epoch > p0.leader_epoch);
    // Requests carrying the old leader epoch are fenced at the new leader (KIP-320); an epoch
    // from the future is unknown there.
    let mut new_leader =
        WeirClient::connect(format!("http://{}", address_of(&addresses, moved.leader)))
            .await
            .expect("connect to the new leader");
    for (epoch, reason) in [
        (p0.leader_epoch, weir_proto::Reason::FencedLeaderEpoch),
        (
            moved.leader_epoch + 1,
            weir_proto::Reason::UnknownLeaderEpoch,
        ),
    ] {
        let refused = new_leader
            .fetch(v1::FetchRequest {
                topic: "zombie".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1 << 20,
                min_bytes: 0,
                max_wait_ms: 0,
                current_leader_epoch: Some(epoch),
            })
            .await
            .expect_err("a fetch at another leader epoch");
        assert_eq!(
            weir_proto::Reason::of(&refused),
            Some(reason),
            "{refused:?}"
        );
    }
    let second: Vec<String> = (0..100).map(|i| format!("b-{i}")).collect();
    produce_routed(
        &address_of(&addresses, moved.leader),
        "zombie",
        &second[..1],
    )
    .await
    .expect("acks=all at the new leader");
    println!(
        "recovery: {:?} from SIGSTOP of the leader to an acks=all produce at the next one",
        paused_at.elapsed()
    );
    produce_routed(
        &address_of(&addresses, moved.leader),
        "zombie",
        &second[1..],
    )
    .await
    .expect("acks=all at the new leader");

    // It wakes up still believing it leads: a write sent straight to it is not acknowledged.
    zombie.signal("CONT");
    let mut direct = WeirClient::connect(format!("http://{old_address}"))
        .await
        .expect("connect to the old leader");
    let late = direct
        .produce(v1::ProduceRequest {
            topic: "zombie".to_string(),
            acks: v1::Acks::All as i32,
            batches: Vec::new(),
            records: vec![v1::ProduceRecord {
                partition: Some(0),
                value: Some(b"zombie-write".to_vec().into()),
                ..Default::default()
            }],
        })
        .await;
    let acknowledged = late
        .as_ref()
        .is_ok_and(|r| r.get_ref().results.iter().all(|p| p.error.is_none()));
    assert!(
        !acknowledged,
        "the deposed leader acknowledged a write: {late:?}"
    );

    // It rejoins as a follower, and its late write is nowhere.
    wait_for_partition(&other.address, "zombie", |p| p.isr.len() == 3).await;
    let read = read_all(&address_of(&addresses, moved.leader), "zombie").await;
    let expected: Vec<String> = first.iter().chain(second.iter()).cloned().collect();
    assert_eq!(read, expected);
    drop(brokers);
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_takes_over_and_a_torn_follower_recovers() {
    use std::io::Write;
    use weir_proto::v1::controller_client::ControllerClient;

    let ThreeBrokers {
        mut controller,
        controller_dir,
        dirs,
        mut brokers,
        root: _root,
    } = ThreeBrokers::with_topic("steady", 1).await;
    let addresses = running_addresses(&brokers);
    let batch = |tag: &str| -> Vec<String> { (0..100).map(|i| format!("{tag}-{i}")).collect() };
    let mut expected = batch("a");
    produce_routed(&addresses[0], "steady", &expected)
        .await
        .expect("acks=all");

    // The controller dies: the data path does not need it.
    let killed_at = Instant::now();
    controller.kill();
    let without = batch("b");
    produce_routed(&addresses[0], "steady", &without)
        .await
        .expect("acks=all with no controller");
    println!(
        "recovery: {:?} from the controller's kill -9 to 100 records acknowledged with acks=all (no outage)",
        killed_at.elapsed()
    );
    expected.extend(without);

    // A new controller on the same store and address takes over at the next epoch, and
    // still fails leaders over.
    let address = controller.address.clone();
    let controller = ControllerProcess::start_on(&controller_dir, &address);
    let secret = weir_proto::ClusterSecret::read(&controller.secret_file).expect("secret");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", controller.address))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut watch = ControllerClient::with_interceptor(channel, secret.presenter())
        .watch_metadata(v1::WatchMetadataRequest { broker_id: None })
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(DEADLINE, watch.message())
        .await
        .expect("metadata in time")
        .expect("watch")
        .expect("metadata");
    assert_eq!(first.controller_epoch, 2);
    let (p0, _) = partition_zero(&addresses[0], "steady")
        .await
        .expect("described");
    let leader = p0.leader;
    brokers[leader as usize - 1]
        .as_mut()
        .expect("leader")
        .kill();
    brokers[leader as usize - 1] = None;
    let live = running_addresses(&brokers);
    wait_for_partition(&live[0], "steady", |p| p.leader >= 0 && p.leader != leader).await;
    let after = batch("c");
    produce_routed(&live[0], "steady", &after)
        .await
        .expect("acks=all after the failover");
    expected.extend(after);

    // The killed broker's log gets a torn tail (half a batch of junk) before it restarts:
    // recovery cuts it, and it catches up.
    let segment = std::fs::read_dir(dirs[leader as usize - 1].join("steady-0"))
        .expect("partition dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .expect("a segment");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open segment")
        .write_all(&[0x5a; 37])
        .expect("append junk");
    let restarted_at = Instant::now();
    brokers[leader as usize - 1] = Some(start_broker(
        &dirs[leader as usize - 1],
        leader,
        &controller,
    ));
    wait_for_partition(&live[0], "steady", |p| p.isr.len() == 3).await;
    println!(
        "recovery: {:?} from restarting the torn replica to a whole ISR",
        restarted_at.elapsed()
    );
    let (now, addresses) = partition_zero(&live[0], "steady").await.expect("described");
    let read = read_all(&address_of(&addresses, now.leader), "steady").await;
    assert_eq!(read, expected);
    // The restarted replica holds the same records: with the other two gone it leads, and
    // reads the same.
    for id in now.replicas.iter().filter(|&&r| r != leader) {
        brokers[*id as usize - 1].as_mut().expect("running").kill();
    }
    let restarted = brokers[leader as usize - 1]
        .as_ref()
        .expect("restarted")
        .address
        .clone();
    wait_for_partition(&restarted, "steady", |p| p.leader == leader).await;
    assert_eq!(read_all(&restarted, "steady").await, expected);
    drop(brokers);
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_and_the_coordinator_survive_the_coordinators_kill() {
    use std::collections::BTreeMap;
    use weir_client::{GroupConfig, GroupConsumer};
    use weir_proto::partitioner::partition_for_key;

    let ThreeBrokers {
        controller,
        controller_dir: _,
        dirs: _,
        mut brokers,
        root: _root,
    } = ThreeBrokers::with_topic("work", 3).await;
    let addresses = running_addresses(&brokers);
    let client = Client::connect(&addresses[0]).await.expect("connect");
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..300 {
        let record = ProducerRecord {
            key: Some(format!("k{i}").into()),
            ..ProducerRecord::new("work", format!("w-{i}"))
        };
        deliveries.push(producer.send(record).await.expect("send"));
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.wait().await.expect("acknowledged");
    }

    let config = GroupConfig {
        auto_commit: false,
        reset: StartAt::Earliest,
        max_wait: Duration::from_millis(200),
        ..GroupConfig::default()
    };
    let mut member = GroupConsumer::join(client.clone(), "billing", &["work"], config.clone())
        .await
        .expect("join");
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while seen.len() < 150 {
        assert!(
            Instant::now() < deadline,
            "only {} of 150 records",
            seen.len()
        );
        let records = member.poll_up_to(150 - seen.len()).await.expect("poll");
        seen.extend(
            records
                .into_iter()
                .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned()),
        );
    }
    member.commit().await.expect("commit");
    let committed = |d: &v1::GroupDescription| -> BTreeMap<i32, i64> {
        d.partitions
            .iter()
            .filter_map(|p| p.committed_offset.map(|o| (p.partition, o)))
            .collect()
    };
    let before = committed(&client.describe_group("billing").await.expect("describe"));
    assert_eq!(before.values().sum::<i64>(), 150, "{before:?}");

    // Kill the coordinator: the leader of the group's __consumer_offsets partition.
    let (offsets, brokers_now) = {
        let mut weir = WeirClient::connect(format!("http://{}", addresses[0]))
            .await
            .expect("connect");
        let metadata = weir
            .metadata(v1::MetadataRequest {
                topics: vec!["__consumer_offsets".into()],
            })
            .await
            .expect("metadata")
            .into_inner();
        (metadata.topics[0].clone(), metadata.brokers)
    };
    let index = partition_for_key(b"billing", offsets.partitions.len() as u32) as usize;
    let coordinator = offsets.partitions[index].leader;
    assert_eq!(
        offsets.partitions[index].replicas.len(),
        3,
        "__consumer_offsets replicates"
    );
    // A broker that does not coordinate the group says so, and names the one that does.
    let elsewhere = brokers_now
        .iter()
        .find(|b| b.id != coordinator)
        .expect("another broker");
    let refused = v1::groups_client::GroupsClient::connect(format!("http://{}", elsewhere.address))
        .await
        .expect("connect")
        .describe_group(v1::DescribeGroupRequest {
            group_id: "billing".into(),
        })
        .await
        .expect_err("not the coordinator");
    assert_eq!(
        weir_proto::Reason::of(&refused),
        Some(weir_proto::Reason::NotCoordinator)
    );
    assert!(
        refused.message().contains(&format!("broker {coordinator}")),
        "{}",
        refused.message()
    );
    let killed_at = Instant::now();
    brokers[coordinator as usize - 1]
        .as_mut()
        .expect("coordinator")
        .kill();
    brokers[coordinator as usize - 1] = None;

    // The committed offsets are still there, never behind, at the new coordinator.
    let live = running_addresses(&brokers);
    let survivor = Client::connect(&live[0]).await.expect("connect");
    let deadline = Instant::now() + DEADLINE;
    let after = loop {
        match survivor.describe_group("billing").await {
            Ok(d) if !committed(&d).is_empty() => break committed(&d),
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no coordinator for the group after the kill: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    println!(
        "recovery: {:?} from the coordinator's kill -9 to the group's offsets at the next one",
        killed_at.elapsed()
    );
    for (partition, offset) in &before {
        assert!(
            after.get(partition).is_some_and(|o| o >= offset),
            "partition {partition}: committed {offset} before the kill, {:?} after",
            after.get(partition)
        );
    }

    // The member goes on from the committed offsets: every record exactly once in all.
    let mut member = GroupConsumer::join(survivor.clone(), "billing", &["work"], config)
        .await
        .expect("join again");
    let deadline = Instant::now() + DEADLINE;
    while seen.len() < 300 {
        assert!(
            Instant::now() < deadline,
            "only {} of 300 records",
            seen.len()
        );
        let records = member.poll().await.expect("poll");
        seen.extend(
            records
                .into_iter()
                .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned()),
        );
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), 300, "a record was consumed twice or missed");
    drop(brokers);
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_replicas_dead_acks_all_is_refused_and_nothing_is_lost() {
    let ThreeBrokers {
        controller,
        controller_dir: _,
        dirs,
        mut brokers,
        root: _root,
    } = ThreeBrokers::with_topic("minisr", 1).await;
    let addresses = running_addresses(&brokers);
    let (p0, addresses) = partition_zero(&addresses[0], "minisr")
        .await
        .expect("described");
    let leader = address_of(&addresses, p0.leader);
    let first: Vec<String> = (0..100).map(|i| format!("a-{i}")).collect();
    produce_all(&leader, "minisr", &first)
        .await
        .expect("acks=all");

    // Both followers die: the ISR shrinks to the leader, below min.insync.replicas.
    let followers: Vec<i32> = p0
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != p0.leader)
        .collect();
    for id in &followers {
        brokers[*id as usize - 1].as_mut().expect("follower").kill();
        brokers[*id as usize - 1] = None;
    }
    wait_for_partition(&leader, "minisr", |p| p.isr == vec![p0.leader]).await;
    let client = Client::connect(&leader).await.expect("connect");
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::All,
            retry: steady_retries(Duration::ZERO),
            ..ProducerConfig::default()
        },
    );
    let delivery = producer
        .send(ProducerRecord {
            partition: Some(0),
            ..ProducerRecord::new("minisr", "refused")
        })
        .await
        .expect("send");
    producer.flush().await;
    let refused = delivery.wait().await.expect_err("not enough replicas");
    assert_eq!(
        refused.reason(),
        Some(weir_proto::Reason::NotEnoughReplicas),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("nothing was written"),
        "{refused}"
    );

    // They come back, catch up and rejoin; acks=all works again; nothing is lost.
    let healed_at = Instant::now();
    for id in &followers {
        brokers[*id as usize - 1] = Some(start_broker(&dirs[*id as usize - 1], *id, &controller));
    }
    wait_for_partition(&leader, "minisr", |p| p.isr.len() == 3).await;
    let second: Vec<String> = (0..100).map(|i| format!("b-{i}")).collect();
    produce_all(&leader, "minisr", &second)
        .await
        .expect("acks=all again");
    println!(
        "recovery: {:?} from restarting the two followers to acks=all again",
        healed_at.elapsed()
    );
    let read = read_all(&leader, "minisr").await;
    let expected: Vec<String> = first.iter().chain(second.iter()).cloned().collect();
    assert_eq!(read, expected);
    drop(brokers);
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_allows_unclean_election_gets_an_out_of_sync_leader() {
    let ThreeBrokers {
        controller,
        controller_dir: _,
        dirs: _,
        mut brokers,
        root: _root,
    } = ThreeBrokers::with_topic("clean", 1).await;
    let addresses = running_addresses(&brokers);
    Client::connect(&addresses[0])
        .await
        .expect("connect")
        .create_topic(
            "unclean",
            1,
            3,
            [(
                "unclean.leader.election.enable".to_string(),
                "true".to_string(),
            )]
            .into(),
        )
        .await
        .expect("create");
    for broker in &addresses {
        wait_for_partition(broker, "unclean", |p| p.isr.len() == 3).await;
    }
    // The two topics may have different leaders; pause a replica that leads neither if one
    // exists, else one that does not lead "unclean".
    let (unclean, _) = partition_zero(&addresses[0], "unclean")
        .await
        .expect("described");
    let (clean, _) = partition_zero(&addresses[0], "clean")
        .await
        .expect("described");
    let paused = (1..=3)
        .find(|&id| id != unclean.leader && id != clean.leader)
        .or_else(|| (1..=3).find(|&id| id != unclean.leader))
        .expect("a follower");
    brokers[paused as usize - 1]
        .as_ref()
        .expect("running")
        .signal("STOP");
    let other = (1..=3).find(|&id| id != paused).expect("another broker");
    let other_address = brokers[other as usize - 1]
        .as_ref()
        .expect("running")
        .address
        .clone();
    wait_for_partition(&other_address, "unclean", |p| !p.isr.contains(&paused)).await;
    // Both in-sync replicas die; the out-of-sync one resumes.
    for id in (1..=3).filter(|&id| id != paused) {
        brokers[id as usize - 1].as_mut().expect("running").kill();
        brokers[id as usize - 1] = None;
    }
    brokers[paused as usize - 1]
        .as_ref()
        .expect("paused")
        .signal("CONT");
    let woke = brokers[paused as usize - 1]
        .as_ref()
        .expect("running")
        .address
        .clone();
    // "unclean" allows it: the out-of-sync replica leads, alone in its ISR, and takes writes.
    let (led, _) = wait_for_partition(&woke, "unclean", |p| p.leader == paused).await;
    assert_eq!(led.isr, vec![paused]);
    produce_all(&woke, "unclean", &["after".to_string()])
        .await
        .expect("acks=all with min.insync.replicas=1 on the new leader");
    // "clean" does not: it stays without a leader.
    let (stuck, _) = partition_zero(&woke, "clean").await.expect("described");
    assert_ne!(
        stuck.leader, paused,
        "an out-of-sync replica led a clean topic: {stuck:?}"
    );
    drop(brokers);
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_leaders_partitions_spread_and_come_back_once_it_is_in_sync() {
    let root = tempfile::tempdir().expect("dir");
    let controller = ControllerProcess::start_with(
        &root.path().join("controller"),
        "127.0.0.1:0",
        &["--leader-rebalance-interval", "1s"],
    );
    let dirs: Vec<PathBuf> = (1..=3)
        .map(|id| root.path().join(format!("broker-{id}")))
        .collect();
    let mut brokers: Vec<Option<BrokerProcess>> = (1..=3)
        .map(|id| Some(start_broker(&dirs[id as usize - 1], id, &controller)))
        .collect();
    let addresses = running_addresses(&brokers);
    let client = Client::connect(&addresses[1]).await.expect("connect");
    client
        .create_topic("spread", 30, 3, Default::default())
        .await
        .expect("create");
    let leaders = |described: &v1::TopicDescription| -> Vec<i32> {
        described.partitions.iter().map(|p| p.leader).collect()
    };
    let preferred: Vec<i32> = client
        .describe_topic("spread")
        .await
        .expect("describe")
        .partitions
        .iter()
        .map(|p| p.replicas[0])
        .collect();
    brokers[0].as_mut().expect("broker 1").kill();
    // Broker 1's ten partitions go to both others, not all to one.
    let deadline = Instant::now() + DEADLINE;
    let after = loop {
        let described = client.describe_topic("spread").await.expect("describe");
        let now = leaders(&described);
        if now.iter().all(|&l| l == 2 || l == 3) {
            break now;
        }
        assert!(Instant::now() < deadline, "no failover: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = |id: i32| {
        preferred
            .iter()
            .zip(&after)
            .filter(|&(&p, &l)| p == 1 && l == id)
            .count()
    };
    assert!(
        took(2) > 0 && took(3) > 0,
        "broker 1's partitions went to 2: {}, to 3: {}",
        took(2),
        took(3)
    );
    // Back and in sync: the rebalance returns each partition to its preferred replica.
    brokers[0] = Some(start_broker(&dirs[0], 1, &controller));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let described = client.describe_topic("spread").await.expect("describe");
        if leaders(&described) == preferred {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders {:?}, preferred {preferred:?}",
            leaders(&described)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kafka's controlled shutdown: a broker stopped with SIGTERM first hands the partitions it
/// leads to in-sync replicas and leaves the ISRs, while producers keep writing with
/// `acks=all`: nothing they were told is written is lost, no partition's ISR falls below
/// `min.insync.replicas`, and the restarted broker rejoins every ISR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_hands_leadership_over_before_the_broker_stops() {
    let ThreeBrokers {
        controller,
        controller_dir: _,
        dirs,
        mut brokers,
        root: _root,
    } = ThreeBrokers::with_topic("handover", 3).await;
    let live = running_addresses(&brokers);
    let (leader, _, _) = current_leader(&live, "handover").await;
    let bystander = live[usize::try_from(leader % 3).expect("index")].clone();
    let client = Client::connect(&bystander).await.expect("connect");

    // The smallest ISR seen while the broker goes, sampled until told to stop.
    let (stop_watch, watching) = tokio::sync::watch::channel(false);
    let watcher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut smallest = usize::MAX;
            while !*watching.borrow() {
                if let Ok(described) = client.describe_topic("handover").await {
                    for p in &described.partitions {
                        smallest = smallest.min(p.isr.len());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            smallest
        })
    };
    // A producer that keeps writing through the stop (with retries, as Kafka's producer).
    let values: Vec<String> = (0..3000).map(|i| format!("v{i}")).collect();
    let (progress, mut acked_so_far) = tokio::sync::watch::channel(0usize);
    let producer = {
        let bystander = bystander.clone();
        let values = values.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for chunk in values.chunks(100) {
                produce(&bystander, "handover", chunk, Duration::from_secs(10)).await?;
                acked.extend_from_slice(chunk);
                progress.send_replace(acked.len());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, String>(acked)
        })
    };
    // The producer under way (a few hundred records acknowledged) before the stop.
    tokio::time::timeout(DEADLINE, acked_so_far.wait_for(|n| *n >= 300))
        .await
        .expect("the producer started in time")
        .expect("the producer runs");
    let index = usize::try_from(leader - 1).expect("index");
    let stopping = brokers[index].as_mut().expect("the leader");
    assert_eq!(stopping.terminate(), Some(0), "a clean stop");
    let log = stopping.log();
    assert!(
        log.contains("controlled shutdown: leaderships handed over")
            && log.contains("partitions_changed=3")
            && log.contains("metadata_applied=true"),
        "the broker handed over before it stopped:\n{log}"
    );
    let acked = producer
        .await
        .expect("producer task")
        .expect("every record acknowledged through the stop");
    assert_eq!(acked.len(), values.len());
    // Back: it rejoins every ISR.
    brokers[index] = Some(start_broker(&dirs[index], leader, &controller));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let described = client.describe_topic("handover").await.expect("describe");
        if described.partitions.iter().all(|p| p.isr.len() == 3) {
            break;
        }
        assert!(Instant::now() < deadline, "not back in sync: {described:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_watch.send_replace(true);
    let smallest = watcher.await.expect("watcher");
    assert!(
        smallest >= 2,
        "an ISR fell to {smallest}, below min.insync.replicas"
    );
    // Partition 0 holds every record sent to it, once.
    let (_, leader_address, _) = current_leader(&running_addresses(&brokers), "handover").await;
    let read = read_all(&leader_address, "handover").await;
    let mut unique = read.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        values.len(),
        "every acknowledged record is there"
    );
    assert_eq!(read.len(), values.len(), "none twice");
}

/// A partition moves to another broker while it is written to (KIP-455): the new replica
/// catches up as a follower and joins the ISR, the partition drops the replica it leaves
/// (its data goes from that broker's disk), nothing acknowledged is lost, and the new
/// replica holds everything: it alone serves it all once the other old replica is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_another_broker_under_writes() {
    let ThreeBrokers {
        controller: _controller,
        controller_dir: _,
        dirs,
        mut brokers,
        root: _root,
    } = ThreeBrokers::with_topic("other", 1).await;
    let live = running_addresses(&brokers);
    let client = Client::connect(&live[0]).await.expect("connect");
    client
        .create_topic("moving", 1, 2, Default::default())
        .await
        .expect("create a topic of two replicas");
    let before = client
        .describe_topic("moving")
        .await
        .expect("describe")
        .partitions[0]
        .clone();
    let (kept, left) = (before.replicas[0], before.replicas[1]);
    let added = (1..=3)
        .find(|b| !before.replicas.contains(b))
        .expect("a third broker");
    // Records before the move, and more while it runs.
    let early: Vec<String> = (0..2000).map(|i| format!("early-{i}")).collect();
    produce_routed(&live[0], "moving", &early)
        .await
        .expect("produce");
    let writer = {
        let bootstrap = live[0].clone();
        tokio::spawn(async move {
            let late: Vec<String> = (0..1000).map(|i| format!("late-{i}")).collect();
            for chunk in late.chunks(50) {
                produce(&bootstrap, "moving", chunk, Duration::from_secs(10)).await?;
            }
            Ok::<_, String>(late)
        })
    };
    let refused = client
        .alter_reassignments(vec![v1::PartitionReassignment {
            topic: "moving".into(),
            partition: 0,
            replicas: vec![added, kept, 99],
        }])
        .await
        .expect("call");
    assert!(
        refused[0].error.contains("broker 99"),
        "an unknown broker is refused: {refused:?}"
    );
    let results = client
        .alter_reassignments(vec![v1::PartitionReassignment {
            topic: "moving".into(),
            partition: 0,
            replicas: vec![added, kept],
        }])
        .await
        .expect("reassign");
    assert!(results[0].error.is_empty(), "{results:?}");
    let deadline = Instant::now() + DEADLINE;
    let after = loop {
        let p = client
            .describe_topic("moving")
            .await
            .expect("describe")
            .partitions[0]
            .clone();
        if p.replicas == [added, kept] && p.isr.len() == 2 && p.adding.is_empty() {
            break p;
        }
        assert!(Instant::now() < deadline, "the move never completed: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(client.list_reassignments().await.expect("list").is_empty());
    assert!(!after.isr.contains(&left));
    let late = writer
        .await
        .expect("writer")
        .expect("every record acknowledged during the move");
    // The broker it left drops its copy.
    let dropped = dirs[usize::try_from(left - 1).expect("index")].join("moving-0");
    let deadline = Instant::now() + DEADLINE;
    while dropped.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there",
            dropped.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new replica has everything: with the other old replica gone, it serves it all.
    brokers[usize::try_from(kept - 1).expect("index")]
        .as_mut()
        .expect("kept")
        .kill();
    let survivors = running_addresses(&brokers);
    let (leader, address, _) = current_leader(&survivors, "moving").await;
    let deadline = Instant::now() + DEADLINE;
    let (leader, address) = if leader == added {
        (leader, address)
    } else {
        loop {
            let (l, a, _) = current_leader(&survivors, "moving").await;
            if l == added {
                break (l, a);
            }
            assert!(Instant::now() < deadline, "broker {added} never led");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(leader, added);
    let mut read = read_all(&address, "moving").await;
    read.sort();
    let mut expected: Vec<String> = early.into_iter().chain(late).collect();
    expected.sort();
    assert_eq!(
        read, expected,
        "every acknowledged record, once, on the new replica"
    );
}
