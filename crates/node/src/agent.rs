//! The agent's run loop: the model (one watch) → only the work a change touches → apply.
//!
//! ```text
//!   etcd list_watch_without_prev("/calico/") ─► watch task ─► WatchEvent (mpsc 1024) ─┐
//!   speaker route events ─► BgpControl ─► RouteFeed (bounded 4096, overflow mark) ─────┤
//!   refresh tick (routeRefreshInterval, 90 s) ──────────────────────────────────────────┤
//!                          (no timer: a round takes all that is queued) ─► run_round():  ▼
//!     Store::apply(event) → Change { aspects, policy keys }          (model/store.rs)
//!     felix    → FelixConfiguration from the model → log level, servers, intervals
//!     speaker  → Store::snapshot → peering::sessions_for → BgpControl::apply
//!     routes   → Store::snapshot + learned paths → diff against the kernel → one batch
//!     notices  → apply_learned: prefix + next hop straight to netlink (nothing else)
//!     policy   → PolicyModel::advance (calico_policy::incremental: only the policies,
//!                endpoints and sets touched) → PolicySync::enforce_compiled → nftables diff
//!     resync   → all of the above from the model, the kernel's routes listed and compared,
//!                the policy program recomputed from scratch and compared
//!   every second: status rows, BGP readiness, health heartbeat ──► NodeStatus, Health, Metrics
//!   status socket task ◄── shared NodeStatus (peer rows, readiness)
//!   health server (/liveness, /readiness) ◄── Health; metrics server (/metrics) ◄── Metrics
//! ```
//! Nothing reads the datastore per change: the watch lists once at start (and after a
//! compaction) and the model answers everything else. A failed round is retried as a full
//! resync with backoff (1 s doubling to 30 s) and makes the node not ready with the reason.
//! Level-triggered safety: the periodic resync compares the model's desired state with the
//! kernel and repairs drift, and a restarted agent computes the same state from its first list
//! and converges on what is already there without touching it.
//!
//! Restart rule: routes learned over BGP are only removed once the speaker has synchronised
//! with its peers (end-of-RIB from every established peer) or the graceful-restart window has
//! passed, so a restarting agent never withdraws a working route from its own kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calico_api::service_advertisement::SERVICES_PREFIX;
use calico_dataplane::{Netlink, Route, RouteChange, RouteFilter, RouteTarget};
use calico_datastore::{Datastore, EtcdClient, KindRef, WatchEvent};
use calico_ipam::Ipam;
use calico_policy::isolate::{Outcome, PolicyIssue};
use calico_policy::program::HostProgram;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::bgp::{BgpControl, SpeakerView};
use crate::config::{NetworkingBackend, NodeConfig};
use crate::felix_config::{self, FelixSettings, Listen};
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::model::{Aspects, Change, PolicyModel, Store};
use crate::peering;
use crate::policy::{PolicyError, PolicySync};
use crate::routes::{self, KernelRoute, ROUTE_PROTOCOL, RouteInputs, RouteNotice, Target};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::startup::{self, Started};
use crate::status::{self, NodeStatus};

