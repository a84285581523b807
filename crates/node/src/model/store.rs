//! The typed view of `/calico/` that one etcd watch keeps, indexed for this node.
//!
//! [`Store::apply`] takes each [`WatchEvent`] (a snapshot replaces the view whole) and says
//! what it touched: the [`Aspects`] of the agent's work that may change and, for policy, the
//! keys that changed (the incremental policy engine looks them up here). Everything is kept by
//! etcd key, so iterating a kind gives the order a list gives (the full-recompute oracle in
//! [`crate::snapshot::read_snapshot`] and [`crate::policy::read_resources`] lists).
//!
//! Indexed for what this node needs: its own workload endpoints apart from the others (routes
//! and the speaker read only those), the confirmed affinities of this node apart from the
//! others' (routes), of IPAM blocks only how many addresses are in use (a metric), and nothing
//! at all of what no part of the agent reads (IPAM handles, status reports, Kubernetes-only
//! kinds).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use calico_api as api;
use calico_api::CalicoResource;
use calico_datastore::{KeyValue, KindRef, WatchEvent, decode_doc, decode_kv};
use calico_ipam::model::{AffinityState, AffinityValue};
use ipnet::IpNet;
use serde_json::Value;
use tracing::warn;

use crate::snapshot::{RoutingResources, Snapshot};

/// Which parts of the agent's work a change may affect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Aspects {
    /// FelixConfiguration: log level, servers, intervals (and policy settings: see `policy`).
    pub felix: bool,
    /// The BGP speaker's configuration: sessions, announced prefixes, filters.
    pub speaker: bool,
    /// The kernel's routes (own blocks, local workloads).
    pub routes: bool,
    /// The policy program (see [`Change::policy_keys`] for which objects).
    pub policy: bool,
}

impl Aspects {
    pub const ALL: Aspects = Aspects {
        felix: true,
        speaker: true,
        routes: true,
        policy: true,
    };

    pub fn any(&self) -> bool {
        self.felix || self.speaker || self.routes || self.policy
    }

    pub fn merge(&mut self, o: Aspects) {
        self.felix |= o.felix;
        self.speaker |= o.speaker;
        self.routes |= o.routes;
        self.policy |= o.policy;
    }
}

/// What one watch event changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub aspects: Aspects,
    /// The view was replaced whole (start, or history compacted away): everything is redone.
    pub snapshot: bool,
    /// Keys of policy-relevant objects that changed (present in the store: added or
    /// changed; absent: deleted).
    pub policy_keys: BTreeSet<String>,
}

impl Change {
    pub fn merge(&mut self, o: Change) {
        self.aspects.merge(o.aspects);
        self.snapshot |= o.snapshot;
        self.policy_keys.extend(o.policy_keys);
    }
}

/// The kinds the policy program reads, as [`PolicyKind`] tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyKind {
    Tier,
    NetworkPolicy,
    GlobalNetworkPolicy,
    StagedNetworkPolicy,
    StagedGlobalNetworkPolicy,
    Profile,
    WorkloadEndpoint,
    HostEndpoint,
    NetworkSet,
    GlobalNetworkSet,
}

/// Objects of one kind by etcd key.
type ByKey<T> = BTreeMap<String, T>;

/// The policy-relevant resources, by key.
#[derive(Debug, Clone, Default)]
pub struct PolicyObjects {
    pub tiers: ByKey<api::Tier>,
    pub network_policies: ByKey<api::NetworkPolicy>,
    pub global_network_policies: ByKey<api::GlobalNetworkPolicy>,
    pub staged_network_policies: ByKey<api::StagedNetworkPolicy>,
    pub staged_global_network_policies: ByKey<api::StagedGlobalNetworkPolicy>,
    pub profiles: ByKey<api::Profile>,
    /// This node's workload endpoints (see [`PolicyObjects::workload_endpoint`] for all).
    pub workload_endpoints: ByKey<api::WorkloadEndpoint>,
    /// Other nodes' workload endpoints, as compact JSON with only what the policy program
    /// reads of them (see `other_nodes_endpoint`): at 50,000 endpoints a typed copy of each
    /// would be most of the agent's memory, and only a rebuild of the policy program reads
    /// them all.
    pub other_workload_endpoints: ByKey<Box<[u8]>>,
    pub host_endpoints: ByKey<api::HostEndpoint>,
    pub network_sets: ByKey<api::NetworkSet>,
    pub global_network_sets: ByKey<api::GlobalNetworkSet>,
}

