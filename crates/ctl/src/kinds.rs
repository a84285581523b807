//! What calicoctl knows about each resource kind: how users name it on the command line,
//! whether it lives in a namespace, where it is stored, and its `-o ps` / `-o wide` columns.
//!
//! The column sets and the names accepted on the command line follow Calico's calicoctl
//! (its per-kind resource managers); values are read from the JSON form of the object so
//! the table code does not depend on the typed structs.

use serde_json::Value;

/// What the CLI adds to calico-api's facts about one kind: table columns and ownership.
#[derive(Debug)]
pub struct KindInfo {
    /// `kind` as written in YAML, e.g. `IPPool`; its names, plural and scope come from
    /// calico-api's registry (reached through `Deref`), so the CLI cannot disagree with it.
    pub kind: &'static str,
    /// `-o ps` columns.
    pub headings: &'static [&'static str],
    /// `-o wide` columns.
    pub wide_headings: &'static [&'static str],
    /// Every heading `custom-columns=` accepts for this kind.
    pub all_headings: &'static [&'static str],
    /// Another component owns it (calico/node: ClusterInformation; IPAM: blocks, handles
    /// and affinities): calicoctl may read it but not create, change or delete it.
    pub read_only: bool,
}

impl std::ops::Deref for KindInfo {
    type Target = calico_api::KindInfo;

    fn deref(&self) -> &Self::Target {
        calico_api::lookup_kind(self.kind)
            .expect("every calicoctl kind is registered in calico-api")
    }
}

impl KindInfo {
    /// `Kind(name)` or `Kind(namespace/name)`, as Calico's errors identify a resource.
    pub fn identifier(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced && !ns.is_empty() => format!("{}({ns}/{name})", self.kind),
            _ => format!("{}({name})", self.kind),
        }
    }

    /// `kind` of the list form, e.g. `IPPoolList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const NAME: &[&str] = &["NAME"];

