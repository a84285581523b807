//! The policy program of one node, kept up to date change by change.
//!
//! [`Incremental`] holds the converted resources, a live [`Compiler`] (prepared policies,
//! compiled rule lists, the set index) and the [`HostProgram`] last computed. Each change does
//! the work it affects, in the spirit of Felix's calculation graph (label index → active
//! rules → IP sets), on this crate's own pieces:
//! - a policy added, edited or deleted is isolated on its own
//!   ([`crate::isolate::isolate_policy`]), re-prepared, and only the local endpoints its old or
//!   new selector picks get their chains recompiled; its rule lists are compiled again, every
//!   other rule list is reused;
//! - an endpoint or network set changes only the sets whose selectors it enters or leaves
//!   ([`crate::sets::SetIndex`], indexed by label key); a local endpoint also gets its own
//!   chains recompiled;
//! - tiers, profiles (their labels are inherited by endpoints) and the failsafe ports are rare
//!   and change every chain: they rebuild the whole state from the resources it keeps.
//!
//! The result must always equal [`crate::isolate::compile_isolated`] of the same resources
//! (the full recompute, the oracle); a property test in calico-node checks exactly that over
//! random sequences of changes. A resource outside policies and profiles that does not convert
//! (an endpoint, a network set, a tier) fails the full compile; here it makes the state
//! broken, and every later change rebuilds it from the resources until it compiles.

use std::collections::{BTreeMap, BTreeSet};

use calico_api::kinds as api;

use crate::compile::Compiler;
use crate::from_api;
use crate::isolate::{IsolateError, PolicyIssue, isolate_policy, isolate_profile};
use crate::model::{Direction, Failsafe, HostEndpoint, Policy, PolicyModel, WorkloadEndpoint};
use crate::program::{
    CompiledRule, EndpointId, HostProgram, IpSet, RuleListId, for_each_rule_list, for_each_set,
};
use crate::sets::{SetChange, SourceId};

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

/// An endpoint or network set, converted.
#[derive(Debug, Clone)]
enum Source {
    Workload(WorkloadEndpoint),
    Host(HostEndpoint),
    NetworkSet(crate::model::NetworkSet),
}

/// What one policy (by the caller's key) is enforced as.
#[derive(Debug, Clone)]
struct Isolated {
    policy: Option<Policy>,
    issues: Vec<PolicyIssue>,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Incremental {
    node: Option<String>,
    failsafe: Failsafe,
    /// The resources, by the caller's key (its etcd key): what a rebuild starts from.
    resources: Resources,
    state: Result<State, IsolateError>,
}

/// Every resource, by the caller's key (any unique text per object, e.g. its etcd key).
#[derive(Debug, Clone, Default)]
pub struct KeyedResources {
    pub tiers: BTreeMap<String, api::Tier>,
    pub profiles: BTreeMap<String, api::Profile>,
    pub policies: BTreeMap<String, PolicyResource>,
    pub sources: BTreeMap<String, ApiSource>,
}

type Resources = KeyedResources;

/// A policy resource of any of the four kinds, owned.
#[derive(Debug, Clone)]
pub enum PolicyResource {
    Network(api::NetworkPolicy),
    Global(api::GlobalNetworkPolicy),
    StagedNetwork(api::StagedNetworkPolicy),
    StagedGlobal(api::StagedGlobalNetworkPolicy),
}

impl PolicyResource {
    pub fn as_api(&self) -> ApiPolicy<'_> {
        match self {
            PolicyResource::Network(p) => ApiPolicy::Network(p),
            PolicyResource::Global(p) => ApiPolicy::Global(p),
            PolicyResource::StagedNetwork(p) => ApiPolicy::StagedNetwork(p),
            PolicyResource::StagedGlobal(p) => ApiPolicy::StagedGlobal(p),
        }
    }
}

impl From<ApiPolicy<'_>> for PolicyResource {
    fn from(p: ApiPolicy<'_>) -> Self {
        match p {
            ApiPolicy::Network(p) => PolicyResource::Network(p.clone()),
            ApiPolicy::Global(p) => PolicyResource::Global(p.clone()),
            ApiPolicy::StagedNetwork(p) => PolicyResource::StagedNetwork(p.clone()),
            ApiPolicy::StagedGlobal(p) => PolicyResource::StagedGlobal(p.clone()),
        }
    }
}

/// An endpoint or network set resource.
// Nearly every source is a workload endpoint (the largest variant): boxing it would add an
// allocation per endpoint to save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ApiSource {
    Workload(api::WorkloadEndpoint),
    Host(api::HostEndpoint),
    NetworkSet(api::NetworkSet),
    GlobalNetworkSet(api::GlobalNetworkSet),
}

