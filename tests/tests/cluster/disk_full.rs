//! A full disk on a follower and on a leader during acks=all produce: a clear error where a
//! write cannot land, no crash, nothing half-written visible, and recovery once space returns.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::history::{History, Outcome};
use super::partitions::send_with_key;
use super::{ControllerProcess, DEADLINE, read_all, start_broker, wait_for_partition};
use crate::harness::{BrokerProcess, SmallDisk};

/// Takes every free block of the disk at `dir` (a file that grows until ENOSPC).
fn fill(dir: &Path) {
    let mut filler = std::fs::File::create(dir.join("filler")).expect("filler");
    while filler.write_all(&[0u8; 4096]).is_ok() {}
}

fn free(dir: &Path) {
    std::fs::remove_file(dir.join("filler")).expect("remove the filler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_on_a_follower_or_the_leader_is_survived() {
    // Brokers 1 (the first partition's preferred leader) and 2 on disks of their own.
    let (Some(leader_disk), Some(follower_disk)) = (SmallDisk::mount(32), SmallDisk::mount(32))
    else {
        return;
    };
    let root = tempfile::tempdir().expect("dir");
    let controller = ControllerProcess::start(&root.path().join("controller"));
    let dirs = [
        leader_disk.path.join("broker-1"),
        follower_disk.path.join("broker-2"),
        root.path().join("broker-3"),
    ];
    let brokers: Vec<BrokerProcess> = (1..=3)
        .map(|id| start_broker(&dirs[id as usize - 1], id, &controller))
        .collect();
    let client = weir_client::Client::connect(&brokers[2].address)
        .await
        .expect("connect");
    client
        .create_topic(
            "full",
            1,
            3,
            [("min.insync.replicas".to_string(), "2".to_string())].into(),
        )
        .await
        .expect("create");
    let (p0, _) = wait_for_partition(&brokers[0].address, "full", |p| p.isr.len() == 3).await;
    assert_eq!(p0.leader, 1, "broker 1 leads, as placement prefers");
    let leader = brokers[0].address.clone();
    let (mut history, mut next) = (History::default(), 0u64);
    // 16 KiB keys: every record needs new blocks, so a full disk shows at once.
    let key = bytes::Bytes::from(vec![b'k'; 16 << 10]);
    let mut send_many = async |history: &mut History, count: u64| {
        let mut outcomes = Vec::new();
        for _ in 0..count {
            let outcome = send_with_key(&leader, "full", next, Some(key.clone())).await;
            history.sent(next, outcome);
            outcomes.push(outcome);
            next += 1;
        }
        outcomes
    };
    let ok = send_many(&mut history, 20).await;
    assert!(ok.iter().all(|o| matches!(o, Outcome::Ok(_))), "{ok:?}");

    // The follower's disk fills: it cannot take what it fetches, falls behind, and leaves the
    // ISR; acks=all goes on with the other two.
    fill(&follower_disk.path);
    let during = send_many(&mut history, 30).await;
    wait_for_partition(&leader, "full", |p| p.isr == [1, 3]).await;
    let late = send_many(&mut history, 10).await;
    assert!(
        late.iter().all(|o| matches!(o, Outcome::Ok(_))),
        "acks=all with the follower out: {late:?}"
    );
    assert!(during.iter().all(|o| *o != Outcome::Failed), "{during:?}");
    let (status, _) = brokers[1].http_get("/healthz");
    assert!(status.contains("200"), "the follower is still up: {status}");
    free(&follower_disk.path);
    wait_for_partition(&leader, "full", |p| p.isr.len() == 3).await;

    // The leader's disk fills: its appends fail with a storage error, nothing of them is
    // acknowledged or visible, and once space returns it writes again.
    fill(&leader_disk.path);
    let refused = send_many(&mut history, 10).await;
    assert!(
        refused.iter().all(|o| !matches!(o, Outcome::Ok(_))),
        "acknowledged on a full disk: {refused:?}"
    );
    let (status, _) = brokers[0].http_get("/healthz");
    assert!(status.contains("200"), "the leader is still up: {status}");
    free(&leader_disk.path);
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let outcome = send_many(&mut history, 1).await;
        if matches!(outcome[0], Outcome::Ok(_)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write after space returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = history
        .check(&read_all(&leader, "full").await)
        .unwrap_or_else(|p| panic!("{p:#?}"));
    println!("full disks: {summary:?}");
    drop(brokers);
    drop(controller);
}
