//! The chart's Grafana dashboard queries metrics the broker really exports.

use std::collections::BTreeSet;
use std::path::Path;

use crate::harness::{BrokerProcess, weir_ok};

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/weir/dashboards/weir.json"),
    )
    .expect("the chart's dashboard");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    let exprs: Vec<String> = parsed["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(!exprs.is_empty());
    // Metric names in the queries, as families (a histogram's _bucket/_count are its own).
    let queried: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("weir_"))
                .map(|w| {
                    w.trim_end_matches("_bucket")
                        .trim_end_matches("_count")
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    weir_ok(&broker.address, &["topic", "create", "watched"], "");
    weir_ok(&broker.address, &["produce", "watched"], "a\nb\n");
    // Reads and a group, so that their families have samples.
    weir_ok(
        &broker.address,
        &[
            "consume",
            "watched",
            "--group",
            "watchers",
            "--from-beginning",
            "--max-messages",
            "2",
            "--timeout",
            "10s",
        ],
        "",
    );
    // The group's lag is exported on the broker's timer: wait for it (15 s at most).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let metrics = loop {
        let (_, metrics) = broker.http_get("/metrics");
        if metrics.contains("weir_group_lag{") || std::time::Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // A family without samples is not printed: one only a replicated cluster fills (a
    // follower's lag) is checked against the broker's registrations instead.
    let registered = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker/src/metrics.rs"),
    )
    .expect("the broker's metrics");
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in &queried {
        let family = name.trim_end_matches("_total");
        let replicated_only = family == "weir_follower_lag"
            && registered.contains(&format!("\"{}\"", "follower_lag"));
        assert!(
            exported.contains(name.as_str()) || exported.contains(family) || replicated_only,
            "the dashboard queries {name}, which the broker does not export; it exports {exported:?}"
        );
    }
}
