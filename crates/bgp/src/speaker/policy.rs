//! Import and export policy: Calico's BGPFilter rules ([`PolicyRule`]) and the communities
//! they test and add. Pure functions over one route; the core calls [`apply_policy`] on every
//! route it imports from a peer and on every route it exports to one.

use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::codec::{self, LargeCommunity};
use crate::rib::{Action, PathAttrs, Source};

/// A standard (RFC 1997, `aa:nn` packed into 32 bits) or large (RFC 8092) community.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Community {
    Standard(u32),
    Large(LargeCommunity),
}

impl Community {
    pub(crate) fn carried_by(&self, a: &PathAttrs) -> bool {
        match self {
            Community::Standard(c) => a.communities.contains(c),
            Community::Large(c) => a.large_communities.contains(c),
        }
    }

    /// Adds the community to `a` unless it is already there (communities are a set).
    pub(crate) fn add_to(&self, a: &mut PathAttrs) {
        match *self {
            Community::Standard(c) if !a.communities.contains(&c) => a.communities.push(c),
            Community::Large(c) if !a.large_communities.contains(&c) => a.large_communities.push(c),
            _ => {}
        }
    }
}

/// A change a policy rule makes to a route it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteOperation {
    AddCommunity(Community),
    /// The path starts with these ASNs in this order (before the eBGP prepend of our own AS).
    PrependAsPath(Vec<u32>),
}

/// One import or export rule, with Calico's BGPFilter semantics: a route matches when every
/// condition that is set holds; in an ordered list the first matching rule decides, its
/// operations apply when it accepts, and a route no rule matches is accepted.
///
/// In JSON only `action` is required (`cidr`, `minLen`, `maxLen`, `familyV6`, … default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Prefixes inside `cidr` with length in `[min_len, max_len]` (defaults: the CIDR's own
    /// length and the family maximum).
    #[serde(default)]
    pub cidr: Option<IpNet>,
    #[serde(default)]
    pub min_len: Option<u8>,
    #[serde(default)]
    pub max_len: Option<u8>,
    /// Negates the `cidr` condition (Calico's `NotIn` / `NotEqual`).
    #[serde(default)]
    pub negate: bool,
    /// Only IPv6 (`Some(true)`) or only IPv4 (`Some(false)`) prefixes.
    #[serde(default)]
    pub family_v6: Option<bool>,
    /// Only routes learned from a peer (Calico's `source: RemotePeers`); on import every route
    /// is from a peer.
    #[serde(default)]
    pub remote_peers_only: bool,
    /// Only routes carrying this community.
    #[serde(default)]
    pub community: Option<Community>,
    /// Only routes whose AS path begins with this sequence.
    #[serde(default)]
    pub as_path_prefix: Vec<u32>,
    pub action: Action,
    /// Applied, in order, to an accepted route.
    #[serde(default)]
    pub operations: Vec<RouteOperation>,
}

impl PolicyRule {
    /// A rule that decides every route of one family (or of both, with `None`).
    pub fn all(action: Action, family_v6: Option<bool>) -> PolicyRule {
        PolicyRule {
            cidr: None,
            min_len: None,
            max_len: None,
            negate: false,
            family_v6,
            remote_peers_only: false,
            community: None,
            as_path_prefix: Vec::new(),
            action,
            operations: Vec::new(),
        }
    }

    fn cidr_matches(&self, prefix: &IpNet) -> bool {
        let Some(c) = &self.cidr else { return true };
        if !c.contains(prefix) {
            return false;
        }
        let max = if matches!(prefix, IpNet::V6(_)) {
            128
        } else {
            32
        };
        let len = prefix.prefix_len();
        len >= self.min_len.unwrap_or(c.prefix_len()) && len <= self.max_len.unwrap_or(max)
    }

    /// Whether the rule applies to `prefix` with attributes `attrs` from `source`.
    pub fn matches(&self, prefix: &IpNet, attrs: &PathAttrs, source: Source) -> bool {
        let is_v6 = matches!(prefix, IpNet::V6(_));
        self.family_v6.is_none_or(|v6| v6 == is_v6)
            && (self.cidr.is_none() || self.cidr_matches(prefix) != self.negate)
            && (!self.remote_peers_only || matches!(source, Source::Peer(_)))
            && self.community.is_none_or(|c| c.carried_by(attrs))
            && as_path_starts_with(&attrs.as_path, &self.as_path_prefix)
    }
}

