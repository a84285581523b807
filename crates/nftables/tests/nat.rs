//! NAT outgoing against the real kernel (a throw-away lab namespace): the kernel accepts the
//! nat chain in every variant (masquerade, SNAT to an address, with a port range, IPv4 and
//! IPv6), `nft` reads it back as Felix's rules would read, a change of the pools refills
//! only the pool sets (the chain's rules keep their handles), and a restarted dataplane adopts
//! the nat chain as a nat chain.

use calico_lab::{Host, Lab};
use calico_nftables::{NatOutgoing, PolicyDataplane};
use calico_policy::program::HostProgram;

fn nat_chain(ns: &Host) -> String {
    ns.exec_ok(&[
        "nft",
        "-a",
        "list",
        "chain",
        "inet",
        "calico-rs",
        "nat-outgoing",
    ])
    .expect("nft list chain")
}

fn set(ns: &Host, name: &str) -> String {
    ns.exec_ok(&["nft", "list", "set", "inet", "calico-rs", name])
        .expect("nft list set")
}

fn handles(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|l| l.contains("masquerade") || l.contains("snat"))
        .filter_map(|l| l.split("# handle ").nth(1))
        .map(str::to_owned)
        .collect()
}

fn n(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

#[test]
fn nat_outgoing_variants_are_accepted_and_pool_changes_touch_only_the_sets() {
    let lab = Lab::new().expect("lab");
    let ns = lab.add_namespace("nat").expect("namespace");
    let program = HostProgram::default();
    let mut dp = PolicyDataplane::new_in(&ns.netns_path()).expect("nft socket");

    let mut nat = NatOutgoing {
        all_pools: vec![n("10.65.0.0/16"), n("10.66.0.0/16"), n("fd00:65::/64")],
        masq_pools: vec![n("10.65.0.0/16"), n("fd00:65::/64")],
        to_address: None,
        ports: None,
    };
    dp.set_nat_outgoing(nat.clone());
    dp.apply(&program).expect("masquerade");
    let chain = nat_chain(&ns);
    assert!(
        chain.contains("type nat hook postrouting priority srcnat; policy accept;"),
        "{chain}"
    );
    assert!(
        chain.contains("ip saddr @masq-ipam-pools-4 ip daddr != @all-ipam-pools-4 counter packets 0 bytes 0 masquerade"),
        "{chain}"
    );
    assert!(
        chain.contains("ip6 saddr @masq-ipam-pools-6 ip6 daddr != @all-ipam-pools-6 counter packets 0 bytes 0 masquerade"),
        "{chain}"
    );
    assert!(
        set(&ns, "all-ipam-pools-4").contains("10.65.0.0-10.66.255.255"),
        "adjacent pools merge: {}",
        set(&ns, "all-ipam-pools-4")
    );
    assert!(set(&ns, "masq-ipam-pools-6").contains("fd00:65::/64"));

    // A pool's natOutgoing flipped: the sets change, the chain's rules stay.
    let before = handles(&nat_chain(&ns));
    assert_eq!(before.len(), 2);
    nat.masq_pools = vec![n("10.65.0.0/16"), n("10.66.0.0/16"), n("fd00:65::/64")];
    dp.set_nat_outgoing(nat.clone());
    let report = dp.apply_changes(&program).expect("apply pool change");
    assert!(
        report.chains.is_empty(),
        "chains touched: {:?}",
        report.chains
    );
    assert_eq!(
        report.sets.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["masq-ipam-pools-4"]
    );
    assert_eq!(handles(&nat_chain(&ns)), before);
    assert!(set(&ns, "masq-ipam-pools-4").contains("10.65.0.0-10.66.255.255"));

    // natPortRange and natOutgoingAddress.
    nat.ports = Some((40000, 40099));
    dp.set_nat_outgoing(nat.clone());
    dp.apply_changes(&program).expect("port range");
    let chain = nat_chain(&ns);
    assert!(chain.contains("meta l4proto tcp"), "{chain}");
    assert!(chain.contains("masquerade to :40000-40099"), "{chain}");
    nat.to_address = Some("192.168.33.99".parse().unwrap());
    dp.set_nat_outgoing(nat.clone());
    dp.apply_changes(&program).expect("snat with ports");
    let chain = nat_chain(&ns);
    assert!(
        chain.contains("snat ip to 192.168.33.99:40000-40099"),
        "{chain}"
    );
    // IPv6 still masquerades: the address is IPv4.
    assert!(chain.contains("ip6 saddr @masq-ipam-pools-6"), "{chain}");
    nat.ports = None;
    dp.set_nat_outgoing(nat.clone());
    dp.apply_changes(&program).expect("snat");
    let chain = nat_chain(&ns);
    assert!(chain.contains("snat ip to 192.168.33.99"), "{chain}");
    assert!(!chain.contains("40000"), "{chain}");

    // No masquerading pool: an empty chain.
    nat.masq_pools.clear();
    dp.set_nat_outgoing(nat.clone());
    dp.apply_changes(&program).expect("none");
    assert!(handles(&nat_chain(&ns)).is_empty());

    // A restarted dataplane adopts the table, nat chain included, and rewrites it in place.
    drop(dp);
    let mut dp = PolicyDataplane::new_in(&ns.netns_path()).expect("nft socket");
    let (chains, _) = dp.adopt_existing().expect("adopt");
    assert!(chains > 0);
    nat.masq_pools = vec![n("10.65.0.0/16")];
    dp.set_nat_outgoing(nat);
    let report = dp.apply_changes(&program).expect("apply after adoption");
    assert!(!report.full, "an adopted table is rewritten in place");
    assert!(nat_chain(&ns).contains("type nat hook postrouting"));
    assert_eq!(handles(&nat_chain(&ns)).len(), 1);
}
