//! The agent's run loop: desired state from the datastore → diff → apply.
//!
//! ```text
//!   etcd watch "/calico/" ──┐
//!   speaker route changes ──┼──► trigger (mpsc, coalesced) ──► reconcile():
//!   resync tick (30 s) ─────┘        snapshot = list nodes, BGP config, peers, affinities, local WEPs
//!                                    sessions  = peering::sessions_for(snapshot)   → speaker.set_config
//!                                    routes    = routes::desired_routes(snapshot + learned)
//!                                    diff against the kernel (proto 12 + workload routes) → netlink
//!   status socket task ◄── shared NodeStatus (peer rows)
//! ```
//! Level-triggered on purpose: every trigger recomputes the whole desired state from a fresh
//! snapshot, so a missed or duplicated event can never leave the kernel wrong, and a restarted
//! agent converges on what is already there without touching it.
//!
//! Restart rule: routes learned over BGP are only removed once the speaker has synchronised
//! with its peers (end-of-RIB from every established peer) or the graceful-restart window has
//! passed, so a restarting agent never withdraws a working route from its own kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calico_dataplane::{Netlink, Route, RouteChange, RouteFilter, RouteTarget};
use calico_datastore::{Datastore, EtcdClient};
use calico_ipam::Ipam;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::bgp::{BgpControl, SpeakerView};
use crate::config::{NetworkingBackend, NodeConfig};
use crate::peering;
use crate::policy::PolicySync;
use crate::routes::{self, KernelRoute, ROUTE_PROTOCOL, RouteInputs, Target};
use crate::snapshot::{SnapshotError, read_snapshot};
use crate::startup::{self, Started};
use crate::status::{self, NodeStatus};

