//! IP sets: each distinct selector (or selector + named port) that rules reference becomes one
//! set, whose members are computed from endpoints and network sets. [`SetIndex`] keeps the
//! membership up to date as endpoints change and reports exactly which sets changed, so the
//! dataplane touches only those.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use calico_selector::{Labels, Selector};
use ipnet::IpNet;
use sha1::{Digest, Sha1};

use crate::model::{LabelMap, NamedPort, Protocol};

/// What a set stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKey {
    /// Addresses of endpoints and networks of network sets matching the selector.
    Selector(Selector),
    /// `(address, protocol, port)` of endpoints matching the selector that declare a named port
    /// with this name and protocol.
    NamedPort {
        /// Endpoints to consider.
        selector: Selector,
        /// Protocol the port must be declared with.
        protocol: Protocol,
        /// Port name.
        name: String,
    },
}

impl SetKey {
    /// Stable identifier: the same key always gets the same id, across restarts and hosts.
    pub fn id(&self) -> SetId {
        let (prefix, text) = match self {
            SetKey::Selector(sel) => ("s", format!("sel:{sel}")),
            SetKey::NamedPort {
                selector,
                protocol,
                name,
            } => ("n", format!("np:{}:{name}:{selector}", protocol.0)),
        };
        let digest = Sha1::digest(text.as_bytes());
        SetId(format!("{prefix}-{}", &hex::encode(digest)[..20]))
    }

    /// The selector deciding membership.
    pub fn selector(&self) -> &Selector {
        match self {
            SetKey::Selector(s) => s,
            SetKey::NamedPort { selector, .. } => selector,
        }
    }
}

impl fmt::Display for SetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetKey::Selector(s) => write!(f, "selector {s}"),
            SetKey::NamedPort {
                selector,
                protocol,
                name,
            } => write!(f, "named port {protocol}:{name} of {selector}"),
        }
    }
}

/// Identifier of a set (at most 22 ASCII characters, usable as an nftables set name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetId(pub String);

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One member of a set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Member {
    /// An address or network (selector sets).
    Net(IpNet),
    /// An address with a port (named-port sets).
    Port {
        /// Endpoint address.
        addr: IpAddr,
        /// Protocol.
        protocol: Protocol,
        /// Port number.
        port: u16,
    },
}

/// Who contributes members to sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceId {
    /// A workload endpoint.
    Workload {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A host endpoint.
    Host {
        /// Name.
        name: String,
    },
    /// A (global) network set.
    NetworkSet {
        /// Namespace, `None` for a GlobalNetworkSet.
        namespace: Option<String>,
        /// Name.
        name: String,
    },
    /// Any source, by its caller's own unique key (the incremental engine: the datastore
    /// key, which it has at hand for a change or a deletion, so it keeps nothing else to
    /// find a source by).
    Key(String),
}

/// What a source offers to sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetSource {
    /// Effective labels (see [`crate::labels`]).
    pub labels: LabelMap,
    /// Addresses or networks.
    pub nets: Vec<IpNet>,
    /// Named ports (endpoints only; network sets have none).
    pub ports: Vec<NamedPort>,
}

/// A change of one set's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetChange {
    /// The set.
    pub id: SetId,
    /// Members that became present.
    pub added: BTreeSet<Member>,
    /// Members that stopped being present.
    pub removed: BTreeSet<Member>,
}

#[derive(Debug, Clone)]
struct SetEntry {
    key: SetKey,
    /// Label keys the selector reads.
    label_keys: BTreeSet<String>,
    /// Member → number of sources contributing it (two network sets may list the same CIDR).
    members: BTreeMap<Member, usize>,
}

/// Set membership, maintained incrementally.
#[derive(Debug, Default)]
pub struct SetIndex {
    sets: BTreeMap<SetId, SetEntry>,
    sources: BTreeMap<SourceId, Stored>,
    /// Label key → sets whose selector reads it, so a label change visits only those sets.
    by_label: BTreeMap<String, BTreeSet<SetId>>,
    /// Every label key and value the sources carry, once: at cluster scale the same few keys
    /// and values repeat across tens of thousands of endpoints. A text leaves when the last
    /// source carrying it does.
    texts: HashSet<Arc<str>>,
}

/// What the index keeps of a source (a [`SetSource`] in less memory: labels as a sorted
/// slice of shared texts).
#[derive(Debug, Default)]
struct Stored {
    labels: Box<[(Arc<str>, Arc<str>)]>,
    nets: Box<[IpNet]>,
    ports: Box<[NamedPort]>,
}

/// A stored label slice, sorted by key, as selectors read labels.
struct StoredLabels<'a>(&'a [(Arc<str>, Arc<str>)]);

impl Labels for StoredLabels<'_> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }
}

