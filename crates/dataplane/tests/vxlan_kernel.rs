//! VXLAN devices, FDB and neighbour entries against the real kernel, inside throw-away lab
//! namespaces only; and a packet through two of them, host to host across a router.

use std::net::IpAddr;
use std::time::Duration;

use calico_dataplane::vxlan::{Ensured, FdbEntry, NeighEntry, Vtep, VxlanSpec};
use calico_dataplane::{Netlink, RTPROT_BIRD, Route};
use calico_lab::Lab;
use ipnet::IpNet;

fn spec(local: &str, mac: u8) -> VxlanSpec {
    VxlanSpec {
        name: "vxlan.calico".into(),
        vni: 4096,
        port: 4789,
        local: local.parse().unwrap(),
        mac: [0x66, 0x1f, 0, 0, 0, mac],
        mtu: 1450,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_device_is_written_only_where_it_differs_and_entries_round_trip() {
    let lab = Lab::new().expect("lab");
    let node = lab.add_host("node1", "192.168.33.11/24").unwrap();
    let nl = Netlink::connect_in(&node.netns_path()).unwrap();
    let want = spec("192.168.33.11", 1);
    assert_eq!(nl.ensure_vxlan(&want).await.unwrap(), Ensured::Created);
    let d = nl
        .vxlan_device("vxlan.calico")
        .await
        .unwrap()
        .expect("device");
    assert_eq!(
        (d.vni, d.port, d.local),
        (Some(4096), Some(4789), Some(ip("192.168.33.11")))
    );
    assert_eq!(d.learning, Some(false));
    assert_eq!(
        (d.link.mac, d.link.mtu, d.link.up),
        (Some(want.mac), Some(1450), true)
    );
    let index = d.link.index;
    // A second pass (a restart) writes nothing.
    assert_eq!(nl.ensure_vxlan(&want).await.unwrap(), Ensured::Unchanged);
    // MTU and MAC change in place: the same device (same index).
    let moved = VxlanSpec {
        mtu: 1400,
        mac: [0x66, 0x1f, 0, 0, 0, 9],
        ..want.clone()
    };
    assert_eq!(nl.ensure_vxlan(&moved).await.unwrap(), Ensured::Updated);
    let d = nl.vxlan_device("vxlan.calico").await.unwrap().unwrap();
    assert_eq!(
        (d.link.index, d.link.mtu, d.link.mac),
        (index, Some(1400), Some(moved.mac))
    );
    // Another VNI or port needs a new device.
    let vni = VxlanSpec {
        vni: 4097,
        port: 4790,
        ..moved.clone()
    };
    assert_eq!(nl.ensure_vxlan(&vni).await.unwrap(), Ensured::Created);
    let d = nl.vxlan_device("vxlan.calico").await.unwrap().unwrap();
    assert_eq!((d.vni, d.port), (Some(4097), Some(4790)));
    let out = node
        .exec_ok(&["ip", "-d", "link", "show", "vxlan.calico"])
        .unwrap();
    assert!(
        out.contains("vxlan id 4097") && out.contains("dstport 4790") && out.contains("nolearning"),
        "{out}"
    );

    // A link of that name that is not VXLAN is named, not silently replaced.
    node.exec_ok(&["ip", "link", "add", "vxlan-v6.calico", "type", "bridge"])
        .unwrap();
    let err = nl.vxlan_device("vxlan-v6.calico").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "vxlan-v6.calico exists and is not a VXLAN device"
    );

    let vtep = Vtep {
        mac: [0x66, 0x1f, 0, 0, 0, 2],
        host: ip("192.168.34.12"),
        tunnel: ip("10.65.1.0"),
    };
    nl.set_vtep("vxlan.calico", &vtep).await.unwrap();
    nl.set_vtep("vxlan.calico", &vtep).await.unwrap();
    let fdb = FdbEntry {
        mac: vtep.mac,
        host: vtep.host,
    };
    let neigh = NeighEntry {
        ip: vtep.tunnel,
        mac: vtep.mac,
    };
    assert_eq!(nl.fdb_entries("vxlan.calico").await.unwrap(), vec![fdb]);
    assert_eq!(
        nl.permanent_neighbours("vxlan.calico").await.unwrap(),
        vec![neigh]
    );
    let shown = node
        .exec_ok(&["bridge", "fdb", "show", "dev", "vxlan.calico"])
        .unwrap();
    assert!(
        shown.contains("66:1f:00:00:00:02 dst 192.168.34.12 self permanent"),
        "{shown}"
    );
    assert!(nl.delete_fdb("vxlan.calico", &fdb).await.unwrap());
    assert!(!nl.delete_fdb("vxlan.calico", &fdb).await.unwrap());
    assert!(nl.delete_neighbour("vxlan.calico", &neigh).await.unwrap());
    assert!(!nl.delete_neighbour("vxlan.calico", &neigh).await.unwrap());
    assert!(nl.fdb_entries("vxlan.calico").await.unwrap().is_empty());
    assert!(
        nl.permanent_neighbours("vxlan.calico")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Two hosts on different subnets behind a router namespace (the lab's LAN namespace, which
/// forwards between them and knows nothing of 10.65/16): a ping between the tunnel addresses
/// and to an address routed `onlink` via the peer's tunnel address crosses it encapsulated.
#[tokio::test]
async fn a_packet_crosses_a_router_inside_the_tunnel() {
    let lab = Lab::new().expect("lab");
    let a = lab.add_host("nodea", "192.168.33.11/24").unwrap();
    let b = lab.add_host("nodeb", "192.168.34.12/24").unwrap();
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.lan_netns(),
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .unwrap();
    let mk = |host: &calico_lab::Host, local: &str, mac: u8| {
        let host = host.clone();
        let s = spec(local, mac);
        async move {
            let nl = Netlink::connect_in(&host.netns_path()).unwrap();
            nl.ensure_vxlan(&s).await.unwrap();
            nl
        }
    };
    let (na, nb) = (
        mk(&a, "192.168.33.11", 1).await,
        mk(&b, "192.168.34.12", 2).await,
    );
    na.add_address("vxlan.calico", "10.65.0.0/32".parse().unwrap())
        .await
        .unwrap();
    nb.add_address("vxlan.calico", "10.65.1.0/32".parse().unwrap())
        .await
        .unwrap();
    // b also holds 10.65.1.5 (standing in for a workload in its block) on lo.
    b.exec_ok(&["ip", "addr", "add", "10.65.1.5/32", "dev", "lo"])
        .unwrap();
    na.set_vtep(
        "vxlan.calico",
        &Vtep {
            mac: [0x66, 0x1f, 0, 0, 0, 2],
            host: ip("192.168.34.12"),
            tunnel: ip("10.65.1.0"),
        },
    )
    .await
    .unwrap();
    nb.set_vtep(
        "vxlan.calico",
        &Vtep {
            mac: [0x66, 0x1f, 0, 0, 0, 1],
            host: ip("192.168.33.11"),
            tunnel: ip("10.65.0.0"),
        },
    )
    .await
    .unwrap();
    let onlink = |block: &str, via: &str| Route {
        target: calico_dataplane::RouteTarget::Gateway {
            via: ip(via),
            ifname: Some("vxlan.calico".into()),
            onlink: true,
        },
        ..Route::blackhole(block.parse::<IpNet>().unwrap(), RTPROT_BIRD)
    };
    na.replace_route(&onlink("10.65.1.0/26", "10.65.1.0"))
        .await
        .unwrap();
    nb.replace_route(&onlink("10.65.0.0/26", "10.65.0.0"))
        .await
        .unwrap();
    let shown = a.exec_ok(&["ip", "route", "show", "10.65.1.0/26"]).unwrap();
    assert_eq!(
        shown.trim(),
        "10.65.1.0/26 via 10.65.1.0 dev vxlan.calico proto bird onlink"
    );
    assert!(
        a.wait_ping("10.65.1.5", Duration::from_secs(10)).unwrap(),
        "no ping through the tunnel"
    );
    // The router saw UDP to 4789 between the hosts, not the inner addresses: it has no
    // route to 10.65/16, so an unencapsulated packet could not have crossed it.
    let r = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.lan_netns(),
            "ip",
            "route",
            "get",
            "10.65.1.5",
        ])
        .output()
        .unwrap();
    assert!(
        !r.status.success(),
        "the router knows a route to the pod address: {}",
        String::from_utf8_lossy(&r.stdout)
    );
}
