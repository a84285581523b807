//! Kubernetes NetworkPolicies (`networking.k8s.io/v1`) as Calico NetworkPolicies in etcd:
//! `knp.default.<name>` in the same namespace, translated by `calico_policy::knp::translate`
//! (Calico's converter: default tier, order 1000, pod selectors restricted to
//! `projectcalico.org/orchestrator == 'k8s'`), owner-marked like every mirrored object.
//!
//! Level-triggered, as the profiles: [`plan`] compares the policies the cluster's KNPs imply
//! with the Kubernetes-owned `knp.default.*` policies in etcd; [`sync`] applies the difference;
//! [`list_and_sync`] lists the KNPs through the API first. A KNP that cannot be translated is
//! reported and its last etcd copy is kept (an invalid update is never mirrored); a
//! `knp.default.*` policy without the owner mark is never touched.
//!
//! Calico's name rules let a user apply a projectcalico.org NetworkPolicy named `knp.default.x`
//! too, and the CRD reconciler mirrors it with the same owner mark. So the copies made here also
//! carry [`SOURCE_ANNOTATION`]: this sync deletes or overwrites only policies with that mark,
//! and the two writers can never undo each other (a clash is logged and the etcd copy kept).

use std::collections::BTreeSet;

use calico_api::{CalicoResource, EntityRule as ApiEntityRule, NetworkPolicy, NetworkPolicySpec};
use calico_api::{Port as ApiPort, Protocol};
use calico_datastore::ResourceError;
use calico_policy::knp::{
    IpBlock, KNP_PREFIX, KnpError, KnpPeer, KnpPort, KnpPortValue, KnpRule,
    KubernetesNetworkPolicy, LabelSelector, LabelSelectorOperator, LabelSelectorRequirement,
    translate,
};
use calico_policy::model::{self, Direction};
use k8s_openapi::api::networking::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, ObjectMeta};

use crate::mirror::{EtcdMirror, MirrorError, owned_by_kubernetes};

/// Marks an etcd policy as the translation of a Kubernetes NetworkPolicy.
pub const SOURCE_ANNOTATION: &str = "projectcalico.org/source";
/// Value of [`SOURCE_ANNOTATION`] on translated policies.
pub const SOURCE_KNP: &str = "networking.k8s.io/NetworkPolicy";

fn from_knp(meta: &ObjectMeta) -> bool {
    owned_by_kubernetes(meta)
        && meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_ANNOTATION))
            .is_some_and(|v| v == SOURCE_KNP)
}

