//! What ADD knows about a pod beyond its name: labels, annotations, service account, named
//! ports and its namespace's annotations ([`PodInfo`], filled from the Kubernetes API by
//! [`crate::k8s`]), and what Calico's annotations ask of ADD ([`Requests`]). Pure.
//!
//! Annotations, as Calico's CNI plugin reads them (values are JSON lists of strings):
//! - `cni.projectcalico.org/ipv4pools` / `ipv6pools`: pools (CIDRs or IPPool names) instead of
//!   the netconf's; on the pod, else on its namespace (the pod's wins, per family).
//! - `cni.projectcalico.org/ipAddrs`: these addresses, assigned through Calico IPAM.
//! - `cni.projectcalico.org/ipAddrsNoIpam`: these addresses, bypassing IPAM (needs
//!   `feature_control.ip_addrs_no_ipam`); exclusive with `ipAddrs`.
//! - `cni.projectcalico.org/floatingIPs`: external addresses DNAT'ed to the pod, recorded as
//!   the endpoint's `ipNATs` (needs `feature_control.floating_ips`).
//!
//! At most one IPv4 and one IPv6 address per `ipAddrs`/`ipAddrsNoIpam`, as in Calico. Both
//! address annotations need `ipam.type: calico-ipam`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::{IPNAT, WorkloadEndpointPort};

use crate::netconf::NetConf;

pub const ANN_IPV4_POOLS: &str = "cni.projectcalico.org/ipv4pools";
pub const ANN_IPV6_POOLS: &str = "cni.projectcalico.org/ipv6pools";
pub const ANN_IP_ADDRS: &str = "cni.projectcalico.org/ipAddrs";
pub const ANN_IP_ADDRS_NO_IPAM: &str = "cni.projectcalico.org/ipAddrsNoIpam";
pub const ANN_FLOATING_IPS: &str = "cni.projectcalico.org/floatingIPs";

/// The labels Calico adds to every pod's endpoint.
pub use calico_api::names::{LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT};
use calico_api::names::{NAMESPACE_PROFILE_PREFIX, SERVICE_ACCOUNT_PROFILE_PREFIX};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnotationError {
    #[error("annotation {annotation}: {value:?} is not a JSON list of strings: {reason}")]
    NotAList {
        annotation: &'static str,
        value: String,
        reason: String,
    },
    #[error("annotation {annotation}: {value:?} is not an IP address")]
    BadAddress {
        annotation: &'static str,
        value: String,
    },
    #[error("annotation {annotation} is set but empty")]
    Empty { annotation: &'static str },
    #[error("annotation {annotation}: more than one IPv{family} address")]
    TwoOfAFamily {
        annotation: &'static str,
        family: u8,
    },
    #[error("annotations {ANN_IP_ADDRS} and {ANN_IP_ADDRS_NO_IPAM} cannot be used together")]
    BothAddressAnnotations,
    #[error("annotation {annotation} needs ipam.type calico-ipam, not {ipam:?}")]
    NeedsCalicoIpam {
        annotation: &'static str,
        ipam: String,
    },
    #[error(
        "annotation {annotation}: requested feature is not enabled: {flag} (set feature_control.{flag} in the netconf)"
    )]
    FeatureDisabled {
        annotation: &'static str,
        flag: &'static str,
    },
    #[error(
        "annotation {ANN_FLOATING_IPS}: floating IP {floating} has no pod address of its family to map to"
    )]
    FloatingWithoutPodAddress { floating: IpAddr },
}

/// The pod as ADD sees it. From the Kubernetes API when one is configured; otherwise only what
/// CNI_ARGS says (namespace and name, no labels or annotations).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInfo {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The pod's Namespace's annotations (for namespace-level pool annotations).
    pub namespace_annotations: BTreeMap<String, String>,
    pub service_account: Option<String>,
    /// Named (or host) container ports, as Calico maps them onto the endpoint.
    pub ports: Vec<WorkloadEndpointPort>,
    pub generate_name: Option<String>,
}