/// Longest pause between retries of a failing round.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the status rows served to `calicoctl node status` are refreshed.
const STATUS_REFRESH: Duration = Duration::from_secs(1);
/// Longest wait for the speaker's initial sync before stale learned routes may be removed.
const LEARNED_ROUTES_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("kernel: {what}")]
    Kernel {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("peering")]
    Peering(#[from] peering::PeeringError),
    #[error("start-up")]
    Startup(#[from] startup::StartupError),
}

fn to_kernel(r: &KernelRoute) -> Route {
    match &r.target {
        Target::Blackhole => Route::blackhole(r.dst, ROUTE_PROTOCOL),
        Target::Via(gw) => Route::gateway(r.dst, *gw, None, ROUTE_PROTOCOL),
        // Workload routes use the kernel's default protocol (boot) like `ip route add`, as
        // the seed shows: `192.168.166.128 dev calicce21fc3677 scope link`.
        Target::Dev(ifname) => Route::device(r.dst, ifname, 3),
        Target::Onlink { via, dev } => Route {
            target: RouteTarget::Gateway {
                via: *via,
                ifname: Some(dev.clone()),
                onlink: true,
            },
            ..Route::blackhole(r.dst, ROUTE_PROTOCOL)
        },
    }
}

fn from_kernel(r: &Route) -> Option<KernelRoute> {
    let target = match &r.target {
        RouteTarget::Blackhole => Target::Blackhole,
        RouteTarget::Gateway {
            via,
            ifname: Some(dev),
            onlink: true,
        } => Target::Onlink {
            via: *via,
            dev: dev.clone(),
        },
        RouteTarget::Gateway { via, .. } => Target::Via(*via),
        RouteTarget::Device { ifname } => Target::Dev(ifname.clone()),
        RouteTarget::Other { .. } => return None,
    };
    Some(KernelRoute { dst: r.dst, target })
}

/// Reads the routes this agent may own: protocol 12, plus routes on workload interfaces.
async fn present_routes(nl: &Netlink) -> Result<BTreeSet<KernelRoute>, AgentError> {
    let all = nl
        .routes(&RouteFilter::default())
        .await
        .map_err(|e| AgentError::Kernel {
            what: "listing routes".into(),
            source: Box::new(e),
        })?;
    Ok(all
        .iter()
        .filter(|r| {
            r.protocol == ROUTE_PROTOCOL
                || matches!(&r.target, RouteTarget::Device { ifname } if calico_api::names::is_workload_iface(ifname))
        })
        .filter_map(from_kernel)
        .collect())
}

/// Brings the kernel to `desired`. `may_remove_learned` is false until the speaker has synced.
/// Returns how long listing the kernel's routes took (`felix_route_table_list_seconds`).
/// With `ipv6` false, IPv6 routes are left alone (`ipv6Support: false`).
/// Every change goes in one batch (many routes per netlink message, each acknowledged): a
/// refused route is logged with its prefix and fails the round (so it is retried), the others
/// land.
async fn apply_routes(
    nl: &Netlink,
    desired: &BTreeSet<KernelRoute>,
    may_remove_learned: bool,
    ipv6: bool,
) -> Result<Duration, AgentError> {
    let listing = Instant::now();
    let mut present = present_routes(nl).await?;
    let list_time = listing.elapsed();
    if !ipv6 {
        present.retain(|r| r.dst.addr().is_ipv4());
    }
    let diff = routes::diff(desired, &present);
    let mut changes = Vec::with_capacity(diff.add.len() + diff.remove.len());
    for r in &diff.add {
        // A workload whose veth is not there (yet, or any more) has no route to install.
        if let Target::Dev(ifname) = &r.target
            && nl.link(ifname).await.ok().flatten().is_none()
        {
            continue;
        }
        info!(route = %to_kernel(r), "installing route");
        changes.push(RouteChange::Replace(to_kernel(r)));
    }
    for r in &diff.remove {
        if matches!(r.target, Target::Via(_)) && !may_remove_learned {
            debug!(route = %to_kernel(r), "keeping learned route until the speaker has synced");
            continue;
        }
        info!(route = %to_kernel(r), "removing route");
        changes.push(RouteChange::Delete(to_kernel(r)));
    }
    let failures = nl.apply_route_changes(&changes).await;
    for (_, e) in &failures {
        warn!(error = %e, "route change failed");
    }
    let failed = failures.len();
    match failures.into_iter().next() {
        None => Ok(list_time),
        Some((_, first)) => Err(AgentError::Kernel {
            what: format!("{failed} of {} route changes failed", changes.len()),
            source: Box::new(first),
        }),
    }
}

/// An HTTP server (metrics or health) that FelixConfiguration may start, move or stop.
pub(crate) struct Server {
    what: &'static str,
    running: Option<(Listen, tokio::task::JoinHandle<()>)>,
}

impl Server {
    pub(crate) fn new(what: &'static str) -> Server {
        Server {
            what,
            running: None,
        }
    }

    /// Serves `router` on `want` when it is enabled; stops or moves a server that differs.
    /// A failed bind is logged and retried at the next round.
    pub(crate) async fn ensure(&mut self, want: &Listen, router: impl FnOnce() -> axum::Router) {
        let want = want.enabled.then_some(want);
        if self.running.as_ref().map(|(l, _)| l) == want {
            return;
        }
        if let Some((old, task)) = self.running.take() {
            task.abort();
            // The listener closes once the aborted task is dropped; wait for that before a
            // new bind, which may be to the same port.
            let _ = task.await;
            info!(server = self.what, host = %old.host, port = old.port, "stopped serving");
        }
        let Some(want) = want else { return };
        // Felix's defaults: "" is every address, "localhost" is the IPv4 loopback.
        let host = match want.host.as_str() {
            "" => "0.0.0.0",
            "localhost" => "127.0.0.1",
            h => h,
        };
        let listener = match tokio::net::TcpListener::bind((host, want.port)).await {
            Ok(l) => l,
            Err(e) => {
                error!(server = self.what, host, port = want.port, error = %e, "cannot serve; retrying at the next round");
                return;
            }
        };
        info!(server = self.what, host, port = want.port, "serving");
        let app = router();
        let what = self.what;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!(server = what, error = %e, "server stopped");
            }
        });
        self.running = Some((want.clone(), task));
    }
}

/// FelixConfiguration for `node` from the datastore, with the environment's precedence.
/// When the datastore cannot be read, the environment and Felix's defaults.
async fn read_felix(ds: &Datastore, node: &str, wireguard: bool) -> Result<FelixSettings, String> {
    let env = |k: &str| std::env::var(k).ok();
    let docs = ds
        .dynamic()
        .list(&KindRef::of::<calico_api::FelixConfiguration>(), None)
        .await
        .map_err(|e| format!("listing FelixConfiguration: {e}"))?
        .items;
    Ok(felix_config::settings_for(&env, &docs, node, wireguard))
}

/// What the agent serves and how it runs, applied from FelixConfiguration every round.
struct Settings {
    current: FelixSettings,
    metrics_server: Server,
    health_server: Server,
    refresh: watch::Sender<Option<Duration>>,
    reporting: watch::Sender<Option<Duration>>,
}

impl Settings {
    async fn apply(&mut self, new: FelixSettings, health: &Arc<Health>, metrics: &Arc<Metrics>) {
        crate::logging::set_level(new.log_level.as_deref());
        self.metrics_server
            .ensure(&new.metrics, || crate::metrics::router(metrics.clone()))
            .await;
        self.health_server
            .ensure(&new.health, || crate::health::router(health.clone()))
            .await;
        self.refresh.send_if_modified(|r| {
            let changed = *r != new.route_refresh;
            *r = new.route_refresh;
            changed
        });
        self.reporting.send_if_modified(|r| {
            let changed = *r != new.reporting_interval;
            *r = new.reporting_interval;
            changed
        });
        if new.refused != self.current.refused {
            for r in &new.refused {
                error!(source = %r.source, field = %r.field, reason = %r.reason, "FelixConfiguration field refused");
            }
        }
        let detail: Vec<String> = new.refused.iter().map(ToString::to_string).collect();
        health.report(
            health::CONFIG,
            None,
            new.refused.is_empty(),
            detail.join("; "),
        );
        self.current = new;
    }
}

