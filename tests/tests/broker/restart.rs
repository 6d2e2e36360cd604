//! Clients ride out a broker restart: the producer, a consumer and a group member keep going
//! through a SIGTERM and a SIGKILL of the broker, and nothing is lost or written twice.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::harness::{BrokerProcess, WeirProcess, free_port, weir_ok};

const RECORDS: usize = 12_000;

/// Waits (up to 30 s) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(ToString::to_string).collect()
}

fn ride_out(kill: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut broker = BrokerProcess::launch(&data, &listen, &[]).ready();
    weir_ok(
        &listen,
        &["topic", "create", "ride", "--partitions", "2"],
        "",
    );
    let input: String = (0..RECORDS).map(|i| format!("v{i}\n")).collect();
    let max = RECORDS.to_string();
    let mut consumer = WeirProcess::spawn(
        &listen,
        &[
            "consume",
            "ride",
            "--from-beginning",
            "--max-messages",
            &max,
        ],
        String::new(),
    );
    let mut member = WeirProcess::spawn(
        &listen,
        &[
            "consume",
            "ride",
            "--group",
            "riders",
            "--from-beginning",
            "--timeout",
            "6s",
        ],
        String::new(),
    );
    let mut producer = WeirProcess::spawn(
        &listen,
        &["produce", "ride", "--acks", "1", "--rate", "4000"],
        input,
    );
    eventually("the consumer reads while the producer writes", || {
        consumer.stdout().lines().count() >= 2000
    });
    if kill {
        broker.kill();
    } else {
        assert_eq!(broker.terminate(), Some(0));
    }
    // The broker is away for a second (the fault, not a wait for anything).
    std::thread::sleep(Duration::from_secs(1));
    let broker = BrokerProcess::launch(&data, &listen, &[]).ready();

    assert_eq!(
        producer.wait(Duration::from_secs(90)),
        Some(0),
        "the producer rode it out: {}",
        producer.stderr()
    );
    assert!(
        producer
            .stderr()
            .contains(&format!("produced {RECORDS} records")),
        "{}",
        producer.stderr()
    );
    assert_eq!(
        consumer.wait(Duration::from_secs(60)),
        Some(0),
        "the consumer rode it out: {}",
        consumer.stderr()
    );
    let expected: BTreeSet<String> = (0..RECORDS).map(|i| format!("v{i}")).collect();
    let read = lines(&consumer.stdout());
    assert_eq!(read.len(), RECORDS);
    assert_eq!(read.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        member.wait(Duration::from_secs(90)),
        Some(0),
        "the group member rode it out: {}",
        member.stderr()
    );
    let by_member: BTreeSet<String> = lines(&member.stdout()).into_iter().collect();
    assert_eq!(
        by_member, expected,
        "every record reached the group (at least once)"
    );

    // Written once each: the idempotent producer's retries were recognised after the restart.
    let stored = lines(&weir_ok(
        &broker.address,
        &["consume", "ride", "--from-beginning", "--timeout", "2s"],
        "",
    ));
    assert_eq!(stored.len(), RECORDS, "no record lost or duplicated");
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), expected);
}

#[test]
fn clients_ride_out_a_broker_stopped_and_started_again() {
    ride_out(false);
}

#[test]
fn clients_ride_out_a_broker_killed_and_started_again() {
    ride_out(true);
}

#[test]
fn an_interrupted_group_member_commits_what_it_printed_and_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.address.as_str();
    weir_ok(b, &["topic", "create", "quit"], "");
    let input: String = (0..100).map(|i| format!("q{i}\n")).collect();
    weir_ok(b, &["produce", "quit"], &input);
    let mut member = WeirProcess::spawn(
        b,
        &["consume", "quit", "--group", "quitters", "--from-beginning"],
        String::new(),
    );
    eventually("the member printed every record", || {
        member.stdout().lines().count() == 100
    });
    member.signal("INT");
    assert_eq!(
        member.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        member.stderr()
    );
    let described: serde_json::Value = serde_json::from_str(&weir_ok(
        b,
        &["group", "describe", "quitters", "--output", "json"],
        "",
    ))
    .expect("json");
    assert_eq!(
        described["members"].as_array().map(Vec::len),
        Some(0),
        "it left at once, no ghost until the session timeout: {described}"
    );
    assert_eq!(
        described["partitions"][0]["committed_offset"], 100,
        "what it printed is committed: {described}"
    );
}
