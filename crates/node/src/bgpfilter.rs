//! BGPFilter resources turned into the speaker's per-peer import and export rules, and
//! BGPConfiguration `prefixAdvertisements` turned into the communities exported routes carry.
//!
//! Calico evaluates a peer's filters in the order the BGPPeer lists them, each rule in order;
//! the first matching rule decides (applying its `operations` when it accepts), and a route no
//! rule matches is accepted. The speaker's [`PolicyRule`]s have the same first-match semantics,
//! so a peer's filters become one concatenated list.
//!
//! Supported, as Calico defines them: `action`; `cidr` with `matchOperator` `Equal`, `NotEqual`,
//! `In` or `NotIn` and `prefixLength`; rules without a CIDR (the whole family); `source:
//! RemotePeers` (export: only routes learned from peers); `peerType` (resolved per session: a
//! rule for the other type is left out); `communities` (one standard `aa:nn` or large
//! `aa:nn:mm` value the route must carry); `asPathPrefix`; `operations` `addCommunity` and
//! `prependASPath`.
//!
//! Refused with the field named: at apply time by calico-api's validation (calicoctl, the
//! controllers, the chart's admission policy; docs/resources.md), and here again for a filter
//! that reached etcd some other way (the agent keeps that session down rather than run it with
//! a filter it cannot honour):
//! - `interface`: Calico matches BIRD's outgoing interface of kernel routes it exports. Our
//!   speaker exports IPAM blocks (blackholes, no interface) and routes learned over BGP, whose
//!   interface the kernel resolves only after installation; it holds no interface per route,
//!   so such a rule could never match as Calico's does.
//! - `priority` and the `setPriority` operation: they read and set the kernel metric of routes.
//!   The agent installs learned routes with one fixed metric and the speaker's route events
//!   carry no priority, so neither can be honoured yet.

use std::collections::BTreeMap;

use calico_api::{
    BGPConfiguration, BGPFilterAction, BGPFilterCommunityMatch, BGPFilterMatchOperator,
    BGPFilterMatchSource, BGPFilterOperation, BGPFilterPeerType, BGPFilterPrefixLength,
    BGPFilterRuleV4, BGPFilterRuleV6, BGPFilterSpec,
};
use calico_bgp::codec::LargeCommunity;
use calico_bgp::rib::Action;
use calico_bgp::speaker::{Community, PolicyRule, PrefixCommunities, RouteOperation};
use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("BGPPeer uses BGPFilter {0:?}, which does not exist")]
    Missing(String),
    #[error("BGPFilter {filter:?}: spec.{list}[{index}].{field}: {reason}")]
    Unsupported {
        filter: String,
        list: &'static str,
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("BGPConfiguration {config:?}: spec.prefixAdvertisements[{index}].{field}: {reason}")]
    Advertisement {
        config: String,
        index: usize,
        field: &'static str,
        reason: String,
    },
}

/// The speaker's rules for one session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerFilters {
    pub import: Vec<PolicyRule>,
    pub export: Vec<PolicyRule>,
}

/// Parses a community as Calico writes it: `aa:nn` (two 16-bit parts) or `aa:nn:mm` (three
/// 32-bit parts, a large community).
pub fn parse_community(s: &str) -> Result<Community, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || format!("{s:?} is not a community (aa:nn or aa:nn:mm)");
    match parts.as_slice() {
        [a, n] => {
            let a: u16 = a.parse().map_err(|_| bad())?;
            let n: u16 = n.parse().map_err(|_| bad())?;
            Ok(Community::Standard((u32::from(a) << 16) | u32::from(n)))
        }
        [g, l1, l2] => Ok(Community::Large(LargeCommunity {
            global: g.parse().map_err(|_| bad())?,
            local1: l1.parse().map_err(|_| bad())?,
            local2: l2.parse().map_err(|_| bad())?,
        })),
        _ => Err(bad()),
    }
}

/// The parts of a v4 or v6 rule this module reads (the two kinds have the same shape).
struct RuleView<'a> {
    action: BGPFilterAction,
    cidr: Option<&'a str>,
    match_operator: Option<BGPFilterMatchOperator>,
    prefix_length: Option<&'a BGPFilterPrefixLength>,
    source: Option<BGPFilterMatchSource>,
    peer_type: Option<BGPFilterPeerType>,
    communities: Option<&'a BGPFilterCommunityMatch>,
    as_path_prefix: Vec<u32>,
    operations: &'a [BGPFilterOperation],
    interface: Option<&'a str>,
    priority: Option<i64>,
}

