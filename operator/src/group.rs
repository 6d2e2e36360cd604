//! What a `ConsumerGroup` asks of the cluster, as pure functions: whether its offset reset
//! can be applied now (only while the group has no members, and once for each reset asked:
//! an edit of the resource's other fields, or a re-apply of the same YAML, does not rewind
//! the group again), and how long its lag would take to drain at the rate it consumes.

use crate::crd::{ConsumerGroupSpec, ResetOffsets, ResetTarget};

/// What to do about `spec.resetOffsets`.
#[derive(Debug, Clone, PartialEq)]
pub enum ResetPlan {
    /// Nothing asked, or this very reset was applied already.
    Nothing,
    /// Apply it now.
    Apply(ResetOffsets),
    /// Not now; the message says why (for the resource's condition).
    Wait {
        reason: &'static str,
        message: String,
    },
    /// The reset can never apply as written.
    Invalid { message: String },
}

/// Decides about the reset of a group with `members` members, given the reset applied last
/// (cleared when `resetOffsets` is removed, so the same reset can be asked again).
pub fn reset_plan(
    spec: &ConsumerGroupSpec,
    members: usize,
    applied: Option<&ResetOffsets>,
) -> ResetPlan {
    let Some(reset) = &spec.reset_offsets else {
        return ResetPlan::Nothing;
    };
    if applied == Some(reset) {
        return ResetPlan::Nothing;
    }
    match (reset.to, reset.timestamp, reset.offsets.is_empty()) {
        (ResetTarget::Timestamp, None, _) => {
            return ResetPlan::Invalid {
                message: "resetOffsets.to is timestamp but resetOffsets.timestamp is missing"
                    .into(),
            };
        }
        (ResetTarget::Offsets, _, true) => {
            return ResetPlan::Invalid {
                message: "resetOffsets.to is offsets but resetOffsets.offsets is empty".into(),
            };
        }
        _ => {}
    }
    if let Some(bad) = reset
        .offsets
        .iter()
        .find(|(p, o)| p.parse::<u32>().is_err() || **o < 0)
    {
        return ResetPlan::Invalid {
            message: format!(
                "resetOffsets.offsets has {:?}: {}; partitions are numbers and offsets are not negative",
                bad.0, bad.1
            ),
        };
    }
    if members > 0 {
        return ResetPlan::Wait {
            reason: "GroupHasMembers",
            message: format!(
                "the reset of {:?} waits: the group has {members} member(s); stop them and it applies",
                reset.topic
            ),
        };
    }
    ResetPlan::Apply(reset.clone())
}

/// About how many seconds `lag` records take to drain at `rate` records per second (`None`
/// when the group is not consuming).
pub fn approximate_seconds(lag: i64, rate: f64) -> Option<i64> {
    if lag <= 0 {
        return Some(0);
    }
    (rate > 0.0).then(|| (lag as f64 / rate).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(reset: Option<ResetOffsets>) -> ConsumerGroupSpec {
        ConsumerGroupSpec {
            cluster: "main".into(),
            group_id: None,
            topics: vec!["orders".into()],
            reset_offsets: reset,
        }
    }

    fn reset(to: ResetTarget) -> ResetOffsets {
        ResetOffsets {
            topic: "orders".into(),
            to,
            timestamp: None,
            offsets: Default::default(),
        }
    }

    #[test]
    fn a_reset_waits_for_the_group_to_be_empty_and_applies_once() {
        let earliest = reset(ResetTarget::Earliest);
        let asked = spec(Some(earliest.clone()));
        let ResetPlan::Wait { reason, message } = reset_plan(&asked, 2, None) else {
            panic!("applied with members");
        };
        assert_eq!(reason, "GroupHasMembers");
        assert!(message.contains("2 member(s)"), "{message}");
        assert_eq!(
            reset_plan(&asked, 0, None),
            ResetPlan::Apply(earliest.clone())
        );
        // Once applied, the same reset is not applied again (an edit of another field or a
        // re-apply of the same YAML does not rewind the group).
        assert_eq!(reset_plan(&asked, 0, Some(&earliest)), ResetPlan::Nothing);
        // Another reset applies.
        assert!(matches!(
            reset_plan(&spec(Some(reset(ResetTarget::Latest))), 0, Some(&earliest)),
            ResetPlan::Apply(_)
        ));
        assert_eq!(reset_plan(&spec(None), 0, None), ResetPlan::Nothing);
    }

    #[test]
    fn a_reset_that_cannot_apply_says_why() {
        for (bad, expect) in [
            (reset(ResetTarget::Timestamp), "timestamp is missing"),
            (reset(ResetTarget::Offsets), "offsets is empty"),
            (
                ResetOffsets {
                    offsets: [("zero".to_string(), 4)].into(),
                    ..reset(ResetTarget::Offsets)
                },
                "\"zero\"",
            ),
            (
                ResetOffsets {
                    offsets: [("0".to_string(), -1)].into(),
                    ..reset(ResetTarget::Offsets)
                },
                "not negative",
            ),
        ] {
            let ResetPlan::Invalid { message } = reset_plan(&spec(Some(bad)), 0, None) else {
                panic!("{expect}: accepted");
            };
            assert!(message.contains(expect), "{message}");
        }
    }

    #[test]
    fn lag_in_seconds() {
        assert_eq!(approximate_seconds(0, 0.0), Some(0));
        assert_eq!(approximate_seconds(1000, 300.0), Some(4));
        assert_eq!(approximate_seconds(1000, 0.0), None);
    }
}
