//! The agent's configuration, read from the environment exactly as Calico's calico/node reads it.
//!
//! Parsing is pure (`NodeConfig::from_lookup` takes any variable lookup) so every rule is unit
//! tested without touching the process environment.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

/// Where calico/node keeps its sockets and pid files unless `CALICO_RUN_DIR` says otherwise.
pub const DEFAULT_RUN_DIR: &str = "/var/run/calico";
/// Where calico/node keeps state that must survive a restart (`CALICO_STATE_DIR`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/calico";
/// The default IPv4 pool Calico creates when none exists.
pub const DEFAULT_IPV4_POOL_CIDR: &str = "192.168.0.0/16";
/// Docker looks for plugin sockets here.
pub const DEFAULT_PLUGINS_DIR: &str = "/run/docker/plugins";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}: {value:?} is not valid: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("NODENAME: no node name given and the host name could not be read")]
    NoNodeName,
}

/// How to choose this node's address for one IP family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSource {
    /// `IP` unset: keep the address already on the Node resource, else autodetect.
    KeepOrAutodetect,
    /// `IP=autodetect`: autodetect on every start.
    Autodetect,
    /// `IP=none`: this family is not used on this node.
    None,
    /// A fixed address, with its prefix length (`/32` or `/128` when none was written).
    Fixed(IpNet),
}

/// `IP_AUTODETECTION_METHOD` / `IP6_AUTODETECTION_METHOD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutodetectMethod {
    /// The first valid address on the first interface not on Calico's exclude list.
    FirstFound,
    /// The first valid address on an interface whose name matches one of these regexes.
    Interface(Vec<String>),
    /// Like first-found, but also skipping interfaces matching these regexes.
    SkipInterface(Vec<String>),
    /// The source address the kernel would use to reach this destination.
    CanReach(String),
    /// The first address that lies within one of these networks.
    Cidr(Vec<IpNet>),
}

/// Which routing daemon runs: Calico's `bird` means our own BGP speaker here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkingBackend {
    Bgp,
    /// `vxlan`: no BGP; routes to remote blocks come from block affinities (`crate::tunnel`).
    Vxlan,
    None,
}

/// Settings of one default pool, created only when no pool of that family exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPool {
    /// `None` for IPv6 means: generate a random unique-local /48 as Calico does.
    pub cidr: Option<IpNet>,
    pub block_size: Option<u8>,
    pub nat_outgoing: bool,
    /// `CALICO_IPV4POOL_IPIP` (IPv4 only; default Never).
    pub ipip_mode: calico_api::IPIPMode,
    /// `CALICO_IPV4POOL_VXLAN` / `CALICO_IPV6POOL_VXLAN` (default Never).
    pub vxlan_mode: calico_api::VXLANMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_name: String,
    pub ipv4: AddressSource,
    pub ipv6: AddressSource,
    pub ipv4_method: AutodetectMethod,
    pub ipv6_method: AutodetectMethod,
    /// `AS`: this node's AS number, overriding the global default.
    pub as_number: Option<u32>,
    pub backend: NetworkingBackend,
    pub no_default_pools: bool,
    /// `FELIX_IPV6SUPPORT` (default true): IPv6 is used where the kernel has it.
    pub ipv6_support: bool,
    pub ipv4_pool: DefaultPool,
    pub ipv6_pool: DefaultPool,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    /// `CALICO_LIBNETWORK_ENABLED`: serve the Docker network and IPAM drivers.
    pub libnetwork_enabled: bool,
    pub plugins_dir: PathBuf,
    /// `DOCKER_HOST` as a unix socket path, for the driver's network syncer.
    pub docker_socket: PathBuf,
}

