//! Overlays as Calico runs them: VXLAN (`vxlan.calico`, `vxlan-v6.calico`) and IPIP (`tunl0`).
//!
//! Everything is read from the agent's watch-fed model ([`Store`]: pools, Nodes, every block
//! affinity), never listed from the datastore per change. [`Tunnels::sync`] runs when the
//! pools, the Nodes or FelixConfiguration change (and on start and every resync):
//! 1. for each overlay a pool of this node's family asks for (`vxlanMode`/`ipipMode` not
//!    `Never`), makes sure this node has a tunnel address allocated by IPAM from such a pool
//!    (handle `vxlan-tunnel-addr-<node>`, attributes `node` and `type: vxlanTunnelAddress`, as
//!    calico-node does; `vxlan-v6-tunnel-addr-`, `ipip-tunnel-addr-` likewise) and records it on
//!    its Node (`ipv4VXLANTunnelAddr` + `vxlanTunnelMACAddr`, `ipv6VXLANTunnelAddr` +
//!    `vxlanTunnelMACAddrV6`, `bgp.ipv4IPIPTunnelAddr`); with no such pool any more, the
//!    address is released, the fields cleared and the device removed. IPAM handles are the
//!    one thing the model does not hold (nothing else in the agent reads them, and one per
//!    workload would cost memory on every agent), so the handle is read, with a fresh copy of
//!    this node's Node, only when the watch lists (start, compaction) and when this node's
//!    tunnel address in the model is not what the last such check found (a pool change, a
//!    Node edited by someone else);
//! 2. brings the device to its settings (FelixConfiguration `vxlanVNI`, `vxlanPort`,
//!    `vxlanMTU`/`vxlanMTUV6`; the MTU defaults to the host interface's minus 50 (IPv4) or 70
//!    (IPv6)), and the permanent FDB and neighbour entries to one per remote VTEP;
//! 3. computes, with the pure [`plan`], the routes to remote blocks that go through a tunnel.
//!
//! Another node's block affinity changing needs none of that: [`Tunnels::blocks_changed`]
//! recomputes the route of that block alone and the agent installs it.
//!
//! The route reconcile then calls [`Tunnels::adjust`]: tunnel routes (`via <remote tunnel
//! address> dev vxlan.calico onlink`, `via <remote host> dev tunl0 onlink`) replace whatever
//! BGP learned for those blocks, and a learned route into an overlay pool that would leave
//! unencapsulated where the pool asks for encapsulation is dropped (route notices from the
//! speaker go through [`Tunnels::filter_notices`] the same way): a node never falls back to
//! native routing behind the user's back. With no BGP (`CALICO_NETWORKING_BACKEND=vxlan`) the
//! remote blocks come from the block affinities, native ones (CrossSubnet, same subnet)
//! included.
//!
//! IPIP needs the kernel's `ipip` module (it provides `tunl0`). Without it the node logs an
//! error, reports the problem (not ready, with the reason) and installs no route for the
//! blocks that need IPIP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_api::{IPIPMode, IPPool, Node, VXLANMode};
use calico_dataplane::Netlink;
use calico_dataplane::link::{format_mac, random_mac};
use calico_dataplane::vxlan::{Ensured, FdbEntry, NeighEntry, VxlanSpec};
use calico_datastore::Datastore;
use calico_ipam::model::{self, AffinityState};
use calico_ipam::{AllowedUse, AutoAssignArgs, Ipam};
use ipnet::IpNet;
use tracing::{error, info};

use crate::model::Store;
use crate::routes::{KernelRoute, Target};

/// The IPv4 VXLAN device.
pub const VXLAN_V4: &str = "vxlan.calico";
/// The IPv6 VXLAN device.
pub const VXLAN_V6: &str = "vxlan-v6.calico";
/// The IPIP device (the `ipip` module's fallback device).
pub const IPIP_DEVICE: &str = "tunl0";
/// Felix's defaults.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
pub const DEFAULT_VXLAN_VNI: u32 = 4096;
/// Encapsulation overheads: VXLAN over IPv4 50, over IPv6 70, IPIP 20.
pub use calico_dataplane::mtu::{
    IPIP_OVERHEAD, VXLAN_OVERHEAD as VXLAN_V4_OVERHEAD, VXLAN_V6_OVERHEAD,
};

/// An overlay mode of a pool (`vxlanMode`, `ipipMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Never,
    Always,
    CrossSubnet,
}

impl From<Option<VXLANMode>> for Mode {
    fn from(m: Option<VXLANMode>) -> Mode {
        match m {
            Some(VXLANMode::Always) => Mode::Always,
            Some(VXLANMode::CrossSubnet) => Mode::CrossSubnet,
            _ => Mode::Never,
        }
    }
}

impl From<Option<IPIPMode>> for Mode {
    fn from(m: Option<IPIPMode>) -> Mode {
        match m {
            Some(IPIPMode::Always) => Mode::Always,
            Some(IPIPMode::CrossSubnet) => Mode::CrossSubnet,
            _ => Mode::Never,
        }
    }
}

impl Mode {
    /// Whether traffic to a node must be encapsulated; `same_subnet`: the node's host address
    /// is in this node's subnet.
    pub fn encapsulates(self, same_subnet: bool) -> bool {
        match self {
            Mode::Never => false,
            Mode::Always => true,
            Mode::CrossSubnet => !same_subnet,
        }
    }
}

/// Which overlay a pool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    Vxlan(Mode),
    Ipip(Mode),
    None,
}

/// What the plan reads of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOverlay {
    pub cidr: IpNet,
    pub overlay: Overlay,
}

impl PoolOverlay {
    pub fn from_pool(p: &IPPool) -> Option<PoolOverlay> {
        let cidr = p.spec.cidr.parse::<IpNet>().ok()?.trunc();
        let vxlan = Mode::from(p.spec.vxlan_mode);
        let ipip = Mode::from(p.spec.ipip_mode);
        // Validation refuses a pool with both; VXLAN wins if one slipped through.
        let overlay = if vxlan != Mode::Never {
            Overlay::Vxlan(vxlan)
        } else if ipip != Mode::Never {
            Overlay::Ipip(ipip)
        } else {
            Overlay::None
        };
        Some(PoolOverlay { cidr, overlay })
    }

    /// Whether the pool asks for VXLAN or IPIP.
    pub fn encapsulated(&self) -> bool {
        self.overlay != Overlay::None
    }
}

/// Whether any pool asks for an overlay (the agent then keeps the tunnel state in sync).
pub fn overlay_in_use<'a>(pools: impl IntoIterator<Item = &'a IPPool>) -> bool {
    pools
        .into_iter()
        .filter_map(PoolOverlay::from_pool)
        .any(|o| o.encapsulated())
}

