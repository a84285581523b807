//! A model-only agent: the watch and the model, without a dataplane.
//!
//! What a scale test runs many of against one etcd (each is what a real agent's datastore
//! side costs: the same `list_watch_without_prev("/calico/")`, the same [`Store`] and [`PolicyModel`]),
//! and what the CI harness compares with a fresh full computation.

use std::sync::{Arc, Mutex};

use calico_datastore::EtcdClient;
use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;
use tracing::warn;

use super::{PolicyModel, Store};

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
    /// Starts following `/calico/` for node `node`.
    pub fn start(etcd: EtcdClient, node: &str) -> Follower {
        let state = Arc::new(Mutex::new(Followed {
            store: Store::new(node),
            policy: None,
            events: 0,
            rounds: 0,
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let mut events = etcd.list_watch_without_prev("/calico/");
                while let Some(ev) = events.next().await {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            warn!(error = %e, "model-only watch error");
                            continue;
                        }
                    };
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    let s = &mut *s;
                    let mut change = s.store.apply(&ev);
                    s.events += 1;
                    // Take whatever else is already here into the same round.
                    while let Some(Some(Ok(more))) = events.next().now_or_never() {
                        change.merge(s.store.apply(&more));
                        s.events += 1;
                    }
                    if change.aspects.policy || change.aspects.felix {
                        let docs = s.store.felix_docs();
                        let felix = calico_policy::felix::settings_for(&docs, s.store.node())
                            .unwrap_or_default();
                        PolicyModel::advance(&mut s.policy, &s.store, &change, &felix);
                    }
                    s.rounds += 1;
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

    /// The store revision the follower has reached.
    pub fn revision(&self) -> i64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .store
            .revision()
    }
}
