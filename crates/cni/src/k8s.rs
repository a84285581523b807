//! The pod and its namespace from the Kubernetes API, as Calico's CNI plugin reads them when
//! `policy.type` is `k8s`: one GET of the Namespace (for namespace-level pool annotations) and
//! one GET of the Pod (labels, annotations, service account, named ports), with kube's client.
//!
//! Used when the netconf names an API (`kubernetes.kubeconfig`, `kubernetes.k8s_api_root` or
//! `policy.k8s_api_root`); see [`api_configured`]. The conversion from the API objects to
//! [`PodInfo`] ([`pod_info`]) is pure.

use std::path::PathBuf;
use std::time::Duration;

use calico_api::{Protocol, WorkloadEndpointPort};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod};
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::netconf::NetConf;
use crate::pod::PodInfo;

/// The API server must answer within this (the runtime times the whole ADD out).
const API_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("kubernetes.kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("{field} {value:?} is not a URL")]
    ApiRoot { field: &'static str, value: String },
    #[error("kubernetes: neither kubernetes.kubeconfig nor an API root is set")]
    NotConfigured,
    #[error("kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("GET {kind} {name} from the Kubernetes API: {source}")]
    Get {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Whether ADD should ask the Kubernetes API about the pod: an API is named and the policy
/// type is `k8s` (Calico reads the pod only then).
pub fn api_configured(conf: &NetConf) -> bool {
    let k8s_policy = conf.policy.as_ref().is_some_and(|p| p.kind == "k8s");
    let named = conf
        .kubernetes
        .as_ref()
        .is_some_and(|k| k.kubeconfig.is_some() || k.k8s_api_root.is_some())
        || conf
            .policy
            .as_ref()
            .is_some_and(|p| p.k8s_api_root.is_some());
    k8s_policy && named
}

/// Calico accepts API roots with the old `/api/v1/` suffix: only scheme, host and port count.
fn api_root(field: &'static str, value: &str) -> Result<http::Uri, K8sError> {
    let base = value.split("/api/").next().unwrap_or(value);
    base.trim_end_matches('/')
        .parse::<http::Uri>()
        .ok()
        .filter(|u| u.scheme().is_some() && u.host().is_some())
        .ok_or_else(|| K8sError::ApiRoot {
            field,
            value: value.to_owned(),
        })
}

/// A client per the netconf: the kubeconfig file, with the API root overridden by
/// `kubernetes.k8s_api_root` (else `policy.k8s_api_root`), as Calico layers them.
pub async fn client(conf: &NetConf) -> Result<kube::Client, K8sError> {
    let k = conf.kubernetes.clone().unwrap_or_default();
    let root = match (
        &k.k8s_api_root,
        conf.policy.as_ref().and_then(|p| p.k8s_api_root.as_ref()),
    ) {
        (Some(r), _) => Some(api_root("kubernetes.k8s_api_root", r)?),
        (None, Some(r)) => Some(api_root("policy.k8s_api_root", r)?),
        (None, None) => None,
    };
    let mut config = match (&k.kubeconfig, root.clone()) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(|source| K8sError::Kubeconfig {
                path: path.clone(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| K8sError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        (None, Some(root)) => kube::Config::new(root),
        (None, None) => return Err(K8sError::NotConfigured),
    };
    if let Some(root) = root {
        config.cluster_url = root;
    }
    config.connect_timeout = Some(API_TIMEOUT);
    config.read_timeout = Some(API_TIMEOUT);
    kube::Client::try_from(config).map_err(K8sError::Client)
}

/// GETs the namespace and the pod (concurrently: one round trip of latency) and converts them.
pub async fn lookup(client: kube::Client, namespace: &str, pod: &str) -> Result<PodInfo, K8sError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let (ns, p) = tokio::join!(namespaces.get(namespace), pods.get(pod));
    let ns = ns.map_err(|source| K8sError::Get {
        kind: "Namespace",
        name: namespace.to_owned(),
        source,
    })?;
    let p = p.map_err(|source| K8sError::Get {
        kind: "Pod",
        name: format!("{namespace}/{pod}"),
        source,
    })?;
    Ok(pod_info(&p, &ns))
}

fn container_ports(containers: &[Container], out: &mut Vec<WorkloadEndpointPort>) {
    for c in containers {
        for p in c.ports.iter().flatten() {
            let host_port = p.host_port.unwrap_or(0);
            let name = p.name.clone().unwrap_or_default();
            // Calico maps named ports and host ports only.
            if p.container_port == 0 || (host_port == 0 && name.is_empty()) {
                continue;
            }
            let protocol = match p.protocol.as_deref() {
                None | Some("TCP") => "TCP",
                Some("UDP") => "UDP",
                Some("SCTP") => "SCTP",
                Some(other) => {
                    tracing::debug!(
                        protocol = other,
                        port = name,
                        "ignoring port of unknown protocol"
                    );
                    continue;
                }
            };
            let (Ok(port), Ok(host)) = (u16::try_from(p.container_port), u16::try_from(host_port))
            else {
                continue;
            };
            out.push(WorkloadEndpointPort {
                name,
                protocol: Protocol::Name(protocol.into()),
                port,
                host_port: (host != 0).then_some(host),
                host_ip: p.host_ip.clone().filter(|h| !h.is_empty()),
            });
        }
    }
}

/// What ADD needs from the Pod and its Namespace. Pure.
pub fn pod_info(pod: &Pod, ns: &Namespace) -> PodInfo {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ports = Vec::new();
    container_ports(&spec.containers, &mut ports);
    container_ports(
        spec.init_containers.as_deref().unwrap_or_default(),
        &mut ports,
    );
    PodInfo {
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        namespace_annotations: ns.metadata.annotations.clone().unwrap_or_default(),
        service_account: spec.service_account_name.filter(|s| !s.is_empty()),
        ports,
        generate_name: pod.metadata.generate_name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_roots_lose_the_old_api_suffix() {
        assert_eq!(
            api_root("x", "https://10.96.0.1:443/api/v1/")
                .unwrap()
                .to_string(),
            "https://10.96.0.1:443/"
        );
        assert_eq!(
            api_root("x", "http://127.0.0.1:8080").unwrap().to_string(),
            "http://127.0.0.1:8080/"
        );
        assert!(matches!(
            api_root("policy.k8s_api_root", "not a url"),
            Err(K8sError::ApiRoot {
                field: "policy.k8s_api_root",
                ..
            })
        ));
    }

    #[test]
    fn the_api_is_used_only_with_k8s_policy_and_a_named_api() {
        let c = |extra: &str| {
            NetConf::parse(format!(r#"{{"cniVersion":"1.1.0","type":"calico"{extra}}}"#).as_bytes())
                .unwrap()
        };
        assert!(!api_configured(&c("")));
        assert!(!api_configured(&c(r#","policy":{"type":"k8s"}"#)));
        assert!(!api_configured(&c(r#","kubernetes":{"kubeconfig":"/k"}"#)));
        assert!(api_configured(&c(
            r#","kubernetes":{"kubeconfig":"/k"},"policy":{"type":"k8s"}"#
        )));
        assert!(api_configured(&c(
            r#","policy":{"type":"k8s","k8s_api_root":"https://a:6443"}"#
        )));
    }

    #[test]
    fn named_and_host_ports_become_endpoint_ports() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "prod", "labels": {"app": "web"},
                         "annotations": {"cni.projectcalico.org/ipAddrs": "[\"10.0.0.9\"]"},
                         "generateName": "web-"},
            "spec": {"serviceAccountName": "builder", "containers": [{
                "name": "c", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"containerPort": 9000},
                    {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "10.1.1.1"},
                    {"name": "weird", "containerPort": 1, "protocol": "XTP"}
                ]}],
                "initContainers": [{"name": "i", "ports": [{"name": "sctp", "containerPort": 7, "protocol": "SCTP"}]}]}
        }))
        .unwrap();
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "prod", "annotations": {"cni.projectcalico.org/ipv4pools": "[\"p\"]"}}
        }))
        .unwrap();
        let i = pod_info(&pod, &ns);
        assert_eq!(i.labels["app"], "web");
        assert_eq!(i.service_account.as_deref(), Some("builder"));
        assert_eq!(
            i.namespace_annotations["cni.projectcalico.org/ipv4pools"],
            "[\"p\"]"
        );
        assert_eq!(i.generate_name.as_deref(), Some("web-"));
        let names: Vec<(&str, u16, Option<u16>, String)> = i
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.host_port, p.protocol.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("http", 8080, None, "TCP".to_string()),
                ("", 53, Some(5353), "UDP".to_string()),
                ("sctp", 7, None, "SCTP".to_string())
            ]
        );
        assert_eq!(i.ports[1].host_ip.as_deref(), Some("10.1.1.1"));
    }
}
