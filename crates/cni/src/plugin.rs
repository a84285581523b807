//! The `calico` plugin: ADD, DEL, CHECK, STATUS, GC.
//!
//! ADD, in order (each step named in errors and in fault injection):
//! 0. `pod` (errors only): with a Kubernetes API configured, the Pod and its Namespace
//!    ([`crate::k8s`]), read concurrently with the etcd connection; then the annotations are
//!    checked ([`crate::pod::requests`]) before anything is created.
//! 1. `ipam`: addresses from IPAM (`ipAddrsNoIpam`: none asked). `ipam.type: calico-ipam`
//!    calls the IPAM library in-process (one process, one etcd connection: faster than
//!    exec'ing `calico-ipam`, same records); any other `ipam.type` is exec'd from CNI_PATH
//!    with our environment and stdin, as CNI delegation does.
//! 2. `veth`: the pair in one netlink request, host side `cali…` with MAC ee:ee:ee:ee:ee:ee,
//!    peer CNI_IFNAME created directly in the pod.
//! 3. `container`: on this thread inside the pod's namespace once: sysctls and the netlink
//!    socket; then the link up, /32 (/128) addresses, 169.254.1.1 (and the host's link-local)
//!    routes.
//! 4. `host`: Calico's host-veth sysctls and the /32 (/128) route to the veth.
//! 5. `endpoint`: the WorkloadEndpoint (labels, profiles, ports, `ipNATs` from `floatingIPs`).
//!
//! Steps 2 to 4 are calico-dataplane's workload recipe ([`calico_dataplane::workload`]), the
//! one the Docker driver uses too.
//!
//! A failure at any step undoes the earlier ones (endpoint deleted, veth deleted, which takes
//! its peer, addresses and routes with it, addresses released by handle) before the error is
//! returned.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use calico_api::names;
use calico_api::{
    IPNAT, IPPool, ObjectMeta, WorkloadEndpoint, WorkloadEndpointSpec, workload_endpoint_name,
};
use calico_dataplane::workload;
use calico_dataplane::{CALICO_HOST_MAC, Netlink, RouteFilter, WorkloadVeth};
use calico_datastore::{Datastore, EtcdClient};
use calico_ipam::{AutoAssignArgs, Ipam};
use ipnet::IpNet;

use crate::datastore::{self, DatastoreError};
use crate::delegate;
use crate::env::{CniEnv, PodRef};
use crate::k8s::{self, K8sError};
use crate::naming;
use crate::netconf::NetConf;
use crate::pod::{self, AnnotationError, PodInfo, Requests};
use crate::spec::{CniResult, Interface, IpConfig, RouteConfig};

