//! The BGP speaker service: desired-state API for the node agent, one task per session.
//!
//! ```text
//!   agent ── Speaker::set_config ──┐                     ┌──► RouteEvent (mpsc) ──► agent
//!                                  ▼                     │      (best-path changes to install)
//!                        ┌───────────────────┐           │
//!  listener task ─Incoming(stream)─►  core task  ─────────┘
//!  (accept, MD5 keys     │  config diff, Loc-RIB,         ◄── StaleTimeout / SyncDeadline
//!   on listening socket) │  Adj-RIB-Out per peer,             (sleep tasks it spawns)
//!                        │  status map (Arc<Mutex>) ──► Speaker::status()
//!                        └──┬────────────▲───────┘
//!            SessionCmd     │            │  CoreMsg::Session{peer, generation, event}
//!  (Send msgs, Incoming,    ▼            │  (state, established, update, down)
//!   Stop)          ┌───────────────────────────┐
//!                  │ session task (per peer)   │ owns Fsm, timers, the TCP write half
//!                  │   ├─ connect task (1 shot)│ ── ConnectResult ──► session
//!                  │   └─ reader task          │ ── raw frames ──────► session (decodes)
//!                  └───────────────────────────┘
//! ```
//!
//! Every handler is a synchronous function over the core state; only the tasks above await.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::codec::{
    self, Attribute, Capability, Ctx, Family, GracefulRestart, LargeCommunity, Message, MpNextHop,
    Notification, RefreshSubtype, RouteRefresh, Update, notif,
};
use crate::fsm::{self, DownReason, Fsm, FsmConfig, Input, Negotiated, Output, State, Timer};
use crate::rib::{self, Action, ExportCtx, ExportPeer, LocRib, Path, PathAttrs, Source};
use crate::sockopt;

/// What the agent wants the speaker to do. Every call to [`Speaker::set_config`] replaces the
/// whole desired state; the speaker changes only what differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// Default: `::` (dual stack).
    #[serde(default)]
    pub listen_addr: Option<IpAddr>,
    #[serde(default = "default_port")]
    pub listen_port: u16,
    /// Next hop for IPv4 routes sent over IPv6 sessions (and for next-hop-self when the
    /// session is IPv6); IPv4 sessions use their local address.
    #[serde(default)]
    pub next_hop_v4: Option<Ipv4Addr>,
    #[serde(default)]
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Cluster id when this node is a route reflector (Calico's routeReflectorClusterID).
    /// Without it, `route_reflector_client` peers are treated as plain iBGP peers.
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    /// This process restarted with forwarding state preserved: announce the Restart State bit
    /// (RFC 4724) in the first OPEN to each peer.
    #[serde(default)]
    pub restarted: bool,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub originated: Vec<Route>,
    /// Communities added to every exported route inside a CIDR (Calico's BGPConfiguration
    /// `prefixAdvertisements`), after the peer's export rules accepted it.
    #[serde(default)]
    pub prefix_communities: Vec<PrefixCommunities>,
}

/// Communities that every route announced inside `cidr` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrefixCommunities {
    pub cidr: IpNet,
    #[serde(default)]
    pub communities: Vec<u32>,
    #[serde(default)]
    pub large_communities: Vec<LargeCommunity>,
}

/// A standard (RFC 1997, `aa:nn` packed into 32 bits) or large (RFC 8092) community.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Community {
    Standard(u32),
    Large(LargeCommunity),
}

impl Community {
    fn carried_by(&self, a: &PathAttrs) -> bool {
        match self {
            Community::Standard(c) => a.communities.contains(c),
            Community::Large(c) => a.large_communities.contains(c),
        }
    }

    /// Adds the community to `a` unless it is already there (communities are a set).
    fn add_to(&self, a: &mut PathAttrs) {
        match *self {
            Community::Standard(c) if !a.communities.contains(&c) => a.communities.push(c),
            Community::Large(c) if !a.large_communities.contains(&c) => a.large_communities.push(c),
            _ => {}
        }
    }
}

/// A change a policy rule makes to a route it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteOperation {
    AddCommunity(Community),
    /// The path starts with these ASNs in this order (before the eBGP prepend of our own AS).
    PrependAsPath(Vec<u32>),
}

/// One import or export rule, with Calico's BGPFilter semantics: a route matches when every
/// condition that is set holds; in an ordered list the first matching rule decides, its
/// operations apply when it accepts, and a route no rule matches is accepted.
///
/// In JSON only `action` is required (`cidr`, `minLen`, `maxLen`, `familyV6`, … default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Prefixes inside `cidr` with length in `[min_len, max_len]` (defaults: the CIDR's own
    /// length and the family maximum).
    #[serde(default)]
    pub cidr: Option<IpNet>,
    #[serde(default)]
    pub min_len: Option<u8>,
    #[serde(default)]
    pub max_len: Option<u8>,
    /// Negates the `cidr` condition (Calico's `NotIn` / `NotEqual`).
    #[serde(default)]
    pub negate: bool,
    /// Only IPv6 (`Some(true)`) or only IPv4 (`Some(false)`) prefixes.
    #[serde(default)]
    pub family_v6: Option<bool>,
    /// Only routes learned from a peer (Calico's `source: RemotePeers`); on import every route
    /// is from a peer.
    #[serde(default)]
    pub remote_peers_only: bool,
    /// Only routes carrying this community.
    #[serde(default)]
    pub community: Option<Community>,
    /// Only routes whose AS path begins with this sequence.
    #[serde(default)]
    pub as_path_prefix: Vec<u32>,
    pub action: Action,
    /// Applied, in order, to an accepted route.
    #[serde(default)]
    pub operations: Vec<RouteOperation>,
}

impl PolicyRule {
    /// A rule that decides every route of one family (or of both, with `None`).
    pub fn all(action: Action, family_v6: Option<bool>) -> PolicyRule {
        PolicyRule {
            cidr: None,
            min_len: None,
            max_len: None,
            negate: false,
            family_v6,
            remote_peers_only: false,
            community: None,
            as_path_prefix: Vec::new(),
            action,
            operations: Vec::new(),
        }
    }

    fn cidr_matches(&self, prefix: &IpNet) -> bool {
        let Some(c) = &self.cidr else { return true };
        if !c.contains(prefix) {
            return false;
        }
        let max = if matches!(prefix, IpNet::V6(_)) {
            128
        } else {
            32
        };
        let len = prefix.prefix_len();
        len >= self.min_len.unwrap_or(c.prefix_len()) && len <= self.max_len.unwrap_or(max)
    }

    /// Whether the rule applies to `prefix` with attributes `attrs` from `source`.
    pub fn matches(&self, prefix: &IpNet, attrs: &PathAttrs, source: Source) -> bool {
        let is_v6 = matches!(prefix, IpNet::V6(_));
        self.family_v6.is_none_or(|v6| v6 == is_v6)
            && (self.cidr.is_none() || self.cidr_matches(prefix) != self.negate)
            && (!self.remote_peers_only || matches!(source, Source::Peer(_)))
            && self.community.is_none_or(|c| c.carried_by(attrs))
            && as_path_starts_with(&attrs.as_path, &self.as_path_prefix)
    }
}

/// Whether the leading ASNs of `path` (across sequence segments) are `prefix`.
fn as_path_starts_with(path: &codec::AsPath, prefix: &[u32]) -> bool {
    let mut want = prefix.iter();
    for seg in &path.segments {
        if seg.kind != codec::SegmentKind::Sequence {
            return want.len() == 0;
        }
        for asn in &seg.asns {
            match want.next() {
                None => return true,
                Some(w) if w != asn => return false,
                Some(_) => {}
            }
        }
    }
    want.len() == 0
}

/// The verdict of an ordered rule list on one route: `None` rejects; otherwise the route's
/// attributes, changed only when the accepting rule has operations.
pub fn apply_policy(
    rules: &[PolicyRule],
    prefix: &IpNet,
    attrs: &Arc<PathAttrs>,
    source: Source,
) -> Option<Arc<PathAttrs>> {
    let Some(rule) = rules.iter().find(|r| r.matches(prefix, attrs, source)) else {
        return Some(attrs.clone());
    };
    if rule.action == Action::Reject {
        return None;
    }
    if rule.operations.is_empty() {
        return Some(attrs.clone());
    }
    let mut a = (**attrs).clone();
    for op in &rule.operations {
        match op {
            RouteOperation::AddCommunity(c) => c.add_to(&mut a),
            RouteOperation::PrependAsPath(asns) => {
                for asn in asns.iter().rev() {
                    a.as_path.prepend(*asn);
                }
            }
        }
    }
    Some(Arc::new(a))
}

