//! Turning user documents into checked resources, and the checks that need more than one
//! resource (or the datastore).
//!
//! Per-document checks run in three layers:
//! 1. the envelope (`apiVersion`, `kind`, `metadata.name`, `metadata.namespace`,
//!    `metadata.resourceVersion`, unknown top-level fields), here;
//! 2. the kind's own schema, defaults and rules, through a [`ResourceModel`] (the typed
//!    model of `calico-api`);
//! 3. cross checks over the whole input plus what the datastore already holds
//!    ([`cross_check`]): duplicate documents, overlapping IP pools, changed pool CIDRs.
//!
//! Every problem is collected (nothing stops at the first) so the user sees all of them.

use std::collections::HashMap;
use std::fmt;

use calico_api::API_VERSION;
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::document::{Origin, RawResource};
use crate::kinds::{self, KindInfo};
use crate::objects::{ResourceKey, Stored};

/// One problem with one field of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    /// Dotted path from the document root, e.g. `spec.blockSize` or `spec.ingress[0].action`.
    pub path: String,
    pub reason: String,
}

impl FieldIssue {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldIssue {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A problem located in the user's input: `FILE: document N (Kind "name"): path: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub issue: FieldIssue,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, " ({k} {n:?})")?,
            (Some(k), None) => write!(f, " ({k})")?,
            (None, Some(n)) => write!(f, " ({n:?})")?,
            (None, None) => {}
        }
        write!(f, ": {}: {}", self.issue.path, self.issue.reason)
    }
}

/// The kind-specific part of checking a resource: strict decoding as the typed kind,
/// Calico's defaults, and Calico's validation rules.
pub trait ResourceModel: Send + Sync {
    /// Returns the resource with defaults applied, or every problem found.
    fn prepare(&self, kind: &'static KindInfo, value: Value) -> Result<Value, Vec<FieldIssue>>;
}

/// A model that checks nothing beyond the envelope: used only where the typed model is not
/// wanted (unit tests of the CLI plumbing).
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvelopeOnly;

impl ResourceModel for EnvelopeOnly {
    fn prepare(&self, _kind: &'static KindInfo, value: Value) -> Result<Value, Vec<FieldIssue>> {
        Ok(value)
    }
}

/// A resource that passed the per-document checks.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub origin: Origin,
    pub kind: &'static KindInfo,
    pub key: ResourceKey,
    /// Defaulted and validated; `metadata.namespace` filled in for namespaced kinds.
    pub value: Value,
    /// `metadata.resourceVersion` as given by the user, if any.
    pub given_revision: Option<i64>,
}

/// How `-n` applies to the documents.
#[derive(Debug, Clone, Default)]
pub struct NamespaceFlags {
    pub namespace: Option<String>,
    pub all_namespaces: bool,
}

/// What to check: `Full` for writes and `validate`; `Identity` for delete, where only the
/// identifying fields matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Full,
    Identity,
}

