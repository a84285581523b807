//! Per-node session state of each BGPPeer, from the CalicoNodeStatus objects in etcd, reported
//! on the Kubernetes BGPPeer objects.
//!
//! calico-node writes its sessions into the `status.bgp.peersV4/peersV6` of every
//! CalicoNodeStatus naming its node (`crates/node/src/node_status.rs`). A BGPPeer with a
//! `peerIP` has a session on every node it applies to; the rows of those nodes whose `peerIP`
//! is that address and whose type is `NodePeer` or `GlobalPeer` (not `NodeMesh`) are its
//! sessions.
//!
//! Calico's BGPPeer CRD (ours is identical) has no `status`, so the result goes in annotations,
//! as the other status of BGPPeers does:
//! - `status.projectcalico.org/sessions`: JSON object, node name → `{"state", "since"}`
//!   (`state` is the BGP FSM state, `since` as in `calicoctl node status`), nodes in name order;
//! - `status.projectcalico.org/established-sessions`: how many of those are `Established`.
//!
//! Only nodes whose report is current count: the CalicoNodeStatus must have an
//! `updatePeriodSeconds` above 0 and a `lastUpdated` no older than [`staleness_limit`] (a node
//! whose agent stopped would otherwise report its last sessions forever). When a node has
//! several CalicoNodeStatus objects, the most recently updated one is used. BGPPeers selecting
//! their peers with `peerSelector` (no `peerIP`) get no session annotations: their peers are
//! Calico nodes, whose sessions are not attributed to a BGPPeer here.
//!
//! The annotations are patched only when they change (`since` moves only when a session changes
//! state), so a steady cluster causes no writes; the mirror never copies
//! `status.projectcalico.org/*` into etcd.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use calico_api::{BGPPeer, CalicoNodePeerType, CalicoNodeStatus};
use calico_datastore::{Datastore, ResourceError};
use chrono::{DateTime, Utc};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tracing::warn;

use crate::reconcile::Context;

pub const SESSIONS_ANNOTATION: &str = "status.projectcalico.org/sessions";
pub const ESTABLISHED_ANNOTATION: &str = "status.projectcalico.org/established-sessions";

