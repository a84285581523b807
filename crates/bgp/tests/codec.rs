//! Codec: round-trip property tests, wire-format vectors and error-to-NOTIFICATION mapping.

use std::net::{Ipv4Addr, Ipv6Addr};

use calico_bgp::codec::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

fn v4net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
}
fn v6net() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())
}
fn as_path() -> impl Strategy<Value = AsPath> {
    prop::collection::vec(
        (
            prop_oneof![
                Just(SegmentKind::Sequence),
                Just(SegmentKind::Set),
                Just(SegmentKind::ConfedSequence),
                Just(SegmentKind::ConfedSet)
            ],
            prop::collection::vec(any::<u32>(), 1..6),
        )
            .prop_map(|(kind, asns)| Segment { kind, asns }),
        0..4,
    )
    .prop_map(|segments| AsPath { segments })
}
fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        Just(Capability::Multiprotocol(Family::IPV4_UNICAST)),
        Just(Capability::Multiprotocol(Family::IPV6_UNICAST)),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (
            any::<bool>(),
            0u16..4096,
            prop::collection::vec(any::<bool>(), 0..3)
        )
            .prop_map(
                |(restarting, restart_time, fl)| Capability::GracefulRestart(GracefulRestart {
                    restarting,
                    restart_time,
                    families: fl
                        .into_iter()
                        .enumerate()
                        .map(|(i, f)| (
                            if i % 2 == 0 {
                                Family::IPV4_UNICAST
                            } else {
                                Family::IPV6_UNICAST
                            },
                            f
                        ))
                        .collect(),
                })
            ),
        (100u8..=127, prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(code, data)| Capability::Unknown { code, data }),
    ]
}

/// Attributes (each code at most once, as the decoder requires).
fn attributes(four: bool) -> impl Strategy<Value = Vec<Attribute>> {
    let asn = if four {
        any::<u32>().boxed()
    } else {
        (0u32..=0xffff).boxed()
    };
    (
        prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ],
        as_path().prop_map(move |p| if four { p } else { p.to_two_octet() }),
        (1u32..0xe000_0000).prop_map(Ipv4Addr::from),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>()),
        prop::collection::vec(any::<u32>(), 0..5),
        prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 1..4),
        prop::option::of((
            any::<u128>(),
            prop::option::of(any::<u128>()),
            prop::collection::vec(v6net(), 0..5),
        )),
        prop::option::of(prop::collection::vec(v6net(), 0..5)),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        asn,
    )
        .prop_map(
            move |(origin, path, nh, med, lp, comms, large, reach, unreach, unknown, _)| {
                let mut v = vec![
                    Attribute::Origin(origin),
                    Attribute::AsPath(path),
                    Attribute::NextHop(nh),
                ];
                if let Some(m) = med {
                    v.push(Attribute::Med(m));
                }
                if let Some(l) = lp {
                    v.push(Attribute::LocalPref(l));
                }
                if !comms.is_empty() {
                    v.push(Attribute::Communities(comms));
                }
                v.push(Attribute::LargeCommunities(
                    large
                        .into_iter()
                        .map(|(global, local1, local2)| LargeCommunity {
                            global,
                            local1,
                            local2,
                        })
                        .collect(),
                ));
                if let Some((g, ll, nlri)) = reach {
                    v.push(Attribute::MpReach {
                        family: Family::IPV6_UNICAST,
                        next_hop: MpNextHop::V6 {
                            global: g.into(),
                            link_local: ll.map(Into::into),
                        },
                        nlri: nlri.into_iter().map(IpNet::V6).collect(),
                    });
                }
                if let Some(w) = unreach {
                    v.push(Attribute::MpUnreach {
                        family: Family::IPV6_UNICAST,
                        withdrawn: w.into_iter().map(IpNet::V6).collect(),
                    });
                }
                if let Some(data) = unknown {
                    v.push(Attribute::Unknown {
                        flags: FLAG_OPTIONAL | FLAG_TRANSITIVE | FLAG_PARTIAL,
                        code: 99,
                        data,
                    });
                }
                v
            },
        )
}

