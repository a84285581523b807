//! Calico's workload recipe, the one both orchestrator integrations use (the CNI plugin and
//! the Docker network driver):
//!
//! 1. [`WorkloadVeth::create`]: a veth pair in ONE netlink request, the host end `cali…` here
//!    (up, MAC ee:ee:ee:ee:ee:ee unless told otherwise), the peer born inside the workload's
//!    namespace under its final name and left down (the kernel cannot open it before the pair
//!    is linked; whoever configures it brings it up).
//! 2. [`WorkloadVeth::plumb_host`]: Calico's host-side sysctls ([`host_sysctls`]: proxy ARP
//!    without delay, so the host answers the workload's ARP for [`GATEWAY_V4`]; forwarding;
//!    proxy NDP) and a /32 (/128) route per address to the host end ([`host_route`]).
//! 3. The workload side, where Calico configures it (the CNI plugin; Docker's dockerd does its
//!    own from the driver's answer): [`enter_workload`] visits the namespace once on the
//!    calling thread ([`crate::netns::visit`]) for the sysctls and a netlink socket, then
//!    [`plumb_workload`] brings the peer up, routes [`GATEWAY_V4`] to it as a device route and
//!    the defaults through it (IPv6: through [`gateway_v6`], the host end's link-local), and adds
//!    the /32 (/128) addresses.
//!
//! On failure nothing here deletes what an earlier step made: the caller owns the undo
//! ([`WorkloadVeth::remove`] takes the peer, its addresses and the routes with the host end).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::link::{CALICO_HOST_MAC, LinkError, VethCreated, VethSpec};
use crate::route::{RTPROT_BOOT, Route, RouteError};
use crate::sysctl::{self, Sysctl, SysctlError};
use crate::{AddrError, ConnectError, Netlink, NetnsError};

/// The IPv4 next hop of every Calico workload: configured nowhere, answered by proxy ARP on
/// the host end of the veth.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The IPv6 next hop of every Calico workload: the host end's own link-local address, derived
/// from its MAC ee:ee:ee:ee:ee:ee (`fe80::ecee:eeff:feee:eeee`).
pub fn gateway_v6() -> Ipv6Addr {
    link_local_of_mac(CALICO_HOST_MAC)
}

/// The EUI-64 link-local address of a MAC.
pub fn link_local_of_mac(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// A failed step of the recipe; the message is the failed operation's.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// The veth of one workload.
#[derive(Debug, Clone)]
pub struct WorkloadVeth {
    /// The host end, `cali…`.
    pub host_if: String,
    /// The workload end's name inside `workload_netns` (CNI_IFNAME; Docker: the temporary name
    /// dockerd renames when it moves the end into the container).
    pub workload_if: String,
    /// Where the workload end is created: the pod's namespace, or for Docker this thread's
    /// (`/proc/thread-self/ns/net`), from where dockerd moves it.
    pub workload_netns: PathBuf,
    /// The host end's MAC: Calico's ee:ee:ee:ee:ee:ee; `None` keeps the kernel's random one
    /// (Docker, where dockerd gives the container end ee:ee:ee:ee:ee:ee instead, as Calico's
    /// libnetwork plugin does).
    pub host_mac: Option<[u8; 6]>,
    /// MTU of both ends; `None`: the kernel's default.
    pub mtu: Option<u32>,
}

impl WorkloadVeth {
    /// Calico's veth: host end MAC ee:ee:ee:ee:ee:ee, default MTU.
    pub fn new(host_if: &str, workload_if: &str, workload_netns: impl Into<PathBuf>) -> Self {
        WorkloadVeth {
            host_if: host_if.to_owned(),
            workload_if: workload_if.to_owned(),
            workload_netns: workload_netns.into(),
            host_mac: Some(CALICO_HOST_MAC),
            mtu: None,
        }
    }

    /// Step 1: the pair in one request (see the module doc). Replace semantics for the host
    /// end; an existing workload end is [`LinkError::PeerExists`].
    pub async fn create(&self, nl: &Netlink) -> Result<VethCreated, WorkloadError> {
        Ok(nl
            .create_veth_direct(&VethSpec {
                host_mac: self.host_mac,
                mtu: self.mtu,
                ..VethSpec::new(&self.host_if, &self.workload_if, &self.workload_netns)
            })
            .await?)
    }

    /// Step 2: the host-side sysctls and a host route per address, through `nl` (a connection
    /// in the host end's namespace, which is also the calling thread's for the sysctls).
    pub async fn plumb_host(&self, nl: &Netlink, addrs: &[IpAddr]) -> Result<(), WorkloadError> {
        sysctl::apply(None, &host_sysctls(&self.host_if, addrs))?;
        for a in addrs {
            nl.replace_route(&host_route(*a, &self.host_if)).await?;
        }
        Ok(())
    }

    /// Deletes the host end, which takes the workload end, its addresses and the host routes
    /// with it. Deleting what is gone is fine (`Ok(false)`).
    pub async fn remove(nl: &Netlink, host_if: &str) -> Result<bool, WorkloadError> {
        Ok(nl.delete_link(host_if).await?)
    }
}

/// Calico's sysctls for the host end: the IPv4 set unless the workload is IPv6-only, the IPv6
/// set when it has an IPv6 address.
pub fn host_sysctls(host_if: &str, addrs: &[IpAddr]) -> Vec<Sysctl> {
    let v4 = addrs.iter().any(IpAddr::is_ipv4);
    let v6 = addrs.iter().any(IpAddr::is_ipv6);
    sysctl::calico_host_veth(host_if, v4 || !v6, v6)
}

/// The host route to a workload address: /32 or /128 via the host end, `proto boot` (what
/// Felix uses for workload routes, and why `ip route` shows no `proto` for them).
pub fn host_route(addr: IpAddr, host_if: &str) -> Route {
    Route::device(IpNet::from(addr), host_if, RTPROT_BOOT)
}

/// The sysctls inside the workload: with an IPv6 address, IPv6 on (a pod may start with it
/// off; the gateway route needs it) and no DAD on `ifname` (it only delays); forwarding when
/// the network configuration allows the workload to forward.
pub fn workload_sysctls(ifname: &str, addrs: &[IpAddr], allow_ip_forwarding: bool) -> Vec<Sysctl> {
    let v6 = addrs.iter().any(IpAddr::is_ipv6);
    let mut settings = Vec::new();
    if v6 {
        settings.push(Sysctl::dotted("net.ipv6.conf.all.disable_ipv6", "0"));
        settings.push(Sysctl::dotted("net.ipv6.conf.default.disable_ipv6", "0"));
        settings.push(Sysctl::dotted("net.ipv6.conf.lo.disable_ipv6", "0"));
        settings.push(Sysctl::ipv6_conf(ifname, "accept_dad", "0"));
    }
    if allow_ip_forwarding {
        settings.push(Sysctl::ipv4_forwarding(true));
        if v6 {
            settings.push(Sysctl::ipv6_forwarding(true));
        }
    }
    settings
}

/// Visits the workload's namespace once, on the calling thread: applies `settings` and opens
/// the netlink socket [`plumb_workload`] then works through (a socket belongs to the namespace
/// it was created in, for good). Must be called from inside a tokio runtime.
// WorkloadError is as large as its largest cause (rtnetlink's error); it is built once per
// failed ADD, never on the success path, so boxing would buy nothing measurable.
#[allow(clippy::result_large_err)]
pub fn enter_workload(netns: &Path, settings: &[Sysctl]) -> Result<Netlink, WorkloadError> {
    #[allow(clippy::result_large_err)]
    let work = || -> Result<Netlink, WorkloadError> {
        sysctl::apply(None, settings)?;
        Ok(Netlink::connect()?)
    };
    crate::netns::visit(netns, work)?
}

/// A default route the workload got: destination and next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute {
    pub dst: IpNet,
    pub via: IpAddr,
}

