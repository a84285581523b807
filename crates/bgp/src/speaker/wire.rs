//! Wire packing: turns what the core wants a peer to have (attributes and prefixes to announce,
//! prefixes to withdraw) into UPDATE messages that each fit the 4096-byte limit, with the
//! attribute encoding the session negotiated (2- or 4-octet AS paths). No state.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::codec::{self, Attribute, Ctx, Family, Message, MpNextHop, Update};
use crate::rib::PathAttrs;

/// Message size budget for packing prefixes (below the 4096 limit, leaving room for the
/// attribute header growing to extended length).
const PACK_LIMIT: usize = codec::MAX_MESSAGE_LEN - 8;

/// Wire attributes for an announcement to a peer with `ctx`.
fn wire_attributes(a: &PathAttrs, ctx: Ctx, ipv4_next_hop: bool) -> Vec<Attribute> {
    let mut v = vec![Attribute::Origin(a.origin)];
    if ctx.four_octet_as || !a.as_path.needs_four_octets() {
        v.push(Attribute::AsPath(a.as_path.clone()));
    } else {
        v.push(Attribute::AsPath(a.as_path.to_two_octet()));
        v.push(Attribute::As4Path(a.as_path.clone()));
    }
    if ipv4_next_hop && let Some(IpAddr::V4(nh)) = a.next_hop {
        v.push(Attribute::NextHop(nh));
    }
    if let Some(m) = a.med {
        v.push(Attribute::Med(m));
    }
    if let Some(l) = a.local_pref {
        v.push(Attribute::LocalPref(l));
    }
    if a.atomic_aggregate {
        v.push(Attribute::AtomicAggregate);
    }
    if !a.communities.is_empty() {
        v.push(Attribute::Communities(a.communities.clone()));
    }
    if let Some(o) = a.originator_id {
        v.push(Attribute::OriginatorId(o));
    }
    if !a.cluster_list.is_empty() {
        v.push(Attribute::ClusterList(a.cluster_list.clone()));
    }
    if !a.large_communities.is_empty() {
        v.push(Attribute::LargeCommunities(a.large_communities.clone()));
    }
    for other in &a.other {
        if let Attribute::Unknown { flags, code, data } = other {
            // Passed on without being understood: set Partial (RFC 4271 5).
            v.push(Attribute::Unknown {
                flags: flags | codec::FLAG_PARTIAL,
                code: *code,
                data: data.clone(),
            });
        }
    }
    v
}

pub(crate) fn build_announcements(a: &PathAttrs, nets: &[IpNet], ctx: Ctx) -> Vec<Message> {
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = nets.iter().partition(|n| matches!(n, IpNet::V4(_)));
    let mut msgs = Vec::new();
    if !v4.is_empty() {
        let attrs = wire_attributes(a, ctx, true);
        let overhead = codec::update_overhead(&attrs, ctx);
        for chunk in pack(&v4, overhead) {
            msgs.push(Message::Update(Update {
                withdrawn: Vec::new(),
                attributes: attrs.clone(),
                nlri: chunk
                    .iter()
                    .filter_map(|n| match n {
                        IpNet::V4(n) => Some(*n),
                        IpNet::V6(_) => None,
                    })
                    .collect(),
            }));
        }
    }
    if !v6.is_empty() {
        let Some(IpAddr::V6(global)) = a.next_hop else {
            return msgs;
        };
        let base = wire_attributes(a, ctx, false);
        let next_hop = MpNextHop::V6 {
            global,
            link_local: a.link_local,
        };
        let empty = Attribute::MpReach {
            family: Family::IPV6_UNICAST,
            next_hop,
            nlri: Vec::new(),
        };
        let mut with_empty = base.clone();
        with_empty.push(empty);
        let overhead = codec::update_overhead(&with_empty, ctx) + 1;
        for chunk in pack(&v6, overhead) {
            let mut attrs = base.clone();
            attrs.push(Attribute::MpReach {
                family: Family::IPV6_UNICAST,
                next_hop,
                nlri: chunk,
            });
            msgs.push(Message::Update(Update {
                withdrawn: Vec::new(),
                attributes: attrs,
                nlri: Vec::new(),
            }));
        }
    }
    msgs
}