impl ApiSource {
    fn convert(&self) -> Result<Source, from_api::ConvertError> {
        Ok(match self {
            ApiSource::Workload(w) => Source::Workload(from_api::workload_endpoint(w)?),
            ApiSource::Host(h) => Source::Host(from_api::host_endpoint(h)?),
            ApiSource::NetworkSet(s) => Source::NetworkSet(from_api::network_set(s)?),
            ApiSource::GlobalNetworkSet(s) => Source::NetworkSet(from_api::global_network_set(s)?),
        })
    }
}

/// The compiled state (only while everything outside policies converts).
#[derive(Debug, Clone)]
struct State {
    tiers: Vec<crate::model::Tier>,
    profile_issues: Vec<PolicyIssue>,
    policies: BTreeMap<String, Isolated>,
    sources: BTreeMap<String, Source>,
    /// Keys of the sources that are this node's endpoints.
    local: BTreeSet<String>,
    compiler: Compiler,
    program: HostProgram,
    issues: Vec<PolicyIssue>,
}

impl Incremental {
    /// Everything compiled from resources keyed by the caller (later changes use the same
    /// keys).
    pub fn from_resources(resources: Resources, failsafe: &Failsafe, node: Option<&str>) -> Self {
        let state = build(&resources, failsafe, node);
        Incremental {
            node: node.map(str::to_string),
            failsafe: failsafe.clone(),
            resources,
            state,
        }
    }

    /// The program and the policies not enforced as written, or why nothing compiles.
    pub fn program(&self) -> Result<(&HostProgram, &[PolicyIssue]), &IsolateError> {
        self.state
            .as_ref()
            .map(|s| (&s.program, s.issues.as_slice()))
    }

    fn rebuild(&mut self) {
        self.state = build(&self.resources, &self.failsafe, self.node.as_deref());
    }

    /// New failsafe ports: everything is rebuilt.
    pub fn set_failsafe(&mut self, failsafe: &Failsafe) {
        if *failsafe != self.failsafe {
            self.failsafe = failsafe.clone();
            self.rebuild();
        }
    }

    /// A tier added or changed (`Some`) or deleted (`None`): everything is rebuilt.
    pub fn set_tier(&mut self, key: &str, tier: Option<&api::Tier>) {
        set(&mut self.resources.tiers, key, tier.cloned());
        self.rebuild();
    }

    /// A profile added or changed, or deleted: everything is rebuilt (endpoints inherit its
    /// labels).
    pub fn set_profile(&mut self, key: &str, profile: Option<&api::Profile>) {
        set(&mut self.resources.profiles, key, profile.cloned());
        self.rebuild();
    }

    /// A policy added or changed (`Some`), or deleted (`None`).
    pub fn set_policy(&mut self, key: &str, policy: Option<ApiPolicy<'_>>) {
        set(
            &mut self.resources.policies,
            key,
            policy.map(PolicyResource::from),
        );
        let Ok(state) = self.state.as_mut() else {
            return self.rebuild();
        };
        let isolated = match policy {
            Some(p) => {
                let (policy, issues) = p.isolate(&state.tiers);
                Some(Isolated { policy, issues })
            }
            None => None,
        };
        if state.update_policy(key, isolated).is_err() {
            self.rebuild();
        }
    }

    /// An endpoint or network set added or changed (`Some`), or deleted (`None`).
    pub fn set_source(&mut self, key: &str, source: Option<ApiSource>) {
        set(&mut self.resources.sources, key, source.clone());
        let Ok(state) = self.state.as_mut() else {
            return self.rebuild();
        };
        let converted = match source.as_ref().map(ApiSource::convert) {
            None => None,
            Some(Ok(s)) => Some(s),
            // Nothing compiles while it does not convert (as in the full compile).
            Some(Err(_)) => return self.rebuild(),
        };
        state.update_source(key, converted, self.node.as_deref());
    }
}

fn set<T>(map: &mut BTreeMap<String, T>, key: &str, v: Option<T>) {
    match v {
        Some(v) => map.insert(key.to_string(), v),
        None => map.remove(key),
    };
}

