//! A [`HostProgram`] rendered as the table `inet calico-rs`: as data ([`render_spec`]) and as
//! one [`Batch`] replacing the whole table ([`render_table`]).
//!
//! Layout (names follow Felix's iptables chains where there is one):
//! - two `forward` base chains: `from-wl` (priority 0) sends packets arriving from a workload
//!   interface through the verdict map `@from-wl` to that endpoint's egress chain `fw-<if>`;
//!   `to-wl` (priority 1) sends packets leaving to a workload through `@to-wl` to its ingress
//!   chain `tw-<if>`. Both allow established/related and drop invalid first. Dispatch is one
//!   map lookup whatever the number of endpoints. A packet of a workload-prefixed interface
//!   (`cali*`, [`RenderSettings::interface_prefixes`]) the maps do not know is dropped and
//!   counted ([`UNKNOWN_INTERFACE`]), as Felix's dispatch chains do. An `accept` ends only the base chain it is
//!   in, so a packet between two local workloads passes the sender's egress, then the
//!   receiver's ingress; `drop` is final.
//! - per endpoint and direction: `<ep>` jumps to one chain per tier `<ep>-t<n>`, then to the
//!   profile chains, then applies the fallthrough;
//! - a tier chain jumps to the shared chain of each policy; a policy's Pass sets the mark bit
//!   [`PASS_MARK`] and returns, the tier chain returns when it sees it, the endpoint chain
//!   clears it and goes on with the next tier; the tier ends with its end-of-tier drop;
//! - one shared chain per policy/profile and direction (`pol:`/`pro:` + name), with a counter
//!   and a comment on every rule, rendered per IP family with `RuleMatch::for_family`;
//! - every IP set becomes two named sets `<id>-4`/`<id>-6` (interval sets, CIDRs allowed).
//!
//! Named ports: a named-port set is an nft set of `address . port` per family; a rule whose
//! `ports` mix ranges and named ports becomes one nft rule per alternative.
//!
//! Host endpoints: see [`render_host_endpoints`].
//!
//! Not rendered (an error, so nothing is silently weaker): ports without a protocol.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use calico_policy::model::{Action, Direction, FailsafePort, IpVersion, Protocol};
use calico_policy::program::IpSet;
use calico_policy::program::{
    AddressMatch, Chain, ChainKind, EndOfTier, EndpointProgram, Fallthrough, HostChains,
    HostProgram, RuleListId,
};
use calico_policy::sets::{Member, SetId, SetKey};
use ipnet::IpNet;
use sha1::{Digest, Sha1};

use crate::batch::matches::{ct_state_any, ifname_key, mark_any, mark_update, meta_eq};
use crate::batch::{
    Batch, ChainSpec, CmpOp, Expr, Family, Hook, KeyType, MetaKey, NFPROTO_IPV4, NFPROTO_IPV6,
    PayloadBase, SetElem, SetSpec, Verdict, ct,
};
use crate::table::{TablePatch, TableSpec, full_batch};

/// The table calico-rs owns (and recognises after a restart).
pub const TABLE_NAME: &str = "calico-rs";
/// Mark bit a policy's Pass sets (Felix's default pass bit in its 0xffff0000 range).
pub const PASS_MARK: u32 = 0x0002_0000;
/// Verdict map: workload interface → egress chain.
pub const FROM_WL_MAP: &str = "from-wl";
/// Verdict map: workload interface → ingress chain.
pub const TO_WL_MAP: &str = "to-wl";

/// What cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A rule matches ports but no single protocol that has ports.
    #[error("{list} rule {rule}: ports need protocol TCP, UDP, SCTP or UDPLite")]
    PortsWithoutProtocol {
        /// Rule list.
        list: String,
        /// Rule index.
        rule: usize,
    },
    /// Named-port sets are not rendered yet.
    #[error(
        "{list} rule {rule}: named port set {set} is not supported by the nftables renderer yet"
    )]
    NamedPortSet {
        /// Rule list.
        list: String,
        /// Rule index.
        rule: usize,
        /// Set.
        set: SetId,
    },
    /// A workload endpoint without an interface name.
    #[error("{endpoint} has no interface name")]
    NoInterface {
        /// Endpoint.
        endpoint: String,
    },
}

/// Name of the nft set holding a set's members of one family.
pub fn set_name(id: &SetId, v: IpVersion) -> String {
    format!("{}-{}", id.0, family_digit(v))
}

fn family_digit(v: IpVersion) -> u8 {
    match v {
        IpVersion::V4 => 4,
        IpVersion::V6 => 6,
    }
}

/// Name of the shared chain of a rule list.
pub fn rule_list_chain(id: &RuleListId) -> String {
    let (kind, name, dir) = match id {
        RuleListId::Policy {
            name,
            staged,
            direction,
        } => (if *staged { "staged" } else { "pol" }, name, direction),
        RuleListId::Profile { name, direction } => ("pro", name, direction),
    };
    let d = match dir {
        calico_policy::model::Direction::Ingress => "i",
        calico_policy::model::Direction::Egress => "e",
    };
    let full = format!("{kind}:{d}:{name}");
    if full.len() <= 200 {
        full
    } else {
        // Chain names are bounded; keep a readable head and make it unique with a digest.
        let digest = hex::encode(Sha1::digest(full.as_bytes()));
        format!(
            "{}~{}",
            &full[..full.floor_char_boundary(170)],
            &digest[..20]
        )
    }
}

/// What happens to traffic from a workload to the host itself (Felix's
/// `DefaultEndpointToHostAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointToHost {
    /// Dropped whatever the workload's egress policy says (Felix's default), except
    /// replies to connections the host opened, DHCP (UDP 67, 547) and, in both modes, IPv6
    /// neighbour discovery, as Felix allows.
    #[default]
    Drop,
    /// Felix's `Return`: the workload's egress policy decides; what it allows leaves our
    /// chains and the host's own rules (other tables, iptables-nft's `INPUT`) decide. Felix's
    /// `Accept` is enforced the same way: an nf_tables `accept` ends only the base chain it
    /// is in, so no table can accept a packet on behalf of the host's other tables.
    Return,
}

/// The workload interface prefix Felix uses by default (`interfacePrefix`).
pub const DEFAULT_INTERFACE_PREFIX: &str = calico_policy::felix::DEFAULT_INTERFACE_PREFIX;

/// Comment (and so the name `calicoctl` and the agent read) of the rules that drop traffic of
/// a workload-prefixed interface that has no endpoint in the table.
pub const UNKNOWN_INTERFACE: &str = "Unknown interface";

