//! Health, readiness and Prometheus metrics over HTTP.
//!
//! `/healthz` is 200 while the process runs its loops; `/readyz` is 200 once the controllers
//! started (leader) or the replica is standing by for the Lease (follower); `/metrics` is the
//! Prometheus text format.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;

use crate::status::Outcome;

/// Counters per kind, and the process's health flags.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    ready: AtomicBool,
    leader: AtomicBool,
}

impl Metrics {
    fn bump(&self, name: &'static str, kind: &'static str) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((name, kind)).or_default() += 1;
    }

    pub fn reconcile_started(&self, kind: &'static str) {
        self.bump("calico_controllers_reconciles_total", kind);
    }

    pub fn reconcile_failed(&self, kind: &'static str) {
        self.bump("calico_controllers_reconcile_errors_total", kind);
    }

    pub fn outcome(&self, kind: &'static str, outcome: &Outcome) {
        match outcome {
            Outcome::Mirrored => {}
            Outcome::Invalid(_) => self.bump("calico_controllers_invalid_total", kind),
            Outcome::Conflict(_) => self.bump("calico_controllers_conflicts_total", kind),
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Prometheus text exposition of every counter and the leader gauge.
    pub fn render(&self) -> String {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut last = "";
        for ((name, kind), v) in c.iter() {
            if *name != last {
                out.push_str(&format!("# TYPE {name} counter\n"));
                last = name;
            }
            out.push_str(&format!("{name}{{kind=\"{kind}\"}} {v}\n"));
        }
        out.push_str("# TYPE calico_controllers_leader gauge\n");
        out.push_str(&format!(
            "calico_controllers_leader {}\n",
            u8::from(self.leader.load(Ordering::SeqCst))
        ));
        out
    }
}

/// The HTTP routes.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.render() }),
        )
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_per_kind() {
        let m = Metrics::default();
        m.reconcile_started("IPPool");
        m.reconcile_started("IPPool");
        m.reconcile_started("BGPPeer");
        m.outcome("IPPool", &Outcome::Invalid("x".into()));
        m.set_leader(true);
        let text = m.render();
        assert!(
            text.contains("calico_controllers_reconciles_total{kind=\"IPPool\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("calico_controllers_reconciles_total{kind=\"BGPPeer\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("calico_controllers_invalid_total{kind=\"IPPool\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("calico_controllers_leader 1\n"), "{text}");
        assert_eq!(
            text.matches("# TYPE calico_controllers_reconciles_total")
                .count(),
            1
        );
    }
}