/// Step 3, through `nl` (opened by [`enter_workload`]): the workload end up; for IPv4 a device
/// route to [`GATEWAY_V4`] and the default through it, for IPv6 the default through
/// [`gateway_v6`]; then the /32 (/128) addresses. Returns the default routes made.
pub async fn plumb_workload(
    nl: &Netlink,
    ifname: &str,
    addrs: &[IpAddr],
) -> Result<Vec<DefaultRoute>, WorkloadError> {
    nl.set_link_up(ifname, true).await?;
    let mut routes = Vec::new();
    if addrs.iter().any(IpAddr::is_ipv4) {
        let gw = IpAddr::V4(GATEWAY_V4);
        nl.replace_route(&Route::device(IpNet::from(gw), ifname, RTPROT_BOOT))
            .await?;
        let dst = IpNet::V4(Default::default());
        nl.replace_route(&Route::gateway(dst, gw, Some(ifname), RTPROT_BOOT))
            .await?;
        routes.push(DefaultRoute { dst, via: gw });
    }
    if addrs.iter().any(IpAddr::is_ipv6) {
        let gw = IpAddr::V6(gateway_v6());
        let dst = IpNet::V6(Default::default());
        nl.replace_route(&Route::gateway(dst, gw, Some(ifname), RTPROT_BOOT))
            .await?;
        routes.push(DefaultRoute { dst, via: gw });
    }
    for a in addrs {
        nl.add_address(ifname, IpNet::from(*a)).await?;
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv6_gateway_is_the_host_ends_link_local() {
        assert_eq!(
            gateway_v6(),
            "fe80::ecee:eeff:feee:eeee".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn default_networks_are_the_whole_families() {
        assert_eq!(IpNet::V4(Default::default()).to_string(), "0.0.0.0/0");
        assert_eq!(IpNet::V6(Default::default()).to_string(), "::/0");
    }

    #[test]
    fn host_routes_are_host_prefixes_with_boot_protocol() {
        let r = host_route("192.168.0.5".parse().unwrap(), "caliabc");
        assert_eq!(r.dst.to_string(), "192.168.0.5/32");
        assert_eq!(r.protocol, RTPROT_BOOT);
        assert_eq!(
            host_route("fd00::5".parse().unwrap(), "caliabc")
                .dst
                .to_string(),
            "fd00::5/128"
        );
    }

    #[test]
    fn host_sysctls_follow_the_families() {
        let keys = |addrs: &[&str]| -> Vec<String> {
            let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
            host_sysctls("cali1", &addrs)
                .iter()
                .map(Sysctl::display_key)
                .collect()
        };
        let v4 = keys(&["10.0.0.1"]);
        assert!(
            v4.contains(&"net.ipv4.conf.cali1.proxy_arp".to_owned()),
            "{v4:?}"
        );
        assert!(!v4.iter().any(|k| k.starts_with("net.ipv6")), "{v4:?}");
        let v6 = keys(&["fd00::1"]);
        assert!(
            v6.contains(&"net.ipv6.conf.cali1.proxy_ndp".to_owned()),
            "{v6:?}"
        );
        assert!(!v6.iter().any(|k| k.starts_with("net.ipv4")), "{v6:?}");
        // No address yet (Docker before IPAM answers): the IPv4 set.
        assert!(keys(&[]).contains(&"net.ipv4.conf.cali1.proxy_arp".to_owned()));
    }
}