/// Runs the agent until the process is stopped.
pub async fn run(mut cfg: NodeConfig, etcd: EtcdClient) -> Result<(), AgentError> {
    let ds = Datastore::from_etcd(etcd.clone());
    let ipam = Ipam::new(etcd.clone());
    let health = Health::new();
    let metrics = Metrics::new();
    health.report(
        health::DATAPLANE,
        Some(health::LIVENESS_TIMEOUT),
        false,
        "waiting for the first dataplane sync",
    );
    // FelixConfiguration first: the health server answers (not ready) during start-up, and
    // ipv6Support decides whether start-up creates the default IPv6 pool.
    let wireguard = felix_config::kernel_has_wireguard();
    let first = match read_felix(&ds, &cfg.node_name, wireguard).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "FelixConfiguration not readable yet; environment and defaults apply");
            felix_config::settings_for(
                &|k: &str| std::env::var(k).ok(),
                &[],
                &cfg.node_name,
                wireguard,
            )
        }
    };
    cfg.ipv6_support = first.ipv6_support;
    let (refresh_tx, mut refresh_rx) = watch::channel(first.route_refresh);
    let (reporting_tx, reporting_rx) = watch::channel(first.reporting_interval);
    let mut settings = Settings {
        current: FelixSettings::default(),
        metrics_server: Server::new("metrics"),
        health_server: Server::new("health"),
        refresh: refresh_tx,
        reporting: reporting_tx,
    };
    settings.apply(first, &health, &metrics).await;

    let started: Started = startup::run(&cfg, &ds).await?;
    crate::report::spawn(etcd.clone(), started.node_name.clone(), reporting_rx);

    let status = Arc::new(Mutex::new(NodeStatus {
        node_name: started.node_name.clone(),
        ipv4_peers: vec![],
        ipv6_peers: vec![],
        readiness: Some(health.readiness()),
        policy_issues: vec![],
    }));
    let served = status.clone();
    let run_dir = cfg.run_dir.clone();
    tokio::spawn(async move {
        let current = move || {
            served
                .lock()
                .map(|s| s.clone())
                .unwrap_or_else(|p| p.into_inner().clone())
        };
        if let Err(e) = status::serve(run_dir, current).await {
            warn!(error = %e, "status socket stopped");
        }
    });

    let nl = Netlink::connect().map_err(|e| AgentError::Kernel {
        what: "opening netlink".into(),
        source: Box::new(e),
    })?;
    let (route_feed, mut route_rx) = crate::routes::route_feed(crate::routes::ROUTE_NOTICES);
    // Our own routes already in the kernel mean this agent is restarting: peers are asked
    // (graceful restart) to keep our routes, and we keep theirs until the speaker has synced.
    let restarted = !nl
        .routes(&RouteFilter::protocol(ROUTE_PROTOCOL))
        .await
        .map_err(|e| AgentError::Kernel {
            what: "listing routes".into(),
            source: Box::new(e),
        })?
        .is_empty();
    if restarted {
        info!("found this agent's routes in the kernel: restarting gracefully");
    }
    let mut speaker = match cfg.backend {
        NetworkingBackend::Bgp => Some(BgpControl::start(restarted, route_feed)),
        NetworkingBackend::None | NetworkingBackend::Vxlan => None,
    };
    let mut tunnels = crate::tunnel::Tunnels::new(cfg.backend == NetworkingBackend::Bgp);
    let node_status =
        crate::node_status::Publisher::spawn(ds.clone(), started.node_name.clone(), nl.clone());

    // The model: one watch on /calico/ (a list at start and after a compaction, otherwise
    // resumed from its revision) keeps the store; nothing else reads the datastore per change.
    let (watch_tx, mut watch_rx) = mpsc::channel::<WatchEvent>(1024);
    let watch_kv = etcd.clone();
    tokio::spawn(async move {
        loop {
            let mut events = watch_kv.list_watch_without_prev("/calico/");
            while let Some(ev) = events.next().await {
                match ev {
                    // Status reports (our own writes among them) change nothing we reconcile.
                    Ok(ev)
                        if crate::node_status::is_node_status_event(&ev)
                            || crate::report::is_report_event(&ev) => {}
                    Ok(ev) => {
                        if watch_tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => warn!(error = %e, "datastore watch error"),
                }
            }
            // The watch gave up (etcd away for long): start again with a fresh list.
            warn!("datastore watch ended; listing again");
            tokio::time::sleep(MAX_BACKOFF).await;
        }
    });
    // The periodic full check (routeRefreshInterval; none when it is 0).
    let (tick_tx, mut tick_rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        loop {
            let every = *refresh_rx.borrow_and_update();
            let changed = match every {
                Some(d) => tokio::select! {
                    _ = tokio::time::sleep(d) => {
                        if tick_tx.send(()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    r = refresh_rx.changed() => r,
                },
                None => refresh_rx.changed().await,
            };
            if changed.is_err() {
                return;
            }
        }
    });

    // Policy: the previous run's table keeps enforcing until the first sync replaces it in
    // one transaction, so a restart never opens a gap. Without a usable nftables the agent
    // is not ready and retries every round (rounds back off while they fail).
    let mut policy: Option<PolicySync> = None;
    let mut store = Store::new(&started.node_name);
    let mut model: Option<PolicyModel> = None;
    let mut routing = Routing::default();

    println!("{}", status::STARTED_LINE);
    let started_at = Instant::now();
    let mut failures: u32 = 0;
    let mut work = Work::default();
    // For the per-round debug line: when the round's first trigger arrived, how many watch
    // events it took, and how long taking them into the store took.
    let mut first_at = Instant::now();
    let (mut work_events, mut store_time) = (0usize, Duration::ZERO);
    // The first round waits for the watch's first snapshot (the start-up list).
    let mut synced_once = false;
    loop {
        if synced_once {
            let round = Instant::now();
            // A full recompute: the watch's list (start, compaction) or the periodic resync.
            if work.resync || work.change.snapshot {
                metrics.inc(crate::metrics::RESYNCS_STARTED);
            }
            let problems = run_round(
                &mut work,
                &mut Round {
                    ds: &ds,
                    ipam: &ipam,
                    tunnels: &mut tunnels,
                    store: &store,
                    model: &mut model,
                    policy: &mut policy,
                    routing: &mut routing,
                    speaker: speaker.as_mut(),
                    settings: &mut settings,
                    nl: &nl,
                    health: &health,
                    metrics: &metrics,
                    status: &status,
                    started: &started,
                    started_at,
                    wireguard,
                },
            )
            .await;
            metrics.observe(crate::metrics::APPLY_TIME, round.elapsed().as_secs_f64());
            debug!(
                events = work_events,
                since_first_us = first_at.elapsed().as_micros() as u64,
                store_us = store_time.as_micros() as u64,
                round_us = round.elapsed().as_micros() as u64,
                "round done"
            );
            work_events = 0;
            if problems.is_empty() {
                debug!("dataplane in sync");
                failures = 0;
                health.report(
                    health::DATAPLANE,
                    Some(health::LIVENESS_TIMEOUT),
                    true,
                    "in sync",
                );
            } else {
                failures += 1;
                metrics.inc(crate::metrics::DATAPLANE_FAILURES);
                health.report(
                    health::DATAPLANE,
                    Some(health::LIVENESS_TIMEOUT),
                    false,
                    problems.join("; "),
                );
            }
        }
        // A failed round is retried (as a full resync) after 1 s, then 2, 4, ... up to
        // MAX_BACKOFF.
        let retry_at = (failures > 0).then(|| {
            Instant::now()
                + (Duration::from_secs(1) * 2u32.saturating_pow(failures - 1)).min(MAX_BACKOFF)
        });
        // Wait for the next change. Session state changes do not start a round (nothing we
        // program changed), so the status rows and health are refreshed every second
        // meanwhile: cheap, and neither `calicoctl node status` nor readiness lags a session
        // by more than that.
        loop {
            refresh_status(&health, &metrics, &status, speaker.as_ref(), started_at);
            node_status.observe(speaker.as_ref());
            tokio::select! {
                ev = watch_rx.recv() => {
                    let Some(ev) = ev else { return Ok(()) };
                    work_events += 1;
                    work.event(&mut store, ev);
                    synced_once |= store.revision() > 0;
                    break;
                }
                n = route_rx.rx.recv() => {
                    let Some(n) = n else { return Ok(()) };
                    work.notice(n);
                    break;
                }
                _ = tick_rx.recv() => {
                    work.resync = true;
                    break;
                }
                _ = tokio::time::sleep(STATUS_REFRESH) => {
                    if retry_at.is_some_and(|t| Instant::now() >= t) {
                        work.resync = true;
                        break;
                    }
                }
            }
        }
        // Latency first, as Felix's dataplane loop: the round starts at once with everything
        // already queued. Whatever arrives while a round runs waits in the channels and is
        // taken whole by the next round, so a burst batches by itself without a timer. The
        // events of one etcd transaction come in one watch response but are forwarded one by
        // one, so they usually, not always, share a round (as in Felix); one yield first lets
        // a producer that is mid-way through a response finish it.
        first_at = Instant::now();
        tokio::task::yield_now().await;
        while let Ok(ev) = watch_rx.try_recv() {
            work_events += 1;
            work.event(&mut store, ev);
            synced_once |= store.revision() > 0;
        }
        while let Ok(n) = route_rx.rx.try_recv() {
            work.notice(n);
        }
        if route_rx.take_overflow() {
            debug!("route notices overflowed: reconciling every route");
            work.all_routes = true;
        }
        if tick_rx.try_recv().is_ok() {
            work.resync = true;
        }
        store_time = first_at.elapsed();
    }
}

/// Status rows, BGP readiness and peer metrics from the speaker (every second).
fn refresh_status(
    health: &Arc<Health>,
    metrics: &Arc<Metrics>,
    status: &Arc<Mutex<NodeStatus>>,
    speaker: Option<&BgpControl>,
    started_at: Instant,
) {
    if let Some(sp) = speaker {
        let (v4, v6) = sp.peer_rows();
        let peers: Vec<_> = v4.iter().chain(&v6).cloned().collect();
        match health::bgp_readiness(&peers, started_at.elapsed()) {
            Ok(()) => health.report(health::BGP, None, true, ""),
            Err(why) => health.report(health::BGP, None, false, why),
        }
        let mut states: BTreeMap<String, f64> = BTreeMap::new();
        for p in &peers {
            *states.entry(p.info.clone()).or_default() += 1.0;
        }
        metrics.replace(
            crate::metrics::BGP_PEERS,
            states
                .into_iter()
                .map(|(s, n)| (vec![("state", s)], n))
                .collect(),
        );
        metrics.set(
            crate::metrics::BGP_PREFIXES_RECEIVED,
            sp.prefixes_received() as f64,
        );
        if let Ok(mut s) = status.lock() {
            s.ipv4_peers = v4;
            s.ipv6_peers = v6;
        }
    }
    if let Ok(mut s) = status.lock() {
        s.readiness = Some(health.readiness());
    }
}

/// What the next round has to do.
#[derive(Debug, Default)]
struct Work {
    /// What the watch changed since the last round.
    change: Change,
    /// Route notices from the speaker since the last round, last one per prefix wins:
    /// prefix → next hop (`None`: withdrawn).
    learned: BTreeMap<ipnet::IpNet, Option<std::net::IpAddr>>,
    /// Every route is reconciled against the kernel (notices overflowed, the speaker synced).
    all_routes: bool,
    /// Level-triggered repair: everything is recomputed and compared with the kernel
    /// (routeRefreshInterval, and after a failed round).
    resync: bool,
    /// A published Service record or a BGPConfiguration changed (or the watch re-listed):
    /// the service addresses to advertise are read again.
    services: bool,
    /// Other nodes' block affinities that changed: (host, block) (their tunnel routes).
    remote_blocks: BTreeSet<(String, ipnet::IpNet)>,
}

impl Work {
    /// Takes one watch event into the work.
    fn event(&mut self, store: &mut Store, ev: WatchEvent) {
        let key = match &ev {
            WatchEvent::Put(kv) => kv.key.clone(),
            WatchEvent::Delete { key, .. } => key.clone(),
            WatchEvent::Snapshot(_) => String::new(),
        };
        // By value: the store takes a snapshot's objects in one by one (see `Store::apply`).
        self.change.merge(store.apply(ev));
        let key = key.as_str();
        if let Some((host, block)) = calico_ipam::model::parse_affinity_key(key)
            && host != store.node()
        {
            self.remote_blocks.insert((host, block));
        }
        if key.is_empty()
            || key.starts_with(SERVICES_PREFIX)
            || key.contains("/projectcalico.org/bgpconfigurations/")
        {
            self.services = true;
        }
    }

    fn notice(&mut self, n: RouteNotice) {
        match n {
            RouteNotice::Best { prefix, next_hop } => {
                self.learned.insert(prefix, Some(next_hop));
            }
            RouteNotice::Withdrawn { prefix } => {
                self.learned.insert(prefix, None);
            }
            // Learned routes the agent kept through a restart may go now.
            RouteNotice::Synced => self.all_routes = true,
        }
    }
}

/// What a round works on.
struct Round<'a> {
    ds: &'a Datastore,
    ipam: &'a Ipam,
    tunnels: &'a mut crate::tunnel::Tunnels,
    store: &'a Store,
    model: &'a mut Option<PolicyModel>,
    policy: &'a mut Option<PolicySync>,
    routing: &'a mut Routing,
    speaker: Option<&'a mut BgpControl>,
    settings: &'a mut Settings,
    nl: &'a Netlink,
    health: &'a Arc<Health>,
    metrics: &'a Arc<Metrics>,
    status: &'a Arc<Mutex<NodeStatus>>,
    started: &'a Started,
    started_at: Instant,
    wireguard: bool,
}

