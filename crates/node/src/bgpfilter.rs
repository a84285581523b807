//! BGPFilter resources turned into the speaker's per-peer import and export rules.
//!
//! Calico evaluates a peer's filters in the order the BGPPeer lists them, each rule in order;
//! the first matching rule decides, and a route no rule matches is accepted. The speaker's
//! rules have the same first-match semantics, so a peer's filters become one concatenated list.
//!
//! Supported: `action`, `cidr` with `matchOperator` `Equal` or `In`, `prefixLength` (with `In`),
//! and rules without a CIDR (the whole family). Rules using anything else (`NotEqual`, `NotIn`,
//! `asPathPrefix`, `communities`, `interface`, `peerType`, `source`, `operations`, `priority`)
//! are refused with the field named, and the agent keeps that session down rather than run it
//! with a filter it cannot honour.

use std::collections::BTreeMap;

use calico_api::{
    BGPFilterAction, BGPFilterMatchOperator, BGPFilterPrefixLength, BGPFilterRuleV4,
    BGPFilterRuleV6, BGPFilterSpec,
};
use calico_bgp::rib::{Action, FilterRule};
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
}

/// The speaker's rules for one session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerFilters {
    pub import: Vec<FilterRule>,
    pub export: Vec<FilterRule>,
}

/// The parts of a v4 or v6 rule this module reads (the two kinds have the same shape).
struct RuleView<'a> {
    action: BGPFilterAction,
    cidr: Option<&'a str>,
    match_operator: Option<BGPFilterMatchOperator>,
    prefix_length: Option<&'a BGPFilterPrefixLength>,
    /// The first field set that we cannot honour, if any.
    unsupported: Option<&'static str>,
}

macro_rules! view {
    ($r:expr) => {
        RuleView {
            action: $r.action,
            cidr: $r.cidr.as_deref(),
            match_operator: $r.match_operator,
            prefix_length: $r.prefix_length.as_ref(),
            unsupported: if !$r.as_path_prefix.is_empty() {
                Some("asPathPrefix")
            } else if $r.communities.is_some() {
                Some("communities")
            } else if $r.interface.is_some() {
                Some("interface")
            } else if $r.peer_type.is_some() {
                Some("peerType")
            } else if $r.source.is_some() {
                Some("source")
            } else if !$r.operations.is_empty() {
                Some("operations")
            } else if $r.priority.is_some() {
                Some("priority")
            } else {
                None
            },
        }
    };
}

fn v4(r: &BGPFilterRuleV4) -> RuleView<'_> {
    view!(r)
}

fn v6(r: &BGPFilterRuleV6) -> RuleView<'_> {
    view!(r)
}

fn convert(
    filter: &str,
    list: &'static str,
    index: usize,
    r: &RuleView<'_>,
    want_v6: bool,
) -> Result<FilterRule, FilterError> {
    let bad = |field: &'static str, reason: String| FilterError::Unsupported {
        filter: filter.to_string(),
        list,
        index,
        field,
        reason,
    };
    if let Some(field) = r.unsupported {
        return Err(bad(field, "not supported by calico-rs yet".into()));
    }
    let action = match r.action {
        BGPFilterAction::Accept => Action::Accept,
        BGPFilterAction::Reject => Action::Reject,
    };
    let Some(cidr) = r.cidr else {
        return Ok(FilterRule {
            cidr: None,
            min_len: None,
            max_len: None,
            family_v6: Some(want_v6),
            action,
        });
    };
    let net: IpNet = cidr
        .parse()
        .map_err(|_| bad("cidr", format!("{cidr:?} is not a CIDR")))?;
    let max_bits = if want_v6 { 128 } else { 32 };
    let len_of = |v: Option<i32>, field: &'static str| -> Result<Option<u8>, FilterError> {
        v.map(|n| {
            u8::try_from(n)
                .ok()
                .filter(|n| *n <= max_bits)
                .ok_or_else(|| bad(field, format!("{n} is not a prefix length")))
        })
        .transpose()
    };
    let (min_len, max_len) = match r.match_operator {
        Some(BGPFilterMatchOperator::Equal) => (Some(net.prefix_len()), Some(net.prefix_len())),
        Some(BGPFilterMatchOperator::In) => (
            len_of(r.prefix_length.and_then(|p| p.min), "prefixLength.min")?,
            len_of(r.prefix_length.and_then(|p| p.max), "prefixLength.max")?,
        ),
        Some(op) => {
            return Err(bad(
                "matchOperator",
                format!("{op:?} is not supported by calico-rs yet"),
            ));
        }
        None => return Err(bad("matchOperator", "required with cidr".into())),
    };
    Ok(FilterRule {
        cidr: Some(net.trunc()),
        min_len,
        max_len,
        family_v6: None,
        action,
    })
}

