//! The `calico` and `calico-ipam` CNI plugins (spec 1.1.0; 0.4.0 and 1.0.0 on request).
//!
//! The binaries (`src/bin/calico.rs`, `src/bin/calico-ipam.rs` in the root package) only call
//! [`main`] with which plugin they are. Everything else is here:
//! - [`spec`]: results, errors, versions (pure).
//! - [`netconf`]: the Calico-compatible netconf, strict about unknown and ill-typed fields.
//! - [`env`]: the CNI environment and CNI_ARGS.
//! - [`naming`]: veth names, handles.
//! - [`plugin`]: ADD/DEL/CHECK/STATUS/GC against etcd, IPAM and the kernel.
//! - [`delegate`]: exec'ing a non-Calico IPAM plugin from CNI_PATH.
//! - [`k8s`]: the pod and its namespace from the Kubernetes API (kube's client).
//! - [`kubeconfig`]: `calico kubeconfig`, which writes the plugin's kubeconfig on the node and
//!   rewrites it when the service-account token rotates.
//! - [`pod`]: labels, profiles and Calico's pod/namespace annotations (pure).
//!
//! Pod labels, annotations and service account come from the Kubernetes API when the netconf
//! names one (`kubernetes.kubeconfig` or an API root) and `policy.type` is `k8s`, as Calico's
//! plugin reads them. Without an API the endpoint carries only Calico's own labels and the
//! `kns.<namespace>` profile, and no annotation applies (CNI_ARGS `IP` still does).

pub mod datastore;
pub mod delegate;
pub mod env;
pub mod k8s;
pub mod kubeconfig;
pub mod naming;
pub mod netconf;
pub mod plugin;
pub mod pod;
pub mod spec;

use std::io::{Read, Write};

use calico_ipam::Ipam;

use crate::datastore::DatastoreError;
use crate::env::{CniEnv, Command, EnvError};
use crate::netconf::{NetConf, NetconfError};
use crate::plugin::{Plugin, PluginError, Workload};
use crate::spec::{CniError, CniResult, ErrorCode, IpConfig, VersionInfo};

/// Which binary is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Calico,
    CalicoIpam,
}

/// An error and its sources, `: `-joined, for the one-line `msg` of a CNI error.
pub use calico_api::error_chain;

fn env_error(version: &str, e: &EnvError) -> CniError {
    CniError::new(version, ErrorCode::InvalidEnvironment, error_chain(e))
}

fn netconf_error(version: &str, e: &NetconfError) -> CniError {
    let code = match e {
        NetconfError::Version { .. } => ErrorCode::IncompatibleVersion,
        NetconfError::Field { reason, .. } if reason.starts_with("unknown field") => {
            ErrorCode::UnsupportedField
        }
        NetconfError::Field { .. } => ErrorCode::DecodeFailure,
        NetconfError::Invalid { .. } => ErrorCode::InvalidNetworkConfig,
    };
    CniError::new(version, code, error_chain(e))
}

fn plugin_error(version: &str, cmd: Command, e: &PluginError) -> CniError {
    let code = match e {
        PluginError::Datastore(DatastoreError::Unreachable { .. }) if cmd == Command::Status => {
            ErrorCode::NotAvailable
        }
        PluginError::Datastore(DatastoreError::Unreachable { .. }) => ErrorCode::TryAgainLater,
        // STATUS of a delegated IPAM plugin that failed: its STATUS code when it is one of
        // the spec's STATUS codes, else "not available".
        PluginError::IpamStatus { code, .. }
            if *code == ErrorCode::NotAvailableLimitedConnectivity.code() =>
        {
            ErrorCode::NotAvailableLimitedConnectivity
        }
        PluginError::IpamStatus { .. } => ErrorCode::NotAvailable,
        PluginError::Datastore(DatastoreError::Netconf(n)) => return netconf_error(version, n),
        _ => ErrorCode::PluginFailure,
    };
    let (msg, details) = match e {
        PluginError::Datastore(DatastoreError::Unreachable { endpoints, source }) => (
            format!("datastore etcd {endpoints} cannot be reached"),
            error_chain(source),
        ),
        other => (error_chain(other), String::new()),
    };
    CniError::new(version, code, msg).with_details(details)
}