impl PodInfo {
    /// The endpoint's labels: the pod's, plus Calico's namespace, orchestrator and (when
    /// shorter than 63 characters, as Calico does for label-value compatibility) service
    /// account labels.
    pub fn endpoint_labels(&self, namespace: &str, orchestrator: &str) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert(LABEL_NAMESPACE.into(), namespace.into());
        labels.insert(LABEL_ORCHESTRATOR.into(), orchestrator.into());
        if let Some(sa) = self.service_account.as_deref().filter(|sa| sa.len() < 63) {
            labels.insert(LABEL_SERVICE_ACCOUNT.into(), sa.into());
        }
        labels
    }

    /// Calico's profiles for the pod: `kns.<namespace>`, then `ksa.<namespace>.<sa>`.
    pub fn profiles(&self, namespace: &str) -> Vec<String> {
        let mut p = vec![format!("{NAMESPACE_PROFILE_PREFIX}{namespace}")];
        if let Some(sa) = self.service_account.as_deref().filter(|s| !s.is_empty()) {
            p.push(format!("{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{sa}"));
        }
        p
    }
}

/// What the annotations ask of ADD, validated against the netconf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// `ipAddrs`: assign exactly these through IPAM.
    pub ip_addrs: Vec<IpAddr>,
    /// `ipAddrsNoIpam`: use exactly these, IPAM untouched.
    pub ip_addrs_no_ipam: Vec<IpAddr>,
    /// Pools (CIDRs or IPPool names) per family; `None`: the netconf's.
    pub v4_pools: Option<Vec<String>>,
    pub v6_pools: Option<Vec<String>>,
    /// `floatingIPs`.
    pub floating_ips: Vec<IpAddr>,
}

