//! What `calicoctl ipam ...` prints, from the data `calico_ipam::admin` returns. Pure: each
//! function turns data into the text Calico's calicoctl prints for it (bordered tables through
//! `calico_api::table`, numbers right-aligned where Calico aligns them).

use std::fmt::Write as _;
use std::net::IpAddr;

use calico_api::table::Table;
use calico_ipam::admin::{Borrowed, Check, ReleaseSummary, Usage};
use calico_ipam::{AssignmentInfo, IpamConfig};
use ipnet::IpNet;

fn pct(n: u128, total: u128) -> String {
    let p = if total == 0 {
        0.0
    } else {
        100.0 * n as f64 / total as f64
    };
    format!("{n} ({p:.0}%)")
}

/// `calicoctl ipam show [--show-blocks]`: the usage table, pools with their blocks.
pub fn usage(pools: &[(Usage, Vec<Usage>)], show_blocks: bool) -> String {
    let mut t = Table::new(&["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"]);
    t.right[2] = true;
    let row = |kind: &str, u: &Usage| {
        [
            kind.to_owned(),
            u.cidr.to_string(),
            u.total.to_string(),
            pct(u.in_use, u.total),
            pct(u.total - u.in_use, u.total),
        ]
    };
    for (p, blocks) in pools {
        t.push(row("IP Pool", p));
        if show_blocks {
            for b in blocks {
                t.push(row("Block", b));
            }
        }
    }
    t.render()
}

/// `calicoctl ipam show --ip=<IP>`.
pub fn assignment(ip: IpAddr, info: Option<&AssignmentInfo>) -> String {
    let Some(info) = info else {
        return format!("{ip} is not assigned\n");
    };
    let mut out = format!("IP {ip} is in use\n");
    match &info.attributes.handle_id {
        Some(h) => out.push_str(&format!("Handle ID: {h}\n")),
        None => out.push_str("Handle ID: <none>\n"),
    }
    if info.attributes.secondary.is_empty() {
        out.push_str("No Active Owner attributes defined\n");
    } else {
        out.push_str("Active Owner Attributes:\n");
        for (k, v) in &info.attributes.secondary {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    }
    out
}

/// `calicoctl ipam show --show-borrowed`.
pub fn borrowed(rows: &[Borrowed]) -> String {
    let mut t = Table::new(&[
        "IP",
        "BORROWING-NODE",
        "BLOCK",
        "BLOCK OWNER",
        "TYPE",
        "ALLOCATED-TO",
    ]);
    for b in rows {
        t.push([
            b.ip.to_string(),
            b.borrowing_node.clone(),
            b.block.to_string(),
            b.block_owner.clone(),
            b.allocation_type.clone(),
            b.allocated_to.clone(),
        ]);
    }
    t.render()
}

/// `calicoctl ipam show --show-configuration`.
pub fn configuration(cfg: &IpamConfig) -> String {
    let mut t = Table::new(&["PROPERTY", "VALUE"]);
    t.push(["StrictAffinity".into(), cfg.strict_affinity.to_string()]);
    t.push([
        "AutoAllocateBlocks".into(),
        cfg.auto_allocate_blocks.to_string(),
    ]);
    t.push([
        "MaxBlocksPerHost".into(),
        cfg.max_blocks_per_host.to_string(),
    ]);
    t.render()
}

/// `calicoctl ipam configure`: the setting afterwards.
pub fn configured(cfg: &IpamConfig) -> String {
    format!(
        "Successfully set StrictAffinity to: {}\n",
        cfg.strict_affinity
    )
}

/// `calicoctl ipam release --ip=<IP>`.
pub fn released(ip: IpAddr, was_assigned: bool) -> String {
    if was_assigned {
        format!("Successfully released IP address {ip}\n")
    } else {
        format!("IP address {ip} is not assigned\n")
    }
}

/// `calicoctl ipam release --from-report=<FILE>`.
pub fn release_summary(s: &ReleaseSummary) -> String {
    let mut out = String::new();
    for ip in &s.released_ips {
        let _ = writeln!(out, "Released leaked IP {ip}");
    }
    for ip in &s.skipped_ips {
        let _ = writeln!(
            out,
            "Skipped IP {ip}: its allocation changed since the report"
        );
    }
    for h in &s.deleted_handles {
        let _ = writeln!(out, "Deleted leaked handle {h}");
    }
    for (node, cidr) in &s.released_affinities {
        let _ = writeln!(out, "Released orphaned affinity of {node} for {cidr}");
    }
    let _ = writeln!(
        out,
        "Released {} IP(s), deleted {} handle(s), released {} affinity(ies)",
        s.released_ips.len(),
        s.deleted_handles.len(),
        s.released_affinities.len()
    );
    out
}

/// `calicoctl ipam check [--show-problem-ips]`.
pub fn check(c: &Check, show_problem_ips: bool) -> String {
    let r = &c.report;
    let mut text = String::from("Checking IPAM for inconsistencies...\n\n");
    if !c.nodes_known {
        text.push_str("No Node resources found: not checking for blocks of deleted nodes.\n");
    }
    let _ = writeln!(text, "Found {} IPAM blocks.", c.blocks);
    if show_problem_ips {
        for a in &c.leaked {
            let _ = writeln!(
                text,
                "  {} leaked; handle {} node {}",
                a.ip,
                a.handle.as_deref().unwrap_or("<none>"),
                a.node.as_deref().unwrap_or("<none>")
            );
        }
    }
    let total: usize = r.allocations.values().map(Vec::len).sum();
    let _ = writeln!(text, "IPAM blocks record {total} allocations.\n");
    let _ = writeln!(
        text,
        "Found {} workload IPs and node tunnel IPs in use.",
        c.addresses_in_use
    );
    let _ = writeln!(
        text,
        "Found {} IPs that are allocated in IPAM but not actually in use.",
        r.leaked_ips().len()
    );
    if show_problem_ips {
        for h in &r.leaked_handles {
            let _ = writeln!(text, "  handle {} doesn't have any active IPs.", h.id);
        }
    }
    let _ = writeln!(
        text,
        "Found {} handles with no matching IPs (and {} handles with matches).",
        r.leaked_handles.len(),
        c.handles_with_ips
    );
    let _ = writeln!(
        text,
        "Found {} handles mentioned in blocks with no matching handle resource.",
        r.missing_handles.len()
    );
    let _ = writeln!(
        text,
        "Found {} block affinities of missing nodes or unfinished claims.",
        r.orphaned_affinities.len()
    );
    let _ = writeln!(text, "Check complete; found {} problems.", r.problems());
    text
}

/// `calicoctl ipam split`: the pools created.
pub fn split(pools: &[(String, IpNet)]) -> String {
    let mut out = String::new();
    for (name, cidr) in pools {
        let _ = writeln!(out, "Created IP pool {name} with CIDR {cidr}");
    }
    let _ = writeln!(
        out,
        "Successfully split the IP pool into {} IP pools",
        pools.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_table_has_calicoctl_layout() {
        let pool = Usage {
            cidr: "10.65.0.0/16".parse().unwrap(),
            total: 65536,
            in_use: 5,
        };
        let want = "\
+----------+--------------+-----------+------------+--------------+
| GROUPING |     CIDR     | IPS TOTAL | IPS IN USE |   IPS FREE   |
+----------+--------------+-----------+------------+--------------+
| IP Pool  | 10.65.0.0/16 |     65536 | 5 (0%)     | 65531 (100%) |
+----------+--------------+-----------+------------+--------------+
";
        assert_eq!(usage(&[(pool, vec![])], true), want);
    }
}
