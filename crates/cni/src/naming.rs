//! Names Calico derives for a pod: the host-side veth, the IPAM handle, the IPv6 gateway.

use std::net::Ipv6Addr;

use sha1::{Digest, Sha1};

/// Prefix of every workload veth on the host (Felix matches `cali+`).
pub const VETH_PREFIX: &str = "cali";

/// The IPAM handle of a container's addresses, as Calico's CNI plugin names it.
pub fn handle_id(container_id: &str) -> String {
    format!("k8s-pod-network.{container_id}")
}

/// The container id back from a handle this plugin made.
pub fn container_of_handle(handle: &str) -> Option<&str> {
    handle.strip_prefix("k8s-pod-network.")
}

/// `cali` + the first 11 hex digits of SHA-1 over `<namespace>.<pod>`: 15 characters, the
/// kernel's limit, and stable across restarts of the same pod.
pub fn host_veth_name(namespace: &str, pod: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    format!("{VETH_PREFIX}{}", &hex::encode(digest)[..11])
}

/// The EUI-64 link-local address of a MAC: the IPv6 gateway the container routes through is
/// the host veth's own link-local address (derived from ee:ee:ee:ee:ee:ee).
pub fn link_local_of_mac(mac: [u8; 6]) -> Ipv6Addr {
    let b = [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ];
    Ipv6Addr::from(b)
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
    fn gateway_of_calico_mac() {
        assert_eq!(
            link_local_of_mac([0xee; 6]),
            "fe80::ecee:eeff:feee:eeee".parse::<Ipv6Addr>().unwrap()
        );
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
