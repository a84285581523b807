//! CNI specification types (1.1.0, with 0.4.0 and 1.0.0 results on request): the result an ADD
//! prints, the error object every failing command prints, version negotiation and the VERSION
//! reply. Our own serde types; pure, no I/O.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The newest spec version we speak.
pub const SPEC_VERSION: &str = "1.1.0";

/// Every version we accept in a netconf, oldest first. Results are shaped per version
/// (0.4.0 carries `version` on each IP; 1.1.0 adds STATUS and GC).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// Error codes of the spec (section "Error"); 100+ are plugin-specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    IoFailure = 5,
    DecodeFailure = 6,
    InvalidNetworkConfig = 7,
    TryAgainLater = 11,
    /// STATUS (spec 1.1.0): the plugin cannot service ADD requests (e.g. the datastore
    /// cannot be reached, or no address is left in the pools ADD would use).
    NotAvailable = 50,
    /// STATUS (spec 1.1.0): the plugin cannot service ADD, *and* existing containers in the
    /// network may have limited connectivity. Not returned by calico-rs: with etcd down the
    /// routes and policy already programmed keep working.
    NotAvailableLimitedConnectivity = 51,
    /// Calico-rs: a step of ADD/DEL against the datastore, IPAM or the kernel failed.
    PluginFailure = 100,
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// The error object printed on stdout with a non-zero exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(version: &str, code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: version.to_owned(),
            code: code.code(),
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}

/// Whether `version` is one we accept.
pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Parses `MAJOR.MINOR.PATCH` for comparisons; `None` for anything else.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let out = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(out)
}

/// `cniVersions` negotiation (1.1.0): the highest version in `offered` that we support, or
/// `None` when none is.
pub fn negotiate(offered: &[String]) -> Option<String> {
    offered
        .iter()
        .filter(|v| is_supported(v))
        .max_by_key(|v| parse_version(v))
        .cloned()
}

/// The reply to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    pub fn ours(asked: &str) -> Self {
        VersionInfo {
            cni_version: if is_supported(asked) {
                asked.to_owned()
            } else {
                SPEC_VERSION.to_owned()
            },
            supported_versions: SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path for container interfaces; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpConfig {
    /// Only in 0.x results: "4" or "6".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl RouteConfig {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        RouteConfig {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The result of ADD (and the `prevResult` of the next plugin in a chain). Parsing is lenient
/// about unknown fields here on purpose: a prevResult comes from another plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// The result as version `version` expects it: 0.x results carry `version` on each IP,
    /// 1.x results must not.
    pub fn for_version(mut self, version: &str) -> Self {
        let legacy = parse_version(version).is_some_and(|(major, _, _)| major == 0);
        for ip in &mut self.ips {
            ip.version = legacy.then(|| {
                if ip.address.addr().is_ipv4() {
                    "4".to_owned()
                } else {
                    "6".to_owned()
                }
            });
        }
        self.cni_version = version.to_owned();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_supported() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(&offered(&["0.3.1", "1.0.0", "1.1.0", "2.0.0"])).as_deref(),
            Some("1.1.0")
        );
        assert_eq!(
            negotiate(&offered(&["0.4.0", "1.0.0"])).as_deref(),
            Some("1.0.0")
        );
        assert_eq!(negotiate(&offered(&["0.3.1", "0.2.0"])), None);
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new("1.1.0", ErrorCode::NotAvailable, "etcd unreachable")
            .with_details("dial tcp");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.1.0","code":50,"msg":"etcd unreachable","details":"dial tcp"})
        );
    }

    #[test]
    fn status_codes_are_the_specs() {
        // SPEC 1.1.0, "STATUS": 50 cannot service ADD; 51 also limited connectivity for
        // existing containers.
        assert_eq!(ErrorCode::NotAvailable.code(), 50);
        assert_eq!(ErrorCode::NotAvailableLimitedConnectivity.code(), 51);
        assert_eq!(ErrorCode::TryAgainLater.code(), 11);
    }

    #[test]
    fn results_are_shaped_per_version() {
        let r = CniResult {
            cni_version: String::new(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                sandbox: Some("/run/netns/x".into()),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                version: None,
                address: "10.0.0.5/32".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            routes: vec![RouteConfig::new("0.0.0.0/0".parse().unwrap(), None)],
            dns: Dns::default(),
        };
        let old = serde_json::to_value(r.clone().for_version("0.4.0")).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        let new = serde_json::to_value(r.for_version("1.1.0")).unwrap();
        assert!(new["ips"][0].get("version").is_none());
        assert!(new.get("dns").is_none());
        assert_eq!(new["cniVersion"], "1.1.0");
    }

    #[test]
    fn version_reply_lists_what_we_accept() {
        let v = VersionInfo::ours("1.0.0");
        assert_eq!(v.cni_version, "1.0.0");
        assert_eq!(v.supported_versions, vec!["0.4.0", "1.0.0", "1.1.0"]);
        assert_eq!(VersionInfo::ours("9.9.9").cni_version, SPEC_VERSION);
    }

    #[test]
    fn version_parsing_rejects_junk() {
        assert_eq!(parse_version("1.1.0"), Some((1, 1, 0)));
        assert_eq!(parse_version("1.1"), None);
        assert_eq!(parse_version("1.1.0.0"), None);
        assert_eq!(parse_version("a.b.c"), None);
    }
}
