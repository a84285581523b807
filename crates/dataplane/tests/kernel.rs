//! The dataplane against the real kernel, inside throw-away lab namespaces only: the host
//! namespace's links and routes are never touched.

use std::time::Duration;

use calico_dataplane::sysctl::{self, Sysctl};
use calico_dataplane::{
    CALICO_HOST_MAC, Family, Netlink, RTPROT_BIRD, RTPROT_BOOT, Route, RouteChange, RouteError,
    RouteFilter, VethSpec,
};
use calico_lab::{Host, Lab};
use ipnet::IpNet;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// One "container" on `host`: a namespace with `cali0` holding `ip`/32, default route via
/// 169.254.1.1 on cali0 (as Calico sets it up), and the host side `hostif` with Calico's MAC,
/// sysctls and a /32 route.
async fn plumb_workload(lab: &Lab, host: &Host, cname: &str, hostif: &str, ip: &str) -> Host {
    let container = lab.add_namespace(cname).expect("container namespace");
    let host_nl = Netlink::connect_in(&host.netns_path()).expect("host netlink");
    let pair = host_nl
        .create_veth(&VethSpec {
            host_mac: Some(CALICO_HOST_MAC),
            ..VethSpec::new(hostif, "cali0", container.netns_path())
        })
        .await
        .expect("veth");
    assert_eq!(pair.host.mac, Some(CALICO_HOST_MAC));
    assert_eq!(pair.peer.name, "cali0");
    assert!(pair.host.up && pair.peer.up);

    let c_nl = Netlink::connect_in(&container.netns_path()).expect("container netlink");
    let addr = net(&format!("{ip}/32"));
    c_nl.add_address("cali0", addr).await.expect("address");
    c_nl.replace_route(&Route::device(net("169.254.1.1/32"), "cali0", RTPROT_BOOT))
        .await
        .expect("gateway route");
    c_nl.replace_route(&Route::gateway(
        net("0.0.0.0/0"),
        "169.254.1.1".parse().unwrap(),
        Some("cali0"),
        RTPROT_BOOT,
    ))
    .await
    .expect("default route");

    sysctl::apply(
        Some(&host.netns_path()),
        &sysctl::calico_host_veth(hostif, true, false),
    )
    .expect("host veth sysctls");
    host_nl
        .replace_route(&Route::device(addr, hostif, RTPROT_BOOT))
        .await
        .expect("workload route");
    container
}

#[tokio::test]
async fn seed_topology_routes_a_ping_across_two_hosts_with_ttl_62() {
    let lab = Lab::new().expect("lab");
    let node1 = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let node2 = lab.add_host("node2", "192.168.33.12/24").unwrap();
    for n in [&node1, &node2] {
        sysctl::apply(Some(&n.netns_path()), &[Sysctl::ipv4_forwarding(true)]).unwrap();
    }
    let bbox1 = plumb_workload(&lab, &node1, "bbox1", "calicce21fc3677", "192.168.166.128").await;
    let _bbox2 = plumb_workload(&lab, &node2, "bbox2", "cali1a2b3c4d5e6", "192.168.104.0").await;

    // What BGP would install: the peer's block via the peer, our own block as a blackhole.
    let n1 = Netlink::connect_in(&node1.netns_path()).unwrap();
    let n2 = Netlink::connect_in(&node2.netns_path()).unwrap();
    n1.replace_route(&Route::gateway(
        net("192.168.104.0/26"),
        "192.168.33.12".parse().unwrap(),
        Some("eth1"),
        RTPROT_BIRD,
    ))
    .await
    .unwrap();
    n1.replace_route(&Route::blackhole(net("192.168.166.128/26"), RTPROT_BIRD))
        .await
        .unwrap();
    n2.replace_route(&Route::gateway(
        net("192.168.166.128/26"),
        "192.168.33.11".parse().unwrap(),
        Some("eth1"),
        RTPROT_BIRD,
    ))
    .await
    .unwrap();
    n2.replace_route(&Route::blackhole(net("192.168.104.0/26"), RTPROT_BIRD))
        .await
        .unwrap();

    // `ip r` on node1 shows the seed's lines.
    let table = node1.exec_ok(&["ip", "r"]).unwrap();
    for line in [
        "192.168.104.0/26 via 192.168.33.12 dev eth1 proto bird",
        "192.168.166.128 dev calicce21fc3677 scope link",
        "blackhole 192.168.166.128/26 proto bird",
    ] {
        assert!(table.contains(line), "missing {line:?} in:\n{table}");
    }
    let link = bbox1.exec_ok(&["ip", "link", "show", "cali0"]).unwrap();
    assert!(link.contains("cali0"), "{link}");
    let host_link = node1
        .exec_ok(&["ip", "link", "show", "calicce21fc3677"])
        .unwrap();
    assert!(host_link.contains("ee:ee:ee:ee:ee:ee"), "{host_link}");

    assert!(
        bbox1
            .wait_ping("192.168.104.0", Duration::from_secs(10))
            .unwrap()
    );
    let ping = bbox1
        .exec_ok(&["ping", "-c1", "-W2", "192.168.104.0"])
        .unwrap();
    assert!(ping.contains("ttl=62"), "{ping}");

    // The routes BGP would own are exactly the proto-bird ones.
    let ours = n1
        .routes(&RouteFilter::protocol(RTPROT_BIRD))
        .await
        .unwrap();
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert!(ours.contains(&Route::blackhole(net("192.168.166.128/26"), RTPROT_BIRD)));
}

