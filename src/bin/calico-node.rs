//! calico-node: the per-node agent (see crates/node). Configured by environment, as Calico's.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    calico_node::logging::init();
    let cfg = calico_node::config::NodeConfig::from_env().context("reading configuration")?;
    let model_only = calico_node::model::follow::model_only(
        std::env::var(calico_node::model::follow::MODEL_ONLY_ENV)
            .ok()
            .as_deref(),
    )
    .map_err(anyhow::Error::msg)
    .context("reading configuration")?;
    let api = calico_datastore::CalicoApiConfig::from_env().context("datastore configuration")?;
    let etcd_cfg = api.etcd_config().context("datastore configuration")?;
    let etcd = calico_datastore::EtcdClient::connect(etcd_cfg)
        .await
        .context("connecting to etcd")?;
    if model_only {
        calico_node::model::follow::run_model_only(&cfg.node_name, etcd).await;
        return Ok(());
    }
    if cfg.libnetwork_enabled {
        tokio::spawn(calico_node::libnetwork::serve(cfg.clone(), etcd.clone()));
    }
    calico_node::agent::run(cfg, etcd).await?;
    Ok(())
}
