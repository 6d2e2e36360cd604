//! Where the replicas of new partitions go: spread evenly over the live brokers and their
//! racks, deterministically (the same state always gives the same placement).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ControllerError;
use crate::model::{BrokerId, ClusterState};

/// How many partitions each broker leads (by preference) and holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Load {
    leaders: usize,
    replicas: usize,
}

/// How often each broker stands at each position of a replica list: the second position is
/// who takes over when the preferred leader fails, so it must rotate as evenly as the first.
type Positions = BTreeMap<(BrokerId, usize), usize>;

/// Replica lists for `partitions` new partitions of `replication_factor` replicas each.
///
/// Each partition's preferred leader is the live broker leading the fewest partitions (then
/// holding the fewest, then the lowest id); each further replica is the live broker holding
/// the fewest replicas among those on a rack the partition does not use yet, when there is
/// one, and among equals the one least often at that position, so that when a leader fails
/// its partitions go to different brokers, not all to the next one. Brokers without a rack
/// count as racks of their own.
///
/// # Errors
/// `InvalidReplicationFactor` when it is 0 or exceeds the live brokers;
/// `InvalidPartitions` when `partitions` is 0.
pub fn place(
    state: &ClusterState,
    partitions: usize,
    replication_factor: usize,
) -> Result<Vec<Vec<BrokerId>>, ControllerError> {
    let alive: Vec<(BrokerId, String)> = state
        .alive_brokers()
        .map(|b| {
            let rack = b
                .rack
                .clone()
                .unwrap_or_else(|| format!("\0broker-{}", b.id));
            (b.id, rack)
        })
        .collect();
    if partitions == 0 {
        return Err(ControllerError::InvalidPartitions(
            "a topic needs at least one partition".into(),
        ));
    }
    if replication_factor == 0 || replication_factor > alive.len() {
        return Err(ControllerError::InvalidReplicationFactor {
            requested: replication_factor,
            alive: alive.len(),
        });
    }
    let mut load: BTreeMap<BrokerId, Load> =
        alive.iter().map(|(id, _)| (*id, Load::default())).collect();
    let mut positions = Positions::new();
    for partition in state.topics.values().flat_map(|t| &t.partitions) {
        for (position, replica) in partition.replicas.iter().enumerate() {
            if let Some(l) = load.get_mut(replica) {
                l.replicas += 1;
                l.leaders += usize::from(position == 0);
            }
            *positions.entry((*replica, position)).or_default() += 1;
        }
    }
    let mut placed = Vec::with_capacity(partitions);
    for _ in 0..partitions {
        let mut replicas = Vec::with_capacity(replication_factor);
        let mut racks = BTreeSet::new();
        let leader = alive
            .iter()
            .min_by_key(|(id, _)| (load[id], *id))
            .map(|(id, rack)| (*id, rack))
            .ok_or(ControllerError::InvalidReplicationFactor {
                requested: replication_factor,
                alive: 0,
            })?;
        replicas.push(leader.0);
        racks.insert(leader.1.clone());
        while replicas.len() < replication_factor {
            let position = replicas.len();
            let rank = |id: &BrokerId| {
                let at = positions.get(&(*id, position)).copied().unwrap_or(0);
                (load[id].replicas, at, *id)
            };
            let candidates = alive.iter().filter(|(id, _)| !replicas.contains(id));
            let on_new_rack = candidates
                .clone()
                .filter(|(_, rack)| !racks.contains(rack))
                .min_by_key(|(id, _)| rank(id));
            let Some((id, rack)) =
                on_new_rack.or_else(|| candidates.min_by_key(|(id, _)| rank(id)))
            else {
                break;
            };
            replicas.push(*id);
            racks.insert(rack.clone());
        }
        for (position, replica) in replicas.iter().enumerate() {
            if let Some(l) = load.get_mut(replica) {
                l.replicas += 1;
                l.leaders += usize::from(position == 0);
            }
            *positions.entry((*replica, position)).or_default() += 1;
        }
        placed.push(replicas);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Broker;
    use proptest::prelude::*;

    fn cluster(racks: &[Option<&str>]) -> ClusterState {
        let mut state = ClusterState::default();
        for (i, rack) in racks.iter().enumerate() {
            let id = i as BrokerId + 1;
            state.brokers.insert(
                id,
                Broker {
                    id,
                    address: format!("127.0.0.1:{}", 9000 + id),
                    rack: rack.map(str::to_string),
                    incarnation: 1,
                    alive: true,
                    kafka_address: None,
                    shutting_down: false,
                },
            );
        }
        state
    }

    #[test]
    fn three_brokers_rf3_rotates_leaders() {
        let state = cluster(&[None, None, None]);
        let placed = place(&state, 3, 3).expect("placement");
        let leaders: BTreeSet<_> = placed.iter().map(|r| r[0]).collect();
        assert_eq!(leaders.len(), 3, "{placed:?}");
        for replicas in &placed {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 3);
        }
    }

    #[test]
    fn replicas_spread_over_racks() {
        let state = cluster(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        let rack = |id: BrokerId| state.brokers[&id].rack.clone();
        for replicas in place(&state, 12, 3).expect("placement") {
            let racks: BTreeSet<_> = replicas.iter().map(|&id| rack(id)).collect();
            assert_eq!(racks.len(), 3, "{replicas:?} share a rack");
        }
    }

    #[test]
    fn more_replicas_than_racks_still_places() {
        let state = cluster(&[Some("a"), Some("a"), Some("b")]);
        let placed = place(&state, 4, 3).expect("placement");
        assert!(placed.iter().all(|r| r.len() == 3));
    }

    #[test]
    fn refuses_impossible_specs() {
        let state = cluster(&[None, None]);
        assert!(matches!(
            place(&state, 1, 3),
            Err(ControllerError::InvalidReplicationFactor {
                requested: 3,
                alive: 2
            })
        ));
        assert!(matches!(
            place(&state, 1, 0),
            Err(ControllerError::InvalidReplicationFactor { .. })
        ));
        assert!(matches!(
            place(&state, 0, 1),
            Err(ControllerError::InvalidPartitions(_))
        ));
    }

    #[test]
    fn dead_brokers_get_nothing() {
        let mut state = cluster(&[None, None, None, None]);
        state.brokers.get_mut(&2).expect("broker 2").alive = false;
        for replicas in place(&state, 8, 3).expect("placement") {
            assert!(!replicas.contains(&2));
        }
    }

    #[test]
    fn a_failed_leaders_partitions_go_to_every_other_broker_evenly() {
        let state = cluster(&[None, None, None]);
        let placed = place(&state, 300, 3).expect("placed");
        let mut successors: BTreeMap<BrokerId, usize> = BTreeMap::new();
        for replicas in placed.iter().filter(|r| r[0] == 1) {
            *successors.entry(replicas[1]).or_default() += 1;
        }
        assert_eq!(successors.len(), 2, "{successors:?}");
        let (low, high) = (successors[&2], successors[&3]);
        assert!(low.abs_diff(high) <= 1, "{successors:?}");
        let orders: BTreeSet<&Vec<BrokerId>> = placed.iter().collect();
        assert_eq!(orders.len(), 6, "every order of three brokers is used");
    }

    proptest! {
        /// On brokers without racks, leaders and replicas differ by at most one between any
        /// two brokers, a partition never holds a broker twice, and the same state always
        /// gives the same placement.
        #[test]
        fn even_and_deterministic(brokers in 1usize..8, partitions in 1usize..40, rf in 1usize..4) {
            prop_assume!(rf <= brokers);
            let state = cluster(&vec![None; brokers]);
            let placed = place(&state, partitions, rf).expect("placement");
            prop_assert_eq!(&placed, &place(&state, partitions, rf).expect("placement"));
            let mut leaders = vec![0usize; brokers + 1];
            let mut replicas = vec![0usize; brokers + 1];
            for list in &placed {
                let distinct: BTreeSet<_> = list.iter().collect();
                prop_assert_eq!(distinct.len(), rf);
                leaders[list[0] as usize] += 1;
                for &r in list {
                    replicas[r as usize] += 1;
                }
            }
            let spread = |v: &[usize]| v[1..].iter().max().unwrap_or(&0) - v[1..].iter().min().unwrap_or(&0);
            prop_assert!(spread(&leaders) <= 1, "leaders {:?}", leaders);
            prop_assert!(spread(&replicas) <= 1, "replicas {:?}", replicas);
        }
    }
}