fn default_port() -> u16 {
    179
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NextHopMode {
    /// eBGP: self; iBGP: keep learned, self for our own routes (BGP default, Calico `Auto`).
    #[default]
    Auto,
    /// Always set ourselves as next hop (Calico `Self`).
    #[serde(rename = "Self")]
    SelfMode,
    /// Never change a learned next hop, even on eBGP (Calico `Keep`).
    Keep,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerConfig {
    pub address: IpAddr,
    #[serde(default = "default_port")]
    pub port: u16,
    pub remote_as: u32,
    /// Overrides [`SpeakerConfig::local_as`] for this session (Calico localASNumber).
    #[serde(default)]
    pub local_as: Option<u32>,
    /// TCP-MD5 key (RFC 2385).
    #[serde(default)]
    pub password: Option<String>,
    /// GTSM: accept packets from at most this many hops away.
    #[serde(default)]
    pub ttl_security: Option<u8>,
    #[serde(default)]
    pub keepalive: Option<u16>,
    /// Proposed hold time, default 90 s.
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// Our restart time announced in the graceful-restart capability (default 120 s); `Some(0)`
    /// disables graceful restart for this peer.
    #[serde(default)]
    pub graceful_restart_time: Option<u16>,
    #[serde(default)]
    pub next_hop_mode: NextHopMode,
    #[serde(default)]
    pub route_reflector_client: bool,
    #[serde(default)]
    pub import: Vec<PolicyRule>,
    #[serde(default)]
    pub export: Vec<PolicyRule>,
    #[serde(default)]
    pub passive: bool,
    /// Address families to exchange; default: the family of `address` (Calico runs separate
    /// IPv4 and IPv6 sessions).
    #[serde(default)]
    pub families: Option<Vec<AfiName>>,
    /// First connect-retry delay in seconds (default 5, doubling up to 120).
    #[serde(default)]
    pub connect_retry: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfiName {
    Ipv4,
    Ipv6,
}

impl AfiName {
    pub fn family(self) -> Family {
        match self {
            AfiName::Ipv4 => Family::IPV4_UNICAST,
            AfiName::Ipv6 => Family::IPV6_UNICAST,
        }
    }
    pub fn of(addr: IpAddr) -> AfiName {
        if addr.is_ipv4() {
            AfiName::Ipv4
        } else {
            AfiName::Ipv6
        }
    }
}

impl PeerConfig {
    fn families(&self) -> Vec<Family> {
        match &self.families {
            Some(f) if !f.is_empty() => f.iter().map(|a| a.family()).collect(),
            _ => vec![Family::of(self.address)],
        }
    }

    /// Whether a change from `self` to `new` needs the session to restart.
    fn needs_restart(&self, new: &PeerConfig) -> bool {
        let strip = |p: &PeerConfig| PeerConfig {
            import: Vec::new(),
            export: Vec::new(),
            next_hop_mode: NextHopMode::Auto,
            ..p.clone()
        };
        strip(self) != strip(new)
    }
}

/// A route this node originates (its IPAM blocks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub prefix: IpNet,
    /// Default: ourselves (the session's local address).
    #[serde(default)]
    pub next_hop: Option<IpAddr>,
    #[serde(default)]
    pub communities: Vec<u32>,
    #[serde(default)]
    pub large_communities: Vec<LargeCommunity>,
}

/// A best-path change for the agent to program into the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "event"
)]
pub enum RouteEvent {
    /// `prefix` is reachable via `next_hop`, learned from peer `learned_from`.
    Best {
        prefix: IpNet,
        next_hop: IpAddr,
        learned_from: IpAddr,
        /// Held through the peer's graceful restart.
        stale: bool,
    },
    /// No learned path for `prefix` any more (or our own route won).
    Withdrawn { prefix: IpNet },
    /// Every peer that came up since the speaker started has sent End-of-RIB (or the restart
    /// deadline passed): routes the agent installed before a restart and has not seen since
    /// can be removed.
    Synced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub address: IpAddr,
    /// FSM state name (`Idle`, `Connect`, `Active`, `OpenSent`, `OpenConfirm`, `Established`).
    pub state: String,
    /// When the state last changed (JSON: seconds since the Unix epoch).
    #[serde(with = "unix_seconds")]
    pub since: SystemTime,
    /// Last error or `Established`.
    pub info: String,
    /// Transport family (which `calicoctl node status` table the peer goes in).
    pub afi: AfiName,
    pub prefixes_received: usize,
}

mod unix_seconds {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Ok(UNIX_EPOCH + Duration::from_secs(u64::deserialize(d)?))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("the speaker task has stopped")]
    Stopped,
}

/// Handle to the running speaker. Dropping every handle stops the speaker.
#[derive(Clone)]
pub struct Speaker {
    tx: mpsc::UnboundedSender<CoreMsg>,
    status: Arc<Mutex<BTreeMap<IpAddr, PeerStatus>>>,
}

impl Speaker {
    /// Starts the core task on the current tokio runtime. Returns the handle and the stream of
    /// best-path changes.
    pub fn start() -> (Speaker, mpsc::UnboundedReceiver<RouteEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (route_tx, route_rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        let core = Core {
            cfg: None,
            tx: tx.downgrade(),
            routes: route_tx,
            status: status.clone(),
            rib: LocRib::default(),
            peers: HashMap::new(),
            listener: None,
            next_generation: 0,
            synced: false,
        };
        tokio::spawn(core.run(rx));
        (Speaker { tx, status }, route_rx)
    }

    /// Replaces the desired state.
    pub fn set_config(&self, cfg: SpeakerConfig) -> Result<(), SpeakerError> {
        self.tx
            .send(CoreMsg::SetConfig(Box::new(cfg)))
            .map_err(|_| SpeakerError::Stopped)
    }

    /// Session status of every configured peer, by address.
    pub fn status(&self) -> Vec<PeerStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

enum CoreMsg {
    SetConfig(Box<SpeakerConfig>),
    Incoming(TcpStream, SocketAddr),
    Session {
        peer: IpAddr,
        generation: u64,
        event: SessionEvent,
    },
    StaleTimeout {
        peer: IpAddr,
        generation: u64,
    },
    SyncDeadline,
}

enum SessionEvent {
    State(State),
    Established {
        negotiated: Negotiated,
        local: IpAddr,
    },
    Down(DownReason),
    Update(Update),
    RouteRefresh(RouteRefresh),
}

enum SessionCmd {
    Send(Vec<Message>),
    Incoming(TcpStream),
    Stop(u8),
}

struct ListenerHandle {
    addr: SocketAddr,
    fd: std::os::fd::RawFd,
    is_v6: bool,
    task: JoinHandle<()>,
    /// Peers whose MD5 key is installed on the listening socket.
    keys: HashMap<IpAddr, String>,
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct EstablishedInfo {
    negotiated: Negotiated,
    local: IpAddr,
}

struct PeerRuntime {
    cfg: PeerConfig,
    generation: u64,
    cmd: mpsc::UnboundedSender<SessionCmd>,
    task: JoinHandle<()>,
    up: Option<EstablishedInfo>,
    /// What we advertised, per prefix.
    adj_out: HashMap<IpNet, PathAttrs>,
    /// Graceful-restart helper: families whose stale paths wait for End-of-RIB.
    stale_families: HashSet<Family>,
    stale_timer: Option<JoinHandle<()>>,
    /// Families for which End-of-RIB arrived since the session came up.
    eor: HashSet<Family>,
    /// Whether this peer has been up at least once since we started (for `Synced`).
    ever_up: bool,
    received: usize,
}

struct Core {
    cfg: Option<SpeakerConfig>,
    /// Weak so that dropping every `Speaker` handle ends the core loop.
    tx: mpsc::WeakUnboundedSender<CoreMsg>,
    routes: mpsc::UnboundedSender<RouteEvent>,
    status: Arc<Mutex<BTreeMap<IpAddr, PeerStatus>>>,
    rib: LocRib,
    peers: HashMap<IpAddr, PeerRuntime>,
    listener: Option<ListenerHandle>,
    next_generation: u64,
    synced: bool,
}

/// Message size budget for packing prefixes (below the 4096 limit, leaving room for the
/// attribute header growing to extended length).
const PACK_LIMIT: usize = codec::MAX_MESSAGE_LEN - 8;

impl Core {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<CoreMsg>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                CoreMsg::SetConfig(cfg) => self.set_config(*cfg),
                CoreMsg::Incoming(stream, from) => self.incoming(stream, from),
                CoreMsg::Session {
                    peer,
                    generation,
                    event,
                } => {
                    if self
                        .peers
                        .get(&peer)
                        .is_some_and(|p| p.generation == generation)
                    {
                        self.session_event(peer, event);
                    }
                }
                CoreMsg::StaleTimeout { peer, generation } => {
                    if self
                        .peers
                        .get(&peer)
                        .is_some_and(|p| p.generation == generation)
                    {
                        info!(%peer, "graceful restart timer expired, removing stale routes");
                        self.sweep_stale(peer, None);
                    }
                }
                CoreMsg::SyncDeadline => self.mark_synced(),
            }
        }
        for (_, p) in self.peers.drain() {
            let _ = p.cmd.send(SessionCmd::Stop(notif::CEASE_ADMIN_SHUTDOWN));
        }
    }

    fn sender(&self) -> Option<mpsc::UnboundedSender<CoreMsg>> {
        self.tx.upgrade()
    }

    fn export_ctx(&self) -> Option<ExportCtx> {
        let cfg = self.cfg.as_ref()?;
        let reflects = self.peers.values().any(|p| p.cfg.route_reflector_client);
        Some(ExportCtx {
            router_id: cfg.router_id,
            cluster_id: cfg.cluster_id.filter(|_| reflects),
        })
    }

