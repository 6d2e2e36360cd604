//! Kafka consumers in groups of the classic protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) with confluent-kafka (librdkafka 2.16): members joining and leaving under eager
//! and cooperative assignors, commits that survive a restart, static members, and the same
//! groups seen through `weir group describe`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{BrokerProcess, confluent_python, finish, run_kafka_script, weir_ok};

fn described(broker: &BrokerProcess, group: &str) -> serde_json::Value {
    let out = weir_ok(
        &broker.address,
        &["group", "describe", group, "--format", "json"],
        "",
    );
    serde_json::from_str(out.trim()).expect("json")
}

#[test]
fn three_kafka_consumers_share_six_partitions_eagerly_and_cooperatively_and_commits_survive_a_restart()
 {
    let Some(python) = confluent_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::start(&data, &[]);
    for (topic, strategy) in [("eager", "range"), ("cooperative", "cooperative-sticky")] {
        weir_ok(
            &broker.address,
            &["topic", "create", topic, "--partitions", "6"],
            "",
        );
        let said = run_kafka_script(
            &python,
            "confluent_group.py",
            &["members", &broker.kafka_address, topic, strategy],
        );
        eprintln!("{said}");
        // The group's commits, as Weir's own tools see them: all read, nothing left.
        let group = described(&broker, &format!("members-{strategy}"));
        assert_eq!(group["state"], "Empty", "{group}");
        let partitions = group["partitions"].as_array().expect("partitions");
        assert_eq!(partitions.len(), 6, "{group}");
        for p in partitions {
            assert_eq!(p["committed_offset"], 500, "{group}");
            assert_eq!(p["lag"], 0, "{group}");
        }
    }
    assert_eq!(broker.terminate(), Some(0));
    let broker = BrokerProcess::start(&data, &[]);
    run_kafka_script(
        &python,
        "confluent_group.py",
        &["resume", &broker.kafka_address, "eager"],
    );
}

#[test]
fn a_static_kafka_member_takes_its_place_back_without_a_rebalance() {
    let Some(python) = confluent_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(
        &broker.address,
        &["topic", "create", "statics", "--partitions", "6"],
        "",
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kafka/confluent_group.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .args(["static", &broker.kafka_address, "statics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    // Its lines, read on a thread so that waiting for "ready" has a deadline.
    let stdout = child.stdout.take().expect("stdout");
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match said.recv_timeout(left) {
            Ok(line) if line == "ready" => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    if !ready {
        let _ = child.kill();
        let output = child.wait_with_output().expect("output");
        panic!(
            "the static members did not settle: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Both members, with the whole topic between them, in Weir's own description.
    let group = described(&broker, "statics");
    assert_eq!(group["state"], "Stable", "{group}");
    let members = group["members"].as_array().expect("members");
    assert_eq!(members.len(), 2, "{group}");
    let mut owned: Vec<i64> = members
        .iter()
        .flat_map(|m| {
            assert_eq!(m["topics"], serde_json::json!(["statics"]), "{group}");
            m["assignment"][0]["partitions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p.as_i64())
        .collect();
    owned.sort_unstable();
    assert_eq!(owned, vec![0, 1, 2, 3, 4, 5], "{group}");
    // And in the lag metrics, as Weir's own groups are: everything read and committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = broker.http_get("/metrics");
        let lags: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("weir_group_lag{") && l.contains("group=\"statics\""))
            .collect();
        if lags.len() == 6 && lags.iter().all(|l| l.ends_with(" 0")) {
            break;
        }
        assert!(Instant::now() < deadline, "group lag metrics: {lags:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Closing its stdin lets the members go.
    drop(child.stdin.take());
    let output = finish(child, Duration::from_secs(90));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn kafka_consumers_speaking_kip_848_are_members_of_weirs_own_groups() {
    let Some(python) = confluent_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(
        &broker.address,
        &["topic", "create", "next", "--partitions", "6"],
        "",
    );
    let said = run_kafka_script(
        &python,
        "confluent_group.py",
        &["kip848", &broker.kafka_address, "next"],
    );
    eprintln!("{said}");
    // Their commits, fenced by member epoch, in the same coordinator.
    let group = described(&broker, "kip848");
    let partitions = group["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 6, "{group}");
    for p in partitions {
        assert_eq!(p["committed_offset"], 500, "{group}");
        assert_eq!(p["lag"], 0, "{group}");
    }
}
