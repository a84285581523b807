//! Input: the parts of Calico's v3 resource model that decide what traffic an endpoint may send
//! and receive. Plain structs, independent of the `calico-api` crate; selectors stay text (as in
//! the resources) and are parsed by the compiler, which names the field when one is invalid.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Labels as resources carry them.
pub type LabelMap = BTreeMap<String, String>;

/// Name of the tier every policy without a tier belongs to.
pub const DEFAULT_TIER: &str = "default";
/// Order Calico requires of the `default` tier.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

/// Calico's labels on endpoints and network sets (namespace, orchestrator, service account),
/// the prefixes under which an endpoint inherits its namespace's and service account's
/// labels, and the label (after a prefix) carrying their own name: calico-api's names.
pub use calico_api::names::{
    LABEL_NAME as NAME_LABEL, LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT,
    NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX,
};

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Accept the packet; no later rule, policy or tier is consulted.
    Allow,
    /// Drop the packet.
    Deny,
    /// Record the packet and carry on with the next rule.
    Log,
    /// Skip the rest of this tier and continue with the next tier (or the profiles).
    Pass,
}

/// Action of a tier when a packet reaches its end without a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TierDefaultAction {
    /// Drop (Calico's default).
    #[default]
    Deny,
    /// Continue with the next tier.
    Pass,
}

/// Direction of traffic from the endpoint's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Traffic arriving at the endpoint (for a host endpoint: entering the host through it).
    Ingress,
    /// Traffic leaving the endpoint.
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpVersion {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> IpVersion {
        match addr {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> IpVersion {
        match net {
            IpNet::V4(_) => IpVersion::V4,
            IpNet::V6(_) => IpVersion::V6,
        }
    }
}

/// An IP protocol, by number. Calico accepts the names `TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`
/// and `UDPLite` (any case) or a number 0..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(pub u8);

impl Protocol {
    /// ICMP (1).
    pub const ICMP: Protocol = Protocol(1);
    /// TCP (6).
    pub const TCP: Protocol = Protocol(6);
    /// UDP (17).
    pub const UDP: Protocol = Protocol(17);
    /// ICMPv6 (58).
    pub const ICMPV6: Protocol = Protocol(58);
    /// SCTP (132).
    pub const SCTP: Protocol = Protocol(132);
    /// UDP-Lite (136).
    pub const UDPLITE: Protocol = Protocol(136);

    /// Parses a protocol name or number as Calico's `numorstring.Protocol` accepts them.
    pub fn parse(text: &str) -> Option<Protocol> {
        if let Ok(n) = text.parse::<u8>() {
            return Some(Protocol(n));
        }
        match text.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::TCP),
            "udp" => Some(Protocol::UDP),
            "icmp" => Some(Protocol::ICMP),
            "icmpv6" => Some(Protocol::ICMPV6),
            "sctp" => Some(Protocol::SCTP),
            "udplite" => Some(Protocol::UDPLITE),
            _ => None,
        }
    }

    /// Whether a rule may match ports with this protocol (Calico: TCP, UDP or SCTP).
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::TCP | Protocol::UDP | Protocol::SCTP)
    }

    /// Whether this is ICMP or ICMPv6.
    pub fn is_icmp(self) -> bool {
        matches!(self, Protocol::ICMP | Protocol::ICMPV6)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Protocol::TCP => f.write_str("TCP"),
            Protocol::UDP => f.write_str("UDP"),
            Protocol::ICMP => f.write_str("ICMP"),
            Protocol::ICMPV6 => f.write_str("ICMPv6"),
            Protocol::SCTP => f.write_str("SCTP"),
            Protocol::UDPLITE => f.write_str("UDPLite"),
            Protocol(n) => write!(f, "{n}"),
        }
    }
}

/// One entry of a rule's `ports`/`notPorts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// An inclusive range; a single port is `Range(p, p)`.
    Range(u16, u16),
    /// A named port, resolved against the ports endpoints declare.
    Named(String),
}

impl Port {
    /// A single numbered port.
    pub fn number(p: u16) -> Port {
        Port::Range(p, p)
    }

    /// Parses Calico's port syntax: `80`, `8000:8080`, or a name.
    pub fn parse(text: &str) -> Option<Port> {
        if let Some((a, b)) = text.split_once(':') {
            let (a, b) = (a.parse().ok()?, b.parse().ok()?);
            return (a <= b).then_some(Port::Range(a, b));
        }
        if let Ok(p) = text.parse() {
            return Some(Port::Range(p, p));
        }
        let valid = !text.is_empty()
            && text.len() <= 128
            && text
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
        valid.then(|| Port::Named(text.to_string()))
    }
}

/// ICMP type (and optionally code) to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IcmpFields {
    /// ICMP type (0..=254 in Calico).
    pub icmp_type: Option<u8>,
    /// ICMP code; only meaningful with a type.
    pub code: Option<u8>,
}

/// `serviceAccounts` of an entity rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceAccountMatch {
    /// Service account names (in the policy's namespace, or any namespace for global policy).
    pub names: Vec<String>,
    /// Selector over service account labels.
    pub selector: String,
}

