//! Node address autodetection, as Calico's `IP_AUTODETECTION_METHOD` defines it.
//!
//! `choose` is pure: it picks from an interface list. `local_interfaces` reads that list from
//! the kernel (getifaddrs), and `can_reach_source` asks the kernel's routing table which source
//! address it would use, by connecting a UDP socket (which sends nothing).

use std::net::{IpAddr, SocketAddr, UdpSocket};

use calico_api::names;
use ipnet::IpNet;
use regex::Regex;

use crate::config::AutodetectMethod;

/// Interfaces first-found never picks (Calico's default exclude list), besides the workload
/// interfaces ([`calico_api::names::WORKLOAD_IFACE_PREFIX`], see [`excluded`]).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "docker.*",
    "cbr.*",
    "dummy.*",
    "virbr.*",
    "lxcbr.*",
    "veth.*",
    "lo",
    "tunl.*",
    "flannel.*",
    "kube-ipvs.*",
    "cni.*",
    "vxlan.calico.*",
    "vxlan-v6.calico.*",
    "wireguard.cali",
    "wg-v6.cali",
    "nodelocaldns.*",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// Addresses with their on-link prefix length, in the kernel's order.
    pub addrs: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error)]
pub enum AutodetectError {
    #[error("no valid IPv{family} address found on any interface (method {method})")]
    NotFound { family: u8, method: String },
    #[error("can-reach={dest}: cannot resolve or route to the destination")]
    CannotReach {
        dest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading interface addresses")]
    Interfaces(#[source] std::io::Error),
}

/// [`DEFAULT_EXCLUDES`] and the workload interfaces (`cali.*`), as whole-name regexes.
fn excluded() -> Vec<Regex> {
    let workloads = format!("{}.*", regex::escape(names::WORKLOAD_IFACE_PREFIX));
    let mut all = anchored(DEFAULT_EXCLUDES);
    all.extend(anchored(&[workloads]));
    all
}

fn anchored(patterns: &[impl AsRef<str>]) -> Vec<Regex> {
    // Calico matches interface regexes against the whole name.
    patterns
        .iter()
        .filter_map(|p| Regex::new(&format!("^(?:{})$", p.as_ref())).ok())
        .collect()
}

fn usable(addr: &IpNet, want_v6: bool) -> bool {
    match addr.addr() {
        IpAddr::V4(a) => !want_v6 && !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        IpAddr::V6(a) => {
            want_v6
                && !a.is_loopback()
                && !a.is_unspecified()
                && (a.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// Picks this node's address for one family from `interfaces` by `method`.
/// `can_reach` supplies the kernel's source address towards a destination (only used by
/// `CanReach`), so the decision itself stays pure.
pub fn choose(
    interfaces: &[Interface],
    method: &AutodetectMethod,
    want_v6: bool,
    can_reach: impl Fn(&str) -> Result<IpAddr, AutodetectError>,
) -> Result<IpNet, AutodetectError> {
    let family = if want_v6 { 6 } else { 4 };
    let first_on = |include: &dyn Fn(&str) -> bool, filter: &dyn Fn(&IpNet) -> bool| {
        interfaces
            .iter()
            .filter(|i| include(&i.name))
            .flat_map(|i| i.addrs.iter())
            .find(|a| usable(a, want_v6) && filter(a))
            .copied()
    };
    let excludes = excluded();
    let not_excluded = |name: &str| !excludes.iter().any(|r| r.is_match(name));
    let found = match method {
        AutodetectMethod::FirstFound => first_on(&not_excluded, &|_| true),
        AutodetectMethod::Interface(patterns) => {
            let inc = anchored(patterns);
            first_on(&|n| inc.iter().any(|r| r.is_match(n)), &|_| true)
        }
        AutodetectMethod::SkipInterface(patterns) => {
            let skip = anchored(patterns);
            first_on(
                &|n| not_excluded(n) && !skip.iter().any(|r| r.is_match(n)),
                &|_| true,
            )
        }
        AutodetectMethod::Cidr(nets) => {
            first_on(&|_| true, &|a| nets.iter().any(|n| n.contains(&a.addr())))
        }
        AutodetectMethod::CanReach(dest) => {
            let src = can_reach(dest)?;
            // Report the address with the prefix it has on its interface.
            first_on(&|_| true, &|a| a.addr() == src)
        }
    };
    found.ok_or_else(|| AutodetectError::NotFound {
        family,
        method: format!("{method:?}"),
    })
}

/// Lists this network namespace's interfaces and their addresses.
pub fn local_interfaces() -> Result<Vec<Interface>, AutodetectError> {
    let mut out: Vec<Interface> = Vec::new();
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| AutodetectError::Interfaces(std::io::Error::from(e)))?;
    for ifa in addrs {
        let net = match (ifa.address, ifa.netmask) {
            (Some(addr), Some(mask)) => to_net(&addr, &mask),
            _ => None,
        };
        let idx = match out.iter().position(|i| i.name == ifa.interface_name) {
            Some(i) => i,
            None => {
                out.push(Interface {
                    name: ifa.interface_name.clone(),
                    addrs: vec![],
                });
                out.len() - 1
            }
        };
        if let Some(net) = net {
            out[idx].addrs.push(net);
        }
    }
    Ok(out)
}

fn to_net(
    addr: &nix::sys::socket::SockaddrStorage,
    mask: &nix::sys::socket::SockaddrStorage,
) -> Option<IpNet> {
    if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
        let prefix = u32::from(m.ip()).count_ones() as u8;
        return IpNet::new(IpAddr::V4(a.ip()), prefix).ok();
    }
    if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
        let prefix = u128::from(m.ip()).count_ones() as u8;
        return IpNet::new(IpAddr::V6(a.ip()), prefix).ok();
    }
    None
}

/// The source address the kernel would use towards `dest` (an address or a host name).
/// Connecting a UDP socket selects a route and a source address without sending a packet.
pub fn can_reach_source(dest: &str) -> Result<IpAddr, AutodetectError> {
    let err = |source| AutodetectError::CannotReach {
        dest: dest.to_string(),
        source,
    };
    let target: SocketAddr = match dest.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 9),
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(dest, 9))
            .map_err(err)?
            .next()
            .ok_or_else(|| err(std::io::Error::other("no address")))?,
    };
    let bind: SocketAddr = if target.is_ipv6() {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).map_err(err)?;
    sock.connect(target).map_err(err)?;
    Ok(sock.local_addr().map_err(err)?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn lab() -> Vec<Interface> {
        vec![
            iface("lo", &["127.0.0.1/8", "::1/128"]),
            iface("docker0", &["172.17.0.1/16"]),
            iface("cali1234567890a", &["169.254.1.1/32"]),
            iface("eth0", &["169.254.7.7/16", "fe80::1/64"]),
            iface(
                "eth1",
                &["192.168.33.11/24", "fd00:33::11/64", "fe80::2/64"],
            ),
            iface("eth2", &["10.0.2.15/24"]),
        ]
    }

    fn no_route(_: &str) -> Result<IpAddr, AutodetectError> {
        panic!("not used")
    }

    #[test]
    fn first_found_skips_excluded_and_link_local() {
        let got = choose(&lab(), &AutodetectMethod::FirstFound, false, no_route).unwrap();
        assert_eq!(got, "192.168.33.11/24".parse::<IpNet>().unwrap());
        let got6 = choose(&lab(), &AutodetectMethod::FirstFound, true, no_route).unwrap();
        assert_eq!(got6, "fd00:33::11/64".parse::<IpNet>().unwrap());
    }

    #[test]
    fn interface_regex_is_anchored() {
        let m = AutodetectMethod::Interface(vec!["eth2".into()]);
        assert_eq!(
            choose(&lab(), &m, false, no_route).unwrap(),
            "10.0.2.15/24".parse::<IpNet>().unwrap()
        );
        // "eth" alone matches no whole interface name.
        let m = AutodetectMethod::Interface(vec!["eth".into()]);
        assert!(choose(&lab(), &m, false, no_route).is_err());
    }

    #[test]
    fn skip_interface_and_cidr() {
        let m = AutodetectMethod::SkipInterface(vec!["eth1".into()]);
        assert_eq!(
            choose(&lab(), &m, false, no_route).unwrap(),
            "10.0.2.15/24".parse::<IpNet>().unwrap()
        );
        let m = AutodetectMethod::Cidr(vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            choose(&lab(), &m, false, no_route).unwrap(),
            "10.0.2.15/24".parse::<IpNet>().unwrap()
        );
    }

    #[test]
    fn can_reach_reports_the_interface_prefix() {
        let m = AutodetectMethod::CanReach("192.168.33.12".into());
        let got = choose(&lab(), &m, false, |_| Ok("192.168.33.11".parse().unwrap())).unwrap();
        assert_eq!(got, "192.168.33.11/24".parse::<IpNet>().unwrap());
    }

    #[test]
    fn nothing_usable_is_a_clear_error() {
        let only_lo = vec![iface("lo", &["127.0.0.1/8"])];
        let err = choose(&only_lo, &AutodetectMethod::FirstFound, false, no_route).unwrap_err();
        assert!(err.to_string().contains("no valid IPv4 address"), "{err}");
    }

    #[test]
    fn loopback_interfaces_are_listed() {
        // The test's own namespace always has lo with 127.0.0.1.
        let ifs = local_interfaces().unwrap();
        let lo = ifs.iter().find(|i| i.name == "lo").expect("lo is listed");
        assert!(
            lo.addrs
                .iter()
                .any(|a| a.addr() == IpAddr::from([127, 0, 0, 1]))
        );
    }

    #[test]
    fn can_reach_loopback_uses_loopback_source() {
        assert_eq!(
            can_reach_source("127.0.0.1").unwrap(),
            IpAddr::from([127, 0, 0, 1])
        );
    }
}