/// What the plan reads of a node: host addresses (with their prefix: the subnet) and tunnel
/// endpoints as recorded on its Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTunnels {
    pub name: String,
    pub ipv4: Option<IpNet>,
    pub ipv6: Option<IpNet>,
    pub vxlan_v4: Option<(IpAddr, [u8; 6])>,
    pub vxlan_v6: Option<(IpAddr, [u8; 6])>,
    pub ipip_v4: Option<IpAddr>,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    <[u8; 6]>::try_from(parts).ok()
}

fn parse_host(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    parse_host(s).map(|n| n.addr())
}

impl NodeTunnels {
    pub fn from_node(n: &Node) -> NodeTunnels {
        let bgp = n.spec.bgp.as_ref();
        let s = &n.spec;
        let vtep = |addr: &Option<String>, mac: &Option<String>| {
            Some((parse_ip(addr.as_deref()?)?, parse_mac(mac.as_deref()?)?))
        };
        NodeTunnels {
            name: n.metadata.name.clone().unwrap_or_default(),
            ipv4: bgp
                .and_then(|b| b.ipv4_address.as_deref())
                .and_then(parse_host),
            ipv6: bgp
                .and_then(|b| b.ipv6_address.as_deref())
                .and_then(parse_host),
            vxlan_v4: vtep(&s.ipv4_vxlan_tunnel_addr, &s.vxlan_tunnel_mac_addr),
            vxlan_v6: vtep(&s.ipv6_vxlan_tunnel_addr, &s.vxlan_tunnel_mac_addr_v6),
            ipip_v4: bgp
                .and_then(|b| b.ipv4_ipip_tunnel_addr.as_deref())
                .and_then(parse_ip),
        }
    }

    fn host(&self, v4: bool) -> Option<IpNet> {
        if v4 { self.ipv4 } else { self.ipv6 }
    }

    fn vxlan(&self, v4: bool) -> Option<(IpAddr, [u8; 6])> {
        if v4 { self.vxlan_v4 } else { self.vxlan_v6 }
    }
}

/// The VXLAN device of a family.
pub fn vxlan_device(v4: bool) -> &'static str {
    if v4 { VXLAN_V4 } else { VXLAN_V6 }
}

/// A remote VTEP of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteVtep {
    pub node_ip: IpAddr,
    pub tunnel: IpAddr,
    pub mac: [u8; 6],
}

/// What the overlays need of the kernel, beyond the devices themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per VXLAN device: the remote VTEPs (FDB + neighbour entries).
    pub vteps: BTreeMap<&'static str, BTreeSet<RemoteVtep>>,
    /// Routes to remote blocks decided here (they win over BGP for the same prefix).
    pub routes: BTreeSet<KernelRoute>,
    /// Overlay pools and their modes, and this node's subnets: which learned routes may stay.
    pub pools: Vec<PoolOverlay>,
    pub my_v4: Option<IpNet>,
    pub my_v6: Option<IpNet>,
    /// Why some blocks have no route (reported: the node is not ready).
    pub problems: BTreeSet<String>,
}

/// Everything the plan depends on.
#[derive(Debug, Clone, Default)]
pub struct PlanInputs {
    pub me: String,
    pub nodes: Vec<NodeTunnels>,
    pub pools: Vec<PoolOverlay>,
    /// Confirmed block affinities of every node: (node, block).
    pub affinities: Vec<(String, IpNet)>,
    /// BGP runs (`bird`): native routes come from it; otherwise from the affinities.
    pub bgp: bool,
    /// Whether `tunl0` exists (the kernel has the ipip module).
    pub ipip_device: bool,
}

fn same_subnet(mine: Option<IpNet>, theirs: IpAddr) -> bool {
    mine.is_some_and(|m| m.trunc().contains(&theirs))
}

/// The pure decisions: for every remote block, which route (through which device, via which
/// next hop) or none; and the VTEPs of every device.
pub fn plan(inp: &PlanInputs) -> Plan {
    let me = inp.nodes.iter().find(|n| n.name == inp.me);
    let my_v4 = me.and_then(|n| n.ipv4);
    let my_v6 = me.and_then(|n| n.ipv6);
    let mut out = Plan {
        pools: inp.pools.clone(),
        my_v4,
        my_v6,
        ..Plan::default()
    };
    for v4 in [true, false] {
        let family_has_vxlan = inp
            .pools
            .iter()
            .any(|p| p.cidr.addr().is_ipv4() == v4 && matches!(p.overlay, Overlay::Vxlan(_)));
        let mine = if v4 { my_v4 } else { my_v6 };
        if !family_has_vxlan || mine.is_none() || me.and_then(|m| m.vxlan(v4)).is_none() {
            continue;
        }
        let vteps: BTreeSet<RemoteVtep> = inp
            .nodes
            .iter()
            .filter(|n| n.name != inp.me)
            .filter_map(|n| {
                let (tunnel, mac) = n.vxlan(v4)?;
                Some(RemoteVtep {
                    node_ip: n.host(v4)?.addr(),
                    tunnel,
                    mac,
                })
            })
            .collect();
        out.vteps.insert(vxlan_device(v4), vteps);
    }
    let nodes: BTreeMap<&str, &NodeTunnels> =
        inp.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for (host, block) in &inp.affinities {
        if *host == inp.me {
            continue;
        }
        match out.block_route(
            *block,
            nodes.get(host.as_str()).copied(),
            inp.bgp,
            inp.ipip_device,
        ) {
            Ok(Some(r)) => {
                out.routes.insert(r);
            }
            Ok(None) => {}
            Err(problem) => {
                out.problems.insert(problem);
            }
        }
    }
    out
}

impl Plan {
    /// The route to another node's `block` (hosted by `node`, `None`: no such Node), or none
    /// (BGP provides it, or it cannot be routed yet), or why it cannot be routed at all.
    /// `bgp`: BGP runs; `ipip_device`: `tunl0` exists.
    fn block_route(
        &self,
        block: IpNet,
        node: Option<&NodeTunnels>,
        bgp: bool,
        ipip_device: bool,
    ) -> Result<Option<KernelRoute>, String> {
        let Some(pool) = self.pools.iter().find(|p| p.cidr.contains(&block)) else {
            return Ok(None);
        };
        let v4 = block.addr().is_ipv4();
        let Some(node) = node else {
            return Ok(None);
        };
        let Some(remote) = node.host(v4).map(|n| n.addr()) else {
            return Ok(None);
        };
        let same = same_subnet(if v4 { self.my_v4 } else { self.my_v6 }, remote);
        let route = |target| KernelRoute { dst: block, target };
        Ok(match pool.overlay {
            Overlay::Vxlan(mode) if mode.encapsulates(same) => {
                let have_device = self.vteps.contains_key(vxlan_device(v4));
                match node.vxlan(v4) {
                    Some((tunnel, _)) if have_device => Some(route(Target::Onlink {
                        via: tunnel,
                        dev: vxlan_device(v4).to_string(),
                    })),
                    // The remote VTEP is not known yet (or this node has none): no route
                    // rather than an unencapsulated one; the next round retries.
                    _ => None,
                }
            }
            Overlay::Ipip(mode) if v4 && mode.encapsulates(same) => {
                if !ipip_device {
                    return Err(format!(
                        "IPPool {}: ipipMode needs the {IPIP_DEVICE} device and this kernel has no ipip module; its remote blocks are not routed",
                        pool.cidr
                    ));
                }
                Some(route(Target::Onlink {
                    via: remote,
                    dev: IPIP_DEVICE.to_string(),
                }))
            }
            // Native: BGP provides it; without BGP the affinity does, inside the subnet.
            _ if !bgp && same => Some(route(Target::Via(remote))),
            _ => None,
        })
    }

