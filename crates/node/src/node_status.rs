//! CalicoNodeStatus: the agent writes its live BGP state into the `status` of the
//! CalicoNodeStatus objects whose `spec.node` is this node, as Calico's calico-node does.
//!
//! ```text
//!   agent loop (every second) ── observe(speaker) ──► watch::Sender<LiveState>
//!                                                         │
//!   etcd list_watch(CalicoNodeStatus) ──► view (this node's objects)
//!                                                         ▼
//!   publisher task, every second: for each object that is due (updatePeriodSeconds > 0 and
//!   that many seconds since our last write), status = status_for(classes, live, kernel routes)
//!   → Datastore::update with the resourceVersion we hold (compare-and-swap; spec untouched)
//! ```
//!
//! What each class reports (the same data `calicoctl node status` shows, plus the routes):
//! - `Agent`: `birdV4` (and `birdV6` when the node has an IPv6 address) for our speaker:
//!   `Ready` once it runs with a configuration, its router id, when it started
//!   (`lastBootTime`) and last took a new configuration (`lastReconfigurationTime`), both as
//!   BIRD prints them (`2006-01-02 15:04:05`, UTC). Without a speaker (backend `none`):
//!   `NotReady`.
//! - `BGP`: one `CalicoNodePeer` per session (peer address, `NodeMesh`/`NodePeer`/
//!   `GlobalPeer`, FSM state, `since` as in the status table) and the counts per family.
//! - `Routes`: the agent's routes in the kernel's main table (`type: FIB`): a block's
//!   blackhole (`Static`), a route learned over BGP (gateway, interface, and the peer it was
//!   learned from, `NodeMesh` or `BGPPeer`), a local workload's route (`Kernel`).
//!   Not reported: `RIB` entries (paths that lost the best-path decision; the speaker keeps
//!   only best paths for the agent) and kernel routes the agent does not own.
//!
//! Classes not requested are left empty; `lastUpdated` (RFC 3339, UTC) moves at every write.
//! `updatePeriodSeconds: 0` (or unset) means the object is never written.
//!
//! A write is a compare-and-swap on the resourceVersion from the watch: if someone changed the
//! object meanwhile (a new spec applied with calicoctl), the write fails, the watch delivers
//! the new version, and the next tick writes against it. The spec is never modified.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime};

use calico_api::{
    BGPDaemonState, BGPDaemonStatus, CalicoNodeAgent, CalicoNodeBGPRouteStatus,
    CalicoNodeBGPStatus, CalicoNodePeer, CalicoNodePeerState, CalicoNodePeerType, CalicoNodeRoute,
    CalicoNodeRouteLearnedFrom, CalicoNodeRouteLearnedFromSourceType, CalicoNodeRouteType,
    CalicoNodeStatus, CalicoNodeStatusStatus, NodeStatusClassType,
};
use calico_dataplane::{Netlink, Route, RouteFilter, RouteTarget};
use calico_datastore::resource::meta::resource_prefix;
use calico_datastore::{Datastore, KindRef, ResourceError, ResourceEvent, WatchEvent};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use ipnet::IpNet;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::bgp::BgpControl;
use crate::routes::ROUTE_PROTOCOL;
use crate::status::{PeerRow, PeerType};

/// How often due objects are looked for (the finest `updatePeriodSeconds` is 1).
const TICK: Duration = Duration::from_secs(1);
/// Pause before re-opening a watch that ended.
const REWATCH_AFTER: Duration = Duration::from_secs(2);
/// The version reported for our speaker in `agent.birdV4.version`.
const VERSION: &str = concat!("calico-rs-v", env!("CARGO_PKG_VERSION"));

