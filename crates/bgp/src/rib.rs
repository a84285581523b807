//! Routing information as plain data: normalized path attributes, the Loc-RIB with best-path
//! selection, and the iBGP/eBGP/route-reflector export rules (import/export policy is
//! `speaker::PolicyRule`).
//! Nothing here does I/O; the speaker calls these functions from its core loop.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::codec::{AsPath, Attribute, LargeCommunity, Origin, merge_as4_path};

/// Who a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "address")]
pub enum Source {
    /// Originated by this speaker (the agent's `originated` routes).
    Local,
    Peer(IpAddr),
}

/// Path attributes in the form the decision process and export rules use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Origin,
    /// Effective AS path (AS4_PATH already merged).
    pub as_path: AsPath,
    pub next_hop: Option<IpAddr>,
    pub link_local: Option<Ipv6Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// Optional transitive attributes we do not interpret, passed on.
    pub other: Vec<Attribute>,
}

impl PathAttrs {
    pub fn local(next_hop: Option<IpAddr>) -> PathAttrs {
        PathAttrs {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            next_hop,
            link_local: None,
            med: None,
            local_pref: None,
            atomic_aggregate: false,
            communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
            other: Vec::new(),
        }
    }

    /// Reads attributes of a received UPDATE. The next hop is filled in per family by the
    /// caller (NEXT_HOP for IPv4 NLRI, MP_REACH's for MP NLRI).
    pub fn from_attributes(attrs: &[Attribute]) -> PathAttrs {
        let mut p = PathAttrs::local(None);
        let mut as4 = None;
        for a in attrs {
            match a {
                Attribute::Origin(o) => p.origin = *o,
                Attribute::AsPath(path) => p.as_path = path.clone(),
                Attribute::As4Path(path) => as4 = Some(path.clone()),
                Attribute::NextHop(nh) => p.next_hop = Some(IpAddr::V4(*nh)),
                Attribute::Med(m) => p.med = Some(*m),
                Attribute::LocalPref(l) => p.local_pref = Some(*l),
                Attribute::AtomicAggregate => p.atomic_aggregate = true,
                Attribute::Communities(c) => p.communities = c.clone(),
                Attribute::LargeCommunities(c) => p.large_communities = c.clone(),
                Attribute::OriginatorId(o) => p.originator_id = Some(*o),
                Attribute::ClusterList(c) => p.cluster_list = c.clone(),
                Attribute::Unknown { flags, .. } if flags & crate::codec::FLAG_TRANSITIVE != 0 => {
                    p.other.push(a.clone())
                }
                _ => {}
            }
        }
        if let Some(as4) = as4 {
            p.as_path = merge_as4_path(&p.as_path, &as4);
        }
        p
    }
}

/// One candidate path for a prefix. The Loc-RIB keeps one shared copy of each distinct path
/// (see [`LocRib`]), so every prefix of an UPDATE points at the same `Path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    pub source: Source,
    /// Shared between the prefixes of one UPDATE.
    pub attrs: Arc<PathAttrs>,
    /// Learned over eBGP.
    pub ebgp: bool,
    /// Router id of the peer it came from (ours for local paths).
    pub peer_router_id: Ipv4Addr,
    /// The peer is our route-reflector client.
    pub from_rr_client: bool,
    /// Kept through the peer's graceful restart, waiting for its End-of-RIB.
    pub stale: bool,
}

const DEFAULT_LOCAL_PREF: u32 = 100;