/// The route state the agent keeps between rounds.
#[derive(Debug, Default)]
struct Routing {
    /// This node's routing snapshot, from the store (recomputed when routing inputs change).
    snapshot: Option<Snapshot>,
    /// The learned routes installed (or kept) by the last full route round, updated by the
    /// notices since: what a withdrawal removes.
    learned_installed: BTreeMap<ipnet::IpNet, std::net::IpAddr>,
    /// The service ranges and this node's Local service addresses (read when `Work::services`).
    services: crate::service_routes::ServiceAdvertisement,
}

/// One round: only the parts `work` touches (everything on a resync). Returns the problems
/// (empty: in sync).
async fn run_round(work: &mut Work, r: &mut Round<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let w = std::mem::take(work);
    let mut aspects = w.change.aspects;
    if w.resync {
        aspects = Aspects::ALL;
    }
    let node = r.started.node_name.clone();
    let felix_docs = r.store.felix_docs();
    if aspects.felix {
        let env = |k: &str| std::env::var(k).ok();
        let new = felix_config::settings_for(&env, &felix_docs, &node, r.wireguard);
        r.settings.apply(new, r.health, r.metrics).await;
    }
    let ipv6 = r.settings.current.ipv6_support;
    // Routing: the speaker's configuration and the kernel's routes.
    if aspects.speaker || aspects.routes || r.routing.snapshot.is_none() {
        r.routing.snapshot = Some(r.store.snapshot());
    }
    let snap = r.routing.snapshot.clone().unwrap_or_default();
    if w.services {
        // Read only when a Service record or a BGPConfiguration changed (never per change of
        // anything else): the published records are few and change rarely.
        match crate::service_routes::read(r.ds, r.ipam.kv(), &node).await {
            Ok(s) => {
                r.routing.services = s;
                aspects.speaker = true;
            }
            Err(e) => {
                work.services = true;
                problems.push(format!("service addresses: {}", error_chain(&e)));
            }
        }
    }
    // Overlays (from the model; see crate::tunnel): a sync on start, resync, and when
    // pools, Nodes or FelixConfiguration change while an overlay is in use (or was: cleanup);
    // another node's block affinity only recomputes and installs that block's route.
    let overlay = crate::tunnel::overlay_in_use(r.store.ip_pools()) || r.tunnels.in_use();
    // IPAM is checked for this node's tunnel addresses only when the watch (re)listed: a
    // periodic resync compares with the model and the kernel, it reads nothing.
    let full = w.change.snapshot;
    let mut tunnel_sync =
        w.resync || full || (overlay && (aspects.speaker || aspects.felix || r.tunnels.failed()));
    if !tunnel_sync && overlay && !w.remote_blocks.is_empty() {
        match r.tunnels.blocks_changed(r.store, &w.remote_blocks) {
            Some(install) => {
                if let Err(e) = install_tunnel_routes(r.nl, &install, ipv6).await {
                    warn!(error = %e, "tunnel route change failed; will retry");
                    problems.push(format!("routes: {e}"));
                    aspects.routes = true;
                }
            }
            None => tunnel_sync = true,
        }
    }
    if tunnel_sync {
        let cx = crate::tunnel::SyncContext {
            store: r.store,
            ds: r.ds,
            ipam: r.ipam,
            nl: r.nl,
            vxlan: &r.settings.current.vxlan,
            ipv6,
            full,
        };
        match r.tunnels.sync(&cx).await {
            Ok(changed) => aspects.routes |= changed,
            Err(e) => {
                warn!(error = %e, "overlay not in sync; will retry");
                problems.push(format!("overlay: {e}"));
                aspects.routes = true;
            }
        }
    }
    // Without a speaker no route is learned: nothing to wait for.
    let mut synced = r.speaker.is_none() || r.started_at.elapsed() > LEARNED_ROUTES_GRACE;
    let mut learned = BTreeMap::new();
    if let Some(sp) = r.speaker.as_deref_mut() {
        if aspects.speaker {
            match speaker_view(&snap, r.started, &r.routing.services) {
                Ok(view) => sp.apply(&view),
                Err(e) => problems.push(format!("peering: {e}")),
            }
        }
        synced = synced || sp.initial_sync_done();
        if aspects.routes || w.all_routes {
            learned = sp.learned();
            // Service addresses are reached locally (kube-proxy), never via another node.
            learned.retain(|p, _| !r.routing.services.ranges.covers(p));
        }
    }
    if aspects.routes || w.all_routes {
        match reconcile_routes(r.nl, &snap, &learned, r.tunnels, synced, ipv6).await {
            Ok(stats) => {
                r.routing.learned_installed = stats.learned_installed.clone();
                record_route_metrics(r.metrics, r.store, &stats);
            }
            Err(e) => {
                warn!(error = %e, source = ?std::error::Error::source(&e), "route reconcile failed; will retry");
                problems.push(format!("routes: {e}"));
            }
        }
    } else if !w.learned.is_empty() {
        // A route event: straight to the kernel, nothing else recomputed.
        let mut notices = w.learned.clone();
        notices.retain(|p, _| !r.routing.services.ranges.covers(p));
        r.tunnels.filter_notices(&mut notices);
        if let Err(e) = apply_learned(
            r.nl,
            &snap,
            &notices,
            &mut r.routing.learned_installed,
            synced,
            ipv6,
        )
        .await
        {
            warn!(error = %e, "learned route change failed; will retry");
            problems.push(format!("routes: {e}"));
        }
    }
    // IPPool changes mark the speaker: NAT outgoing follows the pools, so the policy sync
    // (which carries the nat chain) runs then too; unchanged, it sends nothing.
    if (aspects.policy || aspects.felix || aspects.speaker)
        && let Err(e) = sync_policy(r, &felix_docs, &w.change, w.resync)
    {
        problems.push(e);
    }
    // Learned routes change with route notices too (no full round): counted every round.
    if r.speaker.is_some() {
        r.metrics.set(
            crate::metrics::BGP_ROUTES_INSTALLED,
            r.routing.learned_installed.len() as f64,
        );
    }
    // IPAM blocks change no work, only this metric (from the model, every round).
    r.metrics.set(
        crate::metrics::IPAM_ALLOCATED,
        r.store.own_addresses_in_use() as f64,
    );
    problems
}

