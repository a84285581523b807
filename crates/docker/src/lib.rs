//! Docker integration for calico-rs.
//!
//! - [`server::serve`]: the libnetwork remote network driver `calico` and IPAM driver
//!   `calico-ipam` on unix sockets in dockerd's plugin directory (run by the node agent, in the
//!   node's network namespace).
//! - [`driver`]: what each call does (pure request checks, IPAM, veth/route plumbing,
//!   WorkloadEndpoint and Profile resources).
//! - [`syncer::run_network_syncer`]: shares Calico networks between hosts through the datastore
//!   and creates/removes them in the local dockerd, driven by an etcd watch and dockerd's events.
//! - [`engine`]: a minimal Docker Engine API client on the daemon's unix socket.
//!
//! How the node agent runs it (inside the node's network namespace):
//! ```no_run
//! # async fn agent(kv: calico_datastore::EtcdClient) {
//! use std::{path::Path, sync::Arc, time::Duration};
//! let docker_sock = Path::new("/var/run/docker.sock");
//! let driver = Arc::new(calico_docker::Driver::with_etcd("node1", kv.clone(), docker_sock));
//! let drivers = calico_docker::serve(driver, Path::new("/run/docker/plugins"), std::future::pending());
//! let syncer = calico_docker::run_network_syncer(
//!     kv,
//!     calico_docker::DockerEngine::new(docker_sock),
//!     calico_docker::SyncerConfig { hostname: "node1".into(), resync_interval: Duration::from_secs(30) },
//!     std::future::pending(),
//! );
//! let (served, ()) = tokio::join!(drivers, syncer);
//! served.expect("driver sockets");
//! # }
//! ```
//!
//! Addresses come from `calico-ipam` ([`ipam::CalicoIpam`]), the host side is plumbed with
//! `calico-dataplane` ([`plumbing::DataplanePlumber`]).

pub mod driver;
pub mod engine;
pub mod ipam;
pub mod names;
pub mod naming;
pub mod plumbing;
pub mod protocol;
pub mod server;
pub mod syncer;

pub use driver::{Driver, DriverConfig, DriverError};
pub use engine::DockerEngine;
pub use ipam::{AddressAllocator, CalicoIpam};
pub use plumbing::{DataplanePlumber, EndpointPlumber};
pub use server::{IPAM_PLUGIN, NETWORK_PLUGIN, serve};
pub use syncer::{SyncerConfig, run_network_syncer};
