//! The policy program of one node, kept up to date change by change.
//!
//! [`Incremental`] holds a live [`Compiler`] (prepared policies, compiled rule lists, the set
//! index), this node's endpoints converted, and the [`HostProgram`] last computed. It keeps no
//! copy of the resources: the caller owns them (the agent's store) and builds afresh from them
//! when a change asks for it ([`Rebuild`]). Each change does the work it affects, in the spirit
//! of Felix's calculation graph (label index → active rules → IP sets), on this crate's own
//! pieces:
//! - a policy added, edited or deleted is isolated on its own
//!   ([`crate::isolate::isolate_policy`]), re-prepared, and only the local endpoints its old or
//!   new selector picks get their chains recompiled; its rule lists are compiled again, every
//!   other rule list is reused; sets no rule list uses any more leave the set index;
//! - an endpoint or network set changes only the sets whose selectors it enters or leaves
//!   ([`crate::sets::SetIndex`], indexed by label key); a local endpoint also gets its own
//!   chains recompiled. Of another node's endpoint nothing is kept here: the set index holds
//!   what sets need (labels, addresses, named ports) under the caller's key
//!   ([`SourceId::Key`]), so a change or a deletion finds it by that key alone;
//! - tiers, profiles (their labels are inherited by endpoints) and the failsafe ports are rare
//!   and change every chain: the caller rebuilds ([`Incremental::build`]).
//!
//! The result must always equal [`crate::isolate::compile_isolated`] of the same resources
//! (the full recompute, the oracle); a property test in calico-node checks exactly that over
//! random sequences of changes. A resource outside policies and profiles that does not convert
//! (an endpoint, a network set, a tier) fails the full compile; here it makes the state
//! broken, and every later change asks for a rebuild until it compiles.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use calico_api::kinds as api;

use crate::compile::Compiler;
use crate::from_api;
use crate::isolate::{IsolateError, PolicyIssue, isolate_policy, isolate_profile};
use crate::model::{Direction, Failsafe, HostEndpoint, Policy, PolicyModel, WorkloadEndpoint};
use crate::program::{
    EndpointId, HostProgram, IpSet, RuleListId, for_each_rule_list, for_each_set,
};
use crate::sets::{SetId, SetSource, SourceId};

