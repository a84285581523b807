//! NAT outgoing (Felix's `cali-nat-outgoing`), rendered into the table `inet calico-rs`.
//!
//! Felix keeps two IP sets per family, every IP pool (`all-ipam-pools`) and the pools with
//! `natOutgoing` (`masq-ipam-pools`), and one rule in the nat table's POSTROUTING: source in a
//! masquerading pool and destination in no pool → MASQUERADE (or SNAT to
//! `natOutgoingAddress`; with `natPortRange`, TCP and UDP get the port range first). Here:
//! - interval sets [`ALL_POOLS`]`-4`/`-6` and [`MASQ_POOLS`]`-4`/`-6`;
//! - the base chain [`NAT_CHAIN`] (type nat, hook postrouting, priority 100, srcnat), with per
//!   family that has a masquerading pool: `[tcp, udp with the port range,] any` rules, each
//!   `saddr @masq daddr != @all → masquerade | snat`.
//!
//! A nat chain sees only the first packet of a connection: the mapping it picks is kept by
//! conntrack for the connection's life. So a change of the sets (a pool's `natOutgoing`
//! flipped, a pool added) never touches connections already established, of any pool; it
//! is also applied by difference like every other part of the table (the sets are refilled,
//! the chain is rewritten only when its rules change).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::batch::{
    ChainSpec, CmpOp, Expr, Hook, KeyType, MetaKey, NFPROTO_IPV4, NFPROTO_IPV6, PayloadBase,
    SetSpec,
};
use crate::render::interval_elems;
use crate::table::TableSpec;

/// The nat base chain.
pub const NAT_CHAIN: &str = "nat-outgoing";
/// Prefix of the sets of every pool's CIDR (`-4`, `-6`).
pub const ALL_POOLS: &str = "all-ipam-pools";
/// Prefix of the sets of the CIDRs of the pools with `natOutgoing` (`-4`, `-6`).
pub const MASQ_POOLS: &str = "masq-ipam-pools";
/// Priority of the chain: `srcnat`, where iptables' nat POSTROUTING runs.
pub const NAT_PRIORITY: i32 = 100;

/// What NAT outgoing does on this host (computed by the agent from the IP pools and
/// FelixConfiguration).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatOutgoing {
    /// Every IP pool's CIDR (both families): traffic to them is never translated.
    pub all_pools: Vec<IpNet>,
    /// CIDRs of the pools whose traffic to outside every pool is translated.
    pub masq_pools: Vec<IpNet>,
    /// `natOutgoingAddress`: SNAT to this address (for its family) instead of masquerading.
    pub to_address: Option<IpAddr>,
    /// `natPortRange` (`min`, `max`): TCP and UDP get source ports from this range.
    pub ports: Option<(u16, u16)>,
}

struct Fam {
    nfproto: u8,
    key: KeyType,
    saddr: (u32, u32),
    daddr: (u32, u32),
}

const FAMILIES: [Fam; 2] = [
    Fam {
        nfproto: NFPROTO_IPV4,
        key: KeyType::Ipv4Addr,
        saddr: (12, 4),
        daddr: (16, 4),
    },
    Fam {
        nfproto: NFPROTO_IPV6,
        key: KeyType::Ipv6Addr,
        saddr: (8, 16),
        daddr: (24, 16),
    },
];

/// Name of the set `prefix` of one family (`all-ipam-pools-4`).
pub fn set_name(prefix: &str, v6: bool) -> String {
    format!("{prefix}-{}", if v6 { 6 } else { 4 })
}

