//! One writer: the CNI plugin's endpoint write (`Datastore::apply` of the endpoint the plugin
//! builds) and `calicoctl apply` of the same object go through calico-datastore's one writer,
//! so each reproduces the other's etcd value byte for byte (uid and creationTimestamp are the
//! datastore's and stay with the object). Real etcd on loopback, the real calicoctl binary
//! (`cargo build -p calico-rs --bin calicoctl`).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use calico_api::WorkloadEndpoint;
use calico_cni::env::PodRef;
use calico_cni::plugin::Workload;
use calico_cni::pod::PodInfo;
use calico_datastore::{Datastore, EtcdClient, EtcdConfig, KeyValue};
use calico_lab::{Etcd, EtcdOptions};

fn calicoctl() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let bin = target.join("debug/calicoctl");
    assert!(
        bin.is_file(),
        "build calicoctl first: cargo build -p calico-rs --bin calicoctl ({})",
        bin.display()
    );
    bin
}

/// Runs `calicoctl ARGS -c CFG` with `stdin`; panics with its stderr unless it succeeds.
fn ctl(cfg: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(calicoctl())
        .args(args)
        .arg("-c")
        .arg(cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn calicoctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for calicoctl");
    assert!(
        out.status.success(),
        "calicoctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The endpoint the plugin writes for pod `ns1/web-0` on node1.
fn plugin_endpoint(app: &str) -> WorkloadEndpoint {
    let wl = Workload {
        node: "node1".into(),
        pod: Some(PodRef {
            namespace: "ns1".into(),
            name: "web-0".into(),
        }),
        info: PodInfo {
            labels: BTreeMap::from([("app".into(), app.into()), ("role".into(), "db".into())]),
            service_account: Some("web".into()),
            ..PodInfo::default()
        },
        container_id: "0123456789abcdef0123456789abcdef".into(),
        ifname: "eth0".into(),
    };
    let addr: IpAddr = "10.65.0.5".parse().unwrap();
    wl.endpoint(&[addr], Some([0x0a, 0x58, 0x0a, 0x41, 0x00, 0x05]), vec![])
        .expect("plugin endpoint")
}

/// The same object as a user's document for calicoctl (JSON is YAML).
fn document(wep: &WorkloadEndpoint) -> String {
    serde_json::to_string_pretty(wep).expect("encode endpoint")
}

async fn stored(kv: &EtcdClient, key: &str) -> KeyValue {
    kv.get(key).await.expect("read etcd").expect("key present")
}

#[tokio::test]
async fn calicoctl_and_the_cni_write_path_store_identical_bytes() {
    let etcd = Etcd::start(EtcdOptions::default()).expect("etcd");
    let cfg = etcd.dir().join("calicoctl.cfg");
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: {}\n",
            etcd.endpoint()
        ),
    )
    .expect("write calicoctl.cfg");
    let kv = EtcdClient::connect(&EtcdConfig::new([etcd.endpoint()]))
        .await
        .expect("etcd client");
    let ds = Datastore::from_etcd(kv.clone());
    let wep = plugin_endpoint("web");
    let other = plugin_endpoint("web-v2");
    let name = wep.metadata.name.clone().expect("endpoint name");
    let key = format!("/calico/resources/v3/projectcalico.org/workloadendpoints/ns1/{name}");

    // calicoctl creates it; a change moves it away; the plugin's write brings it back.
    ctl(&cfg, &["apply", "-f", "-"], &document(&wep));
    let by_ctl = stored(&kv, &key).await;
    ctl(&cfg, &["apply", "-f", "-"], &document(&other));
    let changed = stored(&kv, &key).await;
    assert_ne!(changed.value, by_ctl.value);
    ds.apply(&wep).await.expect("plugin write");
    let by_plugin = stored(&kv, &key).await;
    assert!(
        by_plugin.mod_revision > changed.mod_revision,
        "the plugin wrote"
    );
    assert_eq!(
        String::from_utf8_lossy(&by_plugin.value),
        String::from_utf8_lossy(&by_ctl.value)
    );

    // The other way round: the plugin creates it, calicoctl changes it and applies it back.
    ctl(
        &cfg,
        &["delete", "workloadendpoint", &name, "-n", "ns1"],
        "",
    );
    ds.apply(&wep).await.expect("plugin create");
    let by_plugin = stored(&kv, &key).await;
    ctl(&cfg, &["apply", "-f", "-"], &document(&other));
    ctl(&cfg, &["apply", "-f", "-"], &document(&wep));
    let by_ctl = stored(&kv, &key).await;
    assert!(
        by_ctl.mod_revision > by_plugin.mod_revision,
        "calicoctl wrote"
    );
    assert_eq!(
        String::from_utf8_lossy(&by_ctl.value),
        String::from_utf8_lossy(&by_plugin.value)
    );
}
