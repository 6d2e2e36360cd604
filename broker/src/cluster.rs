//! The broker's part in a cluster: it registers with the controller and heartbeats, applies
//! the metadata the controller pushes, and asks the controller for ISR changes of the
//! partitions it leads. (Following leaders is `node::replication`.)
//!
//! Every loop here runs until the broker stops, retries with a short pause after a failure
//! (the controller or a leader may be down for a while), and logs what it could not do.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_proto::Reason;
use weir_proto::v1;

use crate::links::RETRY;
use crate::node::Node;
use crate::partition::Partition;

/// Whether a failed call to the controller should go to the next controller address: this
/// one is unreachable, or no longer (or not yet) the controller.
fn try_next_controller(node: &Node, failed: usize, status: &tonic::Status) {
    if status.code() == tonic::Code::Unavailable
        || Reason::of(status) == Some(Reason::NotController)
    {
        node.next_controller(failed);
    }
}

/// Registers (retrying until the controller answers), returns the heartbeat interval.
pub async fn register(node: &Node, stopped: &watch::Receiver<bool>) -> Option<Duration> {
    let request = v1::RegisterBrokerRequest {
        broker_id: node.config.broker_id,
        address: node.config.advertised(),
        rack: node.config.rack.clone(),
        incarnation: node.incarnation,
        kafka_address: node.config.kafka_advertised(),
    };
    loop {
        if *stopped.borrow() {
            return None;
        }
        let (at, mut controller) = node.controller_at();
        match controller.register_broker(request.clone()).await {
            Ok(response) => {
                let r = response.into_inner();
                tracing::info!(
                    broker = request.broker_id,
                    controller_epoch = r.controller_epoch,
                    "registered with the controller"
                );
                return Some(Duration::from_millis(u64::from(
                    r.heartbeat_interval_ms.max(10),
                )));
            }
            Err(status) => {
                try_next_controller(node, at, &status);
                tracing::warn!(error = %weir_proto::status_text(&status), "registration failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Kafka's controlled shutdown, before a clean stop: asks the controller to hand this
/// broker's leaderships to other in-sync replicas and take it out of the ISRs (retrying while
/// the controller is away, within `limit`), then waits until that metadata has reached this
/// broker, so that it answers NOT_LEADER from then on and clients move before it closes.
/// Returns how many partitions it still leads (where it was the only in-sync replica), or
/// `None` when the controller could not be reached in time: the broker then stops anyway
/// and the controller fails over its partitions when its session expires.
pub async fn controlled_shutdown(node: &Node, limit: Duration) -> Option<usize> {
    let deadline = tokio::time::Instant::now() + limit;
    let request = v1::ControlledShutdownRequest {
        broker_id: node.config.broker_id,
        incarnation: node.incarnation,
    };
    let answer = loop {
        let (at, mut controller) = node.controller_at();
        let call = tokio::time::timeout_at(deadline, controller.controlled_shutdown(request));
        match call.await {
            Ok(Ok(response)) => break response.into_inner(),
            Ok(Err(status)) if Reason::of(&status) == Some(Reason::UnknownBroker) => {
                tracing::warn!(
                    "controlled shutdown: the controller no longer knows this broker; stopping"
                );
                return None;
            }
            Ok(Err(status)) => {
                try_next_controller(node, at, &status);
                tracing::warn!(error = %weir_proto::status_text(&status), "controlled shutdown refused; retrying");
                if tokio::time::timeout_at(deadline, tokio::time::sleep(RETRY))
                    .await
                    .is_err()
                {
                    return None;
                }
            }
            Err(_) => {
                tracing::warn!(
                    ?limit,
                    "controlled shutdown: no answer from the controller in time; stopping"
                );
                return None;
            }
        }
    };
    let still_led = usize::try_from(answer.partitions_still_led).unwrap_or(0);
    let handed_over = tokio::time::timeout_at(
        deadline,
        node.wait_for(|n| n.led_partitions().len() <= still_led),
    )
    .await;
    let led = node.led_partitions().len();
    tracing::info!(
        partitions_changed = answer.partitions_changed,
        still_led = led,
        metadata_applied = matches!(handed_over, Ok(Ok(()))),
        "controlled shutdown: leaderships handed over"
    );
    Some(led)
}

/// Heartbeats every `interval`; registers again when the controller no longer knows this
/// broker (it was declared dead, or a new controller lost track of it).
pub async fn heartbeat(
    node: Arc<Node>,
    mut interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => return,
        }
        let request = v1::BrokerHeartbeatRequest {
            broker_id: node.config.broker_id,
            incarnation: node.incarnation,
        };
        let (at, mut controller) = node.controller_at();
        match controller.broker_heartbeat(request).await {
            Ok(_) => {}
            Err(status) if Reason::of(&status) == Some(Reason::UnknownBroker) => {
                tracing::warn!(
                    "the controller does not know this broker (declared dead?): registering again"
                );
                match register(&node, &stopped).await {
                    Some(every) => interval = every,
                    None => return,
                }
            }
            Err(status) => {
                try_next_controller(&node, at, &status);
                tracing::debug!(error = %weir_proto::status_text(&status), "heartbeat failed");
            }
        }
    }
}

/// Applies every metadata the controller pushes, reconnecting when the stream ends.
pub async fn watch_metadata(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    loop {
        let request = v1::WatchMetadataRequest {
            broker_id: Some(node.config.broker_id),
        };
        let (at, mut controller) = node.controller_at();
        let stream = tokio::select! {
            r = controller.watch_metadata(request) => r,
            _ = stopped.changed() => return,
        };
        match stream {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    let next = tokio::select! {
                        m = stream.message() => m,
                        _ = stopped.changed() => return,
                    };
                    match next {
                        Ok(Some(metadata)) => {
                            let node = Arc::clone(&node);
                            tokio::task::block_in_place(|| node.apply_metadata(&metadata));
                        }
                        Ok(None) => break,
                        Err(status) => {
                            try_next_controller(&node, at, &status);
                            tracing::warn!(error = %weir_proto::status_text(&status), "metadata watch failed");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                try_next_controller(&node, at, &status);
                tracing::debug!(error = %weir_proto::status_text(&status), "cannot watch the metadata yet")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Asks the controller for the ISR changes the leaders here want, a few times a second.
pub async fn propose_isr_changes(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let every = (node.config.replica_lag_time_max / 4)
        .clamp(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
        for (topic, partition) in node.led_partitions() {
            let Some((isr, leader_epoch, partition_epoch)) =
                partition.isr_proposal(node.config.replica_lag_time_max)
            else {
                continue;
            };
            let request = v1::AlterIsrRequest {
                broker_id: node.config.broker_id,
                incarnation: node.incarnation,
                topic: topic.clone(),
                partition: partition.index,
                leader_epoch,
                partition_epoch,
                isr: isr.clone(),
            };
            let (at, mut controller) = node.controller_at();
            match controller.alter_isr(request).await {
                Ok(committed) => {
                    let c = committed.into_inner();
                    tracing::info!(topic, partition = partition.index, isr = ?c.isr, "ISR changed");
                    node.metrics
                        .isr_changed(isr.len() < partition_isr_len(&partition));
                    partition.become_leader(
                        node.config.broker_id,
                        c.leader_epoch,
                        c.partition_epoch,
                        c.replicas,
                        c.isr,
                    );
                }
                Err(status)
                    if Reason::of(&status) == Some(Reason::StalePartitionEpoch)
                        || Reason::of(&status) == Some(Reason::NotController)
                        || status.code() == tonic::Code::Unavailable =>
                {
                    try_next_controller(&node, at, &status);
                    tracing::debug!(topic, partition = partition.index, error = %weir_proto::status_text(&status), "ISR change not made now")
                }
                Err(status) => {
                    tracing::warn!(topic, partition = partition.index, error = %weir_proto::status_text(&status), "ISR change refused")
                }
            }
        }
    }
}

fn partition_isr_len(partition: &Partition) -> usize {
    match partition.role_now() {
        crate::partition::Role::Leader(view) => view.isr.len(),
        _ => 0,
    }
}