const TOP_LEVEL_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Checks every document; returns the prepared resources only if all of them are valid.
pub fn prepare_all(
    raw: Vec<RawResource>,
    ns: &NamespaceFlags,
    model: &dyn ResourceModel,
    depth: Depth,
) -> Result<Vec<Prepared>, Vec<Problem>> {
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    for r in raw {
        match prepare_one(r, ns, model, depth) {
            Ok(p) => ok.push(p),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(ok)
    } else {
        Err(problems)
    }
}

fn prepare_one(
    raw: RawResource,
    ns: &NamespaceFlags,
    model: &dyn ResourceModel,
    depth: Depth,
) -> Result<Prepared, Vec<Problem>> {
    let RawResource { origin, mut value } = raw;
    let kind_str = value
        .get("kind")
        .and_then(Value::as_str)
        .map(str::to_string);
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let problem = |issue: FieldIssue| Problem {
        origin: origin.clone(),
        kind: kind_str.clone(),
        name: name.clone(),
        issue,
    };

    let Some(obj) = value.as_object_mut() else {
        return Err(vec![problem(FieldIssue::new(
            "(document)",
            "expected a resource (a mapping with apiVersion, kind, metadata and spec)",
        ))]);
    };
    let mut issues = envelope_issues(obj);
    let kind = match obj.get("kind") {
        None | Some(Value::Null) => {
            issues.push(FieldIssue::new("kind", "required"));
            None
        }
        Some(Value::String(k)) => match kinds::by_kind(k) {
            Some(info) => Some(info),
            None => {
                issues.push(FieldIssue::new(
                    "kind",
                    format!("unknown resource kind {k:?} (resource kinds are case-sensitive, e.g. IPPool)"),
                ));
                None
            }
        },
        Some(other) => {
            issues.push(FieldIssue::new(
                "kind",
                format!("must be a string, found {other}"),
            ));
            None
        }
    };
    let Some(kind) = kind else {
        return Err(issues.into_iter().map(problem).collect());
    };

    // Namespace handling as calicoctl does it.
    let doc_ns = obj
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let namespace = if kind.namespaced {
        match (&doc_ns, &ns.namespace) {
            (Some(d), Some(c)) if d != c => {
                issues.push(FieldIssue::new(
                    "metadata.namespace",
                    format!("resource namespace does not match client namespace. {d} != {c}"),
                ));
                Some(d.clone())
            }
            (Some(d), _) => Some(d.clone()),
            (None, Some(c)) => Some(c.clone()),
            (None, None) => Some("default".to_string()),
        }
    } else {
        if doc_ns.is_some() {
            issues.push(FieldIssue::new(
                "metadata.namespace",
                format!(
                    "namespace should not be specified for a non-namespaced resource. {} is not a namespaced resource",
                    kind.kind
                ),
            ));
        }
        None
    };
    if let (Some(n), Some(meta)) = (
        &namespace,
        obj.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        meta.insert("namespace".into(), Value::String(n.clone()));
    }
    if let Some(n) = &namespace {
        check_dns_label("metadata.namespace", n, &mut issues);
    }

    let given_revision = match obj.get("metadata").and_then(|m| m.get("resourceVersion")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => match s.parse::<i64>() {
            Ok(r) if r > 0 => Some(r),
            _ => {
                issues.push(FieldIssue::new(
                    "metadata.resourceVersion",
                    format!("{s:?} is not a resource version this datastore issued"),
                ));
                None
            }
        },
        Some(other) => {
            issues.push(FieldIssue::new(
                "metadata.resourceVersion",
                format!("must be a string, found {other}"),
            ));
            None
        }
    };

    let key = ResourceKey::new(kind, namespace.as_deref(), name.as_deref().unwrap_or(""));
    let value = if depth == Depth::Full && issues.is_empty() {
        match model.prepare(kind, value) {
            Ok(v) => v,
            Err(model_issues) => {
                for i in model_issues {
                    if !issues.contains(&i) {
                        issues.push(i);
                    }
                }
                Value::Null
            }
        }
    } else {
        value
    };
    if issues.is_empty() {
        Ok(Prepared {
            origin,
            kind,
            key,
            value,
            given_revision,
        })
    } else {
        Err(issues.into_iter().map(problem).collect())
    }
}

fn envelope_issues(obj: &Map<String, Value>) -> Vec<FieldIssue> {
    let mut issues = Vec::new();
    match obj.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        None | Some(Value::Null) => issues.push(FieldIssue::new(
            "apiVersion",
            format!("required ({API_VERSION})"),
        )),
        Some(other) => issues.push(FieldIssue::new(
            "apiVersion",
            format!("unsupported API version {other}; expected {API_VERSION}"),
        )),
    }
    for key in obj.keys() {
        if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
            issues.push(FieldIssue::new(
                key.clone(),
                "field in document is not recognized or is in the wrong location",
            ));
        }
    }
    match obj.get("metadata") {
        Some(Value::Object(meta)) => match meta.get("name") {
            None | Some(Value::Null) => issues.push(FieldIssue::new("metadata.name", "required")),
            Some(Value::String(n)) => check_resource_name(n, &mut issues),
            Some(other) => issues.push(FieldIssue::new(
                "metadata.name",
                format!("must be a string, found {other}"),
            )),
        },
        None | Some(Value::Null) => issues.push(FieldIssue::new("metadata.name", "required")),
        Some(_) => issues.push(FieldIssue::new("metadata", "must be a mapping")),
    }
    issues
}

