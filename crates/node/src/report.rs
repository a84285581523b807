//! Felix's status report: every `reportingInterval` (default 30 s; `0s` stops it) the agent
//! writes `{"time": RFC 3339, "uptime": seconds, "first_update": bool}` to
//! `/calico/felix/v2/no-region/host/<node>/status` in etcd, where Felix writes it, so tools
//! that look there see the agent alive. (Felix also gives the key a TTL, `reportingTTL`; this
//! writes it without one.)

use std::time::{Duration, Instant};

use calico_datastore::{EtcdClient, WatchEvent};
use chrono::{SecondsFormat, Utc};
use tokio::sync::watch;

const PREFIX: &str = "/calico/felix/v2/";

/// The key of `node`'s report.
pub fn key(node: &str) -> String {
    format!("{PREFIX}no-region/host/{node}/status")
}

/// Whether a datastore event is a status report (ours or another node's): nothing the agent
/// reconciles depends on them.
pub fn is_report_event(ev: &WatchEvent) -> bool {
    match ev {
        WatchEvent::Put(kv) => kv.key.starts_with(PREFIX),
        WatchEvent::Delete { key, .. } => key.starts_with(PREFIX),
        _ => false,
    }
}

/// Writes the report every `interval` (none while it is `None`) until the agent stops.
pub fn spawn(etcd: EtcdClient, node: String, mut interval: watch::Receiver<Option<Duration>>) {
    let started = Instant::now();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let every = *interval.borrow_and_update();
            let Some(every) = every else {
                if interval.changed().await.is_err() {
                    return;
                }
                continue;
            };
            let body = serde_json::json!({
                "time": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                "uptime": started.elapsed().as_secs_f64(),
                "first_update": first,
            });
            match etcd.put(&key(&node), body.to_string().into_bytes()).await {
                Ok(_) => first = false,
                Err(e) => tracing::warn!(error = %e, "status report not written"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                r = interval.changed() => if r.is_err() { return },
            }
        }
    });
}