fn build(r: &Resources, failsafe: &Failsafe, node: Option<&str>) -> Result<State, IsolateError> {
    let tiers_api: Vec<api::Tier> = r.tiers.values().cloned().collect();
    let tiers = from_api::tiers(&tiers_api)?;
    let mut sources = BTreeMap::new();
    for (k, s) in &r.sources {
        sources.insert(k.clone(), s.convert()?);
    }
    let mut policies = BTreeMap::new();
    for (k, p) in &r.policies {
        let (policy, issues) = p.as_api().isolate(&tiers);
        policies.insert(k.clone(), Isolated { policy, issues });
    }
    let mut profile_issues = Vec::new();
    let mut profiles = Vec::new();
    for p in r.profiles.values() {
        let (profile, issues) = isolate_profile(p)?;
        profile_issues.extend(issues);
        profiles.extend(profile);
    }
    let mut model = PolicyModel {
        tiers: tiers.clone(),
        policies: policies.values().filter_map(|i| i.policy.clone()).collect(),
        profiles,
        failsafe: failsafe.clone(),
        ..Default::default()
    };
    for s in sources.values() {
        match s {
            Source::Workload(w) => model.workload_endpoints.push(w.clone()),
            Source::Host(h) => model.host_endpoints.push(h.clone()),
            Source::NetworkSet(n) => model.network_sets.push(n.clone()),
        }
    }
    let mut compiler = Compiler::new(&model)?;
    let local = |n: &str| node.is_none_or(|want| want == n);
    let workloads: Vec<&WorkloadEndpoint> = model
        .workload_endpoints
        .iter()
        .filter(|e| local(&e.node))
        .collect();
    let hosts: Vec<&HostEndpoint> = model
        .host_endpoints
        .iter()
        .filter(|e| local(&e.node))
        .collect();
    let program = compiler.host_program_for(&workloads, &hosts);
    let local_keys = sources
        .iter()
        .filter(|(_, s)| State::is_local(s, node))
        .map(|(k, _)| k.clone())
        .collect();
    let mut state = State {
        tiers,
        profile_issues,
        policies,
        sources,
        local: local_keys,
        compiler,
        program,
        issues: Vec::new(),
    };
    state.collect_issues();
    Ok(state)
}

impl State {
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
        new: Option<Isolated>,
    ) -> Result<(), crate::compile::CompileError> {
        let old = self.policies.remove(key);
        let old_id = old
            .as_ref()
            .and_then(|i| i.policy.as_ref())
            .map(|p| (p.qualified_name(), p.staged));
        let new_id = new
            .as_ref()
            .and_then(|i| i.policy.as_ref())
            .map(|p| (p.qualified_name(), p.staged));
        let local: Vec<Source> = self
            .local
            .iter()
            .filter_map(|k| self.sources.get(k))
            .cloned()
            .collect();
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
        if let Some((name, staged)) = &old_id {
            self.compiler.remove_policy(name, *staged);
        }
        if let Some(p) = new.as_ref().and_then(|i| i.policy.as_ref()) {
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
        self.collect_issues();
        Ok(())
    }

    /// Replaces one endpoint or network set: the sets it enters or leaves, and its own chains
    /// when it is local.
    fn update_source(&mut self, key: &str, new: Option<Source>, node: Option<&str>) {
        let old = self.sources.remove(key);
        let source_id = |s: &Source| match s {
            Source::Workload(w) => SourceId::Workload {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
            },
            Source::Host(h) => SourceId::Host {
                name: h.name.clone(),
            },
            Source::NetworkSet(n) => SourceId::NetworkSet {
                namespace: n.namespace.clone(),
                name: n.name.clone(),
            },
        };
        let mut changes: Vec<SetChange> = Vec::new();
        if let Some(o) = &old
            && new.as_ref().is_none_or(|n| source_id(n) != source_id(o))
        {
            changes.extend(self.compiler.index_mut().remove_source(&source_id(o)));
        }
        if let Some(n) = &new {
            let (id, src) = match n {
                Source::Workload(w) => self.compiler.workload_source(w),
                Source::Host(h) => self.compiler.host_source(h),
                Source::NetworkSet(s) => (
                    source_id(n),
                    crate::sets::SetSource {
                        labels: crate::labels::network_set_labels(s),
                        nets: s.nets.clone(),
                        ports: Vec::new(),
                    },
                ),
            };
            changes.extend(self.compiler.index_mut().upsert_source(id, src));
        }
        for c in changes {
            if let Some(set) = self.program.sets.get_mut(&c.id) {
                for m in &c.removed {
                    set.members.remove(m);
                }
                set.members.extend(c.added);
            }
        }
        let was_local = old.as_ref().is_some_and(|o| Self::is_local(o, node));
        let is_local = new.as_ref().is_some_and(|n| Self::is_local(n, node));
        if was_local && let Some(id) = old.as_ref().and_then(Self::endpoint_id) {
            self.program.endpoints.remove(&id);
        }
        self.local.remove(key);
        if let Some(n) = &new {
            self.sources.insert(key.to_string(), n.clone());
            if is_local {
                self.local.insert(key.to_string());
                self.recompile_endpoint(n);
            }
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
                let rules: Vec<CompiledRule> = rules.clone();
                self.program.rule_lists.insert(id, rules);
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
                    let set = IpSet {
                        key: key.clone(),
                        members: index.members(&id),
                    };
                    self.program.sets.insert(id, set);
                }
            }
        }
    }
}