impl NodeConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let hostname = read_hostname();
        Self::from_lookup(|k| std::env::var(k).ok(), hostname)
    }

    /// Parses the configuration from any variable lookup; `hostname` is the fallback node name.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        hostname: Option<String>,
    ) -> Result<Self, ConfigError> {
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let node_name = var("NODENAME")
            .or_else(|| var("HOSTNAME"))
            .or(hostname)
            .ok_or(ConfigError::NoNodeName)?;
        let as_number = var("AS")
            .map(|v| parse_as_number(&v).map_err(|reason| invalid("AS", &v, reason)))
            .transpose()?;
        let backend = match var("CALICO_NETWORKING_BACKEND").as_deref() {
            None | Some("bird") => NetworkingBackend::Bgp,
            Some("none") => NetworkingBackend::None,
            Some("vxlan") => NetworkingBackend::Vxlan,
            Some(other) => {
                return Err(invalid(
                    "CALICO_NETWORKING_BACKEND",
                    other,
                    "must be bird, vxlan or none".into(),
                ));
            }
        };
        let ipv4_pool = DefaultPool {
            cidr: Some(parse_cidr(
                "CALICO_IPV4POOL_CIDR",
                &var("CALICO_IPV4POOL_CIDR").unwrap_or_else(|| DEFAULT_IPV4_POOL_CIDR.into()),
                false,
            )?),
            block_size: parse_block_size(&var, "CALICO_IPV4POOL_BLOCK_SIZE", 20..=32)?,
            nat_outgoing: parse_bool(&var, "CALICO_IPV4POOL_NAT_OUTGOING", true)?,
            ipip_mode: parse_ipip_mode(&var, "CALICO_IPV4POOL_IPIP")?,
            vxlan_mode: parse_vxlan_mode(&var, "CALICO_IPV4POOL_VXLAN")?,
        };
        if ipv4_pool.ipip_mode != calico_api::IPIPMode::Never
            && ipv4_pool.vxlan_mode != calico_api::VXLANMode::Never
        {
            return Err(invalid(
                "CALICO_IPV4POOL_VXLAN",
                &format!("{:?}", ipv4_pool.vxlan_mode),
                "a pool uses one overlay: CALICO_IPV4POOL_IPIP is set too".into(),
            ));
        }
        let ipv6_pool = DefaultPool {
            cidr: var("CALICO_IPV6POOL_CIDR")
                .map(|v| parse_cidr("CALICO_IPV6POOL_CIDR", &v, true))
                .transpose()?,
            block_size: parse_block_size(&var, "CALICO_IPV6POOL_BLOCK_SIZE", 116..=128)?,
            nat_outgoing: parse_bool(&var, "CALICO_IPV6POOL_NAT_OUTGOING", false)?,
            ipip_mode: calico_api::IPIPMode::Never,
            vxlan_mode: parse_vxlan_mode(&var, "CALICO_IPV6POOL_VXLAN")?,
        };
        Ok(NodeConfig {
            node_name,
            ipv4: parse_address_source("IP", var("IP"), false, AddressSource::KeepOrAutodetect)?,
            ipv6: parse_address_source("IP6", var("IP6"), true, AddressSource::None)?,
            ipv4_method: parse_method("IP_AUTODETECTION_METHOD", var("IP_AUTODETECTION_METHOD"))?,
            ipv6_method: parse_method("IP6_AUTODETECTION_METHOD", var("IP6_AUTODETECTION_METHOD"))?,
            as_number,
            backend,
            no_default_pools: parse_bool(&var, "NO_DEFAULT_POOLS", false)?,
            ipv6_support: parse_bool(&var, "FELIX_IPV6SUPPORT", true)?,
            ipv4_pool,
            ipv6_pool,
            run_dir: var("CALICO_RUN_DIR")
                .unwrap_or_else(|| DEFAULT_RUN_DIR.into())
                .into(),
            state_dir: var("CALICO_STATE_DIR")
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into())
                .into(),
            libnetwork_enabled: parse_bool(&var, "CALICO_LIBNETWORK_ENABLED", false)?,
            plugins_dir: var("CALICO_LIBNETWORK_PLUGINS_DIR")
                .unwrap_or_else(|| DEFAULT_PLUGINS_DIR.into())
                .into(),
            docker_socket: docker_socket(var("DOCKER_HOST"))?,
        })
    }
}

fn invalid(var: &'static str, value: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_string(),
        reason,
    }
}

