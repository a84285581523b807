//! Cross-host Docker networks without a cluster store.
//!
//! Each host's syncer keeps one record per Calico Docker network in etcd under
//! [`NETWORKS_PREFIX`]`<name>` and makes the local dockerd agree with them:
//! - a network created here (`docker network create --driver calico ...`) is published;
//! - a published network missing here is created here (same name, driver, IPAM driver, subnet,
//!   IPAM options), so `docker run --net <name>` works on every host;
//! - a network deleted here by a user is unpublished, and every other host removes its copy;
//!   a host where the network still has containers keeps it, records itself under
//!   [`IN_USE_PREFIX`]`<name>/<host>` (and logs it), and retries until it can.
//!
//! Driven by changes, not by a timer: one etcd watch of the records (listed once at start and
//! after a compaction, otherwise resumed from its revision) and dockerd's network events
//! (`create`, `destroy`, `connect`, `disconnect` of networks of our driver). Each change runs a
//! round: list the local networks, the pure [`plan`] against the records as watched and what
//! this host remembers, then the actions. A slow resync (`resync_interval`) re-reads dockerd
//! in case an event was missed; a failed round is retried after [`RETRY`].
//!
//! What this host remembers survives a restart: for each network it had in step with its
//! record, [`COPIES_PREFIX`]`<host>/<name>` holds the local Docker network id and the record's
//! create revision. So a network deleted elsewhere while this host was down is removed here
//! when it comes back (the local copy is the one remembered, its record is gone), not
//! published again; and one a user removed here while the syncer was down is unpublished.
//!
//! The syncer also shares container names across hosts ([`crate::names`]): a name round runs
//! on a change of the name records (a second watch) and on dockerd's `connect`, `disconnect`
//! and container `start` events.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use calico_datastore::{EtcdClient, KeyValue, KvError, KvWatchStream, WatchEvent};
use serde::{Deserialize, Serialize};

use crate::engine::{
    CreateIpam, CreateIpamConfig, CreateNetwork, DockerEngine, EngineError, EventStream,
    NetworkInfo,
};
use crate::names::{self, NameRecord};
use crate::naming;
use crate::server::{IPAM_PLUGIN, NETWORK_PLUGIN};

pub const NETWORKS_PREFIX: &str = "/calico-rs/docker/networks/";
pub const IN_USE_PREFIX: &str = "/calico-rs/docker/networks-in-use/";
/// `<host>/<name>` → [`Copy`]: the networks a host had in step with their records.
pub const COPIES_PREFIX: &str = "/calico-rs/docker/network-copies/";
/// Wait before retrying a failed round (etcd or dockerd away, a network still in use).
pub const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("datastore: {0}")]
    Kv(#[from] KvError),
    #[error("docker: {0}")]
    Engine(#[from] EngineError),
}

/// What every host needs to create the same network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRecord {
    pub name: String,
    pub driver: String,
    pub ipam_driver: String,
    /// User-given subnets only (Calico's "any pool" 0.0.0.0/0 and ::/0 are left out).
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default)]
    pub ipam_options: BTreeMap<String, String>,
    #[serde(default)]
    pub enable_ipv6: bool,
    /// The host that published it (informational).
    #[serde(default)]
    pub created_on: String,
}

impl NetworkRecord {
    pub fn from_docker(n: &NetworkInfo, host: &str) -> Self {
        NetworkRecord {
            name: n.name.clone(),
            driver: n.driver.clone(),
            ipam_driver: n.ipam.driver.clone(),
            subnets: n
                .ipam
                .config
                .iter()
                .flatten()
                .map(|c| c.subnet.clone())
                .filter(|s| !s.is_empty() && s != naming::ANY_V4 && s != naming::ANY_V6)
                .collect(),
            ipam_options: n.ipam.options.clone().unwrap_or_default(),
            enable_ipv6: n.enable_ipv6,
            created_on: host.to_string(),
        }
    }

    pub fn to_create(&self) -> CreateNetwork {
        CreateNetwork {
            name: self.name.clone(),
            driver: self.driver.clone(),
            check_duplicate: true,
            enable_ipv6: self.enable_ipv6,
            ipam: CreateIpam {
                driver: self.ipam_driver.clone(),
                config: self
                    .subnets
                    .iter()
                    .map(|s| CreateIpamConfig { subnet: s.clone() })
                    .collect(),
                options: self.ipam_options.clone(),
            },
        }
    }
}

