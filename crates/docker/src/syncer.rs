//! Cross-host Docker networks without a cluster store.
//!
//! Each host's syncer keeps one record per Calico Docker network in etcd under
//! [`NETWORKS_PREFIX`]`<name>` and makes the local dockerd agree with them:
//! - a network created here (`docker network create --driver calico ...`) is published;
//! - a published network missing here is created here (same name, driver, IPAM driver, subnet,
//!   IPAM options), so `docker run --net <name>` works on every host;
//! - a network deleted here by a user is unpublished, and every other host removes its copy;
//!   a host where the network still has containers keeps it, records itself under
//!   [`IN_USE_PREFIX`]`<name>/<host>` (and logs it), and retries on every round.
//!
//! Each round also shares container names across hosts ([`crate::names`]).
//!
//! One round = list local networks + list records, then the pure [`plan`] over them and the
//! previous round's view. Rounds run every `poll_interval`; every loop is bounded by it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use calico_datastore::{EtcdClient, KvError};
use serde::{Deserialize, Serialize};

use crate::engine::{
    CreateIpam, CreateIpamConfig, CreateNetwork, DockerEngine, EngineError, NetworkInfo,
};
use crate::names::{self, NameRecord};
use crate::naming;
use crate::server::{IPAM_PLUGIN, NETWORK_PLUGIN};

pub const NETWORKS_PREFIX: &str = "/calico-rs/docker/networks/";
pub const IN_USE_PREFIX: &str = "/calico-rs/docker/networks-in-use/";

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

/// One change the syncer makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncAction {
    Publish(String),
    CreateLocal(String),
    RemoveLocal(String),
    Unpublish(String),
}

/// What the previous round saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    pub local: BTreeSet<String>,
    pub published: BTreeSet<String>,
    /// Unpublished networks this host still has to remove (it had containers).
    pub pending_removal: BTreeSet<String>,
}