    /// The prefixes the plan routes itself.
    fn decided(&self) -> BTreeSet<IpNet> {
        self.routes.iter().map(|r| r.dst).collect()
    }

    /// Whether a learned route to `dst` via `next_hop` may be installed: not when `dst` is in
    /// an overlay pool and that next hop would need encapsulation.
    fn keeps_learned(&self, dst: &IpNet, next_hop: IpAddr) -> bool {
        let mine = if next_hop.is_ipv4() {
            self.my_v4
        } else {
            self.my_v6
        };
        let same = same_subnet(mine, next_hop);
        match self.pools.iter().find(|p| p.cidr.contains(dst)) {
            Some(PoolOverlay {
                overlay: Overlay::Vxlan(m) | Overlay::Ipip(m),
                ..
            }) => !m.encapsulates(same),
            _ => true,
        }
    }

    /// Merges the plan into the desired routes: the plan's routes replace any other route to
    /// the same prefix, and a learned route into an overlay pool whose next hop would need
    /// encapsulation is dropped (never routed natively instead).
    pub fn adjust(&self, desired: &mut BTreeSet<KernelRoute>) {
        let decided = self.decided();
        desired.retain(|r| {
            if decided.contains(&r.dst) {
                return false;
            }
            match r.target {
                Target::Via(next_hop) => self.keeps_learned(&r.dst, next_hop),
                _ => true,
            }
        });
        desired.extend(self.routes.iter().cloned());
    }
}

/// FelixConfiguration's VXLAN settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSettings {
    pub port: u16,
    pub vni: u32,
    /// `vxlanMTU`; `None`: the host interface's MTU minus 50.
    pub mtu: Option<u32>,
    /// `vxlanMTUV6`; `None`: the host interface's MTU minus 70.
    pub mtu_v6: Option<u32>,
}

impl Default for VxlanSettings {
    fn default() -> Self {
        VxlanSettings {
            port: DEFAULT_VXLAN_PORT,
            vni: DEFAULT_VXLAN_VNI,
            mtu: None,
            mtu_v6: None,
        }
    }
}

/// The MTU of a tunnel device: configured, else the host interface's minus the overhead.
pub fn tunnel_mtu(configured: Option<u32>, host_mtu: Option<u32>, overhead: u32) -> u32 {
    configured.unwrap_or_else(|| host_mtu.unwrap_or(1500).saturating_sub(overhead))
}

/// The tunnel kinds calico-node allocates addresses for: handle prefix, `type` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TunnelKind {
    VxlanV4,
    VxlanV6,
    Ipip,
}

impl TunnelKind {
    pub fn handle(self, node: &str) -> String {
        match self {
            TunnelKind::VxlanV4 => format!("vxlan-tunnel-addr-{node}"),
            TunnelKind::VxlanV6 => format!("vxlan-v6-tunnel-addr-{node}"),
            TunnelKind::Ipip => format!("ipip-tunnel-addr-{node}"),
        }
    }

    pub fn type_attr(self) -> &'static str {
        match self {
            TunnelKind::VxlanV4 => "vxlanTunnelAddress",
            TunnelKind::VxlanV6 => "vxlanV6TunnelAddress",
            TunnelKind::Ipip => "ipipTunnelAddress",
        }
    }

    fn v4(self) -> bool {
        !matches!(self, TunnelKind::VxlanV6)
    }

    /// Whether `p` is a pool this tunnel's address may come from.
    fn serves(self, p: &IPPool) -> bool {
        let Some(o) = PoolOverlay::from_pool(p) else {
            return false;
        };
        p.spec.is_enabled()
            && p.spec.allows(calico_api::IPPoolAllowedUse::Tunnel)
            && o.cidr.addr().is_ipv4() == self.v4()
            && match self {
                TunnelKind::VxlanV4 | TunnelKind::VxlanV6 => {
                    matches!(o.overlay, Overlay::Vxlan(_))
                }
                TunnelKind::Ipip => matches!(o.overlay, Overlay::Ipip(_)),
            }
    }

    /// The Node's fields for this tunnel: (address, MAC).
    fn fields(self, n: &mut Node) -> (&mut Option<String>, Option<&mut Option<String>>) {
        match self {
            TunnelKind::VxlanV4 => (
                &mut n.spec.ipv4_vxlan_tunnel_addr,
                Some(&mut n.spec.vxlan_tunnel_mac_addr),
            ),
            TunnelKind::VxlanV6 => (
                &mut n.spec.ipv6_vxlan_tunnel_addr,
                Some(&mut n.spec.vxlan_tunnel_mac_addr_v6),
            ),
            TunnelKind::Ipip => (
                &mut n
                    .spec
                    .bgp
                    .get_or_insert_with(Default::default)
                    .ipv4_ipip_tunnel_addr,
                None,
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },
}

fn failed(what: impl Into<String>) -> impl FnOnce(String) -> TunnelError {
    let what = what.into();
    move |detail| TunnelError::Failed { what, detail }
}

/// What a [`Tunnels::sync`] works with.
#[derive(Clone, Copy)]
pub struct SyncContext<'a> {
    /// The model: pools, Nodes, block affinities.
    pub store: &'a Store,
    /// For this node's Node and its tunnel addresses only (see the module's description).
    pub ds: &'a Datastore,
    pub ipam: &'a Ipam,
    pub nl: &'a Netlink,
    pub vxlan: &'a VxlanSettings,
    /// `ipv6Support`.
    pub ipv6: bool,
    /// Check this node's tunnel addresses against IPAM (the watch listed: start, compaction).
    pub full: bool,
}

/// The agent's overlay state between rounds.
#[derive(Debug, Default)]
pub struct Tunnels {
    bgp: bool,
    /// Whether `tunl0` existed at the last sync.
    ipip_device: bool,
    plan: Plan,
    /// This node's tunnel addresses as the last check against IPAM found them (recorded on
    /// the Node and held by the handle): kind → (address, MAC). While the model's Node still
    /// shows the same, no sync reads IPAM or the datastore again.
    verified: BTreeMap<TunnelKind, (IpAddr, Option<[u8; 6]>)>,
    /// The last sync failed: the next round syncs again whatever changed.
    failed: bool,
    /// The last problems logged (each is logged once, when it appears).
    logged: BTreeSet<String>,
}

