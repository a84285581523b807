//! The drivers against a real dockerd 20.10 and a real etcd, in a per-run network namespace.
//! Needs root (namespaces, dockerd).

mod common;

use std::net::IpAddr;

use calico_api::{IPPool, IPPoolSpec, ObjectMeta, Profile, WorkloadEndpoint};
use calico_datastore::Datastore;
use calico_docker::ipam::{AddressAllocator, CalicoIpam};
use calico_docker::naming;
use common::*;
use ipnet::IpNet;

async fn add_pool(ds: &Datastore, name: &str, cidr: &str) {
    let mut pool = IPPool::new(
        name,
        IPPoolSpec {
            cidr: cidr.into(),
            ..Default::default()
        },
    );
    pool.metadata = ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    };
    ds.create(&pool).await.expect("create IPPool");
}

/// The container's cali0 address (the /32) from `ip -o -4 addr`.
async fn container_addr(sock: &std::path::Path, name: &str) -> IpNet {
    let out = docker_ok(
        sock,
        &[
            "exec", name, "ip", "-o", "-4", "addr", "show", "dev", "cali0",
        ],
    )
    .await;
    let cidr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no inet on cali0 in {out:?}"));
    cidr.parse().expect("cidr")
}

#[test]
fn containers_get_calico_interfaces_and_release_addresses() {
    let ns = Netns::new("cdk");
    make_router(&ns.name);
    let name = ns.name.clone();
    in_netns(&ns.name.clone(), move || async move {
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(dir.path()).await;
        let kv = etcd.client().await;
        let ds = Datastore::from_etcd(kv.clone());
        add_pool(&ds, "default-ipv4-ippool", "192.168.0.0/16").await;
        let host = Host::start("node1", &name, dir.path(), &etcd).await;
        let sock = host.sock();
        calico_lab::dockerd::build_busybox_image(&host.dockerd, "busybox:latest").unwrap();

        calico_network_ok(&sock, &[], "cal_net1").await;
        sleeper(&sock, "cal_net1", "bbox1").await;
        sleeper(&sock, "cal_net1", "bbox2").await;

        let pool: IpNet = "192.168.0.0/16".parse().unwrap();
        let a1 = container_addr(&sock, "bbox1").await;
        let a2 = container_addr(&sock, "bbox2").await;
        for a in [a1, a2] {
            assert_eq!(a.prefix_len(), 32, "cali0 must carry a /32: {a}");
            assert!(pool.contains(&a.addr()), "{a} not in the pool");
        }
        assert_ne!(a1.addr(), a2.addr());
        // Both from this host's block (Calico's default /26).
        let block = IpNet::new(a1.addr(), 26).unwrap().trunc();
        assert!(
            block.contains(&a2.addr()),
            "{a1} and {a2} in different blocks"
        );
        let owner = CalicoIpam::new(kv.clone())
            .assignment(a1.addr())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(owner.host, "node1");

        // The container side: MAC and routes as the seed shows.
        let link = docker_ok(&sock, &["exec", "bbox1", "ip", "link", "show", "cali0"]).await;
        assert!(link.contains("link/ether ee:ee:ee:ee:ee:ee"), "{link}");
        let routes = docker_ok(&sock, &["exec", "bbox1", "ip", "route"]).await;
        assert!(
            routes.contains("default via 169.254.1.1 dev cali0"),
            "{routes}"
        );
        assert!(routes.contains("169.254.1.1 dev cali0"), "{routes}");

        // The host side: veth named from the endpoint id, /32 route to it, proxy ARP.
        let inspect = docker_ok(
            &sock,
            &[
                "inspect",
                "-f",
                "{{.NetworkSettings.Networks.cal_net1.EndpointID}}",
                "bbox1",
            ],
        )
        .await;
        let endpoint_id = inspect.trim().to_string();
        let host_if = naming::host_veth_name(&endpoint_id).unwrap();
        let host_routes = sh(&["ip", "route"]).await.stdout;
        let want = format!("{} dev {host_if} scope link", a1.addr());
        assert!(
            host_routes.lines().any(|l| l.trim() == want),
            "want {want:?} in\n{host_routes}"
        );
        let proxy = std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{host_if}/proxy_arp"))
            .unwrap();
        assert_eq!(proxy.trim(), "1");

        // Same-host traffic through the host: proxy ARP for 169.254.1.1 and the /32 routes.
        let ping = docker(
            &sock,
            &[
                "exec",
                "bbox1",
                "ping",
                "-c",
                "2",
                "-W",
                "2",
                &a2.addr().to_string(),
            ],
        )
        .await;
        assert!(
            ping.ok,
            "ping bbox1 -> bbox2: {}{}",
            ping.stdout, ping.stderr
        );

        // Datastore: the WorkloadEndpoint (orchestrator libnetwork) and the network's Profile.
        let wep_name = naming::workload_endpoint_name("node1", &endpoint_id).unwrap();
        let wep: WorkloadEndpoint = ds
            .get(Some("libnetwork"), &wep_name)
            .await
            .unwrap()
            .expect("WorkloadEndpoint");
        assert_eq!(wep.spec.orchestrator.as_deref(), Some("libnetwork"));
        assert_eq!(wep.spec.node.as_deref(), Some("node1"));
        assert_eq!(wep.spec.interface_name.as_deref(), Some(host_if.as_str()));
        assert_eq!(wep.spec.ip_networks, vec![a1.to_string()]);
        assert_eq!(wep.spec.mac.as_deref(), Some("ee:ee:ee:ee:ee:ee"));
        assert_eq!(wep.spec.profiles, vec!["cal_net1".to_string()]);
        let profile: Profile = ds.get(None, "cal_net1").await.unwrap().expect("Profile");
        assert_eq!(
            profile.spec.ingress[0]
                .source
                .as_ref()
                .unwrap()
                .selector
                .as_deref(),
            Some("has(cal_net1)")
        );

        // Removal releases the address and leaves nothing behind.
        let alloc = CalicoIpam::new(kv.clone());
        let ip2: IpAddr = a2.addr();
        assert!(alloc.assignment(ip2).await.unwrap().is_some());
        let ep2 = docker_ok(
            &sock,
            &[
                "inspect",
                "-f",
                "{{.NetworkSettings.Networks.cal_net1.EndpointID}}",
                "bbox2",
            ],
        )
        .await;
        let host_if2 = naming::host_veth_name(ep2.trim()).unwrap();
        docker_ok(&sock, &["rm", "-f", "bbox2"]).await;
        assert!(
            alloc.assignment(ip2).await.unwrap().is_none(),
            "address of bbox2 not released"
        );
        let links = sh(&["ip", "-o", "link"]).await.stdout;
        assert!(!links.contains(&host_if2), "veth {host_if2} left behind");
        let host_routes = sh(&["ip", "route"]).await.stdout;
        assert!(
            !host_routes.contains(&ip2.to_string()),
            "route to {ip2} left behind:\n{host_routes}"
        );
        let wep2 = naming::workload_endpoint_name("node1", ep2.trim()).unwrap();
        assert!(
            ds.get::<WorkloadEndpoint>(Some("libnetwork"), &wep2)
                .await
                .unwrap()
                .is_none()
        );

        // The next container gets a free address of the same block (the freed one may come back
        // later: calico-ipam hands out a block's addresses in order).
        sleeper(&sock, "cal_net1", "bbox3").await;
        let a3 = container_addr(&sock, "bbox3").await;
        assert!(block.contains(&a3.addr()) && a3 != a1, "{a3}");

        host.shutdown().await;
    });
}