/// Host-wide settings of the rendering (Felix's `DefaultEndpointToHostAction` and
/// `InterfacePrefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSettings {
    /// Traffic from workloads to the host itself.
    pub to_host: EndpointToHost,
    /// Prefixes of workload interfaces (Felix's `InterfacePrefix`, a comma-separated list
    /// there): traffic on such an interface that no endpoint owns is dropped.
    pub interface_prefixes: Vec<String>,
    /// NAT outgoing (the chain [`crate::nat::NAT_CHAIN`] and its pool sets).
    pub nat: crate::nat::NatOutgoing,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            to_host: EndpointToHost::default(),
            interface_prefixes: vec![DEFAULT_INTERFACE_PREFIX.to_owned()],
            nat: crate::nat::NatOutgoing::default(),
        }
    }
}

/// The whole table, as one batch that first removes any previous version of it: the kernel
/// applies it atomically, so packets see either the old or the new table.
pub fn render_table(host: &HostProgram, settings: &RenderSettings) -> Result<Batch, RenderError> {
    Ok(full_batch(TABLE_NAME, &render_spec(host, settings)?))
}

/// The whole table as data (every chain with its rules, every set with its elements): what
/// [`render_table`] sends, and what [`crate::table::diff`] compares between two programs.
pub fn render_spec(
    host: &HostProgram,
    settings: &RenderSettings,
) -> Result<TableSpec, RenderError> {
    render_spec_from(host, settings, None)
}

/// [`render_spec`], reusing from `prev` (a program and the table rendered from it) every set,
/// rule-list chain and workload endpoint chain whose part of the program is unchanged: the
/// cost of a small change no longer grows with the rendering of the whole table. The result
/// is the same as [`render_spec`]'s (a property test checks it).
pub fn render_spec_from(
    host: &HostProgram,
    settings: &RenderSettings,
    prev: Option<(&HostProgram, &TableSpec)>,
) -> Result<TableSpec, RenderError> {
    let mut b = TableSpec::default();

    for (id, set) in &host.sets {
        if let Some((p, t)) = prev
            && p.sets.get(id) == Some(set)
            && [IpVersion::V4, IpVersion::V6]
                .iter()
                .all(|v| t.sets.contains_key(&set_name(id, *v)))
        {
            for v in [IpVersion::V4, IpVersion::V6] {
                b.reuse_set(t, &set_name(id, v));
            }
            continue;
        }
        for v in [IpVersion::V4, IpVersion::V6] {
            let (spec, elems) = set_contents(id, set, v);
            b.add_set(&spec);
            b.add_elements(&spec.name, &elems);
        }
    }

    // Shared rule-list chains (staged policies are never enforced, so never rendered).
    // A doNotTrack policy is only ever in untracked chains (the compiler keeps it out of the
    // others), so its shared chain can render Allow as `notrack` + `accept`.
    let mut used: BTreeSet<&RuleListId> = BTreeSet::new();
    let mut untracked: BTreeSet<&RuleListId> = BTreeSet::new();
    for ep in host.endpoints.values() {
        for chain in ep.chains() {
            let mut ids = Vec::new();
            for tier in &chain.tiers {
                ids.extend(tier.policies.iter().filter(|p| !p.staged).map(|p| &p.rules));
            }
            ids.extend(chain.profiles.iter().map(|p| &p.rules));
            if chain.kind == ChainKind::Untracked {
                untracked.extend(ids.iter().copied());
            }
            used.extend(ids);
        }
    }
    // `prev` rendered a rule list the same way if it had the same rules and the same
    // untracked flag (an Allow renders differently there).
    let prev_untracked: BTreeSet<RuleListId> = prev
        .map(|(p, _)| {
            let mut out = BTreeSet::new();
            for ep in p.endpoints.values() {
                for c in ep.chains() {
                    if c.kind == ChainKind::Untracked {
                        calico_policy::program::for_each_rule_list(c, &mut |x| {
                            out.insert(x.clone());
                        });
                    }
                }
            }
            out
        })
        .unwrap_or_default();
    let mut rule_batches = Vec::new();
    for id in &used {
        let chain = rule_list_chain(id);
        if let Some((p, t)) = prev
            && p.rule_lists.get(*id) == host.rule_lists.get(*id)
            && !untracked.contains(*id)
            && !prev_untracked.contains(*id)
            && b.reuse_chain(t, &chain)
        {
            b.reuse_numbered_sets(t, &format!("{chain}#"));
            continue;
        }
        b.add_chain(&ChainSpec::regular(&chain));
        rule_batches.push((id, chain));
    }
    for (id, chain) in &rule_batches {
        render_rule_list(&mut b, host, id, chain, untracked.contains(*id))?;
    }

    // Endpoint chains.
    let mut from = Vec::new();
    let mut to = Vec::new();
    let mut heps = Vec::new();
    for ep in host.endpoints.values() {
        if let Some(chains) = &ep.host {
            heps.push((ep.interface.as_deref(), ep, chains));
            continue;
        }
        let iface = ep
            .interface
            .as_deref()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| RenderError::NoInterface {
                endpoint: ep.id.to_string(),
            })?;
        let egress = format!("fw-{iface}");
        let ingress = format!("tw-{iface}");
        let unchanged = prev.is_some_and(|(p, t)| {
            p.endpoints.get(&ep.id) == Some(ep)
                && t.chains.contains_key(&egress)
                && t.chains.contains_key(&ingress)
        });
        match prev {
            Some((_, t)) if unchanged => {
                for name in [&egress, &ingress] {
                    b.reuse_chain(t, name);
                    b.reuse_numbered_chains(t, &format!("{name}-t"));
                }
            }
            _ => {
                render_endpoint_chain(&mut b, &egress, &ep.egress);
                render_endpoint_chain(&mut b, &ingress, &ep.ingress);
            }
        }
        from.push(SetElem {
            verdict: Some(Verdict::Goto(egress)),
            ..SetElem::key(ifname_key(iface))
        });
        to.push(SetElem {
            verdict: Some(Verdict::Goto(ingress)),
            ..SetElem::key(ifname_key(iface))
        });
    }
    for (map, elems) in [(FROM_WL_MAP, from), (TO_WL_MAP, to)] {
        b.add_set(&SetSpec {
            name: map.into(),
            key: KeyType::IfName,
            interval: false,
            verdict_map: true,
        });
        b.add_elements(map, &elems);
    }

    // Base chains last: they go live with the commit, complete.
    for (name, prio, key, map) in [
        ("from-wl", 0, MetaKey::IifName, FROM_WL_MAP),
        ("to-wl", 1, MetaKey::OifName, TO_WL_MAP),
    ] {
        b.add_chain(&ChainSpec::base(name, Hook::Forward, prio, Verdict::Accept));
        let mut r = ct_state_any(ct::INVALID);
        r.extend([Expr::Counter, Expr::Verdict(Verdict::Drop)]);
        b.add_rule(name, &r, Some("drop invalid"));
        let mut r = ct_state_any(ct::ESTABLISHED | ct::RELATED);
        r.extend([Expr::Counter, Expr::Verdict(Verdict::Accept)]);
        b.add_rule(name, &r, Some("allow established,related"));
        b.add_rule(
            name,
            &[Expr::Meta(key), Expr::VerdictMap(map.into())],
            Some("dispatch to the workload's chain"),
        );
        // Every endpoint chain ends in a verdict, so only a packet of an interface the map
        // does not know gets here: a workload-prefixed one is dropped (Felix's "Unknown
        // interface"), whatever is not a workload interface is not ours to judge.
        drop_unknown_interfaces(&mut b, name, key, &settings.interface_prefixes);
    }
    render_to_host(&mut b, settings);
    if !heps.is_empty() {
        // Named interfaces before `*`: a named host endpoint takes precedence (as in Felix).
        heps.sort_by_key(|(iface, _, _)| iface.is_none());
        render_host_endpoints(&mut b, &heps, &settings.interface_prefixes);
    }
    crate::nat::render(&mut b, &settings.nat);
    Ok(b)
}

