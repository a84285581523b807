//! `calicoctl node policy`: what this host's calico-node enforces, read from the kernel.
//!
//! For each workload or host endpoint of this host, per direction: the failsafe ports, the
//! tiers with their policies, the profiles and the fallthrough, in the order the packet
//! meets them, and per rule its action and the packets and bytes its nft `counter` has seen.
//! That is the shape of Calico's `calicoctl get workloadendpoint` plus Felix's per-rule
//! iptables counters (`iptables -L -v` on the `cali-pi-*` chains).
//!
//! Source of truth: the table `inet calico-rs` read over netlink
//! ([`calico_nftables::read`]), never the datastore: what is shown is what the kernel does.
//! Names come from the renderer's conventions (`calico_nftables::render`): endpoint chains
//! `tw-<if>`/`fw-<if>` (workloads), `fh-`/`th-`/`fhfw-`/`thfw-`/`fhpd-`/`fhu-`/`thu-<if>`
//! (host endpoints, `*` for all interfaces); jumps commented `tier <name>`, `policy <name>`,
//! `profile <name>`; rules commented `<list> rule <index>`. The datastore is read only to
//! turn `--endpoint NAME` into its interface.
//!
//! Counters of a policy's or profile's rules are per host: the rule-list chain is shared by
//! every endpoint the policy applies to (as Felix's `cali-pi-*` chains are). Failsafe,
//! end-of-tier and fallthrough counters are the endpoint's own.

use serde::Serialize;
use serde_json::Value;

use calico_nftables::read::{ChainDump, RuleDump, TableDump, read_table};
use calico_nftables::{NftError, NftSocket, TABLE_NAME, Verdict};

use crate::cli::NodePolicyArgs;
use crate::kinds;
use crate::output::tabwrite;
use crate::session::{Io, Session, SessionError};

/// Why `calicoctl node policy` failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyViewError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("This command must be run as root.")]
    NotRoot,
    #[error("unsupported output format {0:?} for node policy: expected table or json")]
    Format(String),
    #[error("reading table inet {TABLE_NAME} from the kernel: {0}")]
    Kernel(#[source] NftError),
    #[error(
        "no table inet {TABLE_NAME} on this host: calico-node is not enforcing policy here (is it running?)"
    )]
    NoTable,
    #[error("interface {interface:?} has no policy chains in table inet {TABLE_NAME} on this host")]
    UnknownInterface { interface: String },
    #[error(
        "no WorkloadEndpoint or HostEndpoint named {name:?}{}",
        in_namespace(namespace)
    )]
    UnknownEndpoint {
        name: String,
        namespace: Option<String>,
    },
    #[error("{name:?} names several endpoints ({found}): give the namespace with -n")]
    AmbiguousEndpoint { name: String, found: String },
    #[error("{endpoint} has no spec.interfaceName")]
    NoInterface { endpoint: String },
    #[error(
        "{endpoint} uses interface {interface:?}, which has no policy chains in table inet {TABLE_NAME} on this host (is the endpoint on this node?)"
    )]
    NotEnforcedHere { endpoint: String, interface: String },
    #[error("encoding the view as JSON: {0}")]
    Encode(String),
}

fn in_namespace(ns: &Option<String>) -> String {
    ns.as_ref()
        .map(|n| format!(" in namespace {n:?}"))
        .unwrap_or_default()
}

/// One endpoint's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    /// `workload` or `host`.
    pub kind: &'static str,
    /// The interface (`*`: a host endpoint for every interface).
    pub interface: String,
    /// The datastore endpoint, when asked for by name (`WorkloadEndpoint ns/name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// One entry per chain the endpoint has, in the order of [`STAGES`].
    pub directions: Vec<DirectionView>,
}

/// One direction (or stage, for host endpoints) of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectionView {
    /// `ingress`, `egress`, `forward ingress`, `pre-DNAT ingress`, `untracked egress`, …
    pub direction: &'static str,
    /// The endpoint chain in the table.
    pub chain: String,
    /// What the packet meets, in order.
    pub rows: Vec<Row>,
}

/// One line of the view: a rule, or a verdict of the endpoint chain itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// 1-based position of the step (failsafe entry, tier, profile, fallthrough).
    pub step: usize,
    /// The tier, for policy rows and the end of the tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// `failsafe`, `policy`, `end of tier`, `profile` or `fallthrough`.
    pub kind: &'static str,
    /// Policy or profile name (`namespace/name` for a NetworkPolicy); the failsafe entry.
    pub name: String,
    /// Index of the rule in the policy's or profile's `ingress`/`egress` list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// `Allow`, `Deny`, `Pass` or `Log`.
    pub action: &'static str,
    /// Packets the rule matched (summed over its nft rules: one per IP family and port
    /// alternative).
    pub packets: u64,
    /// Bytes likewise.
    pub bytes: u64,
}

