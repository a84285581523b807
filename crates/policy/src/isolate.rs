//! One bad policy never stops the others from being enforced.
//!
//! [`compile_isolated`] converts and compiles every resource like
//! [`from_api::model_from_resources`] and [`compile()`], but a policy or profile that cannot be
//! enforced as written is handled on its own, fail closed, and reported ([`PolicyIssue`]):
//! - a rule with a match this dataplane cannot enforce (`http`: Calico enforces it only with its
//!   application layer policy; `services`: Felix resolves it to the Service's endpoints, which
//!   calico-rs does not track) is skipped (it never matches), unless it is a Deny, which is
//!   enforced without that match (it denies more) — see [`crate::model::Rule::unenforced`];
//! - a policy or profile that does not convert or compile because of a rule (a bad port, a bad
//!   selector in a rule, …) keeps its selector, tier and order but its rules are replaced by
//!   one Deny per direction it applies to (as Felix replaces the rules of a missing or invalid
//!   profile by drop rules);
//! - a policy whose own selector, namespace selector, service account selector or tier is
//!   broken cannot be placed: it is enforced nowhere (dropped) and reported.
//!
//! Errors outside policies and profiles (an endpoint, a network set, a tier) still fail the
//! whole compilation: without them no program is right.

use crate::compile::{CompileError, compile, policy_owner, profile_owner};
use crate::from_api::{self, ApiResources, ConvertError};
use crate::model::{Action, Direction, Failsafe, Policy, PolicyModel, Rule};
use crate::program::HostProgram;

/// What happened to a policy or profile that could not be enforced as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The rule is not enforced: it never matches (what it would allow falls through to the
    /// next rules, policies and the end of the tier).
    RuleSkipped,
    /// A Deny rule enforced without the match the dataplane cannot enforce: it denies more.
    DenyWithoutMatch,
    /// The whole policy (or profile) denies every packet of the endpoints it applies to.
    ReplacedByDeny,
    /// The policy is enforced nowhere (its selector or tier is broken).
    Dropped,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::RuleSkipped => "rule skipped",
            Outcome::DenyWithoutMatch => "deny rule enforced without this match",
            Outcome::ReplacedByDeny => "rules replaced by deny",
            Outcome::Dropped => "policy not enforced",
        })
    }
}

/// One policy (or profile) that is not enforced exactly as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyIssue {
    /// The resource: `GlobalNetworkPolicy "x"`, `NetworkPolicy "ns/x"`, `Profile "p"`.
    pub owner: String,
    /// The field the issue is about (`spec.ingress[0].http`, `spec.selector`).
    pub field: String,
    /// What was done instead.
    pub outcome: Outcome,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: {} ({})",
            self.owner, self.field, self.outcome, self.reason
        )
    }
}

/// Why nothing could be compiled (an error outside policies and profiles).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IsolateError {
    /// An endpoint, network set or tier does not convert.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The model does not compile for a reason no single policy or profile explains.
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// Converts and compiles for `node` (see the module documentation): the program, and every
/// policy or profile not enforced as written, sorted.
pub fn compile_isolated(
    resources: &ApiResources,
    failsafe: &Failsafe,
    node: Option<&str>,
) -> Result<(HostProgram, Vec<PolicyIssue>), IsolateError> {
    let (mut model, mut issues) = convert_isolated(resources)?;
    model.failsafe = failsafe.clone();
    // Each round takes one policy or profile out of the way, so this ends.
    let rounds = model.policies.len() + model.profiles.len() + 1;
    for _ in 0..rounds {
        let e = match compile(&model, node) {
            Ok(program) => {
                issues.sort();
                issues.dedup();
                return Ok((program, issues));
            }
            Err(e) => e,
        };
        isolate_compile_error(&mut model, &mut issues, e)?;
    }
    Err(IsolateError::Compile(
        compile(&model, node).expect_err("rounds exhausted only while compiling fails"),
    ))
}

