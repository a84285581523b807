//! Raw key-value layer over etcd v3: reads, compare-and-swap writes, multi-key transactions and
//! a resumable watch. Every call is bounded: a per-request timeout and a bounded number of
//! retries with exponential backoff for errors that mean "try again" (no leader, connection lost,
//! member unavailable).
//!
//! Writes that fail ambiguously (the request may have been applied before the connection broke)
//! are retried, and a retry that then finds the store already holding exactly what we meant to
//! write counts as success. Without that, a create retried after a lost response would report
//! `AlreadyExists` for the object it just created.

mod watch;

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, DeleteOptions, GetOptions, Identity, KvClient, TlsOptions,
    Txn, TxnOp, TxnOpResponse,
};
use tracing::{debug, warn};

pub use watch::{KvWatchStream, WatchEvent};

use crate::config::EtcdConfig;

/// The operation that failed, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Connect,
    Get,
    List,
    Create,
    Update,
    Delete,
    Txn,
    Watch,
    Compact,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Op::Connect => "connect",
            Op::Get => "get",
            Op::List => "list",
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Txn => "transaction",
            Op::Watch => "watch",
            Op::Compact => "compact",
        };
        f.write_str(s)
    }
}

/// Errors of the key-value layer. Each names the operation and the key (or prefix) involved.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("etcd configuration: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("etcd configuration: cannot read {field} file {path}")]
    ReadFile {
        field: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {key}: key already exists (mod revision {mod_revision})")]
    AlreadyExists {
        op: Op,
        key: String,
        mod_revision: i64,
    },
    #[error("{op} {key}: key does not exist")]
    NotFound { op: Op, key: String },
    #[error("{op} {key}: revision conflict: expected mod revision {expected}, found {actual}")]
    Conflict {
        op: Op,
        key: String,
        expected: i64,
        actual: i64,
    },
    #[error("{op} {key}: etcd request failed after {attempts} attempt(s)")]
    Etcd {
        op: Op,
        key: String,
        attempts: u32,
        #[source]
        source: Box<etcd_client::Error>,
    },
    #[error("{op} {key}: no answer from etcd within {timeout:?} after {attempts} attempt(s)")]
    Timeout {
        op: Op,
        key: String,
        timeout: Duration,
        attempts: u32,
    },
    #[error("{op} {key}: transaction has {ops} operations, more than etcd's limit of {limit}")]
    TooManyOps {
        op: Op,
        key: String,
        ops: usize,
        limit: usize,
    },
    #[error("{op} {key}: etcd returned a key that is not UTF-8")]
    NonUtf8Key { op: Op, key: String },
    #[error(
        "watch {prefix}: revision {requested} was compacted (oldest available {compact_revision}) and re-listing failed"
    )]
    Compacted {
        prefix: String,
        requested: i64,
        compact_revision: i64,
        #[source]
        source: Box<KvError>,
    },
    #[error("watch {prefix}: gave up after {failures} consecutive failures to (re)connect")]
    WatchGaveUp {
        prefix: String,
        failures: u32,
        #[source]
        source: Box<KvError>,
    },
    #[error("watch {prefix}: etcd cancelled the watch: {reason}")]
    WatchCancelled { prefix: String, reason: String },
}

impl KvError {
    /// True for a failed precondition (exists / missing / revision mismatch), which retrying the
    /// same request cannot fix but re-reading and re-deciding can.
    pub fn is_precondition_failure(&self) -> bool {
        matches!(
            self,
            KvError::AlreadyExists { .. } | KvError::NotFound { .. } | KvError::Conflict { .. }
        )
    }
}

pub type Result<T, E = KvError> = std::result::Result<T, E>;

/// A stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the last change to the key; the compare-and-swap token.
    pub mod_revision: i64,
}

/// The result of a list: the keys and the store revision the list was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    /// Store revision of the (consistent) read; watch from `revision + 1` to follow changes.
    pub revision: i64,
}

/// A condition of a multi-key transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist (create_revision == 0).
    Absent { key: String },
    /// The key exists and was last modified at exactly this revision.
    ModRevision { key: String, revision: i64 },
    /// The key exists and holds exactly this value.
    Value { key: String, value: Vec<u8> },
}

impl Compare {
    pub fn key(&self) -> &str {
        match self {
            Compare::Absent { key }
            | Compare::ModRevision { key, .. }
            | Compare::Value { key, .. } => key,
        }
    }

