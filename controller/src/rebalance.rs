//! A rebalance plan: new replica lists that even out replicas and preferred leaders over the
//! brokers (and racks), moving as few replicas as it can, and moving every replica off the
//! brokers being drained. Pure: `weir cluster rebalance` plans from the metadata a client
//! sees, the operator from the controller's state when brokers come or go; both then submit
//! the plan as reassignments.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::BrokerId;

/// A partition as the plan sees it: its replicas, the first the preferred leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<BrokerId>,
}

/// What a plan changes: each partition that moves, with its new replicas.
pub type Plan = Vec<Placed>;

/// Plans new replicas for `partitions` over `brokers` (id, rack): no replica stays on a
/// broker of `drain`; every broker ends with the same number of replicas, give or take one
/// (without racks; with racks, spreading a partition over racks comes first); preferred
/// leaderships are evened by reordering replica lists where they allow. Replicas already in
/// place stay where they may.
///
/// # Errors
/// A partition with more replicas than there are brokers to hold them.
pub fn plan(
    brokers: &[(BrokerId, Option<String>)],
    drain: &[BrokerId],
    partitions: &[Placed],
) -> Result<Plan, String> {
    let eligible: Vec<(BrokerId, Option<String>)> = brokers
        .iter()
        .filter(|(id, _)| !drain.contains(id))
        .cloned()
        .collect();
    let rack: BTreeMap<BrokerId, Option<String>> = brokers.iter().cloned().collect();
    if let Some(p) = partitions
        .iter()
        .find(|p| p.replicas.len() > eligible.len())
    {
        return Err(format!(
            "{}-{} has {} replicas but only {} brokers would remain",
            p.topic,
            p.partition,
            p.replicas.len(),
            eligible.len()
        ));
    }
    let mut load: BTreeMap<BrokerId, usize> = eligible.iter().map(|(id, _)| (*id, 0)).collect();
    for p in partitions {
        for r in &p.replicas {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    let mut next: Vec<Placed> = partitions.to_vec();
    // The broker to take a replica of `p`: the least loaded eligible one it lacks, preferring
    // a rack it lacks.
    let pick = |load: &BTreeMap<BrokerId, usize>, p: &Placed, leaving: BrokerId| {
        let racks: BTreeSet<Option<String>> = p
            .replicas
            .iter()
            .filter(|r| **r != leaving)
            .map(|r| rack.get(r).cloned().flatten())
            .collect();
        load.iter()
            .filter(|(id, _)| !p.replicas.contains(id))
            .min_by_key(|(id, n)| {
                let new_rack = rack.get(*id).cloned().flatten();
                let shared = new_rack.is_some() && racks.contains(&new_rack);
                (shared, **n, **id)
            })
            .map(|(id, _)| *id)
    };
    // 1. Off the drained brokers.
    for p in &mut next {
        for slot in 0..p.replicas.len() {
            let from = p.replicas[slot];
            if load.contains_key(&from) {
                continue;
            }
            let to = pick(&load, p, from).ok_or_else(|| {
                format!("no broker can take {}-{}'s replica", p.topic, p.partition)
            })?;
            p.replicas[slot] = to;
            *load.get_mut(&to).expect("eligible") += 1;
        }
    }
    // 2. From the most to the least loaded broker, one replica at a time.
    let bound = partitions.iter().map(|p| p.replicas.len()).sum::<usize>() + 1;
    for _ in 0..bound {
        let (max_id, max_n) = load
            .iter()
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
            .map(|(i, n)| (*i, *n))
            .unwrap_or_default();
        let min_n = load.values().copied().min().unwrap_or_default();
        if max_n <= min_n + 1 {
            break;
        }
        let racks_of = |replicas: &[BrokerId]| {
            replicas
                .iter()
                .map(|r| rack.get(r).cloned().flatten())
                .collect::<BTreeSet<_>>()
                .len()
        };
        let moved = next.iter_mut().find_map(|p| {
            let slot = p.replicas.iter().position(|r| *r == max_id)?;
            let to = pick(&load, p, max_id)?;
            let mut moved = p.replicas.clone();
            moved[slot] = to;
            // Evening out never costs a partition a rack it spans.
            (load[&to] + 1 < max_n && racks_of(&moved) >= racks_of(&p.replicas)).then(|| {
                p.replicas = moved;
                to
            })
        });
        let Some(to) = moved else { break };
        *load.get_mut(&max_id).expect("eligible") -= 1;
        *load.get_mut(&to).expect("eligible") += 1;
    }
    // 3. Preferred leaders: reorder replica lists (no data moves) until even.
    let mut leads: BTreeMap<BrokerId, usize> = load.keys().map(|id| (*id, 0)).collect();
    for p in &next {
        if let Some(first) = p.replicas.first() {
            *leads.entry(*first).or_default() += 1;
        }
    }
    for _ in 0..bound {
        let (max_id, max_n) = leads
            .iter()
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
            .map(|(i, n)| (*i, *n))
            .unwrap_or_default();
        let moved = next.iter_mut().find_map(|p| {
            if p.replicas.first() != Some(&max_id) {
                return None;
            }
            let (slot, to) = p
                .replicas
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(_, r)| leads.get(r).is_some_and(|n| n + 1 < max_n))
                .min_by_key(|(_, r)| leads[r])
                .map(|(i, r)| (i, *r))?;
            p.replicas.swap(0, slot);
            Some(to)
        });
        let Some(to) = moved else { break };
        *leads.get_mut(&max_id).expect("leader") -= 1;
        *leads.get_mut(&to).expect("leader") += 1;
    }
    Ok(next
        .into_iter()
        .zip(partitions)
        .filter(|(after, before)| after.replicas != before.replicas)
        .map(|(after, _)| after)
        .collect())
}

/// New replica lists giving every partition of a topic `factor` replicas: a partition with
/// fewer gains the least loaded brokers it lacks (a rack it lacks first), one with more
/// keeps its first `factor` (its preferred leader first). Only partitions that change.
///
/// # Errors
/// A factor of 0, or above the number of brokers.
pub fn resize(
    brokers: &[(BrokerId, Option<String>)],
    partitions: &[Placed],
    all: &[Placed],
    factor: usize,
) -> Result<Plan, String> {
    if factor == 0 || factor > brokers.len() {
        return Err(format!(
            "a replication factor of {factor} needs 1 to {} brokers",
            brokers.len()
        ));
    }
    let rack: BTreeMap<BrokerId, Option<String>> = brokers.iter().cloned().collect();
    let mut load: BTreeMap<BrokerId, usize> = brokers.iter().map(|(id, _)| (*id, 0)).collect();
    for p in all {
        for r in &p.replicas {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    let mut plan = Vec::new();
    for p in partitions {
        let mut replicas = p.replicas.clone();
        if replicas.len() > factor {
            for gone in replicas.split_off(factor) {
                if let Some(n) = load.get_mut(&gone) {
                    *n -= 1;
                }
            }
        }
        while replicas.len() < factor {
            let racks: BTreeSet<Option<String>> = replicas
                .iter()
                .map(|r| rack.get(r).cloned().flatten())
                .collect();
            let Some(to) = load
                .iter()
                .filter(|(id, _)| !replicas.contains(id))
                .min_by_key(|(id, n)| {
                    let r = rack.get(*id).cloned().flatten();
                    (r.is_some() && racks.contains(&r), **n, **id)
                })
                .map(|(id, _)| *id)
            else {
                break;
            };
            replicas.push(to);
            *load.get_mut(&to).expect("a broker") += 1;
        }
        if replicas != p.replicas {
            plan.push(Placed {
                replicas,
                ..p.clone()
            });
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn placed(lists: &[&[BrokerId]]) -> Vec<Placed> {
        lists
            .iter()
            .enumerate()
            .map(|(i, r)| Placed {
                topic: "t".into(),
                partition: i as i32,
                replicas: r.to_vec(),
            })
            .collect()
    }

    fn apply(before: &[Placed], plan: &Plan) -> Vec<Placed> {
        before
            .iter()
            .map(|p| {
                plan.iter()
                    .find(|m| m.topic == p.topic && m.partition == p.partition)
                    .cloned()
                    .unwrap_or_else(|| p.clone())
            })
            .collect()
    }

    fn brokers(ids: &[BrokerId]) -> Vec<(BrokerId, Option<String>)> {
        ids.iter().map(|id| (*id, None)).collect()
    }

    #[test]
    fn a_new_broker_gets_its_share_and_a_balanced_cluster_stays_put() {
        let before = placed(&[
            &[0, 1, 2],
            &[1, 2, 0],
            &[2, 0, 1],
            &[0, 1, 2],
            &[1, 2, 0],
            &[2, 0, 1],
        ]);
        assert!(
            plan(&brokers(&[0, 1, 2]), &[], &before)
                .expect("plan")
                .is_empty()
        );
        let moves = plan(&brokers(&[0, 1, 2, 3]), &[], &before).expect("plan");
        let after = apply(&before, &moves);
        let on = |b| after.iter().filter(|p| p.replicas.contains(&b)).count();
        assert!((4..=5).contains(&on(3)), "broker 3 holds {}", on(3));
        assert_eq!(moves.len(), on(3), "only what goes to the new broker moves");
    }

    #[test]
    fn a_drained_broker_ends_with_nothing_and_too_few_brokers_is_refused() {
        let before = placed(&[&[0, 1, 3], &[3, 2, 0], &[2, 3, 1]]);
        let after = apply(
            &before,
            &plan(&brokers(&[0, 1, 2, 3]), &[3], &before).expect("plan"),
        );
        assert!(after.iter().all(|p| !p.replicas.contains(&3)), "{after:?}");
        assert!(
            after
                .iter()
                .all(|p| p.replicas.iter().collect::<BTreeSet<_>>().len() == 3)
        );
        assert!(plan(&brokers(&[0, 1, 2, 3]), &[2, 3], &before).is_err());
    }

    #[test]
    fn replicas_spread_over_racks() {
        let brokers: Vec<(BrokerId, Option<String>)> = vec![
            (0, Some("a".into())),
            (1, Some("a".into())),
            (2, Some("b".into())),
            (3, Some("b".into())),
        ];
        let before = placed(&[&[0, 2], &[2, 0], &[0, 3], &[3, 1]]);
        let after = apply(&before, &plan(&brokers, &[0], &before).expect("plan"));
        for p in &after {
            let racks: BTreeSet<_> = p
                .replicas
                .iter()
                .map(|r| brokers[*r as usize].1.clone())
                .collect();
            assert_eq!(racks.len(), 2, "{p:?} spans both racks");
        }
    }

    #[test]
    fn the_replication_factor_grows_onto_the_least_loaded_and_shrinks_from_the_tail() {
        let before = placed(&[&[0, 1], &[1, 2], &[2, 0]]);
        let grown = resize(&brokers(&[0, 1, 2, 3]), &before, &before, 3).expect("grow");
        assert_eq!(grown.len(), 3);
        assert!(grown.iter().all(|p| p.replicas.len() == 3));
        assert!(
            grown[0].replicas.starts_with(&[0, 1]),
            "kept in place: {grown:?}"
        );
        assert_eq!(grown[0].replicas[2], 3, "the empty broker first");
        let shrunk = resize(&brokers(&[0, 1, 2]), &before, &before, 1).expect("shrink");
        assert_eq!(
            shrunk
                .iter()
                .map(|p| p.replicas.clone())
                .collect::<Vec<_>>(),
            [vec![0], vec![1], vec![2]]
        );
        assert!(resize(&brokers(&[0, 1]), &before, &before, 3).is_err());
    }

    proptest! {
        /// Any placement over up to 6 brokers, with up to two drained: afterwards nothing is
        /// on a drained broker, replicas are distinct, replication factors are kept, and
        /// replica and preferred-leader counts are even within one.
        #[test]
        fn plans_are_even_and_valid(
            lists in proptest::collection::vec(proptest::sample::subsequence(vec![0, 1, 2, 3, 4, 5], 1..=3).prop_shuffle(), 1..30),
            drain in proptest::sample::subsequence(vec![0, 1, 2, 3, 4, 5], 0..=2),
        ) {
            let before: Vec<Placed> = lists.iter().enumerate().map(|(i, r)| Placed { topic: "t".into(), partition: i as i32, replicas: r.clone() }).collect();
            let all = brokers(&[0, 1, 2, 3, 4, 5]);
            let Ok(moves) = plan(&all, &drain, &before) else {
                prop_assert!(before.iter().any(|p| p.replicas.len() > 6 - drain.len()));
                return Ok(());
            };
            let after = apply(&before, &moves);
            let mut load: BTreeMap<BrokerId, usize> = (0..6).filter(|b| !drain.contains(b)).map(|b| (b, 0)).collect();
            for (a, b) in after.iter().zip(&before) {
                prop_assert_eq!(a.replicas.len(), b.replicas.len());
                prop_assert_eq!(a.replicas.iter().collect::<BTreeSet<_>>().len(), a.replicas.len());
                for r in &a.replicas {
                    prop_assert!(!drain.contains(r));
                    *load.get_mut(r).expect("eligible") += 1;
                }
            }
            let (min, max) = (load.values().min().copied().unwrap_or(0), load.values().max().copied().unwrap_or(0));
            prop_assert!(max <= min + 1, "replicas uneven: {:?}", load);
        }
    }
}
