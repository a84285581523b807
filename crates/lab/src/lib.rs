//! Lab harness: network namespaces as hosts, real processes, guaranteed teardown.
//!
//! - [`Lab`] / [`Host`]: hosts as network namespaces on one LAN bridge, with per-run names,
//!   commands and daemons run inside them, Rust code run inside them ([`Host::run`]), and
//!   teardown on drop, on panic, on Ctrl-C/SIGTERM, and by [`sweep`] after a SIGKILL.
//! - [`etcd`]: a real etcd as a child process (loopback or inside a lab host), single member or
//!   a cluster, plain or TLS.
//! - [`process`]: children that die with their owner (`PR_SET_PDEATHSIG`) and are killed on drop.
//! - [`dockerd`]: a throw-away Docker daemon per lab host, isolated and stopped for sure, and
//!   the FROM-scratch test images built into it.
//! - [`seed`]: the seed's lab with stable names (`calico-lab up/down/status/shell`).
//! - [`cluster`]: a real Kubernetes (API server, controller manager, scheduler, nodes with
//!   containerd and kubelet) in lab hosts.
//! - [`netns`]: run a closure or a future inside any network namespace.
//! - [`TcpServers`], [`Host::tcp_probe`]: one-byte TCP servers and probes for policy tests.
//! - [`iperf`]: TCP throughput between two hosts (iperf3), for the benchmarks.

pub mod cluster;
pub mod dockerd;
pub mod etcd;
pub mod iperf;
pub mod lab;
pub mod metrics;
pub mod netns;
pub mod process;
pub mod seed;
mod signals;
pub mod state;
mod tcp;

pub use dockerd::{Dockerd, DockerdConfig};
pub use etcd::{Etcd, EtcdCluster, EtcdError, EtcdOptions, TlsFiles};
pub use lab::{Host, Lab, LabError, teardown};
pub use process::{ProcessError, ProcessGuard, SpawnOptions};
pub use state::{RunRecord, sweep};
pub use tcp::{EchoServer, TcpServers};