#[derive(Debug, thiserror::Error)]
pub enum KnpSyncError {
    #[error("NetworkPolicy {namespace}/{name}: {field}: {reason}")]
    Field {
        namespace: String,
        name: String,
        field: String,
        reason: String,
    },
    #[error(transparent)]
    Translate(#[from] KnpError),
    #[error("listing Kubernetes NetworkPolicies: {0}")]
    ListKubernetes(#[source] Box<kube::Error>),
    #[error("listing Calico NetworkPolicies in etcd: {0}")]
    ListEtcd(#[source] ResourceError),
    #[error(transparent)]
    Mirror(Box<MirrorError>),
}

impl From<MirrorError> for KnpSyncError {
    fn from(e: MirrorError) -> Self {
        KnpSyncError::Mirror(Box::new(e))
    }
}

struct Ctx<'a> {
    namespace: &'a str,
    name: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: String, reason: impl Into<String>) -> KnpSyncError {
        KnpSyncError::Field {
            namespace: self.namespace.into(),
            name: self.name.into(),
            field,
            reason: reason.into(),
        }
    }

    fn selector(
        &self,
        s: &meta::LabelSelector,
        field: &str,
    ) -> Result<LabelSelector, KnpSyncError> {
        let mut out = LabelSelector {
            match_labels: s.match_labels.clone().unwrap_or_default(),
            match_expressions: Vec::new(),
        };
        for (i, e) in s.match_expressions.iter().flatten().enumerate() {
            let operator = match e.operator.as_str() {
                "In" => LabelSelectorOperator::In,
                "NotIn" => LabelSelectorOperator::NotIn,
                "Exists" => LabelSelectorOperator::Exists,
                "DoesNotExist" => LabelSelectorOperator::DoesNotExist,
                other => {
                    return Err(self.err(
                        format!("{field}.matchExpressions[{i}].operator"),
                        format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                    ));
                }
            };
            out.match_expressions.push(LabelSelectorRequirement {
                key: e.key.clone(),
                operator,
                values: e.values.clone().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    fn port(&self, p: &k8s::NetworkPolicyPort, field: &str) -> Result<KnpPort, KnpSyncError> {
        let number = |n: i32, f: &str| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| self.err(format!("{field}.{f}"), format!("{n} is not in 1..=65535")))
        };
        let port = match &p.port {
            None => None,
            Some(IntOrString::Int(n)) => Some(KnpPortValue::Number(number(*n, "port")?)),
            Some(IntOrString::String(s)) => Some(KnpPortValue::Name(s.clone())),
        };
        let end_port = p.end_port.map(|n| number(n, "endPort")).transpose()?;
        Ok(KnpPort {
            protocol: p.protocol.clone(),
            port,
            end_port,
        })
    }

    fn peer(&self, p: &k8s::NetworkPolicyPeer, field: &str) -> Result<KnpPeer, KnpSyncError> {
        let ip_block = match &p.ip_block {
            None => None,
            Some(b) => {
                let net = |s: &str, f: String| {
                    s.parse()
                        .map_err(|e| self.err(f, format!("{s:?} is not a CIDR: {e}")))
                };
                let cidr = net(&b.cidr, format!("{field}.ipBlock.cidr"))?;
                let except = b
                    .except
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, e)| net(e, format!("{field}.ipBlock.except[{i}]")))
                    .collect::<Result<_, _>>()?;
                Some(IpBlock { cidr, except })
            }
        };
        Ok(KnpPeer {
            pod_selector: p
                .pod_selector
                .as_ref()
                .map(|s| self.selector(s, &format!("{field}.podSelector")))
                .transpose()?,
            namespace_selector: p
                .namespace_selector
                .as_ref()
                .map(|s| self.selector(s, &format!("{field}.namespaceSelector")))
                .transpose()?,
            ip_block,
        })
    }

    fn rule(
        &self,
        ports: Option<&Vec<k8s::NetworkPolicyPort>>,
        peers: Option<&Vec<k8s::NetworkPolicyPeer>>,
        field: &str,
        peer_list: &str,
    ) -> Result<KnpRule, KnpSyncError> {
        Ok(KnpRule {
            ports: ports
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| self.port(p, &format!("{field}.ports[{i}]")))
                .collect::<Result<_, _>>()?,
            peers: peers
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| self.peer(p, &format!("{field}.{peer_list}[{i}]")))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The translator's input for a Kubernetes NetworkPolicy (the k8s-openapi types adapted).
pub fn translator_input(knp: &k8s::NetworkPolicy) -> Result<KubernetesNetworkPolicy, KnpSyncError> {
    let name = knp.metadata.name.clone().unwrap_or_default();
    let namespace = knp.metadata.namespace.clone().unwrap_or_default();
    let cx = Ctx {
        namespace: &namespace,
        name: &name,
    };
    let spec = knp.spec.clone().unwrap_or_default();
    let pod_selector = match &spec.pod_selector {
        Some(s) => cx.selector(s, "spec.podSelector")?,
        None => LabelSelector::default(),
    };
    let mut policy_types = Vec::new();
    for (i, t) in spec.policy_types.iter().flatten().enumerate() {
        policy_types.push(match t.as_str() {
            "Ingress" => Direction::Ingress,
            "Egress" => Direction::Egress,
            other => {
                return Err(cx.err(
                    format!("spec.policyTypes[{i}]"),
                    format!("{other:?} is not Ingress or Egress"),
                ));
            }
        });
    }
    let ingress = spec
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            cx.rule(
                r.ports.as_ref(),
                r.from.as_ref(),
                &format!("spec.ingress[{i}]"),
                "from",
            )
        })
        .collect::<Result<_, _>>()?;
    let egress = spec
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            cx.rule(
                r.ports.as_ref(),
                r.to.as_ref(),
                &format!("spec.egress[{i}]"),
                "to",
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(KubernetesNetworkPolicy {
        name,
        namespace,
        pod_selector,
        policy_types,
        ingress,
        egress,
    })
}

fn some_text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn api_ports(ports: &[model::Port]) -> Vec<ApiPort> {
    ports
        .iter()
        .map(|p| match p {
            model::Port::Range(a, b) if a == b => ApiPort::Number(*a),
            model::Port::Range(a, b) => ApiPort::Range { min: *a, max: *b },
            model::Port::Named(n) => ApiPort::Named(n.clone()),
        })
        .collect()
}

/// The translator produces only nets, selectors and ports on each side.
fn api_entity(e: &model::EntityRule) -> Option<ApiEntityRule> {
    let out = ApiEntityRule {
        namespace_selector: some_text(&e.namespace_selector),
        nets: e.nets.iter().map(ToString::to_string).collect(),
        not_nets: e.not_nets.iter().map(ToString::to_string).collect(),
        not_ports: api_ports(&e.not_ports),
        not_selector: some_text(&e.not_selector),
        ports: api_ports(&e.ports),
        selector: some_text(&e.selector),
        ..ApiEntityRule::default()
    };
    (out != ApiEntityRule::default()).then_some(out)
}

fn api_rule(r: &model::Rule, field: &str, cx: &Ctx) -> Result<calico_api::Rule, KnpSyncError> {
    // Fields the Kubernetes translation never sets; refuse rather than drop them silently.
    if r.icmp.is_some()
        || r.not_icmp.is_some()
        || r.ip_version.is_some()
        || r.not_protocol.is_some()
        || r.source.service_accounts.is_some()
        || r.destination.service_accounts.is_some()
    {
        return Err(cx.err(
            field.into(),
            "translated rule uses a field the mirror does not carry",
        ));
    }
    let protocol = r
        .protocol
        .as_deref()
        .map(|p| Protocol::parse(p).map_err(|e| cx.err(format!("{field}.protocol"), e.to_string())))
        .transpose()?;
    let action = match r.action {
        model::Action::Allow => calico_api::Action::Allow,
        model::Action::Deny => calico_api::Action::Deny,
        model::Action::Log => calico_api::Action::Log,
        model::Action::Pass => calico_api::Action::Pass,
    };
    Ok(calico_api::Rule {
        action,
        destination: api_entity(&r.destination),
        http: None,
        icmp: None,
        ip_version: None,
        metadata: None,
        not_icmp: None,
        not_protocol: None,
        protocol,
        source: api_entity(&r.source),
    })
}

/// The Calico NetworkPolicy `knp.default.<name>` that enforces a Kubernetes NetworkPolicy.
pub fn calico_policy(knp: &k8s::NetworkPolicy) -> Result<NetworkPolicy, KnpSyncError> {
    let input = translator_input(knp)?;
    let p = translate(&input)?;
    let cx = Ctx {
        namespace: &input.namespace,
        name: &input.name,
    };
    let rules = |rules: &[model::Rule], list: &str| {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| api_rule(r, &format!("(translated) spec.{list}[{i}]"), &cx))
            .collect::<Result<Vec<_>, _>>()
    };
    let types = p
        .types
        .iter()
        .map(|d| match d {
            Direction::Ingress => calico_api::PolicyType::Ingress,
            Direction::Egress => calico_api::PolicyType::Egress,
        })
        .collect();
    Ok(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(p.name.clone()),
            namespace: Some(input.namespace.clone()),
            annotations: Some([(SOURCE_ANNOTATION.to_string(), SOURCE_KNP.to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: NetworkPolicySpec {
            egress: rules(&p.egress, "egress")?,
            ingress: rules(&p.ingress, "ingress")?,
            order: p.order,
            selector: some_text(&p.selector),
            tier: some_text(&p.tier),
            types,
            ..NetworkPolicySpec::default()
        },
    })
}

/// What [`sync`] must do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Policies to create or update (the mirror skips unchanged ones).
    pub upsert: Vec<NetworkPolicy>,
    /// `(namespace, name)` of translations not written because etcd holds a policy of that
    /// name from another writer (calicoctl, or a projectcalico.org object in Kubernetes).
    pub clash: Vec<(String, String)>,
    /// `(namespace, name)` of Kubernetes-owned `knp.default.*` policies whose KNP is gone.
    pub delete: Vec<(String, String)>,
    /// KNPs that could not be translated (their etcd copies, if any, are kept).
    pub invalid: Vec<String>,
}

/// The policies the KNPs imply vs the Kubernetes-owned `knp.default.*` policies in etcd (pure).
pub fn plan(knps: &[k8s::NetworkPolicy], in_etcd: &[NetworkPolicy]) -> Plan {
    let mut out = Plan::default();
    // Every existing KNP protects its etcd copy, also when it is invalid now.
    let mut existing: BTreeSet<(String, String)> = BTreeSet::new();
    for knp in knps {
        let ns = knp.metadata.namespace.clone().unwrap_or_default();
        let name = knp.metadata.name.clone().unwrap_or_default();
        existing.insert((ns, format!("{KNP_PREFIX}{name}")));
        match calico_policy(knp) {
            Ok(p) => {
                let key = (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                );
                let other_writer = in_etcd.iter().any(|s| {
                    s.metadata.namespace.as_ref() == Some(&key.0)
                        && s.metadata.name.as_ref() == Some(&key.1)
                        && !from_knp(&s.metadata)
                });
                if other_writer {
                    out.clash.push(key);
                } else {
                    out.upsert.push(p);
                }
            }
            Err(e) => out.invalid.push(e.to_string()),
        }
    }
    out.delete = in_etcd
        .iter()
        .filter(|p| from_knp(&p.metadata))
        .filter_map(|p| Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?)))
        .filter(|(_, n)| n.starts_with(KNP_PREFIX))
        .filter(|key| !existing.contains(key))
        .collect();
    out
}