/// Endpoint chain prefixes, what they are, and whether they belong to host endpoints.
const STAGES: [(&str, &str, bool); 9] = [
    ("tw-", "ingress", false),
    ("fw-", "egress", false),
    ("fh-", "ingress", true),
    ("th-", "egress", true),
    ("fhfw-", "forward ingress", true),
    ("thfw-", "forward egress", true),
    ("fhpd-", "pre-DNAT ingress", true),
    ("fhu-", "untracked ingress", true),
    ("thu-", "untracked egress", true),
];

/// Every endpoint the table has chains for (`interface`: only that one), workloads first,
/// then host endpoints, each by interface name.
pub fn endpoints(table: &TableDump, interface: Option<&str>) -> Vec<EndpointView> {
    // Tier chains share their endpoint chain's prefix: they are the targets of `tier` jumps.
    let tier_chains: Vec<&str> = table
        .chains
        .iter()
        .flat_map(|c| &c.rules)
        .filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with("tier ")))
        .filter_map(|r| match &r.verdict {
            Some(Verdict::Jump(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let mut out: Vec<EndpointView> = Vec::new();
    for host in [false, true] {
        let mut found: Vec<(String, DirectionView)> = Vec::new();
        for chain in &table.chains {
            if chain.base.is_some() || tier_chains.contains(&chain.name.as_str()) {
                continue;
            }
            for (prefix, direction, is_host) in STAGES {
                let Some(iface) = chain.name.strip_prefix(prefix) else {
                    continue;
                };
                if is_host != host || interface.is_some_and(|i| i != iface) {
                    continue;
                }
                found.push((
                    iface.to_owned(),
                    DirectionView {
                        direction,
                        chain: chain.name.clone(),
                        rows: rows(table, chain),
                    },
                ));
            }
        }
        let stage = |d: &DirectionView| {
            STAGES
                .iter()
                .position(|s| s.1 == d.direction && d.chain.starts_with(s.0))
        };
        found.sort_by(|a, b| a.0.cmp(&b.0).then(stage(&a.1).cmp(&stage(&b.1))));
        for (iface, d) in found {
            match out.last_mut() {
                Some(e) if e.interface == iface && e.kind == kind(host) => e.directions.push(d),
                _ => out.push(EndpointView {
                    kind: kind(host),
                    interface: iface,
                    endpoint: None,
                    directions: vec![d],
                }),
            }
        }
    }
    out
}

fn kind(host: bool) -> &'static str {
    if host { "host" } else { "workload" }
}

/// The rows of one endpoint chain: its own rules in order, tier and profile jumps expanded.
fn rows(table: &TableDump, chain: &ChainDump) -> Vec<Row> {
    let mut out = Vec::new();
    let mut step = 0;
    for rule in &chain.rules {
        let comment = rule.comment.as_deref().unwrap_or("");
        match &rule.verdict {
            Some(Verdict::Jump(target)) => {
                if let Some(tier) = comment.strip_prefix("tier ") {
                    step += 1;
                    tier_rows(table, target, tier, step, &mut out);
                } else if let Some(profile) = comment.strip_prefix("profile ") {
                    step += 1;
                    list_rows(table, target, None, "profile", profile, step, &mut out);
                }
            }
            Some(v @ (Verdict::Accept | Verdict::Drop)) if rule.counter.is_some() => {
                step += 1;
                let (kind, name) = match comment.strip_prefix("failsafe ") {
                    Some(f) => ("failsafe", f.to_owned()),
                    None => ("fallthrough", comment.to_owned()),
                };
                out.push(row(step, None, kind, name, None, action(v, rule), rule));
            }
            _ => {}
        }
    }
    out
}

fn tier_rows(table: &TableDump, chain: &str, tier: &str, step: usize, out: &mut Vec<Row>) {
    let Some(chain) = table.chain(chain) else {
        return;
    };
    for rule in &chain.rules {
        let comment = rule.comment.as_deref().unwrap_or("");
        match &rule.verdict {
            Some(Verdict::Jump(target)) => {
                if let Some(policy) = comment.strip_prefix("policy ") {
                    list_rows(table, target, Some(tier), "policy", policy, step, out);
                }
            }
            Some(v @ Verdict::Drop) if comment.starts_with("end of tier") => {
                let name = tier.to_owned();
                out.push(row(
                    step,
                    Some(tier),
                    "end of tier",
                    name,
                    None,
                    action(v, rule),
                    rule,
                ));
            }
            _ => {}
        }
    }
}

/// One row per rule of a policy's or profile's chain; nft rules of the same Calico rule
/// (one per IP family and port alternative) are summed.
fn list_rows(
    table: &TableDump,
    chain: &str,
    tier: Option<&str>,
    kind: &'static str,
    name: &str,
    step: usize,
    out: &mut Vec<Row>,
) {
    let Some(chain) = table.chain(chain) else {
        return;
    };
    let first = out.len();
    for rule in &chain.rules {
        let Some(index) = rule
            .comment
            .as_deref()
            .and_then(|c| c.rsplit_once(" rule "))
            .and_then(|(_, i)| i.parse::<usize>().ok())
        else {
            continue;
        };
        let act = match &rule.verdict {
            Some(v) => action(v, rule),
            None if rule.expressions.iter().any(|e| e == "log") => "Log",
            None => continue,
        };
        let counter = rule.counter.unwrap_or_default();
        match out[first..].iter_mut().find(|r| r.rule == Some(index)) {
            Some(r) => {
                r.packets += counter.packets;
                r.bytes += counter.bytes;
            }
            None => out.push(Row {
                step,
                tier: tier.map(str::to_owned),
                kind,
                name: name.to_owned(),
                rule: Some(index),
                action: act,
                packets: counter.packets,
                bytes: counter.bytes,
            }),
        }
    }
    if out.len() == first {
        // A policy or profile without rules for this direction still applies (and, in a
        // tier, still leads to the end-of-tier drop): show it.
        out.push(Row {
            step,
            tier: tier.map(str::to_owned),
            kind,
            name: name.to_owned(),
            rule: None,
            action: "-",
            packets: 0,
            bytes: 0,
        });
    }
}

fn action(v: &Verdict, rule: &RuleDump) -> &'static str {
    match v {
        Verdict::Accept => "Allow",
        Verdict::Drop => "Deny",
        // Only a Pass returns from a policy's or profile's chain.
        Verdict::Return => "Pass",
        Verdict::Jump(_) | Verdict::Goto(_) if rule.expressions.iter().any(|e| e == "log") => "Log",
        Verdict::Jump(_) | Verdict::Goto(_) => "-",
    }
}

fn row(
    step: usize,
    tier: Option<&str>,
    kind: &'static str,
    name: String,
    rule: Option<usize>,
    action: &'static str,
    r: &RuleDump,
) -> Row {
    let c = r.counter.unwrap_or_default();
    Row {
        step,
        tier: tier.map(str::to_owned),
        kind,
        name,
        rule,
        action,
        packets: c.packets,
        bytes: c.bytes,
    }
}

/// The text layout: per endpoint and direction a heading, then one line per row, in
/// calicoctl's table style.
pub fn render_table(views: &[EndpointView]) -> String {
    let mut out = String::new();
    for v in views {
        let who = match &v.endpoint {
            Some(e) => format!("{e} (interface {})", v.interface),
            None if v.kind == "host" => format!("host endpoint interface {}", v.interface),
            None => format!("workload interface {}", v.interface),
        };
        for d in &v.directions {
            out.push_str(&format!("{who}, {} (chain {}):\n", d.direction, d.chain));
            let mut rows = vec![
                [
                    "STEP", "TIER", "KIND", "NAME", "RULE", "ACTION", "PACKETS", "BYTES",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for r in &d.rows {
                rows.push(vec![
                    r.step.to_string(),
                    r.tier.clone().unwrap_or_else(|| "-".into()),
                    r.kind.into(),
                    r.name.clone(),
                    r.rule.map_or_else(|| "-".into(), |i| i.to_string()),
                    r.action.into(),
                    r.packets.to_string(),
                    r.bytes.to_string(),
                ]);
            }
            out.push_str(&tabwrite(&rows));
            out.push('\n');
        }
    }
    out
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `calicoctl node policy [--interface IF | --endpoint NAME [-n NS]] [-o table|json]`.
pub async fn run(
    args: &NodePolicyArgs,
    config_path: Option<&str>,
    io: &mut Io<'_>,
    session: &Session,
) -> Result<(), PolicyViewError> {
    let json = match args.output.as_str() {
        "table" => false,
        "json" => true,
        other => return Err(PolicyViewError::Format(other.into())),
    };
    if !is_root() {
        return Err(PolicyViewError::NotRoot);
    }
    let (interface, endpoint) = match &args.endpoint {
        Some(name) => {
            let (id, iface) =
                resolve_endpoint(name, args.namespace.as_deref(), config_path, io, session).await?;
            (Some(iface), Some(id))
        }
        None => (args.interface.clone(), None),
    };
    let table = read_kernel()?;
    let mut views = endpoints(&table, interface.as_deref());
    if let Some(iface) = &interface
        && views.is_empty()
    {
        return Err(match endpoint {
            Some(endpoint) => PolicyViewError::NotEnforcedHere {
                endpoint,
                interface: iface.clone(),
            },
            None => PolicyViewError::UnknownInterface {
                interface: iface.clone(),
            },
        });
    }
    for v in &mut views {
        v.endpoint = endpoint.clone();
    }
    let text = if json {
        let mut s = serde_json::to_string_pretty(&views)
            .map_err(|e| PolicyViewError::Encode(e.to_string()))?;
        s.push('\n');
        s
    } else {
        render_table(&views)
    };
    let _ = io.out.write_all(text.as_bytes());
    Ok(())
}

fn read_kernel() -> Result<TableDump, PolicyViewError> {
    let mut socket = NftSocket::open().map_err(PolicyViewError::Kernel)?;
    read_table(&mut socket, TABLE_NAME)
        .map_err(PolicyViewError::Kernel)?
        .ok_or(PolicyViewError::NoTable)
}

/// `--endpoint NAME`: the WorkloadEndpoint (in `namespace`, or any) or HostEndpoint of that
/// name, as its description and interface.
async fn resolve_endpoint(
    name: &str,
    namespace: Option<&str>,
    config_path: Option<&str>,
    io: &Io<'_>,
    session: &Session,
) -> Result<(String, String), PolicyViewError> {
    let store = session.store(config_path, io).await?;
    let mut found: Vec<(String, Option<String>)> = Vec::new();
    for kind in ["WorkloadEndpoint", "HostEndpoint"] {
        let Some(info) = kinds::by_kind(kind) else {
            continue;
        };
        for s in store
            .list(info, namespace)
            .await
            .map_err(SessionError::from)?
        {
            let meta = &s.value["metadata"];
            if meta["name"].as_str() != Some(name) {
                continue;
            }
            let id = match meta["namespace"].as_str() {
                Some(ns) if info.namespaced => format!("{kind} {ns}/{name}"),
                _ => format!("{kind} {name}"),
            };
            let iface = match &s.value["spec"]["interfaceName"] {
                Value::String(i) if !i.is_empty() => Some(i.clone()),
                // A host endpoint without an interface covers all of them (rendered as `*`).
                _ if kind == "HostEndpoint" => Some("*".into()),
                _ => None,
            };
            found.push((id, iface));
        }
    }
    match found.len() {
        0 => Err(PolicyViewError::UnknownEndpoint {
            name: name.into(),
            namespace: namespace.map(str::to_owned),
        }),
        1 => {
            let (id, iface) = found.remove(0);
            let iface = iface.ok_or_else(|| PolicyViewError::NoInterface {
                endpoint: id.clone(),
            })?;
            Ok((id, iface))
        }
        _ => Err(PolicyViewError::AmbiguousEndpoint {
            name: name.into(),
            found: found
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_nftables::read::Counter;

    fn rule(comment: Option<&str>, counter: Option<u64>, verdict: Option<Verdict>) -> RuleDump {
        RuleDump {
            handle: 0,
            comment: comment.map(str::to_owned),
            counter: counter.map(|p| Counter {
                packets: p,
                bytes: p * 100,
            }),
            verdict,
            expressions: vec!["immediate".into()],
        }
    }

    fn chain(name: &str, rules: Vec<RuleDump>) -> ChainDump {
        ChainDump {
            name: name.into(),
            base: None,
            rules,
        }
    }

    fn jump(comment: &str, to: &str) -> RuleDump {
        rule(Some(comment), None, Some(Verdict::Jump(to.into())))
    }

    /// (step, kind, name, rule, action, packets) of a row.
    type Line<'a> = (usize, &'a str, &'a str, Option<usize>, &'a str, u64);

    /// The layout the renderer produces for one workload with a tier of two policies, a
    /// profile and the default fallthrough.
    fn table() -> TableDump {
        let mut log = rule(Some("policy ns1/web ingress rule 1"), Some(4), None);
        log.expressions = vec!["counter".into(), "log".into()];
        TableDump {
            name: TABLE_NAME.into(),
            chains: vec![
                ChainDump {
                    name: "to-wl".into(),
                    base: Some((2, 1)),
                    rules: vec![rule(
                        Some("allow established,related"),
                        Some(9),
                        Some(Verdict::Accept),
                    )],
                },
                chain(
                    "pol:i:ns1/web",
                    vec![
                        rule(
                            Some("policy ns1/web ingress rule 0"),
                            Some(3),
                            Some(Verdict::Accept),
                        ),
                        // The same rule for IPv6: summed with the IPv4 one.
                        rule(
                            Some("policy ns1/web ingress rule 0"),
                            Some(2),
                            Some(Verdict::Accept),
                        ),
                        log,
                        rule(
                            Some("policy ns1/web ingress rule 2"),
                            Some(1),
                            Some(Verdict::Drop),
                        ),
                    ],
                ),
                chain("pol:i:empty", vec![]),
                chain(
                    "pro:i:kns.ns1",
                    vec![rule(
                        Some("profile kns.ns1 ingress rule 0"),
                        Some(7),
                        Some(Verdict::Return),
                    )],
                ),
                chain(
                    "tw-cali1",
                    vec![
                        rule(None, None, None),
                        jump("tier default", "tw-cali1-t0"),
                        rule(None, None, None),
                        jump("profile kns.ns1", "pro:i:kns.ns1"),
                        rule(
                            Some("no policy or profile allowed"),
                            Some(5),
                            Some(Verdict::Drop),
                        ),
                    ],
                ),
                chain(
                    "tw-cali1-t0",
                    vec![
                        jump("policy ns1/web", "pol:i:ns1/web"),
                        rule(Some("passed"), None, Some(Verdict::Return)),
                        jump("policy empty", "pol:i:empty"),
                        rule(Some("passed"), None, Some(Verdict::Return)),
                        rule(Some("end of tier default"), Some(6), Some(Verdict::Drop)),
                    ],
                ),
                chain("fw-cali1", vec![rule(None, None, None)]),
                chain(
                    "fh-eth0",
                    vec![rule(
                        Some("failsafe inbound 6 22"),
                        Some(8),
                        Some(Verdict::Accept),
                    )],
                ),
            ],
        }
    }

    #[test]
    fn a_workload_chain_reads_as_tiers_policies_profiles_and_fallthrough_in_order() {
        let views = endpoints(&table(), None);
        assert_eq!(views.len(), 2, "{views:#?}");
        let w = &views[0];
        assert_eq!((w.kind, w.interface.as_str()), ("workload", "cali1"));
        let dirs: Vec<(&str, &str)> = w
            .directions
            .iter()
            .map(|d| (d.direction, d.chain.as_str()))
            .collect();
        assert_eq!(dirs, vec![("ingress", "tw-cali1"), ("egress", "fw-cali1")]);
        let got: Vec<Line<'_>> = w.directions[0]
            .rows
            .iter()
            .map(|r| (r.step, r.kind, r.name.as_str(), r.rule, r.action, r.packets))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "policy", "ns1/web", Some(0), "Allow", 5),
                (1, "policy", "ns1/web", Some(1), "Log", 4),
                (1, "policy", "ns1/web", Some(2), "Deny", 1),
                (1, "policy", "empty", None, "-", 0),
                (1, "end of tier", "default", None, "Deny", 6),
                (2, "profile", "kns.ns1", Some(0), "Pass", 7),
                (
                    3,
                    "fallthrough",
                    "no policy or profile allowed",
                    None,
                    "Deny",
                    5
                ),
            ]
        );
        assert_eq!(w.directions[0].rows[0].bytes, 500);
        assert_eq!(w.directions[0].rows[0].tier.as_deref(), Some("default"));
        assert!(w.directions[1].rows.is_empty());
        let h = &views[1];
        assert_eq!((h.kind, h.interface.as_str()), ("host", "eth0"));
        assert_eq!(h.directions[0].rows[0].kind, "failsafe");
        assert_eq!(h.directions[0].rows[0].name, "inbound 6 22");
    }

    #[test]
    fn an_interface_filter_keeps_only_that_endpoint() {
        let t = table();
        assert_eq!(endpoints(&t, Some("cali1")).len(), 1);
        assert_eq!(endpoints(&t, Some("eth0"))[0].kind, "host");
        assert!(endpoints(&t, Some("cali9")).is_empty());
        // A tier chain is never mistaken for an endpoint.
        assert!(endpoints(&t, Some("cali1-t0")).is_empty());
    }

    #[test]
    fn the_table_layout_names_each_direction_and_aligns_columns() {
        let text = render_table(&endpoints(&table(), Some("cali1")));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "workload interface cali1, ingress (chain tw-cali1):"
        );
        assert!(lines[1].starts_with("STEP   TIER      KIND"), "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == [
                        "1", "default", "policy", "ns1/web", "0", "Allow", "5", "500"
                    ]),
            "{text}"
        );
        assert!(text.contains("workload interface cali1, egress (chain fw-cali1):"));
    }
}