fn json_list(annotation: &'static str, value: &str) -> Result<Vec<String>, AnnotationError> {
    serde_json::from_str::<Vec<String>>(value).map_err(|e| AnnotationError::NotAList {
        annotation,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

fn addresses(annotation: &'static str, value: &str) -> Result<Vec<IpAddr>, AnnotationError> {
    json_list(annotation, value)?
        .into_iter()
        .map(|s| {
            s.trim().parse().map_err(|_| AnnotationError::BadAddress {
                annotation,
                value: s,
            })
        })
        .collect()
}

/// `ipAddrs`/`ipAddrsNoIpam`: non-empty, at most one address per family.
fn one_per_family(annotation: &'static str, value: &str) -> Result<Vec<IpAddr>, AnnotationError> {
    let ips = addresses(annotation, value)?;
    if ips.is_empty() {
        return Err(AnnotationError::Empty { annotation });
    }
    for (family, is) in [
        (4, IpAddr::is_ipv4 as fn(&IpAddr) -> bool),
        (6, IpAddr::is_ipv6),
    ] {
        if ips.iter().filter(|ip| is(ip)).count() > 1 {
            return Err(AnnotationError::TwoOfAFamily { annotation, family });
        }
    }
    Ok(ips)
}

/// The pod's value of `key`, else its namespace's (Calico's precedence for pool annotations).
fn pod_over_namespace<'a>(info: &'a PodInfo, key: &str) -> Option<&'a str> {
    info.annotations
        .get(key)
        .filter(|v| !v.is_empty())
        .or_else(|| {
            info.namespace_annotations
                .get(key)
                .filter(|v| !v.is_empty())
        })
        .map(String::as_str)
}

/// Reads and checks the annotations against the netconf (feature flags, IPAM type).
pub fn requests(info: &PodInfo, conf: &NetConf) -> Result<Requests, AnnotationError> {
    let ipam = conf
        .ipam
        .as_ref()
        .map_or("calico-ipam", |i| i.kind.as_str());
    let calico_ipam = ipam == "calico-ipam" || ipam.is_empty();
    let get = |k: &str| info.annotations.get(k).filter(|v| !v.is_empty());
    let mut r = Requests::default();
    if calico_ipam {
        if let Some(v) = pod_over_namespace(info, ANN_IPV4_POOLS) {
            r.v4_pools = Some(json_list(ANN_IPV4_POOLS, v)?);
        }
        if let Some(v) = pod_over_namespace(info, ANN_IPV6_POOLS) {
            r.v6_pools = Some(json_list(ANN_IPV6_POOLS, v)?);
        }
    }
    let needs_calico_ipam = |annotation| {
        if calico_ipam {
            Ok(())
        } else {
            Err(AnnotationError::NeedsCalicoIpam {
                annotation,
                ipam: ipam.to_owned(),
            })
        }
    };
    match (get(ANN_IP_ADDRS), get(ANN_IP_ADDRS_NO_IPAM)) {
        (Some(_), Some(_)) => return Err(AnnotationError::BothAddressAnnotations),
        (Some(v), None) => {
            needs_calico_ipam(ANN_IP_ADDRS)?;
            r.ip_addrs = one_per_family(ANN_IP_ADDRS, v)?;
        }
        (None, Some(v)) => {
            needs_calico_ipam(ANN_IP_ADDRS_NO_IPAM)?;
            if !conf.feature_control.ip_addrs_no_ipam {
                return Err(AnnotationError::FeatureDisabled {
                    annotation: ANN_IP_ADDRS_NO_IPAM,
                    flag: "ip_addrs_no_ipam",
                });
            }
            r.ip_addrs_no_ipam = one_per_family(ANN_IP_ADDRS_NO_IPAM, v)?;
        }
        (None, None) => {}
    }
    if let Some(v) = get(ANN_FLOATING_IPS) {
        if !conf.feature_control.floating_ips {
            return Err(AnnotationError::FeatureDisabled {
                annotation: ANN_FLOATING_IPS,
                flag: "floating_ips",
            });
        }
        r.floating_ips = addresses(ANN_FLOATING_IPS, v)?;
    }
    Ok(r)
}

/// The endpoint's `ipNATs` for `floating` IPs: each maps to the pod's address of its family.
pub fn ip_nats(floating: &[IpAddr], pod_addrs: &[IpAddr]) -> Result<Vec<IPNAT>, AnnotationError> {
    floating
        .iter()
        .map(|f| {
            let internal = pod_addrs
                .iter()
                .find(|a| a.is_ipv4() == f.is_ipv4())
                .ok_or(AnnotationError::FloatingWithoutPodAddress { floating: *f })?;
            Ok(IPNAT {
                internal_ip: internal.to_string(),
                external_ip: f.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn conf(extra: &str) -> NetConf {
        NetConf::parse(
            format!(
                r#"{{"cniVersion":"1.1.0","type":"calico","ipam":{{"type":"calico-ipam"}}{extra}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn info(pod: &[(&str, &str)], ns: &[(&str, &str)]) -> PodInfo {
        let m = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        PodInfo {
            annotations: m(pod),
            namespace_annotations: m(ns),
            ..Default::default()
        }
    }

    #[test]
    fn pod_pool_annotation_wins_over_the_namespace_per_family() {
        let i = info(
            &[(ANN_IPV4_POOLS, r#"["10.1.0.0/16"]"#)],
            &[
                (ANN_IPV4_POOLS, r#"["10.2.0.0/16"]"#),
                (ANN_IPV6_POOLS, r#"["fd00:2::/64"]"#),
            ],
        );
        let r = requests(&i, &conf("")).unwrap();
        assert_eq!(r.v4_pools, Some(vec!["10.1.0.0/16".to_string()]));
        // The pod says nothing about IPv6: the namespace's applies.
        assert_eq!(r.v6_pools, Some(vec!["fd00:2::/64".to_string()]));
        // Namespace alone.
        let r = requests(&info(&[], &[(ANN_IPV4_POOLS, r#"["ns-pool"]"#)]), &conf("")).unwrap();
        assert_eq!(r.v4_pools, Some(vec!["ns-pool".to_string()]));
        // Neither: the netconf's pools.
        assert_eq!(
            requests(&info(&[], &[]), &conf("")).unwrap(),
            Requests::default()
        );
        // An empty pod annotation does not hide the namespace's.
        let r = requests(
            &info(
                &[(ANN_IPV4_POOLS, "")],
                &[(ANN_IPV4_POOLS, r#"["10.2.0.0/16"]"#)],
            ),
            &conf(""),
        )
        .unwrap();
        assert_eq!(r.v4_pools, Some(vec!["10.2.0.0/16".to_string()]));
    }

    #[test]
    fn ip_addrs_no_ipam_needs_its_flag() {
        let i = info(&[(ANN_IP_ADDRS_NO_IPAM, r#"["10.9.0.9"]"#)], &[]);
        let e = requests(&i, &conf("")).unwrap_err();
        assert!(e.to_string().contains("ip_addrs_no_ipam"), "{e}");
        let r = requests(&i, &conf(r#","feature_control":{"ip_addrs_no_ipam":true}"#)).unwrap();
        assert_eq!(
            r.ip_addrs_no_ipam,
            vec!["10.9.0.9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn floating_ips_need_their_flag_and_map_per_family() {
        let i = info(&[(ANN_FLOATING_IPS, r#"["1.2.3.4","2001:db8::4"]"#)], &[]);
        let e = requests(&i, &conf("")).unwrap_err();
        assert!(e.to_string().contains("floating_ips"), "{e}");
        let r = requests(&i, &conf(r#","feature_control":{"floating_ips":true}"#)).unwrap();
        let pod: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let nats = ip_nats(&r.floating_ips, &pod).unwrap();
        assert_eq!(nats[0].internal_ip, "10.0.0.5");
        assert_eq!(nats[0].external_ip, "1.2.3.4");
        assert_eq!(nats[1].internal_ip, "fd00::5");
        assert_eq!(
            ip_nats(&r.floating_ips, &pod[..1]),
            Err(AnnotationError::FloatingWithoutPodAddress {
                floating: "2001:db8::4".parse().unwrap()
            })
        );
    }

    #[test]
    fn address_annotations_are_checked_like_calico() {
        let c = conf(r#","feature_control":{"ip_addrs_no_ipam":true}"#);
        let both = info(
            &[
                (ANN_IP_ADDRS, r#"["10.0.0.1"]"#),
                (ANN_IP_ADDRS_NO_IPAM, r#"["10.0.0.2"]"#),
            ],
            &[],
        );
        assert_eq!(
            requests(&both, &c),
            Err(AnnotationError::BothAddressAnnotations)
        );
        let two = info(&[(ANN_IP_ADDRS, r#"["10.0.0.1","10.0.0.2"]"#)], &[]);
        assert_eq!(
            requests(&two, &c),
            Err(AnnotationError::TwoOfAFamily {
                annotation: ANN_IP_ADDRS,
                family: 4
            })
        );
        let dual = info(&[(ANN_IP_ADDRS, r#"["10.0.0.1","fd00::1"]"#)], &[]);
        assert_eq!(requests(&dual, &c).unwrap().ip_addrs.len(), 2);
        let empty = info(&[(ANN_IP_ADDRS, "[]")], &[]);
        assert!(matches!(
            requests(&empty, &c),
            Err(AnnotationError::Empty { .. })
        ));
        let bad = info(&[(ANN_IP_ADDRS, "10.0.0.1")], &[]);
        assert!(matches!(
            requests(&bad, &c),
            Err(AnnotationError::NotAList { .. })
        ));
        let junk = info(&[(ANN_IP_ADDRS, r#"["ten"]"#)], &[]);
        assert!(matches!(
            requests(&junk, &c),
            Err(AnnotationError::BadAddress { .. })
        ));
        let host_local = NetConf::parse(
            br#"{"cniVersion":"1.0.0","type":"calico","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        let one = info(&[(ANN_IP_ADDRS, r#"["10.0.0.1"]"#)], &[]);
        assert!(matches!(
            requests(&one, &host_local),
            Err(AnnotationError::NeedsCalicoIpam { .. })
        ));
    }

    #[test]
    fn labels_and_profiles_follow_calico() {
        let mut i = PodInfo {
            labels: [("app".to_string(), "web".to_string())].into(),
            service_account: Some("builder".into()),
            ..Default::default()
        };
        let l = i.endpoint_labels("prod", "k8s");
        assert_eq!(l["app"], "web");
        assert_eq!(l[LABEL_NAMESPACE], "prod");
        assert_eq!(l[LABEL_ORCHESTRATOR], "k8s");
        assert_eq!(l[LABEL_SERVICE_ACCOUNT], "builder");
        assert_eq!(i.profiles("prod"), ["kns.prod", "ksa.prod.builder"]);
        // A pod label cannot impersonate Calico's.
        i.labels.insert(LABEL_NAMESPACE.into(), "other".into());
        assert_eq!(i.endpoint_labels("prod", "k8s")[LABEL_NAMESPACE], "prod");
        i.service_account = Some("s".repeat(63));
        assert!(
            !i.endpoint_labels("prod", "k8s")
                .contains_key(LABEL_SERVICE_ACCOUNT)
        );
    }

    proptest! {
        #[test]
        fn pod_annotation_always_wins(pod in proptest::option::of("[a-z0-9-]{1,12}"),
                                      ns in proptest::option::of("[a-z0-9-]{1,12}")) {
            let q = |v: &Option<String>| v.as_ref().map(|p| format!("[\"{p}\"]"));
            let (pq, nq) = (q(&pod), q(&ns));
            let mut pa = vec![];
            let mut na = vec![];
            if let Some(v) = &pq { pa.push((ANN_IPV4_POOLS, v.as_str())); }
            if let Some(v) = &nq { na.push((ANN_IPV4_POOLS, v.as_str())); }
            let r = requests(&info(&pa, &na), &conf("")).unwrap();
            prop_assert_eq!(r.v4_pools, pod.or(ns).map(|p| vec![p]));
        }
    }
}
