//! Connecting to etcd from a short-lived plugin process: bounded retries, short timeouts (the
//! runtime times the whole call out), and the node name the plugin acts for.

use std::path::Path;
use std::time::Duration;

use calico_datastore::{EtcdClient, EtcdConfig, KvError, RetryPolicy};

use crate::netconf::{NetConf, NetconfError};

/// Where calico-node writes the name it runs as.
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/calico/nodename";

#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error(transparent)]
    Netconf(#[from] NetconfError),
    #[error("etcd {endpoints}: cannot be reached")]
    Unreachable {
        endpoints: String,
        #[source]
        source: KvError,
    },
    #[error(
        "nodename_file {path}: {source} (is calico-node running with /var/lib/calico mounted?)"
    )]
    NodenameFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot determine the node name: no nodename, nodename_file or hostname")]
    NoNodename,
}

/// A plugin call's retry budget: a few quick attempts, then an error the runtime will retry.
pub fn plugin_retry_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        ..RetryPolicy::default()
    }
}

pub fn etcd_config(conf: &NetConf) -> Result<EtcdConfig, NetconfError> {
    let mut cfg = EtcdConfig::new(conf.endpoints()?);
    cfg.ca_cert_file = conf.etcd_ca_cert_file.clone();
    cfg.cert_file = conf.etcd_cert_file.clone();
    cfg.key_file = conf.etcd_key_file.clone();
    Ok(cfg)
}

pub async fn connect(conf: &NetConf) -> Result<EtcdClient, DatastoreError> {
    let cfg = etcd_config(conf)?;
    EtcdClient::connect_with(&cfg, plugin_retry_policy())
        .await
        .map_err(|source| DatastoreError::Unreachable {
            endpoints: cfg.endpoints.join(","),
            source,
        })
}

/// Connects and proves the cluster answers (the client connects lazily).
pub async fn connect_checked(conf: &NetConf) -> Result<EtcdClient, DatastoreError> {
    let kv = connect(conf).await?;
    kv.current_revision()
        .await
        .map_err(|source| DatastoreError::Unreachable {
            endpoints: conf.etcd_endpoints.clone().unwrap_or_default(),
            source,
        })?;
    Ok(kv)
}

/// Calico's order: `nodename`, then `nodename_file` (an error when missing unless
/// `nodename_file_optional`), then the default nodename file when present, then the hostname.
pub fn nodename(conf: &NetConf) -> Result<String, DatastoreError> {
    if let Some(n) = conf.nodename.as_deref().filter(|n| !n.is_empty()) {
        return Ok(n.to_owned());
    }
    let read = |p: &Path| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    if let Some(path) = &conf.nodename_file {
        match read(path) {
            Ok(n) if !n.is_empty() => return Ok(n),
            Ok(_) => {}
            Err(_) if conf.nodename_file_optional => {}
            Err(source) => {
                return Err(DatastoreError::NodenameFile {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
    } else if let Ok(n) = read(Path::new(DEFAULT_NODENAME_FILE))
        && !n.is_empty()
    {
        return Ok(n);
    }
    read(Path::new("/proc/sys/kernel/hostname"))
        .ok()
        .filter(|h| !h.is_empty())
        .ok_or(DatastoreError::NoNodename)
}