/// The parts of the table that change from `prev` (a program and the table rendered from it,
/// with the same settings) to `host`, found by pointer: the program shares its sets and rule
/// lists (`Arc`), and the incremental policy model replaces only those a change touches, so a
/// walk that compares pointers (no rendering, no allocation) finds them, and only they are
/// rendered. The result applied to `prev`'s table equals [`render_spec`] of `host` (a
/// property test checks it).
///
/// `None` when the change needs the whole render: the endpoints differ (their chains, the
/// verdict maps and which rule lists are rendered follow them), or a host endpoint is present
/// (its untracked chains render rule lists differently).
pub fn render_changes(
    host: &HostProgram,
    prev: (&HostProgram, &TableSpec),
) -> Result<Option<TablePatch>, RenderError> {
    let (p, t) = prev;
    if host.endpoints.values().any(|ep| ep.host.is_some()) || host.endpoints != p.endpoints {
        return Ok(None);
    }
    let mut patch = TablePatch::default();
    let mut part = TableSpec::default();
    changed_entries(&p.sets, &host.sets, |id, set| {
        for v in [IpVersion::V4, IpVersion::V6] {
            match set {
                Some(set) => {
                    let (spec, elems) = set_contents(id, set, v);
                    part.add_set(&spec);
                    part.add_elements(&spec.name, &elems);
                }
                None => {
                    patch.sets.insert(set_name(id, v), None);
                }
            }
        }
    });
    // With the same endpoints the same rule lists are rendered: those that have a chain in
    // `prev`'s table (staged ones never do). One whose rules changed is rendered again with
    // its auxiliary sets; the old auxiliary sets go unless rendered again.
    let mut lists = Vec::new();
    changed_entries(&p.rule_lists, &host.rule_lists, |id, _| lists.push(id));
    for id in lists {
        let chain = rule_list_chain(id);
        if !t.chains.contains_key(&chain) {
            continue;
        }
        let aux = format!("{chain}#");
        for (name, _) in t.sets.range(aux.clone()..) {
            let Some(rest) = name.strip_prefix(&aux) else {
                break;
            };
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                patch.sets.insert(name.clone(), None);
            }
        }
        part.add_chain(&ChainSpec::regular(&chain));
        render_rule_list(&mut part, host, id, &chain, false)?;
    }
    patch.put(part);
    Ok(Some(patch))
}

