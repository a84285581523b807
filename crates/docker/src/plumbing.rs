//! The host side of an endpoint: the veth pair, Calico's per-interface sysctls and the /32
//! (/128) route to the container.
//!
//! [`DataplanePlumber`] is the production implementation, on `calico-dataplane` (rtnetlink and
//! /proc/sys). [`IpCommandPlumber`] drives iproute2's `ip` (argument vectors, never a shell); it
//! came first, before the dataplane crate existed, and stays as a second implementation for
//! comparison in tests. Both act on the network namespace of the calling thread (the process's,
//! for the node agent), which is why the driver server must run inside the node's namespace.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum PlumbingError {
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("could not run `ip`: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("netlink: {0}")]
    Connect(#[from] calico_dataplane::ConnectError),
    #[error(transparent)]
    Link(#[from] calico_dataplane::LinkError),
    #[error(transparent)]
    Route(#[from] calico_dataplane::RouteError),
    #[error(transparent)]
    Sysctls(#[from] calico_dataplane::SysctlError),
    #[error("sysctl {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Calico's sysctls for a workload interface on the host side: proxy ARP answers the
/// container's ARP for 169.254.1.1 with the host's MAC, without delay; forwarding on; for IPv6
/// no router advertisements accepted and NDP proxied.
pub fn host_sysctls(ifname: &str) -> Vec<(String, &'static str)> {
    vec![
        (format!("net/ipv4/conf/{ifname}/proxy_arp"), "1"),
        (format!("net/ipv4/neigh/{ifname}/proxy_delay"), "0"),
        (format!("net/ipv4/conf/{ifname}/forwarding"), "1"),
        (format!("net/ipv4/conf/{ifname}/route_localnet"), "1"),
        (format!("net/ipv6/conf/{ifname}/accept_ra"), "0"),
        (format!("net/ipv6/conf/{ifname}/proxy_ndp"), "1"),
        (format!("net/ipv6/conf/{ifname}/forwarding"), "1"),
    ]
}

/// The route to a container address: host route (/32 or /128), scope link, protocol `boot`
/// (what Felix uses for workload routes, and why the seed's `ip r` shows no `proto`).
pub fn route_args(addr: IpAddr, host_if: &str) -> Vec<String> {
    let prefix = IpNet::from(addr);
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    [
        family,
        "route",
        "replace",
        &prefix.to_string(),
        "dev",
        host_if,
        "scope",
        "link",
        "proto",
        "boot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub trait EndpointPlumber: Send + Sync + 'static {
    /// Creates the veth pair, applies the host-side sysctls, brings the host side up and routes
    /// `addresses` to it. On error nothing of it is left behind.
    fn create(
        &self,
        host_if: &str,
        temp_if: &str,
        addresses: &[IpAddr],
    ) -> impl Future<Output = Result<(), PlumbingError>> + Send;
    /// Removes the host side (the kernel removes the peer and the routes with it). Removing a
    /// missing interface is not an error.
    fn remove(&self, host_if: &str) -> impl Future<Output = Result<(), PlumbingError>> + Send;
}

#[derive(Debug, Clone, Default)]
pub struct IpCommandPlumber;

async fn ip(args: &[String]) -> Result<(), PlumbingError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(PlumbingError::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    Err(PlumbingError::Ip {
        args: args.join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn write_sysctl(rel: &str, value: &str) -> Result<(), PlumbingError> {
    let path = Path::new("/proc/sys").join(rel);
    // IPv6 may be disabled in the namespace: its tree is then absent and there is nothing to set.
    if rel.starts_with("net/ipv6/") && !path.exists() {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|source| PlumbingError::Sysctl {
        path: path.display().to_string(),
        source,
    })
}

impl IpCommandPlumber {
    async fn configure(&self, host_if: &str, addresses: &[IpAddr]) -> Result<(), PlumbingError> {
        for (rel, value) in host_sysctls(host_if) {
            write_sysctl(&rel, value)?;
        }
        ip(&strings(&["link", "set", host_if, "up"])).await?;
        for addr in addresses {
            ip(&route_args(*addr, host_if)).await?;
        }
        Ok(())
    }
}

impl EndpointPlumber for IpCommandPlumber {
    async fn create(
        &self,
        host_if: &str,
        temp_if: &str,
        addresses: &[IpAddr],
    ) -> Result<(), PlumbingError> {
        ip(&strings(&[
            "link", "add", host_if, "type", "veth", "peer", "name", temp_if,
        ]))
        .await?;
        if let Err(e) = self.configure(host_if, addresses).await {
            if let Err(cleanup) = self.remove(host_if).await {
                tracing::error!(interface = host_if, error = %cleanup, "cleanup after failed endpoint setup failed");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn remove(&self, host_if: &str) -> Result<(), PlumbingError> {
        match ip(&strings(&["link", "del", host_if])).await {
            Err(PlumbingError::Ip { stderr, .. }) if stderr.contains("Cannot find device") => {
                Ok(())
            }
            other => other,
        }
    }
}

/// The endpoint plumbing on `calico-dataplane`. The netlink connection is opened on first use,
/// on the runtime and in the namespace of that first call.
#[derive(Debug, Default)]
pub struct DataplanePlumber {
    nl: tokio::sync::OnceCell<calico_dataplane::Netlink>,
}

/// The namespace of the calling thread, for a veth whose peer stays here until dockerd moves it.
const HERE: &str = "/proc/thread-self/ns/net";

impl DataplanePlumber {
    pub fn new() -> Self {
        Self::default()
    }

    async fn nl(&self) -> Result<&calico_dataplane::Netlink, PlumbingError> {
        Ok(self
            .nl
            .get_or_try_init(|| async { calico_dataplane::Netlink::connect() })
            .await?)
    }

    async fn configure(
        &self,
        nl: &calico_dataplane::Netlink,
        host_if: &str,
        addresses: &[IpAddr],
    ) -> Result<(), PlumbingError> {
        let v4 = addresses.iter().any(|a| a.is_ipv4());
        let v6 = addresses.iter().any(|a| a.is_ipv6());
        calico_dataplane::sysctl::apply(
            None,
            &calico_dataplane::sysctl::calico_host_veth(host_if, v4 || !v6, v6),
        )?;
        for addr in addresses {
            let route = calico_dataplane::Route::device(
                IpNet::from(*addr),
                host_if,
                calico_dataplane::route::RTPROT_BOOT,
            );
            nl.replace_route(&route).await?;
        }
        Ok(())
    }
}

impl EndpointPlumber for DataplanePlumber {
    async fn create(
        &self,
        host_if: &str,
        temp_if: &str,
        addresses: &[IpAddr],
    ) -> Result<(), PlumbingError> {
        let nl = self.nl().await?;
        let spec = calico_dataplane::VethSpec::new(host_if, temp_if, HERE);
        nl.create_veth(&spec).await?;
        if let Err(e) = self.configure(nl, host_if, addresses).await {
            if let Err(cleanup) = nl.delete_link(host_if).await {
                tracing::error!(interface = host_if, error = %cleanup, "cleanup after failed endpoint setup failed");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn remove(&self, host_if: &str) -> Result<(), PlumbingError> {
        self.nl().await?.delete_link(host_if).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_host_routes_with_boot_protocol() {
        let a = route_args("192.168.0.5".parse().unwrap(), "caliabc");
        assert_eq!(
            a.join(" "),
            "-4 route replace 192.168.0.5/32 dev caliabc scope link proto boot"
        );
        let a = route_args("fd00::5".parse().unwrap(), "caliabc");
        assert_eq!(a[3], "fd00::5/128");
    }

    #[test]
    fn sysctls_include_proxy_arp_for_the_interface() {
        let s = host_sysctls("cali1");
        assert!(s.contains(&("net/ipv4/conf/cali1/proxy_arp".to_string(), "1")));
        assert!(s.contains(&("net/ipv4/neigh/cali1/proxy_delay".to_string(), "0")));
    }
}
