//! Reference evaluator: what a compiled chain decides for the first packet of a connection.
//! Written for clarity, not speed; property tests and the nftables tests use it as the oracle.
//! (Established/related packets are allowed before any chain by the dataplane; not modelled.)

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{Action, Direction, FailsafePort, IcmpFields, IpVersion, Protocol};
use crate::program::{
    AddressMatch, Chain, EndOfTier, EndpointProgram, Fallthrough, HostProgram, PortMatch, RuleMatch,
};
use crate::sets::{Member, SetId};

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// IP protocol.
    pub protocol: Protocol,
    /// Source port (TCP, UDP, SCTP).
    pub src_port: Option<u16>,
    /// Destination port (TCP, UDP, SCTP).
    pub dst_port: Option<u16>,
    /// ICMP type (ICMP, ICMPv6).
    pub icmp_type: Option<u8>,
    /// ICMP code.
    pub icmp_code: Option<u8>,
}

impl Packet {
    /// A TCP packet.
    pub fn tcp(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> Packet {
        Packet::ported(Protocol::TCP, src, src_port, dst, dst_port)
    }

    /// A UDP packet.
    pub fn udp(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> Packet {
        Packet::ported(Protocol::UDP, src, src_port, dst, dst_port)
    }

    fn ported(protocol: Protocol, src: IpAddr, sp: u16, dst: IpAddr, dp: u16) -> Packet {
        Packet {
            src,
            dst,
            protocol,
            src_port: Some(sp),
            dst_port: Some(dp),
            icmp_type: None,
            icmp_code: None,
        }
    }

    /// An ICMP echo request (ICMPv6 for IPv6 addresses).
    pub fn ping(src: IpAddr, dst: IpAddr) -> Packet {
        let (protocol, icmp_type) = match src {
            IpAddr::V4(_) => (Protocol::ICMP, 8),
            IpAddr::V6(_) => (Protocol::ICMPV6, 128),
        };
        Packet {
            src,
            dst,
            protocol,
            src_port: None,
            dst_port: None,
            icmp_type: Some(icmp_type),
            icmp_code: Some(0),
        }
    }

    /// The packet's family.
    pub fn ip_version(&self) -> IpVersion {
        IpVersion::of(self.src)
    }
}

/// Allowed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Accepted.
    Allow,
    /// Dropped.
    Deny,
}

/// What one chain decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Accepted by this chain.
    Allow,
    /// Dropped by this chain.
    Deny,
    /// No decision here (see [`Fallthrough::Continue`]).
    Continue,
}

/// Which part of the chain decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// A failsafe port.
    Failsafe(FailsafePort),
    /// A policy rule.
    PolicyRule {
        /// Tier.
        tier: String,
        /// Policy.
        policy: String,
        /// Rule index in the policy.
        rule: usize,
    },
    /// The end of a tier that applied to the endpoint.
    EndOfTier {
        /// Tier.
        tier: String,
    },
    /// A profile rule.
    ProfileRule {
        /// Profile.
        profile: String,
        /// Rule index.
        rule: usize,
    },
    /// Nothing matched: the chain's fallthrough.
    Fallthrough,
}

/// Where a rule sits, for logs and staged reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// Tier (empty for profiles).
    pub tier: String,
    /// Policy or profile.
    pub owner: String,
    /// Rule index.
    pub rule: usize,
}

/// What a staged policy would have done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedResult {
    /// Tier.
    pub tier: String,
    /// Policy.
    pub policy: String,
    /// First matching non-Log rule's action and index; `None` when no rule matched.
    pub action: Option<(Action, usize)>,
}

/// Full account of an evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The decision.
    pub outcome: Outcome,
    /// Who made it.
    pub decided_by: DecidedBy,
    /// Log rules that matched on the way.
    pub logged: Vec<RuleRef>,
    /// Staged policies met on the way and what they would have done.
    pub staged: Vec<StagedResult>,
}

