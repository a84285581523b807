//! Calico v3 resources in etcd: the datastore trait (dynamic, on JSON documents), its etcd
//! implementation, and a typed front end for any `T: CalicoResource`.
//!
//! Semantics (matching libcalico-go and calicoctl; the metadata rule is in [`meta`]):
//! - Key: `/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>`; value: the
//!   resource as JSON (`apiVersion`, `kind`, `metadata`, `spec`), without `resourceVersion`.
//! - `metadata.resourceVersion` is the key's etcd mod revision, as a decimal string.
//! - create: fails with [`ResourceError::AlreadyExists`]; sets `uid` and `creationTimestamp`;
//!   a `resourceVersion` on create is refused (libcalico-go does the same).
//! - update: with `resourceVersion`, a compare-and-swap on it (stale →
//!   [`ResourceError::Conflict`]); without one, an unconditional replace done the way calicoctl
//!   does it: read the current revision and compare-and-swap on that, retrying a bounded number
//!   of times on conflicts. Either way the document is the whole object: labels and
//!   annotations come from it (absent = removed); `uid`/`creationTimestamp` are kept from the
//!   stored object.
//! - apply: create, or update if it exists (calicoctl `apply`).
//! - delete: optionally only at a given `resourceVersion`.
//! - batches ([`ResourceStore::write_batch`]): the same rules for many documents in one
//!   transaction; calicoctl writes only this way.

mod batch;
mod etcd;
pub mod meta;
mod typed;

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::Value;

pub use batch::{Atomicity, BatchItem, BatchOp, BatchOutcome, MAX_TXN_BYTES, txn_chunks};
pub use etcd::EtcdResourceStore;
pub use typed::{Datastore, decode_doc, decode_kv};

use crate::kv::KvError;

/// Which kind a dynamic call is about: enough to build keys and messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KindRef {
    /// `kind` as in YAML, e.g. `IPPool`.
    pub kind: String,
    /// Lower-case plural used in keys, e.g. `ippools`.
    pub plural: String,
    pub namespaced: bool,
}

impl KindRef {
    pub fn new(kind: impl Into<String>, plural: impl Into<String>, namespaced: bool) -> Self {
        KindRef {
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        }
    }

    /// The kind of a typed resource.
    pub fn of<T: calico_api::CalicoResource>() -> Self {
        KindRef::new(T::KIND, T::PLURAL, T::NAMESPACED)
    }
}

/// Namespace (for namespaced kinds) and name of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectId {
    pub fn global(name: impl Into<String>) -> Self {
        ObjectId {
            namespace: None,
            name: name.into(),
        }
    }

    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectId {
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }
}

/// `name` or `namespace/name`, as calicoctl prints identities inside `Kind(...)`.
impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Errors of the resource layer; each names the kind and, where there is one, the object.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("resource does not exist: {kind}({id})")]
    NotFound { kind: String, id: ObjectId },
    #[error("resource already exists: {kind}({id})")]
    AlreadyExists { kind: String, id: ObjectId },
    #[error(
        "update conflict: {kind}({id}): resource version '{expected}' is out of date (latest: {actual})"
    )]
    Conflict {
        kind: String,
        id: ObjectId,
        expected: String,
        actual: String,
    },
    #[error("{kind}({id}): metadata.resourceVersion {value:?} is not a valid resource version")]
    InvalidResourceVersion {
        kind: String,
        id: ObjectId,
        value: String,
    },
    #[error("{kind}({id}): metadata.resourceVersion must not be set on create")]
    ResourceVersionOnCreate { kind: String, id: ObjectId },
    #[error("{kind}: the document is not a JSON object")]
    NotAnObject { kind: String },
    #[error("expected a {expected} document, found kind {found:?}")]
    WrongKind { expected: String, found: String },
    #[error("{kind}: metadata.name is required")]
    MissingName { kind: String },
    #[error("{kind}({name}): metadata.namespace is required for this namespaced kind")]
    MissingNamespace { kind: String, name: String },
    #[error(
        "{kind}({name}): metadata.namespace {namespace:?} given for a kind that is not namespaced"
    )]
    UnexpectedNamespace {
        kind: String,
        name: String,
        namespace: String,
    },
    #[error("{kind}: {field} {value:?} cannot be used in a datastore key")]
    InvalidKeySegment {
        kind: String,
        field: &'static str,
        value: String,
    },
    #[error("{kind}({id}): cannot encode the resource as JSON")]
    Encode {
        kind: String,
        id: ObjectId,
        #[source]
        source: serde_json::Error,
    },
    #[error("{kind}: stored value at {key} is not a valid {kind}")]
    Decode {
        kind: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{kind}({id}): still conflicting after {attempts} attempts to replace it")]
    TooManyConflicts {
        kind: String,
        id: ObjectId,
        attempts: u32,
    },
    #[error("batch: {kind}({id}) appears more than once")]
    DuplicateInBatch { kind: String, id: ObjectId },
    #[error("batch of {ops} resources exceeds etcd's limit of {limit} operations per transaction")]
    BatchTooLarge { ops: usize, limit: usize },
    #[error("batch of about {bytes} bytes exceeds the {limit}-byte limit for one etcd transaction")]
    BatchTooManyBytes { bytes: usize, limit: usize },
    #[error("batch: {committed} of {total} resources were written before a later chunk failed")]
    PartialBatch {
        committed: usize,
        total: usize,
        #[source]
        source: Box<ResourceError>,
    },
    #[error("{kind}({id}): datastore operation failed")]
    Datastore {
        kind: String,
        id: ObjectId,
        #[source]
        source: Box<KvError>,
    },
    #[error("{kind}: datastore operation on {prefix} failed")]
    DatastorePrefix {
        kind: String,
        prefix: String,
        #[source]
        source: Box<KvError>,
    },
}

