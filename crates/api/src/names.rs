//! Calico's well-known names: the labels, annotations, prefixes and fixed values every Calico
//! component writes or matches the same way. Defined here once; the CNI plugin, the Docker
//! driver, the controllers, the policy compiler, calicoctl and the node agent all use these.
//!
//! Component-private names (the CNI plugin's `cni.projectcalico.org/*` pod annotations, the
//! controllers' `status.projectcalico.org/*` annotations and finalizer) stay with their one
//! owner.

/// Label Calico puts on namespaced endpoints and network sets: their namespace. Reserved: a
/// user may not set it.
pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
/// Label naming the orchestrator of a workload ([`ORCHESTRATOR_K8S`], [`ORCHESTRATOR_CNI`],
/// [`ORCHESTRATOR_LIBNETWORK`]).
pub const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
/// Label naming a workload's service account.
pub const LABEL_SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";
/// Label (after [`NAMESPACE_LABEL_PREFIX`] or [`SERVICE_ACCOUNT_LABEL_PREFIX`]) carrying the
/// namespace's or service account's own name.
pub const LABEL_NAME: &str = "projectcalico.org/name";

/// Prefix under which an endpoint inherits its namespace's labels (`pcns.<key>`).
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
/// Prefix under which an endpoint inherits its service account's labels (`pcsa.<key>`).
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";

/// Profile of a Kubernetes namespace: `kns.<namespace>`.
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";
/// Profile of a Kubernetes service account: `ksa.<namespace>.<serviceaccount>`.
pub const SERVICE_ACCOUNT_PROFILE_PREFIX: &str = "ksa.";

/// Who owns a Calico object mirrored between etcd and Kubernetes: [`OWNER_ETCD`] or
/// [`OWNER_KUBERNETES`].
pub const OWNER_ANNOTATION: &str = "projectcalico.org/owner";
/// [`OWNER_ANNOTATION`] value: etcd is the source of truth.
pub const OWNER_ETCD: &str = "etcd";
/// [`OWNER_ANNOTATION`] value: Kubernetes is the source of truth.
pub const OWNER_KUBERNETES: &str = "kubernetes";

/// Annotation on a Calico Node carrying its Kubernetes node's labels (JSON).
pub const KUBE_LABELS_ANNOTATION: &str = "projectcalico.org/kube-labels";

/// [`LABEL_ORCHESTRATOR`] of a Kubernetes pod.
pub const ORCHESTRATOR_K8S: &str = "k8s";
/// [`LABEL_ORCHESTRATOR`] of a container set up by the CNI plugin without Kubernetes.
pub const ORCHESTRATOR_CNI: &str = "cni";
/// [`LABEL_ORCHESTRATOR`] of a Docker container (Calico's libnetwork driver).
pub const ORCHESTRATOR_LIBNETWORK: &str = "libnetwork";

/// Prefix of the IPAM handle of a pod's (or CNI container's) addresses:
/// `k8s-pod-network.<containerID>`.
pub const POD_HANDLE_PREFIX: &str = "k8s-pod-network.";

/// Prefix of every workload interface on the host (Felix matches `cali+`).
pub const WORKLOAD_IFACE_PREFIX: &str = "cali";

/// The IPAM handle of a container's addresses, as Calico's CNI plugin names it.
pub fn pod_handle(container_id: &str) -> String {
    format!("{POD_HANDLE_PREFIX}{container_id}")
}

/// The container id back from a handle [`pod_handle`] made.
pub fn container_of_pod_handle(handle: &str) -> Option<&str> {
    handle.strip_prefix(POD_HANDLE_PREFIX)
}

/// Whether `ifname` is a workload interface (`cali…`).
pub fn is_workload_iface(ifname: &str) -> bool {
    ifname.starts_with(WORKLOAD_IFACE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_handles_round_trip() {
        assert_eq!(pod_handle("abc"), "k8s-pod-network.abc");
        assert_eq!(container_of_pod_handle(&pod_handle("abc")), Some("abc"));
        assert_eq!(container_of_pod_handle("docker.abc"), None);
    }

    #[test]
    fn workload_interfaces_are_cali_prefixed() {
        assert!(is_workload_iface("calic440f455693"));
        assert!(!is_workload_iface("eth0"));
    }
}
