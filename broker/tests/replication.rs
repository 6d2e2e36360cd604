//! Replication between two partition replicas in one process, through the same calls the
//! brokers make over the network: a follower's fetch, the leader's answer, the follower's
//! append or truncation.

use std::time::Duration;

use weir_broker::partition::{AckLevel, Partition, ReplicaFetched};
use weir_proto::Reason;
use weir_storage::{LogConfig, Record, encode_batch};

const LEADER: i32 = 1;
const FOLLOWER: i32 = 2;

fn open(dir: &std::path::Path) -> Partition {
    Partition::open(dir, "t", 0, LogConfig::default(), Default::default())
        .expect("open")
        .0
}

fn batch(values: &[&str]) -> Vec<u8> {
    let records: Vec<Record<'_>> = values
        .iter()
        .map(|v| Record {
            timestamp: 1_700_000_000_000,
            value: Some(v.as_bytes()),
            ..Record::default()
        })
        .collect();
    encode_batch(0, &records)
}

/// One fetch of `follower` (broker `id`) from `leader` at `epoch`, applied; returns the answer.
async fn follow_once(
    leader: &Partition,
    follower: &Partition,
    id: i32,
    epoch: i32,
) -> ReplicaFetched {
    let (offset, last_epoch) = follower.fetch_position();
    let fetched = leader
        .replica_fetch(id, epoch, offset, last_epoch, 1 << 20, Duration::ZERO)
        .await
        .expect("fetch");
    follower
        .apply_fetched(fetched.clone(), epoch)
        .await
        .expect("apply");
    fetched
}

fn values(partition: &Partition) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    while let Some(slice) = partition.read(offset, 1 << 20).expect("read") {
        for batch in weir_storage::batch::batches(&slice.bytes) {
            let (_, batch) = batch.expect("batch");
            for record in batch.records().expect("records") {
                out.push(String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned());
            }
        }
        offset = slice.next_offset;
    }
    out
}