impl Tunnels {
    /// `bgp`: the networking backend runs BGP (`bird`); false for `vxlan` and `none`.
    pub fn new(bgp: bool) -> Tunnels {
        Tunnels {
            bgp,
            ..Tunnels::default()
        }
    }

    /// Merges the last plan into the desired routes ([`Plan::adjust`]).
    pub fn adjust(&self, desired: &mut BTreeSet<KernelRoute>) {
        self.plan.adjust(desired);
    }

    /// Whether tunnel state exists that a sync may have to clean up when the last overlay
    /// pool goes: an overlay pool in the last plan, a tunnel address of this node.
    pub fn in_use(&self) -> bool {
        !self.verified.is_empty() || self.plan.pools.iter().any(PoolOverlay::encapsulated)
    }

    /// Whether the last sync failed (the next round syncs again).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Route notices from the speaker, as [`Plan::adjust`] treats learned routes: a prefix
    /// the plan routes itself is left alone, and a path that would leave unencapsulated where
    /// the pool asks for encapsulation counts as withdrawn.
    pub fn filter_notices(&self, notices: &mut BTreeMap<IpNet, Option<IpAddr>>) {
        if self.plan.pools.is_empty() {
            return;
        }
        let decided = self.plan.decided();
        notices.retain(|p, _| !decided.contains(p));
        for (p, nh) in notices.iter_mut() {
            if nh.is_some_and(|h| !self.plan.keeps_learned(p, h)) {
                *nh = None;
            }
        }
    }

    /// Other nodes' block affinities changed (as now in `store`): recomputes the routes of
    /// those blocks alone and returns the ones to install (no datastore read, no kernel
    /// listing). `None`: a block lost its route or cannot be routed (a route learned over
    /// BGP may take its place, or a problem must be reported): the caller runs a full
    /// [`Tunnels::sync`] and reconciles every route instead.
    pub fn blocks_changed(
        &mut self,
        store: &Store,
        blocks: &BTreeSet<(String, IpNet)>,
    ) -> Option<Vec<KernelRoute>> {
        let mut install = Vec::new();
        for (host, block) in blocks {
            if host == store.node() {
                continue;
            }
            let confirmed =
                store.affinities().get(&(host.clone(), *block)) == Some(&AffinityState::Confirmed);
            let node = store
                .nodes()
                .find(|n| n.metadata.name.as_deref() == Some(host.as_str()))
                .map(NodeTunnels::from_node);
            let new = if confirmed {
                self.plan
                    .block_route(*block, node.as_ref(), self.bgp, self.ipip_device)
                    .ok()?
            } else {
                None
            };
            let old = self.plan.routes.iter().find(|r| r.dst == *block).cloned();
            match (old, new) {
                (old, Some(new)) if old.as_ref() != Some(&new) => {
                    if let Some(old) = old {
                        self.plan.routes.remove(&old);
                    }
                    self.plan.routes.insert(new.clone());
                    install.push(new);
                }
                (Some(_), None) => {
                    // Recomputed with everything else by the full round the caller runs.
                    return None;
                }
                _ => {}
            }
        }
        Some(install)
    }

    /// One sync: tunnel addresses, Node fields, devices, VTEP entries, the plan, from the
    /// model. With `cx.full`, this node's tunnel addresses are checked against IPAM too
    /// (the watch listed: start, compaction); otherwise IPAM and the datastore are read only when the model's Node
    /// no longer shows what the last check found. Returns whether the plan's routes changed.
    /// An error (or a problem of the plan) means the node is not ready; the caller retries.
    pub async fn sync(&mut self, cx: &SyncContext<'_>) -> Result<bool, TunnelError> {
        let result = self.sync_inner(cx).await;
        self.failed = result.is_err();
        result
    }

    async fn sync_inner(&mut self, cx: &SyncContext<'_>) -> Result<bool, TunnelError> {
        let SyncContext {
            store,
            nl,
            vxlan,
            ipv6,
            ..
        } = *cx;
        let node = store.node().to_string();
        let pools: Vec<&IPPool> = store.ip_pools().collect();
        let overlays: Vec<PoolOverlay> = pools
            .iter()
            .copied()
            .filter_map(PoolOverlay::from_pool)
            .collect();
        let me: Option<NodeTunnels> = store
            .nodes()
            .find(|n| n.metadata.name.as_deref() == Some(node.as_str()))
            .map(NodeTunnels::from_node);
        let mut problems = BTreeSet::new();

        let ipip_device = nl.link(IPIP_DEVICE).await.ok().flatten().is_some();
        for kind in [TunnelKind::VxlanV4, TunnelKind::VxlanV6, TunnelKind::Ipip] {
            let serving: Vec<IpNet> = pools
                .iter()
                .filter(|p| kind.serves(p))
                .filter_map(|p| p.spec.cidr.parse::<IpNet>().ok())
                .collect();
            let wanted = (kind.v4() || ipv6) && !serving.is_empty();
            let mine = self
                .ensure_address(cx, me.as_ref(), kind, wanted, &serving)
                .await?;
            let dev = match kind {
                TunnelKind::Ipip => IPIP_DEVICE,
                k => vxlan_device(k.v4()),
            };
            match (kind, mine) {
                (TunnelKind::Ipip, Some((addr, _))) => {
                    if !ipip_device {
                        problems.insert(format!(
                            "IPIP: an IPPool has ipipMode set but this kernel has no ipip module (no {IPIP_DEVICE} device); IPIP routes are not installed"
                        ));
                        continue;
                    }
                    self.ensure_ipip(nl, addr).await?;
                }
                (TunnelKind::Ipip, None) => {}
                (k, Some((addr, mac))) => {
                    let host = me.as_ref().and_then(|m| m.host(k.v4())).map(|a| a.addr());
                    let Some(host) = host else {
                        problems.insert(format!(
                            "{dev}: this node has no IPv{} address for the VXLAN tunnel",
                            if k.v4() { 4 } else { 6 }
                        ));
                        continue;
                    };
                    let (configured, overhead) = if k.v4() {
                        (vxlan.mtu, VXLAN_V4_OVERHEAD)
                    } else {
                        (vxlan.mtu_v6, VXLAN_V6_OVERHEAD)
                    };
                    let host_mtu = host_interface_mtu(nl, host).await;
                    let spec = VxlanSpec {
                        name: dev.to_string(),
                        vni: vxlan.vni,
                        port: vxlan.port,
                        local: host,
                        mac: mac.expect("VXLAN tunnels have a MAC"),
                        mtu: tunnel_mtu(configured, host_mtu, overhead),
                    };
                    self.ensure_vxlan(nl, &spec, addr).await?;
                }
                (k, None) => {
                    let dev = vxlan_device(k.v4());
                    if nl
                        .delete_link(dev)
                        .await
                        .map_err(|e| failed(format!("removing {dev}"))(e.to_string()))?
                    {
                        info!(
                            device = dev,
                            "no VXLAN pool of this family any more: device removed"
                        );
                    }
                }
            }
        }

        // This node's own VTEP as just ensured (the model may not show our write yet).
        let nodes: Vec<NodeTunnels> = store
            .nodes()
            .map(NodeTunnels::from_node)
            .map(|mut n| {
                if n.name == node {
                    self.overlay_own_vteps(&mut n);
                }
                n
            })
            .collect();
        let affinities: Vec<(String, IpNet)> = store
            .affinities()
            .iter()
            .filter(|(_, s)| **s == AffinityState::Confirmed)
            .map(|((h, b), _)| (h.clone(), *b))
            .collect();
        let plan = plan(&PlanInputs {
            me: node.clone(),
            nodes,
            pools: overlays,
            affinities,
            bgp: self.bgp,
            ipip_device,
        });
        for (dev, vteps) in &plan.vteps {
            if nl.link(dev).await.ok().flatten().is_some() {
                program_vteps(nl, dev, vteps).await?;
            }
        }
        problems.extend(plan.problems.iter().cloned());
        let changed = plan.routes != self.plan.routes
            || plan.pools != self.plan.pools
            || (plan.my_v4, plan.my_v6) != (self.plan.my_v4, self.plan.my_v6);
        self.plan = plan;
        self.ipip_device = ipip_device;
        for p in problems.difference(&self.logged) {
            error!(problem = %p, "overlay not programmed");
        }
        self.logged = problems.clone();
        if problems.is_empty() {
            Ok(changed)
        } else {
            Err(TunnelError::Failed {
                what: "overlay".into(),
                detail: problems.into_iter().collect::<Vec<_>>().join("; "),
            })
        }
    }

