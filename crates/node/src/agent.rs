//! The agent's run loop: desired state from the datastore → diff → apply.
//!
//! ```text
//!   etcd watch "/calico/" ──┐
//!   speaker route changes ──┼──► trigger (mpsc, coalesced) ──► reconcile():
//!   refresh tick (90 s) ────┘        FelixConfiguration → log level, servers, intervals
//!                                    snapshot = list nodes, BGP config, peers, affinities, local WEPs
//!                                    sessions  = peering::sessions_for(snapshot)   → speaker.set_config
//!                                    routes    = routes::desired_routes(snapshot + learned)
//!                                    diff against the kernel (proto 12 + workload routes) → netlink
//!                                    policy: table still there? → PolicySync::sync → nftables
//!   every second: status rows, BGP readiness, health heartbeat ──► NodeStatus, Health, Metrics
//!   status socket task ◄── shared NodeStatus (peer rows, readiness)
//!   health server (/liveness, /readiness) ◄── Health; metrics server (/metrics) ◄── Metrics
//! ```
//! The refresh tick is FelixConfiguration `routeRefreshInterval`; a failed round is retried
//! with backoff (1 s doubling to 30 s) and makes the node not ready with the reason.
//! Level-triggered on purpose: every trigger recomputes the whole desired state from a fresh
//! snapshot, so a missed or duplicated event can never leave the kernel wrong, and a restarted
//! agent converges on what is already there without touching it.
//!
//! Restart rule: routes learned over BGP are only removed once the speaker has synchronised
//! with its peers (end-of-RIB from every established peer) or the graceful-restart window has
//! passed, so a restarting agent never withdraws a working route from its own kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calico_dataplane::{Netlink, Route, RouteChange, RouteFilter, RouteTarget};
use calico_datastore::{Datastore, EtcdClient, KindRef};
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
use crate::peering;
use crate::policy::PolicySync;
use crate::routes::{self, KernelRoute, ROUTE_PROTOCOL, RouteInputs, Target};
use crate::snapshot::{SnapshotError, read_snapshot};
use crate::startup::{self, Started};
use crate::status::{self, NodeStatus};

/// Longest pause between retries of a failing round.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the status rows served to `calicoctl node status` are refreshed.
const STATUS_REFRESH: Duration = Duration::from_secs(1);
/// Longest wait for the speaker's initial sync before stale learned routes may be removed.
const LEARNED_ROUTES_GRACE: Duration = Duration::from_secs(120);
/// Triggers arriving within this window are handled by one reconcile.
const COALESCE: Duration = Duration::from_millis(20);

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
        Target::Onlink { via, dev } => Route {
            target: RouteTarget::Gateway {
                via: *via,
                ifname: Some(dev.clone()),
                onlink: true,
            },
            ..Route::blackhole(r.dst, ROUTE_PROTOCOL)
        },
        // Workload routes use the kernel's default protocol (boot) like `ip route add`, as
        // the seed shows: `192.168.166.128 dev calicce21fc3677 scope link`.
        Target::Dev(ifname) => Route::device(r.dst, ifname, 3),
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
struct Server {
    what: &'static str,
    running: Option<(Listen, tokio::task::JoinHandle<()>)>,
}

impl Server {
    fn new(what: &'static str) -> Server {
        Server {
            what,
            running: None,
        }
    }

    /// Serves `router` on `want` when it is enabled; stops or moves a server that differs.
    /// A failed bind is logged and retried at the next round.
    async fn ensure(&mut self, want: &Listen, router: impl FnOnce() -> axum::Router) {
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
    let (trigger_tx, mut trigger_rx) = mpsc::channel::<()>(64);
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
        NetworkingBackend::Bgp => Some(BgpControl::start(restarted, trigger_tx.clone())),
        NetworkingBackend::None | NetworkingBackend::Vxlan => None,
    };
    let mut tunnels = crate::tunnel::Tunnels::new(cfg.backend == NetworkingBackend::Bgp);
    let node_status =
        crate::node_status::Publisher::spawn(ds.clone(), started.node_name.clone(), nl.clone());

    // Any change under /calico/ may change our desired state: one watch covers them all.
    let watch_tx = trigger_tx.clone();
    let watch_kv = etcd.clone();
    tokio::spawn(async move {
        let mut events = watch_kv.watch("/calico/", 0);
        while let Some(ev) = events.next().await {
            match &ev {
                Err(e) => warn!(error = %e, "datastore watch error; resyncing"),
                // Status reports (our own writes among them) change nothing we reconcile.
                Ok(ev)
                    if crate::node_status::is_node_status_event(ev)
                        || crate::report::is_report_event(ev) =>
                {
                    continue;
                }
                Ok(_) => {}
            }
            if watch_tx.send(()).await.is_err() {
                return;
            }
        }
    });
    // The periodic full check (routeRefreshInterval; none when it is 0).
    let tick_tx = trigger_tx.clone();
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