/// Takes the policy or profile `e` is about out of the way; `Err` when it is about neither.
fn isolate_compile_error(
    model: &mut PolicyModel,
    issues: &mut Vec<PolicyIssue>,
    e: CompileError,
) -> Result<(), IsolateError> {
    let in_rules = e.field().starts_with("spec.ingress") || e.field().starts_with("spec.egress");
    let issue = |outcome| PolicyIssue {
        owner: e.owner().to_owned(),
        field: e.field().to_owned(),
        outcome,
        reason: e.to_string(),
    };
    if let Some(i) = model
        .policies
        .iter()
        .position(|p| policy_owner(p) == e.owner())
    {
        let p = &mut model.policies[i];
        // A replacement that still fails (it has only Deny rules) is dropped.
        let already = p.ingress.iter().chain(&p.egress).all(is_plain_deny);
        if in_rules && !already {
            deny_all_policy(p);
            issues.push(issue(Outcome::ReplacedByDeny));
        } else {
            model.policies.remove(i);
            issues.push(issue(Outcome::Dropped));
        }
        return Ok(());
    }
    if let Some(p) = model
        .profiles
        .iter_mut()
        .find(|p| profile_owner(&p.name) == e.owner())
        && in_rules
        && !p.ingress.iter().chain(&p.egress).all(is_plain_deny)
    {
        p.ingress = vec![Rule::new(Action::Deny)];
        p.egress = vec![Rule::new(Action::Deny)];
        issues.push(issue(Outcome::ReplacedByDeny));
        return Ok(());
    }
    Err(IsolateError::Compile(e))
}

fn is_plain_deny(r: &Rule) -> bool {
    *r == Rule::new(Action::Deny)
}

/// One Deny per direction the policy applies to (Calico's default types: ingress always,
/// egress when it has egress rules).
fn deny_all_policy(p: &mut Policy) {
    let egress = !p.egress.is_empty() || p.types.contains(&Direction::Egress);
    p.ingress = vec![Rule::new(Action::Deny)];
    p.egress = if egress {
        vec![Rule::new(Action::Deny)]
    } else {
        Vec::new()
    };
}

/// [`from_api::model_from_resources`], with policies and profiles that do not convert replaced
/// or dropped, and every unenforceable rule reported.
fn convert_isolated(r: &ApiResources) -> Result<(PolicyModel, Vec<PolicyIssue>), ConvertError> {
    let mut issues = Vec::new();
    let mut model = from_api::model_without_policies(r)?;
    macro_rules! policies {
        ($list:expr, $convert:path) => {
            for p in &$list {
                let stripped = || {
                    let mut s = p.clone();
                    s.spec.ingress.clear();
                    s.spec.egress.clear();
                    s
                };
                let egress_rules = !p.spec.egress.is_empty();
                if let Some(policy) = isolated(
                    &mut issues,
                    $convert(p),
                    || $convert(&stripped()),
                    |mut policy: Policy| {
                        // Calico's default types counted the egress rules now gone.
                        if policy.types.is_empty() && egress_rules {
                            policy.types = vec![Direction::Ingress, Direction::Egress];
                        }
                        deny_all_policy(&mut policy);
                        policy
                    },
                    policy_owner,
                ) {
                    model.policies.push(policy);
                }
            }
        };
    }
    policies!(r.network_policies, from_api::network_policy);
    policies!(r.global_network_policies, from_api::global_network_policy);
    policies!(r.staged_network_policies, from_api::staged_network_policy);
    policies!(
        r.staged_global_network_policies,
        from_api::staged_global_network_policy
    );
    for p in &r.profiles {
        let stripped = || {
            let mut s = p.clone();
            s.spec.ingress.clear();
            s.spec.egress.clear();
            s
        };
        if let Some(profile) = isolated(
            &mut issues,
            from_api::profile(p),
            || from_api::profile(&stripped()),
            |mut profile: crate::model::Profile| {
                profile.ingress = vec![Rule::new(Action::Deny)];
                profile.egress = vec![Rule::new(Action::Deny)];
                profile
            },
            |p: &crate::model::Profile| profile_owner(&p.name),
        ) {
            model.profiles.push(profile);
        }
    }
    for p in model.policies.iter().filter(|p| !p.staged) {
        rule_issues(&mut issues, &policy_owner(p), &p.ingress, &p.egress);
    }
    for p in &model.profiles {
        rule_issues(&mut issues, &profile_owner(&p.name), &p.ingress, &p.egress);
    }
    Ok((model, issues))
}

