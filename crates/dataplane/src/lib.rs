//! Kernel state: links, addresses, routes, sysctls (rtnetlink) and nftables.
//!
//! Everything goes through a [`Netlink`] connection bound to one network namespace
//! ([`Netlink::connect`] for the caller's, [`Netlink::connect_in`] for another one). Operations
//! are idempotent where the kernel allows it: adds replace, deleting what is gone returns
//! `Ok(false)`. Errors name the interface, address or route and the operation.
//!
//! - [`link`]: veth pairs across namespaces (`cali…` here, `cali0` there), up/down, MAC, MTU.
//! - [`addr`]: /32 and /128 addresses.
//! - [`route`]: device, gateway and blackhole routes, IPv4 and IPv6, tagged with a protocol.
//! - [`route_batch`]: many route changes per `sendmsg`, each acknowledged (bulk installs).
//! - [`sysctl`]: /proc/sys settings per namespace, Calico's host-veth set.
//! - [`netns`]: run a closure inside a namespace, on this thread ([`netns::visit`]) or on a
//!   thread of its own, or netlink work on its own runtime there.
//! - [`mtu`]: the workload MTU as Calico decides it (host interfaces, encapsulation) and the
//!   file calico-node writes it to for the CNI plugin and the Docker driver.
//! - [`vxlan`]: VXLAN devices (`vxlan.calico`), their FDB and neighbour entries per remote VTEP.
//! - [`workload`]: Calico's workload recipe (veth, MAC, sysctls, host and workload routes,
//!   169.254.1.1), one for the CNI plugin and the Docker driver.
//!
//! nftables is not here yet.

pub mod addr;
pub mod conn;
pub mod link;
pub mod mtu;
pub mod netlink_socket;
pub mod netns;
pub mod route;
pub mod route_batch;
pub mod sysctl;
pub mod vxlan;
pub mod workload;

pub use addr::AddrError;
pub use conn::{ConnectError, Netlink};
pub use link::{CALICO_HOST_MAC, Link, LinkError, VethPair, VethSpec};
pub use mtu::Encapsulation;
pub use netns::NetnsError;
pub use route::{
    Family, RT_TABLE_MAIN, RTPROT_BIRD, RTPROT_BOOT, RTPROT_STATIC, Route, RouteError, RouteFilter,
    RouteTarget,
};
pub use route_batch::{MAX_PER_SEND, RouteChange};
pub use sysctl::{Sysctl, SysctlError};
pub use workload::{GATEWAY_V4, WorkloadError, WorkloadVeth};
