//! CalicoNodeStatus through the whole agent: two real `calico-node` processes in lab
//! namespaces with a real etcd. A CalicoNodeStatus for node1 with every class and
//! `updatePeriodSeconds: 1` gets, from node1's agent, its mesh session to node2 Established
//! and node2's block learned from it; one with period 0 is never written; the spec of both is
//! never touched.
//!
//! Topology: one LAN (192.168.33.0/24, every host's `eth1`), etcd on 192.168.33.2, agents on
//! node1, node2 (192.168.33.11, .12). Pool 10.65.0.0/16.
//!
//! Needs root and the binaries `target/debug/calico-node` and `target/debug/calicoctl`
//! (`cargo build -p calico-rs --bin calico-node --bin calicoctl`).

mod cluster_support;
use cluster_support::*;

use std::net::IpAddr;
use std::time::Duration;

use calico_api::{
    BGPDaemonState, CalicoNodePeerState, CalicoNodePeerType, CalicoNodeRouteLearnedFromSourceType,
    CalicoNodeRouteType, CalicoNodeStatus, CalicoNodeStatusSpec, NodeStatusClassType,
};
use calico_datastore::Datastore;

impl Cluster {
    /// Creates a CalicoNodeStatus; returns its resourceVersion.
    fn create_status(&self, name: &str, node: &str, period: i32) -> String {
        let obj = CalicoNodeStatus::new(
            name,
            CalicoNodeStatusSpec {
                classes: vec![
                    NodeStatusClassType::Agent,
                    NodeStatusClassType::BGP,
                    NodeStatusClassType::Routes,
                ],
                node: Some(node.to_string()),
                update_period_seconds: Some(period),
            },
        );
        self.with_datastore(async move |ds: &Datastore, _| {
            let created = ds.create(&obj).await.expect("create CalicoNodeStatus");
            created
                .metadata
                .resource_version
                .expect("a stored object has a resourceVersion")
        })
    }

    fn get_status(&self, name: &str) -> CalicoNodeStatus {
        let name = name.to_string();
        self.with_datastore(async move |ds: &Datastore, _| {
            ds.get::<CalicoNodeStatus>(None, &name)
                .await
                .expect("get CalicoNodeStatus")
                .expect("the CalicoNodeStatus exists")
        })
    }
}

/// Whether `s` shows the mesh session to `peer` Established and `block` learned from it.
fn shows_session_and_route(s: &CalicoNodeStatus, peer: IpAddr, block: &str) -> bool {
    let Some(status) = &s.status else {
        return false;
    };
    let session = status.bgp.as_ref().is_some_and(|b| {
        b.number_established_v4 == 1
            && b.number_not_established_v4 == 0
            && b.peers_v4.iter().any(|p| {
                p.peer_ip.as_deref() == Some(&peer.to_string())
                    && p.r#type == Some(CalicoNodePeerType::NodeMesh)
                    && p.state == Some(CalicoNodePeerState::Established)
                    && p.since.is_some()
            })
    });
    let route = status.routes.as_ref().is_some_and(|r| {
        r.routes_v4.iter().any(|r| {
            r.destination.as_deref() == Some(block)
                && r.r#type == Some(CalicoNodeRouteType::FIB)
                && r.gateway.as_deref() == Some(&peer.to_string())
                && r.interface.as_deref() == Some("eth1")
                && r.learned_from.as_ref().is_some_and(|l| {
                    l.peer_ip.as_deref() == Some(&peer.to_string())
                        && l.source_type == Some(CalicoNodeRouteLearnedFromSourceType::NodeMesh)
                })
        })
    });
    session && route
}

#[test]
fn node_status_reports_the_mesh_session_and_the_learned_block_and_period_zero_is_never_written() {
    let mut c = Cluster::new(2);
    c.start_agent(1);
    c.start_agent(2);
    let (ip1, ip2) = (c.ip(1), c.ip(2));
    let block2 = c.allocate("node2").1;

    let never_rv = c.create_status("node1-never", "node1", 0);
    // Created as the docs show it, with calicoctl.
    let manifest = c.lab.dir().join("node1-all.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: projectcalico.org/v3\nkind: CalicoNodeStatus\nmetadata:\n  name: node1-all\n\
         spec:\n  node: node1\n  classes: [Agent, BGP, Routes]\n  updatePeriodSeconds: 1\n",
    )
    .expect("write manifest");
    c.calicoctl(&["create", "-f", &manifest.display().to_string()]);

    let reported = wait_for(WAIT, || {
        let s = c.get_status("node1-all");
        shows_session_and_route(&s, ip2, &block2).then_some(s)
    });
    let Some(s) = reported else {
        panic!(
            "node1-all never showed the Established mesh session to {ip2} and {block2} learned \
             from it:\n{:#?}\nlog:\n{}",
            c.get_status("node1-all").status,
            c.agent_log(1)
        );
    };
    // The spec is exactly as created.
    assert_eq!(s.spec.node.as_deref(), Some("node1"));
    assert_eq!(s.spec.update_period_seconds, Some(1));
    assert_eq!(s.spec.classes.len(), 3);
    let status = s.status.as_ref().expect("status");
    let bird = status
        .agent
        .as_ref()
        .and_then(|a| a.bird_v4.as_ref())
        .expect("agent.birdV4");
    assert_eq!(bird.state, Some(BGPDaemonState::Ready));
    assert_eq!(bird.router_id.as_deref(), Some(ip1.to_string().as_str()));
    assert!(
        bird.last_boot_time.is_some() && bird.version.is_some(),
        "{bird:?}"
    );
    let first = status.last_updated.clone().expect("lastUpdated");
    assert!(first.ends_with('Z'), "RFC 3339 UTC: {first}");

    // Written again every period: lastUpdated moves.
    let moved = wait_for(Duration::from_secs(10), || {
        let later = c.get_status("node1-all");
        let at = later.status.and_then(|s| s.last_updated);
        (at.as_deref() != Some(first.as_str())).then_some(at)
    });
    assert!(moved.is_some(), "lastUpdated stayed at {first}");

    // calicoctl shows the status too.
    let yaml = c.calicoctl(&["get", "caliconodestatus", "node1-all", "-o", "yaml"]);
    assert!(
        yaml.contains(&format!("peerIP: {ip2}")) && yaml.contains("state: Established"),
        "{yaml}"
    );

    // Period 0: never written, not even once, after several periods of the other one.
    let never = c.get_status("node1-never");
    assert!(never.status.is_none(), "{:?}", never.status);
    assert_eq!(
        never.metadata.resource_version.as_deref(),
        Some(never_rv.as_str())
    );
}