#[tokio::test]
async fn acks_all_waits_for_the_follower() {
    let (ld, fd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (leader, follower) = (open(ld.path()), open(fd.path()));
    leader.become_leader(LEADER, 1, 0, vec![LEADER, FOLLOWER], vec![LEADER, FOLLOWER]);
    follower.become_follower(LEADER, 1);
    let all = AckLevel::All {
        min_insync_replicas: 2,
        timeout: Duration::from_secs(10),
    };
    let leader = std::sync::Arc::new(leader);
    let producing = {
        let leader = std::sync::Arc::clone(&leader);
        tokio::spawn(async move { leader.append(&mut batch(&["a", "b"]), all).await })
    };
    // Not acknowledged before the follower has it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!producing.is_finished());
    assert_eq!(leader.high_watermark(), 0);
    follow_once(&leader, &follower, FOLLOWER, 1).await; // gets the batch
    follow_once(&leader, &follower, FOLLOWER, 1).await; // its next fetch proves it has it
    let appended = tokio::time::timeout(Duration::from_secs(10), producing)
        .await
        .expect("acknowledged in time")
        .expect("task")
        .expect("append");
    assert_eq!((appended.first_offset, appended.last_offset), (0, 1));
    assert_eq!(leader.high_watermark(), 2);
    follow_once(&leader, &follower, FOLLOWER, 1).await;
    assert_eq!(follower.high_watermark(), 2);
    assert_eq!(values(&follower), ["a", "b"]);

    // A stale follower is fenced, a follower ahead of the leader is told so.
    let stale = leader
        .replica_fetch(FOLLOWER, 0, 2, 1, 1 << 20, Duration::ZERO)
        .await
        .expect_err("stale epoch");
    assert_eq!(stale.reason, Reason::FencedLeaderEpoch);
    let ahead = leader
        .replica_fetch(FOLLOWER, 2, 2, 1, 1 << 20, Duration::ZERO)
        .await
        .expect_err("newer epoch");
    assert_eq!(ahead.reason, Reason::UnknownLeaderEpoch);

    // With the ISR too small, acks=all writes nothing.
    leader.become_leader(LEADER, 1, 1, vec![LEADER, FOLLOWER], vec![LEADER]);
    let refused = leader
        .append(&mut batch(&["c"]), all)
        .await
        .expect_err("not enough replicas");
    assert_eq!(refused.reason, Reason::NotEnoughReplicas);
    assert_eq!(leader.state().log_end_offset, 2);
}

#[tokio::test]
async fn leadership_moving_fails_the_wait_as_unknown() {
    let dir = tempfile::tempdir().expect("dir");
    let leader = std::sync::Arc::new(open(dir.path()));
    leader.become_leader(LEADER, 1, 0, vec![LEADER, FOLLOWER], vec![LEADER, FOLLOWER]);
    let all = AckLevel::All {
        min_insync_replicas: 2,
        timeout: Duration::from_secs(10),
    };
    let producing = {
        let leader = std::sync::Arc::clone(&leader);
        tokio::spawn(async move { leader.append(&mut batch(&["x"]), all).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.become_follower(FOLLOWER, 2);
    let failed = tokio::time::timeout(Duration::from_secs(10), producing)
        .await
        .expect("answered in time")
        .expect("task")
        .expect_err("leadership moved");
    assert_eq!(failed.reason, Reason::NotLeader);
    assert!(
        failed.message.contains("may or may not"),
        "{}",
        failed.message
    );
}

#[tokio::test]
async fn a_deposed_leader_truncates_what_the_new_leader_never_had() {
    let (ad, bd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, b) = (open(ad.path()), open(bd.path()));
    // Epoch 1: a leads, b copies "1" and "2".
    a.become_leader(LEADER, 1, 0, vec![LEADER, FOLLOWER], vec![LEADER, FOLLOWER]);
    b.become_follower(LEADER, 1);
    let _ = a
        .append(&mut batch(&["1", "2"]), AckLevel::Leader)
        .await
        .expect("append");
    follow_once(&a, &b, FOLLOWER, 1).await;
    // a writes "3" and "4" that b never gets, then loses leadership.
    let _ = a
        .append(&mut batch(&["3"]), AckLevel::Leader)
        .await
        .expect("append");
    let _ = a
        .append(&mut batch(&["4"]), AckLevel::Leader)
        .await
        .expect("append");
    // Epoch 2: b leads and writes "5"; a follows and must drop "3" and "4".
    b.become_leader(FOLLOWER, 2, 1, vec![LEADER, FOLLOWER], vec![FOLLOWER]);
    a.become_follower(FOLLOWER, 2);
    let _ = b
        .append(&mut batch(&["5"]), AckLevel::Leader)
        .await
        .expect("append");
    let mut rounds = 0;
    loop {
        let fetched = follow_once(&b, &a, LEADER, 2).await;
        let done =
            matches!(&fetched, ReplicaFetched::Batches { batches, .. } if batches.is_empty());
        rounds += 1;
        if done || rounds > 10 {
            break;
        }
    }
    assert!(rounds <= 10, "the logs did not converge");
    assert_eq!(values(&a), ["1", "2", "5"]);
    assert_eq!(values(&b), ["1", "2", "5"]);
    assert_eq!(a.fetch_position(), b.fetch_position());
}

#[tokio::test]
async fn a_new_leader_that_has_not_written_yet_does_not_empty_a_follower_ahead_of_it() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (a, b, c) = (
        open(dirs[0].path()),
        open(dirs[1].path()),
        open(dirs[2].path()),
    );
    const C: i32 = 3;
    // Epoch 1: a leads; b and c copy "x1".
    a.become_leader(
        LEADER,
        1,
        0,
        vec![LEADER, FOLLOWER, C],
        vec![LEADER, FOLLOWER, C],
    );
    b.become_follower(LEADER, 1);
    c.become_follower(LEADER, 1);
    let _ = a
        .append(&mut batch(&["x1"]), AckLevel::Leader)
        .await
        .expect("append");
    follow_once(&a, &b, FOLLOWER, 1).await;
    follow_once(&a, &c, C, 1).await;
    // Epoch 2: a again; only b copies "x2".
    a.become_leader(
        LEADER,
        2,
        1,
        vec![LEADER, FOLLOWER, C],
        vec![LEADER, FOLLOWER, C],
    );
    b.become_follower(LEADER, 2);
    let _ = a
        .append(&mut batch(&["x2"]), AckLevel::Leader)
        .await
        .expect("append");
    follow_once(&a, &b, FOLLOWER, 2).await;
    // Epoch 3: c leads without having written at epoch 2 or 3. b's last epoch (2) is newer
    // than any batch c holds; it must keep "x1" and drop only "x2".
    c.become_leader(C, 3, 2, vec![LEADER, FOLLOWER, C], vec![FOLLOWER, C]);
    b.become_follower(C, 3);
    // The first answer makes b truncate: to where the logs agree, never below it.
    follow_once(&c, &b, FOLLOWER, 3).await;
    assert_eq!(b.fetch_position().0, 1, "b dropped more than c lacks");
    for _ in 0..5 {
        follow_once(&c, &b, FOLLOWER, 3).await;
    }
    assert_eq!(values(&b), ["x1"]);
    assert_eq!(b.fetch_position().0, 1);
}

#[tokio::test]
async fn a_late_answer_for_an_older_epoch_does_not_bring_a_leadership_back() {
    let dir = tempfile::tempdir().expect("dir");
    let p = open(dir.path());
    p.become_leader(LEADER, 5, 3, vec![LEADER, FOLLOWER], vec![LEADER, FOLLOWER]);
    p.become_follower(FOLLOWER, 6);
    // An ISR change committed at epoch 5 arrives after the metadata of epoch 6.
    p.become_leader(LEADER, 5, 4, vec![LEADER, FOLLOWER], vec![LEADER]);
    assert_eq!(
        p.leading_epoch().expect_err("a follower").reason,
        Reason::NotLeader
    );
    // And at the same epoch, an older partition epoch does not undo a newer one.
    let q_dir = tempfile::tempdir().expect("dir");
    let q = open(q_dir.path());
    q.become_leader(LEADER, 1, 4, vec![LEADER, FOLLOWER], vec![LEADER]);
    q.become_leader(LEADER, 1, 3, vec![LEADER, FOLLOWER], vec![LEADER, FOLLOWER]);
    match q.role_now() {
        weir_broker::partition::Role::Leader(view) => {
            assert_eq!((view.partition_epoch, view.isr.clone()), (4, vec![LEADER]));
        }
        other => panic!("not leading: {other:?}"),
    }
}