#[test]
fn subnets_fixed_addresses_and_bad_requests() {
    let ns = Netns::new("cdk");
    let name = ns.name.clone();
    in_netns(&ns.name.clone(), move || async move {
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(dir.path()).await;
        let kv = etcd.client().await;
        let ds = Datastore::from_etcd(kv.clone());
        add_pool(&ds, "default-ipv4-ippool", "192.168.0.0/16").await;
        add_pool(&ds, "other", "10.77.0.0/16").await;
        let host = Host::start("node1", &name, dir.path(), &etcd).await;
        let sock = host.sock();
        calico_lab::dockerd::build_busybox_image(&host.dockerd, "busybox:latest").unwrap();

        // --subnet must match a pool; the error reaches the user.
        let bad = calico_network(&sock, &["--subnet", "10.99.0.0/16"], "nope").await;
        assert!(!bad.ok);
        assert!(
            bad.stderr
                .contains("must match the CIDR of an enabled Calico IPPool"),
            "{}",
            bad.stderr
        );
        // Unsupported options are refused by name.
        let bad = calico_network(&sock, &["--internal"], "nope2").await;
        assert!(!bad.ok);
        assert!(bad.stderr.contains("--internal"), "{}", bad.stderr);

        // --subnet and --ip.
        calico_network_ok(&sock, &["--subnet", "10.77.0.0/16"], "net_sub").await;
        docker_ok(
            &sock,
            &[
                "run",
                "-d",
                "--net",
                "net_sub",
                "--ip",
                "10.77.3.9",
                "--name",
                "fixed",
                "busybox",
                "sleep",
                "600",
            ],
        )
        .await;
        assert_eq!(
            container_addr(&sock, "fixed").await,
            "10.77.3.9/32".parse::<IpNet>().unwrap()
        );
        sleeper(&sock, "net_sub", "auto").await;
        let auto = container_addr(&sock, "auto").await;
        assert!(
            "10.77.0.0/16"
                .parse::<IpNet>()
                .unwrap()
                .contains(&auto.addr()),
            "{auto}"
        );
        // The same fixed address twice is refused.
        let dup = docker(
            &sock,
            &[
                "run",
                "-d",
                "--net",
                "net_sub",
                "--ip",
                "10.77.3.9",
                "--name",
                "dup",
                "busybox",
                "sleep",
                "600",
            ],
        )
        .await;
        assert!(!dup.ok);
        assert!(dup.stderr.contains("already assigned"), "{}", dup.stderr);

        // --ipam-opt pool=<name> selects a pool by name.
        calico_network_ok(&sock, &["--ipam-opt", "pool=other"], "net_opt").await;
        sleeper(&sock, "net_opt", "byname").await;
        let byname = container_addr(&sock, "byname").await;
        assert!(
            "10.77.0.0/16"
                .parse::<IpNet>()
                .unwrap()
                .contains(&byname.addr()),
            "{byname}"
        );

        // Malformed requests straight at the sockets: {"Err"} naming the problem.
        let (net_sock, ipam_sock) =
            calico_docker::server::socket_paths(&dir.path().join("plugins"));
        let (status, body) = plugin_post(&net_sock, "/Plugin.Activate", "").await;
        assert_eq!(
            (status, body["Implements"][0].as_str()),
            (200, Some("NetworkDriver"))
        );
        let (status, body) = plugin_post(&ipam_sock, "/Plugin.Activate", "").await;
        assert_eq!(
            (status, body["Implements"][0].as_str()),
            (200, Some("IpamDriver"))
        );
        let (status, body) = plugin_post(&net_sock, "/NetworkDriver.GetCapabilities", "{}").await;
        assert_eq!((status, body["Scope"].as_str()), (200, Some("local")));
        let (status, body) = plugin_post(
            &net_sock,
            "/NetworkDriver.Join",
            r#"{"NetworkID":"n","EndpointID":5}"#,
        )
        .await;
        assert_eq!(status, 400);
        assert!(
            body["Err"].as_str().unwrap().contains("EndpointID"),
            "{body}"
        );
        let (status, body) =
            plugin_post(&net_sock, "/NetworkDriver.CreateEndpoint", "{not json").await;
        assert_eq!(status, 400);
        assert!(
            body["Err"].as_str().unwrap().contains("not valid JSON"),
            "{body}"
        );
        let (status, body) =
            plugin_post(&ipam_sock, "/IpamDriver.RequestAddress", r#"{"PoolID":""}"#).await;
        assert_eq!(status, 400);
        assert!(body["Err"].as_str().unwrap().contains("PoolID"), "{body}");
        let (status, body) = plugin_post(&ipam_sock, "/NetworkDriver.Join", "{}").await;
        assert_eq!(status, 404, "{body}");
        // A join for an endpoint that was never created fails and leaves no veth.
        let (status, body) = plugin_post(
            &net_sock,
            "/NetworkDriver.Join",
            r#"{"NetworkID":"n","EndpointID":"deadbeef0123456789"}"#,
        )
        .await;
        assert_eq!(status, 500);
        assert!(
            body["Err"]
                .as_str()
                .unwrap()
                .contains("no WorkloadEndpoint"),
            "{body}"
        );
        assert!(
            !sh(&["ip", "-o", "link"])
                .await
                .stdout
                .contains("calideadbeef012")
        );

        host.shutdown().await;
    });
}

#[test]
fn dockerd_restart_keeps_the_network_and_connectivity_without_leaking_addresses() {
    let ns = Netns::new("cdk");
    make_router(&ns.name);
    let name = ns.name.clone();
    in_netns(&ns.name.clone(), move || async move {
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(dir.path()).await;
        let kv = etcd.client().await;
        let ds = Datastore::from_etcd(kv.clone());
        add_pool(&ds, "default-ipv4-ippool", "192.168.0.0/16").await;
        let mut host = Host::start("node1", &name, dir.path(), &etcd).await;
        let sock = host.sock();
        calico_lab::dockerd::build_busybox_image(&host.dockerd, "busybox:latest").unwrap();
        calico_network_ok(&sock, &[], "cal_net1").await;
        for n in ["bbox1", "bbox2"] {
            docker_ok(
                &sock,
                &[
                    "run",
                    "-d",
                    "--restart",
                    "always",
                    "--net",
                    "cal_net1",
                    "--name",
                    n,
                    "busybox",
                    "sleep",
                    "600",
                ],
            )
            .await;
        }

        let config = host.dockerd.config().clone();
        host.dockerd.stop();
        host.dockerd = calico_lab::dockerd::Dockerd::start(config)
            .await
            .expect("dockerd restart");

        eventually(30, "both containers running again", || async {
            docker(&sock, &["ps", "--format", "{{.Names}}"])
                .await
                .stdout
                .lines()
                .count()
                == 2
        })
        .await;
        let nets = docker_ok(
            &sock,
            &["network", "ls", "--format", "{{.Name}} {{.Driver}}"],
        )
        .await;
        assert!(nets.lines().any(|l| l == "cal_net1 calico"), "{nets}");
        let a1 = container_addr(&sock, "bbox1").await;
        let a2 = container_addr(&sock, "bbox2").await;
        let pool: IpNet = "192.168.0.0/16".parse().unwrap();
        assert!(pool.contains(&a1.addr()) && pool.contains(&a2.addr()));
        // Exactly the two live addresses are assigned: nothing leaked across the restart.
        let mut got = calico_ipam::Ipam::new(kv.clone())
            .ips_by_handle("libnetwork.node1")
            .await
            .unwrap();
        got.sort();
        let mut want = vec![a1.addr(), a2.addr()];
        want.sort();
        assert_eq!(
            got, want,
            "addresses held by this host's handle after the restart"
        );
        let weps = ds
            .list::<WorkloadEndpoint>(Some("libnetwork"))
            .await
            .unwrap()
            .items;
        assert_eq!(weps.len(), 2, "WorkloadEndpoints after restart: {weps:?}");
        let ping = docker(
            &sock,
            &[
                "exec",
                "bbox1",
                "ping",
                "-c",
                "2",
                "-W",
                "2",
                &a2.addr().to_string(),
            ],
        )
        .await;
        assert!(
            ping.ok,
            "ping after restart: {}{}",
            ping.stdout, ping.stderr
        );

        host.shutdown().await;
    });
}

#[test]
fn after_a_dockerd_crash_the_guard_reaps_containers_and_shims() {
    let ns = Netns::new("cdk");
    make_router(&ns.name);
    let name = ns.name.clone();
    in_netns(&ns.name.clone(), move || async move {
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(dir.path()).await;
        let ds = Datastore::from_etcd(etcd.client().await);
        add_pool(&ds, "default-ipv4-ippool", "192.168.0.0/16").await;
        let mut host = Host::start("node1", &name, dir.path(), &etcd).await;
        let sock = host.sock();
        calico_lab::dockerd::build_busybox_image(&host.dockerd, "busybox:latest").unwrap();
        calico_network_ok(&sock, &[], "cal_net1").await;
        sleeper(&sock, "cal_net1", "bbox1").await;
        let pid: i32 = docker_ok(&sock, &["inspect", "-f", "{{.State.Pid}}", "bbox1"])
            .await
            .trim()
            .parse()
            .unwrap();

        host.dockerd.crash();
        let shims = host.dockerd.leftover_shims();
        assert_eq!(
            shims.len(),
            1,
            "the container's shim outlives a crash: {shims:?}"
        );
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        host.dockerd.stop();
        assert!(host.dockerd.leftover_shims().is_empty());
        eventually(5, "container process reaped", || async {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for init.
            stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z")
        })
        .await;
    });
}
