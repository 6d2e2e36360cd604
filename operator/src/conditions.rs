//! Status conditions as Kubernetes' API conventions have them: one per type, its
//! transition time kept while its status does not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition of `type_` at `generation`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

/// `previous` with `next` in place of its condition of the same type; the transition time
/// stays when the status did not change. Also says whether the status or reason changed
/// (worth an Event).
pub fn merge(previous: &[Condition], next: Vec<Condition>) -> (Vec<Condition>, bool) {
    let mut changed = false;
    let mut merged: Vec<Condition> = previous
        .iter()
        .filter(|p| !next.iter().any(|n| n.type_ == p.type_))
        .cloned()
        .collect();
    for mut n in next {
        match previous.iter().find(|p| p.type_ == n.type_) {
            Some(p) if p.status == n.status => {
                n.last_transition_time = p.last_transition_time.clone();
                changed |= p.reason != n.reason;
            }
            _ => changed = true,
        }
        merged.push(n);
    }
    merged.sort_by(|a, b| a.type_.cmp(&b.type_));
    (merged, changed)
}

/// The condition of `type_` in `conditions`.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut first = condition("Ready", false, "Waiting", "not yet", Some(1));
        first.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let (merged, changed) = merge(
            &[first.clone()],
            vec![condition("Ready", false, "Waiting", "still not", Some(2))],
        );
        assert!(!changed);
        assert_eq!(merged[0].last_transition_time, first.last_transition_time);
        assert_eq!(merged[0].message, "still not");
        let (merged, changed) = merge(&merged, vec![condition("Ready", true, "Ok", "ok", Some(2))]);
        assert!(changed);
        assert_ne!(merged[0].last_transition_time, first.last_transition_time);
        let (merged, _) = merge(
            &merged,
            vec![condition("Degraded", false, "Ok", "ok", None)],
        );
        assert_eq!(merged.len(), 2);
    }
}
