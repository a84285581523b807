//! `calicoctl node status` against calico-node's real status socket, and `node run --dryrun`.

mod common;

use calico_node::status::{NodeStatus, PeerRow, PeerType};
use common::{Etcd, no_default_config_session, run_raw};

#[tokio::test]
async fn node_status_prints_the_agents_bgp_table_or_says_it_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let env = vec![("CALICO_RUN_DIR".to_string(), run_dir.display().to_string())];
    let session = no_default_config_session();
    let args = || vec!["calicoctl".to_string(), "node".into(), "status".into()];

    let out = run_raw(args(), "", &env, &session).await;
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "Calico process is not running.\n");

    let status = NodeStatus {
        node_name: "node1".into(),
        ipv4_peers: vec![PeerRow {
            peer_address: "192.168.33.12".into(),
            peer_type: PeerType::Mesh,
            state: "up".into(),
            since: "07:17:13".into(),
            info: "Established".into(),
        }],
        ipv6_peers: vec![],
        readiness: Some(calico_node::status::Readiness {
            ready: false,
            reasons: vec!["bgp: BGP not established with 192.168.33.12".into()],
        }),
        policy_issues: vec![],
    };
    let served = status.clone();
    let server = tokio::spawn(calico_node::status::serve(run_dir.clone(), move || {
        served.clone()
    }));
    let socket = calico_node::status::socket_path(&run_dir);
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let out = run_raw(args(), "", &env, &session).await;
    let mut json_args = args();
    json_args.extend(["-o".to_string(), "json".into()]);
    let json_out = run_raw(json_args, "", &env, &session).await;
    server.abort();
    assert_eq!(json_out.code, 0, "{json_out:?}");
    let parsed: NodeStatus = serde_json::from_str(&json_out.stdout).expect("node status -o json");
    assert_eq!(parsed, status);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, calico_ctl::status_view::render(&status));
    assert!(
        out.stdout
            .starts_with("Calico process is running.\n\nIPv4 BGP status\n")
    );
    assert!(
        out.stdout
            .contains("| 192.168.33.12 | node-to-node mesh | up    | 07:17:13 | Established |"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("IPv6 BGP status\nNo IPv6 peers found.\n")
    );
    assert!(
        out.stdout
            .ends_with("Readiness: not ready\n  - bgp: BGP not established with 192.168.33.12\n"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn node_run_dryrun_passes_the_datastore_configuration_to_calico_node() {
    let etcd = Etcd::start();
    let cfg = etcd.config_file().display().to_string();
    let out = run_raw(
        vec![
            "calicoctl".into(),
            "node".into(),
            "run".into(),
            "--dryrun".into(),
            "--name".into(),
            "node1".into(),
            "--ip".into(),
            "192.168.33.11/24".into(),
            "-c".into(),
            cfg,
        ],
        "",
        &[],
        &no_default_config_session(),
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("ETCD_ENDPOINTS={}", etcd.endpoint)),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("NODENAME=node1"), "{}", out.stdout);
}
