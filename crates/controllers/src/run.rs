//! Wiring for the calico-kube-controllers binary: health server, leader election, and one
//! kube-runtime `Controller` per kind while this replica leads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use calico_api::{
    BGPConfiguration, BGPFilter, BGPPeer, FelixConfiguration, GlobalNetworkPolicy,
    GlobalNetworkSet, HostEndpoint, IPAMConfiguration, IPPool, IPReservation,
    KubeControllersConfiguration, NetworkPolicy, NetworkSet, StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy, StagedNetworkPolicy, Tier,
};
use calico_ipam::Ipam;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod, ServiceAccount};
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::health::{IPAM_GC_RELEASED, IPAM_LEAK_CANDIDATES, Metrics, router};
use crate::kinds::MirroredKind;
use crate::leader::{LeaseLock, keep_renewing};
use crate::mirror::EtcdMirror;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::watch::{self as watch_sync, Trigger};
use crate::{ipam_gc, knp, nodes, pods, pool_status, profiles, reflect, services};

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
    /// `IPAM_LEAK_GRACE_PERIOD`: the leak grace period when no KubeControllersConfiguration
    /// sets `spec.controllers.node.leakGracePeriod` (Go duration; 0 turns leak collection off).
    pub leak_grace: Option<String>,
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
pub async fn run(
    client: Client,
    mirror: EtcdMirror,
    ipam: Arc<Ipam>,
    settings: Settings,
) -> Result<(), RunError> {
    run_until(client, mirror, ipam, settings, std::future::pending()).await
}

