//! Scaling a Cluster's brokers, as a pure decision over the controller's state. Scaling down
//! drains the brokers past `spec.brokers` first (their replicas reassigned to the brokers that
//! stay), and the StatefulSet shrinks only once they hold nothing; scaling up gives the new
//! brokers their share of replicas (a rebalance plan), unless the Cluster opts out.

use weir_controller::model::{BrokerId, ClusterState};
use weir_controller::rebalance::{Placed, Plan, plan};

/// What to do about the broker count now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleStep {
    Steady,
    /// Start these moves: to drain brokers being removed, or to give new brokers their share.
    Move {
        draining: Vec<BrokerId>,
        moves: Plan,
    },
    /// Moves under way: wait for them (the brokers being removed keep running).
    Moving {
        draining: Vec<BrokerId>,
        partitions: usize,
    },
    /// The brokers left could not hold every replica; why.
    Impossible(String),
}

/// The decision, and how many brokers the StatefulSet runs meanwhile: never fewer than one
/// past the highest broker still holding a replica.
pub fn next_step(desired: i32, state: &ClusterState, auto_rebalance: bool) -> (ScaleStep, i32) {
    let holds = |id: BrokerId| {
        state
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.replicas.contains(&id))
            .count()
    };
    let draining: Vec<BrokerId> = state
        .brokers
        .keys()
        .copied()
        .filter(|&id| id >= desired && holds(id) > 0)
        .collect();
    let replicas = draining
        .iter()
        .map(|id| id + 1)
        .max()
        .unwrap_or(0)
        .max(desired);
    let moving = state
        .topics
        .values()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.is_reassigning())
        .count();
    let staying: Vec<(BrokerId, Option<String>)> = state
        .brokers
        .values()
        .filter(|b| b.id < desired)
        .map(|b| (b.id, b.rack.clone()))
        .collect();
    let placed: Vec<Placed> = state
        .topics
        .values()
        .flat_map(|t| {
            t.partitions.iter().enumerate().map(|(i, p)| Placed {
                topic: t.name.clone(),
                partition: i as i32,
                replicas: p.target(),
            })
        })
        .collect();
    if !draining.is_empty() {
        if moving > 0 {
            return (
                ScaleStep::Moving {
                    draining,
                    partitions: moving,
                },
                replicas,
            );
        }
        let step = match plan(&staying, &draining, &placed) {
            Ok(moves) if !moves.is_empty() => ScaleStep::Move { draining, moves },
            Ok(_) => ScaleStep::Impossible(format!(
                "brokers {draining:?} still hold replicas no move takes away"
            )),
            Err(why) => ScaleStep::Impossible(format!(
                "{why}: lower those topics' replication factor, or keep more brokers"
            )),
        };
        return (step, replicas);
    }
    // Scaling up: once every broker is in, one that holds nothing gets its share.
    let all_in = (0..desired).all(|id| {
        state
            .brokers
            .get(&id)
            .is_some_and(|b| b.alive && !b.shutting_down)
    });
    let idle = (0..desired).any(|id| holds(id) == 0);
    if auto_rebalance && all_in && idle && moving == 0 && !placed.is_empty() {
        let staying: Vec<(BrokerId, Option<String>)> = staying
            .into_iter()
            .filter(|(id, _)| *id < desired)
            .collect();
        if let Ok(moves) = plan(&staying, &[], &placed)
            && !moves.is_empty()
        {
            return (
                ScaleStep::Move {
                    draining: Vec::new(),
                    moves,
                },
                replicas,
            );
        }
    }
    (ScaleStep::Steady, replicas)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cluster(brokers: i32, partitions: usize) -> ClusterState {
        let mut state = ClusterState::default();
        for id in 0..brokers {
            state.register(id, format!("b{id}"), None, 1);
        }
        state
            .create_topic("t", "id".into(), partitions, 3, BTreeMap::new())
            .expect("create");
        state
    }

    #[test]
    fn scaling_down_drains_first_and_shrinks_once_empty() {
        let mut state = cluster(4, 8);
        let (step, replicas) = next_step(3, &state, true);
        let ScaleStep::Move { draining, moves } = step else {
            panic!("no drain: {step:?}");
        };
        assert_eq!(draining, [3]);
        assert_eq!(replicas, 4, "broker 3 runs until it holds nothing");
        for m in &moves {
            state
                .reassign(&m.topic, m.partition, &m.replicas)
                .expect("move");
        }
        assert!(matches!(
            next_step(3, &state, true).0,
            ScaleStep::Moving { .. }
        ));
        // The moves copy nothing to a broker that has everything... once in sync, done.
        for topic in state.topics.values_mut() {
            for p in &mut topic.partitions {
                p.isr = p.replicas.clone();
            }
        }
        state.complete_reassignments();
        assert_eq!(next_step(3, &state, true), (ScaleStep::Steady, 3));
    }

    #[test]
    fn too_few_brokers_left_is_impossible() {
        let state = cluster(3, 2);
        let (step, replicas) = next_step(2, &state, true);
        assert!(
            matches!(step, ScaleStep::Impossible(ref why) if why.contains("replication factor")),
            "{step:?}"
        );
        assert_eq!(replicas, 3);
    }

    #[test]
    fn a_new_broker_gets_its_share_unless_the_cluster_opts_out() {
        let mut state = cluster(3, 6);
        state.register(3, "b3".into(), None, 1);
        let ScaleStep::Move { draining, moves } = next_step(4, &state, true).0 else {
            panic!("no rebalance");
        };
        assert!(draining.is_empty());
        assert!(moves.iter().any(|m| m.replicas.contains(&3)));
        assert_eq!(next_step(4, &state, false).0, ScaleStep::Steady);
        // Not before the new broker registered.
        let state = cluster(3, 6);
        assert_eq!(next_step(4, &state, true).0, ScaleStep::Steady);
    }
}
