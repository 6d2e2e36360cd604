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