macro_rules! view {
    ($r:expr) => {
        RuleView {
            action: $r.action,
            cidr: $r.cidr.as_deref(),
            match_operator: $r.match_operator,
            prefix_length: $r.prefix_length.as_ref(),
            source: $r.source,
            peer_type: $r.peer_type,
            communities: $r.communities.as_ref(),
            as_path_prefix: $r.as_path_prefix.iter().map(|a| a.0).collect(),
            operations: &$r.operations,
            interface: $r.interface.as_deref(),
            priority: $r.priority,
        }
    };
}

fn v4(r: &BGPFilterRuleV4) -> RuleView<'_> {
    view!(r)
}

fn v6(r: &BGPFilterRuleV6) -> RuleView<'_> {
    view!(r)
}

/// Where a rule sits, for error messages.
struct At<'a> {
    filter: &'a str,
    list: &'static str,
    index: usize,
}

impl At<'_> {
    fn err(&self, field: &'static str, reason: impl Into<String>) -> FilterError {
        FilterError::Unsupported {
            filter: self.filter.to_string(),
            list: self.list,
            index: self.index,
            field,
            reason: reason.into(),
        }
    }
}

/// Converts one rule for a session of family `want_v6` whose peer is eBGP (`ebgp`). `None`: the
/// rule is for the other peer type and never applies to this session.
fn convert(
    at: &At<'_>,
    r: &RuleView<'_>,
    want_v6: bool,
    ebgp: bool,
) -> Result<Option<PolicyRule>, FilterError> {
    if r.interface.is_some() {
        return Err(at.err(
            "interface",
            "not supported by calico-rs: the speaker holds no outgoing interface per route",
        ));
    }
    if r.priority.is_some() {
        return Err(at.err(
            "priority",
            "not supported by calico-rs: learned routes carry no kernel priority",
        ));
    }
    let action = match r.action {
        BGPFilterAction::Accept => Action::Accept,
        BGPFilterAction::Reject => Action::Reject,
    };
    let mut rule = PolicyRule::all(action, Some(want_v6));
    match (r.cidr, r.match_operator) {
        (None, None) => {}
        (None, Some(_)) => return Err(at.err("matchOperator", "requires cidr")),
        (Some(_), None) => return Err(at.err("matchOperator", "required with cidr")),
        (Some(cidr), Some(op)) => {
            let net: IpNet = cidr
                .parse()
                .map_err(|_| at.err("cidr", format!("{cidr:?} is not a CIDR")))?;
            if net.addr().is_ipv6() != want_v6 {
                let family = if want_v6 { "IPv6" } else { "IPv4" };
                return Err(at.err("cidr", format!("{cidr:?} is not an {family} CIDR")));
            }
            let max_bits = if want_v6 { 128 } else { 32 };
            let len_of = |v: Option<i32>, field: &'static str| -> Result<Option<u8>, FilterError> {
                v.map(|n| {
                    u8::try_from(n)
                        .ok()
                        .filter(|n| *n <= max_bits)
                        .ok_or_else(|| at.err(field, format!("{n} is not a prefix length")))
                })
                .transpose()
            };
            let (min_len, max_len) = match op {
                BGPFilterMatchOperator::Equal | BGPFilterMatchOperator::NotEqual => {
                    (Some(net.prefix_len()), Some(net.prefix_len()))
                }
                BGPFilterMatchOperator::In | BGPFilterMatchOperator::NotIn => (
                    len_of(r.prefix_length.and_then(|p| p.min), "prefixLength.min")?,
                    len_of(r.prefix_length.and_then(|p| p.max), "prefixLength.max")?,
                ),
            };
            rule.cidr = Some(net.trunc());
            rule.min_len = min_len;
            rule.max_len = max_len;
            rule.negate = matches!(
                op,
                BGPFilterMatchOperator::NotEqual | BGPFilterMatchOperator::NotIn
            );
        }
    }
    rule.remote_peers_only = r.source == Some(BGPFilterMatchSource::RemotePeers);
    if let Some(c) = r.communities {
        let [value] = c.values.as_slice() else {
            return Err(at.err(
                "communities.values",
                format!("exactly one value is required, found {}", c.values.len()),
            ));
        };
        rule.community = Some(parse_community(value).map_err(|e| at.err("communities.values", e))?);
    }
    rule.as_path_prefix = r.as_path_prefix.clone();
    if !r.operations.is_empty() && action == Action::Reject {
        return Err(at.err("operations", "only allowed with action Accept"));
    }
    for op in r.operations {
        let one = match (&op.add_community, &op.prepend_as_path, &op.set_priority) {
            (Some(c), None, None) => RouteOperation::AddCommunity(
                parse_community(&c.value)
                    .map_err(|e| at.err("operations.addCommunity.value", e))?,
            ),
            (None, Some(p), None) if !p.prefix.is_empty() => {
                RouteOperation::PrependAsPath(p.prefix.iter().map(|a| a.0).collect())
            }
            (None, Some(_), None) => {
                return Err(at.err("operations.prependASPath.prefix", "must not be empty"));
            }
            (None, None, Some(_)) => {
                return Err(at.err(
                    "operations.setPriority",
                    "not supported by calico-rs: learned routes carry no kernel priority",
                ));
            }
            _ => {
                return Err(at.err("operations", "each entry must set exactly one operation"));
            }
        };
        rule.operations.push(one);
    }
    let applies = match r.peer_type {
        None => true,
        Some(BGPFilterPeerType::EBGP) => ebgp,
        Some(BGPFilterPeerType::IBGP) => !ebgp,
    };
    Ok(applies.then_some(rule))
}

