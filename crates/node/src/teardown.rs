//! Stopping calico-node: what a SIGTERM leaves in place, and the uninstall that removes it.
//!
//! A stop is a restart unless the datastore says otherwise. On SIGTERM (or SIGINT) calico-node
//! exits 0 at once and leaves the dataplane (routes, the `inet calico-rs` table, workload
//! veths) in the kernel, so workloads keep their connectivity; its BGP connections close
//! without a NOTIFICATION, which RFC 4724 peers (ours, BIRD, GoBGP) treat as a restart: they
//! keep this node's routes as stale until it returns and sends End-of-RIB, or their restart
//! timer (120 s) passes. A NOTIFICATION would make them flush at once (RFC 4724 section 4
//! without the RFC 8538 N bit, which our speaker does not negotiate), so none is sent. BIRD
//! behaves the same way when stopped for a graceful restart (`birdc graceful restart`), and
//! Calico's calico-node, whose BIRD dies with its container, has its peers keep the routes.
//!
//! Uninstall is the exception: the chart's pre-delete hook (`calico-node -mark-uninstall`)
//! writes [`MARK_KEY`]. A calico-node stopped after that mark was written (its revision is
//! newer than the one the agent saw at start) removes what it and install-cni put on the
//! node: every route of protocol 12 (block blackholes, routes learned over BGP, tunnel
//! routes), the VXLAN devices, the `inet calico-rs` table, the CNI config (`CNI_CONF_NAME` in
//! `CNI_NET_DIR`) and install-cni's `calico-tls` directory. The CNI kubeconfig belongs to the
//! cni-kubeconfig sidecar, which removes it when it stops after the conflist is gone. A mark
//! older than the agent's start belongs to an earlier installation and is ignored, so a
//! reinstall never tears down on its first restart; an unreadable datastore means no teardown
//! (leaving the dataplane is the safe failure).

use std::path::PathBuf;
use std::time::Duration;

use calico_dataplane::{Netlink, RouteChange, RouteFilter};
use calico_datastore::{EtcdClient, KvError};
use tracing::{info, warn};

use crate::routes::ROUTE_PROTOCOL;

/// The uninstall mark the chart's pre-delete hook writes.
pub const MARK_KEY: &str = "/calico-rs/v1/uninstall";
/// Longest wait for the datastore when deciding whether to tear down.
const MARK_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes the uninstall mark (the chart's pre-delete hook). Returns its revision.
pub async fn mark_uninstall(etcd: &EtcdClient, by: &str) -> Result<i64, KvError> {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let value = serde_json::json!({ "requestedBy": by, "requestedAtUnix": at });
    etcd.put(MARK_KEY, value.to_string().into_bytes()).await
}

/// Whether an uninstall was requested after `since` (the datastore revision at the agent's
/// start). Errors and timeouts answer false: no teardown.
pub async fn uninstall_requested(etcd: &EtcdClient, since: i64) -> bool {
    match tokio::time::timeout(MARK_READ_TIMEOUT, etcd.get(MARK_KEY)).await {
        Ok(Ok(Some(kv))) => kv.mod_revision > since,
        Ok(Ok(None)) => false,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot read the uninstall mark; leaving the dataplane in place");
            false
        }
        Err(_) => {
            warn!("the datastore did not answer in time; leaving the dataplane in place");
            false
        }
    }
}

/// Where install-cni wrote the CNI configuration (the calico-node container's mounts).
#[derive(Debug, Clone)]
pub struct CniFiles {
    /// `CNI_NET_DIR`: the host's CNI conf dir as mounted in this container.
    pub net_dir: PathBuf,
    /// `CNI_CONF_NAME`: the conflist install-cni wrote.
    pub conf_name: String,
}

impl CniFiles {
    /// From `CNI_NET_DIR` and `CNI_CONF_NAME`; `None` when either is unset (not installed by
    /// the chart: nothing of the CNI is ours to remove).
    pub fn from_env() -> Option<CniFiles> {
        let dir = std::env::var("CNI_NET_DIR")
            .ok()
            .filter(|s| !s.is_empty())?;
        let name = std::env::var("CNI_CONF_NAME")
            .ok()
            .filter(|s| !s.is_empty())?;
        Some(CniFiles {
            net_dir: PathBuf::from(dir),
            conf_name: name,
        })
    }
}

/// Removes this node's calico-rs dataplane and CNI configuration. Every step is attempted;
/// the failures are returned (each names what it was removing).
pub async fn teardown(cni: Option<&CniFiles>) -> Vec<String> {
    let mut failed = Vec::new();
    match Netlink::connect() {
        Ok(nl) => {
            match nl.routes(&RouteFilter::protocol(ROUTE_PROTOCOL)).await {
                Ok(routes) => {
                    let n = routes.len();
                    let changes: Vec<RouteChange> =
                        routes.into_iter().map(RouteChange::Delete).collect();
                    for (_, e) in nl.apply_route_changes(&changes).await {
                        failed.push(format!("removing a route: {e}"));
                    }
                    info!(routes = n, "removed this node's routes (protocol 12)");
                }
                Err(e) => failed.push(format!("listing routes: {e}")),
            }
            for dev in [crate::tunnel::VXLAN_V4, crate::tunnel::VXLAN_V6] {
                match nl.delete_link(dev).await {
                    Ok(true) => info!(device = dev, "removed the VXLAN device"),
                    Ok(false) => {}
                    Err(e) => failed.push(format!("removing {dev}: {e}")),
                }
            }
        }
        Err(e) => failed.push(format!("opening netlink: {e}")),
    }
    match calico_nftables::PolicyDataplane::new().and_then(|mut d| d.remove()) {
        Ok(()) => info!("removed the nftables table inet calico-rs"),
        Err(e) => failed.push(format!("removing the nftables table: {e}")),
    }
    if let Some(cni) = cni {
        let conf = cni.net_dir.join(&cni.conf_name);
        match std::fs::remove_file(&conf) {
            Ok(()) => info!(path = %conf.display(), "removed the CNI config"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failed.push(format!("removing {}: {e}", conf.display())),
        }
        let tls = cni.net_dir.join("calico-tls");
        match std::fs::remove_dir_all(&tls) {
            Ok(()) => info!(path = %tls.display(), "removed the CNI's etcd credentials"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failed.push(format!("removing {}: {e}", tls.display())),
        }
    }
    failed
}

/// What calico-node does when `signal` stops it: tears down if an uninstall was marked after
/// `since`, otherwise leaves everything for the next start. Returns the exit code.
pub async fn on_stop(etcd: &EtcdClient, since: i64, signal: &str) -> i32 {
    if !uninstall_requested(etcd, since).await {
        // Sessions close without a NOTIFICATION (peers keep our routes as stale) and the
        // dataplane stays: a restart, as graceful for the peers as a SIGKILL, without the wait.
        info!(
            signal,
            "stopping; the dataplane stays in place for the next start"
        );
        return 0;
    }
    info!(
        signal,
        "stopping for uninstall: removing this node's dataplane"
    );
    let failed = teardown(CniFiles::from_env().as_ref()).await;
    for f in &failed {
        tracing::error!("uninstall: {f}");
    }
    if failed.is_empty() { 0 } else { 1 }
}

/// The chart's pre-delete hook (`calico-node -mark-uninstall`): writes the mark and logs it.
pub async fn mark_and_log(etcd: &EtcdClient, by: &str) -> Result<(), KvError> {
    let rev = mark_uninstall(etcd, by).await?;
    info!(
        key = MARK_KEY,
        revision = rev,
        "uninstall marked: calico-node removes its dataplane when stopped"
    );
    Ok(())
}
