//! The compiler: from the model to per-endpoint programs and the sets they reference.
//!
//! Selector handling follows Calico's conversion of v3 resources for Felix:
//! - a NetworkPolicy applies to `(selector) && projectcalico.org/namespace == '<ns>'`;
//!   a GlobalNetworkPolicy's `namespaceSelector` is matched against the inherited `pcns.*`
//!   labels (its `all()` becoming `has(projectcalico.org/namespace)`), and a
//!   `serviceAccountSelector` against `pcsa.*` labels (`all()` becoming
//!   `has(projectcalico.org/serviceaccount)`);
//! - a rule's peer selector combines `serviceAccounts` (`pcsa.*` selector and
//!   `projectcalico.org/serviceaccount in {names}`), `selector`, and the namespace part: the
//!   `namespaceSelector` over `pcns.*` labels, with `all()` meaning "any namespaced endpoint" and
//!   `global()` meaning "not namespaced", or, for a NetworkPolicy without one, the policy's own
//!   namespace whenever the rule has a selector, notSelector or namespaceSelector;
//!   `notSelector` is used as written.
//!
//! Named ports become named-port sets on both sides of a rule, as in Calico: the set holds
//! `(address, protocol, port)` of every endpoint the side's selector matches (every endpoint
//! when the side has none) that declares a port of that name and protocol. So each named port
//! resolves per endpoint (a `http` port may be 80 on one pod and 8080 on another), and rule lists
//! stay independent of the endpoint they are applied to: each policy is compiled once per
//! direction and shared ([`crate::program::RuleListId`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use calico_selector::{Expr, ExprError, ParseError, Selector};
use ipnet::IpNet;

use crate::labels::{host_labels, network_set_labels, workload_labels};
use crate::model::{
    Action, DEFAULT_TIER, DEFAULT_TIER_ORDER, Direction, EntityRule, Failsafe, HostEndpoint,
    IcmpFields, IpVersion, LABEL_NAMESPACE, LABEL_SERVICE_ACCOUNT, LabelMap,
    NAMESPACE_LABEL_PREFIX, Policy, PolicyModel, Port, Profile, Protocol, Rule,
    SERVICE_ACCOUNT_LABEL_PREFIX, Tier, TierDefaultAction, WorkloadEndpoint,
};
use crate::program::{
    AddressMatch, Chain, ChainKind, CompiledRule, EndOfTier, EndpointId, EndpointProgram,
    Fallthrough, HostChains, HostProgram, IpSet, PolicyRef, PortMatch, ProfileRef, RuleListId,
    RuleMatch, TierProgram, for_each_rule_list, for_each_set,
};
use crate::sets::{SetIndex, SetKey, SetSource, SourceId};

/// Why a model cannot be compiled. `owner` names the resource (`GlobalNetworkPolicy "x"`,
/// `NetworkPolicy "ns/x"`, `Profile "p"`); `field` is the path inside it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    /// A selector does not parse.
    #[error("{owner}: {field}: invalid selector {text:?}")]
    Selector {
        /// Resource.
        owner: String,
        /// Field path.
        field: String,
        /// The selector text.
        text: String,
        /// Parser's reason.
        #[source]
        source: ParseError,
    },
    /// Prefixing a selector's keys (`pcns.`/`pcsa.`) made a key the language cannot write.
    #[error("{owner}: {field}: selector cannot be rewritten for inherited labels")]
    SelectorRewrite {
        /// Resource.
        owner: String,
        /// Field path.
        field: String,
        /// Reason.
        #[source]
        source: ExprError,
    },
    /// A protocol is neither a known name nor a number 0..=255.
    #[error("{owner}: {field}: unknown protocol {value:?}")]
    Protocol {
        /// Resource.
        owner: String,
        /// Field path.
        field: String,
        /// The text.
        value: String,
    },
    /// Ports are matched but the protocol is not TCP, UDP or SCTP.
    #[error("{owner}: {field}: rules that match ports must set protocol to TCP, UDP or SCTP")]
    PortsNeedProtocol {
        /// Resource.
        owner: String,
        /// Field path.
        field: String,
    },
    /// A port range whose first port is above its last.
    #[error("{owner}: {field}: port range {first}:{last} is empty")]
    PortRange {
        /// Resource.
        owner: String,
        /// Field path.
        field: String,
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
    /// An ICMP match without protocol ICMP or ICMPv6, or a code without a type.
    #[error("{owner}: {field}: {reason}")]
    Icmp {
        /// Resource.
        owner: String,
        /// Field path.
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A policy names a tier the model does not have.
    #[error("{owner}: spec.tier: tier {tier:?} does not exist")]
    UnknownTier {
        /// Resource.
        owner: String,
        /// The tier name.
        tier: String,
    },
}

#[derive(Debug, Clone)]
struct PreparedSide {
    nets: Vec<IpNet>,
    not_nets: Vec<IpNet>,
    selector: Option<Selector>,
    not_selector: Option<Selector>,
    ports: Vec<Port>,
    not_ports: Vec<Port>,
}

#[derive(Debug, Clone)]
struct PreparedRule {
    index: usize,
    action: Action,
    ip_version: Option<IpVersion>,
    protocol: Option<Protocol>,
    not_protocol: Option<Protocol>,
    icmp: Option<IcmpFields>,
    not_icmp: Option<IcmpFields>,
    source: PreparedSide,
    destination: PreparedSide,
}

#[derive(Debug, Clone)]
struct PreparedPolicy {
    name: String,
    tier: usize,
    order: Option<f64>,
    applies_to: Selector,
    types: Vec<Direction>,
    ingress: Vec<PreparedRule>,
    egress: Vec<PreparedRule>,
    do_not_track: bool,
    pre_dnat: bool,
    apply_on_forward: bool,
    staged: bool,
}

#[derive(Debug, Clone)]
struct PreparedProfile {
    ingress: Vec<PreparedRule>,
    egress: Vec<PreparedRule>,
}

struct Ctx<'a> {
    owner: &'a str,
}

