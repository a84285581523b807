//! The pod MTU, detected at start-up as Calico does and written to `<CALICO_STATE_DIR>/mtu`
//! (`/var/lib/calico/mtu` by default) for the CNI plugin and the Docker driver (see
//! `calico_dataplane::mtu` for the rules). The encapsulations in use come from the IP pools
//! ([`encapsulation`]); the overlay code can use the same function.

use calico_api::IPPool;
use calico_dataplane::Netlink;
use calico_dataplane::mtu::{
    Encapsulation, FALLBACK_HOST_MTU, HostIface, host_mtu, pod_mtu, write_mtu_file,
};
use calico_datastore::{Datastore, KindRef};

use crate::config::NodeConfig;
use crate::felix_config::{self, FelixSettings};
use crate::tunnel::{Overlay, PoolOverlay};

/// Why the MTU could not be detected or written.
#[derive(Debug, thiserror::Error)]
pub enum MtuError {
    #[error("listing {what}: {detail}")]
    Read { what: &'static str, detail: String },
    #[error(transparent)]
    File(#[from] calico_dataplane::mtu::MtuFileError),
}

/// The encapsulations the pools use (Felix: IPIP when an IPv4 pool's `ipipMode` is not
/// `Never`, VXLAN per family when a pool's `vxlanMode` is not `Never`), as the overlay code
/// reads a pool's mode: [`PoolOverlay::from_pool`] is the one reader of that rule.
pub fn encapsulation(pools: &[IPPool]) -> Encapsulation {
    let mut e = Encapsulation::default();
    for o in pools.iter().filter_map(PoolOverlay::from_pool) {
        let v4 = o.cidr.addr().is_ipv4();
        match o.overlay {
            Overlay::Ipip(_) if v4 => e.ipip = true,
            Overlay::Vxlan(_) if v4 => e.vxlan = true,
            Overlay::Vxlan(_) => e.vxlan_v6 = true,
            Overlay::Ipip(_) | Overlay::None => {}
        }
    }
    e
}

/// The pod MTU from the host's interfaces, the pools and FelixConfiguration.
pub fn detect(ifaces: &[HostIface], pools: &[IPPool], felix: &FelixSettings) -> u32 {
    // Validated by felix_config: a pattern that does not compile never gets here.
    let pattern = regex::Regex::new(&felix.mtu_iface_pattern).ok();
    let host = host_mtu(ifaces, |n| pattern.as_ref().is_some_and(|p| p.is_match(n)))
        .unwrap_or_else(|| {
            tracing::warn!(
                pattern = %felix.mtu_iface_pattern,
                "no up interface matches mtuIfacePattern; host MTU {FALLBACK_HOST_MTU} assumed"
            );
            FALLBACK_HOST_MTU
        });
    pod_mtu(host, encapsulation(pools), felix.encap_mtus)
}

/// Detects the pod MTU and writes it to `<state_dir>/mtu`. Returns it.
pub async fn write(cfg: &NodeConfig, ds: &Datastore) -> Result<u32, MtuError> {
    let pools = ds
        .list::<IPPool>(None)
        .await
        .map_err(|e| MtuError::Read {
            what: "IPPools",
            detail: e.to_string(),
        })?
        .items;
    let docs = ds
        .dynamic()
        .list(&KindRef::of::<calico_api::FelixConfiguration>(), None)
        .await
        .map_err(|e| MtuError::Read {
            what: "FelixConfigurations",
            detail: e.to_string(),
        })?
        .items;
    let felix = felix_config::settings_for(
        &|k: &str| std::env::var(k).ok(),
        &docs,
        &cfg.node_name,
        felix_config::kernel_has_wireguard(),
    );
    let links = async {
        Netlink::connect()
            .map_err(|e| e.to_string())?
            .links()
            .await
            .map_err(|e| e.to_string())
    }
    .await
    .map_err(|detail| MtuError::Read {
        what: "host interfaces",
        detail,
    })?;
    let ifaces: Vec<HostIface> = links
        .into_iter()
        .map(|l| HostIface {
            mtu: l.mtu.unwrap_or(0),
            up: l.up && l.running,
            name: l.name,
        })
        .collect();
    let mtu = detect(&ifaces, &pools, &felix);
    let path = cfg.state_dir.join("mtu");
    write_mtu_file(&path, mtu)?;
    tracing::info!(mtu, file = %path.display(), encapsulation = ?encapsulation(&pools), "Determined pod MTU");
    Ok(mtu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_api::{IPIPMode, IPPoolSpec, VXLANMode};

    fn pool(cidr: &str, ipip: Option<IPIPMode>, vxlan: Option<VXLANMode>) -> IPPool {
        IPPool::new(
            "p",
            IPPoolSpec {
                cidr: cidr.into(),
                ipip_mode: ipip,
                vxlan_mode: vxlan,
                ..Default::default()
            },
        )
    }

    fn iface(name: &str, mtu: u32) -> HostIface {
        HostIface {
            name: name.into(),
            mtu,
            up: true,
        }
    }

    #[test]
    fn encapsulation_follows_the_pools_modes() {
        assert_eq!(
            encapsulation(&[pool("10.0.0.0/16", Some(IPIPMode::Never), None)]),
            Encapsulation::default()
        );
        let e = encapsulation(&[
            pool("10.0.0.0/16", Some(IPIPMode::CrossSubnet), None),
            pool("fd00::/64", None, Some(VXLANMode::Always)),
        ]);
        assert!(e.ipip && !e.vxlan && e.vxlan_v6);
        // IPIP is IPv4 only: an IPv6 pool asking for it adds no overhead.
        assert_eq!(
            encapsulation(&[pool("fd00::/64", Some(IPIPMode::Always), None)]),
            Encapsulation::default()
        );
    }

    #[test]
    fn detection_uses_felixs_default_pattern_and_the_pools_encapsulation() {
        let ifaces = [
            iface("lo", 65536),
            iface("eth1", 1400),
            iface("cali1234", 1500),
            iface("ens3", 9000),
        ];
        let felix = FelixSettings::default();
        assert_eq!(detect(&ifaces, &[], &felix), 1400);
        let vxlan = [pool("10.0.0.0/16", None, Some(VXLANMode::Always))];
        assert_eq!(detect(&ifaces, &vxlan, &felix), 1350);
        // Nothing matches: Felix's 1460.
        assert_eq!(detect(&[iface("lo", 65536)], &[], &felix), 1460);
        let custom = FelixSettings {
            mtu_iface_pattern: "^ens".into(),
            ..Default::default()
        };
        assert_eq!(detect(&ifaces, &[], &custom), 9000);
    }
}