/// The standard decision process subset (RFC 4271 9.1.2.2): `Less` means `a` is better.
pub fn compare(a: &Path, b: &Path) -> Ordering {
    // Local routes beat learned ones (like a static route's lower administrative distance).
    let local = |p: &Path| p.source != Source::Local;
    local(a)
        .cmp(&local(b))
        .then_with(|| {
            let lp = |p: &Path| p.attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF);
            lp(b).cmp(&lp(a))
        })
        .then_with(|| a.attrs.as_path.len().cmp(&b.attrs.as_path.len()))
        .then_with(|| a.attrs.origin.cmp(&b.attrs.origin))
        .then_with(|| {
            // MED only between paths from the same neighbouring AS; missing MED is 0.
            if a.attrs.as_path.first_as() == b.attrs.as_path.first_as() {
                a.attrs.med.unwrap_or(0).cmp(&b.attrs.med.unwrap_or(0))
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| b.ebgp.cmp(&a.ebgp))
        // Not stale before stale: fresh information wins ties.
        .then_with(|| a.stale.cmp(&b.stale))
        .then_with(|| {
            let id = |p: &Path| u32::from(p.attrs.originator_id.unwrap_or(p.peer_router_id));
            id(a).cmp(&id(b))
        })
        .then_with(|| a.attrs.cluster_list.len().cmp(&b.attrs.cluster_list.len()))
        .then_with(|| a.source.cmp(&b.source))
}

/// All paths per prefix, best first; the best one is recomputed on every change.
///
/// Memory per prefix is what decides whether a speaker holds a full table on a small node, so
/// the layout is compact (docs/BENCHMARKS.md compares it with BIRD): about 20 bytes per IPv4
/// prefix with one path.
/// - IPv4 and IPv6 prefixes live in separate maps keyed by `Ipv4Net` (5 bytes) and `Ipv6Net`
///   (17 bytes) rather than one map keyed by `IpNet` (18 bytes for either family);
/// - the value is a 4-byte index of the prefix's candidate list in `Lists`;
/// - each distinct [`Path`] is stored once (interned, as BIRD's attribute cache does), and so
///   is its one-path list: every prefix of an UPDATE, and of every UPDATE that carries the same
///   attributes, points at the same list. Lists of two or more paths (several peers announce
///   the prefix) are per prefix.
#[derive(Debug, Default)]
pub struct LocRib {
    v4: BTreeMap<Ipv4Net, ListId>,
    v6: BTreeMap<Ipv6Net, ListId>,
    lists: Lists,
    /// How many prefixes have their best path from each source (for the status counters,
    /// which would otherwise walk the whole RIB after every UPDATE).
    best_by_source: HashMap<Source, usize>,
}

/// Moves one prefix's best path from `old`'s count to `new`'s.
fn count_best(counts: &mut HashMap<Source, usize>, old: Option<Source>, new: Option<Source>) {
    if old == new {
        return;
    }
    if let Some(old) = old
        && let Some(n) = counts.get_mut(&old)
    {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&old);
        }
    }
    if let Some(new) = new {
        *counts.entry(new).or_default() += 1;
    }
}

/// Index of a candidate list in [`Lists`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ListId(u32);

/// The candidate lists prefixes point at, reference counted here (an `Arc` per prefix would
/// cost 8 bytes instead of 4). Functions returning a [`ListId`] hand the caller one reference.
#[derive(Debug, Default)]
struct Lists {
    slots: Vec<Slot>,
    /// Indexes of free slots, reused first.
    free: Vec<u32>,
    /// The one-path list of each distinct path, found by the path's value.
    singles: HashMap<ByValue, ListId>,
    /// The last one-path list handed out: the prefixes of one UPDATE (or of a run of UPDATEs
    /// with the same attributes) find it by comparing pointers instead of hashing attributes.
    last: Option<ListId>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Best first; empty while the slot is free.
    paths: Box<[Arc<Path>]>,
    refs: u32,
}

/// A path hashed and compared by value, so that the map can be searched with a `&Path`.
#[derive(Debug)]
struct ByValue(Arc<Path>);

impl PartialEq for ByValue {
    fn eq(&self, other: &ByValue) -> bool {
        *self.0 == *other.0
    }
}

impl Eq for ByValue {}

impl Hash for ByValue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (*self.0).hash(state)
    }
}

impl Borrow<Path> for ByValue {
    fn borrow(&self) -> &Path {
        &self.0
    }
}

impl Lists {
    fn paths(&self, id: ListId) -> &[Arc<Path>] {
        self.slots
            .get(id.0 as usize)
            .map(|s| &*s.paths)
            .unwrap_or(&[])
    }

    fn acquire(&mut self, id: ListId) {
        if let Some(s) = self.slots.get_mut(id.0 as usize) {
            s.refs += 1;
        }
    }

    fn release(&mut self, id: ListId) {
        let Some(s) = self.slots.get_mut(id.0 as usize) else {
            return;
        };
        s.refs = s.refs.saturating_sub(1);
        if s.refs > 0 {
            return;
        }
        let paths = std::mem::take(&mut s.paths);
        if let [one] = &*paths
            && self.singles.get(&**one) == Some(&id)
        {
            self.singles.remove(&**one);
        }
        if self.last == Some(id) {
            self.last = None;
        }
        self.free.push(id.0);
    }

    fn alloc(&mut self, paths: Box<[Arc<Path>]>) -> ListId {
        let slot = Slot { paths, refs: 1 };
        match self.free.pop() {
            Some(i) => {
                if let Some(s) = self.slots.get_mut(i as usize) {
                    *s = slot;
                }
                ListId(i)
            }
            None => {
                // A RIB with 2^32 lists would need 100 GB for the slots alone.
                let i = u32::try_from(self.slots.len()).expect("fewer than 2^32 path lists");
                self.slots.push(slot);
                ListId(i)
            }
        }
    }

    /// The one-path list of `path`.
    fn single(&mut self, path: Path) -> ListId {
        // `Arc<PathAttrs>` compares by pointer first, so this is cheap for one UPDATE's paths.
        let id = match self.last {
            Some(last) if self.paths(last).first().is_some_and(|p| **p == path) => {
                self.acquire(last);
                last
            }
            _ => match self.singles.get(&path).copied() {
                Some(id) => {
                    self.acquire(id);
                    id
                }
                None => self.new_single(Arc::new(path)),
            },
        };
        self.last = Some(id);
        id
    }