proptest! {
    #[test]
    fn open_round_trips(asn in any::<u32>(), hold in prop_oneof![Just(0u16), 3u16..], id in 1u32.., caps in prop::collection::vec(capability(), 0..6)) {
        let msg = Message::Open(Open::new(asn, hold, Ipv4Addr::from(id), caps));
        let bytes = encode(&msg, Ctx::default()).unwrap();
        prop_assert_eq!(decode(&bytes, Ctx::default()).unwrap(), msg);
    }

    #[test]
    fn update_round_trips(four in any::<bool>(), attrs in attributes(true), withdrawn in prop::collection::vec(v4net(), 0..20), nlri in prop::collection::vec(v4net(), 1..20)) {
        let ctx = Ctx { four_octet_as: four };
        let attrs = attrs.into_iter().map(|a| match a {
            Attribute::AsPath(p) if !four => Attribute::AsPath(p.to_two_octet()),
            a => a,
        }).collect();
        let msg = Message::Update(Update { withdrawn, attributes: attrs, nlri });
        let bytes = encode(&msg, ctx).unwrap();
        prop_assert_eq!(decode(&bytes, ctx).unwrap(), msg);
    }

    #[test]
    fn notification_and_refresh_round_trip(code in any::<u8>(), sub in any::<u8>(), data in prop::collection::vec(any::<u8>(), 0..40), afi in any::<u16>(), safi in any::<u8>()) {
        for msg in [
            Message::Notification(Notification { code, subcode: sub, data: data.clone() }),
            Message::RouteRefresh(RouteRefresh { family: Family { afi, safi }, subtype: RefreshSubtype::Begin }),
            Message::Keepalive,
        ] {
            let bytes = encode(&msg, Ctx::default()).unwrap();
            prop_assert_eq!(decode(&bytes, Ctx::default()).unwrap(), msg);
        }
    }

    /// Arbitrary bytes never panic the decoder, and whatever decodes re-encodes to an equal message.
    #[test]
    fn decoder_is_total(kind in 1u8..=5, body in prop::collection::vec(any::<u8>(), 0..200), four in any::<bool>()) {
        let mut buf = vec![0xff; 16];
        buf.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        buf.push(kind);
        buf.extend_from_slice(&body);
        let ctx = Ctx { four_octet_as: four };
        if let Ok(msg) = decode(&buf, ctx) {
            let again = encode(&msg, ctx).unwrap();
            prop_assert_eq!(decode(&again, ctx).unwrap(), msg);
        }
    }

    #[test]
    fn as4_merge_recovers_four_octet_path(asns in prop::collection::vec(any::<u32>(), 1..10), extra in prop::collection::vec(1u32..0xffff, 0..3)) {
        // A 2-octet speaker prepended `extra`; the AS4_PATH carries the original path.
        let real = AsPath::sequence(asns.clone());
        let mut two = real.to_two_octet();
        for a in extra.iter().rev() { two.prepend(*a); }
        let merged = merge_as4_path(&two, &real);
        let mut expect = extra.clone();
        expect.extend(asns);
        prop_assert_eq!(merged, AsPath::sequence(expect));
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn keepalive_wire_format() {
    let bytes = encode(&Message::Keepalive, Ctx::default()).unwrap();
    assert_eq!(bytes, hex("ffffffffffffffffffffffffffffffff 0013 04"));
}

#[test]
fn open_wire_format_with_as_trans() {
    let open = Open::new(4_200_000_000, 90, Ipv4Addr::new(10, 0, 0, 1), vec![]);
    let bytes = encode(&Message::Open(open), Ctx::default()).unwrap();
    // version 4, AS_TRANS 0x5ba0, hold 90, id, one param: cap 65 len 4 = 0xfa56ea00.
    assert_eq!(
        bytes,
        hex(
            "ffffffffffffffffffffffffffffffff 0025 01 04 5ba0 005a 0a000001 08 02 06 41 04 fa56ea00"
        )
    );
}

#[test]
fn end_of_rib_markers() {
    for fam in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
        let u = Update::end_of_rib(fam);
        let bytes = encode(&Message::Update(u), Ctx::default()).unwrap();
        let Message::Update(back) = decode(&bytes, Ctx::default()).unwrap() else {
            panic!("not an update")
        };
        assert_eq!(back.end_of_rib_family(), Some(fam));
    }
    assert_eq!(
        encode(
            &Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)),
            Ctx::default()
        )
        .unwrap()
        .len(),
        23
    );
}