/// Membership lookups for the evaluator.
pub trait SetLookup {
    /// Whether `member` (an address as a host network, or an address with a port) is in the
    /// set; for address sets, whether any network member contains the address.
    fn contains_addr(&self, set: &SetId, addr: IpAddr) -> bool;
    /// Whether the set holds this `(address, protocol, port)`.
    fn contains_port(&self, set: &SetId, addr: IpAddr, protocol: Protocol, port: u16) -> bool;
}

impl SetLookup for HostProgram {
    fn contains_addr(&self, set: &SetId, addr: IpAddr) -> bool {
        self.sets.get(set).is_some_and(|s| {
            s.members
                .iter()
                .any(|m| matches!(m, Member::Net(n) if n.contains(&addr)))
        })
    }

    fn contains_port(&self, set: &SetId, addr: IpAddr, protocol: Protocol, port: u16) -> bool {
        self.sets.get(set).is_some_and(|s| {
            s.members.contains(&Member::Port {
                addr,
                protocol,
                port,
            })
        })
    }
}

impl SetLookup for crate::sets::SetIndex {
    fn contains_addr(&self, set: &SetId, addr: IpAddr) -> bool {
        self.members(set)
            .iter()
            .any(|m| matches!(m, Member::Net(n) if n.contains(&addr)))
    }

    fn contains_port(&self, set: &SetId, addr: IpAddr, protocol: Protocol, port: u16) -> bool {
        self.contains(
            set,
            &Member::Port {
                addr,
                protocol,
                port,
            },
        )
    }
}

fn in_nets(nets: &[IpNet], addr: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&addr))
}

fn icmp_matches(f: &IcmpFields, p: &Packet) -> bool {
    f.icmp_type.is_none_or(|t| p.icmp_type == Some(t))
        && f.code.is_none_or(|c| p.icmp_code == Some(c))
}

fn ports_match(
    m: &PortMatch,
    addr: IpAddr,
    port: Option<u16>,
    p: &Packet,
    sets: &dyn SetLookup,
) -> bool {
    let Some(port) = port else { return false };
    m.ranges.iter().any(|&(a, b)| a <= port && port <= b)
        || m.named_port_sets
            .iter()
            .any(|s| sets.contains_port(s, addr, p.protocol, port))
}

fn side_matches(
    m: &AddressMatch,
    addr: IpAddr,
    port: Option<u16>,
    p: &Packet,
    sets: &dyn SetLookup,
) -> bool {
    (m.nets.is_empty() || in_nets(&m.nets, addr))
        && !in_nets(&m.not_nets, addr)
        && m.set.as_ref().is_none_or(|s| sets.contains_addr(s, addr))
        && m.not_set
            .as_ref()
            .is_none_or(|s| !sets.contains_addr(s, addr))
        && m.ports
            .as_ref()
            .is_none_or(|pm| ports_match(pm, addr, port, p, sets))
        && m.not_ports
            .as_ref()
            .is_none_or(|pm| !ports_match(pm, addr, port, p, sets))
}

/// Whether a rule matches a packet.
pub fn rule_matches(m: &RuleMatch, p: &Packet, sets: &dyn SetLookup) -> bool {
    let Some(m) = m.for_family(p.ip_version()) else {
        return false;
    };
    if m.protocol.is_some_and(|x| x != p.protocol) || m.not_protocol == Some(p.protocol) {
        return false;
    }
    if m.icmp.as_ref().is_some_and(|f| !icmp_matches(f, p))
        || m.not_icmp.as_ref().is_some_and(|f| icmp_matches(f, p))
    {
        return false;
    }
    side_matches(&m.source, p.src, p.src_port, p, sets)
        && side_matches(&m.destination, p.dst, p.dst_port, p, sets)
}

fn failsafe_matches(f: &FailsafePort, direction: Direction, p: &Packet) -> bool {
    let remote = match direction {
        Direction::Ingress => p.src,
        Direction::Egress => p.dst,
    };
    f.protocol == p.protocol
        && p.dst_port == Some(f.port)
        && f.net.is_none_or(|n| n.contains(&remote))
}

