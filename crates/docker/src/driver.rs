//! The network and IPAM driver behaviour: one method per libnetwork call, taking the raw
//! request body and answering a JSON value or a [`DriverError`] (sent as `{"Err": ...}`).
//! Behaviour follows Calico's libnetwork plugin, except that the driver reports local scope
//! (modern Docker has no cluster store; networks are shared through our datastore by the
//! syncer) and plumbs the host side itself (veth, sysctls, /32 route).

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_api::{
    Action, EntityRule, ObjectMeta, Profile, ProfileSpec, Rule, WorkloadEndpoint,
    WorkloadEndpointSpec,
};
use calico_datastore::{Datastore, ResourceError};
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::engine::{DockerEngine, EngineError};
use crate::ipam::{AddressAllocator, IpamError, Pool};
use crate::naming::{self, NamingError};
use crate::plumbing::{EndpointPlumber, PlumbingError};
use crate::protocol::{self as p, ProtocolError, parse_request, required};

/// Docker's option key for `--ipv6` on `docker network create`.
const OPT_ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// Docker's key for the options given with `-o` on `docker network create`.
const OPT_GENERIC: &str = "com.docker.network.generic";
/// The `--ipam-opt` that picks an IPPool by name.
pub const IPAM_OPT_POOL: &str = "pool";
const GATEWAY_DATA_KEY: &str = "com.docker.network.gateway";
const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("{endpoint}: {reason}")]
    Unsupported { endpoint: String, reason: String },
    #[error("unknown plugin call {endpoint:?}")]
    UnknownEndpoint { endpoint: String },
    #[error(transparent)]
    Naming(#[from] NamingError),
    #[error("IPAM: {0}")]
    Ipam(#[from] IpamError),
    #[error("endpoint {endpoint}: {source}")]
    Plumbing {
        endpoint: String,
        #[source]
        source: Box<PlumbingError>,
    },
    #[error("datastore: {0}")]
    Datastore(#[from] ResourceError),
    #[error("docker: {0}")]
    Engine(#[from] EngineError),
    #[error("endpoint {endpoint}: no WorkloadEndpoint {name} (CreateEndpoint did not run here)")]
    NoWorkloadEndpoint { endpoint: String, name: String },
    #[error(
        "network {network}: its name is not in the datastore and dockerd's API did not give it ({reason})"
    )]
    NetworkName { network: String, reason: String },
    #[error("datastore: {0}")]
    Kv(#[from] calico_datastore::KvError),
    #[error("endpoint {endpoint}: stored address {value:?} is not a CIDR")]
    BadStoredAddress { endpoint: String, value: String },
}

impl DriverError {
    /// Malformed requests are the caller's fault (400); the rest are ours (500).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            DriverError::Protocol(_)
                | DriverError::Unsupported { .. }
                | DriverError::Naming(_)
                | DriverError::UnknownEndpoint { .. }
        )
    }
}

#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// This host's Calico node name (WorkloadEndpoint `spec.node`, IPAM block affinity).
    pub hostname: String,
}

/// Network id → name, written when learnt, so that `CreateEndpoint` does not depend on the
/// Docker API: while dockerd restarts containers at start-up its API is not served yet, and a
/// driver waiting on it would make every restart-policy container fail.
pub const NETWORK_NAMES_PREFIX: &str = "/calico-rs/docker/network-names/";
/// How long `CreateEndpoint` waits for dockerd's API when the name is not known yet.
const NAME_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Both drivers: they share the datastore and the allocator.
pub struct Driver<A, P> {
    pub config: DriverConfig,
    pub kv: calico_datastore::EtcdClient,
    pub datastore: Datastore,
    pub allocator: A,
    pub plumber: P,
    pub engine: DockerEngine,
}

fn unsupported(endpoint: &str, reason: impl Into<String>) -> DriverError {
    DriverError::Unsupported {
        endpoint: endpoint.to_string(),
        reason: reason.into(),
    }
}

/// The address part of `a.b.c.d/len` (the length is ignored: Calico always uses /32, /128).
pub fn parse_interface_address(
    endpoint: &str,
    field: &str,
    value: &str,
) -> Result<IpAddr, ProtocolError> {
    value
        .parse::<IpNet>()
        .map(|n| n.addr())
        .or_else(|_| value.parse::<IpAddr>())
        .map_err(|_| ProtocolError::BadField {
            endpoint: endpoint.to_string(),
            field: field.to_string(),
            reason: format!("{value:?} is not an IP address or CIDR"),
        })
}