/// Source or destination of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntityRule {
    /// The peer address is in one of these.
    pub nets: Vec<IpNet>,
    /// The peer address is in none of these.
    pub not_nets: Vec<IpNet>,
    /// The peer is an endpoint or network set matching this selector.
    pub selector: String,
    /// The peer matches none of these.
    pub not_selector: String,
    /// The peer is in a namespace matching this (`global()`: a non-namespaced resource).
    pub namespace_selector: String,
    /// The peer runs as one of these service accounts.
    pub service_accounts: Option<ServiceAccountMatch>,
    /// The port on this side is one of these.
    pub ports: Vec<Port>,
    /// The port on this side is none of these.
    pub not_ports: Vec<Port>,
}

/// One policy or profile rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What to do on a match.
    pub action: Action,
    /// Restrict to one IP family.
    pub ip_version: Option<IpVersion>,
    /// Protocol (name or number), as written.
    pub protocol: Option<String>,
    /// Negated protocol, as written.
    pub not_protocol: Option<String>,
    /// ICMP type/code to match (needs protocol ICMP or ICMPv6).
    pub icmp: Option<IcmpFields>,
    /// ICMP type/code not to match.
    pub not_icmp: Option<IcmpFields>,
    /// Packet source.
    pub source: EntityRule,
    /// Packet destination.
    pub destination: EntityRule,
    /// A match this dataplane cannot enforce (an `http` or `services` match), already left
    /// out of `source`/`destination`. The compiler skips such a rule unless it is a Deny,
    /// which it enforces without that match (it denies more): both fail closed.
    pub unenforced: Option<Unenforced>,
}

/// Why a rule cannot be enforced as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unenforced {
    /// Field path inside the resource (`spec.ingress[0].http`).
    pub field: String,
    /// Why.
    pub reason: String,
}

impl Rule {
    /// A rule with this action and no match criteria.
    pub fn new(action: Action) -> Rule {
        Rule {
            action,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: EntityRule::default(),
            destination: EntityRule::default(),
            unenforced: None,
        }
    }
}

/// A tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    /// Tier name.
    pub name: String,
    /// Lower orders run first; `None` runs last.
    pub order: Option<f64>,
    /// What happens at the end of the tier for endpoints it applies to.
    pub default_action: TierDefaultAction,
}

/// A NetworkPolicy (namespaced) or GlobalNetworkPolicy, possibly staged.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Name as stored (for a tiered policy, Calico names it `<tier>.<name>`; kept as given).
    pub name: String,
    /// `Some` for NetworkPolicy (applies only to workloads in that namespace), `None` for global.
    pub namespace: Option<String>,
    /// Tier name; empty means `default`.
    pub tier: String,
    /// Lower orders run first; `None` runs after all ordered policies.
    pub order: Option<f64>,
    /// Endpoints the policy applies to.
    pub selector: String,
    /// GlobalNetworkPolicy only: also require the endpoint's namespace to match.
    pub namespace_selector: String,
    /// Also require the endpoint's service account to match.
    pub service_account_selector: String,
    /// Directions the policy applies to; empty means "default as Calico does".
    pub types: Vec<Direction>,
    /// Ingress rules.
    pub ingress: Vec<Rule>,
    /// Egress rules.
    pub egress: Vec<Rule>,
    /// Host endpoints only: enforce before connection tracking.
    pub do_not_track: bool,
    /// Host endpoints only: enforce before DNAT (ingress only).
    pub pre_dnat: bool,
    /// Host endpoints only: also enforce on traffic forwarded through the host.
    pub apply_on_forward: bool,
    /// A staged variant: evaluated for reporting, never enforced.
    pub staged: bool,
}

impl Policy {
    /// A global, unstaged policy in the default tier with no rules.
    pub fn new(name: &str, selector: &str) -> Policy {
        Policy {
            name: name.to_string(),
            namespace: None,
            tier: String::new(),
            order: None,
            selector: selector.to_string(),
            namespace_selector: String::new(),
            service_account_selector: String::new(),
            types: Vec::new(),
            ingress: Vec::new(),
            egress: Vec::new(),
            do_not_track: false,
            pre_dnat: false,
            apply_on_forward: false,
            staged: false,
        }
    }

    /// The tier, with Calico's default.
    pub fn tier_name(&self) -> &str {
        if self.tier.is_empty() {
            DEFAULT_TIER
        } else {
            &self.tier
        }
    }

    /// `types` as Calico defaults it: as given when non-empty; otherwise `[Ingress]` when there
    /// are no egress rules, `[Egress]` when there are egress rules but no ingress rules, and
    /// both when there are both.
    pub fn effective_types(&self) -> Vec<Direction> {
        if !self.types.is_empty() {
            let mut t = self.types.clone();
            t.sort();
            t.dedup();
            return t;
        }
        match (self.ingress.is_empty(), self.egress.is_empty()) {
            (_, true) => vec![Direction::Ingress],
            (true, false) => vec![Direction::Egress],
            (false, false) => vec![Direction::Ingress, Direction::Egress],
        }
    }

