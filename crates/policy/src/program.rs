//! Output: the per-endpoint, per-direction program a dataplane enforces. It says, in order, what
//! Calico evaluates for a new connection: failsafe ports (host endpoints), tiers with their
//! policies and rules, the end of each tier, the profiles, and what happens when nothing decided.
//! Established and related traffic is allowed back before all of this (and invalid traffic
//! dropped) in every chain except the untracked ones; that is left to the dataplane.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;

use crate::model::{Action, Direction, FailsafePort, IcmpFields, IpVersion, Protocol};
use crate::sets::{Member, SetId, SetKey};

/// Which endpoint a program is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointId {
    /// A workload endpoint.
    Workload {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A host endpoint.
    Host {
        /// Name.
        name: String,
    },
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointId::Workload { namespace, name } => {
                write!(f, "WorkloadEndpoint {namespace}/{name}")
            }
            EndpointId::Host { name } => write!(f, "HostEndpoint {name}"),
        }
    }
}

/// Where in the packet path a chain runs (host endpoints have several).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChainKind {
    /// Traffic to/from a workload, or to/from the host itself through a host endpoint.
    Normal,
    /// Traffic forwarded through a host endpoint (policies with `applyOnForward`).
    Forward,
    /// Host endpoint ingress before DNAT (policies with `preDNAT`).
    PreDnat,
    /// Host endpoint traffic before connection tracking (policies with `doNotTrack`); an
    /// allowed packet is also exempted from tracking.
    Untracked,
}

/// What happens to a packet no tier, policy or profile decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallthrough {
    /// Drop it (normal chains: "no profile matched").
    Deny,
    /// Accept it (forward chains with no `applyOnForward` policy).
    Allow,
    /// No verdict here; later stages decide (pre-DNAT, untracked, forward after passing tiers).
    Continue,
}

/// What the end of a tier does for an endpoint it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndOfTier {
    /// Drop: the tier's default action is Deny and an enforced policy in it applied.
    Deny,
    /// Go on to the next tier: the tier passes, only staged policies applied, or the chain kind
    /// has no end-of-tier drop (pre-DNAT, untracked).
    Pass,
}

/// A match on ports, true when any entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PortMatch {
    /// Inclusive numeric ranges.
    pub ranges: Vec<(u16, u16)>,
    /// Named-port sets: `(address on this side, protocol, port)` must be a member.
    pub named_port_sets: Vec<SetId>,
}

/// Matches on one side (source or destination) of a packet; every present field must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AddressMatch {
    /// Address in one of these (when non-empty).
    pub nets: Vec<IpNet>,
    /// Address in none of these.
    pub not_nets: Vec<IpNet>,
    /// Address in this set.
    pub set: Option<SetId>,
    /// Address not in this set.
    pub not_set: Option<SetId>,
    /// Port matches.
    pub ports: Option<PortMatch>,
    /// Port does not match.
    pub not_ports: Option<PortMatch>,
}

/// Everything one rule matches on; every present field must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RuleMatch {
    /// Only packets of this family.
    pub ip_version: Option<IpVersion>,
    /// Protocol equals.
    pub protocol: Option<Protocol>,
    /// Protocol differs.
    pub not_protocol: Option<Protocol>,
    /// ICMP type (and code) equal.
    pub icmp: Option<IcmpFields>,
    /// ICMP type (and code) differ.
    pub not_icmp: Option<IcmpFields>,
    /// Source side.
    pub source: AddressMatch,
    /// Destination side.
    pub destination: AddressMatch,
}

impl RuleMatch {
    /// The rule as it exists for one IP family, as Felix renders it: `None` when the rule does
    /// not exist for that family (its `ipVersion` is the other one, or a non-empty nets/notNets
    /// list has no network of this family, or a notNets list holds this family's catch-all);
    /// otherwise a copy whose nets lists keep only this family's networks. The dataplane
    /// should render exactly this per family; the reference evaluator uses it too.
    pub fn for_family(&self, v: IpVersion) -> Option<RuleMatch> {
        if self.ip_version.is_some_and(|x| x != v) {
            return None;
        }
        let mut out = self.clone();
        for side in [&mut out.source, &mut out.destination] {
            side.nets = nets_for(&side.nets, v, false)?;
            side.not_nets = nets_for(&side.not_nets, v, true)?;
        }
        Some(out)
    }
}

fn nets_for(nets: &[IpNet], v: IpVersion, negated: bool) -> Option<Vec<IpNet>> {
    if nets.is_empty() {
        return Some(Vec::new());
    }
    let mine: Vec<IpNet> = nets
        .iter()
        .filter(|n| IpVersion::of_net(n) == v)
        .cloned()
        .collect();
    if mine.is_empty() || (negated && mine.iter().any(|n| n.prefix_len() == 0)) {
        return None;
    }
    Some(mine)
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompiledRule {
    /// Index of the rule in the policy's or profile's rule list (for counters and reports).
    pub index: usize,
    /// What to do on a match.
    pub action: Action,
    /// What it matches.
    pub matches: RuleMatch,
}

/// Which shared rule list a chain refers to. Rule lists are compiled once per policy (or
/// profile) and direction and shared by every endpoint that uses them, so the size of the
/// program grows with rules + endpoints, not rules × endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleListId {
    /// A policy's ingress or egress rules (`name` qualified as in [`PolicyRef::name`]).
    Policy {
        /// Policy name.
        name: String,
        /// A staged policy may share its name with an enforced one.
        staged: bool,
        /// Direction.
        direction: Direction,
    },
    /// A profile's ingress or egress rules.
    Profile {
        /// Profile name.
        name: String,
        /// Direction.
        direction: Direction,
    },
}