    fn set_status(&self, peer: IpAddr, f: impl FnOnce(&mut PeerStatus)) {
        let mut map = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(peer).or_insert_with(|| PeerStatus {
            address: peer,
            state: State::Idle.to_string(),
            since: SystemTime::now(),
            info: String::new(),
            afi: AfiName::of(peer),
            prefixes_received: 0,
        });
        f(entry);
    }

    // ------------------------------------------------------------ configuration

    fn set_config(&mut self, new: SpeakerConfig) {
        let old = self.cfg.replace(new.clone());
        let identity_changed = old
            .as_ref()
            .is_some_and(|o| o.router_id != new.router_id || o.local_as != new.local_as);
        if old.is_none() {
            // Deadline for `Synced`: the longest restart time we announce.
            let secs = new
                .peers
                .iter()
                .filter_map(|p| p.graceful_restart_time)
                .max()
                .unwrap_or(120);
            if let Some(tx) = self.sender() {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
                    let _ = tx.send(CoreMsg::SyncDeadline);
                });
            }
        }
        self.ensure_listener(&new);

        // Sessions: remove, restart, add.
        let wanted: HashMap<IpAddr, &PeerConfig> =
            new.peers.iter().map(|p| (p.address, p)).collect();
        let existing: Vec<IpAddr> = self.peers.keys().copied().collect();
        for addr in existing {
            match wanted.get(&addr) {
                None => self.remove_peer(addr, notif::CEASE_PEER_DECONFIGURED),
                Some(p) if identity_changed || self.peers[&addr].cfg.needs_restart(p) => {
                    self.remove_peer(addr, notif::CEASE_OTHER_CONFIG_CHANGE)
                }
                Some(p) => {
                    let filters_changed = {
                        let rt = &self.peers[&addr];
                        rt.cfg.import != p.import
                            || rt.cfg.export != p.export
                            || rt.cfg.next_hop_mode != p.next_hop_mode
                    };
                    if filters_changed {
                        self.update_filters(addr, (*p).clone());
                    }
                }
            }
        }
        for p in &new.peers {
            if !self.peers.contains_key(&p.address) {
                self.add_peer(p.clone());
            }
        }
        self.sync_listener_keys();

        // Originated routes.
        let wanted_routes: HashMap<IpNet, &Route> = new
            .originated
            .iter()
            .map(|r| (r.prefix.trunc(), r))
            .collect();
        let current_local: Vec<IpNet> = self.rib.prefixes().filter(|p| self.has_local(p)).collect();
        let mut changes = Vec::new();
        for prefix in current_local {
            if !wanted_routes.contains_key(&prefix) {
                changes.extend(self.rib.remove(prefix, Source::Local));
            }
        }
        for (prefix, r) in wanted_routes {
            let mut attrs = PathAttrs::local(r.next_hop);
            attrs.communities = r.communities.clone();
            attrs.large_communities = r.large_communities.clone();
            let path = Path {
                source: Source::Local,
                attrs: Arc::new(attrs),
                ebgp: false,
                peer_router_id: new.router_id,
                from_rr_client: false,
                stale: false,
            };
            changes.extend(self.rib.insert(prefix, path));
        }
        self.propagate(changes);
        if old.is_some_and(|o| o.prefix_communities != new.prefix_communities) {
            let up: Vec<IpAddr> = self
                .peers
                .iter()
                .filter(|(_, rt)| rt.up.is_some())
                .map(|(a, _)| *a)
                .collect();
            for peer in up {
                self.readvertise(peer);
            }
        }
    }

    fn has_local(&self, prefix: &IpNet) -> bool {
        // Local paths always sort first when present.
        self.rib
            .best(prefix)
            .is_some_and(|p| p.source == Source::Local)
    }

    fn ensure_listener(&mut self, cfg: &SpeakerConfig) {
        let ip = cfg.listen_addr.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, cfg.listen_port);
        if self.listener.as_ref().is_some_and(|l| l.addr == addr) {
            return;
        }
        self.listener = None;
        let Some(tx) = self.sender() else { return };
        match bind_listener(addr) {
            Ok(listener) => {
                info!(%addr, "BGP listening");
                let fd = listener.as_raw_fd();
                let task = tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, from)) => {
                                if tx
                                    .send(CoreMsg::Incoming(stream, sockopt::canonical(from)))
                                    .is_err()
                                {
                                    break;
                                }
                            }
                            Err(e) => {
                                warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                self.listener = Some(ListenerHandle {
                    addr,
                    fd,
                    is_v6: ip.is_ipv6(),
                    task,
                    keys: HashMap::new(),
                });
            }
            Err(e) => {
                warn!(%addr, error = %e, "cannot listen for BGP; only outgoing sessions will work")
            }
        }
    }

    /// Installs MD5 keys for configured peers on the listening socket and removes stale ones.
    fn sync_listener_keys(&mut self) {
        let wanted: HashMap<IpAddr, String> = self
            .peers
            .values()
            .filter_map(|p| p.cfg.password.clone().map(|k| (p.cfg.address, k)))
            .collect();
        let Some(l) = self.listener.as_mut() else {
            return;
        };
        let old: Vec<IpAddr> = l.keys.keys().copied().collect();
        for peer in old {
            if !wanted.contains_key(&peer) {
                if let Err(e) = sockopt::set_md5(l.fd, l.is_v6, peer, None) {
                    warn!(%peer, error = %e, "cannot remove TCP-MD5 key from listener");
                }
                l.keys.remove(&peer);
            }
        }
        for (peer, key) in wanted {
            if l.keys.get(&peer) != Some(&key) {
                match sockopt::set_md5(l.fd, l.is_v6, peer, Some(&key)) {
                    Ok(()) => {
                        l.keys.insert(peer, key);
                    }
                    Err(e) => warn!(%peer, error = %e, "cannot install TCP-MD5 key on listener"),
                }
            }
        }
    }

    fn add_peer(&mut self, pc: PeerConfig) {
        let Some(cfg) = self.cfg.as_ref() else { return };
        let Some(core_tx) = self.sender() else { return };
        self.next_generation += 1;
        let generation = self.next_generation;
        let local_as = pc.local_as.unwrap_or(cfg.local_as);
        let families = pc.families();
        let mut caps: Vec<Capability> = families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        caps.push(Capability::RouteRefresh);
        // Enhanced route refresh (RFC 7313) is decoded and encoded but not announced: the
        // BoRR/EoRR stale marking is not implemented in the speaker.
        let gr_time = pc.graceful_restart_time.unwrap_or(120);
        if gr_time > 0 {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restarting: cfg.restarted,
                restart_time: gr_time.min(4095),
                // Forwarding preserved: the agent keeps its kernel routes across restarts.
                families: families.iter().map(|f| (*f, true)).collect(),
            }));
        }
        let retry = Duration::from_secs(u64::from(pc.connect_retry.unwrap_or(5).max(1)));
        let fsm_cfg = FsmConfig {
            local_as,
            router_id: cfg.router_id,
            remote_as: pc.remote_as,
            hold_time: pc.hold_time.unwrap_or(90),
            keepalive: pc.keepalive,
            capabilities: caps,
            passive: pc.passive,
            connect_retry: retry,
            connect_retry_max: Duration::from_secs(120).max(retry),
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let session = Session {
            peer: pc.address,
            port: pc.port,
            password: pc.password.clone(),
            ttl_security: pc.ttl_security,
            generation,
            fsm: Fsm::new(fsm_cfg),
            core: core_tx,
            writer: None,
            reader: None,
            conn_id: 0,
            next_conn_id: 0,
            outgoing: false,
            pending: None,
            open_sent: false,
            connect_attempt: 0,
            ctx: Ctx::default(),
            timers: HashMap::new(),
        };
        let task = tokio::spawn(session.run(cmd_rx));
        self.set_status(pc.address, |s| {
            s.state = State::Idle.to_string();
            s.since = SystemTime::now();
            s.info = String::new();
        });
        self.peers.insert(
            pc.address,
            PeerRuntime {
                cfg: pc,
                generation,
                cmd: cmd_tx,
                task,
                up: None,
                adj_out: HashMap::new(),
                stale_families: HashSet::new(),
                stale_timer: None,
                eor: HashSet::new(),
                ever_up: false,
                received: 0,
            },
        );
    }

    fn remove_peer(&mut self, addr: IpAddr, subcode: u8) {
        if let Some(p) = self.peers.remove(&addr) {
            let _ = p.cmd.send(SessionCmd::Stop(subcode));
            // The session task ends after sending Cease; abort only if it lingers.
            let task = p.task;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                task.abort();
            });
            if let Some(t) = p.stale_timer {
                t.abort();
            }
        }
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
        let changes = self.rib.remove_where(Source::Peer(addr), |_, _| true);
        self.propagate(changes);
    }

    fn update_filters(&mut self, addr: IpAddr, new: PeerConfig) {
        let Some(rt) = self.peers.get_mut(&addr) else {
            return;
        };
        let import_changed = rt.cfg.import != new.import;
        rt.cfg = new;
        if import_changed {
            // Drop what the new rules reject; ask the peer to resend the rest.
            let rules = rt.cfg.import.clone();
            let refresh = rt
                .up
                .as_ref()
                .filter(|u| u.negotiated.route_refresh)
                .map(|u| u.negotiated.families.clone());
            if let Some(fams) = refresh {
                let msgs = fams
                    .into_iter()
                    .map(|family| {
                        Message::RouteRefresh(RouteRefresh {
                            family,
                            subtype: RefreshSubtype::Normal,
                        })
                    })
                    .collect();
                let _ = rt.cmd.send(SessionCmd::Send(msgs));
            }
            let changes = self.rib.remove_where(Source::Peer(addr), |p, path| {
                apply_policy(&rules, p, &path.attrs, path.source).is_none()
            });
            self.propagate(changes);
        }
        self.readvertise(addr);
    }

    // ------------------------------------------------------------ sessions

    fn incoming(&mut self, stream: TcpStream, from: SocketAddr) {
        let peer = from.ip();
        match self.peers.get(&peer) {
            Some(rt) => {
                if let Some(hops) = rt.cfg.ttl_security {
                    let is_v6 = stream.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
                    if let Err(e) = sockopt::set_ttl_security(stream.as_raw_fd(), is_v6, peer, hops)
                    {
                        warn!(%peer, error = %e, "cannot apply TTL security to accepted connection");
                        return;
                    }
                }
                let _ = rt.cmd.send(SessionCmd::Incoming(stream));
            }
            None => debug!(%peer, "connection from an unconfigured address, closing"),
        }
    }

    fn session_event(&mut self, peer: IpAddr, event: SessionEvent) {
        match event {
            SessionEvent::State(s) => self.set_status(peer, |st| {
                st.state = s.to_string();
                st.since = SystemTime::now();
                if s == State::Established {
                    st.info = "Established".into();
                }
            }),
            SessionEvent::Established { negotiated, local } => {
                self.established(peer, negotiated, local)
            }
            SessionEvent::Down(reason) => self.down(peer, reason),
            SessionEvent::Update(u) => self.update(peer, u),
            SessionEvent::RouteRefresh(rr) => {
                let enhanced = self.peers.get(&peer).and_then(|p| p.up.as_ref()).is_some();
                if enhanced && rr.subtype == RefreshSubtype::Normal {
                    // Resend everything for that family.
                    if let Some(rt) = self.peers.get_mut(&peer) {
                        rt.adj_out.retain(|p, _| Family::of_net(p) != rr.family);
                    }
                    // RFC 2918: resend the family's Adj-RIB-Out.
                    self.readvertise(peer);
                }
            }
        }
    }

    fn established(&mut self, peer: IpAddr, negotiated: Negotiated, local: IpAddr) {
        info!(%peer, hold = negotiated.hold_time, families = ?negotiated.families, "session established");
        let Some(rt) = self.peers.get_mut(&peer) else {
            return;
        };
        // Graceful restart helper: if the peer did not keep forwarding state for a family, its
        // stale routes for that family go now (RFC 4724 4.2).
        let kept: HashSet<Family> = negotiated
            .peer_graceful_restart
            .as_ref()
            .map(|gr| {
                gr.families
                    .iter()
                    .filter(|(_, f)| *f)
                    .map(|(fam, _)| *fam)
                    .collect()
            })
            .unwrap_or_default();
        let drop_now: Vec<Family> = rt
            .stale_families
            .iter()
            .copied()
            .filter(|f| !kept.contains(f))
            .collect();
        let families = negotiated.families.clone();
        rt.up = Some(EstablishedInfo { negotiated, local });
        rt.adj_out.clear();
        rt.eor.clear();
        rt.ever_up = true;
        rt.received = 0;
        for f in drop_now {
            self.sweep_stale(peer, Some(f));
        }
        self.readvertise(peer);
        if let Some(rt) = self.peers.get(&peer) {
            let eors = families
                .into_iter()
                .map(|f| Message::Update(Update::end_of_rib(f)))
                .collect();
            let _ = rt.cmd.send(SessionCmd::Send(eors));
        }
    }

    fn down(&mut self, peer: IpAddr, reason: DownReason) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        info!(%peer, %reason, "session down");
        self.set_status(peer, |s| s.info = reason.to_string());
        let Some(rt) = self.peers.get_mut(&peer) else {
            return;
        };
        let was = rt.up.take();
        rt.adj_out.clear();
        let Some(was) = was else { return };
        let peer_gr = was
            .negotiated
            .peer_graceful_restart
            .as_ref()
            .filter(|gr| gr.restart_time > 0);
        match peer_gr {
            Some(gr) if reason.graceful() => {
                let n = self.rib.mark_stale(Source::Peer(peer));
                let Some(rt) = self.peers.get_mut(&peer) else {
                    return;
                };
                rt.stale_families = was.negotiated.families.iter().copied().collect();
                info!(%peer, routes = n, restart_time = gr.restart_time, "peer restarting, keeping its routes as stale");
                let secs = u64::from(gr.restart_time);
                let generation = rt.generation;
                if let Some(t) = rt.stale_timer.take() {
                    t.abort();
                }
                if let Some(tx) = self.sender() {
                    let h = tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                        let _ = tx.send(CoreMsg::StaleTimeout { peer, generation });
                    });
                    if let Some(rt) = self.peers.get_mut(&peer) {
                        rt.stale_timer = Some(h);
                    }
                }
                // Stale paths stay best: tell the agent so it can show it, route unchanged.
            }
            _ => {
                let changes = self.rib.remove_where(Source::Peer(peer), |_, _| true);
                self.propagate(changes);
            }
        }
    }

    /// Removes stale paths of `peer` (of one family, or all).
    fn sweep_stale(&mut self, peer: IpAddr, family: Option<Family>) {
        let changes = self.rib.remove_where(Source::Peer(peer), |prefix, p| {
            p.stale && family.is_none_or(|f| Family::of_net(prefix) == f)
        });
        if let Some(rt) = self.peers.get_mut(&peer) {
            match family {
                Some(f) => {
                    rt.stale_families.remove(&f);
                }
                None => rt.stale_families.clear(),
            }
            if rt.stale_families.is_empty()
                && let Some(t) = rt.stale_timer.take()
            {
                t.abort();
            }
        }
        self.propagate(changes);
    }

    fn update(&mut self, peer: IpAddr, u: Update) {
        let Some(ectx) = self.export_ctx() else {
            return;
        };
        let Some(cfg) = self.cfg.as_ref() else { return };
        let Some(rt) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(up) = rt.up.as_ref() else { return };
        if let Some(f) = u.end_of_rib_family() {
            debug!(%peer, ?f, "End-of-RIB");
            rt.eor.insert(f);
            let stale = rt.stale_families.contains(&f);
            if stale {
                self.sweep_stale(peer, Some(f));
            }
            self.check_synced();
            return;
        }
        let local_as = rt.cfg.local_as.unwrap_or(cfg.local_as);
        let ebgp = up.negotiated.peer_as != local_as;
        let families = up.negotiated.families.clone();
        let rules = rt.cfg.import.clone();
        let from_rr_client = rt.cfg.route_reflector_client && ectx.cluster_id.is_some();
        let peer_router_id = up.negotiated.peer_router_id;
        let base = PathAttrs::from_attributes(&u.attributes);
        let mut changes = Vec::new();
        let mut withdrawn: Vec<IpNet> = u.withdrawn.iter().map(|n| IpNet::V4(*n)).collect();
        let mut announced: Vec<(IpNet, Option<IpAddr>, Option<Ipv6Addr>)> = u
            .nlri
            .iter()
            .map(|n| (IpNet::V4(*n), base.next_hop, None))
            .collect();
        for a in &u.attributes {
            match a {
                Attribute::MpReach {
                    next_hop,
                    nlri,
                    family,
                } if families.contains(family) => {
                    let (nh, ll) = match next_hop {
                        MpNextHop::V4(v4) => (IpAddr::V4(*v4), None),
                        MpNextHop::V6 { global, link_local } => (IpAddr::V6(*global), *link_local),
                    };
                    announced.extend(nlri.iter().map(|n| (*n, Some(nh), ll)));
                }
                Attribute::MpUnreach { withdrawn: w, .. } => withdrawn.extend(w.iter().copied()),
                _ => {}
            }
        }
        for prefix in withdrawn {
            changes.extend(self.rib.remove(prefix, Source::Peer(peer)));
        }
        let looped = rib::import_loop(&base, local_as, ebgp, &ectx);
        // One shared attribute set per next hop (all IPv4 NLRI of an UPDATE share one).
        let mut shared: HashMap<(Option<IpAddr>, Option<Ipv6Addr>), Arc<PathAttrs>> =
            HashMap::new();
        for (prefix, nh, ll) in announced {
            if !families.contains(&Family::of_net(&prefix)) {
                continue;
            }
            let attrs = (!looped && nh.is_some())
                .then(|| {
                    let shared = shared.entry((nh, ll)).or_insert_with(|| {
                        let mut a = base.clone();
                        a.next_hop = nh;
                        a.link_local = ll;
                        Arc::new(a)
                    });
                    apply_policy(&rules, &prefix, shared, Source::Peer(peer))
                })
                .flatten();
            let Some(attrs) = attrs else {
                // Treat as withdrawn: an earlier version may be in the RIB.
                changes.extend(self.rib.remove(prefix, Source::Peer(peer)));
                continue;
            };
            let path = Path {
                source: Source::Peer(peer),
                attrs,
                ebgp,
                peer_router_id,
                from_rr_client,
                stale: false,
            };
            changes.extend(self.rib.insert(prefix, path));
        }
        self.propagate(changes);
    }

    fn check_synced(&mut self) {
        if self.synced {
            return;
        }
        let all = self.peers.values().all(|p| {
            !p.ever_up
                || p.up
                    .as_ref()
                    .is_some_and(|u| u.negotiated.families.iter().all(|f| p.eor.contains(f)))
        });
        if all && self.peers.values().any(|p| p.ever_up) {
            self.mark_synced();
        }
    }

    fn mark_synced(&mut self) {
        if !self.synced {
            self.synced = true;
            let _ = self.routes.send(RouteEvent::Synced);
        }
    }

    // ------------------------------------------------------------ propagation

    fn propagate(&mut self, changes: Vec<rib::BestChange>) {
        if changes.is_empty() {
            return;
        }
        for c in &changes {
            let ev = match &c.new {
                Some(Path {
                    source: Source::Peer(from),
                    attrs,
                    stale,
                    ..
                }) => attrs.next_hop.map(|nh| RouteEvent::Best {
                    prefix: c.prefix,
                    next_hop: nh,
                    learned_from: *from,
                    stale: *stale,
                }),
                _ => None,
            };
            let was_learned = matches!(
                c.old,
                Some(Path {
                    source: Source::Peer(_),
                    ..
                })
            );
            match ev {
                Some(ev) => {
                    let _ = self.routes.send(ev);
                }
                None if was_learned => {
                    let _ = self.routes.send(RouteEvent::Withdrawn { prefix: c.prefix });
                }
                None => {}
            }
        }
        let prefixes: Vec<IpNet> = changes.iter().map(|c| c.prefix).collect();
        let peers: Vec<IpAddr> = self.peers.keys().copied().collect();
        for peer in peers {
            self.advertise(peer, &prefixes);
        }
        for (addr, rt) in &mut self.peers {
            rt.received = self.rib.best_count(Source::Peer(*addr));
        }
        let counts: Vec<(IpAddr, usize)> =
            self.peers.iter().map(|(a, r)| (*a, r.received)).collect();
        for (a, n) in counts {
            self.set_status(a, |s| s.prefixes_received = n);
        }
    }

    /// Re-evaluates everything for one peer (session up, export filter change, refresh).
    fn readvertise(&mut self, peer: IpAddr) {
        let mut prefixes: Vec<IpNet> = self.rib.prefixes().collect();
        if let Some(rt) = self.peers.get(&peer) {
            prefixes.extend(rt.adj_out.keys().copied());
        }
        prefixes.sort();
        prefixes.dedup();
        self.advertise(peer, &prefixes);
    }

    /// Computes what `peer` should have for `prefixes`, diffs against Adj-RIB-Out and sends the
    /// difference as packed UPDATEs.
    fn advertise(&mut self, peer: IpAddr, prefixes: &[IpNet]) {
        let Some(ectx) = self.export_ctx() else {
            return;
        };
        let Some(cfg) = self.cfg.as_ref() else { return };
        let Some(rt) = self.peers.get(&peer) else {
            return;
        };
        let Some(up) = rt.up.as_ref() else { return };
        let local_as = rt.cfg.local_as.unwrap_or(cfg.local_as);
        let ep = ExportPeer {
            address: peer,
            ebgp: up.negotiated.peer_as != local_as,
            local_as,
            rr_client: rt.cfg.route_reflector_client,
            next_hop_self: rt.cfg.next_hop_mode == NextHopMode::SelfMode,
            next_hop_keep: rt.cfg.next_hop_mode == NextHopMode::Keep,
            self_v4: match up.local {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => cfg.next_hop_v4,
            },
            self_v6: match up.local {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => cfg.next_hop_v6,
            },
        };
        let families = &up.negotiated.families;
        let mut announce: HashMap<PathAttrs, Vec<IpNet>> = HashMap::new();
        let mut withdraw: Vec<IpNet> = Vec::new();
        let mut new_out = Vec::new();
        for prefix in prefixes {
            if !families.contains(&Family::of_net(prefix)) {
                continue;
            }
            let want = self.rib.best(prefix).and_then(|p| {
                let attrs = apply_policy(&rt.cfg.export, prefix, &p.attrs, p.source)?;
                let mut a = if Arc::ptr_eq(&attrs, &p.attrs) {
                    rib::export(&ectx, prefix, p, &ep)?
                } else {
                    let changed = Path { attrs, ..p.clone() };
                    rib::export(&ectx, prefix, &changed, &ep)?
                };
                for pc in cfg
                    .prefix_communities
                    .iter()
                    .filter(|pc| pc.cidr.contains(prefix))
                {
                    for c in &pc.communities {
                        Community::Standard(*c).add_to(&mut a);
                    }
                    for c in &pc.large_communities {
                        Community::Large(*c).add_to(&mut a);
                    }
                }
                Some(a)
            });
            match (want, rt.adj_out.get(prefix)) {
                (Some(a), Some(old)) if &a == old => {}
                (Some(a), _) => {
                    announce.entry(a.clone()).or_default().push(*prefix);
                    new_out.push((*prefix, Some(a)));
                }
                (None, Some(_)) => {
                    withdraw.push(*prefix);
                    new_out.push((*prefix, None));
                }
                (None, None) => {}
            }
        }
        if announce.is_empty() && withdraw.is_empty() {
            return;
        }
        let ctx = Ctx {
            four_octet_as: up.negotiated.four_octet_as,
        };
        let mut msgs = build_withdrawals(&withdraw);
        for (attrs, nets) in announce {
            msgs.extend(build_announcements(&attrs, &nets, ctx));
        }
        let Some(rt) = self.peers.get_mut(&peer) else {
            return;
        };
        for (p, a) in new_out {
            match a {
                Some(a) => {
                    rt.adj_out.insert(p, a);
                }
                None => {
                    rt.adj_out.remove(&p);
                }
            }
        }
        let _ = rt.cmd.send(SessionCmd::Send(msgs));
    }
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(128)
}