/// [`run`], and when `shutdown` completes (the binary's SIGTERM): stops reconciling, gives
/// the Lease up if held ([`LeaseLock::release`]) so that another replica leads at once rather
/// than after the lease expires, and returns `Ok`.
pub async fn run_until(
    client: Client,
    mirror: EtcdMirror,
    ipam: Arc<Ipam>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let mut shutdown = std::pin::pin!(shutdown);
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
        tokio::select! {
            _ = tokio::time::sleep(lock.renew_every()) => {}
            _ = &mut shutdown => {
                info!("shutting down while standing by");
                return Ok(());
            }
        }
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
        controller::<StagedGlobalNetworkPolicy>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<StagedNetworkPolicy>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<StagedKubernetesNetworkPolicy>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<HostEndpoint>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<NetworkSet>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<GlobalNetworkSet>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<FelixConfiguration>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<IPReservation>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<IPAMConfiguration>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<KubeControllersConfiguration>(ctx.clone(), lost_rx.clone()).boxed(),
        controller::<calico_api::CalicoNodeStatus>(ctx.clone(), lost_rx.clone()).boxed(),
    ]);
    let inputs = kubernetes_inputs(
        ctx.clone(),
        ipam,
        settings.leak_grace.clone(),
        lost_rx.clone(),
    );
    let sessions = futures::future::join(
        crate::bgppeer_status::run_loop(ctx.clone(), lost_rx.clone()),
        crate::node_status::run_loop(ctx.clone(), lost_rx.clone()),
    );
    let reflections = reflect::run_loop(ctx.clone(), reflected_kinds(), lost_rx.clone());
    tokio::select! {
        _ = futures::future::join4(controllers, inputs, sessions, reflections) => {}
        _ = &mut shutdown => {
            // The controllers' futures are dropped with this select: nothing reconciles any
            // more when the Lease is given up.
            renewer.abort();
            metrics.set_leader(false);
            match lock.release().await {
                Ok(true) => info!("shutting down; gave the Lease up"),
                Ok(false) => info!("shutting down; the Lease was no longer ours"),
                Err(e) => warn!(error = %e, "shutting down; could not give the Lease up (it expires)"),
            }
            return Ok(());
        }
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

/// The kinds whose etcd-only objects are reflected into Kubernetes: the cluster-scoped
/// reconciled kinds (NetworkPolicy is left out, see [`reflect`]).
pub fn reflected_kinds() -> Vec<reflect::SyncFn> {
    vec![
        reflect::sync_fn::<IPPool>(),
        reflect::sync_fn::<BGPPeer>(),
        reflect::sync_fn::<BGPConfiguration>(),
        reflect::sync_fn::<BGPFilter>(),
        reflect::sync_fn::<Tier>(),
        reflect::sync_fn::<GlobalNetworkPolicy>(),
    ]
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

/// How often IPAM is garbage collected and the pools' usage reported.
pub const IPAM_ROUND: Duration = Duration::from_secs(30);

/// The Kubernetes-native inputs (Namespaces, ServiceAccounts, NetworkPolicies, Nodes, Pods,
/// Services and EndpointSlices),
/// each kept by a watch, and the loops that sync them into etcd, until `lost` turns true.
pub async fn kubernetes_inputs(
    ctx: Arc<Context>,
    ipam: Arc<Ipam>,
    leak_grace_env: Option<String>,
    lost: watch::Receiver<bool>,
) {
    let client = ctx.client.clone();
    let metrics = ctx.metrics.clone();
    let profiles_t = Trigger::new("profiles", metrics.clone());
    let knp_t = Trigger::new("kubernetes-network-policies", metrics.clone());
    let nodes_t = Trigger::new("nodes", metrics.clone());
    let pods_t = Trigger::new("pods", metrics.clone());
    let services_t = Trigger::new("services", metrics.clone());
    let (namespaces, ns_watch) = watch_sync::reflect(
        Api::<Namespace>::all(client.clone()),
        vec![profiles_t.clone()],
    );
    let (accounts, sa_watch) = watch_sync::reflect(
        Api::<ServiceAccount>::all(client.clone()),
        vec![profiles_t.clone()],
    );
    let (knps, knp_watch) = watch_sync::reflect(
        Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::all(client.clone()),
        vec![knp_t.clone()],
    );
    let (kube_nodes, node_watch) =
        watch_sync::reflect(Api::<KubeNode>::all(client.clone()), vec![nodes_t.clone()]);
    let (pods, pod_watch) =
        watch_sync::reflect(Api::<Pod>::all(client.clone()), vec![pods_t.clone()]);
    let (svc_store, svc_watch) = watch_sync::reflect(
        Api::<k8s_openapi::api::core::v1::Service>::all(client.clone()),
        vec![services_t.clone()],
    );
    let (slice_store, slice_watch) = watch_sync::reflect(
        Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::all(client.clone()),
        vec![services_t.clone()],
    );
    let timing = watch_sync::Timing::default();

    let profiles = {
        let (ctx, namespaces, accounts) = (ctx.clone(), namespaces.clone(), accounts.clone());
        watch_sync::sync_loop(
            profiles_t,
            "Profile",
            metrics.clone(),
            timing,
            watch_sync::all_ready(vec![
                watch_sync::ready(&namespaces),
                watch_sync::ready(&accounts),
            ]),
            lost.clone(),
            move || {
                let (ctx, ns, sa) = (
                    ctx.clone(),
                    watch_sync::objects(&namespaces),
                    watch_sync::objects(&accounts),
                );
                async move { profiles::sync(&ctx.mirror, &ns, &sa).await.map(|_| ()) }
            },
        )
    };
    let knp = {
        let (ctx, knps) = (ctx.clone(), knps.clone());
        watch_sync::sync_loop(
            knp_t,
            "KubernetesNetworkPolicy",
            metrics.clone(),
            timing,
            watch_sync::ready(&knps),
            lost.clone(),
            move || {
                let (ctx, items) = (ctx.clone(), watch_sync::objects(&knps));
                async move { knp::sync(&ctx.mirror, &items).await.map(|_| ()) }
            },
        )
    };
    let node_sync = {
        let (ctx, ipam, kube_nodes, pods) =
            (ctx.clone(), ipam.clone(), kube_nodes.clone(), pods.clone());
        watch_sync::sync_loop(
            nodes_t,
            "Node",
            metrics.clone(),
            timing,
            watch_sync::all_ready(vec![
                watch_sync::ready(&kube_nodes),
                watch_sync::ready(&pods),
            ]),
            lost.clone(),
            move || {
                let (ctx, ipam) = (ctx.clone(), ipam.clone());
                let (kn, ps) = (watch_sync::objects(&kube_nodes), watch_sync::objects(&pods));
                async move {
                    let r = nodes::sync(ctx.mirror.datastore(), &ipam, &kn, &ps).await?;
                    if !r.released.is_empty() {
                        ctx.metrics.add_counter(
                            IPAM_GC_RELEASED,
                            "reason",
                            "node_deleted",
                            r.released.len() as u128,
                        );
                    }
                    Ok::<_, nodes::NodeSyncError>(())
                }
            },
        )
    };
    let pod_sync = {
        let (ctx, pods) = (ctx.clone(), pods.clone());
        watch_sync::sync_loop(
            pods_t,
            "WorkloadEndpoint",
            metrics.clone(),
            timing,
            watch_sync::ready(&pods),
            lost.clone(),
            move || {
                let (ctx, items) = (ctx.clone(), watch_sync::objects(&pods));
                async move { pods::sync(ctx.mirror.datastore(), &items).await.map(|_| ()) }
            },
        )
    };
    let service_sync = {
        let (ipam, svc_store, slice_store) = (ipam.clone(), svc_store.clone(), slice_store.clone());
        watch_sync::sync_loop(
            services_t,
            "Service",
            metrics.clone(),
            timing,
            watch_sync::all_ready(vec![
                watch_sync::ready(&svc_store),
                watch_sync::ready(&slice_store),
            ]),
            lost.clone(),
            move || {
                let ipam = ipam.clone();
                let (svcs, sl) = (
                    watch_sync::objects(&svc_store),
                    watch_sync::objects(&slice_store),
                );
                async move { services::sync(ipam.kv(), &svcs, &sl).await.map(|_| ()) }
            },
        )
    };
    let ipam_loop = ipam_loop(
        ctx.clone(),
        ipam,
        kube_nodes,
        pods,
        leak_grace_env,
        lost.clone(),
    );
    let watches = futures::future::join_all([
        ns_watch,
        sa_watch,
        knp_watch,
        node_watch,
        pod_watch,
        svc_watch,
        slice_watch,
    ]);
    let mut lost = lost;
    tokio::select! {
        _ = futures::future::join(
            futures::future::join5(profiles, knp, node_sync, pod_sync, ipam_loop),
            service_sync,
        ) => {}
        _ = watches => warn!("a watch stream ended"),
        _ = lost.wait_for(|l| *l) => {}
    }
}

/// Every [`IPAM_ROUND`]: garbage-collects IPAM and reports the pools' usage (metrics and the
/// Kubernetes IPPools' annotations).
async fn ipam_loop(
    ctx: Arc<Context>,
    ipam: Arc<Ipam>,
    kube_nodes: Store<KubeNode>,
    pods: Store<Pod>,
    leak_grace_env: Option<String>,
    mut lost: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = watch_sync::all_ready(vec![watch_sync::ready(&kube_nodes), watch_sync::ready(&pods)]) => {}
        _ = lost.wait_for(|l| *l) => return,
    }
    let mut tracker = ipam_gc::LeakTracker::default();
    loop {
        let (kn, ps) = (watch_sync::objects(&kube_nodes), watch_sync::objects(&pods));
        let now = std::time::Instant::now();
        match ipam_round(
            &ctx,
            &ipam,
            &mut tracker,
            &kn,
            &ps,
            leak_grace_env.as_deref(),
            now,
        )
        .await
        {
            Ok(_) => ctx.metrics.reconcile_started("IPAM"),
            Err(e) => {
                ctx.metrics.reconcile_started("IPAM");
                ctx.metrics.reconcile_failed("IPAM");
                warn!(error = %e, "IPAM garbage collection / pool usage");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(IPAM_ROUND) => {}
            _ = lost.wait_for(|l| *l) => return,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamRoundError {
    #[error(transparent)]
    Gc(#[from] ipam_gc::GcError),
    #[error(transparent)]
    Status(#[from] pool_status::PoolStatusError),
}

fn record_gc(metrics: &Metrics, report: &ipam_gc::GcReport, tracker: &ipam_gc::LeakTracker) {
    metrics.add_counter(
        IPAM_GC_RELEASED,
        "reason",
        "leaked",
        report.released_leaked.len() as u128,
    );
    metrics.add_counter(
        IPAM_GC_RELEASED,
        "reason",
        "node_deleted",
        report.released_node_gone.len() as u128,
    );
    metrics.set_gauge(
        IPAM_LEAK_CANDIDATES,
        "scope",
        "cluster",
        tracker.pending() as u128,
    );
}

/// One IPAM round (what [`ipam_loop`] runs every [`IPAM_ROUND`]): leak grace period from
/// configuration, garbage collection at `now`, pool usage as metrics and on the IPPools.
pub async fn ipam_round(
    ctx: &Context,
    ipam: &Ipam,
    tracker: &mut ipam_gc::LeakTracker,
    kube_nodes: &[KubeNode],
    pods: &[Pod],
    leak_grace_env: Option<&str>,
    now: std::time::Instant,
) -> Result<ipam_gc::GcReport, IpamRoundError> {
    let grace = ipam_gc::leak_grace(ctx.mirror.datastore(), leak_grace_env).await?;
    let report = ipam_gc::collect(ipam, tracker, kube_nodes, pods, now, grace).await?;
    record_gc(&ctx.metrics, &report, tracker);
    let usage = ipam_gc::pool_usage(ipam).await?;
    pool_status::record_metrics(&ctx.metrics, &usage);
    pool_status::report(ctx.client.clone(), &usage).await?;
    Ok(report)
}
