//! Liveness and readiness, served as Felix serves them: `GET /liveness` and `GET /readiness`
//! on `healthHost:healthPort` (default `localhost:9099`) answer 200 when good and 503 when
//! not, with a table of the components in the body (COMPONENT, TIMEOUT, LIVENESS, READINESS,
//! DETAIL), as Felix's health aggregator does.
//!
//! Components (each reported by the agent loop every round):
//! - `int_dataplane`: live while the agent loop reports within [`LIVENESS_TIMEOUT`]; ready once
//!   one round has synced routes and the policy table, and not while the last round failed
//!   (nftables cannot be programmed, the datastore cannot be read, the kernel refused a route).
//! - `bgp`: ready as `calico-node -bird-ready` decides ([`bgp_readiness`]).
//! - `felix_configuration`: not ready while a FelixConfiguration field is refused.
//!
//! Readiness includes BGP (Calico's DaemonSet runs `-felix-ready -bird-ready` in one probe;
//! here one `httpGet` on `/readiness` does both). `calicoctl node status` prints the same
//! verdict ([`crate::status::Readiness`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use calico_api::table::Table;

use crate::status::{PeerRow, Readiness};

/// A component that has not reported for this long is not live (Felix's dataplane: 90 s).
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(90);
/// `calico-node -bird-ready`'s `-threshold-time`: during this long after start every BGP peer
/// must be Established for readiness; afterwards one Established peer is enough.
pub const BGP_GRACE: Duration = Duration::from_secs(30);

pub const DATAPLANE: &str = "int_dataplane";
pub const BGP: &str = "bgp";
pub const CONFIG: &str = "felix_configuration";

#[derive(Debug, Clone)]
struct Component {
    timeout: Option<Duration>,
    ready: bool,
    detail: String,
    reported: Instant,
}

/// The components' latest reports.
#[derive(Debug, Default)]
pub struct Health {
    components: Mutex<BTreeMap<&'static str, Component>>,
}

/// The overall verdict and the table that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub live: bool,
    pub ready: bool,
    /// `component: detail` of every component that is not ready.
    pub reasons: Vec<String>,
    pub table: String,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// Records `name`'s current state; `timeout`: how long the report counts for liveness.
    pub fn report(
        &self,
        name: &'static str,
        timeout: Option<Duration>,
        ready: bool,
        detail: impl Into<String>,
    ) {
        let mut c = self.components.lock().unwrap_or_else(|p| p.into_inner());
        let detail = detail.into();
        let changed = c
            .get(name)
            .is_none_or(|old| old.ready != ready || old.detail != detail);
        if changed {
            if ready {
                tracing::info!(component = name, "health: ready");
            } else {
                tracing::warn!(component = name, reason = %detail, "health: not ready");
            }
        }
        c.insert(
            name,
            Component {
                timeout,
                ready,
                detail,
                reported: Instant::now(),
            },
        );
    }

    /// The verdict now. With no component reported yet: live, not ready.
    pub fn summary(&self) -> Summary {
        let c = self.components.lock().unwrap_or_else(|p| p.into_inner());
        let mut live = true;
        let mut ready = !c.is_empty();
        let mut reasons = vec![];
        let mut table = Table::new(&["COMPONENT", "TIMEOUT", "LIVENESS", "READINESS", "DETAIL"]);
        for (name, comp) in c.iter() {
            let timed_out = comp.timeout.is_some_and(|t| comp.reported.elapsed() > t);
            let (live_s, ready_s) = if timed_out {
                live = false;
                ready = false;
                reasons.push(format!("{name}: timed out"));
                ("timed out", "timed out")
            } else if comp.ready {
                ("reporting live", "reporting ready")
            } else {
                ready = false;
                reasons.push(format!("{name}: {}", comp.detail));
                ("reporting live", "reporting non-ready")
            };
            table.push([
                name.to_string(),
                comp.timeout
                    .map_or("-".into(), |t| format!("{}s", t.as_secs())),
                live_s.into(),
                ready_s.into(),
                comp.detail.clone(),
            ]);
        }
        if c.is_empty() {
            reasons.push("starting: no component has reported yet".into());
        }
        Summary {
            live,
            ready,
            reasons,
            table: table.render(),
        }
    }

    /// The verdict as `calicoctl node status` shows it.
    pub fn readiness(&self) -> Readiness {
        let s = self.summary();
        Readiness {
            ready: s.ready,
            reasons: s.reasons,
        }
    }
}

