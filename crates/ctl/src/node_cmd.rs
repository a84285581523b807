//! `calicoctl node run`, `calicoctl node status` and `calicoctl node peers`, delegating to
//! `calico-node`'s implementations; this module turns flags and the datastore configuration
//! into their inputs.

use std::path::PathBuf;

use calico_datastore::{CalicoApiConfig, Datastore};
use calico_ipam::Ipam;
use calico_node::run::{RunError, RunOptions};
use calico_node::snapshot::{self, SnapshotError};
use calico_node::status::{self, StatusError};

use crate::cli::{NodeCommand, NodePeersArgs, NodeRunArgs};
use crate::commands::{CtlError, Io, Session};

#[derive(Debug, thiserror::Error)]
pub enum NodeCmdError {
    #[error("{0}")]
    Run(#[from] RunError),
    /// Calico's wording when no calico-node answers on this host.
    #[error("Calico process is not running.")]
    NotRunning(#[source] StatusError),
    #[error("{0}")]
    Status(StatusError),
    #[error("This command must be run as root.")]
    NotRoot,
    /// `node peers` could not read or interpret the datastore for this node.
    #[error("computing the BGP sessions of node {node:?}: {source}")]
    Peers {
        node: String,
        #[source]
        source: Box<SnapshotError>,
    },
    #[error("unsupported output format {0:?} for node status: expected table or json")]
    StatusFormat(String),
    #[error("unsupported output format {0:?} for node peers: expected yaml or json")]
    PeersOutput(String),
    #[error("encoding the sessions as {format}: {reason}")]
    Encode {
        format: &'static str,
        reason: String,
    },
}

/// calico-node's run directory: `CALICO_RUN_DIR`, else `/var/run/calico`.
fn run_dir(io: &Io<'_>) -> PathBuf {
    (io.env)("CALICO_RUN_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(calico_node::config::DEFAULT_RUN_DIR))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub async fn run(
    cmd: &NodeCommand,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), CtlError> {
    match cmd {
        NodeCommand::Status(args) => {
            if !is_root() {
                return Err(CtlError::Node(NodeCmdError::NotRoot));
            }
            let json = match args.output.as_str() {
                "table" => false,
                "json" => true,
                other => {
                    return Err(CtlError::Node(NodeCmdError::StatusFormat(
                        other.to_string(),
                    )));
                }
            };
            match status::query(&run_dir(io)).await {
                Ok(s) if json => {
                    let text = serde_json::to_string_pretty(&s).unwrap_or_default();
                    let _ = writeln!(io.out, "{text}");
                    Ok(())
                }
                Ok(s) => {
                    let _ = io.out.write_all(status::render(&s).as_bytes());
                    Ok(())
                }
                Err(e @ StatusError::NotRunning { .. }) => {
                    Err(CtlError::Node(NodeCmdError::NotRunning(e)))
                }
                Err(e) => Err(CtlError::Node(NodeCmdError::Status(e))),
            }
        }
        NodeCommand::Peers(args) => peers(args, config_path, io, session).await,
        NodeCommand::Policy(args) => crate::policy_view::run(args, config_path, io, session).await,
        NodeCommand::Run(args) => {
            let cfg = CalicoApiConfig::load_with(
                config_path.map(std::path::Path::new),
                std::path::Path::new(&session.default_config_path),
                io.env,
            )?;
            let options = run_options(args, &cfg, run_dir(io), io);
            calico_node::run::run(&options, io.out).map_err(|e| CtlError::Node(e.into()))
        }
    }
}

/// `calicoctl node peers NAME`: the sessions `calico-node` would run for NAME, from the
/// datastore alone (nothing is asked of a running agent), so a design can be checked first.
async fn peers(
    args: &NodePeersArgs,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), CtlError> {
    let format = match args.output.as_str() {
        "yaml" => PeersFormat::Yaml,
        "json" => PeersFormat::Json,
        other => return Err(CtlError::Node(NodeCmdError::PeersOutput(other.to_string()))),
    };
    let kv = session.etcd_client(config_path, io).await?;
    let ds = Datastore::from_etcd(kv.clone());
    let ipam = Ipam::new(kv);
    let sessions = snapshot::sessions_of(&ds, &ipam, &args.name)
        .await
        .map_err(|source| {
            CtlError::Node(NodeCmdError::Peers {
                node: args.name.clone(),
                source: Box::new(source),
            })
        })?;
    let text = render_sessions(&sessions, format).map_err(CtlError::Node)?;
    let _ = io.out.write_all(text.as_bytes());
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum PeersFormat {
    Yaml,
    Json,
}

/// Renders sessions as a YAML or JSON list (an empty list when the node has no sessions).
fn render_sessions(
    sessions: &[calico_node::peering::Session],
    format: PeersFormat,
) -> Result<String, NodeCmdError> {
    match format {
        PeersFormat::Yaml => serde_yaml_ng::to_string(sessions).map_err(|e| NodeCmdError::Encode {
            format: "yaml",
            reason: e.to_string(),
        }),
        PeersFormat::Json => serde_json::to_string_pretty(sessions)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| NodeCmdError::Encode {
                format: "json",
                reason: e.to_string(),
            }),
    }
}

/// The agent's datastore settings, as the environment variables calico-node reads.
fn datastore_env(cfg: &CalicoApiConfig) -> Vec<(String, String)> {
    let e = &cfg.etcd;
    let mut env = vec![
        (
            "DATASTORE_TYPE".to_string(),
            cfg.datastore_type.as_str().to_string(),
        ),
        ("ETCD_ENDPOINTS".to_string(), e.endpoints.join(",")),
    ];
    let files = [
        ("ETCD_CA_CERT_FILE", &e.ca_cert_file),
        ("ETCD_CERT_FILE", &e.cert_file),
        ("ETCD_KEY_FILE", &e.key_file),
    ];
    for (name, path) in files {
        if let Some(p) = path {
            env.push((name.to_string(), p.display().to_string()));
        }
    }
    if let Some(u) = &e.username {
        env.push(("ETCD_USERNAME".to_string(), u.clone()));
    }
    if let Some(p) = &e.password {
        env.push(("ETCD_PASSWORD".to_string(), p.clone()));
    }
    env
}

fn run_options(
    args: &NodeRunArgs,
    cfg: &CalicoApiConfig,
    run_dir: PathBuf,
    io: &Io<'_>,
) -> RunOptions {
    let docker_socket = (io.env)("DOCKER_HOST")
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
    RunOptions {
        name: args.name.clone(),
        ip: args.ip.clone(),
        ip6: args.ip6.clone(),
        as_number: args.as_number.clone(),
        ip_autodetection_method: args.ip_autodetection_method.clone(),
        ip6_autodetection_method: args.ip6_autodetection_method.clone(),
        backend: args.backend.clone(),
        no_default_ippools: args.no_default_ippools,
        dryrun: args.dryrun,
        node_image: args.node_image.clone(),
        disable_docker_networking: args.disable_docker_networking,
        no_docker: args.no_docker,
        datastore_env: datastore_env(cfg),
        run_dir,
        docker_socket,
        docker_root: None,
    }
}