/// Adds the NAT sets and chain to `t`.
pub fn render(t: &mut TableSpec, nat: &NatOutgoing) {
    t.add_chain(&ChainSpec::nat(NAT_CHAIN, Hook::Postrouting, NAT_PRIORITY));
    for f in &FAMILIES {
        let v6 = f.nfproto == NFPROTO_IPV6;
        let of_family = |nets: &[IpNet]| -> Vec<IpNet> {
            nets.iter()
                .filter(|n| matches!(n, IpNet::V6(_)) == v6)
                .copied()
                .collect()
        };
        let masq = of_family(&nat.masq_pools);
        // A masquerading pool is a pool: its CIDR is in both sets, whatever the caller gave.
        let mut all = of_family(&nat.all_pools);
        all.extend(&masq);
        let all_name = set_name(ALL_POOLS, v6);
        let masq_name = set_name(MASQ_POOLS, v6);
        for (name, nets) in [(&all_name, &all), (&masq_name, &masq)] {
            t.add_set(&SetSpec {
                name: name.clone(),
                key: f.key,
                interval: true,
                verdict_map: false,
            });
            t.add_elements(name, &interval_elems(nets.iter().copied()));
        }
        if masq.is_empty() {
            continue;
        }
        let to_address = nat.to_address.filter(|a| matches!(a, IpAddr::V6(_)) == v6);
        let matches = vec![
            Expr::Meta(MetaKey::NfProto),
            Expr::Cmp(CmpOp::Eq, vec![f.nfproto]),
            Expr::Payload {
                base: PayloadBase::Network,
                offset: f.saddr.0,
                len: f.saddr.1,
            },
            Expr::Lookup {
                set: masq_name.clone(),
                inverted: false,
            },
            Expr::Payload {
                base: PayloadBase::Network,
                offset: f.daddr.0,
                len: f.daddr.1,
            },
            Expr::Lookup {
                set: all_name.clone(),
                inverted: true,
            },
        ];
        if let Some((min, max)) = nat.ports {
            for (proto, name) in [(6u8, "tcp"), (17u8, "udp")] {
                let mut r = matches.clone();
                r.extend([
                    Expr::Meta(MetaKey::L4Proto),
                    Expr::Cmp(CmpOp::Eq, vec![proto]),
                ]);
                r.push(Expr::Counter);
                r.extend(translate(f.nfproto, to_address, Some((min, max))));
                let comment = format!(
                    "{name} from a natOutgoing pool to outside the pools: source ports {min}-{max}"
                );
                t.add_rule(NAT_CHAIN, &r, Some(&comment));
            }
        }
        let mut r = matches;
        r.push(Expr::Counter);
        r.extend(translate(f.nfproto, to_address, None));
        t.add_rule(
            NAT_CHAIN,
            &r,
            Some("from a natOutgoing pool to outside the pools"),
        );
    }
}