/// Logging per netconf: `log_level` (default info) to `log_file_path`, else stderr. Never
/// stdout, which carries the result.
fn init_logging(conf: &NetConf) {
    let level = conf
        .log_level
        .as_deref()
        .unwrap_or("info")
        .to_ascii_lowercase();
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let file = conf.log_file_path.as_ref().and_then(|p| {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let _ = match file {
        Some(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// The whole plugin: reads stdin and the environment, prints the result or the error object,
/// returns the exit status.
pub fn main(which: Which) -> i32 {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(which, CniEnv::from_process(), stdin),
        Err(e) => Err(CniError::new(
            spec::SPEC_VERSION,
            ErrorCode::IoFailure,
            format!("reading stdin: {e}"),
        )),
    };
    let (text, status) = match outcome {
        Ok(Some(v)) => (v.to_string(), 0),
        Ok(None) => (String::new(), 0),
        Err(e) => (serde_json::to_string(&e).unwrap_or_default(), 1),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    status
}

/// One call, from parsed inputs to the JSON to print.
pub fn run(
    which: Which,
    env: Result<CniEnv, EnvError>,
    stdin: Vec<u8>,
) -> Result<Option<serde_json::Value>, CniError> {
    // The version to answer errors in, before the netconf is known to be valid.
    let asked = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .filter(|v| spec::is_supported(v))
        .unwrap_or_else(|| spec::SPEC_VERSION.to_owned());
    let env = env.map_err(|e| env_error(&asked, &e))?;
    if env.command == Command::Version {
        return serde_json::to_value(VersionInfo::ours(&asked))
            .map(Some)
            .map_err(|e| CniError::new(&asked, ErrorCode::IoFailure, e.to_string()));
    }
    let conf = NetConf::parse(&stdin).map_err(|e| netconf_error(&asked, &e))?;
    init_logging(&conf);
    let version = conf.effective_version();
    tracing::debug!(command = ?env.command, container = env.container_id, "called");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(&version, ErrorCode::IoFailure, e.to_string()))?;
    let cmd = env.command;
    let plugin = Plugin::new(conf, env, stdin);
    let res = rt.block_on(async {
        match which {
            Which::Calico => calico(&plugin).await,
            Which::CalicoIpam => calico_ipam(&plugin).await,
        }
    });
    res.map_err(|e| {
        tracing::error!(command = ?cmd, error = %error_chain(&e), "failed");
        plugin_error(&version, cmd, &e)
    })
}

fn to_json(r: CniResult) -> Result<Option<serde_json::Value>, PluginError> {
    serde_json::to_value(r)
        .map(Some)
        .map_err(|e| PluginError::Step {
            step: "result",
            reason: e.to_string(),
        })
}

async fn calico(p: &Plugin) -> Result<Option<serde_json::Value>, PluginError> {
    match p.env.command {
        Command::Add => to_json(p.add().await?),
        Command::Del => p.del().await.map(|()| None),
        Command::Check => p.check().await.map(|()| None),
        Command::Status => p.status().await.map(|()| None),
        Command::Gc => {
            let cleaned = p.gc().await?;
            tracing::info!(?cleaned, "GC");
            Ok(None)
        }
        Command::Version => Ok(None),
    }
}

/// `calico-ipam` as a standalone IPAM plugin (what a runtime or another main plugin execs).
async fn calico_ipam(p: &Plugin) -> Result<Option<serde_json::Value>, PluginError> {
    let node = datastore::nodename(&p.conf)?;
    let wl = Workload::new(node.clone(), &p.env);
    match p.env.command {
        Command::Add => {
            let kv = datastore::connect(&p.conf).await?;
            let ipam = Ipam::new(kv);
            let req = plugin::IpamRequest {
                ips: plugin::cni_args_ips(&p.env)?,
                ..Default::default()
            };
            let addrs = plugin::ipam_assign(&p.conf, &ipam, &wl, &req).await?;
            let r = CniResult {
                ips: addrs
                    .into_iter()
                    .map(|a| IpConfig {
                        version: None,
                        address: ipnet::IpNet::from(a),
                        gateway: None,
                        interface: None,
                    })
                    .collect(),
                ..Default::default()
            };
            to_json(r.for_version(&p.version))
        }
        Command::Del => {
            let kv = datastore::connect(&p.conf).await?;
            Ipam::new(kv)
                .release_by_handle(&wl.handle())
                .await
                .map_err(|e| PluginError::Step {
                    step: "ipam release",
                    reason: error_chain(&e),
                })?;
            Ok(None)
        }
        Command::Check => {
            let kv = datastore::connect(&p.conf).await?;
            let have = Ipam::new(kv)
                .ips_by_handle(&wl.handle())
                .await
                .map_err(|e| PluginError::Check(error_chain(&e)))?;
            if have.is_empty() {
                return Err(PluginError::Check(format!(
                    "no addresses allocated to handle {}",
                    wl.handle()
                )));
            }
            Ok(None)
        }
        Command::Status => p.status().await.map(|()| None),
        Command::Gc => {
            let kv = datastore::connect(&p.conf).await?;
            plugin::gc(&p.conf, &kv, &node, false).await?;
            Ok(None)
        }
        Command::Version => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delegated_status_failure_keeps_51_and_otherwise_is_50() {
        let status = |code| {
            plugin_error(
                "1.1.0",
                Command::Status,
                &PluginError::IpamStatus {
                    plugin: "host-local".into(),
                    code,
                    msg: "down".into(),
                },
            )
        };
        assert_eq!(status(51).code, 51);
        let e = status(3);
        assert_eq!(e.code, 50);
        assert!(e.msg.contains("host-local"), "{}", e.msg);
    }
}