/// Calls `f` on every key of `new` whose value is not the same `Arc` as in `old` (with the
/// new value) and on every key `new` lacks (with `None`): one merge of the two sorted maps.
fn changed_entries<'a, K: Ord, V>(
    old: &'a BTreeMap<K, Arc<V>>,
    new: &'a BTreeMap<K, Arc<V>>,
    mut f: impl FnMut(&'a K, Option<&'a Arc<V>>),
) {
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => return,
            (Some((ok, _)), None) => {
                f(ok, None);
                o.next();
            }
            (None, Some((nk, nv))) => {
                f(nk, Some(nv));
                n.next();
            }
            (Some((ok, ov)), Some((nk, nv))) => match ok.cmp(nk) {
                Ordering::Less => {
                    f(ok, None);
                    o.next();
                }
                Ordering::Greater => {
                    f(nk, Some(nv));
                    n.next();
                }
                Ordering::Equal => {
                    if !Arc::ptr_eq(ov, nv) {
                        f(nk, Some(nv));
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
}

/// One host endpoint: its interface (`None`: every interface but loopback and workloads'),
/// its program and its extra chains.
type HostEp<'a> = (Option<&'a str>, &'a EndpointProgram, &'a HostChains);

/// Host endpoints: per endpoint the chains Felix names `fh-`/`th-` (from/to the host
/// endpoint: its ingress/egress), `fhfw-`/`thfw-` (forwarded, `applyOnForward`), `fhpd-`
/// (pre-DNAT ingress) and `fhu-`/`thu-` (untracked, `doNotTrack`), suffixed by the interface
/// (`*` for all). Base chains dispatch to them by interface:
/// - `hep-raw-in` (prerouting, priority -300, raw) and `hep-raw-out` (output, -300):
///   untracked chains, before conntrack; an allowed packet is exempted from tracking;
/// - `hep-prednat` (prerouting, -150, where Felix's mangle PREROUTING runs, before DNAT at
///   -100): pre-DNAT ingress;
/// - `hep-in` (input, 1) and `hep-out` (output, 1): traffic to and from the host itself,
///   failsafe ports first;
/// - `hep-fwd-in` (forward, 2) and `hep-fwd-out` (forward, 3): forwarded traffic arriving
///   through and leaving through the interface.
///
/// Loopback and workload interfaces (`cali*`) are never host endpoint traffic. Tracked base
/// chains allow established/related and untracked (already allowed by a doNotTrack policy)
/// packets and drop invalid ones before any policy, as Felix does.
fn render_host_endpoints(b: &mut TableSpec, heps: &[HostEp<'_>], prefixes: &[String]) {
    let suffix = |iface: Option<&str>| iface.unwrap_or("*").to_owned();
    type Pick = fn(&EndpointProgram, &HostChains) -> Chain;
    let stages: [(&str, Pick); 7] = [
        ("fh", |e, _| e.ingress.clone()),
        ("th", |e, _| e.egress.clone()),
        ("fhfw", |_, h| h.forward_ingress.clone()),
        ("thfw", |_, h| h.forward_egress.clone()),
        ("fhpd", |_, h| h.pre_dnat_ingress.clone()),
        ("fhu", |_, h| h.untracked_ingress.clone()),
        ("thu", |_, h| h.untracked_egress.clone()),
    ];
    for (iface, ep, chains) in heps {
        for (prefix, pick) in stages {
            let name = format!("{prefix}-{}", suffix(*iface));
            render_endpoint_chain(b, &name, &pick(ep, chains));
        }
    }
    // (base chain, hook, priority, incoming?, tracked?, endpoint chain prefix)
    let bases = [
        ("hep-raw-in", Hook::Prerouting, -300, true, false, "fhu"),
        ("hep-raw-out", Hook::Output, -300, false, false, "thu"),
        ("hep-prednat", Hook::Prerouting, -150, true, true, "fhpd"),
        ("hep-in", Hook::Input, 1, true, true, "fh"),
        ("hep-out", Hook::Output, 1, false, true, "th"),
        ("hep-fwd-in", Hook::Forward, 2, true, true, "fhfw"),
        ("hep-fwd-out", Hook::Forward, 3, false, true, "thfw"),
    ];
    for (name, hook, prio, incoming, tracked, prefix) in bases {
        b.add_chain(&ChainSpec::base(name, hook, prio, Verdict::Accept));
        let key = if incoming {
            MetaKey::IifName
        } else {
            MetaKey::OifName
        };
        b.add_rule(
            name,
            &[
                Expr::Meta(key),
                Expr::Cmp(CmpOp::Eq, ifname_key("lo")),
                Expr::Verdict(Verdict::Accept),
            ],
            Some("loopback is not a host endpoint"),
        );
        for prefix in prefixes {
            let mut r = iface_prefix(key, prefix);
            r.push(Expr::Verdict(Verdict::Accept));
            b.add_rule(name, &r, Some("workload interfaces have their own chains"));
        }
        if tracked {
            let mut r = ct_state_any(ct::INVALID);
            r.extend([Expr::Counter, Expr::Verdict(Verdict::Drop)]);
            b.add_rule(name, &r, Some("drop invalid"));
            let mut r = ct_state_any(ct::ESTABLISHED | ct::RELATED | ct::UNTRACKED);
            r.extend([Expr::Counter, Expr::Verdict(Verdict::Accept)]);
            b.add_rule(name, &r, Some("allow established,related,untracked"));
        }
        for (iface, _, _) in heps {
            let chain = format!("{prefix}-{}", suffix(*iface));
            let mut r = Vec::new();
            if let Some(i) = iface {
                r.extend([Expr::Meta(key), Expr::Cmp(CmpOp::Eq, ifname_key(i))]);
            }
            r.push(Expr::Verdict(Verdict::Goto(chain)));
            b.add_rule(name, &r, Some(&format!("host endpoint {}", suffix(*iface))));
        }
    }
}

/// A compare of the first bytes of the interface name: nft's `iifname "cali*"`.
fn iface_prefix(key: MetaKey, prefix: &str) -> Vec<Expr> {
    vec![
        Expr::Meta(key),
        Expr::Cmp(CmpOp::Eq, prefix.as_bytes().to_vec()),
    ]
}

/// `<key> "<prefix>*" counter drop comment "Unknown interface"`, per prefix.
fn drop_unknown_interfaces(b: &mut TableSpec, chain: &str, key: MetaKey, prefixes: &[String]) {
    for prefix in prefixes {
        let mut r = iface_prefix(key, prefix);
        r.extend([Expr::Counter, Expr::Verdict(Verdict::Drop)]);
        b.add_rule(chain, &r, Some(UNKNOWN_INTERFACE));
    }
}

/// Input hook: traffic from workload interfaces (`cali*`) to the host. As in Felix, the
/// workload's egress policy is consulted first (an interface without an endpoint is dropped
/// as "Unknown interface"), then `DefaultEndpointToHostAction` applies.
fn render_to_host(b: &mut TableSpec, settings: &RenderSettings) {
    let name = "wl-to-host";
    b.add_chain(&ChainSpec::base(name, Hook::Input, 0, Verdict::Accept));
    for prefix in &settings.interface_prefixes {
        render_to_host_for(b, name, prefix, settings.to_host);
    }
}

fn render_to_host_for(b: &mut TableSpec, name: &str, prefix: &str, to_host: EndpointToHost) {
    let from_wl = || iface_prefix(MetaKey::IifName, prefix);
    let mut r = from_wl();
    r.extend(ct_state_any(ct::INVALID));
    r.extend([Expr::Counter, Expr::Verdict(Verdict::Drop)]);
    b.add_rule(name, &r, Some("drop invalid"));
    let mut r = from_wl();
    r.extend(ct_state_any(ct::ESTABLISHED | ct::RELATED));
    r.extend([Expr::Counter, Expr::Verdict(Verdict::Accept)]);
    b.add_rule(name, &r, Some("allow established,related"));
    // IPv6 needs MLD, router and neighbour solicitations/advertisements to the host (types
    // 130-133, 135-136; not 134, a router advertisement from a workload), as Felix allows.
    for (lo, hi) in [(130u8, 133u8), (135, 136)] {
        let mut r = from_wl();
        r.extend(meta_eq(MetaKey::L4Proto, vec![Protocol::ICMPV6.0]));
        r.extend([
            Expr::Payload {
                base: PayloadBase::Transport,
                offset: 0,
                len: 1,
            },
            Expr::Cmp(CmpOp::Gte, vec![lo]),
            Expr::Cmp(CmpOp::Lte, vec![hi]),
            Expr::Counter,
            Expr::Verdict(Verdict::Accept),
        ]);
        b.add_rule(name, &r, Some("allow ICMPv6 neighbour discovery and MLD"));
    }
    match to_host {
        EndpointToHost::Return => {
            let mut r = from_wl();
            r.extend([
                Expr::Meta(MetaKey::IifName),
                Expr::VerdictMap(FROM_WL_MAP.into()),
            ]);
            b.add_rule(name, &r, Some("workload egress policy decides"));
            // What the policy allows was accepted by it (which ends only this chain: the
            // host's own rules still decide); no endpoint: dropped.
            let mut r = from_wl();
            r.extend([Expr::Counter, Expr::Verdict(Verdict::Drop)]);
            b.add_rule(name, &r, Some(UNKNOWN_INTERFACE));
        }
        EndpointToHost::Drop => {
            for port in [67u16, 547] {
                let mut r = from_wl();
                r.extend(meta_eq(MetaKey::L4Proto, vec![Protocol::UDP.0]));
                r.extend([
                    Expr::Payload {
                        base: PayloadBase::Transport,
                        offset: 2,
                        len: 2,
                    },
                    Expr::Cmp(CmpOp::Eq, port.to_be_bytes().to_vec()),
                    Expr::Counter,
                    Expr::Verdict(Verdict::Accept),
                ]);
                b.add_rule(name, &r, Some("allow DHCP"));
            }
            let mut r = from_wl();
            r.extend([Expr::Counter, Expr::Verdict(Verdict::Drop)]);
            b.add_rule(name, &r, Some("DefaultEndpointToHostAction Drop"));
        }
    }
}

/// A batch that rewrites only the given sets' elements (flush and refill, one transaction).
/// The sets must exist, i.e. the table was applied with a program that has them.
pub fn render_set_update(host: &HostProgram, ids: &[SetId]) -> Batch {
    let mut b = Batch::new(Family::Inet);
    for id in ids {
        for v in [IpVersion::V4, IpVersion::V6] {
            b.flush_set(TABLE_NAME, &set_name(id, v));
            if let Some(set) = host.sets.get(id) {
                let (spec, elems) = set_contents(id, set, v);
                b.add_elements(TABLE_NAME, &spec.name, &elems);
            }
        }
    }
    b
}

/// The nft set of one family for an IP set: an interval set of addresses for a selector, a
/// set of `address . port` for a named port (the protocol is part of the set's key, and the
/// rule matches it already).
fn set_contents(id: &SetId, set: &IpSet, v: IpVersion) -> (SetSpec, Vec<SetElem>) {
    let name = set_name(id, v);
    match &set.key {
        SetKey::Selector(_) => {
            let elems = interval_elems(set.members.iter().filter_map(|m| match m {
                Member::Net(n) if IpVersion::of_net(n) == v => Some(*n),
                _ => None,
            }));
            (ip_set_spec(&name, v), elems)
        }
        SetKey::NamedPort { .. } => {
            let elems = set
                .members
                .iter()
                .filter_map(|m| match m {
                    Member::Port { addr, port, .. } if IpVersion::of(*addr) == v => {
                        let mut k = addr_key(*addr);
                        k.extend_from_slice(&port.to_be_bytes());
                        k.extend_from_slice(&[0, 0]);
                        Some(SetElem::key(k))
                    }
                    _ => None,
                })
                .collect();
            let key = match v {
                IpVersion::V4 => KeyType::Ipv4AddrPort,
                IpVersion::V6 => KeyType::Ipv6AddrPort,
            };
            let spec = SetSpec {
                name,
                key,
                interval: false,
                verdict_map: false,
            };
            (spec, elems)
        }
    }
}

fn ip_set_spec(name: &str, v: IpVersion) -> SetSpec {
    SetSpec {
        name: name.to_owned(),
        key: match v {
            IpVersion::V4 => KeyType::Ipv4Addr,
            IpVersion::V6 => KeyType::Ipv6Addr,
        },
        interval: true,
        verdict_map: false,
    }
}

fn render_endpoint_chain(b: &mut TableSpec, name: &str, chain: &Chain) {
    b.add_chain(&ChainSpec::regular(name));
    let tiers: Vec<_> = chain
        .tiers
        .iter()
        .filter(|tier| {
            tier.policies.iter().any(|p| !p.staged) || tier.end_of_tier == EndOfTier::Deny
        })
        .collect();
    for (n, tier) in tiers.iter().enumerate() {
        let tc = format!("{name}-t{n}");
        b.add_chain(&ChainSpec::regular(&tc));
        for p in tier.policies.iter().filter(|p| !p.staged) {
            b.add_rule(
                &tc,
                &[Expr::Verdict(Verdict::Jump(rule_list_chain(&p.rules)))],
                Some(&format!("policy {}", p.name)),
            );
            let mut r = mark_any(PASS_MARK);
            r.push(Expr::Verdict(Verdict::Return));
            b.add_rule(&tc, &r, Some("passed"));
        }
        if tier.end_of_tier == EndOfTier::Deny {
            b.add_rule(
                &tc,
                &[Expr::Counter, Expr::Verdict(Verdict::Drop)],
                Some(&format!("end of tier {}", tier.name)),
            );
        }
    }
    for f in &chain.failsafe {
        render_failsafe(b, name, chain.direction, f);
    }
    b.add_rule(name, &mark_update(PASS_MARK, false), None);
    for (n, tier) in tiers.iter().enumerate() {
        b.add_rule(
            name,
            &[Expr::Verdict(Verdict::Jump(format!("{name}-t{n}")))],
            Some(&format!("tier {}", tier.name)),
        );
        b.add_rule(name, &mark_update(PASS_MARK, false), None);
    }
    for p in &chain.profiles {
        b.add_rule(
            name,
            &[Expr::Verdict(Verdict::Jump(rule_list_chain(&p.rules)))],
            Some(&format!("profile {}", p.name)),
        );
    }
    let (v, what) = match chain.fallthrough {
        Fallthrough::Deny => (Some(Verdict::Drop), "no policy or profile allowed"),
        Fallthrough::Allow => (Some(Verdict::Accept), "fallthrough allow"),
        Fallthrough::Continue => (None, ""),
    };
    if let Some(v) = v {
        b.add_rule(name, &[Expr::Counter, Expr::Verdict(v)], Some(what));
    }
}

/// Failsafe: always allowed, before any policy. Inbound entries match the destination port
/// and the source network, outbound entries the destination port and destination network.
fn render_failsafe(b: &mut TableSpec, chain: &str, direction: Direction, f: &FailsafePort) {
    let mut r = Vec::new();
    if let Some(net) = &f.net {
        let v = IpVersion::of_net(net);
        let (nfproto, off, len) = match (v, direction) {
            (IpVersion::V4, Direction::Ingress) => (NFPROTO_IPV4, 12, 4),
            (IpVersion::V4, Direction::Egress) => (NFPROTO_IPV4, 16, 4),
            (IpVersion::V6, Direction::Ingress) => (NFPROTO_IPV6, 8, 16),
            (IpVersion::V6, Direction::Egress) => (NFPROTO_IPV6, 24, 16),
        };
        r.extend(meta_eq(MetaKey::NfProto, vec![nfproto]));
        r.push(Expr::Payload {
            base: PayloadBase::Network,
            offset: off,
            len,
        });
        r.extend(prefix_cmp(net, CmpOp::Eq));
    }
    r.extend(meta_eq(MetaKey::L4Proto, vec![f.protocol.0]));
    r.extend([
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
        },
        Expr::Cmp(CmpOp::Eq, f.port.to_be_bytes().to_vec()),
        Expr::Counter,
        Expr::Verdict(Verdict::Accept),
    ]);
    let dir = match direction {
        Direction::Ingress => "inbound",
        Direction::Egress => "outbound",
    };
    b.add_rule(
        chain,
        &r,
        Some(&format!("failsafe {dir} {} {}", f.protocol.0, f.port)),
    );
}

fn render_rule_list(
    b: &mut TableSpec,
    host: &HostProgram,
    id: &RuleListId,
    chain: &str,
    untracked: bool,
) -> Result<(), RenderError> {
    let is_policy = matches!(id, RuleListId::Policy { .. });
    let mut aux = 0usize;
    for rule in host.rules(id) {
        for v in [IpVersion::V4, IpVersion::V6] {
            let Some(m) = rule.matches.for_family(v) else {
                continue;
            };
            let list = id.to_string();
            let mut e = meta_eq(
                MetaKey::NfProto,
                vec![match v {
                    IpVersion::V4 => NFPROTO_IPV4,
                    IpVersion::V6 => NFPROTO_IPV6,
                }],
            );
            if let Some(p) = m.protocol {
                e.extend(meta_eq(MetaKey::L4Proto, vec![p.0]));
            }
            if let Some(p) = m.not_protocol {
                e.extend([
                    Expr::Meta(MetaKey::L4Proto),
                    Expr::Cmp(CmpOp::Neq, vec![p.0]),
                ]);
            }
            if let Some(icmp) = &m.icmp {
                e.extend(icmp_match(icmp.icmp_type, icmp.code, CmpOp::Eq));
            }
            if let Some(icmp) = &m.not_icmp {
                e.extend(icmp_match(icmp.icmp_type, icmp.code, CmpOp::Neq));
            }
            // `ports` is true when any entry matches: port ranges and each named-port set
            // are alternatives, rendered as one nft rule each (the cross product of both
            // sides'); everything else is a conjunction.
            let mut variants: Vec<Vec<Expr>> = vec![Vec::new()];
            for (side, src) in [(&m.source, true), (&m.destination, false)] {
                let mut ctx = SideCtx {
                    b: &mut *b,
                    chain,
                    aux: &mut aux,
                    v,
                    list: &list,
                    rule: rule.index,
                    protocol: m.protocol,
                };
                let (all, alternatives) = ctx.side(side, src)?;
                e.extend(all);
                if !alternatives.is_empty() {
                    variants = variants
                        .iter()
                        .flat_map(|v| {
                            alternatives.iter().map(move |a| {
                                let mut x = v.clone();
                                x.extend(a.iter().cloned());
                                x
                            })
                        })
                        .collect();
                }
            }
            let what = format!("{list} rule {}", rule.index);
            let mut verdict = vec![Expr::Counter];
            match rule.action {
                Action::Allow if untracked => {
                    verdict.extend([Expr::Notrack, Expr::Verdict(Verdict::Accept)])
                }
                Action::Allow => verdict.push(Expr::Verdict(Verdict::Accept)),
                Action::Deny => verdict.push(Expr::Verdict(Verdict::Drop)),
                Action::Log => verdict.push(Expr::Log(format!("calico-rs {what}: "))),
                Action::Pass if is_policy => {
                    verdict.extend(mark_update(PASS_MARK, true));
                    verdict.push(Expr::Verdict(Verdict::Return));
                }
                Action::Pass => verdict.push(Expr::Verdict(Verdict::Return)),
            }
            for variant in variants {
                let mut r = e.clone();
                r.extend(variant);
                r.extend(verdict.iter().cloned());
                b.add_rule(chain, &r, Some(&what));
            }
        }
    }
    Ok(())
}

fn icmp_match(icmp_type: Option<u8>, code: Option<u8>, op: CmpOp) -> Vec<Expr> {
    let Some(ty) = icmp_type else {
        return Vec::new();
    };
    let (len, data) = match code {
        Some(c) => (2, vec![ty, c]),
        None => (1, vec![ty]),
    };
    vec![
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 0,
            len,
        },
        Expr::Cmp(op, data),
    ]
}

struct SideCtx<'a> {
    b: &'a mut TableSpec,
    chain: &'a str,
    aux: &'a mut usize,
    v: IpVersion,
    list: &'a str,
    rule: usize,
    protocol: Option<Protocol>,
}

