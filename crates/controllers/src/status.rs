//! The status an object should report, computed from the reconcile outcome (pure).
//!
//! One condition, `Ready`: `True` once the object is valid and mirrored into etcd; `False` with
//! reason `Invalid` (message: every failing field and why) or `Conflict` (etcd holds an object
//! of the same name that Kubernetes does not own). `lastTransitionTime` only moves when the
//! status flips, so re-reconciling an unchanged object produces an identical status and no write.

use calico_api::{ConditionStatus, ValidationErrors};

/// Condition type written on every reconciled object.
pub const READY: &str = "Ready";

/// What a reconcile pass found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Valid and written to etcd.
    Mirrored,
    /// Failed calico-api validation; nothing was written to etcd.
    Invalid(String),
    /// etcd holds an object of this name owned by someone else; it was not overwritten.
    Conflict(String),
}

impl Outcome {
    pub fn invalid(errors: &ValidationErrors) -> Self {
        let fields: Vec<String> = errors.errors.iter().map(|e| e.to_string()).collect();
        Outcome::Invalid(fields.join("; "))
    }

    pub fn status(&self) -> ConditionStatus {
        match self {
            Outcome::Mirrored => ConditionStatus::True,
            _ => ConditionStatus::False,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Mirrored => "Mirrored",
            Outcome::Invalid(_) => "Invalid",
            Outcome::Conflict(_) => "Conflict",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Outcome::Mirrored => "valid; mirrored into etcd".into(),
            Outcome::Invalid(m) | Outcome::Conflict(m) => m.clone(),
        }
    }
}

/// The `Ready` condition for `outcome`, keeping the transition time of `previous` when the
/// status did not change.
pub fn ready_condition(
    outcome: &Outcome,
    generation: Option<i64>,
    previous: Option<&calico_api::Condition>,
    now: &str,
) -> calico_api::Condition {
    condition(
        READY,
        outcome.status() == ConditionStatus::True,
        outcome.reason(),
        outcome.message(),
        generation,
        previous,
        now,
    )
}

/// Any condition, keeping the transition time of `previous` when the status did not change.
pub fn condition(
    r#type: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: Option<&calico_api::Condition>,
    now: &str,
) -> calico_api::Condition {
    let status = if status {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now.to_string(),
    };
    calico_api::Condition {
        r#type: r#type.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// `conditions` with `Ready` replaced by `ready` (other condition types kept, in order).
pub fn merge_conditions(
    conditions: &[calico_api::Condition],
    ready: calico_api::Condition,
) -> Vec<calico_api::Condition> {
    let mut out: Vec<_> = conditions
        .iter()
        .filter(|c| c.r#type != READY)
        .cloned()
        .collect();
    out.push(ready);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: ConditionStatus, at: &str) -> calico_api::Condition {
        calico_api::Condition {
            r#type: READY.into(),
            status,
            reason: "x".into(),
            message: "x".into(),
            observed_generation: Some(1),
            last_transition_time: at.into(),
        }
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let prev = cond(ConditionStatus::True, "t0");
        let same = ready_condition(&Outcome::Mirrored, Some(2), Some(&prev), "t1");
        assert_eq!(same.last_transition_time, "t0");
        assert_eq!(same.observed_generation, Some(2));
        let flipped = ready_condition(
            &Outcome::Invalid("spec.cidr: bad".into()),
            Some(3),
            Some(&prev),
            "t2",
        );
        assert_eq!(flipped.last_transition_time, "t2");
        assert_eq!(flipped.status, ConditionStatus::False);
        assert_eq!(flipped.reason, "Invalid");
        assert_eq!(flipped.message, "spec.cidr: bad");
    }

    #[test]
    fn merge_replaces_ready_and_keeps_others() {
        let mut other = cond(ConditionStatus::True, "t0");
        other.r#type = "Allocatable".into();
        let old_ready = cond(ConditionStatus::False, "t0");
        let new_ready = cond(ConditionStatus::True, "t1");
        let merged = merge_conditions(&[other.clone(), old_ready], new_ready.clone());
        assert_eq!(merged, vec![other, new_ready]);
    }
}
