//! A model-only agent: the watch and the model, without a dataplane.
//!
//! What a scale test runs many of against one etcd (each is what a real agent's datastore
//! side costs: the same `list_watch_without_prev("/calico/")`, the same [`Store`] and [`PolicyModel`]),
//! and what the CI harness compares with a fresh full computation.
//!
//! [`run_model_only`] is the calico-node binary's model-only mode (`CALICO_MODEL_ONLY=true`):
//! one follower, its health and metrics served, nothing programmed and nothing written (no
//! start-up, no Node update, no status reports): a simulated agent for scale tests.

use std::sync::{Arc, Mutex};

use calico_datastore::EtcdClient;
use calico_datastore::{KvError, WatchEvent};
use calico_policy::felix::FelixPolicySettings;
use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;
use tracing::warn;

use super::{Change, PolicyModel, Store};

/// What a follower holds: the store and the policy model, as of `store.revision()`.
#[derive(Debug, Clone)]
pub struct Followed {
    pub store: Store,
    pub policy: Option<PolicyModel>,
    /// Watch events taken.
    pub events: u64,
    /// Rounds run (changes arriving together share a round, as in the agent).
    pub rounds: u64,
}

/// A running model-only agent; stops when dropped.
pub struct Follower {
    state: Arc<Mutex<Followed>>,
    task: JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// Starts following `/calico/` for node `node`. As in the agent's loop, a round starts
    /// at the first change and takes the changes already there (no timer): the model's own
    /// cost, which the model benchmark times, and the rounds the agent would run.
    pub fn start(etcd: EtcdClient, node: &str) -> Follower {
        let state = Arc::new(Mutex::new(Followed {
            store: Store::new(node),
            policy: None,
            events: 0,
            rounds: 0,
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            // The policy settings of the FelixConfigurations, parsed again only when one of
            // them changes (every round would parse the same documents again).
            let mut felix = None;
            loop {
                let mut events = etcd.list_watch_without_prev("/calico/");
                while let Some(first) = events.next().await {
                    // One yield, as the agent does, lets a producer mid-way through a watch
                    // response finish it.
                    tokio::task::yield_now().await;
                    let mut batch = vec![first];
                    while let Some(Some(more)) = events.next().now_or_never() {
                        batch.push(more);
                    }
                    let snapshot = round(&shared, batch, &mut felix);
                    if snapshot {
                        release_freed_memory();
                    }
                }
                warn!("model-only watch ended; listing again");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        Follower { state, task }
    }

    /// A copy of what the follower holds now.
    pub fn state(&self) -> Followed {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` on what the follower holds now, under its lock (no copy).
    pub fn observe<R>(&self, f: impl FnOnce(&Followed) -> R) -> R {
        f(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The store revision the follower has reached.
    pub fn revision(&self) -> i64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .store
            .revision()
    }
}

/// One round: `batch` applied to the store, then the policy model advanced once for all of
/// it. Returns whether the batch held a snapshot (the whole view replaced).
fn round(
    shared: &Mutex<Followed>,
    batch: Vec<Result<WatchEvent, KvError>>,
    felix: &mut Option<FelixPolicySettings>,
) -> bool {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let s = &mut *s;
    let mut change = Change::default();
    for ev in batch {
        match ev {
            Ok(ev) => {
                change.merge(s.store.apply(ev));
                s.events += 1;
            }
            Err(e) => warn!(error = %e, "model-only watch error"),
        }
    }
    if change.aspects.felix || felix.is_none() {
        let docs = s.store.felix_docs();
        *felix =
            Some(calico_policy::felix::settings_for(&docs, s.store.node()).unwrap_or_default());
    }
    if change.aspects.policy || change.aspects.felix {
        let felix = felix.as_ref().expect("set above");
        PolicyModel::advance(&mut s.policy, &s.store, &change, felix);
    }
    s.rounds += 1;
    change.snapshot
}

/// Gives the heap's free pages back to the system. After a snapshot the listing's decoded
/// documents are freed, but glibc keeps their pages: without this a follower at 1,000 nodes
/// holds half again its model's size for good.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of glibc's heap to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The variable that selects the model-only mode, and its values (Calico's booleans).
pub const MODEL_ONLY_ENV: &str = "CALICO_MODEL_ONLY";

/// Whether `CALICO_MODEL_ONLY` asks for the model-only mode (`true`/`false`, any case; unset
/// or empty is false). Anything else is refused with the variable's name.
pub fn model_only(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim).unwrap_or("") {
        "" => Ok(false),
        v if v.eq_ignore_ascii_case("true") => Ok(true),
        v if v.eq_ignore_ascii_case("false") => Ok(false),
        v => Err(format!("{MODEL_ONLY_ENV}={v:?} is not true or false")),
    }
}

/// The model-only agent of node `node`: follows `/calico/` and keeps the model, serves
/// `/liveness` + `/readiness` (ready once the first list is in the model) and `/metrics`
/// (`calico_model_revision`, `felix_cluster_num_hosts`, `felix_active_local_endpoints`,
/// `felix_active_local_policies`) where Felix's variables say (`FELIX_HEALTHENABLED`,
/// `FELIX_HEALTHHOST`, `FELIX_HEALTHPORT`, `FELIX_PROMETHEUSMETRICS*`; the environment only:
/// FelixConfiguration resources are followed but do not move the servers). Runs until killed.
pub async fn run_model_only(node: &str, etcd: EtcdClient) {
    use crate::health::{self, Health};
    use crate::metrics::{self, Metrics};
    let env = |k: &str| std::env::var(k).ok();
    let settings = crate::felix_config::settings_for(&env, &[], node, false);
    for r in &settings.refused {
        tracing::error!(source = %r.source, field = %r.field, reason = %r.reason, "setting refused");
    }
    crate::logging::set_level(settings.log_level.as_deref());
    let (health, metrics) = (Health::new(), Metrics::new());
    let mut health_server = crate::agent::Server::new("health");
    let mut metrics_server = crate::agent::Server::new("metrics");
    health_server
        .ensure(&settings.health, || health::router(health.clone()))
        .await;
    metrics_server
        .ensure(&settings.metrics, || metrics::router(metrics.clone()))
        .await;
    let follower = Follower::start(etcd, node);
    tracing::info!(
        node,
        "model-only agent: following /calico/, programming nothing"
    );
    let mut synced = false;
    loop {
        let (revision, hosts, endpoints, policies) = follower.observe(|f| {
            let (endpoints, policies) = f
                .policy
                .as_ref()
                .and_then(|p| p.program().ok())
                .map(|(prog, _)| (prog.endpoints.len(), prog.rule_lists.len()))
                .unwrap_or_default();
            (
                f.store.revision(),
                f.store.node_count(),
                endpoints,
                policies,
            )
        });
        metrics.set(metrics::MODEL_REVISION, revision as f64);
        metrics.set(metrics::CLUSTER_NUM_HOSTS, hosts as f64);
        metrics.set(metrics::ACTIVE_LOCAL_ENDPOINTS, endpoints as f64);
        metrics.set(metrics::ACTIVE_LOCAL_POLICIES, policies as f64);
        let ready = revision > 0;
        if ready && !synced {
            tracing::info!(
                revision,
                hosts,
                endpoints,
                "model-only agent: first complete model"
            );
            synced = true;
        }
        health.report(
            health::DATAPLANE,
            Some(health::LIVENESS_TIMEOUT),
            ready,
            if ready {
                "model in sync (model-only: no dataplane)"
            } else {
                "waiting for the first list"
            },
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::model_only;

    #[test]
    fn model_only_values() {
        assert_eq!(model_only(None), Ok(false));
        assert_eq!(model_only(Some("")), Ok(false));
        assert_eq!(model_only(Some("TRUE")), Ok(true));
        assert_eq!(model_only(Some("false")), Ok(false));
        let e = model_only(Some("yes")).unwrap_err();
        assert!(e.contains("CALICO_MODEL_ONLY") && e.contains("yes"), "{e}");
    }
}