/// Every kind calicoctl manages, in the order `calicoctl get --help` lists them.
pub static KINDS: &[KindInfo] = &[
    KindInfo {
        kind: "BGPConfiguration",
        headings: &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        wide_headings: &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        all_headings: &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        read_only: false,
    },
    KindInfo {
        kind: "BGPFilter",
        headings: &["NAME", "NUMEXPORT", "NUMIMPORT"],
        wide_headings: &["NAME", "NUMEXPORT", "NUMIMPORT"],
        all_headings: &["NAME", "NUMEXPORT", "NUMIMPORT"],
        read_only: false,
    },
    KindInfo {
        kind: "BGPPeer",
        headings: &["NAME", "PEERIP", "NODE", "ASN"],
        wide_headings: &["NAME", "PEERIP", "NODE", "ASN"],
        all_headings: &["NAME", "PEERIP", "NODE", "ASN"],
        read_only: false,
    },
    KindInfo {
        kind: "BlockAffinity",
        headings: &["NAME", "NODE", "CIDR", "STATE"],
        wide_headings: &["NAME", "NODE", "CIDR", "STATE"],
        all_headings: &["NAME", "NODE", "CIDR", "STATE"],
        read_only: true,
    },
    KindInfo {
        kind: "CalicoNodeStatus",
        headings: &["NAME", "NODE"],
        wide_headings: &["NAME", "NODE", "CLASSES"],
        all_headings: &["NAME", "NODE", "CLASSES"],
        read_only: false,
    },
    KindInfo {
        kind: "ClusterInformation",
        headings: &[
            "NAME",
            "CLUSTERGUID",
            "CLUSTERTYPE",
            "CALICOVERSION",
            "DATASTOREREADY",
        ],
        wide_headings: &[
            "NAME",
            "CLUSTERGUID",
            "CLUSTERTYPE",
            "CALICOVERSION",
            "DATASTOREREADY",
        ],
        all_headings: &[
            "NAME",
            "CLUSTERGUID",
            "CLUSTERTYPE",
            "CALICOVERSION",
            "DATASTOREREADY",
        ],
        read_only: true,
    },
    KindInfo {
        kind: "FelixConfiguration",
        headings: NAME,
        wide_headings: NAME,
        all_headings: NAME,
        read_only: false,
    },
    KindInfo {
        kind: "GlobalNetworkPolicy",
        headings: &["NAME"],
        wide_headings: &["NAME", "ORDER", "SELECTOR"],
        all_headings: &["NAME", "TIER", "ORDER", "SELECTOR"],
        read_only: false,
    },
    KindInfo {
        kind: "GlobalNetworkSet",
        headings: NAME,
        wide_headings: &["NAME", "NETS"],
        all_headings: &["NAME", "NETS"],
        read_only: false,
    },
    KindInfo {
        kind: "HostEndpoint",
        headings: &["NAME", "NODE"],
        wide_headings: &["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"],
        all_headings: &["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"],
        read_only: false,
    },
    KindInfo {
        kind: "IPAMBlock",
        headings: &["NAME", "CIDR", "AFFINITY"],
        wide_headings: &["NAME", "CIDR", "AFFINITY"],
        all_headings: &["NAME", "CIDR", "AFFINITY"],
        read_only: true,
    },
    KindInfo {
        kind: "IPAMConfiguration",
        headings: &["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"],
        wide_headings: &[
            "NAME",
            "STRICTAFFINITY",
            "AUTOALLOCATEBLOCKS",
            "MAXBLOCKSPERHOST",
        ],
        all_headings: &[
            "NAME",
            "STRICTAFFINITY",
            "AUTOALLOCATEBLOCKS",
            "MAXBLOCKSPERHOST",
        ],
        read_only: false,
    },
    KindInfo {
        kind: "IPAMHandle",
        headings: &["NAME", "HANDLEID"],
        wide_headings: &["NAME", "HANDLEID"],
        all_headings: &["NAME", "HANDLEID"],
        read_only: true,
    },
    KindInfo {
        kind: "IPPool",
        headings: &["NAME", "CIDR", "SELECTOR"],
        wide_headings: &[
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR",
        ],
        all_headings: &[
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR",
        ],
        read_only: false,
    },
    KindInfo {
        kind: "IPReservation",
        headings: NAME,
        wide_headings: &["NAME", "CIDRS"],
        all_headings: &["NAME", "CIDRS"],
        read_only: false,
    },
    KindInfo {
        kind: "KubeControllersConfiguration",
        headings: NAME,
        wide_headings: NAME,
        all_headings: NAME,
        read_only: false,
    },
    KindInfo {
        kind: "NetworkPolicy",
        headings: &["NAME", "TIER"],
        wide_headings: &["NAME", "TIER", "ORDER", "SELECTOR"],
        all_headings: &["NAMESPACE", "NAME", "TIER", "ORDER", "SELECTOR"],
        read_only: false,
    },
    KindInfo {
        kind: "NetworkSet",
        headings: NAME,
        wide_headings: &["NAME", "NETS"],
        all_headings: &["NAMESPACE", "NAME", "NETS"],
        read_only: false,
    },
    KindInfo {
        kind: "Node",
        headings: NAME,
        wide_headings: &["NAME", "ASN", "IPV4", "IPV6"],
        all_headings: &["NAME", "ASN", "IPV4", "IPV6"],
        read_only: false,
    },
    KindInfo {
        kind: "Profile",
        headings: NAME,
        wide_headings: &["NAME", "LABELS"],
        all_headings: &["NAME", "LABELS"],
        read_only: false,
    },
    KindInfo {
        kind: "StagedGlobalNetworkPolicy",
        headings: &["NAME", "TIER"],
        wide_headings: &["NAME", "TIER", "ORDER", "SELECTOR"],
        all_headings: &["NAME", "TIER", "ORDER", "SELECTOR"],
        read_only: false,
    },
    KindInfo {
        kind: "StagedKubernetesNetworkPolicy",
        headings: NAME,
        wide_headings: &["NAME", "PODSELECTOR"],
        all_headings: &["NAMESPACE", "NAME", "PODSELECTOR"],
        read_only: false,
    },
    KindInfo {
        kind: "StagedNetworkPolicy",
        headings: &["NAME", "TIER"],
        wide_headings: &["NAME", "TIER", "ORDER", "SELECTOR"],
        all_headings: &["NAMESPACE", "NAME", "TIER", "ORDER", "SELECTOR"],
        read_only: false,
    },
    KindInfo {
        kind: "Tier",
        headings: &["NAME", "ORDER"],
        wide_headings: &["NAME", "ORDER"],
        all_headings: &["NAME", "ORDER"],
        read_only: false,
    },
    KindInfo {
        kind: "WorkloadEndpoint",
        headings: &["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        wide_headings: &[
            "NAME",
            "WORKLOAD",
            "NODE",
            "NETWORKS",
            "INTERFACE",
            "PROFILES",
            "NATS",
        ],
        all_headings: &[
            "NAMESPACE",
            "NAME",
            "WORKLOAD",
            "NODE",
            "NETWORKS",
            "INTERFACE",
            "PROFILES",
            "NATS",
            "ORCHESTRATOR",
        ],
        read_only: false,
    },
];

