//! The MTU of workload interfaces, as Calico decides it, and the file that carries it from
//! calico-node to the CNI plugin and the Docker driver.
//!
//! Calico (Felix's `findHostMTU` and `determinePodMTU`):
//! - the host MTU is the smallest MTU among the interfaces that are up and whose name matches
//!   FelixConfiguration `mtuIfacePattern` ([`DEFAULT_IFACE_PATTERN`]); when none matches,
//!   1460 ([`FALLBACK_HOST_MTU`], the smallest of the common clouds);
//! - each encapsulation in use has its MTU: the host MTU minus its overhead (IPIP 20, VXLAN
//!   50, VXLAN over IPv6 70), unless FelixConfiguration sets it (`ipipMTU`, `vxlanMTU`,
//!   `vxlanMTUV6`); the pod MTU is the smallest of those of the encapsulations in use, or the
//!   host MTU when there is none;
//! - calico-node writes it to `/var/lib/calico/mtu` ([`MTU_FILE`]); the CNI plugin reads that
//!   file when its netconf has no `mtu` (or 0), so does the Docker driver. An explicit MTU
//!   (the netconf's `mtu`, the chart's `veth_mtu`) always wins.

use std::path::Path;

/// Where calico-node writes the pod MTU (`<CALICO_STATE_DIR>/mtu`, as Calico).
pub const MTU_FILE: &str = "/var/lib/calico/mtu";
/// Felix's default `mtuIfacePattern`.
pub const DEFAULT_IFACE_PATTERN: &str = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)";
/// Host MTU when no interface matches the pattern (Felix's choice).
pub const FALLBACK_HOST_MTU: u32 = 1460;
/// Bytes IP-in-IP adds (an IPv4 header).
pub const IPIP_OVERHEAD: u32 = 20;
/// Bytes VXLAN over IPv4 adds (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Bytes VXLAN over IPv6 adds (IPv6's header is 20 bytes longer).
pub const VXLAN_V6_OVERHEAD: u32 = 70;

/// The encapsulations in use on this cluster, derived from the IP pools (a pool whose
/// `ipipMode`/`vxlanMode` is not `Never`), as Felix derives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encapsulation {
    /// An IPv4 pool uses IP-in-IP.
    pub ipip: bool,
    /// An IPv4 pool uses VXLAN.
    pub vxlan: bool,
    /// An IPv6 pool uses VXLAN.
    pub vxlan_v6: bool,
}

/// MTUs set explicitly in FelixConfiguration for one encapsulation (`None`: derived from the
/// host MTU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncapMtus {
    /// `ipipMTU`.
    pub ipip: Option<u32>,
    /// `vxlanMTU`.
    pub vxlan: Option<u32>,
    /// `vxlanMTUV6`.
    pub vxlan_v6: Option<u32>,
}

/// One host interface, as MTU detection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIface {
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Operationally up (Felix skips interfaces that are down).
    pub up: bool,
}

/// The host MTU: the smallest MTU of the up interfaces whose name `matches`; `None` when no
/// interface qualifies (Felix then uses [`FALLBACK_HOST_MTU`]).
pub fn host_mtu(ifaces: &[HostIface], matches: impl Fn(&str) -> bool) -> Option<u32> {
    ifaces
        .iter()
        .filter(|i| i.up && i.mtu > 0 && matches(&i.name))
        .map(|i| i.mtu)
        .min()
}

/// The MTU of workload interfaces for a host MTU (see the module doc).
pub fn pod_mtu(host_mtu: u32, encap: Encapsulation, explicit: EncapMtus) -> u32 {
    [
        (encap.ipip, explicit.ipip, IPIP_OVERHEAD),
        (encap.vxlan, explicit.vxlan, VXLAN_OVERHEAD),
        (encap.vxlan_v6, explicit.vxlan_v6, VXLAN_V6_OVERHEAD),
    ]
    .into_iter()
    .filter(|(used, _, _)| *used)
    .map(|(_, set, overhead)| set.unwrap_or(host_mtu.saturating_sub(overhead)))
    .min()
    .unwrap_or(host_mtu)
}

/// Why the MTU file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MtuFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold an MTU.
    #[error("{path}: {content:?} is not an MTU (68..65535)")]
    Invalid {
        /// The file.
        path: String,
        /// What it holds.
        content: String,
    },
}

/// The MTU in `path`: `Ok(None)` when the file does not exist (calico-node has not written
/// it: the kernel's default applies, as with Calico's CNI plugin).
pub fn read_mtu_file(path: &Path) -> Result<Option<u32>, MtuFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MtuFileError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    match text.trim().parse::<u32>() {
        Ok(m) if (68..=65535).contains(&m) => Ok(Some(m)),
        _ => Err(MtuFileError::Invalid {
            path: path.display().to_string(),
            content: text,
        }),
    }
}