/// Makes etcd's Kubernetes-owned `knp.default.*` policies match `knps`.
pub async fn sync(mirror: &EtcdMirror, knps: &[k8s::NetworkPolicy]) -> Result<Plan, KnpSyncError> {
    let in_etcd = mirror
        .datastore()
        .list::<NetworkPolicy>(None)
        .await
        .map_err(KnpSyncError::ListEtcd)?
        .items;
    let plan = plan(knps, &in_etcd);
    for reason in &plan.invalid {
        tracing::warn!(%reason, "Kubernetes NetworkPolicy not mirrored");
    }
    for (namespace, name) in &plan.clash {
        tracing::warn!(
            %namespace, %name,
            "Kubernetes NetworkPolicy not mirrored: etcd holds a policy of that name from \
             calicoctl or a projectcalico.org object; rename or delete one of them"
        );
    }
    for p in &plan.upsert {
        mirror.upsert(p).await?;
    }
    for (ns, name) in &plan.delete {
        if let Some(p) = in_etcd.iter().find(|p| {
            CalicoResource::meta(*p).name.as_deref() == Some(name)
                && p.metadata.namespace.as_deref() == Some(ns)
        }) {
            mirror.remove(p).await?;
        }
    }
    Ok(plan)
}

/// Lists every Kubernetes NetworkPolicy (all namespaces) and [`sync`]s etcd to them.
pub async fn list_and_sync(
    client: kube::Client,
    mirror: &EtcdMirror,
) -> Result<Plan, KnpSyncError> {
    let api: Api<k8s::NetworkPolicy> = Api::all(client);
    let knps = api
        .list(&ListParams::default())
        .await
        .map_err(|e| KnpSyncError::ListKubernetes(Box::new(e)))?;
    sync(mirror, &knps.items).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn knp(v: serde_json::Value) -> k8s::NetworkPolicy {
        serde_json::from_value(v).expect("NetworkPolicy JSON")
    }

    #[test]
    fn translates_as_calico_names_and_orders_it() {
        let p = calico_policy(&knp(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"role": "lb"}}},
                             {"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]}}],
                    "ports": [{"port": 80}, {"port": 81}, {"protocol": "UDP", "port": 53}]
                }],
                "policyTypes": ["Ingress", "Egress"]
            }
        })))
        .unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("knp.default.web"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(p.spec.order, Some(1000.0));
        assert_eq!(p.spec.tier.as_deref(), Some("default"));
        assert_eq!(
            p.spec.types,
            vec![
                calico_api::PolicyType::Ingress,
                calico_api::PolicyType::Egress
            ]
        );
        let sel = p.spec.selector.as_deref().unwrap();
        assert!(
            sel.contains("projectcalico.org/orchestrator") && sel.contains("app"),
            "{sel}"
        );
        // (TCP, UDP) x (pod peer, ipBlock peer); TCP 80 and 81 merged into one range.
        assert_eq!(p.spec.ingress.len(), 4);
        let tcp_block = p
            .spec
            .ingress
            .iter()
            .find(|r| {
                r.protocol == Some(Protocol::Name("TCP".into()))
                    && r.source.as_ref().is_some_and(|s| !s.nets.is_empty())
            })
            .unwrap();
        let src = tcp_block.source.as_ref().unwrap();
        assert_eq!(src.nets, vec!["10.1.0.0/16".to_string()]);
        assert_eq!(src.not_nets, vec!["10.1.2.0/24".to_string()]);
        assert_eq!(
            tcp_block.destination.as_ref().unwrap().ports,
            vec![ApiPort::Range { min: 80, max: 81 }]
        );
        assert!(p.spec.egress.is_empty());
        // The result passes calico-api's own validation (the rules calicoctl applies).
        calico_api::Validate::validate(&p).unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let e = calico_policy(&knp(json!({
            "metadata": {"name": "x", "namespace": "n"},
            "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}
        })))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.ingress[0].ports[0].port") && e.contains("70000"),
            "{e}"
        );
        let e = calico_policy(&knp(json!({
            "metadata": {"name": "x", "namespace": "n"},
            "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "nope"}}]}]}
        })))
        .unwrap_err()
        .to_string();
        assert!(e.contains("spec.egress[0].to[0].ipBlock.cidr"), "{e}");
    }

    #[test]
    fn plan_keeps_invalid_knps_copy_and_deletes_only_owned_stale_ones() {
        let owned = |ns: &str, name: &str| {
            let mut p = calico_policy(&knp(json!({
                "metadata": {"name": name, "namespace": ns}, "spec": {"podSelector": {}}
            })))
            .unwrap();
            p.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(
                    crate::OWNER_ANNOTATION.to_string(),
                    crate::OWNER_KUBERNETES.to_string(),
                );
            p
        };
        let mut foreign = owned("n", "foreign");
        foreign.metadata.annotations = None;
        // A projectcalico.org NetworkPolicy applied with kubectl under a knp. name: owned by
        // Kubernetes but not a translation; never deleted or overwritten here.
        let mut crd = owned("n", "crd");
        crd.metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .remove(SOURCE_ANNOTATION);
        let in_etcd = vec![
            owned("n", "keep"),
            owned("n", "gone"),
            owned("n", "broken"),
            owned("other", "keep"),
            foreign,
            crd.clone(),
            {
                let mut c = crd;
                c.metadata.name = Some("knp.default.crd2".into());
                c
            },
        ];
        let knps = [
            knp(json!({"metadata": {"name": "keep", "namespace": "n"}, "spec": {}})),
            knp(json!({"metadata": {"name": "crd", "namespace": "n"}, "spec": {}})),
            knp(json!({"metadata": {"name": "broken", "namespace": "n"},
                       "spec": {"policyTypes": ["Sideways"]}})),
        ];
        let p = plan(&knps, &in_etcd);
        assert_eq!(p.upsert.len(), 1);
        assert_eq!(
            p.clash,
            vec![("n".to_string(), "knp.default.crd".to_string())]
        );
        assert_eq!(p.invalid.len(), 1, "{:?}", p.invalid);
        assert!(
            p.invalid[0].contains("spec.policyTypes[0]"),
            "{:?}",
            p.invalid
        );
        let mut delete = p.delete.clone();
        delete.sort();
        assert_eq!(
            delete,
            vec![
                ("n".to_string(), "knp.default.gone".to_string()),
                ("other".to_string(), "knp.default.keep".to_string()),
            ]
        );
    }
}