/// The kind a YAML document names in its `kind` field (exact, case-sensitive as Calico).
pub fn by_kind(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// The kind a user names on the command line: kind, singular, plural or short name, any
/// case, as calico-api's registry knows them.
pub fn by_cli_name(name: &str) -> Option<&'static KindInfo> {
    calico_api::lookup_kind(name).and_then(|k| by_kind(k.kind))
}

/// What the table printer needs beyond the object itself.
#[derive(Debug, Clone, Default)]
pub struct TableContext {
    /// The global AS number (BGPConfiguration `default`, else 64512), shown for nodes
    /// without their own.
    pub global_as_number: Option<String>,
}

/// Value of one table column for one object. `None` when the heading does not exist
/// for the kind (custom-columns with a wrong name).
pub fn column(kind: &KindInfo, heading: &str, obj: &Value, ctx: &TableContext) -> Option<String> {
    if !kind.all_headings.contains(&heading) && heading != "NAMESPACE" {
        return None;
    }
    let spec = |path: &str| lookup(obj, &format!("spec.{path}"));
    let text = |path: &str| scalar(spec(path), "");
    let boolean = |path: &str| scalar(spec(path), "false");
    let number = |path: &str| scalar(spec(path), "0");
    let pointer = |path: &str| scalar(spec(path), "<nil>");
    let joined = |path: &str| join(spec(path), 0);
    let value = match heading {
        "NAME" => scalar(lookup(obj, "metadata.name"), ""),
        "NAMESPACE" => scalar(lookup(obj, "metadata.namespace"), ""),
        _ => match (kind.kind, heading) {
            ("IPPool", "CIDR") => text("cidr"),
            ("IPPool", "NAT") => boolean("natOutgoing"),
            ("IPPool", "IPIPMODE") => or_never(spec("ipipMode")),
            ("IPPool", "VXLANMODE") => or_never(spec("vxlanMode")),
            ("IPPool", "DISABLED") => boolean("disabled"),
            ("IPPool", "DISABLEBGPEXPORT") => boolean("disableBGPExport"),
            ("IPPool", "SELECTOR") => text("nodeSelector"),
            ("BGPPeer", "PEERIP") => text("peerIP"),
            ("BGPPeer", "NODE") => {
                let node = text("node");
                let selector = text("nodeSelector");
                if !node.is_empty() {
                    node
                } else if !selector.is_empty() {
                    selector
                } else {
                    "(global)".to_string()
                }
            }
            ("BGPPeer", "ASN") => number("asNumber"),
            ("BGPConfiguration", "LOGSEVERITY") => text("logSeverityScreen"),
            ("BGPConfiguration", "MESHENABLED") => match spec("nodeToNodeMeshEnabled") {
                Some(v) if !v.is_null() => scalar(Some(v), "-"),
                _ => "-".to_string(),
            },
            ("BGPConfiguration", "ASNUMBER") => match spec("asNumber") {
                Some(v) if !v.is_null() => scalar(Some(v), "-"),
                _ => "-".to_string(),
            },
            ("BGPFilter", "NUMEXPORT") => count(spec("exportV4"), spec("exportV6")),
            ("BGPFilter", "NUMIMPORT") => count(spec("importV4"), spec("importV6")),
            ("Node", "ASN") => match spec("bgp") {
                Some(bgp) if !bgp.is_null() => match lookup(bgp, "asNumber") {
                    Some(v) if !v.is_null() => scalar(Some(v), ""),
                    _ => format!(
                        "({})",
                        ctx.global_as_number
                            .clone()
                            .unwrap_or_else(|| "64512".into())
                    ),
                },
                _ => String::new(),
            },
            ("Node", "IPV4") => text("bgp.ipv4Address"),
            ("Node", "IPV6") => text("bgp.ipv6Address"),
            ("HostEndpoint", "NODE") => text("node"),
            ("HostEndpoint", "INTERFACE") => text("interfaceName"),
            ("HostEndpoint", "IPS") => joined("expectedIPs"),
            ("HostEndpoint", "PROFILES") => joined("profiles"),
            ("WorkloadEndpoint", "NODE") => text("node"),
            ("WorkloadEndpoint", "ORCHESTRATOR") => text("orchestrator"),
            ("WorkloadEndpoint", "WORKLOAD") => {
                let workload = text("workload");
                if workload.is_empty() {
                    text("pod")
                } else {
                    workload
                }
            }
            ("WorkloadEndpoint", "NETWORKS") => joined("ipNetworks"),
            ("WorkloadEndpoint", "NATS") => joined("ipNATs"),
            ("WorkloadEndpoint", "PROFILES") => joined("profiles"),
            ("WorkloadEndpoint", "INTERFACE") => text("interfaceName"),
            (
                "GlobalNetworkPolicy"
                | "NetworkPolicy"
                | "StagedNetworkPolicy"
                | "StagedGlobalNetworkPolicy",
                "ORDER",
            ) => pointer("order"),
            (
                "GlobalNetworkPolicy"
                | "NetworkPolicy"
                | "StagedNetworkPolicy"
                | "StagedGlobalNetworkPolicy",
                "SELECTOR",
            ) => text("selector"),
            (
                "GlobalNetworkPolicy"
                | "NetworkPolicy"
                | "StagedNetworkPolicy"
                | "StagedGlobalNetworkPolicy",
                "TIER",
            ) => text("tier"),
            ("StagedKubernetesNetworkPolicy", "PODSELECTOR") => match spec("podSelector") {
                Some(v) if !v.is_null() => render_label_selector(v),
                _ => String::new(),
            },
            ("Tier", "ORDER") => pointer("order"),
            ("GlobalNetworkSet" | "NetworkSet", "NETS") => join(spec("nets"), 80),
            ("IPReservation", "CIDRS") => join(spec("reservedCIDRs"), 80),
            ("Profile", "LABELS") => join(spec("labelsToApply"), 0),
            ("ClusterInformation", "CLUSTERGUID") => text("clusterGUID"),
            ("ClusterInformation", "CLUSTERTYPE") => text("clusterType"),
            ("ClusterInformation", "CALICOVERSION") => text("calicoVersion"),
            ("ClusterInformation", "DATASTOREREADY") => pointer("datastoreReady"),
            ("IPAMConfiguration", "STRICTAFFINITY") => boolean("strictAffinity"),
            ("IPAMConfiguration", "AUTOALLOCATEBLOCKS") => boolean("autoAllocateBlocks"),
            ("IPAMConfiguration", "MAXBLOCKSPERHOST") => number("maxBlocksPerHost"),
            ("CalicoNodeStatus", "NODE") => text("node"),
            ("CalicoNodeStatus", "CLASSES") => joined("classes"),
            ("BlockAffinity", "NODE") => text("node"),
            ("BlockAffinity", "CIDR") => text("cidr"),
            ("BlockAffinity", "STATE") => text("state"),
            ("IPAMBlock", "CIDR") => text("cidr"),
            ("IPAMBlock", "AFFINITY") => text("affinity"),
            ("IPAMHandle", "HANDLEID") => text("handleID"),
            _ => String::new(),
        },
    };
    Some(value)
}