/// A policy resource of any of the four kinds.
#[derive(Debug, Clone, Copy)]
pub enum ApiPolicy<'a> {
    Network(&'a api::NetworkPolicy),
    Global(&'a api::GlobalNetworkPolicy),
    StagedNetwork(&'a api::StagedNetworkPolicy),
    StagedGlobal(&'a api::StagedGlobalNetworkPolicy),
}

macro_rules! isolate_kind {
    ($tiers:expr, $p:expr, $convert:path) => {{
        let p = $p;
        let stripped = || {
            let mut s = p.clone();
            s.spec.ingress.clear();
            s.spec.egress.clear();
            $convert(&s)
        };
        isolate_policy($tiers, $convert(p), stripped, !p.spec.egress.is_empty())
    }};
}

impl ApiPolicy<'_> {
    fn isolate(&self, tiers: &[crate::model::Tier]) -> (Option<Policy>, Vec<PolicyIssue>) {
        match *self {
            ApiPolicy::Network(p) => isolate_kind!(tiers, p, from_api::network_policy),
            ApiPolicy::Global(p) => isolate_kind!(tiers, p, from_api::global_network_policy),
            ApiPolicy::StagedNetwork(p) => {
                isolate_kind!(tiers, p, from_api::staged_network_policy)
            }
            ApiPolicy::StagedGlobal(p) => {
                isolate_kind!(tiers, p, from_api::staged_global_network_policy)
            }
        }
    }
}

/// An endpoint or network set resource.
#[derive(Debug, Clone, Copy)]
pub enum ApiSource<'a> {
    Workload(&'a api::WorkloadEndpoint),
    Host(&'a api::HostEndpoint),
    NetworkSet(&'a api::NetworkSet),
    GlobalNetworkSet(&'a api::GlobalNetworkSet),
}

impl ApiSource<'_> {
    fn convert(&self) -> Result<Source, from_api::ConvertError> {
        Ok(match *self {
            ApiSource::Workload(w) => Source::Workload(from_api::workload_endpoint(w)?),
            ApiSource::Host(h) => Source::Host(from_api::host_endpoint(h)?),
            ApiSource::NetworkSet(s) => Source::NetworkSet(from_api::network_set(s)?),
            ApiSource::GlobalNetworkSet(s) => Source::NetworkSet(from_api::global_network_set(s)?),
        })
    }
}

/// Every resource the program is built from, borrowed from the caller; policies and sources
/// by the caller's key (any unique text per object, e.g. its etcd key), which later changes
/// use too.
#[derive(Debug, Clone, Default)]
pub struct KeyedResources<'a> {
    pub tiers: Vec<&'a api::Tier>,
    pub profiles: Vec<&'a api::Profile>,
    pub policies: Vec<(&'a str, ApiPolicy<'a>)>,
    pub sources: Vec<(&'a str, ApiSource<'a>)>,
}

/// A change the incremental paths cannot take (a resource that does not convert, a state
/// broken by an earlier one, a compile error): build afresh from every resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuild;

/// An endpoint or network set, converted.
#[derive(Debug, Clone)]
enum Source {
    Workload(WorkloadEndpoint),
    Host(HostEndpoint),
    NetworkSet(crate::model::NetworkSet),
}

/// What one policy (by the caller's key) is enforced as: its name and whether it is staged
/// when it is enforced at all (the compiler holds the policy itself: no second copy here),
/// and what is not enforced as written.
#[derive(Debug, Clone)]
struct Isolated {
    id: Option<(String, bool)>,
    issues: Vec<PolicyIssue>,
}

impl Isolated {
    fn of(policy: Option<&Policy>, issues: Vec<PolicyIssue>) -> Isolated {
        Isolated {
            id: policy.map(|p| (p.qualified_name(), p.staged)),
            issues,
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Incremental {
    node: Option<String>,
    failsafe: Failsafe,
    state: Result<State, IsolateError>,
}

/// The compiled state (only while everything outside policies converts).
#[derive(Debug, Clone)]
struct State {
    tiers: Vec<crate::model::Tier>,
    profile_issues: Vec<PolicyIssue>,
    policies: BTreeMap<String, Isolated>,
    /// This node's endpoints, whole (their chains are compiled from them), by the caller's
    /// key. Every source, local or not, is in the set index under [`SourceId::Key`].
    local: BTreeMap<String, Source>,
    compiler: Compiler,
    program: HostProgram,
    issues: Vec<PolicyIssue>,
}

/// Builds an [`Incremental`]: from the resources a caller holds as they are, then source by
/// source for those it keeps in another form (each converted and indexed as it comes, so
/// nothing needs to hold every source at once).
pub struct Builder {
    node: Option<String>,
    failsafe: Failsafe,
    state: Result<State, IsolateError>,
}

impl Builder {
    /// Adds an endpoint or network set under the caller's key.
    pub fn source(&mut self, key: &str, source: ApiSource<'_>) {
        let Ok(state) = self.state.as_mut() else {
            return;
        };
        match source.convert() {
            Ok(s) => state.add_source(key, s, self.node.as_deref()),
            Err(e) => self.state = Err(e.into()),
        }
    }

    /// Compiles this node's endpoints.
    pub fn finish(self) -> Incremental {
        let state = self.state.map(|mut state| {
            let (mut workloads, mut hosts): (Vec<&WorkloadEndpoint>, Vec<&HostEndpoint>) =
                (vec![], vec![]);
            for s in state.local.values() {
                match s {
                    Source::Workload(w) => workloads.push(w),
                    Source::Host(h) => hosts.push(h),
                    Source::NetworkSet(_) => {}
                }
            }
            let program = state.compiler.host_program_for(&workloads, &hosts);
            state.program = program;
            state.collect_issues();
            state
        });
        Incremental {
            node: self.node,
            failsafe: self.failsafe,
            state,
        }
    }
}

impl Incremental {
    /// Everything compiled from `resources` for `node` (every endpoint when `None`), with
    /// `failsafe`'s ports. Later changes use the same keys.
    pub fn build(resources: KeyedResources<'_>, failsafe: &Failsafe, node: Option<&str>) -> Self {
        Incremental::builder(resources, failsafe, node).finish()
    }

    /// [`Incremental::build`] with more sources to add ([`Builder::source`]) before it is
    /// finished.
    pub fn builder(
        resources: KeyedResources<'_>,
        failsafe: &Failsafe,
        node: Option<&str>,
    ) -> Builder {
        let mut b = Builder {
            state: start(&resources, failsafe),
            node: node.map(str::to_string),
            failsafe: failsafe.clone(),
        };
        for (k, s) in resources.sources {
            b.source(k, s);
        }
        b
    }

    /// The failsafe ports the program was built with (other ones need a [`Incremental::build`]).
    pub fn failsafe(&self) -> &Failsafe {
        &self.failsafe
    }

    /// The program and the policies not enforced as written, or why nothing compiles.
    pub fn program(&self) -> Result<(&HostProgram, &[PolicyIssue]), &IsolateError> {
        self.state
            .as_ref()
            .map(|s| (&s.program, s.issues.as_slice()))
    }

    /// A policy added or changed (`Some`), or deleted (`None`).
    pub fn set_policy(&mut self, key: &str, policy: Option<ApiPolicy<'_>>) -> Result<(), Rebuild> {
        let Ok(state) = self.state.as_mut() else {
            return Err(Rebuild);
        };
        let isolated = policy.map(|p| p.isolate(&state.tiers));
        state.update_policy(key, isolated).map_err(|_| Rebuild)
    }

    /// An endpoint or network set added or changed (`Some`), or deleted (`None`).
    pub fn set_source(&mut self, key: &str, source: Option<ApiSource<'_>>) -> Result<(), Rebuild> {
        let Ok(state) = self.state.as_mut() else {
            return Err(Rebuild);
        };
        let converted = match source.as_ref().map(ApiSource::convert) {
            None => None,
            Some(Ok(s)) => Some(s),
            // Nothing compiles while it does not convert (as in the full compile).
            Some(Err(_)) => return Err(Rebuild),
        };
        state.update_source(key, converted, self.node.as_deref());
        Ok(())
    }
}

/// Everything but the sources: tiers, policies, profiles, a compiler with an empty set index.
fn start(r: &KeyedResources<'_>, failsafe: &Failsafe) -> Result<State, IsolateError> {
    let tiers_api: Vec<api::Tier> = r.tiers.iter().map(|t| (*t).clone()).collect();
    let tiers = from_api::tiers(&tiers_api)?;
    let mut policies = BTreeMap::new();
    let mut enforced = Vec::new();
    for (k, p) in &r.policies {
        let (policy, issues) = p.isolate(&tiers);
        policies.insert(k.to_string(), Isolated::of(policy.as_ref(), issues));
        enforced.extend(policy);
    }
    let mut profile_issues = Vec::new();
    let mut profiles = Vec::new();
    for p in &r.profiles {
        let (profile, issues) = isolate_profile(p)?;
        profile_issues.extend(issues);
        profiles.extend(profile);
    }
    // The compiler starts without endpoints: each source goes into the set index as it is
    // converted, and only this node's endpoints are kept whole (no second copy of the others,
    // not even for the time of the build).
    let compiler = Compiler::new(&PolicyModel {
        tiers: tiers.clone(),
        policies: enforced,
        profiles,
        failsafe: failsafe.clone(),
        ..Default::default()
    })?;
    Ok(State {
        tiers,
        profile_issues,
        policies,
        local: BTreeMap::new(),
        compiler,
        program: HostProgram::default(),
        issues: Vec::new(),
    })
}

impl State {
    /// A source while building (no set exists yet, so indexing it changes none).
    fn add_source(&mut self, key: &str, s: Source, node: Option<&str>) {
        let src = State::set_source(&self.compiler, &s);
        self.compiler
            .index_mut()
            .upsert_source(SourceId::Key(key.to_string()), src);
        if State::is_local(&s, node) {
            self.local.insert(key.to_string(), s);
        }
    }

    fn collect_issues(&mut self) {
        let mut issues: Vec<PolicyIssue> = self
            .profile_issues
            .iter()
            .chain(self.policies.values().flat_map(|i| &i.issues))
            .cloned()
            .collect();
        issues.sort();
        issues.dedup();
        self.issues = issues;
    }

    /// Whether the local endpoint `s` is one this program is for.
    fn is_local(s: &Source, node: Option<&str>) -> bool {
        let n = match s {
            Source::Workload(w) => &w.node,
            Source::Host(h) => &h.node,
            Source::NetworkSet(_) => return false,
        };
        node.is_none_or(|want| want == n)
    }

    fn endpoint_id(s: &Source) -> Option<EndpointId> {
        match s {
            Source::Workload(w) => Some(EndpointId::Workload {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
            }),
            Source::Host(h) => Some(EndpointId::Host {
                name: h.name.clone(),
            }),
            Source::NetworkSet(_) => None,
        }
    }

    fn labels(&self, s: &Source) -> crate::model::LabelMap {
        match s {
            Source::Workload(w) => self.compiler.workload_labels(w),
            Source::Host(h) => self.compiler.host_labels(h),
            Source::NetworkSet(_) => Default::default(),
        }
    }

    fn recompile_endpoint(&mut self, s: &Source) {
        let prog = match s {
            Source::Workload(w) => self.compiler.workload_program(w),
            Source::Host(h) => self.compiler.host_program(h),
            Source::NetworkSet(_) => return,
        };
        self.program.endpoints.insert(prog.id.clone(), prog);
    }

    /// Replaces one policy; recompiles the local endpoints its old or new version selects.
    fn update_policy(
        &mut self,
        key: &str,
        new: Option<(Option<Policy>, Vec<PolicyIssue>)>,
    ) -> Result<(), crate::compile::CompileError> {
        let old_id = self.policies.remove(key).and_then(|i| i.id);
        let (new_policy, new) = match new {
            Some((policy, issues)) => {
                let isolated = Isolated::of(policy.as_ref(), issues);
                (policy, Some(isolated))
            }
            None => (None, None),
        };
        let new_id = new.as_ref().and_then(|i| i.id.clone());
        let local: Vec<Source> = self.local.values().cloned().collect();
        let selected = |state: &State, id: &Option<(String, bool)>| -> BTreeSet<usize> {
            let Some((name, staged)) = id else {
                return BTreeSet::new();
            };
            local
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    state
                        .compiler
                        .policy_selects(name, *staged, &state.labels(s))
                })
                .map(|(i, _)| i)
                .collect()
        };
        let mut affected = selected(self, &old_id);
        // The sets the old version's rule lists use: those no rule list uses afterwards leave
        // the set index.
        let mut old_sets = BTreeSet::new();
        if let Some((name, staged)) = &old_id {
            for direction in [Direction::Ingress, Direction::Egress] {
                let id = RuleListId::Policy {
                    name: name.clone(),
                    staged: *staged,
                    direction,
                };
                if let Some(rules) = self.compiler.rule_lists().get(&id) {
                    for_each_set(rules, &mut |s| {
                        old_sets.insert(s.clone());
                    });
                }
            }
            self.compiler.remove_policy(name, *staged);
        }
        if let Some(p) = &new_policy {
            self.compiler.upsert_policy(p)?;
        }
        affected.extend(selected(self, &new_id));
        if let Some(i) = new {
            self.policies.insert(key.to_string(), i);
        }
        for i in affected {
            self.recompile_endpoint(&local[i]);
        }
        // The policy's rule lists were compiled again: refresh them in the program.
        let mut stale: Vec<RuleListId> = Vec::new();
        for (name, staged) in old_id.iter().chain(&new_id) {
            for direction in [Direction::Ingress, Direction::Egress] {
                stale.push(RuleListId::Policy {
                    name: name.clone(),
                    staged: *staged,
                    direction,
                });
            }
        }
        for id in &stale {
            self.program.rule_lists.remove(id);
        }
        self.refresh_lists_and_sets();
        self.drop_unused_sets(old_sets);
        self.collect_issues();
        Ok(())
    }

    /// Removes from the set index those of `candidates` that no compiled rule list uses.
    fn drop_unused_sets(&mut self, mut candidates: BTreeSet<SetId>) {
        if candidates.is_empty() {
            return;
        }
        for rules in self.compiler.rule_lists().values() {
            for_each_set(rules, &mut |s| {
                candidates.remove(s);
            });
            if candidates.is_empty() {
                return;
            }
        }
        for id in &candidates {
            self.compiler.index_mut().remove_set(id);
        }
    }

    /// What a converted source offers the set index.
    fn set_source(compiler: &Compiler, s: &Source) -> SetSource {
        match s {
            Source::Workload(w) => compiler.workload_source(w).1,
            Source::Host(h) => compiler.host_source(h).1,
            Source::NetworkSet(n) => SetSource {
                labels: crate::labels::network_set_labels(n),
                nets: n.nets.clone(),
                ports: Vec::new(),
            },
        }
    }

    /// Replaces one endpoint or network set: the sets it enters or leaves, and its own chains
    /// when it is local.
    fn update_source(&mut self, key: &str, new: Option<Source>, node: Option<&str>) {
        let old = self.local.remove(key);
        let id = SourceId::Key(key.to_string());
        let changes = match &new {
            Some(n) => {
                let src = Self::set_source(&self.compiler, n);
                self.compiler.index_mut().upsert_source(id, src)
            }
            None => self.compiler.index_mut().remove_source(&id),
        };
        for c in changes {
            if let Some(set) = self.program.sets.get_mut(&c.id) {
                let set = Arc::make_mut(set);
                for m in &c.removed {
                    set.members.remove(m);
                }
                set.members.extend(c.added);
            }
        }
        let was_local = old.is_some();
        if let Some(id) = old.as_ref().and_then(Self::endpoint_id) {
            self.program.endpoints.remove(&id);
        }
        let mut is_local = false;
        if let Some(n) = new
            && Self::is_local(&n, node)
        {
            is_local = true;
            self.recompile_endpoint(&n);
            self.local.insert(key.to_string(), n);
        }
        if was_local || is_local {
            self.refresh_lists_and_sets();
        }
    }

    /// Makes the program's rule lists those its endpoints refer to, and its sets those the
    /// lists refer to (reusing what is there; only new ones are copied in).
    fn refresh_lists_and_sets(&mut self) {
        let mut lists = BTreeSet::new();
        for prog in self.program.endpoints.values() {
            for chain in prog.chains() {
                for_each_rule_list(chain, &mut |id| {
                    lists.insert(id.clone());
                });
            }
        }
        self.program.rule_lists.retain(|id, _| lists.contains(id));
        for id in lists {
            if !self.program.rule_lists.contains_key(&id)
                && let Some(rules) = self.compiler.rule_lists().get(&id)
            {
                self.program.rule_lists.insert(id, Arc::clone(rules));
            }
        }
        let mut used = BTreeSet::new();
        for rules in self.program.rule_lists.values() {
            for_each_set(rules, &mut |id| {
                used.insert(id.clone());
            });
        }
        self.program.sets.retain(|id, _| used.contains(id));
        for id in used {
            if !self.program.sets.contains_key(&id) {
                let index = self.compiler.index();
                if let Some(key) = index.key(&id) {
                    let set = Arc::new(IpSet {
                        key: key.clone(),
                        members: index.members(&id),
                    });
                    self.program.sets.insert(id, set);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_api::ApiResources;
    use crate::isolate::compile_isolated;
    use crate::sets::SetKey;
    use serde_json::json;

    fn gnp(name: &str, from_app: &str) -> api::GlobalNetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"selector": "app == 'a'", "ingress": [
                {"action": "Allow", "source": {"selector": format!("app == '{from_app}'")}}]}}))
        .unwrap()
    }

    fn wep(name: &str, node: &str, app: &str, ip: &str) -> api::WorkloadEndpoint {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {"node": node, "interfaceName": format!("cali{name}"),
                     "ipNetworks": [ip]}}))
        .unwrap()
    }

    fn keyed<'a>(
        policies: &'a [(String, api::GlobalNetworkPolicy)],
        weps: &'a [(String, api::WorkloadEndpoint)],
    ) -> KeyedResources<'a> {
        KeyedResources {
            policies: policies
                .iter()
                .map(|(k, p)| (k.as_str(), ApiPolicy::Global(p)))
                .collect(),
            sources: weps
                .iter()
                .map(|(k, w)| (k.as_str(), ApiSource::Workload(w)))
                .collect(),
            ..Default::default()
        }
    }

    fn oracle(
        policies: &[(String, api::GlobalNetworkPolicy)],
        weps: &[(String, api::WorkloadEndpoint)],
    ) -> HostProgram {
        let r = ApiResources {
            global_network_policies: policies.iter().map(|(_, p)| p.clone()).collect(),
            workload_endpoints: weps.iter().map(|(_, w)| w.clone()).collect(),
            ..Default::default()
        };
        compile_isolated(&r, &Failsafe::default(), Some("n1"))
            .unwrap()
            .0
    }

    fn selector_set(text: &str) -> SetId {
        SetKey::Selector(calico_selector::Selector::parse(text).unwrap()).id()
    }

    #[test]
    fn keeps_nothing_of_other_nodes_endpoints_but_the_set_index() {
        let policies = vec![("p".to_string(), gnp("p", "b"))];
        let weps = vec![
            ("w1".to_string(), wep("w1", "n1", "a", "10.0.0.1/32")),
            ("w2".to_string(), wep("w2", "n2", "b", "10.0.0.2/32")),
        ];
        let inc = Incremental::build(keyed(&policies, &weps), &Failsafe::default(), Some("n1"));
        let state = inc.state.as_ref().unwrap();
        assert_eq!(state.local.keys().collect::<Vec<_>>(), ["w1"]);
        assert_eq!(
            state.compiler.index().source_ids().collect::<Vec<_>>(),
            [&SourceId::Key("w1".into()), &SourceId::Key("w2".into())]
        );
        assert_eq!(inc.program().unwrap().0, &oracle(&policies, &weps));
        // The other node's endpoint is in the set its label selects.
        let set = &inc.program().unwrap().0.sets[&selector_set("app == 'b'")];
        assert_eq!(set.members.len(), 1);
    }

    #[test]
    fn a_set_no_rule_uses_any_more_leaves_the_index() {
        let mut policies = vec![("p".to_string(), gnp("p", "b"))];
        let weps = vec![
            ("w1".to_string(), wep("w1", "n1", "a", "10.0.0.1/32")),
            ("w2".to_string(), wep("w2", "n2", "b", "10.0.0.2/32")),
            ("w3".to_string(), wep("w3", "n2", "c", "10.0.0.3/32")),
        ];
        let mut inc = Incremental::build(keyed(&policies, &weps), &Failsafe::default(), Some("n1"));
        let (b, c) = (selector_set("app == 'b'"), selector_set("app == 'c'"));
        let index = |inc: &Incremental| inc.state.as_ref().unwrap().compiler.index().clone();
        assert!(index(&inc).key(&b).is_some());
        // The edit moves the rule from app b to app c: b's set is gone from the index.
        policies[0].1 = gnp("p", "c");
        inc.set_policy("p", Some(ApiPolicy::Global(&policies[0].1)))
            .unwrap();
        assert!(index(&inc).key(&b).is_none(), "unused set still indexed");
        assert_eq!(index(&inc).members(&c).len(), 1);
        assert_eq!(inc.program().unwrap().0, &oracle(&policies, &weps));
        // Back again: the set is made anew with its members.
        policies[0].1 = gnp("p", "b");
        inc.set_policy("p", Some(ApiPolicy::Global(&policies[0].1)))
            .unwrap();
        assert!(index(&inc).key(&c).is_none());
        assert_eq!(inc.program().unwrap().0, &oracle(&policies, &weps));
        // A set another policy still uses stays.
        policies.push(("q".to_string(), gnp("q", "b")));
        inc.set_policy("q", Some(ApiPolicy::Global(&policies[1].1)))
            .unwrap();
        policies[0].1 = gnp("p", "c");
        inc.set_policy("p", Some(ApiPolicy::Global(&policies[0].1)))
            .unwrap();
        assert!(index(&inc).key(&b).is_some(), "set of q dropped");
        assert_eq!(inc.program().unwrap().0, &oracle(&policies, &weps));
    }

    #[test]
    fn a_source_that_does_not_convert_asks_for_a_rebuild() {
        let policies = vec![("p".to_string(), gnp("p", "b"))];
        let weps = vec![("w1".to_string(), wep("w1", "n1", "a", "10.0.0.1/32"))];
        let mut inc = Incremental::build(keyed(&policies, &weps), &Failsafe::default(), Some("n1"));
        let bad = wep("w9", "n2", "b", "not-an-address");
        assert_eq!(
            inc.set_source("w9", Some(ApiSource::Workload(&bad))),
            Err(Rebuild)
        );
    }
}
