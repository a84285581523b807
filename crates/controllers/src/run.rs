//! Wiring for the calico-kube-controllers binary: health server, leader election, and one
//! kube-runtime `Controller` per kind while this replica leads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use calico_api::{
    BGPConfiguration, BGPFilter, BGPPeer, GlobalNetworkPolicy, IPPool, NetworkPolicy, Tier,
};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::ListParams;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::health::{Metrics, router};
use crate::kinds::MirroredKind;
use crate::leader::{LeaseLock, keep_renewing};
use crate::mirror::EtcdMirror;
use crate::profiles;
use crate::reconcile::{Context, error_policy, reconcile};

/// Settings read from the environment by the binary.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of the Lease (`POD_NAMESPACE`).
    pub namespace: String,
    /// Lease name (`LEASE_NAME`).
    pub lease_name: String,
    /// This replica's identity (`POD_NAME`).
    pub identity: String,
    /// Address of /healthz, /readyz, /metrics (`METRICS_ADDR`).
    pub metrics_addr: SocketAddr,
    /// Lease duration.
    pub lease_duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("serving {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the Lease {0}; exiting so that the new leader is the only writer")]
    LostLease(String),
}

/// Runs until leadership is lost (an error, so the pod restarts as a follower) or the health
/// server fails.
pub async fn run(client: Client, mirror: EtcdMirror, settings: Settings) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|source| RunError::Serve {
            addr: settings.metrics_addr,
            source,
        })?;
    let app = router(metrics.clone());
    let addr = settings.metrics_addr;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // A follower is healthy and ready: it serves by standing by.
    metrics.set_ready(true);

    let lock = LeaseLock::new(
        Api::namespaced(client.clone(), &settings.namespace),
        &settings.namespace,
        &settings.lease_name,
        &settings.identity,
        settings.lease_duration,
    );
    // Wait for the Lease.
    loop {
        match lock.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => warn!(error = %e, "leader election"),
        }
        tokio::time::sleep(lock.renew_every()).await;
    }
    info!(
        identity = lock.identity(),
        "acquired the Lease; starting controllers"
    );
    metrics.set_leader(true);

    let (lost_tx, lost_rx) = watch::channel(false);
    let renewer = {
        let lock = lock.clone();
        let duration = settings.lease_duration;
        tokio::spawn(async move {
            keep_renewing(&lock, duration).await;
            let _ = lost_tx.send(true);
        })
    };

    let ctx = Arc::new(Context {
        client: client.clone(),
        mirror,
        metrics: metrics.clone(),
    });
    let controllers = futures::future::join_all([
        controller::<IPPool>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<BGPPeer>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<BGPConfiguration>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<BGPFilter>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<Tier>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<GlobalNetworkPolicy>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<NetworkPolicy>(ctx.clone(), lost_rx.clone()).boxed(),
    ]);
    let profiles = profiles_loop(ctx.clone(), lost_rx.clone());
    tokio::select! {
        _ = futures::future::join(controllers, profiles) => {}
        r = server => {
            let source = match r {
                Ok(Ok(())) => std::io::Error::other("server stopped"),
                Ok(Err(e)) => e,
                Err(e) => std::io::Error::other(e),
            };
            return Err(RunError::Serve { addr, source });
        }
    }
    renewer.abort();
    metrics.set_leader(false);
    Err(RunError::LostLease(settings.lease_name))
}

/// One controller over all objects of `K`, stopping when `lost` turns true.
async fn controller<K: MirroredKind>(ctx: Arc<Context>, mut lost: watch::Receiver<bool>) {
    let api: Api<K> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(async move {
            let _ = lost.wait_for(|l| *l).await;
        })
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(kind = K::KIND, error = %e, "controller");
            }
        })
        .await;
}

/// How often Namespaces and ServiceAccounts are listed and their profiles synced.
pub const PROFILE_SYNC: Duration = Duration::from_secs(30);

/// Keeps the `kns.*` / `ksa.*` profiles and the `knp.default.*` policies in etcd in line with
/// the cluster (list and sync every
/// [`PROFILE_SYNC`]; level-triggered, so a missed change is repaired at the next round), until
/// `lost` turns true.
async fn profiles_loop(ctx: Arc<Context>, mut lost: watch::Receiver<bool>) {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let accounts: Api<ServiceAccount> = Api::all(ctx.client.clone());
    loop {
        let lp = ListParams::default();
        match futures::future::try_join(namespaces.list(&lp), accounts.list(&lp)).await {
            Ok((ns, sas)) => {
                if let Err(e) = profiles::sync(&ctx.mirror, &ns.items, &sas.items).await {
                    ctx.metrics.reconcile_failed("Profile");
                    warn!(error = %e, "syncing profiles");
                } else {
                    ctx.metrics.reconcile_started("Profile");
                }
            }
            Err(e) => {
                ctx.metrics.reconcile_failed("Profile");
                warn!(error = %e, "listing Namespaces and ServiceAccounts");
            }
        }
        // Kubernetes NetworkPolicies -> knp.default.* policies, level-triggered the same way.
        match crate::knp::list_and_sync(ctx.client.clone(), &ctx.mirror).await {
            Ok(_) => ctx.metrics.reconcile_started("KubernetesNetworkPolicy"),
            Err(e) => {
                ctx.metrics.reconcile_failed("KubernetesNetworkPolicy");
                warn!(error = %e, "syncing Kubernetes NetworkPolicies");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PROFILE_SYNC) => {}
            _ = lost.wait_for(|l| *l) => return,
        }
    }
}