/// Wire attributes for an announcement to a peer with `ctx`.
fn wire_attributes(a: &PathAttrs, ctx: Ctx, ipv4_next_hop: bool) -> Vec<Attribute> {
    let mut v = vec![Attribute::Origin(a.origin)];
    if ctx.four_octet_as || !a.as_path.needs_four_octets() {
        v.push(Attribute::AsPath(a.as_path.clone()));
    } else {
        v.push(Attribute::AsPath(a.as_path.to_two_octet()));
        v.push(Attribute::As4Path(a.as_path.clone()));
    }
    if ipv4_next_hop && let Some(IpAddr::V4(nh)) = a.next_hop {
        v.push(Attribute::NextHop(nh));
    }
    if let Some(m) = a.med {
        v.push(Attribute::Med(m));
    }
    if let Some(l) = a.local_pref {
        v.push(Attribute::LocalPref(l));
    }
    if a.atomic_aggregate {
        v.push(Attribute::AtomicAggregate);
    }
    if !a.communities.is_empty() {
        v.push(Attribute::Communities(a.communities.clone()));
    }
    if let Some(o) = a.originator_id {
        v.push(Attribute::OriginatorId(o));
    }
    if !a.cluster_list.is_empty() {
        v.push(Attribute::ClusterList(a.cluster_list.clone()));
    }
    if !a.large_communities.is_empty() {
        v.push(Attribute::LargeCommunities(a.large_communities.clone()));
    }
    for other in &a.other {
        if let Attribute::Unknown { flags, code, data } = other {
            // Passed on without being understood: set Partial (RFC 4271 5).
            v.push(Attribute::Unknown {
                flags: flags | codec::FLAG_PARTIAL,
                code: *code,
                data: data.clone(),
            });
        }
    }
    v
}