/// How often the annotations are brought up to date.
pub const ROUND: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BgpPeerStatusError {
    #[error("listing CalicoNodeStatus in etcd: {0}")]
    ListNodeStatus(#[source] ResourceError),
    #[error("listing BGPPeers in Kubernetes: {0}")]
    ListPeers(#[source] Box<kube::Error>),
    #[error("BGPPeer {name:?}: patching the session annotations: {source}")]
    Patch {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// One node's session to a peer address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSession {
    /// The BGP FSM state (`Established`, `Active`, ...), `Unknown` when not reported.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// Sessions by peer address, then by node name.
pub type Sessions = BTreeMap<IpAddr, BTreeMap<String, NodeSession>>;

/// How old a report may be and still count: three update periods, at least a minute (the
/// controllers look only every [`ROUND`], and an agent may be a little late).
pub fn staleness_limit(period_seconds: i32) -> Duration {
    Duration::from_secs(u64::from(period_seconds.unsigned_abs()) * 3).max(Duration::from_secs(60))
}

/// When `s` was last written by its node, if its report is current at `now`.
fn current_at(s: &CalicoNodeStatus, now: SystemTime) -> Option<DateTime<Utc>> {
    let period = s.spec.update_period_seconds.filter(|p| *p > 0)?;
    let updated = s.status.as_ref()?.last_updated.as_deref()?;
    let updated = DateTime::parse_from_rfc3339(updated)
        .ok()?
        .with_timezone(&Utc);
    let age = DateTime::<Utc>::from(now)
        .signed_duration_since(updated)
        .to_std()
        // A timestamp slightly in the future (clock skew) is current.
        .unwrap_or(Duration::ZERO);
    (age <= staleness_limit(period)).then_some(updated)
}

/// Every BGPPeer session the current reports show (pure).
pub fn sessions(statuses: &[CalicoNodeStatus], now: SystemTime) -> Sessions {
    // The newest current report of each node.
    let mut newest: BTreeMap<&str, (DateTime<Utc>, &CalicoNodeStatus)> = BTreeMap::new();
    for s in statuses {
        let (Some(node), Some(at)) = (s.spec.node.as_deref(), current_at(s, now)) else {
            continue;
        };
        if newest.get(node).is_none_or(|(t, _)| at > *t) {
            newest.insert(node, (at, s));
        }
    }
    let mut out = Sessions::new();
    for (node, (_, s)) in newest {
        let Some(bgp) = s.status.as_ref().and_then(|st| st.bgp.as_ref()) else {
            continue;
        };
        for row in bgp.peers_v4.iter().chain(&bgp.peers_v6) {
            if !matches!(
                row.r#type,
                Some(CalicoNodePeerType::NodePeer | CalicoNodePeerType::GlobalPeer)
            ) {
                continue;
            }
            let Some(addr) = row.peer_ip.as_deref().and_then(peer_address) else {
                continue;
            };
            let state = row
                .state
                .and_then(|st| serde_json::to_value(st).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "Unknown".to_string());
            out.entry(addr).or_default().insert(
                node.to_string(),
                NodeSession {
                    state,
                    since: row.since.clone(),
                },
            );
        }
    }
    out
}

/// The address of a BGPPeer's `peerIP`: `10.0.0.1`, `10.0.0.1:1790`, `fd00::1`,
/// `[fd00::1]:1790`.
pub fn peer_address(peer_ip: &str) -> Option<IpAddr> {
    peer_ip
        .parse::<IpAddr>()
        .ok()
        .or_else(|| peer_ip.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The annotations `peer` should carry, or `None` when it names no `peerIP` (pure).
pub fn annotations(peer: &BGPPeer, sessions: &Sessions) -> Option<[(&'static str, String); 2]> {
    let addr = peer_address(peer.spec.peer_ip.as_deref()?)?;
    let empty = BTreeMap::new();
    let nodes = sessions.get(&addr).unwrap_or(&empty);
    let established = nodes.values().filter(|s| s.state == "Established").count();
    Some([
        (
            SESSIONS_ANNOTATION,
            serde_json::to_string(nodes).unwrap_or_else(|_| "{}".into()),
        ),
        (ESTABLISHED_ANNOTATION, established.to_string()),
    ])
}

/// Brings the session annotations of every Kubernetes BGPPeer up to date from the
/// CalicoNodeStatus objects in etcd; returns the names patched.
pub async fn report(
    client: kube::Client,
    ds: &Datastore,
    now: SystemTime,
) -> Result<Vec<String>, BgpPeerStatusError> {
    let statuses = ds
        .list::<CalicoNodeStatus>(None)
        .await
        .map_err(BgpPeerStatusError::ListNodeStatus)?
        .items;
    let sessions = sessions(&statuses, now);
    let api: Api<BGPPeer> = Api::all(client);
    let peers = api
        .list(&ListParams::default())
        .await
        .map_err(|e| BgpPeerStatusError::ListPeers(Box::new(e)))?;
    let mut patched = Vec::new();
    for peer in &peers.items {
        let Some(name) = peer.metadata.name.as_deref() else {
            continue;
        };
        let Some(desired) = annotations(peer, &sessions) else {
            continue;
        };
        let current = peer.metadata.annotations.as_ref();
        if desired
            .iter()
            .all(|(k, v)| current.and_then(|a| a.get(*k)) == Some(v))
        {
            continue;
        }
        let map: serde_json::Map<String, serde_json::Value> = desired
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        let patch = json!({ "metadata": { "annotations": map } });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| BgpPeerStatusError::Patch {
                name: name.to_string(),
                source: Box::new(e),
            })?;
        patched.push(name.to_string());
    }
    Ok(patched)
}

/// Metrics name of this loop's rounds.
const METRIC_KIND: &str = "BGPPeerSessions";

/// Runs [`report`] every [`ROUND`] until `lost` turns true.
pub async fn run_loop(ctx: Arc<Context>, mut lost: watch::Receiver<bool>) {
    loop {
        ctx.metrics.reconcile_started(METRIC_KIND);
        if let Err(e) = report(
            ctx.client.clone(),
            ctx.mirror.datastore(),
            SystemTime::now(),
        )
        .await
        {
            ctx.metrics.reconcile_failed(METRIC_KIND);
            warn!(error = %e, "BGPPeer session state");
        }
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = lost.wait_for(|l| *l) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_api::{
        CalicoNodeBGPStatus, CalicoNodePeer, CalicoNodePeerState, CalicoNodeStatusSpec,
        CalicoNodeStatusStatus,
    };

    const NOW: &str = "2026-11-25T05:00:00Z";

    fn now() -> SystemTime {
        DateTime::parse_from_rfc3339(NOW).unwrap().into()
    }

    fn row(ip: &str, t: CalicoNodePeerType, state: CalicoNodePeerState) -> CalicoNodePeer {
        CalicoNodePeer {
            peer_ip: Some(ip.into()),
            r#type: Some(t),
            state: Some(state),
            since: Some("04:59:00".into()),
        }
    }

    fn report_of(
        name: &str,
        node: &str,
        period: i32,
        updated: &str,
        rows: Vec<CalicoNodePeer>,
    ) -> CalicoNodeStatus {
        let mut s = CalicoNodeStatus::new(
            name,
            CalicoNodeStatusSpec {
                node: Some(node.into()),
                update_period_seconds: Some(period),
                ..Default::default()
            },
        );
        let (v4, v6) = rows
            .into_iter()
            .partition(|r| r.peer_ip.as_deref().is_some_and(|p| !p.contains(':')));
        s.status = Some(CalicoNodeStatusStatus {
            last_updated: Some(updated.into()),
            bgp: Some(CalicoNodeBGPStatus {
                peers_v4: v4,
                peers_v6: v6,
                ..Default::default()
            }),
            ..Default::default()
        });
        s
    }

    fn peer(peer_ip: Option<&str>) -> BGPPeer {
        let mut p = BGPPeer::new("tor", Default::default());
        p.spec.peer_ip = peer_ip.map(str::to_string);
        p
    }

    #[test]
    fn peer_addresses_with_and_without_port() {
        assert_eq!(peer_address("10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            peer_address("10.0.0.1:1790"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(peer_address("fd00::1"), Some("fd00::1".parse().unwrap()));
        assert_eq!(
            peer_address("[fd00::1]:1790"),
            Some("fd00::1".parse().unwrap())
        );
        assert_eq!(peer_address("rack-1"), None);
    }

    #[test]
    fn sessions_come_from_current_reports_and_skip_the_mesh() {
        use CalicoNodePeerState::*;
        use CalicoNodePeerType::*;
        let statuses = vec![
            report_of(
                "n1",
                "node1",
                10,
                "2026-11-25T04:59:55Z",
                vec![
                    row("192.168.33.20", GlobalPeer, Established),
                    row("192.168.33.12", NodeMesh, Established),
                    row("fd00::20", NodePeer, Active),
                ],
            ),
            // An older report of node1: the newer one wins.
            report_of(
                "n1-old",
                "node1",
                10,
                "2026-11-25T04:59:40Z",
                vec![row("192.168.33.20", GlobalPeer, Idle)],
            ),
            report_of(
                "n2",
                "node2",
                10,
                "2026-11-25T04:59:58Z",
                vec![row("192.168.33.20", GlobalPeer, Connect)],
            ),
            // Never updated (period 0) and too old (node3's agent stopped): left out.
            report_of(
                "n3",
                "node3",
                0,
                NOW,
                vec![row("192.168.33.20", GlobalPeer, Established)],
            ),
            report_of(
                "n4",
                "node4",
                5,
                "2026-11-25T04:58:00Z",
                vec![row("192.168.33.20", GlobalPeer, Established)],
            ),
        ];
        let s = sessions(&statuses, now());
        let tor: IpAddr = "192.168.33.20".parse().unwrap();
        assert_eq!(
            s.keys().collect::<Vec<_>>(),
            [&tor, &"fd00::20".parse::<IpAddr>().unwrap()]
        );
        let states: Vec<(&str, &str)> = s[&tor]
            .iter()
            .map(|(n, x)| (n.as_str(), x.state.as_str()))
            .collect();
        assert_eq!(states, [("node1", "Established"), ("node2", "Connect")]);

        let [(k1, v1), (k2, v2)] = annotations(&peer(Some("192.168.33.20:179")), &s).unwrap();
        assert_eq!((k1, k2), (SESSIONS_ANNOTATION, ESTABLISHED_ANNOTATION));
        assert_eq!(
            v1,
            r#"{"node1":{"state":"Established","since":"04:59:00"},"node2":{"state":"Connect","since":"04:59:00"}}"#
        );
        assert_eq!(v2, "1");
        // No session anywhere: reported as none.
        let none = annotations(&peer(Some("10.9.9.9")), &s).unwrap();
        assert_eq!((none[0].1.as_str(), none[1].1.as_str()), ("{}", "0"));
        // A peerSelector peer has no peerIP: nothing to report.
        assert!(annotations(&peer(None), &s).is_none());
    }

    #[test]
    fn staleness_is_three_periods_and_at_least_a_minute() {
        assert_eq!(staleness_limit(1), Duration::from_secs(60));
        assert_eq!(staleness_limit(60), Duration::from_secs(180));
    }
}
