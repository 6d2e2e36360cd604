//! The controller over real gRPC on a loopback port: brokers register and heartbeat, a
//! broker that stops heartbeating loses its leaderships to the ISR, watchers see each change,
//! and a restarted controller keeps the state under a new epoch.

use std::time::Duration;

use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use weir_controller::FileStore;
use weir_controller::server::{Timing, serve};
use weir_proto::secret::Presenter;
use weir_proto::v1;
use weir_proto::v1::controller_client::ControllerClient;
use weir_proto::{ClusterSecret, Reason};

type Client = ControllerClient<InterceptedService<Channel, Presenter>>;

const TIMING: Timing = Timing {
    heartbeat_interval: Duration::from_millis(50),
    session_timeout: Duration::from_millis(400),
    takeover_grace: Duration::ZERO,
    leader_rebalance_interval: None,
    leader_imbalance_threshold: 0.1,
};

struct Running {
    address: String,
    secret: ClusterSecret,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(dir: &std::path::Path) -> Running {
        let store = FileStore::open(dir).expect("store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let secret = ClusterSecret::generate();
        let task = tokio::spawn(serve(store, TIMING, listener, secret.clone(), async {
            let _ = stopped.await;
        }));
        Running {
            address,
            secret,
            stop: Some(stop),
            task,
        }
    }

    async fn client(&self) -> Client {
        ControllerClient::with_interceptor(self.channel().await, self.secret.presenter())
    }

    async fn channel(&self) -> Channel {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Channel::from_shared(self.address.clone())
                .expect("address")
                .connect()
                .await
            {
                Ok(channel) => return channel,
                Err(e) if tokio::time::Instant::now() > deadline => panic!("connect: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("controller stops in time")
            .expect("task")
            .expect("controller ran");
    }
}

async fn register(client: &mut Client, id: i32, incarnation: u64) {
    client
        .register_broker(v1::RegisterBrokerRequest {
            broker_id: id,
            address: format!("127.0.0.1:{}", 9000 + id),
            rack: None,
            incarnation,
            kafka_address: Some(format!("127.0.0.1:{}", 19000 + id)),
        })
        .await
        .expect("register");
}

/// Keeps brokers alive until dropped.
fn heartbeats(mut client: Client, brokers: Vec<(i32, u64)>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for &(id, incarnation) in &brokers {
                let _ = client
                    .broker_heartbeat(v1::BrokerHeartbeatRequest {
                        broker_id: id,
                        incarnation,
                    })
                    .await;
            }
            tokio::time::sleep(TIMING.heartbeat_interval).await;
        }
    })
}

/// The next metadata on the watch that satisfies `test`, within 10 s.
async fn wait_for(
    stream: &mut tonic::Streaming<v1::ClusterMetadata>,
    test: impl Fn(&v1::ClusterMetadata) -> bool,
) -> v1::ClusterMetadata {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let metadata = stream.message().await.expect("watch").expect("watch open");
            if test(&metadata) {
                return metadata;
            }
        }
    })
    .await
    .expect("metadata in time")
}

