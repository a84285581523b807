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
    /// Gauges and labelled counters: (metric, label name, label value) → value.
    series: Mutex<Series>,
    ready: AtomicBool,
    leader: AtomicBool,
}

/// (metric, label name, label value) → (type, value).
type Series = BTreeMap<(&'static str, &'static str, String), (Type, u128)>;

/// Prometheus metric type of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    Gauge,
    Counter,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Gauge => "gauge",
            Type::Counter => "counter",
        }
    }
}

/// Changes not yet synced, per watch-driven sync loop (`queue` label).
pub const QUEUE_DEPTH: &str = "calico_controllers_queue_depth";
/// Addresses allocated in each IPPool (`pool` label), from the IPAM blocks in etcd.
pub const IPAM_ALLOCATED: &str = "calico_controllers_ipam_allocated_addresses";
/// Addresses free in each IPPool (`pool` label).
pub const IPAM_FREE: &str = "calico_controllers_ipam_free_addresses";
/// Addresses released by IPAM garbage collection (`reason`: `leaked` or `node_deleted`).
pub const IPAM_GC_RELEASED: &str = "calico_controllers_ipam_gc_released_total";
/// Leak candidates waiting out the grace period.
pub const IPAM_LEAK_CANDIDATES: &str = "calico_controllers_ipam_leak_candidates";

impl Metrics {
    fn series<R>(&self, f: impl FnOnce(&mut Series) -> R) -> R {
        f(&mut self.series.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets gauge `name{label="value"}`.
    pub fn set_gauge(&self, name: &'static str, label: &'static str, value: &str, v: u128) {
        self.series(|s| s.insert((name, label, value.to_string()), (Type::Gauge, v)));
    }

    /// Replaces every series of gauge `name` (e.g. the pools that exist now).
    pub fn replace_gauges(
        &self,
        name: &'static str,
        label: &'static str,
        values: &[(String, u128)],
    ) {
        self.series(|s| {
            s.retain(|(n, _, _), _| *n != name);
            for (l, v) in values {
                s.insert((name, label, l.clone()), (Type::Gauge, *v));
            }
        });
    }

    /// Adds `n` to counter `name{label="value"}`.
    pub fn add_counter(&self, name: &'static str, label: &'static str, value: &str, n: u128) {
        self.series(|s| {
            s.entry((name, label, value.to_string()))
                .or_insert((Type::Counter, 0))
                .1 += n
        });
    }

    /// Current value of a series (for tests and logs).
    pub fn value(&self, name: &'static str, label: &'static str, value: &str) -> Option<u128> {
        self.series(|s| s.get(&(name, label, value.to_string())).map(|(_, v)| *v))
    }

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
        drop(c);
        self.series(|s| {
            let mut last = "";
            for ((name, label, value), (ty, v)) in s.iter() {
                if *name != last {
                    out.push_str(&format!("# TYPE {name} {}\n", ty.as_str()));
                    last = name;
                }
                let value = value.replace('\\', "\\\\").replace('"', "\\\"");
                out.push_str(&format!("{name}{{{label}=\"{value}\"}} {v}\n"));
            }
        });
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
        m.replace_gauges(IPAM_FREE, "pool", &[("a".into(), 3), ("b".into(), 4)]);
        m.replace_gauges(IPAM_FREE, "pool", &[("b".into(), 5)]);
        m.add_counter(IPAM_GC_RELEASED, "reason", "leaked", 2);
        m.add_counter(IPAM_GC_RELEASED, "reason", "leaked", 1);
        let text = m.render();
        assert!(!text.contains("pool=\"a\""), "{text}");
        assert!(
            text.contains("calico_controllers_ipam_free_addresses{pool=\"b\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE calico_controllers_ipam_gc_released_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("calico_controllers_ipam_gc_released_total{reason=\"leaked\"} 3\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE calico_controllers_reconciles_total")
                .count(),
            1
        );
    }
}