fn build_announcements(a: &PathAttrs, nets: &[IpNet], ctx: Ctx) -> Vec<Message> {
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = nets.iter().partition(|n| matches!(n, IpNet::V4(_)));
    let mut msgs = Vec::new();
    if !v4.is_empty() {
        let attrs = wire_attributes(a, ctx, true);
        let overhead = codec::update_overhead(&attrs, ctx);
        for chunk in pack(&v4, overhead) {
            msgs.push(Message::Update(Update {
                withdrawn: Vec::new(),
                attributes: attrs.clone(),
                nlri: chunk
                    .iter()
                    .filter_map(|n| match n {
                        IpNet::V4(n) => Some(*n),
                        IpNet::V6(_) => None,
                    })
                    .collect(),
            }));
        }
    }
    if !v6.is_empty() {
        let Some(IpAddr::V6(global)) = a.next_hop else {
            return msgs;
        };
        let base = wire_attributes(a, ctx, false);
        let next_hop = MpNextHop::V6 {
            global,
            link_local: a.link_local,
        };
        let empty = Attribute::MpReach {
            family: Family::IPV6_UNICAST,
            next_hop,
            nlri: Vec::new(),
        };
        let mut with_empty = base.clone();
        with_empty.push(empty);
        let overhead = codec::update_overhead(&with_empty, ctx) + 1;
        for chunk in pack(&v6, overhead) {
            let mut attrs = base.clone();
            attrs.push(Attribute::MpReach {
                family: Family::IPV6_UNICAST,
                next_hop,
                nlri: chunk,
            });
            msgs.push(Message::Update(Update {
                withdrawn: Vec::new(),
                attributes: attrs,
                nlri: Vec::new(),
            }));
        }
    }
    msgs
}