pub(crate) fn build_withdrawals(nets: &[IpNet]) -> Vec<Message> {
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = nets.iter().partition(|n| matches!(n, IpNet::V4(_)));
    let mut msgs = Vec::new();
    for chunk in pack(&v4, codec::HEADER_LEN + 4) {
        msgs.push(Message::Update(Update {
            withdrawn: chunk
                .iter()
                .filter_map(|n| match n {
                    IpNet::V4(n) => Some(*n),
                    IpNet::V6(_) => None,
                })
                .collect(),
            ..Update::default()
        }));
    }
    for chunk in pack(&v6, codec::HEADER_LEN + 4 + 4 + 3) {
        msgs.push(Message::Update(Update {
            attributes: vec![Attribute::MpUnreach {
                family: Family::IPV6_UNICAST,
                withdrawn: chunk,
            }],
            ..Update::default()
        }));
    }
    msgs
}

/// Splits prefixes into groups that fit one message after `overhead` bytes.
fn pack(nets: &[IpNet], overhead: usize) -> Vec<Vec<IpNet>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = overhead;
    for n in nets {
        let l = codec::prefix_wire_len(n);
        if size + l > PACK_LIMIT && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            size = overhead;
        }
        size += l;
        cur.push(*n);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn nets(n: u32, v6: bool) -> Vec<IpNet> {
        (0..n)
            .map(|i| {
                if v6 {
                    IpNet::V6(
                        ipnet::Ipv6Net::new(
                            Ipv6Addr::from((0xfd00u128 << 112) | (u128::from(i) << 64)),
                            64,
                        )
                        .unwrap(),
                    )
                } else {
                    IpNet::V4(
                        ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap(),
                    )
                }
            })
            .collect()
    }

    /// Many prefixes are packed into several UPDATEs that each fit 4096 bytes and together carry
    /// every prefix once.
    #[test]
    fn announcements_and_withdrawals_pack_within_message_limit() {
        let mut attrs = PathAttrs::local(Some("192.168.33.11".parse().unwrap()));
        attrs.as_path = codec::AsPath::sequence(vec![4_200_000_000, 64512]);
        attrs.communities = vec![1, 2, 3];
        for v6 in [false, true] {
            if v6 {
                attrs.next_hop = Some("fd00::11".parse().unwrap());
                attrs.link_local = Some("fe80::11".parse().unwrap());
            }
            let all = nets(3000, v6);
            for ctx in [
                Ctx {
                    four_octet_as: true,
                },
                Ctx {
                    four_octet_as: false,
                },
            ] {
                let mut seen = Vec::new();
                let msgs = build_announcements(&attrs, &all, ctx);
                assert!(msgs.len() > 1);
                for m in &msgs {
                    let bytes = codec::encode(m, ctx).expect("fits");
                    assert!(bytes.len() <= codec::MAX_MESSAGE_LEN);
                    let Message::Update(u) = codec::decode(&bytes, ctx).expect("decodes") else {
                        panic!("not an update")
                    };
                    let back = PathAttrs::from_attributes(&u.attributes);
                    assert_eq!(back.as_path, attrs.as_path, "AS4_PATH restores the path");
                    seen.extend(u.nlri.iter().map(|n| IpNet::V4(*n)));
                    for a in &u.attributes {
                        if let Attribute::MpReach { nlri, next_hop, .. } = a {
                            assert_eq!(next_hop.addr(), attrs.next_hop.unwrap());
                            seen.extend(nlri.iter().copied());
                        }
                    }
                }
                assert_eq!(seen, all);
            }
            let mut seen = Vec::new();
            for m in build_withdrawals(&all) {
                let bytes = codec::encode(&m, Ctx::default()).expect("fits");
                let Message::Update(u) = codec::decode(&bytes, Ctx::default()).unwrap() else {
                    panic!("not an update")
                };
                seen.extend(u.withdrawn.iter().map(|n| IpNet::V4(*n)));
                for a in &u.attributes {
                    if let Attribute::MpUnreach { withdrawn, .. } = a {
                        seen.extend(withdrawn.iter().copied());
                    }
                }
            }
            assert_eq!(seen, all);
        }
    }
}