/// `calico-node -bird-ready`: no peers is ready; during [`BGP_GRACE`] after start every peer
/// must be Established (so a rolling update waits for BGP); afterwards one Established peer
/// is enough (so one dead node does not make the whole mesh unready). `Err` names the peers
/// that are not Established.
pub fn bgp_readiness(peers: &[PeerRow], since_start: Duration) -> Result<(), String> {
    let down: Vec<&str> = peers
        .iter()
        .filter(|p| p.info != "Established")
        .map(|p| p.peer_address.as_str())
        .collect();
    let up = peers.len() - down.len();
    let ok = peers.is_empty()
        || if since_start < BGP_GRACE {
            down.is_empty()
        } else {
            up > 0
        };
    if ok {
        Ok(())
    } else {
        Err(format!("BGP not established with {}", down.join(",")))
    }
}

/// The HTTP routes of the health server.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route(
            "/liveness",
            get(|State(h): State<Arc<Health>>| async move {
                let s = h.summary();
                (code(s.live), s.table)
            }),
        )
        .route(
            "/readiness",
            get(|State(h): State<Arc<Health>>| async move {
                let s = h.summary();
                (code(s.ready), s.table)
            }),
        )
        .with_state(health)
}

/// Felix's codes: 200 good (with the table), 503 bad.
fn code(good: bool) -> StatusCode {
    if good {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::PeerType;

    fn peer(addr: &str, info: &str) -> PeerRow {
        PeerRow {
            peer_address: addr.into(),
            peer_type: PeerType::Mesh,
            state: if info == "Established" { "up" } else { "start" }.into(),
            since: "00:00:00".into(),
            info: info.into(),
        }
    }

    #[test]
    fn bgp_readiness_is_calico_nodes() {
        let early = Duration::from_secs(5);
        let late = Duration::from_secs(60);
        assert_eq!(bgp_readiness(&[], early), Ok(()));
        let one_down = [peer("10.0.0.2", "Established"), peer("10.0.0.3", "Active")];
        assert_eq!(
            bgp_readiness(&one_down, early),
            Err("BGP not established with 10.0.0.3".into())
        );
        assert_eq!(bgp_readiness(&one_down, late), Ok(()));
        let all_down = [peer("10.0.0.2", "Connect"), peer("10.0.0.3", "Active")];
        assert_eq!(
            bgp_readiness(&all_down, late),
            Err("BGP not established with 10.0.0.2,10.0.0.3".into())
        );
    }

    #[test]
    fn summary_is_ready_only_when_every_component_is() {
        let h = Health::default();
        let s = h.summary();
        assert!(s.live && !s.ready, "nothing reported yet: not ready");
        h.report(DATAPLANE, Some(LIVENESS_TIMEOUT), true, "in sync");
        h.report(BGP, None, false, "BGP not established with 10.0.0.2");
        let s = h.summary();
        assert!(s.live && !s.ready);
        assert_eq!(s.reasons, ["bgp: BGP not established with 10.0.0.2"]);
        assert!(
            s.table
                .contains("|   COMPONENT   | TIMEOUT |    LIVENESS    |      READINESS      |"),
            "{}",
            s.table
        );
        assert!(
            s.table.contains(
                "| int_dataplane | 90s     | reporting live | reporting ready     | in sync"
            ),
            "{}",
            s.table
        );
        h.report(BGP, None, true, "");
        assert!(h.summary().ready);
        assert_eq!(
            h.readiness(),
            Readiness {
                ready: true,
                reasons: vec![]
            }
        );
    }

    #[test]
    fn a_component_that_stops_reporting_is_not_live() {
        let h = Health::default();
        h.report(DATAPLANE, Some(Duration::from_millis(1)), true, "");
        std::thread::sleep(Duration::from_millis(20));
        let s = h.summary();
        assert!(!s.live && !s.ready);
        assert_eq!(s.reasons, ["int_dataplane: timed out"]);
    }
}