    println!("{}", status::STARTED_LINE);
    let started_at = Instant::now();
    let mut failures: u32 = 0;
    loop {
        match read_felix(&ds, &started.node_name, wireguard).await {
            Ok(new) => settings.apply(new, &health, &metrics).await,
            Err(e) => {
                warn!(error = %e, "FelixConfiguration not readable; keeping the settings in force")
            }
        }
        metrics.inc(crate::metrics::RESYNCS_STARTED);
        let round = Instant::now();
        let mut problems: Vec<String> = vec![];
        let ipv6 = settings.current.ipv6_support;
        if let Err(e) = tunnels
            .sync(
                &ds,
                &ipam,
                &nl,
                &started.node_name,
                &settings.current.vxlan,
                ipv6,
            )
            .await
        {
            warn!(error = %e, "overlay not in sync; will retry");
            problems.push(format!("overlay: {e}"));
        }
        match reconcile(
            &ds,
            &ipam,
            &nl,
            &started,
            speaker.as_mut(),
            &tunnels,
            started_at,
            ipv6,
        )
        .await
        {
            Ok(stats) => {
                record_route_metrics(
                    &metrics,
                    &ipam,
                    &stats,
                    speaker.as_ref(),
                    settings.current.metrics.enabled,
                )
                .await;
            }
            Err(e) => {
                warn!(error = %e, source = ?std::error::Error::source(&e), "reconcile failed; will retry");
                problems.push(format!("routes: {e}"));
            }
        }
        if policy.is_none() {
            match PolicySync::new() {
                Ok(p) => policy = Some(p),
                Err(e) => {
                    error!(error = %e, "nftables cannot be programmed: policy is NOT enforced on this node; not ready, retrying");
                    problems.push(format!("nftables cannot be programmed: {e}"));
                }
            }
        }
        if let Some(p) = policy.as_mut() {
            // NAT outgoing lives in the policy table: handed over here, enforced by the sync.
            if let Err(e) = crate::nat::sync(&ds, &settings.current, p).await {
                problems.push(format!("nat outgoing: {}", error_chain(&e)));
            }
            let synced = match p.verify() {
                Ok(_) => p.sync(&ds, &started.node_name).await,
                Err(e) => Err(e),
            };
            // The isolated issues come from the compilation, which precedes any apply error:
            // shown whatever the outcome of the apply.
            record_policy_issues(&metrics, &status, p.issues());
            match synced {
                Ok(_) => {
                    if let Some(prog) = p.applied() {
                        record_policy_metrics(&metrics, prog);
                    }
                }
                Err(e) => {
                    error!(error = %e, source = ?std::error::Error::source(&e), "policy sync failed: this node does not enforce the current policy; not ready, retrying");
                    problems.push(format!("policy: {}", error_chain(&e)));
                }
            }
        }
        metrics.observe(crate::metrics::APPLY_TIME, round.elapsed().as_secs_f64());
        let (dp_ready, dp_detail) = if problems.is_empty() {
            failures = 0;
            debug!("dataplane in sync");
            (true, "in sync".to_string())
        } else {
            failures += 1;
            metrics.inc(crate::metrics::DATAPLANE_FAILURES);
            (false, problems.join("; "))
        };
        // A failed round is retried after 1 s, then 2, 4, ... up to MAX_BACKOFF.
        let retry_at = (failures > 0).then(|| {
            Instant::now()
                + (Duration::from_secs(1) * 2u32.saturating_pow(failures - 1)).min(MAX_BACKOFF)
        });
        // Wait for the next trigger. Session state changes do not trigger a reconcile (nothing
        // in the datastore changed), so the status rows and health are refreshed every second
        // meanwhile: cheap, and neither `calicoctl node status` nor readiness lags a session
        // by more than that.
        loop {
            health.report(
                health::DATAPLANE,
                Some(health::LIVENESS_TIMEOUT),
                dp_ready,
                dp_detail.clone(),
            );
            if let Some(sp) = &speaker {
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
            node_status.observe(speaker.as_ref());
            match tokio::time::timeout(STATUS_REFRESH, trigger_rx.recv()).await {
                Ok(Some(())) => break,
                Ok(None) => return Ok(()),
                Err(_elapsed) if retry_at.is_some_and(|t| Instant::now() >= t) => break,
                Err(_elapsed) => {}
            }
        }
        // Swallow the triggers that arrive right behind the first.
        tokio::time::sleep(COALESCE).await;
        while trigger_rx.try_recv().is_ok() {}
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

/// What one reconcile round found, for the metrics.
struct RoundStats {
    hosts: usize,
    own_blocks: BTreeSet<ipnet::IpNet>,
    learned_installed: usize,
    route_list: Duration,
}

async fn record_route_metrics(
    metrics: &Metrics,
    ipam: &Ipam,
    stats: &RoundStats,
    speaker: Option<&BgpControl>,
    enabled: bool,
) {
    use crate::metrics::*;
    metrics.set(CLUSTER_NUM_HOSTS, stats.hosts as f64);
    metrics.observe(ROUTE_TABLE_LIST, stats.route_list.as_secs_f64());
    if speaker.is_some() {
        metrics.set(BGP_ROUTES_INSTALLED, stats.learned_installed as f64);
    }
    metrics.set(IPAM_BLOCKS, stats.own_blocks.len() as f64);
    // Reading every block is a datastore listing: only while someone scrapes.
    if enabled {
        match calico_ipam::admin::utilization(ipam).await {
            Ok(pools) => {
                let in_use: u128 = pools
                    .iter()
                    .flat_map(|(_, blocks)| blocks)
                    .filter(|b| stats.own_blocks.contains(&b.cidr))
                    .map(|b| b.in_use)
                    .sum();
                metrics.set(IPAM_ALLOCATED, in_use as f64);
            }
            Err(e) => debug!(error = %e, "IPAM usage not readable for metrics"),
        }
    }
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

// One argument per input of the round; the incremental model (issue 15) replaces this list.
#[allow(clippy::too_many_arguments)]
async fn reconcile(
    ds: &Datastore,
    ipam: &Ipam,
    nl: &Netlink,
    started: &Started,
    speaker: Option<&mut BgpControl>,
    tunnels: &crate::tunnel::Tunnels,
    started_at: Instant,
    ipv6: bool,
) -> Result<RoundStats, AgentError> {
    let snap = read_snapshot(ds, ipam, &started.node_name).await?;
    let services = crate::service_routes::read(ds, ipam.kv(), &started.node_name).await?;
    let mut inputs = RouteInputs {
        own_blocks: snap.own_blocks.clone(),
        learned: BTreeMap::new(),
        workloads: snap.workloads.clone(),
        no_export: snap.no_export.clone(),
    };
    // Without a speaker no route is learned: nothing to wait for.
    let mut synced = speaker.is_none() || started_at.elapsed() > LEARNED_ROUTES_GRACE;
    if let Some(sp) = speaker {
        let sessions =
            peering::sessions_for(&started.node_name, &snap.nodes, &snap.global, &snap.peers)?;
        let view = SpeakerView {
            router_id: started.ipv4.map(|n| n.addr()),
            local_as: started.as_number,
            listen_port: snap
                .nodes
                .iter()
                .find(|n| n.name == started.node_name)
                .and_then(|n| n.listen_port)
                .unwrap_or(snap.global.listen_port),
            sessions,
            announced: &routes::announced_prefixes(&inputs) | &services.advertised,
            local_v4: started.ipv4.map(|n| n.addr()),
            local_v6: started.ipv6.map(|n| n.addr()),
            cluster_id: snap
                .nodes
                .iter()
                .find(|n| n.name == started.node_name)
                .and_then(|n| n.rr_cluster_id.as_deref())
                .and_then(|c| c.parse().ok()),
            bgp_filters: snap.bgp_filters.clone(),
            prefix_advertisements: snap.global.prefix_advertisements.clone(),
            service_ranges: services.ranges.all().copied().collect(),
        };
        sp.apply(&view);
        inputs.learned = sp.learned();
        // Service addresses are reached locally (kube-proxy), never via another node.
        inputs.learned.retain(|p, _| !services.ranges.covers(p));
        synced = synced || sp.initial_sync_done();
    }
    let mut desired = routes::desired_routes(&inputs);
    tunnels.adjust(&mut desired);
    if !ipv6 {
        // ipv6Support: false: IPv6 routes are neither programmed nor removed.
        desired.retain(|r| r.dst.addr().is_ipv4());
    }
    let route_list = apply_routes(nl, &desired, synced, ipv6).await?;
    Ok(RoundStats {
        hosts: snap.nodes.len(),
        own_blocks: snap.own_blocks,
        learned_installed: desired
            .iter()
            .filter(|r| matches!(r.target, Target::Via(_)))
            .count(),
        route_list,
    })
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
            KernelRoute {
                dst: "10.65.1.0/26".parse().unwrap(),
                target: Target::Onlink {
                    via: "10.65.1.0".parse().unwrap(),
                    dev: "vxlan.calico".into(),
                },
            },
        ] {
            assert_eq!(from_kernel(&to_kernel(&r)), Some(r));
        }
    }
}
