//! The agent's Prometheus metrics, served as text (format 0.0.4) on `/metrics` at
//! `prometheusMetricsHost:prometheusMetricsPort` (default all addresses, port 9091).
//!
//! Felix's names where the meaning is the same, so Felix dashboards work:
//! - `felix_active_local_endpoints` (gauge): endpoints (workload and host) in this node's
//!   policy table.
//! - `felix_active_local_policies` (gauge): policies with rules in this node's table.
//! - `felix_cluster_num_hosts` (gauge): Calico nodes in the cluster.
//! - `felix_cluster_num_workload_endpoints`, `felix_cluster_num_host_endpoints` (gauges).
//! - `felix_resyncs_started` (counter): full resyncs with the datastore (every reconcile round
//!   re-reads the datastore whole, so every round is one).
//! - `felix_int_dataplane_apply_time_seconds` (summary): time to bring routes and the policy
//!   table to the desired state, per round.
//! - `felix_int_dataplane_failures` (counter): rounds that failed and will be retried.
//! - `felix_route_table_list_seconds` (summary): time to list the kernel's routes.
//!
//! Our own (calico-rs has BGP and IPAM in the same agent):
//! - `calico_bgp_peers{state}` (gauge): BGP sessions per FSM state.
//! - `calico_bgp_prefixes_received` (gauge): prefixes received from all peers.
//! - `calico_bgp_routes_installed` (gauge): routes learned over BGP and installed in the kernel.
//! - `calico_ipam_blocks` (gauge): IPAM blocks affine to this node.
//! - `calico_ipam_allocated_addresses` (gauge): addresses allocated in those blocks.
//! - `calico_policy_issues{outcome}` (gauge): policies and profiles not enforced as written,
//!   by what is done instead (`rule skipped`, `deny rule enforced without this match`,
//!   `rules replaced by deny`, `policy not enforced`); every outcome is present, at 0 when
//!   none, so an alert on `> 0` clears.
//! - `calico_model_revision` (gauge): the datastore revision the model has taken (served in
//!   model-only mode, `CALICO_MODEL_ONLY=true`, so a scale test sees when a follower caught up).
//!
//! Summaries carry `_sum` and `_count` (no quantiles): rates and averages work as with Felix's.
//! Counter names are Felix's (no `_total` suffix), which is why this is the text format and
//! not OpenMetrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::routing::get;

pub const ACTIVE_LOCAL_ENDPOINTS: &str = "felix_active_local_endpoints";
pub const ACTIVE_LOCAL_POLICIES: &str = "felix_active_local_policies";
pub const CLUSTER_NUM_HOSTS: &str = "felix_cluster_num_hosts";
pub const CLUSTER_NUM_WORKLOAD_ENDPOINTS: &str = "felix_cluster_num_workload_endpoints";
pub const CLUSTER_NUM_HOST_ENDPOINTS: &str = "felix_cluster_num_host_endpoints";
pub const RESYNCS_STARTED: &str = "felix_resyncs_started";
pub const APPLY_TIME: &str = "felix_int_dataplane_apply_time_seconds";
pub const DATAPLANE_FAILURES: &str = "felix_int_dataplane_failures";
pub const ROUTE_TABLE_LIST: &str = "felix_route_table_list_seconds";
pub const BGP_PEERS: &str = "calico_bgp_peers";
pub const BGP_PREFIXES_RECEIVED: &str = "calico_bgp_prefixes_received";
pub const BGP_ROUTES_INSTALLED: &str = "calico_bgp_routes_installed";
pub const IPAM_BLOCKS: &str = "calico_ipam_blocks";
pub const IPAM_ALLOCATED: &str = "calico_ipam_allocated_addresses";
pub const POLICY_ISSUES: &str = "calico_policy_issues";
pub const MODEL_REVISION: &str = "calico_model_revision";