#[tokio::test]
async fn operations_are_idempotent_and_deleting_what_is_gone_is_ok() {
    let lab = Lab::new().expect("lab");
    let node1 = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let c = lab.add_namespace("c1").unwrap();
    let nl = Netlink::connect_in(&node1.netns_path()).unwrap();

    let spec = VethSpec::new("calitest0", "eth0", c.netns_path());
    let first = nl.create_veth(&spec).await.unwrap();
    // Creating again replaces the pair (the old peer goes with the old host side).
    let second = nl.create_veth(&spec).await.unwrap();
    assert_ne!(first.host.index, second.host.index);
    nl.set_mac("calitest0", CALICO_HOST_MAC).await.unwrap();
    assert_eq!(
        nl.require_link("calitest0").await.unwrap().mac,
        Some(CALICO_HOST_MAC)
    );
    nl.set_link_up("calitest0", false).await.unwrap();
    assert!(!nl.require_link("calitest0").await.unwrap().up);
    nl.set_link_up("calitest0", true).await.unwrap();

    let a = net("10.65.0.1/32");
    nl.add_address("calitest0", a).await.unwrap();
    nl.add_address("calitest0", a).await.unwrap();
    assert!(nl.addresses("calitest0").await.unwrap().contains(&a));
    assert!(nl.delete_address("calitest0", a).await.unwrap());
    assert!(!nl.delete_address("calitest0", a).await.unwrap());

    let r = Route::device(net("10.65.0.2/32"), "calitest0", 80);
    nl.replace_route(&r).await.unwrap();
    nl.replace_route(&r).await.unwrap();
    let err = nl.add_route(&r).await.unwrap_err();
    assert!(matches!(err, RouteError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("10.65.0.2/32"), "{err}");
    assert_eq!(
        nl.routes(&RouteFilter::protocol(80)).await.unwrap(),
        vec![r.clone()]
    );
    // Replace moves the route to another target in place.
    let moved = Route::blackhole(net("10.65.0.2/32"), 80);
    nl.replace_route(&moved).await.unwrap();
    assert_eq!(
        nl.routes(&RouteFilter::protocol(80)).await.unwrap(),
        vec![moved]
    );
    // A delete with another protocol number leaves our route alone.
    assert!(
        !nl.delete_route(&Route::blackhole(net("10.65.0.2/32"), 81))
            .await
            .unwrap()
    );
    assert!(nl.delete_route(&r).await.unwrap());
    assert!(!nl.delete_route(&r).await.unwrap());
    assert!(
        nl.routes(&RouteFilter::protocol(80))
            .await
            .unwrap()
            .is_empty()
    );

    assert!(nl.delete_link("calitest0").await.unwrap());
    assert!(!nl.delete_link("calitest0").await.unwrap());
    let c_nl = Netlink::connect_in(&c.netns_path()).unwrap();
    assert!(c_nl.link("eth0").await.unwrap().is_none(), "peer survived");
}

#[tokio::test]
async fn ipv6_addresses_and_routes() {
    let lab = Lab::new().expect("lab");
    let node1 = lab.add_host("node1", "192.168.33.11/24").unwrap();
    node1.add_address("fd00:33::11/64").unwrap();
    let c = lab.add_namespace("c1").unwrap();
    let nl = Netlink::connect_in(&node1.netns_path()).unwrap();
    nl.create_veth(&VethSpec::new("cali6", "cali0", c.netns_path()))
        .await
        .unwrap();
    let c_nl = Netlink::connect_in(&c.netns_path()).unwrap();
    let a6 = net("fd5a:1::1/128");
    c_nl.add_address("cali0", a6).await.unwrap();
    assert!(c_nl.addresses("cali0").await.unwrap().contains(&a6));

    let routes = [
        Route::device(a6, "cali6", 80),
        Route::gateway(
            net("fd5a:2::/122"),
            "fd00:33::12".parse().unwrap(),
            Some("eth1"),
            80,
        ),
        Route::blackhole(net("fd5a:1::/122"), 80),
    ];
    for r in &routes {
        nl.replace_route(r).await.unwrap();
    }
    let listed = nl
        .routes(&RouteFilter {
            family: Some(Family::V6),
            ..RouteFilter::protocol(80)
        })
        .await
        .unwrap();
    for r in &routes {
        let found = listed
            .iter()
            .find(|l| l.dst == r.dst)
            .unwrap_or_else(|| panic!("{r} not listed: {listed:?}"));
        assert_eq!(found.target, r.target, "{r}");
    }
    assert!(
        nl.routes(&RouteFilter {
            family: Some(Family::V4),
            ..RouteFilter::protocol(80)
        })
        .await
        .unwrap()
        .is_empty()
    );
    for r in &routes {
        assert!(nl.delete_route(r).await.unwrap(), "{r}");
    }
    assert!(
        nl.routes(&RouteFilter::protocol(80))
            .await
            .unwrap()
            .is_empty()
    );
}

/// `i`-th of the batch test's /24s, 10.0.0.0/24 up to 10.255.255.0/24 (inside the lab's node
/// namespace only), via `via`.
/// Routes as listed, with the interface the kernel resolved for a gateway left out (the
/// batch test's gateways are given without one), sorted by destination.
fn listed(mut routes: Vec<Route>) -> Vec<Route> {
    for r in &mut routes {
        if let calico_dataplane::RouteTarget::Gateway { ifname, .. } = &mut r.target {
            *ifname = None;
        }
    }
    routes.sort_by_key(|r| r.dst);
    routes
}

/// Compares without printing thousands of routes on failure.
fn assert_same_routes(got: &[Route], expected: &[Route]) {
    assert_eq!(got.len(), expected.len(), "route count");
    if let Some((g, e)) = got.iter().zip(expected).find(|(g, e)| g != e) {
        panic!("first difference: got {g}, expected {e}");
    }
}

fn batch_route(i: u32, via: &str) -> Route {
    let dst = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
    Route::gateway(
        IpNet::new(dst.into(), 24).unwrap(),
        via.parse().unwrap(),
        None,
        81,
    )
}

#[tokio::test]
async fn batches_install_thousands_of_routes_and_a_refused_one_is_named_while_the_rest_land() {
    const N: u32 = 5000;
    let lab = Lab::new().expect("lab");
    let node1 = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let nl = Netlink::connect_in(&node1.netns_path()).unwrap();
    let mine = RouteFilter::protocol(81);

    // Several datagrams' worth, with three bad changes among them: a next hop on no connected
    // network, a device that does not exist, and a gateway of the other family.
    let mut changes: Vec<RouteChange> = (0..N)
        .map(|i| RouteChange::Replace(batch_route(i, "192.168.33.12")))
        .collect();
    let unreachable = Route::gateway(
        net("172.31.250.0/24"),
        "172.31.9.9".parse().unwrap(),
        None,
        81,
    );
    let no_device = Route::device(net("172.31.251.0/24"), "calinosuch0", 81);
    let wrong_family = Route::gateway(net("172.31.252.0/24"), "fd00::1".parse().unwrap(), None, 81);
    changes.insert(2500, RouteChange::Replace(unreachable));
    changes.insert(10, RouteChange::Replace(no_device));
    changes.insert(4000, RouteChange::Replace(wrong_family));
    // A device route through an interface that exists resolves its index.
    changes.push(RouteChange::Replace(Route::device(
        net("172.31.253.0/24"),
        "eth1",
        81,
    )));
    let failures = nl.apply_route_changes(&changes).await;
    let failed: Vec<usize> = failures.iter().map(|(i, _)| *i).collect();
    assert_eq!(failed, vec![10, 2501, 4000], "{failures:?}");
    let text = |e: &RouteError| {
        let mut t = e.to_string();
        if let Some(s) = std::error::Error::source(e) {
            t += &format!(": {s}");
        }
        t
    };
    let refused = &failures[1].1;
    assert!(
        matches!(refused, RouteError::Refused { errno, reason: Some(_), .. } if *errno == libc::ENETUNREACH),
        "{refused:?}"
    );
    // The kernel's own reason (extended acknowledgement) is part of the message.
    println!("{}", text(refused));
    assert!(
        text(refused).contains("172.31.250.0/24"),
        "{}",
        text(refused)
    );
    assert!(text(&failures[0].1).contains("172.31.251.0/24"));
    assert!(text(&failures[0].1).contains("calinosuch0"));
    assert!(text(&failures[2].1).contains("172.31.252.0/24"));

    let installed = nl.routes(&mine).await.unwrap();
    assert_eq!(installed.len(), N as usize + 1, "every good route landed");
    let mut expected: Vec<Route> = (0..N).map(|i| batch_route(i, "192.168.33.12")).collect();
    expected.push(Route::device(net("172.31.253.0/24"), "eth1", 81));
    expected.sort_by_key(|r| r.dst);
    assert_same_routes(&listed(installed), &expected);

    // Replace is idempotent and moves routes; in one batch, a later change to the same
    // destination wins (order is kept); deleting what is not there is no failure.
    let mut changes: Vec<RouteChange> = (0..N)
        .map(|i| RouteChange::Replace(batch_route(i, "192.168.33.13")))
        .collect();
    changes.extend((0..N / 2).map(|i| RouteChange::Delete(batch_route(i, "192.168.33.13"))));
    changes.push(RouteChange::Delete(batch_route(N + 7, "192.168.33.13")));
    changes.push(RouteChange::Delete(Route::device(
        net("172.31.253.0/24"),
        "eth1",
        81,
    )));
    assert!(nl.apply_route_changes(&changes).await.is_empty());
    let got = listed(nl.routes(&mine).await.unwrap());
    let mut expected: Vec<Route> = (N / 2..N)
        .map(|i| batch_route(i, "192.168.33.13"))
        .collect();
    expected.sort_by_key(|r| r.dst);
    assert_same_routes(&got, &expected);

    // A delete names only destination and protocol: routes of other protocols stay.
    nl.replace_route(&Route::blackhole(batch_route(0, "192.168.33.13").dst, 82))
        .await
        .unwrap();
    let deletes: Vec<RouteChange> = (0..N)
        .map(|i| RouteChange::Delete(batch_route(i, "192.168.33.13")))
        .collect();
    assert!(nl.apply_route_changes(&deletes).await.is_empty());
    assert!(nl.routes(&mine).await.unwrap().is_empty());
    assert_eq!(
        nl.routes(&RouteFilter::protocol(82)).await.unwrap().len(),
        1
    );
    assert!(nl.apply_route_changes(&[]).await.is_empty());
}

#[tokio::test]
async fn errors_name_the_interface_and_the_operation() {
    let lab = Lab::new().expect("lab");
    let node1 = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let nl = Netlink::connect_in(&node1.netns_path()).unwrap();
    let err = nl
        .replace_route(&Route::device(net("10.9.9.9/32"), "calimissing", 80))
        .await
        .unwrap_err();
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        text.contains("10.9.9.9/32") && text.contains("calimissing"),
        "{text}"
    );
    let err = nl
        .add_address("nosuchif", net("10.0.0.1/32"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nosuchif"), "{err}");
    let err = nl
        .set_link_up("waytoolonginterfacename", true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("waytoolonginterfacename"), "{err}");
    let gone = nl
        .create_veth(&VethSpec::new(
            "calix",
            "eth0",
            "/run/netns/does-not-exist-xyz",
        ))
        .await
        .unwrap_err();
    assert!(gone.to_string().contains("eth0"), "{gone}");
    assert!(
        nl.link("calix").await.unwrap().is_none(),
        "a failed create left calix behind"
    );
}

#[test]
fn sysctls_apply_only_inside_the_namespace() {
    let lab = Lab::new().expect("lab");
    let node1 = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let ns = node1.netns_path();
    let key = Sysctl::ipv4_conf("eth1", "proxy_arp", "1");
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    sysctl::apply(Some(&ns), &[Sysctl::ipv4_forwarding(true), key.clone()]).unwrap();
    assert_eq!(sysctl::read(Some(&ns), &key).unwrap(), "1");
    assert_eq!(
        sysctl::read(Some(&ns), &Sysctl::ipv4_forwarding(true)).unwrap(),
        "1"
    );
    sysctl::apply(Some(&ns), &[Sysctl::ipv4_forwarding(false)]).unwrap();
    assert_eq!(
        sysctl::read(Some(&ns), &Sysctl::ipv4_forwarding(false)).unwrap(),
        "0"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_before
    );
    let err = sysctl::apply(
        Some(&ns),
        &[Sysctl::ipv4_conf("nosuchif", "proxy_arp", "1")],
    )
    .unwrap_err();
    assert!(err.to_string().contains("nosuchif"), "{err}");
}

#[test]
fn netlink_work_runs_on_its_own_thread_inside_a_namespace() {
    let lab = Lab::new().expect("lab");
    let node1 = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let names = calico_dataplane::netns::with_netlink_in(&node1.netns_path(), |nl| async move {
        nl.links()
            .await
            .map(|ls| ls.into_iter().map(|l| l.name).collect::<Vec<_>>())
    })
    .unwrap()
    .unwrap();
    assert!(names.contains(&"eth1".to_owned()), "{names:?}");
}