/// The statements that translate: load the operands into registers 1 (address), 2 and 3
/// (lowest and highest port), then `snat` or `masquerade`.
fn translate(nfproto: u8, to: Option<IpAddr>, ports: Option<(u16, u16)>) -> Vec<Expr> {
    let mut out = Vec::new();
    if let Some(a) = to {
        out.push(Expr::Immediate {
            reg: 1,
            data: crate::render::addr_key(a),
        });
    }
    let proto_regs = ports.map(|(min, max)| {
        out.push(Expr::Immediate {
            reg: 2,
            data: min.to_be_bytes().to_vec(),
        });
        out.push(Expr::Immediate {
            reg: 3,
            data: max.to_be_bytes().to_vec(),
        });
        (2, 3)
    });
    out.push(match to {
        Some(_) => Expr::Snat {
            family: nfproto,
            addr_reg: 1,
            proto_regs,
        },
        None => Expr::Masq { proto_regs },
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn last(t: &TableSpec, i: usize) -> Expr {
        t.chains[NAT_CHAIN].rules[i].exprs.last().unwrap().clone()
    }

    #[test]
    fn no_masquerading_pool_means_an_empty_chain_and_full_pool_sets() {
        let mut t = TableSpec::default();
        let nat = NatOutgoing {
            all_pools: vec![n("10.65.0.0/16"), n("fd00::/64")],
            ..Default::default()
        };
        render(&mut t, &nat);
        let chain = &t.chains[NAT_CHAIN];
        assert!(chain.rules.is_empty());
        assert_eq!(chain.spec.kind, crate::batch::ChainType::Nat);
        assert_eq!(
            chain.spec.base,
            Some((Hook::Postrouting, 100, crate::batch::Verdict::Accept))
        );
        assert_eq!(t.sets["all-ipam-pools-4"].elems.len(), 2);
        assert_eq!(t.sets["all-ipam-pools-6"].elems.len(), 2);
        assert!(t.sets["masq-ipam-pools-4"].elems.is_empty());
    }

    #[test]
    fn one_masquerade_rule_per_family_with_a_masquerading_pool() {
        let mut t = TableSpec::default();
        let nat = NatOutgoing {
            all_pools: vec![n("10.65.0.0/16"), n("10.66.0.0/16"), n("fd00::/64")],
            masq_pools: vec![n("10.65.0.0/16")],
            ..Default::default()
        };
        render(&mut t, &nat);
        let rules = &t.chains[NAT_CHAIN].rules;
        assert_eq!(rules.len(), 1, "IPv6 has no masquerading pool");
        assert_eq!(last(&t, 0), Expr::Masq { proto_regs: None });
        let e = &rules[0].exprs;
        assert!(e.contains(&Expr::Lookup {
            set: "masq-ipam-pools-4".into(),
            inverted: false
        }));
        assert!(e.contains(&Expr::Lookup {
            set: "all-ipam-pools-4".into(),
            inverted: true
        }));
        assert_eq!(
            t.sets["masq-ipam-pools-4"].elems,
            interval_elems([n("10.65.0.0/16")].into_iter())
        );
    }

    #[test]
    fn a_masquerading_pool_the_caller_left_out_of_all_pools_is_still_a_pool() {
        let mut t = TableSpec::default();
        render(
            &mut t,
            &NatOutgoing {
                masq_pools: vec![n("10.65.0.0/16")],
                ..Default::default()
            },
        );
        assert_eq!(
            t.sets["all-ipam-pools-4"].elems,
            interval_elems([n("10.65.0.0/16")].into_iter())
        );
    }

    #[test]
    fn port_range_gives_tcp_and_udp_rules_first_then_the_catch_all() {
        let mut t = TableSpec::default();
        let nat = NatOutgoing {
            all_pools: vec![n("10.65.0.0/16")],
            masq_pools: vec![n("10.65.0.0/16")],
            ports: Some((40000, 40099)),
            ..Default::default()
        };
        render(&mut t, &nat);
        let rules = &t.chains[NAT_CHAIN].rules;
        assert_eq!(rules.len(), 3);
        for (i, proto) in [(0, 6u8), (1, 17u8)] {
            let e = &rules[i].exprs;
            assert!(e.contains(&Expr::Cmp(CmpOp::Eq, vec![proto])));
            assert!(e.contains(&Expr::Immediate {
                reg: 2,
                data: 40000u16.to_be_bytes().to_vec()
            }));
            assert!(e.contains(&Expr::Immediate {
                reg: 3,
                data: 40099u16.to_be_bytes().to_vec()
            }));
            assert_eq!(
                last(&t, i),
                Expr::Masq {
                    proto_regs: Some((2, 3))
                }
            );
        }
        assert_eq!(last(&t, 2), Expr::Masq { proto_regs: None });
    }

    #[test]
    fn nat_outgoing_address_snats_its_own_family_and_the_other_masquerades() {
        let mut t = TableSpec::default();
        let nat = NatOutgoing {
            all_pools: vec![n("10.65.0.0/16"), n("fd00::/64")],
            masq_pools: vec![n("10.65.0.0/16"), n("fd00::/64")],
            to_address: Some("192.168.33.99".parse().unwrap()),
            ports: None,
        };
        render(&mut t, &nat);
        let rules = &t.chains[NAT_CHAIN].rules;
        assert_eq!(rules.len(), 2);
        assert!(rules[0].exprs.contains(&Expr::Immediate {
            reg: 1,
            data: vec![192, 168, 33, 99]
        }));
        assert_eq!(
            last(&t, 0),
            Expr::Snat {
                family: NFPROTO_IPV4,
                addr_reg: 1,
                proto_regs: None
            }
        );
        assert_eq!(last(&t, 1), Expr::Masq { proto_regs: None });
    }
}
