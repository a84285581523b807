//! The sans-I/O core of the speaker: configuration diff, Loc-RIB, import and export policy,
//! Adj-RIB-Out per peer, graceful-restart helper state and peer status, as one state machine.
//!
//! [`Core::handle`] takes one [`Event`] (a new desired state, something a session reported, a
//! timer the core asked for expiring) with the current wall-clock time, and returns the
//! [`Action`]s to perform, in order: route changes for the agent, sessions to start or stop,
//! messages to send, timers to arm or cancel, the listening socket and its TCP-MD5 keys. It
//! owns no socket, no timer and no task, and never reads a clock; the tokio runtime
//! ([`super::runtime`]) performs the actions and feeds the results back as events. The replay
//! tests drive it the same way from fixture files.
//!
//! Everything is deterministic: peers are kept in address order and messages are built in
//! prefix order, so one event sequence always gives one action sequence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::config::{AfiName, NextHopMode, PeerConfig, Route, SpeakerConfig};
use super::policy::{Community, apply_policy};
use super::wire::{build_announcements, build_withdrawals};
use crate::codec::{
    Attribute, Capability, Ctx, Family, GracefulRestart, Message, MpNextHop, RefreshSubtype,
    RouteRefresh, Update, notif,
};
use crate::fsm::{DownReason, FsmConfig, Negotiated, State};
use crate::rib::{self, ExportCtx, ExportPeer, LocRib, Path, PathAttrs, Source};

/// What happens to the core.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// The agent's new desired state ([`super::Speaker::set_config`]).
    Config(Box<SpeakerConfig>),
    /// Something the session task of `peer` reported. Events from a session the core has
    /// since replaced (an older `generation`) are ignored.
    Session {
        peer: IpAddr,
        generation: u64,
        event: SessionEvent,
    },
    /// A timer armed with [`Action::SetTimer`] expired.
    Timer(CoreTimer),
}

/// What a session task reports: the FSM's outputs that concern the core.
#[derive(Debug, Clone)]
pub(crate) enum SessionEvent {
    State(State),
    Established {
        negotiated: Negotiated,
        /// Our address on the connection (the next hop we announce by default).
        local: IpAddr,
    },
    Down(DownReason),
    Update(Update),
    RouteRefresh(RouteRefresh),
}

/// The core's own timers (the session timers, hold and keepalive, belong to the FSM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum CoreTimer {
    /// After this, [`RouteEvent::Synced`] goes out even if some peer never sent End-of-RIB.
    SyncDeadline,
    /// Graceful-restart helper: the restarting peer's stale routes go when this expires.
    Stale { peer: IpAddr, generation: u64 },
}

/// What the core asks its runtime to do.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Tell the agent.
    Route(RouteEvent),
    /// Listen on this address (a no-op when already listening there; retried on every new
    /// configuration if binding fails).
    Listen(SocketAddr),
    /// The TCP-MD5 keys the listening socket should hold, by peer: the complete set.
    ListenerKeys(BTreeMap<IpAddr, String>),
    /// Start the session task of a peer.
    StartSession(SessionSpec),
    /// Stop the session task of a peer, sending Cease with `subcode` if connected.
    StopSession {
        peer: IpAddr,
        subcode: u8,
    },
    /// Send messages on the peer's session (dropped unless it is Established).
    Send {
        peer: IpAddr,
        messages: Vec<Message>,
    },
    /// Arm (or re-arm) a timer; it comes back as [`Event::Timer`].
    SetTimer {
        timer: CoreTimer,
        after: Duration,
    },
    CancelTimer(CoreTimer),
}

/// Everything a session task needs to run one peer.
#[derive(Debug, Clone)]
pub(crate) struct SessionSpec {
    pub peer: IpAddr,
    pub generation: u64,
    pub port: u16,
    pub password: Option<String>,
    pub ttl_security: Option<u8>,
    pub fsm: FsmConfig,
}

struct EstablishedInfo {
    negotiated: Negotiated,
    local: IpAddr,
}

struct PeerRuntime {
    cfg: PeerConfig,
    generation: u64,
    up: Option<EstablishedInfo>,
    /// What we advertised, per prefix.
    adj_out: HashMap<IpNet, PathAttrs>,
    /// Graceful-restart helper: families whose stale paths wait for End-of-RIB.
    stale_families: HashSet<Family>,
    /// Whether the [`CoreTimer::Stale`] timer of this peer is armed.
    stale_timer: bool,
    /// Families for which End-of-RIB arrived since the session came up.
    eor: HashSet<Family>,
    /// Whether this peer has been up at least once since we started (for `Synced`).
    ever_up: bool,
    received: usize,
}

