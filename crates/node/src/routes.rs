//! The routes a node must have, computed from what it owns and what its peers told it.
//!
//! Pure. The seed's `ip r` on node1 is the contract:
//! ```text
//! 192.168.104.0/26 via 192.168.33.12 dev eth1 proto bird   # node2's block, learned by BGP
//! 192.168.166.128 dev calicce21fc3677 scope link            # the local container
//! blackhole 192.168.166.128/26 proto bird                   # node1's own block
//! ```
//! Routes to remote blocks and the blackholes of our own blocks carry protocol 12 (`bird` in
//! iproute2's names), which is how the agent recognises its own routes after a restart; local
//! workload routes belong to the interface they point at (the kernel removes them with it).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

/// Route protocol number of the routes this agent owns ("proto bird" in `ip route`).
pub const ROUTE_PROTOCOL: u8 = 12;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Traffic for a block we own but have no workload for is dropped here, not sent back out.
    Blackhole,
    /// A remote block, via the peer that announced it.
    Via(IpAddr),
    /// A local workload, straight down its veth.
    Dev(String),
    /// A remote block through a tunnel device (`via G dev D onlink`): VXLAN via the remote
    /// tunnel address, IPIP via the remote host address (`crate::tunnel`).
    Onlink { via: IpAddr, dev: String },
}

/// One route in the main table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    pub dst: IpNet,
    pub target: Target,
}

impl KernelRoute {
    /// Whether the agent owns this route by protocol (the others are owned by their interface).
    pub fn by_protocol(&self) -> bool {
        !matches!(self.target, Target::Dev(_))
    }
}

/// A local workload's address and host-side interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWorkload {
    pub ip: IpNet,
    pub interface: String,
}

/// Everything the route table depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteInputs {
    /// Blocks affine to this node (confirmed affinities).
    pub own_blocks: BTreeSet<IpNet>,
    /// Best paths learned over BGP: prefix → next hop.
    pub learned: BTreeMap<IpNet, IpAddr>,
    pub workloads: Vec<LocalWorkload>,
    /// Pools with `disableBGPExport`: their blocks and addresses are never announced.
    pub no_export: Vec<IpNet>,
}

/// The routes this node's main table must hold.
pub fn desired_routes(inputs: &RouteInputs) -> BTreeSet<KernelRoute> {
    let mut out = BTreeSet::new();
    for block in &inputs.own_blocks {
        out.insert(KernelRoute {
            dst: *block,
            target: Target::Blackhole,
        });
    }
    for (prefix, next_hop) in &inputs.learned {
        // Our own block comes back from a reflector or a peer: our blackhole stays.
        if inputs.own_blocks.contains(prefix) {
            continue;
        }
        out.insert(KernelRoute {
            dst: *prefix,
            target: Target::Via(*next_hop),
        });
    }
    for w in &inputs.workloads {
        out.insert(KernelRoute {
            dst: w.ip,
            target: Target::Dev(w.interface.clone()),
        });
    }
    out
}

/// The prefixes this node announces: its blocks, and host routes for workloads whose address
/// was borrowed from another node's block (the longer prefix wins on every other router).
/// Nothing inside a pool with `disableBGPExport` is announced.
pub fn announced_prefixes(inputs: &RouteInputs) -> BTreeSet<IpNet> {
    let exported = |n: &IpNet| !inputs.no_export.iter().any(|p| p.contains(n));
    let mut out: BTreeSet<IpNet> = inputs.own_blocks.iter().copied().filter(exported).collect();
    for w in &inputs.workloads {
        if !inputs.own_blocks.iter().any(|b| b.contains(&w.ip.addr())) && exported(&w.ip) {
            out.insert(w.ip);
        }
    }
    out
}

/// What to change in the kernel: `add` (replace semantics) and `remove`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RouteDiff {
    pub add: Vec<KernelRoute>,
    pub remove: Vec<KernelRoute>,
}