    /// The one-path list of a path already in the RIB.
    fn single_of(&mut self, path: &Arc<Path>) -> ListId {
        let id = match self.last {
            Some(last)
                if self
                    .paths(last)
                    .first()
                    .is_some_and(|p| Arc::ptr_eq(p, path)) =>
            {
                last
            }
            _ => match self.singles.get(&**path).copied() {
                Some(id) => id,
                None => return self.new_single(path.clone()),
            },
        };
        self.acquire(id);
        id
    }

    fn new_single(&mut self, path: Arc<Path>) -> ListId {
        let id = self.alloc(Box::new([path.clone()]));
        self.singles.insert(ByValue(path), id);
        id
    }

    /// The list for `paths` (sorted, best first); `None` when empty.
    fn list(&mut self, paths: Vec<Arc<Path>>) -> Option<ListId> {
        match paths.as_slice() {
            [] => None,
            [one] => Some(self.single_of(one)),
            _ => Some(self.alloc(paths.into_boxed_slice())),
        }
    }
}

/// A change in the best path of a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestChange {
    pub prefix: IpNet,
    pub old: Option<Path>,
    pub new: Option<Path>,
}

/// Applies `f` to the paths of `key`, re-sorts them and returns the old and new best path if
/// the best path changed (by value).
fn change_in<K: Ord>(
    map: &mut BTreeMap<K, ListId>,
    lists: &mut Lists,
    key: K,
    f: impl FnOnce(&mut Vec<Arc<Path>>),
) -> Option<(Option<Path>, Option<Path>)> {
    let old_id = map.get(&key).copied();
    let mut paths = old_id
        .map(|id| lists.paths(id).to_vec())
        .unwrap_or_default();
    let old = paths.first().cloned();
    f(&mut paths);
    paths.sort_by(|a, b| compare(a, b));
    let new = paths.first().cloned();
    match lists.list(paths) {
        Some(id) => {
            map.insert(key, id);
        }
        None => {
            map.remove(&key);
        }
    }
    if let Some(id) = old_id {
        lists.release(id);
    }
    (old != new).then(|| (old.map(|p| (*p).clone()), new.map(|p| (*p).clone())))
}

/// Marks the paths from `source` in every list of `map` stale, making one new list per old
/// list (`memo`, which holds a reference to both). Returns how many paths it marked.
fn mark_stale_in<K>(
    map: &mut BTreeMap<K, ListId>,
    lists: &mut Lists,
    source: Source,
    memo: &mut HashMap<ListId, ListId>,
    best_by_source: &mut HashMap<Source, usize>,
) -> usize {
    let mut n = 0;
    for id in map.values_mut() {
        let from_source = lists
            .paths(*id)
            .iter()
            .filter(|p| p.source == source)
            .count();
        if from_source == 0 {
            continue;
        }
        n += from_source;
        let new = match memo.get(id) {
            Some(new) => *new,
            None => {
                let mut held = Vec::new();
                let mut paths: Vec<Arc<Path>> = lists.paths(*id).to_vec();
                for p in paths.iter_mut().filter(|p| p.source == source) {
                    // Interned, so equal stale paths become one `Arc<Path>`.
                    let stale = lists.single(Path {
                        stale: true,
                        ..(**p).clone()
                    });
                    if let Some(s) = lists.paths(stale).first() {
                        *p = s.clone();
                    }
                    held.push(stale);
                }
                paths.sort_by(|a, b| compare(a, b));
                // Never `None`: the list keeps its length.
                let new = lists.list(paths).unwrap_or(*id);
                for s in held {
                    lists.release(s);
                }
                lists.acquire(*id);
                memo.insert(*id, new);
                new
            }
        };
        // A stale path loses ties, so the best path can move to another source.
        let best = |id: ListId| lists.paths(id).first().map(|p| p.source);
        count_best(best_by_source, best(*id), best(new));
        lists.acquire(new);
        lists.release(*id);
        *id = new;
    }
    n
}

impl LocRib {
    pub fn best(&self, prefix: &IpNet) -> Option<&Path> {
        let id = match prefix {
            IpNet::V4(n) => self.v4.get(n),
            IpNet::V6(n) => self.v6.get(n),
        }?;
        self.lists.paths(*id).first().map(|p| &**p)
    }

    /// Every prefix with at least one path: IPv4 before IPv6, each in address order (the order
    /// of `IpNet`).
    pub fn prefixes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn iter_best(&self) -> impl Iterator<Item = (IpNet, &Path)> {
        self.iter()
            .filter_map(|(k, v)| v.first().map(|p| (k, &**p)))
    }