/// Steps of ADD, in order.
pub const ADD_STEPS: &[&str] = &["ipam", "veth", "container", "host", "endpoint"];

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
    #[error("step pod: {0}")]
    Kubernetes(#[from] K8sError),
    #[error("step ipam: {0}")]
    Annotation(#[from] AnnotationError),
    #[error("step {step}: {reason}")]
    Step { step: &'static str, reason: String },
    #[error("step {step}: fault injected (CALICO_CNI_FAULT)")]
    Injected { step: &'static str },
    #[error("CHECK: {0}")]
    Check(String),
    #[error("CHECK needs prevResult")]
    NoPrevResult,
    #[error("STATUS of IPAM plugin {plugin}: {msg}")]
    IpamStatus {
        plugin: String,
        code: u32,
        msg: String,
    },
}

impl PluginError {
    fn step(step: &'static str, e: impl std::error::Error) -> PluginError {
        PluginError::Step {
            step,
            reason: crate::error_chain(&e),
        }
    }
}

/// Fault injection for tests: `CALICO_CNI_FAULT=<step>` fails ADD right after `<step>`
/// completed. Honoured only in debug builds, never in a release binary.
fn fault(step: &'static str) -> Result<(), PluginError> {
    if cfg!(debug_assertions) && std::env::var("CALICO_CNI_FAULT").is_ok_and(|v| v == step) {
        return Err(PluginError::Injected { step });
    }
    Ok(())
}

/// Who the endpoint is for: a Kubernetes pod (CNI_ARGS) or, without one, the container.
#[derive(Debug, Clone)]
pub struct Workload {
    pub node: String,
    pub pod: Option<PodRef>,
    /// Labels, annotations, service account, ports: from the Kubernetes API when one is
    /// configured, else empty.
    pub info: PodInfo,
    pub container_id: String,
    pub ifname: String,
}

impl Workload {
    pub fn new(node: String, env: &CniEnv) -> Workload {
        Workload {
            node,
            pod: env.pod(),
            info: PodInfo::default(),
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        }
    }

    pub fn host_veth(&self) -> String {
        match &self.pod {
            Some(p) => naming::host_veth_name(&p.namespace, &p.name),
            None => format!(
                "{}{}",
                naming::VETH_PREFIX,
                &self.container_id[..self.container_id.len().min(11)]
            ),
        }
    }

    pub fn namespace(&self) -> &str {
        self.pod
            .as_ref()
            .map_or("default", |p| p.namespace.as_str())
    }

    pub fn handle(&self) -> String {
        naming::handle_id(&self.container_id)
    }

    fn spec(&self) -> WorkloadEndpointSpec {
        let mut spec = WorkloadEndpointSpec {
            node: Some(self.node.clone()),
            endpoint: Some(self.ifname.clone()),
            container_id: Some(self.container_id.clone()),
            ..Default::default()
        };
        match &self.pod {
            Some(p) => {
                spec.orchestrator = Some(names::ORCHESTRATOR_K8S.into());
                spec.pod = Some(p.name.clone());
                spec.profiles = self.info.profiles(&p.namespace);
                spec.service_account_name = self.info.service_account.clone();
                spec.ports = self.info.ports.clone();
            }
            None => spec.orchestrator = Some(names::ORCHESTRATOR_CNI.into()),
        }
        spec
    }

    pub fn endpoint_name(&self) -> Result<String, PluginError> {
        workload_endpoint_name(&self.spec()).map_err(|e| PluginError::step("endpoint", e))
    }

    /// The WorkloadEndpoint for `addrs` on `host_veth`, labelled as Calico labels pods': the
    /// pod's labels plus `projectcalico.org/namespace|orchestrator|serviceaccount`.
    pub fn endpoint(
        &self,
        addrs: &[IpAddr],
        mac: Option<[u8; 6]>,
        ip_nats: Vec<IPNAT>,
    ) -> Result<WorkloadEndpoint, PluginError> {
        let name = self.endpoint_name()?;
        let mut spec = self.spec();
        spec.interface_name = Some(self.host_veth());
        spec.ip_networks = addrs.iter().map(|a| IpNet::from(*a).to_string()).collect();
        spec.mac = mac.map(|m| calico_dataplane::link::format_mac(&m));
        spec.ip_nats = ip_nats;
        let labels = self.info.endpoint_labels(
            self.namespace(),
            spec.orchestrator.as_deref().unwrap_or_default(),
        );
        let mut wep = WorkloadEndpoint::new(&name, spec);
        wep.metadata = ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace().to_owned()),
            labels: Some(labels),
            generate_name: self.info.generate_name.clone(),
            ..Default::default()
        };
        Ok(wep)
    }
}

/// What ADD asks of Calico IPAM.
#[derive(Debug, Clone, Default)]
pub struct IpamRequest {
    /// Exactly these addresses (`ipAddrs` annotation, else CNI_ARGS `IP`).
    pub ips: Vec<IpAddr>,
    /// These pools instead of the netconf's (pool annotations).
    pub v4_pools: Option<Vec<IpNet>>,
    pub v6_pools: Option<Vec<IpNet>>,
}

/// CNI_ARGS `IP=a[,b]`: the CNI convention `calico-ipam` honours.
pub fn cni_args_ips(env: &CniEnv) -> Result<Vec<IpAddr>, PluginError> {
    let Some(v) = env.args.get("IP").filter(|v| !v.is_empty()) else {
        return Ok(vec![]);
    };
    v.split(',')
        .map(|s| {
            s.trim().parse::<IpAddr>().map_err(|_| PluginError::Step {
                step: "ipam",
                reason: format!("CNI_ARGS IP: {v:?} is not a list of addresses"),
            })
        })
        .collect()
}

/// Pool annotation entries are CIDRs or IPPool names (resolved to their CIDR in the datastore).
async fn resolve_pools(
    ds: &Datastore,
    entries: Option<&Vec<String>>,
) -> Result<Option<Vec<IpNet>>, PluginError> {
    let Some(entries) = entries else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for e in entries {
        if let Ok(net) = e.parse::<IpNet>() {
            out.push(net);
            continue;
        }
        let pool = ds
            .get::<IPPool>(None, e)
            .await
            .map_err(|err| PluginError::step("ipam", err))?
            .ok_or_else(|| PluginError::Step {
                step: "ipam",
                reason: format!("pool annotation: no IPPool named {e:?} (and not a CIDR)"),
            })?;
        out.push(pool.spec.cidr.parse().map_err(|_| PluginError::Step {
            step: "ipam",
            reason: format!("IPPool {e}: cidr {:?} is not a CIDR", pool.spec.cidr),
        })?);
    }
    Ok(Some(out))
}

/// Allocates (or, for a repeated ADD, finds) the container's addresses.
async fn ipam_add(
    conf: &NetConf,
    env: &CniEnv,
    stdin: &[u8],
    ipam: &Ipam,
    wl: &Workload,
    req: &IpamRequest,
) -> Result<Vec<IpAddr>, PluginError> {
    let ipam_conf = conf.ipam.clone().unwrap_or_default();
    if !ipam_conf.kind.is_empty() && ipam_conf.kind != "calico-ipam" {
        let r = delegate::exec(&ipam_conf.kind, env, stdin, "ADD")
            .await
            .map_err(|e| PluginError::step("ipam", e))?;
        let r: CniResult = serde_json::from_value(r.unwrap_or_default())
            .map_err(|e| PluginError::step("ipam", e))?;
        return Ok(r.ips.iter().map(|i| i.address.addr()).collect());
    }
    ipam_assign(conf, ipam, wl, req).await
}

/// What `calico-ipam` does for ADD, shared by the in-process path and the `calico-ipam` binary.
pub async fn ipam_assign(
    conf: &NetConf,
    ipam: &Ipam,
    wl: &Workload,
    req: &IpamRequest,
) -> Result<Vec<IpAddr>, PluginError> {
    let handle = wl.handle();
    let existing = ipam
        .ips_by_handle(&handle)
        .await
        .map_err(|e| PluginError::step("ipam", e))?;
    if !existing.is_empty() {
        tracing::info!(%handle, ips = ?existing, "addresses already allocated to this container");
        return Ok(existing);
    }
    let mut attrs = BTreeMap::from([("node".to_owned(), wl.node.clone())]);
    if let Some(p) = &wl.pod {
        attrs.insert("namespace".into(), p.namespace.clone());
        attrs.insert("pod".into(), p.name.clone());
    }
    attrs.insert("containerID".into(), wl.container_id.clone());
    if !req.ips.is_empty() {
        for ip in &req.ips {
            ipam.assign_ip(*ip, Some(&handle), attrs.clone(), &wl.node)
                .await
                .map_err(|e| PluginError::step("ipam", e))?;
        }
        return Ok(req.ips.clone());
    }
    let ipam_conf = conf.ipam.clone().unwrap_or_default();
    let (v4_pools, v6_pools) = conf
        .ipam_pools()
        .map_err(|e| PluginError::step("ipam", e))?;
    let got = ipam
        .auto_assign(AutoAssignArgs {
            num_v4: usize::from(ipam_conf.wants_v4()),
            num_v6: usize::from(ipam_conf.wants_v6()),
            handle_id: Some(handle),
            attrs,
            hostname: wl.node.clone(),
            v4_pools: req.v4_pools.clone().unwrap_or(v4_pools),
            v6_pools: req.v6_pools.clone().unwrap_or(v6_pools),
            ..Default::default()
        })
        .await
        .map_err(|e| PluginError::step("ipam", e))?;
    Ok(got.v4.into_iter().chain(got.v6).collect())
}

async fn ipam_release(
    conf: &NetConf,
    env: &CniEnv,
    stdin: &[u8],
    ipam: &Ipam,
    wl: &Workload,
) -> Result<(), PluginError> {
    let kind = conf.ipam.as_ref().map(|i| i.kind.as_str()).unwrap_or("");
    if !kind.is_empty() && kind != "calico-ipam" {
        delegate::exec(kind, env, stdin, "DEL")
            .await
            .map_err(|e| PluginError::step("ipam release", e))?;
        return Ok(());
    }
    let released = ipam
        .release_by_handle(&wl.handle())
        .await
        .map_err(|e| PluginError::step("ipam release", e))?;
    tracing::info!(handle = wl.handle(), ?released, "released");
    Ok(())
}

/// What ADD built so far, undone in reverse on failure.
#[derive(Default)]
struct Undo {
    ipam: bool,
    veth: Option<String>,
    endpoint: Option<(String, String)>,
}

pub struct Plugin {
    pub conf: NetConf,
    pub env: CniEnv,
    pub stdin: Vec<u8>,
    pub version: String,
}

impl Plugin {
    pub fn new(conf: NetConf, env: CniEnv, stdin: Vec<u8>) -> Plugin {
        let version = conf.effective_version();
        Plugin {
            conf,
            env,
            stdin,
            version,
        }
    }

    fn workload(&self) -> Result<Workload, PluginError> {
        Ok(Workload::new(datastore::nodename(&self.conf)?, &self.env))
    }

    fn netns(&self) -> Result<&Path, PluginError> {
        self.env.netns.as_deref().ok_or(PluginError::Step {
            step: "veth",
            reason: "CNI_NETNS is not set".into(),
        })
    }

    /// ADD. With a Kubernetes API configured ([`k8s::api_configured`]) the pod and its
    /// namespace are read from it, concurrently with the etcd connection; otherwise the pod is
    /// known by its CNI_ARGS identity only.
    pub async fn add(&self) -> Result<CniResult, PluginError> {
        let wl = self.workload()?;
        let started = std::time::Instant::now();
        tracing::info!(container = wl.container_id, pod = ?wl.pod, "ADD");
        // Checked: a datastore that is down fails ADD before anything is created, with
        // "try again later" rather than a failure half-way through IPAM.
        let etcd = datastore::connect_checked(&self.conf);
        let (kv, info) = match (&wl.pod, k8s::api_configured(&self.conf)) {
            (Some(p), true) => {
                let lookup = async {
                    let client = k8s::client(&self.conf).await?;
                    k8s::lookup(client, &p.namespace, &p.name).await
                };
                let (kv, info) = tokio::join!(etcd, lookup);
                (kv?, info?)
            }
            _ => (etcd.await?, PodInfo::default()),
        };
        tracing::debug!(elapsed = ?started.elapsed(), "etcd connected, pod read");
        self.add_connected(Workload { info, ..wl }, kv, started)
            .await
    }

    /// ADD for a pod whose [`PodInfo`] is already known (what [`Plugin::add`] reads from the
    /// Kubernetes API), e.g. from a caller that has the pod in hand.
    pub async fn add_with_pod_info(&self, info: PodInfo) -> Result<CniResult, PluginError> {
        let wl = Workload {
            info,
            ..self.workload()?
        };
        let started = std::time::Instant::now();
        let kv = datastore::connect_checked(&self.conf).await?;
        self.add_connected(wl, kv, started).await
    }

    /// `started`: when ADD began (the step times in the log count from it).
    async fn add_connected(
        &self,
        wl: Workload,
        kv: EtcdClient,
        started: std::time::Instant,
    ) -> Result<CniResult, PluginError> {
        let ipam = Ipam::new(kv.clone());
        let ds = Datastore::from_etcd(kv);
        let mut undo = Undo::default();
        match self.add_steps(&wl, &ipam, &ds, &mut undo, started).await {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!(error = %e, "ADD failed, undoing");
                self.rollback(&wl, &ipam, &ds, undo).await;
                Err(e)
            }
        }
    }

    /// Addresses for the pod: `ipAddrsNoIpam` as given, else IPAM (with `ipAddrs` or CNI_ARGS
    /// `IP`, and the pool annotations).
    async fn addresses(
        &self,
        wl: &Workload,
        req: &Requests,
        ipam: &Ipam,
        ds: &Datastore,
        undo: &mut Undo,
    ) -> Result<Vec<IpAddr>, PluginError> {
        if !req.ip_addrs_no_ipam.is_empty() {
            tracing::info!(ips = ?req.ip_addrs_no_ipam, "ipAddrsNoIpam: IPAM bypassed");
            return Ok(req.ip_addrs_no_ipam.clone());
        }
        if !req.ip_addrs.is_empty() {
            self.release_older_sandbox(wl, ipam, ds).await?;
        }
        let ipam_req = IpamRequest {
            ips: if req.ip_addrs.is_empty() {
                cni_args_ips(&self.env)?
            } else {
                req.ip_addrs.clone()
            },
            v4_pools: resolve_pools(ds, req.v4_pools.as_ref()).await?,
            v6_pools: resolve_pools(ds, req.v6_pools.as_ref()).await?,
        };
        undo.ipam = true;
        ipam_add(&self.conf, &self.env, &self.stdin, ipam, wl, &ipam_req).await
    }

    /// `ipAddrs` for a pod whose endpoint still belongs to an earlier sandbox: release that
    /// endpoint's addresses first, as Calico does, or re-assigning the same addresses would
    /// fail as already allocated until the old sandbox's DEL.
    async fn release_older_sandbox(
        &self,
        wl: &Workload,
        ipam: &Ipam,
        ds: &Datastore,
    ) -> Result<(), PluginError> {
        let name = wl.endpoint_name()?;
        let Some(old) = ds
            .get::<WorkloadEndpoint>(Some(wl.namespace()), &name)
            .await
            .map_err(|e| PluginError::step("ipam", e))?
        else {
            return Ok(());
        };
        if old.spec.container_id.as_deref() == Some(wl.container_id.as_str()) {
            return Ok(()); // A repeated ADD: the handle has them already.
        }
        let ips: Vec<IpAddr> = old
            .spec
            .ip_networks
            .iter()
            .filter_map(|n| n.parse::<IpNet>().ok())
            .map(|n| n.addr())
            .collect();
        tracing::info!(endpoint = name, old_container = ?old.spec.container_id, ?ips,
            "ipAddrs: releasing the earlier sandbox's addresses");
        ipam.release_ips(&ips)
            .await
            .map_err(|e| PluginError::step("ipam", e))?;
        Ok(())
    }

    async fn add_steps(
        &self,
        wl: &Workload,
        ipam: &Ipam,
        ds: &Datastore,
        undo: &mut Undo,
        started: std::time::Instant,
    ) -> Result<CniResult, PluginError> {
        // Milliseconds since ADD began at the end of each step, for the "pod network ready"
        // line (the pod-start benchmark reads them).
        let mut steps_ms: Vec<(&str, u128)> = vec![("connected", started.elapsed().as_millis())];
        let mut mark = |step: &'static str| {
            tracing::debug!(step, elapsed = ?started.elapsed(), "done");
            steps_ms.push((step, started.elapsed().as_millis()));
        };
        let netns = self.netns()?.to_owned();
        let req = pod::requests(&wl.info, &self.conf)?;
        let addrs = self.addresses(wl, &req, ipam, ds, undo).await?;
        if addrs.is_empty() {
            return Err(PluginError::Step {
                step: "ipam",
                reason: "IPAM returned no address".into(),
            });
        }
        let ip_nats = pod::ip_nats(&req.floating_ips, &addrs)?;
        mark("ipam");
        fault("ipam")?;

        let host_if = wl.host_veth();
        let mtu = self.veth_mtu()?;
        let host_nl = Netlink::connect().map_err(|e| PluginError::step("veth", e))?;
        undo.veth = Some(host_if.clone());
        // One request: the peer is created inside the pod under its final name (brought up
        // with the rest of the pod side in `configure_container`).
        let veth = WorkloadVeth {
            mtu,
            ..WorkloadVeth::new(&host_if, &wl.ifname, &netns)
        };
        let pair = veth
            .create(&host_nl)
            .await
            .map_err(|e| PluginError::step("veth", e))?;
        mark("veth");
        fault("veth")?;

        let routes = self.configure_container(&netns, &wl.ifname, &addrs).await?;
        mark("container");
        fault("container")?;

        veth.plumb_host(&host_nl, &addrs)
            .await
            .map_err(|e| PluginError::step("host", e))?;
        mark("host");
        fault("host")?;

        let peer_mac = Some(pair.peer_mac);
        let wep = wl.endpoint(&addrs, peer_mac, ip_nats)?;
        let name = wep.metadata.name.clone().unwrap_or_default();
        undo.endpoint = Some((wl.namespace().to_owned(), name.clone()));
        // Create, or replace an endpoint left by a previous sandbox of the same pod (the
        // endpoint follows the newest container): one apply through the datastore's writer,
        // which keeps the stored uid and creation time and takes labels from this endpoint.
        ds.apply(&wep)
            .await
            .map_err(|e| PluginError::step("endpoint", e))?;
        mark("endpoint");
        fault("endpoint")?;
        tracing::info!(
            container = wl.container_id,
            endpoint = name,
            interface = host_if,
            ?addrs,
            ?steps_ms,
            "pod network ready"
        );

        Ok(self.result(wl, &netns, (&peer_mac, mtu), &addrs, routes))
    }

    /// The veths' MTU, as Calico's plugin picks it: the netconf's `mtu` when set (and not 0),
    /// else the one calico-node detected and wrote to its MTU file (`mtu_file`, default
    /// `/var/lib/calico/mtu`), else the kernel's default. A file that exists but does not hold
    /// an MTU is an error (nothing is created).
    fn veth_mtu(&self) -> Result<Option<u32>, PluginError> {
        if let Some(m) = self.conf.mtu.filter(|m| *m != 0) {
            return Ok(Some(m));
        }
        let path = self
            .conf
            .mtu_file
            .clone()
            .unwrap_or_else(|| calico_dataplane::mtu::MTU_FILE.into());
        calico_dataplane::mtu::read_mtu_file(&path).map_err(|e| PluginError::step("mtu", e))
    }

    fn result(
        &self,
        wl: &Workload,
        netns: &Path,
        (peer_mac, mtu): (&Option<[u8; 6]>, Option<u32>),
        addrs: &[IpAddr],
        routes: Vec<RouteConfig>,
    ) -> CniResult {
        let mut r = self.conf.prev_result().ok().flatten().unwrap_or_default();
        let base = r.interfaces.len();
        r.interfaces.push(Interface {
            name: wl.host_veth(),
            mac: Some(calico_dataplane::link::format_mac(&CALICO_HOST_MAC)),
            mtu,
            ..Default::default()
        });
        r.interfaces.push(Interface {
            name: wl.ifname.clone(),
            mac: peer_mac.map(|m| calico_dataplane::link::format_mac(&m)),
            mtu,
            sandbox: Some(netns.display().to_string()),
            ..Default::default()
        });
        for a in addrs {
            r.ips.push(IpConfig {
                version: None,
                address: IpNet::from(*a),
                gateway: None,
                interface: Some(base + 1),
            });
        }
        r.routes.extend(routes);
        if let Some(dns) = &self.conf.dns {
            r.dns = dns.clone();
        }
        r.for_version(&self.version)
    }

    /// Addresses, gateway routes and sysctls inside the pod (the workload side of
    /// calico-dataplane's recipe); returns the routes for the result. This thread enters the
    /// pod's namespace once ([`workload::enter_workload`]): it writes the sysctls and opens the
    /// netlink socket the routes and addresses then go through.
    async fn configure_container(
        &self,
        netns: &Path,
        ifname: &str,
        addrs: &[IpAddr],
    ) -> Result<Vec<RouteConfig>, PluginError> {
        let settings = workload::workload_sysctls(
            ifname,
            addrs,
            self.conf.container_settings.allow_ip_forwarding,
        );
        let started = std::time::Instant::now();
        let nl = workload::enter_workload(netns, &settings)
            .map_err(|e| PluginError::step("container", e))?;
        tracing::debug!(elapsed = ?started.elapsed(), "container: sysctls, netlink socket");
        let routes = workload::plumb_workload(&nl, ifname, addrs)
            .await
            .map_err(|e| PluginError::step("container", e))?;
        Ok(routes
            .into_iter()
            .map(|r| RouteConfig::new(r.dst, Some(r.via)))
            .collect())
    }

    async fn rollback(&self, wl: &Workload, ipam: &Ipam, ds: &Datastore, undo: Undo) {
        if let Some((ns, name)) = undo.endpoint
            && let Err(e) = ds.delete::<WorkloadEndpoint>(Some(&ns), &name, None).await
            && !e.is_not_found()
        {
            tracing::error!(endpoint = name, error = %e, "rollback: endpoint not deleted");
        }
        if let Some(host_if) = undo.veth {
            match Netlink::connect() {
                Ok(nl) => {
                    if let Err(e) = nl.delete_link(&host_if).await {
                        tracing::error!(interface = host_if, error = %e, "rollback: veth not deleted");
                    }
                }
                Err(e) => tracing::error!(error = %e, "rollback: no netlink"),
            }
        }
        if undo.ipam
            && let Err(e) = ipam_release(&self.conf, &self.env, &self.stdin, ipam, wl).await
        {
            tracing::error!(error = %e, "rollback: addresses not released");
        }
    }

    /// DEL: idempotent; the namespace, the veth, the endpoint or the allocation may be gone.
    pub async fn del(&self) -> Result<(), PluginError> {
        let wl = self.workload()?;
        let kv = datastore::connect(&self.conf).await?;
        let ipam = Ipam::new(kv.clone());
        let ds = Datastore::from_etcd(kv);
        let name = wl.endpoint_name()?;
        let wep = ds
            .get::<WorkloadEndpoint>(Some(wl.namespace()), &name)
            .await
            .map_err(|e| PluginError::step("endpoint", e))?;
        // A newer sandbox of the same pod owns the endpoint and the veth: leave them.
        let ours = wep
            .as_ref()
            .is_none_or(|w| w.spec.container_id.as_deref() == Some(wl.container_id.as_str()));
        if let Some(netns) = self.env.netns.as_deref().filter(|p| p.exists()) {
            // Deleting the container side removes the pair and the host route with it.
            // A stale path (namespace already released) is not an error for DEL.
            let ifname = wl.ifname.clone();
            match calico_dataplane::netns::visit(netns, Netlink::connect) {
                Ok(Ok(nl)) => {
                    if let Err(e) = nl.delete_link(&ifname).await {
                        tracing::warn!(interface = ifname, error = %e, "container interface not deleted");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(netns = %netns.display(), error = %e, "no netlink in namespace")
                }
                Err(e) => {
                    tracing::warn!(netns = %netns.display(), error = %e, "namespace not usable")
                }
            }
        }
        if ours {
            let host_if = wep
                .as_ref()
                .and_then(|w| w.spec.interface_name.clone())
                .unwrap_or_else(|| wl.host_veth());
            let nl = Netlink::connect().map_err(|e| PluginError::step("veth", e))?;
            nl.delete_link(&host_if)
                .await
                .map_err(|e| PluginError::step("veth", e))?;
        }
        ipam_release(&self.conf, &self.env, &self.stdin, &ipam, &wl).await?;
        if ours && wep.is_some() {
            match ds
                .delete::<WorkloadEndpoint>(Some(wl.namespace()), &name, None)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(PluginError::step("endpoint", e)),
            }
        }
        Ok(())
    }

    /// CHECK: the endpoint, the veth, the container's addresses and the host routes are all
    /// as ADD left them (per prevResult).
    pub async fn check(&self) -> Result<(), PluginError> {
        let prev = self
            .conf
            .prev_result()
            .map_err(|e| PluginError::Check(e.to_string()))?
            .ok_or(PluginError::NoPrevResult)?;
        let wl = self.workload()?;
        let netns = self.netns()?.to_owned();
        let kv = datastore::connect(&self.conf).await?;
        let ds = Datastore::from_etcd(kv);
        let name = wl.endpoint_name()?;
        let wep = ds
            .get::<WorkloadEndpoint>(Some(wl.namespace()), &name)
            .await
            .map_err(|e| PluginError::step("endpoint", e))?
            .ok_or_else(|| PluginError::Check(format!("WorkloadEndpoint {name} is missing")))?;
        if wep.spec.container_id.as_deref() != Some(wl.container_id.as_str()) {
            return Err(PluginError::Check(format!(
                "WorkloadEndpoint {name} belongs to container {:?}",
                wep.spec.container_id
            )));
        }
        let host_if = wl.host_veth();
        let host_nl = Netlink::connect().map_err(|e| PluginError::Check(e.to_string()))?;
        let link = host_nl
            .link(&host_if)
            .await
            .map_err(|e| PluginError::Check(e.to_string()))?
            .ok_or_else(|| PluginError::Check(format!("host interface {host_if} is missing")))?;
        if link.mac != Some(CALICO_HOST_MAC) || !link.up {
            return Err(PluginError::Check(format!(
                "host interface {host_if} is down or has the wrong MAC"
            )));
        }
        let ours: BTreeSet<IpNet> = prev
            .ips
            .iter()
            .filter(|ip| {
                ip.interface
                    .and_then(|i| prev.interfaces.get(i))
                    .is_none_or(|i| i.name == wl.ifname && i.sandbox.is_some())
            })
            .map(|ip| ip.address)
            .collect();
        let c_nl = Netlink::connect_in(&netns).map_err(|e| PluginError::Check(e.to_string()))?;
        let have: BTreeSet<IpNet> = c_nl
            .addresses(&wl.ifname)
            .await
            .map_err(|e| PluginError::Check(e.to_string()))?
            .into_iter()
            .collect();
        let routes = host_nl
            .routes(&RouteFilter::default())
            .await
            .map_err(|e| PluginError::Check(e.to_string()))?;
        for addr in &ours {
            if !have.contains(addr) {
                return Err(PluginError::Check(format!(
                    "{addr} is not on {} in {}",
                    wl.ifname,
                    netns.display()
                )));
            }
            let want = workload::host_route(addr.addr(), &host_if);
            if !routes
                .iter()
                .any(|r| r.dst == want.dst && r.target == want.target)
            {
                return Err(PluginError::Check(format!(
                    "no host route {} dev {host_if}",
                    want.dst
                )));
            }
            if !wep
                .spec
                .ip_networks
                .contains(&IpNet::from(addr.addr()).to_string())
            {
                return Err(PluginError::Check(format!(
                    "WorkloadEndpoint {name} does not list {addr}"
                )));
            }
        }
        Ok(())
    }

    /// STATUS: ready when etcd answers and, with a delegated IPAM plugin and a 1.1.0 netconf,
    /// when that plugin's STATUS succeeds (the spec: a plugin relying on a delegated plugin
    /// must pass STATUS on to it). Earlier versions have no STATUS to delegate.
    pub async fn status(&self) -> Result<(), PluginError> {
        datastore::connect_checked(&self.conf).await?;
        let kind = self.conf.ipam.as_ref().map_or("", |i| i.kind.as_str());
        let delegated = !kind.is_empty() && kind != "calico-ipam";
        if delegated && crate::spec::parse_version(&self.version) >= Some((1, 1, 0)) {
            match delegate::exec(kind, &self.env, &self.stdin, "STATUS").await {
                Ok(_) => {}
                Err(delegate::DelegateError::Plugin { name, code, msg }) => {
                    return Err(PluginError::IpamStatus {
                        plugin: name,
                        code,
                        msg,
                    });
                }
                Err(e) => {
                    return Err(PluginError::IpamStatus {
                        plugin: kind.to_owned(),
                        code: 0,
                        msg: crate::error_chain(&e),
                    });
                }
            }
        }
        Ok(())
    }

    /// GC: releases this node's allocations, endpoints and veths whose container is not in
    /// `cni.dev/valid-attachments`. Returns the container ids cleaned up.
    pub async fn gc(&self) -> Result<Vec<String>, PluginError> {
        let node = datastore::nodename(&self.conf)?;
        let kv = datastore::connect(&self.conf).await?;
        gc(&self.conf, &kv, &node, true).await
    }
}