    /// This node's VTEPs as the last check found them (written by us, possibly not yet
    /// back through the watch).
    fn overlay_own_vteps(&self, n: &mut NodeTunnels) {
        for (kind, (addr, mac)) in &self.verified {
            match (kind, mac) {
                (TunnelKind::VxlanV4, Some(m)) => n.vxlan_v4 = Some((*addr, *m)),
                (TunnelKind::VxlanV6, Some(m)) => n.vxlan_v6 = Some((*addr, *m)),
                (TunnelKind::Ipip, _) => n.ipip_v4 = Some(*addr),
                _ => {}
            }
        }
    }

    /// Makes this node's tunnel address (and MAC) of `kind` exist when `wanted` (from one of
    /// the `serving` pools), released and cleared otherwise. Returns the address and MAC in
    /// force. `me`: this node as the model has it. Without `full`, nothing is read when the
    /// model's Node shows what the last check found (or nothing was and nothing is wanted).
    async fn ensure_address(
        &mut self,
        cx: &SyncContext<'_>,
        me: Option<&NodeTunnels>,
        kind: TunnelKind,
        wanted: bool,
        serving: &[IpNet],
    ) -> Result<Option<(IpAddr, Option<[u8; 6]>)>, TunnelError> {
        let shown = me.and_then(|m| match kind {
            TunnelKind::VxlanV4 => m.vxlan_v4.map(|(a, mac)| (a, Some(mac))),
            TunnelKind::VxlanV6 => m.vxlan_v6.map(|(a, mac)| (a, Some(mac))),
            TunnelKind::Ipip => m.ipip_v4.map(|a| (a, None)),
        });
        if !cx.full {
            match (wanted, self.verified.get(&kind)) {
                (true, Some(v))
                    if shown == Some(*v) && serving.iter().any(|p| p.contains(&v.0)) =>
                {
                    return Ok(Some(*v));
                }
                (false, None) if shown.is_none() => return Ok(None),
                _ => {}
            }
        }
        let got = self
            .check_address(cx.ds, cx.ipam, cx.store.node(), kind, wanted, serving)
            .await?;
        match got {
            Some(v) => self.verified.insert(kind, v),
            None => self.verified.remove(&kind),
        };
        Ok(got)
    }

    /// [`Tunnels::ensure_address`] against IPAM and a fresh copy of this node's Node.
    async fn check_address(
        &self,
        ds: &Datastore,
        ipam: &Ipam,
        node: &str,
        kind: TunnelKind,
        wanted: bool,
        pools: &[IpNet],
    ) -> Result<Option<(IpAddr, Option<[u8; 6]>)>, TunnelError> {
        let handle = kind.handle(node);
        let ds_err = |what: &str| failed(format!("{what} Node {node}"));
        // Read afresh (not from the model): the update below needs the current revision, and
        // the model may not show our own last write yet.
        let current: Node = ds
            .get(None, node)
            .await
            .map_err(|e| ds_err("reading")(e.to_string()))?
            .ok_or_else(|| ds_err("reading")("it does not exist".into()))?;
        let mut n = current.clone();
        let (addr_field, mac_field) = kind.fields(&mut n);
        let recorded = addr_field.as_deref().and_then(parse_ip);
        let held = ipam
            .ips_by_handle(&handle)
            .await
            .map_err(|e| failed(format!("reading IPAM handle {handle}"))(e.to_string()))?;
        let pools = pools.to_vec();
        let keep = recorded.filter(|a| held.contains(a) && pools.iter().any(|p| p.contains(a)));
        let addr = match (wanted, keep) {
            (false, _) => {
                if !held.is_empty() {
                    ipam.release_by_handle(&handle).await.map_err(|e| {
                        failed(format!("releasing IPAM handle {handle}"))(e.to_string())
                    })?;
                    info!(handle, "tunnel address released: no pool asks for it");
                }
                None
            }
            (true, Some(a)) => Some(a),
            (true, None) => {
                // A stale or foreign address: release what the handle holds, take a new one.
                if !held.is_empty() {
                    let _ = ipam.release_by_handle(&handle).await;
                }
                let v4 = kind.v4();
                let got = ipam
                    .auto_assign(AutoAssignArgs {
                        num_v4: usize::from(v4),
                        num_v6: usize::from(!v4),
                        handle_id: Some(handle.clone()),
                        attrs: BTreeMap::from([
                            (model::ATTR_NODE.to_string(), node.to_string()),
                            ("type".to_string(), kind.type_attr().to_string()),
                        ]),
                        hostname: node.to_string(),
                        v4_pools: if v4 { pools.clone() } else { vec![] },
                        v6_pools: if v4 { vec![] } else { pools.clone() },
                        allowed_use: AllowedUse::Tunnel,
                    })
                    .await
                    .map_err(|e| {
                        failed(format!("allocating the {} of {node}", kind.type_attr()))(
                            e.to_string(),
                        )
                    })?;
                let a = got.v4.first().or(got.v6.first()).copied().ok_or_else(|| {
                    failed(format!("allocating the {} of {node}", kind.type_attr()))(
                        "the pools have no free address".into(),
                    )
                })?;
                info!(handle, address = %a, "tunnel address allocated");
                Some(a)
            }
        };
        *addr_field = addr.map(|a| a.to_string());
        let mac = match mac_field {
            Some(field) => {
                let mac = addr.map(|_| {
                    field
                        .as_deref()
                        .and_then(parse_mac)
                        .unwrap_or_else(random_mac)
                });
                *field = mac.map(|m| format_mac(&m));
                mac
            }
            None => None,
        };
        if n != current {
            ds.update(&n)
                .await
                .map_err(|e| ds_err("recording the tunnel address on")(e.to_string()))?;
            info!(node, kind = kind.type_attr(), address = ?addr, "Node tunnel fields updated");
        }
        Ok(addr.map(|a| (a, mac)))
    }

