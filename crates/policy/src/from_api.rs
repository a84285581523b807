//! Conversion of `calico-api` v3 resources into the policy [`model`](crate::model).
//!
//! The model stays independent of the API crate; this module is the one place that knows both.
//! Every error names the resource (`Kind namespace/name`) and the field path (`spec.ingress[0]
//! .source.nets[1]`), so a bad resource in the datastore is easy to find.
//!
//! FelixConfiguration's policy fields are converted by [`crate::felix`] (the model's failsafe
//! ports are Calico's defaults until the caller sets them from there).
//!
//! Not converted (yet): namespace and service-account labels (etcd mode
//! has no Namespace/ServiceAccount resources; `pcns.`/`pcsa.` labels stay empty). A rule with
//! an `http` match (Calico enforces it only with its application layer policy) or a
//! `services` match (Felix resolves it to the Service's endpoints, which calico-rs does not
//! track) converts with [`Rule::unenforced`] set: the compiler skips it, or enforces a Deny
//! without that match; nothing is silently widened.

use std::net::IpAddr;

use calico_api::kinds as api;
use ipnet::IpNet;

use crate::model::{
    Action, DEFAULT_TIER, DEFAULT_TIER_ORDER, Direction, EntityRule, HostEndpoint, IcmpFields,
    IpVersion, LabelMap, NamedPort, NetworkSet, Policy, PolicyModel, Port, Profile, Protocol, Rule,
    ServiceAccountMatch, Tier, TierDefaultAction, Unenforced, WorkloadEndpoint,
};

