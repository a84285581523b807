//! Datastore for calico-rs: etcd v3 in Calico's key layout.
//!
//! - [`kv`]: raw keys and values with compare-and-swap, multi-key transactions and a resumable
//!   watch (what IPAM builds on).
//! - [`config`]: connection settings.

pub mod config;
pub mod kv;

pub use config::EtcdConfig;
pub use kv::{
    Compare, EtcdClient, KeyValue, KvError, KvWatchStream, Listing, RetryPolicy, TxnOutcome,
    WatchEvent, Write,
};