    fn iter(&self) -> impl Iterator<Item = (IpNet, &[Arc<Path>])> {
        let v4 = self
            .v4
            .iter()
            .map(|(k, v)| (IpNet::V4(*k), self.lists.paths(*v)));
        let v6 = self
            .v6
            .iter()
            .map(|(k, v)| (IpNet::V6(*k), self.lists.paths(*v)));
        v4.chain(v6)
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// How many prefixes have their best path from `source`, without walking the RIB.
    pub fn best_count(&self, source: Source) -> usize {
        self.best_by_source.get(&source).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    fn change(&mut self, prefix: IpNet, f: impl FnOnce(&mut Vec<Arc<Path>>)) -> Option<BestChange> {
        let (old, new) = match prefix {
            IpNet::V4(n) => change_in(&mut self.v4, &mut self.lists, n, f),
            IpNet::V6(n) => change_in(&mut self.v6, &mut self.lists, n, f),
        }?;
        count_best(
            &mut self.best_by_source,
            old.as_ref().map(|p| p.source),
            new.as_ref().map(|p| p.source),
        );
        Some(BestChange { prefix, old, new })
    }

    /// Adds or replaces the path from `path.source`.
    pub fn insert(&mut self, prefix: IpNet, path: Path) -> Option<BestChange> {
        let single = self.lists.single(path);
        let path = self.lists.paths(single).first().cloned();
        let change = path.and_then(|path| {
            self.change(prefix, |paths| {
                paths.retain(|p| p.source != path.source);
                paths.push(path);
            })
        });
        self.lists.release(single);
        change
    }

    pub fn remove(&mut self, prefix: IpNet, source: Source) -> Option<BestChange> {
        let present = match &prefix {
            IpNet::V4(n) => self.v4.contains_key(n),
            IpNet::V6(n) => self.v6.contains_key(n),
        };
        if !present {
            return None;
        }
        self.change(prefix, |paths| paths.retain(|p| p.source != source))
    }

    /// Removes every path from `source` for which `pred` holds.
    pub fn remove_where(
        &mut self,
        source: Source,
        pred: impl Fn(&IpNet, &Path) -> bool,
    ) -> Vec<BestChange> {
        let affected: Vec<IpNet> = self
            .iter()
            .filter(|(k, v)| v.iter().any(|p| p.source == source && pred(k, p)))
            .map(|(k, _)| k)
            .collect();
        affected
            .into_iter()
            .filter_map(|prefix| {
                self.change(prefix, |paths| {
                    paths.retain(|p| !(p.source == source && pred(&prefix, p)))
                })
            })
            .collect()
    }

    /// Marks every path from `source` stale (graceful restart helper).
    pub fn mark_stale(&mut self, source: Source) -> usize {
        let mut memo = HashMap::new();
        let counts = &mut self.best_by_source;
        let n = mark_stale_in(&mut self.v4, &mut self.lists, source, &mut memo, counts);
        let n = n + mark_stale_in(&mut self.v6, &mut self.lists, source, &mut memo, counts);
        for (old, new) in memo {
            self.lists.release(old);
            self.lists.release(new);
        }
        n
    }
}

/// Accept or reject, as in Calico's BGPFilter rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Accept,
    Reject,
}

/// What the export rules need to know about the receiving peer.
#[derive(Debug, Clone)]
pub struct ExportPeer {
    pub address: IpAddr,
    pub ebgp: bool,
    pub local_as: u32,
    pub rr_client: bool,
    pub next_hop_self: bool,
    /// Never change the next hop, even on eBGP (Calico's nextHopMode Keep).
    pub next_hop_keep: bool,
    /// Our addresses to use as next hop (session address for its family, configured ones for
    /// the other family).
    pub self_v4: Option<Ipv4Addr>,
    pub self_v6: Option<Ipv6Addr>,
}

/// The speaker-wide part of the export decision.
#[derive(Debug, Clone)]
pub struct ExportCtx {
    pub router_id: Ipv4Addr,
    /// Set when this speaker reflects routes (has at least one RR client).
    pub cluster_id: Option<Ipv4Addr>,
}

/// Whether `path` may be advertised to `peer`, and with which attributes (RFC 4271 9.1.3,
/// RFC 4456 for reflection).
pub fn export(
    ctx: &ExportCtx,
    prefix: &IpNet,
    path: &Path,
    peer: &ExportPeer,
) -> Option<PathAttrs> {
    if path.source == Source::Peer(peer.address) {
        return None;
    }
    let learned_ibgp = matches!(path.source, Source::Peer(_)) && !path.ebgp;
    let mut a = (*path.attrs).clone();
    let self_nh = || match prefix {
        IpNet::V4(_) => peer.self_v4.map(IpAddr::V4),
        IpNet::V6(_) => peer.self_v6.map(IpAddr::V6),
    };
    if peer.ebgp {
        a.as_path.prepend(peer.local_as);
        a.local_pref = None;
        // RFC 4271 5.1.4: a MED received from another AS is not passed on to other ASes.
        if path.source != Source::Local {
            a.med = None;
        }
        a.originator_id = None;
        a.cluster_list.clear();
        if !peer.next_hop_keep || a.next_hop.is_none() {
            a.next_hop = self_nh();
            a.link_local = None;
        }
    } else {
        if learned_ibgp {
            // iBGP-learned routes go to iBGP peers only through reflection.
            let cluster_id = ctx.cluster_id?;
            if !path.from_rr_client && !peer.rr_client {
                return None;
            }
            if a.originator_id.is_none() {
                a.originator_id = Some(path.peer_router_id);
            }
            a.cluster_list.insert(0, cluster_id);
        }
        a.local_pref = Some(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
        if a.next_hop.is_none() || (peer.next_hop_self && !learned_ibgp) {
            a.next_hop = self_nh();
            a.link_local = None;
        }
    }
    a.next_hop?;
    Some(a)
}

/// Import checks on a received path: loops through our AS (eBGP), our router id or cluster id.
pub fn import_loop(attrs: &PathAttrs, local_as: u32, ebgp: bool, ctx: &ExportCtx) -> bool {
    (ebgp && attrs.as_path.contains(local_as))
        || attrs.originator_id == Some(ctx.router_id)
        || ctx
            .cluster_id
            .is_some_and(|c| attrs.cluster_list.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn path(source: Source, f: impl FnOnce(&mut Path)) -> Path {
        let mut p = Path {
            source,
            attrs: Arc::new(PathAttrs::local(Some("10.0.0.9".parse().unwrap()))),
            ebgp: false,
            peer_router_id: Ipv4Addr::new(10, 0, 0, 9),
            from_rr_client: false,
            stale: false,
        };
        f(&mut p);
        p
    }
    fn peer(s: &str) -> Source {
        Source::Peer(s.parse().unwrap())
    }

    #[test]
    fn decision_order() {
        let a = path(peer("10.0.0.1"), |p| {
            Arc::make_mut(&mut p.attrs).local_pref = Some(200)
        });
        let b = path(peer("10.0.0.2"), |p| {
            Arc::make_mut(&mut p.attrs).as_path = AsPath::default()
        });
        assert_eq!(compare(&a, &b), Ordering::Less, "higher local-pref wins");
        let a = path(peer("10.0.0.1"), |p| {
            Arc::make_mut(&mut p.attrs).as_path = AsPath::sequence(vec![1])
        });
        let b = path(peer("10.0.0.2"), |p| {
            Arc::make_mut(&mut p.attrs).as_path = AsPath::sequence(vec![1, 2])
        });
        assert_eq!(compare(&a, &b), Ordering::Less, "shorter AS path wins");
        let a = path(peer("10.0.0.1"), |p| {
            Arc::make_mut(&mut p.attrs).origin = Origin::Igp
        });
        let b = path(peer("10.0.0.2"), |p| {
            Arc::make_mut(&mut p.attrs).origin = Origin::Incomplete
        });
        assert_eq!(compare(&a, &b), Ordering::Less, "IGP origin wins");
        let a = path(peer("10.0.0.1"), |p| {
            Arc::make_mut(&mut p.attrs).as_path = AsPath::sequence(vec![7]);
            Arc::make_mut(&mut p.attrs).med = Some(5)
        });
        let b = path(peer("10.0.0.2"), |p| {
            Arc::make_mut(&mut p.attrs).as_path = AsPath::sequence(vec![7]);
            Arc::make_mut(&mut p.attrs).med = Some(1)
        });
        assert_eq!(
            compare(&a, &b),
            Ordering::Greater,
            "lower MED from same AS wins"
        );
        let b2 = path(peer("10.0.0.2"), |p| {
            Arc::make_mut(&mut p.attrs).as_path = AsPath::sequence(vec![8]);
            Arc::make_mut(&mut p.attrs).med = Some(1);
            p.peer_router_id = Ipv4Addr::new(10, 0, 0, 99);
        });
        assert_eq!(
            compare(&a, &b2),
            Ordering::Less,
            "MED ignored across ASes; router id decides"
        );
        let a = path(peer("10.0.0.1"), |p| p.ebgp = true);
        let b = path(peer("10.0.0.2"), |_| {});
        assert_eq!(compare(&a, &b), Ordering::Less, "eBGP over iBGP");
        let a = path(peer("10.0.0.1"), |p| {
            p.peer_router_id = Ipv4Addr::new(1, 1, 1, 1)
        });
        let b = path(peer("10.0.0.2"), |p| {
            p.peer_router_id = Ipv4Addr::new(2, 2, 2, 2)
        });
        assert_eq!(compare(&a, &b), Ordering::Less, "lower router id");
        let b = path(peer("10.0.0.2"), |p| {
            p.peer_router_id = Ipv4Addr::new(1, 1, 1, 1)
        });
        assert_eq!(compare(&a, &b), Ordering::Less, "lower peer address");
    }

    #[test]
    fn rib_reports_best_changes_only() {
        let mut rib = LocRib::default();
        let pfx: IpNet = "10.1.0.0/24".parse().unwrap();
        let a = path(peer("10.0.0.1"), |p| {
            Arc::make_mut(&mut p.attrs).local_pref = Some(50)
        });
        let b = path(peer("10.0.0.2"), |_| {});
        assert!(rib.insert(pfx, a.clone()).is_some());
        let c = rib.insert(pfx, b.clone()).expect("b is better");
        assert_eq!(c.new.as_ref().map(|p| p.source), Some(b.source));
        assert!(rib.remove(pfx, a.source).is_none(), "best unchanged");
        let c = rib.remove(pfx, b.source).expect("withdrawn");
        assert!(c.new.is_none());
        assert!(rib.is_empty());
    }

    #[test]
    fn stale_paths_lose_ties_and_are_swept() {
        let mut rib = LocRib::default();
        let pfx: IpNet = "10.1.0.0/24".parse().unwrap();
        rib.insert(pfx, path(peer("10.0.0.1"), |_| {}));
        assert_eq!(rib.mark_stale(peer("10.0.0.1")), 1);
        assert!(rib.best(&pfx).is_some_and(|p| p.stale));
        let ch = rib.remove_where(peer("10.0.0.1"), |_, p| p.stale);
        assert_eq!(ch.len(), 1);
        assert!(rib.best(&pfx).is_none());
    }

    fn ctx(rr: bool) -> ExportCtx {
        ExportCtx {
            router_id: Ipv4Addr::new(10, 0, 0, 100),
            cluster_id: rr.then_some(Ipv4Addr::new(1, 2, 3, 4)),
        }
    }
    fn epeer(addr: &str, ebgp: bool, rr_client: bool) -> ExportPeer {
        ExportPeer {
            address: addr.parse().unwrap(),
            ebgp,
            local_as: 64512,
            rr_client,
            next_hop_self: false,
            next_hop_keep: false,
            self_v4: Some(Ipv4Addr::new(10, 0, 0, 100)),
            self_v6: Some("fd00::100".parse().unwrap()),
        }
    }

    #[test]
    fn ebgp_export_prepends_and_sets_next_hop_self() {
        let pfx: IpNet = "10.1.0.0/24".parse().unwrap();
        let p = path(peer("10.0.0.1"), |p| {
            Arc::make_mut(&mut p.attrs).local_pref = Some(300);
            Arc::make_mut(&mut p.attrs).med = Some(9);
            Arc::make_mut(&mut p.attrs).as_path = AsPath::sequence(vec![65001]);
            p.ebgp = true;
        });
        let a = export(&ctx(false), &pfx, &p, &epeer("10.0.0.2", true, false)).expect("exported");
        assert_eq!(a.as_path, AsPath::sequence(vec![64512, 65001]));
        assert_eq!(a.local_pref, None);
        assert_eq!(a.med, None);
        assert_eq!(a.next_hop, Some("10.0.0.100".parse().unwrap()));
        let v6: IpNet = "fd10::/64".parse().unwrap();
        let a = export(&ctx(false), &v6, &p, &epeer("10.0.0.2", true, false)).expect("exported");
        assert_eq!(a.next_hop, Some("fd00::100".parse().unwrap()));
    }

    #[test]
    fn ibgp_split_horizon_and_reflection() {
        let pfx: IpNet = "10.1.0.0/24".parse().unwrap();
        let from_nonclient = path(peer("10.0.0.1"), |_| {});
        let from_client = path(peer("10.0.0.3"), |p| p.from_rr_client = true);
        let nonclient = epeer("10.0.0.2", false, false);
        let client = epeer("10.0.0.4", false, true);
        assert!(export(&ctx(false), &pfx, &from_nonclient, &nonclient).is_none());
        assert!(export(&ctx(true), &pfx, &from_nonclient, &nonclient).is_none());
        let a = export(&ctx(true), &pfx, &from_nonclient, &client).expect("reflected to client");
        assert_eq!(a.originator_id, Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(a.cluster_list, vec![Ipv4Addr::new(1, 2, 3, 4)]);
        assert_eq!(
            a.next_hop,
            Some("10.0.0.9".parse().unwrap()),
            "next hop kept"
        );
        assert!(export(&ctx(true), &pfx, &from_client, &nonclient).is_some());
        assert!(
            export(
                &ctx(true),
                &pfx,
                &from_client,
                &epeer("10.0.0.3", false, true)
            )
            .is_none(),
            "not back to sender"
        );
        let local = path(Source::Local, |p| {
            Arc::make_mut(&mut p.attrs).next_hop = None
        });
        let a = export(&ctx(false), &pfx, &local, &nonclient).expect("local to ibgp");
        assert_eq!(a.local_pref, Some(100));
        assert_eq!(a.next_hop, Some("10.0.0.100".parse().unwrap()));
    }

    #[test]
    fn loops_are_detected() {
        let c = ctx(true);
        let mut a = PathAttrs::local(None);
        a.as_path = AsPath::sequence(vec![65001, 64512]);
        assert!(import_loop(&a, 64512, true, &c));
        assert!(!import_loop(&a, 64512, false, &c));
        let mut a = PathAttrs::local(None);
        a.cluster_list = vec![Ipv4Addr::new(1, 2, 3, 4)];
        assert!(import_loop(&a, 64512, false, &c));
        let mut a = PathAttrs::local(None);
        a.originator_id = Some(c.router_id);
        assert!(import_loop(&a, 64512, false, &c));
    }

    /// The compact layout adds no per-prefix allocation for single-path prefixes: the
    /// prefixes of one UPDATE share one list, and equal paths from different UPDATEs (equal
    /// attributes in different `Arc`s) are merged.
    #[test]
    fn prefixes_share_one_path_list() {
        let mut rib = LocRib::default();
        let mk = || path(peer("10.0.0.1"), |_| {});
        for i in 0..100u32 {
            let pfx = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap());
            // A fresh `Arc<PathAttrs>` every time, as from separate UPDATEs.
            rib.insert(pfx, mk());
        }
        let lists: HashSet<ListId> = rib.v4.values().copied().collect();
        assert_eq!(lists.len(), 1);
        assert_eq!(rib.lists.slots.len(), 1, "one list allocated");
        assert_eq!(rib.lists.slots[0].refs, 100);
        assert_eq!(rib.lists.singles.len(), 1);
        assert_eq!(std::mem::size_of::<ListId>(), 4);
    }

    #[test]
    fn unused_lists_are_freed_and_reused() {
        let mut rib = LocRib::default();
        let pfx: IpNet = "10.1.0.0/24".parse().unwrap();
        for i in 0..1000u32 {
            rib.insert(
                pfx,
                path(peer("10.0.0.1"), |p| {
                    Arc::make_mut(&mut p.attrs).med = Some(i)
                }),
            );
        }
        let live = rib.lists.slots.iter().filter(|s| s.refs > 0).count();
        assert_eq!(live, 1);
        assert!(
            rib.lists.slots.len() <= 2,
            "{} slots",
            rib.lists.slots.len()
        );
        assert_eq!(rib.lists.singles.len(), 1);
        assert_eq!(rib.best(&pfx).and_then(|p| p.attrs.med), Some(999));
        rib.remove(pfx, peer("10.0.0.1"));
        assert!(
            rib.lists
                .slots
                .iter()
                .all(|s| s.refs == 0 && s.paths.is_empty())
        );
        assert!(rib.lists.singles.is_empty());
    }

    /// The Loc-RIB before it was made compact: one `BTreeMap<IpNet, Vec<Path>>`. The compact
    /// one must behave exactly like it.
    #[derive(Default)]
    struct ModelRib(BTreeMap<IpNet, Vec<Path>>);

    impl ModelRib {
        fn change(&mut self, prefix: IpNet, f: impl FnOnce(&mut Vec<Path>)) -> Option<BestChange> {
            let paths = self.0.entry(prefix).or_default();
            let old = paths.first().cloned();
            f(paths);
            paths.sort_by(compare);
            let new = paths.first().cloned();
            if paths.is_empty() {
                self.0.remove(&prefix);
            }
            (old != new).then_some(BestChange { prefix, old, new })
        }
        fn insert(&mut self, prefix: IpNet, path: Path) -> Option<BestChange> {
            self.change(prefix, |paths| {
                paths.retain(|p| p.source != path.source);
                paths.push(path);
            })
        }
        fn remove(&mut self, prefix: IpNet, source: Source) -> Option<BestChange> {
            if !self.0.contains_key(&prefix) {
                return None;
            }
            self.change(prefix, |paths| paths.retain(|p| p.source != source))
        }
        fn remove_where(
            &mut self,
            source: Source,
            pred: impl Fn(&IpNet, &Path) -> bool,
        ) -> Vec<BestChange> {
            let affected: Vec<IpNet> = self
                .0
                .iter()
                .filter(|(k, v)| v.iter().any(|p| p.source == source && pred(k, p)))
                .map(|(k, _)| *k)
                .collect();
            affected
                .into_iter()
                .filter_map(|prefix| {
                    self.change(prefix, |paths| {
                        paths.retain(|p| !(p.source == source && pred(&prefix, p)))
                    })
                })
                .collect()
        }
        fn mark_stale(&mut self, source: Source) -> usize {
            let mut n = 0;
            for paths in self.0.values_mut() {
                for p in paths.iter_mut().filter(|p| p.source == source) {
                    p.stale = true;
                    n += 1;
                }
                paths.sort_by(compare);
            }
            n
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            prefix: usize,
            source: usize,
            attrs: usize,
            stale: bool,
        },
        Remove {
            prefix: usize,
            source: usize,
        },
        RemoveStale {
            source: usize,
            v6_only: bool,
        },
        RemoveAll {
            source: usize,
        },
        MarkStale {
            source: usize,
        },
    }

    fn prefix_of(i: usize) -> IpNet {
        let v4 = [
            "10.0.0.0/24",
            "10.0.1.0/24",
            "10.0.0.0/16",
            "192.168.0.0/26",
            "0.0.0.0/0",
        ];
        let v6 = ["fd00::/64", "fd00:1::/64", "fd00::/48", "::/0"];
        let all: Vec<&str> = v4.iter().chain(v6.iter()).copied().collect();
        all[i % all.len()].parse().unwrap()
    }

    fn source_of(i: usize) -> Source {
        match i % 4 {
            0 => Source::Local,
            1 => peer("10.0.0.1"),
            2 => peer("10.0.0.2"),
            _ => peer("fd00::3"),
        }
    }

    fn path_of(source: usize, attrs: usize, stale: bool) -> Path {
        path(source_of(source), |p| {
            let a = Arc::make_mut(&mut p.attrs);
            match attrs % 4 {
                0 => {}
                1 => a.local_pref = Some(200),
                2 => a.as_path = AsPath::sequence(vec![65001, 65002]),
                _ => a.med = Some(7),
            }
            p.ebgp = source % 2 == 1;
            p.peer_router_id = Ipv4Addr::new(1, 1, 1, source as u8);
            p.stale = stale;
        })
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..9usize, 0..4usize, 0..4usize, any::<bool>()).prop_map(
                |(prefix, source, attrs, stale)| Op::Insert { prefix, source, attrs, stale }
            ),
            2 => (0..9usize, 0..4usize).prop_map(|(prefix, source)| Op::Remove { prefix, source }),
            1 => (0..4usize, any::<bool>())
                .prop_map(|(source, v6_only)| Op::RemoveStale { source, v6_only }),
            1 => (0..4usize).prop_map(|source| Op::RemoveAll { source }),
            1 => (0..4usize).prop_map(|source| Op::MarkStale { source }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn compact_rib_behaves_as_the_plain_one(ops in proptest::collection::vec(op(), 1..80)) {
            let mut rib = LocRib::default();
            let mut model = ModelRib::default();
            for op in ops {
                match op {
                    Op::Insert { prefix, source, attrs, stale } => {
                        let p = path_of(source, attrs, stale);
                        proptest::prop_assert_eq!(
                            rib.insert(prefix_of(prefix), p.clone()),
                            model.insert(prefix_of(prefix), p)
                        );
                    }
                    Op::Remove { prefix, source } => proptest::prop_assert_eq!(
                        rib.remove(prefix_of(prefix), source_of(source)),
                        model.remove(prefix_of(prefix), source_of(source))
                    ),
                    Op::RemoveStale { source, v6_only } => {
                        let pred = |n: &IpNet, p: &Path| {
                            p.stale && (!v6_only || matches!(n, IpNet::V6(_)))
                        };
                        proptest::prop_assert_eq!(
                            rib.remove_where(source_of(source), pred),
                            model.remove_where(source_of(source), pred)
                        );
                    }
                    Op::RemoveAll { source } => proptest::prop_assert_eq!(
                        rib.remove_where(source_of(source), |_, _| true),
                        model.remove_where(source_of(source), |_, _| true)
                    ),
                    Op::MarkStale { source } => proptest::prop_assert_eq!(
                        rib.mark_stale(source_of(source)),
                        model.mark_stale(source_of(source))
                    ),
                }
                let ours: Vec<(IpNet, Vec<Path>)> = rib
                    .iter()
                    .map(|(k, v)| (k, v.iter().map(|p| (**p).clone()).collect()))
                    .collect();
                let theirs: Vec<(IpNet, Vec<Path>)> =
                    model.0.iter().map(|(k, v)| (*k, v.clone())).collect();
                proptest::prop_assert_eq!(ours, theirs);
                proptest::prop_assert_eq!(rib.len(), model.0.len());
                for (k, v) in &model.0 {
                    proptest::prop_assert_eq!(rib.best(k), v.first());
                }
                for s in 0..4 {
                    let source = source_of(s);
                    let expected = model.0.values().filter(|v| v[0].source == source).count();
                    proptest::prop_assert_eq!(rib.best_count(source), expected);
                }
                // Every list's count is the number of prefixes pointing at it; free ones are
                // empty and no longer found as singles.
                let mut users: HashMap<ListId, u32> = HashMap::new();
                for id in rib.v4.values().chain(rib.v6.values()) {
                    *users.entry(*id).or_default() += 1;
                }
                for (i, slot) in rib.lists.slots.iter().enumerate() {
                    let id = ListId(i as u32);
                    proptest::prop_assert_eq!(slot.refs, users.get(&id).copied().unwrap_or(0));
                    proptest::prop_assert_eq!(slot.refs == 0, slot.paths.is_empty());
                }
                for id in rib.lists.singles.values() {
                    proptest::prop_assert!(rib.lists.slots[id.0 as usize].refs > 0);
                }
            }
        }
    }
}