/// The rules of `names` (a BGPPeer's `filters`, in order) for a session of one family with an
/// eBGP (`ebgp`) or iBGP peer.
pub fn peer_filters(
    names: &[String],
    all: &BTreeMap<String, BGPFilterSpec>,
    want_v6: bool,
    ebgp: bool,
) -> Result<PeerFilters, FilterError> {
    let mut out = PeerFilters::default();
    for name in names {
        let spec = all
            .get(name)
            .ok_or_else(|| FilterError::Missing(name.clone()))?;
        let (import, export) = if want_v6 {
            (
                (
                    "importV6",
                    spec.import_v6.iter().map(v6).collect::<Vec<_>>(),
                ),
                (
                    "exportV6",
                    spec.export_v6.iter().map(v6).collect::<Vec<_>>(),
                ),
            )
        } else {
            (
                ("importV4", spec.import_v4.iter().map(v4).collect()),
                ("exportV4", spec.export_v4.iter().map(v4).collect()),
            )
        };
        for ((list, views), rules) in [(import, &mut out.import), (export, &mut out.export)] {
            for (index, r) in views.iter().enumerate() {
                let at = At {
                    filter: name,
                    list,
                    index,
                };
                rules.extend(convert(&at, r, want_v6, ebgp)?);
            }
        }
    }
    Ok(out)
}