fn allow(source: Option<EntityRule>) -> Rule {
    Rule {
        action: Action::Allow,
        source,
        destination: None,
        http: None,
        icmp: None,
        ip_version: None,
        metadata: None,
        not_icmp: None,
        not_protocol: None,
        protocol: None,
    }
}

/// Calico's default profile for a network: members get the label `<network>`; ingress only
/// from endpoints carrying it, egress anywhere. Together: same-network-only.
pub fn network_profile(network: &str) -> Profile {
    let mut profile = Profile::new(
        network,
        ProfileSpec {
            ingress: vec![allow(Some(EntityRule {
                selector: Some(format!("has({network})")),
                ..Default::default()
            }))],
            egress: vec![allow(None)],
            labels_to_apply: BTreeMap::from([(network.to_string(), String::new())]),
        },
    );
    profile.metadata = ObjectMeta {
        name: Some(network.to_string()),
        ..Default::default()
    };
    profile
}

/// Checks `CreateNetwork` options as Calico does: only `--ipv6` is accepted; any other flag set
/// or `-o` option is refused by name.
pub fn check_network_options(
    endpoint: &str,
    options: &BTreeMap<String, Value>,
) -> Result<(), DriverError> {
    for (key, value) in options {
        if key == OPT_ENABLE_IPV6 {
            continue;
        }
        let refused = match value {
            Value::Bool(b) => {
                b.then(|| format!("--{}", key.trim_start_matches("com.docker.network.")))
            }
            Value::Object(m) if key == OPT_GENERIC => {
                (!m.is_empty()).then(|| m.keys().cloned().collect::<Vec<_>>().join(", "))
            }
            Value::Object(m) => (!m.is_empty()).then(|| key.clone()),
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            other => Some(format!("{key} ({other})")),
        };
        if let Some(flag) = refused {
            return Err(unsupported(
                endpoint,
                format!("the Calico driver does not support the option {flag}"),
            ));
        }
    }
    Ok(())
}

/// The pool a network uses, from `RequestPool`'s subnet and `--ipam-opt pool=<IPPool name>`.
/// Returns (PoolID, Pool) for the response.
pub fn choose_pool(
    req: &p::RequestPoolRequest,
    pools: &[Pool],
) -> Result<(String, String), DriverError> {
    const E: &str = "IpamDriver.RequestPool";
    if !req.sub_pool.is_empty() {
        return Err(unsupported(
            E,
            "SubPool (--ip-range) is not supported: addresses come from Calico IPPools",
        ));
    }
    let options = req.options.clone().unwrap_or_default();
    if let Some(k) = options.keys().find(|k| k.as_str() != IPAM_OPT_POOL) {
        return Err(unsupported(
            E,
            format!("unknown --ipam-opt {k:?} (only {IPAM_OPT_POOL}=<IPPool name> is supported)"),
        ));
    }
    let v6 = req.v6;
    let family_ok = |pool: &Pool| pool.cidr.addr().is_ipv6() == v6;
    let by_name = match options.get(IPAM_OPT_POOL) {
        Some(name) => Some(
            pools
                .iter()
                .find(|p| &p.name == name && family_ok(p))
                .ok_or_else(|| {
                    unsupported(
                        E,
                        format!(
                            "--ipam-opt pool={name}: no enabled IPv{} IPPool of that name",
                            if v6 { 6 } else { 4 }
                        ),
                    )
                })?,
        ),
        None => None,
    };
    let by_subnet = if req.pool.is_empty() {
        None
    } else {
        let net: IpNet = req.pool.parse().map_err(|_| ProtocolError::BadField {
            endpoint: E.into(),
            field: "Pool".into(),
            reason: format!("{:?} is not a CIDR", req.pool),
        })?;
        Some(pools.iter().find(|p| p.cidr == net).ok_or_else(|| {
            unsupported(
                E,
                format!("--subnet {net} must match the CIDR of an enabled Calico IPPool"),
            )
        })?)
    };
    match (by_name, by_subnet) {
        (Some(a), Some(b)) if a != b => Err(unsupported(
            E,
            format!(
                "--subnet {} and --ipam-opt pool={} name different IPPools",
                b.cidr, a.name
            ),
        )),
        (_, Some(p)) => Ok((p.cidr.to_string(), p.cidr.to_string())),
        // No subnet: the pool reported to dockerd must stay the invalid 0.0.0.0/0 (or ::/0).
        // For a subnet it did not ask for, libnetwork checks overlap with the host's routes and,
        // on overlap (our own /32 routes), releases and asks again forever. The PoolID still
        // names the chosen IPPool, which RequestAddress uses.
        (Some(p), None) => Ok((
            p.cidr.to_string(),
            if v6 { naming::ANY_V6 } else { naming::ANY_V4 }.to_string(),
        )),
        (None, None) if v6 => Ok((naming::POOL_ID_V6.into(), naming::ANY_V6.into())),
        (None, None) => Ok((naming::POOL_ID_V4.into(), naming::ANY_V4.into())),
    }
}

