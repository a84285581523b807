//! The agent's model of the cluster: one per agent, fed by one etcd watch on `/calico/`.
//!
//! ```text
//!   etcd list_watch_without_prev("/calico/")  (a full list at start and after compaction,
//!        │ WatchEvent                    otherwise resumed from the last revision)
//!        ▼
//!   Store::apply ── typed view by key, this node's endpoints and blocks indexed apart
//!        │ Change { aspects, policy keys }
//!        ├─► speaker:  Store::snapshot → peering::sessions_for → BgpControl::apply
//!        ├─► routes:   Store::snapshot + learned paths → route reconciler
//!        ├─► felix:    Store::felix_docs → settings (and policy's failsafe ports)
//!        └─► policy:   PolicyModel::apply(changed keys) → calico_policy::incremental
//!                      (only the policies, endpoints and sets the change touches)
//! ```
//! Nothing here reads the datastore: the watch brings every change, and the full list is the
//! watch's own (its snapshot). The full recompute stays as the oracle: [`full_policy`] and
//! [`crate::snapshot::read_snapshot`] list the datastore and compute from scratch through the
//! same pure functions; the tests check the model against them.

pub mod follow;
pub mod store;

use calico_policy::felix::FelixPolicySettings;
use std::collections::BTreeMap;

use calico_policy::incremental::{ApiPolicy, ApiSource, Incremental, KeyedResources, Rebuild};
use calico_policy::isolate::PolicyIssue;
use calico_policy::program::HostProgram;

pub use store::{Aspects, Change, PolicyKind, PolicyObjects, Store};

use crate::policy::PolicyError;

/// The policy program of this node, kept up to date from the store's changes. It holds no
/// copy of the resources: a change the incremental paths cannot take (a tier, a profile, new
/// failsafe ports, a resource that does not convert) builds it again from the store.
#[derive(Debug, Clone)]
pub struct PolicyModel {
    node: String,
    felix: FelixPolicySettings,
    engine: Incremental,
}

impl PolicyModel {
    /// Compiled from everything in `store`.
    pub fn new(store: &Store, felix: &FelixPolicySettings) -> PolicyModel {
        let node = store.node().to_string();
        // Keyed by etcd key, so later changes find them.
        let engine = build(store.policy(), felix, &node);
        PolicyModel {
            node,
            felix: felix.clone(),
            engine,
        }
    }

    /// Applies the policy objects at `keys` (present in `store`: added or changed; absent:
    /// deleted) and new FelixConfiguration policy settings.
    pub fn apply<'a>(
        &mut self,
        store: &Store,
        keys: impl IntoIterator<Item = &'a String>,
        felix: &FelixPolicySettings,
    ) {
        let mut rebuild = felix.failsafe != *self.engine.failsafe();
        self.felix = felix.clone();
        let p = store.policy();
        for key in keys {
            if rebuild {
                // The build reads every object from the store: the other keys are in it.
                break;
            }
            let Some(kind) = PolicyObjects::kind_of(key) else {
                continue;
            };
            let e = &mut self.engine;
            let done = match kind {
                // Rare, and they change every chain (endpoints inherit profiles' labels).
                PolicyKind::Tier | PolicyKind::Profile => Err(Rebuild),
                PolicyKind::NetworkPolicy => {
                    e.set_policy(key, p.network_policies.get(key).map(ApiPolicy::Network))
                }
                PolicyKind::GlobalNetworkPolicy => e.set_policy(
                    key,
                    p.global_network_policies.get(key).map(ApiPolicy::Global),
                ),
                PolicyKind::StagedNetworkPolicy => e.set_policy(
                    key,
                    p.staged_network_policies
                        .get(key)
                        .map(ApiPolicy::StagedNetwork),
                ),
                PolicyKind::StagedGlobalNetworkPolicy => e.set_policy(
                    key,
                    p.staged_global_network_policies
                        .get(key)
                        .map(ApiPolicy::StagedGlobal),
                ),
                PolicyKind::WorkloadEndpoint => e.set_source(
                    key,
                    p.workload_endpoint(key).as_deref().map(ApiSource::Workload),
                ),
                PolicyKind::HostEndpoint => {
                    e.set_source(key, p.host_endpoints.get(key).map(ApiSource::Host))
                }
                PolicyKind::NetworkSet => {
                    e.set_source(key, p.network_sets.get(key).map(ApiSource::NetworkSet))
                }
                PolicyKind::GlobalNetworkSet => e.set_source(
                    key,
                    p.global_network_sets
                        .get(key)
                        .map(ApiSource::GlobalNetworkSet),
                ),
            };
            rebuild = done.is_err();
        }
        if rebuild {
            self.engine = build(p, felix, &self.node);
        }
    }

    /// The FelixConfiguration policy settings in force.
    pub fn felix(&self) -> &FelixPolicySettings {
        &self.felix
    }

    /// The desired program and the policies not enforced as written.
    pub fn program(&self) -> Result<(&HostProgram, &[PolicyIssue]), PolicyError> {
        self.engine
            .program()
            .map_err(|e| crate::policy::isolate_error(e.clone(), &self.node))
    }
}

/// The program of `node` from every policy object of the store.
fn build(p: &PolicyObjects, felix: &FelixPolicySettings, node: &str) -> Incremental {
    let mut b = Incremental::builder(keyed(p), &felix.failsafe, Some(node));
    p.for_each_workload_endpoint(|key, w| b.source(key, ApiSource::Workload(w)));
    b.finish()
}

/// The store's policy objects but workload endpoints, borrowed, keyed by etcd key.
fn keyed(p: &PolicyObjects) -> KeyedResources<'_> {
    fn by_key<'a, T, U>(m: &'a BTreeMap<String, T>, f: fn(&'a T) -> U) -> Vec<(&'a str, U)> {
        m.iter().map(|(k, v)| (k.as_str(), f(v))).collect()
    }
    let mut r = KeyedResources {
        tiers: p.tiers.values().collect(),
        profiles: p.profiles.values().collect(),
        ..Default::default()
    };
    r.policies
        .extend(by_key(&p.network_policies, ApiPolicy::Network));
    r.policies
        .extend(by_key(&p.global_network_policies, ApiPolicy::Global));
    r.policies
        .extend(by_key(&p.staged_network_policies, ApiPolicy::StagedNetwork));
    r.policies.extend(by_key(
        &p.staged_global_network_policies,
        ApiPolicy::StagedGlobal,
    ));
    r.sources.extend(by_key(&p.host_endpoints, ApiSource::Host));
    r.sources
        .extend(by_key(&p.network_sets, ApiSource::NetworkSet));
    r.sources
        .extend(by_key(&p.global_network_sets, ApiSource::GlobalNetworkSet));
    r
}

/// The full recompute of this node's policy program from resources (the oracle the model is
/// checked against, and what it replaced in the agent's loop).
pub fn full_policy(
    resources: &calico_policy::from_api::ApiResources,
    felix: &FelixPolicySettings,
    node: &str,
) -> Result<(HostProgram, Vec<PolicyIssue>), PolicyError> {
    crate::policy::compile_isolated_for(resources, felix, node)
}

impl PolicyModel {
    /// Brings `slot` up to date with `change` (built afresh on a snapshot or when empty): the
    /// one way the agent and a model-only follower advance the policy model.
    pub fn advance(
        slot: &mut Option<PolicyModel>,
        store: &Store,
        change: &Change,
        felix: &FelixPolicySettings,
    ) {
        match slot.as_mut() {
            Some(m) if !change.snapshot => m.apply(store, &change.policy_keys, felix),
            _ => *slot = Some(PolicyModel::new(store, felix)),
        }
    }
}
