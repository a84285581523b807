//! The Docker integration the agent runs when `CALICO_LIBNETWORK_ENABLED=true`: the libnetwork
//! network and IPAM drivers on unix sockets in Docker's plugin directory, and the syncer that
//! makes a Calico network created on one host exist on every host.

use std::sync::Arc;
use std::time::Duration;

use calico_datastore::EtcdClient;
use tracing::{error, info};

use crate::config::NodeConfig;

/// Serves the drivers and runs the syncer until the process stops.
pub async fn serve(cfg: NodeConfig, etcd: EtcdClient) {
    info!(plugins = %cfg.plugins_dir.display(), "Starting libnetwork service");
    let driver = Arc::new(
        calico_docker::Driver::with_etcd(&cfg.node_name, etcd.clone(), &cfg.docker_socket)
            .with_mtu_file(cfg.state_dir.join("mtu")),
    );
    let drivers = calico_docker::serve(driver, &cfg.plugins_dir, std::future::pending());
    let syncer = calico_docker::run_network_syncer(
        etcd,
        calico_docker::DockerEngine::new(&cfg.docker_socket),
        calico_docker::SyncerConfig {
            hostname: cfg.node_name.clone(),
            resync_interval: Duration::from_secs(30),
        },
        std::future::pending(),
    );
    let (served, ()) = tokio::join!(drivers, syncer);
    if let Err(e) = served {
        error!(error = %e, "libnetwork driver sockets failed");
    }
}
