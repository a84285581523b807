//! calico-node: the per-node agent (see crates/node). Configured by environment, as Calico's.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    calico_node::logging::init();
    let cfg = calico_node::config::NodeConfig::from_env().context("reading configuration")?;
    let api = calico_datastore::CalicoApiConfig::from_env().context("datastore configuration")?;
    let etcd_cfg = api.etcd_config().context("datastore configuration")?;
    let etcd = calico_datastore::EtcdClient::connect(etcd_cfg)
        .await
        .context("connecting to etcd")?;
    if cfg.libnetwork_enabled {
        tokio::spawn(calico_node::libnetwork::serve(cfg.clone(), etcd.clone()));
    }
    calico_node::agent::run(cfg, etcd).await?;
    Ok(())
}