impl fmt::Display for RuleListId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleListId::Policy {
                name,
                staged: false,
                direction,
            } => write!(f, "policy {name} {direction}"),
            RuleListId::Policy {
                name, direction, ..
            } => write!(f, "staged policy {name} {direction}"),
            RuleListId::Profile { name, direction } => write!(f, "profile {name} {direction}"),
        }
    }
}

/// A policy applied to an endpoint in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// `name` for global policies, `namespace/name` for namespaced ones.
    pub name: String,
    /// Staged: evaluated for reporting only.
    pub staged: bool,
    /// Its rules, in [`HostProgram::rule_lists`].
    pub rules: RuleListId,
}

/// A tier with the policies that apply to the endpoint, in Calico's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierProgram {
    /// Tier name.
    pub name: String,
    /// Policies in evaluation order (order, then name).
    pub policies: Vec<PolicyRef>,
    /// What the end of the tier does.
    pub end_of_tier: EndOfTier,
}

/// A profile applied to an endpoint in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRef {
    /// Profile name.
    pub name: String,
    /// Its rules, in [`HostProgram::rule_lists`].
    pub rules: RuleListId,
}

/// The program for one endpoint, one direction, one place in the packet path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Where it runs.
    pub kind: ChainKind,
    /// Which direction.
    pub direction: Direction,
    /// Failsafe ports allowed before anything else (host endpoints, not forward chains).
    /// Inbound entries match the destination port and the source net; outbound entries the
    /// destination port and the destination net.
    pub failsafe: Vec<FailsafePort>,
    /// Tiers that have at least one policy for this endpoint and direction, in order. Tiers
    /// with none are left out: they cannot drop the endpoint's traffic.
    pub tiers: Vec<TierProgram>,
    /// Profiles, in the endpoint's order (normal chains only; unknown profiles are left out).
    pub profiles: Vec<ProfileRef>,
    /// What happens when nothing decided.
    pub fallthrough: Fallthrough,
}

/// The extra chains of a host endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChains {
    /// Forwarded traffic arriving through the interface.
    pub forward_ingress: Chain,
    /// Forwarded traffic leaving through the interface.
    pub forward_egress: Chain,
    /// Ingress before DNAT.
    pub pre_dnat_ingress: Chain,
    /// Untracked ingress.
    pub untracked_ingress: Chain,
    /// Untracked egress.
    pub untracked_egress: Chain,
}

/// Everything enforced for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointProgram {
    /// The endpoint.
    pub id: EndpointId,
    /// Its interface; `None` for a host endpoint on all interfaces (`*`).
    pub interface: Option<String>,
    /// Its addresses.
    pub addresses: Vec<IpNet>,
    /// Normal ingress chain.
    pub ingress: Chain,
    /// Normal egress chain.
    pub egress: Chain,
    /// Host endpoints only.
    pub host: Option<HostChains>,
}

impl EndpointProgram {
    /// The normal chain for a direction.
    pub fn chain(&self, direction: Direction) -> &Chain {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Every chain of the endpoint.
    pub fn chains(&self) -> Vec<&Chain> {
        let mut out = vec![&self.ingress, &self.egress];
        if let Some(h) = &self.host {
            out.extend([
                &h.forward_ingress,
                &h.forward_egress,
                &h.pre_dnat_ingress,
                &h.untracked_ingress,
                &h.untracked_egress,
            ]);
        }
        out
    }
}

/// A set and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// What it stands for.
    pub key: SetKey,
    /// Members.
    pub members: BTreeSet<Member>,
}

/// Everything enforced on one host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostProgram {
    /// Programs of the host's endpoints.
    pub endpoints: BTreeMap<EndpointId, EndpointProgram>,
    /// Every rule list the endpoints refer to (shared, as the sets are).
    pub rule_lists: BTreeMap<RuleListId, Arc<Vec<CompiledRule>>>,
    /// Every set the rule lists reference. Shared (`Arc`): a copy of the program (the last
    /// one applied, kept to diff against) costs no member copies, comparing it stops at the
    /// sets both hold unchanged, and a change copies only the set it changes
    /// (`Arc::make_mut`). A large cluster's sets hold tens of thousands of members.
    pub sets: BTreeMap<SetId, Arc<IpSet>>,
}

impl HostProgram {
    /// The rules of a list (empty when unknown).
    pub fn rules(&self, id: &RuleListId) -> &[CompiledRule] {
        self.rule_lists
            .get(id)
            .map(|rules| rules.as_slice())
            .unwrap_or(&[])
    }
}

fn side_sets(m: &AddressMatch, f: &mut impl FnMut(&SetId)) {
    m.set.iter().chain(m.not_set.iter()).for_each(&mut *f);
    for p in m.ports.iter().chain(m.not_ports.iter()) {
        p.named_port_sets.iter().for_each(&mut *f);
    }
}

/// Calls `f` on every set a list of rules references.
pub fn for_each_set(rules: &[CompiledRule], f: &mut impl FnMut(&SetId)) {
    for r in rules {
        side_sets(&r.matches.source, f);
        side_sets(&r.matches.destination, f);
    }
}

/// Calls `f` on every rule list a chain refers to.
pub fn for_each_rule_list(chain: &Chain, f: &mut impl FnMut(&RuleListId)) {
    for t in &chain.tiers {
        t.policies.iter().for_each(|p| f(&p.rules));
    }
    chain.profiles.iter().for_each(|p| f(&p.rules));
}