impl Ctx<'_> {
    fn parse(&self, field: &str, text: &str) -> Result<Selector, CompileError> {
        Selector::parse(text).map_err(|source| CompileError::Selector {
            owner: self.owner.to_string(),
            field: field.to_string(),
            text: text.to_string(),
            source,
        })
    }

    fn rebuild(&self, field: &str, expr: Expr) -> Result<Selector, CompileError> {
        Selector::from_expr(expr).map_err(|source| CompileError::SelectorRewrite {
            owner: self.owner.to_string(),
            field: field.to_string(),
            source,
        })
    }

    /// Parses `text` and prefixes every key, as Calico does for inherited namespace and
    /// service-account labels.
    fn prefixed(&self, field: &str, text: &str, prefix: &str) -> Result<Expr, CompileError> {
        let sel = self.parse(field, text)?;
        let mapped = sel
            .map_labels(|k| format!("{prefix}{k}"))
            .map_err(|source| CompileError::SelectorRewrite {
                owner: self.owner.to_string(),
                field: field.to_string(),
                source,
            })?;
        Ok(mapped.expr().clone())
    }

    fn protocol(
        &self,
        field: &str,
        text: &Option<String>,
    ) -> Result<Option<Protocol>, CompileError> {
        text.as_ref()
            .map(|t| {
                Protocol::parse(t).ok_or_else(|| CompileError::Protocol {
                    owner: self.owner.to_string(),
                    field: field.to_string(),
                    value: t.clone(),
                })
            })
            .transpose()
    }
}

fn and(a: Expr, b: Expr) -> Expr {
    Expr::And(vec![a, b])
}

fn has(key: &str) -> Expr {
    Expr::Has(key.to_string())
}

fn namespace_is(ns: &str) -> Expr {
    Expr::Eq(LABEL_NAMESPACE.to_string(), ns.to_string())
}

/// The peer selector of one side of a rule (Calico's `getEndpointSelector`); `None` means "any".
fn entity_selector(
    ctx: &Ctx<'_>,
    field: &str,
    e: &EntityRule,
    namespace: Option<&str>,
) -> Result<Option<Selector>, CompileError> {
    let ns_part = if !e.namespace_selector.is_empty() {
        let f = format!("{field}.namespaceSelector");
        let prefixed = ctx.prefixed(&f, &e.namespace_selector, NAMESPACE_LABEL_PREFIX)?;
        let namespaced = has(LABEL_NAMESPACE);
        let global = Expr::Not(Box::new(has(LABEL_NAMESPACE)));
        Some(prefixed.replace_all_and_global(&namespaced, &global))
    } else {
        namespace.map(namespace_is)
    };
    let mut parts = Vec::new();
    if let Some(sa) = &e.service_accounts {
        let f = format!("{field}.serviceAccounts");
        let mut sa_parts = Vec::new();
        if !sa.selector.is_empty() {
            sa_parts.push(ctx.prefixed(
                &format!("{f}.selector"),
                &sa.selector,
                SERVICE_ACCOUNT_LABEL_PREFIX,
            )?);
        }
        if !sa.names.is_empty() {
            sa_parts.push(Expr::In(
                LABEL_SERVICE_ACCOUNT.to_string(),
                sa.names.iter().cloned().collect(),
            ));
        }
        match sa_parts.len() {
            0 => {}
            1 => parts.extend(sa_parts),
            _ => parts.push(Expr::And(sa_parts)),
        }
    }
    if !e.selector.is_empty() {
        parts.push(
            ctx.parse(&format!("{field}.selector"), &e.selector)?
                .expr()
                .clone(),
        );
    }
    let selector = match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Expr::And(parts)),
    };
    let wants_ns =
        selector.is_some() || !e.not_selector.is_empty() || !e.namespace_selector.is_empty();
    let combined = match (ns_part, selector) {
        (Some(ns), Some(sel)) if wants_ns => Some(and(ns, sel)),
        (Some(ns), None) if wants_ns => Some(ns),
        (_, sel) => sel,
    };
    combined
        .map(|e| ctx.rebuild(&format!("{field}.selector"), e))
        .transpose()
}