/// Updates the policy model with the changed objects and enforces the program when it
/// changed. `resync` also checks that the table is still in the kernel.
fn sync_policy(
    r: &mut Round<'_>,
    felix_docs: &[serde_json::Value],
    change: &Change,
    resync: bool,
) -> Result<(), String> {
    let node = r.started.node_name.as_str();
    let mut problem = None;
    let felix = match calico_policy::felix::settings_for(felix_docs, node) {
        Ok(f) => f,
        Err(e) => {
            problem = Some(format!("policy: {}", error_chain(&PolicyError::from(e))));
            r.model
                .as_ref()
                .map(|m| m.felix().clone())
                .unwrap_or_default()
        }
    };
    // The model first: whatever fails below, it has taken this change.
    let t = Instant::now();
    PolicyModel::advance(r.model, r.store, change, &felix);
    let model_time = t.elapsed();
    if resync {
        // Level-triggered safety: the periodic resync recomputes the program from the whole
        // store (memory only, no datastore read); a difference would be a bug of the
        // incremental path, logged, and the recomputed program is the one enforced.
        let fresh = PolicyModel::new(r.store, &felix);
        let same = match (fresh.program(), r.model.as_ref().map(PolicyModel::program)) {
            (Ok(a), Some(Ok(b))) => a == b,
            (Err(_), Some(Err(_))) => true,
            _ => false,
        };
        if !same {
            error!(
                "the incremental policy model differed from a full recompute; enforcing the recompute"
            );
        }
        *r.model = Some(fresh);
    }
    if let Some(p) = problem {
        return Err(p);
    }
    if r.policy.is_none() {
        match PolicySync::new() {
            Ok(p) => *r.policy = Some(p),
            Err(e) => {
                error!(error = %e, "nftables cannot be programmed: policy is NOT enforced on this node; not ready, retrying");
                return Err(format!("nftables cannot be programmed: {e}"));
            }
        }
    }
    let p = r.policy.as_mut().expect("set above");
    // NAT outgoing lives in the policy table: from the model's pools, enforced by this sync.
    let pools: Vec<calico_api::IPPool> = r.store.ip_pools().cloned().collect();
    p.set_nat_outgoing(crate::nat::desired(&pools, &r.settings.current));
    let model = r.model.as_ref().expect("set by advance");
    // The step timings go with the "policy applied" line (span fields).
    let span = tracing::info_span!(
        "policy_round",
        model_us = model_time.as_micros() as u64,
        verify_us = tracing::field::Empty
    );
    let _entered = span.enter();
    let synced = match model.program() {
        Ok((program, issues)) => {
            // Level-triggered safety on the periodic resync (and the retry after a failed
            // round): the table is checked in the kernel and the whole of it recomputed and
            // compared. Other rounds send what the model changed only.
            let t = Instant::now();
            let verified = if resync {
                p.resync().map(|_| ())
            } else {
                Ok(())
            };
            span.record("verify_us", t.elapsed().as_micros() as u64);
            let res =
                verified.and_then(|_| p.enforce_compiled(program, issues, model.felix(), node));
            // The isolated issues come from the compilation, which precedes any apply error:
            // shown whatever the outcome of the apply.
            record_policy_issues(r.metrics, r.status, p.issues());
            res
        }
        Err(e) => Err(e),
    };
    match synced {
        Ok(_) => {
            if let Some(prog) = p.applied() {
                record_policy_metrics(r.metrics, prog);
            }
            Ok(())
        }
        Err(e) => {
            error!(error = %e, source = ?std::error::Error::source(&e), "policy sync failed: this node does not enforce the current policy; not ready, retrying");
            Err(format!("policy: {}", error_chain(&e)))
        }
    }
}

