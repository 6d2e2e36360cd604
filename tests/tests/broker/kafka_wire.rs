//! Kafka's wire protocol byte by byte, without a client library: request frames a client
//! would send and frames none would (negative and huge lengths, truncated bodies, huge array
//! counts, unknown APIs and versions), responses in request order while earlier requests
//! still wait, and the error codes of records that fail their checksum.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{BrokerProcess, weir_ok};

/// Sends `frame` on a new connection and returns what came back before the broker closed it
/// (or `None` when it was still open after 5 s).
fn send_raw(address: &str, frame: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(frame).expect("send");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Some(answer),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            None
        }
        Err(_) => Some(answer),
    }
}

/// A request frame: length, API key, version, correlation id, client id, then `body`.
fn frame(key: i16, version: i16, flexible: bool, body: &[u8]) -> Vec<u8> {
    let mut request = Vec::new();
    request.extend_from_slice(&key.to_be_bytes());
    request.extend_from_slice(&version.to_be_bytes());
    request.extend_from_slice(&7i32.to_be_bytes());
    request.extend_from_slice(&(-1i16).to_be_bytes());
    if flexible {
        request.push(0);
    }
    request.extend_from_slice(body);
    let mut framed = (request.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    framed
}

#[test]
fn offset_for_leader_epoch_tells_where_an_epoch_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(&broker.address, &["topic", "create", "orders"], "");
    weir_ok(&broker.address, &["produce", "orders"], "a\nb\nc\n");
    // OffsetForLeaderEpoch v2: topic "orders", partition 0, current epoch unknown (-1),
    // asking where epoch 0 ends.
    let mut body = 1i32.to_be_bytes().to_vec();
    body.extend(6i16.to_be_bytes());
    body.extend(b"orders");
    body.extend(1i32.to_be_bytes());
    body.extend(0i32.to_be_bytes());
    body.extend((-1i32).to_be_bytes());
    body.extend(0i32.to_be_bytes());
    let mut stream = connect(&broker.kafka_address);
    let answer = ask(&mut stream, &frame(23, 2, false, &body));
    // correlation id, throttle, 1 topic, "orders", 1 partition, then its fields.
    let partition = &answer[4 + 4 + 4 + 2 + 6 + 4..];
    let error = i16::from_be_bytes([partition[0], partition[1]]);
    let epoch = i32::from_be_bytes(partition[6..10].try_into().expect("4 bytes"));
    let end = i64::from_be_bytes(partition[10..18].try_into().expect("8 bytes"));
    assert_eq!((error, epoch, end), (0, 0, 3), "{answer:?}");
}

/// A connection to a Kafka listener whose reads give up after 10 s.
fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

/// Sends `request` (a whole frame) and reads one response frame: its bytes after the length.
fn ask(stream: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).expect("send");
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("an answer");
    let mut answer = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).expect("the answer");
    answer
}

