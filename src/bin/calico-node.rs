//! calico-node: the per-node agent (see crates/node). Configured by environment, as Calico's.
//!
//! SIGTERM or SIGINT stops it with exit code 0 (see calico_node::teardown: a stop leaves the
//! dataplane for the next start unless an uninstall was marked). `calico-node -mark-uninstall`
//! (the chart's pre-delete hook) only writes that mark and exits.

use anyhow::Context;
use calico_node::teardown;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    calico_node::logging::init();
    if std::env::args().nth(1).as_deref() == Some("-mark-uninstall") {
        let etcd = connect().await?;
        let by = std::env::var("HOSTNAME").unwrap_or_else(|_| "calico-node".into());
        return teardown::mark_and_log(&etcd, &by)
            .await
            .context("writing the uninstall mark");
    }
    // Installed before anything slow, so a stop during start-up is handled too.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let stopped = async {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    };
    tokio::pin!(stopped);

    calico_node::felix_config::check_policy_environment()
        .context("Felix configuration from the environment")?;
    let cfg = calico_node::config::NodeConfig::from_env().context("reading configuration")?;
    let model_only = calico_node::model::follow::model_only(
        std::env::var(calico_node::model::follow::MODEL_ONLY_ENV)
            .ok()
            .as_deref(),
    )
    .map_err(anyhow::Error::msg)
    .context("reading configuration")?;
    let etcd = tokio::select! {
        etcd = connect() => etcd?,
        _ = &mut stopped => std::process::exit(0),
    };
    if model_only {
        tokio::select! {
            _ = calico_node::model::follow::run_model_only(&cfg.node_name, etcd) => {}
            _ = &mut stopped => std::process::exit(0),
        }
        return Ok(());
    }
    // An uninstall mark newer than this revision was written for this agent's installation.
    let since = etcd
        .current_revision()
        .await
        .context("reading the datastore's revision")?;
    if cfg.libnetwork_enabled {
        tokio::spawn(calico_node::libnetwork::serve(cfg.clone(), etcd.clone()));
    }
    tokio::select! {
        r = calico_node::agent::run(cfg, etcd.clone()) => r?,
        sig = &mut stopped => {
            let code = teardown::on_stop(&etcd, since, sig).await;
            // Not a return from main: the runtime would wait for blocking tasks that never end.
            std::process::exit(code);
        }
    }
    Ok(())
}

async fn connect() -> anyhow::Result<calico_datastore::EtcdClient> {
    let api = calico_datastore::CalicoApiConfig::from_env().context("datastore configuration")?;
    let etcd_cfg = api.etcd_config().context("datastore configuration")?;
    calico_datastore::EtcdClient::connect(etcd_cfg)
        .await
        .context("connecting to etcd")
}