fn update_with_attrs(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = vec![0xff; 16];
    let len = 19 + 2 + 2 + attrs.len() + nlri.len();
    b.extend_from_slice(&(len as u16).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    b
}

#[test]
fn errors_map_to_notifications() {
    let ctx = Ctx {
        four_octet_as: true,
    };
    let mut bad_marker = encode(&Message::Keepalive, ctx).unwrap();
    bad_marker[3] = 0;
    assert_eq!(
        decode(&bad_marker, ctx).unwrap_err().notification(),
        Notification::new(1, 1)
    );

    let mut bad_len = encode(&Message::Keepalive, ctx).unwrap();
    bad_len[17] = 20;
    bad_len.push(0);
    let n = decode(&bad_len, ctx).unwrap_err().notification();
    assert_eq!((n.code, n.subcode, n.data), (1, 2, vec![0, 20]));

    let mut bad_type = encode(&Message::Keepalive, ctx).unwrap();
    bad_type[18] = 9;
    let n = decode(&bad_type, ctx).unwrap_err().notification();
    assert_eq!((n.code, n.subcode, n.data), (1, 3, vec![9]));

    // ORIGIN value 5.
    let origin = [0x40, 1, 1, 5, 0x40, 2, 0, 0x40, 3, 4, 10, 0, 0, 1];
    let n = decode(&update_with_attrs(&origin, &[8, 10]), ctx)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode, n.data), (3, 6, vec![0x40, 1, 1, 5]));

    // ORIGIN marked optional: flags error.
    let flags = [0xc0, 1, 1, 0];
    let n = decode(&update_with_attrs(&flags, &[]), ctx)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode), (3, 4));

    // NEXT_HOP of 5 bytes: length error.
    let nh = [0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 5, 10, 0, 0, 1, 1];
    let n = decode(&update_with_attrs(&nh, &[8, 10]), ctx)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode), (3, 5));

    // NLRI without NEXT_HOP: missing well-known attribute 3.
    let missing = [0x40, 1, 1, 0, 0x40, 2, 0];
    let n = decode(&update_with_attrs(&missing, &[8, 10]), ctx)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode, n.data), (3, 3, vec![3]));

    // Prefix length 33.
    let ok = [0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, 10, 0, 0, 1];
    let n = decode(&update_with_attrs(&ok, &[33, 1, 2, 3, 4, 5]), ctx)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode), (3, 10));

    // AS_PATH segment longer than the attribute.
    let path = [0x40, 1, 1, 0, 0x40, 2, 4, 2, 3, 0, 1];
    let n = decode(&update_with_attrs(&path, &[]), ctx)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode), (3, 11));

    // Unknown well-known (non-optional) attribute.
    let unknown = [0x40, 77, 0];
    let n = decode(&update_with_attrs(&unknown, &[]), ctx)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode), (3, 2));

    // Duplicate attribute.
    let dup = [0x40, 1, 1, 0, 0x40, 1, 1, 0];
    let n = decode(&update_with_attrs(&dup, &[]), ctx)
        .unwrap_err()
        .notification();
    assert_eq!((n.code, n.subcode), (3, 1));

    // OPEN version 3.
    let mut open = encode(
        &Message::Open(Open::new(65000, 90, Ipv4Addr::new(1, 1, 1, 1), vec![])),
        ctx,
    )
    .unwrap();
    open[19] = 3;
    let n = decode(&open, ctx).unwrap_err().notification();
    assert_eq!((n.code, n.subcode, n.data), (2, 1, vec![0, 4]));

    // OPEN hold time 2.
    let mut open = encode(
        &Message::Open(Open::new(65000, 90, Ipv4Addr::new(1, 1, 1, 1), vec![])),
        ctx,
    )
    .unwrap();
    open[22..24].copy_from_slice(&[0, 2]);
    assert_eq!(
        decode(&open, ctx).unwrap_err().notification(),
        Notification::new(2, 6)
    );

    // OPEN with a non-capability optional parameter.
    let mut b = vec![0xff; 16];
    b.extend_from_slice(&[0, 33, 1, 4, 0xfd, 0xe8, 0, 90, 1, 1, 1, 1, 4, 1, 2, 0, 0]);
    assert_eq!(
        decode(&b, ctx).unwrap_err().notification(),
        Notification::new(2, 4)
    );
}

#[test]
fn mp_reach_ipv6_with_link_local() {
    let attr = Attribute::MpReach {
        family: Family::IPV6_UNICAST,
        next_hop: MpNextHop::V6 {
            global: "fd00::1".parse().unwrap(),
            link_local: Some("fe80::1".parse().unwrap()),
        },
        nlri: vec!["fd10:1::/64".parse().unwrap()],
    };
    let u = Update {
        withdrawn: vec![],
        attributes: vec![
            Attribute::Origin(Origin::Igp),
            Attribute::AsPath(AsPath::default()),
            attr,
        ],
        nlri: vec![],
    };
    let bytes = encode(&Message::Update(u.clone()), Ctx::default()).unwrap();
    // MP_REACH: flags 0x80, code 14, len 3+1+32+1+9 = 46.
    let pos = bytes
        .windows(3)
        .position(|w| w == [0x80, 14, 46])
        .expect("MP_REACH header");
    assert_eq!(bytes[pos + 3..pos + 7], [0, 2, 1, 32]);
    assert_eq!(decode(&bytes, Ctx::default()).unwrap(), Message::Update(u));
}

#[test]
fn two_octet_as_path_uses_as_trans() {
    let path = AsPath::sequence(vec![4_200_000_000, 65001]);
    let u = Update {
        withdrawn: vec![],
        attributes: vec![
            Attribute::Origin(Origin::Igp),
            Attribute::AsPath(path.clone()),
            Attribute::As4Path(path.clone()),
            Attribute::NextHop(Ipv4Addr::new(10, 0, 0, 1)),
        ],
        nlri: vec!["10.0.0.0/8".parse().unwrap()],
    };
    let bytes = encode(
        &Message::Update(u),
        Ctx {
            four_octet_as: false,
        },
    )
    .unwrap();
    let Message::Update(back) = decode(
        &bytes,
        Ctx {
            four_octet_as: false,
        },
    )
    .unwrap() else {
        panic!()
    };
    let attrs = calico_bgp::rib::PathAttrs::from_attributes(&back.attributes);
    assert_eq!(
        back.attributes[1],
        Attribute::AsPath(AsPath::sequence(vec![u32::from(AS_TRANS), 65001]))
    );
    assert_eq!(attrs.as_path, path);
}
