//! Names Calico derives for a pod: the host-side veth and the IPAM handle.

use sha1::{Digest, Sha1};

/// Prefix of every workload veth on the host (Felix matches `cali+`); the IPAM handle of a
/// container's addresses and the container id back from it.
pub use calico_api::names::{
    WORKLOAD_IFACE_PREFIX as VETH_PREFIX, container_of_pod_handle as container_of_handle,
    pod_handle as handle_id,
};

/// `cali` + the first 11 hex digits of SHA-1 over `<namespace>.<pod>`: 15 characters, the
/// kernel's limit, and stable across restarts of the same pod.
pub fn host_veth_name(namespace: &str, pod: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    format!("{VETH_PREFIX}{}", &hex::encode(digest)[..11])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn veth_name_matches_calico() {
        // `printf default.nginx | sha1sum` = c440f455693b69cd...
        assert_eq!(host_veth_name("default", "nginx"), "calic440f455693");
    }

    #[test]
    fn handles_round_trip() {
        assert_eq!(container_of_handle(&handle_id("abc")), Some("abc"));
        assert_eq!(container_of_handle("docker.abc"), None);
    }

    proptest! {
        #[test]
        fn veth_names_are_valid_interface_names(ns in "[a-z0-9-]{1,63}", pod in "[a-z0-9.-]{1,253}") {
            let n = host_veth_name(&ns, &pod);
            prop_assert_eq!(n.len(), 15);
            prop_assert!(n[4..].chars().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