fn build_withdrawals(nets: &[IpNet]) -> Vec<Message> {
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = nets.iter().partition(|n| matches!(n, IpNet::V4(_)));
    let mut msgs = Vec::new();
    for chunk in pack(&v4, codec::HEADER_LEN + 4) {
        msgs.push(Message::Update(Update {
            withdrawn: chunk
                .iter()
                .filter_map(|n| match n {
                    IpNet::V4(n) => Some(*n),
                    IpNet::V6(_) => None,
                })
                .collect(),
            ..Update::default()
        }));
    }
    for chunk in pack(&v6, codec::HEADER_LEN + 4 + 4 + 3) {
        msgs.push(Message::Update(Update {
            attributes: vec![Attribute::MpUnreach {
                family: Family::IPV6_UNICAST,
                withdrawn: chunk,
            }],
            ..Update::default()
        }));
    }
    msgs
}

/// Splits prefixes into groups that fit one message after `overhead` bytes.
fn pack(nets: &[IpNet], overhead: usize) -> Vec<Vec<IpNet>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = overhead;
    for n in nets {
        let l = codec::prefix_wire_len(n);
        if size + l > PACK_LIMIT && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            size = overhead;
        }
        size += l;
        cur.push(*n);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

// ---------------------------------------------------------------- session task

/// One frame (or the read error that ended the connection), tagged with the connection id.
type Frame = (u64, Result<Vec<u8>, std::io::Error>);

struct Pending {
    /// Connection id its frames are tagged with (becomes `conn_id` if adopted).
    id: u64,
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
    rx: mpsc::UnboundedReceiver<Frame>,
}

enum SessionInput {
    Cmd(Option<SessionCmd>),
    Frame(u64, Result<Vec<u8>, std::io::Error>),
    PendingFrame(Result<Vec<u8>, std::io::Error>),
    ConnectResult(u64, std::io::Result<TcpStream>),
    Timer(Timer),
}

struct Session {
    peer: IpAddr,
    port: u16,
    password: Option<String>,
    ttl_security: Option<u8>,
    generation: u64,
    fsm: Fsm,
    core: mpsc::UnboundedSender<CoreMsg>,
    writer: Option<OwnedWriteHalf>,
    reader: Option<(JoinHandle<()>, mpsc::UnboundedReceiver<Frame>)>,
    conn_id: u64,
    next_conn_id: u64,
    /// The current connection is one we opened.
    outgoing: bool,
    /// An accepted connection that collided with ours: we sent it our OPEN and wait for the
    /// peer's OPEN on it to decide which connection stays (RFC 4271 6.8).
    pending: Option<Pending>,
    /// The OPEN for the next `Connected` was already sent (on a connection adopted from
    /// `pending`): do not send it twice.
    open_sent: bool,
    connect_attempt: u64,
    ctx: Ctx,
    timers: HashMap<Timer, Instant>,
}

async fn read_frames(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    id: u64,
    tx: mpsc::UnboundedSender<(u64, Result<Vec<u8>, std::io::Error>)>,
) {
    let mut buf = vec![0u8; codec::MAX_MESSAGE_LEN];
    loop {
        let r = async {
            rd.read_exact(&mut buf[..codec::HEADER_LEN]).await?;
            let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
            // Length errors are the decoder's to report; never read past our buffer.
            let len = len.clamp(codec::HEADER_LEN, codec::MAX_MESSAGE_LEN);
            rd.read_exact(&mut buf[codec::HEADER_LEN..len]).await?;
            Ok::<_, std::io::Error>(buf[..len].to_vec())
        }
        .await;
        let stop = r.is_err();
        if tx.send((id, r)).is_err() || stop {
            break;
        }
    }
}

impl Session {
    fn emit(&self, event: SessionEvent) {
        let _ = self.core.send(CoreMsg::Session {
            peer: self.peer,
            generation: self.generation,
            event,
        });
    }

