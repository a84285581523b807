//! The host side of an endpoint: calico-dataplane's workload recipe
//! ([`calico_dataplane::workload`]), the one the CNI plugin uses too: the veth pair, Calico's
//! per-interface sysctls and the /32 (/128) route to the container.
//!
//! Docker differs from a pod in one place: the container end is created in the namespace of
//! the calling thread (the node's, as the driver server runs inside it) under a temporary
//! name, and dockerd moves it into the container, renames it, brings it up and configures it
//! from the driver's answer (addresses, MAC ee:ee:ee:ee:ee:ee, routes via 169.254.1.1). So the
//! host end keeps the kernel's MAC, and the workload side of the recipe is dockerd's.

use std::net::IpAddr;

use calico_dataplane::{Netlink, WorkloadError, WorkloadVeth};

#[derive(Debug, thiserror::Error)]
pub enum PlumbingError {
    #[error("netlink: {0}")]
    Connect(#[from] calico_dataplane::ConnectError),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    Mtu(#[from] calico_dataplane::mtu::MtuFileError),
}

pub trait EndpointPlumber: Send + Sync + 'static {
    /// Creates the veth pair, applies the host-side sysctls, brings the host side up and routes
    /// `addresses` to it. On error nothing of it is left behind.
    fn create(
        &self,
        host_if: &str,
        temp_if: &str,
        addresses: &[IpAddr],
    ) -> impl Future<Output = Result<(), PlumbingError>> + Send;
    /// Removes the host side (the kernel removes the peer and the routes with it). Removing a
    /// missing interface is not an error.
    fn remove(&self, host_if: &str) -> impl Future<Output = Result<(), PlumbingError>> + Send;
}

/// The endpoint plumbing on `calico-dataplane`. The netlink connection is opened on first use,
/// on the runtime and in the namespace of that first call.
#[derive(Debug, Default)]
pub struct DataplanePlumber {
    nl: tokio::sync::OnceCell<Netlink>,
    /// calico-node's MTU file (see [`calico_dataplane::mtu`]); `None`: the kernel's default.
    mtu_file: Option<std::path::PathBuf>,
}

/// The namespace of the calling thread, for a veth whose peer stays here until dockerd moves it.
const HERE: &str = "/proc/thread-self/ns/net";

impl DataplanePlumber {
    pub fn new() -> Self {
        Self::default()
    }

    /// Veths get the MTU in `path` (written by calico-node), read at each creation.
    pub fn with_mtu_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.mtu_file = Some(path.into());
        self
    }

    async fn nl(&self) -> Result<&Netlink, PlumbingError> {
        Ok(self
            .nl
            .get_or_try_init(|| async { Netlink::connect() })
            .await?)
    }
}

impl EndpointPlumber for DataplanePlumber {
    async fn create(
        &self,
        host_if: &str,
        temp_if: &str,
        addresses: &[IpAddr],
    ) -> Result<(), PlumbingError> {
        let nl = self.nl().await?;
        let mtu = match &self.mtu_file {
            Some(path) => calico_dataplane::mtu::read_mtu_file(path)?,
            None => None,
        };
        let veth = WorkloadVeth {
            host_mac: None,
            mtu,
            ..WorkloadVeth::new(host_if, temp_if, HERE)
        };
        veth.create(nl).await?;
        if let Err(e) = veth.plumb_host(nl, addresses).await {
            if let Err(cleanup) = WorkloadVeth::remove(nl, host_if).await {
                tracing::error!(interface = host_if, error = %cleanup, "cleanup after failed endpoint setup failed");
            }
            return Err(e.into());
        }
        Ok(())
    }

    async fn remove(&self, host_if: &str) -> Result<(), PlumbingError> {
        WorkloadVeth::remove(self.nl().await?, host_if).await?;
        Ok(())
    }
}