    fn to_etcd(&self) -> etcd_client::Compare {
        use etcd_client::CompareOp::Equal;
        match self {
            Compare::Absent { key } => {
                etcd_client::Compare::create_revision(key.as_str(), Equal, 0)
            }
            Compare::ModRevision { key, revision } => {
                etcd_client::Compare::mod_revision(key.as_str(), Equal, *revision)
            }
            Compare::Value { key, value } => {
                etcd_client::Compare::value(key.as_str(), Equal, value.clone())
            }
        }
    }

    /// Whether `current` (None = absent) satisfies this condition.
    fn holds_for(&self, current: Option<&KeyValue>) -> bool {
        match (self, current) {
            (Compare::Absent { .. }, cur) => cur.is_none(),
            (Compare::ModRevision { revision, .. }, Some(kv)) => kv.mod_revision == *revision,
            (Compare::Value { value, .. }, Some(kv)) => &kv.value == value,
            (_, None) => false,
        }
    }
}

/// A write inside a multi-key transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl Write {
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }

    fn to_etcd(&self) -> TxnOp {
        match self {
            Write::Put { key, value } => TxnOp::put(key.as_str(), value.clone(), None),
            Write::Delete { key } => TxnOp::delete(key.as_str(), None),
        }
    }

    fn is_applied_in(&self, current: Option<&KeyValue>) -> bool {
        match (self, current) {
            (Write::Put { value, .. }, Some(kv)) => &kv.value == value,
            (Write::Put { .. }, None) => false,
            (Write::Delete { .. }, cur) => cur.is_none(),
        }
    }
}

/// The outcome of [`EtcdClient::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// All comparisons held and all writes were applied at `revision`.
    Committed { revision: i64 },
    /// At least one comparison failed; nothing was written. `current` holds the state of every
    /// compared key (None = absent), read atomically with the comparison, and `failed` the
    /// indexes of the comparisons that did not hold.
    Failed {
        revision: i64,
        current: Vec<(String, Option<KeyValue>)>,
        failed: Vec<usize>,
    },
}

/// Retry and timeout settings. Every loop in this crate is bounded by these.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Deadline for one request (one attempt).
    pub request_timeout: Duration,
    /// Deadline for establishing a TCP/TLS connection to a member.
    pub connect_timeout: Duration,
    /// A watch gives up (yields [`KvError::WatchGaveUp`] and ends) after this many consecutive
    /// failed reconnects; a successful reconnect resets the count.
    pub watch_max_failures: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            // With a 2 s cap this is about two minutes without etcd before the watch gives up.
            watch_max_failures: 60,
        }
    }
}

impl RetryPolicy {
    pub(crate) fn next_backoff(&self, current: Duration) -> Duration {
        (current * 2).min(self.max_backoff)
    }
}

/// Etcd's default `--max-txn-ops`: the most writes (or compares) one transaction may carry.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Page size of prefix listings; pages are read at one fixed revision so the list is consistent.
const LIST_PAGE: i64 = 500;

/// Largest response we accept (a full listing page of big resources).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A cheap-to-clone etcd v3 client with Calico-style semantics.
#[derive(Clone)]
pub struct EtcdClient {
    client: Client,
    kv: KvClient,
    retry: RetryPolicy,
    max_txn_ops: usize,
    endpoints: String,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.endpoints)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Failure of one attempt, before it is decided whether to retry.
enum AttemptError {
    Etcd(etcd_client::Error),
    Timeout,
}

fn is_retryable(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    use grpc_code::*;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(status) => match status.code() as i32 {
            UNAVAILABLE | DEADLINE_EXCEEDED | ABORTED | RESOURCE_EXHAUSTED => true,
            // etcd reports a few transient server states as Unknown with a message.
            UNKNOWN => {
                let m = status.message();
                m.contains("leader changed")
                    || m.contains("no leader")
                    || m.contains("timed out")
                    || m.contains("transport")
                    || m.contains("connection")
            }
            _ => false,
        },
        _ => false,
    }
}

/// gRPC status codes (as numbers, so we need not depend on tonic directly).
mod grpc_code {
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const RESOURCE_EXHAUSTED: i32 = 8;
    pub(super) const ABORTED: i32 = 10;
    pub(super) const UNAVAILABLE: i32 = 14;
}