/// Follows a dotted path (`spec.bgp.ipv4Address`) through nested objects.
pub fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, key| v.get(key))
}

/// How Go's templates print a scalar; `missing` stands for the Go zero value.
fn scalar(v: Option<&Value>, missing: &str) -> String {
    match v {
        None | Some(Value::Null) => missing.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => match n.as_f64() {
            // Go prints a float64 that holds an integer without a fraction (100, not 100.0).
            Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 1e15 => {
                format!("{}", f as i64)
            }
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

fn or_never(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => "Never".to_string(),
    }
}

fn count(a: Option<&Value>, b: Option<&Value>) -> String {
    let len = |v: Option<&Value>| v.and_then(Value::as_array).map_or(0, Vec::len);
    (len(a) + len(b)).to_string()
}

/// Joins a list (or `k=v` pairs of a map, sorted) with `,`, truncating to `max_len`
/// characters with a `...` suffix when `max_len` is not 0.
fn join(v: Option<&Value>, max_len: usize) -> String {
    let items: Vec<String> = match v {
        None | Some(Value::Null) => return String::new(),
        Some(Value::Array(items)) => items.iter().map(|i| scalar(Some(i), "")).collect(),
        Some(Value::Object(map)) => {
            let mut pairs: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}={}", scalar(Some(v), "")))
                .collect();
            pairs.sort();
            pairs
        }
        Some(other) => vec![scalar(Some(other), "")],
    };
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
        if max_len > 0 && out.len() > max_len {
            let mut cut = max_len.saturating_sub(3);
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("...");
            break;
        }
    }
    out
}

