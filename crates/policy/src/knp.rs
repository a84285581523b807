//! Kubernetes NetworkPolicy → Calico NetworkPolicy, as Calico's converter does it: name
//! `knp.default.<name>`, tier `default`, order 1000, pod selectors restricted to
//! `projectcalico.org/orchestrator == 'k8s'`, one Allow rule per (protocol, peer) with the
//! protocol's ports merged into ranges, and `types` from `policyTypes` (Ingress when empty).

use std::collections::{BTreeMap, BTreeSet};

use calico_selector::{Expr, ExprError, Selector};
use ipnet::IpNet;

use crate::model::{
    Action, DEFAULT_TIER, Direction, EntityRule, LABEL_ORCHESTRATOR, LabelMap, Policy, Port, Rule,
};

/// Order Calico gives every converted Kubernetes policy.
pub const KNP_ORDER: f64 = 1000.0;
/// Name prefix of converted Kubernetes policies.
pub const KNP_PREFIX: &str = "knp.default.";

/// `matchExpressions` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSelectorOperator {
    /// Value in the list.
    In,
    /// Value not in the list (or label absent).
    NotIn,
    /// Label present.
    Exists,
    /// Label absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: LabelSelectorOperator,
    /// Values (In/NotIn).
    pub values: Vec<String>,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// Exact matches.
    pub match_labels: LabelMap,
    /// Expressions.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// A port of a Kubernetes rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnpPortValue {
    /// Number.
    Number(u16),
    /// Named port.
    Name(String),
}

/// `NetworkPolicyPort`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KnpPort {
    /// `TCP` (default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
    /// Port; `None` means every port of the protocol.
    pub port: Option<KnpPortValue>,
    /// End of a numeric range.
    pub end_port: Option<u16>,
}

/// `ipBlock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpBlock {
    /// Network.
    pub cidr: IpNet,
    /// Exceptions.
    pub except: Vec<IpNet>,
}

/// `NetworkPolicyPeer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KnpPeer {
    /// Pods (in the policy's namespace unless a namespace selector is given).
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces.
    pub namespace_selector: Option<LabelSelector>,
    /// Addresses.
    pub ip_block: Option<IpBlock>,
}

/// An ingress (`from`) or egress (`to`) rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KnpRule {
    /// Ports; empty means all.
    pub ports: Vec<KnpPort>,
    /// Peers; empty means everyone.
    pub peers: Vec<KnpPeer>,
}

/// A Kubernetes `networking.k8s.io/v1` NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubernetesNetworkPolicy {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Pods the policy applies to.
    pub pod_selector: LabelSelector,
    /// `policyTypes`.
    pub policy_types: Vec<Direction>,
    /// Ingress rules.
    pub ingress: Vec<KnpRule>,
    /// Egress rules.
    pub egress: Vec<KnpRule>,
}