/// etcd's "required revision has been compacted" (gRPC OutOfRange).
fn is_compacted_error(e: &KvError) -> bool {
    const OUT_OF_RANGE: i32 = 11;
    matches!(e, KvError::Etcd { source, .. }
        if matches!(source.as_ref(), etcd_client::Error::GRpcStatus(s)
            if s.code() as i32 == OUT_OF_RANGE))
}

fn convert_kv(op: Op, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = std::str::from_utf8(kv.key()).map_err(|_| KvError::NonUtf8Key {
        op,
        key: String::from_utf8_lossy(kv.key()).into_owned(),
    })?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map(|h| h.revision()).unwrap_or(0)
}

fn read_file(field: &'static str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| KvError::ReadFile {
        field,
        path: path.display().to_string(),
        source,
    })
}

/// Connect options (auth, TLS, timeouts) for a configuration, validated.
fn connect_options(config: &EtcdConfig, retry: &RetryPolicy) -> Result<ConnectOptions> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(retry.connect_timeout)
        // HTTP/2 pings detect a member that vanished without closing the connection.
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    match (&config.username, &config.password) {
        (Some(user), Some(password)) if !user.is_empty() => {
            opts = opts
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        (Some(user), None) if !user.is_empty() => {
            return Err(KvError::Config {
                field: "etcdPassword",
                reason: format!("username {user:?} is set but no password"),
            });
        }
        (None, Some(_)) => {
            return Err(KvError::Config {
                field: "etcdUsername",
                reason: "a password is set but no username".into(),
            });
        }
        _ => {}
    }
    let tls_wanted = config.endpoints.iter().any(|e| e.starts_with("https://"));
    let tls_files =
        config.ca_cert_file.is_some() || config.cert_file.is_some() || config.key_file.is_some();
    if tls_wanted {
        if config.endpoints.iter().any(|e| !e.starts_with("https://")) {
            return Err(KvError::Config {
                field: "etcdEndpoints",
                reason: "mixes https:// and non-https endpoints".into(),
            });
        }
        let mut tls = TlsOptions::new();
        match &config.ca_cert_file {
            Some(ca) => {
                tls = tls.ca_certificate(Certificate::from_pem(read_file("etcdCACertFile", ca)?))
            }
            None => {
                return Err(KvError::Config {
                    field: "etcdCACertFile",
                    reason:
                        "https endpoints need a CA certificate file (system roots are not used)"
                            .into(),
                });
            }
        }
        match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read_file("etcdCertFile", cert)?,
                    read_file("etcdKeyFile", key)?,
                ));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(KvError::Config {
                    field: "etcdKeyFile",
                    reason: "etcdCertFile is set but etcdKeyFile is not".into(),
                });
            }
            (None, Some(_)) => {
                return Err(KvError::Config {
                    field: "etcdCertFile",
                    reason: "etcdKeyFile is set but etcdCertFile is not".into(),
                });
            }
        }
        opts = opts.with_tls(tls);
    } else if tls_files {
        return Err(KvError::Config {
            field: "etcdEndpoints",
            reason: "TLS certificate files are set but the endpoints are not https://".into(),
        });
    }
    Ok(opts)
}

impl EtcdClient {
    /// Connects with the default [`RetryPolicy`].
    pub async fn connect(config: &EtcdConfig) -> Result<Self> {
        Self::connect_with(config, RetryPolicy::default()).await
    }

