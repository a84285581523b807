//! The etcd-backed allocator.
//!
//! Every change is a compare-and-swap on etcd mod revisions; a change that touches a block and
//! a handle is one multi-key transaction, so an address is never recorded in a block without
//! its handle (or the other way round), whatever crashes. Conflicts re-read (from the failed
//! transaction's own answer) and re-decide, at most `max_attempts` times.
//!
//! Common case, one round trip: the host's affine blocks are cached with their mod revisions
//! (per host, behind an async mutex so tasks of one process never race each other), so an
//! allocation is a single transaction `compare(block rev, handle absent/rev) → put(block),
//! put(handle)`.
//!
//! Claiming a block is two-phase: (1) create the affinity key as `pending`; (2) one transaction
//! that creates the block (compare: absent) and confirms the affinity. A crash between the two
//! leaves a pending affinity with no block: nothing is allocated and no block is owned. The
//! same host completes or abandons it on its next claim, and `ipam check` reports it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calico_api::{IPAMConfiguration, IPAMConfigurationSpec, IPPool, IPReservation, Node};
use calico_datastore::{
    Compare, Datastore, EtcdClient, KeyValue, KvError, ResourceError, TxnOutcome, Write,
};
use ipnet::IpNet;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::block::Released;
use crate::cidr::{Family, block_containing};
use crate::model::{
    self, AffinityState, AffinityValue, AllocationAttribute, AllocationBlock, HandleValue,
    IPAM_CONFIG_NAME, IpamConfig,
};
use crate::plan::{BlockFree, ExhaustedReason, PlanInput, Step, find_unclaimed, next_step};
use crate::pool::{AllowedUse, Pool, PoolError, Reservations};

/// Errors of the allocator.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("etcd {what}")]
    Etcd {
        what: String,
        #[source]
        source: KvError,
    },
    #[error("reading {kind} resources")]
    Resource {
        kind: &'static str,
        #[source]
        source: Box<ResourceError>,
    },
    #[error("IP pool configuration")]
    Pool(#[from] PoolError),
    #[error("{key}: stored value is not valid JSON for this record")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(
        "no free {family} address for host {host} in IP pool(s) [{pools}]: {reason} ({assigned} of {requested} found)",
        family = fam(*.family), pools = .pools.join(", ")
    )]
    Exhausted {
        family: Family,
        host: String,
        pools: Vec<String>,
        requested: usize,
        assigned: usize,
        reason: ExhaustedReason,
    },
    #[error("address {ip} is not in any enabled IP pool")]
    NoPoolForIp { ip: IpAddr },
    #[error("address {ip} is already allocated")]
    AlreadyAllocated { ip: IpAddr },
    #[error("{what}: still conflicting after {attempts} compare-and-swap attempts")]
    TooManyConflicts { what: String, attempts: u32 },
}

fn fam(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

fn etcd(what: impl Into<String>) -> impl FnOnce(KvError) -> IpamError {
    let what = what.into();
    move |source| IpamError::Etcd { what, source }
}

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, IpamError> {
    serde_json::from_slice(value).map_err(|source| IpamError::Decode {
        key: key.to_owned(),
        source,
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode_block(kv: &KeyValue) -> Result<AllocationBlock, IpamError> {
    let b: AllocationBlock = decode(&kv.key, &kv.value)?;
    b.validate().map_err(|e| IpamError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(b)
}

/// Tunables of the allocator.
#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// Compare-and-swap attempts per operation before giving up.
    pub max_attempts: u32,
    /// How long pools, reservations, the IPAM config and node labels are cached.
    pub settings_ttl: Duration,
    /// How long an affine block must stay empty before [`Ipam::release_empty_blocks`] gives it
    /// back to the pool.
    pub empty_block_grace: Duration,
}

impl Default for IpamOptions {
    fn default() -> Self {
        IpamOptions {
            max_attempts: 100,
            settings_ttl: Duration::from_secs(2),
            empty_block_grace: Duration::from_secs(15 * 60),
        }
    }
}

/// Arguments of [`Ipam::auto_assign`].
#[derive(Debug, Clone, Default)]
pub struct AutoAssignArgs {
    pub num_v4: usize,
    pub num_v6: usize,
    /// Groups the addresses for release by handle (e.g. one per container).
    pub handle_id: Option<String>,
    /// Free-form attributes stored with each address (`node`, `namespace`, `pod`, ...).
    /// `node` defaults to `hostname`.
    pub attrs: BTreeMap<String, String>,
    /// The node allocating: blocks are claimed for it.
    pub hostname: String,
    /// Only these pools (by CIDR); empty means every usable pool of the family.
    pub v4_pools: Vec<IpNet>,
    pub v6_pools: Vec<IpNet>,
    pub allowed_use: AllowedUse,
}

/// Addresses handed out by [`Ipam::auto_assign`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    pub v4: Vec<IpAddr>,
    pub v6: Vec<IpAddr>,
}

/// Where an allocated address lives and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentInfo {
    pub ip: IpAddr,
    pub block: IpNet,
    pub block_affinity: Option<String>,
    pub attributes: AllocationAttribute,
    pub sequence_number: Option<u64>,
}

#[derive(Debug, Clone)]
struct Cached {
    block: AllocationBlock,
    rev: i64,
}

#[derive(Debug, Default)]
struct HostCache {
    loaded: BTreeSet<Family>,
    /// Confirmed affine blocks of this host.
    blocks: BTreeMap<IpNet, Cached>,
    /// Mod revision of each affinity key.
    affinities: BTreeMap<IpNet, i64>,
    /// When each affine block was first seen empty.
    empty_since: BTreeMap<IpNet, Instant>,
}

#[derive(Clone)]
struct Settings {
    pools: Vec<Pool>,
    reservations: Arc<Reservations>,
    config: IpamConfig,
    loaded_at: Instant,
}

/// A node's labels and when they were read.
type CachedLabels = (BTreeMap<String, String>, Instant);

/// The IPAM client. Cheap to share (`Arc<Ipam>`); all methods take `&self`.
pub struct Ipam {
    kv: EtcdClient,
    resources: Datastore,
    opts: IpamOptions,
    settings: Mutex<Option<Settings>>,
    node_labels: Mutex<HashMap<String, CachedLabels>>,
    hosts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<HostCache>>>>,
    /// Blocks this process knows to exist (from listings and lost claims): lets a host pick a
    /// claim candidate without listing the whole pool. Only a hint; the claim's compare on the
    /// block's absence decides.
    known: Mutex<BTreeSet<IpNet>>,
}

struct HandleState {
    id: String,
    value: HandleValue,
    /// None = believed absent.
    rev: Option<i64>,
}

impl HandleState {
    fn compare(&self) -> Compare {
        let key = model::handle_key(&self.id);
        match self.rev {
            Some(revision) => Compare::ModRevision { key, revision },
            None => Compare::Absent { key },
        }
    }

    fn write(&self) -> Write {
        let key = model::handle_key(&self.id);
        if self.value.block.is_empty() {
            Write::Delete { key }
        } else {
            Write::Put {
                key,
                value: encode(&self.value),
            }
        }
    }

    fn refresh(&mut self, current: Option<&KeyValue>) -> Result<(), IpamError> {
        match current {
            Some(kv) => {
                self.value = decode(&kv.key, &kv.value)?;
                self.rev = Some(kv.mod_revision);
            }
            None => {
                self.value = HandleValue::default();
                self.rev = None;
            }
        }
        Ok(())
    }
}

fn find_current<'a>(current: &'a [(String, Option<KeyValue>)], key: &str) -> Option<&'a KeyValue> {
    current
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_ref())
}