/// The pools `RequestAddress` may take from for a PoolID.
pub fn pools_for_id<'a>(pool_id: &str, pools: &'a [Pool]) -> Result<Vec<&'a Pool>, DriverError> {
    const E: &str = "IpamDriver.RequestAddress";
    let family = |v6: bool| pools.iter().filter(move |p| p.cidr.addr().is_ipv6() == v6);
    match pool_id {
        naming::POOL_ID_V4 => Ok(family(false).collect()),
        naming::POOL_ID_V6 => Ok(family(true).collect()),
        other => {
            let net: IpNet = other.parse().map_err(|_| ProtocolError::BadField {
                endpoint: E.into(),
                field: "PoolID".into(),
                reason: format!("{other:?} is neither a Calico pool id nor a CIDR"),
            })?;
            let found: Vec<_> = pools.iter().filter(|p| p.cidr == net).collect();
            if found.is_empty() {
                return Err(unsupported(
                    E,
                    format!(
                        "the network's IPPool {net} no longer exists or is disabled; re-create it first"
                    ),
                ));
            }
            Ok(found)
        }
    }
}

impl Driver<crate::ipam::CalicoIpam, crate::plumbing::DataplanePlumber> {
    /// The production driver: `calico-ipam` for addresses, `calico-dataplane` for the host side.
    pub fn with_etcd(
        hostname: impl Into<String>,
        kv: calico_datastore::EtcdClient,
        docker_socket: impl AsRef<std::path::Path>,
    ) -> Self {
        Driver {
            config: DriverConfig {
                hostname: hostname.into(),
            },
            datastore: Datastore::from_etcd(kv.clone()),
            allocator: crate::ipam::CalicoIpam::new(kv.clone()),
            kv,
            plumber: crate::plumbing::DataplanePlumber::new(),
            engine: DockerEngine::new(docker_socket),
        }
    }

    /// Veths get the MTU calico-node detected and wrote to `path` (its `<state dir>/mtu`),
    /// read at each endpoint creation; without it (or while the file does not exist) the
    /// kernel's default.
    pub fn with_mtu_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.plumber = self.plumber.with_mtu_file(path);
        self
    }
}

