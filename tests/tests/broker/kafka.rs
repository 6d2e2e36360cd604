//! Kafka clients against a real broker's Kafka listener: kcat (Debian's, on librdkafka 2.0.2,
//! the old-client case) produces and consumes with keys, headers and every compression codec,
//! what it writes reads through `weir consume` and the other way round; and frames no client
//! should send close their own connection only, without growing the broker's memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    BrokerProcess, WeirProcess, confluent_python, kafkajs, run_kafka_client, run_kafka_script,
    weir, weir_ok,
};

/// kcat, installed by `.ci/run` (Debian's package). Missing outside CI: the test is skipped.
fn kcat() -> Option<PathBuf> {
    let found = ["/usr/bin/kcat", "/usr/local/bin/kcat"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs kcat (.ci/run); it is missing"
        );
        eprintln!("skipped: no kcat here (apt-get install kcat)");
    }
    found
}

/// Runs kcat with `args`, `stdin` as its input, for at most 30 s.
fn run_kcat(kcat: &PathBuf, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(kcat)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kcat");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("kcat stdin");
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("kcat output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("kcat output");
            panic!(
                "kcat {args:?} did not finish within 30 s: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kcat_ok(kcat: &PathBuf, args: &[&str], stdin: &str) -> String {
    let output = run_kcat(kcat, args, stdin);
    assert!(
        output.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn kcat_produces_and_consumes_with_keys_headers_and_every_codec_both_ways() {
    let Some(kcat) = kcat() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let kafka = broker.kafka_address.as_str();
    weir_ok(
        &broker.address,
        &["topic", "create", "orders", "--partitions", "3"],
        "",
    );

    // Metadata names this broker at its Kafka address and the topic's partitions.
    let listing = kcat_ok(&kcat, &["-b", kafka, "-L", "-t", "orders"], "");
    assert!(
        listing.contains(&format!("broker 0 at {kafka}")),
        "{listing}"
    );
    assert!(listing.contains("3 partitions"), "{listing}");

    // Keys and headers, then each codec, all to partition 1.
    kcat_ok(
        &kcat,
        &[
            "-b",
            kafka,
            "-P",
            "-t",
            "orders",
            "-p",
            "1",
            "-K",
            ":",
            "-H",
            "trace=abc",
        ],
        "k1:plain-1\nk2:plain-2\n",
    );
    // Long, repetitive values, so that librdkafka compresses (it sends a batch plain when
    // compressing would not shrink it).
    let filler = "a".repeat(4000);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        kcat_ok(
            &kcat,
            &["-b", kafka, "-P", "-t", "orders", "-p", "1", "-z", codec],
            &format!("{codec}-1{filler}\n{codec}-2{filler}\n"),
        );
    }
    // Stored as sent: eight values of 4 KB take far less than 32 KB.
    let described = weir_ok(
        &broker.address,
        &["topic", "describe", "orders", "--format", "json"],
        "",
    );
    let described: serde_json::Value = serde_json::from_str(described.trim()).expect("json");
    let stored = described["partitions"][1]["size_bytes"]
        .as_u64()
        .expect("size");
    assert!(
        stored < 8_000,
        "batches were not compressed: {stored} bytes"
    );
    let expected = [
        "k1=plain-1",
        "k2=plain-2",
        "=gzip-1",
        "=gzip-2",
        "=snappy-1",
        "=snappy-2",
        "=lz4-1",
        "=lz4-2",
        "=zstd-1",
        "=zstd-2",
    ];
    // kcat reads back what it wrote, with offsets in order and the header kept.
    let consumed = kcat_ok(
        &kcat,
        &[
            "-b",
            kafka,
            "-C",
            "-t",
            "orders",
            "-p",
            "1",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o %k=%s %h\n",
        ],
        "",
    );
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{consumed}");
    for (i, (line, want)) in lines.iter().zip(expected).enumerate() {
        assert!(line.starts_with(&format!("{i} {want}")), "{line} vs {want}");
    }
    assert!(lines[0].ends_with("trace=abc"), "{}", lines[0]);

    // gRPC's reader sees the same records: keys, values and the header, decompressed.
    let through_grpc = weir_ok(
        &broker.address,
        &[
            "consume",
            "orders",
            "--partition",
            "1",
            "--offset",
            "beginning",
            "--timeout",
            "3s",
            "--format",
            "%o %k=%v %h\n",
        ],
        "",
    );
    let grpc_lines: Vec<&str> = through_grpc.lines().collect();
    assert_eq!(grpc_lines.len(), expected.len(), "{through_grpc}");
    assert!(grpc_lines[0].starts_with("0 k1=plain-1"), "{through_grpc}");
    assert!(grpc_lines[0].contains("trace"), "{through_grpc}");
    // The producer's timestamps, kept through compression and storage, the same both ways.
    let kafka_times = kcat_ok(
        &kcat,
        &[
            "-b",
            kafka,
            "-C",
            "-t",
            "orders",
            "-p",
            "1",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%T\n",
        ],
        "",
    );
    let grpc_times = weir_ok(
        &broker.address,
        &[
            "consume",
            "orders",
            "--partition",
            "1",
            "--offset",
            "beginning",
            "--timeout",
            "3s",
            "--format",
            "%T\n",
        ],
        "",
    );
    assert_eq!(kafka_times, grpc_times);
    let first: i64 = kafka_times
        .lines()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(
        first > 1_600_000_000_000,
        "a producer's time: {kafka_times}"
    );
    assert!(grpc_lines[9].starts_with("9 =zstd-2"), "{through_grpc}");

    // The broker's own rules answer in Kafka's codes: a record past max.message.bytes is
    // MESSAGE_TOO_LARGE, which the client reports rather than retries.
    weir_ok(
        &broker.address,
        &[
            "topic",
            "create",
            "small",
            "--config",
            "max.message.bytes=1000",
        ],
        "",
    );
    let refused = run_kcat(
        &kcat,
        &["-b", kafka, "-P", "-t", "small", "-p", "0"],
        &format!("{}\n", "x".repeat(3000)),
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("Message size too large"), "{said}");

    // And the other way: the CLI's records read through kcat, from a timestamp's offset too.
    weir_ok(
        &broker.address,
        &[
            "produce",
            "orders",
            "--partition",
            "2",
            "--key-separator",
            ":",
        ],
        "a:from-grpc-1\nb:from-grpc-2\n",
    );
    let from_grpc = kcat_ok(
        &kcat,
        &[
            "-b", kafka, "-C", "-t", "orders", "-p", "2", "-o", "-1", "-e", "-f", "%k=%s\n",
        ],
        "",
    );
    assert_eq!(from_grpc, "b=from-grpc-2\n");
}

/// Runs `tests/kafka/SCRIPT` with confluent-kafka's Python against `kafka` and `topic`.
fn run_python(python: &Path, script: &str, kafka: &str, topic: &str) {
    run_kafka_script(python, script, &[kafka, topic]);
}

#[test]
fn confluent_kafka_produces_with_acks_all_and_acks_0_and_consumes_every_record_once() {
    let Some(python) = confluent_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(&broker.address, &["topic", "create", "clicks"], "");
    run_python(
        &python,
        "confluent_roundtrip.py",
        &broker.kafka_address,
        "clicks",
    );
    // What it wrote reads through gRPC too.
    let through_grpc = weir_ok(
        &broker.address,
        &[
            "consume",
            "clicks",
            "--offset",
            "beginning",
            "--timeout",
            "3s",
            "--format",
            "%k=%v\n",
        ],
        "",
    );
    assert_eq!(through_grpc.lines().count(), 110, "{through_grpc}");
    assert_eq!(through_grpc.lines().next(), Some("k0=v0"));
}

#[test]
fn kafkajs_administers_produces_and_consumes_in_a_group_what_grpc_sees() {
    let Some((node, modules)) = kafkajs() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut client = Command::new(node);
    client
        .env("NODE_PATH", &modules)
        .env("KAFKAJS_NO_PARTITIONER_WARNING", "1");
    run_kafka_client(client, "kafkajs_client.js", &[&broker.kafka_address, "js"]);
    // What kafkajs made, altered, wrote and deleted, through gRPC.
    let described = weir_ok(
        &broker.address,
        &["topic", "describe", "js", "--format", "json"],
        "",
    );
    let described: serde_json::Value = serde_json::from_str(described.trim()).expect("json");
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(6));
    assert_eq!(described["config"]["retention.ms"], "7200000");
    let records = weir_ok(
        &broker.address,
        &[
            "consume",
            "js",
            "--offset",
            "beginning",
            "--timeout",
            "3s",
            "--format",
            "%k=%v\n",
        ],
        "",
    );
    // 600 written, the first 10 of partition 0 deleted.
    assert_eq!(records.lines().count(), 590, "{records}");
    assert!(records.lines().any(|l| l == "k599=v599"), "{records}");
}

#[test]
fn kafka_producers_get_kafkas_error_codes_retriable_as_kafka_means_them() {
    let Some(python) = confluent_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(
        &broker.address,
        &[
            "topic",
            "create",
            "strict",
            "--config",
            "min.insync.replicas=2",
        ],
        "",
    );
    run_python(
        &python,
        "confluent_errors.py",
        &broker.kafka_address,
        "strict",
    );
}

#[test]
fn kafka_admin_clients_create_grow_and_delete_the_topics_grpc_sees() {
    let Some(python) = confluent_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    run_python(&python, "confluent_admin.py", &broker.kafka_address, "made");
    let described = weir_ok(
        &broker.address,
        &["topic", "describe", "made", "--format", "json"],
        "",
    );
    let described: serde_json::Value = serde_json::from_str(described.trim()).expect("json");
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(5));
    assert_eq!(described["config"]["retention.ms"], "3600000");
    let listed = weir_ok(&broker.address, &["topic", "list"], "");
    assert!(!listed.contains("made-gone"), "{listed}");
    assert!(!listed.contains("escape"), "{listed}");
}

#[test]
fn kafka_consumers_commit_under_a_group_the_coordinator_and_weir_group_describe_share() {
    let Some(python) = confluent_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(&broker.address, &["topic", "create", "ledger"], "");
    run_python(
        &python,
        "confluent_commit.py",
        &broker.kafka_address,
        "ledger",
    );
    // The offsets live in the same coordinator as Weir's own groups: lag and all.
    let described = weir_ok(
        &broker.address,
        &["group", "describe", "assigners", "--format", "json"],
        "",
    );
    let described: serde_json::Value = serde_json::from_str(described.trim()).expect("json");
    let partition = &described["partitions"][0];
    assert_eq!(partition["committed_offset"], 10, "{described}");
    assert_eq!(partition["lag"], 10, "{described}");
}

#[test]
fn kafka_admin_tools_describe_a_weir_group_with_its_member_and_assignment() {
    let Some(python) = confluent_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(
        &broker.address,
        &["topic", "create", "events", "--partitions", "3"],
        "",
    );
    let mut member = WeirProcess::spawn(
        &broker.address,
        &["consume", "events", "--group", "native", "--timeout", "60s"],
        String::new(),
    );
    // Until the member holds all three partitions and the group is stable.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Absent until the member has joined.
        let output = weir(
            &broker.address,
            &["group", "describe", "native", "--format", "json"],
            "",
        );
        let described: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_default();
        let assigned = described["members"][0]["assignment"][0]["partitions"]
            .as_array()
            .map_or(0, Vec::len);
        if assigned == 3 && described["state"] == "Stable" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the member has no assignment: {described}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    run_python(
        &python,
        "confluent_describe.py",
        &broker.kafka_address,
        "events",
    );
    member.signal("TERM");
    assert!(member.wait(Duration::from_secs(30)).is_some());
}

#[test]
fn weir_bench_kafka_writes_and_reads_every_record_through_the_kafka_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(&broker.address, &["topic", "create", "bench"], "");
    for mode in ["produce", "consume"] {
        let out = weir_ok(
            &broker.address,
            &[
                "bench",
                "kafka",
                mode,
                "bench",
                "--kafka",
                &broker.kafka_address,
                "--records",
                "25000",
                "--batch-size",
                "100000",
                "--format",
                "json",
            ],
            "",
        );
        let result: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        assert_eq!(result["records"], 25000, "{result}");
    }
    // What it wrote is there for every reader.
    let described = weir_ok(
        &broker.address,
        &["topic", "describe", "bench", "--format", "json"],
        "",
    );
    let described: serde_json::Value = serde_json::from_str(described.trim()).expect("json");
    assert_eq!(
        described["partitions"][0]["high_watermark"], 25000,
        "{described}"
    );
}
