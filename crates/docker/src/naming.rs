//! Names and fixed values of Calico's libnetwork integration (facts from Calico's plugin):
//! host-side veth `cali` + the first 11 characters of the endpoint id, the temporary container
//! end `temp` + the same 11, renamed by dockerd to `cali0`; the container MAC
//! `ee:ee:ee:ee:ee:ee`; the link-local next hop 169.254.1.1 answered by proxy ARP;
//! WorkloadEndpoint names `<node>-libnetwork-libnetwork-<endpoint>` in namespace `libnetwork`.

use std::net::Ipv4Addr;

pub const HOST_VETH_PREFIX: &str = calico_api::names::WORKLOAD_IFACE_PREFIX;
pub const TEMP_VETH_PREFIX: &str = "temp";
/// dockerd names the moved interface `<prefix><index>`: `cali0`.
pub const CONTAINER_IF_PREFIX: &str = calico_api::names::WORKLOAD_IFACE_PREFIX;
/// Linux interface names are at most 15 bytes: 4 of prefix + 11 of endpoint id.
pub const ENDPOINT_ID_CHARS: usize = 11;
pub const CONTAINER_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// calico-dataplane's workload gateway (the recipe's).
pub const IPV4_GATEWAY: Ipv4Addr = calico_dataplane::GATEWAY_V4;
pub const ORCHESTRATOR: &str = calico_api::names::ORCHESTRATOR_LIBNETWORK;
pub const WORKLOAD: &str = "libnetwork";
pub const WEP_NAMESPACE: &str = "libnetwork";

/// Pool ids handed to dockerd when a network names no subnet: "any Calico pool".
pub const POOL_ID_V4: &str = "CalicoPoolIPv4";
pub const POOL_ID_V6: &str = "CalicoPoolIPv6";
pub const LOCAL_ADDRESS_SPACE: &str = "CalicoLocalAddressSpace";
pub const GLOBAL_ADDRESS_SPACE: &str = "CalicoGlobalAddressSpace";
/// The pool and gateway reported for a network without a subnet. The gateway value also tells
/// the network driver that Calico IPAM is in use (any other IPAM would give a real gateway).
pub const ANY_V4: &str = "0.0.0.0/0";
pub const ANY_V6: &str = "::/0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamingError {
    #[error("endpoint id {id:?} is empty or has characters other than [0-9a-zA-Z_-]")]
    BadEndpointId { id: String },
    #[error("node name {node:?} is empty or starts or ends with '-'")]
    BadNodeName { node: String },
}

fn endpoint_prefix(endpoint_id: &str) -> Result<&str, NamingError> {
    let ok = !endpoint_id.is_empty()
        && endpoint_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(NamingError::BadEndpointId {
            id: endpoint_id.to_string(),
        });
    }
    Ok(&endpoint_id[..endpoint_id.len().min(ENDPOINT_ID_CHARS)])
}

/// `cali` + the first 11 characters of the endpoint id.
pub fn host_veth_name(endpoint_id: &str) -> Result<String, NamingError> {
    Ok(format!(
        "{HOST_VETH_PREFIX}{}",
        endpoint_prefix(endpoint_id)?
    ))
}

/// The container end's name until dockerd moves and renames it.
pub fn temp_veth_name(endpoint_id: &str) -> Result<String, NamingError> {
    Ok(format!(
        "{TEMP_VETH_PREFIX}{}",
        endpoint_prefix(endpoint_id)?
    ))
}

/// `<node>-libnetwork-libnetwork-<endpoint>`, dashes inside each part doubled (Calico's rule,
/// which keeps the name unambiguous).
pub fn workload_endpoint_name(node: &str, endpoint_id: &str) -> Result<String, NamingError> {
    if node.is_empty() || node.starts_with('-') || node.ends_with('-') {
        return Err(NamingError::BadNodeName {
            node: node.to_string(),
        });
    }
    endpoint_prefix(endpoint_id)?;
    let esc = |s: &str| s.replace('-', "--");
    Ok(format!(
        "{}-{ORCHESTRATOR}-{WORKLOAD}-{}",
        esc(node),
        esc(endpoint_id)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_style_names() {
        let id = "cce21fc3677b0f5a9e1d";
        assert_eq!(host_veth_name(id).unwrap(), "calicce21fc3677");
        assert_eq!(temp_veth_name(id).unwrap(), "tempcce21fc3677");
    }

    #[test]
    fn short_ids_are_used_whole_and_bad_ids_refused() {
        assert_eq!(host_veth_name("abc").unwrap(), "caliabc");
        assert!(host_veth_name("").is_err());
        assert!(host_veth_name("ab/c").is_err());
        assert!(host_veth_name("a b").is_err());
    }

    #[test]
    fn wep_names_escape_dashes() {
        assert_eq!(
            workload_endpoint_name("node-1", "abcdefgh").unwrap(),
            "node--1-libnetwork-libnetwork-abcdefgh"
        );
        assert!(workload_endpoint_name("-x", "abc").is_err());
    }

    proptest! {
        #[test]
        fn host_names_fit_the_kernel_limit(id in "[0-9a-f]{1,64}") {
            let n = host_veth_name(&id).unwrap();
            prop_assert!(n.len() <= 15);
            prop_assert!(n.starts_with("cali"));
            let t = temp_veth_name(&id).unwrap();
            prop_assert_eq!(&n[4..], &t[4..]);
        }
    }
}
