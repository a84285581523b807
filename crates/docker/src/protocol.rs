//! The libnetwork remote plugin protocol: request and response bodies of `/Plugin.Activate`,
//! `/NetworkDriver.*` and `/IpamDriver.*`, and the pure parsing that turns a request body into
//! a typed request or a [`ProtocolError`] naming the field that was wrong.
//!
//! Field names are Docker's (PascalCase). Unknown fields are accepted: newer daemons add
//! fields, and refusing them would break a working setup for no gain.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Content type dockerd expects from plugins.
pub const PLUGIN_CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("{endpoint}: request body is not valid JSON: {reason}")]
    NotJson { endpoint: String, reason: String },
    #[error("{endpoint}: field {field}: {reason}")]
    BadField {
        endpoint: String,
        field: String,
        reason: String,
    },
}

/// Parses a request body of `endpoint` (e.g. `NetworkDriver.Join`). An empty body is read as
/// `{}` (dockerd sends `null` or nothing for argument-less calls).
pub fn parse_request<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, ProtocolError> {
    let trimmed = body.trim_ascii();
    let text: &[u8] = if trimmed.is_empty() || trimmed == b"null" {
        b"{}"
    } else {
        trimmed
    };
    let value: Value = serde_json::from_slice(text).map_err(|e| ProtocolError::NotJson {
        endpoint: endpoint.to_string(),
        reason: e.to_string(),
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ProtocolError::BadField {
            endpoint: endpoint.to_string(),
            field: if path == "." { "(body)".into() } else { path },
            reason: e.into_inner().to_string(),
        }
    })
}

/// A field that must be present and non-empty.
pub fn required<'a>(endpoint: &str, field: &str, value: &'a str) -> Result<&'a str, ProtocolError> {
    if value.is_empty() {
        return Err(ProtocolError::BadField {
            endpoint: endpoint.to_string(),
            field: field.to_string(),
            reason: "is required and must not be empty".into(),
        });
    }
    Ok(value)
}

/// The error body every libnetwork call answers with on failure.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrResponse {
    #[serde(rename = "Err")]
    pub err: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ActivateResponse {
    #[serde(rename = "Implements")]
    pub implements: Vec<&'static str>,
}

// ---- NetworkDriver ----

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCapabilities {
    pub scope: &'static str,
    pub connectivity_scope: &'static str,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<EndpointInterface>,
    pub options: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointResponse {
    pub interface: CreatedInterface,
}

/// Only what the driver chose; fields dockerd already set must be left out.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CreatedInterface {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

/// `DeleteEndpoint`, `EndpointOperInfo`, `Leave`, `RevokeExternalConnectivity`,
/// `ProgramExternalConnectivity` (its options are ignored).
#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
    pub options: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

/// libnetwork route types: 0 = via next hop, 1 = connected (on-link).
pub const ROUTE_TYPE_CONNECTED: u8 = 1;

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRoute {
    pub destination: String,
    pub route_type: u8,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    pub static_routes: Vec<StaticRoute>,
    pub disable_gateway_service: bool,
}

// ---- IpamDriver ----

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct IpamCapabilities {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    pub requires_request_replay: bool,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpaces {
    pub local_default_address_space: &'static str,
    pub global_default_address_space: &'static str,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPoolRequest {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    pub options: Option<BTreeMap<String, String>>,
    pub v6: bool,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressResponse {
    pub address: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_null_bodies_read_as_empty_objects() {
        let r: NetworkRequest = parse_request("NetworkDriver.DeleteNetwork", b"").unwrap();
        assert_eq!(r.network_id, "");
        let r: NetworkRequest = parse_request("NetworkDriver.DeleteNetwork", b" null ").unwrap();
        assert_eq!(r.network_id, "");
    }

    #[test]
    fn create_endpoint_parses_docker_body() {
        let body = br#"{"NetworkID":"n1","EndpointID":"0123456789abcdef","Interface":
            {"Address":"192.168.0.1/32","AddressIPv6":"","MacAddress":""},"Options":{"x":1},
            "Unknown":true}"#;
        let r: CreateEndpointRequest = parse_request("NetworkDriver.CreateEndpoint", body).unwrap();
        assert_eq!(r.endpoint_id, "0123456789abcdef");
        assert_eq!(r.interface.unwrap().address, "192.168.0.1/32");
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let body = br#"{"NetworkID":"n1","EndpointID":42}"#;
        let err = parse_request::<EndpointRequest>("NetworkDriver.Leave", body).unwrap_err();
        match &err {
            ProtocolError::BadField {
                endpoint, field, ..
            } => {
                assert_eq!(endpoint, "NetworkDriver.Leave");
                assert_eq!(field, "EndpointID");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("EndpointID"), "{err}");
    }

    #[test]
    fn nested_field_paths_are_reported() {
        let body = br#"{"NetworkID":"n","IPv4Data":[{"Pool":7}]}"#;
        let err =
            parse_request::<CreateNetworkRequest>("NetworkDriver.CreateNetwork", body).unwrap_err();
        assert!(err.to_string().contains("IPv4Data[0].Pool"), "{err}");
    }

    #[test]
    fn broken_json_is_not_json() {
        let err =
            parse_request::<NetworkRequest>("NetworkDriver.CreateNetwork", b"{oops").unwrap_err();
        assert!(matches!(err, ProtocolError::NotJson { .. }));
    }

    #[test]
    fn required_rejects_empty() {
        assert!(required("E", "NetworkID", "").is_err());
        assert_eq!(required("E", "NetworkID", "x").unwrap(), "x");
    }

    #[test]
    fn join_response_serialises_like_libnetwork_expects() {
        let r = JoinResponse {
            interface_name: InterfaceName {
                src_name: "tempabc".into(),
                dst_prefix: "cali".into(),
            },
            gateway: "169.254.1.1".into(),
            gateway_ipv6: String::new(),
            static_routes: vec![StaticRoute {
                destination: "169.254.1.1/32".into(),
                route_type: ROUTE_TYPE_CONNECTED,
                next_hop: String::new(),
            }],
            disable_gateway_service: false,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["InterfaceName"]["SrcName"], "tempabc");
        assert_eq!(v["InterfaceName"]["DstPrefix"], "cali");
        assert_eq!(v["Gateway"], "169.254.1.1");
        assert!(v.get("GatewayIPv6").is_none());
        assert_eq!(v["StaticRoutes"][0]["RouteType"], 1);
    }
}