impl ResourceError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ResourceError::NotFound { .. })
    }
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ResourceError::AlreadyExists { .. })
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, ResourceError::Conflict { .. })
    }
}

pub type Result<T, E = ResourceError> = std::result::Result<T, E>;

/// What a write did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Updated,
    /// A batch replace or apply found the object already as asked and wrote nothing.
    Unchanged,
    /// A batch delete removed it.
    Deleted,
}

/// A change to resources of one kind, as seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceEvent<T> {
    /// Created (its resourceVersion is its creation revision).
    Added(T),
    Modified(T),
    /// Deleted at `revision`; `previous` is its last state when etcd still had it.
    Deleted {
        id: ObjectId,
        revision: i64,
        previous: Option<T>,
    },
    /// Every object at `revision`: replace your view (sent first by `list_watch`, and after a
    /// compaction made the missed changes unrecoverable). Objects that failed to decode are
    /// reported in `errors` instead of being silently dropped.
    Snapshot {
        revision: i64,
        items: Vec<T>,
        errors: Vec<String>,
    },
}

/// A list and the store revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceList<T> {
    pub items: Vec<T>,
    pub revision: i64,
}

pub type ResourceWatch<T> = BoxStream<'static, Result<ResourceEvent<T>>>;

/// The datastore boundary, on JSON documents of any kind (calicoctl handles kinds
/// dynamically; [`Datastore`] gives typed access on top). One implementation talks to etcd;
/// unit tests may substitute their own.
#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// One object, or `None`.
    async fn get(&self, kind: &KindRef, id: &ObjectId) -> Result<Option<Value>>;
    /// Objects of `kind` in `namespace`, or in every namespace (or cluster-scoped) for `None`,
    /// sorted by namespace then name.
    async fn list(&self, kind: &KindRef, namespace: Option<&str>) -> Result<ResourceList<Value>>;
    async fn create(&self, kind: &KindRef, doc: Value) -> Result<Value>;
    async fn update(&self, kind: &KindRef, doc: Value) -> Result<Value>;
    async fn apply(&self, kind: &KindRef, doc: Value) -> Result<(Value, Applied)>;
    /// Deletes and returns the last stored state. `resource_version` makes it conditional.
    async fn delete(
        &self,
        kind: &KindRef,
        id: &ObjectId,
        resource_version: Option<&str>,
    ) -> Result<Value>;
    /// Changes from `from_revision` on (`<= 0`: from now).
    fn watch(
        &self,
        kind: &KindRef,
        namespace: Option<&str>,
        from_revision: i64,
    ) -> ResourceWatch<Value>;
    /// A snapshot event first, then changes.
    fn list_watch(&self, kind: &KindRef, namespace: Option<&str>) -> ResourceWatch<Value>;
    /// Writes many documents (any kinds, each with its own [`BatchOp`]) with one etcd
    /// transaction per chunk; see [`Atomicity`]. The one batch writer: calicoctl's commands
    /// and [`Datastore::apply_all`] use it.
    async fn write_batch(
        &self,
        items: Vec<BatchItem>,
        atomicity: Atomicity,
    ) -> Result<BatchOutcome>;
}
