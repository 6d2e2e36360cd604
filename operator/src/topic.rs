//! What a change to a `Topic` means for the cluster, as a pure function: create it, grow its
//! partitions, change its config, nothing, or refuse (with a message for the Topic's
//! condition). The reconciler carries the plan out through the controller.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::TopicSpec;

/// A topic as the cluster has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub partitions: i32,
    pub replication_factor: i32,
    /// Only the keys set on the topic.
    pub config: BTreeMap<String, String>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPlan {
    Create {
        partitions: i32,
        replication_factor: i32,
        config: BTreeMap<String, String>,
    },
    Update {
        /// The new partition count, when it grows.
        partitions: Option<i32>,
        /// The new replication factor, when it changes: a reassignment of every partition.
        replication_factor: Option<i32>,
        /// Keys to set (new or changed) and keys to return to the cluster's default.
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    InSync,
    /// The spec asks for what cannot be done; the message says why and what would work.
    Refused {
        reason: &'static str,
        message: String,
    },
}

/// The plan that brings the cluster's topic to `spec`.
pub fn plan(name: &str, spec: &TopicSpec, observed: Option<&Observed>) -> TopicPlan {
    let Some(observed) = observed else {
        return TopicPlan::Create {
            partitions: spec.partitions,
            replication_factor: spec.replication_factor,
            config: spec.config.clone(),
        };
    };
    if spec.partitions < observed.partitions {
        return TopicPlan::Refused {
            reason: "PartitionsCannotShrink",
            message: format!(
                "topic {name} has {} partitions; it cannot shrink to {} (records would be lost): set spec.partitions to {} or more",
                observed.partitions, spec.partitions, observed.partitions
            ),
        };
    }
    // A new replication factor moves replicas (a reassignment), as Kafka's
    // kafka-reassign-partitions does; the observed factor is where a move under way goes.
    let replication_factor =
        (spec.replication_factor != observed.replication_factor).then_some(spec.replication_factor);
    let set: BTreeMap<String, String> = spec
        .config
        .iter()
        .filter(|(k, v)| observed.config.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete: Vec<String> = observed
        .config
        .keys()
        .filter(|k| !spec.config.contains_key(*k))
        .cloned()
        .collect();
    let partitions = (spec.partitions > observed.partitions).then_some(spec.partitions);
    if partitions.is_none() && replication_factor.is_none() && set.is_empty() && delete.is_empty() {
        TopicPlan::InSync
    } else {
        TopicPlan::Update {
            partitions,
            replication_factor,
            set,
            delete,
        }
    }
}

/// The Ready condition a plan leads to once carried out (or refused), for the object at
/// `generation`. `previous` keeps its transition time when the status does not change.
pub fn ready_condition(
    plan: &TopicPlan,
    generation: Option<i64>,
    previous: Option<&Condition>,
    now: Time,
) -> Condition {
    let (status, reason, message) = match plan {
        TopicPlan::Refused { reason, message } => ("False", *reason, message.clone()),
        TopicPlan::Create { .. } => ("True", "Created", "the topic was created".to_string()),
        TopicPlan::Update { .. } => (
            "True",
            "Updated",
            "the topic was changed to its spec".to_string(),
        ),
        TopicPlan::InSync => ("True", "InSync", "the topic matches its spec".to_string()),
    };
    let transition = previous
        .filter(|p| p.status == status)
        .map_or(now, |p| p.last_transition_time.clone());
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: transition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec(partitions: i32, replication_factor: i32, config: &[(&str, &str)]) -> TopicSpec {
        TopicSpec {
            cluster: "main".into(),
            topic_name: None,
            partitions,
            replication_factor,
            config: map(config),
        }
    }

    fn observed(partitions: i32, replication_factor: i32, config: &[(&str, &str)]) -> Observed {
        Observed {
            partitions,
            replication_factor,
            config: map(config),
        }
    }

    #[test]
    fn a_new_topic_is_created_as_specified() {
        assert_eq!(
            plan("orders", &spec(6, 3, &[("retention.ms", "1000")]), None),
            TopicPlan::Create {
                partitions: 6,
                replication_factor: 3,
                config: [("retention.ms".to_string(), "1000".to_string())].into(),
            }
        );
    }

    #[test]
    fn partitions_grow_and_config_follows_the_spec() {
        let now = observed(3, 3, &[("retention.ms", "1000"), ("segment.ms", "60000")]);
        assert_eq!(
            plan(
                "orders",
                &spec(6, 3, &[("retention.ms", "2000"), ("flush.ms", "10")]),
                Some(&now)
            ),
            TopicPlan::Update {
                partitions: Some(6),
                replication_factor: None,
                set: [
                    ("flush.ms".to_string(), "10".to_string()),
                    ("retention.ms".to_string(), "2000".to_string())
                ]
                .into(),
                delete: vec!["segment.ms".to_string()],
            }
        );
        assert_eq!(
            plan(
                "orders",
                &spec(3, 3, &[("retention.ms", "1000"), ("segment.ms", "60000")]),
                Some(&now)
            ),
            TopicPlan::InSync
        );
    }

    #[test]
    fn shrinking_is_refused_with_a_way_out_and_a_new_replication_factor_moves_replicas() {
        let now = observed(6, 3, &[]);
        let TopicPlan::Refused { reason, message } = plan("orders", &spec(4, 3, &[]), Some(&now))
        else {
            panic!("shrink accepted");
        };
        assert_eq!(reason, "PartitionsCannotShrink");
        assert!(
            message.contains("set spec.partitions to 6 or more"),
            "{message}"
        );
        // A new replication factor is a reassignment.
        assert_eq!(
            plan("orders", &spec(6, 1, &[]), Some(&now)),
            TopicPlan::Update {
                partitions: None,
                replication_factor: Some(1),
                set: BTreeMap::new(),
                delete: Vec::new(),
            }
        );
    }

    #[test]
    fn the_ready_condition_keeps_its_transition_time_while_unchanged() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let t1 = Time(k8s_openapi::jiff::Timestamp::now());
        let first = ready_condition(&TopicPlan::InSync, Some(1), None, t0.clone());
        assert_eq!(
            (first.status.as_str(), first.reason.as_str()),
            ("True", "InSync")
        );
        let again = ready_condition(&TopicPlan::InSync, Some(2), Some(&first), t1.clone());
        assert_eq!(again.last_transition_time, t0);
        assert_eq!(again.observed_generation, Some(2));
        let refused = TopicPlan::Refused {
            reason: "PartitionsCannotShrink",
            message: "no".into(),
        };
        let flipped = ready_condition(&refused, Some(3), Some(&again), t1.clone());
        assert_eq!(flipped.status, "False");
        assert_eq!(flipped.last_transition_time, t1);
    }
}