impl Clone for SetIndex {
    /// A deep copy (its own texts), so that each copy can let go of its texts alone.
    fn clone(&self) -> Self {
        let mut copy = SetIndex {
            sets: self.sets.clone(),
            sources: BTreeMap::new(),
            by_label: self.by_label.clone(),
            texts: HashSet::new(),
        };
        for (id, s) in &self.sources {
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (copy.intern(k), copy.intern(v)))
                .collect();
            let stored = Stored {
                labels,
                nets: s.nets.clone(),
                ports: s.ports.clone(),
            };
            copy.sources.insert(id.clone(), stored);
        }
        copy
    }
}

fn contribution(key: &SetKey, src: &Stored) -> BTreeSet<Member> {
    if !key.selector().matches(&StoredLabels(&src.labels)) {
        return BTreeSet::new();
    }
    match key {
        SetKey::Selector(_) => src.nets.iter().map(|n| Member::Net(n.trunc())).collect(),
        SetKey::NamedPort { protocol, name, .. } => src
            .ports
            .iter()
            .filter(|p| &p.name == name && p.protocol == *protocol)
            .flat_map(|p| {
                src.nets.iter().map(move |n| Member::Port {
                    addr: n.addr(),
                    protocol: p.protocol,
                    port: p.port,
                })
            })
            .collect(),
    }
}

/// Label keys whose values differ between two sorted label slices.
fn changed_keys<'a>(
    a: &'a [(Arc<str>, Arc<str>)],
    b: &'a [(Arc<str>, Arc<str>)],
) -> BTreeSet<&'a str> {
    let (la, lb) = (StoredLabels(a), StoredLabels(b));
    let mut out = BTreeSet::new();
    for (k, v) in a {
        if lb.get_label(k) != Some(&**v) {
            out.insert(&**k);
        }
    }
    for (k, _) in b {
        if la.get_label(k).is_none() {
            out.insert(&**k);
        }
    }
    out
}

impl SetIndex {
    /// An empty index.
    pub fn new() -> SetIndex {
        SetIndex::default()
    }

    /// Starts tracking a set (no-op when already tracked) and returns its id.
    pub fn ensure_set(&mut self, key: SetKey) -> SetId {
        let id = key.id();
        if !self.sets.contains_key(&id) {
            let mut members = BTreeMap::new();
            for src in self.sources.values() {
                for m in contribution(&key, src) {
                    *members.entry(m).or_insert(0) += 1;
                }
            }
            let label_keys: BTreeSet<String> = key
                .selector()
                .label_keys()
                .into_iter()
                .map(str::to_string)
                .collect();
            for k in &label_keys {
                self.by_label
                    .entry(k.clone())
                    .or_default()
                    .insert(id.clone());
            }
            self.sets.insert(
                id.clone(),
                SetEntry {
                    key,
                    label_keys,
                    members,
                },
            );
        }
        id
    }

    /// Stops tracking a set.
    pub fn remove_set(&mut self, id: &SetId) {
        if let Some(entry) = self.sets.remove(id) {
            for k in &entry.label_keys {
                if let Some(ids) = self.by_label.get_mut(k) {
                    ids.remove(id);
                    if ids.is_empty() {
                        self.by_label.remove(k);
                    }
                }
            }
        }
    }

    /// Ids of every source.
    pub fn source_ids(&self) -> impl Iterator<Item = &SourceId> {
        self.sources.keys()
    }

    /// Ids of every tracked set.
    pub fn set_ids(&self) -> impl Iterator<Item = &SetId> {
        self.sets.keys()
    }

    /// The key a set stands for.
    pub fn key(&self, id: &SetId) -> Option<&SetKey> {
        self.sets.get(id).map(|e| &e.key)
    }

