//! The agent's side of the BGP speaker (`calico-bgp`): turns the peering decision into the
//! speaker's desired state, keeps the learned best paths for the route reconciler, and turns
//! session status into `calicoctl node status` rows.
//!
//! BGP passwords: a BGPPeer names a secret (`secretKeyRef {name, key}`). The agent reads it from
//! `<CALICO_BGP_SECRETS_DIR>/<name>/<key>` (default `/etc/calico/bgp-secrets`), the layout a
//! Kubernetes Secret volume has, so the DaemonSet mounts the secret there and a Docker host
//! writes the file by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use calico_bgp::speaker::{
    AfiName, NextHopMode, PeerConfig, PrefixCommunities, Route, RouteEvent, Speaker, SpeakerConfig,
};
use ipnet::IpNet;
use tracing::{info, warn};

use crate::bgpfilter;
use crate::peering::{self, Session, SessionKind};
use crate::routes::RouteNotice;
use crate::status::{PeerRow, PeerType};

/// Where BGP password secrets are read from unless `CALICO_BGP_SECRETS_DIR` says otherwise.
pub const DEFAULT_SECRETS_DIR: &str = "/etc/calico/bgp-secrets";

/// What the agent wants from BGP right now.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerView {
    pub router_id: Option<IpAddr>,
    pub local_as: u32,
    pub listen_port: u16,
    pub sessions: Vec<Session>,
    pub announced: BTreeSet<IpNet>,
    pub local_v4: Option<IpAddr>,
    pub local_v6: Option<IpAddr>,
    pub cluster_id: Option<Ipv4Addr>,
    /// BGPFilter resources by name, for the sessions' `filters`.
    pub bgp_filters: BTreeMap<String, calico_api::BGPFilterSpec>,
    /// Communities every exported route inside a CIDR carries (`prefixAdvertisements`).
    pub prefix_advertisements: Vec<PrefixCommunities>,
    /// The service ranges (`serviceClusterIPs`, ...): a route inside them learned from a peer
    /// is never passed on, so a Local Service's /32 reaches routers only from the nodes that
    /// host its endpoints ([`crate::service_routes`]).
    pub service_ranges: Vec<IpNet>,
}

/// Export rules, ahead of a peer's BGPFilter rules, that keep learned service routes in.
fn service_export_guard(ranges: &[IpNet]) -> Vec<calico_bgp::speaker::PolicyRule> {
    ranges
        .iter()
        .map(|r| {
            let mut rule = calico_bgp::speaker::PolicyRule::all(
                calico_bgp::rib::Action::Reject,
                Some(r.addr().is_ipv6()),
            );
            rule.cidr = Some(*r);
            rule.min_len = Some(r.prefix_len());
            rule.max_len = Some(r.max_prefix_len());
            rule.remote_peers_only = true;
            rule
        })
        .collect()
}

pub struct BgpControl {
    speaker: Speaker,
    /// Best learned path per prefix: (next hop, peer it was learned from).
    learned: Arc<Mutex<BTreeMap<IpNet, (IpAddr, IpAddr)>>>,
    synced: Arc<AtomicBool>,
    /// Peer types by address, for the status table.
    kinds: BTreeMap<IpAddr, SessionKind>,
    last: Option<SpeakerConfig>,
    restarted: bool,
    secrets_dir: PathBuf,
    /// When the speaker started and was last given a new configuration (CalicoNodeStatus
    /// `lastBootTime` / `lastReconfigurationTime`).
    booted: SystemTime,
    reconfigured: Option<SystemTime>,
}

fn read_secret(dir: &std::path::Path, r: &peering::SecretRef) -> Option<String> {
    let path = dir.join(&r.name).join(&r.key);
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s.trim_end_matches('\n').to_string()),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "BGP password secret not readable; session stays down");
            None
        }
    }
}

