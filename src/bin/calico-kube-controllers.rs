//! calico-kube-controllers: reconciles the projectcalico.org/v3 objects in Kubernetes into
//! etcd (see crates/controllers). Configured by environment, as in the Helm chart:
//! DATASTORE_TYPE/ETCD_* (the datastore), POD_NAME, POD_NAMESPACE, LEASE_NAME, METRICS_ADDR,
//! CALICO_LOG_LEVEL, IPAM_LEAK_GRACE_PERIOD (default 15m when no
//! KubeControllersConfiguration sets spec.controllers.node.leakGracePeriod).

use std::time::Duration;

use anyhow::Context;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CALICO_LOG_LEVEL")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stdout)
        .init();
    let identity = match std::env::var("POD_NAME").ok().filter(|v| !v.is_empty()) {
        Some(name) => name,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("POD_NAME is unset and the hostname is unreadable")?
            .trim()
            .to_string(),
    };
    let settings = calico_controllers::run::Settings {
        namespace: env_or("POD_NAMESPACE", "kube-system"),
        lease_name: env_or("LEASE_NAME", "calico-kube-controllers"),
        identity,
        metrics_addr: env_or("METRICS_ADDR", "0.0.0.0:9094")
            .parse()
            .context("METRICS_ADDR: not ADDRESS:PORT")?,
        lease_duration: Duration::from_secs(15),
        leak_grace: std::env::var(calico_controllers::ipam_gc::LEAK_GRACE_ENV)
            .ok()
            .filter(|v| !v.is_empty()),
    };
    let api = calico_datastore::CalicoApiConfig::from_env().context("datastore configuration")?;
    let etcd_cfg = api.etcd_config().context("datastore configuration")?;
    let kv = calico_datastore::EtcdClient::connect(etcd_cfg)
        .await
        .context("connecting to etcd")?;
    let ds = calico_datastore::Datastore::from_etcd(kv.clone());
    let ipam = std::sync::Arc::new(calico_controllers::calico_ipam::Ipam::new(kv));
    let client = calico_controllers::kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    // SIGTERM (pod deletion, rolling update) or SIGINT: stop and give the Lease up. Without a
    // handler, PID 1 of a container ignores SIGTERM and keeps leading until the kubelet's
    // SIGKILL after the grace period, and the others wait for the lease to expire after that.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    calico_controllers::run::run_until(
        client,
        calico_controllers::mirror::EtcdMirror::new(ds),
        ipam,
        settings,
        shutdown,
    )
    .await?;
    Ok(())
}