#[tokio::test]
async fn failover_and_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let controller = Running::start(dir.path()).await;
    let mut client = controller.client().await;
    for id in 1..=3 {
        register(&mut client, id, 7).await;
    }
    let keepalive = heartbeats(client.clone(), vec![(1, 7), (2, 7), (3, 7)]);
    let created = client
        .create_topic(v1::CreateTopicRequest {
            name: "orders".into(),
            partitions: 3,
            replication_factor: 3,
            config: Default::default(),
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.partitions.len(), 3);
    let impossible = client
        .create_topic(v1::CreateTopicRequest {
            name: "wide".into(),
            partitions: 1,
            replication_factor: 4,
            config: Default::default(),
        })
        .await
        .expect_err("rf 4 on 3 brokers");
    assert_eq!(
        Reason::of(&impossible),
        Some(Reason::InvalidReplicationFactor)
    );
    assert!(
        impossible.message().contains("3 broker(s) are alive"),
        "{}",
        impossible.message()
    );

    let mut watch = client
        .watch_metadata(v1::WatchMetadataRequest { broker_id: None })
        .await
        .expect("watch")
        .into_inner();
    let first = wait_for(&mut watch, |m| !m.topics.is_empty()).await;
    // Each broker's Kafka address travels with it, for Kafka clients' Metadata.
    for broker in &first.brokers {
        assert_eq!(
            broker.kafka_address,
            Some(format!("127.0.0.1:{}", 19000 + broker.id))
        );
    }
    let p0 = first.topics[0].partitions[0].clone();
    let leader = p0.leader.expect("leader");

    // The leader of partition 0 stops heartbeating.
    keepalive.abort();
    let others: Vec<(i32, u64)> = (1..=3).filter(|&b| b != leader).map(|b| (b, 7)).collect();
    let keepalive = heartbeats(client.clone(), others);
    let after = wait_for(&mut watch, |m| {
        m.brokers.iter().any(|b| b.id == leader && !b.alive)
    })
    .await;
    let moved = &after.topics[0].partitions[0];
    assert_ne!(moved.leader, Some(leader));
    assert!(p0.isr.contains(&moved.leader.expect("new leader")));
    assert_eq!(moved.leader_epoch, p0.leader_epoch + 1);
    assert!(!moved.isr.contains(&leader));

    // Its heartbeats are refused until it registers again.
    let refused = client
        .broker_heartbeat(v1::BrokerHeartbeatRequest {
            broker_id: leader,
            incarnation: 7,
        })
        .await
        .expect_err("dead broker");
    assert_eq!(Reason::of(&refused), Some(Reason::UnknownBroker));

    // A stale ISR change is refused; a current one from the leader is accepted.
    let new_leader = moved.leader.expect("leader");
    let stale = client
        .alter_isr(v1::AlterIsrRequest {
            broker_id: new_leader,
            incarnation: 7,
            topic: "orders".into(),
            partition: 0,
            leader_epoch: p0.leader_epoch,
            partition_epoch: p0.partition_epoch,
            isr: vec![new_leader],
        })
        .await
        .expect_err("stale epochs");
    assert_eq!(Reason::of(&stale), Some(Reason::StalePartitionEpoch));
    let shrunk = client
        .alter_isr(v1::AlterIsrRequest {
            broker_id: new_leader,
            incarnation: 7,
            topic: "orders".into(),
            partition: 0,
            leader_epoch: moved.leader_epoch,
            partition_epoch: moved.partition_epoch,
            isr: vec![new_leader],
        })
        .await
        .expect("shrink")
        .into_inner();
    assert_eq!(shrunk.isr, vec![new_leader]);

    keepalive.abort();
    drop(watch);
    controller.stop().await;

    // A new controller on the same store: same topics, next epoch, brokers get a session.
    let controller = Running::start(dir.path()).await;
    let mut client = controller.client().await;
    let mut watch = client
        .watch_metadata(v1::WatchMetadataRequest { broker_id: Some(1) })
        .await
        .expect("watch")
        .into_inner();
    let reloaded = wait_for(&mut watch, |_| true).await;
    assert_eq!(reloaded.controller_epoch, first.controller_epoch + 1);
    assert_eq!(reloaded.topics[0].partitions[0].isr, vec![new_leader]);
    controller.stop().await;
}

#[tokio::test]
async fn calls_without_the_cluster_secret_are_refused_and_topics_are_checked_here() {
    let dir = tempfile::tempdir().expect("dir");
    let controller = Running::start(dir.path()).await;
    let channel = controller.channel().await;
    let mut anonymous = ControllerClient::new(channel.clone());
    let impostor = anonymous
        .register_broker(v1::RegisterBrokerRequest {
            broker_id: 0,
            address: "10.9.9.9:1".into(),
            rack: None,
            incarnation: 1,
            kafka_address: None,
        })
        .await
        .expect_err("no secret");
    assert_eq!(impostor.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        Reason::of(&impostor),
        Some(Reason::ClusterAuthorizationFailed)
    );
    let mut wrong =
        ControllerClient::with_interceptor(channel, ClusterSecret::generate().presenter());
    let deleted = wrong
        .delete_topic(v1::DeleteTopicRequest {
            name: "__consumer_offsets".into(),
        })
        .await
        .expect_err("wrong secret");
    assert_eq!(deleted.code(), tonic::Code::Unauthenticated);

    // With the secret: the controller itself refuses hostile names and internal changes.
    let mut client = controller.client().await;
    register(&mut client, 1, 1).await;
    for name in ["/some/dir", "../x", "..", "__consumer_offsets"] {
        let refused = client
            .create_topic(v1::CreateTopicRequest {
                name: name.into(),
                partitions: 1,
                replication_factor: 1,
                config: Default::default(),
            })
            .await
            .expect_err("hostile name");
        assert_eq!(Reason::of(&refused), Some(Reason::InvalidTopic), "{name}");
    }
    let made = client
        .ensure_internal_topic(v1::EnsureInternalTopicRequest {
            name: "__consumer_offsets".into(),
        })
        .await
        .expect("made")
        .into_inner();
    assert_eq!(made.partitions.len(), 4);
    let refused = client
        .delete_topic(v1::DeleteTopicRequest {
            name: "__consumer_offsets".into(),
        })
        .await
        .expect_err("internal");
    assert_eq!(Reason::of(&refused), Some(Reason::InvalidRequest));
    let refused = client
        .create_topic(v1::CreateTopicRequest {
            name: "tiny".into(),
            partitions: 1,
            replication_factor: 1,
            config: [("segment.bytes".to_string(), "14".to_string())].into(),
        })
        .await
        .expect_err("below Kafka's bound");
    assert_eq!(Reason::of(&refused), Some(Reason::InvalidConfig));
    controller.stop().await;
}