/// Diffs desired routes against those present. `present` holds the routes of our protocol plus
/// the routes on workload interfaces; only protocol-owned routes are ever removed.
pub fn diff(desired: &BTreeSet<KernelRoute>, present: &BTreeSet<KernelRoute>) -> RouteDiff {
    // A destination still desired (with another target) is replaced by its add, not removed.
    let wanted: HashSet<IpNet> = desired.iter().map(|d| d.dst).collect();
    RouteDiff {
        add: desired.difference(present).cloned().collect(),
        remove: present
            .difference(desired)
            .filter(|r| r.by_protocol() && !wanted.contains(&r.dst))
            .cloned()
            .collect(),
    }
}

/// What the BGP speaker tells the agent's route reconciler about one prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteNotice {
    /// The best path to `prefix` is now via `next_hop`.
    Best { prefix: IpNet, next_hop: IpAddr },
    /// No learned path to `prefix` any more.
    Withdrawn { prefix: IpNet },
    /// The speaker has synchronised with its peers: stale learned routes may go.
    Synced,
}

/// How many route notices may wait for the agent before they are coalesced into one full
/// route resync (see [`RouteFeed`]).
pub const ROUTE_NOTICES: usize = 4096;

/// The bounded channel from the speaker's route events to the agent's route reconciler.
///
/// Overflow: the sender never waits (the speaker's own queue is drained at once into the
/// table of best paths, [`crate::bgp::BgpControl::learned`], which always holds every
/// prefix). When [`ROUTE_NOTICES`] notices are already waiting, a new one is dropped and the
/// feed is marked overflowed; the agent, on taking the mark
/// ([`RouteFeedReceiver::take_overflow`]), reconciles every route from that table instead of
/// from the notices. Nothing is lost: the table is read after the mark is taken, so it holds
/// every change a dropped notice described.
#[derive(Debug, Clone)]
pub struct RouteFeed {
    tx: tokio::sync::mpsc::Sender<RouteNotice>,
    overflowed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The agent's end of a [`RouteFeed`].
#[derive(Debug)]
pub struct RouteFeedReceiver {
    pub rx: tokio::sync::mpsc::Receiver<RouteNotice>,
    overflowed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A route feed holding at most `capacity` notices.
pub fn route_feed(capacity: usize) -> (RouteFeed, RouteFeedReceiver) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    let overflowed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    (
        RouteFeed {
            tx,
            overflowed: overflowed.clone(),
        },
        RouteFeedReceiver { rx, overflowed },
    )
}

impl RouteFeed {
    /// Queues `n` without waiting; on a full queue marks the feed overflowed. `false` once
    /// the agent is gone.
    pub fn send(&self, n: RouteNotice) -> bool {
        use tokio::sync::mpsc::error::TrySendError;
        match self.tx.try_send(n) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.overflowed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

impl RouteFeedReceiver {
    /// Whether notices were dropped since the last call (then reconcile every route).
    pub fn take_overflow(&self) -> bool {
        self.overflowed
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn seed_node1() -> RouteInputs {
        RouteInputs {
            own_blocks: [net("192.168.166.128/26")].into(),
            learned: [(net("192.168.104.0/26"), "192.168.33.12".parse().unwrap())].into(),
            workloads: vec![LocalWorkload {
                ip: net("192.168.166.128/32"),
                interface: "calicce21fc3677".into(),
            }],
            no_export: vec![],
        }
    }

    #[test]
    fn seed_routes_on_node1() {
        let routes = desired_routes(&seed_node1());
        let expected: BTreeSet<_> = [
            KernelRoute {
                dst: net("192.168.104.0/26"),
                target: Target::Via("192.168.33.12".parse().unwrap()),
            },
            KernelRoute {
                dst: net("192.168.166.128/32"),
                target: Target::Dev("calicce21fc3677".into()),
            },
            KernelRoute {
                dst: net("192.168.166.128/26"),
                target: Target::Blackhole,
            },
        ]
        .into();
        assert_eq!(routes, expected);
    }

    #[test]
    fn own_block_learned_back_keeps_the_blackhole() {
        let mut inputs = seed_node1();
        inputs
            .learned
            .insert(net("192.168.166.128/26"), "192.168.33.20".parse().unwrap());
        let routes = desired_routes(&inputs);
        assert!(routes.contains(&KernelRoute {
            dst: net("192.168.166.128/26"),
            target: Target::Blackhole
        }));
        assert_eq!(routes.len(), 3);
    }

    #[test]
    fn borrowed_addresses_are_announced_as_host_routes() {
        let mut inputs = seed_node1();
        inputs.workloads.push(LocalWorkload {
            ip: net("192.168.104.7/32"),
            interface: "cali0123456789a".into(),
        });
        let ann = announced_prefixes(&inputs);
        assert_eq!(
            ann,
            [net("192.168.166.128/26"), net("192.168.104.7/32")].into()
        );
    }

    #[test]
    fn pools_with_bgp_export_disabled_are_routed_but_not_announced() {
        let mut inputs = seed_node1();
        inputs.no_export = vec![net("192.168.166.0/24")];
        assert!(announced_prefixes(&inputs).is_empty());
        // The blackhole and the workload route stay: only the announcement is suppressed.
        assert_eq!(desired_routes(&inputs).len(), 3);
        inputs.no_export = vec![net("10.0.0.0/8")];
        assert_eq!(
            announced_prefixes(&inputs),
            [net("192.168.166.128/26")].into()
        );
    }

    #[test]
    fn diff_is_empty_when_kernel_is_right_and_never_removes_workload_routes() {
        let desired = desired_routes(&seed_node1());
        assert_eq!(diff(&desired, &desired), RouteDiff::default());
        let mut present = desired.clone();
        let stale_workload = KernelRoute {
            dst: net("192.168.166.130/32"),
            target: Target::Dev("cali99999999999".into()),
        };
        let stale_remote = KernelRoute {
            dst: net("192.168.200.0/26"),
            target: Target::Via("192.168.33.13".parse().unwrap()),
        };
        present.insert(stale_workload);
        present.insert(stale_remote.clone());
        let d = diff(&desired, &present);
        assert!(d.add.is_empty());
        assert_eq!(d.remove, vec![stale_remote]);
    }

    #[test]
    fn changed_next_hop_is_replaced_not_removed() {
        let desired = desired_routes(&seed_node1());
        let mut present = desired.clone();
        let old = KernelRoute {
            dst: net("192.168.104.0/26"),
            target: Target::Via("192.168.33.12".parse().unwrap()),
        };
        present.remove(&old);
        present.insert(KernelRoute {
            dst: net("192.168.104.0/26"),
            target: Target::Via("192.168.33.99".parse().unwrap()),
        });
        let d = diff(&desired, &present);
        assert_eq!(d.add, vec![old]);
        // Replace semantics: the add overwrites; removing the old one would drop traffic.
        assert!(d.remove.is_empty());
    }

    #[tokio::test]
    async fn route_feed_overflow_is_marked_not_lost() {
        let (feed, mut rx) = route_feed(2);
        let p = |i: u8| RouteNotice::Withdrawn {
            prefix: net(&format!("10.0.{i}.0/24")),
        };
        assert!(feed.send(p(1)) && feed.send(p(2)));
        assert!(!rx.take_overflow());
        assert!(feed.send(p(3)), "full: dropped, not an error");
        assert!(rx.take_overflow(), "the drop is marked");
        assert!(!rx.take_overflow(), "the mark is taken once");
        assert_eq!(rx.rx.recv().await, Some(p(1)));
        assert_eq!(rx.rx.recv().await, Some(p(2)));
        assert!(feed.send(p(4)));
        assert_eq!(rx.rx.recv().await, Some(p(4)));
        drop(rx);
        assert!(!feed.send(p(5)), "closed once the agent is gone");
    }
}