/// Calico resource names: a DNS subdomain (lower-case alphanumerics, `-` and `.`, at most
/// 253 characters, each label starting and ending alphanumeric).
fn check_resource_name(name: &str, issues: &mut Vec<FieldIssue>) {
    if name.is_empty() {
        issues.push(FieldIssue::new("metadata.name", "must not be empty"));
        return;
    }
    if name.len() > 253 {
        issues.push(FieldIssue::new(
            "metadata.name",
            format!("{} characters is longer than the limit of 253", name.len()),
        ));
        return;
    }
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if !ok {
        issues.push(FieldIssue::new(
            "metadata.name",
            format!(
                "{name:?} is not a valid resource name: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
            ),
        ));
    }
}

fn check_dns_label(path: &str, value: &str, issues: &mut Vec<FieldIssue>) {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        issues.push(FieldIssue::new(
            path,
            format!("{value:?} is not a valid namespace name (a DNS label)"),
        ));
    }
}

/// Checks across the whole input and the datastore's current objects:
/// - the same resource twice in the input;
/// - an IP pool CIDR that overlaps another pool (in the input, or stored under another name);
/// - an existing pool whose CIDR would change (Calico refuses it; IPAM blocks depend on it);
/// - a policy in a tier that neither exists nor is being created (tier `default` always
///   exists).
///
/// `existing` maps each input key to its stored object; `stored_pools` and `stored_tiers`
/// are every pool and tier in the datastore.
pub fn cross_check(
    input: &[Prepared],
    existing: &HashMap<ResourceKey, Stored>,
    stored_pools: &[Stored],
    stored_tiers: &[Stored],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let problem = |p: &Prepared, issue: FieldIssue| Problem {
        origin: p.origin.clone(),
        kind: Some(p.kind.kind.to_string()),
        name: Some(p.key.name.clone()),
        issue,
    };

    let mut first_seen: HashMap<&ResourceKey, &Origin> = HashMap::new();
    for p in input {
        if let Some(first) = first_seen.get(&p.key) {
            problems.push(problem(
                p,
                FieldIssue::new(
                    "metadata.name",
                    format!("{} is also defined in {first}", p.key.identifier()),
                ),
            ));
        } else {
            first_seen.insert(&p.key, &p.origin);
        }
    }

    // Pools: the final set is the stored pools, with the input's pools replacing those of
    // the same name, in input order (so an overlap is reported on the later document).
    let mut pools: Vec<(String, IpNet, Option<&Prepared>)> = Vec::new();
    for s in stored_pools {
        if let (Some(name), Some(cidr)) = (
            s.value.pointer("/metadata/name").and_then(Value::as_str),
            pool_cidr(&s.value),
        ) {
            pools.push((name.to_string(), cidr, None));
        }
    }
    for p in input.iter().filter(|p| p.kind.kind == "IPPool") {
        let Some(cidr) = pool_cidr(&p.value) else {
            problems.push(problem(
                p,
                FieldIssue::new("spec.cidr", "required: a valid IPv4 or IPv6 CIDR"),
            ));
            continue;
        };
        if let Some(old) = existing.get(&p.key).and_then(|s| pool_cidr(&s.value))
            && old != cidr
        {
            problems.push(problem(
                p,
                FieldIssue::new(
                    "spec.cidr",
                    format!("cannot change the CIDR of an existing IP pool (from {old} to {cidr}); create a new pool instead"),
                ),
            ));
        }
        pools.retain(|(name, _, _)| name != &p.key.name);
        pools.push((p.key.name.clone(), cidr, Some(p)));
    }
    for (i, (name_a, a, _)) in pools.iter().enumerate() {
        for (name_b, b, pb) in pools.iter().skip(i + 1) {
            if !(a.contains(&b.network()) || b.contains(&a.network())) {
                continue;
            }
            // Input pools come after stored ones, so the later entry is always an input
            // document; two stored pools that already overlap are not this command's problem.
            if let Some(p) = pb {
                problems.push(problem(
                    p,
                    FieldIssue::new(
                        "spec.cidr",
                        format!(
                            "IPPool({name_b}) CIDR {b} overlaps with IPPool({name_a}) CIDR {a}"
                        ),
                    ),
                ));
            }
        }
    }

    let mut tiers: Vec<String> = stored_tiers
        .iter()
        .filter_map(|s| s.value.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    tiers.extend(
        input
            .iter()
            .filter(|p| p.kind.kind == "Tier")
            .map(|p| p.key.name.clone()),
    );
    for p in input.iter().filter(|p| {
        matches!(
            p.kind.kind,
            "NetworkPolicy"
                | "GlobalNetworkPolicy"
                | "StagedNetworkPolicy"
                | "StagedGlobalNetworkPolicy"
        )
    }) {
        let tier = p
            .value
            .pointer("/spec/tier")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .unwrap_or("default");
        if tier != "default" && !tiers.iter().any(|t| t == tier) {
            problems.push(problem(
                p,
                FieldIssue::new("spec.tier", format!("tier {tier:?} does not exist")),
            ));
        }
    }
    problems
}

fn pool_cidr(v: &Value) -> Option<IpNet> {
    v.pointer("/spec/cidr")
        .and_then(Value::as_str)
        .and_then(|c| c.parse::<IpNet>().ok())
        .map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::parse_text;
    use serde_json::json;

    fn prep(text: &str) -> Result<Vec<Prepared>, Vec<Problem>> {
        let raw = parse_text("t.yaml", text).unwrap();
        prepare_all(raw, &NamespaceFlags::default(), &EnvelopeOnly, Depth::Full)
    }

    #[test]
    fn every_envelope_problem_is_reported_with_its_location() {
        let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: Bad_Name}\nspec: {}\n---\napiVersion: v1\nkind: Nope\nmetadata: {name: x}\n";
        let problems = prep(text).unwrap_err();
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            lines[0].starts_with("t.yaml: document 1 (IPPool \"Bad_Name\"): metadata.name: "),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("t.yaml: document 2 (Nope \"x\"): apiVersion: ")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("t.yaml: document 2 (Nope \"x\"): kind: unknown")),
            "{lines:?}"
        );
    }

    #[test]
    fn namespaced_kinds_default_to_the_default_namespace_and_others_refuse_one() {
        let ok = prep("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n").unwrap();
        assert_eq!(ok[0].key.namespace.as_deref(), Some("default"));
        assert_eq!(ok[0].value["metadata"]["namespace"], "default");
        let err = prep("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p, namespace: x}\nspec: {}\n").unwrap_err();
        assert_eq!(err[0].issue.path, "metadata.namespace");
    }

    fn pool(name: &str, cidr: &str) -> Prepared {
        let kind = kinds::by_kind("IPPool").unwrap();
        Prepared {
            origin: Origin {
                file: "p.yaml".into(),
                document: 1,
                item: None,
            },
            kind,
            key: ResourceKey::new(kind, None, name),
            value: json!({"metadata": {"name": name}, "spec": {"cidr": cidr}}),
            given_revision: None,
        }
    }

    fn stored(name: &str, cidr: &str) -> Stored {
        Stored {
            value: json!({"metadata": {"name": name}, "spec": {"cidr": cidr}}),
            revision: 5,
        }
    }

    #[test]
    fn overlapping_pools_are_found_in_the_input_and_against_the_datastore() {
        let input = [pool("a", "10.0.0.0/16"), pool("b", "10.0.1.0/24")];
        let problems = cross_check(&input, &HashMap::new(), &[], &[]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].issue.reason.contains("overlaps"),
            "{:?}",
            problems[0]
        );

        let input = [pool("c", "192.168.0.0/24")];
        let problems = cross_check(
            &input,
            &HashMap::new(),
            &[stored("old", "192.168.0.0/16")],
            &[],
        );
        assert_eq!(problems[0].issue.path, "spec.cidr");

        // Re-applying a stored pool under its own name is not an overlap.
        let problems = cross_check(
            &input,
            &HashMap::new(),
            &[stored("c", "192.168.0.0/24")],
            &[],
        );
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn changing_a_stored_pool_cidr_is_refused() {
        let input = [pool("a", "10.1.0.0/16")];
        let mut existing = HashMap::new();
        existing.insert(input[0].key.clone(), stored("a", "10.0.0.0/16"));
        let problems = cross_check(&input, &existing, &[stored("a", "10.0.0.0/16")], &[]);
        assert!(
            problems
                .iter()
                .any(|p| p.issue.reason.contains("cannot change")),
            "{problems:?}"
        );
    }

    #[test]
    fn duplicate_documents_are_reported_on_the_second() {
        let mut second = pool("a", "10.0.0.0/16");
        second.origin.document = 2;
        let input = [pool("a", "10.0.0.0/16"), second];
        let problems = cross_check(&input, &HashMap::new(), &[], &[]);
        assert!(
            problems
                .iter()
                .any(|p| p.origin.document == 2 && p.issue.path == "metadata.name")
        );
    }
}