    /// Name used in programs and reports: `namespace/name` for namespaced policies.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A profile: rules applied when no tier decided, and labels endpoints inherit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Profile name.
    pub name: String,
    /// Labels every endpoint using the profile inherits (its own labels win).
    pub labels_to_apply: LabelMap,
    /// Ingress rules.
    pub ingress: Vec<Rule>,
    /// Egress rules.
    pub egress: Vec<Rule>,
}

/// A port an endpoint declares by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    /// Port name.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its number.
    pub port: u16,
}

/// A workload (container/pod) endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadEndpoint {
    /// Endpoint name, unique within its namespace.
    pub name: String,
    /// Node (host) the workload runs on; programs are compiled for one node's endpoints.
    pub node: String,
    /// Namespace.
    pub namespace: String,
    /// Host-side interface (e.g. `cali1234567890a`).
    pub interface_name: String,
    /// Own labels.
    pub labels: LabelMap,
    /// Orchestrator (`k8s`, `libnetwork`, ...), exposed as `projectcalico.org/orchestrator`.
    pub orchestrator: Option<String>,
    /// Labels of its namespace (inherited as `pcns.<key>`).
    pub namespace_labels: LabelMap,
    /// Service account, exposed as `projectcalico.org/serviceaccount`.
    pub service_account: Option<String>,
    /// Labels of its service account (inherited as `pcsa.<key>`).
    pub service_account_labels: LabelMap,
    /// Addresses (normally /32 and /128).
    pub ips: Vec<IpNet>,
    /// Named ports.
    pub ports: Vec<NamedPort>,
    /// Profiles, in order.
    pub profiles: Vec<String>,
}

/// A host endpoint: an interface of a host (or `*`, all of them) under policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostEndpoint {
    /// Resource name.
    pub name: String,
    /// Node (host) the interface belongs to.
    pub node: String,
    /// Interface, or `None`/`*` for all interfaces of the host.
    pub interface_name: Option<String>,
    /// Addresses other endpoints' rules see it as.
    pub expected_ips: Vec<IpAddr>,
    /// Labels.
    pub labels: LabelMap,
    /// Named ports.
    pub ports: Vec<NamedPort>,
    /// Profiles, in order.
    pub profiles: Vec<String>,
}

/// A NetworkSet (namespaced) or GlobalNetworkSet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkSet {
    /// Name.
    pub name: String,
    /// `Some` for a NetworkSet.
    pub namespace: Option<String>,
    /// Labels of the namespace (inherited as `pcns.<key>`), for namespaced sets.
    pub namespace_labels: LabelMap,
    /// Own labels.
    pub labels: LabelMap,
    /// Networks.
    pub nets: Vec<IpNet>,
}

/// One failsafe entry: traffic on this protocol and port to (inbound) or from (outbound) host
/// endpoints is allowed whatever the policy says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FailsafePort {
    /// Protocol (TCP, UDP or SCTP).
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// Remote network (source for inbound, destination for outbound); `None` is any.
    pub net: Option<IpNet>,
}

/// Failsafe ports, as FelixConfiguration's `failsafeInboundHostPorts`/`failsafeOutboundHostPorts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failsafe {
    /// Allowed into the host.
    pub inbound: Vec<FailsafePort>,
    /// Allowed out of the host.
    pub outbound: Vec<FailsafePort>,
}

impl Default for Failsafe {
    /// Calico's defaults: in tcp:22, udp:68, tcp:179, tcp:2379, tcp:2380, tcp:5473, tcp:6443,
    /// tcp:6666, tcp:6667; out udp:53, udp:67, tcp:179, tcp:2379, tcp:2380, tcp:5473, tcp:6443,
    /// tcp:6666, tcp:6667.
    fn default() -> Self {
        let p = |protocol, port| FailsafePort {
            protocol,
            port,
            net: None,
        };
        let common = [179, 2379, 2380, 5473, 6443, 6666, 6667].map(|n| p(Protocol::TCP, n));
        let mut inbound = vec![p(Protocol::TCP, 22), p(Protocol::UDP, 68)];
        inbound.extend(common.iter().cloned());
        let mut outbound = vec![p(Protocol::UDP, 53), p(Protocol::UDP, 67)];
        outbound.extend(common.iter().cloned());
        Failsafe { inbound, outbound }
    }
}

/// Everything the compiler needs for one host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyModel {
    /// Tiers (`default` is implied when absent).
    pub tiers: Vec<Tier>,
    /// Policies of every kind.
    pub policies: Vec<Policy>,
    /// Profiles.
    pub profiles: Vec<Profile>,
    /// Workload endpoints (all of them: remote ones still populate IP sets).
    pub workload_endpoints: Vec<WorkloadEndpoint>,
    /// Host endpoints (all of them).
    pub host_endpoints: Vec<HostEndpoint>,
    /// Network sets.
    pub network_sets: Vec<NetworkSet>,
    /// Failsafe ports for host endpoints.
    pub failsafe: Failsafe,
}