#[test]
fn a_failed_acks_0_produce_closes_its_connection_as_kafka_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    // Produce v3 with acks=0 to a topic nobody created: no response can say so, so the
    // broker closes the connection and the producer notices.
    let mut body = (-1i16).to_be_bytes().to_vec(); // no transactional id
    body.extend(0i16.to_be_bytes()); // acks
    body.extend(5000i32.to_be_bytes()); // timeout
    body.extend(1i32.to_be_bytes());
    body.extend(7i16.to_be_bytes());
    body.extend(b"missing");
    body.extend(1i32.to_be_bytes());
    body.extend(0i32.to_be_bytes()); // partition
    body.extend(3i32.to_be_bytes()); // records
    body.extend([1, 2, 3]);
    let answer = send_raw(&broker.kafka_address, &frame(0, 3, false, &body))
        .expect("the connection is closed, not left open");
    assert!(answer.is_empty(), "acks=0 gets no response: {answer:?}");
    // The log says why (once the connection's task has ended, just after the socket closed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !broker.log().contains("acks=0 produce failed") {
        assert!(Instant::now() < deadline, "{}", broker.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[test]
fn frames_no_client_sends_close_their_connection_only_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let kafka = broker.kafka_address.as_str();
    let pid = broker.pid().expect("running");
    // One well-behaved connection stays open through it all.
    let mut good = TcpStream::connect(kafka).expect("connect");
    good.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let ask_versions = |stream: &mut TcpStream| ask(stream, &frame(18, 3, true, &[1, 1, 0]));
    let first = ask_versions(&mut good);
    // Correlation id 7, then (a v0 header: no tagged fields) error code 0.
    assert_eq!(&first[..6], &[0, 0, 0, 7, 0, 0], "{first:?}");
    let before = resident_kib(pid);

    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("a negative length", (-5i32).to_be_bytes().to_vec()),
        (
            "a length past socket.request.max.bytes",
            i32::MAX.to_be_bytes().to_vec(),
        ),
        ("a frame shorter than its header", vec![0, 0, 0, 3, 0, 3, 0]),
        ("a truncated frame", {
            let mut f = frame(3, 1, false, &[0, 0, 0, 1, 0, 5]);
            f.truncate(f.len() - 3);
            f
        }),
        // Metadata v0 claiming 2^31 - 1 topics in four bytes: the decoder alone would try to
        // reserve some 150 GB and abort the process.
        (
            "a huge array count",
            frame(3, 0, false, &[0x7f, 0xff, 0xff, 0xff]),
        ),
        // The same in a flexible version, as a compact array of about 2^28 topics.
        (
            "a huge compact count",
            frame(3, 9, true, &[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]),
        ),
        ("an unknown API key", frame(999, 0, false, &[])),
        ("an unsupported Metadata version", frame(3, 99, false, &[])),
    ];
    for (what, bytes) in &hostile {
        for _ in 0..20 {
            if what.contains("truncated") {
                // The broker waits for the rest (holding only what the frame declared) until
                // the client goes.
                let mut stream = TcpStream::connect(kafka).expect("connect");
                stream.write_all(bytes).expect("send");
                continue;
            }
            let answer = send_raw(kafka, bytes)
                .unwrap_or_else(|| panic!("{what}: the connection stayed open"));
            assert!(answer.is_empty(), "{what}: answered {answer:?}");
        }
    }
    // ApiVersions at a version this broker does not serve: Kafka's answer, a v0 body with
    // UNSUPPORTED_VERSION (35) and the versions served, then the connection stays usable.
    let mut asking = connect(kafka);
    let answer = ask(&mut asking, &frame(18, 77, true, &[]));
    assert_eq!(&answer[..6], &[0, 0, 0, 7, 0, 35], "{answer:?}");
    assert!(ask_versions(&mut asking).len() > 6);

    // The broker lives, its memory did not follow the claims, and the good connection and
    // new clients are served.
    assert!(
        broker.http_get("/healthz").0.contains("200"),
        "{}",
        broker.log()
    );
    let after = resident_kib(pid);
    assert!(
        after < before + 64 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
    assert!(ask_versions(&mut good).len() > 6);
    let log = broker.log();
    assert!(log.contains("Kafka connection closed"), "{log}");
}

/// `frame` with correlation id `correlation`.
fn frame_with(correlation: i32, key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut framed = frame(key, version, false, body);
    framed[8..12].copy_from_slice(&correlation.to_be_bytes());
    framed
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as i16).to_be_bytes());
    out.extend(s.as_bytes());
}

/// A Produce v3 body (acks=1) of `batch` to partition 0 of `topic`.
fn produce_v3(topic: &str, batch: &[u8]) -> Vec<u8> {
    let mut body = (-1i16).to_be_bytes().to_vec(); // no transactional id
    body.extend(1i16.to_be_bytes()); // acks
    body.extend(5000i32.to_be_bytes());
    body.extend(1i32.to_be_bytes());
    string(&mut body, topic);
    body.extend(1i32.to_be_bytes());
    body.extend(0i32.to_be_bytes()); // partition
    body.extend((batch.len() as i32).to_be_bytes());
    body.extend(batch);
    body
}

/// The error code of the one partition of a Produce v3 response (its bytes after the length).
fn produce_error(response: &[u8]) -> i16 {
    // Correlation id, topic count, topic name, partition count, partition index.
    let name = i16::from_be_bytes([response[8], response[9]]) as usize;
    let at = 4 + 4 + 2 + name + 4 + 4;
    i16::from_be_bytes([response[at], response[at + 1]])
}

