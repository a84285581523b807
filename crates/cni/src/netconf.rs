//! The network configuration on stdin, compatible with Calico's `calico` plugin netconf.
//!
//! Every object is parsed with `deny_unknown_fields` and a path-tracking deserializer, so an
//! unknown or ill-typed field is an error naming it (`ipam.assign_ipv4: invalid type ...`).
//! Fields the runtime injects (`name`, `cniVersion`, `cniVersions`, `prevResult`,
//! `runtimeConfig`, `args`, `capabilities`, `cni.dev/valid-attachments`) are accepted.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::spec::{self, CniResult};

#[derive(Debug, thiserror::Error)]
pub enum NetconfError {
    #[error("netconf: {path}: {reason}")]
    Field { path: String, reason: String },
    #[error("netconf: cniVersion {version:?} is not supported (supported: {supported})")]
    Version { version: String, supported: String },
    #[error("netconf: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// `ipam` section. Calico writes the booleans as strings (`"true"`); both forms are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamConf {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "bool_or_string")]
    pub assign_ipv4: Option<bool>,
    #[serde(default, deserialize_with = "bool_or_string")]
    pub assign_ipv6: Option<bool>,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
}

impl IpamConf {
    /// Calico's defaults: IPv4 on, IPv6 off.
    pub fn wants_v4(&self) -> bool {
        self.assign_ipv4.unwrap_or(true)
    }
    pub fn wants_v6(&self) -> bool {
        self.assign_ipv6.unwrap_or(false)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSettings {
    #[serde(default)]
    pub allow_ip_forwarding: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConf {
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub k8s_api_root: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConf {
    #[serde(rename = "type")]
    pub kind: String,
    /// Calico's older spelling of `kubernetes.k8s_api_root` (which wins when both are set).
    #[serde(default)]
    pub k8s_api_root: Option<String>,
}

/// `feature_control`: opt-ins Calico keeps behind flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureControl {
    #[serde(default)]
    pub ip_addrs_no_ipam: bool,
    #[serde(default)]
    pub floating_ips: bool,
}

/// One `{containerID, ifname}` of GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(rename = "cniVersions", default)]
    pub cni_versions: Vec<String>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub datastore_type: Option<String>,
    #[serde(default)]
    pub etcd_endpoints: Option<String>,
    #[serde(default)]
    pub etcd_key_file: Option<PathBuf>,
    #[serde(default)]
    pub etcd_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub etcd_ca_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub nodename: Option<String>,
    #[serde(default)]
    pub nodename_file: Option<PathBuf>,
    #[serde(default)]
    pub nodename_file_optional: bool,
    /// The veths' MTU; absent or 0: calico-node's detected MTU (`mtu_file`), as Calico.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Where calico-node writes the detected MTU (default `/var/lib/calico/mtu`; set it when
    /// calico-node's `CALICO_STATE_DIR` is elsewhere, as `nodename_file` is for the name).
    #[serde(default)]
    pub mtu_file: Option<PathBuf>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub log_file_path: Option<PathBuf>,
    /// `ipam` when its type is `calico-ipam` (strictly parsed); see [`NetConf::ipam_raw`].
    #[serde(skip)]
    pub ipam: Option<IpamConf>,
    /// The `ipam` object as given: another IPAM plugin's fields are that plugin's business,
    /// so only `calico-ipam` sections are checked here.
    #[serde(rename = "ipam", default)]
    pub ipam_raw: Option<serde_json::Value>,
    #[serde(default)]
    pub container_settings: ContainerSettings,
    #[serde(default)]
    pub kubernetes: Option<KubernetesConf>,
    #[serde(default)]
    pub policy: Option<PolicyConf>,
    #[serde(default)]
    pub feature_control: FeatureControl,
    /// Set by the runtime when chaining; parsed leniently (it comes from another plugin).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<serde_json::Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<serde_json::Value>,
    #[serde(default)]
    pub capabilities: Option<serde_json::Value>,
    #[serde(default)]
    pub args: Option<serde_json::Value>,
    #[serde(default)]
    pub dns: Option<crate::spec::Dns>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn bool_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Str(String),
    }
    match Option::<B>::deserialize(d)? {
        None => Ok(None),
        Some(B::Bool(b)) => Ok(Some(b)),
        Some(B::Str(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!(
                "expected \"true\" or \"false\", got {s:?}"
            ))),
        },
    }
}