/// (name, type, help) of every metric, in exposition order.
const FAMILIES: &[(&str, Type, &str)] = &[
    (
        ACTIVE_LOCAL_ENDPOINTS,
        Type::Gauge,
        "Number of active endpoints on this host.",
    ),
    (
        ACTIVE_LOCAL_POLICIES,
        Type::Gauge,
        "Number of active policies on this host.",
    ),
    (
        CLUSTER_NUM_HOSTS,
        Type::Gauge,
        "Total number of Calico hosts in the cluster.",
    ),
    (
        CLUSTER_NUM_WORKLOAD_ENDPOINTS,
        Type::Gauge,
        "Total number of workload endpoints cluster-wide.",
    ),
    (
        CLUSTER_NUM_HOST_ENDPOINTS,
        Type::Gauge,
        "Total number of host endpoints cluster-wide.",
    ),
    (
        RESYNCS_STARTED,
        Type::Counter,
        "Number of times the agent has started resyncing with the datastore.",
    ),
    (
        APPLY_TIME,
        Type::Summary,
        "Time in seconds that it took to apply a dataplane update.",
    ),
    (
        DATAPLANE_FAILURES,
        Type::Counter,
        "Number of times dataplane updates failed and will be retried.",
    ),
    (
        ROUTE_TABLE_LIST,
        Type::Summary,
        "Time in seconds taken to list the kernel's routes during a resync.",
    ),
    (
        BGP_PEERS,
        Type::Gauge,
        "BGP sessions of this node, by FSM state.",
    ),
    (
        BGP_PREFIXES_RECEIVED,
        Type::Gauge,
        "Prefixes received from all BGP peers.",
    ),
    (
        BGP_ROUTES_INSTALLED,
        Type::Gauge,
        "Routes learned over BGP and installed in the kernel.",
    ),
    (IPAM_BLOCKS, Type::Gauge, "IPAM blocks affine to this node."),
    (
        IPAM_ALLOCATED,
        Type::Gauge,
        "Addresses allocated in the IPAM blocks affine to this node.",
    ),
    (
        POLICY_ISSUES,
        Type::Gauge,
        "Policies and profiles this node does not enforce as written, by outcome.",
    ),
    (
        MODEL_REVISION,
        Type::Gauge,
        "Datastore revision the agent's model has taken.",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Gauge,
    Counter,
    Summary,
}

/// Labels of one series: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default, Clone, Copy)]
struct Value {
    value: f64,
    /// Summaries: number of observations (`value` is their sum).
    count: u64,
}

/// Every series, by metric name then labels.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<&'static str, BTreeMap<Labels, Value>>>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut BTreeMap<&'static str, BTreeMap<Labels, Value>>) -> R,
    ) -> R {
        f(&mut self.series.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets an unlabelled gauge.
    pub fn set(&self, name: &'static str, v: f64) {
        self.replace(name, vec![(vec![], v)]);
    }

    /// Replaces every series of a labelled gauge (e.g. the BGP states present now).
    pub fn replace(&self, name: &'static str, series: Vec<(Labels, f64)>) {
        self.with(|m| {
            let fam = m.entry(name).or_default();
            fam.clear();
            for (labels, value) in series {
                fam.insert(labels, Value { value, count: 0 });
            }
        });
    }

    /// Adds one to an unlabelled counter.
    pub fn inc(&self, name: &'static str) {
        self.with(|m| m.entry(name).or_default().entry(vec![]).or_default().value += 1.0);
    }

    /// Records one observation of an unlabelled summary.
    pub fn observe(&self, name: &'static str, v: f64) {
        self.with(|m| {
            let s = m.entry(name).or_default().entry(vec![]).or_default();
            s.value += v;
            s.count += 1;
        });
    }

    /// The current value of a series (for logs and tests).
    pub fn get(&self, name: &'static str, labels: &Labels) -> Option<f64> {
        self.with(|m| m.get(name).and_then(|f| f.get(labels)).map(|v| v.value))
    }

    /// The exposition text. Counters and summaries appear from the start (at zero), gauges
    /// once first set.
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            for (name, ty, help) in FAMILIES {
                let series = m.get(name);
                if *ty == Type::Gauge && series.is_none_or(BTreeMap::is_empty) {
                    continue;
                }
                let ty_s = match ty {
                    Type::Gauge => "gauge",
                    Type::Counter => "counter",
                    Type::Summary => "summary",
                };
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {ty_s}\n"));
                let zero = BTreeMap::from([(vec![], Value::default())]);
                for (labels, v) in series.filter(|s| !s.is_empty()).unwrap_or(&zero) {
                    let l = render_labels(labels);
                    match ty {
                        Type::Summary => {
                            out.push_str(&format!("{name}_sum{l} {}\n", v.value));
                            out.push_str(&format!("{name}_count{l} {}\n", v.count));
                        }
                        _ => out.push_str(&format!("{name}{l} {}\n", v.value)),
                    }
                }
            }
            out
        })
    }
}

fn render_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The HTTP routes of the metrics server.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.render(),
                )
            }),
        )
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::default();
        let text = m.render();
        assert!(
            text.contains("# TYPE felix_resyncs_started counter\nfelix_resyncs_started 0\n"),
            "{text}"
        );
        assert!(
            !text.contains("felix_active_local_endpoints"),
            "unset gauges are absent: {text}"
        );
        m.set(ACTIVE_LOCAL_ENDPOINTS, 3.0);
        m.inc(RESYNCS_STARTED);
        m.inc(RESYNCS_STARTED);
        m.observe(APPLY_TIME, 0.25);
        m.observe(APPLY_TIME, 0.5);
        m.replace(
            BGP_PEERS,
            vec![
                (vec![("state", "Established".into())], 2.0),
                (vec![("state", "Act\"ive".into())], 1.0),
            ],
        );
        let text = m.render();
        assert!(text.contains("# HELP felix_active_local_endpoints Number of active endpoints on this host.\n# TYPE felix_active_local_endpoints gauge\nfelix_active_local_endpoints 3\n"), "{text}");
        assert!(text.contains("felix_resyncs_started 2\n"), "{text}");
        assert!(text.contains("felix_int_dataplane_apply_time_seconds_sum 0.75\nfelix_int_dataplane_apply_time_seconds_count 2\n"), "{text}");
        assert!(
            text.contains("calico_bgp_peers{state=\"Act\\\"ive\"} 1\n"),
            "{text}"
        );
        m.replace(
            BGP_PEERS,
            vec![(vec![("state", "Established".into())], 1.0)],
        );
        assert!(
            !m.render().contains("Act"),
            "replace drops states no longer present"
        );
    }
}