#[test]
fn a_batch_that_fails_its_checksum_is_corrupt_message_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(&broker.address, &["topic", "create", "checked"], "");
    let mut builder = weir_record::BatchBuilder::new(0);
    builder.push(&weir_record::Record {
        timestamp: 1,
        key: None,
        value: Some(b"intact"),
        headers: Vec::new(),
    });
    let good = builder.build();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let mut stream = connect(&broker.kafka_address);
    let refused = ask(
        &mut stream,
        &frame(0, 3, false, &produce_v3("checked", &bad)),
    );
    assert_eq!(produce_error(&refused), 2, "CORRUPT_MESSAGE: {refused:?}");
    // The connection goes on; the intact batch is written, and only it.
    let written = ask(
        &mut stream,
        &frame(0, 3, false, &produce_v3("checked", &good)),
    );
    assert_eq!(produce_error(&written), 0, "{written:?}");
    let records = weir_ok(
        &broker.address,
        &[
            "consume",
            "checked",
            "--offset",
            "beginning",
            "--timeout",
            "2s",
        ],
        "",
    );
    assert_eq!(records, "intact\n");
}

#[test]
fn responses_come_back_in_request_order_while_a_long_poll_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(&broker.address, &["topic", "create", "quiet"], "");
    // Fetch v4 of an empty partition, waiting up to 2 s for a byte.
    let mut fetch = (-1i32).to_be_bytes().to_vec(); // replica id
    fetch.extend(2000i32.to_be_bytes()); // max wait
    fetch.extend(1i32.to_be_bytes()); // min bytes
    fetch.extend((1i32 << 20).to_be_bytes()); // max bytes
    fetch.push(0); // isolation level
    fetch.extend(1i32.to_be_bytes());
    string(&mut fetch, "quiet");
    fetch.extend(1i32.to_be_bytes());
    fetch.extend(0i32.to_be_bytes()); // partition
    fetch.extend(0i64.to_be_bytes()); // offset
    fetch.extend((1i32 << 20).to_be_bytes());
    let mut stream = connect(&broker.kafka_address);
    // The long poll first, then requests answered at once, all sent before any answer.
    let mut requests = frame_with(1, 1, 4, &fetch);
    requests.extend(frame_with(2, 18, 0, &[]));
    requests.extend(frame_with(3, 3, 1, &(-1i32).to_be_bytes()));
    requests.extend(frame_with(4, 18, 1, &[]));
    stream.write_all(&requests).expect("send");
    let mut order = Vec::new();
    for _ in 0..4 {
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).expect("a response");
        let mut answer = vec![0u8; i32::from_be_bytes(length) as usize];
        stream.read_exact(&mut answer).expect("its bytes");
        order.push(i32::from_be_bytes([
            answer[0], answer[1], answer[2], answer[3],
        ]));
    }
    assert_eq!(order, vec![1, 2, 3, 4]);
}

/// A Fetch v4 frame asking for up to 32 MiB of partition 0 of `topic` from offset 0.
fn big_fetch(correlation: i32, topic: &str) -> Vec<u8> {
    let mut body = (-1i32).to_be_bytes().to_vec(); // replica id
    body.extend(0i32.to_be_bytes()); // max wait
    body.extend(1i32.to_be_bytes()); // min bytes
    body.extend((32i32 << 20).to_be_bytes()); // max bytes
    body.push(0); // isolation level
    body.extend(1i32.to_be_bytes());
    string(&mut body, topic);
    body.extend(1i32.to_be_bytes());
    body.extend(0i32.to_be_bytes()); // partition
    body.extend(0i64.to_be_bytes()); // offset
    body.extend((32i32 << 20).to_be_bytes());
    frame_with(correlation, 1, 4, &body)
}

#[test]
fn fetch_responses_nobody_reads_stay_within_the_memory_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let budget_mib = 16;
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--queued-max-request-bytes",
            &(budget_mib << 20).to_string(),
            "--socket-request-max-bytes",
            "1048576",
        ],
    );
    weir_ok(&broker.address, &["topic", "create", "big"], "");
    // About 30 MB in one partition.
    weir_ok(
        &broker.address,
        &[
            "bench",
            "kafka",
            "produce",
            "big",
            "--kafka",
            &broker.kafka_address,
            "--records",
            "300000",
        ],
        "",
    );
    let pid = broker.pid().expect("running");
    let before = resident_kib(pid);
    // Eight clients each ask for the whole partition sixteen times and read nothing: without a
    // budget the broker would hold 128 responses of 30 MB (nearly 4 GB).
    let mut stuck = Vec::new();
    for _ in 0..8 {
        let mut stream = connect(&broker.kafka_address);
        let mut requests = Vec::new();
        for correlation in 0..16 {
            requests.extend(big_fetch(correlation, "big"));
        }
        stream.write_all(&requests).expect("send");
        stuck.push(stream);
    }
    let mut peak = before;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        peak = peak.max(resident_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    // The budget, a copy of each response being written, and the allocator's slack.
    assert!(
        grown_mib < 4 * budget_mib + 64,
        "the broker grew by {grown_mib} MiB with a budget of {budget_mib} MiB"
    );
    // Once those clients are gone, a client that reads gets its records.
    drop(stuck);
    let mut reader = connect(&broker.kafka_address);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = ask(&mut reader, &big_fetch(99, "big"));
        if answer.len() > 1 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no records after the stuck clients left"
        );
    }
}