/// Evaluates one chain of `host` for a packet.
pub fn evaluate(chain: &Chain, host: &HostProgram, p: &Packet) -> Trace {
    let sets: &dyn SetLookup = host;
    let mut logged = Vec::new();
    let mut staged = Vec::new();
    let done = |outcome, decided_by, logged, staged| Trace {
        outcome,
        decided_by,
        logged,
        staged,
    };
    for f in &chain.failsafe {
        if failsafe_matches(f, chain.direction, p) {
            return done(
                Outcome::Allow,
                DecidedBy::Failsafe(f.clone()),
                logged,
                staged,
            );
        }
    }
    'tiers: for tier in &chain.tiers {
        for policy in &tier.policies {
            if policy.staged {
                let action = host
                    .rules(&policy.rules)
                    .iter()
                    .find(|r| r.action != Action::Log && rule_matches(&r.matches, p, sets))
                    .map(|r| (r.action, r.index));
                staged.push(StagedResult {
                    tier: tier.name.clone(),
                    policy: policy.name.clone(),
                    action,
                });
                continue;
            }
            for rule in host.rules(&policy.rules) {
                if !rule_matches(&rule.matches, p, sets) {
                    continue;
                }
                let by = || DecidedBy::PolicyRule {
                    tier: tier.name.clone(),
                    policy: policy.name.clone(),
                    rule: rule.index,
                };
                match rule.action {
                    Action::Log => logged.push(RuleRef {
                        tier: tier.name.clone(),
                        owner: policy.name.clone(),
                        rule: rule.index,
                    }),
                    Action::Allow => return done(Outcome::Allow, by(), logged, staged),
                    Action::Deny => return done(Outcome::Deny, by(), logged, staged),
                    Action::Pass => continue 'tiers,
                }
            }
        }
        if tier.end_of_tier == EndOfTier::Deny {
            let by = DecidedBy::EndOfTier {
                tier: tier.name.clone(),
            };
            return done(Outcome::Deny, by, logged, staged);
        }
    }
    'profiles: for profile in &chain.profiles {
        for rule in host.rules(&profile.rules) {
            if !rule_matches(&rule.matches, p, sets) {
                continue;
            }
            let by = || DecidedBy::ProfileRule {
                profile: profile.name.clone(),
                rule: rule.index,
            };
            match rule.action {
                Action::Log => logged.push(RuleRef {
                    tier: String::new(),
                    owner: profile.name.clone(),
                    rule: rule.index,
                }),
                Action::Allow => return done(Outcome::Allow, by(), logged, staged),
                Action::Deny => return done(Outcome::Deny, by(), logged, staged),
                // A profile's Pass ends that profile; the next one is consulted.
                Action::Pass => continue 'profiles,
            }
        }
    }
    let outcome = match chain.fallthrough {
        Fallthrough::Deny => Outcome::Deny,
        Fallthrough::Allow => Outcome::Allow,
        Fallthrough::Continue => Outcome::Continue,
    };
    done(outcome, DecidedBy::Fallthrough, logged, staged)
}

/// Whether an endpoint's normal chain for `direction` allows a new connection's first packet.
pub fn verdict(
    program: &EndpointProgram,
    direction: Direction,
    host: &HostProgram,
    packet: &Packet,
) -> Verdict {
    match evaluate(program.chain(direction), host, packet).outcome {
        Outcome::Allow => Verdict::Allow,
        // Normal chains always end in Deny; Continue cannot happen there.
        Outcome::Deny | Outcome::Continue => Verdict::Deny,
    }
}

/// Whether a new connection from `from` to `to` is allowed on this host: the sender's egress
/// chain, then the receiver's ingress chain. `None` stands for a peer that is not a local
/// workload (remote host, outside world), which has no chain here.
pub fn path_verdict(
    from: Option<&EndpointProgram>,
    to: Option<&EndpointProgram>,
    host: &HostProgram,
    packet: &Packet,
) -> Verdict {
    let sides = [(from, Direction::Egress), (to, Direction::Ingress)];
    for (ep, dir) in sides {
        if let Some(ep) = ep
            && verdict(ep, dir, host, packet) == Verdict::Deny
        {
            return Verdict::Deny;
        }
    }
    Verdict::Allow
}