/// The speaker's state. See the module documentation.
#[derive(Default)]
pub(crate) struct Core {
    cfg: Option<SpeakerConfig>,
    rib: LocRib,
    peers: BTreeMap<IpAddr, PeerRuntime>,
    status: BTreeMap<IpAddr, PeerStatus>,
    /// The status changed since [`Core::take_status_changed`] was last called.
    status_changed: bool,
    next_generation: u64,
    synced: bool,
    /// The time of the event being handled.
    now: Option<SystemTime>,
    /// Actions of the event being handled.
    out: Vec<Action>,
}

impl Core {
    /// Handles one event that happened at `now`; returns what to do, in order.
    pub(crate) fn handle(&mut self, now: SystemTime, event: Event) -> Vec<Action> {
        self.now = Some(now);
        match event {
            Event::Config(cfg) => self.set_config(*cfg),
            Event::Session {
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
            Event::Timer(CoreTimer::Stale { peer, generation }) => {
                if let Some(rt) = self
                    .peers
                    .get_mut(&peer)
                    .filter(|p| p.generation == generation)
                {
                    rt.stale_timer = false;
                    info!(%peer, "graceful restart timer expired, removing stale routes");
                    self.sweep_stale(peer, None);
                }
            }
            Event::Timer(CoreTimer::SyncDeadline) => self.mark_synced(),
        }
        std::mem::take(&mut self.out)
    }

    /// Session status of every configured peer, by address.
    pub(crate) fn status(&self) -> &BTreeMap<IpAddr, PeerStatus> {
        &self.status
    }

    /// Whether [`Core::status`] changed since the last call.
    pub(crate) fn take_status_changed(&mut self) -> bool {
        std::mem::take(&mut self.status_changed)
    }

    /// The Loc-RIB (for tests that compare it with a model).
    #[cfg(test)]
    pub(crate) fn rib(&self) -> &LocRib {
        &self.rib
    }

    fn emit(&mut self, action: Action) {
        self.out.push(action);
    }

    fn send(&mut self, peer: IpAddr, messages: Vec<Message>) {
        self.emit(Action::Send { peer, messages });
    }

    fn export_ctx(&self) -> Option<ExportCtx> {
        let cfg = self.cfg.as_ref()?;
        let reflects = self.peers.values().any(|p| p.cfg.route_reflector_client);
        Some(ExportCtx {
            router_id: cfg.router_id,
            cluster_id: cfg.cluster_id.filter(|_| reflects),
        })
    }

    fn set_status(&mut self, peer: IpAddr, f: impl FnOnce(&mut PeerStatus)) {
        let now = self.now.unwrap_or(SystemTime::UNIX_EPOCH);
        let mut changed = !self.status.contains_key(&peer);
        let entry = self.status.entry(peer).or_insert_with(|| PeerStatus {
            address: peer,
            state: State::Idle.to_string(),
            since: now,
            info: String::new(),
            afi: AfiName::of(peer),
            prefixes_received: 0,
        });
        let before = (!changed).then(|| entry.clone());
        f(entry);
        changed |= before.is_some_and(|b| b != *entry);
        self.status_changed |= changed;
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
            self.emit(Action::SetTimer {
                timer: CoreTimer::SyncDeadline,
                after: Duration::from_secs(u64::from(secs)),
            });
        }
        let ip = new.listen_addr.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        self.emit(Action::Listen(SocketAddr::new(ip, new.listen_port)));

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
        let keys = self
            .peers
            .values()
            .filter_map(|p| p.cfg.password.clone().map(|k| (p.cfg.address, k)))
            .collect();
        self.emit(Action::ListenerKeys(keys));

        // Originated routes.
        let wanted_routes: BTreeMap<IpNet, &Route> = new
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

    fn add_peer(&mut self, pc: PeerConfig) {
        let Some(cfg) = self.cfg.as_ref() else { return };
        let fsm = fsm_config(cfg, &pc);
        self.next_generation += 1;
        let generation = self.next_generation;
        self.emit(Action::StartSession(SessionSpec {
            peer: pc.address,
            generation,
            port: pc.port,
            password: pc.password.clone(),
            ttl_security: pc.ttl_security,
            fsm,
        }));
        let now = self.now.unwrap_or(SystemTime::UNIX_EPOCH);
        self.set_status(pc.address, |s| {
            s.state = State::Idle.to_string();
            s.since = now;
            s.info = String::new();
        });
        self.peers.insert(
            pc.address,
            PeerRuntime {
                cfg: pc,
                generation,
                up: None,
                adj_out: HashMap::new(),
                stale_families: HashSet::new(),
                stale_timer: false,
                eor: HashSet::new(),
                ever_up: false,
                received: 0,
            },
        );
    }

    fn remove_peer(&mut self, addr: IpAddr, subcode: u8) {
        if let Some(p) = self.peers.remove(&addr) {
            self.emit(Action::StopSession {
                peer: addr,
                subcode,
            });
            if p.stale_timer {
                self.emit(Action::CancelTimer(CoreTimer::Stale {
                    peer: addr,
                    generation: p.generation,
                }));
            }
        }
        if self.status.remove(&addr).is_some() {
            self.status_changed = true;
        }
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
                self.send(addr, msgs);
            }
            let changes = self.rib.remove_where(Source::Peer(addr), |p, path| {
                apply_policy(&rules, p, &path.attrs, path.source).is_none()
            });
            self.propagate(changes);
        }
        self.readvertise(addr);
    }

    // ------------------------------------------------------------ sessions

    fn session_event(&mut self, peer: IpAddr, event: SessionEvent) {
        match event {
            SessionEvent::State(s) => {
                let now = self.now.unwrap_or(SystemTime::UNIX_EPOCH);
                self.set_status(peer, |st| {
                    st.state = s.to_string();
                    st.since = now;
                    if s == State::Established {
                        st.info = "Established".into();
                    }
                })
            }
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
        let eors = families
            .into_iter()
            .map(|f| Message::Update(Update::end_of_rib(f)))
            .collect();
        self.send(peer, eors);
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
                // A stale path loses ties, so where this peer's path was best an equal fresh
                // path of another peer can take over: report those changes like any other.
                let source = Source::Peer(peer);
                let before: Vec<(IpNet, Path)> = self
                    .rib
                    .iter_best()
                    .filter(|(_, p)| p.source == source)
                    .map(|(prefix, p)| (prefix, p.clone()))
                    .collect();
                let n = self.rib.mark_stale(source);
                let changes: Vec<rib::BestChange> = before
                    .into_iter()
                    .filter_map(|(prefix, old)| {
                        let new = self.rib.best(&prefix)?;
                        (new.source != source).then(|| rib::BestChange {
                            prefix,
                            old: Some(old),
                            new: Some(new.clone()),
                        })
                    })
                    .collect();
                self.propagate(changes);
                let Some(rt) = self.peers.get_mut(&peer) else {
                    return;
                };
                rt.stale_families = was.negotiated.families.iter().copied().collect();
                info!(%peer, routes = n, restart_time = gr.restart_time, "peer restarting, keeping its routes as stale");
                rt.stale_timer = true;
                let timer = CoreTimer::Stale {
                    peer,
                    generation: rt.generation,
                };
                self.emit(Action::SetTimer {
                    timer,
                    after: Duration::from_secs(u64::from(gr.restart_time)),
                });
                // Where the stale path stays best nothing is reported: the route is unchanged
                // and the agent does not act on `stale`, so a `Best` event per held route
                // would only make it reconcile for nothing.
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
            if rt.stale_families.is_empty() && rt.stale_timer {
                rt.stale_timer = false;
                let timer = CoreTimer::Stale {
                    peer,
                    generation: rt.generation,
                };
                self.emit(Action::CancelTimer(timer));
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
            self.emit(Action::Route(RouteEvent::Synced));
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
                    self.emit(Action::Route(ev));
                }
                None if was_learned => {
                    self.emit(Action::Route(RouteEvent::Withdrawn { prefix: c.prefix }));
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
        // Prefixes grouped by the attributes they are announced with, groups in the order of
        // their first prefix.
        let mut announce: Vec<(PathAttrs, Vec<IpNet>)> = Vec::new();
        let mut group_of: HashMap<PathAttrs, usize> = HashMap::new();
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
                    match group_of.get(&a) {
                        Some(&i) => announce[i].1.push(*prefix),
                        None => {
                            group_of.insert(a.clone(), announce.len());
                            announce.push((a.clone(), vec![*prefix]));
                        }
                    }
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
        self.send(peer, msgs);
    }
}

/// The FSM configuration of a peer's session: what we announce in our OPEN and how we retry.
fn fsm_config(cfg: &SpeakerConfig, pc: &PeerConfig) -> FsmConfig {
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
    FsmConfig {
        local_as,
        router_id: cfg.router_id,
        remote_as: pc.remote_as,
        hold_time: pc.hold_time.unwrap_or(90),
        keepalive: pc.keepalive,
        capabilities: caps,
        passive: pc.passive,
        connect_retry: retry,
        connect_retry_max: Duration::from_secs(120).max(retry),
    }
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
