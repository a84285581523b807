//! The agent's side of `calicoctl node status`: the status it reports and the socket that
//! carries it (both ends of the socket, so the protocol has one owner; calicoctl renders it).
//!
//! The agent serves its status as one JSON document on a unix socket in its run directory
//! (`<CALICO_RUN_DIR>/calico-node.sock`): connect, read to EOF. A socket, not a pid file,
//! because the agent may run in a container with its own pid namespace; the run directory is
//! what the two share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// File name of the status socket inside the run directory.
pub const SOCKET_NAME: &str = "calico-node.sock";
/// What the agent prints once it runs (`calicoctl node run` waits for this line).
pub const STARTED_LINE: &str = "Calico node started successfully";

/// How a session was configured, in Calico's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerType {
    #[serde(rename = "node-to-node mesh")]
    Mesh,
    #[serde(rename = "global")]
    Global,
    #[serde(rename = "node specific")]
    NodeSpecific,
}

impl PeerType {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::Mesh => "node-to-node mesh",
            PeerType::Global => "global",
            PeerType::NodeSpecific => "node specific",
        }
    }
}

/// One BGP session as `calicoctl node status` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRow {
    pub peer_address: String,
    pub peer_type: PeerType,
    /// BIRD's protocol state: `up` once established, `start` while connecting.
    pub state: String,
    /// Time of the last state change, `HH:MM:SS` (UTC).
    pub since: String,
    /// The BGP FSM state: `Established`, `Active`, `Connect`, `OpenSent`, …
    pub info: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node_name: String,
    pub ipv4_peers: Vec<PeerRow>,
    pub ipv6_peers: Vec<PeerRow>,
    /// The agent's readiness verdict, the same as its `/readiness` endpoint (absent from an
    /// agent that predates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    /// Policies and profiles this node does not enforce as written (a skipped rule, a policy
    /// replaced by deny or dropped): the list the policy dataplane isolated in its last sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_issues: Vec<PolicyIssueRow>,
}

/// One policy or profile not enforced as written, as `calicoctl node status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyIssueRow {
    /// The resource: `GlobalNetworkPolicy "x"`, `NetworkPolicy "ns/x"`, `Profile "p"`.
    pub owner: String,
    /// The field (the rule): `spec.ingress[0].http`, `spec.selector`.
    pub field: String,
    /// What the dataplane does instead: `rule skipped`, `rules replaced by deny`, …
    pub outcome: String,
    pub reason: String,
}

impl From<&calico_policy::isolate::PolicyIssue> for PolicyIssueRow {
    fn from(i: &calico_policy::isolate::PolicyIssue) -> Self {
        PolicyIssueRow {
            owner: i.owner.clone(),
            field: i.field.clone(),
            outcome: i.outcome.to_string(),
            reason: i.reason.clone(),
        }
    }
}

/// Whether the agent is ready, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub ready: bool,
    /// One line per reason (empty when ready).
    #[serde(default)]
    pub reasons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("calico-node is not running (no status socket at {path})")]
    NotRunning {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading status from {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("status from {path} is not valid JSON")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("timed out reading status from {path}")]
    Timeout { path: PathBuf },
}

pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// Asks the agent whose run directory is `run_dir` for its status.
pub async fn query(run_dir: &Path) -> Result<NodeStatus, StatusError> {
    let path = socket_path(run_dir);
    let work = async {
        let mut stream = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(|source| StatusError::NotRunning {
                path: path.clone(),
                source,
            })?;
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(|source| StatusError::Read {
                path: path.clone(),
                source,
            })?;
        serde_json::from_slice(&buf).map_err(|source| StatusError::Decode {
            path: path.clone(),
            source,
        })
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| StatusError::Timeout { path: path.clone() })?
}

/// Serves the status produced by `current` to every client until the task is dropped.
/// A stale socket file from a previous run is replaced.
pub async fn serve(
    run_dir: PathBuf,
    current: impl Fn() -> NodeStatus + Send + 'static,
) -> std::io::Result<()> {
    std::fs::create_dir_all(&run_dir)?;
    let path = socket_path(&run_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let body = serde_json::to_vec(&current()).unwrap_or_default();
        // A slow reader must not stall the agent: write in the background, bounded in time.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&body)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_travels_over_the_socket() {
        let dir = std::env::temp_dir().join(format!("calico-node-status-{}", std::process::id()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let status = NodeStatus {
                node_name: "n".into(),
                ipv4_peers: vec![],
                ipv6_peers: vec![PeerRow {
                    peer_address: "fd00::2".into(),
                    peer_type: PeerType::Global,
                    state: "start".into(),
                    since: "00:00:01".into(),
                    info: "Active".into(),
                }],
                readiness: Some(Readiness {
                    ready: true,
                    reasons: vec![],
                }),
                policy_issues: vec![PolicyIssueRow {
                    owner: "GlobalNetworkPolicy \"web\"".into(),
                    field: "spec.ingress[0].http".into(),
                    outcome: "rule skipped".into(),
                    reason: "needs the application layer".into(),
                }],
            };
            let served = status.clone();
            let server = tokio::spawn(serve(dir.clone(), move || served.clone()));
            let mut got = None;
            for _ in 0..100 {
                if let Ok(s) = query(&dir).await {
                    got = Some(s);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            server.abort();
            assert_eq!(got, Some(status));
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_agent_is_reported_as_not_running() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(query(Path::new("/nonexistent/calico-run")))
            .unwrap_err();
        assert!(matches!(err, StatusError::NotRunning { .. }), "{err}");
    }
}