/// A short, growing pause after repeated conflicts so contending hosts spread out.
async fn conflict_pause(attempt: u32) {
    if attempt > 2 {
        let ms = (attempt as u64).min(20) + rand::random::<u64>() % 5;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

impl Ipam {
    pub fn new(kv: EtcdClient) -> Ipam {
        Ipam::with_options(kv, IpamOptions::default())
    }

    pub fn with_options(kv: EtcdClient, opts: IpamOptions) -> Ipam {
        Ipam {
            resources: Datastore::from_etcd(kv.clone()),
            kv,
            opts,
            settings: Mutex::new(None),
            node_labels: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            known: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn kv(&self) -> &EtcdClient {
        &self.kv
    }

    pub fn datastore(&self) -> &Datastore {
        &self.resources
    }

    pub fn options(&self) -> &IpamOptions {
        &self.opts
    }

    /// Forgets cached pools and configuration (next call re-reads them).
    pub fn invalidate_settings(&self) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn known_blocks<R>(&self, f: impl FnOnce(&mut BTreeSet<IpNet>) -> R) -> R {
        f(&mut self.known.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn host(&self, host: &str) -> Arc<tokio::sync::Mutex<HostCache>> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.entry(host.to_owned()).or_default().clone()
    }

    // ----- settings -------------------------------------------------------------------------

    /// The IPAM configuration: the `default` IPAMConfiguration (applied with calicoctl or
    /// kubectl, or written by `calicoctl ipam configure`: one object, as Calico's), Calico's
    /// defaults when there is none.
    pub async fn get_config(&self) -> Result<IpamConfig, IpamError> {
        Ok(self
            .config_resource()
            .await?
            .map(|c| IpamConfig::from_spec(&c.spec))
            .unwrap_or_default())
    }

    async fn config_resource(&self) -> Result<Option<IPAMConfiguration>, IpamError> {
        match self
            .resources
            .get::<IPAMConfiguration>(None, IPAM_CONFIG_NAME)
            .await
        {
            Ok(c) => Ok(c),
            Err(e) if e.is_not_found() => Ok(None),
            Err(source) => Err(IpamError::Resource {
                kind: "IPAMConfiguration",
                source: Box::new(source),
            }),
        }
    }

    /// Changes the `default` IPAMConfiguration (created with Calico's defaults when absent),
    /// with a compare-and-swap on what was read; its other fields and metadata stay.
    pub async fn set_config(
        &self,
        update: impl Fn(&mut IpamConfig),
    ) -> Result<IpamConfig, IpamError> {
        for _ in 0..self.opts.max_attempts {
            let existing = self.config_resource().await?;
            let mut obj = existing.clone().unwrap_or_else(|| {
                let mut spec = IPAMConfigurationSpec::default();
                IpamConfig::default().write_spec(&mut spec);
                IPAMConfiguration::new(IPAM_CONFIG_NAME, spec)
            });
            let mut cfg = IpamConfig::from_spec(&obj.spec);
            update(&mut cfg);
            cfg.write_spec(&mut obj.spec);
            let written = match existing {
                None => self.resources.create(&obj).await,
                Some(_) => self.resources.update(&obj).await,
            };
            match written {
                Ok(_) => {
                    self.invalidate_settings();
                    return Ok(cfg);
                }
                Err(e) if e.is_conflict() || e.is_already_exists() => continue,
                Err(source) => {
                    return Err(IpamError::Resource {
                        kind: "IPAMConfiguration",
                        source: Box::new(source),
                    });
                }
            }
        }
        Err(IpamError::TooManyConflicts {
            what: "update IPAMConfiguration default".into(),
            attempts: self.opts.max_attempts,
        })
    }

    async fn settings(&self) -> Result<Settings, IpamError> {
        if let Some(s) = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|s| s.loaded_at.elapsed() < self.opts.settings_ttl)
        {
            return Ok(s.clone());
        }
        let pools = self.load_pools().await?;
        let res = self
            .resources
            .list::<IPReservation>(None)
            .await
            .map_err(|source| IpamError::Resource {
                kind: "IPReservation",
                source: Box::new(source),
            })?;
        let reservations = Arc::new(Reservations::from_resources(&res.items)?);
        let config = self.get_config().await?;
        let s = Settings {
            pools,
            reservations,
            config,
            loaded_at: Instant::now(),
        };
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        Ok(s)
    }

    /// Every IPPool as a [`Pool`] (disabled ones included).
    pub async fn load_pools(&self) -> Result<Vec<Pool>, IpamError> {
        let list = self
            .resources
            .list::<IPPool>(None)
            .await
            .map_err(|source| IpamError::Resource {
                kind: "IPPool",
                source: Box::new(source),
            })?;
        let mut pools = Vec::new();
        for p in &list.items {
            pools.push(Pool::from_resource(p)?);
        }
        Ok(pools)
    }

    async fn labels_of(&self, host: &str) -> Result<BTreeMap<String, String>, IpamError> {
        if let Some((l, at)) = self
            .node_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            && at.elapsed() < self.opts.settings_ttl
        {
            return Ok(l.clone());
        }
        let labels = match self.resources.get::<Node>(None, host).await {
            Ok(Some(n)) => n.metadata.labels.clone().unwrap_or_default(),
            Ok(None) => BTreeMap::new(),
            Err(e) if e.is_not_found() => BTreeMap::new(),
            Err(source) => {
                return Err(IpamError::Resource {
                    kind: "Node",
                    source: Box::new(source),
                });
            }
        };
        self.node_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_owned(), (labels.clone(), Instant::now()));
        Ok(labels)
    }

    // ----- host cache -----------------------------------------------------------------------

    async fn load_host(
        &self,
        cache: &mut HostCache,
        host: &str,
        family: Family,
    ) -> Result<(), IpamError> {
        if cache.loaded.contains(&family) {
            return Ok(());
        }
        let prefix = model::host_affinities_prefix(host, family);
        let listing = self
            .kv
            .list(&prefix)
            .await
            .map_err(etcd(format!("list {prefix}")))?;
        let mut confirmed = Vec::new();
        for kv in &listing.kvs {
            let Some((_, cidr)) = model::parse_affinity_key(&kv.key) else {
                continue;
            };
            let v: AffinityValue = decode(&kv.key, &kv.value)?;
            cache.affinities.insert(cidr, kv.mod_revision);
            if v.state == AffinityState::Confirmed {
                confirmed.push(cidr);
            }
        }
        for chunk in confirmed.chunks(self.kv.max_txn_ops().max(1)) {
            let keys: Vec<String> = chunk.iter().map(model::block_key).collect();
            let (kvs, _) = self
                .kv
                .get_many(&keys)
                .await
                .map_err(etcd("read affine blocks"))?;
            for (cidr, kv) in chunk.iter().zip(kvs) {
                match kv {
                    Some(kv) => {
                        let block = decode_block(&kv)?;
                        if block.host() == Some(host) {
                            cache.blocks.insert(
                                *cidr,
                                Cached {
                                    block,
                                    rev: kv.mod_revision,
                                },
                            );
                        } else {
                            warn!(%cidr, host, owner = ?block.host(), "affinity for a block affine elsewhere");
                        }
                    }
                    None => warn!(%cidr, host, "confirmed affinity without a block"),
                }
            }
        }
        cache.loaded.insert(family);
        Ok(())
    }

    /// Forgets this process's cached view of `host`'s blocks.
    pub async fn invalidate_host(&self, host: &str) {
        let h = self.host(host);
        let mut c = h.lock().await;
        *c = HostCache::default();
    }

    // ----- claiming -------------------------------------------------------------------------

    /// Claims `cidr` for `host` (two-phase, see the module doc). Returns the new block and its
    /// revision, or None when another host got it first.
    async fn claim_block(
        &self,
        cache: &mut HostCache,
        host: &str,
        cidr: IpNet,
        strict: bool,
    ) -> Result<Option<()>, IpamError> {
        let aff_key = model::affinity_key(host, &cidr);
        let block_key = model::block_key(&cidr);
        // Phase 1: pending affinity, only while the block does not exist (so a lost race costs
        // one round trip and leaves nothing behind).
        let pending = encode(&AffinityValue::new(AffinityState::Pending));
        let aff_rev = match self
            .kv
            .txn(
                vec![Compare::Absent {
                    key: block_key.clone(),
                }],
                vec![Write::Put {
                    key: aff_key.clone(),
                    value: pending,
                }],
            )
            .await
            .map_err(etcd(format!("create {aff_key}")))?
        {
            TxnOutcome::Committed { revision } => revision,
            TxnOutcome::Failed { current, .. } => {
                if let Some(kv) = find_current(&current, &block_key) {
                    let b = decode_block(kv)?;
                    if b.host() == Some(host) {
                        cache.blocks.insert(
                            cidr,
                            Cached {
                                block: b,
                                rev: kv.mod_revision,
                            },
                        );
                        return Ok(Some(()));
                    }
                }
                self.known_blocks(|k| {
                    k.insert(cidr);
                });
                debug!(%cidr, host, "block already exists");
                return Ok(None);
            }
        };
        // Phase 2: the block and the confirmation, atomically.
        let block = AllocationBlock::new(cidr, Some(host), strict);
        let outcome = self
            .kv
            .txn(
                vec![
                    Compare::Absent {
                        key: block_key.clone(),
                    },
                    Compare::ModRevision {
                        key: aff_key.clone(),
                        revision: aff_rev,
                    },
                ],
                vec![
                    Write::Put {
                        key: block_key.clone(),
                        value: encode(&block),
                    },
                    Write::Put {
                        key: aff_key.clone(),
                        value: encode(&AffinityValue::new(AffinityState::Confirmed)),
                    },
                ],
            )
            .await
            .map_err(etcd(format!("claim {block_key}")))?;
        match outcome {
            TxnOutcome::Committed { revision } => {
                info!(%cidr, host, "claimed block");
                cache.blocks.insert(
                    cidr,
                    Cached {
                        block,
                        rev: revision,
                    },
                );
                cache.affinities.insert(cidr, revision);
                Ok(Some(()))
            }
            TxnOutcome::Failed { current, .. } => {
                let existing = find_current(&current, &block_key);
                let aff_now = find_current(&current, &aff_key);
                if let Some(kv) = existing {
                    let b = decode_block(kv)?;
                    if b.host() == Some(host) {
                        // Ours already (an earlier attempt of this host): make sure it is
                        // confirmed and use it.
                        let put = Write::Put {
                            key: aff_key.clone(),
                            value: encode(&AffinityValue::new(AffinityState::Confirmed)),
                        };
                        let r = self
                            .kv
                            .txn(vec![], vec![put])
                            .await
                            .map_err(etcd(format!("confirm {aff_key}")))?;
                        if let TxnOutcome::Committed { revision } = r {
                            cache.affinities.insert(cidr, revision);
                        }
                        cache.blocks.insert(
                            cidr,
                            Cached {
                                block: b,
                                rev: kv.mod_revision,
                            },
                        );
                        return Ok(Some(()));
                    }
                }
                // Someone else owns the block (or our pending key changed): withdraw our
                // pending affinity if it is still the one we wrote.
                if let Some(a) = aff_now {
                    let v: AffinityValue = decode(&a.key, &a.value)?;
                    if v.state == AffinityState::Pending {
                        match self.kv.delete(&aff_key, Some(a.mod_revision)).await {
                            Ok(_) | Err(KvError::NotFound { .. } | KvError::Conflict { .. }) => {}
                            Err(e) => return Err(etcd(format!("delete {aff_key}"))(e)),
                        }
                    }
                }
                cache.affinities.remove(&cidr);
                self.known_blocks(|k| {
                    k.insert(cidr);
                });
                debug!(%cidr, host, "block claimed by another host first");
                Ok(None)
            }
        }
    }

    // ----- allocation -----------------------------------------------------------------------

    /// Allocates `num_v4` IPv4 and `num_v6` IPv6 addresses for `hostname`, all or nothing.
    pub async fn auto_assign(&self, args: AutoAssignArgs) -> Result<Assigned, IpamError> {
        let mut attrs = args.attrs.clone();
        attrs
            .entry(model::ATTR_NODE.to_owned())
            .or_insert_with(|| args.hostname.clone());
        let mut handle = args.handle_id.as_ref().map(|id| HandleState {
            id: id.clone(),
            value: HandleValue::default(),
            rev: None,
        });
        let mut out = Assigned::default();
        for (family, n, filter) in [
            (Family::V4, args.num_v4, &args.v4_pools),
            (Family::V6, args.num_v6, &args.v6_pools),
        ] {
            if n == 0 {
                continue;
            }
            match self
                .assign_family(&args, family, n, filter, &attrs, handle.as_mut())
                .await
            {
                Ok(ips) => match family {
                    Family::V4 => out.v4 = ips,
                    Family::V6 => out.v6 = ips,
                },
                Err((err, partial)) => {
                    // All or nothing: give back what this call took.
                    let mut undo: Vec<IpAddr> = out.v4.iter().chain(&out.v6).copied().collect();
                    undo.extend(partial);
                    if !undo.is_empty()
                        && let Err(e) = self.release_ips(&undo).await
                    {
                        warn!(error = %e, "could not roll back a partial assignment");
                    }
                    return Err(err);
                }
            }
        }
        Ok(out)
    }

    async fn assign_family(
        &self,
        args: &AutoAssignArgs,
        family: Family,
        n: usize,
        filter: &[IpNet],
        attrs: &BTreeMap<String, String>,
        mut handle: Option<&mut HandleState>,
    ) -> Result<Vec<IpAddr>, (IpamError, Vec<IpAddr>)> {
        let host = args.hostname.as_str();
        let settings = self.settings().await.map_err(|e| (e, vec![]))?;
        let labels = self.labels_of(host).await.map_err(|e| (e, vec![]))?;
        let pools: Vec<&Pool> = settings
            .pools
            .iter()
            .filter(|p| p.family() == family)
            .filter(|p| {
                // A Manual pool serves only requests that name it (Calico's assignmentMode).
                if filter.is_empty() {
                    !p.manual
                } else {
                    filter.contains(&p.cidr)
                }
            })
            .filter(|p| p.usable_by(&labels, args.allowed_use))
            .collect();
        let pool_names: Vec<String> = if pools.is_empty() {
            filter.iter().map(|c| c.to_string()).collect()
        } else {
            pools.iter().map(|p| p.name.clone()).collect()
        };
        let reserved_set = settings.reservations.clone();
        let reserved = move |ip: IpAddr| reserved_set.contains(ip);
        let in_pools = |c: &IpNet| pools.iter().any(|p| p.cidr.contains(&c.network()));
        let hc = self.host(host);
        let mut cache = hc.lock().await;
        self.load_host(&mut cache, host, family)
            .await
            .map_err(|e| (e, vec![]))?;
        let start = host_offset(host);
        let mut got: Vec<IpAddr> = Vec::with_capacity(n);
        let mut attempt = 0u32;
        let mut lost_claims = 0u32;
        while got.len() < n {
            attempt += 1;
            if attempt > self.opts.max_attempts {
                return Err((
                    IpamError::TooManyConflicts {
                        what: format!("allocate for host {host}"),
                        attempts: self.opts.max_attempts,
                    },
                    got,
                ));
            }
            let affine: Vec<BlockFree> = cache
                .blocks
                .values()
                .filter(|c| Family::of_net(&c.block.cidr) == family && in_pools(&c.block.cidr))
                .map(|c| BlockFree {
                    cidr: c.block.cidr,
                    free: c.block.free_count(&reserved),
                })
                .collect();
            let host_block_count = cache
                .blocks
                .keys()
                .filter(|c| Family::of_net(c) == family)
                .count();
            let mut input = PlanInput {
                config: settings.config,
                affine: &affine,
                host_block_count,
                unclaimed: None,
                others: &[],
                have_pools: !pools.is_empty(),
            };
            let mut listed: BTreeMap<IpNet, Cached> = BTreeMap::new();
            let others: Vec<BlockFree>;
            let fresh_affine: Vec<BlockFree>;
            let step = match next_step(&input) {
                Step::UseAffine(c) => Step::UseAffine(c),
                _ if input.have_pools
                    && lost_claims < 2
                    && settings.config.auto_allocate_blocks
                    && (settings.config.max_blocks_per_host == 0
                        || host_block_count < settings.config.max_blocks_per_host as usize)
                    && let Some(c) = {
                        let mut existing = self.known_blocks(|k| k.clone());
                        existing.extend(cache.blocks.keys().copied());
                        find_unclaimed(&pools, &existing, start)
                    } =>
                {
                    // Own blocks are full: claim a block we believe free, without a listing.
                    Step::Claim(c)
                }
                _ if input.have_pools => {
                    // No candidate known: look at the whole pool (one list).
                    let prefix = model::blocks_prefix(family);
                    let listing = self
                        .kv
                        .list(&prefix)
                        .await
                        .map_err(|e| (etcd(format!("list {prefix}"))(e), got.clone()))?;
                    for kv in &listing.kvs {
                        let b = decode_block(kv).map_err(|e| (e, got.clone()))?;
                        listed.insert(
                            b.cidr,
                            Cached {
                                block: b,
                                rev: kv.mod_revision,
                            },
                        );
                    }
                    // The listing is fresher than the cache: another host may have released
                    // addresses it borrowed from our blocks.
                    for c in listed.values() {
                        if c.block.host() == Some(host)
                            && cache
                                .blocks
                                .get(&c.block.cidr)
                                .is_none_or(|old| old.rev < c.rev)
                        {
                            cache.blocks.insert(c.block.cidr, c.clone());
                        }
                    }
                    fresh_affine = cache
                        .blocks
                        .values()
                        .filter(|c| {
                            Family::of_net(&c.block.cidr) == family && in_pools(&c.block.cidr)
                        })
                        .map(|c| BlockFree {
                            cidr: c.block.cidr,
                            free: c.block.free_count(&reserved),
                        })
                        .collect();
                    input.affine = &fresh_affine;
                    let existing: BTreeSet<IpNet> = listed.keys().copied().collect();
                    self.known_blocks(|k| {
                        k.retain(|c| Family::of_net(c) != family);
                        k.extend(existing.iter().copied());
                    });
                    input.unclaimed = find_unclaimed(&pools, &existing, start);
                    others = listed
                        .values()
                        .filter(|c| c.block.host() != Some(host) && in_pools(&c.block.cidr))
                        .map(|c| BlockFree {
                            cidr: c.block.cidr,
                            free: c.block.free_count(&reserved),
                        })
                        .collect();
                    input.others = &others;
                    next_step(&input)
                }
                s => s,
            };
            let (cidr, borrowed) = match step {
                Step::UseAffine(c) => (c, false),
                Step::Borrow(c) => (c, true),
                Step::Claim(c) => {
                    let won = self
                        .claim_block(&mut cache, host, c, settings.config.strict_affinity)
                        .await
                        .map_err(|e| (e, got.clone()))?;
                    // After two lost races, stop guessing and list the pool.
                    lost_claims = if won.is_some() { 0 } else { lost_claims + 1 };
                    if won.is_some() {
                        // Progress: the attempt budget bounds conflicts, not request size.
                        attempt = 0;
                    }
                    continue;
                }
                Step::Exhausted(reason) => {
                    return Err((
                        IpamError::Exhausted {
                            family,
                            host: host.to_owned(),
                            pools: pool_names,
                            requested: n,
                            assigned: got.len(),
                            reason,
                        },
                        got,
                    ));
                }
            };
            let current = if borrowed {
                listed.get(&cidr).cloned()
            } else {
                cache.blocks.get(&cidr).cloned()
            };
            let Some(mut cur) = current else {
                continue;
            };
            let ips = cur.block.auto_assign(
                n - got.len(),
                handle.as_ref().map(|h| h.id.as_str()),
                attrs,
                &reserved,
            );
            if ips.is_empty() {
                continue;
            }
            let block_key = model::block_key(&cidr);
            let mut compares = vec![Compare::ModRevision {
                key: block_key.clone(),
                revision: cur.rev,
            }];
            let mut writes = vec![Write::Put {
                key: block_key.clone(),
                value: encode(&cur.block),
            }];
            if let Some(h) = handle.as_deref_mut() {
                let mut next = HandleState {
                    id: h.id.clone(),
                    value: h.value.clone(),
                    rev: h.rev,
                };
                next.value.add(&cidr, ips.len());
                compares.push(h.compare());
                writes.push(next.write());
            }
            match self
                .kv
                .txn(compares, writes)
                .await
                .map_err(|e| (etcd(format!("allocate in {block_key}"))(e), got.clone()))?
            {
                TxnOutcome::Committed { revision } => {
                    if let Some(h) = handle.as_deref_mut() {
                        h.value.add(&cidr, ips.len());
                        h.rev = Some(revision);
                    }
                    cur.rev = revision;
                    if !borrowed {
                        cache.empty_since.remove(&cidr);
                        cache.blocks.insert(cidr, cur);
                    }
                    debug!(host, %cidr, n = ips.len(), borrowed, "allocated");
                    got.extend(ips);
                    attempt = 0;
                }
                TxnOutcome::Failed { current, .. } => {
                    if let Some(h) = handle.as_deref_mut() {
                        h.refresh(find_current(&current, &model::handle_key(&h.id)))
                            .map_err(|e| (e, got.clone()))?;
                    }
                    if !borrowed {
                        match find_current(&current, &block_key) {
                            Some(kv) => {
                                let b = decode_block(kv).map_err(|e| (e, got.clone()))?;
                                if b.host() == Some(host) {
                                    cache.blocks.insert(
                                        cidr,
                                        Cached {
                                            block: b,
                                            rev: kv.mod_revision,
                                        },
                                    );
                                } else {
                                    cache.blocks.remove(&cidr);
                                }
                            }
                            None => {
                                cache.blocks.remove(&cidr);
                            }
                        }
                    }
                    conflict_pause(attempt).await;
                }
            }
        }
        Ok(got)
    }

    /// Allocates exactly `ip` for `hostname` (claiming its block for the host when nobody has
    /// it yet).
    pub async fn assign_ip(
        &self,
        ip: IpAddr,
        handle_id: Option<&str>,
        attrs: BTreeMap<String, String>,
        hostname: &str,
    ) -> Result<(), IpamError> {
        let settings = self.settings().await?;
        let pool = settings
            .pools
            .iter()
            .find(|p| !p.disabled && p.cidr.contains(&ip))
            .ok_or(IpamError::NoPoolForIp { ip })?;
        let cidr = block_containing(ip, pool.block_size);
        let key = model::block_key(&cidr);
        let mut attrs = attrs;
        attrs
            .entry(model::ATTR_NODE.to_owned())
            .or_insert_with(|| hostname.to_owned());
        let mut handle = handle_id.map(|id| HandleState {
            id: id.to_owned(),
            value: HandleValue::default(),
            rev: None,
        });
        if let Some(h) = handle.as_mut() {
            let cur = self
                .kv
                .get(&model::handle_key(&h.id))
                .await
                .map_err(etcd("get handle"))?;
            h.refresh(cur.as_ref())?;
        }
        let hc = self.host(hostname);
        for attempt in 1..=self.opts.max_attempts {
            let Some(kv) = self
                .kv
                .get(&key)
                .await
                .map_err(etcd(format!("get {key}")))?
            else {
                let mut cache = hc.lock().await;
                self.claim_block(&mut cache, hostname, cidr, settings.config.strict_affinity)
                    .await?;
                continue;
            };
            let mut block = decode_block(&kv)?;
            match block.assign(ip, handle_id, &attrs) {
                Ok(()) => {}
                Err(crate::block::BlockError::AlreadyAllocated { .. }) => {
                    return Err(IpamError::AlreadyAllocated { ip });
                }
                Err(e) => {
                    return Err(IpamError::Corrupt {
                        key,
                        reason: e.to_string(),
                    });
                }
            }
            let mut compares = vec![Compare::ModRevision {
                key: key.clone(),
                revision: kv.mod_revision,
            }];
            let mut writes = vec![Write::Put {
                key: key.clone(),
                value: encode(&block),
            }];
            if let Some(h) = handle.as_ref() {
                let mut next = HandleState {
                    id: h.id.clone(),
                    value: h.value.clone(),
                    rev: h.rev,
                };
                next.value.add(&cidr, 1);
                compares.push(h.compare());
                writes.push(next.write());
            }
            match self
                .kv
                .txn(compares, writes)
                .await
                .map_err(etcd(format!("assign {ip}")))?
            {
                TxnOutcome::Committed { .. } => {
                    // The host cache may hold an older revision of this block; drop it.
                    hc.lock().await.blocks.remove(&cidr);
                    return Ok(());
                }
                TxnOutcome::Failed { current, .. } => {
                    if let Some(h) = handle.as_mut() {
                        h.refresh(find_current(&current, &model::handle_key(&h.id)))?;
                    }
                    conflict_pause(attempt).await;
                }
            }
        }
        Err(IpamError::TooManyConflicts {
            what: format!("assign {ip}"),
            attempts: self.opts.max_attempts,
        })
    }

    // ----- release --------------------------------------------------------------------------

    /// Finds the block holding `ip`: by the pool's block size, else by scanning existing blocks
    /// (the pool may be gone).
    async fn block_of(&self, ip: IpAddr) -> Result<Option<IpNet>, IpamError> {
        let settings = self.settings().await?;
        if let Some(p) = settings.pools.iter().find(|p| p.cidr.contains(&ip)) {
            return Ok(Some(block_containing(ip, p.block_size)));
        }
        let prefix = model::blocks_prefix(Family::of_ip(&ip));
        let listing = self
            .kv
            .list(&prefix)
            .await
            .map_err(etcd(format!("list {prefix}")))?;
        Ok(listing
            .kvs
            .iter()
            .filter_map(|kv| model::parse_block_key(&kv.key))
            .find(|c| c.contains(&ip)))
    }

    /// Releases addresses (with their handles' counts, in the same transaction). Returns the
    /// ones that were not allocated.
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<IpAddr>, IpamError> {
        self.release_ips_checked(ips, &HashMap::new()).await
    }

    /// [`Ipam::release_ips`], but an address listed in `sequence` is released only if its
    /// allocation still carries that sequence number, i.e. it was not released and handed out
    /// again since it was read (what `ipam release --from-report` relies on).
    pub async fn release_ips_checked(
        &self,
        ips: &[IpAddr],
        sequence: &HashMap<IpAddr, u64>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let mut by_block: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
        let mut not_allocated = Vec::new();
        for &ip in ips {
            match self.block_of(ip).await? {
                Some(b) => by_block.entry(b).or_default().push(ip),
                None => not_allocated.push(ip),
            }
        }
        for (cidr, ips) in by_block {
            let released = self
                .update_block(cidr, |b| {
                    let seq = |ip: IpAddr| sequence.get(&ip).copied();
                    b.release(&ips, Some(&seq))
                })
                .await?;
            let done: BTreeSet<IpAddr> = released.iter().map(|r| r.ip).collect();
            not_allocated.extend(ips.iter().filter(|ip| !done.contains(ip)));
        }
        Ok(not_allocated)
    }

    /// Applies `change` to block `cidr` and writes it back together with the handles it
    /// touched, by compare-and-swap. An unaffine block left empty is deleted.
    async fn update_block(
        &self,
        cidr: IpNet,
        change: impl Fn(&mut AllocationBlock) -> Vec<Released>,
    ) -> Result<Vec<Released>, IpamError> {
        let key = model::block_key(&cidr);
        for attempt in 1..=self.opts.max_attempts {
            let Some(kv) = self
                .kv
                .get(&key)
                .await
                .map_err(etcd(format!("get {key}")))?
            else {
                return Ok(Vec::new());
            };
            let mut block = decode_block(&kv)?;
            let released = change(&mut block);
            if released.is_empty() {
                return Ok(released);
            }
            let mut per_handle: BTreeMap<String, usize> = BTreeMap::new();
            for r in &released {
                if let Some(h) = &r.handle_id {
                    *per_handle.entry(h.clone()).or_default() += 1;
                }
            }
            let handle_keys: Vec<String> =
                per_handle.keys().map(|h| model::handle_key(h)).collect();
            let mut compares = vec![Compare::ModRevision {
                key: key.clone(),
                revision: kv.mod_revision,
            }];
            let mut writes = vec![if block.is_empty() && block.affinity.is_none() {
                Write::Delete { key: key.clone() }
            } else {
                Write::Put {
                    key: key.clone(),
                    value: encode(&block),
                }
            }];
            // Handles touched: at most max_txn_ops - 1 of them per transaction.
            let (handles, _) = self
                .kv
                .get_many(&handle_keys)
                .await
                .map_err(etcd("read handles"))?;
            for ((id, n), cur) in per_handle.iter().zip(handles) {
                let mut h = HandleState {
                    id: id.clone(),
                    value: HandleValue::default(),
                    rev: None,
                };
                h.refresh(cur.as_ref())?;
                if h.rev.is_none() {
                    // No handle record (left by a crash in a Calico two-step writer): nothing
                    // to decrement.
                    continue;
                }
                compares.push(h.compare());
                h.value.remove(&cidr, *n);
                writes.push(h.write());
            }
            match self
                .kv
                .txn(compares, writes)
                .await
                .map_err(etcd(format!("release in {key}")))?
            {
                TxnOutcome::Committed { revision } => {
                    self.refresh_cached_block(block, revision).await;
                    return Ok(released);
                }
                TxnOutcome::Failed { .. } => conflict_pause(attempt).await,
            }
        }
        Err(IpamError::TooManyConflicts {
            what: format!("release in {key}"),
            attempts: self.opts.max_attempts,
        })
    }

    /// After a committed write of `block` at `revision`: keeps this process's cache of the
    /// block's host current, so the next allocation there is still one round trip.
    async fn refresh_cached_block(&self, block: AllocationBlock, revision: i64) {
        let Some(host) = block.host().map(str::to_owned) else {
            return;
        };
        let hc = {
            let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts.get(&host).cloned()
        };
        if let Some(hc) = hc {
            let mut c = hc.lock().await;
            let cidr = block.cidr;
            if c.blocks.get(&cidr).is_some_and(|old| old.rev < revision) {
                c.blocks.insert(
                    cidr,
                    Cached {
                        block,
                        rev: revision,
                    },
                );
            }
        }
    }

    /// Releases every address of `handle_id` and deletes the handle. Returns the addresses.
    pub async fn release_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        let hkey = model::handle_key(handle_id);
        let Some(kv) = self
            .kv
            .get(&hkey)
            .await
            .map_err(etcd(format!("get {hkey}")))?
        else {
            return Ok(Vec::new());
        };
        let value: HandleValue = decode(&kv.key, &kv.value)?;
        let mut out = Vec::new();
        for block in value.block.keys() {
            let cidr: IpNet = block.parse().map_err(|_| IpamError::Corrupt {
                key: hkey.clone(),
                reason: format!("block {block:?} is not a CIDR"),
            })?;
            let released = self
                .update_block(cidr, |b| b.release_handle(handle_id))
                .await?;
            out.extend(released.into_iter().map(|r| r.ip));
        }
        // Whatever is left (counts for blocks that no longer hold the handle) goes too.
        match self.kv.delete(&hkey, None).await {
            Ok(_) | Err(KvError::NotFound { .. }) => {}
            Err(e) => return Err(etcd(format!("delete {hkey}"))(e)),
        }
        Ok(out)
    }

    /// The addresses held by `handle_id`.
    pub async fn ips_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        let hkey = model::handle_key(handle_id);
        let Some(kv) = self
            .kv
            .get(&hkey)
            .await
            .map_err(etcd(format!("get {hkey}")))?
        else {
            return Ok(Vec::new());
        };
        let value: HandleValue = decode(&kv.key, &kv.value)?;
        let mut out = Vec::new();
        for block in value.block.keys() {
            let Ok(cidr) = block.parse::<IpNet>() else {
                continue;
            };
            if let Some(kv) = self
                .kv
                .get(&model::block_key(&cidr))
                .await
                .map_err(etcd("get block"))?
            {
                out.extend(decode_block(&kv)?.ips_of_handle(handle_id));
            }
        }
        Ok(out)
    }

    /// What `ip` is allocated to, or None when it is free.
    pub async fn get_assignment_attributes(
        &self,
        ip: IpAddr,
    ) -> Result<Option<AssignmentInfo>, IpamError> {
        let Some(cidr) = self.block_of(ip).await? else {
            return Ok(None);
        };
        let Some(kv) = self
            .kv
            .get(&model::block_key(&cidr))
            .await
            .map_err(etcd("get block"))?
        else {
            return Ok(None);
        };
        let b = decode_block(&kv)?;
        Ok(b.attribute_of(ip).map(|a| AssignmentInfo {
            ip,
            block: cidr,
            block_affinity: b.affinity.clone(),
            attributes: a.clone(),
            sequence_number: b.sequence_number_of(ip),
        }))
    }

    // ----- affinity release -----------------------------------------------------------------

    /// Gives up `host`'s affinity for `cidr`: an empty block is deleted with its affinity (one
    /// transaction); a non-empty one stays, unaffine, so its addresses remain valid.
    pub async fn release_affinity(&self, host: &str, cidr: IpNet) -> Result<(), IpamError> {
        let aff_key = model::affinity_key(host, &cidr);
        let block_key = model::block_key(&cidr);
        for attempt in 1..=self.opts.max_attempts {
            let (kvs, _) = self
                .kv
                .get_many(&[aff_key.clone(), block_key.clone()])
                .await
                .map_err(etcd(format!("read {aff_key}")))?;
            let (aff, blk) = (kvs[0].clone(), kvs[1].clone());
            let mut compares = Vec::new();
            let mut writes = Vec::new();
            match &aff {
                Some(a) => {
                    compares.push(Compare::ModRevision {
                        key: aff_key.clone(),
                        revision: a.mod_revision,
                    });
                    writes.push(Write::Delete {
                        key: aff_key.clone(),
                    });
                }
                None => compares.push(Compare::Absent {
                    key: aff_key.clone(),
                }),
            }
            match &blk {
                Some(kv) => {
                    let mut b = decode_block(kv)?;
                    compares.push(Compare::ModRevision {
                        key: block_key.clone(),
                        revision: kv.mod_revision,
                    });
                    if b.host() == Some(host) {
                        if b.is_empty() {
                            writes.push(Write::Delete {
                                key: block_key.clone(),
                            });
                        } else {
                            b.affinity = None;
                            b.sequence_number += 1;
                            writes.push(Write::Put {
                                key: block_key.clone(),
                                value: encode(&b),
                            });
                        }
                    }
                }
                None => compares.push(Compare::Absent {
                    key: block_key.clone(),
                }),
            }
            if writes.is_empty() {
                return Ok(());
            }
            match self
                .kv
                .txn(compares, writes)
                .await
                .map_err(etcd(format!("release affinity {aff_key}")))?
            {
                TxnOutcome::Committed { .. } => {
                    info!(host, %cidr, "released block affinity");
                    let hc = self.host(host);
                    let mut c = hc.lock().await;
                    c.blocks.remove(&cidr);
                    c.affinities.remove(&cidr);
                    c.empty_since.remove(&cidr);
                    return Ok(());
                }
                TxnOutcome::Failed { .. } => conflict_pause(attempt).await,
            }
        }
        Err(IpamError::TooManyConflicts {
            what: format!("release affinity {aff_key}"),
            attempts: self.opts.max_attempts,
        })
    }

    /// Every (CIDR, state) affinity of `host`, both families.
    pub async fn host_affinities(
        &self,
        host: &str,
    ) -> Result<Vec<(IpNet, AffinityState)>, IpamError> {
        let prefix = format!("{}{host}/", model::HOSTS_PREFIX);
        let listing = self
            .kv
            .list(&prefix)
            .await
            .map_err(etcd(format!("list {prefix}")))?;
        let mut out = Vec::new();
        for kv in &listing.kvs {
            if let Some((h, cidr)) = model::parse_affinity_key(&kv.key)
                && h == host
            {
                let v: AffinityValue = decode(&kv.key, &kv.value)?;
                out.push((cidr, v.state));
            }
        }
        Ok(out)
    }

    /// Releases every affinity of `host` (the node was deleted). Empty blocks return to the
    /// pool; blocks still holding addresses stay, unaffine, until those are released.
    pub async fn release_host_affinities(&self, host: &str) -> Result<usize, IpamError> {
        let affs = self.host_affinities(host).await?;
        for (cidr, _) in &affs {
            self.release_affinity(host, *cidr).await?;
        }
        self.invalidate_host(host).await;
        Ok(affs.len())
    }

    /// Releases `host`'s affine blocks that have been empty for at least the grace period
    /// (`IpamOptions::empty_block_grace`), as seen by this process: the first call that finds
    /// a block empty starts its clock. Returns the blocks released. Call it periodically.
    pub async fn release_empty_blocks(&self, host: &str) -> Result<Vec<IpNet>, IpamError> {
        let hc = self.host(host);
        let to_release: Vec<IpNet> = {
            let mut cache = hc.lock().await;
            for family in [Family::V4, Family::V6] {
                cache.loaded.remove(&family);
                cache.blocks.retain(|c, _| Family::of_net(c) != family);
                self.load_host(&mut cache, host, family).await?;
            }
            let now = Instant::now();
            let empty: Vec<IpNet> = cache
                .blocks
                .iter()
                .filter(|(_, c)| c.block.is_empty())
                .map(|(k, _)| *k)
                .collect();
            cache.empty_since.retain(|c, _| empty.contains(c));
            for c in &empty {
                cache.empty_since.entry(*c).or_insert(now);
            }
            cache
                .empty_since
                .iter()
                .filter(|(_, since)| now.duration_since(**since) >= self.opts.empty_block_grace)
                .map(|(c, _)| *c)
                .collect()
        };
        let mut released = Vec::new();
        for cidr in to_release {
            // release_affinity deletes the block only if it is still empty at that revision.
            self.release_affinity(host, cidr).await?;
            released.push(cidr);
        }
        Ok(released)
    }
}

/// A stable, host-specific starting block so hosts spread over the pool.
fn host_offset(host: &str) -> u128 {
    // FNV-1a: tiny, stable across processes and releases.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in host.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h as u128
}