/// One policy as [`compile_isolated`] would enforce it, on its own: converted (or replaced
/// by Deny, or dropped), its unenforceable rules reported, and checked against `tiers` the
/// way the compiler prepares it (replaced by Deny when a rule does not compile, dropped when
/// its selector or tier is broken). `convert` converts the resource, `convert_stripped` the
/// resource without rules; `egress_rules` is whether it had egress rules.
pub fn isolate_policy(
    tiers: &[crate::model::Tier],
    convert: Result<Policy, ConvertError>,
    convert_stripped: impl FnOnce() -> Result<Policy, ConvertError>,
    egress_rules: bool,
) -> (Option<Policy>, Vec<PolicyIssue>) {
    let mut issues = Vec::new();
    let Some(mut p) = isolated(
        &mut issues,
        convert,
        convert_stripped,
        |mut policy: Policy| {
            if policy.types.is_empty() && egress_rules {
                policy.types = vec![Direction::Ingress, Direction::Egress];
            }
            deny_all_policy(&mut policy);
            policy
        },
        policy_owner,
    ) else {
        return (None, issues);
    };
    if !p.staged {
        rule_issues(&mut issues, &policy_owner(&p), &p.ingress, &p.egress);
    }
    // At most two rounds: the rules replaced by Deny, then the policy dropped.
    for _ in 0..2 {
        let Err(e) = crate::compile::check_policy(tiers, &p) else {
            return (Some(p), issues);
        };
        let in_rules =
            e.field().starts_with("spec.ingress") || e.field().starts_with("spec.egress");
        let issue = |outcome| PolicyIssue {
            owner: e.owner().to_owned(),
            field: e.field().to_owned(),
            outcome,
            reason: e.to_string(),
        };
        let already = p.ingress.iter().chain(&p.egress).all(is_plain_deny);
        if in_rules && !already {
            deny_all_policy(&mut p);
            issues.push(issue(Outcome::ReplacedByDeny));
        } else {
            issues.push(issue(Outcome::Dropped));
            return (None, issues);
        }
    }
    (None, issues)
}

/// One profile as [`compile_isolated`] would enforce it, on its own (see [`isolate_policy`]).
/// `Err` when it cannot be enforced even as Deny (then nothing can be compiled).
pub fn isolate_profile(
    p: &calico_api::kinds::Profile,
) -> Result<(Option<crate::model::Profile>, Vec<PolicyIssue>), CompileError> {
    let mut issues = Vec::new();
    let stripped = || {
        let mut s = p.clone();
        s.spec.ingress.clear();
        s.spec.egress.clear();
        s
    };
    let deny = |mut profile: crate::model::Profile| {
        profile.ingress = vec![Rule::new(Action::Deny)];
        profile.egress = vec![Rule::new(Action::Deny)];
        profile
    };
    let Some(mut profile) = isolated(
        &mut issues,
        from_api::profile(p),
        || from_api::profile(&stripped()),
        deny,
        |p: &crate::model::Profile| profile_owner(&p.name),
    ) else {
        return Ok((None, issues));
    };
    rule_issues(
        &mut issues,
        &profile_owner(&profile.name),
        &profile.ingress,
        &profile.egress,
    );
    if let Err(e) = crate::compile::check_profile(&profile) {
        let in_rules =
            e.field().starts_with("spec.ingress") || e.field().starts_with("spec.egress");
        if !in_rules
            || profile
                .ingress
                .iter()
                .chain(&profile.egress)
                .all(is_plain_deny)
        {
            return Err(e);
        }
        issues.push(PolicyIssue {
            owner: e.owner().to_owned(),
            field: e.field().to_owned(),
            outcome: Outcome::ReplacedByDeny,
            reason: e.to_string(),
        });
        profile = deny(profile);
    }
    Ok((Some(profile), issues))
}

