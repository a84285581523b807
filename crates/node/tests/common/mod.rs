//! What the node tests' harnesses (`cluster_support`, `policy_support`, `scale_support`) share.
//! Not a test target of its own (a directory); each harness takes it in with `#[path]`.
#![allow(dead_code)]

use std::path::PathBuf;

use calico_datastore::{EtcdClient, EtcdConfig};
use calico_lab::{Etcd, Host};

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