/// Writes `mtu` to `path` (directory created), atomically (a reader sees the old or the new
/// value, never a partial one).
pub fn write_mtu_file(path: &Path, mtu: u32) -> Result<(), MtuFileError> {
    let io = |source| MtuFileError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, mtu.to_string()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn iface(name: &str, mtu: u32, up: bool) -> HostIface {
        HostIface {
            name: name.into(),
            mtu,
            up,
        }
    }

    fn eth(name: &str) -> bool {
        name.starts_with("eth") || name.starts_with("en")
    }

    #[test]
    fn smallest_matching_up_interface_wins() {
        let ifaces = [
            iface("lo", 65536, true),
            iface("eth0", 1500, true),
            iface("eth1", 1400, true),
            iface("eth2", 1200, false),
            iface("cali123", 1000, true),
        ];
        assert_eq!(host_mtu(&ifaces, eth), Some(1400));
        assert_eq!(host_mtu(&[iface("lo", 65536, true)], eth), None);
    }

    #[test]
    fn overheads_are_calicos() {
        let none = Encapsulation::default();
        let unset = EncapMtus::default();
        assert_eq!(pod_mtu(1500, none, unset), 1500);
        let ipip = Encapsulation { ipip: true, ..none };
        assert_eq!(pod_mtu(1500, ipip, unset), 1480);
        let vxlan = Encapsulation {
            vxlan: true,
            ..none
        };
        assert_eq!(pod_mtu(1500, vxlan, unset), 1450);
        let v6 = Encapsulation {
            vxlan_v6: true,
            ..none
        };
        assert_eq!(pod_mtu(1500, v6, unset), 1430);
        let all = Encapsulation {
            ipip: true,
            vxlan: true,
            vxlan_v6: true,
        };
        assert_eq!(
            pod_mtu(1400, all, unset),
            1330,
            "the largest overhead in use"
        );
    }

    #[test]
    fn an_explicit_encapsulation_mtu_replaces_the_derived_one_only_when_in_use() {
        let vxlan = Encapsulation {
            vxlan: true,
            ..Default::default()
        };
        let set = EncapMtus {
            vxlan: Some(1300),
            ipip: Some(1000),
            ..Default::default()
        };
        assert_eq!(pod_mtu(1500, vxlan, set), 1300);
        assert_eq!(pod_mtu(1500, Encapsulation::default(), set), 1500);
    }

    #[test]
    fn the_file_round_trips_and_a_missing_file_is_no_mtu() {
        let dir = std::env::temp_dir().join(format!("calico-mtu-{}", std::process::id()));
        let path = dir.join("sub").join("mtu");
        assert_eq!(read_mtu_file(&path).unwrap(), None);
        write_mtu_file(&path, 1380).unwrap();
        assert_eq!(read_mtu_file(&path).unwrap(), Some(1380));
        std::fs::write(&path, "big").unwrap();
        let e = read_mtu_file(&path).unwrap_err().to_string();
        assert!(e.contains("not an MTU"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #[test]
        fn pod_mtu_never_exceeds_the_host_mtu_without_an_explicit_value(
            host in 576u32..9216,
            ipip: bool, vxlan: bool, vxlan_v6: bool,
        ) {
            let encap = Encapsulation { ipip, vxlan, vxlan_v6 };
            let m = pod_mtu(host, encap, EncapMtus::default());
            prop_assert!(m <= host);
            let overhead = [(ipip, 20), (vxlan, 50), (vxlan_v6, 70)]
                .iter().filter(|(u, _)| *u).map(|(_, o)| *o).max().unwrap_or(0);
            prop_assert_eq!(m, host - overhead);
        }

        #[test]
        fn host_mtu_is_a_matching_interfaces_mtu_and_no_larger_than_any(
            mtus in proptest::collection::vec((68u32..9216, any::<bool>(), any::<bool>()), 0..8),
        ) {
            let ifaces: Vec<HostIface> = mtus.iter().enumerate()
                .map(|(i, (m, up, is_eth))| iface(&format!("{}{i}", if *is_eth { "eth" } else { "veth" }), *m, *up))
                .collect();
            let got = host_mtu(&ifaces, eth);
            let candidates: Vec<u32> = ifaces.iter().filter(|i| i.up && eth(&i.name)).map(|i| i.mtu).collect();
            match got {
                None => prop_assert!(candidates.is_empty()),
                Some(m) => {
                    prop_assert!(candidates.contains(&m));
                    prop_assert!(candidates.iter().all(|c| *c >= m));
                }
            }
        }
    }
}
