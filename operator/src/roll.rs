//! Rolling restarts the operator owns (the brokers' StatefulSet is `OnDelete`): which broker
//! Pod to restart next, if any, as a pure decision over what is observed. One broker at a
//! time, only when the cluster is settled (every broker ready, registered and every replica
//! in sync: the broker restarted last is back in every ISR), and only a broker without which
//! no partition falls below `min.insync.replicas` (Strimzi's rule). The broker's own
//! controlled shutdown moves its leaderships away when the Pod is deleted.

use weir_controller::model::ClusterState;

/// A broker Pod as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPod {
    pub name: String,
    /// The broker id (the Pod's ordinal).
    pub ordinal: i32,
    /// The StatefulSet revision the Pod was made from (`controller-revision-hash`).
    pub revision: Option<String>,
    pub ready: bool,
    /// Being deleted (a restart under way).
    pub deleting: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollStep {
    /// Every Pod runs the current revision.
    UpToDate,
    /// Restart this Pod now (delete it; the StatefulSet makes it again at the new revision).
    Restart { pod: String, broker: i32 },
    /// A restart is due but must wait for the cluster to settle; why.
    Wait(String),
    /// No due restart is safe now: each would take a partition below its minimum ISR; why.
    Blocked(String),
}

/// The next step of a roll to `update_revision` over `pods` (brokers `0..desired`), given the
/// controller's `state` and the `min.insync.replicas` of topics that do not set it.
pub fn next_step(
    pods: &[BrokerPod],
    desired: i32,
    update_revision: Option<&str>,
    state: &ClusterState,
    default_min_isr: usize,
) -> RollStep {
    let Some(update_revision) = update_revision else {
        return RollStep::UpToDate;
    };
    let mut stale: Vec<&BrokerPod> = pods
        .iter()
        .filter(|p| p.ordinal < desired && p.revision.as_deref() != Some(update_revision))
        .collect();
    if stale.is_empty() {
        return RollStep::UpToDate;
    }
    // Settled: every broker Pod there and ready, every broker alive, every replica in sync.
    for ordinal in 0..desired {
        match pods.iter().find(|p| p.ordinal == ordinal) {
            None => return RollStep::Wait(format!("broker {ordinal} has no Pod yet")),
            Some(p) if p.deleting => {
                return RollStep::Wait(format!("{} is restarting", p.name));
            }
            Some(p) if !p.ready => return RollStep::Wait(format!("{} is not ready", p.name)),
            Some(_) => {}
        }
        match state.brokers.get(&ordinal) {
            Some(b) if b.alive && !b.shutting_down => {}
            _ => {
                return RollStep::Wait(format!(
                    "broker {ordinal} is not registered with the controller"
                ));
            }
        }
    }
    let lagging: Vec<String> = state
        .topics
        .values()
        .flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.replicas.iter().any(|r| !p.isr.contains(r)))
                .map(move |(i, _)| format!("{}-{i}", t.name))
        })
        .collect();
    if !lagging.is_empty() {
        return RollStep::Wait(format!(
            "{} partitions are under-replicated ({}{}): waiting for their replicas to catch up",
            lagging.len(),
            lagging[..lagging.len().min(3)].join(", "),
            if lagging.len() > 3 { ", ..." } else { "" }
        ));
    }
    // The highest ordinal first, as a StatefulSet rolls.
    stale.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    let mut first_refusal = None;
    for pod in stale {
        match below_min_isr_without(state, pod.ordinal, default_min_isr) {
            None => {
                return RollStep::Restart {
                    pod: pod.name.clone(),
                    broker: pod.ordinal,
                };
            }
            Some(why) => {
                first_refusal.get_or_insert(format!("restarting {} would leave {why}", pod.name));
            }
        }
    }
    RollStep::Blocked(first_refusal.unwrap_or_default())
}