fn prepare_side(
    ctx: &Ctx<'_>,
    field: &str,
    e: &EntityRule,
    namespace: Option<&str>,
    protocol: Option<Protocol>,
) -> Result<PreparedSide, CompileError> {
    if (!e.ports.is_empty() || !e.not_ports.is_empty())
        && !protocol.is_some_and(Protocol::has_ports)
    {
        return Err(CompileError::PortsNeedProtocol {
            owner: ctx.owner.to_string(),
            field: format!("{field}.ports"),
        });
    }
    for (list, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
        for (i, p) in ports.iter().enumerate() {
            if let Port::Range(a, b) = p
                && a > b
            {
                return Err(CompileError::PortRange {
                    owner: ctx.owner.to_string(),
                    field: format!("{field}.{list}[{i}]"),
                    first: *a,
                    last: *b,
                });
            }
        }
    }
    let not_selector = if e.not_selector.is_empty() {
        None
    } else {
        Some(ctx.parse(&format!("{field}.notSelector"), &e.not_selector)?)
    };
    Ok(PreparedSide {
        nets: e.nets.iter().map(IpNet::trunc).collect(),
        not_nets: e.not_nets.iter().map(IpNet::trunc).collect(),
        selector: entity_selector(ctx, field, e, namespace)?,
        not_selector,
        ports: e.ports.clone(),
        not_ports: e.not_ports.clone(),
    })
}

fn check_icmp(
    ctx: &Ctx<'_>,
    field: &str,
    icmp: &Option<IcmpFields>,
    protocol: Option<Protocol>,
) -> Result<(), CompileError> {
    let Some(i) = icmp else { return Ok(()) };
    let err = |reason| CompileError::Icmp {
        owner: ctx.owner.to_string(),
        field: field.to_string(),
        reason,
    };
    if !protocol.is_some_and(Protocol::is_icmp) {
        return Err(err("ICMP matches need protocol ICMP or ICMPv6"));
    }
    if i.code.is_some() && i.icmp_type.is_none() {
        return Err(err("an ICMP code needs an ICMP type"));
    }
    if i.icmp_type == Some(255) {
        return Err(err("ICMP type must be in 0..=254"));
    }
    Ok(())
}

fn prepare_rules(
    ctx: &Ctx<'_>,
    list: &str,
    rules: &[Rule],
    namespace: Option<&str>,
) -> Result<Vec<PreparedRule>, CompileError> {
    rules
        .iter()
        .enumerate()
        // A rule with a match the dataplane cannot enforce never matches, unless it is a Deny
        // (enforced without that match, so it denies more): fail closed either way.
        .filter(|(_, r)| r.unenforced.is_none() || r.action == Action::Deny)
        .map(|(index, r)| {
            let field = format!("spec.{list}[{index}]");
            let protocol = ctx.protocol(&format!("{field}.protocol"), &r.protocol)?;
            let not_protocol = ctx.protocol(&format!("{field}.notProtocol"), &r.not_protocol)?;
            check_icmp(ctx, &format!("{field}.icmp"), &r.icmp, protocol)?;
            check_icmp(ctx, &format!("{field}.notICMP"), &r.not_icmp, protocol)?;
            Ok(PreparedRule {
                index,
                action: r.action,
                ip_version: r.ip_version,
                protocol,
                not_protocol,
                icmp: r.icmp,
                not_icmp: r.not_icmp,
                source: prepare_side(
                    ctx,
                    &format!("{field}.source"),
                    &r.source,
                    namespace,
                    protocol,
                )?,
                destination: prepare_side(
                    ctx,
                    &format!("{field}.destination"),
                    &r.destination,
                    namespace,
                    protocol,
                )?,
            })
        })
        .collect()
}