/// A local network this host had in step with its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Copy {
    /// The local Docker network id (a network re-created here under the same name has
    /// another one).
    pub id: String,
    /// The record's create revision (a record re-created elsewhere under the same name has
    /// another one).
    pub record: i64,
}

/// One change the syncer makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncAction {
    /// A local network no record was seen for: publish it.
    Publish(String),
    /// A record with no local network that this host never had: create it here.
    CreateLocal(String),
    /// The record of a local network this host had in step is gone: deleted elsewhere.
    RemoveLocal(String),
    /// A local network this host had in step is gone, its record is still there: a user
    /// removed it here.
    Unpublish(String),
    /// Remember that the local network and its record are in step.
    Remember(String, Copy),
    /// Neither a local network nor a record: nothing to remember.
    Forget(String),
}

/// The pure decision of a round from the local networks (name → id), the published records
/// (name → create revision) and what this host remembers (name → [`Copy`]).
pub fn plan(
    known: &BTreeMap<String, Copy>,
    local: &BTreeMap<String, String>,
    published: &BTreeMap<String, i64>,
) -> Vec<SyncAction> {
    let mut out = Vec::new();
    for (name, id) in local {
        let known = known.get(name);
        match published.get(name) {
            Some(record) => {
                let copy = Copy {
                    id: id.clone(),
                    record: *record,
                };
                if known != Some(&copy) {
                    out.push(SyncAction::Remember(name.clone(), copy));
                }
            }
            // This very network was in step with a record that is gone: deleted elsewhere.
            None if known.is_some_and(|k| &k.id == id) => {
                out.push(SyncAction::RemoveLocal(name.clone()))
            }
            None => out.push(SyncAction::Publish(name.clone())),
        }
    }
    for (name, record) in published {
        if local.contains_key(name) {
            continue;
        }
        if known.get(name).is_some_and(|k| k.record == *record) {
            // It was here, in step with this very record, and a user removed it here.
            out.push(SyncAction::Unpublish(name.clone()));
        } else {
            out.push(SyncAction::CreateLocal(name.clone()));
        }
    }
    for name in known.keys() {
        if !local.contains_key(name) && !published.contains_key(name) {
            out.push(SyncAction::Forget(name.clone()));
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct SyncerConfig {
    pub hostname: String,
    /// How often dockerd is re-read even without an event (a safety net; changes are handled
    /// as they come).
    pub resync_interval: Duration,
}

fn in_use_key(name: &str, host: &str) -> String {
    format!("{IN_USE_PREFIX}{name}/{host}")
}

/// Hosts where an unpublished network still has containers.
pub async fn hosts_still_using(kv: &EtcdClient, name: &str) -> Result<Vec<String>, KvError> {
    let prefix = format!("{IN_USE_PREFIX}{name}/");
    Ok(kv
        .list(&prefix)
        .await?
        .kvs
        .into_iter()
        .map(|kv| kv.key[prefix.len()..].to_string())
        .collect())
}

/// A published record as watched: the record and its key's revisions.
#[derive(Debug, Clone)]
struct Published {
    record: NetworkRecord,
    create_revision: i64,
    mod_revision: i64,
}

/// A view of one etcd prefix kept by a watch: key (without the prefix) → key-value.
#[derive(Debug, Default)]
struct WatchedPrefix {
    kvs: BTreeMap<String, KeyValue>,
    /// A snapshot was received: the view is complete.
    synced: bool,
}

impl WatchedPrefix {
    fn apply(&mut self, prefix: &str, ev: WatchEvent) {
        let rel = |k: &str| k.strip_prefix(prefix).unwrap_or(k).to_string();
        match ev {
            WatchEvent::Put(kv) => {
                self.kvs.insert(rel(&kv.key), kv);
            }
            WatchEvent::Delete { key, .. } => {
                self.kvs.remove(&rel(&key));
            }
            WatchEvent::Snapshot(listing) => {
                self.kvs = listing
                    .kvs
                    .into_iter()
                    .map(|kv| (rel(&kv.key), kv))
                    .collect();
                self.synced = true;
            }
        }
    }
}

/// The syncer's state between rounds.
struct Syncer {
    kv: EtcdClient,
    engine: DockerEngine,
    host: String,
    /// Records under [`NETWORKS_PREFIX`], as watched.
    networks: WatchedPrefix,
    /// Records under [`names::NAMES_PREFIX`], as watched.
    names: WatchedPrefix,
    /// This host's [`COPIES_PREFIX`] entries (we are their only writer): `None` until read.
    known: Option<BTreeMap<String, Copy>>,
    /// Local network ids whose id → name entry is in the datastore.
    ids_recorded: BTreeSet<String>,
    /// Local networks seen by the last network round (for the name round); `None` before
    /// the first one (a name round then would take every local container for gone).
    local: Option<BTreeSet<String>>,
    /// Unpublished networks still in use here.
    in_use: BTreeSet<String>,
}

impl Syncer {
    fn copy_key(&self, name: &str) -> String {
        format!("{COPIES_PREFIX}{}/{name}", self.host)
    }

    fn published(&self) -> BTreeMap<String, Published> {
        self.networks
            .kvs
            .values()
            .filter_map(
                |e| match serde_json::from_slice::<NetworkRecord>(&e.value) {
                    Ok(r) => Some((
                        r.name.clone(),
                        Published {
                            record: r,
                            create_revision: e.create_revision,
                            mod_revision: e.mod_revision,
                        },
                    )),
                    Err(err) => {
                        tracing::warn!(key = %e.key, error = %err, "unreadable network record ignored");
                        None
                    }
                },
            )
            .collect()
    }

    /// Reads what this host remembers, once.
    async fn known(&mut self) -> Result<&mut BTreeMap<String, Copy>, SyncError> {
        if self.known.is_none() {
            let prefix = format!("{COPIES_PREFIX}{}/", self.host);
            let mut known = BTreeMap::new();
            for e in self.kv.list(&prefix).await?.kvs {
                match serde_json::from_slice::<Copy>(&e.value) {
                    Ok(c) => {
                        known.insert(e.key[prefix.len()..].to_string(), c);
                    }
                    Err(err) => {
                        tracing::warn!(key = %e.key, error = %err, "unreadable network copy ignored")
                    }
                }
            }
            self.known = Some(known);
        }
        Ok(self.known.get_or_insert_default())
    }

    /// One network round. Returns whether something is left to retry (a network in use, a
    /// local create that failed).
    async fn network_round(&mut self) -> Result<bool, SyncError> {
        let local_nets: BTreeMap<String, NetworkInfo> = self
            .engine
            .list_networks(NETWORK_PLUGIN)
            .await?
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        // Remember id → name for the driver (see driver::NETWORK_NAMES_PREFIX).
        for n in local_nets.values() {
            if self.ids_recorded.contains(&n.id) {
                continue;
            }
            let key = format!("{}{}", crate::driver::NETWORK_NAMES_PREFIX, n.id);
            if self.kv.get(&key).await?.is_none() {
                self.kv.put(&key, n.name.clone().into_bytes()).await?;
            }
            self.ids_recorded.insert(n.id.clone());
        }
        let local: BTreeMap<String, String> = local_nets
            .iter()
            .map(|(name, n)| (name.clone(), n.id.clone()))
            .collect();
        let records = self.published();
        let published: BTreeMap<String, i64> = records
            .iter()
            .map(|(name, p)| (name.clone(), p.create_revision))
            .collect();
        let known = self.known().await?.clone();
        let host = self.host.clone();
        let mut retry = false;
        let mut in_use = BTreeSet::new();
        for action in plan(&known, &local, &published) {
            match action {
                SyncAction::Publish(name) => {
                    let rec = NetworkRecord::from_docker(&local_nets[&name], &host);
                    let value = serde_json::to_vec(&rec).unwrap_or_default();
                    match self
                        .kv
                        .create(&format!("{NETWORKS_PREFIX}{name}"), value)
                        .await
                    {
                        Ok(revision) => {
                            tracing::info!(network = %name, "network published");
                            let copy = Copy {
                                id: local[&name].clone(),
                                record: revision,
                            };
                            self.remember(&name, copy).await?;
                        }
                        // Published elsewhere meanwhile: the watch brings it, the next round
                        // remembers it.
                        Err(KvError::AlreadyExists { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                SyncAction::CreateLocal(name) => {
                    let rec = &records[&name].record;
                    if rec.driver != NETWORK_PLUGIN || rec.ipam_driver != IPAM_PLUGIN {
                        tracing::warn!(network = %name, driver = %rec.driver, ipam = %rec.ipam_driver, "record not for the calico drivers; not created");
                        continue;
                    }
                    match self.engine.create_network(&rec.to_create()).await {
                        Ok(id) => {
                            tracing::info!(network = %name, %id, "network created from the datastore");
                            let copy = Copy {
                                id,
                                record: records[&name].create_revision,
                            };
                            self.remember(&name, copy).await?;
                        }
                        Err(e) => {
                            tracing::warn!(network = %name, error = %e, "could not create network locally; retrying");
                            retry = true;
                        }
                    }
                }
                SyncAction::RemoveLocal(name) => match self.engine.remove_network(&name).await {
                    Ok(()) => {
                        tracing::info!(network = %name, "network removed (deleted on another host)");
                        if self.in_use.contains(&name) {
                            let _ = self.kv.delete(&in_use_key(&name, &host), None).await;
                        }
                        self.forget(&name).await?;
                    }
                    Err(e) => {
                        if !self.in_use.contains(&name) {
                            tracing::warn!(network = %name, host = %host, error = %e, "network deleted elsewhere is still in use here");
                            self.kv
                                .put(&in_use_key(&name, &host), e.to_string().into_bytes())
                                .await?;
                        }
                        in_use.insert(name);
                        retry = true;
                    }
                },
                SyncAction::Unpublish(name) => {
                    let rev = records[&name].mod_revision;
                    match self
                        .kv
                        .delete(&format!("{NETWORKS_PREFIX}{name}"), Some(rev))
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(network = %name, "network unpublished: removed here by a user")
                        }
                        Err(KvError::NotFound { .. }) => {}
                        Err(e) if e.is_precondition_failure() => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.forget(&name).await?;
                }
                SyncAction::Remember(name, copy) => {
                    if self.in_use.contains(&name) {
                        // Published again while we kept it: no longer waiting to remove it.
                        let _ = self.kv.delete(&in_use_key(&name, &host), None).await;
                    }
                    self.remember(&name, copy).await?;
                }
                SyncAction::Forget(name) => self.forget(&name).await?,
            }
        }
        self.in_use = in_use;
        self.local = Some(local.into_keys().collect());
        Ok(retry)
    }

    async fn remember(&mut self, name: &str, copy: Copy) -> Result<(), SyncError> {
        let value = serde_json::to_vec(&copy).unwrap_or_default();
        self.kv.put(&self.copy_key(name), value).await?;
        self.known().await?.insert(name.to_string(), copy);
        Ok(())
    }

    async fn forget(&mut self, name: &str) -> Result<(), SyncError> {
        match self.kv.delete(&self.copy_key(name), None).await {
            Ok(_) | Err(KvError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.known().await?.remove(name);
        Ok(())
    }

    /// Name records as watched: network → container name → record.
    fn name_records(&self) -> BTreeMap<String, BTreeMap<String, NameRecord>> {
        let mut records: BTreeMap<String, BTreeMap<String, NameRecord>> = BTreeMap::new();
        for (rest, e) in &self.names.kvs {
            let (Some((net, name)), Ok(rec)) = (
                rest.split_once('/'),
                serde_json::from_slice::<NameRecord>(&e.value),
            ) else {
                continue;
            };
            records
                .entry(net.into())
                .or_default()
                .insert(name.into(), rec);
        }
        records
    }
}

/// Publishes this host's containers of Calico networks and writes the other hosts' ones into
/// local containers' hosts files (see [`crate::names`]).
async fn sync_names(
    kv: &EtcdClient,
    engine: &DockerEngine,
    host: &str,
    networks: &BTreeSet<String>,
    records: &BTreeMap<String, BTreeMap<String, NameRecord>>,
) -> Result<(), SyncError> {
    // Local attachments: network → container name → (container id, ip).
    let mut local: BTreeMap<String, BTreeMap<String, (String, std::net::IpAddr)>> = BTreeMap::new();
    for net in networks {
        let Some(info) = engine.inspect_network(net).await? else {
            continue;
        };
        for (id, c) in info.containers.unwrap_or_default() {
            let ip = c.ipv4_address.split('/').next().unwrap_or_default();
            let (Ok(ip), true) = (ip.parse(), names::valid_name(&c.name)) else {
                continue;
            };
            local
                .entry(net.clone())
                .or_default()
                .insert(c.name, (id, ip));
        }
    }
    // Publish ours, drop our stale ones.
    for (net, containers) in &local {
        for (name, (_, ip)) in containers {
            let want = NameRecord {
                ip: *ip,
                host: host.to_string(),
            };
            if records.get(net).and_then(|m| m.get(name)) != Some(&want) {
                let key = format!("{}{net}/{name}", names::NAMES_PREFIX);
                kv.put(&key, serde_json::to_vec(&want).unwrap_or_default())
                    .await?;
            }
        }
    }
    for (net, m) in records {
        for (name, rec) in m {
            let still_here = local.get(net).is_some_and(|c| c.contains_key(name));
            if rec.host == host && !still_here {
                let key = format!("{}{net}/{name}", names::NAMES_PREFIX);
                match kv.delete(&key, None).await {
                    Ok(_) | Err(KvError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    // Hosts files of local containers.
    let mut nets_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (net, containers) in &local {
        for (id, _) in containers.values() {
            nets_of.entry(id.clone()).or_default().insert(net.clone());
        }
    }
    for (id, nets) in nets_of {
        let entries = names::remote_entries(records, &nets, host);
        let Some(info) = engine.inspect_container(&id).await? else {
            continue;
        };
        if info.hosts_path.is_empty() {
            continue;
        }
        let Ok(current) = std::fs::read_to_string(&info.hosts_path) else {
            continue;
        };
        let wanted = names::render_hosts(&current, &entries);
        if wanted != current {
            // In place (truncate + write): the bind mount into the container follows the inode.
            if let Err(e) = std::fs::write(&info.hosts_path, wanted) {
                tracing::warn!(container = %info.name, path = %info.hosts_path, error = %e, "could not update hosts file");
            }
        }
    }
    Ok(())
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Networks(Option<Result<WatchEvent, KvError>>),
    Names(Option<Result<WatchEvent, KvError>>),
    Docker(Option<Result<crate::engine::DockerEvent, EngineError>>),
    Timer,
}

/// Runs the syncer until `shutdown` completes. Never gives up: etcd or dockerd restarting
/// only delays it (failed rounds and lost streams are retried after [`RETRY`]).
pub async fn run_network_syncer(
    kv: EtcdClient,
    engine: DockerEngine,
    config: SyncerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut s = Syncer {
        kv: kv.clone(),
        engine: engine.clone(),
        host: config.hostname.clone(),
        networks: WatchedPrefix::default(),
        names: WatchedPrefix::default(),
        known: None,
        ids_recorded: BTreeSet::new(),
        local: None,
        in_use: BTreeSet::new(),
    };
    let mut nets_watch: Option<KvWatchStream> = None;
    let mut names_watch: Option<KvWatchStream> = None;
    let mut events: Option<EventStream> = None;
    let (mut nets_dirty, mut names_dirty) = (true, true);
    let mut resync_at = tokio::time::Instant::now() + config.resync_interval;
    let mut retry_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let now = tokio::time::Instant::now();
        // (Re)open what is closed; a watch starts with a full list (its snapshot).
        if nets_watch.is_none() {
            nets_watch = Some(kv.list_watch(NETWORKS_PREFIX));
        }
        if names_watch.is_none() {
            names_watch = Some(kv.list_watch(names::NAMES_PREFIX));
        }
        if events.is_none() && retry_at.is_none_or(|t| t <= now) {
            match engine.events(&["network", "container"]).await {
                Ok(stream) => {
                    events = Some(stream);
                    // Whatever happened while we were not listening.
                    (nets_dirty, names_dirty) = (true, true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "docker events not available; retrying");
                    retry_at = Some(now + RETRY);
                }
            }
        }
        if retry_at.is_some_and(|t| t <= now) {
            retry_at = None;
            (nets_dirty, names_dirty) = (true, true);
        }
        // A round only on complete views: before its snapshot, a record would look deleted.
        if nets_dirty && s.networks.synced {
            nets_dirty = false;
            match s.network_round().await {
                Ok(false) => {}
                Ok(true) => retry_at = Some(now + RETRY),
                Err(e) => {
                    tracing::warn!(error = %e, "network sync round failed; retrying");
                    retry_at = Some(now + RETRY);
                }
            }
        }
        if let (true, true, Some(local)) = (names_dirty, s.names.synced, &s.local) {
            names_dirty = false;
            let records = s.name_records();
            if let Err(e) = sync_names(&s.kv, &s.engine, &s.host, local, &records).await {
                tracing::warn!(error = %e, "name sync round failed; retrying");
                retry_at = Some(now + RETRY);
            }
        }
        let wake_at = retry_at.map_or(resync_at, |t| t.min(resync_at));
        let wake = {
            let nets = nets_watch.as_mut().expect("opened above");
            let names = names_watch.as_mut().expect("opened above");
            tokio::select! {
                _ = &mut shutdown => Wake::Shutdown,
                ev = futures_next(nets) => Wake::Networks(ev),
                ev = futures_next(names) => Wake::Names(ev),
                ev = next_event(&mut events) => Wake::Docker(ev),
                _ = tokio::time::sleep_until(wake_at) => Wake::Timer,
            }
        };
        match wake {
            Wake::Shutdown => return,
            Wake::Networks(Some(Ok(ev))) => {
                s.networks.apply(NETWORKS_PREFIX, ev);
                nets_dirty = true;
            }
            Wake::Names(Some(Ok(ev))) => {
                s.names.apply(names::NAMES_PREFIX, ev);
                names_dirty = true;
            }
            Wake::Networks(Some(Err(e))) | Wake::Names(Some(Err(e))) => {
                tracing::warn!(error = %e, "datastore watch error");
            }
            // The watch gave up (etcd away for long): start again with a fresh list.
            Wake::Networks(None) => {
                nets_watch = None;
                s.networks.synced = false;
                tokio::time::sleep(RETRY).await;
            }
            Wake::Names(None) => {
                names_watch = None;
                s.names.synced = false;
                tokio::time::sleep(RETRY).await;
            }
            Wake::Docker(Some(Ok(ev))) => {
                let ours =
                    ev.actor.attributes.get("type").map(String::as_str) == Some(NETWORK_PLUGIN);
                if ev.kind == "network" && ours {
                    match ev.action.as_str() {
                        "create" | "destroy" => nets_dirty = true,
                        // A container joining or leaving: its name, and (leaving) maybe the
                        // last user of a network waiting to be removed.
                        "connect" | "disconnect" => {
                            names_dirty = true;
                            nets_dirty |= !s.in_use.is_empty();
                        }
                        _ => {}
                    }
                }
                // A started container has its hosts file (Docker writes it while starting
                // the container, after the network `connect`): add the other hosts' names.
                if ev.kind == "container" && ev.action == "start" {
                    names_dirty = true;
                }
            }
            Wake::Docker(Some(Err(e))) => {
                tracing::warn!(error = %e, "docker event stream failed; reconnecting");
                events = None;
                retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
            Wake::Docker(None) => {
                events = None;
                retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
            Wake::Timer => {
                if tokio::time::Instant::now() >= resync_at {
                    resync_at = tokio::time::Instant::now() + config.resync_interval;
                    (nets_dirty, names_dirty) = (true, true);
                }
            }
        }
    }
}

async fn futures_next(w: &mut KvWatchStream) -> Option<Result<WatchEvent, KvError>> {
    use futures::StreamExt;
    w.next().await
}

/// The next docker event, or never while there is no stream.
async fn next_event(
    events: &mut Option<EventStream>,
) -> Option<Result<crate::engine::DockerEvent, EngineError>> {
    match events {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<V: Clone>(v: &[(&str, V)]) -> BTreeMap<String, V> {
        v.iter().map(|(k, x)| (k.to_string(), x.clone())).collect()
    }

    fn copy(id: &str, record: i64) -> Copy {
        Copy {
            id: id.into(),
            record,
        }
    }

    #[test]
    fn new_local_network_is_published_and_remote_one_created() {
        let acts = plan(
            &map(&[]),
            &map(&[("a", "ida".to_string())]),
            &map(&[("b", 7)]),
        );
        assert_eq!(
            acts,
            vec![
                SyncAction::Publish("a".into()),
                SyncAction::CreateLocal("b".into())
            ]
        );
    }

    #[test]
    fn steady_state_does_nothing_and_a_first_round_remembers() {
        let local = map(&[("a", "ida".to_string())]);
        let published = map(&[("a", 7)]);
        assert!(plan(&map(&[("a", copy("ida", 7))]), &local, &published).is_empty());
        // In step but not remembered yet (first run, or a write lost): remember, nothing else.
        assert_eq!(
            plan(&map(&[]), &local, &published),
            vec![SyncAction::Remember("a".into(), copy("ida", 7))]
        );
    }

    #[test]
    fn local_user_deletion_unpublishes_and_remote_deletion_removes() {
        let known = map(&[("a", copy("ida", 7)), ("b", copy("idb", 8))]);
        // "a" deleted here, "b" unpublished by another host.
        let acts = plan(&known, &map(&[("b", "idb".to_string())]), &map(&[("a", 7)]));
        assert_eq!(
            acts,
            vec![
                SyncAction::RemoveLocal("b".into()),
                SyncAction::Unpublish("a".into())
            ]
        );
    }

    #[test]
    fn a_record_deleted_while_this_host_was_down_is_not_published_again() {
        // After a restart: the local copy is the one remembered, its record is gone.
        let known = map(&[("a", copy("ida", 7))]);
        assert_eq!(
            plan(&known, &map(&[("a", "ida".to_string())]), &map(&[])),
            vec![SyncAction::RemoveLocal("a".into())]
        );
        // A network a user created here under that name meanwhile is another one: published.
        assert_eq!(
            plan(&known, &map(&[("a", "idnew".to_string())]), &map(&[])),
            vec![SyncAction::Publish("a".into())]
        );
    }

    #[test]
    fn a_record_re_created_elsewhere_is_created_here_not_unpublished() {
        // We removed our copy of record 7; record 9 is a new network of the same name.
        let known = map(&[("a", copy("ida", 7))]);
        assert_eq!(
            plan(&known, &map(&[]), &map(&[("a", 9)])),
            vec![SyncAction::CreateLocal("a".into())]
        );
    }

    #[test]
    fn in_use_network_is_retried_not_republished_and_stale_memory_forgotten() {
        let known = map(&[("a", copy("ida", 7)), ("gone", copy("idg", 3))]);
        assert_eq!(
            plan(&known, &map(&[("a", "ida".to_string())]), &map(&[])),
            vec![
                SyncAction::RemoveLocal("a".into()),
                SyncAction::Forget("gone".into())
            ]
        );
    }

    #[test]
    fn watched_prefix_follows_puts_deletes_and_snapshots() {
        let kv = |k: &str, rev: i64| KeyValue {
            key: format!("{NETWORKS_PREFIX}{k}"),
            value: vec![],
            create_revision: rev,
            mod_revision: rev,
        };
        let mut w = WatchedPrefix::default();
        w.apply(NETWORKS_PREFIX, WatchEvent::Put(kv("a", 2)));
        assert!(!w.synced, "only a snapshot makes the view complete");
        w.apply(
            NETWORKS_PREFIX,
            WatchEvent::Snapshot(calico_datastore::Listing {
                kvs: vec![kv("b", 3), kv("c", 4)],
                revision: 5,
            }),
        );
        assert!(w.synced);
        assert_eq!(w.kvs.keys().collect::<Vec<_>>(), ["b", "c"]);
        w.apply(
            NETWORKS_PREFIX,
            WatchEvent::Delete {
                key: format!("{NETWORKS_PREFIX}b"),
                revision: 6,
                prev: None,
            },
        );
        w.apply(NETWORKS_PREFIX, WatchEvent::Put(kv("d", 7)));
        assert_eq!(w.kvs.keys().collect::<Vec<_>>(), ["c", "d"]);
    }

    #[test]
    fn records_skip_the_any_pool() {
        let n: NetworkInfo = serde_json::from_str(
            r#"{"Name":"n","Driver":"calico","IPAM":{"Driver":"calico-ipam",
            "Config":[{"Subnet":"0.0.0.0/0"},{"Subnet":"192.168.0.0/16"}]}}"#,
        )
        .unwrap();
        let r = NetworkRecord::from_docker(&n, "h");
        assert_eq!(r.subnets, vec!["192.168.0.0/16".to_string()]);
        assert_eq!(r.to_create().ipam.config.len(), 1);
    }
}