/// A reassignment in flight is part of the stored state: a controller that takes over
/// carries it on, and it completes once the added replica is in sync (KIP-455).
#[tokio::test]
async fn a_move_survives_a_controller_restart_and_completes_under_the_next_one() {
    let dir = tempfile::tempdir().expect("dir");
    let controller = Running::start(dir.path()).await;
    let mut client = controller.client().await;
    for id in 1..=4 {
        register(&mut client, id, 7).await;
    }
    let keepalive = heartbeats(client.clone(), (1..=4).map(|b| (b, 7)).collect());
    let created = client
        .create_topic(v1::CreateTopicRequest {
            name: "moving".into(),
            partitions: 1,
            replication_factor: 2,
            config: Default::default(),
        })
        .await
        .expect("create")
        .into_inner();
    let before = created.partitions[0].clone();
    let added = (1..=4)
        .find(|b| !before.replicas.contains(b))
        .expect("a free broker");
    let target = vec![added, before.replicas[0]];
    let results = client
        .alter_reassignments(v1::AlterReassignmentsRequest {
            reassignments: vec![v1::PartitionReassignment {
                topic: "moving".into(),
                partition: 0,
                replicas: target.clone(),
            }],
        })
        .await
        .expect("reassign")
        .into_inner()
        .results;
    assert!(results[0].error.is_empty(), "{results:?}");
    keepalive.abort();
    controller.stop().await;

    // The next controller has the move, and finishes it when the leader reports the added
    // replica in sync.
    let controller = Running::start(dir.path()).await;
    let mut client = controller.client().await;
    let keepalive = heartbeats(client.clone(), (1..=4).map(|b| (b, 7)).collect());
    let moves = client
        .list_reassignments(v1::ListReassignmentsRequest {})
        .await
        .expect("list")
        .into_inner()
        .reassignments;
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(moves[0].target, target);
    assert_eq!(moves[0].adding, [added]);
    let mut watch = client
        .watch_metadata(v1::WatchMetadataRequest { broker_id: None })
        .await
        .expect("watch")
        .into_inner();
    let now = wait_for(&mut watch, |m| !m.topics.is_empty()).await.topics[0].partitions[0].clone();
    let leader = now.leader.expect("led");
    let mut isr = now.isr.clone();
    isr.push(added);
    client
        .alter_isr(v1::AlterIsrRequest {
            broker_id: leader,
            incarnation: 7,
            topic: "moving".into(),
            partition: 0,
            leader_epoch: now.leader_epoch,
            partition_epoch: now.partition_epoch,
            isr,
        })
        .await
        .expect("the added replica caught up");
    let done = wait_for(&mut watch, |m| m.topics[0].partitions[0].adding.is_empty()).await;
    let p = &done.topics[0].partitions[0];
    assert_eq!(p.replicas, target);
    assert!(p.removing.is_empty());
    assert!(p.isr.iter().all(|r| target.contains(r)));
    // A cancel of nothing changes nothing; an unknown broker is refused per partition.
    let refused = client
        .alter_reassignments(v1::AlterReassignmentsRequest {
            reassignments: vec![v1::PartitionReassignment {
                topic: "moving".into(),
                partition: 0,
                replicas: vec![added, 42],
            }],
        })
        .await
        .expect("call")
        .into_inner()
        .results;
    assert!(refused[0].error.contains("broker 42"), "{refused:?}");
    keepalive.abort();
    controller.stop().await;
}