/// The speaker's configuration for one view (pure apart from reading password files).
pub fn speaker_config(
    view: &SpeakerView,
    restarted: bool,
    secrets_dir: &std::path::Path,
) -> SpeakerConfig {
    let router_id = match view.router_id {
        Some(IpAddr::V4(a)) => a,
        // An IPv6-only node still needs a 32-bit router id: derive a stable one.
        _ => Ipv4Addr::from(
            view.local_v6
                .map(|a| match a {
                    IpAddr::V6(v6) => (u128::from(v6) as u32) | 0x0100_0000,
                    IpAddr::V4(v4) => u32::from(v4),
                })
                .unwrap_or(0x0100_0001),
        ),
    };
    let peers = view
        .sessions
        .iter()
        .filter_map(|s| {
            let password = match &s.password {
                None => None,
                Some(r) => Some(read_secret(secrets_dir, r)?),
            };
            // A filter we cannot honour keeps the session down rather than leak routes.
            let filters = match bgpfilter::peer_filters(
                &s.filters,
                &view.bgp_filters,
                s.peer_address.is_ipv6(),
                s.is_ebgp(),
            ) {
                Ok(f) => f,
                Err(e) => {
                    warn!(peer = %s.peer_address, error = %e, "BGP session stays down");
                    return None;
                }
            };
            Some(PeerConfig {
                address: s.peer_address,
                port: s.peer_port,
                remote_as: s.peer_as,
                local_as: (s.local_as != view.local_as).then_some(s.local_as),
                password,
                ttl_security: s.ttl_security,
                keepalive: s.keepalive_secs.and_then(|k| u16::try_from(k).ok()),
                hold_time: None,
                graceful_restart_time: s.graceful_restart_secs.and_then(|t| u16::try_from(t).ok()),
                next_hop_mode: match s.next_hop_mode {
                    peering::NextHopMode::Auto => NextHopMode::Auto,
                    peering::NextHopMode::SelfHop => NextHopMode::SelfMode,
                    peering::NextHopMode::Keep => NextHopMode::Keep,
                },
                route_reflector_client: s.route_reflector_client,
                import: filters.import,
                export: service_export_guard(&view.service_ranges)
                    .into_iter()
                    .chain(filters.export)
                    .collect(),
                passive: false,
                families: Some(vec![AfiName::of(s.peer_address)]),
                connect_retry: Some(1),
            })
        })
        .collect();
    SpeakerConfig {
        router_id,
        local_as: view.local_as,
        listen_addr: None,
        listen_port: view.listen_port,
        next_hop_v4: match view.local_v4 {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        },
        next_hop_v6: match view.local_v6 {
            Some(IpAddr::V6(a)) => Some(a),
            _ => None::<Ipv6Addr>,
        },
        cluster_id: view.cluster_id,
        restarted,
        peers,
        originated: view
            .announced
            .iter()
            .map(|p| Route {
                prefix: *p,
                next_hop: None,
                communities: vec![],
                large_communities: vec![],
            })
            .collect(),
        prefix_communities: view.prefix_advertisements.clone(),
    }
}