/// An overlay mode as calico-node reads it: Always, CrossSubnet or Never (any case; `Off`
/// is Never, as in older manifests).
fn parse_overlay_mode(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<u8, ConfigError> {
    match var(name) {
        None => Ok(0),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "never" | "off" => Ok(0),
            "always" => Ok(1),
            "crosssubnet" | "cross-subnet" => Ok(2),
            _ => Err(invalid(
                name,
                &v,
                "must be Always, CrossSubnet or Never".into(),
            )),
        },
    }
}

fn parse_ipip_mode(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<calico_api::IPIPMode, ConfigError> {
    use calico_api::IPIPMode::*;
    Ok([Never, Always, CrossSubnet][usize::from(parse_overlay_mode(var, name)?)])
}

fn parse_vxlan_mode(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<calico_api::VXLANMode, ConfigError> {
    use calico_api::VXLANMode::*;
    Ok([Never, Always, CrossSubnet][usize::from(parse_overlay_mode(var, name)?)])
}

fn read_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Parses an AS number in plain (`64512`) or dotted 4-byte (`1.10` = 65546) form.
pub fn parse_as_number(v: &str) -> Result<u32, String> {
    let parse_part = |p: &str| {
        p.parse::<u32>()
            .map_err(|_| format!("{p:?} is not a number"))
    };
    match v.split_once('.') {
        None => parse_part(v),
        Some((hi, lo)) => {
            let (hi, lo) = (parse_part(hi)?, parse_part(lo)?);
            if hi > 0xffff || lo > 0xffff {
                return Err("each half of a dotted AS number must be at most 65535".into());
            }
            Ok(hi << 16 | lo)
        }
    }
}

fn parse_cidr(var: &'static str, v: &str, want_v6: bool) -> Result<IpNet, ConfigError> {
    let net: IpNet = v
        .parse()
        .map_err(|_| invalid(var, v, "not a CIDR such as 192.168.0.0/16".into()))?;
    let family_ok = matches!(net, IpNet::V6(_)) == want_v6;
    if !family_ok {
        let fam = if want_v6 { "IPv6" } else { "IPv4" };
        return Err(invalid(var, v, format!("must be an {fam} CIDR")));
    }
    if net.trunc() != net {
        return Err(invalid(
            var,
            v,
            format!("host bits are set; did you mean {}?", net.trunc()),
        ));
    }
    Ok(net)
}

fn parse_block_size(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    range: std::ops::RangeInclusive<u8>,
) -> Result<Option<u8>, ConfigError> {
    let Some(v) = var(name) else { return Ok(None) };
    match v.parse::<u8>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(invalid(
            name,
            &v,
            format!("must be a number in {}..={}", range.start(), range.end()),
        )),
    }
}

fn parse_bool(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match var(name).map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(invalid(name, other, "must be true or false".into())),
    }
}

fn parse_address_source(
    var: &'static str,
    v: Option<String>,
    want_v6: bool,
    unset: AddressSource,
) -> Result<AddressSource, ConfigError> {
    let Some(v) = v else { return Ok(unset) };
    match v.as_str() {
        "autodetect" => return Ok(AddressSource::Autodetect),
        "none" => return Ok(AddressSource::None),
        _ => {}
    }
    let net = if v.contains('/') {
        v.parse::<IpNet>()
            .map_err(|_| invalid(var, &v, "not an address or address/prefix".into()))?
    } else {
        let ip: IpAddr = v
            .parse()
            .map_err(|_| invalid(var, &v, "not an address, autodetect or none".into()))?;
        IpNet::from(ip)
    };
    if matches!(net, IpNet::V6(_)) != want_v6 {
        let fam = if want_v6 { "IPv6" } else { "IPv4" };
        return Err(invalid(var, &v, format!("must be an {fam} address")));
    }
    Ok(AddressSource::Fixed(net))
}

