//! A Kafka client through a leader's SIGKILL: confluent-kafka's idempotent producer (acks=all)
//! follows the new leader through Metadata, no acknowledged record is lost and none is
//! written twice.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::confluent_python;
use crate::{ThreeBrokers, address_of, read_all, wait_for_partition};

const RECORDS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_kafka_producer_follows_a_killed_leader_and_writes_each_record_once() {
    let Some(python) = confluent_python() else {
        return;
    };
    let ThreeBrokers {
        controller: _controller,
        controller_dir: _,
        dirs: _,
        mut brokers,
        root: _root,
    } = ThreeBrokers::with_topic("idempotent", 1).await;
    let any = brokers[0].as_ref().expect("broker 1").address.clone();
    let (p0, _) = wait_for_partition(&any, "idempotent", |p| p.isr.len() == 3).await;
    let bootstrap: Vec<String> = brokers
        .iter()
        .flatten()
        .map(|b| b.kafka_address.clone())
        .collect();

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kafka/confluent_failover.py");
    let mut child = Command::new(python)
        .arg(&script)
        .args([&bootstrap.join(","), "idempotent", &RECORDS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, said) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let half = said
        .recv_timeout(Duration::from_secs(60))
        .expect("the producer gets half its records acknowledged");
    assert_eq!(half, "half");

    // kill -9 the leader mid-stream.
    brokers[p0.leader as usize - 1]
        .as_mut()
        .expect("leader process")
        .kill();

    let deadline = Instant::now() + Duration::from_secs(150);
    let acked = loop {
        match said.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("acked ") => break line,
            Ok(_) => {}
            Err(_) => assert!(
                Instant::now() < deadline,
                "the producer did not finish within 150 s of the kill"
            ),
        }
    };
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "the producer failed: {stderr}");
    let acked: Vec<&str> = acked["acked ".len()..]
        .split(',')
        .filter(|v| !v.is_empty())
        .collect();
    assert_eq!(acked.len(), RECORDS, "every record acknowledged");

    // Read the partition from its new leader: every acknowledged record once.
    let survivor = brokers
        .iter()
        .flatten()
        .find(|b| b.pid().is_some())
        .expect("a survivor")
        .address
        .clone();
    let (moved, addresses) = wait_for_partition(&survivor, "idempotent", |p| {
        p.leader != p0.leader && p.leader >= 0
    })
    .await;
    let stored = read_all(&address_of(&addresses, moved.leader), "idempotent").await;
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for value in &stored {
        *times.entry(value.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    let lost: Vec<_> = acked
        .iter()
        .filter(|v| !times.contains_key(**v))
        .take(5)
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
}

/// Kafka's DeleteRecords v0 of partition 0 of `topic` below `offset`, sent to `kafka` (the
/// leader); the partition's (error code, low watermark).
fn delete_records(kafka: &str, topic: &str, offset: i64) -> (i16, i64) {
    use std::io::{Read, Write};
    let mut request = 21i16.to_be_bytes().to_vec(); // DeleteRecords
    request.extend(0i16.to_be_bytes()); // v0
    request.extend(1i32.to_be_bytes()); // correlation id
    request.extend((-1i16).to_be_bytes()); // no client id
    request.extend(1i32.to_be_bytes());
    request.extend((topic.len() as i16).to_be_bytes());
    request.extend(topic.as_bytes());
    request.extend(1i32.to_be_bytes());
    request.extend(0i32.to_be_bytes()); // partition
    request.extend(offset.to_be_bytes());
    request.extend(10_000i32.to_be_bytes()); // timeout
    let mut framed = (request.len() as i32).to_be_bytes().to_vec();
    framed.extend(request);
    let mut stream = std::net::TcpStream::connect(kafka).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.write_all(&framed).expect("send");
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("an answer");
    let mut answer = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).expect("its bytes");
    // Correlation id, throttle, topic count, name, partition count, index, low watermark, code.
    let at = 4 + 4 + 4 + 2 + topic.len() + 4 + 4;
    let low = i64::from_be_bytes(answer[at..at + 8].try_into().expect("8 bytes"));
    let code = i16::from_be_bytes([answer[at + 8], answer[at + 9]]);
    (code, low)
}

/// A broker's `weir_log_start_offset` of partition 0 of `topic`, from its metrics.
fn log_start_metric(broker: &crate::harness::BrokerProcess, topic: &str) -> Option<i64> {
    let (_, body) = broker.http_get("/metrics");
    let wanted = format!("topic=\"{topic}\"");
    body.lines()
        .filter(|l| l.starts_with("weir_log_start_offset") && l.contains(&wanted))
        .find(|l| l.contains("partition=\"0\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_kafka_client_deletes_are_deleted_on_every_replica() {
    let ThreeBrokers {
        controller: _controller,
        controller_dir: _,
        dirs: _,
        brokers,
        root: _root,
    } = ThreeBrokers::with_topic("trimmed", 1).await;
    let any = brokers[0].as_ref().expect("broker 1").address.clone();
    let (p0, _) = wait_for_partition(&any, "trimmed", |p| p.isr.len() == 3).await;
    let leader = brokers[p0.leader as usize - 1]
        .as_ref()
        .expect("the leader runs");
    let values: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    crate::produce_all(&leader.address, "trimmed", &values)
        .await
        .expect("produce");
    let (code, low) = delete_records(&leader.kafka_address, "trimmed", 40);
    assert_eq!((code, low), (0, 40));
    // A follower is not where records are deleted: NOT_LEADER_OR_FOLLOWER.
    let follower = brokers
        .iter()
        .flatten()
        .find(|b| b.address != leader.address)
        .expect("a follower");
    assert_eq!(delete_records(&follower.kafka_address, "trimmed", 50).0, 6);
    // Every replica's log starts at 40 once the followers have fetched.
    let deadline = Instant::now() + Duration::from_secs(30);
    for broker in brokers.iter().flatten() {
        while log_start_metric(broker, "trimmed") != Some(40) {
            assert!(
                Instant::now() < deadline,
                "broker {} starts at {:?}",
                broker.address,
                log_start_metric(broker, "trimmed")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let left = read_all(&leader.address, "trimmed").await;
    assert_eq!(left.first().map(String::as_str), Some("r40"));
    assert_eq!(left.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_commits_offsets_of_partitions_it_holds_no_replica_of() {
    let ThreeBrokers {
        controller: _controller,
        controller_dir: _,
        dirs: _,
        brokers,
        root: _root,
    } = ThreeBrokers::with_topic("unused", 1).await;
    let any = brokers[0].as_ref().expect("broker 1").address.clone();
    let client = weir_client::Client::connect(&any).await.expect("connect");
    // One replica per partition, spread over the three brokers: whichever broker coordinates
    // the group holds at most one of them.
    client
        .create_topic("single", 3, 1, BTreeMap::new())
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .reset_group_offsets(
                "spread",
                "single",
                weir_proto::v1::OffsetSpec::Latest,
                0,
                Some(0),
            )
            .await
        {
            Ok(()) => break,
            // The new topic's metadata may not have reached every broker yet.
            Err(e) => assert!(Instant::now() < deadline, "reset: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let described = client.describe_group("spread").await.expect("describe");
    let committed: Vec<Option<i64>> = described
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(committed, vec![Some(0); 3], "{described:?}");
}