/// How errors and reports name a policy: `GlobalNetworkPolicy "x"`, `NetworkPolicy "ns/x"`.
pub fn policy_owner(p: &Policy) -> String {
    let kind = match (&p.namespace, p.staged) {
        (Some(_), false) => "NetworkPolicy",
        (Some(_), true) => "StagedNetworkPolicy",
        (None, false) => "GlobalNetworkPolicy",
        (None, true) => "StagedGlobalNetworkPolicy",
    };
    format!("{kind} {:?}", p.qualified_name())
}

/// How errors and reports name a profile: `Profile "p"`.
pub fn profile_owner(name: &str) -> String {
    format!("Profile {name:?}")
}

impl CompileError {
    /// The resource the error is in (`GlobalNetworkPolicy "x"`, `Profile "p"`, …).
    pub fn owner(&self) -> &str {
        match self {
            CompileError::Selector { owner, .. }
            | CompileError::SelectorRewrite { owner, .. }
            | CompileError::Protocol { owner, .. }
            | CompileError::PortsNeedProtocol { owner, .. }
            | CompileError::PortRange { owner, .. }
            | CompileError::Icmp { owner, .. }
            | CompileError::UnknownTier { owner, .. } => owner,
        }
    }

    /// The field path inside that resource.
    pub fn field(&self) -> &str {
        match self {
            CompileError::Selector { field, .. }
            | CompileError::SelectorRewrite { field, .. }
            | CompileError::Protocol { field, .. }
            | CompileError::PortsNeedProtocol { field, .. }
            | CompileError::PortRange { field, .. }
            | CompileError::Icmp { field, .. } => field,
            CompileError::UnknownTier { .. } => "spec.tier",
        }
    }
}

/// The selector of endpoints a policy applies to, as Calico's policy conversion builds it.
fn applies_to(ctx: &Ctx<'_>, p: &Policy) -> Result<Selector, CompileError> {
    let mut expr = if p.selector.is_empty() {
        None
    } else {
        Some(ctx.parse("spec.selector", &p.selector)?.expr().clone())
    };
    if let Some(ns) = &p.namespace {
        expr = Some(match expr {
            Some(e) => and(e, namespace_is(ns)),
            None => namespace_is(ns),
        });
    }
    // For a GlobalNetworkPolicy Calico then replaces every all() of the combined selector by
    // "has the label the extra selector is about"; for a NetworkPolicy it does not.
    let global = p.namespace.is_none();
    let append = |expr: Option<Expr>, field: &str, text: &str, prefix: &str, key: &str| {
        if text.is_empty() {
            return Ok::<_, CompileError>(expr);
        }
        let extra = ctx.prefixed(field, text, prefix)?;
        let joined = match expr {
            Some(e) => and(e, extra),
            None => extra,
        };
        Ok(Some(if global {
            joined.replace_all_and_global(&has(key), &Expr::Global)
        } else {
            joined
        }))
    };
    if p.namespace.is_none() {
        expr = append(
            expr,
            "spec.namespaceSelector",
            &p.namespace_selector,
            NAMESPACE_LABEL_PREFIX,
            LABEL_NAMESPACE,
        )?;
    }
    expr = append(
        expr,
        "spec.serviceAccountSelector",
        &p.service_account_selector,
        SERVICE_ACCOUNT_LABEL_PREFIX,
        LABEL_SERVICE_ACCOUNT,
    )?;
    match expr {
        Some(e) => ctx.rebuild("spec.selector", e),
        None => Ok(Selector::all()),
    }
}

fn prepare_policy(tiers: &[Tier], p: &Policy) -> Result<PreparedPolicy, CompileError> {
    let owner = policy_owner(p);
    let ctx = Ctx { owner: &owner };
    let tier = tiers
        .iter()
        .position(|t| t.name == p.tier_name())
        .ok_or_else(|| CompileError::UnknownTier {
            owner: owner.clone(),
            tier: p.tier_name().to_string(),
        })?;
    let ns = p.namespace.as_deref();
    Ok(PreparedPolicy {
        name: p.qualified_name(),
        tier,
        order: p.order,
        applies_to: applies_to(&ctx, p)?,
        types: p.effective_types(),
        ingress: prepare_rules(&ctx, "ingress", &p.ingress, ns)?,
        egress: prepare_rules(&ctx, "egress", &p.egress, ns)?,
        do_not_track: p.do_not_track,
        pre_dnat: p.pre_dnat,
        apply_on_forward: p.apply_on_forward,
        staged: p.staged,
    })
}

