//! Name resolution across hosts (`ping bbox2` from bbox1 when bbox2 runs on another host).
//!
//! Docker's embedded DNS (127.0.0.11) knows only the containers of its own daemon, and with
//! local-scope networks each daemon knows only its own. Design (implemented here, run by the
//! network syncer on every change of names):
//! 1. every host publishes its containers on Calico networks under
//!    [`NAMES_PREFIX`]`<network>/<container name>` = `{"ip", "host"}` (from `docker network
//!    inspect`), and deletes its own records that no longer exist;
//! 2. for each local container on a Calico network, the host writes the records of the same
//!    network(s) that live on *other* hosts into the container's hosts file (dockerd keeps it at
//!    `<data-root>/containers/<id>/hosts` and bind-mounts it as /etc/hosts), inside a managed block
//!    between [`BEGIN`] and [`END`], rewritten in place (same inode, so the bind mount sees it)
//!    and only when it changes.
//!
//! Local names keep going through Docker's embedded DNS. Works with Docker 20.10 and static
//! busybox, whose resolver reads /etc/hosts without NSS modules. The syncer runs a name round
//! when the name records change and on dockerd's `connect`, `disconnect` and container `start`
//! events; Docker rewrites the file when a container is (re)connected, and that event's round
//! puts the block back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub const NAMES_PREFIX: &str = "/calico-rs/docker/names/";
pub const BEGIN: &str = "# calico-rs: containers on other hosts (managed, do not edit)";
pub const END: &str = "# calico-rs: end";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub ip: IpAddr,
    pub host: String,
}

/// `existing` with the managed block replaced by `entries` (appended when absent; removed when
/// `entries` is empty). Lines outside the block are kept as they are.
pub fn render_hosts(existing: &str, entries: &BTreeMap<String, IpAddr>) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in existing.lines() {
        if line == BEGIN {
            inside = true;
            continue;
        }
        if line == END {
            inside = false;
            continue;
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !entries.is_empty() {
        out.push_str(BEGIN);
        out.push('\n');
        for (name, ip) in entries {
            out.push_str(&format!("{ip}\t{name}\n"));
        }
        out.push_str(END);
        out.push('\n');
    }
    out
}

/// The entries a container of `networks` on `host` needs: every record of those networks that
/// lives on another host. A name on two networks with two addresses keeps the first network's.
pub fn remote_entries(
    records: &BTreeMap<String, BTreeMap<String, NameRecord>>,
    networks: &BTreeSet<String>,
    host: &str,
) -> BTreeMap<String, IpAddr> {
    let mut out = BTreeMap::new();
    for net in networks {
        for (name, rec) in records.get(net).into_iter().flatten() {
            if rec.host != host {
                out.entry(name.clone()).or_insert(rec.ip);
            }
        }
    }
    out
}

/// Whether `name` can be a hosts-file name and a datastore key segment.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(ip: &str, host: &str) -> NameRecord {
        NameRecord {
            ip: ip.parse().unwrap(),
            host: host.into(),
        }
    }

    #[test]
    fn block_is_appended_replaced_and_removed() {
        let docker = "127.0.0.1\tlocalhost\n192.168.0.1\tabc123\n";
        let e = BTreeMap::from([("bbox2".to_string(), "192.168.0.64".parse().unwrap())]);
        let one = render_hosts(docker, &e);
        assert!(one.starts_with(docker));
        assert!(one.contains("192.168.0.64\tbbox2\n"));
        let e2 = BTreeMap::from([("bbox3".to_string(), "192.168.0.65".parse().unwrap())]);
        let two = render_hosts(&one, &e2);
        assert!(!two.contains("bbox2") && two.contains("bbox3"));
        assert_eq!(render_hosts(&two, &BTreeMap::new()), docker);
    }

    #[test]
    fn only_other_hosts_of_the_same_networks() {
        let records = BTreeMap::from([
            (
                "n1".to_string(),
                BTreeMap::from([
                    ("a".to_string(), rec("10.0.0.1", "h1")),
                    ("b".to_string(), rec("10.0.0.2", "h2")),
                ]),
            ),
            (
                "n2".to_string(),
                BTreeMap::from([("c".to_string(), rec("10.0.1.1", "h2"))]),
            ),
        ]);
        let nets = BTreeSet::from(["n1".to_string()]);
        let e = remote_entries(&records, &nets, "h1");
        assert_eq!(e.keys().collect::<Vec<_>>(), vec!["b"]);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("bbox1"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }

    proptest! {
        /// Rendering is idempotent and never loses a line outside the block.
        #[test]
        fn render_is_idempotent(
            lines in proptest::collection::vec("[a-z0-9 .\t]{0,20}", 0..8),
            names in proptest::collection::btree_map("[a-z][a-z0-9]{0,8}", any::<[u8; 4]>(), 0..5),
        ) {
            let base: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let e: BTreeMap<String, IpAddr> = names.into_iter().map(|(n, o)| (n, IpAddr::from(o))).collect();
            let once = render_hosts(&base, &e);
            prop_assert_eq!(render_hosts(&once, &e), once.clone());
            prop_assert!(once.starts_with(&base));
            prop_assert_eq!(render_hosts(&once, &BTreeMap::new()), base);
        }
    }
}
