//! WorkloadEndpoint names as Calico builds them: the identifying fields of the endpoint joined
//! by `-`, with every `-` inside a field doubled, so the name can be split back apart.
//!
//! Which fields identify an endpoint depends on its orchestrator:
//! `k8s`: node, orchestrator, pod, endpoint; `cni`: node, orchestrator, containerID, endpoint;
//! `libnetwork`: node, orchestrator, orchestrator, endpoint; others: node, orchestrator,
//! workload, endpoint. For example node `node1`, libnetwork endpoint `4b2e` gives
//! `node1-libnetwork-libnetwork-4b2e`.

use crate::kinds::WorkloadEndpointSpec;

/// Why a name cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadEndpointNameError {
    #[error("spec.{field}: must be set to name the endpoint")]
    Missing { field: &'static str },
    #[error("spec.{field}: {value:?} must not start or end with '-'")]
    DashAtEnd { field: &'static str, value: String },
}

/// The identifying fields of an endpoint, in name order: `(field, value)`.
fn segments(spec: &WorkloadEndpointSpec) -> [(&'static str, Option<&str>); 4] {
    let node = ("node", spec.node.as_deref());
    let orch = ("orchestrator", spec.orchestrator.as_deref());
    let endpoint = ("endpoint", spec.endpoint.as_deref());
    let third = match spec.orchestrator.as_deref() {
        Some("k8s") => ("pod", spec.pod.as_deref()),
        Some("cni") => ("containerID", spec.container_id.as_deref()),
        Some("libnetwork") => orch,
        _ => ("workload", spec.workload.as_deref()),
    };
    [node, orch, third, endpoint]
}

/// The name Calico gives the endpoint described by `spec`.
pub fn workload_endpoint_name(
    spec: &WorkloadEndpointSpec,
) -> Result<String, WorkloadEndpointNameError> {
    let mut parts = Vec::with_capacity(4);
    for (field, value) in segments(spec) {
        let value = value
            .filter(|v| !v.is_empty())
            .ok_or(WorkloadEndpointNameError::Missing { field })?;
        if value.starts_with('-') || value.ends_with('-') {
            return Err(WorkloadEndpointNameError::DashAtEnd {
                field,
                value: value.to_string(),
            });
        }
        parts.push(value.replace('-', "--"));
    }
    Ok(parts.join("-"))
}

/// Splits a name built by [`workload_endpoint_name`] back into its four fields; `None` when
/// the name does not have exactly four.
pub fn split_workload_endpoint_name(name: &str) -> Option<[String; 4]> {
    let bytes = name.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            if bytes.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            parts.push(name[start..i].replace("--", "-"));
            start = i + 1;
        }
        i += 1;
    }
    parts.push(name[start..].replace("--", "-"));
    parts.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(orch: &str) -> WorkloadEndpointSpec {
        WorkloadEndpointSpec {
            node: Some("node-1".into()),
            orchestrator: Some(orch.into()),
            pod: Some("web-7d9f".into()),
            container_id: Some("abc123".into()),
            workload: Some("vm1".into()),
            endpoint: Some("eth0".into()),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_the_orchestrator() {
        assert_eq!(
            workload_endpoint_name(&spec("k8s")).unwrap(),
            "node--1-k8s-web--7d9f-eth0"
        );
        assert_eq!(
            workload_endpoint_name(&spec("cni")).unwrap(),
            "node--1-cni-abc123-eth0"
        );
        assert_eq!(
            workload_endpoint_name(&spec("libnetwork")).unwrap(),
            "node--1-libnetwork-libnetwork-eth0"
        );
        assert_eq!(
            workload_endpoint_name(&spec("openstack")).unwrap(),
            "node--1-openstack-vm1-eth0"
        );
    }

    #[test]
    fn missing_fields_and_edge_dashes_are_errors() {
        let mut s = spec("k8s");
        s.pod = None;
        assert_eq!(
            workload_endpoint_name(&s),
            Err(WorkloadEndpointNameError::Missing { field: "pod" })
        );
        let mut s = spec("k8s");
        s.endpoint = Some("eth0-".into());
        assert!(matches!(
            workload_endpoint_name(&s),
            Err(WorkloadEndpointNameError::DashAtEnd {
                field: "endpoint",
                ..
            })
        ));
        assert_eq!(split_workload_endpoint_name("a-b-c"), None);
    }

    proptest! {
        #[test]
        fn names_split_back_into_their_fields(
            node in "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?",
            pod in "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?",
            endpoint in "[a-z0-9]([a-z0-9-]{0,4}[a-z0-9])?",
        ) {
            let s = WorkloadEndpointSpec {
                node: Some(node.clone()),
                orchestrator: Some("k8s".into()),
                pod: Some(pod.clone()),
                endpoint: Some(endpoint.clone()),
                ..Default::default()
            };
            let name = workload_endpoint_name(&s).unwrap();
            prop_assert_eq!(
                split_workload_endpoint_name(&name),
                Some([node, "k8s".to_string(), pod, endpoint])
            );
        }
    }
}