/// A resource that could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The resource has no `metadata.name`.
    #[error("{kind}: metadata.name is missing")]
    MissingName {
        /// Resource kind.
        kind: &'static str,
    },
    /// A field holds a value the policy model cannot take.
    #[error("{kind} {name}: {field}: {reason}")]
    InvalidField {
        /// Resource kind.
        kind: &'static str,
        /// `namespace/name` or `name`.
        name: String,
        /// Path of the field inside the resource.
        field: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Every policy-relevant resource, as read from the datastore.
#[derive(Debug, Clone, Default)]
pub struct ApiResources {
    /// Tiers.
    pub tiers: Vec<api::Tier>,
    /// Namespaced policies.
    pub network_policies: Vec<api::NetworkPolicy>,
    /// Global policies.
    pub global_network_policies: Vec<api::GlobalNetworkPolicy>,
    /// Staged namespaced policies (reported, never enforced).
    pub staged_network_policies: Vec<api::StagedNetworkPolicy>,
    /// Staged global policies (reported, never enforced).
    pub staged_global_network_policies: Vec<api::StagedGlobalNetworkPolicy>,
    /// Profiles.
    pub profiles: Vec<api::Profile>,
    /// Workload endpoints of every node (remote ones still fill IP sets).
    pub workload_endpoints: Vec<api::WorkloadEndpoint>,
    /// Host endpoints of every node (remote ones still fill IP sets).
    pub host_endpoints: Vec<api::HostEndpoint>,
    /// Namespaced network sets.
    pub network_sets: Vec<api::NetworkSet>,
    /// Global network sets.
    pub global_network_sets: Vec<api::GlobalNetworkSet>,
}

/// Identity of the resource being converted, for error messages.
struct Ctx {
    kind: &'static str,
    name: String,
}

impl Ctx {
    fn new(
        kind: &'static str,
        meta: &calico_api::ObjectMeta,
    ) -> Result<(Ctx, String, Option<String>), ConvertError> {
        let name = meta
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or(ConvertError::MissingName { kind })?;
        let namespace = meta.namespace.clone().filter(|n| !n.is_empty());
        let shown = match &namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.clone(),
        };
        Ok((Ctx { kind, name: shown }, name, namespace))
    }

    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConvertError {
        ConvertError::InvalidField {
            kind: self.kind,
            name: self.name.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Converts everything into one model (failsafe ports: Calico's defaults). The first
/// resource that does not convert fails it; [`crate::isolate::compile_isolated`] isolates
/// policies and profiles instead.
pub fn model_from_resources(r: &ApiResources) -> Result<PolicyModel, ConvertError> {
    let mut model = model_without_policies(r)?;
    for p in &r.network_policies {
        model.policies.push(network_policy(p)?);
    }
    for p in &r.global_network_policies {
        model.policies.push(global_network_policy(p)?);
    }
    for p in &r.staged_network_policies {
        model.policies.push(staged_network_policy(p)?);
    }
    for p in &r.staged_global_network_policies {
        model.policies.push(staged_global_network_policy(p)?);
    }
    for p in &r.profiles {
        model.profiles.push(profile(p)?);
    }
    Ok(model)
}

/// Everything but policies and profiles: tiers, endpoints, network sets.
pub fn model_without_policies(r: &ApiResources) -> Result<PolicyModel, ConvertError> {
    let mut network_sets = Vec::new();
    for s in &r.network_sets {
        network_sets.push(network_set(s)?);
    }
    for s in &r.global_network_sets {
        network_sets.push(global_network_set(s)?);
    }
    Ok(PolicyModel {
        tiers: tiers(&r.tiers)?,
        policies: Vec::new(),
        profiles: Vec::new(),
        workload_endpoints: r
            .workload_endpoints
            .iter()
            .map(workload_endpoint)
            .collect::<Result<_, _>>()?,
        host_endpoints: r
            .host_endpoints
            .iter()
            .map(host_endpoint)
            .collect::<Result<_, _>>()?,
        network_sets,
        failsafe: Default::default(),
    })
}

/// Tiers, with the `default` tier (order 1,000,000, Deny) added when the datastore has none.
pub fn tiers(list: &[api::Tier]) -> Result<Vec<Tier>, ConvertError> {
    let mut out = list.iter().map(tier).collect::<Result<Vec<_>, _>>()?;
    if !out.iter().any(|t| t.name == DEFAULT_TIER) {
        out.push(Tier {
            name: DEFAULT_TIER.to_string(),
            order: Some(DEFAULT_TIER_ORDER),
            default_action: TierDefaultAction::Deny,
        });
    }
    Ok(out)
}

/// One Tier.
pub fn tier(t: &api::Tier) -> Result<Tier, ConvertError> {
    let (_, name, _) = Ctx::new("Tier", &t.metadata)?;
    let order = match (t.spec.order, name == DEFAULT_TIER) {
        (None, true) => Some(DEFAULT_TIER_ORDER),
        (o, _) => o,
    };
    Ok(Tier {
        name,
        order,
        default_action: match t.spec.default_action {
            Some(api::TierDefaultAction::Pass) => TierDefaultAction::Pass,
            Some(api::TierDefaultAction::Deny) | None => TierDefaultAction::Deny,
        },
    })
}

/// The fields policies of every kind share.
struct PolicyParts<'a> {
    selector: &'a Option<String>,
    namespace_selector: &'a Option<String>,
    service_account_selector: &'a Option<String>,
    tier: &'a Option<String>,
    order: Option<f64>,
    types: &'a [api::PolicyType],
    ingress: &'a [api::Rule],
    egress: &'a [api::Rule],
    do_not_track: Option<bool>,
    pre_dnat: Option<bool>,
    apply_on_forward: Option<bool>,
}

fn policy(
    kind: &'static str,
    meta: &calico_api::ObjectMeta,
    namespaced: bool,
    staged: bool,
    p: PolicyParts<'_>,
) -> Result<Policy, ConvertError> {
    let (ctx, name, namespace) = Ctx::new(kind, meta)?;
    let namespace = if namespaced {
        Some(namespace.ok_or_else(|| ctx.err("metadata.namespace", "missing"))?)
    } else {
        None
    };
    Ok(Policy {
        name,
        namespace,
        tier: p.tier.clone().unwrap_or_default(),
        order: p.order,
        selector: p.selector.clone().unwrap_or_default(),
        namespace_selector: p.namespace_selector.clone().unwrap_or_default(),
        service_account_selector: p.service_account_selector.clone().unwrap_or_default(),
        types: p
            .types
            .iter()
            .map(|t| match t {
                api::PolicyType::Ingress => Direction::Ingress,
                api::PolicyType::Egress => Direction::Egress,
            })
            .collect(),
        ingress: rules(&ctx, "spec.ingress", p.ingress)?,
        egress: rules(&ctx, "spec.egress", p.egress)?,
        do_not_track: p.do_not_track.unwrap_or(false),
        pre_dnat: p.pre_dnat.unwrap_or(false),
        apply_on_forward: p.apply_on_forward.unwrap_or(false),
        staged,
    })
}

/// A NetworkPolicy.
pub fn network_policy(p: &api::NetworkPolicy) -> Result<Policy, ConvertError> {
    let s = &p.spec;
    policy(
        "NetworkPolicy",
        &p.metadata,
        true,
        false,
        PolicyParts {
            selector: &s.selector,
            namespace_selector: &None,
            service_account_selector: &s.service_account_selector,
            tier: &s.tier,
            order: s.order,
            types: &s.types,
            ingress: &s.ingress,
            egress: &s.egress,
            do_not_track: None,
            pre_dnat: None,
            apply_on_forward: None,
        },
    )
}

/// A StagedNetworkPolicy: converted like a NetworkPolicy, marked staged.
pub fn staged_network_policy(p: &api::StagedNetworkPolicy) -> Result<Policy, ConvertError> {
    let s = &p.spec;
    policy(
        "StagedNetworkPolicy",
        &p.metadata,
        true,
        true,
        PolicyParts {
            selector: &s.selector,
            namespace_selector: &None,
            service_account_selector: &s.service_account_selector,
            tier: &s.tier,
            order: s.order,
            types: &s.types,
            ingress: &s.ingress,
            egress: &s.egress,
            do_not_track: None,
            pre_dnat: None,
            apply_on_forward: None,
        },
    )
}

/// A GlobalNetworkPolicy.
pub fn global_network_policy(p: &api::GlobalNetworkPolicy) -> Result<Policy, ConvertError> {
    let s = &p.spec;
    policy(
        "GlobalNetworkPolicy",
        &p.metadata,
        false,
        false,
        PolicyParts {
            selector: &s.selector,
            namespace_selector: &s.namespace_selector,
            service_account_selector: &s.service_account_selector,
            tier: &s.tier,
            order: s.order,
            types: &s.types,
            ingress: &s.ingress,
            egress: &s.egress,
            do_not_track: s.do_not_track,
            pre_dnat: s.pre_dnat,
            apply_on_forward: s.apply_on_forward,
        },
    )
}

/// A StagedGlobalNetworkPolicy: converted like a GlobalNetworkPolicy, marked staged.
pub fn staged_global_network_policy(
    p: &api::StagedGlobalNetworkPolicy,
) -> Result<Policy, ConvertError> {
    let s = &p.spec;
    policy(
        "StagedGlobalNetworkPolicy",
        &p.metadata,
        false,
        true,
        PolicyParts {
            selector: &s.selector,
            namespace_selector: &s.namespace_selector,
            service_account_selector: &s.service_account_selector,
            tier: &s.tier,
            order: s.order,
            types: &s.types,
            ingress: &s.ingress,
            egress: &s.egress,
            do_not_track: s.do_not_track,
            pre_dnat: s.pre_dnat,
            apply_on_forward: s.apply_on_forward,
        },
    )
}

/// A Profile, with its `labelsToApply`.
pub fn profile(p: &api::Profile) -> Result<Profile, ConvertError> {
    let (ctx, name, _) = Ctx::new("Profile", &p.metadata)?;
    Ok(Profile {
        name,
        labels_to_apply: p.spec.labels_to_apply.clone(),
        ingress: rules(&ctx, "spec.ingress", &p.spec.ingress)?,
        egress: rules(&ctx, "spec.egress", &p.spec.egress)?,
    })
}

/// A WorkloadEndpoint: interface, addresses, labels, namespace, profiles and named ports.
pub fn workload_endpoint(w: &api::WorkloadEndpoint) -> Result<WorkloadEndpoint, ConvertError> {
    let (ctx, name, namespace) = Ctx::new("WorkloadEndpoint", &w.metadata)?;
    let s = &w.spec;
    let ips = s
        .ip_networks
        .iter()
        .enumerate()
        .map(|(i, n)| net(&ctx, &format!("spec.ipNetworks[{i}]"), n))
        .collect::<Result<_, _>>()?;
    let ports = s
        .ports
        .iter()
        .map(|p| NamedPort {
            name: p.name.clone(),
            protocol: Protocol(p.protocol.number()),
            port: p.port,
        })
        .collect();
    Ok(WorkloadEndpoint {
        name,
        node: s.node.clone().unwrap_or_default(),
        namespace: namespace.unwrap_or_default(),
        interface_name: s.interface_name.clone().unwrap_or_default(),
        labels: w.metadata.labels.clone().unwrap_or_default(),
        orchestrator: s.orchestrator.clone(),
        namespace_labels: LabelMap::new(),
        service_account: s.service_account_name.clone().filter(|n| !n.is_empty()),
        service_account_labels: LabelMap::new(),
        ips,
        ports,
        profiles: s.profiles.clone(),
    })
}

/// A HostEndpoint: node, interface (`*` or absent: all of the host's interfaces), expected
/// IPs, labels, profiles and named ports.
pub fn host_endpoint(h: &api::HostEndpoint) -> Result<HostEndpoint, ConvertError> {
    let (ctx, name, _) = Ctx::new("HostEndpoint", &h.metadata)?;
    let s = &h.spec;
    let node = s
        .node
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ctx.err("spec.node", "missing"))?;
    let interface_name = s.interface_name.clone().filter(|i| !i.is_empty());
    if interface_name.is_none() && s.expected_ips.is_empty() {
        // Calico's validation: a host endpoint names an interface or its expected IPs.
        return Err(ctx.err(
            "spec.interfaceName",
            "either interfaceName or expectedIPs must be set",
        ));
    }
    let expected_ips = s
        .expected_ips
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.parse::<IpAddr>().map_err(|e| {
                ctx.err(
                    format!("spec.expectedIPs[{i}]"),
                    format!("{a:?} is not an IP address: {e}"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let ports = s
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let port = u16::try_from(p.port)
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| {
                    ctx.err(
                        format!("spec.ports[{i}].port"),
                        format!("{} is not a port number (1-65535)", p.port),
                    )
                })?;
            Ok(NamedPort {
                name: p.name.clone(),
                protocol: Protocol(p.protocol.number()),
                port,
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(HostEndpoint {
        name,
        node,
        interface_name,
        expected_ips,
        labels: h.metadata.labels.clone().unwrap_or_default(),
        ports,
        profiles: s.profiles.clone(),
    })
}

/// A NetworkSet.
pub fn network_set(s: &api::NetworkSet) -> Result<NetworkSet, ConvertError> {
    let (ctx, name, namespace) = Ctx::new("NetworkSet", &s.metadata)?;
    let namespace = Some(namespace.ok_or_else(|| ctx.err("metadata.namespace", "missing"))?);
    Ok(NetworkSet {
        name,
        namespace,
        namespace_labels: LabelMap::new(),
        labels: s.metadata.labels.clone().unwrap_or_default(),
        nets: nets(&ctx, "spec.nets", &s.spec.nets)?,
    })
}

/// A GlobalNetworkSet.
pub fn global_network_set(s: &api::GlobalNetworkSet) -> Result<NetworkSet, ConvertError> {
    let (ctx, name, _) = Ctx::new("GlobalNetworkSet", &s.metadata)?;
    Ok(NetworkSet {
        name,
        namespace: None,
        namespace_labels: LabelMap::new(),
        labels: s.metadata.labels.clone().unwrap_or_default(),
        nets: nets(&ctx, "spec.nets", &s.spec.nets)?,
    })
}

fn rules(ctx: &Ctx, field: &str, list: &[api::Rule]) -> Result<Vec<Rule>, ConvertError> {
    list.iter()
        .enumerate()
        .map(|(i, r)| rule(ctx, &format!("{field}[{i}]"), r))
        .collect()
}

fn rule(ctx: &Ctx, field: &str, r: &api::Rule) -> Result<Rule, ConvertError> {
    let services = |side: &str, e: &Option<api::EntityRule>| {
        e.as_ref()
            .filter(|e| e.services.is_some())
            .map(|_| Unenforced {
                field: format!("{field}.{side}.services"),
                reason:
                    "a services match needs the Service's endpoints, which calico-rs does not track"
                        .into(),
            })
    };
    let unenforced = if r.http.is_some() {
        Some(Unenforced {
            field: format!("{field}.http"),
            reason: "an HTTP match needs Calico's application layer policy, which calico-rs does not have".into(),
        })
    } else {
        services("source", &r.source).or_else(|| services("destination", &r.destination))
    };
    let ip_version = match r.ip_version {
        None => None,
        Some(4) => Some(IpVersion::V4),
        Some(6) => Some(IpVersion::V6),
        Some(v) => {
            return Err(ctx.err(format!("{field}.ipVersion"), format!("{v} is not 4 or 6")));
        }
    };
    Ok(Rule {
        action: match r.action {
            api::Action::Allow => Action::Allow,
            api::Action::Deny => Action::Deny,
            api::Action::Log => Action::Log,
            api::Action::Pass => Action::Pass,
        },
        ip_version,
        protocol: r.protocol.as_ref().map(|p| p.to_string()),
        not_protocol: r.not_protocol.as_ref().map(|p| p.to_string()),
        icmp: r
            .icmp
            .as_ref()
            .map(|i| icmp(ctx, &format!("{field}.icmp"), i))
            .transpose()?,
        not_icmp: r
            .not_icmp
            .as_ref()
            .map(|i| icmp(ctx, &format!("{field}.notICMP"), i))
            .transpose()?,
        source: entity(ctx, &format!("{field}.source"), r.source.as_ref())?,
        destination: entity(ctx, &format!("{field}.destination"), r.destination.as_ref())?,
        unenforced,
    })
}

fn icmp(ctx: &Ctx, field: &str, i: &api::ICMPFields) -> Result<IcmpFields, ConvertError> {
    let num = |v: Option<i64>, what: &str, max: i64| -> Result<Option<u8>, ConvertError> {
        v.map(|n| {
            u8::try_from(n)
                .ok()
                .filter(|&b| i64::from(b) <= max)
                .ok_or_else(|| ctx.err(format!("{field}.{what}"), format!("{n} is not 0..={max}")))
        })
        .transpose()
    };
    let icmp_type = num(i.r#type, "type", 254)?;
    let code = num(i.code, "code", 255)?;
    if code.is_some() && icmp_type.is_none() {
        return Err(ctx.err(format!("{field}.code"), "a code needs a type"));
    }
    Ok(IcmpFields { icmp_type, code })
}

fn entity(ctx: &Ctx, field: &str, e: Option<&api::EntityRule>) -> Result<EntityRule, ConvertError> {
    let Some(e) = e else {
        return Ok(EntityRule::default());
    };
    // `services` is not converted: the rule carries it as `unenforced` (see `rule`).
    Ok(EntityRule {
        nets: nets(ctx, &format!("{field}.nets"), &e.nets)?,
        not_nets: nets(ctx, &format!("{field}.notNets"), &e.not_nets)?,
        selector: e.selector.clone().unwrap_or_default(),
        not_selector: e.not_selector.clone().unwrap_or_default(),
        namespace_selector: e.namespace_selector.clone().unwrap_or_default(),
        service_accounts: e.service_accounts.as_ref().map(|sa| ServiceAccountMatch {
            names: sa.names.clone(),
            selector: sa.selector.clone().unwrap_or_default(),
        }),
        ports: e.ports.iter().map(port).collect(),
        not_ports: e.not_ports.iter().map(port).collect(),
    })
}

fn port(p: &api::Port) -> Port {
    match p {
        api::Port::Number(n) => Port::Range(*n, *n),
        api::Port::Range { min, max } => Port::Range(*min, *max),
        api::Port::Named(name) => Port::Named(name.clone()),
    }
}

fn nets(ctx: &Ctx, field: &str, list: &[String]) -> Result<Vec<IpNet>, ConvertError> {
    list.iter()
        .enumerate()
        .map(|(i, n)| net(ctx, &format!("{field}[{i}]"), n))
        .collect()
}

/// A CIDR, or a bare address (Calico reads it as a /32 or /128). Host bits are cleared, as
/// Calico's validation normalises them.
fn net(ctx: &Ctx, field: &str, text: &str) -> Result<IpNet, ConvertError> {
    if let Ok(n) = text.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| ctx.err(field, format!("{text:?} is not a CIDR or IP address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml_ng::from_str(text).expect("fixture parses")
    }

    #[test]
    fn docker_network_profile_and_endpoint() {
        let p: api::Profile = yaml(
            r#"
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: net1}
spec:
  ingress: [{action: Allow, source: {selector: has(net1)}}]
  egress: [{action: Allow}]
  labelsToApply: {net1: ""}
"#,
        );
        let p = profile(&p).unwrap();
        assert_eq!(p.name, "net1");
        assert_eq!(p.labels_to_apply.get("net1").map(String::as_str), Some(""));
        assert_eq!(p.ingress.len(), 1);
        assert_eq!(p.ingress[0].action, Action::Allow);
        assert_eq!(p.ingress[0].source.selector, "has(net1)");
        assert_eq!(p.egress, vec![Rule::new(Action::Allow)]);

        let w: api::WorkloadEndpoint = yaml(
            r#"
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-libnetwork-libnetwork-abc
  namespace: libnetwork
  labels: {projectcalico.org/namespace: libnetwork, app: web}
spec:
  orchestrator: libnetwork
  node: node1
  interfaceName: cali0123456789a
  ipNetworks: [192.168.0.5/32, "fd00::5/128"]
  profiles: [net1]
  ports: [{name: http, protocol: TCP, port: 8080}]
"#,
        );
        let w = workload_endpoint(&w).unwrap();
        assert_eq!(w.namespace, "libnetwork");
        assert_eq!(w.node, "node1");
        assert_eq!(w.interface_name, "cali0123456789a");
        assert_eq!(w.orchestrator.as_deref(), Some("libnetwork"));
        assert_eq!(
            w.ips,
            vec![
                "192.168.0.5/32".parse::<IpNet>().unwrap(),
                "fd00::5/128".parse().unwrap()
            ]
        );
        assert_eq!(w.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(w.profiles, vec!["net1".to_string()]);
        assert_eq!(
            w.ports,
            vec![NamedPort {
                name: "http".into(),
                protocol: Protocol::TCP,
                port: 8080
            }]
        );
    }

    #[test]
    fn global_policy_with_every_rule_field() {
        let p: api::GlobalNetworkPolicy = yaml(
            r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.allow-some}
spec:
  tier: security
  order: 10
  selector: role == 'web'
  namespaceSelector: global()
  types: [Ingress, Egress]
  doNotTrack: false
  applyOnForward: true
  ingress:
  - action: Allow
    ipVersion: 4
    protocol: TCP
    source:
      nets: [10.0.0.0/8, 192.168.1.7]
      notNets: [10.1.2.3/16]
      selector: app == 'x'
      notSelector: bad == 'true'
      namespaceSelector: team == 'a'
      serviceAccounts: {names: [sa1], selector: tier == 'gold'}
    destination:
      ports: [80, "8000:8080", http]
      notPorts: [8081]
  - action: Deny
    protocol: ICMP
    icmp: {type: 8, code: 0}
    notICMP: {type: 3}
  egress:
  - action: Pass
    notProtocol: 17
  - action: Log
"#,
        );
        let p = global_network_policy(&p).unwrap();
        assert_eq!(p.name, "security.allow-some");
        assert_eq!(p.namespace, None);
        assert_eq!(p.tier, "security");
        assert_eq!(p.order, Some(10.0));
        assert_eq!(p.namespace_selector, "global()");
        assert_eq!(p.types, vec![Direction::Ingress, Direction::Egress]);
        assert!(p.apply_on_forward && !p.do_not_track && !p.pre_dnat && !p.staged);
        let r = &p.ingress[0];
        assert_eq!(r.ip_version, Some(IpVersion::V4));
        assert_eq!(r.protocol.as_deref(), Some("TCP"));
        assert_eq!(
            r.source.nets,
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.168.1.7/32".parse().unwrap()
            ]
        );
        // Host bits cleared.
        assert_eq!(r.source.not_nets, vec!["10.1.0.0/16".parse().unwrap()]);
        assert_eq!(r.source.not_selector, "bad == 'true'");
        assert_eq!(r.source.namespace_selector, "team == 'a'");
        assert_eq!(
            r.source.service_accounts,
            Some(ServiceAccountMatch {
                names: vec!["sa1".into()],
                selector: "tier == 'gold'".into()
            })
        );
        assert_eq!(
            r.destination.ports,
            vec![
                Port::Range(80, 80),
                Port::Range(8000, 8080),
                Port::Named("http".into())
            ]
        );
        assert_eq!(r.destination.not_ports, vec![Port::Range(8081, 8081)]);
        let icmp = &p.ingress[1];
        assert_eq!(icmp.action, Action::Deny);
        assert_eq!(
            icmp.icmp,
            Some(IcmpFields {
                icmp_type: Some(8),
                code: Some(0)
            })
        );
        assert_eq!(
            icmp.not_icmp,
            Some(IcmpFields {
                icmp_type: Some(3),
                code: None
            })
        );
        assert_eq!(p.egress[0].action, Action::Pass);
        assert_eq!(p.egress[0].not_protocol.as_deref(), Some("17"));
        assert_eq!(Protocol::parse("17"), Some(Protocol::UDP));
        assert_eq!(p.egress[1].action, Action::Log);
    }

    #[test]
    fn namespaced_and_staged_policies() {
        let p: api::NetworkPolicy = yaml(
            r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-db, namespace: prod}
spec:
  selector: app == 'db'
  egress: [{action: Allow}]
"#,
        );
        let p = network_policy(&p).unwrap();
        assert_eq!(p.namespace.as_deref(), Some("prod"));
        assert_eq!(p.qualified_name(), "prod/allow-db");
        assert_eq!(p.tier_name(), DEFAULT_TIER);
        // Types defaulted as Calico does: egress rules only.
        assert_eq!(p.effective_types(), vec![Direction::Egress]);
        assert!(!p.staged);

        let s: api::StagedNetworkPolicy = yaml(
            r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: try-deny, namespace: prod}
spec: {selector: all(), ingress: [{action: Deny}]}
"#,
        );
        assert!(staged_network_policy(&s).unwrap().staged);
        let g: api::StagedGlobalNetworkPolicy = yaml(
            r#"
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: try-global}
spec: {selector: all(), preDNAT: true, ingress: [{action: Deny}]}
"#,
        );
        let g = staged_global_network_policy(&g).unwrap();
        assert!(g.staged && g.pre_dnat && g.namespace.is_none());
    }

    #[test]
    fn tiers_get_a_default_tier() {
        let t: api::Tier = yaml(
            r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: Pass}
"#,
        );
        let got = tiers(&[t]).unwrap();
        assert_eq!(
            got,
            vec![
                Tier {
                    name: "security".into(),
                    order: Some(100.0),
                    default_action: TierDefaultAction::Pass
                },
                Tier {
                    name: DEFAULT_TIER.into(),
                    order: Some(DEFAULT_TIER_ORDER),
                    default_action: TierDefaultAction::Deny
                }
            ]
        );
        // A stored default tier without an order gets Calico's.
        let d: api::Tier = yaml("metadata: {name: default}\nspec: {}\n");
        assert_eq!(tiers(&[d]).unwrap().len(), 1);
        assert_eq!(tiers(&[]).unwrap()[0].order, Some(DEFAULT_TIER_ORDER));
    }

    #[test]
    fn network_sets() {
        let g: api::GlobalNetworkSet = yaml(
            "metadata: {name: external, labels: {role: ext}}\nspec: {nets: [1.2.3.0/24, 2001:db8::/32]}\n",
        );
        let g = global_network_set(&g).unwrap();
        assert_eq!(g.namespace, None);
        assert_eq!(g.labels.get("role").map(String::as_str), Some("ext"));
        assert_eq!(g.nets.len(), 2);
        let n: api::NetworkSet =
            yaml("metadata: {name: ns1, namespace: prod}\nspec: {nets: [10.0.0.0/24]}\n");
        assert_eq!(network_set(&n).unwrap().namespace.as_deref(), Some("prod"));
    }

    #[test]
    fn errors_name_the_resource_and_field() {
        let p: api::NetworkPolicy = yaml(
            "metadata: {name: bad, namespace: prod}\nspec: {ingress: [{action: Allow}, {action: Allow, source: {nets: [10.0.0.0/8, not-a-cidr]}}]}\n",
        );
        let e = network_policy(&p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "NetworkPolicy prod/bad: spec.ingress[1].source.nets[1]: \"not-a-cidr\" is not a CIDR or IP address"
        );
        let p: api::GlobalNetworkPolicy =
            yaml("metadata: {name: g}\nspec: {egress: [{action: Deny, ipVersion: 5}]}\n");
        assert_eq!(
            global_network_policy(&p).unwrap_err().to_string(),
            "GlobalNetworkPolicy g: spec.egress[0].ipVersion: 5 is not 4 or 6"
        );
        let p: api::GlobalNetworkPolicy = yaml(
            "metadata: {name: g}\nspec: {ingress: [{action: Allow, protocol: ICMP, icmp: {type: 300}}]}\n",
        );
        assert!(
            global_network_policy(&p)
                .unwrap_err()
                .to_string()
                .contains("spec.ingress[0].icmp.type: 300")
        );
        let p: api::GlobalNetworkPolicy = yaml(
            "metadata: {name: g}\nspec: {ingress: [{action: Allow, protocol: ICMP, icmp: {code: 1}}]}\n",
        );
        assert!(
            global_network_policy(&p)
                .unwrap_err()
                .to_string()
                .contains("icmp.code: a code needs a type")
        );
        let w: api::WorkloadEndpoint =
            yaml("metadata: {namespace: x}\nspec: {ipNetworks: [1.2.3.4/32]}\n");
        assert_eq!(
            workload_endpoint(&w).unwrap_err(),
            ConvertError::MissingName {
                kind: "WorkloadEndpoint"
            }
        );
        let n: api::NetworkSet = yaml("metadata: {name: n}\nspec: {nets: [10.0.0.0/24]}\n");
        assert!(
            network_set(&n)
                .unwrap_err()
                .to_string()
                .contains("metadata.namespace: missing")
        );
    }

    #[test]
    fn host_endpoint_converts_and_compiles_with_failsafe() {
        let h: api::HostEndpoint = yaml(
            "metadata: {name: n1-eth1, labels: {role: edge}}\nspec: {node: n1, interfaceName: eth1, expectedIPs: [10.1.0.1, 'fd01::1'], ports: [{name: web, protocol: TCP, port: 8080}]}\n",
        );
        let h = host_endpoint(&h).unwrap();
        assert_eq!(h.interface_name.as_deref(), Some("eth1"));
        assert_eq!(h.expected_ips.len(), 2);
        assert_eq!(h.labels.get("role").map(String::as_str), Some("edge"));
        assert_eq!(h.ports[0].port, 8080);

        let all: api::HostEndpoint =
            yaml("metadata: {name: all}\nspec: {node: n1, interfaceName: '*'}\n");
        assert_eq!(
            host_endpoint(&all).unwrap().interface_name.as_deref(),
            Some("*")
        );
        let bad: api::HostEndpoint =
            yaml("metadata: {name: bad}\nspec: {node: n1, expectedIPs: [not-an-ip]}\n");
        let e = host_endpoint(&bad).unwrap_err().to_string();
        assert!(e.contains("HostEndpoint bad: spec.expectedIPs[0]"), "{e}");
        let neither: api::HostEndpoint = yaml("metadata: {name: x}\nspec: {node: n1}\n");
        assert!(host_endpoint(&neither).is_err());
        let no_node: api::HostEndpoint = yaml("metadata: {name: x}\nspec: {interfaceName: eth0}\n");
        assert!(
            host_endpoint(&no_node)
                .unwrap_err()
                .to_string()
                .contains("spec.node")
        );

        let r = ApiResources {
            host_endpoints: vec![yaml(
                "metadata: {name: n1-eth1}\nspec: {node: n1, interfaceName: eth1}\n",
            )],
            ..Default::default()
        };
        let prog = crate::compile(&model_from_resources(&r).unwrap(), Some("n1")).unwrap();
        let ep = prog
            .endpoints
            .values()
            .next()
            .expect("the host endpoint has a program");
        assert_eq!(ep.interface.as_deref(), Some("eth1"));
        let ssh = ep.ingress.failsafe.iter().any(|f| f.port == 22);
        assert!(ssh, "Calico's default inbound failsafe ports apply");
    }

    #[test]
    fn whole_model_compiles_docker_default() {
        let r = ApiResources {
            profiles: vec![yaml(
                "metadata: {name: net1}\nspec: {ingress: [{action: Allow, source: {selector: has(net1)}}], egress: [{action: Allow}], labelsToApply: {net1: ''}}\n",
            )],
            workload_endpoints: vec![
                yaml(
                    "metadata: {name: a, namespace: libnetwork}\nspec: {node: n1, interfaceName: calia, ipNetworks: [10.0.0.1/32], profiles: [net1]}\n",
                ),
                yaml(
                    "metadata: {name: b, namespace: libnetwork}\nspec: {node: n2, interfaceName: calib, ipNetworks: [10.0.0.2/32], profiles: [net1]}\n",
                ),
            ],
            ..Default::default()
        };
        let m = model_from_resources(&r).unwrap();
        assert_eq!(m.tiers.len(), 1);
        let prog = crate::compile(&m, Some("n1")).unwrap();
        // Only n1's endpoint gets chains; n2's still fills the has(net1) set.
        assert_eq!(prog.endpoints.len(), 1);
        let members: usize = prog.sets.values().map(|s| s.members.len()).sum();
        assert_eq!(members, 2);
    }

    proptest::proptest! {
        /// Ports: the API's parse and this conversion agree with the model's own parser.
        #[test]
        fn ports_agree_with_the_model(a in 0u16.., b in 0u16.., name in "[a-z][a-z0-9-]{0,14}") {
            let (lo, hi) = (a.min(b), a.max(b));
            for text in [format!("{lo}:{hi}"), lo.to_string(), name] {
                let api_port = api::Port::parse(&text).expect("valid port");
                proptest::prop_assert_eq!(Some(port(&api_port)), Port::parse(&text));
            }
        }

        /// Nets: any CIDR converts to its network (host bits cleared), any address to a host
        /// route of its family.
        #[test]
        fn nets_are_normalised(addr in proptest::prelude::any::<std::net::Ipv4Addr>(), len in 0u8..=32, v6 in proptest::prelude::any::<std::net::Ipv6Addr>()) {
            let ctx = Ctx { kind: "GlobalNetworkSet", name: "p".into() };
            let text = format!("{addr}/{len}");
            let got = net(&ctx, "spec.nets[0]", &text).expect("cidr");
            proptest::prop_assert_eq!(got, text.parse::<IpNet>().expect("cidr").trunc());
            proptest::prop_assert!(got.contains(&IpAddr::from(addr)));
            proptest::prop_assert_eq!(net(&ctx, "f", &addr.to_string()).expect("v4").prefix_len(), 32);
            proptest::prop_assert_eq!(net(&ctx, "f", &v6.to_string()).expect("v6").prefix_len(), 128);
        }
    }
}