#[test]
fn find_coordinator_v4_answers_several_groups_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    // key_type 0 (groups), two keys as a compact array of compact strings, no tagged fields.
    let mut body = vec![0u8, 3];
    for key in ["billing", "audit"] {
        body.push(key.len() as u8 + 1);
        body.extend(key.as_bytes());
    }
    body.push(0);
    let mut stream = connect(&broker.kafka_address);
    let answer = ask(&mut stream, &frame(10, 4, true, &body));
    // Correlation id, tagged fields, throttle time, then the coordinators.
    let mut at = 4 + 1 + 4;
    assert_eq!(answer[at], 3, "two coordinators: {answer:?}");
    at += 1;
    let port: i32 = broker
        .kafka_address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    for key in ["billing", "audit"] {
        let length = answer[at] as usize - 1;
        assert_eq!(&answer[at + 1..at + 1 + length], key.as_bytes());
        at += 1 + length + 4; // the key, the node id
        let host = answer[at] as usize - 1;
        at += 1 + host;
        let answered_port = i32::from_be_bytes(answer[at..at + 4].try_into().expect("port"));
        let code = i16::from_be_bytes([answer[at + 4], answer[at + 5]]);
        assert_eq!((answered_port, code), (port, 0), "{key}: {answer:?}");
        at += 4 + 2;
        // The error message (null: 0), the tagged fields.
        at += if answer[at] == 0 {
            1
        } else {
            answer[at] as usize
        };
        at += 1;
    }
}

/// A Fetch v9 frame of partition 0 of `topic` at offset 0, claiming `leader_epoch`.
fn fetch_at_epoch(topic: &str, leader_epoch: i32) -> Vec<u8> {
    let mut body = (-1i32).to_be_bytes().to_vec(); // replica id
    body.extend(0i32.to_be_bytes()); // max wait
    body.extend(1i32.to_be_bytes()); // min bytes
    body.extend((1i32 << 20).to_be_bytes()); // max bytes
    body.push(0); // isolation level
    body.extend(0i32.to_be_bytes()); // session id
    body.extend((-1i32).to_be_bytes()); // session epoch
    body.extend(1i32.to_be_bytes());
    string(&mut body, topic);
    body.extend(1i32.to_be_bytes());
    body.extend(0i32.to_be_bytes()); // partition
    body.extend(leader_epoch.to_be_bytes()); // current leader epoch
    body.extend(0i64.to_be_bytes()); // fetch offset
    body.extend((-1i64).to_be_bytes()); // log start offset
    body.extend((1i32 << 20).to_be_bytes());
    body.extend(0i32.to_be_bytes()); // no forgotten topics
    frame(1, 9, false, &body)
}

#[test]
fn a_fetch_from_an_epoch_the_leader_does_not_know_is_refused_as_kafka_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(&broker.address, &["topic", "create", "epochs"], "");
    let mut stream = connect(&broker.kafka_address);
    // Correlation id, throttle, error code, session id, topic count, name, partition count,
    // partition index: then the partition's error code.
    let code = |answer: &[u8]| {
        let at = 4 + 4 + 2 + 4 + 4 + 2 + "epochs".len() + 4 + 4;
        i16::from_be_bytes([answer[at], answer[at + 1]])
    };
    // No epoch claimed (-1): read as usual.
    assert_eq!(code(&ask(&mut stream, &fetch_at_epoch("epochs", -1))), 0);
    // An epoch from the future: UNKNOWN_LEADER_EPOCH (KIP-320), retriable.
    assert_eq!(code(&ask(&mut stream, &fetch_at_epoch("epochs", 999))), 75);
}