fn hhmmss(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

impl BgpControl {
    /// Starts the speaker. `restarted`: this agent finds its own routes already in the kernel,
    /// so it asks its peers (graceful restart) to keep ours while it comes back.
    /// Each route event goes on `routes` to the agent's route reconciler as it comes (the
    /// table of best paths is updated first; see [`crate::routes::RouteFeed`] on overflow).
    pub fn start(restarted: bool, routes: crate::routes::RouteFeed) -> BgpControl {
        let (speaker, mut events) = Speaker::start();
        let learned = Arc::new(Mutex::new(BTreeMap::new()));
        let synced = Arc::new(AtomicBool::new(false));
        let (l, s) = (learned.clone(), synced.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let notice = {
                    let mut map = l.lock().unwrap_or_else(|p| p.into_inner());
                    match ev {
                        RouteEvent::Best {
                            prefix,
                            next_hop,
                            learned_from,
                            ..
                        } => {
                            map.insert(prefix, (next_hop, learned_from));
                            RouteNotice::Best { prefix, next_hop }
                        }
                        RouteEvent::Withdrawn { prefix } => {
                            map.remove(&prefix);
                            RouteNotice::Withdrawn { prefix }
                        }
                        RouteEvent::Synced => {
                            info!("BGP speaker synchronised with its peers");
                            s.store(true, Ordering::SeqCst);
                            RouteNotice::Synced
                        }
                    }
                };
                if !routes.send(notice) {
                    return;
                }
            }
        });
        BgpControl {
            speaker,
            learned,
            synced,
            kinds: BTreeMap::new(),
            last: None,
            restarted,
            secrets_dir: std::env::var("CALICO_BGP_SECRETS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(DEFAULT_SECRETS_DIR)),
            booted: SystemTime::now(),
            reconfigured: None,
        }
    }

    /// Gives the speaker the desired state for `view` (only when it changed).
    pub fn apply(&mut self, view: &SpeakerView) {
        self.kinds = view
            .sessions
            .iter()
            .map(|s| (s.peer_address, s.kind))
            .collect();
        let cfg = speaker_config(view, self.restarted, &self.secrets_dir);
        if self.last.as_ref() == Some(&cfg) {
            return;
        }
        if let Err(e) = self.speaker.set_config(cfg.clone()) {
            warn!(error = %e, "BGP speaker is not running");
            return;
        }
        self.last = Some(cfg);
        self.reconfigured = Some(SystemTime::now());
    }

    pub fn learned(&self) -> BTreeMap<IpNet, IpAddr> {
        self.learned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, (nh, _))| (*p, *nh))
            .collect()
    }

    /// Best learned paths: prefix → (next hop, peer it was learned from).
    pub fn learned_paths(&self) -> BTreeMap<IpNet, (IpAddr, IpAddr)> {
        self.learned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configuration the speaker runs with, once it has one.
    pub fn config(&self) -> Option<&SpeakerConfig> {
        self.last.as_ref()
    }

    /// When the speaker started, and when it last took a new configuration.
    pub fn times(&self) -> (SystemTime, Option<SystemTime>) {
        (self.booted, self.reconfigured)
    }

    pub fn initial_sync_done(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Prefixes received from all peers (the `calico_bgp_prefixes_received` metric).
    pub fn prefixes_received(&self) -> usize {
        self.speaker
            .status()
            .iter()
            .map(|p| p.prefixes_received)
            .sum()
    }

    /// Session rows for `calicoctl node status`, IPv4 then IPv6.
    pub fn peer_rows(&self) -> (Vec<PeerRow>, Vec<PeerRow>) {
        let mut v4 = vec![];
        let mut v6 = vec![];
        for p in self.speaker.status() {
            let established = p.state == "Established";
            let row = PeerRow {
                peer_address: p.address.to_string(),
                peer_type: match self.kinds.get(&p.address) {
                    Some(SessionKind::Mesh) | None => PeerType::Mesh,
                    Some(SessionKind::Global) => PeerType::Global,
                    Some(SessionKind::Node) => PeerType::NodeSpecific,
                    // Calico's documented reflector set-up gives the reflectors node-scoped
                    // BGPPeers (a nodeSelector), which its status table shows as node specific.
                    Some(SessionKind::ReflectorClient) => PeerType::NodeSpecific,
                },
                state: if established { "up" } else { "start" }.to_string(),
                since: hhmmss(p.since),
                info: p.state.clone(),
            };
            match p.afi {
                AfiName::Ipv4 => v4.push(row),
                AfiName::Ipv6 => v6.push(row),
            }
        }
        (v4, v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh_session(addr: &str) -> Session {
        Session {
            peer_address: addr.parse().unwrap(),
            peer_port: 179,
            peer_as: 64512,
            local_as: 64512,
            kind: SessionKind::Mesh,
            bgp_peer: None,
            peer_node: Some("node2".into()),
            route_reflector_client: false,
            password: None,
            next_hop_mode: peering::NextHopMode::Auto,
            graceful_restart_secs: None,
            keepalive_secs: None,
            ttl_security: None,
            filters: vec![],
        }
    }

    fn view() -> SpeakerView {
        SpeakerView {
            router_id: Some("192.168.33.11".parse().unwrap()),
            local_as: 64512,
            listen_port: 179,
            sessions: vec![mesh_session("192.168.33.12")],
            announced: ["192.168.166.128/26".parse().unwrap()].into(),
            local_v4: Some("192.168.33.11".parse().unwrap()),
            local_v6: None,
            cluster_id: None,
            bgp_filters: BTreeMap::new(),
            prefix_advertisements: vec![],
            service_ranges: vec![],
        }
    }

    #[test]
    fn learned_service_routes_are_not_passed_on_but_our_own_are_announced() {
        let mut v = view();
        v.service_ranges = vec!["10.96.0.0/16".parse().unwrap()];
        v.announced.insert("10.96.0.0/16".parse().unwrap());
        let cfg = speaker_config(&v, false, std::path::Path::new("/nonexistent"));
        let export = &cfg.peers[0].export;
        let guard = &export[0];
        assert_eq!(guard.action, calico_bgp::rib::Action::Reject);
        assert!(guard.remote_peers_only);
        assert_eq!(guard.cidr, Some("10.96.0.0/16".parse().unwrap()));
        assert_eq!((guard.min_len, guard.max_len), (Some(16), Some(32)));
        assert!(
            cfg.originated
                .iter()
                .any(|r| r.prefix == "10.96.0.0/16".parse::<IpNet>().unwrap())
        );
    }

    #[test]
    fn mesh_view_becomes_one_ipv4_peer_announcing_our_block() {
        let cfg = speaker_config(&view(), false, std::path::Path::new("/nonexistent"));
        assert_eq!(cfg.router_id, Ipv4Addr::new(192, 168, 33, 11));
        assert_eq!(cfg.peers.len(), 1);
        let p = &cfg.peers[0];
        assert_eq!((p.remote_as, p.local_as), (64512, None));
        assert_eq!(p.families, Some(vec![AfiName::Ipv4]));
        assert_eq!(cfg.originated.len(), 1);
        assert_eq!(cfg.next_hop_v4, Some(Ipv4Addr::new(192, 168, 33, 11)));
    }

    #[test]
    fn password_comes_from_the_secret_file_and_a_missing_one_keeps_the_session_down() {
        let dir = std::env::temp_dir().join(format!("bgp-secrets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bgp-secrets")).unwrap();
        std::fs::write(dir.join("bgp-secrets/rr"), "s3cret\n").unwrap();
        let mut v = view();
        v.sessions[0].password = Some(peering::SecretRef {
            name: "bgp-secrets".into(),
            key: "rr".into(),
        });
        let cfg = speaker_config(&v, false, &dir);
        assert_eq!(cfg.peers[0].password.as_deref(), Some("s3cret"));
        v.sessions[0].password.as_mut().unwrap().key = "missing".into();
        assert!(speaker_config(&v, false, &dir).peers.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn peer_filters_reach_the_speaker_and_a_bad_one_keeps_the_session_down() {
        let mut v = view();
        v.sessions[0].filters = vec!["f".into()];
        let dir = std::path::Path::new("/nonexistent");
        // Unknown filter: no session.
        assert!(speaker_config(&v, false, dir).peers.is_empty());
        v.bgp_filters.insert(
            "f".into(),
            serde_yaml_ng::from_str("exportV4:\n  - action: Reject\n").unwrap(),
        );
        let cfg = speaker_config(&v, false, dir);
        assert_eq!(cfg.peers[0].export.len(), 1);
        assert!(cfg.peers[0].import.is_empty());
    }

    #[test]
    fn since_is_utc_time_of_day() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 3 + 7 * 3600 + 17 * 60 + 13);
        assert_eq!(hhmmss(t), "07:17:13");
    }
}