    /// Connects to the cluster. Connections are made lazily per member and re-made after
    /// failures; with a username the initial authentication is retried per `retry`.
    pub async fn connect_with(config: &EtcdConfig, retry: RetryPolicy) -> Result<Self> {
        let endpoints = config.endpoints.join(",");
        if config.endpoints.is_empty() {
            return Err(KvError::Config {
                field: "etcdEndpoints",
                reason: "no endpoints".into(),
            });
        }
        let opts = connect_options(config, &retry)?;
        let mut backoff = retry.initial_backoff;
        let mut attempt = 0;
        let client = loop {
            attempt += 1;
            let res = tokio::time::timeout(
                retry.request_timeout,
                Client::connect(&config.endpoints, Some(opts.clone())),
            )
            .await;
            let err = match res {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) if is_retryable(&e) && attempt < retry.attempts => AttemptError::Etcd(e),
                Ok(Err(source)) => {
                    return Err(KvError::Etcd {
                        op: Op::Connect,
                        key: endpoints,
                        attempts: attempt,
                        source: Box::new(source),
                    });
                }
                Err(_) if attempt < retry.attempts => AttemptError::Timeout,
                Err(_) => {
                    return Err(KvError::Timeout {
                        op: Op::Connect,
                        key: endpoints,
                        timeout: retry.request_timeout,
                        attempts: attempt,
                    });
                }
            };
            if let AttemptError::Etcd(e) = &err {
                warn!(%endpoints, attempt, error = %e, "etcd connect failed, retrying");
            }
            tokio::time::sleep(backoff).await;
            backoff = retry.next_backoff(backoff);
        };
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(EtcdClient {
            client,
            kv,
            retry,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            endpoints,
        })
    }

    /// Tells the client the server's `--max-txn-ops` if it is not etcd's default of 128.
    pub fn with_max_txn_ops(mut self, max: usize) -> Self {
        self.max_txn_ops = max;
        self
    }

    pub fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The underlying etcd-client, for administrative calls this layer does not wrap.
    pub fn raw(&self) -> &Client {
        &self.client
    }

    /// Runs `attempt` until it succeeds, fails with a non-retryable error, or runs out of
    /// attempts. `attempt` receives `true` when an earlier attempt failed in a way that may
    /// have been applied by the server (so the caller can recognise its own earlier write).
    async fn retrying<T, F, Fut>(&self, op: Op, key: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = Result<Result<T>, etcd_client::Error>>,
    {
        let mut backoff = self.retry.initial_backoff;
        let mut maybe_applied = false;
        let mut n = 0;
        loop {
            n += 1;
            let err = match tokio::time::timeout(self.retry.request_timeout, attempt(maybe_applied))
                .await
            {
                Ok(Ok(result)) => return result,
                Ok(Err(e)) => AttemptError::Etcd(e),
                Err(_) => AttemptError::Timeout,
            };
            let retry = match &err {
                AttemptError::Etcd(e) => is_retryable(e),
                AttemptError::Timeout => true,
            };
            if !retry || n >= self.retry.attempts {
                return Err(match err {
                    AttemptError::Etcd(source) => KvError::Etcd {
                        op,
                        key: key.to_owned(),
                        attempts: n,
                        source: Box::new(source),
                    },
                    AttemptError::Timeout => KvError::Timeout {
                        op,
                        key: key.to_owned(),
                        timeout: self.retry.request_timeout,
                        attempts: n,
                    },
                });
            }
            match &err {
                AttemptError::Etcd(e) => {
                    debug!(%op, key, attempt = n, error = %e, "etcd request failed, retrying")
                }
                AttemptError::Timeout => {
                    debug!(%op, key, attempt = n, "etcd request timed out, retrying")
                }
            }
            maybe_applied = true;
            tokio::time::sleep(backoff).await;
            backoff = self.retry.next_backoff(backoff);
        }
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.retrying(Op::Get, key, |_| {
            let mut kv = self.kv.clone();
            let key = key.to_owned();
            async move {
                let resp = kv.get(key.as_str(), None).await?;
                Ok(resp
                    .kvs()
                    .first()
                    .map(|kv| convert_kv(Op::Get, kv))
                    .transpose())
            }
        })
        .await
    }

    /// Lists every key under `prefix` at one consistent revision, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Listing> {
        // A multi-page list reads every page at the first page's revision; if that revision is
        // compacted meanwhile, start again at the newest (bounded).
        let mut restarts = 0;
        loop {
            match self.list_once(prefix).await {
                Err(e) if is_compacted_error(&e) && restarts < 3 => {
                    restarts += 1;
                    debug!(
                        prefix,
                        restarts, "list revision compacted while paging, restarting"
                    );
                }
                other => return other,
            }
        }
    }

    async fn list_once(&self, prefix: &str) -> Result<Listing> {
        let end = prefix_end(prefix.as_bytes());
        let mut kvs = Vec::new();
        let mut revision = 0;
        let mut from: Vec<u8> = prefix.as_bytes().to_vec();
        // Bounded: each page advances `from` past the last key returned.
        loop {
            let page_from = from.clone();
            let page_end = end.clone();
            let (page, more, rev) = self
                .retrying(Op::List, prefix, |_| {
                    let mut kv = self.kv.clone();
                    let from = page_from.clone();
                    let end = page_end.clone();
                    async move {
                        let mut opts = GetOptions::new().with_range(end).with_limit(LIST_PAGE);
                        if revision > 0 {
                            opts = opts.with_revision(revision);
                        }
                        let resp = kv.get(from, Some(opts)).await?;
                        let page: Result<Vec<_>> = resp
                            .kvs()
                            .iter()
                            .map(|kv| convert_kv(Op::List, kv))
                            .collect();
                        Ok(page.map(|p| (p, resp.more(), header_revision(resp.header()))))
                    }
                })
                .await?;
            if revision == 0 {
                revision = rev;
            }
            let last = page.last().map(|kv| kv.key.clone());
            kvs.extend(page);
            match (more, last) {
                (true, Some(last)) => {
                    from = last.into_bytes();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing { kvs, revision })
    }

    /// Creates `key`; fails with [`KvError::AlreadyExists`] if it exists. Returns the new
    /// mod revision.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        self.retrying(Op::Create, key, |maybe_applied| {
            let mut kv = self.kv.clone();
            let key = key.to_owned();
            let value = value.clone();
            async move {
                let txn = Txn::new()
                    .when([etcd_client::Compare::create_revision(
                        key.as_str(),
                        etcd_client::CompareOp::Equal,
                        0,
                    )])
                    .and_then([TxnOp::put(key.as_str(), value.clone(), None)])
                    .or_else([TxnOp::get(key.as_str(), None)]);
                let resp = kv.txn(txn).await?;
                let revision = header_revision(resp.header());
                if resp.succeeded() {
                    return Ok(Ok(revision));
                }
                let current = first_get(Op::Create, &resp);
                Ok(current.and_then(|current| match current {
                    Some(cur) if maybe_applied && cur.value == value => {
                        debug!(key, "create was applied by an earlier attempt");
                        Ok(cur.mod_revision)
                    }
                    Some(cur) => Err(KvError::AlreadyExists {
                        op: Op::Create,
                        key,
                        mod_revision: cur.mod_revision,
                    }),
                    // Deleted between compare and get: impossible inside one txn; report as a
                    // conflict rather than pretend success.
                    None => Err(KvError::Conflict {
                        op: Op::Create,
                        key,
                        expected: 0,
                        actual: 0,
                    }),
                }))
            }
        })
        .await
    }

    /// Replaces `key` only if its mod revision is `expected_mod_revision`. Returns the new
    /// mod revision. A missing key is [`KvError::NotFound`]; another revision is
    /// [`KvError::Conflict`].
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: i64,
    ) -> Result<i64> {
        self.retrying(Op::Update, key, |maybe_applied| {
            let mut kv = self.kv.clone();
            let key = key.to_owned();
            let value = value.clone();
            async move {
                let txn = Txn::new()
                    .when([etcd_client::Compare::mod_revision(
                        key.as_str(),
                        etcd_client::CompareOp::Equal,
                        expected_mod_revision,
                    )])
                    .and_then([TxnOp::put(key.as_str(), value.clone(), None)])
                    .or_else([TxnOp::get(key.as_str(), None)]);
                let resp = kv.txn(txn).await?;
                if resp.succeeded() {
                    return Ok(Ok(header_revision(resp.header())));
                }
                Ok(
                    first_get(Op::Update, &resp).and_then(|current| match current {
                        Some(cur) if maybe_applied && cur.value == value => Ok(cur.mod_revision),
                        Some(cur) => Err(KvError::Conflict {
                            op: Op::Update,
                            key,
                            expected: expected_mod_revision,
                            actual: cur.mod_revision,
                        }),
                        None => Err(KvError::NotFound {
                            op: Op::Update,
                            key,
                        }),
                    }),
                )
            }
        })
        .await
    }

    /// Writes `key` unconditionally (create or replace). Returns the new mod revision.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        self.retrying(Op::Update, key, |_| {
            let mut kv = self.kv.clone();
            let key = key.to_owned();
            let value = value.clone();
            async move {
                let resp = kv.put(key.as_str(), value, None).await?;
                Ok(Ok(header_revision(resp.header())))
            }
        })
        .await
    }

    /// Deletes `key`, only if its mod revision is `expected_mod_revision` when given. Returns
    /// the deleted key-value. A missing key is [`KvError::NotFound`].
    pub async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<KeyValue> {
        let deleted = self
            .retrying(Op::Delete, key, |maybe_applied| {
                let mut kv = self.kv.clone();
                let key = key.to_owned();
                async move {
                    let compare = match expected_mod_revision {
                        Some(rev) => etcd_client::Compare::mod_revision(
                            key.as_str(),
                            etcd_client::CompareOp::Equal,
                            rev,
                        ),
                        None => etcd_client::Compare::create_revision(
                            key.as_str(),
                            etcd_client::CompareOp::Greater,
                            0,
                        ),
                    };
                    let txn = Txn::new()
                        .when([compare])
                        .and_then([TxnOp::delete(
                            key.as_str(),
                            Some(DeleteOptions::new().with_prev_key()),
                        )])
                        .or_else([TxnOp::get(key.as_str(), None)]);
                    let resp = kv.txn(txn).await?;
                    if resp.succeeded() {
                        let prev = resp.op_responses().into_iter().find_map(|r| match r {
                            TxnOpResponse::Delete(d) => d.prev_kvs().first().cloned(),
                            _ => None,
                        });
                        return Ok(match prev {
                            Some(prev) => convert_kv(Op::Delete, &prev).map(Some),
                            None => Ok(None),
                        });
                    }
                    Ok(
                        first_get(Op::Delete, &resp).and_then(|current| match current {
                            Some(cur) => Err(KvError::Conflict {
                                op: Op::Delete,
                                key,
                                expected: expected_mod_revision.unwrap_or(0),
                                actual: cur.mod_revision,
                            }),
                            None if maybe_applied => Ok(None),
                            None => Err(KvError::NotFound {
                                op: Op::Delete,
                                key,
                            }),
                        }),
                    )
                }
            })
            .await?;
        // `None` only when an earlier ambiguous attempt deleted it: we no longer know the value.
        Ok(deleted.unwrap_or(KeyValue {
            key: key.to_owned(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: expected_mod_revision.unwrap_or(0),
        }))
    }

    /// Atomic multi-key compare-and-swap: if every comparison holds, applies every write in one
    /// etcd revision; otherwise writes nothing and reports the current state of the compared
    /// keys. At most `max_txn_ops` compares and writes each.
    pub async fn txn(&self, compares: Vec<Compare>, writes: Vec<Write>) -> Result<TxnOutcome> {
        let label = writes
            .first()
            .map(|w| w.key())
            .or_else(|| compares.first().map(|c| c.key()))
            .unwrap_or("")
            .to_owned();
        for n in [compares.len(), writes.len()] {
            if n > self.max_txn_ops {
                return Err(KvError::TooManyOps {
                    op: Op::Txn,
                    key: label,
                    ops: n,
                    limit: self.max_txn_ops,
                });
            }
        }
        let etcd_compares: Vec<_> = compares.iter().map(Compare::to_etcd).collect();
        let etcd_writes: Vec<_> = writes.iter().map(Write::to_etcd).collect();
        let gets: Vec<_> = compares.iter().map(|c| TxnOp::get(c.key(), None)).collect();
        self.retrying(Op::Txn, &label, |maybe_applied| {
            let mut kv = self.kv.clone();
            let txn = Txn::new()
                .when(etcd_compares.clone())
                .and_then(etcd_writes.clone())
                .or_else(gets.clone());
            let compares = &compares;
            let writes = &writes;
            async move {
                let resp = kv.txn(txn).await?;
                let revision = header_revision(resp.header());
                if resp.succeeded() {
                    return Ok(Ok(TxnOutcome::Committed { revision }));
                }
                let mut current = Vec::with_capacity(compares.len());
                for (c, r) in compares.iter().zip(resp.op_responses()) {
                    let kv = match r {
                        TxnOpResponse::Get(g) => match g.kvs().first() {
                            Some(kv) => match convert_kv(Op::Txn, kv) {
                                Ok(kv) => Some(kv),
                                Err(e) => return Ok(Err(e)),
                            },
                            None => None,
                        },
                        _ => None,
                    };
                    current.push((c.key().to_owned(), kv));
                }
                if maybe_applied && !writes.is_empty() {
                    // Our earlier attempt may have committed: recognise it by the written keys
                    // holding exactly what we wrote (only checkable for compared keys).
                    let all_applied = writes.iter().all(|w| {
                        current
                            .iter()
                            .find(|(k, _)| k == w.key())
                            .is_some_and(|(_, cur)| w.is_applied_in(cur.as_ref()))
                    });
                    if all_applied {
                        let revision = current
                            .iter()
                            .filter_map(|(_, kv)| kv.as_ref().map(|kv| kv.mod_revision))
                            .max()
                            .unwrap_or(revision);
                        return Ok(Ok(TxnOutcome::Committed { revision }));
                    }
                }
                let failed = compares
                    .iter()
                    .zip(&current)
                    .enumerate()
                    .filter(|(_, (c, (_, cur)))| !c.holds_for(cur.as_ref()))
                    .map(|(i, _)| i)
                    .collect();
                Ok(Ok(TxnOutcome::Failed {
                    revision,
                    current,
                    failed,
                }))
            }
        })
        .await
    }

    /// Reads several keys at one revision (one round trip). At most `max_txn_ops` keys.
    pub async fn get_many(&self, keys: &[String]) -> Result<(Vec<Option<KeyValue>>, i64)> {
        let label = keys.first().cloned().unwrap_or_default();
        if keys.len() > self.max_txn_ops {
            return Err(KvError::TooManyOps {
                op: Op::Get,
                key: label,
                ops: keys.len(),
                limit: self.max_txn_ops,
            });
        }
        let gets: Vec<_> = keys.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
        self.retrying(Op::Get, &label, |_| {
            let mut kv = self.kv.clone();
            let txn = Txn::new().and_then(gets.clone());
            async move {
                let resp = kv.txn(txn).await?;
                let revision = header_revision(resp.header());
                let mut out = Vec::with_capacity(keys.len());
                for r in resp.op_responses() {
                    let kv = match r {
                        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                        _ => None,
                    };
                    match kv.map(|kv| convert_kv(Op::Get, &kv)).transpose() {
                        Ok(kv) => out.push(kv),
                        Err(e) => return Ok(Err(e)),
                    }
                }
                Ok(Ok((out, revision)))
            }
        })
        .await
    }

    /// Current store revision (of the member answering).
    pub async fn current_revision(&self) -> Result<i64> {
        self.retrying(Op::Get, "", |_| {
            let mut kv = self.kv.clone();
            async move {
                let resp = kv
                    .get(vec![0u8], Some(GetOptions::new().with_count_only()))
                    .await?;
                Ok(Ok(header_revision(resp.header())))
            }
        })
        .await
    }

    /// Compacts the history up to `revision` (events before it can no longer be watched).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        self.retrying(Op::Compact, "", |_| {
            let mut kv = self.kv.clone();
            async move {
                kv.compact(revision, None).await?;
                Ok(Ok(()))
            }
        })
        .await
    }
}