    async fn ensure_vxlan(
        &self,
        nl: &Netlink,
        spec: &VxlanSpec,
        addr: IpAddr,
    ) -> Result<(), TunnelError> {
        let dev = spec.name.clone();
        let what = |w: &str| failed(format!("{w} {dev}"));
        match nl
            .ensure_vxlan(spec)
            .await
            .map_err(|e| what("programming")(chain(&e)))?
        {
            Ensured::Unchanged => {}
            done => {
                info!(device = %spec.name, vni = spec.vni, port = spec.port, mtu = spec.mtu, local = %spec.local, mac = %format_mac(&spec.mac), ?done, "VXLAN device programmed")
            }
        }
        ensure_only_address(nl, &spec.name, addr).await
    }

    async fn ensure_ipip(&self, nl: &Netlink, addr: IpAddr) -> Result<(), TunnelError> {
        let link = nl
            .require_link(IPIP_DEVICE)
            .await
            .map_err(|e| failed("reading tunl0")(e.to_string()))?;
        if !link.up {
            nl.set_link_up(IPIP_DEVICE, true)
                .await
                .map_err(|e| failed("bringing up tunl0")(e.to_string()))?;
        }
        ensure_only_address(nl, IPIP_DEVICE, addr).await
    }
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// The tunnel address is the device's only address (/32 or /128).
async fn ensure_only_address(nl: &Netlink, dev: &str, addr: IpAddr) -> Result<(), TunnelError> {
    let want = IpNet::from(addr);
    let have = nl
        .addresses(dev)
        .await
        .map_err(|e| failed(format!("reading the addresses of {dev}"))(e.to_string()))?;
    for a in have.iter().filter(|a| **a != want) {
        // IPv6 link-local addresses belong to the kernel.
        if let IpAddr::V6(v6) = a.addr()
            && v6.segments()[0] & 0xffc0 == 0xfe80
        {
            continue;
        }
        nl.delete_address(dev, *a)
            .await
            .map_err(|e| failed(format!("removing {a} from {dev}"))(e.to_string()))?;
    }
    if !have.contains(&want) {
        nl.add_address(dev, want)
            .await
            .map_err(|e| failed(format!("adding {want} to {dev}"))(e.to_string()))?;
    }
    Ok(())
}

/// The MTU of the interface holding `host` (the tunnel's underlay).
async fn host_interface_mtu(nl: &Netlink, host: IpAddr) -> Option<u32> {
    for link in nl.links().await.ok()? {
        if let Ok(addrs) = nl.addresses(&link.name).await
            && addrs.iter().any(|a| a.addr() == host)
        {
            return link.mtu;
        }
    }
    None
}

/// Brings the device's permanent FDB and neighbour entries to exactly `vteps`.
async fn program_vteps(
    nl: &Netlink,
    dev: &str,
    vteps: &BTreeSet<RemoteVtep>,
) -> Result<(), TunnelError> {
    let e =
        |what: String| move |err: calico_dataplane::vxlan::VxlanError| failed(what)(chain(&err));
    let fdb_want: BTreeSet<FdbEntry> = vteps
        .iter()
        .map(|v| FdbEntry {
            mac: v.mac,
            host: v.node_ip,
        })
        .collect();
    let neigh_want: BTreeSet<NeighEntry> = vteps
        .iter()
        .map(|v| NeighEntry {
            ip: v.tunnel,
            mac: v.mac,
        })
        .collect();
    let fdb_have: BTreeSet<FdbEntry> = nl
        .fdb_entries(dev)
        .await
        .map_err(e(format!("listing the FDB of {dev}")))?
        .into_iter()
        .collect();
    let neigh_have: BTreeSet<NeighEntry> = nl
        .permanent_neighbours(dev)
        .await
        .map_err(e(format!("listing the neighbours of {dev}")))?
        .into_iter()
        .collect();
    for f in fdb_have.difference(&fdb_want) {
        info!(device = dev, mac = %format_mac(&f.mac), dst = %f.host, "removing FDB entry");
        nl.delete_fdb(dev, f)
            .await
            .map_err(e(format!("FDB of {dev}")))?;
    }
    for n in neigh_have.difference(&neigh_want) {
        info!(device = dev, ip = %n.ip, "removing neighbour entry");
        nl.delete_neighbour(dev, n)
            .await
            .map_err(e(format!("neighbours of {dev}")))?;
    }
    for f in fdb_want.difference(&fdb_have) {
        info!(device = dev, mac = %format_mac(&f.mac), dst = %f.host, "adding FDB entry");
        nl.set_fdb(dev, f)
            .await
            .map_err(e(format!("FDB of {dev}")))?;
    }
    for n in neigh_want.difference(&neigh_have) {
        info!(device = dev, ip = %n.ip, mac = %format_mac(&n.mac), "adding neighbour entry");
        nl.set_neighbour(dev, n)
            .await
            .map_err(e(format!("neighbours of {dev}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    const MAC1: [u8; 6] = [0x66, 0, 0, 0, 0, 1];
    const MAC2: [u8; 6] = [0x66, 0, 0, 0, 0, 2];
    const MAC3: [u8; 6] = [0x66, 0, 0, 0, 0, 3];

    /// node1 and node3 on 192.168.33.0/24, node2 behind a router on 192.168.34.0/24.
    fn nodes() -> Vec<NodeTunnels> {
        vec![
            NodeTunnels {
                name: "node1".into(),
                ipv4: Some(net("192.168.33.11/24")),
                vxlan_v4: Some((ip("10.65.0.0"), MAC1)),
                ..Default::default()
            },
            NodeTunnels {
                name: "node2".into(),
                ipv4: Some(net("192.168.34.12/24")),
                vxlan_v4: Some((ip("10.65.1.0"), MAC2)),
                ..Default::default()
            },
            NodeTunnels {
                name: "node3".into(),
                ipv4: Some(net("192.168.33.13/24")),
                vxlan_v4: Some((ip("10.65.2.0"), MAC3)),
                ..Default::default()
            },
        ]
    }

    fn inputs(overlay: Overlay, bgp: bool) -> PlanInputs {
        PlanInputs {
            me: "node1".into(),
            nodes: nodes(),
            pools: vec![PoolOverlay {
                cidr: net("10.65.0.0/16"),
                overlay,
            }],
            affinities: vec![
                ("node1".into(), net("10.65.0.0/26")),
                ("node2".into(), net("10.65.1.0/26")),
                ("node3".into(), net("10.65.2.0/26")),
            ],
            bgp,
            ipip_device: false,
        }
    }

    fn onlink(dst: &str, via: &str, dev: &str) -> KernelRoute {
        KernelRoute {
            dst: net(dst),
            target: Target::Onlink {
                via: ip(via),
                dev: dev.into(),
            },
        }
    }

    fn native(dst: &str, via: &str) -> KernelRoute {
        KernelRoute {
            dst: net(dst),
            target: Target::Via(ip(via)),
        }
    }

    #[test]
    fn vxlan_always_routes_every_remote_block_through_the_tunnel() {
        let p = plan(&inputs(Overlay::Vxlan(Mode::Always), true));
        assert_eq!(
            p.routes,
            [
                onlink("10.65.1.0/26", "10.65.1.0", VXLAN_V4),
                onlink("10.65.2.0/26", "10.65.2.0", VXLAN_V4),
            ]
            .into()
        );
        let vteps = &p.vteps[VXLAN_V4];
        assert_eq!(
            vteps
                .iter()
                .map(|v| (v.node_ip, v.tunnel, v.mac))
                .collect::<Vec<_>>(),
            vec![
                (ip("192.168.33.13"), ip("10.65.2.0"), MAC3),
                (ip("192.168.34.12"), ip("10.65.1.0"), MAC2),
            ]
        );
        assert!(p.problems.is_empty());
    }

    #[test]
    fn cross_subnet_encapsulates_only_across_the_router() {
        // With BGP: node3 (same subnet) is left to BGP's native route.
        let p = plan(&inputs(Overlay::Vxlan(Mode::CrossSubnet), true));
        assert_eq!(
            p.routes,
            [onlink("10.65.1.0/26", "10.65.1.0", VXLAN_V4)].into()
        );
        let mut desired: BTreeSet<KernelRoute> = [
            native("10.65.1.0/26", "192.168.34.12"),
            native("10.65.2.0/26", "192.168.33.13"),
        ]
        .into();
        p.adjust(&mut desired);
        assert_eq!(
            desired,
            [
                onlink("10.65.1.0/26", "10.65.1.0", VXLAN_V4),
                native("10.65.2.0/26", "192.168.33.13"),
            ]
            .into()
        );
        // Without BGP the native route comes from node3's affinity.
        let p = plan(&inputs(Overlay::Vxlan(Mode::CrossSubnet), false));
        assert_eq!(
            p.routes,
            [
                onlink("10.65.1.0/26", "10.65.1.0", VXLAN_V4),
                native("10.65.2.0/26", "192.168.33.13"),
            ]
            .into()
        );
    }

    #[test]
    fn a_learned_route_into_an_overlay_pool_never_goes_out_unencapsulated() {
        let mut i = inputs(Overlay::Vxlan(Mode::Always), true);
        // node2 has no VTEP yet: no route to its block at all, and a borrowed /32 it
        // announces is dropped too.
        i.nodes[1].vxlan_v4 = None;
        let p = plan(&i);
        let mut desired: BTreeSet<KernelRoute> = [
            native("10.65.1.0/26", "192.168.34.12"),
            native("10.65.3.7/32", "192.168.34.12"),
            native("172.16.0.0/24", "192.168.34.12"),
        ]
        .into();
        p.adjust(&mut desired);
        assert_eq!(
            desired,
            [
                onlink("10.65.2.0/26", "10.65.2.0", VXLAN_V4),
                // Outside every pool: not ours to judge.
                native("172.16.0.0/24", "192.168.34.12"),
            ]
            .into()
        );
    }

    #[test]
    fn no_vxlan_pool_means_no_vteps_and_no_tunnel_routes() {
        let p = plan(&inputs(Overlay::None, true));
        assert!(p.vteps.is_empty() && p.routes.is_empty());
        let mut desired: BTreeSet<KernelRoute> = [native("10.65.1.0/26", "192.168.34.12")].into();
        p.adjust(&mut desired);
        assert_eq!(desired.len(), 1);
    }

    #[test]
    fn ipip_routes_onlink_via_the_host_and_never_natively_without_tunl0() {
        let mut i = inputs(Overlay::Ipip(Mode::Always), true);
        i.ipip_device = true;
        let p = plan(&i);
        assert_eq!(
            p.routes,
            [
                onlink("10.65.1.0/26", "192.168.34.12", IPIP_DEVICE),
                onlink("10.65.2.0/26", "192.168.33.13", IPIP_DEVICE),
            ]
            .into()
        );
        assert!(p.vteps.is_empty());
        // CrossSubnet: tunl0 only across the router.
        i.pools[0].overlay = Overlay::Ipip(Mode::CrossSubnet);
        assert_eq!(
            plan(&i).routes,
            [onlink("10.65.1.0/26", "192.168.34.12", IPIP_DEVICE)].into()
        );
        // No ipip module: no route, a problem naming the pool, and the learned native
        // route is dropped.
        i.ipip_device = false;
        i.pools[0].overlay = Overlay::Ipip(Mode::Always);
        let p = plan(&i);
        assert!(p.routes.is_empty());
        assert_eq!(p.problems.len(), 1);
        assert!(p.problems.iter().next().unwrap().contains("10.65.0.0/16"));
        let mut desired: BTreeSet<KernelRoute> = [native("10.65.1.0/26", "192.168.34.12")].into();
        p.adjust(&mut desired);
        assert!(desired.is_empty());
    }

    #[test]
    fn ipv6_vxlan_uses_its_own_device_and_addresses() {
        let mut i = inputs(Overlay::Vxlan(Mode::Always), false);
        i.pools = vec![PoolOverlay {
            cidr: net("fd65::/48"),
            overlay: Overlay::Vxlan(Mode::Always),
        }];
        i.nodes[0].ipv6 = Some(net("fd33::11/64"));
        i.nodes[0].vxlan_v6 = Some((ip("fd65::"), MAC1));
        i.nodes[1].ipv6 = Some(net("fd34::12/64"));
        i.nodes[1].vxlan_v6 = Some((ip("fd65:0:0:1::"), MAC2));
        i.affinities = vec![("node2".into(), net("fd65:0:0:1::/122"))];
        let p = plan(&i);
        assert_eq!(
            p.routes,
            [onlink("fd65:0:0:1::/122", "fd65:0:0:1::", VXLAN_V6)].into()
        );
        assert_eq!(p.vteps[VXLAN_V6].len(), 1);
        assert!(!p.vteps.contains_key(VXLAN_V4));
    }

    #[test]
    fn route_notices_follow_the_plan() {
        let p = plan(&inputs(Overlay::Vxlan(Mode::Always), true));
        let t = Tunnels {
            plan: p,
            ..Tunnels::new(true)
        };
        let mut notices: BTreeMap<IpNet, Option<IpAddr>> = [
            (net("10.65.1.0/26"), Some(ip("192.168.34.12"))),
            (net("10.65.3.7/32"), Some(ip("192.168.34.12"))),
            (net("172.16.0.0/24"), Some(ip("192.168.34.12"))),
            (net("10.65.9.0/26"), None),
        ]
        .into();
        t.filter_notices(&mut notices);
        assert_eq!(
            notices,
            [
                // The plan routes 10.65.1.0/26 through the tunnel itself: the notice goes.
                // Into the VXLAN pool natively: as withdrawn.
                (net("10.65.3.7/32"), None),
                (net("172.16.0.0/24"), Some(ip("192.168.34.12"))),
                (net("10.65.9.0/26"), None),
            ]
            .into()
        );
    }

    fn put(store: &mut Store, key: &str, value: serde_json::Value) {
        store.apply(calico_datastore::WatchEvent::Put(
            calico_datastore::KeyValue {
                key: key.into(),
                value: serde_json::to_vec(&value).unwrap(),
                create_revision: 1,
                mod_revision: store.revision() + 1,
            },
        ));
    }

    #[test]
    fn another_nodes_block_changes_only_its_own_route() {
        const RES: &str = "/calico/resources/v3/projectcalico.org";
        let mut store = Store::new("node1");
        put(
            &mut store,
            &format!("{RES}/ippools/p"),
            serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                "metadata": {"name": "p"},
                "spec": {"cidr": "10.65.0.0/16", "vxlanMode": "Always"}}),
        );
        put(
            &mut store,
            &format!("{RES}/nodes/node2"),
            serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "Node",
                "metadata": {"name": "node2"},
                "spec": {"bgp": {"ipv4Address": "192.168.34.12/24"},
                    "ipv4VXLANTunnelAddr": "10.65.1.0", "vxlanTunnelMACAddr": "66:00:00:00:00:02"}}),
        );
        // The last sync knew node1 and node3's blocks only.
        let mut i = inputs(Overlay::Vxlan(Mode::Always), true);
        i.affinities.retain(|(h, _)| h != "node2");
        let mut t = Tunnels {
            plan: plan(&i),
            ..Tunnels::new(true)
        };
        let before = t.plan.routes.clone();
        let key = "/calico/ipam/v2/host/node2/ipv4/block/10.65.1.0-26";
        put(
            &mut store,
            key,
            serde_json::json!({"state": "confirmed", "deleted": false}),
        );
        let changed: BTreeSet<(String, IpNet)> = [("node2".into(), net("10.65.1.0/26"))].into();
        let want = onlink("10.65.1.0/26", "10.65.1.0", VXLAN_V4);
        assert_eq!(t.blocks_changed(&store, &changed), Some(vec![want.clone()]));
        // Only that block's route was added to the plan.
        let mut expected = before.clone();
        expected.insert(want.clone());
        assert_eq!(t.plan.routes, expected);
        // Nothing changed since: nothing to install.
        assert_eq!(t.blocks_changed(&store, &changed), Some(vec![]));
        // This node's own blocks are not routed here.
        let own: BTreeSet<(String, IpNet)> = [("node1".into(), net("10.65.0.0/26"))].into();
        assert_eq!(t.blocks_changed(&store, &own), Some(vec![]));
        // Marked deleted (Calico marks an affinity before removing it): gone already.
        put(
            &mut store,
            key,
            serde_json::json!({"state": "confirmed", "deleted": true}),
        );
        assert!(store.affinities().is_empty(), "{:?}", store.affinities());
        assert_eq!(t.blocks_changed(&store, &changed), None);
        let mut t = Tunnels {
            plan: plan(&i),
            ..Tunnels::new(true)
        };
        put(
            &mut store,
            key,
            serde_json::json!({"state": "confirmed", "deleted": false}),
        );
        assert_eq!(t.blocks_changed(&store, &changed), Some(vec![want.clone()]));
        // The block goes: a full round decides what replaces the route.
        store.apply(calico_datastore::WatchEvent::Delete {
            key: key.into(),
            revision: store.revision() + 1,
            prev: None,
        });
        assert_eq!(t.blocks_changed(&store, &changed), None);
    }

    #[test]
    fn mtu_is_configured_or_the_host_minus_the_overhead() {
        assert_eq!(tunnel_mtu(Some(1400), Some(9000), 50), 1400);
        assert_eq!(tunnel_mtu(None, Some(9000), VXLAN_V4_OVERHEAD), 8950);
        assert_eq!(tunnel_mtu(None, Some(1500), VXLAN_V6_OVERHEAD), 1430);
        assert_eq!(tunnel_mtu(None, None, IPIP_OVERHEAD), 1480);
    }

    #[test]
    fn node_fields_parse_and_tunnel_kinds_name_calicos_handles() {
        let mut n = Node::new("node2", Default::default());
        n.spec.ipv4_vxlan_tunnel_addr = Some("10.65.1.0".into());
        n.spec.vxlan_tunnel_mac_addr = Some("66:00:00:00:00:02".into());
        n.spec.bgp = Some(calico_api::NodeBGPSpec {
            ipv4_address: Some("192.168.34.12/24".into()),
            ipv4_ipip_tunnel_addr: Some("10.65.1.1".into()),
            ..Default::default()
        });
        let t = NodeTunnels::from_node(&n);
        assert_eq!(t.vxlan_v4, Some((ip("10.65.1.0"), MAC2)));
        assert_eq!(t.ipip_v4, Some(ip("10.65.1.1")));
        assert_eq!(t.ipv4, Some(net("192.168.34.12/24")));
        assert_eq!(TunnelKind::VxlanV4.handle("n"), "vxlan-tunnel-addr-n");
        assert_eq!(TunnelKind::VxlanV6.type_attr(), "vxlanV6TunnelAddress");
        assert_eq!(TunnelKind::Ipip.handle("n"), "ipip-tunnel-addr-n");
        assert_eq!(parse_mac("66:00:00:00:00:0g"), None);
    }
}