/// The pure decision of a round from the local and published names and the previous view.
pub fn plan(
    prev: &SyncState,
    local: &BTreeSet<String>,
    published: &BTreeSet<String>,
) -> Vec<SyncAction> {
    let mut out = Vec::new();
    for name in local {
        if published.contains(name) {
            continue;
        }
        if prev.published.contains(name) || prev.pending_removal.contains(name) {
            // Unpublished elsewhere (or earlier): follow the deletion.
            out.push(SyncAction::RemoveLocal(name.clone()));
        } else {
            out.push(SyncAction::Publish(name.clone()));
        }
    }
    for name in published {
        if local.contains(name) {
            continue;
        }
        if prev.local.contains(name) {
            // It was here and a user removed it here: delete it everywhere.
            out.push(SyncAction::Unpublish(name.clone()));
        } else {
            out.push(SyncAction::CreateLocal(name.clone()));
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct SyncerConfig {
    pub hostname: String,
    pub poll_interval: Duration,
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

async fn round(
    kv: &EtcdClient,
    engine: &DockerEngine,
    config: &SyncerConfig,
    state: &mut SyncState,
) -> Result<(), SyncError> {
    let local_nets: BTreeMap<String, NetworkInfo> = engine
        .list_networks(NETWORK_PLUGIN)
        .await?
        .into_iter()
        .map(|n| (n.name.clone(), n))
        .collect();
    let records: BTreeMap<String, (NetworkRecord, i64)> = kv
        .list(NETWORKS_PREFIX)
        .await?
        .kvs
        .into_iter()
        .filter_map(
            |e| match serde_json::from_slice::<NetworkRecord>(&e.value) {
                Ok(r) => Some((r.name.clone(), (r, e.mod_revision))),
                Err(err) => {
                    tracing::warn!(key = %e.key, error = %err, "unreadable network record ignored");
                    None
                }
            },
        )
        .collect();
    // Remember id → name for the driver (see driver::NETWORK_NAMES_PREFIX).
    for n in local_nets.values() {
        let key = format!("{}{}", crate::driver::NETWORK_NAMES_PREFIX, n.id);
        if kv.get(&key).await?.is_none() {
            kv.put(&key, n.name.clone().into_bytes()).await?;
        }
    }
    let local: BTreeSet<String> = local_nets.keys().cloned().collect();
    let published: BTreeSet<String> = records.keys().cloned().collect();
    let host = &config.hostname;
    let mut pending = BTreeSet::new();
    for action in plan(state, &local, &published) {
        match action {
            SyncAction::Publish(name) => {
                let rec = NetworkRecord::from_docker(&local_nets[&name], host);
                let value = serde_json::to_vec(&rec).unwrap_or_default();
                match kv.create(&format!("{NETWORKS_PREFIX}{name}"), value).await {
                    Ok(_) => tracing::info!(network = %name, "network published"),
                    Err(KvError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            SyncAction::CreateLocal(name) => {
                let rec = &records[&name].0;
                if rec.driver != NETWORK_PLUGIN || rec.ipam_driver != IPAM_PLUGIN {
                    tracing::warn!(network = %name, driver = %rec.driver, ipam = %rec.ipam_driver, "record not for the calico drivers; not created");
                    continue;
                }
                match engine.create_network(&rec.to_create()).await {
                    Ok(id) => {
                        tracing::info!(network = %name, %id, "network created from the datastore")
                    }
                    Err(e) => {
                        tracing::warn!(network = %name, error = %e, "could not create network locally; retrying next round")
                    }
                }
            }
            SyncAction::RemoveLocal(name) => match engine.remove_network(&name).await {
                Ok(()) => {
                    tracing::info!(network = %name, "network removed (deleted on another host)");
                    let _ = kv.delete(&in_use_key(&name, host), None).await;
                }
                Err(e) => {
                    tracing::warn!(network = %name, host = %host, error = %e, "network deleted elsewhere is still in use here");
                    kv.put(&in_use_key(&name, host), e.to_string().into_bytes())
                        .await?;
                    pending.insert(name);
                }
            },
            SyncAction::Unpublish(name) => {
                let (_, rev) = &records[&name];
                match kv
                    .delete(&format!("{NETWORKS_PREFIX}{name}"), Some(*rev))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(network = %name, "network unpublished: removed here by a user")
                    }
                    Err(KvError::NotFound { .. }) => {}
                    Err(e) if e.is_precondition_failure() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    state.local = local;
    state.published = published;
    state.pending_removal = pending;
    Ok(())
}

/// Publishes this host's containers of Calico networks and writes the other hosts' ones into
/// local containers' hosts files (see [`crate::names`]).
async fn sync_names(
    kv: &EtcdClient,
    engine: &DockerEngine,
    host: &str,
    networks: &BTreeSet<String>,
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
    // Published records: network → name → record.
    let listing = kv.list(names::NAMES_PREFIX).await?;
    let mut records: BTreeMap<String, BTreeMap<String, NameRecord>> = BTreeMap::new();
    for e in &listing.kvs {
        let rest = &e.key[names::NAMES_PREFIX.len()..];
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
    for (net, m) in &records {
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
        let entries = names::remote_entries(&records, &nets, host);
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

/// Runs rounds every `poll_interval` until `shutdown` completes. A failed round is logged and
/// retried on the next tick (etcd or dockerd restarting must not stop the syncer).
pub async fn run_network_syncer(
    kv: EtcdClient,
    engine: DockerEngine,
    config: SyncerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut state = SyncState::default();
    let mut tick = tokio::time::interval(config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                if let Err(e) = round(&kv, &engine, &config, &mut state).await {
                    tracing::warn!(error = %e, "network sync round failed; retrying");
                }
                let nets = state.local.clone();
                if let Err(e) = sync_names(&kv, &engine, &config.hostname, &nets).await {
                    tracing::warn!(error = %e, "name sync round failed; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn new_local_network_is_published_and_remote_one_created() {
        let acts = plan(&SyncState::default(), &set(&["a"]), &set(&["b"]));
        assert_eq!(
            acts,
            vec![
                SyncAction::Publish("a".into()),
                SyncAction::CreateLocal("b".into())
            ]
        );
    }

    #[test]
    fn steady_state_does_nothing() {
        let prev = SyncState {
            local: set(&["a"]),
            published: set(&["a"]),
            ..Default::default()
        };
        assert!(plan(&prev, &set(&["a"]), &set(&["a"])).is_empty());
    }

    #[test]
    fn local_user_deletion_unpublishes_and_remote_deletion_removes() {
        let prev = SyncState {
            local: set(&["a", "b"]),
            published: set(&["a", "b"]),
            ..Default::default()
        };
        // "a" deleted here, "b" unpublished by another host.
        let acts = plan(&prev, &set(&["b"]), &set(&["a"]));
        assert_eq!(
            acts,
            vec![
                SyncAction::RemoveLocal("b".into()),
                SyncAction::Unpublish("a".into())
            ]
        );
    }

    #[test]
    fn in_use_network_is_retried_not_republished() {
        let prev = SyncState {
            local: set(&["a"]),
            published: set(&[]),
            pending_removal: set(&["a"]),
        };
        assert_eq!(
            plan(&prev, &set(&["a"]), &set(&[])),
            vec![SyncAction::RemoveLocal("a".into())]
        );
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
