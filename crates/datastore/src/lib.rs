//! Datastore for calico-rs: etcd v3 in Calico's key layout.
//!
//! - [`kv`]: raw keys and values with compare-and-swap, multi-key transactions and a resumable
//!   watch (what IPAM builds on).
//! - [`resource`]: Calico v3 resources at `/calico/resources/v3/projectcalico.org/...`: the
//!   [`ResourceStore`] trait on JSON documents (for calicoctl's dynamic kinds), its etcd
//!   implementation, and the typed [`Datastore`] for any `T: CalicoResource`.
//! - [`config`]: connection settings.

pub mod config;
pub mod kv;
pub mod resource;

pub use config::{
    CalicoApiConfig, ConfigError, ConfigSource, DEFAULT_CONFIG_PATH, DatastoreType, EtcdConfig,
};
pub use kv::{
    Compare, EtcdClient, KeyValue, KvError, KvWatchStream, Listing, RetryPolicy, TxnOutcome,
    WatchEvent, Write,
};
pub use resource::{
    Applied, Atomicity, BatchItem, BatchOp, BatchOutcome, Datastore, EtcdResourceStore, KindRef,
    MAX_TXN_BYTES, ObjectId, ResourceError, ResourceEvent, ResourceList, ResourceStore,
    ResourceWatch, decode_doc, decode_kv, txn_chunks,
};
