//! The CLI at kcat's level: binary-safe input and output, templates, offsets from the end or a
//! time, delivery reports, group deletion, and the broker's own size rule.

use base64::Engine;
use serde_json::Value;

use crate::harness::{BrokerProcess, weir, weir_ok};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn records_go_in_and_out_byte_for_byte_with_keys_nulls_and_templates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.address.as_str();
    weir_ok(b, &["topic", "create", "bin"], "");
    // Binary keys and values in base64, one record per NUL, a null value (a key-only record)
    // and a null key.
    let binary = [0u8, 255, b'\n', b'\r', 7];
    let input = format!(
        "{}:{}\0{}:NULL\0NULL:{}\0",
        b64(b"k1"),
        b64(&binary),
        b64(b"k2"),
        b64(b"v3")
    );
    let reports = weir_ok(
        b,
        &[
            "produce",
            "bin",
            "--key-separator",
            ":",
            "--value-format",
            "base64",
            "--delimiter",
            "\\0",
            "--null",
            "NULL",
            "--report",
            "--format",
            "json",
        ],
        &input,
    );
    let offsets: Vec<i64> = reports
        .lines()
        .map(|l| {
            let report: Value = serde_json::from_str(l).expect("a JSON report per record");
            assert_eq!(report["partition"], 0);
            report["offset"].as_i64().expect("an offset")
        })
        .collect();
    assert_eq!(offsets, [0, 1, 2], "one report per record, in order");

    let printed = weir_ok(
        b,
        &[
            "consume",
            "bin",
            "--from-beginning",
            "--timeout",
            "2s",
            "--format",
            "%p/%o %k=%v (%K %S)\\n",
            "--value-format",
            "base64",
            "--null",
            "~",
        ],
        "",
    );
    let expected = format!(
        "0/0 {}={} (2 5)\n0/1 {}=~ (2 -1)\n0/2 ~={} (-1 2)\n",
        b64(b"k1"),
        b64(&binary),
        b64(b"k2"),
        b64(b"v3")
    );
    assert_eq!(printed, expected);
    // Raw output is the bytes themselves.
    let raw = weir(
        b,
        &[
            "consume",
            "bin",
            "--offset",
            "0",
            "--max-messages",
            "1",
            "--delimiter",
            "\\0",
        ],
        "",
    );
    assert_eq!(raw.stdout, [&binary[..], b"\0"].concat());
}

#[test]
fn offsets_from_the_end_from_a_time_and_per_partition_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.address.as_str();
    weir_ok(b, &["topic", "create", "ends", "--partitions", "2"], "");
    let input: String = (0..10).map(|i| format!("e{i}\n")).collect();
    weir_ok(b, &["produce", "ends", "--partition", "0"], &input);
    weir_ok(b, &["produce", "ends", "--partition", "1"], "only\n");
    let last_two = weir_ok(
        b,
        &[
            "consume",
            "ends",
            "--partition",
            "0",
            "--offset",
            "-2",
            "--timeout",
            "2s",
        ],
        "",
    );
    assert_eq!(last_two, "e8\ne9\n");
    let nothing = weir_ok(
        b,
        &["consume", "ends", "--offset", "end", "--timeout", "1s"],
        "",
    );
    assert_eq!(nothing, "");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    weir_ok(b, &["produce", "ends", "--partition", "0"], "after\n");
    let since = weir_ok(
        b,
        &[
            "consume",
            "ends",
            "--from-timestamp",
            &now,
            "--timeout",
            "2s",
        ],
        "",
    );
    assert_eq!(since, "after\n");
    // Offset 5 exists in partition 0 but not in partition 1: the error names partition 1.
    let out = weir(
        b,
        &["consume", "ends", "--offset", "5", "--timeout", "2s"],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ends-1"), "{stderr}");
}

#[test]
fn groups_are_deleted_and_defaults_and_sizes_follow_the_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &["--default-replication-factor", "2"],
    );
    let b = broker.address.as_str();
    // The broker's default replication factor applies when none is given (2 here, more than
    // this single broker can hold).
    let out = weir(b, &["topic", "create", "two"], "");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replication factor 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    weir_ok(
        b,
        &[
            "topic",
            "create",
            "small",
            "--replication-factor",
            "1",
            "--config",
            "max.message.bytes=1000",
        ],
        "",
    );
    // 900 bytes fit a 1000-byte batch by the broker's own rule.
    weir_ok(b, &["produce", "small"], &format!("{}\n", "x".repeat(900)));
    weir_ok(
        b,
        &[
            "consume",
            "small",
            "--group",
            "gone",
            "--from-beginning",
            "--timeout",
            "2s",
        ],
        "",
    );
    let listed = weir_ok(b, &["group", "list", "--format", "json"], "");
    assert!(listed.contains("\"gone\""), "{listed}");
    weir_ok(b, &["group", "delete", "gone"], "");
    let listed = weir_ok(b, &["group", "list", "--format", "json"], "");
    assert!(!listed.contains("\"gone\""), "{listed}");
    let out = weir(b, &["group", "delete", "gone"], "");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A broker advertising an address this client cannot resolve (a pod's DNS name seen from
/// outside the cluster): the error names the address, not just "dns error".
#[test]
fn an_advertised_address_the_client_cannot_reach_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let far = "weir-no-such-host.invalid:9192";
    let broker = BrokerProcess::start(&dir.path().join("data"), &["--advertised-address", far]);
    let b = broker.address.as_str();
    weir_ok(b, &["topic", "create", "far"], "");
    let out = weir(b, &["produce", "far", "--delivery-timeout", "3s"], "x\n");
    assert!(!out.status.success(), "nothing can be written there");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("broker at {far} (as advertised)")),
        "{stderr}"
    );
}