impl PolicyObjects {
    /// The workload endpoint at `key`, of any node.
    pub fn workload_endpoint(&self, key: &str) -> Option<Cow<'_, api::WorkloadEndpoint>> {
        if let Some(w) = self.workload_endpoints.get(key) {
            return Some(Cow::Borrowed(w));
        }
        self.other_workload_endpoints
            .get(key)
            .and_then(|json| compact_decoded(key, json))
            .map(Cow::Owned)
    }

    /// Every workload endpoint, this node's first (each of another node decoded in turn, so
    /// that only one is held at a time).
    pub fn for_each_workload_endpoint(&self, mut f: impl FnMut(&str, &api::WorkloadEndpoint)) {
        for (k, w) in &self.workload_endpoints {
            f(k, w);
        }
        for (k, json) in &self.other_workload_endpoints {
            if let Some(w) = compact_decoded(k, json) {
                f(k, &w);
            }
        }
    }

    /// Sets (`Some`) or removes the workload endpoint at `key`, in the map of this node's or
    /// of the others' by its `spec.node`; whether anything changed.
    fn set_workload_endpoint(
        &mut self,
        key: &str,
        w: Option<api::WorkloadEndpoint>,
        node: &str,
    ) -> bool {
        let removed = self.workload_endpoints.remove(key).is_some()
            | self.other_workload_endpoints.remove(key).is_some();
        let Some(w) = w else {
            return removed;
        };
        if w.spec.node.as_deref() == Some(node) {
            self.workload_endpoints.insert(key.to_string(), w);
        } else {
            match serde_json::to_vec(&other_nodes_endpoint(w)) {
                Ok(json) => {
                    self.other_workload_endpoints
                        .insert(key.to_string(), json.into_boxed_slice());
                }
                Err(e) => {
                    warn!(key, error = %e, "workload endpoint does not encode; ignored");
                    return removed;
                }
            }
        }
        true
    }

    /// The kind `key` belongs to.
    pub fn kind_of(key: &str) -> Option<PolicyKind> {
        fn is<T: CalicoResource>(key: &str) -> bool {
            calico_datastore::resource::meta::id_from_key(&KindRef::of::<T>(), key).is_some()
        }
        use PolicyKind as K;
        Some(if is::<api::Tier>(key) {
            K::Tier
        } else if is::<api::NetworkPolicy>(key) {
            K::NetworkPolicy
        } else if is::<api::GlobalNetworkPolicy>(key) {
            K::GlobalNetworkPolicy
        } else if is::<api::StagedNetworkPolicy>(key) {
            K::StagedNetworkPolicy
        } else if is::<api::StagedGlobalNetworkPolicy>(key) {
            K::StagedGlobalNetworkPolicy
        } else if is::<api::Profile>(key) {
            K::Profile
        } else if is::<api::WorkloadEndpoint>(key) {
            K::WorkloadEndpoint
        } else if is::<api::HostEndpoint>(key) {
            K::HostEndpoint
        } else if is::<api::NetworkSet>(key) {
            K::NetworkSet
        } else if is::<api::GlobalNetworkSet>(key) {
            K::GlobalNetworkSet
        } else {
            return None;
        })
    }
}

/// The agent's view of `/calico/`.
#[derive(Debug, Clone)]
pub struct Store {
    node: String,
    /// The store revision the view is at.
    revision: i64,
    /// FelixConfiguration documents (read as documents: an explicit empty list differs from
    /// an absent one), by key.
    felix: ByKey<Value>,
    bgp_configs: ByKey<api::BGPConfiguration>,
    nodes: ByKey<api::Node>,
    peers: ByKey<api::BGPPeer>,
    bgp_filters: ByKey<api::BGPFilter>,
    ip_pools: ByKey<api::IPPool>,
    /// Every node's block affinities: (host, block) → state.
    affinities: BTreeMap<(String, IpNet), AffinityState>,
    /// This node's confirmed blocks (derived from `affinities`).
    own_blocks: BTreeSet<IpNet>,
    /// Addresses in use per IPAM block (for `calico_ipam_allocated_addresses`).
    block_in_use: BTreeMap<IpNet, usize>,
    policy: PolicyObjects,
}

