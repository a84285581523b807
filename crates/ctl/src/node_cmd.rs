//! `calicoctl node run`, `calicoctl node status` and `calicoctl node peers`: flags and the
//! datastore configuration turned into [`crate::node_run`]'s options, the running agent's
//! status (asked over its socket, `calico_node::status`) rendered by [`crate::status_view`],
//! and the sessions `calico-node`'s peering rules compute.

use std::path::PathBuf;

use calico_datastore::{CalicoApiConfig, Datastore};
use calico_ipam::Ipam;
use calico_node::snapshot::{self, SnapshotError};
use calico_node::status::{self, StatusError};

use crate::cli::{NodePeersArgs, NodeRunArgs, NodeStatusArgs};
use crate::node_run::{self, RunError, RunOptions};
use crate::session::{Io, Session, SessionError};
use crate::status_view;

#[derive(Debug, thiserror::Error)]
pub enum NodeCmdError {
    #[error(transparent)]
    Session(#[from] SessionError),
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

/// `calicoctl node status [-o table|json]`: asks the agent on this host.
pub async fn status(args: &NodeStatusArgs, io: &mut Io<'_>) -> Result<(), NodeCmdError> {
    if !is_root() {
        return Err(NodeCmdError::NotRoot);
    }
    let json = match args.output.as_str() {
        "table" => false,
        "json" => true,
        other => return Err(NodeCmdError::StatusFormat(other.to_string())),
    };
    match status::query(&run_dir(io)).await {
        Ok(s) if json => {
            let text = serde_json::to_string_pretty(&s).unwrap_or_default();
            let _ = writeln!(io.out, "{text}");
            Ok(())
        }
        Ok(s) => {
            let _ = io.out.write_all(status_view::render(&s).as_bytes());
            Ok(())
        }
        Err(e @ StatusError::NotRunning { .. }) => Err(NodeCmdError::NotRunning(e)),
        Err(e) => Err(NodeCmdError::Status(e)),
    }
}

/// `calicoctl node run`: starts calico-node on this host against the configured datastore.
pub fn run(
    args: &NodeRunArgs,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), NodeCmdError> {
    let cfg = session.api_config(config_path, io)?;
    let options = run_options(args, &cfg, run_dir(io), io);
    Ok(node_run::run(&options, io.out)?)
}

/// `calicoctl node peers NAME`: the sessions `calico-node` would run for NAME, from the
/// datastore alone (nothing is asked of a running agent), so a design can be checked first.
pub async fn peers(
    args: &NodePeersArgs,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), NodeCmdError> {
    let format = match args.output.as_str() {
        "yaml" => PeersFormat::Yaml,
        "json" => PeersFormat::Json,
        other => return Err(NodeCmdError::PeersOutput(other.to_string())),
    };
    let kv = session.etcd_client(config_path, io).await?;
    let ds = Datastore::from_etcd(kv.clone());
    let ipam = Ipam::new(kv);
    let sessions = snapshot::sessions_of(&ds, &ipam, &args.name)
        .await
        .map_err(|source| NodeCmdError::Peers {
            node: args.name.clone(),
            source: Box::new(source),
        })?;
    let text = render_sessions(&sessions, format)?;
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