/// An error and its sources on one line (readiness shows it to people).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// What one full route round found, for the metrics.
struct RoundStats {
    own_blocks: BTreeSet<ipnet::IpNet>,
    learned_installed: BTreeMap<ipnet::IpNet, std::net::IpAddr>,
    route_list: Duration,
}

/// Route and IPAM metrics, from the model (no datastore read).
fn record_route_metrics(metrics: &Metrics, store: &Store, stats: &RoundStats) {
    use crate::metrics::*;
    metrics.set(CLUSTER_NUM_HOSTS, store.node_count() as f64);
    metrics.observe(ROUTE_TABLE_LIST, stats.route_list.as_secs_f64());
    metrics.set(IPAM_BLOCKS, stats.own_blocks.len() as f64);
}

/// The policies and profiles not enforced as written: per outcome on `/metrics` (every
/// outcome, 0 when none) and one row each in the status `calicoctl node status` shows.
fn record_policy_issues(metrics: &Metrics, status: &Mutex<NodeStatus>, issues: &[PolicyIssue]) {
    let outcomes = [
        Outcome::RuleSkipped,
        Outcome::DenyWithoutMatch,
        Outcome::ReplacedByDeny,
        Outcome::Dropped,
    ];
    metrics.replace(
        crate::metrics::POLICY_ISSUES,
        outcomes
            .iter()
            .map(|o| {
                let n = issues.iter().filter(|i| i.outcome == *o).count();
                (vec![("outcome", o.to_string())], n as f64)
            })
            .collect(),
    );
    if let Ok(mut s) = status.lock() {
        s.policy_issues = issues.iter().map(Into::into).collect();
    }
}