/// Whether the leading ASNs of `path` (across sequence segments) are `prefix`.
fn as_path_starts_with(path: &codec::AsPath, prefix: &[u32]) -> bool {
    let mut want = prefix.iter();
    for seg in &path.segments {
        if seg.kind != codec::SegmentKind::Sequence {
            return want.len() == 0;
        }
        for asn in &seg.asns {
            match want.next() {
                None => return true,
                Some(w) if w != asn => return false,
                Some(_) => {}
            }
        }
    }
    want.len() == 0
}

/// The verdict of an ordered rule list on one route: `None` rejects; otherwise the route's
/// attributes, changed only when the accepting rule has operations.
pub fn apply_policy(
    rules: &[PolicyRule],
    prefix: &IpNet,
    attrs: &Arc<PathAttrs>,
    source: Source,
) -> Option<Arc<PathAttrs>> {
    let Some(rule) = rules.iter().find(|r| r.matches(prefix, attrs, source)) else {
        return Some(attrs.clone());
    };
    if rule.action == Action::Reject {
        return None;
    }
    if rule.operations.is_empty() {
        return Some(attrs.clone());
    }
    let mut a = (**attrs).clone();
    for op in &rule.operations {
        match op {
            RouteOperation::AddCommunity(c) => c.add_to(&mut a),
            RouteOperation::PrependAsPath(asns) => {
                for asn in asns.iter().rev() {
                    a.as_path.prepend(*asn);
                }
            }
        }
    }
    Some(Arc::new(a))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn rule(cidr: Option<&str>, negate: bool, action: Action) -> PolicyRule {
        PolicyRule {
            cidr: cidr.map(|c| c.parse().unwrap()),
            negate,
            family_v6: Some(false),
            ..PolicyRule::all(action, None)
        }
    }

    fn attrs_with(f: impl FnOnce(&mut PathAttrs)) -> Arc<PathAttrs> {
        let mut a = PathAttrs::local(Some("10.0.0.9".parse().unwrap()));
        f(&mut a);
        Arc::new(a)
    }

    #[test]
    fn policy_rules_match_every_condition_set() {
        let peer = Source::Peer("10.0.0.9".parse().unwrap());
        let net: IpNet = "10.1.2.0/24".parse().unwrap();
        let plain = attrs_with(|_| {});
        let tagged = attrs_with(|a| {
            a.communities = vec![(65000 << 16) | 100];
            a.as_path = codec::AsPath::sequence(vec![65001, 65002]);
        });
        // NotIn: everything outside 10.0.0.0/16.
        let not_in = rule(Some("10.0.0.0/16"), true, Action::Reject);
        assert!(not_in.matches(&net, &plain, peer));
        assert!(!not_in.matches(&"10.0.1.0/24".parse().unwrap(), &plain, peer));
        // A v4 rule never matches a v6 prefix, negated or not.
        assert!(!not_in.matches(&"fd00::/64".parse().unwrap(), &plain, peer));
        // source: RemotePeers.
        let remote = PolicyRule {
            remote_peers_only: true,
            ..rule(None, false, Action::Reject)
        };
        assert!(remote.matches(&net, &plain, peer));
        assert!(!remote.matches(&net, &plain, Source::Local));
        // Communities and AS path prefix.
        let comm = PolicyRule {
            community: Some(Community::Standard((65000 << 16) | 100)),
            ..rule(None, false, Action::Accept)
        };
        assert!(comm.matches(&net, &tagged, peer) && !comm.matches(&net, &plain, peer));
        let path = |p: Vec<u32>| PolicyRule {
            as_path_prefix: p,
            ..rule(None, false, Action::Accept)
        };
        assert!(path(vec![65001]).matches(&net, &tagged, peer));
        assert!(path(vec![65001, 65002]).matches(&net, &tagged, peer));
        assert!(!path(vec![65002]).matches(&net, &tagged, peer));
        assert!(!path(vec![65001, 65002, 3]).matches(&net, &tagged, peer));
        assert!(path(vec![]).matches(&net, &plain, peer));
    }

    #[test]
    fn accepting_rule_applies_its_operations_in_order() {
        let net: IpNet = "10.1.2.0/24".parse().unwrap();
        let a = attrs_with(|a| a.as_path = codec::AsPath::sequence(vec![65009]));
        let rules = vec![
            PolicyRule {
                operations: vec![
                    RouteOperation::AddCommunity(Community::Standard(7)),
                    RouteOperation::AddCommunity(Community::Standard(7)),
                    RouteOperation::AddCommunity(Community::Large(LargeCommunity {
                        global: 1,
                        local1: 2,
                        local2: 3,
                    })),
                    RouteOperation::PrependAsPath(vec![65000, 65001]),
                ],
                ..rule(Some("10.1.0.0/16"), false, Action::Accept)
            },
            rule(None, false, Action::Reject),
        ];
        let out = apply_policy(&rules, &net, &a, Source::Local).expect("accepted");
        assert_eq!(out.communities, vec![7]);
        assert_eq!(out.large_communities.len(), 1);
        assert_eq!(
            out.as_path,
            codec::AsPath::sequence(vec![65000, 65001, 65009])
        );
        // No operations: the very same shared attributes come back.
        let other: IpNet = "10.2.0.0/24".parse().unwrap();
        assert!(apply_policy(&rules, &other, &a, Source::Local).is_none());
        let same = apply_policy(&rules[..0], &other, &a, Source::Local).expect("no rule accepts");
        assert!(Arc::ptr_eq(&same, &a));
    }

    #[test]
    fn plain_filter_rule_json_is_a_policy_rule() {
        let r: PolicyRule = serde_json::from_value(serde_json::json!(
            {"cidr": "10.0.0.0/8", "minLen": 24, "action": "Reject"}
        ))
        .unwrap();
        assert_eq!(r.min_len, Some(24));
        assert!(!r.negate && r.operations.is_empty());
    }

    fn v4net() -> impl proptest::strategy::Strategy<Value = IpNet> {
        use proptest::prelude::*;
        (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
        })
    }

    #[test]
    fn prefix_rules_first_match_wins_and_no_match_accepts() {
        let a = attrs_with(|_| {});
        let src = Source::Local;
        let ten: IpNet = "10.0.0.0/8".parse().unwrap();
        let rules = vec![
            PolicyRule {
                cidr: Some(ten),
                max_len: Some(24),
                ..PolicyRule::all(Action::Accept, None)
            },
            PolicyRule {
                cidr: Some(ten),
                ..PolicyRule::all(Action::Reject, None)
            },
        ];
        let allowed = |p: &str| apply_policy(&rules, &p.parse().unwrap(), &a, src).is_some();
        assert!(allowed("10.1.0.0/16"));
        assert!(!allowed("10.1.0.0/26"));
        assert!(allowed("192.168.0.0/26"), "no match accepts");
        let v6only = PolicyRule {
            min_len: Some(64),
            ..PolicyRule::all(Action::Reject, Some(true))
        };
        assert!(!v6only.matches(&"10.0.0.0/24".parse().unwrap(), &a, src));
        assert!(v6only.matches(&"fd00::/64".parse().unwrap(), &a, src));
    }

    proptest::proptest! {
        /// NotIn (negate) is exactly the complement of In for prefixes of the rule's family,
        /// whatever the prefix-length bounds.
        #[test]
        fn negation_is_the_complement(cidr in v4net(), p in v4net(), min in proptest::option::of(0u8..=32), max in proptest::option::of(0u8..=32)) {
            let a = attrs_with(|_| {});
            let mut r = rule(None, false, Action::Reject);
            r.cidr = Some(cidr);
            r.min_len = min;
            r.max_len = max;
            let n = PolicyRule { negate: true, ..r.clone() };
            let src = Source::Local;
            proptest::prop_assert_ne!(r.matches(&p, &a, src), n.matches(&p, &a, src));
            // And agrees with a direct reading of the prefix condition for the positive case.
            let len = p.prefix_len();
            let direct = cidr.contains(&p) && len >= min.unwrap_or(cidr.prefix_len()) && len <= max.unwrap_or(32);
            proptest::prop_assert_eq!(r.matches(&p, &a, src), direct);
        }

        /// The first matching rule decides; with no match the route is accepted unchanged.
        #[test]
        fn first_match_decides(rules in proptest::collection::vec((v4net(), proptest::bool::ANY, proptest::bool::ANY), 0..6), p in v4net()) {
            let a = attrs_with(|_| {});
            let rules: Vec<PolicyRule> = rules
                .into_iter()
                .map(|(c, neg, acc)| PolicyRule {
                    cidr: Some(c),
                    ..rule(None, neg, if acc { Action::Accept } else { Action::Reject })
                })
                .collect();
            let expected = rules
                .iter()
                .find(|r| r.matches(&p, &a, Source::Local))
                .is_none_or(|r| r.action == Action::Accept);
            proptest::prop_assert_eq!(apply_policy(&rules, &p, &a, Source::Local).is_some(), expected);
        }
    }
}