/// Why a Kubernetes policy cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnpError {
    /// A label key or value cannot be written as a Calico selector.
    #[error("NetworkPolicy {namespace}/{name}: {field}: cannot be expressed as a selector")]
    Selector {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Field path.
        field: String,
        /// Reason.
        #[source]
        source: ExprError,
    },
    /// A port or range is invalid.
    #[error("NetworkPolicy {namespace}/{name}: {field}: {reason}")]
    Port {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Field path.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SelectorKind {
    Pod,
    Namespace,
}

/// Calico's `k8sSelectorToCalico`; `None` means "no selector".
fn selector_expr(s: Option<&LabelSelector>, kind: SelectorKind) -> Option<Expr> {
    let mut parts = Vec::new();
    if kind == SelectorKind::Pod {
        parts.push(Expr::Eq(
            LABEL_ORCHESTRATOR.to_string(),
            calico_api::names::ORCHESTRATOR_K8S.to_string(),
        ));
    }
    let Some(s) = s else {
        return (!parts.is_empty()).then_some(Expr::And(parts));
    };
    if kind == SelectorKind::Namespace
        && s.match_labels.is_empty()
        && s.match_expressions.is_empty()
    {
        return Some(Expr::All);
    }
    for (k, v) in &s.match_labels {
        parts.push(Expr::Eq(k.clone(), v.clone()));
    }
    for e in &s.match_expressions {
        let values: BTreeSet<String> = e.values.iter().cloned().collect();
        parts.push(match e.operator {
            LabelSelectorOperator::In => Expr::In(e.key.clone(), values),
            LabelSelectorOperator::NotIn => Expr::NotIn(e.key.clone(), values),
            LabelSelectorOperator::Exists => Expr::Has(e.key.clone()),
            LabelSelectorOperator::DoesNotExist => Expr::Not(Box::new(Expr::Has(e.key.clone()))),
        });
    }
    (!parts.is_empty()).then_some(Expr::And(parts))
}

/// Merges numeric ports into the fewest ranges (Calico's `SimplifyPorts`); names pass through.
fn simplify(ports: Vec<Port>) -> Vec<Port> {
    let mut named = Vec::new();
    let mut numeric: Vec<(u16, u16)> = Vec::new();
    for p in ports {
        match p {
            Port::Range(a, b) => numeric.push((a, b)),
            n @ Port::Named(_) => named.push(n),
        }
    }
    numeric.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (a, b) in numeric {
        match merged.last_mut() {
            Some((_, end)) if u32::from(a) <= u32::from(*end) + 1 => *end = (*end).max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut out = named;
    out.extend(merged.into_iter().map(|(a, b)| Port::Range(a, b)));
    out
}

/// Translates a Kubernetes NetworkPolicy to the Calico policy that enforces it.
pub fn translate(knp: &KubernetesNetworkPolicy) -> Result<Policy, KnpError> {
    let sel_err = |field: String| {
        let (namespace, name) = (knp.namespace.clone(), knp.name.clone());
        move |source| KnpError::Selector {
            namespace,
            name,
            field,
            source,
        }
    };
    let text = |e: Option<Expr>, field: String| -> Result<String, KnpError> {
        match e {
            None => Ok(String::new()),
            Some(e) => Ok(Selector::from_expr(e).map_err(sel_err(field))?.to_string()),
        }
    };
    let convert_rules =
        |rules: &[KnpRule], list: &str, ingress: bool| -> Result<Vec<Rule>, KnpError> {
            let mut out = Vec::new();
            for (ri, r) in rules.iter().enumerate() {
                // Protocol → ports (None: all ports). An empty key: no port restriction at all.
                let mut by_protocol: BTreeMap<String, Option<Vec<Port>>> = BTreeMap::new();
                if r.ports.is_empty() {
                    by_protocol.insert(String::new(), None);
                }
                for (pi, p) in r.ports.iter().enumerate() {
                    let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".to_string());
                    let port = match &p.port {
                        None => None,
                        Some(KnpPortValue::Name(n)) => Some(Port::Named(n.clone())),
                        Some(KnpPortValue::Number(n)) => match p.end_port {
                            Some(end) if end < *n => {
                                return Err(KnpError::Port {
                                    namespace: knp.namespace.clone(),
                                    name: knp.name.clone(),
                                    field: format!("spec.{list}[{ri}].ports[{pi}].endPort"),
                                    reason: format!("endPort {end} is below port {n}"),
                                });
                            }
                            Some(end) => Some(Port::Range(*n, end)),
                            None => Some(Port::number(*n)),
                        },
                    };
                    let entry = by_protocol
                        .entry(protocol)
                        .or_insert_with(|| Some(Vec::new()));
                    match port {
                        None => *entry = None,
                        Some(port) => {
                            if let Some(list) = entry {
                                list.push(port);
                            }
                        }
                    }
                }
                let peers: Vec<Option<&KnpPeer>> = if r.peers.is_empty() {
                    vec![None]
                } else {
                    r.peers.iter().map(Some).collect()
                };
                for (protocol, ports) in by_protocol {
                    let ports = simplify(ports.unwrap_or_default());
                    for (peer_i, peer) in peers.iter().enumerate() {
                        let field = format!(
                            "spec.{list}[{ri}].{}[{peer_i}]",
                            if ingress { "from" } else { "to" }
                        );
                        let mut entity = EntityRule::default();
                        if let Some(peer) = peer {
                            if let Some(block) = &peer.ip_block {
                                entity.nets = vec![block.cidr.trunc()];
                                entity.not_nets = block.except.iter().map(IpNet::trunc).collect();
                            } else {
                                entity.selector = text(
                                    selector_expr(peer.pod_selector.as_ref(), SelectorKind::Pod),
                                    format!("{field}.podSelector"),
                                )?;
                                entity.namespace_selector = text(
                                    selector_expr(
                                        peer.namespace_selector.as_ref(),
                                        SelectorKind::Namespace,
                                    ),
                                    format!("{field}.namespaceSelector"),
                                )?;
                            }
                        }
                        let mut rule = Rule::new(Action::Allow);
                        rule.protocol = (!protocol.is_empty()).then(|| protocol.clone());
                        if ingress {
                            rule.source = entity;
                            rule.destination.ports = ports.clone();
                        } else {
                            entity.ports = ports.clone();
                            rule.destination = entity;
                        }
                        out.push(rule);
                    }
                }
            }
            Ok(out)
        };
    let ingress = convert_rules(&knp.ingress, "ingress", true)?;
    let egress = convert_rules(&knp.egress, "egress", false)?;
    let mut types: Vec<Direction> = Vec::new();
    for d in [Direction::Ingress, Direction::Egress] {
        if knp.policy_types.contains(&d) {
            types.push(d);
        }
    }
    if types.is_empty() {
        types.push(Direction::Ingress);
    }
    let mut policy = Policy::new(
        &format!("{KNP_PREFIX}{}", knp.name),
        &text(
            selector_expr(Some(&knp.pod_selector), SelectorKind::Pod),
            "spec.podSelector".to_string(),
        )?,
    );
    policy.namespace = Some(knp.namespace.clone());
    policy.tier = DEFAULT_TIER.to_string();
    policy.order = Some(KNP_ORDER);
    policy.types = types;
    policy.ingress = ingress;
    policy.egress = egress;
    Ok(policy)
}