/// Decodes `kv` when its key is a `T`; a value that does not decode is left out with a
/// warning (the object is treated as absent, as a list that skipped it would).
fn decoded<T: CalicoResource>(kv: &KeyValue) -> Option<Option<T>> {
    match decode_kv::<T>(kv)? {
        Ok(t) => Some(Some(t)),
        Err(e) => {
            warn!(key = %kv.key, error = %e, "stored object does not decode; ignored");
            Some(None)
        }
    }
}

impl Store {
    pub fn new(node: &str) -> Store {
        Store {
            node: node.to_string(),
            revision: 0,
            felix: BTreeMap::new(),
            bgp_configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            peers: BTreeMap::new(),
            bgp_filters: BTreeMap::new(),
            ip_pools: BTreeMap::new(),
            affinities: BTreeMap::new(),
            own_blocks: BTreeSet::new(),
            block_in_use: BTreeMap::new(),
            policy: PolicyObjects::default(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The store revision the view is at (0 before the first snapshot).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn policy(&self) -> &PolicyObjects {
        &self.policy
    }

    pub fn felix_docs(&self) -> Vec<Value> {
        self.felix.values().cloned().collect()
    }

    pub fn own_blocks(&self) -> &BTreeSet<IpNet> {
        &self.own_blocks
    }

    /// Every node's block affinities, (host, block) → state (for routes to other nodes'
    /// blocks that do not come over BGP, e.g. tunnels); one marked deleted is not here.
    pub fn affinities(&self) -> &BTreeMap<(String, IpNet), AffinityState> {
        &self.affinities
    }

    /// Nodes by key.
    pub fn nodes(&self) -> impl Iterator<Item = &api::Node> {
        self.nodes.values()
    }

    /// IPPools by key.
    pub fn ip_pools(&self) -> impl Iterator<Item = &api::IPPool> {
        self.ip_pools.values()
    }

    /// Addresses in use in this node's blocks (`calico_ipam_allocated_addresses`).
    pub fn own_addresses_in_use(&self) -> usize {
        self.own_blocks
            .iter()
            .filter_map(|b| self.block_in_use.get(b))
            .sum()
    }

    /// Number of nodes (`felix_cluster_num_hosts`).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The routing snapshot of this node, from the view alone (no datastore read).
    pub fn snapshot(&self) -> Snapshot {
        let configs: Vec<&api::BGPConfiguration> = self.bgp_configs.values().collect();
        let nodes: Vec<&api::Node> = self.nodes.values().collect();
        let peers: Vec<&api::BGPPeer> = self.peers.values().collect();
        let filters: Vec<&api::BGPFilter> = self.bgp_filters.values().collect();
        let pools: Vec<&api::IPPool> = self.ip_pools.values().collect();
        let local: Vec<&api::WorkloadEndpoint> = self.policy.workload_endpoints.values().collect();
        Snapshot::compute(
            &RoutingResources {
                bgp_configs: &configs,
                nodes: &nodes,
                peers: &peers,
                bgp_filters: &filters,
                ip_pools: &pools,
                own_blocks: &self.own_blocks,
                local_workloads: &local,
            },
            &self.node,
        )
    }

    /// Applies one watch event; returns what it touched. Taken by value: a snapshot (the
    /// start-up list, 54,000 objects at 1,000 nodes) lets go of each object's text as soon
    /// as it is in the view, so the whole list and the whole view are never held together.
    pub fn apply(&mut self, ev: WatchEvent) -> Change {
        match ev {
            WatchEvent::Snapshot(listing) => {
                let node = std::mem::take(&mut self.node);
                *self = Store::new(&node);
                for kv in listing.kvs {
                    self.put(&kv);
                }
                self.revision = listing.revision;
                Change {
                    aspects: Aspects::ALL,
                    snapshot: true,
                    policy_keys: BTreeSet::new(),
                }
            }
            WatchEvent::Put(kv) => {
                self.revision = self.revision.max(kv.mod_revision);
                self.put(&kv)
            }
            WatchEvent::Delete { key, revision, .. } => {
                self.revision = self.revision.max(revision);
                self.delete(&key)
            }
        }
    }

    fn put(&mut self, kv: &KeyValue) -> Change {
        self.update(&kv.key, Some(kv))
    }

    fn delete(&mut self, key: &str) -> Change {
        self.update(key, None)
    }

    /// Sets (`Some`) or removes (`None`) the object at `key` in the map of its kind.
    fn update(&mut self, key: &str, kv: Option<&KeyValue>) -> Change {
        let mut change = Change::default();
        let a = &mut change.aspects;
        // IPAM blocks: only how many addresses are in use (a metric; no work).
        if let Some(cidr) = calico_ipam::model::parse_block_key(key) {
            let block = kv.and_then(|kv| {
                serde_json::from_slice::<calico_ipam::model::AllocationBlock>(&kv.value).ok()
            });
            match block {
                Some(b) => self.block_in_use.insert(cidr, b.in_use()),
                None => self.block_in_use.remove(&cidr),
            };
            return change;
        }
        // Routing kinds.
        if let Some((host, cidr)) = calico_ipam::model::parse_affinity_key(key) {
            let state =
                kv.and_then(
                    |kv| match serde_json::from_slice::<AffinityValue>(&kv.value) {
                        // Marked deleted: on its way out (Calico marks an affinity before it
                        // removes it, and reads a marked one as absent): gone for routes
                        // and tunnels alike.
                        Ok(v) if v.deleted => None,
                        Ok(v) => Some(v.state),
                        Err(e) => {
                            warn!(key, error = %e, "block affinity does not decode; ignored");
                            None
                        }
                    },
                );
            let mine = host == self.node;
            match state {
                Some(s) => self.affinities.insert((host, cidr), s),
                None => self.affinities.remove(&(host, cidr)),
            };
            if mine {
                let confirmed = state == Some(AffinityState::Confirmed);
                let changed = if confirmed {
                    self.own_blocks.insert(cidr)
                } else {
                    self.own_blocks.remove(&cidr)
                };
                a.routes |= changed;
                a.speaker |= changed;
            }
            return change;
        }
        if let Some(kv) = kv {
            if let Some(doc) = decode_doc(&KindRef::of::<api::FelixConfiguration>(), kv) {
                match doc {
                    Ok(d) => {
                        self.felix.insert(key.to_string(), d);
                    }
                    Err(e) => warn!(key, error = %e, "FelixConfiguration does not decode; ignored"),
                }
                *a = Aspects::ALL;
                return change;
            }
        } else if self.felix.remove(key).is_some() {
            *a = Aspects::ALL;
            return change;
        }
        macro_rules! routing {
            ($map:ident, $ty:ty) => {
                if let Some(obj) = Self::typed::<$ty>(key, kv) {
                    set(&mut self.$map, key, obj);
                    a.speaker = true;
                    return change;
                }
            };
        }
        routing!(bgp_configs, api::BGPConfiguration);
        routing!(nodes, api::Node);
        routing!(peers, api::BGPPeer);
        routing!(bgp_filters, api::BGPFilter);
        routing!(ip_pools, api::IPPool);

        // Policy kinds (a workload endpoint of this node is also routing).
        let Some(kind) = PolicyObjects::kind_of(key) else {
            return change;
        };
        let p = &mut self.policy;
        let mut local_before = false;
        let mut local_after = false;
        macro_rules! policy {
            ($map:ident, $ty:ty) => {{
                let obj = Self::typed::<$ty>(key, kv).unwrap_or(None);
                set(&mut p.$map, key, obj)
            }};
        }
        let changed = match kind {
            PolicyKind::Tier => policy!(tiers, api::Tier),
            PolicyKind::NetworkPolicy => policy!(network_policies, api::NetworkPolicy),
            PolicyKind::GlobalNetworkPolicy => {
                policy!(global_network_policies, api::GlobalNetworkPolicy)
            }
            PolicyKind::StagedNetworkPolicy => {
                policy!(staged_network_policies, api::StagedNetworkPolicy)
            }
            PolicyKind::StagedGlobalNetworkPolicy => {
                policy!(
                    staged_global_network_policies,
                    api::StagedGlobalNetworkPolicy
                )
            }
            PolicyKind::Profile => policy!(profiles, api::Profile),
            PolicyKind::WorkloadEndpoint => {
                local_before = p.workload_endpoints.contains_key(key);
                let obj = Self::typed::<api::WorkloadEndpoint>(key, kv).unwrap_or(None);
                let changed = p.set_workload_endpoint(key, obj, &self.node);
                local_after = p.workload_endpoints.contains_key(key);
                changed
            }
            PolicyKind::HostEndpoint => policy!(host_endpoints, api::HostEndpoint),
            PolicyKind::NetworkSet => policy!(network_sets, api::NetworkSet),
            PolicyKind::GlobalNetworkSet => policy!(global_network_sets, api::GlobalNetworkSet),
        };
        if changed {
            a.policy = true;
            change.policy_keys.insert(key.to_string());
        }
        if changed && (local_before || local_after) {
            a.routes = true;
            a.speaker = true;
        }
        change
    }

    /// `Some(object or None when deleted / undecodable)` when `key` is a `T`'s.
    fn typed<T: CalicoResource>(key: &str, kv: Option<&KeyValue>) -> Option<Option<T>> {
        match kv {
            Some(kv) => decoded::<T>(kv),
            None => calico_datastore::resource::meta::id_from_key(&KindRef::of::<T>(), key)
                .map(|_| None),
        }
    }
}

/// Another node's workload endpoint with only what this node reads of it: its identity,
/// labels, orchestrator, service account, addresses, named ports and profiles (the policy
/// program's sets; every field the conversion checks stays, so one that does not convert
/// still fails as the full recompute does). At 50,000 endpoints the rest (annotations,
/// interface, MAC, container and pod names, gateways, NATs, ...) would be most of the model.
fn other_nodes_endpoint(w: api::WorkloadEndpoint) -> api::WorkloadEndpoint {
    let api::WorkloadEndpoint { metadata, spec, .. } = w;
    let mut slim = api::WorkloadEndpoint::new(
        "",
        api::WorkloadEndpointSpec {
            orchestrator: spec.orchestrator,
            node: spec.node,
            service_account_name: spec.service_account_name,
            ip_networks: spec.ip_networks,
            ports: spec.ports,
            profiles: spec.profiles,
            ..Default::default()
        },
    );
    slim.metadata.name = metadata.name;
    slim.metadata.namespace = metadata.namespace;
    slim.metadata.labels = metadata.labels;
    slim
}

/// Another node's endpoint from its compact JSON (written by this store, so it decodes; if
/// it ever did not, the endpoint is treated as absent, as an undecodable object is).
fn compact_decoded(key: &str, json: &[u8]) -> Option<api::WorkloadEndpoint> {
    serde_json::from_slice(json)
        .inspect_err(|e| warn!(key, error = %e, "compact workload endpoint does not decode"))
        .ok()
}

/// Sets or removes `key`; whether anything changed (a rewrite of the same object with only a
/// new `resourceVersion` counts: the oracle's list would show it too).
fn set<T>(map: &mut ByKey<T>, key: &str, obj: Option<T>) -> bool {
    match obj {
        Some(o) => {
            map.insert(key.to_string(), o);
            true
        }
        None => map.remove(key).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &mut Store, key: &str, value: serde_json::Value) -> Change {
        let revision = store.revision() + 1;
        store.apply(WatchEvent::Put(KeyValue {
            key: key.into(),
            value: serde_json::to_vec(&value).unwrap(),
            create_revision: 1,
            mod_revision: revision,
        }))
    }

    #[test]
    fn an_affinity_marked_deleted_is_gone_for_routes_and_tunnels() {
        let mut store = Store::new("node1");
        let own = "/calico/ipam/v2/host/node1/ipv4/block/10.65.0.0-26";
        let other = "/calico/ipam/v2/host/node2/ipv4/block/10.65.1.0-26";
        let block: IpNet = "10.65.0.0/26".parse().unwrap();
        let confirmed = serde_json::json!({"state": "confirmed", "deleted": false});
        let marked = serde_json::json!({"state": "confirmed", "deleted": true});
        assert!(put(&mut store, own, confirmed.clone()).aspects.routes);
        put(&mut store, other, confirmed.clone());
        assert_eq!(store.own_blocks(), &BTreeSet::from([block]));
        assert_eq!(store.affinities().len(), 2);
        // Marked deleted: no longer this node's block (its route goes), nor another's.
        let change = put(&mut store, own, marked.clone());
        assert!(change.aspects.routes && change.aspects.speaker);
        assert!(store.own_blocks().is_empty());
        put(&mut store, other, marked);
        assert!(store.affinities().is_empty(), "{:?}", store.affinities());
        // Unmarked again (a new claim of the block): back.
        put(&mut store, own, confirmed);
        assert_eq!(store.own_blocks(), &BTreeSet::from([block]));
    }
}
