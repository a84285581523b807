//! What the node tests share: their harnesses (`cluster_support`, `policy_support`,
//! `scale_support`, which take it in with `#[path]`) and the tests that plumb workloads by hand
//! (`mod common;`). Not a test target of its own (a directory).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use calico_dataplane::sysctl;
use calico_dataplane::{CALICO_HOST_MAC, Netlink, RTPROT_BOOT, Route, VethSpec};
use calico_datastore::{Datastore, EtcdClient, EtcdConfig};
use calico_docker::naming;
use calico_lab::{Etcd, Host};
use ipnet::IpNet;

/// The workspace's target directory (`CARGO_TARGET_DIR`, else `target/` at the root).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// A debug binary of the workspace; fails saying how to build it when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let bin = target_dir().join("debug").join(name);
    assert!(
        bin.is_file(),
        "{} is not built: cargo build -p calico-rs --bin calico-node --bin calicoctl",
        bin.display()
    );
    bin
}

/// Calls `f` every `every` until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Runs `f` with an etcd client connected to `etcd`, inside `host`'s namespace (where etcd
/// listens: the test process has no route to it otherwise).
pub fn with_etcd<R: Send>(
    host: &Host,
    etcd: &Etcd,
    f: impl AsyncFnOnce(&EtcdClient) -> R + Send,
) -> R {
    let endpoint = etcd.endpoint();
    host.run_async(move || async move {
        let kv = EtcdClient::connect(&EtcdConfig::new([endpoint]))
            .await
            .expect("etcd client");
        f(&kv).await
    })
    .unwrap_or_else(|e| panic!("run in {}'s namespace: {e}", host.name()))
}

/// A workload in namespace `ns` behind veth `iface` on `host`, as the Docker driver plumbs it:
/// host end with MAC ee:ee:ee:ee:ee:ee and Calico's sysctls, a /32 route to it; workload end
/// `cali0` with `ip`/32 and a default route via 169.254.1.1.
pub async fn plumb_workload(host: &Host, ns: &Host, iface: &str, ip: Ipv4Addr) {
    let host_nl = Netlink::connect_in(&host.netns_path()).expect("host netlink");
    host_nl
        .create_veth(&VethSpec {
            host_mac: Some(CALICO_HOST_MAC),
            ..VethSpec::new(iface, "cali0", ns.netns_path())
        })
        .await
        .expect("veth");
    let c = Netlink::connect_in(&ns.netns_path()).expect("workload netlink");
    let addr: IpNet = format!("{ip}/32").parse().expect("address");
    c.add_address("cali0", addr).await.expect("address");
    let gw: IpNet = "169.254.1.1/32".parse().expect("gateway");
    c.replace_route(&Route::device(gw, "cali0", RTPROT_BOOT))
        .await
        .expect("gateway route");
    c.replace_route(&Route::gateway(
        "0.0.0.0/0".parse().expect("default"),
        naming::IPV4_GATEWAY.into(),
        Some("cali0"),
        RTPROT_BOOT,
    ))
    .await
    .expect("default route");
    sysctl::apply(
        Some(&host.netns_path()),
        &sysctl::calico_host_veth(iface, true, false),
    )
    .expect("sysctls");
    host_nl
        .replace_route(&Route::device(addr, iface, RTPROT_BOOT))
        .await
        .expect("workload route");
}

/// Applies Calico resources given as YAML documents, one per string, in order; panics on a
/// kind it does not know or a failed apply (tests only).
pub async fn apply_yaml_docs(ds: &Datastore, docs: &[String]) {
    for doc in docs {
        let value: serde_json::Value = serde_yaml_ng::from_str(doc).expect("yaml");
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        macro_rules! apply {
            ($t:ty) => {
                ds.apply(&serde_json::from_value::<$t>(value).expect(&kind))
                    .await
                    .map(|_| ())
            };
        }
        match kind.as_str() {
            "BGPConfiguration" => apply!(calico_api::BGPConfiguration),
            "BGPPeer" => apply!(calico_api::BGPPeer),
            "BGPFilter" => apply!(calico_api::BGPFilter),
            "Tier" => apply!(calico_api::Tier),
            "HostEndpoint" => apply!(calico_api::HostEndpoint),
            "Profile" => apply!(calico_api::Profile),
            "NetworkPolicy" => apply!(calico_api::NetworkPolicy),
            "GlobalNetworkPolicy" => apply!(calico_api::GlobalNetworkPolicy),
            other => panic!("unexpected kind {other:?}"),
        }
        .unwrap_or_else(|e| panic!("apply {kind}: {e}"));
    }
}
