//! calico-node: the per-node agent. It turns a host into a Calico router: registers the Node,
//! creates default pools, and keeps routes and BGP sessions equal to what the datastore says.

pub mod agent;
pub mod autodetect;
pub mod bgp;
pub mod bgpfilter;
pub mod config;
pub mod felix_config;
pub mod health;
pub mod libnetwork;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod mtu;
pub mod nat;
pub mod node_status;
pub mod peering;
pub mod policy;
pub mod report;
pub mod routes;
pub mod service_routes;
pub mod snapshot;
pub mod startup;
pub mod status;
pub mod teardown;
pub mod tunnel;