/// The converted resource, or its replacement (the resource without rules, then `deny`),
/// or nothing; the issue recorded.
fn isolated<T>(
    issues: &mut Vec<PolicyIssue>,
    converted: Result<T, ConvertError>,
    without_rules: impl FnOnce() -> Result<T, ConvertError>,
    deny: impl FnOnce(T) -> T,
    owner: impl Fn(&T) -> String,
) -> Option<T> {
    let e = match converted {
        Ok(t) => return Some(t),
        Err(e) => e,
    };
    let (name, field) = match &e {
        ConvertError::InvalidField {
            kind, name, field, ..
        } => (format!("{kind} {name:?}"), field.clone()),
        ConvertError::MissingName { kind } => (kind.to_string(), "metadata.name".into()),
    };
    let in_rules = field.starts_with("spec.ingress") || field.starts_with("spec.egress");
    match without_rules() {
        Ok(t) if in_rules => {
            let t = deny(t);
            issues.push(PolicyIssue {
                owner: owner(&t),
                field,
                outcome: Outcome::ReplacedByDeny,
                reason: e.to_string(),
            });
            Some(t)
        }
        _ => {
            issues.push(PolicyIssue {
                owner: name,
                field,
                outcome: Outcome::Dropped,
                reason: e.to_string(),
            });
            None
        }
    }
}