/// The kv read by the single `get` in a txn's failure branch.
fn first_get(op: Op, resp: &etcd_client::TxnResponse) -> Result<Option<KeyValue>> {
    for r in resp.op_responses() {
        if let TxnOpResponse::Get(g) = r {
            return g.kvs().first().map(|kv| convert_kv(op, kv)).transpose();
        }
    }
    Ok(None)
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Empty prefix or all 0xff: the whole key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/calico/"), b"/calico0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn compares_evaluate_like_etcd() {
        let kv = KeyValue {
            key: "k".into(),
            value: b"v".to_vec(),
            create_revision: 3,
            mod_revision: 5,
        };
        assert!(Compare::Absent { key: "k".into() }.holds_for(None));
        assert!(!Compare::Absent { key: "k".into() }.holds_for(Some(&kv)));
        let rev = |r| Compare::ModRevision {
            key: "k".into(),
            revision: r,
        };
        assert!(rev(5).holds_for(Some(&kv)));
        assert!(!rev(4).holds_for(Some(&kv)));
        assert!(!rev(5).holds_for(None));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every key that starts with the prefix sorts below the range end, and the range end
        /// itself does not start with the prefix (so a prefix list is exactly the prefix).
        #[test]
        fn prefix_end_bounds_exactly_the_prefix(
            prefix in proptest::collection::vec(any::<u8>(), 1..12),
            suffix in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let end = prefix_end(&prefix);
            let mut key = prefix.clone();
            key.extend(&suffix);
            if prefix.iter().all(|b| *b == 0xff) {
                prop_assert_eq!(end, vec![0]);
            } else {
                prop_assert!(key < end);
                prop_assert!(!end.starts_with(&prefix));
                prop_assert!(prefix < end);
            }
        }
    }
}