    async fn next_input(
        &mut self,
        cmd_rx: &mut mpsc::UnboundedReceiver<SessionCmd>,
        connect_rx: &mut mpsc::UnboundedReceiver<(u64, std::io::Result<TcpStream>)>,
    ) -> SessionInput {
        let next_timer = self
            .timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at));
        let sleep = async {
            match next_timer {
                Some((t, at)) => {
                    tokio::time::sleep_until(at).await;
                    t
                }
                None => std::future::pending().await,
            }
        };
        let frame = async {
            match self.reader.as_mut() {
                Some((_, rx)) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let pending = async {
            match self.pending.as_mut() {
                Some(p) => p.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            c = cmd_rx.recv() => SessionInput::Cmd(c),
            Some((id, r)) = frame => SessionInput::Frame(id, r),
            Some((_, r)) = pending => SessionInput::PendingFrame(r),
            Some((attempt, r)) = connect_rx.recv() => SessionInput::ConnectResult(attempt, r),
            t = sleep => SessionInput::Timer(t),
        }
    }

    async fn run(mut self, mut cmd_rx: mpsc::UnboundedReceiver<SessionCmd>) {
        let (connect_tx, mut connect_rx) = mpsc::unbounded_channel();
        let out = self.fsm.handle(Input::Start);
        self.apply(out, &connect_tx).await;
        loop {
            match self.next_input(&mut cmd_rx, &mut connect_rx).await {
                SessionInput::Cmd(None) => {
                    let out = self.fsm.handle(Input::Stop {
                        subcode: notif::CEASE_ADMIN_SHUTDOWN,
                    });
                    self.apply(out, &connect_tx).await;
                    break;
                }
                SessionInput::Cmd(Some(SessionCmd::Stop(subcode))) => {
                    let out = self.fsm.handle(Input::Stop { subcode });
                    self.apply(out, &connect_tx).await;
                    break;
                }
                SessionInput::Cmd(Some(SessionCmd::Send(msgs))) => {
                    if self.fsm.state() == State::Established {
                        for m in msgs {
                            if !self.send(&m).await {
                                let out = self.fsm.handle(Input::Closed);
                                self.apply(out, &connect_tx).await;
                                break;
                            }
                        }
                    }
                }
                SessionInput::Cmd(Some(SessionCmd::Incoming(stream))) => {
                    self.incoming(stream, &connect_tx).await
                }
                SessionInput::Frame(id, r) if id == self.conn_id => {
                    let input = match r {
                        Err(_) => Input::Closed,
                        Ok(bytes) => match codec::decode(&bytes, self.ctx) {
                            Ok(m) => Input::Message(m),
                            Err(e) => {
                                warn!(peer = %self.peer, error = %e, "malformed message");
                                Input::DecodeError(e)
                            }
                        },
                    };
                    let out = self.fsm.handle(input);
                    self.apply(out, &connect_tx).await;
                }
                SessionInput::Frame(..) => {}
                SessionInput::PendingFrame(r) => self.pending_frame(r, &connect_tx).await,
                SessionInput::ConnectResult(attempt, r) if attempt == self.connect_attempt => {
                    match r {
                        Ok(stream)
                            if matches!(self.fsm.state(), State::Connect | State::Active) =>
                        {
                            self.attach(stream, true);
                            let out = self.fsm.handle(Input::Connected);
                            self.apply(out, &connect_tx).await;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            debug!(peer = %self.peer, error = %e, "connect failed");
                            let out = self.fsm.handle(Input::ConnectFailed);
                            self.apply(out, &connect_tx).await;
                        }
                    }
                }
                SessionInput::ConnectResult(..) => {}
                SessionInput::Timer(t) => {
                    self.timers.remove(&t);
                    let out = self.fsm.handle(Input::TimerExpired(t));
                    self.apply(out, &connect_tx).await;
                }
            }
        }
    }

    /// An accepted connection from the peer: use it, keep it for collision resolution, or
    /// refuse it (RFC 4271 6.8).
    async fn incoming(
        &mut self,
        stream: TcpStream,
        connect_tx: &mpsc::UnboundedSender<(u64, std::io::Result<TcpStream>)>,
    ) {
        match self.fsm.state() {
            State::Idle | State::Connect | State::Active if self.fsm.enabled() => {
                self.connect_attempt += 1; // forget any connect in flight
                self.attach(stream, false);
                let out = self.fsm.handle(Input::Connected);
                self.apply(out, connect_tx).await;
            }
            State::OpenSent | State::OpenConfirm if self.pending.is_none() => {
                let _ = stream.set_nodelay(true);
                let (rd, mut wr) = stream.into_split();
                match codec::encode(&self.fsm.open_message(), Ctx::default()) {
                    Ok(bytes) if wr.write_all(&bytes).await.is_ok() => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        self.next_conn_id += 1;
                        let id = self.next_conn_id;
                        let reader = tokio::spawn(read_frames(rd, id, tx));
                        self.pending = Some(Pending {
                            id,
                            writer: wr,
                            reader,
                            rx,
                        });
                    }
                    _ => debug!(peer = %self.peer, "colliding connection failed before its OPEN"),
                }
            }
            _ => refuse(stream).await,
        }
    }

    /// The first message on a colliding connection: its OPEN carries the identifier that decides
    /// which connection stays.
    async fn pending_frame(
        &mut self,
        r: Result<Vec<u8>, std::io::Error>,
        connect_tx: &mpsc::UnboundedSender<(u64, std::io::Result<TcpStream>)>,
    ) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let open = match r.map(|b| codec::decode(&b, Ctx::default())) {
            Ok(Ok(Message::Open(open))) => open,
            _ => {
                // Not a usable connection.
                pending.reader.abort();
                return;
            }
        };
        let keep_outgoing =
            fsm::collision_keeps_outgoing(self.fsm.config().router_id, open.router_id);
        let cease = Message::Notification(Notification::new(notif::CEASE, notif::CEASE_COLLISION));
        let current_alive = matches!(self.fsm.state(), State::OpenSent | State::OpenConfirm);
        // Keep the current connection if it is the one the rule picks (or if both were
        // accepted, which the rule cannot order).
        if current_alive && (keep_outgoing == self.outgoing || !self.outgoing) {
            if let Ok(bytes) = codec::encode(&cease, Ctx::default()) {
                let _ = pending.writer.write_all(&bytes).await;
            }
            pending.reader.abort();
            return;
        }
        if current_alive {
            info!(peer = %self.peer, "connection collision: keeping the peer's connection");
            self.send(&cease).await;
            let out = self.fsm.handle(Input::Closed);
            self.apply(out, connect_tx).await;
        }
        if !matches!(
            self.fsm.state(),
            State::Idle | State::Connect | State::Active
        ) || !self.fsm.enabled()
        {
            pending.reader.abort();
            return;
        }
        // Adopt it: our OPEN is already on it, and the peer's is `open`.
        self.detach();
        self.connect_attempt += 1; // forget any connect in flight
        self.conn_id = pending.id;
        self.outgoing = false;
        self.reader = Some((pending.reader, pending.rx));
        self.writer = Some(pending.writer);
        self.open_sent = true;
        let out = self.fsm.handle(Input::Connected);
        self.apply(out, connect_tx).await;
        let out = self.fsm.handle(Input::Message(Message::Open(open)));
        self.apply(out, connect_tx).await;
    }

    fn attach(&mut self, stream: TcpStream, outgoing: bool) {
        self.detach();
        let _ = stream.set_nodelay(true);
        self.next_conn_id += 1;
        self.conn_id = self.next_conn_id;
        self.outgoing = outgoing;
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(read_frames(rd, self.conn_id, tx));
        self.reader = Some((task, rx));
        self.writer = Some(wr);
    }

    fn detach(&mut self) {
        if let Some((task, _)) = self.reader.take() {
            task.abort();
        }
        self.writer = None;
        self.ctx = Ctx::default();
    }

    async fn send(&mut self, msg: &Message) -> bool {
        let Some(w) = self.writer.as_mut() else {
            return false;
        };
        match codec::encode(msg, self.ctx) {
            Ok(bytes) => w.write_all(&bytes).await.is_ok(),
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "cannot encode message, dropped");
                true
            }
        }
    }

    async fn apply(
        &mut self,
        outputs: Vec<Output>,
        connect_tx: &mpsc::UnboundedSender<(u64, std::io::Result<TcpStream>)>,
    ) {
        let mut queue: std::collections::VecDeque<Output> = outputs.into();
        while let Some(o) = queue.pop_front() {
            match o {
                Output::Connect => {
                    self.connect_attempt += 1;
                    let attempt = self.connect_attempt;
                    let (peer, port, pw, ttl) = (
                        self.peer,
                        self.port,
                        self.password.clone(),
                        self.ttl_security,
                    );
                    let tx = connect_tx.clone();
                    tokio::spawn(async move {
                        let r = connect(peer, port, pw.as_deref(), ttl).await;
                        let _ = tx.send((attempt, r));
                    });
                }
                Output::Disconnect => {
                    if let Some(w) = self.writer.as_mut() {
                        let _ = w.shutdown().await;
                    }
                    self.detach();
                }
                Output::Send(Message::Open(_)) if self.open_sent => self.open_sent = false,
                Output::Send(m) => {
                    if !self.send(&m).await && !matches!(m, Message::Notification(_)) {
                        queue.extend(self.fsm.handle(Input::Closed));
                    }
                }
                Output::SetTimer(t, d) => {
                    self.timers.insert(t, Instant::now() + d);
                }
                Output::CancelTimer(t) => {
                    self.timers.remove(&t);
                }
                Output::StateChanged(s) => {
                    debug!(peer = %self.peer, state = %s, "state");
                    self.emit(SessionEvent::State(s));
                }
                Output::Established(n) => {
                    self.ctx = Ctx {
                        four_octet_as: n.four_octet_as,
                    };
                    let local = self
                        .writer
                        .as_ref()
                        .and_then(|w| w.local_addr().ok())
                        .map(|a| a.ip().to_canonical())
                        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                    self.emit(SessionEvent::Established {
                        negotiated: n,
                        local,
                    });
                }
                Output::Down(r) => self.emit(SessionEvent::Down(r)),
                Output::Update(u) => self.emit(SessionEvent::Update(u)),
                Output::RouteRefresh(rr) => self.emit(SessionEvent::RouteRefresh(rr)),
            }
        }
    }
}

async fn refuse(mut stream: TcpStream) {
    // RFC 4271 6.8: the refused connection gets Cease / connection collision resolution.
    if let Ok(bytes) = codec::encode(
        &Message::Notification(Notification::new(notif::CEASE, notif::CEASE_COLLISION)),
        Ctx::default(),
    ) {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&bytes)).await;
    }
}