fn parse_method(var: &'static str, v: Option<String>) -> Result<AutodetectMethod, ConfigError> {
    let Some(v) = v else {
        return Ok(AutodetectMethod::FirstFound);
    };
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    };
    let regexes = |s: &str| -> Result<Vec<String>, ConfigError> {
        let items = list(s);
        if items.is_empty() {
            return Err(invalid(
                var,
                &v,
                "needs at least one interface regex".into(),
            ));
        }
        for r in &items {
            regex::Regex::new(r).map_err(|e| invalid(var, &v, format!("bad regex {r:?}: {e}")))?;
        }
        Ok(items)
    };
    if v == "first-found" {
        Ok(AutodetectMethod::FirstFound)
    } else if let Some(rest) = v.strip_prefix("interface=") {
        Ok(AutodetectMethod::Interface(regexes(rest)?))
    } else if let Some(rest) = v.strip_prefix("skip-interface=") {
        Ok(AutodetectMethod::SkipInterface(regexes(rest)?))
    } else if let Some(rest) = v.strip_prefix("can-reach=") {
        if rest.is_empty() {
            return Err(invalid(var, &v, "can-reach= needs a destination".into()));
        }
        Ok(AutodetectMethod::CanReach(rest.to_string()))
    } else if let Some(rest) = v.strip_prefix("cidr=") {
        let nets = list(rest)
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .map_err(|_| invalid(var, &v, format!("{c:?} is not a CIDR")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if nets.is_empty() {
            return Err(invalid(var, &v, "cidr= needs at least one CIDR".into()));
        }
        Ok(AutodetectMethod::Cidr(nets))
    } else {
        Err(invalid(
            var,
            &v,
            "must be first-found, interface=, skip-interface=, can-reach= or cidr=".into(),
        ))
    }
}

fn docker_socket(v: Option<String>) -> Result<PathBuf, ConfigError> {
    match v {
        None => Ok(PathBuf::from("/var/run/docker.sock")),
        Some(v) => v.strip_prefix("unix://").map(PathBuf::from).ok_or_else(|| {
            invalid(
                "DOCKER_HOST",
                &v,
                "only unix:// sockets are supported".into(),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NodeConfig::from_lookup(|k| map.get(k).cloned(), Some("host-a".into()))
    }

    #[test]
    fn defaults_match_calico_node() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.node_name, "host-a");
        assert_eq!(c.ipv4, AddressSource::KeepOrAutodetect);
        assert_eq!(c.ipv6, AddressSource::None);
        assert_eq!(c.ipv4_method, AutodetectMethod::FirstFound);
        assert_eq!(c.backend, NetworkingBackend::Bgp);
        assert_eq!(c.ipv4_pool.cidr, Some("192.168.0.0/16".parse().unwrap()));
        assert!(c.ipv4_pool.nat_outgoing);
        assert!(!c.ipv6_pool.nat_outgoing);
        assert!(c.ipv6_support);
        assert!(
            !parse(&[("FELIX_IPV6SUPPORT", "false")])
                .unwrap()
                .ipv6_support
        );
        assert_eq!(c.ipv6_pool.cidr, None);
        assert_eq!(c.run_dir, PathBuf::from("/var/run/calico"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/calico"));
    }

    #[test]
    fn nodename_wins_over_hostname() {
        let c = parse(&[("NODENAME", "node1"), ("HOSTNAME", "other")]).unwrap();
        assert_eq!(c.node_name, "node1");
    }

    #[test]
    fn fixed_address_keeps_its_prefix_and_bare_address_is_host_prefix() {
        let c = parse(&[("IP", "192.168.33.11/24")]).unwrap();
        assert_eq!(
            c.ipv4,
            AddressSource::Fixed("192.168.33.11/24".parse().unwrap())
        );
        let c = parse(&[("IP", "192.168.33.11")]).unwrap();
        assert_eq!(
            c.ipv4,
            AddressSource::Fixed("192.168.33.11/32".parse().unwrap())
        );
    }

    #[test]
    fn wrong_family_address_names_the_variable() {
        let err = parse(&[("IP", "fd00::1")]).unwrap_err();
        assert!(err.to_string().starts_with("IP: \"fd00::1\""), "{err}");
        assert!(err.to_string().contains("IPv4"), "{err}");
    }

    #[test]
    fn autodetection_methods_parse() {
        let c = parse(&[
            ("IP_AUTODETECTION_METHOD", "interface=eth.*,ens.*"),
            ("IP6_AUTODETECTION_METHOD", "cidr=fd00::/8"),
        ])
        .unwrap();
        assert_eq!(
            c.ipv4_method,
            AutodetectMethod::Interface(vec!["eth.*".into(), "ens.*".into()])
        );
        assert_eq!(
            c.ipv6_method,
            AutodetectMethod::Cidr(vec!["fd00::/8".parse().unwrap()])
        );
        let c = parse(&[("IP_AUTODETECTION_METHOD", "can-reach=192.168.33.12")]).unwrap();
        assert_eq!(
            c.ipv4_method,
            AutodetectMethod::CanReach("192.168.33.12".into())
        );
    }

    #[test]
    fn bad_method_and_bad_regex_are_rejected() {
        assert!(parse(&[("IP_AUTODETECTION_METHOD", "magic")]).is_err());
        let err = parse(&[("IP_AUTODETECTION_METHOD", "interface=eth(")]).unwrap_err();
        assert!(err.to_string().contains("bad regex"), "{err}");
    }

    #[test]
    fn dotted_as_numbers_are_four_byte() {
        assert_eq!(parse_as_number("64512"), Ok(64512));
        assert_eq!(parse_as_number("1.10"), Ok(65546));
        assert!(parse_as_number("70000.1").is_err());
        assert_eq!(parse(&[("AS", "1.10")]).unwrap().as_number, Some(65546));
    }

    #[test]
    fn pool_settings_are_validated() {
        let err = parse(&[("CALICO_IPV4POOL_BLOCK_SIZE", "33")]).unwrap_err();
        assert!(err.to_string().contains("20..=32"), "{err}");
        let err = parse(&[("CALICO_IPV4POOL_CIDR", "10.0.0.1/8")]).unwrap_err();
        assert!(err.to_string().contains("host bits"), "{err}");
        let c = parse(&[("CALICO_IPV6POOL_CIDR", "fd80:24e2:f998:72d6::/64")]).unwrap();
        assert_eq!(
            c.ipv6_pool.cidr,
            Some("fd80:24e2:f998:72d6::/64".parse().unwrap())
        );
    }

    #[test]
    fn run_dir_override_for_side_by_side_agents() {
        let c = parse(&[
            ("CALICO_RUN_DIR", "/tmp/x/run"),
            ("CALICO_STATE_DIR", "/tmp/x/lib"),
        ])
        .unwrap();
        assert_eq!(c.run_dir, PathBuf::from("/tmp/x/run"));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x/lib"));
    }

    #[test]
    fn overlay_backend_and_default_pool_modes() {
        let c = parse(&[
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
            ("CALICO_IPV4POOL_VXLAN", "crosssubnet"),
            ("CALICO_IPV6POOL_VXLAN", "Always"),
        ])
        .unwrap();
        assert_eq!(c.backend, NetworkingBackend::Vxlan);
        assert_eq!(c.ipv4_pool.vxlan_mode, calico_api::VXLANMode::CrossSubnet);
        assert_eq!(c.ipv4_pool.ipip_mode, calico_api::IPIPMode::Never);
        assert_eq!(c.ipv6_pool.vxlan_mode, calico_api::VXLANMode::Always);
        let c = parse(&[("CALICO_IPV4POOL_IPIP", "Off")]).unwrap();
        assert_eq!(c.ipv4_pool.ipip_mode, calico_api::IPIPMode::Never);
        let err = parse(&[("CALICO_IPV4POOL_IPIP", "sometimes")]).unwrap_err();
        assert!(err.to_string().contains("CALICO_IPV4POOL_IPIP"), "{err}");
        let err = parse(&[
            ("CALICO_IPV4POOL_IPIP", "Always"),
            ("CALICO_IPV4POOL_VXLAN", "Always"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("CALICO_IPV4POOL_VXLAN"), "{err}");
    }

    #[test]
    fn unknown_backend_is_rejected() {
        let err = parse(&[("CALICO_NETWORKING_BACKEND", "gobgp")]).unwrap_err();
        assert!(
            err.to_string().starts_with("CALICO_NETWORKING_BACKEND"),
            "{err}"
        );
    }
}