/// Whether `p` compiles against `tiers` (the checks [`Compiler::new`] makes of it), without
/// keeping the result: how one policy is isolated on its own ([`crate::incremental`]).
pub fn check_policy(tiers: &[Tier], p: &Policy) -> Result<(), CompileError> {
    prepare_policy(tiers, p).map(|_| ())
}

/// Whether profile `p`'s rules compile (the checks [`Compiler::new`] makes of it).
pub fn check_profile(p: &Profile) -> Result<(), CompileError> {
    let owner = profile_owner(&p.name);
    let ctx = Ctx { owner: &owner };
    prepare_rules(&ctx, "ingress", &p.ingress, None)?;
    prepare_rules(&ctx, "egress", &p.egress, None)?;
    Ok(())
}

/// Calico's order: tier order, then policy order (unordered last), then name.
fn sort_policies(policies: &mut [PreparedPolicy]) {
    policies.sort_by(|a, b| {
        a.tier
            .cmp(&b.tier)
            .then_with(|| order_key(a.order, b.order))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.staged.cmp(&b.staged))
    });
}

fn order_key(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Compiles endpoints' programs; holds the prepared policies and the incremental set index.
#[derive(Debug, Clone)]
pub struct Compiler {
    tiers: Vec<Tier>,
    /// Sorted: tier order, then policy order, then name.
    policies: Vec<PreparedPolicy>,
    profiles: BTreeMap<String, PreparedProfile>,
    profile_labels: BTreeMap<String, Profile>,
    failsafe: Failsafe,
    index: SetIndex,
    /// Rule lists compiled so far, shared by every endpoint using them.
    rule_lists: BTreeMap<RuleListId, Arc<Vec<CompiledRule>>>,
}

impl Compiler {
    /// Validates and prepares every policy and profile, and loads every endpoint and network
    /// set of the model into the set index.
    pub fn new(model: &PolicyModel) -> Result<Compiler, CompileError> {
        let mut tiers = model.tiers.clone();
        if !tiers.iter().any(|t| t.name == DEFAULT_TIER) {
            tiers.push(Tier {
                name: DEFAULT_TIER.to_string(),
                order: Some(DEFAULT_TIER_ORDER),
                default_action: TierDefaultAction::Deny,
            });
        }
        tiers.sort_by(|a, b| order_key(a.order, b.order).then_with(|| a.name.cmp(&b.name)));

        let mut policies = Vec::new();
        for p in &model.policies {
            policies.push(prepare_policy(&tiers, p)?);
        }
        sort_policies(&mut policies);

        let mut profiles = BTreeMap::new();
        for p in &model.profiles {
            let owner = profile_owner(&p.name);
            let ctx = Ctx { owner: &owner };
            profiles.insert(
                p.name.clone(),
                PreparedProfile {
                    ingress: prepare_rules(&ctx, "ingress", &p.ingress, None)?,
                    egress: prepare_rules(&ctx, "egress", &p.egress, None)?,
                },
            );
        }
        let profile_labels = model
            .profiles
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();

        let mut compiler = Compiler {
            tiers,
            policies,
            profiles,
            profile_labels,
            failsafe: model.failsafe.clone(),
            index: SetIndex::new(),
            rule_lists: BTreeMap::new(),
        };
        for ep in &model.workload_endpoints {
            let (id, src) = compiler.workload_source(ep);
            compiler.index.upsert_source(id, src);
        }
        for ep in &model.host_endpoints {
            let (id, src) = compiler.host_source(ep);
            compiler.index.upsert_source(id, src);
        }
        for set in &model.network_sets {
            compiler.index.upsert_source(
                SourceId::NetworkSet {
                    namespace: set.namespace.clone(),
                    name: set.name.clone(),
                },
                SetSource {
                    labels: network_set_labels(set),
                    nets: set.nets.clone(),
                    ports: Vec::new(),
                },
            );
        }
        Ok(compiler)
    }

    fn profile_map(&self) -> BTreeMap<&str, &Profile> {
        self.profile_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect()
    }

    /// Effective labels of a workload endpoint (what selectors see).
    pub fn workload_labels(&self, ep: &WorkloadEndpoint) -> LabelMap {
        workload_labels(ep, &self.profile_map())
    }

    /// Effective labels of a host endpoint.
    pub fn host_labels(&self, ep: &HostEndpoint) -> LabelMap {
        host_labels(ep, &self.profile_map())
    }

    /// What a workload endpoint contributes to sets; pass it to [`SetIndex::upsert_source`]
    /// when the endpoint changes.
    pub fn workload_source(&self, ep: &WorkloadEndpoint) -> (SourceId, SetSource) {
        (
            SourceId::Workload {
                namespace: ep.namespace.clone(),
                name: ep.name.clone(),
            },
            SetSource {
                labels: self.workload_labels(ep),
                nets: ep.ips.clone(),
                ports: ep.ports.clone(),
            },
        )
    }

    /// What a host endpoint contributes to sets.
    pub fn host_source(&self, ep: &HostEndpoint) -> (SourceId, SetSource) {
        (
            SourceId::Host {
                name: ep.name.clone(),
            },
            SetSource {
                labels: self.host_labels(ep),
                nets: ep.expected_ips.iter().map(|a| IpNet::from(*a)).collect(),
                ports: ep.ports.clone(),
            },
        )
    }

    /// Adds or replaces a policy (matched by namespace, name and staged-ness). Endpoint
    /// programs compiled before are stale afterwards: compile them again (cheap; rule lists of
    /// other policies are reused). Sets only the old version used stay in the index until
    /// [`SetIndex::remove_set`].
    pub fn upsert_policy(&mut self, policy: &Policy) -> Result<(), CompileError> {
        let prepared = prepare_policy(&self.tiers, policy)?;
        self.remove_policy(&prepared.name.clone(), prepared.staged);
        self.policies.push(prepared);
        sort_policies(&mut self.policies);
        Ok(())
    }

    /// Removes a policy by qualified name (`ns/name` or `name`) and staged-ness.
    pub fn remove_policy(&mut self, qualified_name: &str, staged: bool) {
        self.policies
            .retain(|p| !(p.name == qualified_name && p.staged == staged));
        self.rule_lists.retain(|id, _| {
            !matches!(id, RuleListId::Policy { name, staged: s, .. } if name == qualified_name && *s == staged)
        });
    }

    /// Whether the policy `qualified_name` (staged or not) applies to an endpoint with these
    /// effective labels (false when the compiler does not hold it).
    pub fn policy_selects(&self, qualified_name: &str, staged: bool, labels: &LabelMap) -> bool {
        self.policies
            .iter()
            .find(|p| p.name == qualified_name && p.staged == staged)
            .is_some_and(|p| p.applies_to.matches(labels))
    }

    /// The set index (membership of every set compiled so far).
    pub fn index(&self) -> &SetIndex {
        &self.index
    }

    /// The set index, to apply endpoint and network set changes.
    pub fn index_mut(&mut self) -> &mut SetIndex {
        &mut self.index
    }

    /// The program of a workload endpoint.
    pub fn workload_program(&mut self, ep: &WorkloadEndpoint) -> EndpointProgram {
        let labels = self.workload_labels(ep);
        let ingress = self.chain(
            ChainKind::Normal,
            Direction::Ingress,
            &labels,
            &ep.profiles,
            false,
        );
        let egress = self.chain(
            ChainKind::Normal,
            Direction::Egress,
            &labels,
            &ep.profiles,
            false,
        );
        EndpointProgram {
            id: EndpointId::Workload {
                namespace: ep.namespace.clone(),
                name: ep.name.clone(),
            },
            interface: Some(ep.interface_name.clone()),
            addresses: ep.ips.clone(),
            ingress,
            egress,
            host: None,
        }
    }

    /// The program of a host endpoint.
    pub fn host_program(&mut self, ep: &HostEndpoint) -> EndpointProgram {
        let labels = self.host_labels(ep);
        let mut chain = |kind, dir| self.chain(kind, dir, &labels, &ep.profiles, true);
        let ingress = chain(ChainKind::Normal, Direction::Ingress);
        let egress = chain(ChainKind::Normal, Direction::Egress);
        let host = HostChains {
            forward_ingress: chain(ChainKind::Forward, Direction::Ingress),
            forward_egress: chain(ChainKind::Forward, Direction::Egress),
            pre_dnat_ingress: chain(ChainKind::PreDnat, Direction::Ingress),
            untracked_ingress: chain(ChainKind::Untracked, Direction::Ingress),
            untracked_egress: chain(ChainKind::Untracked, Direction::Egress),
        };
        let interface = ep
            .interface_name
            .clone()
            .filter(|i| i != "*" && !i.is_empty());
        EndpointProgram {
            id: EndpointId::Host {
                name: ep.name.clone(),
            },
            interface,
            addresses: ep.expected_ips.iter().map(|a| IpNet::from(*a)).collect(),
            ingress,
            egress,
            host: Some(host),
        }
    }

    fn chain(
        &mut self,
        kind: ChainKind,
        direction: Direction,
        labels: &LabelMap,
        profiles: &[String],
        is_host: bool,
    ) -> Chain {
        let mut tiers: Vec<TierProgram> = Vec::new();
        let mut current: Option<(usize, TierProgram, bool)> = None;
        // Taken out for the loop (compiling rules needs `&mut self` for the set index).
        let policies = std::mem::take(&mut self.policies);
        for (i, p) in policies.iter().enumerate() {
            let in_chain = match kind {
                ChainKind::Normal => !p.pre_dnat && !p.do_not_track,
                ChainKind::Forward => p.apply_on_forward && !p.pre_dnat && !p.do_not_track,
                ChainKind::PreDnat => p.pre_dnat && direction == Direction::Ingress,
                ChainKind::Untracked => p.do_not_track,
            };
            if !in_chain || !p.types.contains(&direction) || !p.applies_to.matches(labels) {
                continue;
            }
            let id = RuleListId::Policy {
                name: p.name.clone(),
                staged: p.staged,
                direction,
            };
            if !self.rule_lists.contains_key(&id) {
                let rules = match direction {
                    Direction::Ingress => &policies[i].ingress,
                    Direction::Egress => &policies[i].egress,
                };
                let compiled = rules.iter().map(|r| self.compile_rule(r)).collect();
                self.rule_lists.insert(id.clone(), Arc::new(compiled));
            }
            let policy = PolicyRef {
                name: p.name.clone(),
                staged: p.staged,
                rules: id,
            };
            if current.as_ref().is_none_or(|(t, _, _)| *t != p.tier) {
                if let Some(done) = current.take() {
                    tiers.push(self.finish_tier(kind, done));
                }
                let tier = TierProgram {
                    name: self.tiers[p.tier].name.clone(),
                    policies: Vec::new(),
                    end_of_tier: EndOfTier::Pass,
                };
                current = Some((p.tier, tier, false));
            }
            if let Some((_, tier, enforced)) = current.as_mut() {
                *enforced |= !p.staged;
                tier.policies.push(policy);
            }
        }
        self.policies = policies;
        if let Some(done) = current.take() {
            tiers.push(self.finish_tier(kind, done));
        }

        let mut profile_refs = Vec::new();
        if kind == ChainKind::Normal {
            for name in profiles {
                let Some(prof) = self.profiles.get(name) else {
                    continue;
                };
                let id = RuleListId::Profile {
                    name: name.clone(),
                    direction,
                };
                if !self.rule_lists.contains_key(&id) {
                    let rules = match direction {
                        Direction::Ingress => prof.ingress.clone(),
                        Direction::Egress => prof.egress.clone(),
                    };
                    let compiled = rules.iter().map(|r| self.compile_rule(r)).collect();
                    self.rule_lists.insert(id.clone(), Arc::new(compiled));
                }
                profile_refs.push(ProfileRef {
                    name: name.clone(),
                    rules: id,
                });
            }
        }
        let failsafe = match (is_host, kind, direction) {
            (false, _, _) | (true, ChainKind::Forward, _) => Vec::new(),
            (true, _, Direction::Ingress) => self.failsafe.inbound.clone(),
            (true, _, Direction::Egress) => self.failsafe.outbound.clone(),
        };
        let fallthrough = match kind {
            ChainKind::Normal => Fallthrough::Deny,
            ChainKind::Forward if tiers.is_empty() => Fallthrough::Allow,
            _ => Fallthrough::Continue,
        };
        Chain {
            kind,
            direction,
            failsafe,
            tiers,
            profiles: profile_refs,
            fallthrough,
        }
    }

    fn finish_tier(
        &self,
        kind: ChainKind,
        (t, mut tier, enforced): (usize, TierProgram, bool),
    ) -> TierProgram {
        let drops = matches!(kind, ChainKind::Normal | ChainKind::Forward)
            && enforced
            && self.tiers[t].default_action == TierDefaultAction::Deny;
        tier.end_of_tier = if drops {
            EndOfTier::Deny
        } else {
            EndOfTier::Pass
        };
        tier
    }

    fn compile_rule(&mut self, r: &PreparedRule) -> CompiledRule {
        let source = self.side(&r.source, r.protocol);
        let destination = self.side(&r.destination, r.protocol);
        CompiledRule {
            index: r.index,
            action: r.action,
            matches: RuleMatch {
                ip_version: r.ip_version,
                protocol: r.protocol,
                not_protocol: r.not_protocol,
                icmp: r.icmp,
                not_icmp: r.not_icmp,
                source,
                destination,
            },
        }
    }

    fn side(&mut self, s: &PreparedSide, protocol: Option<Protocol>) -> AddressMatch {
        let set = s
            .selector
            .clone()
            .map(|sel| self.index.ensure_set(SetKey::Selector(sel)));
        let not_set = s
            .not_selector
            .clone()
            .map(|sel| self.index.ensure_set(SetKey::Selector(sel)));
        let ports = self.ports(&s.ports, &s.selector, protocol);
        let not_ports = self.ports(&s.not_ports, &s.selector, protocol);
        AddressMatch {
            nets: s.nets.clone(),
            not_nets: s.not_nets.clone(),
            set,
            not_set,
            ports,
            not_ports,
        }
    }

    /// Numeric ports stay numbers; each named port becomes the set of `(address, protocol,
    /// port)` of the endpoints this side's selector matches (all endpoints without one).
    fn ports(
        &mut self,
        ports: &[Port],
        selector: &Option<Selector>,
        protocol: Option<Protocol>,
    ) -> Option<PortMatch> {
        if ports.is_empty() {
            return None;
        }
        // Validation guarantees a port-capable protocol whenever ports are present.
        let protocol = protocol?;
        let mut m = PortMatch::default();
        for p in ports {
            match p {
                Port::Range(a, b) => m.ranges.push((*a, *b)),
                Port::Named(name) => {
                    let key = SetKey::NamedPort {
                        selector: selector.clone().unwrap_or_else(Selector::all),
                        protocol,
                        name: name.clone(),
                    };
                    let id = self.index.ensure_set(key);
                    if !m.named_port_sets.contains(&id) {
                        m.named_port_sets.push(id);
                    }
                }
            }
        }
        m.ranges.sort_unstable();
        m.ranges.dedup();
        Some(m)
    }

    /// Every rule list compiled so far.
    pub fn rule_lists(&self) -> &BTreeMap<RuleListId, Arc<Vec<CompiledRule>>> {
        &self.rule_lists
    }
}

/// Compiles the programs of every endpoint on `node` (every endpoint when `None`), with the
/// rule lists and sets they reference.
pub fn compile(model: &PolicyModel, node: Option<&str>) -> Result<HostProgram, CompileError> {
    let mut compiler = Compiler::new(model)?;
    let local = |n: &str| node.is_none_or(|want| want == n);
    let workloads: Vec<&WorkloadEndpoint> = model
        .workload_endpoints
        .iter()
        .filter(|e| local(&e.node))
        .collect();
    let hosts: Vec<&HostEndpoint> = model
        .host_endpoints
        .iter()
        .filter(|e| local(&e.node))
        .collect();
    Ok(compiler.host_program_for(&workloads, &hosts))
}

impl Compiler {
    /// The whole program for these endpoints: their chains, the rule lists they refer to and
    /// the sets those reference, with current membership.
    pub fn host_program_for(
        &mut self,
        workloads: &[&WorkloadEndpoint],
        hosts: &[&HostEndpoint],
    ) -> HostProgram {
        let mut endpoints = BTreeMap::new();
        for ep in workloads {
            let prog = self.workload_program(ep);
            endpoints.insert(prog.id.clone(), prog);
        }
        for ep in hosts {
            let prog = self.host_program(ep);
            endpoints.insert(prog.id.clone(), prog);
        }
        let mut lists = BTreeSet::new();
        for prog in endpoints.values() {
            for chain in prog.chains() {
                for_each_rule_list(chain, &mut |id| {
                    lists.insert(id.clone());
                });
            }
        }
        let rule_lists: BTreeMap<RuleListId, Arc<Vec<CompiledRule>>> = lists
            .into_iter()
            .filter_map(|id| {
                let rules = self.rule_lists.get(&id)?.clone();
                Some((id, rules))
            })
            .collect();
        let mut used = BTreeSet::new();
        for rules in rule_lists.values() {
            for_each_set(rules, &mut |id| {
                used.insert(id.clone());
            });
        }
        let sets = used
            .into_iter()
            .filter_map(|id| {
                let key = self.index.key(&id)?.clone();
                let members = self.index.members(&id);
                Some((id, Arc::new(IpSet { key, members })))
            })
            .collect();
        HostProgram {
            endpoints,
            rule_lists,
            sets,
        }
    }
}