async fn connect(
    peer: IpAddr,
    port: u16,
    password: Option<&str>,
    ttl: Option<u8>,
) -> std::io::Result<TcpStream> {
    let sock = if peer.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    let fd = sock.as_raw_fd();
    if let Some(pw) = password {
        sockopt::set_md5(fd, peer.is_ipv6(), peer, Some(pw)).map_err(std::io::Error::other)?;
    }
    if let Some(hops) = ttl {
        sockopt::set_ttl_security(fd, peer.is_ipv6(), peer, hops).map_err(std::io::Error::other)?;
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        sock.connect(SocketAddr::new(peer, port)),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(n: u32, v6: bool) -> Vec<IpNet> {
        (0..n)
            .map(|i| {
                if v6 {
                    IpNet::V6(
                        ipnet::Ipv6Net::new(
                            Ipv6Addr::from((0xfd00u128 << 112) | (u128::from(i) << 64)),
                            64,
                        )
                        .unwrap(),
                    )
                } else {
                    IpNet::V4(
                        ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap(),
                    )
                }
            })
            .collect()
    }

    /// Many prefixes are packed into several UPDATEs that each fit 4096 bytes and together carry
    /// every prefix once.
    #[test]
    fn announcements_and_withdrawals_pack_within_message_limit() {
        let mut attrs = PathAttrs::local(Some("192.168.33.11".parse().unwrap()));
        attrs.as_path = codec::AsPath::sequence(vec![4_200_000_000, 64512]);
        attrs.communities = vec![1, 2, 3];
        for v6 in [false, true] {
            if v6 {
                attrs.next_hop = Some("fd00::11".parse().unwrap());
                attrs.link_local = Some("fe80::11".parse().unwrap());
            }
            let all = nets(3000, v6);
            for ctx in [
                Ctx {
                    four_octet_as: true,
                },
                Ctx {
                    four_octet_as: false,
                },
            ] {
                let mut seen = Vec::new();
                let msgs = build_announcements(&attrs, &all, ctx);
                assert!(msgs.len() > 1);
                for m in &msgs {
                    let bytes = codec::encode(m, ctx).expect("fits");
                    assert!(bytes.len() <= codec::MAX_MESSAGE_LEN);
                    let Message::Update(u) = codec::decode(&bytes, ctx).expect("decodes") else {
                        panic!("not an update")
                    };
                    let back = PathAttrs::from_attributes(&u.attributes);
                    assert_eq!(back.as_path, attrs.as_path, "AS4_PATH restores the path");
                    seen.extend(u.nlri.iter().map(|n| IpNet::V4(*n)));
                    for a in &u.attributes {
                        if let Attribute::MpReach { nlri, next_hop, .. } = a {
                            assert_eq!(next_hop.addr(), attrs.next_hop.unwrap());
                            seen.extend(nlri.iter().copied());
                        }
                    }
                }
                assert_eq!(seen, all);
            }
            let mut seen = Vec::new();
            for m in build_withdrawals(&all) {
                let bytes = codec::encode(&m, Ctx::default()).expect("fits");
                let Message::Update(u) = codec::decode(&bytes, Ctx::default()).unwrap() else {
                    panic!("not an update")
                };
                seen.extend(u.withdrawn.iter().map(|n| IpNet::V4(*n)));
                for a in &u.attributes {
                    if let Attribute::MpUnreach { withdrawn, .. } = a {
                        seen.extend(withdrawn.iter().copied());
                    }
                }
            }
            assert_eq!(seen, all);
        }
    }

    #[test]
    fn config_json_uses_calico_style_names() {
        let cfg: SpeakerConfig = serde_json::from_value(serde_json::json!({
            "routerId": "10.0.0.1", "localAs": 64512,
            "peers": [{"address": "10.0.0.2", "remoteAs": 65000, "nextHopMode": "Self",
                       "export": [{"cidr": "192.168.0.0/16", "action": "Reject"}]}],
            "originated": [{"prefix": "192.168.1.0/26"}]
        }))
        .expect("parses");
        assert_eq!(cfg.listen_port, 179);
        assert_eq!(cfg.peers[0].next_hop_mode, NextHopMode::SelfMode);
        assert_eq!(cfg.peers[0].families(), vec![Family::IPV4_UNICAST]);
        assert!(!cfg.peers[0].needs_restart(&PeerConfig {
            export: vec![],
            ..cfg.peers[0].clone()
        }));
        assert!(cfg.peers[0].needs_restart(&PeerConfig {
            remote_as: 1,
            ..cfg.peers[0].clone()
        }));
    }

    fn rule(cidr: Option<&str>, negate: bool, action: Action) -> PolicyRule {
        PolicyRule {
            cidr: cidr.map(|c| c.parse().unwrap()),
            negate,
            family_v6: Some(false),
            ..PolicyRule::all(action, None)
        }
    }

    fn attrs_with(f: impl FnOnce(&mut PathAttrs)) -> Arc<PathAttrs> {
        let mut a = PathAttrs::local(Some("10.0.0.9".parse().unwrap()));
        f(&mut a);
        Arc::new(a)
    }

    #[test]
    fn policy_rules_match_every_condition_set() {
        let peer = Source::Peer("10.0.0.9".parse().unwrap());
        let net: IpNet = "10.1.2.0/24".parse().unwrap();
        let plain = attrs_with(|_| {});
        let tagged = attrs_with(|a| {
            a.communities = vec![(65000 << 16) | 100];
            a.as_path = codec::AsPath::sequence(vec![65001, 65002]);
        });
        // NotIn: everything outside 10.0.0.0/16.
        let not_in = rule(Some("10.0.0.0/16"), true, Action::Reject);
        assert!(not_in.matches(&net, &plain, peer));
        assert!(!not_in.matches(&"10.0.1.0/24".parse().unwrap(), &plain, peer));
        // A v4 rule never matches a v6 prefix, negated or not.
        assert!(!not_in.matches(&"fd00::/64".parse().unwrap(), &plain, peer));
        // source: RemotePeers.
        let remote = PolicyRule {
            remote_peers_only: true,
            ..rule(None, false, Action::Reject)
        };
        assert!(remote.matches(&net, &plain, peer));
        assert!(!remote.matches(&net, &plain, Source::Local));
        // Communities and AS path prefix.
        let comm = PolicyRule {
            community: Some(Community::Standard((65000 << 16) | 100)),
            ..rule(None, false, Action::Accept)
        };
        assert!(comm.matches(&net, &tagged, peer) && !comm.matches(&net, &plain, peer));
        let path = |p: Vec<u32>| PolicyRule {
            as_path_prefix: p,
            ..rule(None, false, Action::Accept)
        };
        assert!(path(vec![65001]).matches(&net, &tagged, peer));
        assert!(path(vec![65001, 65002]).matches(&net, &tagged, peer));
        assert!(!path(vec![65002]).matches(&net, &tagged, peer));
        assert!(!path(vec![65001, 65002, 3]).matches(&net, &tagged, peer));
        assert!(path(vec![]).matches(&net, &plain, peer));
    }

    #[test]
    fn accepting_rule_applies_its_operations_in_order() {
        let net: IpNet = "10.1.2.0/24".parse().unwrap();
        let a = attrs_with(|a| a.as_path = codec::AsPath::sequence(vec![65009]));
        let rules = vec![
            PolicyRule {
                operations: vec![
                    RouteOperation::AddCommunity(Community::Standard(7)),
                    RouteOperation::AddCommunity(Community::Standard(7)),
                    RouteOperation::AddCommunity(Community::Large(LargeCommunity {
                        global: 1,
                        local1: 2,
                        local2: 3,
                    })),
                    RouteOperation::PrependAsPath(vec![65000, 65001]),
                ],
                ..rule(Some("10.1.0.0/16"), false, Action::Accept)
            },
            rule(None, false, Action::Reject),
        ];
        let out = apply_policy(&rules, &net, &a, Source::Local).expect("accepted");
        assert_eq!(out.communities, vec![7]);
        assert_eq!(out.large_communities.len(), 1);
        assert_eq!(
            out.as_path,
            codec::AsPath::sequence(vec![65000, 65001, 65009])
        );
        // No operations: the very same shared attributes come back.
        let other: IpNet = "10.2.0.0/24".parse().unwrap();
        assert!(apply_policy(&rules, &other, &a, Source::Local).is_none());
        let same = apply_policy(&rules[..0], &other, &a, Source::Local).expect("no rule accepts");
        assert!(Arc::ptr_eq(&same, &a));
    }

    #[test]
    fn plain_filter_rule_json_is_a_policy_rule() {
        let r: PolicyRule = serde_json::from_value(serde_json::json!(
            {"cidr": "10.0.0.0/8", "minLen": 24, "action": "Reject"}
        ))
        .unwrap();
        assert_eq!(r.min_len, Some(24));
        assert!(!r.negate && r.operations.is_empty());
    }

    fn v4net() -> impl proptest::strategy::Strategy<Value = IpNet> {
        use proptest::prelude::*;
        (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
        })
    }

    #[test]
    fn prefix_rules_first_match_wins_and_no_match_accepts() {
        let a = attrs_with(|_| {});
        let src = Source::Local;
        let ten: IpNet = "10.0.0.0/8".parse().unwrap();
        let rules = vec![
            PolicyRule {
                cidr: Some(ten),
                max_len: Some(24),
                ..PolicyRule::all(Action::Accept, None)
            },
            PolicyRule {
                cidr: Some(ten),
                ..PolicyRule::all(Action::Reject, None)
            },
        ];
        let allowed = |p: &str| apply_policy(&rules, &p.parse().unwrap(), &a, src).is_some();
        assert!(allowed("10.1.0.0/16"));
        assert!(!allowed("10.1.0.0/26"));
        assert!(allowed("192.168.0.0/26"), "no match accepts");
        let v6only = PolicyRule {
            min_len: Some(64),
            ..PolicyRule::all(Action::Reject, Some(true))
        };
        assert!(!v6only.matches(&"10.0.0.0/24".parse().unwrap(), &a, src));
        assert!(v6only.matches(&"fd00::/64".parse().unwrap(), &a, src));
    }

    proptest::proptest! {
        /// NotIn (negate) is exactly the complement of In for prefixes of the rule's family,
        /// whatever the prefix-length bounds.
        #[test]
        fn negation_is_the_complement(cidr in v4net(), p in v4net(), min in proptest::option::of(0u8..=32), max in proptest::option::of(0u8..=32)) {
            let a = attrs_with(|_| {});
            let mut r = rule(None, false, Action::Reject);
            r.cidr = Some(cidr);
            r.min_len = min;
            r.max_len = max;
            let n = PolicyRule { negate: true, ..r.clone() };
            let src = Source::Local;
            proptest::prop_assert_ne!(r.matches(&p, &a, src), n.matches(&p, &a, src));
            // And agrees with a direct reading of the prefix condition for the positive case.
            let len = p.prefix_len();
            let direct = cidr.contains(&p) && len >= min.unwrap_or(cidr.prefix_len()) && len <= max.unwrap_or(32);
            proptest::prop_assert_eq!(r.matches(&p, &a, src), direct);
        }

        /// The first matching rule decides; with no match the route is accepted unchanged.
        #[test]
        fn first_match_decides(rules in proptest::collection::vec((v4net(), proptest::bool::ANY, proptest::bool::ANY), 0..6), p in v4net()) {
            let a = attrs_with(|_| {});
            let rules: Vec<PolicyRule> = rules
                .into_iter()
                .map(|(c, neg, acc)| PolicyRule {
                    cidr: Some(c),
                    ..rule(None, neg, if acc { Action::Accept } else { Action::Reject })
                })
                .collect();
            let expected = rules
                .iter()
                .find(|r| r.matches(&p, &a, Source::Local))
                .is_none_or(|r| r.action == Action::Accept);
            proptest::prop_assert_eq!(apply_policy(&rules, &p, &a, Source::Local).is_some(), expected);
        }
    }
}
