//! Watch-driven, level-triggered sync loops.
//!
//! Each Kubernetes input (Namespaces, ServiceAccounts, NetworkPolicies, Nodes, Pods) is kept
//! in a kube-runtime reflector store fed by a watch ([`reflect`]). Every change bumps the
//! [`Trigger`]s of the syncs that read it; a sync loop ([`sync_loop`]) wakes on its trigger,
//! waits a short debounce so a burst of changes costs one pass, and then syncs from the whole
//! store (level-triggered: a missed or reordered event cannot leave etcd wrong, because each
//! pass compares everything). A slow resync runs the pass anyway, as a safety net for changes
//! made in etcd behind the controllers' back. The number of changes waiting for a pass is the
//! queue depth metric.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tracing::warn;

use crate::health::{Metrics, QUEUE_DEPTH};

/// The safety resync of every watch-driven loop (Calico's default reconcilerPeriod).
pub const SAFETY_RESYNC: Duration = Duration::from_secs(300);
/// How long a loop waits after the first change before it syncs, to coalesce a burst.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Retry interval after a failed pass.
pub const RETRY: Duration = Duration::from_secs(5);

/// Changes waiting for one sync loop.
#[derive(Debug)]
pub struct Trigger {
    name: &'static str,
    pending: AtomicU64,
    notify: Notify,
    metrics: Arc<Metrics>,
}

impl Trigger {
    pub fn new(name: &'static str, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.set_gauge(QUEUE_DEPTH, "queue", name, 0);
        Arc::new(Trigger {
            name,
            pending: AtomicU64::new(0),
            notify: Notify::new(),
            metrics,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// One more change to sync.
    pub fn changed(&self) {
        let n = self.pending.fetch_add(1, Ordering::SeqCst) + 1;
        self.metrics
            .set_gauge(QUEUE_DEPTH, "queue", self.name, u128::from(n));
        // Stores a permit when the loop is busy, so a change during a pass is not lost.
        self.notify.notify_one();
    }

    /// Takes the waiting changes (a pass starts).
    fn take(&self) -> u64 {
        let n = self.pending.swap(0, Ordering::SeqCst);
        self.metrics.set_gauge(QUEUE_DEPTH, "queue", self.name, 0);
        n
    }

    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }
}

/// A store of every `K`, kept current by a watch, and the future that drives the watch (run
/// it for as long as the store is used). Each change bumps every trigger in `triggers`.
pub fn reflect<K>(api: Api<K>, triggers: Vec<Arc<Trigger>>) -> (Store<K>, BoxFuture<'static, ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    let kind = K::kind(&());
    let driver = stream
        .for_each(move |event| {
            match event {
                Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => {
                    for t in &triggers {
                        t.changed();
                    }
                }
                Ok(Event::Init | Event::InitApply(_)) => {}
                Err(e) => warn!(%kind, error = %e, "watch failed; retrying with backoff"),
            }
            futures::future::ready(())
        })
        .boxed();
    (reader, driver)
}

/// Timing of a [`sync_loop`].
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub resync: Duration,
    pub debounce: Duration,
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            resync: SAFETY_RESYNC,
            debounce: DEBOUNCE,
            retry: RETRY,
        }
    }
}

/// Runs `pass` once `ready` completes (the stores it reads are filled), then after every
/// change on `trigger` (debounced), every `timing.resync`, and `timing.retry` after a failed
/// pass, until `lost` turns true. Counts passes and failures under `kind`.
pub async fn sync_loop<E, F, Fut>(
    trigger: Arc<Trigger>,
    kind: &'static str,
    metrics: Arc<Metrics>,
    timing: Timing,
    ready: impl Future<Output = ()>,
    mut lost: watch::Receiver<bool>,
    mut pass: F,
) where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    tokio::select! {
        _ = ready => {}
        _ = until_lost(&mut lost) => return,
    }
    loop {
        trigger.take();
        let next = match pass().await {
            Ok(()) => {
                metrics.reconcile_started(kind);
                timing.resync
            }
            Err(e) => {
                metrics.reconcile_started(kind);
                metrics.reconcile_failed(kind);
                warn!(%kind, error = %e, "sync failed; retrying");
                timing.retry
            }
        };
        tokio::select! {
            _ = trigger.notify.notified() => {
                tokio::time::sleep(timing.debounce).await;
            }
            _ = tokio::time::sleep(next) => {}
            _ = until_lost(&mut lost) => return,
        }
    }
}

/// Completes when `lost` turns true (or its sender is gone). The guard `wait_for` returns is
/// dropped here, so a loop that selects on this stays `Send`.
pub async fn until_lost(lost: &mut watch::Receiver<bool>) {
    let _ = lost.wait_for(|l| *l).await;
}

/// Waits until every store in a group has its first complete list.
pub async fn all_ready(stores: Vec<BoxFuture<'static, ()>>) {
    futures::future::join_all(stores).await;
}

/// A future that completes when `store` has its first complete list.
pub fn ready<K>(store: &Store<K>) -> BoxFuture<'static, ()>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = store.clone();
    async move {
        // Err only when the writer is gone, i.e. the watch stopped: nothing to wait for.
        let _ = store.wait_until_ready().await;
    }
    .boxed()
}

/// The objects of a store, owned.
pub fn objects<K>(store: &Store<K>) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.state().iter().map(|o| (**o).clone()).collect()
}