impl<A: AddressAllocator, P: EndpointPlumber> Driver<A, P> {
    /// Dispatches one call (`NetworkDriver.Join`, ...).
    pub async fn handle(&self, call: &str, body: &[u8]) -> Result<Value, DriverError> {
        tracing::debug!(call, body = %String::from_utf8_lossy(body), "plugin call");
        match call {
            "NetworkDriver.GetCapabilities" => Ok(json!(p::NetworkCapabilities {
                scope: "local",
                connectivity_scope: "local",
            })),
            "NetworkDriver.CreateNetwork" => self.create_network(body),
            "NetworkDriver.DeleteNetwork" | "NetworkDriver.FreeNetwork" => {
                let r: p::NetworkRequest = parse_request(call, body)?;
                required(call, "NetworkID", &r.network_id)?;
                Ok(json!({}))
            }
            "NetworkDriver.AllocateNetwork" => Ok(json!({"Options": {}})),
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(body).await,
            "NetworkDriver.DeleteEndpoint" => self.delete_endpoint(body).await,
            "NetworkDriver.EndpointOperInfo" => {
                let r: p::EndpointRequest = parse_request(call, body)?;
                required(call, "EndpointID", &r.endpoint_id)?;
                Ok(json!({"Value": {}}))
            }
            "NetworkDriver.Join" => self.join(body).await,
            "NetworkDriver.Leave" => self.leave(body).await,
            "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete"
            | "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity" => {
                let _: Value = parse_request(call, body)?;
                Ok(json!({}))
            }
            "IpamDriver.GetCapabilities" => Ok(json!(p::IpamCapabilities {
                requires_mac_address: false,
                requires_request_replay: false,
            })),
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!(p::AddressSpaces {
                local_default_address_space: naming::LOCAL_ADDRESS_SPACE,
                global_default_address_space: naming::GLOBAL_ADDRESS_SPACE,
            })),
            "IpamDriver.RequestPool" => {
                let r: p::RequestPoolRequest = parse_request(call, body)?;
                let pools = self.allocator.pools().await?;
                let (pool_id, pool) = choose_pool(&r, &pools)?;
                let gateway = if r.v6 { naming::ANY_V6 } else { naming::ANY_V4 };
                Ok(json!(p::RequestPoolResponse {
                    pool_id,
                    pool,
                    data: BTreeMap::from([(GATEWAY_DATA_KEY.to_string(), gateway.to_string())]),
                }))
            }
            "IpamDriver.ReleasePool" => {
                let r: p::ReleasePoolRequest = parse_request(call, body)?;
                required(call, "PoolID", &r.pool_id)?;
                Ok(json!({}))
            }
            "IpamDriver.RequestAddress" => self.request_address(body).await,
            "IpamDriver.ReleaseAddress" => {
                let r: p::ReleaseAddressRequest = parse_request(call, body)?;
                let ip = parse_interface_address(
                    call,
                    "Address",
                    required(call, "Address", &r.address)?,
                )?;
                self.allocator.release(ip).await?;
                tracing::info!(%ip, "address released");
                Ok(json!({}))
            }
            other => Err(DriverError::UnknownEndpoint {
                endpoint: other.to_string(),
            }),
        }
    }

    fn create_network(&self, body: &[u8]) -> Result<Value, DriverError> {
        const E: &str = "NetworkDriver.CreateNetwork";
        let r: p::CreateNetworkRequest = parse_request(E, body)?;
        required(E, "NetworkID", &r.network_id)?;
        check_network_options(E, &r.options)?;
        for (i, d) in r.ipv4_data.iter().flatten().enumerate() {
            if d.gateway != naming::ANY_V4 {
                return Err(unsupported(
                    E,
                    format!(
                        "IPv4Data[{i}].Gateway is {:?}: the network must use the calico-ipam IPAM driver",
                        d.gateway
                    ),
                ));
            }
        }
        for (i, d) in r.ipv6_data.iter().flatten().enumerate() {
            if d.address_space != naming::GLOBAL_ADDRESS_SPACE
                && d.address_space != naming::LOCAL_ADDRESS_SPACE
            {
                return Err(unsupported(
                    E,
                    format!(
                        "IPv6Data[{i}].AddressSpace is {:?}: the network must use the calico-ipam IPAM driver",
                        d.address_space
                    ),
                ));
            }
        }
        tracing::info!(network = %r.network_id, "network created");
        Ok(json!({}))
    }

    async fn create_endpoint(&self, body: &[u8]) -> Result<Value, DriverError> {
        const E: &str = "NetworkDriver.CreateEndpoint";
        let r: p::CreateEndpointRequest = parse_request(E, body)?;
        let network_id = required(E, "NetworkID", &r.network_id)?;
        let endpoint_id = required(E, "EndpointID", &r.endpoint_id)?;
        let iface = r.interface.unwrap_or_default();
        let mut networks = Vec::new();
        if !iface.address.is_empty() {
            networks.push(IpNet::from(parse_interface_address(
                E,
                "Interface.Address",
                &iface.address,
            )?));
        }
        if !iface.address_ipv6.is_empty() {
            networks.push(IpNet::from(parse_interface_address(
                E,
                "Interface.AddressIPv6",
                &iface.address_ipv6,
            )?));
        }
        if networks.is_empty() {
            return Err(ProtocolError::BadField {
                endpoint: E.into(),
                field: "Interface.Address".into(),
                reason: "no address was assigned to the endpoint (is the IPAM driver calico-ipam?)"
                    .into(),
            }
            .into());
        }
        let user_mac = !iface.mac_address.is_empty();
        let mac = if user_mac {
            iface.mac_address.to_ascii_lowercase()
        } else {
            naming::CONTAINER_MAC.to_string()
        };
        let host_if = naming::host_veth_name(endpoint_id)?;
        let wep_name = naming::workload_endpoint_name(&self.config.hostname, endpoint_id)?;

        // Calico names the profile after the network.
        let network_name = self.network_name(network_id).await?;
        match self.datastore.create(&network_profile(&network_name)).await {
            Ok(_) => tracing::info!(profile = %network_name, "profile created"),
            Err(ResourceError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut wep = WorkloadEndpoint::new(
            &wep_name,
            WorkloadEndpointSpec {
                orchestrator: Some(naming::ORCHESTRATOR.into()),
                workload: Some(naming::WORKLOAD.into()),
                node: Some(self.config.hostname.clone()),
                endpoint: Some(endpoint_id.to_string()),
                ip_networks: networks.iter().map(|n| n.to_string()).collect(),
                profiles: vec![network_name.clone()],
                interface_name: Some(host_if),
                mac: Some(mac.clone()),
                ..Default::default()
            },
        );
        wep.metadata = ObjectMeta {
            name: Some(wep_name),
            namespace: Some(naming::WEP_NAMESPACE.into()),
            labels: Some(BTreeMap::from([
                (
                    calico_api::names::LABEL_NAMESPACE.into(),
                    naming::WEP_NAMESPACE.into(),
                ),
                (
                    calico_api::names::LABEL_ORCHESTRATOR.into(),
                    naming::ORCHESTRATOR.into(),
                ),
            ])),
            ..Default::default()
        };
        self.datastore.create(&wep).await?;
        tracing::info!(endpoint = endpoint_id, network = %network_name, addresses = ?networks, "endpoint created");
        Ok(json!(p::CreateEndpointResponse {
            interface: p::CreatedInterface {
                mac_address: if user_mac { String::new() } else { mac },
            },
        }))
    }

    /// The network's name: from the datastore, else from dockerd (then remembered).
    async fn network_name(&self, network_id: &str) -> Result<String, DriverError> {
        let key = format!("{NETWORK_NAMES_PREFIX}{network_id}");
        if let Some(kv) = self.kv.get(&key).await? {
            return Ok(String::from_utf8_lossy(&kv.value).into_owned());
        }
        let fail = |reason: String| DriverError::NetworkName {
            network: network_id.to_string(),
            reason,
        };
        let engine = self.engine.clone().with_timeout(NAME_LOOKUP_TIMEOUT);
        let name = match engine.inspect_network(network_id).await {
            Ok(Some(n)) if !n.name.is_empty() => n.name,
            Ok(_) => return Err(fail("dockerd does not know the network".into())),
            Err(e) => return Err(fail(e.to_string())),
        };
        self.kv.put(&key, name.clone().into_bytes()).await?;
        Ok(name)
    }

    async fn delete_endpoint(&self, body: &[u8]) -> Result<Value, DriverError> {
        const E: &str = "NetworkDriver.DeleteEndpoint";
        let r: p::EndpointRequest = parse_request(E, body)?;
        let endpoint_id = required(E, "EndpointID", &r.endpoint_id)?;
        let name = naming::workload_endpoint_name(&self.config.hostname, endpoint_id)?;
        match self
            .datastore
            .delete::<WorkloadEndpoint>(Some(naming::WEP_NAMESPACE), &name, None)
            .await
        {
            Ok(_) | Err(ResourceError::NotFound { .. }) => Ok(json!({})),
            Err(e) => Err(e.into()),
        }
    }

    async fn join(&self, body: &[u8]) -> Result<Value, DriverError> {
        const E: &str = "NetworkDriver.Join";
        let r: p::JoinRequest = parse_request(E, body)?;
        required(E, "NetworkID", &r.network_id)?;
        let endpoint_id = required(E, "EndpointID", &r.endpoint_id)?;
        let host_if = naming::host_veth_name(endpoint_id)?;
        let temp_if = naming::temp_veth_name(endpoint_id)?;
        let name = naming::workload_endpoint_name(&self.config.hostname, endpoint_id)?;
        let wep: WorkloadEndpoint = self
            .datastore
            .get(Some(naming::WEP_NAMESPACE), &name)
            .await?
            .ok_or_else(|| DriverError::NoWorkloadEndpoint {
                endpoint: endpoint_id.to_string(),
                name: name.clone(),
            })?;
        let addresses = wep
            .spec
            .ip_networks
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .map(|n| n.addr())
                    .map_err(|_| DriverError::BadStoredAddress {
                        endpoint: endpoint_id.to_string(),
                        value: n.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let plumbing = |source| DriverError::Plumbing {
            endpoint: endpoint_id.to_string(),
            source: Box::new(source),
        };
        // A veth left by an earlier failed attempt of this same endpoint would block creation.
        self.plumber.remove(&host_if).await.map_err(plumbing)?;
        self.plumber
            .create(&host_if, &temp_if, &addresses)
            .await
            .map_err(plumbing)?;
        let gw = naming::IPV4_GATEWAY.to_string();
        let has_v4 = addresses.iter().any(|a| a.is_ipv4());
        tracing::info!(endpoint = endpoint_id, interface = %host_if, "joined");
        Ok(json!(p::JoinResponse {
            interface_name: p::InterfaceName {
                src_name: temp_if,
                dst_prefix: naming::CONTAINER_IF_PREFIX.into(),
            },
            gateway: if has_v4 { gw.clone() } else { String::new() },
            gateway_ipv6: String::new(),
            static_routes: if has_v4 {
                vec![p::StaticRoute {
                    destination: format!("{gw}/32"),
                    route_type: p::ROUTE_TYPE_CONNECTED,
                    next_hop: String::new(),
                }]
            } else {
                Vec::new()
            },
            disable_gateway_service: false,
        }))
    }

    async fn leave(&self, body: &[u8]) -> Result<Value, DriverError> {
        const E: &str = "NetworkDriver.Leave";
        let r: p::EndpointRequest = parse_request(E, body)?;
        let endpoint_id = required(E, "EndpointID", &r.endpoint_id)?;
        let host_if = naming::host_veth_name(endpoint_id)?;
        self.plumber
            .remove(&host_if)
            .await
            .map_err(|source| DriverError::Plumbing {
                endpoint: endpoint_id.to_string(),
                source: Box::new(source),
            })?;
        Ok(json!({}))
    }

    async fn request_address(&self, body: &[u8]) -> Result<Value, DriverError> {
        const E: &str = "IpamDriver.RequestAddress";
        let r: p::RequestAddressRequest = parse_request(E, body)?;
        let pool_id = required(E, "PoolID", &r.pool_id)?;
        let options = r.options.unwrap_or_default();
        if options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_DATA_KEY) {
            return Err(unsupported(
                E,
                "Calico IPAM does not hand out gateway addresses (containers route via 169.254.1.1)",
            ));
        }
        let host = &self.config.hostname;
        let handle = format!("libnetwork.{host}");
        let ip = if r.address.is_empty() {
            let pools = self.allocator.pools().await?;
            let candidates = pools_for_id(pool_id, &pools)?;
            if candidates.is_empty() {
                return Err(IpamError::NoPool {
                    version: if pool_id == naming::POOL_ID_V6 { 6 } else { 4 },
                }
                .into());
            }
            let mut last = None;
            let mut chosen = None;
            for pool in candidates {
                match self.allocator.auto_assign(pool, host, &handle).await {
                    Ok(ip) => {
                        chosen = Some(ip);
                        break;
                    }
                    Err(e @ IpamError::Exhausted { .. }) => last = Some(e),
                    Err(e) => return Err(e.into()),
                }
            }
            match (chosen, last) {
                (Some(ip), _) => ip,
                (None, Some(e)) => return Err(e.into()),
                (None, None) => return Err(IpamError::NoPool { version: 4 }.into()),
            }
        } else {
            let ip = parse_interface_address(E, "Address", &r.address)?;
            self.allocator.assign_ip(ip, host, &handle).await?;
            ip
        };
        Ok(json!(p::RequestAddressResponse {
            address: IpNet::from(ip).to_string(),
            data: BTreeMap::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools() -> Vec<Pool> {
        vec![
            Pool {
                name: "default-ipv4-ippool".into(),
                cidr: "192.168.0.0/16".parse().unwrap(),
                block_prefix: 26,
            },
            Pool {
                name: "other".into(),
                cidr: "10.10.0.0/16".parse().unwrap(),
                block_prefix: 26,
            },
            Pool {
                name: "v6".into(),
                cidr: "fd00:1::/64".parse().unwrap(),
                block_prefix: 122,
            },
        ]
    }

    fn pool_req(pool: &str, opts: &[(&str, &str)], v6: bool) -> p::RequestPoolRequest {
        p::RequestPoolRequest {
            pool: pool.into(),
            options: Some(
                opts.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            v6,
            ..Default::default()
        }
    }

    #[test]
    fn no_subnet_means_any_calico_pool() {
        let (id, pool) = choose_pool(&pool_req("", &[], false), &pools()).unwrap();
        assert_eq!(
            (id.as_str(), pool.as_str()),
            (naming::POOL_ID_V4, "0.0.0.0/0")
        );
        let (id, _) = choose_pool(&pool_req("", &[], true), &pools()).unwrap();
        assert_eq!(id, naming::POOL_ID_V6);
    }

    #[test]
    fn subnet_must_match_a_pool_exactly() {
        let (id, _) = choose_pool(&pool_req("10.10.0.0/16", &[], false), &pools()).unwrap();
        assert_eq!(id, "10.10.0.0/16");
        let err = choose_pool(&pool_req("10.10.0.0/24", &[], false), &pools()).unwrap_err();
        assert!(err.to_string().contains("must match"), "{err}");
        let err = choose_pool(&pool_req("nonsense", &[], false), &pools()).unwrap_err();
        assert!(err.to_string().contains("Pool"), "{err}");
    }

    #[test]
    fn ipam_opt_pool_selects_by_name_and_unknown_options_are_named() {
        let (id, pool) = choose_pool(&pool_req("", &[("pool", "other")], false), &pools()).unwrap();
        assert_eq!((id.as_str(), pool.as_str()), ("10.10.0.0/16", "0.0.0.0/0"));
        let err = choose_pool(&pool_req("", &[("colour", "red")], false), &pools()).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = choose_pool(
            &pool_req("192.168.0.0/16", &[("pool", "other")], false),
            &pools(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("different"), "{err}");
    }

    #[test]
    fn sub_pools_are_refused() {
        let mut r = pool_req("192.168.0.0/16", &[], false);
        r.sub_pool = "192.168.1.0/24".into();
        assert!(choose_pool(&r, &pools()).unwrap_err().is_bad_request());
    }

    #[test]
    fn pool_ids_resolve_to_pools() {
        let ps = pools();
        assert_eq!(pools_for_id(naming::POOL_ID_V4, &ps).unwrap().len(), 2);
        assert_eq!(pools_for_id(naming::POOL_ID_V6, &ps).unwrap().len(), 1);
        assert_eq!(pools_for_id("10.10.0.0/16", &ps).unwrap()[0].name, "other");
        assert!(pools_for_id("10.99.0.0/16", &ps).is_err());
    }

    #[test]
    fn network_options_only_ipv6_passes() {
        let ok: BTreeMap<String, Value> = serde_json::from_str(
            r#"{"com.docker.network.enable_ipv6":true,"com.docker.network.generic":{}}"#,
        )
        .unwrap();
        check_network_options("E", &ok).unwrap();
        let bad: BTreeMap<String, Value> =
            serde_json::from_str(r#"{"com.docker.network.internal":true}"#).unwrap();
        let err = check_network_options("E", &bad).unwrap_err();
        assert!(err.to_string().contains("--internal"), "{err}");
        let bad: BTreeMap<String, Value> =
            serde_json::from_str(r#"{"com.docker.network.generic":{"mtu":"1400"}}"#).unwrap();
        assert!(
            check_network_options("E", &bad)
                .unwrap_err()
                .to_string()
                .contains("mtu")
        );
    }

    #[test]
    fn profile_is_same_network_only() {
        let p = network_profile("cal_net1");
        assert_eq!(p.metadata.name.as_deref(), Some("cal_net1"));
        assert_eq!(
            p.spec.ingress[0]
                .source
                .as_ref()
                .unwrap()
                .selector
                .as_deref(),
            Some("has(cal_net1)")
        );
        assert!(p.spec.labels_to_apply.contains_key("cal_net1"));
        assert_eq!(p.spec.egress[0].action, Action::Allow);
    }

    #[test]
    fn interface_addresses_drop_the_length() {
        assert_eq!(
            parse_interface_address("E", "Address", "192.168.1.2/16").unwrap(),
            "192.168.1.2".parse::<IpAddr>().unwrap()
        );
        assert!(parse_interface_address("E", "Address", "x").is_err());
    }
}