impl SideCtx<'_> {
    /// The side's conjunctive matches, and the alternatives of its `ports` (empty: none).
    fn side(
        &mut self,
        m: &AddressMatch,
        src: bool,
    ) -> Result<(Vec<Expr>, Vec<Vec<Expr>>), RenderError> {
        let mut e = Vec::new();
        let (off, len) = match (self.v, src) {
            (IpVersion::V4, true) => (12, 4),
            (IpVersion::V4, false) => (16, 4),
            (IpVersion::V6, true) => (8, 16),
            (IpVersion::V6, false) => (24, 16),
        };
        let load = Expr::Payload {
            base: PayloadBase::Network,
            offset: off,
            len,
        };
        if !m.nets.is_empty() {
            e.push(load.clone());
            if let [net] = m.nets.as_slice() {
                e.extend(prefix_cmp(net, CmpOp::Eq));
            } else {
                let name = self.aux_set(
                    ip_set_spec("", self.v),
                    interval_elems(m.nets.iter().copied()),
                );
                e.push(Expr::Lookup {
                    set: name,
                    inverted: false,
                });
            }
        }
        for net in &m.not_nets {
            e.push(load.clone());
            e.extend(prefix_cmp(net, CmpOp::Neq));
        }
        for (set, inverted) in [(&m.set, false), (&m.not_set, true)] {
            if let Some(id) = set {
                e.push(load.clone());
                e.push(Expr::Lookup {
                    set: set_name(id, self.v),
                    inverted,
                });
            }
        }
        let mut alternatives = Vec::new();
        if let Some(p) = &m.ports {
            self.require_port_protocol()?;
            if !p.ranges.is_empty() {
                alternatives.push(self.ranges(&p.ranges, false, src));
            }
            for id in &p.named_port_sets {
                alternatives.push(self.named_port(id, off, len, src, false));
            }
        }
        if let Some(p) = &m.not_ports {
            self.require_port_protocol()?;
            if !p.ranges.is_empty() {
                e.extend(self.ranges(&p.ranges, true, src));
            }
            for id in &p.named_port_sets {
                e.extend(self.named_port(id, off, len, src, true));
            }
        }
        Ok((e, alternatives))
    }

    /// `address . port` of this side in a named-port set: the address in the 32-bit
    /// registers from 8 (`NFT_REG32_00`), the port in the next one.
    fn named_port(&self, id: &SetId, off: u32, len: u32, src: bool, inverted: bool) -> Vec<Expr> {
        vec![
            Expr::PayloadReg {
                base: PayloadBase::Network,
                offset: off,
                len,
                reg: 8,
            },
            Expr::PayloadReg {
                base: PayloadBase::Transport,
                offset: if src { 0 } else { 2 },
                len: 2,
                reg: 8 + len / 4,
            },
            Expr::LookupReg {
                set: set_name(id, self.v),
                reg: 8,
                inverted,
            },
        ]
    }

    fn require_port_protocol(&self) -> Result<(), RenderError> {
        if self.protocol.is_some_and(|p| p.has_ports()) {
            Ok(())
        } else {
            Err(RenderError::PortsWithoutProtocol {
                list: self.list.into(),
                rule: self.rule,
            })
        }
    }

    fn ranges(&mut self, ranges: &[(u16, u16)], inverted: bool, src: bool) -> Vec<Expr> {
        let mut e = vec![Expr::Payload {
            base: PayloadBase::Transport,
            offset: if src { 0 } else { 2 },
            len: 2,
        }];
        match ranges {
            [(lo, hi)] if lo == hi => e.push(Expr::Cmp(
                if inverted { CmpOp::Neq } else { CmpOp::Eq },
                lo.to_be_bytes().to_vec(),
            )),
            [(lo, hi)] if !inverted => {
                e.push(Expr::Cmp(CmpOp::Gte, lo.to_be_bytes().to_vec()));
                e.push(Expr::Cmp(CmpOp::Lte, hi.to_be_bytes().to_vec()));
            }
            ranges => {
                let spec = SetSpec {
                    name: String::new(),
                    key: KeyType::InetService,
                    interval: true,
                    verdict_map: false,
                };
                let elems = range_elems(
                    ranges.iter().map(|(a, b)| (*a as u128, *b as u128)),
                    u16::MAX as u128,
                    2,
                );
                let set = self.aux_set(spec, elems);
                e.push(Expr::Lookup { set, inverted });
            }
        }
        e
    }

    fn aux_set(&mut self, mut spec: SetSpec, elems: Vec<SetElem>) -> String {
        *self.aux += 1;
        let name = format!("{}#{}", self.chain, self.aux);
        spec.name = name.clone();
        self.b.add_set(&spec);
        self.b.add_elements(&name, &elems);
        name
    }
}

