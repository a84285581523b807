//! Per-namespace sysctls, written under /proc/sys.
//!
//! `/proc/sys/net/...` shows the network namespace of the thread that opens the file, so a
//! write for another namespace happens on a thread that entered it ([`crate::netns::run_in`]).
//! Keys are given as path components, because interface names may contain dots
//! (`net.ipv4.conf.eth1.100.forwarding` would be ambiguous).
//!
//! ```no_run
//! use calico_dataplane::sysctl::{self, Sysctl};
//! let ns = std::path::Path::new("/run/netns/crs12345-node1");
//! sysctl::apply(Some(ns), &[Sysctl::ipv4_forwarding(true), Sysctl::ipv6_forwarding(true)])?;
//! sysctl::apply(Some(ns), &sysctl::calico_host_veth("calicce21fc3677", true, true))?;
//! # Ok::<(), sysctl::SysctlError>(())
//! ```

use std::path::{Path, PathBuf};

use crate::netns::{self, NetnsError};

/// Errors reading or writing sysctls.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl key component {component:?} is not valid")]
    BadKey { component: String },
    #[error("cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// One setting: a key (path components under /proc/sys) and a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub key: Vec<String>,
    pub value: String,
    /// Failure to apply it is logged, not returned (e.g. a tunable some kernels lack).
    pub optional: bool,
}

impl Sysctl {
    /// A setting from a dotted key without interface names (`net.ipv4.ip_forward`).
    pub fn dotted(key: &str, value: &str) -> Sysctl {
        Sysctl {
            key: key.split('.').map(str::to_owned).collect(),
            value: value.to_owned(),
            optional: false,
        }
    }

    /// A setting from explicit components (`["net","ipv4","conf",ifname,"proxy_arp"]`).
    pub fn path(components: &[&str], value: &str) -> Sysctl {
        Sysctl {
            key: components.iter().map(|c| (*c).to_owned()).collect(),
            value: value.to_owned(),
            optional: false,
        }
    }

    fn optional(mut self) -> Sysctl {
        self.optional = true;
        self
    }

    /// `net.ipv4.ip_forward`.
    pub fn ipv4_forwarding(on: bool) -> Sysctl {
        Sysctl::dotted("net.ipv4.ip_forward", bool01(on))
    }

    /// `net.ipv6.conf.all.forwarding`.
    pub fn ipv6_forwarding(on: bool) -> Sysctl {
        Sysctl::dotted("net.ipv6.conf.all.forwarding", bool01(on))
    }

    /// `net.ipv4.conf.<if>.<name>`.
    pub fn ipv4_conf(ifname: &str, name: &str, value: &str) -> Sysctl {
        Sysctl::path(&["net", "ipv4", "conf", ifname, name], value)
    }

    /// `net.ipv6.conf.<if>.<name>`.
    pub fn ipv6_conf(ifname: &str, name: &str, value: &str) -> Sysctl {
        Sysctl::path(&["net", "ipv6", "conf", ifname, name], value)
    }

    /// The file under /proc/sys; refuses components that would leave that tree.
    pub fn proc_path(&self) -> Result<PathBuf, SysctlError> {
        let mut p = PathBuf::from("/proc/sys");
        for c in &self.key {
            if c.is_empty() || c == "." || c == ".." || c.contains('/') {
                return Err(SysctlError::BadKey {
                    component: c.clone(),
                });
            }
            p.push(c);
        }
        Ok(p)
    }

    /// `net.ipv4.conf.eth1.forwarding = 1`, for messages.
    pub fn display_key(&self) -> String {
        self.key.join(".")
    }
}

fn bool01(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// What Calico sets on the host side of a workload veth: IPv4 route_localnet, proxy ARP
/// without delay, forwarding; IPv6 accept_ra off, proxy NDP, forwarding.
pub fn calico_host_veth(ifname: &str, ipv4: bool, ipv6: bool) -> Vec<Sysctl> {
    let mut v = Vec::new();
    if ipv4 {
        v.push(Sysctl::ipv4_conf(ifname, "route_localnet", "1"));
        v.push(Sysctl::path(&["net", "ipv4", "neigh", ifname, "proxy_delay"], "0").optional());
        v.push(Sysctl::ipv4_conf(ifname, "proxy_arp", "1"));
        v.push(Sysctl::ipv4_conf(ifname, "forwarding", "1"));
    }
    if ipv6 {
        v.push(Sysctl::ipv6_conf(ifname, "accept_ra", "0").optional());
        v.push(Sysctl::ipv6_conf(ifname, "proxy_ndp", "1"));
        v.push(Sysctl::ipv6_conf(ifname, "forwarding", "1"));
    }
    v
}

fn write_here(s: &Sysctl) -> Result<(), SysctlError> {
    let path = s.proc_path()?;
    match std::fs::write(&path, &s.value) {
        Ok(()) => Ok(()),
        Err(source) if s.optional => {
            tracing::warn!(key = s.display_key(), error = %source, "optional sysctl not applied");
            Ok(())
        }
        Err(source) => Err(SysctlError::Write {
            path,
            value: s.value.clone(),
            source,
        }),
    }
}

fn read_here(s: &Sysctl) -> Result<String, SysctlError> {
    let path = s.proc_path()?;
    std::fs::read_to_string(&path)
        .map(|v| v.trim_end().to_owned())
        .map_err(|source| SysctlError::Read { path, source })
}

/// Applies `settings` in order, in the namespace at `netns` (`None`: the caller's). Stops at
/// the first failure of a non-optional setting.
pub fn apply(netns: Option<&Path>, settings: &[Sysctl]) -> Result<(), SysctlError> {
    let run = || settings.iter().try_for_each(write_here);
    match netns {
        None => run(),
        Some(ns) => netns::run_in(ns, run)?,
    }
}

/// Reads one value (trailing newline removed) in the namespace at `netns`.
pub fn read(netns: Option<&Path>, key: &Sysctl) -> Result<String, SysctlError> {
    match netns {
        None => read_here(key),
        Some(ns) => netns::run_in(ns, || read_here(key))?,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_dotted_interface_names_map_to_the_right_file() {
        let s = Sysctl::ipv4_conf("eth1.100", "forwarding", "1");
        assert_eq!(
            s.proc_path().unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth1.100/forwarding")
        );
        assert_eq!(s.display_key(), "net.ipv4.conf.eth1.100.forwarding");
    }

    #[test]
    fn components_cannot_escape_proc_sys() {
        for bad in ["..", "a/b", "", "."] {
            let s = Sysctl::path(&["net", bad], "1");
            assert!(
                matches!(s.proc_path(), Err(SysctlError::BadKey { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn calico_host_veth_settings_match_calico() {
        let v4 = calico_host_veth("cali1", true, false);
        let keys: Vec<String> = v4.iter().map(Sysctl::display_key).collect();
        assert_eq!(
            keys,
            [
                "net.ipv4.conf.cali1.route_localnet",
                "net.ipv4.neigh.cali1.proxy_delay",
                "net.ipv4.conf.cali1.proxy_arp",
                "net.ipv4.conf.cali1.forwarding"
            ]
        );
        let v6 = calico_host_veth("cali1", false, true);
        assert!(
            v6.iter()
                .any(|s| s.display_key() == "net.ipv6.conf.cali1.proxy_ndp" && s.value == "1")
        );
    }
}
