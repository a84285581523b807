//! What `calicoctl node status` shows, and how it reaches calicoctl.
//!
//! The agent serves its status as one JSON document on a unix socket in its run directory
//! (`<CALICO_RUN_DIR>/calico-node.sock`): connect, read to EOF. A socket, not a pid file,
//! because the agent may run in a container with its own pid namespace; the run directory is
//! what the two share. Rendering is pure and reproduces Calico's table byte for byte.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// File name of the status socket inside the run directory.
pub const SOCKET_NAME: &str = "calico-node.sock";

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

/// The text `calicoctl node status` prints for a running node.
pub fn render(status: &NodeStatus) -> String {
    let mut out = String::from("Calico process is running.\n\n");
    for (family, rows) in [("IPv4", &status.ipv4_peers), ("IPv6", &status.ipv6_peers)] {
        out.push_str(&format!("{family} BGP status\n"));
        if rows.is_empty() {
            out.push_str(&format!("No {family} peers found.\n"));
        } else {
            out.push_str(&peer_table(rows));
        }
        out.push('\n');
    }
    match &status.readiness {
        None => {}
        Some(r) if r.ready => out.push_str("Readiness: ready\n"),
        Some(r) => {
            out.push_str("Readiness: not ready\n");
            for reason in &r.reasons {
                out.push_str(&format!("  - {reason}\n"));
            }
        }
    }
    out.push_str(&render_policy_issues(&status.policy_issues));
    out
}

/// One line per policy or profile not enforced as written (nothing when there is none):
/// the resource, the rule's field, what is done instead and why.
pub fn render_policy_issues(issues: &[PolicyIssueRow]) -> String {
    if issues.is_empty() {
        return String::new();
    }
    let mut out = String::from("Policy not enforced as written:\n");
    for i in issues {
        out.push_str(&format!(
            "  - {} {}: {} ({})\n",
            i.owner, i.field, i.outcome, i.reason
        ));
    }
    out
}

fn peer_table(rows: &[PeerRow]) -> String {
    let cells: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| {
            vec![
                r.peer_address.as_str(),
                r.peer_type.as_str(),
                r.state.as_str(),
                r.since.as_str(),
                r.info.as_str(),
            ]
        })
        .collect();
    table(
        &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
        &cells,
    )
}

/// A table as Calico's tools print them (Go's tablewriter): bordered, headers centred.
pub fn table(headers: &[&str], cells: &[Vec<&str>]) -> String {
    let widths: Vec<usize> = (0..headers.len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r.get(c).map_or(0, |s| s.len()))
                .chain([headers[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let border = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let mut out = border.clone();
    out.push('|');
    for (h, w) in headers.iter().zip(&widths) {
        // Headers are centred; an odd remainder goes to the right, as Calico's table does.
        let pad = w - h.len();
        let left = pad / 2;
        out.push_str(&format!(
            " {}{}{} |",
            " ".repeat(left),
            h,
            " ".repeat(pad - left)
        ));
    }
    out.push('\n');
    out.push_str(&border);
    for row in cells {
        out.push('|');
        for (c, w) in widths.iter().enumerate() {
            let cell = row.get(c).copied().unwrap_or("");
            out.push_str(&format!(" {cell:<w$} |"));
        }
        out.push('\n');
    }
    out.push_str(&border);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_seed_table_exactly() {
        let status = NodeStatus {
            node_name: "node1".into(),
            ipv4_peers: vec![PeerRow {
                peer_address: "192.168.33.12".into(),
                peer_type: PeerType::Mesh,
                state: "up".into(),
                since: "07:17:13".into(),
                info: "Established".into(),
            }],
            ipv6_peers: vec![],
            readiness: None,
            policy_issues: vec![],
        };
        let expected = "\
Calico process is running.

IPv4 BGP status
+---------------+-------------------+-------+----------+-------------+
| PEER ADDRESS  |     PEER TYPE     | STATE |  SINCE   |    INFO     |
+---------------+-------------------+-------+----------+-------------+
| 192.168.33.12 | node-to-node mesh | up    | 07:17:13 | Established |
+---------------+-------------------+-------+----------+-------------+

IPv6 BGP status
No IPv6 peers found.

";
        assert_eq!(render(&status), expected);
    }

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
    fn policy_issues_follow_readiness_one_line_each() {
        let status = NodeStatus {
            node_name: "n".into(),
            ipv4_peers: vec![],
            ipv6_peers: vec![],
            readiness: Some(Readiness {
                ready: true,
                reasons: vec![],
            }),
            policy_issues: vec![
                PolicyIssueRow {
                    owner: "GlobalNetworkPolicy \"web\"".into(),
                    field: "spec.ingress[0].http".into(),
                    outcome: "rule skipped".into(),
                    reason: "HTTP matches need the application layer".into(),
                },
                PolicyIssueRow {
                    owner: "Profile \"p\"".into(),
                    field: "spec.ingress[1].source.selector".into(),
                    outcome: "rules replaced by deny".into(),
                    reason: "bad selector".into(),
                },
            ],
        };
        assert!(render(&status).ends_with(
            "Readiness: ready\n\
             Policy not enforced as written:\n\
             \x20 - GlobalNetworkPolicy \"web\" spec.ingress[0].http: rule skipped (HTTP matches need the application layer)\n\
             \x20 - Profile \"p\" spec.ingress[1].source.selector: rules replaced by deny (bad selector)\n"
        ), "{}", render(&status));
        // None: nothing is printed, not even the heading.
        assert_eq!(render_policy_issues(&[]), "");
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