/// `(addr & mask) op network`.
fn prefix_cmp(net: &IpNet, op: CmpOp) -> Vec<Expr> {
    let (addr, mask) = match net {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    let mut e = Vec::new();
    if net.prefix_len() < net.max_prefix_len() {
        let len = mask.len();
        e.push(Expr::Bitwise {
            mask,
            xor: vec![0; len],
        });
    }
    e.push(Expr::Cmp(op, addr));
    e
}

/// Elements of an interval set holding `nets`: overlapping and adjacent ranges merged (the
/// kernel refuses overlaps), each range as its start and, unless it runs to the last
/// address, an interval-end element at the address after it.
pub fn interval_elems(nets: impl Iterator<Item = IpNet>) -> Vec<SetElem> {
    let mut ranges = Vec::new();
    let mut width = None;
    for n in nets {
        let (lo, hi, max, bytes) = match n {
            IpNet::V4(n) => (
                u32::from(n.network()) as u128,
                u32::from(n.broadcast()) as u128,
                u32::MAX as u128,
                4,
            ),
            IpNet::V6(n) => (
                u128::from(n.network()),
                u128::from(n.broadcast()),
                u128::MAX,
                16,
            ),
        };
        width = Some((max, bytes));
        ranges.push((lo, hi));
    }
    match width {
        None => Vec::new(),
        Some((max, bytes)) => range_elems(ranges.into_iter(), max, bytes),
    }
}

fn range_elems(
    ranges: impl Iterator<Item = (u128, u128)>,
    max: u128,
    bytes: usize,
) -> Vec<SetElem> {
    let mut ranges: Vec<(u128, u128)> = ranges.collect();
    ranges.sort();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if last.1 == max || lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let key = |x: u128| x.to_be_bytes()[16 - bytes..].to_vec();
    let mut out = Vec::new();
    for (lo, hi) in merged {
        out.push(SetElem::key(key(lo)));
        if hi < max {
            out.push(SetElem {
                interval_end: true,
                ..SetElem::key(key(hi + 1))
            });
        }
    }
    out
}

/// The address of a member as nft keys it (tests and incremental updates).
pub fn addr_key(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn intervals_merge_overlaps_and_neighbours() {
        let e = interval_elems(
            [
                n("10.0.0.0/24"),
                n("10.0.1.0/24"),
                n("10.0.0.5/32"),
                n("10.2.0.0/16"),
            ]
            .into_iter(),
        );
        let keys: Vec<(Vec<u8>, bool)> =
            e.iter().map(|e| (e.key.clone(), e.interval_end)).collect();
        assert_eq!(
            keys,
            vec![
                (vec![10, 0, 0, 0], false),
                (vec![10, 0, 2, 0], true),
                (vec![10, 2, 0, 0], false),
                (vec![10, 3, 0, 0], true),
            ]
        );
    }

    #[test]
    fn interval_to_the_last_address_has_no_end_element() {
        let e = interval_elems([n("0.0.0.0/0")].into_iter());
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, vec![0, 0, 0, 0]);
        let e = interval_elems([n("::/0")].into_iter());
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key.len(), 16);
    }

    #[test]
    fn long_rule_list_names_are_bounded_and_distinct() {
        let mk = |s: &str| RuleListId::Profile {
            name: s.repeat(100),
            direction: calico_policy::model::Direction::Ingress,
        };
        let a = rule_list_chain(&mk("a"));
        let b = rule_list_chain(
            &(RuleListId::Profile {
                name: format!("{}b", "a".repeat(99)),
                direction: calico_policy::model::Direction::Ingress,
            }),
        );
        assert!(a.len() <= 200 && b.len() <= 200);
        assert_ne!(a, b);
    }

    /// A program with one workload endpoint per interface name (no policy, no profile).
    fn program_with(ifaces: &[String]) -> HostProgram {
        use calico_policy::model::{PolicyModel, WorkloadEndpoint};
        let model = PolicyModel {
            workload_endpoints: ifaces
                .iter()
                .map(|i| WorkloadEndpoint {
                    name: i.clone(),
                    node: "n".into(),
                    namespace: "default".into(),
                    interface_name: i.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        calico_policy::compile(&model, Some("n")).unwrap()
    }

    /// What a base chain does with a new packet of interface `iface`, read off the rendered
    /// rules: the verdict of the first rule whose `meta`/`cmp` tests all pass (ct state tests
    /// fail: the packet is new), a verdict-map hit is `Goto(chain)`, a miss goes on; `None`:
    /// the chain ends without a verdict (its policy, accept, applies).
    fn first_verdict(t: &TableSpec, chain: &str, iface: &str) -> Option<Verdict> {
        let name = ifname_key(iface);
        'rules: for r in &t.chains[chain].rules {
            let mut reg: Option<&[u8]> = None;
            for e in &r.exprs {
                match e {
                    Expr::Meta(MetaKey::IifName | MetaKey::OifName) => reg = Some(&name),
                    // ct state (the packet is new, neither invalid nor established), the
                    // protocol (not ICMPv6 nor UDP): such rules do not match it.
                    Expr::Meta(_) | Expr::CtState => continue 'rules,
                    Expr::Cmp(CmpOp::Eq, v) if !reg.is_some_and(|r| r.starts_with(v)) => {
                        continue 'rules;
                    }
                    Expr::VerdictMap(map) => {
                        match t.sets[map].elems.iter().find(|el| el.key == name) {
                            Some(el) => return el.verdict.clone(),
                            None => continue 'rules,
                        }
                    }
                    Expr::Verdict(v) => return Some(v.clone()),
                    _ => {}
                }
            }
        }
        None
    }

    #[test]
    fn unknown_interfaces_are_dropped_after_dispatch_per_prefix() {
        let settings = RenderSettings {
            to_host: EndpointToHost::Return,
            interface_prefixes: vec![DEFAULT_INTERFACE_PREFIX.into(), "tap".into()],
            ..Default::default()
        };
        let t = render_spec(&program_with(&["calia".into()]), &settings).unwrap();
        for chain in ["from-wl", "to-wl", "wl-to-host"] {
            let drops: Vec<&crate::table::RuleSpec> = t.chains[chain]
                .rules
                .iter()
                .filter(|r| r.comment.as_deref() == Some(UNKNOWN_INTERFACE))
                .collect();
            assert_eq!(drops.len(), 2, "{chain}: one drop per prefix");
            for r in drops {
                assert!(r.exprs.contains(&Expr::Counter), "{chain}: counted");
                assert_eq!(r.exprs.last(), Some(&Expr::Verdict(Verdict::Drop)));
            }
        }
        // Drop: no dispatch to the host, so no unknown-interface rule (all is dropped).
        let t = render_spec(&program_with(&["calia".into()]), &RenderSettings::default()).unwrap();
        assert!(
            !t.chains["wl-to-host"]
                .rules
                .iter()
                .any(|r| r.comment.as_deref() == Some(UNKNOWN_INTERFACE))
        );
    }

    proptest::proptest! {
        /// For any endpoints and prefixes: a new packet of an interface with an endpoint goes to
        /// its chain, one of a workload-prefixed interface without an endpoint is dropped, any
        /// other interface is left alone (the chain ends without a verdict).
        #[test]
        fn base_chains_dispatch_known_drop_unknown_and_ignore_others(
            eps in proptest::collection::btree_set("(cali|tap|eth)[a-c]{1,3}", 0..5),
            prefixes in proptest::collection::btree_set("(cali|tap|ca|t)", 1..3),
            probes in proptest::collection::vec("(cali|tap|eth|ca|lo)[a-c]{0,3}", 1..12),
            to_host_return in proptest::prelude::any::<bool>(),
        ) {
            let eps: Vec<String> = eps.into_iter().collect();
            let settings = RenderSettings {
                to_host: if to_host_return { EndpointToHost::Return } else { EndpointToHost::Drop },
                interface_prefixes: prefixes.iter().cloned().collect(),
                ..Default::default()
            };
            let t = render_spec(&program_with(&eps), &settings).unwrap();
            for iface in probes.iter().chain(&eps) {
                let known = eps.contains(iface);
                let workload = prefixes.iter().any(|p| iface.starts_with(p.as_str()));
                for (chain, pfx) in [("from-wl", "fw-"), ("to-wl", "tw-")] {
                    let got = first_verdict(&t, chain, iface);
                    let want = if known {
                        Some(Verdict::Goto(format!("{pfx}{iface}")))
                    } else if workload {
                        Some(Verdict::Drop)
                    } else {
                        None
                    };
                    proptest::prop_assert_eq!(got, want, "{} {}", chain, iface);
                }
                let to_host = first_verdict(&t, "wl-to-host", iface);
                if workload {
                    let want = if to_host_return && known {
                        Some(Verdict::Goto(format!("fw-{iface}")))
                    } else {
                        Some(Verdict::Drop)
                    };
                    proptest::prop_assert_eq!(to_host, want, "wl-to-host {}", iface);
                } else {
                    proptest::prop_assert_eq!(to_host, None, "wl-to-host {}", iface);
                }
            }
        }
    }

    /// What the kernel's interval lookup does with start/end elements: the greatest key not
    /// above the address decides; a start means inside, an end (or nothing) outside.
    fn lookup(elems: &[SetElem], addr: [u8; 4]) -> bool {
        elems
            .iter()
            .filter(|e| e.key.as_slice() <= addr.as_slice())
            .max_by(|a, b| a.key.cmp(&b.key))
            .is_some_and(|e| !e.interval_end)
    }

    proptest::proptest! {
        #[test]
        fn interval_elements_hold_exactly_the_union_of_the_nets(
            nets in proptest::collection::vec((proptest::prelude::any::<u32>(), 0u8..=32), 0..8),
            probes in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..32),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, l)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), l).unwrap().trunc()))
                .collect();
            let elems = interval_elems(nets.iter().copied());
            // Keys strictly increase, starts and ends alternate: what the kernel accepts.
            for w in elems.windows(2) {
                proptest::prop_assert!(w[0].key < w[1].key);
                proptest::prop_assert_ne!(w[0].interval_end, w[1].interval_end);
            }
            let mut addrs: Vec<u32> = probes;
            for n in &nets {
                if let IpNet::V4(n) = n {
                    let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                    addrs.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)]);
                }
            }
            for a in addrs {
                let ip = std::net::Ipv4Addr::from(a);
                let want = nets.iter().any(|n| n.contains(&IpAddr::V4(ip)));
                proptest::prop_assert_eq!(lookup(&elems, ip.octets()), want, "{}", ip);
            }
        }
    }
}