fn record_policy_metrics(metrics: &Metrics, prog: &HostProgram) {
    use calico_policy::program::RuleListId;
    let policies: BTreeSet<&str> = prog
        .rule_lists
        .keys()
        .filter_map(|id| match id {
            RuleListId::Policy {
                name,
                staged: false,
                ..
            } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    metrics.set(
        crate::metrics::ACTIVE_LOCAL_ENDPOINTS,
        prog.endpoints.len() as f64,
    );
    metrics.set(crate::metrics::ACTIVE_LOCAL_POLICIES, policies.len() as f64);
}

/// What the speaker must be told for this snapshot.
fn speaker_view(
    snap: &Snapshot,
    started: &Started,
    services: &crate::service_routes::ServiceAdvertisement,
) -> Result<SpeakerView, AgentError> {
    let sessions =
        peering::sessions_for(&started.node_name, &snap.nodes, &snap.global, &snap.peers)?;
    let me = snap.nodes.iter().find(|n| n.name == started.node_name);
    Ok(SpeakerView {
        router_id: started.ipv4.map(|n| n.addr()),
        local_as: started.as_number,
        listen_port: me
            .and_then(|n| n.listen_port)
            .unwrap_or(snap.global.listen_port),
        sessions,
        announced: &routes::announced_prefixes(&route_inputs(snap, BTreeMap::new()))
            | &services.advertised,
        local_v4: started.ipv4.map(|n| n.addr()),
        local_v6: started.ipv6.map(|n| n.addr()),
        cluster_id: me
            .and_then(|n| n.rr_cluster_id.as_deref())
            .and_then(|c| c.parse().ok()),
        bgp_filters: snap.bgp_filters.clone(),
        prefix_advertisements: snap.global.prefix_advertisements.clone(),
        service_ranges: services.ranges.all().copied().collect(),
    })
}

fn route_inputs(snap: &Snapshot, learned: BTreeMap<ipnet::IpNet, std::net::IpAddr>) -> RouteInputs {
    RouteInputs {
        own_blocks: snap.own_blocks.clone(),
        learned,
        workloads: snap.workloads.clone(),
        no_export: snap.no_export.clone(),
    }
}

/// Every route of this node against the kernel: the level-triggered path (start, a change of
/// blocks or local workloads, a resync, an overflow of route notices).
async fn reconcile_routes(
    nl: &Netlink,
    snap: &Snapshot,
    learned: &BTreeMap<ipnet::IpNet, std::net::IpAddr>,
    tunnels: &crate::tunnel::Tunnels,
    synced: bool,
    ipv6: bool,
) -> Result<RoundStats, AgentError> {
    let mut desired = routes::desired_routes(&route_inputs(snap, learned.clone()));
    tunnels.adjust(&mut desired);
    if !ipv6 {
        // ipv6Support: false: IPv6 routes are neither programmed nor removed.
        desired.retain(|r| r.dst.addr().is_ipv4());
    }
    let route_list = apply_routes(nl, &desired, synced, ipv6).await?;
    Ok(RoundStats {
        own_blocks: snap.own_blocks.clone(),
        learned_installed: desired
            .iter()
            .filter_map(|r| match r.target {
                Target::Via(nh) => Some((r.dst, nh)),
                _ => None,
            })
            .collect(),
        route_list,
    })
}

/// Tunnel routes of other nodes' blocks whose affinity changed ([`crate::tunnel::Tunnels::blocks_changed`]),
/// straight to the kernel.
async fn install_tunnel_routes(
    nl: &Netlink,
    routes: &[KernelRoute],
    ipv6: bool,
) -> Result<(), AgentError> {
    let batch: Vec<RouteChange> = routes
        .iter()
        .filter(|r| ipv6 || r.dst.addr().is_ipv4())
        .map(|r| {
            let route = to_kernel(r);
            info!(route = %route, "installing tunnel route");
            RouteChange::Replace(route)
        })
        .collect();
    let failures = nl.apply_route_changes(&batch).await;
    batch_result(failures, batch.len())
}

/// A batch of `total` route changes: an error naming the first failure, if any.
fn batch_result(
    failures: Vec<(usize, calico_dataplane::RouteError)>,
    total: usize,
) -> Result<(), AgentError> {
    let failed = failures.len();
    match failures.into_iter().next() {
        None => Ok(()),
        Some((_, first)) => Err(AgentError::Kernel {
            what: format!("{failed} of {total} route changes failed"),
            source: Box::new(first),
        }),
    }
}

/// Route notices from the speaker, straight to the kernel: no datastore read, no speaker
/// reconfiguration, no policy compile, no listing of the kernel's routes. The same rules as
/// [`routes::desired_routes`]: our own blocks keep their blackhole; a withdrawn route goes only
/// once the speaker has synced (until then the next full round decides).
async fn apply_learned(
    nl: &Netlink,
    snap: &Snapshot,
    notices: &BTreeMap<ipnet::IpNet, Option<std::net::IpAddr>>,
    installed: &mut BTreeMap<ipnet::IpNet, std::net::IpAddr>,
    synced: bool,
    ipv6: bool,
) -> Result<(), AgentError> {
    let mut changes = Vec::new();
    for (prefix, next_hop) in notices {
        if snap.own_blocks.contains(prefix) || (!ipv6 && !prefix.addr().is_ipv4()) {
            continue;
        }
        let route = |nh| {
            to_kernel(&KernelRoute {
                dst: *prefix,
                target: Target::Via(nh),
            })
        };
        match next_hop {
            Some(nh) if installed.get(prefix) != Some(nh) => {
                info!(route = %route(*nh), "installing route");
                changes.push((*prefix, Some(*nh), RouteChange::Replace(route(*nh))));
            }
            Some(_) => {}
            None if synced => {
                if let Some(old) = installed.get(prefix) {
                    info!(route = %route(*old), "removing route");
                    changes.push((*prefix, None, RouteChange::Delete(route(*old))));
                }
            }
            None => debug!(%prefix, "keeping learned route until the speaker has synced"),
        }
    }
    let batch: Vec<RouteChange> = changes.iter().map(|(_, _, c)| c.clone()).collect();
    let failures = nl.apply_route_changes(&batch).await;
    for (i, (prefix, nh, _)) in changes.iter().enumerate() {
        if failures.iter().any(|(j, _)| *j == i) {
            continue;
        }
        match nh {
            Some(nh) => installed.insert(*prefix, *nh),
            None => installed.remove(prefix),
        };
    }
    batch_result(failures, batch.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_route_conversion_round_trips() {
        for r in [
            KernelRoute {
                dst: "192.168.104.0/26".parse().unwrap(),
                target: Target::Via("192.168.33.12".parse().unwrap()),
            },
            KernelRoute {
                dst: "192.168.166.128/26".parse().unwrap(),
                target: Target::Blackhole,
            },
            KernelRoute {
                dst: "192.168.166.128/32".parse().unwrap(),
                target: Target::Dev("calicce21fc3677".into()),
            },
        ] {
            assert_eq!(from_kernel(&to_kernel(&r)), Some(r));
        }
    }
}