/// How often the agent recomputes everything even without a trigger.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// How often the status rows served to `calicoctl node status` are refreshed.
const STATUS_REFRESH: Duration = Duration::from_secs(1);
/// Longest wait for the speaker's initial sync before stale learned routes may be removed.
const LEARNED_ROUTES_GRACE: Duration = Duration::from_secs(120);
/// Triggers arriving within this window are handled by one reconcile.
const COALESCE: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("kernel: {what}")]
    Kernel {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("peering")]
    Peering(#[from] peering::PeeringError),
    #[error("start-up")]
    Startup(#[from] startup::StartupError),
}

fn to_kernel(r: &KernelRoute) -> Route {
    match &r.target {
        Target::Blackhole => Route::blackhole(r.dst, ROUTE_PROTOCOL),
        Target::Via(gw) => Route::gateway(r.dst, *gw, None, ROUTE_PROTOCOL),
        // Workload routes use the kernel's default protocol (boot) like `ip route add`, as
        // the seed shows: `192.168.166.128 dev calicce21fc3677 scope link`.
        Target::Dev(ifname) => Route::device(r.dst, ifname, 3),
    }
}

fn from_kernel(r: &Route) -> Option<KernelRoute> {
    let target = match &r.target {
        RouteTarget::Blackhole => Target::Blackhole,
        RouteTarget::Gateway { via, .. } => Target::Via(*via),
        RouteTarget::Device { ifname } => Target::Dev(ifname.clone()),
        RouteTarget::Other { .. } => return None,
    };
    Some(KernelRoute { dst: r.dst, target })
}

/// Reads the routes this agent may own: protocol 12, plus routes on workload interfaces.
async fn present_routes(nl: &Netlink) -> Result<BTreeSet<KernelRoute>, AgentError> {
    let all = nl
        .routes(&RouteFilter::default())
        .await
        .map_err(|e| AgentError::Kernel {
            what: "listing routes".into(),
            source: Box::new(e),
        })?;
    Ok(all
        .iter()
        .filter(|r| {
            r.protocol == ROUTE_PROTOCOL
                || matches!(&r.target, RouteTarget::Device { ifname } if ifname.starts_with("cali"))
        })
        .filter_map(from_kernel)
        .collect())
}

/// Brings the kernel to `desired`. `may_remove_learned` is false until the speaker has synced.
/// Every change goes in one batch (many routes per netlink message, each acknowledged): a
/// refused route is logged with its prefix and fails the round (so it is retried), the others
/// land.
async fn apply_routes(
    nl: &Netlink,
    desired: &BTreeSet<KernelRoute>,
    may_remove_learned: bool,
) -> Result<(), AgentError> {
    let present = present_routes(nl).await?;
    let diff = routes::diff(desired, &present);
    let mut changes = Vec::with_capacity(diff.add.len() + diff.remove.len());
    for r in &diff.add {
        // A workload whose veth is not there (yet, or any more) has no route to install.
        if let Target::Dev(ifname) = &r.target
            && nl.link(ifname).await.ok().flatten().is_none()
        {
            continue;
        }
        info!(route = %to_kernel(r), "installing route");
        changes.push(RouteChange::Replace(to_kernel(r)));
    }
    for r in &diff.remove {
        if matches!(r.target, Target::Via(_)) && !may_remove_learned {
            debug!(route = %to_kernel(r), "keeping learned route until the speaker has synced");
            continue;
        }
        info!(route = %to_kernel(r), "removing route");
        changes.push(RouteChange::Delete(to_kernel(r)));
    }
    let failures = nl.apply_route_changes(&changes).await;
    for (_, e) in &failures {
        warn!(error = %e, "route change failed");
    }
    let failed = failures.len();
    match failures.into_iter().next() {
        None => Ok(()),
        Some((_, first)) => Err(AgentError::Kernel {
            what: format!("{failed} of {} route changes failed", changes.len()),
            source: Box::new(first),
        }),
    }
}

/// Runs the agent until the process is stopped.
pub async fn run(cfg: NodeConfig, etcd: EtcdClient) -> Result<(), AgentError> {
    let ds = Datastore::from_etcd(etcd.clone());
    let ipam = Ipam::new(etcd.clone());
    let started: Started = startup::run(&cfg, &ds).await?;

    let status = Arc::new(Mutex::new(NodeStatus {
        node_name: started.node_name.clone(),
        ipv4_peers: vec![],
        ipv6_peers: vec![],
    }));
    let served = status.clone();
    let run_dir = cfg.run_dir.clone();
    tokio::spawn(async move {
        let current = move || {
            served
                .lock()
                .map(|s| s.clone())
                .unwrap_or_else(|p| p.into_inner().clone())
        };
        if let Err(e) = status::serve(run_dir, current).await {
            warn!(error = %e, "status socket stopped");
        }
    });

    let nl = Netlink::connect().map_err(|e| AgentError::Kernel {
        what: "opening netlink".into(),
        source: Box::new(e),
    })?;
    let (trigger_tx, mut trigger_rx) = mpsc::channel::<()>(64);
    // Our own routes already in the kernel mean this agent is restarting: peers are asked
    // (graceful restart) to keep our routes, and we keep theirs until the speaker has synced.
    let restarted = !nl
        .routes(&RouteFilter::protocol(ROUTE_PROTOCOL))
        .await
        .map_err(|e| AgentError::Kernel {
            what: "listing routes".into(),
            source: Box::new(e),
        })?
        .is_empty();
    if restarted {
        info!("found this agent's routes in the kernel: restarting gracefully");
    }
    let mut speaker = match cfg.backend {
        NetworkingBackend::Bgp => Some(BgpControl::start(restarted, trigger_tx.clone())),
        NetworkingBackend::None => None,
    };
    let node_status =
        crate::node_status::Publisher::spawn(ds.clone(), started.node_name.clone(), nl.clone());

    // Any change under /calico/ may change our desired state: one watch covers them all.
    let watch_tx = trigger_tx.clone();
    let watch_kv = etcd.clone();
    tokio::spawn(async move {
        let mut events = watch_kv.watch("/calico/", 0);
        while let Some(ev) = events.next().await {
            match &ev {
                Err(e) => warn!(error = %e, "datastore watch error; resyncing"),
                // Status reports (our own writes among them) change nothing we reconcile.
                Ok(ev) if crate::node_status::is_node_status_event(ev) => continue,
                Ok(_) => {}
            }
            if watch_tx.send(()).await.is_err() {
                return;
            }
        }
    });
    let tick_tx = trigger_tx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESYNC_EVERY);
        loop {
            tick.tick().await;
            if tick_tx.send(()).await.is_err() {
                return;
            }
        }
    });

    // Policy: the previous run's table keeps enforcing until the first sync replaces it in
    // one transaction, so a restart never opens a gap.
    let mut policy = match PolicySync::new() {
        Ok(p) => Some(p),
        Err(e) => {
            error!(error = %e, "nftables is not usable: policy is NOT enforced on this node");
            None
        }
    };

    println!("Calico node started successfully");
    let started_at = Instant::now();
    loop {
        let mut failed = false;
        if let Err(e) = reconcile(&ds, &ipam, &nl, &started, speaker.as_mut(), started_at).await {
            warn!(error = %e, source = ?std::error::Error::source(&e), "reconcile failed; will retry");
            failed = true;
        }
        if let Some(p) = policy.as_mut()
            && let Err(e) = p.sync(&ds, &started.node_name).await
        {
            warn!(error = %e, source = ?std::error::Error::source(&e), "policy sync failed; the last table stays in force");
            failed = true;
        }
        // Wait for the next trigger. Session state changes do not trigger a reconcile (nothing
        // in the datastore changed), so the status rows are refreshed every second meanwhile:
        // cheap, and `calicoctl node status` never lags a session by more than that.
        loop {
            if let Some(sp) = &speaker
                && let Ok(mut s) = status.lock()
            {
                let (v4, v6) = sp.peer_rows();
                s.ipv4_peers = v4;
                s.ipv6_peers = v6;
            }
            node_status.observe(speaker.as_ref());
            match tokio::time::timeout(STATUS_REFRESH, trigger_rx.recv()).await {
                Ok(Some(())) => break,
                Ok(None) => return Ok(()),
                // A failed round is retried after one refresh period, not at the next resync.
                Err(_elapsed) if failed => break,
                Err(_elapsed) => {}
            }
        }
        // Swallow the triggers that arrive right behind the first.
        tokio::time::sleep(COALESCE).await;
        while trigger_rx.try_recv().is_ok() {}
    }
}