impl NetConf {
    /// Parses and validates stdin's netconf. The version actually used is
    /// [`NetConf::effective_version`].
    pub fn parse(bytes: &[u8]) -> Result<NetConf, NetconfError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let mut conf: NetConf =
            serde_path_to_error::deserialize(de).map_err(|e| NetconfError::Field {
                path: match e.path().to_string() {
                    p if p == "." => "(top level)".to_owned(),
                    p => p,
                },
                reason: e.inner().to_string(),
            })?;
        if let Some(raw) = &conf.ipam_raw {
            let kind = raw.get("type").and_then(|t| t.as_str()).unwrap_or("");
            if kind == "calico-ipam" || kind.is_empty() {
                let ipam: IpamConf =
                    serde_path_to_error::deserialize(raw).map_err(|e| NetconfError::Field {
                        path: match e.path().to_string() {
                            p if p == "." => "ipam".to_owned(),
                            p => format!("ipam.{p}"),
                        },
                        reason: e.inner().to_string(),
                    })?;
                conf.ipam = Some(ipam);
            } else {
                conf.ipam = Some(IpamConf {
                    kind: kind.to_owned(),
                    ..Default::default()
                });
            }
        }
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), NetconfError> {
        let version = self.effective_version();
        if !spec::is_supported(&version) {
            return Err(NetconfError::Version {
                version,
                supported: spec::SUPPORTED_VERSIONS.join(", "),
            });
        }
        if let Some(t) = &self.datastore_type
            && t != "etcdv3"
        {
            return Err(NetconfError::Invalid {
                field: "datastore_type",
                reason: format!("{t:?} is not supported here; use \"etcdv3\""),
            });
        }
        if let Some(p) = &self.policy
            && p.kind != "k8s"
        {
            return Err(NetconfError::Invalid {
                field: "policy.type",
                reason: format!("{:?} is not supported; use \"k8s\"", p.kind),
            });
        }
        if let Some(mtu) = self.mtu
            && mtu != 0
            && !(68..=65535).contains(&mtu)
        {
            return Err(NetconfError::Invalid {
                field: "mtu",
                reason: format!("{mtu} is outside 68..65535 (0: the detected MTU)"),
            });
        }
        if let Some(ipam) = &self.ipam {
            for (field, pools) in [
                ("ipam.ipv4_pools", &ipam.ipv4_pools),
                ("ipam.ipv6_pools", &ipam.ipv6_pools),
            ] {
                for p in pools {
                    p.parse::<IpNet>().map_err(|e| NetconfError::Invalid {
                        field,
                        reason: format!("{p:?}: {e} (pool names are not supported, use CIDRs)"),
                    })?;
                }
            }
            if !ipam.wants_v4() && !ipam.wants_v6() {
                return Err(NetconfError::Invalid {
                    field: "ipam.assign_ipv4",
                    reason: "both assign_ipv4 and assign_ipv6 are false".into(),
                });
            }
        }
        if self.prev_result.is_some() {
            self.prev_result()?;
        }
        Ok(())
    }

    /// `cniVersions` (1.1.0) wins over `cniVersion` when it offers a version we speak.
    pub fn effective_version(&self) -> String {
        spec::negotiate(&self.cni_versions).unwrap_or_else(|| {
            if self.cni_version.is_empty() {
                spec::SPEC_VERSION.to_owned()
            } else {
                self.cni_version.clone()
            }
        })
    }

    pub fn prev_result(&self) -> Result<Option<CniResult>, NetconfError> {
        self.prev_result
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| NetconfError::Field {
                path: "prevResult".into(),
                reason: e.to_string(),
            })
    }

    /// The etcd endpoints (`etcd_endpoints`, comma-separated).
    pub fn endpoints(&self) -> Result<Vec<String>, NetconfError> {
        let eps: Vec<String> = self
            .etcd_endpoints
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if eps.is_empty() {
            return Err(NetconfError::Invalid {
                field: "etcd_endpoints",
                reason: "must name at least one etcd URL".into(),
            });
        }
        Ok(eps)
    }

    pub fn ipam_pools(&self) -> Result<(Vec<IpNet>, Vec<IpNet>), NetconfError> {
        let Some(ipam) = &self.ipam else {
            return Ok((vec![], vec![]));
        };
        // Validated in `parse`.
        let p = |v: &Vec<String>| v.iter().filter_map(|s| s.parse().ok()).collect();
        Ok((p(&ipam.ipv4_pools), p(&ipam.ipv6_pools)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALICO: &str = r#"{
      "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "calico",
      "datastore_type": "etcdv3", "etcd_endpoints": "http://127.0.0.1:2379,http://10.0.0.1:2379",
      "nodename": "node1", "mtu": 1440, "log_level": "info",
      "log_file_path": "/var/log/calico/cni/cni.log",
      "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": false,
               "ipv4_pools": ["192.168.0.0/16"]},
      "container_settings": {"allow_ip_forwarding": true},
      "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
      "policy": {"type": "k8s"}
    }"#;

    #[test]
    fn calicos_netconf_parses() {
        let c = NetConf::parse(CALICO.as_bytes()).unwrap();
        assert_eq!(c.kind, "calico");
        assert_eq!(c.mtu, Some(1440));
        assert_eq!(
            c.endpoints().unwrap(),
            vec!["http://127.0.0.1:2379", "http://10.0.0.1:2379"]
        );
        let ipam = c.ipam.clone().unwrap();
        assert!(ipam.wants_v4() && !ipam.wants_v6());
        assert_eq!(
            c.ipam_pools().unwrap().0,
            vec!["192.168.0.0/16".parse::<IpNet>().unwrap()]
        );
        assert!(c.container_settings.allow_ip_forwarding);
        assert_eq!(c.effective_version(), "1.1.0");
    }

    fn err_of(json: &str) -> String {
        NetConf::parse(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err_of(r#"{"cniVersion":"1.0.0","type":"calico","etcd_endpoint":"x"}"#);
        assert!(e.contains("etcd_endpoint"), "{e}");
        let e = err_of(
            r#"{"cniVersion":"1.0.0","type":"calico","ipam":{"type":"calico-ipam","ipv4pools":[]}}"#,
        );
        assert!(e.contains("ipam") && e.contains("ipv4pools"), "{e}");
    }

    #[test]
    fn ill_typed_fields_are_named() {
        let e = err_of(r#"{"cniVersion":"1.0.0","type":"calico","mtu":"1500"}"#);
        assert!(e.contains("mtu"), "{e}");
        let e = err_of(
            r#"{"cniVersion":"1.0.0","type":"calico","ipam":{"type":"calico-ipam","assign_ipv4":"yes"}}"#,
        );
        assert!(e.contains("ipam.assign_ipv4"), "{e}");
        let e = err_of(
            r#"{"cniVersion":"1.0.0","type":"calico","container_settings":{"allow_ip_forwarding":1}}"#,
        );
        assert!(e.contains("container_settings.allow_ip_forwarding"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let e = err_of(r#"{"cniVersion":"1.0.0","type":"calico","datastore_type":"kubernetes"}"#);
        assert!(e.contains("datastore_type"), "{e}");
        let e = err_of(r#"{"cniVersion":"1.0.0","type":"calico","policy":{"type":"none"}}"#);
        assert!(e.contains("policy.type"), "{e}");
        let e = err_of(
            r#"{"cniVersion":"1.0.0","type":"calico","ipam":{"type":"calico-ipam","ipv4_pools":["default-ipv4-ippool"]}}"#,
        );
        assert!(e.contains("ipam.ipv4_pools"), "{e}");
        let e = err_of(r#"{"cniVersion":"0.3.1","type":"calico"}"#);
        assert!(e.contains("0.3.1"), "{e}");
        let e = err_of(r#"{"cniVersion":"1.0.0","type":"calico","mtu":10}"#);
        assert!(e.contains("mtu"), "{e}");
    }

    #[test]
    fn runtime_fields_are_accepted() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","cniVersions":["1.0.0","1.1.0"],"name":"n","type":"calico",
                "runtimeConfig":{"portMappings":[]},"capabilities":{"portMappings":true},
                "cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}],
                "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"lo"}],"ips":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.valid_attachments.clone().unwrap()[0].container_id, "abc");
        assert_eq!(c.prev_result().unwrap().unwrap().interfaces[0].name, "lo");
    }

    #[test]
    fn other_ipam_plugins_keep_their_fields() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","type":"calico","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}]]}}"#,
        )
        .unwrap();
        assert_eq!(c.ipam.unwrap().kind, "host-local");
        assert!(c.ipam_raw.unwrap()["ranges"].is_array());
    }

    #[test]
    fn cni_versions_negotiate() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","cniVersions":["0.3.1","1.0.0","1.1.0","2.0.0"],"type":"calico"}"#,
        )
        .unwrap();
        assert_eq!(c.effective_version(), "1.1.0");
    }

    #[test]
    fn bad_prev_result_is_an_error() {
        let e = err_of(r#"{"cniVersion":"1.0.0","type":"calico","prevResult":{"ips":"x"}}"#);
        assert!(e.contains("prevResult"), "{e}");
    }
}
