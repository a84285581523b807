//! What every calicoctl command shares: where it reads and writes ([`Io`]), how it reaches the
//! datastore ([`Session`]), and how reaching or reading the datastore fails ([`SessionError`]).
//! The command modules import this; nothing here knows any command.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use calico_api::error_chain;
use calico_datastore::{
    CalicoApiConfig, ConfigError, EtcdClient, EtcdResourceStore, ResourceError as DatastoreError,
    ResourceStore,
};

use crate::objects::Objects;
use crate::validate::ResourceModel;

/// Where a command reads and writes, and how it sees the environment.
pub struct Io<'a> {
    pub stdin: &'a mut dyn Read,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// How a command reaches the datastore and checks resources.
pub struct Session {
    pub model: Arc<dyn ResourceModel>,
    /// A datastore to use instead of the one the configuration names.
    pub store: Option<Arc<dyn ResourceStore>>,
    /// Config file read when `-c` is not given (`/etc/calico/calicoctl.cfg`).
    pub default_config_path: String,
}

/// Reaching or reading the datastore failed; `Display` is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("Failed to create Calico API client: {0}")]
    Config(#[from] ConfigError),
    #[error(
        "Failed to create Calico API client: cannot reach the datastore at {endpoints}: {reason}"
    )]
    Connect { endpoints: String, reason: String },
    #[error("{}", error_chain(.0.as_ref()))]
    Datastore(Box<DatastoreError>),
    #[error("IPAM commands need a real etcd datastore")]
    NoEtcd,
}

impl From<DatastoreError> for SessionError {
    fn from(e: DatastoreError) -> Self {
        SessionError::Datastore(Box::new(e))
    }
}

impl Session {
    /// The datastore configuration: `-c`, else the default file, else the environment.
    pub fn api_config(
        &self,
        config_path: Option<&str>,
        io: &Io<'_>,
    ) -> Result<CalicoApiConfig, SessionError> {
        Ok(CalicoApiConfig::load_with(
            config_path.map(Path::new),
            Path::new(&self.default_config_path),
            io.env,
        )?)
    }

    /// The configured etcd as a raw key-value client (IPAM keeps its own key layout).
    pub async fn etcd_client(
        &self,
        config_path: Option<&str>,
        io: &Io<'_>,
    ) -> Result<EtcdClient, SessionError> {
        if self.store.is_some() {
            return Err(SessionError::NoEtcd);
        }
        let cfg = self.api_config(config_path, io)?;
        let etcd = cfg.etcd_config()?;
        EtcdClient::connect(etcd)
            .await
            .map_err(|e| SessionError::Connect {
                endpoints: etcd.endpoints.join(","),
                reason: error_chain(&e),
            })
    }

    /// The resources, in the datastore this session names.
    pub(crate) async fn store(
        &self,
        config_path: Option<&str>,
        io: &Io<'_>,
    ) -> Result<Objects, SessionError> {
        if let Some(s) = &self.store {
            return Ok(Objects::new(s.clone()));
        }
        let kv = self.etcd_client(config_path, io).await?;
        Ok(Objects::new(Arc::new(EtcdResourceStore::new(kv))))
    }
}

impl Default for Session {
    fn default() -> Self {
        Session {
            model: crate::default_model(),
            store: None,
            default_config_path: calico_datastore::DEFAULT_CONFIG_PATH.to_string(),
        }
    }
}