/// What the agent's speaker knows right now (captured in the agent loop, published later).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveState {
    /// `None`: no speaker runs (networking backend `none`).
    pub daemon: Option<DaemonInfo>,
    pub peers_v4: Vec<PeerRow>,
    pub peers_v6: Vec<PeerRow>,
    /// Best learned paths: prefix → (next hop, peer it was learned from). Captured only while
    /// some object asks for `Routes`.
    pub learned: BTreeMap<IpNet, (IpAddr, IpAddr)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DaemonInfo {
    /// `None` until the speaker has been given its first configuration.
    pub router_id: Option<Ipv4Addr>,
    pub booted: SystemTime,
    pub reconfigured: Option<SystemTime>,
    pub ipv6: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeStatusError {
    #[error("CalicoNodeStatus {name:?}: writing status: {source}")]
    Write {
        name: String,
        #[source]
        source: ResourceError,
    },
    #[error("listing kernel routes for CalicoNodeStatus routes: {0}")]
    Kernel(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Whether an object last written at `last` is due at `now`: never for a period of 0 (or
/// none), at once if we have not written it yet.
pub fn due(period_seconds: Option<i32>, last: Option<Instant>, now: Instant) -> bool {
    match period_seconds {
        Some(p) if p > 0 => last.is_none_or(|l| {
            now.saturating_duration_since(l) >= Duration::from_secs(u64::from(p.unsigned_abs()))
        }),
        _ => false,
    }
}

/// UTC time as BIRD prints it in `show status` (what Calico copies into the status).
fn bird_time(t: SystemTime) -> String {
    DateTime::<Utc>::from(t)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `status.agent` for `daemon`.
pub fn agent_status(daemon: Option<&DaemonInfo>) -> CalicoNodeAgent {
    let Some(d) = daemon else {
        let down = BGPDaemonStatus {
            state: Some(BGPDaemonState::NotReady),
            ..Default::default()
        };
        return CalicoNodeAgent {
            bird_v4: Some(down),
            bird_v6: None,
        };
    };
    let one = BGPDaemonStatus {
        state: Some(if d.router_id.is_some() {
            BGPDaemonState::Ready
        } else {
            BGPDaemonState::NotReady
        }),
        version: Some(VERSION.to_string()),
        router_id: d.router_id.map(|r| r.to_string()),
        last_boot_time: Some(bird_time(d.booted)),
        last_reconfiguration_time: d.reconfigured.map(bird_time),
    };
    CalicoNodeAgent {
        // One speaker serves both families, so both entries describe it.
        bird_v6: d.ipv6.then(|| one.clone()),
        bird_v4: Some(one),
    }
}

fn peer_state(fsm: &str) -> Option<CalicoNodePeerState> {
    Some(match fsm {
        "Idle" => CalicoNodePeerState::Idle,
        "Connect" => CalicoNodePeerState::Connect,
        "Active" => CalicoNodePeerState::Active,
        "OpenSent" => CalicoNodePeerState::OpenSent,
        "OpenConfirm" => CalicoNodePeerState::OpenConfirm,
        "Established" => CalicoNodePeerState::Established,
        "Close" => CalicoNodePeerState::Close,
        _ => return None,
    })
}

fn peer_type(t: PeerType) -> CalicoNodePeerType {
    match t {
        PeerType::Mesh => CalicoNodePeerType::NodeMesh,
        PeerType::Global => CalicoNodePeerType::GlobalPeer,
        PeerType::NodeSpecific => CalicoNodePeerType::NodePeer,
    }
}

/// One status-table row as a `CalicoNodePeer`.
pub fn peer(row: &PeerRow) -> CalicoNodePeer {
    CalicoNodePeer {
        peer_ip: Some(row.peer_address.clone()),
        r#type: Some(peer_type(row.peer_type)),
        state: peer_state(&row.info),
        since: Some(row.since.clone()),
    }
}

/// `status.bgp` for the status-table rows.
pub fn bgp_status(v4: &[PeerRow], v6: &[PeerRow]) -> CalicoNodeBGPStatus {
    let established = |rows: &[PeerRow]| rows.iter().filter(|r| r.info == "Established").count();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    CalicoNodeBGPStatus {
        number_established_v4: count(established(v4)),
        number_established_v6: count(established(v6)),
        number_not_established_v4: count(v4.len() - established(v4)),
        number_not_established_v6: count(v6.len() - established(v6)),
        peers_v4: v4.iter().map(peer).collect(),
        peers_v6: v6.iter().map(peer).collect(),
    }
}

/// The source of a route learned from `from`: mesh sessions are `NodeMesh`, every BGPPeer
/// session `BGPPeer`; unknown when we have no session to it any more.
fn learned_from(from: IpAddr, live: &LiveState) -> CalicoNodeRouteLearnedFrom {
    let row = live
        .peers_v4
        .iter()
        .chain(&live.peers_v6)
        .find(|r| r.peer_address.parse::<IpAddr>().ok() == Some(from));
    CalicoNodeRouteLearnedFrom {
        peer_ip: Some(from.to_string()),
        source_type: row.map(|r| match r.peer_type {
            PeerType::Mesh => CalicoNodeRouteLearnedFromSourceType::NodeMesh,
            PeerType::Global | PeerType::NodeSpecific => {
                CalicoNodeRouteLearnedFromSourceType::BGPPeer
            }
        }),
    }
}

fn source(t: CalicoNodeRouteLearnedFromSourceType) -> Option<CalicoNodeRouteLearnedFrom> {
    Some(CalicoNodeRouteLearnedFrom {
        peer_ip: None,
        source_type: Some(t),
    })
}

/// `status.routes` from the kernel's main table: the agent's own routes (protocol 12) and
/// workload routes (`cali*` interfaces), in destination order, split by family.
pub fn route_status(kernel: &[Route], live: &LiveState) -> CalicoNodeBGPRouteStatus {
    let mut rows: Vec<(IpNet, CalicoNodeRoute)> = kernel
        .iter()
        .filter_map(|r| {
            let mut row = CalicoNodeRoute {
                r#type: Some(CalicoNodeRouteType::FIB),
                destination: Some(r.dst.to_string()),
                ..Default::default()
            };
            match &r.target {
                RouteTarget::Blackhole if r.protocol == ROUTE_PROTOCOL => {
                    row.learned_from = source(CalicoNodeRouteLearnedFromSourceType::Static);
                }
                RouteTarget::Gateway { via, ifname, .. } if r.protocol == ROUTE_PROTOCOL => {
                    row.gateway = Some(via.to_string());
                    row.interface = ifname.clone();
                    // The speaker knows who sent it; a route kept through a restart that the
                    // speaker has not relearned yet is attributed to its next hop.
                    let from = live.learned.get(&r.dst).map(|(_, f)| *f).unwrap_or(*via);
                    row.learned_from = Some(learned_from(from, live));
                }
                RouteTarget::Device { ifname } if calico_api::names::is_workload_iface(ifname) => {
                    row.interface = Some(ifname.clone());
                    row.learned_from = source(CalicoNodeRouteLearnedFromSourceType::Kernel);
                }
                _ => return None,
            }
            Some((r.dst, row))
        })
        .collect();
    rows.sort_by_key(|(dst, _)| *dst);
    let (v4, v6): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(d, _)| d.addr().is_ipv4());
    CalicoNodeBGPRouteStatus {
        routes_v4: v4.into_iter().map(|(_, r)| r).collect(),
        routes_v6: v6.into_iter().map(|(_, r)| r).collect(),
    }
}

/// The status an object asking for `classes` gets at `now` (pure).
pub fn status_for(
    classes: &[NodeStatusClassType],
    live: &LiveState,
    kernel: &[Route],
    now: SystemTime,
) -> CalicoNodeStatusStatus {
    let wants = |c| classes.contains(&c);
    CalicoNodeStatusStatus {
        last_updated: Some(rfc3339(now)),
        agent: wants(NodeStatusClassType::Agent).then(|| agent_status(live.daemon.as_ref())),
        bgp: wants(NodeStatusClassType::BGP).then(|| bgp_status(&live.peers_v4, &live.peers_v6)),
        routes: wants(NodeStatusClassType::Routes).then(|| route_status(kernel, live)),
    }
}

/// Whether a watch event under `/calico/` is only a CalicoNodeStatus change: those are this
/// module's own writes (or a user's request), never an input of the agent's reconcile.
pub fn is_node_status_event(ev: &WatchEvent) -> bool {
    let prefix = resource_prefix(&KindRef::of::<CalicoNodeStatus>(), None);
    match ev {
        WatchEvent::Put(kv) => kv.key.starts_with(&prefix),
        WatchEvent::Delete { key, .. } => key.starts_with(&prefix),
        _ => false,
    }
}

const WANT_PEERS: u8 = 1;
const WANT_ROUTES: u8 = 2;

/// The agent's handle on the publisher task.
pub struct Publisher {
    live: watch::Sender<Option<LiveState>>,
    /// What due objects need ([`WANT_PEERS`], [`WANT_ROUTES`]); 0 = nothing, so the agent
    /// loop captures nothing while no CalicoNodeStatus names this node.
    wants: Arc<AtomicU8>,
}

impl Publisher {
    /// Starts publishing for `node` until the agent exits.
    pub fn spawn(ds: Datastore, node: String, nl: Netlink) -> Publisher {
        let (live, rx) = watch::channel(None);
        let wants = Arc::new(AtomicU8::new(0));
        tokio::spawn(publish(ds, node, nl, rx, wants.clone()));
        Publisher { live, wants }
    }

    /// Captures the speaker's state for the publisher (cheap unless routes are wanted).
    pub fn observe(&self, speaker: Option<&BgpControl>) {
        let wants = self.wants.load(Ordering::Relaxed);
        if wants == 0 {
            return;
        }
        let state = match speaker {
            None => LiveState::default(),
            Some(sp) => {
                let (peers_v4, peers_v6) = sp.peer_rows();
                let (booted, reconfigured) = sp.times();
                LiveState {
                    daemon: Some(DaemonInfo {
                        router_id: sp.config().map(|c| c.router_id),
                        booted,
                        reconfigured,
                        ipv6: sp.config().is_some_and(|c| c.next_hop_v6.is_some()),
                    }),
                    peers_v4,
                    peers_v6,
                    learned: if wants & WANT_ROUTES != 0 {
                        sp.learned_paths()
                    } else {
                        BTreeMap::new()
                    },
                }
            }
        };
        self.live.send_replace(Some(state));
    }
}

/// This node's objects, by name, as the watch last delivered them.
type View = BTreeMap<String, CalicoNodeStatus>;

fn apply_event(view: &mut View, node: &str, ev: ResourceEvent<CalicoNodeStatus>) {
    let mine = |o: &CalicoNodeStatus| o.spec.node.as_deref() == Some(node);
    let name = |o: &CalicoNodeStatus| o.metadata.name.clone().unwrap_or_default();
    match ev {
        ResourceEvent::Snapshot { items, errors, .. } => {
            for e in errors {
                warn!(error = %e, "a CalicoNodeStatus in the datastore does not decode");
            }
            *view = items
                .into_iter()
                .filter(|o| mine(o))
                .map(|o| (name(&o), o))
                .collect();
        }
        ResourceEvent::Added(o) | ResourceEvent::Modified(o) => {
            if mine(&o) {
                view.insert(name(&o), o);
            } else {
                // Its spec.node may have moved to another node.
                view.remove(&name(&o));
            }
        }
        ResourceEvent::Deleted { id, .. } => {
            view.remove(&id.name);
        }
    }
}

async fn publish(
    ds: Datastore,
    node: String,
    nl: Netlink,
    live: watch::Receiver<Option<LiveState>>,
    wants: Arc<AtomicU8>,
) {
    let mut view = View::new();
    let mut written: HashMap<String, Instant> = HashMap::new();
    let mut events = ds.list_watch::<CalicoNodeStatus>(None);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => apply_event(&mut view, &node, ev),
                Some(Err(e)) => warn!(error = %e, "CalicoNodeStatus watch"),
                None => {
                    warn!("CalicoNodeStatus watch ended; re-opening");
                    tokio::time::sleep(REWATCH_AFTER).await;
                    events = ds.list_watch::<CalicoNodeStatus>(None);
                }
            },
            _ = tick.tick() => {
                written.retain(|name, _| view.contains_key(name));
                let now = Instant::now();
                let mut want = 0;
                for o in view.values() {
                    if o.spec.update_period_seconds.unwrap_or(0) > 0 {
                        want |= WANT_PEERS;
                        if o.spec.classes.contains(&NodeStatusClassType::Routes) {
                            want |= WANT_ROUTES;
                        }
                    }
                }
                wants.store(want, Ordering::Relaxed);
                let Some(state) = live.borrow().clone() else {
                    continue;
                };
                if let Err(e) = write_due(&ds, &nl, &mut view, &mut written, &state, now).await {
                    warn!(error = %e, "CalicoNodeStatus");
                }
            }
        }
    }
}

/// Writes every due object in `view`; a lost compare-and-swap is retried at the next tick.
async fn write_due(
    ds: &Datastore,
    nl: &Netlink,
    view: &mut View,
    written: &mut HashMap<String, Instant>,
    live: &LiveState,
    now: Instant,
) -> Result<(), NodeStatusError> {
    let due_names: Vec<String> = view
        .iter()
        .filter(|(name, o)| {
            due(
                o.spec.update_period_seconds,
                written.get(*name).copied(),
                now,
            )
        })
        .map(|(name, _)| name.clone())
        .collect();
    if due_names.is_empty() {
        return Ok(());
    }
    let needs_kernel = due_names.iter().any(|n| {
        view.get(n)
            .is_some_and(|o| o.spec.classes.contains(&NodeStatusClassType::Routes))
    });
    let kernel = if needs_kernel {
        nl.routes(&RouteFilter::default())
            .await
            .map_err(|e| NodeStatusError::Kernel(Box::new(e)))?
    } else {
        vec![]
    };
    let at = SystemTime::now();
    for name in due_names {
        let Some(current) = view.get(&name) else {
            continue;
        };
        let mut obj = current.clone();
        obj.status = Some(status_for(&obj.spec.classes, live, &kernel, at));
        match ds.update(&obj).await {
            Ok(stored) => {
                debug!(name, "CalicoNodeStatus written");
                if !written.contains_key(&name) {
                    info!(name, "reporting this node's status in CalicoNodeStatus");
                }
                written.insert(name.clone(), now);
                view.insert(name, stored);
            }
            Err(e) if e.is_conflict() || e.is_not_found() => {
                // Changed or deleted since the watch told us: the watch brings the new state.
                debug!(name, error = %e, "CalicoNodeStatus changed meanwhile; next tick");
            }
            Err(source) => return Err(NodeStatusError::Write { name, source }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn row(addr: &str, t: PeerType, info: &str) -> PeerRow {
        PeerRow {
            peer_address: addr.into(),
            peer_type: t,
            state: if info == "Established" { "up" } else { "start" }.into(),
            since: "07:17:13".into(),
            info: info.into(),
        }
    }

    fn live() -> LiveState {
        LiveState {
            daemon: Some(DaemonInfo {
                router_id: Some(Ipv4Addr::new(192, 168, 33, 11)),
                booted: UNIX_EPOCH + Duration::from_secs(1_632_084_536),
                reconfigured: Some(UNIX_EPOCH + Duration::from_secs(1_632_084_537)),
                ipv6: false,
            }),
            peers_v4: vec![
                row("192.168.33.12", PeerType::Mesh, "Established"),
                row("192.168.33.20", PeerType::Global, "Active"),
            ],
            peers_v6: vec![row("fd00::20", PeerType::NodeSpecific, "OpenSent")],
            learned: BTreeMap::from([(
                "10.65.11.64/26".parse().unwrap(),
                (
                    "192.168.33.12".parse().unwrap(),
                    "192.168.33.12".parse().unwrap(),
                ),
            )]),
        }
    }

    fn kernel() -> Vec<Route> {
        vec![
            Route::gateway(
                "10.65.11.64/26".parse().unwrap(),
                "192.168.33.12".parse().unwrap(),
                Some("eth1"),
                ROUTE_PROTOCOL,
            ),
            Route::blackhole("10.65.7.0/26".parse().unwrap(), ROUTE_PROTOCOL),
            Route::device("10.65.7.1/32".parse().unwrap(), "caliwl1", 3),
            // Not the agent's: the LAN's connected route and a default route.
            Route::device("192.168.33.0/24".parse().unwrap(), "eth1", 2),
            Route::gateway(
                "0.0.0.0/0".parse().unwrap(),
                "192.168.33.1".parse().unwrap(),
                Some("eth1"),
                3,
            ),
            // A route kept through a restart, from the GoBGP peer, not relearned yet.
            Route::gateway(
                "fd00:1::/64".parse().unwrap(),
                "fd00::20".parse().unwrap(),
                Some("eth1"),
                ROUTE_PROTOCOL,
            ),
        ]
    }

    #[test]
    fn period_zero_or_unset_is_never_due_and_a_period_counts_from_our_last_write() {
        let t0 = Instant::now();
        assert!(!due(Some(0), None, t0));
        assert!(!due(None, None, t0));
        assert!(!due(Some(-1), None, t0));
        assert!(due(Some(10), None, t0));
        assert!(!due(Some(10), Some(t0), t0 + Duration::from_secs(9)));
        assert!(due(Some(10), Some(t0), t0 + Duration::from_secs(10)));
    }

    #[test]
    fn only_requested_classes_are_filled() {
        let now = UNIX_EPOCH + Duration::from_secs(1_632_084_541);
        let s = status_for(&[NodeStatusClassType::BGP], &live(), &kernel(), now);
        assert_eq!(s.last_updated.as_deref(), Some("2021-09-19T20:49:01Z"));
        assert!(s.agent.is_none() && s.routes.is_none());
        let bgp = s.bgp.expect("bgp");
        assert_eq!(
            (bgp.number_established_v4, bgp.number_not_established_v4),
            (1, 1)
        );
        assert_eq!(
            (bgp.number_established_v6, bgp.number_not_established_v6),
            (0, 1)
        );
        assert_eq!(
            bgp.peers_v4[0],
            CalicoNodePeer {
                peer_ip: Some("192.168.33.12".into()),
                r#type: Some(CalicoNodePeerType::NodeMesh),
                state: Some(CalicoNodePeerState::Established),
                since: Some("07:17:13".into()),
            }
        );
        assert_eq!(bgp.peers_v4[1].r#type, Some(CalicoNodePeerType::GlobalPeer));
        assert_eq!(bgp.peers_v4[1].state, Some(CalicoNodePeerState::Active));
        assert_eq!(bgp.peers_v6[0].r#type, Some(CalicoNodePeerType::NodePeer));
        assert_eq!(bgp.peers_v6[0].state, Some(CalicoNodePeerState::OpenSent));
        let none = status_for(&[], &live(), &kernel(), now);
        assert!(none.agent.is_none() && none.bgp.is_none() && none.routes.is_none());
    }

    #[test]
    fn agent_class_describes_the_speaker_as_bird_would() {
        let a = agent_status(live().daemon.as_ref());
        let v4 = a.bird_v4.expect("birdV4");
        assert_eq!(v4.state, Some(BGPDaemonState::Ready));
        assert_eq!(v4.router_id.as_deref(), Some("192.168.33.11"));
        assert_eq!(v4.last_boot_time.as_deref(), Some("2021-09-19 20:48:56"));
        assert_eq!(
            v4.last_reconfiguration_time.as_deref(),
            Some("2021-09-19 20:48:57")
        );
        assert!(v4.version.is_some_and(|v| v.starts_with("calico-rs-v")));
        assert!(a.bird_v6.is_none(), "no IPv6 on this node");
        let mut d = live().daemon.unwrap();
        d.router_id = None;
        d.ipv6 = true;
        let a = agent_status(Some(&d));
        assert_eq!(
            a.bird_v6.expect("birdV6").state,
            Some(BGPDaemonState::NotReady)
        );
        assert_eq!(
            agent_status(None).bird_v4.expect("birdV4").state,
            Some(BGPDaemonState::NotReady)
        );
    }

    #[test]
    fn routes_are_the_agents_own_with_their_sources() {
        let r = route_status(&kernel(), &live());
        let dests: Vec<_> = r
            .routes_v4
            .iter()
            .map(|r| r.destination.clone().unwrap())
            .collect();
        assert_eq!(dests, ["10.65.7.0/26", "10.65.7.1/32", "10.65.11.64/26"]);
        assert_eq!(
            r.routes_v4[2],
            CalicoNodeRoute {
                r#type: Some(CalicoNodeRouteType::FIB),
                destination: Some("10.65.11.64/26".into()),
                gateway: Some("192.168.33.12".into()),
                interface: Some("eth1".into()),
                learned_from: Some(CalicoNodeRouteLearnedFrom {
                    peer_ip: Some("192.168.33.12".into()),
                    source_type: Some(CalicoNodeRouteLearnedFromSourceType::NodeMesh),
                }),
            }
        );
        let src = |i: usize| {
            r.routes_v4[i]
                .learned_from
                .as_ref()
                .and_then(|l| l.source_type)
        };
        assert_eq!(src(0), Some(CalicoNodeRouteLearnedFromSourceType::Static));
        assert_eq!(src(1), Some(CalicoNodeRouteLearnedFromSourceType::Kernel));
        assert_eq!(r.routes_v4[1].interface.as_deref(), Some("caliwl1"));
        // Not in the speaker's table: attributed to its next hop, a BGPPeer session.
        assert_eq!(r.routes_v6.len(), 1);
        assert_eq!(
            r.routes_v6[0].learned_from,
            Some(CalicoNodeRouteLearnedFrom {
                peer_ip: Some("fd00::20".into()),
                source_type: Some(CalicoNodeRouteLearnedFromSourceType::BGPPeer),
            })
        );
    }

    #[test]
    fn the_view_keeps_only_this_nodes_objects() {
        let obj = |name: &str, node: &str| {
            let mut o = CalicoNodeStatus::new(name, Default::default());
            o.spec.node = Some(node.into());
            o
        };
        let mut view = View::new();
        apply_event(
            &mut view,
            "node1",
            ResourceEvent::Snapshot {
                revision: 1,
                items: vec![obj("a", "node1"), obj("b", "node2")],
                errors: vec![],
            },
        );
        assert_eq!(view.keys().collect::<Vec<_>>(), ["a"]);
        apply_event(&mut view, "node1", ResourceEvent::Added(obj("c", "node1")));
        // "a" moved to node2: no longer ours.
        apply_event(
            &mut view,
            "node1",
            ResourceEvent::Modified(obj("a", "node2")),
        );
        assert_eq!(view.keys().collect::<Vec<_>>(), ["c"]);
        apply_event(
            &mut view,
            "node1",
            ResourceEvent::Deleted {
                id: calico_datastore::ObjectId::global("c"),
                revision: 3,
                previous: None,
            },
        );
        assert!(view.is_empty());
    }

    proptest::proptest! {
        /// Every session becomes exactly one peer entry with its address, and the counts
        /// split each family's sessions into established and not.
        #[test]
        fn every_session_is_one_peer_and_the_counts_add_up(
            rows in proptest::collection::vec(
                (0u8..=255, 0usize..3, proptest::sample::select(vec![
                    "Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established",
                ])),
                0..20,
            ),
            split in 0usize..20,
        ) {
            let rows: Vec<PeerRow> = rows
                .iter()
                .map(|(last, t, info)| {
                    let t = [PeerType::Mesh, PeerType::Global, PeerType::NodeSpecific][*t];
                    row(&format!("192.168.33.{last}"), t, info)
                })
                .collect();
            let (v4, v6) = rows.split_at(split.min(rows.len()));
            let b = bgp_status(v4, v6);
            let up = |r: &[PeerRow]| r.iter().filter(|r| r.info == "Established").count() as i64;
            proptest::prop_assert_eq!(b.number_established_v4, up(v4));
            proptest::prop_assert_eq!(
                b.number_established_v4 + b.number_not_established_v4,
                v4.len() as i64
            );
            proptest::prop_assert_eq!(
                b.number_established_v6 + b.number_not_established_v6,
                v6.len() as i64
            );
            for (r, p) in v4.iter().zip(&b.peers_v4).chain(v6.iter().zip(&b.peers_v6)) {
                proptest::prop_assert_eq!(p.peer_ip.as_deref(), Some(r.peer_address.as_str()));
                proptest::prop_assert!(p.state.is_some());
                proptest::prop_assert_eq!(
                    p.state == Some(CalicoNodePeerState::Established),
                    r.info == "Established"
                );
            }
        }
    }

    #[test]
    fn only_node_status_keys_are_node_status_events() {
        let put = |key: &str| {
            WatchEvent::Put(calico_datastore::KeyValue {
                key: key.into(),
                value: vec![],
                create_revision: 1,
                mod_revision: 1,
            })
        };
        assert!(is_node_status_event(&put(
            "/calico/resources/v3/projectcalico.org/caliconodestatuses/n1"
        )));
        assert!(!is_node_status_event(&put(
            "/calico/resources/v3/projectcalico.org/nodes/n1"
        )));
    }
}
