//! Datastore connection settings.

use std::path::PathBuf;

/// How to reach etcd: endpoints, TLS files and credentials, as Calico's configuration names them
/// (`etcdEndpoints`, `etcdCACertFile`, `etcdCertFile`, `etcdKeyFile`, `etcdUsername`,
/// `etcdPassword`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    pub ca_cert_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl EtcdConfig {
    /// Plain (no TLS, no auth) configuration for the given endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}