/// The rules of `names` (a BGPPeer's `filters`, in order) for a session of one family.
pub fn peer_filters(
    names: &[String],
    all: &BTreeMap<String, BGPFilterSpec>,
    want_v6: bool,
) -> Result<PeerFilters, FilterError> {
    let mut out = PeerFilters::default();
    for name in names {
        let spec = all
            .get(name)
            .ok_or_else(|| FilterError::Missing(name.clone()))?;
        if want_v6 {
            for (i, r) in spec.import_v6.iter().enumerate() {
                out.import.push(convert(name, "importV6", i, &v6(r), true)?);
            }
            for (i, r) in spec.export_v6.iter().enumerate() {
                out.export.push(convert(name, "exportV6", i, &v6(r), true)?);
            }
        } else {
            for (i, r) in spec.import_v4.iter().enumerate() {
                out.import
                    .push(convert(name, "importV4", i, &v4(r), false)?);
            }
            for (i, r) in spec.export_v4.iter().enumerate() {
                out.export
                    .push(convert(name, "exportV4", i, &v4(r), false)?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BGPFilterSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn calico_example_becomes_first_match_rules() {
        let all = BTreeMap::from([(
            "no-small".to_string(),
            spec(
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
            ),
        )]);
        let f = peer_filters(&["no-small".into()], &all, false).unwrap();
        assert_eq!(f.export.len(), 2);
        let matches = |rules: &[FilterRule], p: &str| {
            rules.iter().find(|r| r.matches(&net(p))).map(|r| r.action)
        };
        assert_eq!(matches(&f.export, "10.2.3.0/26"), Some(Action::Reject));
        assert_eq!(matches(&f.export, "10.2.0.0/24"), None);
        assert_eq!(matches(&f.export, "10.1.0.0/16"), Some(Action::Accept));
        assert_eq!(matches(&f.import, "192.168.0.0/26"), Some(Action::Reject));
        // The v4 rules do not leak into a v6 session.
        let f6 = peer_filters(&["no-small".into()], &all, true).unwrap();
        assert!(f6.import.is_empty() && f6.export.is_empty());
    }

    #[test]
    fn unsupported_rules_name_the_filter_and_field() {
        let all = BTreeMap::from([
            (
                "neg".to_string(),
                spec(
                    "exportV4:\n  - action: Reject\n    matchOperator: NotIn\n    cidr: 10.0.0.0/8\n",
                ),
            ),
            (
                "comm".to_string(),
                spec("importV6:\n  - action: Accept\n    communities: {values: ['65000:100']}\n"),
            ),
        ]);
        let err = peer_filters(&["neg".into()], &all, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BGPFilter \"neg\": spec.exportV4[0].matchOperator: NotIn is not supported by calico-rs yet"
        );
        let err = peer_filters(&["comm".into()], &all, true).unwrap_err();
        assert!(
            err.to_string().contains("spec.importV6[0].communities"),
            "{err}"
        );
        let err = peer_filters(&["absent".into()], &all, false).unwrap_err();
        assert_eq!(err, FilterError::Missing("absent".into()));
    }
}
