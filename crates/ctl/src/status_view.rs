//! What `calicoctl node status` prints from the status a running calico-node reports over its
//! socket (`calico_node::status`, which owns the data and both ends of the socket). Pure, and
//! Calico's text byte for byte.

use calico_api::table::Table;
use calico_node::status::{NodeStatus, PeerRow, PolicyIssueRow};

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
    out.push_str(&policy_issues(&status.policy_issues));
    out
}

/// One line per policy or profile not enforced as written (nothing when there is none):
/// the resource, the rule's field, what is done instead and why.
pub fn policy_issues(issues: &[PolicyIssueRow]) -> String {
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
    let mut t = Table::new(&["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"]);
    for r in rows {
        t.push([
            r.peer_address.as_str(),
            r.peer_type.as_str(),
            r.state.as_str(),
            r.since.as_str(),
            r.info.as_str(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_node::status::{PeerType, Readiness};

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
        assert_eq!(policy_issues(&[]), "");
    }
}
