//! Networks shared between two Docker hosts through the datastore (no cluster store): two
//! namespaces linked by a veth pair, etcd on node1's link address, drivers + syncer + dockerd
//! on each. Routing between the hosts is the node agent's job and is not tested here.

mod common;

use calico_docker::syncer::{IN_USE_PREFIX, NETWORKS_PREFIX, hosts_still_using};
use common::*;
use ipnet::IpNet;

async fn networks(sock: &std::path::Path) -> Vec<String> {
    docker_ok(sock, &["network", "ls", "--format", "{{.Name}}"])
        .await
        .lines()
        .map(String::from)
        .collect()
}

async fn addr(sock: &std::path::Path, name: &str) -> IpNet {
    let out = docker_ok(
        sock,
        &[
            "exec", name, "ip", "-o", "-4", "addr", "show", "dev", "cali0",
        ],
    )
    .await;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .expect("inet")
        .parse()
        .expect("cidr")
}

#[test]
fn a_network_created_on_one_host_exists_on_the_other_and_deletion_follows() {
    let ns1 = Netns::new("cdk");
    let ns2 = Netns::new("cdk");
    link(&ns1.name, "10.200.0.1/24", &ns2.name, "10.200.0.2/24");
    // What the node agent will do (forwarding; routes to the other host's block, which BGP
    // will announce), plus the default route every real host has and proxy ARP needs.
    for (ns, peer) in [(&ns1.name, "10.200.0.2"), (&ns2.name, "10.200.0.1")] {
        sh_sync(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        sh_sync(&["ip", "-n", ns, "route", "add", "default", "via", peer]);
    }
    let (n1, n2) = (ns1.name.clone(), ns2.name.clone());
    in_netns(&ns1.name.clone(), move || async move {
        let dir = tempfile::tempdir().unwrap();
        let (_etcd, kv, h1, h2) = two_hosts_setup(dir.path(), &n1, &n2).await;
        let (s1, s2) = (h1.sock(), h2.sock());
        calico_lab::dockerd::build_busybox_image(&h1.dockerd, "busybox:latest").unwrap();
        calico_lab::dockerd::build_busybox_image(&h2.dockerd, "busybox:latest").unwrap();

        docker_ok(
            &s1,
            &[
                "network",
                "create",
                "--driver",
                "calico",
                "--ipam-driver",
                "calico-ipam",
                "cal_net1",
            ],
        )
        .await;
        eventually(15, "cal_net1 on node2", || async {
            networks(&s2).await.contains(&"cal_net1".to_string())
        })
        .await;
        let drivers = docker_ok(
            &s2,
            &[
                "network",
                "inspect",
                "-f",
                "{{.Driver}} {{.IPAM.Driver}}",
                "cal_net1",
            ],
        )
        .await;
        assert_eq!(drivers.trim(), "calico calico-ipam");
        assert!(
            kv.get(&format!("{NETWORKS_PREFIX}cal_net1"))
                .await
                .unwrap()
                .is_some()
        );

        // docker run on node2 without a local `network create`; each host its own block.
        docker_ok(
            &s1,
            &[
                "run", "-d", "--net", "cal_net1", "--name", "bbox1", "busybox", "sleep", "600",
            ],
        )
        .await;
        docker_ok(
            &s2,
            &[
                "run", "-d", "--net", "cal_net1", "--name", "bbox2", "busybox", "sleep", "600",
            ],
        )
        .await;
        let (a1, a2) = (addr(&s1, "bbox1").await, addr(&s2, "bbox2").await);
        let b1 = IpNet::new(a1.addr(), 26).unwrap().trunc();
        let b2 = IpNet::new(a2.addr(), 26).unwrap().trunc();
        assert_ne!(b1, b2, "each host allocates from its own block");
        let pool: IpNet = "192.168.0.0/16".parse().unwrap();
        assert!(pool.contains(&a1.addr()) && pool.contains(&a2.addr()));
        // Each host routes the other's block to it (what BGP will announce).
        sh_sync(&[
            "ip",
            "-n",
            &n1,
            "route",
            "add",
            &b2.to_string(),
            "via",
            "10.200.0.2",
        ]);
        sh_sync(&[
            "ip",
            "-n",
            &n2,
            "route",
            "add",
            &b1.to_string(),
            "via",
            "10.200.0.1",
        ]);

        // Names across hosts: bbox2 in bbox1's hosts file and back, and the seed's ping by name
        // over two routed hops (ttl 62).
        eventually(15, "bbox2 in bbox1's /etc/hosts", || async {
            docker_ok(&s1, &["exec", "bbox1", "cat", "/etc/hosts"])
                .await
                .contains(&format!("{}\tbbox2", a2.addr()))
        })
        .await;
        eventually(15, "bbox1 in bbox2's /etc/hosts", || async {
            docker_ok(&s2, &["exec", "bbox2", "cat", "/etc/hosts"])
                .await
                .contains(&format!("{}\tbbox1", a1.addr()))
        })
        .await;
        let ping = docker(
            &s1,
            &["exec", "bbox1", "ping", "-c", "2", "-W", "2", "bbox2"],
        )
        .await;
        assert!(
            ping.ok,
            "ping bbox2 from bbox1: {}{}",
            ping.stdout, ping.stderr
        );
        assert!(
            ping.stdout
                .contains(&format!("from {}: seq=0 ttl=62", a2.addr())),
            "{}",
            ping.stdout
        );

        // Delete on node1 while node2 still has a container: node2 keeps it and says so.
        docker_ok(&s1, &["rm", "-f", "bbox1"]).await;
        docker_ok(&s1, &["network", "rm", "cal_net1"]).await;
        eventually(15, "record removed", || async {
            kv.get(&format!("{NETWORKS_PREFIX}cal_net1"))
                .await
                .unwrap()
                .is_none()
        })
        .await;
        eventually(15, "node2 reports it still uses cal_net1", || async {
            hosts_still_using(&kv, "cal_net1").await.unwrap() == vec!["node2".to_string()]
        })
        .await;
        assert!(networks(&s2).await.contains(&"cal_net1".to_string()));
        // Not re-published by node2 meanwhile.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(
            kv.get(&format!("{NETWORKS_PREFIX}cal_net1"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(!networks(&s1).await.contains(&"cal_net1".to_string()));

        // Once its last container is gone, node2 removes it too.
        docker_ok(&s2, &["rm", "-f", "bbox2"]).await;
        eventually(15, "cal_net1 gone from node2", || async {
            !networks(&s2).await.contains(&"cal_net1".to_string())
        })
        .await;
        eventually(15, "in-use mark cleared", || async {
            kv.list(IN_USE_PREFIX).await.unwrap().kvs.is_empty()
        })
        .await;

        h2.shutdown().await;
        h1.shutdown().await;
    });
}

#[test]
fn a_network_deleted_while_a_host_was_down_is_removed_there_not_published_again() {
    use futures::StreamExt;
    let ns1 = Netns::new("cdk");
    let ns2 = Netns::new("cdk");
    link(&ns1.name, "10.200.0.1/24", &ns2.name, "10.200.0.2/24");
    let (n1, n2) = (ns1.name.clone(), ns2.name.clone());
    in_netns(&ns1.name.clone(), move || async move {
        let dir = tempfile::tempdir().unwrap();
        let (etcd, kv, h1, h2) = two_hosts_setup(dir.path(), &n1, &n2).await;
        let (s1, s2) = (h1.sock(), h2.sock());
        let create = [
            "network",
            "create",
            "--driver",
            "calico",
            "--ipam-driver",
            "calico-ipam",
        ];
        for net in ["cal_gone", "cal_kept"] {
            let mut args = create.to_vec();
            args.push(net);
            docker_ok(&s1, &args).await;
        }
        eventually(15, "both networks on node2", || async {
            let n = networks(&s2).await;
            n.contains(&"cal_gone".to_string()) && n.contains(&"cal_kept".to_string())
        })
        .await;

        // node2 goes down (its dockerd keeps its networks on disk); cal_gone is deleted on
        // node1 meanwhile.
        drop(h2);
        docker_ok(&s1, &["network", "rm", "cal_gone"]).await;
        let key = format!("{NETWORKS_PREFIX}cal_gone");
        eventually(15, "cal_gone unpublished", || async {
            kv.get(&key).await.unwrap().is_none()
        })
        .await;

        // node2's dockerd alone first: it did keep its copy of cal_gone.
        let d2 = dir.path().join("node2");
        let h2 = Host::start_with("node2", &n2, &d2, etcd.config(), false).await;
        assert!(networks(&h2.sock()).await.contains(&"cal_gone".to_string()));
        drop(h2);

        // node2 comes back with its syncer: it removes the stale copy, never publishes it.
        let from = kv.current_revision().await.unwrap() + 1;
        let mut puts = kv.watch(&key, from);
        let h2 = Host::start_with("node2", &n2, &d2, etcd.config(), true).await;
        let s2 = h2.sock();
        eventually(15, "stale cal_gone removed from node2", || async {
            !networks(&s2).await.contains(&"cal_gone".to_string())
        })
        .await;
        assert!(networks(&s2).await.contains(&"cal_kept".to_string()));
        assert!(
            kv.get(&key).await.unwrap().is_none(),
            "cal_gone re-published"
        );
        let seen = tokio::time::timeout(std::time::Duration::from_millis(500), puts.next()).await;
        assert!(seen.is_err(), "a write to the cal_gone record: {seen:?}");
        assert!(!networks(&s1).await.contains(&"cal_gone".to_string()));
        // cal_kept still works both ways: deleting it on node2 now follows on node1.
        docker_ok(&s2, &["network", "rm", "cal_kept"]).await;
        eventually(15, "cal_kept gone from node1", || async {
            !networks(&s1).await.contains(&"cal_kept".to_string())
        })
        .await;

        h2.shutdown().await;
        h1.shutdown().await;
        drop(etcd);
    });
}