/// The communities exported routes carry, from BGPConfiguration `prefixAdvertisements`: the
/// `node.<node>` configuration's list when it has one (Calico lets a node override it), else
/// the `default` one's. Each community is a name from the `default` configuration's
/// `communities` or a literal `aa:nn` / `aa:nn:mm` value.
pub fn prefix_advertisements(
    configs: &[BGPConfiguration],
    node: &str,
) -> Result<Vec<PrefixCommunities>, FilterError> {
    let named = |n: &str| {
        configs
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(n))
    };
    let global = named("default");
    let node_name = format!("node.{node}");
    let source = named(&node_name)
        .filter(|c| !c.spec.prefix_advertisements.is_empty())
        .or(global);
    let Some(source) = source else {
        return Ok(vec![]);
    };
    let config = source.metadata.name.clone().unwrap_or_default();
    let defined: BTreeMap<&str, &str> = global
        .map(|g| {
            g.spec
                .communities
                .iter()
                .filter_map(|c| Some((c.name.as_deref()?, c.value.as_deref()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (index, adv) in source.spec.prefix_advertisements.iter().enumerate() {
        let err = |field: &'static str, reason: String| FilterError::Advertisement {
            config: config.clone(),
            index,
            field,
            reason,
        };
        let cidr = adv
            .cidr
            .as_deref()
            .ok_or_else(|| err("cidr", "required".into()))?;
        let cidr: IpNet = cidr
            .parse()
            .map_err(|_| err("cidr", format!("{cidr:?} is not a CIDR")))?;
        let mut pc = PrefixCommunities {
            cidr: cidr.trunc(),
            communities: vec![],
            large_communities: vec![],
        };
        for c in &adv.communities {
            let value = defined.get(c.as_str()).copied().unwrap_or(c);
            match parse_community(value) {
                Ok(Community::Standard(v)) => pc.communities.push(v),
                Ok(Community::Large(v)) => pc.large_communities.push(v),
                Err(_) => {
                    return Err(err(
                        "communities",
                        format!(
                            "{c:?} is neither a name in the default BGPConfiguration's communities nor a community value"
                        ),
                    ));
                }
            }
        }
        out.push(pc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use calico_bgp::codec::AsPath;
    use calico_bgp::rib::{PathAttrs, Source};
    use calico_bgp::speaker::apply_policy;

    use super::*;

    fn spec(yaml: &str) -> BGPFilterSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn filters(yaml: &str, v6: bool, ebgp: bool) -> Result<PeerFilters, FilterError> {
        let all = BTreeMap::from([("f".to_string(), spec(yaml))]);
        peer_filters(&["f".into()], &all, v6, ebgp)
    }

    fn plain() -> Arc<PathAttrs> {
        Arc::new(PathAttrs::local(Some("10.0.0.9".parse().unwrap())))
    }

    const PEER: Source = Source::Peer(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)));

    /// The verdict of `rules` on a route learned from a peer with plain attributes.
    fn allows(rules: &[PolicyRule], p: &str) -> bool {
        apply_policy(rules, &net(p), &plain(), PEER).is_some()
    }

    #[test]
    fn calico_example_becomes_first_match_rules() {
        let f = filters(
            "exportV4:
  - action: Reject
    matchOperator: In
    cidr: 10.0.0.0/8
    prefixLength: {min: 25}
  - action: Accept
    matchOperator: Equal
    cidr: 10.1.0.0/16
importV4:
  - action: Reject
",
            false,
            false,
        )
        .unwrap();
        assert_eq!(f.export.len(), 2);
        assert!(!allows(&f.export, "10.2.3.0/26"));
        assert!(allows(&f.export, "10.2.0.0/24"));
        assert!(allows(&f.export, "10.1.0.0/16"));
        assert!(!allows(&f.import, "192.168.0.0/26"));
        // The v4 rules do not leak into a v6 session.
        let f6 = filters("importV4:\n  - action: Reject\n", true, false).unwrap();
        assert!(f6.import.is_empty() && f6.export.is_empty());
    }

    #[test]
    fn negated_operators_match_everything_else() {
        // Calico's documented import: accept 55.0.0.0/16 with length >= 30, reject what is not
        // in 44.0.0.0/16.
        let f = filters(
            "importV4:
  - action: Accept
    matchOperator: In
    cidr: 55.0.0.0/16
    prefixLength: {min: 30}
  - action: Reject
    matchOperator: NotIn
    cidr: 44.0.0.0/16
  - action: Reject
    matchOperator: NotEqual
    cidr: 44.0.1.0/24
",
            false,
            true,
        )
        .unwrap();
        assert!(allows(&f.import, "55.0.1.4/30"));
        assert!(!allows(&f.import, "55.0.1.0/24"), "not in 44/16");
        assert!(!allows(&f.import, "10.0.0.0/8"));
        assert!(allows(&f.import, "44.0.1.0/24"), "the one Equal prefix");
        assert!(!allows(&f.import, "44.0.2.0/24"), "NotEqual 44.0.1.0/24");
    }

    #[test]
    fn peer_type_source_communities_and_operations() {
        let yaml = "exportV4:
  - action: Reject
    peerType: iBGP
    matchOperator: In
    cidr: 10.9.0.0/16
  - action: Reject
    source: RemotePeers
    communities: {values: ['65000:666']}
  - action: Accept
    asPathPrefix: [65001]
    operations:
      - addCommunity: {value: '65000:100'}
      - addCommunity: {value: '64512:1:2'}
      - prependASPath: {prefix: [64512, 64512]}
";
        let ibgp = filters(yaml, false, false).unwrap();
        let ebgp = filters(yaml, false, true).unwrap();
        // peerType iBGP: only the iBGP session gets the first rule.
        assert_eq!((ibgp.export.len(), ebgp.export.len()), (3, 2));
        assert!(!allows(&ibgp.export, "10.9.1.0/26"));
        assert!(allows(&ebgp.export, "10.9.1.0/26"));
        // source: RemotePeers with a community: a peer's tagged route is held back, our own
        // tagged route is not.
        let mut tagged = PathAttrs::local(None);
        tagged.communities = vec![(65000 << 16) | 666];
        let tagged = Arc::new(tagged);
        let p = net("10.8.0.0/24");
        assert!(apply_policy(&ebgp.export, &p, &tagged, PEER).is_none());
        assert!(apply_policy(&ebgp.export, &p, &tagged, Source::Local).is_some());
        // asPathPrefix + operations.
        let mut from_65001 = PathAttrs::local(None);
        from_65001.as_path = AsPath::sequence(vec![65001, 65002]);
        let out = apply_policy(&ebgp.export, &p, &Arc::new(from_65001), PEER).unwrap();
        assert_eq!(out.communities, vec![(65000 << 16) | 100]);
        assert_eq!(
            out.large_communities,
            vec![LargeCommunity {
                global: 64512,
                local1: 1,
                local2: 2
            }]
        );
        assert_eq!(
            out.as_path,
            AsPath::sequence(vec![64512, 64512, 65001, 65002])
        );
    }

    #[test]
    fn unsupported_and_invalid_rules_name_the_filter_and_field() {
        let err = |yaml: &str| filters(yaml, false, true).unwrap_err().to_string();
        assert_eq!(
            err("exportV4:\n  - action: Reject\n    interface: 'cali*'\n"),
            "BGPFilter \"f\": spec.exportV4[0].interface: not supported by calico-rs: the speaker holds no outgoing interface per route"
        );
        assert!(
            err("importV4:\n  - action: Accept\n    priority: 10\n")
                .contains("spec.importV4[0].priority")
        );
        assert!(
            err("importV4:\n  - action: Accept\n    operations: [{setPriority: {value: 5}}]\n")
                .contains("spec.importV4[0].operations.setPriority")
        );
        assert!(
            err(
                "importV4:\n  - action: Reject\n    operations: [{addCommunity: {value: '1:1'}}]\n"
            )
            .contains("only allowed with action Accept")
        );
        assert!(
            err("importV4:\n  - action: Accept\n  - action: Accept\n    communities: {values: ['70000:1']}\n")
                .contains("spec.importV4[1].communities.values: \"70000:1\" is not a community")
        );
        assert!(
            err("importV4:\n  - action: Accept\n    communities: {values: ['1:1', '2:2']}\n")
                .contains("exactly one value")
        );
        assert!(
            err("importV4:\n  - action: Accept\n    cidr: 10.0.0.0/8\n")
                .contains("matchOperator: required with cidr")
        );
        assert!(
            err("importV4:\n  - action: Accept\n    cidr: fd00::/8\n    matchOperator: In\n")
                .contains("is not an IPv4 CIDR")
        );
        let all = BTreeMap::new();
        assert_eq!(
            peer_filters(&["absent".into()], &all, false, false).unwrap_err(),
            FilterError::Missing("absent".into())
        );
    }

    #[test]
    fn communities_parse_as_calico_writes_them() {
        assert_eq!(
            parse_community("65000:100"),
            Ok(Community::Standard(0xfde8_0064))
        );
        assert_eq!(
            parse_community("4200000000:1:2"),
            Ok(Community::Large(LargeCommunity {
                global: 4_200_000_000,
                local1: 1,
                local2: 2
            }))
        );
        for bad in [
            "",
            "1",
            "65536:1",
            "1:2:3:4",
            "a:b",
            "1:-1",
            "4294967296:1:1",
        ] {
            assert!(parse_community(bad).is_err(), "{bad:?}");
        }
    }

    fn config(name: &str, yaml: &str) -> BGPConfiguration {
        let mut c = BGPConfiguration::new(name, serde_yaml_ng::from_str(yaml).unwrap());
        c.metadata.name = Some(name.into());
        c
    }

    #[test]
    fn prefix_advertisements_resolve_names_and_node_overrides() {
        let global = config(
            "default",
            "communities:
  - {name: bgp-large-community, value: '63400:300:100'}
prefixAdvertisements:
  - cidr: 172.218.4.0/26
    communities: [bgp-large-community, '63400:120']
",
        );
        let got = prefix_advertisements(std::slice::from_ref(&global), "node1").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].cidr, net("172.218.4.0/26"));
        assert_eq!(got[0].communities, vec![(63400 << 16) | 120]);
        assert_eq!(
            got[0].large_communities,
            vec![LargeCommunity {
                global: 63400,
                local1: 300,
                local2: 100
            }]
        );
        // A node's own configuration replaces the list, still resolving the global names.
        let own = config(
            "node.node1",
            "prefixAdvertisements:\n  - cidr: 10.0.0.0/8\n    communities: [bgp-large-community]\n",
        );
        let configs = [global.clone(), own];
        let got = prefix_advertisements(&configs, "node1").unwrap();
        assert_eq!(got[0].cidr, net("10.0.0.0/8"));
        assert_eq!(got[0].large_communities.len(), 1);
        assert_eq!(
            prefix_advertisements(&configs, "node2").unwrap()[0].cidr,
            net("172.218.4.0/26")
        );
        // An undefined name is an error naming the configuration and entry.
        let bad = config(
            "default",
            "prefixAdvertisements:\n  - cidr: 10.0.0.0/8\n  - cidr: 10.1.0.0/16\n    communities: [nope]\n",
        );
        let err = prefix_advertisements(&[bad], "node1").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "BGPConfiguration \"default\": spec.prefixAdvertisements[1].communities: \"nope\""
            ),
            "{err}"
        );
        assert!(prefix_advertisements(&[], "node1").unwrap().is_empty());
    }

    fn v4net() -> impl proptest::strategy::Strategy<Value = IpNet> {
        use proptest::prelude::*;
        (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
            IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(a), l)
                    .unwrap()
                    .trunc(),
            )
        })
    }

    proptest::proptest! {
        /// A `NotIn` rule rejects exactly the routes the `In` rule with the same CIDR and
        /// prefix lengths accepts, and `NotEqual` is the complement of `Equal`.
        #[test]
        fn negated_operators_are_complements(cidr in v4net(), p in v4net(), min in 0i32..=32, max in 0i32..=32) {
            let rule = |op: &str| format!(
                "importV4:\n  - action: Reject\n    matchOperator: {op}\n    cidr: {cidr}\n    prefixLength: {{min: {min}, max: {max}}}\n"
            );
            let eq = |op: &str| format!("importV4:\n  - action: Reject\n    matchOperator: {op}\n    cidr: {cidr}\n");
            let verdict = |y: String| allows(&filters(&y, false, true).unwrap().import, &p.to_string());
            proptest::prop_assert_ne!(verdict(rule("In")), verdict(rule("NotIn")));
            proptest::prop_assert_ne!(verdict(eq("Equal")), verdict(eq("NotEqual")));
            // Equal matches exactly the one prefix.
            proptest::prop_assert_eq!(!verdict(eq("Equal")), p == cidr);
        }

        /// Every standard and large community Calico can write parses to its wire value.
        #[test]
        fn communities_round_trip(a: u16, n: u16, g: u32, l1: u32, l2: u32) {
            proptest::prop_assert_eq!(
                parse_community(&format!("{a}:{n}")),
                Ok(Community::Standard((u32::from(a) << 16) | u32::from(n)))
            );
            proptest::prop_assert_eq!(
                parse_community(&format!("{g}:{l1}:{l2}")),
                Ok(Community::Large(LargeCommunity { global: g, local1: l1, local2: l2 }))
            );
        }

        /// A rule for one peer type is present for sessions of that type only.
        #[test]
        fn peer_type_selects_sessions(ebgp in proptest::bool::ANY, rule_ebgp in proptest::bool::ANY) {
            let t = if rule_ebgp { "eBGP" } else { "iBGP" };
            let f = filters(&format!("exportV4:\n  - action: Reject\n    peerType: {t}\n"), false, ebgp).unwrap();
            proptest::prop_assert_eq!(f.export.len() == 1, ebgp == rule_ebgp);
        }
    }
}
