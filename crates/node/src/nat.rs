//! NAT outgoing as Felix does it: which traffic this node translates, computed from the IP
//! pools and FelixConfiguration, and handed to the nftables table the policy sync owns
//! (`calico_nftables::nat` renders it).
//!
//! Felix's rules (its `masqManager` and `NATOutgoingChain`):
//! - every pool's CIDR is a Calico destination: traffic to any pool is never translated;
//! - traffic from a pool with `natOutgoing: true` to a destination outside every pool is
//!   masqueraded to the address of the interface it leaves by; with FelixConfiguration
//!   `natOutgoingAddress` it is SNATed to that address instead; with `natPortRange`, TCP and
//!   UDP get their source port from that range;
//! - a pool's `disabled` changes nothing here: Felix's pool sets ignore it (`disabled` only
//!   stops IPAM from allocating in the pool), so the workloads still holding addresses of a
//!   disabled pool keep reaching the outside, and traffic to a disabled pool keeps its source.
//!
//! The agent computes [`desired`] from the pools in its model on every policy round and hands
//! it to the policy sync; the table is changed only when the result differs, and then by difference (the pool sets are refilled, the
//! chain is rewritten only when its rules change). Established connections keep the mapping
//! conntrack gave them, whatever changes.

use calico_api::IPPool;
use calico_nftables::NatOutgoing;

use crate::felix_config::FelixSettings;

/// What NAT outgoing does on a node, from the pools and the FelixConfiguration in force.
pub fn desired(pools: &[IPPool], felix: &FelixSettings) -> NatOutgoing {
    let mut nat = NatOutgoing {
        to_address: felix.nat_outgoing_address,
        ports: felix.nat_port_range,
        ..Default::default()
    };
    for p in pools {
        // A CIDR that does not parse was refused at apply time; nothing to translate.
        let Some(net) = p.spec.net() else {
            tracing::warn!(pool = ?p.metadata.name, cidr = %p.spec.cidr, "IPPool cidr does not parse; ignored for NAT outgoing");
            continue;
        };
        nat.all_pools.push(net);
        if p.spec.nat_outgoing() {
            nat.masq_pools.push(net);
        }
    }
    nat.all_pools.sort();
    nat.masq_pools.sort();
    nat
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_api::IPPoolSpec;

    fn pool(name: &str, cidr: &str, nat: bool, disabled: bool) -> IPPool {
        IPPool::new(
            name,
            IPPoolSpec {
                cidr: cidr.into(),
                nat_outgoing: Some(nat),
                disabled: Some(disabled),
                ..Default::default()
            },
        )
    }

    #[test]
    fn every_pool_is_a_destination_only_nat_pools_are_sources() {
        let pools = [
            pool("a", "10.65.0.0/16", true, false),
            pool("b", "10.66.0.0/16", false, false),
            pool("c", "fd00:65::/64", true, false),
        ];
        let nat = desired(&pools, &FelixSettings::default());
        let n = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        assert_eq!(
            nat.all_pools,
            vec![n("10.65.0.0/16"), n("10.66.0.0/16"), n("fd00:65::/64")]
        );
        assert_eq!(nat.masq_pools, vec![n("10.65.0.0/16"), n("fd00:65::/64")]);
        assert_eq!(nat.to_address, None);
        assert_eq!(nat.ports, None);
    }

    #[test]
    fn a_disabled_pool_is_treated_as_felix_does_unchanged() {
        let on = desired(
            &[pool("a", "10.65.0.0/16", true, false)],
            &FelixSettings::default(),
        );
        let off = desired(
            &[pool("a", "10.65.0.0/16", true, true)],
            &FelixSettings::default(),
        );
        assert_eq!(on, off);
    }

    #[test]
    fn felix_address_and_port_range_pass_through() {
        let felix = FelixSettings {
            nat_outgoing_address: Some("192.168.33.99".parse().unwrap()),
            nat_port_range: Some((40000, 40099)),
            ..Default::default()
        };
        let nat = desired(&[pool("a", "10.65.0.0/16", true, false)], &felix);
        assert_eq!(nat.to_address, felix.nat_outgoing_address);
        assert_eq!(nat.ports, Some((40000, 40099)));
    }

    #[test]
    fn an_unparsable_cidr_is_left_out() {
        let nat = desired(
            &[pool("a", "not-a-cidr", true, false)],
            &FelixSettings::default(),
        );
        assert!(nat.all_pools.is_empty() && nat.masq_pools.is_empty());
    }
}