/// A Kubernetes label selector in kubectl's short form (`app=web,tier in (a,b)`).
fn render_label_selector(v: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(Value::Object(labels)) = v.get("matchLabels") {
        for (k, val) in labels {
            parts.push(format!("{k}={}", scalar(Some(val), "")));
        }
    }
    if let Some(Value::Array(exprs)) = v.get("matchExpressions") {
        for e in exprs {
            let key = scalar(e.get("key"), "");
            let op = scalar(e.get("operator"), "");
            let values = join(e.get("values"), 0);
            parts.push(match op.as_str() {
                "Exists" => key,
                "DoesNotExist" => format!("!{key}"),
                "NotIn" => format!("{key} notin ({values})"),
                _ => format!("{key} in ({values})"),
            });
        }
    }
    if parts.is_empty() {
        "<none>".to_string()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cli_names_resolve_case_insensitively_through_aliases() {
        assert_eq!(by_cli_name("IPPools").map(|k| k.kind), Some("IPPool"));
        assert_eq!(
            by_cli_name("gnp").map(|k| k.kind),
            Some("GlobalNetworkPolicy")
        );
        assert_eq!(
            by_cli_name("WorkloadEndpoint").map(|k| k.kind),
            Some("WorkloadEndpoint")
        );
        assert!(by_cli_name("pods").is_none());
    }

    #[test]
    fn the_cli_knows_every_registered_kind_and_nothing_else() {
        let cli: Vec<&str> = KINDS.iter().map(|k| k.kind).collect();
        let mut api: Vec<&str> = calico_api::KINDS.iter().map(|k| k.kind).collect();
        api.sort_unstable();
        let mut sorted = cli.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, api);
        // Deref reaches the registry entry of the same kind.
        for k in KINDS {
            assert_eq!(k.plural, calico_api::lookup_kind(k.kind).unwrap().plural);
        }
    }

    #[test]
    fn ippool_columns_use_calico_zero_values() {
        let pool = json!({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16"}});
        let kind = by_kind("IPPool").unwrap();
        let ctx = TableContext::default();
        let cols: Vec<String> = kind
            .wide_headings
            .iter()
            .map(|h| column(kind, h, &pool, &ctx).unwrap())
            .collect();
        assert_eq!(
            cols,
            [
                "p",
                "10.0.0.0/16",
                "false",
                "Never",
                "Never",
                "false",
                "false",
                ""
            ]
        );
        assert!(column(kind, "BOGUS", &pool, &ctx).is_none());
    }

    #[test]
    fn bgp_peer_node_column_falls_back_to_selector_then_global() {
        let kind = by_kind("BGPPeer").unwrap();
        let ctx = TableContext::default();
        let global = json!({"spec": {"peerIP": "1.2.3.4"}});
        let sel = json!({"spec": {"nodeSelector": "rack == 'a'"}});
        assert_eq!(column(kind, "NODE", &global, &ctx).unwrap(), "(global)");
        assert_eq!(column(kind, "NODE", &sel, &ctx).unwrap(), "rack == 'a'");
    }

    #[test]
    fn long_net_lists_are_truncated_to_80_characters() {
        let nets: Vec<String> = (0..20).map(|i| format!("10.{i}.0.0/16")).collect();
        let obj = json!({"spec": {"nets": nets}});
        let kind = by_kind("GlobalNetworkSet").unwrap();
        let out = column(kind, "NETS", &obj, &TableContext::default()).unwrap();
        assert_eq!(out.len(), 80);
        assert!(out.ends_with("..."));
    }
}