fn rule_issues(issues: &mut Vec<PolicyIssue>, owner: &str, ingress: &[Rule], egress: &[Rule]) {
    for r in ingress.iter().chain(egress) {
        if let Some(u) = &r.unenforced {
            issues.push(PolicyIssue {
                owner: owner.to_owned(),
                field: u.field.clone(),
                outcome: if r.action == Action::Deny {
                    Outcome::DenyWithoutMatch
                } else {
                    Outcome::RuleSkipped
                },
                reason: u.reason.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::RuleListId;
    use serde_json::json;

    fn res(policies: Vec<serde_json::Value>) -> ApiResources {
        ApiResources {
            global_network_policies: policies
                .into_iter()
                .map(|p| serde_json::from_value(p).unwrap())
                .collect(),
            profiles: vec![
                serde_json::from_value(json!({"metadata": {"name": "open"},
                    "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}}))
                .unwrap(),
            ],
            workload_endpoints: vec![
                serde_json::from_value(json!({
                    "metadata": {"name": "w1", "namespace": "default", "labels": {"app": "a"}},
                    "spec": {"node": "n1", "interfaceName": "caliw1",
                             "ipNetworks": ["10.0.0.1/32"], "profiles": ["open"]}}))
                .unwrap(),
            ],
            ..Default::default()
        }
    }

    fn gnp(name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": name}, "spec": spec})
    }

    /// (index, action) of each compiled rule of a policy's list.
    fn rules(p: &HostProgram, name: &str, d: Direction) -> Vec<(usize, Action)> {
        p.rules(&RuleListId::Policy {
            name: name.into(),
            staged: false,
            direction: d,
        })
        .iter()
        .map(|r| (r.index, r.action))
        .collect()
    }

    fn run(r: &ApiResources) -> (HostProgram, Vec<PolicyIssue>) {
        compile_isolated(r, &Failsafe::default(), Some("n1")).unwrap()
    }

    #[test]
    fn http_allow_is_skipped_services_deny_denies_without_the_match() {
        let (p, issues) = run(&res(vec![
            gnp(
                "alp",
                json!({"selector": "app == 'a'", "ingress": [
                {"action": "Allow", "http": {"methods": ["GET"]}},
                {"action": "Allow", "protocol": "TCP", "destination": {"ports": [22]}}]}),
            ),
            gnp(
                "svc",
                json!({"selector": "app == 'a'", "egress": [
                {"action": "Deny", "destination": {"services": {"name": "db", "namespace": "x"}}},
                {"action": "Allow", "destination": {"services": {"name": "web", "namespace": "x"}}},
                {"action": "Allow"}]}),
            ),
        ]));
        // Rule indices stay those of the resource (counters and `calicoctl` name them).
        assert_eq!(
            rules(&p, "alp", Direction::Ingress),
            vec![(1, Action::Allow)]
        );
        assert_eq!(
            rules(&p, "svc", Direction::Egress),
            vec![(0, Action::Deny), (2, Action::Allow)]
        );
        let deny = &p.rules(&RuleListId::Policy {
            name: "svc".into(),
            staged: false,
            direction: Direction::Egress,
        })[0];
        assert_eq!(
            deny.matches.destination,
            Default::default(),
            "denies every destination"
        );
        let got: Vec<(&str, &str, Outcome)> = issues
            .iter()
            .map(|i| (i.owner.as_str(), i.field.as_str(), i.outcome.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "GlobalNetworkPolicy \"alp\"",
                    "spec.ingress[0].http",
                    Outcome::RuleSkipped
                ),
                (
                    "GlobalNetworkPolicy \"svc\"",
                    "spec.egress[0].destination.services",
                    Outcome::DenyWithoutMatch
                ),
                (
                    "GlobalNetworkPolicy \"svc\"",
                    "spec.egress[1].destination.services",
                    Outcome::RuleSkipped
                ),
            ]
        );
    }

    #[test]
    fn a_bad_rule_replaces_the_policy_by_deny_and_the_others_stay() {
        let good = gnp(
            "good",
            json!({"selector": "app == 'a'", "order": 1,
            "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}]}),
        );
        for bad in [
            // Does not convert: a bad CIDR.
            gnp(
                "bad",
                json!({"selector": "all()", "order": 2,
                "ingress": [{"action": "Allow", "source": {"nets": ["nope"]}}],
                "egress": [{"action": "Allow"}]}),
            ),
            // Does not compile: ports without a protocol.
            gnp(
                "bad",
                json!({"selector": "all()", "order": 2,
                "ingress": [{"action": "Allow", "destination": {"ports": [80]}}],
                "egress": [{"action": "Allow"}]}),
            ),
        ] {
            let (p, issues) = run(&res(vec![good.clone(), bad]));
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!(issues[0].owner, "GlobalNetworkPolicy \"bad\"");
            assert!(issues[0].field.starts_with("spec.ingress[0]"), "{issues:?}");
            assert_eq!(issues[0].outcome, Outcome::ReplacedByDeny);
            assert_eq!(
                rules(&p, "good", Direction::Ingress),
                vec![(0, Action::Allow)]
            );
            // Both directions it applied to (egress by its egress rules) deny everything.
            assert_eq!(
                rules(&p, "bad", Direction::Ingress),
                vec![(0, Action::Deny)]
            );
            assert_eq!(rules(&p, "bad", Direction::Egress), vec![(0, Action::Deny)]);
        }
    }

    #[test]
    fn a_broken_selector_or_tier_drops_the_policy_and_the_others_stay() {
        for bad in [
            gnp(
                "bad",
                json!({"selector": "has(", "ingress": [{"action": "Allow"}]}),
            ),
            gnp(
                "bad",
                json!({"selector": "all()", "tier": "nope", "ingress": [{"action": "Allow"}]}),
            ),
        ] {
            let (p, issues) = run(&res(vec![
                gnp(
                    "good",
                    json!({"selector": "all()", "ingress": [{"action": "Deny"}]}),
                ),
                bad,
            ]));
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!(issues[0].outcome, Outcome::Dropped);
            assert!(
                issues[0].field == "spec.selector" || issues[0].field == "spec.tier",
                "{issues:?}"
            );
            assert!(rules(&p, "bad", Direction::Ingress).is_empty());
            assert_eq!(
                rules(&p, "good", Direction::Ingress),
                vec![(0, Action::Deny)]
            );
        }
    }

    #[test]
    fn a_bad_profile_denies_and_a_bad_endpoint_still_fails() {
        let mut r = res(vec![]);
        r.profiles[0].spec.ingress[0].source =
            Some(serde_json::from_value(json!({"selector": "has("})).unwrap());
        let (p, issues) = run(&r);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].owner, "Profile \"open\"");
        assert_eq!(issues[0].outcome, Outcome::ReplacedByDeny);
        let list = p.rules(&RuleListId::Profile {
            name: "open".into(),
            direction: Direction::Egress,
        });
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].action, Action::Deny);

        let mut r = res(vec![]);
        r.workload_endpoints[0].spec.ip_networks = vec!["nope".into()];
        let e = compile_isolated(&r, &Failsafe::default(), Some("n1")).unwrap_err();
        assert!(e.to_string().contains("spec.ipNetworks[0]"), "{e}");
    }
}