async fn reconcile(
    ds: &Datastore,
    ipam: &Ipam,
    nl: &Netlink,
    started: &Started,
    speaker: Option<&mut BgpControl>,
    started_at: Instant,
) -> Result<(), AgentError> {
    let snap = read_snapshot(ds, ipam, &started.node_name).await?;
    let mut inputs = RouteInputs {
        own_blocks: snap.own_blocks.clone(),
        learned: BTreeMap::new(),
        workloads: snap.workloads.clone(),
        no_export: snap.no_export.clone(),
    };
    let mut synced = started_at.elapsed() > LEARNED_ROUTES_GRACE;
    if let Some(sp) = speaker {
        let sessions =
            peering::sessions_for(&started.node_name, &snap.nodes, &snap.global, &snap.peers)?;
        let view = SpeakerView {
            router_id: started.ipv4.map(|n| n.addr()),
            local_as: started.as_number,
            listen_port: snap
                .nodes
                .iter()
                .find(|n| n.name == started.node_name)
                .and_then(|n| n.listen_port)
                .unwrap_or(snap.global.listen_port),
            sessions,
            announced: routes::announced_prefixes(&inputs),
            local_v4: started.ipv4.map(|n| n.addr()),
            local_v6: started.ipv6.map(|n| n.addr()),
            cluster_id: snap
                .nodes
                .iter()
                .find(|n| n.name == started.node_name)
                .and_then(|n| n.rr_cluster_id.as_deref())
                .and_then(|c| c.parse().ok()),
            bgp_filters: snap.bgp_filters.clone(),
            prefix_advertisements: snap.global.prefix_advertisements.clone(),
        };
        sp.apply(&view);
        inputs.learned = sp.learned();
        synced = synced || sp.initial_sync_done();
    }
    let desired = routes::desired_routes(&inputs);
    apply_routes(nl, &desired, synced).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_route_conversion_round_trips() {
        for r in [
            KernelRoute {
                dst: "192.168.104.0/26".parse().unwrap(),
                target: Target::Via("192.168.33.12".parse().unwrap()),
            },
            KernelRoute {
                dst: "192.168.166.128/26".parse().unwrap(),
                target: Target::Blackhole,
            },
            KernelRoute {
                dst: "192.168.166.128/32".parse().unwrap(),
                target: Target::Dev("calicce21fc3677".into()),
            },
        ] {
            assert_eq!(from_kernel(&to_kernel(&r)), Some(r));
        }
    }
}