/// GC shared with `calico-ipam` (which cleans only IPAM: `endpoints == false`).
pub async fn gc(
    conf: &NetConf,
    kv: &EtcdClient,
    node: &str,
    endpoints: bool,
) -> Result<Vec<String>, PluginError> {
    let valid: BTreeSet<&str> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| a.container_id.as_str())
        .collect();
    let step = |e: &dyn std::error::Error| PluginError::Step {
        step: "gc",
        reason: crate::error_chain(e),
    };
    let mut cleaned = BTreeSet::new();
    if endpoints {
        let ds = Datastore::from_etcd(kv.clone());
        let nl = Netlink::connect().map_err(|e| step(&e))?;
        let weps = ds
            .list::<WorkloadEndpoint>(None)
            .await
            .map_err(|e| step(&e))?;
        for w in weps.items {
            let Some(cid) = w.spec.container_id.as_deref() else {
                continue;
            };
            let mine = w.spec.node.as_deref() == Some(node)
                && w.spec
                    .orchestrator
                    .as_deref()
                    .is_some_and(|o| o == names::ORCHESTRATOR_K8S || o == names::ORCHESTRATOR_CNI);
            if !mine || valid.contains(cid) {
                continue;
            }
            if let Some(ifname) = &w.spec.interface_name {
                nl.delete_link(ifname).await.map_err(|e| step(&e))?;
            }
            let name = w.metadata.name.clone().unwrap_or_default();
            match ds
                .delete::<WorkloadEndpoint>(w.metadata.namespace.as_deref(), &name, None)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(step(&e)),
            }
            cleaned.insert(cid.to_owned());
        }
    }
    let ipam = Ipam::new(kv.clone());
    let prefix = format!(
        "{}{}",
        calico_ipam::model::HANDLES_PREFIX,
        names::POD_HANDLE_PREFIX
    );
    let handles = kv.list(&prefix).await.map_err(|e| step(&e))?;
    for h in handles.kvs {
        let Some(handle) = calico_ipam::model::parse_handle_key(&h.key) else {
            continue;
        };
        let Some(cid) = naming::container_of_handle(handle) else {
            continue;
        };
        if valid.contains(cid) {
            continue;
        }
        let ips = ipam.ips_by_handle(handle).await.map_err(|e| step(&e))?;
        let mut on_this_node = false;
        for ip in &ips {
            if let Some(info) = ipam
                .get_assignment_attributes(*ip)
                .await
                .map_err(|e| step(&e))?
            {
                on_this_node |=
                    info.attributes.secondary.get("node").map(String::as_str) == Some(node);
            }
        }
        if on_this_node {
            ipam.release_by_handle(handle).await.map_err(|e| step(&e))?;
            cleaned.insert(cid.to_owned());
        }
    }
    Ok(cleaned.into_iter().collect())
}

/// The path of a plugin binary in CNI_PATH.
pub fn find_in_path(name: &str, path: &[PathBuf]) -> Option<PathBuf> {
    path.iter().map(|d| d.join(name)).find(|p| p.is_file())
}
