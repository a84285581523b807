//! BGPPeer session state from the CalicoNodeStatus objects in a REAL etcd, patched onto the
//! Kubernetes BGPPeers through a scripted API server.

mod common;

use std::time::{Duration, SystemTime};

use calico_api::{
    CalicoNodeBGPStatus, CalicoNodePeer, CalicoNodePeerState, CalicoNodePeerType, CalicoNodeStatus,
    CalicoNodeStatusSpec, CalicoNodeStatusStatus,
};
use calico_controllers::bgppeer_status::{ESTABLISHED_ANNOTATION, SESSIONS_ANNOTATION, report};
use chrono::{DateTime, SecondsFormat, Utc};
use common::{expect, lab, scripted};
use serde_json::{Value, json};

const TOR: &str = "192.168.33.20";

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A CalicoNodeStatus as calico-node leaves it: `rows` are (peerIP, type, state).
fn node_status(
    name: &str,
    node: &str,
    period: i32,
    updated: SystemTime,
    rows: &[(&str, CalicoNodePeerType, CalicoNodePeerState)],
) -> CalicoNodeStatus {
    let mut s = CalicoNodeStatus::new(
        name,
        CalicoNodeStatusSpec {
            node: Some(node.into()),
            update_period_seconds: Some(period),
            ..Default::default()
        },
    );
    s.status = Some(CalicoNodeStatusStatus {
        last_updated: Some(rfc3339(updated)),
        bgp: Some(CalicoNodeBGPStatus {
            peers_v4: rows
                .iter()
                .map(|(ip, t, st)| CalicoNodePeer {
                    peer_ip: Some(ip.to_string()),
                    r#type: Some(*t),
                    state: Some(*st),
                    since: Some("05:00:00".into()),
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    });
    s
}

#[tokio::test]
async fn bgppeer_sessions_come_from_the_node_status_objects_in_etcd() {
    use CalicoNodePeerState::*;
    use CalicoNodePeerType::*;
    let lab = lab().await;
    let now = SystemTime::now();
    for s in [
        node_status(
            "node1",
            "node1",
            5,
            now,
            &[
                (TOR, GlobalPeer, Established),
                ("192.168.33.12", NodeMesh, Established),
            ],
        ),
        node_status("node2", "node2", 5, now, &[(TOR, GlobalPeer, Active)]),
        // node3's agent stopped writing ten minutes ago: its last word does not count.
        node_status(
            "node3",
            "node3",
            5,
            now - Duration::from_secs(600),
            &[(TOR, GlobalPeer, Established)],
        ),
    ] {
        lab.ds.create(&s).await.expect("create CalicoNodeStatus");
    }
    // What etcd holds is what the controllers read: the status survived the round trip.
    let stored: CalicoNodeStatus = lab
        .ds
        .get(None, "node2")
        .await
        .expect("get")
        .expect("exists");
    assert!(stored.status.is_some_and(|s| s.bgp.is_some()));

    let tor = json!({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
        "metadata": {"name": "tor", "resourceVersion": "7"},
        "spec": {"peerIP": TOR, "asNumber": 65001}
    });
    let selector_peer = json!({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
        "metadata": {"name": "rr", "resourceVersion": "8"},
        "spec": {"peerSelector": "has(route-reflector)"}
    });
    let want_sessions = r#"{"node1":{"state":"Established","since":"05:00:00"},"node2":{"state":"Active","since":"05:00:00"}}"#;
    let mut patched = tor.clone();
    patched["metadata"]["annotations"] =
        json!({SESSIONS_ANNOTATION: want_sessions, ESTABLISHED_ANNOTATION: "1"});
    let list = |items: Vec<Value>| {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeerList",
               "metadata": {"resourceVersion": "8"}, "items": items})
    };
    let (client, server) = scripted(vec![
        expect(
            "GET",
            "/apis/projectcalico.org/v3/bgppeers",
            list(vec![tor, selector_peer.clone()]),
            |_| {},
        ),
        expect(
            "PATCH",
            "/apis/projectcalico.org/v3/bgppeers/tor",
            patched.clone(),
            move |body| {
                let a = &body["metadata"]["annotations"];
                assert_eq!(a[SESSIONS_ANNOTATION], want_sessions, "{body}");
                assert_eq!(a[ESTABLISHED_ANNOTATION], "1", "{body}");
                // Only the annotations: nothing else of the object is written.
                assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
            },
        ),
        // Second round: unchanged, so no patch; the peerSelector peer never gets one.
        expect(
            "GET",
            "/apis/projectcalico.org/v3/bgppeers",
            list(vec![patched, selector_peer]),
            |_| {},
        ),
    ]);
    let first = report(client.clone(), &lab.ds, now).await.expect("round 1");
    assert_eq!(first, ["tor"]);
    let second = report(client, &lab.ds, now).await.expect("round 2");
    assert!(second.is_empty(), "{second:?}");
    server
        .await
        .expect("the API server saw exactly the scripted requests");
}