/// The first partition that would have fewer in-sync replicas than its minimum without
/// `broker`, described; `None` when there is none.
pub fn below_min_isr_without(
    state: &ClusterState,
    broker: i32,
    default_min_isr: usize,
) -> Option<String> {
    for topic in state.topics.values() {
        let min_isr = topic
            .config
            .get("min.insync.replicas")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default_min_isr);
        for (index, partition) in topic.partitions.iter().enumerate() {
            if !partition.isr.contains(&broker) {
                continue;
            }
            let left = partition.isr.len() - 1;
            if left < min_isr {
                return Some(format!(
                    "{}-{index} with {left} in-sync replicas, below its min.insync.replicas of {min_isr}",
                    topic.name
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cluster(min_isr: &str, replicas: usize) -> ClusterState {
        let mut state = ClusterState::default();
        for id in 0..3 {
            state.register(id, format!("b{id}"), None, 1);
        }
        state
            .create_topic(
                "orders",
                "id".into(),
                3,
                replicas,
                BTreeMap::from([("min.insync.replicas".to_string(), min_isr.to_string())]),
            )
            .expect("create");
        state
    }

    fn pods(revisions: [&str; 3]) -> Vec<BrokerPod> {
        revisions
            .iter()
            .enumerate()
            .map(|(i, r)| BrokerPod {
                name: format!("main-{i}"),
                ordinal: i as i32,
                revision: Some((*r).to_string()),
                ready: true,
                deleting: false,
            })
            .collect()
    }

    #[test]
    fn nothing_to_do_when_every_pod_runs_the_current_revision() {
        let state = cluster("2", 3);
        assert_eq!(
            next_step(&pods(["new"; 3]), 3, Some("new"), &state, 1),
            RollStep::UpToDate
        );
    }

    #[test]
    fn one_broker_at_a_time_from_the_highest_ordinal() {
        let state = cluster("2", 3);
        assert_eq!(
            next_step(&pods(["old"; 3]), 3, Some("new"), &state, 1),
            RollStep::Restart {
                pod: "main-2".into(),
                broker: 2
            }
        );
        // While it restarts, and until it is ready and back in every ISR: wait.
        let mut restarting = pods(["old", "old", "new"]);
        restarting[2].ready = false;
        assert!(matches!(
            next_step(&restarting, 3, Some("new"), &state, 1),
            RollStep::Wait(_)
        ));
        let mut lagging = state.clone();
        lagging.topics.get_mut("orders").expect("topic").partitions[0]
            .isr
            .retain(|&r| r != 2);
        let step = next_step(&pods(["old", "old", "new"]), 3, Some("new"), &lagging, 1);
        assert!(
            matches!(&step, RollStep::Wait(why) if why.contains("orders-0")),
            "{step:?}"
        );
        assert_eq!(
            next_step(&pods(["old", "old", "new"]), 3, Some("new"), &state, 1),
            RollStep::Restart {
                pod: "main-1".into(),
                broker: 1
            }
        );
    }

    #[test]
    fn a_restart_that_would_go_below_min_isr_is_blocked() {
        // Two replicas, both needed in sync: no broker can go.
        let state = cluster("2", 2);
        let step = next_step(&pods(["old"; 3]), 3, Some("new"), &state, 1);
        assert!(
            matches!(&step, RollStep::Blocked(why) if why.contains("below its min.insync.replicas of 2")),
            "{step:?}"
        );
        // The topic default applies where the topic sets nothing.
        let mut state = cluster("1", 2);
        state
            .topics
            .get_mut("orders")
            .expect("topic")
            .config
            .clear();
        assert!(matches!(
            next_step(&pods(["old"; 3]), 3, Some("new"), &state, 2),
            RollStep::Blocked(_)
        ));
        assert!(matches!(
            next_step(&pods(["old"; 3]), 3, Some("new"), &state, 1),
            RollStep::Restart { .. }
        ));
    }

    #[test]
    fn a_broker_missing_from_the_controller_holds_the_roll() {
        let mut state = cluster("2", 3);
        state.broker_lost(0);
        let step = next_step(&pods(["old"; 3]), 3, Some("new"), &state, 1);
        assert!(matches!(step, RollStep::Wait(_)), "{step:?}");
    }
}