    /// Current members of a set (empty when unknown).
    pub fn members(&self, id: &SetId) -> BTreeSet<Member> {
        self.sets
            .get(id)
            .map(|e| e.members.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether a set contains a member.
    pub fn contains(&self, id: &SetId, member: &Member) -> bool {
        self.sets
            .get(id)
            .is_some_and(|e| e.members.contains_key(member))
    }

    /// Adds or replaces a source; returns the sets whose membership changed, and only those.
    pub fn upsert_source(&mut self, id: SourceId, new: SetSource) -> Vec<SetChange> {
        let labels = new
            .labels
            .iter()
            .map(|(k, v)| (self.intern(k), self.intern(v)))
            .collect();
        let new = Stored {
            labels,
            nets: new.nets.into_boxed_slice(),
            ports: new.ports.into_boxed_slice(),
        };
        let old = self.sources.remove(&id);
        let changes = self.apply(old.as_ref(), Some(&new));
        self.sources.insert(id, new);
        if let Some(old) = old {
            self.release(old);
        }
        changes
    }

    /// Removes a source; returns the sets whose membership changed.
    pub fn remove_source(&mut self, id: &SourceId) -> Vec<SetChange> {
        match self.sources.remove(id) {
            Some(old) => {
                let changes = self.apply(Some(&old), None);
                self.release(old);
                changes
            }
            None => Vec::new(),
        }
    }

    /// The shared copy of `text`.
    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(t) = self.texts.get(text) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(text);
        self.texts.insert(t.clone());
        t
    }

    /// Lets go of a source's texts; those no other source carries leave `texts`.
    fn release(&mut self, old: Stored) {
        for (k, v) in old.labels.into_vec() {
            for t in [k, v] {
                // Held by `texts` and by `t` only: the last source carrying it is gone.
                if Arc::strong_count(&t) == 2 {
                    self.texts.remove(&*t);
                }
            }
        }
    }

    fn apply(&mut self, old: Option<&Stored>, new: Option<&Stored>) -> Vec<SetChange> {
        let empty = Stored::default();
        let (o, n) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        // When only labels changed, a set can change only if its selector reads a changed key.
        let only_labels = old.is_some() && new.is_some() && o.nets == n.nets && o.ports == n.ports;
        let candidates: Vec<SetId> = if only_labels {
            let mut ids = BTreeSet::new();
            for k in changed_keys(&o.labels, &n.labels) {
                if let Some(set_ids) = self.by_label.get(k) {
                    ids.extend(set_ids.iter().cloned());
                }
            }
            ids.into_iter().collect()
        } else {
            self.sets.keys().cloned().collect()
        };
        let mut changes = Vec::new();
        for id in candidates {
            let Some(entry) = self.sets.get_mut(&id) else {
                continue;
            };
            let before = contribution(&entry.key, o);
            let after = contribution(&entry.key, n);
            if before == after {
                continue;
            }
            let mut change = SetChange {
                id,
                added: BTreeSet::new(),
                removed: BTreeSet::new(),
            };
            for m in before.difference(&after) {
                if let Some(count) = entry.members.get_mut(m) {
                    *count -= 1;
                    if *count == 0 {
                        entry.members.remove(m);
                        change.removed.insert(m.clone());
                    }
                }
            }
            for m in after.difference(&before) {
                let count = entry.members.entry(m.clone()).or_insert(0);
                *count += 1;
                if *count == 1 {
                    change.added.insert(m.clone());
                }
            }
            if !change.added.is_empty() || !change.removed.is_empty() {
                changes.push(change);
            }
        }
        changes
    }
}

#[cfg(test)]
mod texts_tests {
    use super::*;

    fn src(labels: &[(&str, &str)], ip: &str) -> SetSource {
        SetSource {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            nets: vec![ip.parse().unwrap()],
            ports: Vec::new(),
        }
    }

    fn wl(name: &str) -> SourceId {
        SourceId::Workload {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn texts(index: &SetIndex) -> BTreeSet<String> {
        index.texts.iter().map(|t| t.to_string()).collect()
    }

    fn set(texts: &[&str]) -> BTreeSet<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn label_texts_are_shared_and_leave_with_their_last_source() {
        let mut index = SetIndex::new();
        let sel = index.ensure_set(SetKey::Selector(Selector::parse("app == 'a'").unwrap()));
        index.upsert_source(wl("w1"), src(&[("app", "a"), ("x", "x")], "10.0.0.1/32"));
        index.upsert_source(wl("w2"), src(&[("app", "a")], "10.0.0.2/32"));
        assert_eq!(texts(&index), set(&["app", "a", "x"]));
        // Both endpoints hold the same text for "app".
        let (a, b) = (&index.sources[&wl("w1")], &index.sources[&wl("w2")]);
        assert!(Arc::ptr_eq(&a.labels[0].0, &b.labels[0].0));
        assert_eq!(index.members(&sel).len(), 2);

        // A deep copy lets go of its texts on its own.
        let mut copy = index.clone();
        copy.remove_source(&wl("w1"));
        assert_eq!(texts(&copy), set(&["app", "a"]));
        assert_eq!(texts(&index), set(&["app", "a", "x"]));

        // A relabel drops the old value once no source carries it ("x" is key and value).
        index.upsert_source(wl("w1"), src(&[("app", "b")], "10.0.0.1/32"));
        assert_eq!(texts(&index), set(&["app", "a", "b"]));
        assert_eq!(index.members(&sel).len(), 1);
        index.remove_source(&wl("w2"));
        assert_eq!(texts(&index), set(&["app", "b"]));
        index.remove_source(&wl("w1"));
        assert!(texts(&index).is_empty());
        assert!(index.members(&sel).is_empty());
    }
}
