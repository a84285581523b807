//! BGP-4 wire codec: bytes <-> [`Message`] (RFC 4271, 4760, 6793, 2918, 4724, 7313, 1997, 8092).
//!
//! Decoding is strict: every length is checked against what the field needs and against the
//! enclosing length; a failure is a [`DecodeError`] that knows which NOTIFICATION
//! (code/subcode/data) to send back ([`DecodeError::notification`]).
//!
//! AS numbers in AS_PATH are 2 or 4 octets wide depending on whether both sides announced the
//! 4-octet-AS capability; the [`Ctx`] passed to [`decode`]/[`encode`] says which. AS_PATH and
//! AS4_PATH are kept as received; [`merge_as4_path`] gives the RFC 6793 effective path.
//!
//! Not implemented: extended messages (RFC 8654), ADD-PATH, RFC 7606 treat-as-withdraw (a
//! malformed UPDATE resets the session as RFC 4271 says).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Largest BGP message without RFC 8654.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Fixed header: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// The 2-octet stand-in for a 4-octet AS (RFC 6793).
pub const AS_TRANS: u16 = 23456;

const MSG_OPEN: u8 = 1;
const MSG_UPDATE: u8 = 2;
const MSG_NOTIFICATION: u8 = 3;
const MSG_KEEPALIVE: u8 = 4;
const MSG_ROUTE_REFRESH: u8 = 5;

/// Address family + subsequent address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    pub afi: u16,
    pub safi: u8,
}

impl Family {
    pub const IPV4_UNICAST: Family = Family { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: Family = Family { afi: 2, safi: 1 };

    /// The unicast family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::IPV4_UNICAST,
            IpAddr::V6(_) => Family::IPV6_UNICAST,
        }
    }

    /// The unicast family of a prefix.
    pub fn of_net(net: &IpNet) -> Family {
        Family::of(net.addr())
    }
}

/// How the session was negotiated, as far as the wire format cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ctx {
    /// Both sides announced the 4-octet AS capability: AS_PATH carries 4-octet ASNs.
    pub four_octet_as: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field (AS_TRANS when the real AS needs 4 octets).
    pub my_as: u16,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// Builds an OPEN for `asn`, filling My AS with AS_TRANS when it does not fit 2 octets and
    /// adding the 4-octet AS capability.
    pub fn new(asn: u32, hold_time: u16, router_id: Ipv4Addr, mut caps: Vec<Capability>) -> Open {
        if !caps.iter().any(|c| matches!(c, Capability::FourOctetAs(_))) {
            caps.push(Capability::FourOctetAs(asn));
        }
        Open {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            router_id,
            capabilities: caps,
        }
    }

    /// The sender's AS: from the 4-octet capability if present, else My AS.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    pub fn has(&self, pred: impl Fn(&Capability) -> bool) -> bool {
        self.capabilities.iter().any(pred)
    }

    /// Families announced with the multiprotocol capability. RFC 4760: a speaker that sends no
    /// MP capability at all speaks IPv4 unicast only.
    pub fn families(&self) -> Vec<Family> {
        let fams: Vec<Family> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if fams.is_empty() {
            vec![Family::IPV4_UNICAST]
        } else {
            fams
        }
    }

    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760 (code 1).
    Multiprotocol(Family),
    /// RFC 2918 (code 2).
    RouteRefresh,
    /// RFC 4724 (code 64).
    GracefulRestart(GracefulRestart),
    /// RFC 6793 (code 65).
    FourOctetAs(u32),
    /// RFC 7313 (code 70).
    EnhancedRouteRefresh,
    /// Anything else, kept so it can be logged.
    Unknown { code: u8, data: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restarting: bool,
    /// Seconds (12 bits).
    pub restart_time: u16,
    /// Families whose forwarding state the sender preserved (F bit per family).
    pub families: Vec<(Family, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshSubtype {
    Normal,
    /// Beginning of route refresh (RFC 7313).
    Begin,
    /// End of route refresh (RFC 7313).
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub family: Family,
    pub subtype: RefreshSubtype,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Notification {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.code {
            notif::HEADER => "message header error",
            notif::OPEN => "OPEN message error",
            notif::UPDATE => "UPDATE message error",
            notif::HOLD_TIMER_EXPIRED => "hold timer expired",
            notif::FSM => "finite state machine error",
            notif::CEASE => "cease",
            notif::ROUTE_REFRESH => "ROUTE-REFRESH message error",
            _ => "unknown error",
        };
        write!(f, "{what} ({}/{})", self.code, self.subcode)
    }
}

/// NOTIFICATION codes and subcodes (RFC 4271 section 4.5, RFC 4486, RFC 7313).
pub mod notif {
    pub const HEADER: u8 = 1;
    pub const HEADER_NOT_SYNCHRONIZED: u8 = 1;
    pub const HEADER_BAD_LENGTH: u8 = 2;
    pub const HEADER_BAD_TYPE: u8 = 3;

    pub const OPEN: u8 = 2;
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    pub const OPEN_BAD_BGP_ID: u8 = 3;
    pub const OPEN_UNSUPPORTED_OPT_PARAM: u8 = 4;
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const OPEN_UNSUPPORTED_CAPABILITY: u8 = 7;

    pub const UPDATE: u8 = 3;
    pub const UPDATE_MALFORMED_ATTR_LIST: u8 = 1;
    pub const UPDATE_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const UPDATE_MISSING_WELL_KNOWN: u8 = 3;
    pub const UPDATE_ATTR_FLAGS: u8 = 4;
    pub const UPDATE_ATTR_LENGTH: u8 = 5;
    pub const UPDATE_INVALID_ORIGIN: u8 = 6;
    pub const UPDATE_INVALID_NEXT_HOP: u8 = 8;
    pub const UPDATE_OPTIONAL_ATTR: u8 = 9;
    pub const UPDATE_INVALID_NETWORK: u8 = 10;
    pub const UPDATE_MALFORMED_AS_PATH: u8 = 11;

    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;

    pub const CEASE: u8 = 6;
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    pub const CEASE_ADMIN_RESET: u8 = 4;
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    pub const CEASE_OTHER_CONFIG_CHANGE: u8 = 6;
    pub const CEASE_COLLISION: u8 = 7;

    pub const ROUTE_REFRESH: u8 = 7;
    pub const ROUTE_REFRESH_BAD_LENGTH: u8 = 1;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: Vec<Attribute>,
    pub nlri: Vec<Ipv4Net>,
}

impl Update {
    /// The End-of-RIB marker for `family` (RFC 4724 section 2).
    pub fn end_of_rib(family: Family) -> Update {
        if family == Family::IPV4_UNICAST {
            Update::default()
        } else {
            Update {
                attributes: vec![Attribute::MpUnreach {
                    family,
                    withdrawn: Vec::new(),
                }],
                ..Update::default()
            }
        }
    }

    /// The family this UPDATE marks the end of, if it is an End-of-RIB marker.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::IPV4_UNICAST),
            [Attribute::MpUnreach { family, withdrawn }] if withdrawn.is_empty() => Some(*family),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    pub kind: SegmentKind,
    pub asns: Vec<u32>,
}

/// An AS path as a list of segments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    pub segments: Vec<Segment>,
}

impl AsPath {
    pub fn sequence(asns: Vec<u32>) -> AsPath {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![Segment {
                kind: SegmentKind::Sequence,
                asns,
            }],
        }
    }

    /// Path length for best-path selection: a set counts as one, confederation segments as zero.
    pub fn len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Sequence => s.asns.len(),
                SegmentKind::Set => 1,
                _ => 0,
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// The neighbouring AS (first AS of a leading sequence).
    pub fn first_as(&self) -> Option<u32> {
        match self.segments.first() {
            Some(Segment {
                kind: SegmentKind::Sequence,
                asns,
            }) => asns.first().copied(),
            _ => None,
        }
    }

    /// Prepends `asn` (eBGP export), keeping segments within 255 ASNs.
    pub fn prepend(&mut self, asn: u32) {
        match self.segments.first_mut() {
            Some(s) if s.kind == SegmentKind::Sequence && s.asns.len() < 255 => {
                s.asns.insert(0, asn)
            }
            _ => self.segments.insert(
                0,
                Segment {
                    kind: SegmentKind::Sequence,
                    asns: vec![asn],
                },
            ),
        }
    }

    /// Whether any ASN needs 4 octets.
    pub fn needs_four_octets(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|a| *a > u32::from(u16::MAX)))
    }

    /// The path as a 2-octet speaker sees it: large ASNs replaced by AS_TRANS.
    pub fn to_two_octet(&self) -> AsPath {
        AsPath {
            segments: self
                .segments
                .iter()
                .map(|s| Segment {
                    kind: s.kind,
                    asns: s
                        .asns
                        .iter()
                        .map(|a| if *a > 0xffff { u32::from(AS_TRANS) } else { *a })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// RFC 6793 section 4.2.3: the effective path from AS_PATH and AS4_PATH received from a
/// 2-octet speaker. If AS4_PATH is longer than AS_PATH it is ignored.
pub fn merge_as4_path(as_path: &AsPath, as4_path: &AsPath) -> AsPath {
    let n2 = as_path.len();
    let n4 = as4_path.len();
    if n4 > n2 {
        return as_path.clone();
    }
    // Keep the leading (n2 - n4) path-length units of AS_PATH, then append AS4_PATH.
    let mut keep = n2 - n4;
    let mut out = AsPath::default();
    for seg in &as_path.segments {
        if keep == 0 {
            break;
        }
        match seg.kind {
            SegmentKind::Sequence => {
                let take = keep.min(seg.asns.len());
                out.segments.push(Segment {
                    kind: seg.kind,
                    asns: seg.asns[..take].to_vec(),
                });
                keep -= take;
            }
            SegmentKind::Set => {
                out.segments.push(seg.clone());
                keep -= 1;
            }
            _ => out.segments.push(seg.clone()),
        }
    }
    for seg in &as4_path.segments {
        match out.segments.last_mut() {
            // Join sequences split at the boundary, as the original path had them.
            Some(last)
                if last.kind == SegmentKind::Sequence
                    && seg.kind == SegmentKind::Sequence
                    && last.asns.len() + seg.asns.len() <= 255 =>
            {
                last.asns.extend_from_slice(&seg.asns)
            }
            _ => out.segments.push(seg.clone()),
        }
    }
    out
}

/// The next hop(s) of MP_REACH_NLRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    V4(Ipv4Addr),
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

impl MpNextHop {
    pub fn addr(&self) -> IpAddr {
        match self {
            MpNextHop::V4(a) => IpAddr::V4(*a),
            MpNextHop::V6 { global, .. } => IpAddr::V6(*global),
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

pub mod attr_code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH: u8 = 14;
    pub const MP_UNREACH: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

pub const FLAG_OPTIONAL: u8 = 0x80;
pub const FLAG_TRANSITIVE: u8 = 0x40;
pub const FLAG_PARTIAL: u8 = 0x20;
const FLAG_EXTENDED: u8 = 0x10;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attribute {
    Origin(Origin),
    AsPath(AsPath),
    NextHop(Ipv4Addr),
    Med(u32),
    LocalPref(u32),
    AtomicAggregate,
    Communities(Vec<u32>),
    OriginatorId(Ipv4Addr),
    ClusterList(Vec<Ipv4Addr>),
    MpReach {
        family: Family,
        next_hop: MpNextHop,
        nlri: Vec<IpNet>,
    },
    MpUnreach {
        family: Family,
        withdrawn: Vec<IpNet>,
    },
    As4Path(AsPath),
    LargeCommunities(Vec<LargeCommunity>),
    /// Anything else (AGGREGATOR, extended communities, ...): flags and bytes as received, so
    /// optional transitive attributes pass through (with the Partial bit set when re-sent).
    Unknown {
        flags: u8,
        code: u8,
        data: Vec<u8>,
    },
}

impl Attribute {
    pub fn code(&self) -> u8 {
        use attr_code::*;
        match self {
            Attribute::Origin(_) => ORIGIN,
            Attribute::AsPath(_) => AS_PATH,
            Attribute::NextHop(_) => NEXT_HOP,
            Attribute::Med(_) => MED,
            Attribute::LocalPref(_) => LOCAL_PREF,
            Attribute::AtomicAggregate => ATOMIC_AGGREGATE,
            Attribute::Communities(_) => COMMUNITIES,
            Attribute::OriginatorId(_) => ORIGINATOR_ID,
            Attribute::ClusterList(_) => CLUSTER_LIST,
            Attribute::MpReach { .. } => MP_REACH,
            Attribute::MpUnreach { .. } => MP_UNREACH,
            Attribute::As4Path(_) => AS4_PATH,
            Attribute::LargeCommunities(_) => LARGE_COMMUNITIES,
            Attribute::Unknown { code, .. } => *code,
        }
    }

    /// The flags this attribute must carry (RFC 4271 section 5 and the attribute's RFC).
    fn flags(&self) -> u8 {
        match self {
            Attribute::Unknown { flags, .. } => *flags & !FLAG_EXTENDED,
            _ => expected_flags(self.code()).unwrap_or(FLAG_OPTIONAL),
        }
    }
}

fn expected_flags(code: u8) -> Option<u8> {
    use attr_code::*;
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => FLAG_TRANSITIVE,
        MED | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH | MP_UNREACH => FLAG_OPTIONAL,
        COMMUNITIES | AS4_PATH | LARGE_COMMUNITIES => FLAG_OPTIONAL | FLAG_TRANSITIVE,
        _ => return None,
    })
}

/// A message that could not be decoded, with what the NOTIFICATION must say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("header marker is not all ones")]
    NotSynchronized,
    #[error("bad message length {length} for message type {kind}")]
    BadLength { kind: u8, length: u16 },
    #[error("unknown message type {kind}")]
    BadType { kind: u8 },
    #[error("{what}: needs {needed} bytes, {available} left")]
    Truncated {
        /// Which message the truncation is in (decides the NOTIFICATION code).
        kind: u8,
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("unsupported BGP version {version}")]
    UnsupportedVersion { version: u8 },
    #[error("unsupported optional parameter type {param}")]
    UnsupportedOptionalParameter { param: u8 },
    #[error("capability {code} is malformed: {reason}")]
    BadCapability { code: u8, reason: &'static str },
    #[error("bad BGP identifier {id}")]
    BadBgpId { id: Ipv4Addr },
    #[error("unacceptable hold time {hold_time}")]
    UnacceptableHoldTime { hold_time: u16 },
    #[error("attribute {code}: flags {flags:#04x} are wrong")]
    AttributeFlags { code: u8, flags: u8, raw: Vec<u8> },
    #[error("attribute {code}: length {length} is wrong")]
    AttributeLength {
        code: u8,
        length: usize,
        raw: Vec<u8>,
    },
    #[error("attribute {code} appears twice")]
    DuplicateAttribute { code: u8 },
    #[error("malformed attribute list: {reason}")]
    MalformedAttributeList { reason: &'static str },
    #[error("invalid ORIGIN value {value}")]
    InvalidOrigin { value: u8, raw: Vec<u8> },
    #[error("malformed AS_PATH: {reason}")]
    MalformedAsPath { reason: &'static str },
    #[error("prefix length {length} is too long for the family")]
    InvalidNetwork { length: u8 },
    #[error("MP next hop length {length} is not valid for AFI {afi}")]
    BadMpNextHop {
        afi: u16,
        length: usize,
        raw: Vec<u8>,
    },
    #[error("missing well-known attribute {code}")]
    MissingWellKnown { code: u8 },
    #[error("unrecognized well-known attribute {code}")]
    UnrecognizedWellKnown { code: u8, raw: Vec<u8> },
    #[error("invalid NEXT_HOP {addr}")]
    InvalidNextHop { addr: Ipv4Addr, raw: Vec<u8> },
    #[error("ROUTE-REFRESH length {length} is not 23")]
    RouteRefreshLength { length: u16 },
}

impl DecodeError {
    /// The NOTIFICATION that reports this error to the peer (RFC 4271 section 6).
    pub fn notification(&self) -> Notification {
        use notif::*;
        let (code, subcode, data): (u8, u8, Vec<u8>) = match self {
            DecodeError::NotSynchronized => (HEADER, HEADER_NOT_SYNCHRONIZED, vec![]),
            DecodeError::BadLength { length, .. } => {
                (HEADER, HEADER_BAD_LENGTH, length.to_be_bytes().to_vec())
            }
            DecodeError::BadType { kind } => (HEADER, HEADER_BAD_TYPE, vec![*kind]),
            DecodeError::Truncated { kind, .. } => match *kind {
                MSG_OPEN => (OPEN, 0, vec![]),
                MSG_UPDATE => (UPDATE, UPDATE_MALFORMED_ATTR_LIST, vec![]),
                _ => (HEADER, HEADER_BAD_LENGTH, vec![]),
            },
            DecodeError::UnsupportedVersion { .. } => {
                // Data: the largest version we support.
                (OPEN, OPEN_UNSUPPORTED_VERSION, 4u16.to_be_bytes().to_vec())
            }
            DecodeError::UnsupportedOptionalParameter { .. } => {
                (OPEN, OPEN_UNSUPPORTED_OPT_PARAM, vec![])
            }
            DecodeError::BadCapability { .. } => (OPEN, 0, vec![]),
            DecodeError::BadBgpId { .. } => (OPEN, OPEN_BAD_BGP_ID, vec![]),
            DecodeError::UnacceptableHoldTime { .. } => (OPEN, OPEN_UNACCEPTABLE_HOLD_TIME, vec![]),
            DecodeError::AttributeFlags { raw, .. } => (UPDATE, UPDATE_ATTR_FLAGS, raw.clone()),
            DecodeError::AttributeLength { raw, .. } => (UPDATE, UPDATE_ATTR_LENGTH, raw.clone()),
            DecodeError::DuplicateAttribute { .. } | DecodeError::MalformedAttributeList { .. } => {
                (UPDATE, UPDATE_MALFORMED_ATTR_LIST, vec![])
            }
            DecodeError::InvalidOrigin { raw, .. } => (UPDATE, UPDATE_INVALID_ORIGIN, raw.clone()),
            DecodeError::MalformedAsPath { .. } => (UPDATE, UPDATE_MALFORMED_AS_PATH, vec![]),
            DecodeError::InvalidNetwork { .. } => (UPDATE, UPDATE_INVALID_NETWORK, vec![]),
            DecodeError::BadMpNextHop { raw, .. } => (UPDATE, UPDATE_OPTIONAL_ATTR, raw.clone()),
            DecodeError::MissingWellKnown { code } => {
                (UPDATE, UPDATE_MISSING_WELL_KNOWN, vec![*code])
            }
            DecodeError::UnrecognizedWellKnown { raw, .. } => {
                (UPDATE, UPDATE_UNRECOGNIZED_WELL_KNOWN, raw.clone())
            }
            DecodeError::InvalidNextHop { raw, .. } => {
                (UPDATE, UPDATE_INVALID_NEXT_HOP, raw.clone())
            }
            DecodeError::RouteRefreshLength { .. } => {
                (ROUTE_REFRESH, ROUTE_REFRESH_BAD_LENGTH, vec![])
            }
        };
        Notification {
            code,
            subcode,
            data,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {length} bytes exceeds {MAX_MESSAGE_LEN}")]
    TooLong { length: usize },
    #[error("{what} of {length} bytes does not fit its length field")]
    FieldTooLong { what: &'static str, length: usize },
}

/// A bounds-checked reader over a message body.
struct Reader<'a> {
    buf: &'a [u8],
    kind: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                what,
                needed: n,
                available: self.buf.len(),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Reads the header at the start of `buf`: `Ok(None)` until 19 bytes are there, else the type and
/// total message length (validated against the type's minimum and [`MAX_MESSAGE_LEN`]).
pub fn decode_header(buf: &[u8]) -> Result<Option<(u8, usize)>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|b| *b != 0xff) {
        return Err(DecodeError::NotSynchronized);
    }
    let length = u16::from_be_bytes([buf[16], buf[17]]);
    let kind = buf[18];
    let min = match kind {
        MSG_OPEN => 29,
        MSG_UPDATE => 23,
        MSG_NOTIFICATION => 21,
        MSG_KEEPALIVE => 19,
        MSG_ROUTE_REFRESH => 23,
        _ => return Err(DecodeError::BadType { kind }),
    };
    let len = usize::from(length);
    let bad = len < min
        || len > MAX_MESSAGE_LEN
        || (kind == MSG_KEEPALIVE && len != HEADER_LEN)
        || (kind == MSG_ROUTE_REFRESH && len != 23);
    if bad {
        return Err(DecodeError::BadLength { kind, length });
    }
    Ok(Some((kind, len)))
}

/// Decodes exactly one whole message (header included).
pub fn decode(buf: &[u8], ctx: Ctx) -> Result<Message, DecodeError> {
    let Some((kind, len)) = decode_header(buf)? else {
        return Err(DecodeError::Truncated {
            kind: 0,
            what: "header",
            needed: HEADER_LEN,
            available: buf.len(),
        });
    };
    if buf.len() != len {
        return Err(DecodeError::BadLength {
            kind,
            length: u16::try_from(buf.len()).unwrap_or(u16::MAX),
        });
    }
    let mut r = Reader {
        buf: &buf[HEADER_LEN..],
        kind,
    };
    match kind {
        MSG_OPEN => decode_open(&mut r).map(Message::Open),
        MSG_UPDATE => decode_update(&mut r, ctx).map(Message::Update),
        MSG_NOTIFICATION => Ok(Message::Notification(Notification {
            code: r.u8("notification code")?,
            subcode: r.u8("notification subcode")?,
            data: r.buf.to_vec(),
        })),
        MSG_KEEPALIVE => Ok(Message::Keepalive),
        MSG_ROUTE_REFRESH => {
            let afi = r.u16("afi")?;
            let subtype = match r.u8("subtype")? {
                1 => RefreshSubtype::Begin,
                2 => RefreshSubtype::End,
                // RFC 7313: other values are ignored; treat as a normal refresh.
                _ => RefreshSubtype::Normal,
            };
            let safi = r.u8("safi")?;
            Ok(Message::RouteRefresh(RouteRefresh {
                family: Family { afi, safi },
                subtype,
            }))
        }
        _ => Err(DecodeError::BadType { kind }),
    }
}

fn decode_open(r: &mut Reader<'_>) -> Result<Open, DecodeError> {
    let version = r.u8("version")?;
    if version != 4 {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let my_as = r.u16("my AS")?;
    let hold_time = r.u16("hold time")?;
    if hold_time == 1 || hold_time == 2 {
        return Err(DecodeError::UnacceptableHoldTime { hold_time });
    }
    let id = r.take(4, "BGP identifier")?;
    let router_id = Ipv4Addr::new(id[0], id[1], id[2], id[3]);
    if router_id.is_unspecified() {
        return Err(DecodeError::BadBgpId { id: router_id });
    }
    let opt_len = usize::from(r.u8("optional parameters length")?);
    if r.buf.len() != opt_len {
        return Err(DecodeError::BadLength {
            kind: MSG_OPEN,
            length: u16::try_from(HEADER_LEN + 10 + r.buf.len()).unwrap_or(u16::MAX),
        });
    }
    let mut capabilities = Vec::new();
    while !r.is_empty() {
        let ptype = r.u8("parameter type")?;
        let plen = usize::from(r.u8("parameter length")?);
        let body = r.take(plen, "parameter value")?;
        if ptype != 2 {
            return Err(DecodeError::UnsupportedOptionalParameter { param: ptype });
        }
        let mut pr = Reader {
            buf: body,
            kind: MSG_OPEN,
        };
        while !pr.is_empty() {
            let code = pr.u8("capability code")?;
            let clen = usize::from(pr.u8("capability length")?);
            let data = pr.take(clen, "capability value")?;
            capabilities.push(decode_capability(code, data)?);
        }
    }
    Ok(Open {
        my_as,
        hold_time,
        router_id,
        capabilities,
    })
}

fn decode_capability(code: u8, data: &[u8]) -> Result<Capability, DecodeError> {
    let bad = |reason| DecodeError::BadCapability { code, reason };
    Ok(match code {
        1 => {
            if data.len() != 4 {
                return Err(bad("multiprotocol capability must be 4 bytes"));
            }
            Capability::Multiprotocol(Family {
                afi: u16::from_be_bytes([data[0], data[1]]),
                safi: data[3],
            })
        }
        2 => {
            if !data.is_empty() {
                return Err(bad("route refresh capability must be empty"));
            }
            Capability::RouteRefresh
        }
        64 => {
            if data.len() < 2 || !(data.len() - 2).is_multiple_of(4) {
                return Err(bad("graceful restart length must be 2 + 4n"));
            }
            let head = u16::from_be_bytes([data[0], data[1]]);
            let families = data[2..]
                .chunks_exact(4)
                .map(|c| {
                    (
                        Family {
                            afi: u16::from_be_bytes([c[0], c[1]]),
                            safi: c[2],
                        },
                        c[3] & 0x80 != 0,
                    )
                })
                .collect();
            Capability::GracefulRestart(GracefulRestart {
                restarting: head & 0x8000 != 0,
                restart_time: head & 0x0fff,
                families,
            })
        }
        65 => {
            if data.len() != 4 {
                return Err(bad("4-octet AS capability must be 4 bytes"));
            }
            Capability::FourOctetAs(u32::from_be_bytes([data[0], data[1], data[2], data[3]]))
        }
        70 => {
            if !data.is_empty() {
                return Err(bad("enhanced route refresh capability must be empty"));
            }
            Capability::EnhancedRouteRefresh
        }
        _ => Capability::Unknown {
            code,
            data: data.to_vec(),
        },
    })
}

fn decode_prefixes(mut buf: &[u8], family: Family) -> Result<Vec<IpNet>, DecodeError> {
    let max = if family.afi == 2 { 128 } else { 32 };
    let mut out = Vec::new();
    while let Some((&len, rest)) = buf.split_first() {
        if len > max {
            return Err(DecodeError::InvalidNetwork { length: len });
        }
        let n = usize::from(len).div_ceil(8);
        if rest.len() < n {
            return Err(DecodeError::MalformedAttributeList {
                reason: "prefix runs past the end of its field",
            });
        }
        let net = if family.afi == 2 {
            let mut b = [0u8; 16];
            b[..n].copy_from_slice(&rest[..n]);
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(b), len)
                    .map_err(|_| DecodeError::InvalidNetwork { length: len })?
                    .trunc(),
            )
        } else {
            let mut b = [0u8; 4];
            b[..n].copy_from_slice(&rest[..n]);
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(b), len)
                    .map_err(|_| DecodeError::InvalidNetwork { length: len })?
                    .trunc(),
            )
        };
        out.push(net);
        buf = &rest[n..];
    }
    Ok(out)
}

fn v4_only(nets: Vec<IpNet>) -> Vec<Ipv4Net> {
    nets.into_iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
        .collect()
}

fn decode_update(r: &mut Reader<'_>, ctx: Ctx) -> Result<Update, DecodeError> {
    let wlen = usize::from(r.u16("withdrawn routes length")?);
    let wbuf = r.take(wlen, "withdrawn routes")?;
    let withdrawn = v4_only(decode_prefixes(wbuf, Family::IPV4_UNICAST)?);
    let alen = usize::from(r.u16("path attributes length")?);
    let abuf = r.take(alen, "path attributes")?;
    let nlri = v4_only(decode_prefixes(r.buf, Family::IPV4_UNICAST)?);
    let attributes = decode_attributes(abuf, ctx)?;
    // RFC 4271 section 6.3: with NLRI, ORIGIN, AS_PATH and NEXT_HOP are mandatory; with
    // MP_REACH only, ORIGIN and AS_PATH are.
    let has = |code| attributes.iter().any(|a| a.code() == code);
    let mp_reach = has(attr_code::MP_REACH);
    if !nlri.is_empty() || mp_reach {
        for code in [attr_code::ORIGIN, attr_code::AS_PATH] {
            if !has(code) {
                return Err(DecodeError::MissingWellKnown { code });
            }
        }
    }
    if !nlri.is_empty() && !has(attr_code::NEXT_HOP) {
        return Err(DecodeError::MissingWellKnown {
            code: attr_code::NEXT_HOP,
        });
    }
    Ok(Update {
        withdrawn,
        attributes,
        nlri,
    })
}

fn decode_as_path(data: &[u8], width: usize) -> Result<AsPath, DecodeError> {
    let mut r = Reader {
        buf: data,
        kind: MSG_UPDATE,
    };
    let mut segments = Vec::new();
    while !r.is_empty() {
        let kind = match r
            .u8("segment type")
            .map_err(|_| DecodeError::MalformedAsPath {
                reason: "truncated segment",
            })? {
            1 => SegmentKind::Set,
            2 => SegmentKind::Sequence,
            3 => SegmentKind::ConfedSequence,
            4 => SegmentKind::ConfedSet,
            _ => {
                return Err(DecodeError::MalformedAsPath {
                    reason: "unknown segment type",
                });
            }
        };
        let count =
            usize::from(
                r.u8("segment length")
                    .map_err(|_| DecodeError::MalformedAsPath {
                        reason: "truncated segment",
                    })?,
            );
        if count == 0 {
            return Err(DecodeError::MalformedAsPath {
                reason: "empty segment",
            });
        }
        let body = r
            .take(count * width, "segment")
            .map_err(|_| DecodeError::MalformedAsPath {
                reason: "segment runs past the attribute",
            })?;
        let asns = body
            .chunks_exact(width)
            .map(|c| {
                if width == 4 {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from(u16::from_be_bytes([c[0], c[1]]))
                }
            })
            .collect();
        segments.push(Segment { kind, asns });
    }
    Ok(AsPath { segments })
}

fn decode_attributes(mut buf: &[u8], ctx: Ctx) -> Result<Vec<Attribute>, DecodeError> {
    let mut out: Vec<Attribute> = Vec::new();
    let mut seen = [false; 256];
    while !buf.is_empty() {
        if buf.len() < 3 {
            return Err(DecodeError::MalformedAttributeList {
                reason: "attribute header truncated",
            });
        }
        let flags = buf[0];
        let code = buf[1];
        let (len, hdr) = if flags & FLAG_EXTENDED != 0 {
            if buf.len() < 4 {
                return Err(DecodeError::MalformedAttributeList {
                    reason: "attribute header truncated",
                });
            }
            (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        } else {
            (usize::from(buf[2]), 3)
        };
        if buf.len() < hdr + len {
            return Err(DecodeError::AttributeLength {
                code,
                length: len,
                raw: buf.to_vec(),
            });
        }
        let raw = &buf[..hdr + len];
        let data = &buf[hdr..hdr + len];
        buf = &buf[hdr + len..];
        if seen[usize::from(code)] {
            return Err(DecodeError::DuplicateAttribute { code });
        }
        seen[usize::from(code)] = true;
        if let Some(expect) = expected_flags(code) {
            // Partial may only be set on optional transitive attributes.
            let mask = FLAG_OPTIONAL | FLAG_TRANSITIVE;
            let partial_ok = expect == FLAG_OPTIONAL | FLAG_TRANSITIVE || flags & FLAG_PARTIAL == 0;
            if flags & mask != expect || !partial_ok {
                return Err(DecodeError::AttributeFlags {
                    code,
                    flags,
                    raw: raw.to_vec(),
                });
            }
        }
        let length_err = || DecodeError::AttributeLength {
            code,
            length: len,
            raw: raw.to_vec(),
        };
        let u32_at = |d: &[u8]| u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        use attr_code::*;
        let attr = match code {
            ORIGIN => {
                if len != 1 {
                    return Err(length_err());
                }
                Attribute::Origin(match data[0] {
                    0 => Origin::Igp,
                    1 => Origin::Egp,
                    2 => Origin::Incomplete,
                    value => {
                        return Err(DecodeError::InvalidOrigin {
                            value,
                            raw: raw.to_vec(),
                        });
                    }
                })
            }
            AS_PATH => {
                Attribute::AsPath(decode_as_path(data, if ctx.four_octet_as { 4 } else { 2 })?)
            }
            AS4_PATH => Attribute::As4Path(decode_as_path(data, 4)?),
            NEXT_HOP => {
                if len != 4 {
                    return Err(length_err());
                }
                let addr = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
                if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
                    return Err(DecodeError::InvalidNextHop {
                        addr,
                        raw: raw.to_vec(),
                    });
                }
                Attribute::NextHop(addr)
            }
            MED | LOCAL_PREF => {
                if len != 4 {
                    return Err(length_err());
                }
                if code == MED {
                    Attribute::Med(u32_at(data))
                } else {
                    Attribute::LocalPref(u32_at(data))
                }
            }
            ATOMIC_AGGREGATE => {
                if len != 0 {
                    return Err(length_err());
                }
                Attribute::AtomicAggregate
            }
            COMMUNITIES => {
                if len % 4 != 0 {
                    return Err(length_err());
                }
                Attribute::Communities(data.chunks_exact(4).map(u32_at).collect())
            }
            ORIGINATOR_ID => {
                if len != 4 {
                    return Err(length_err());
                }
                Attribute::OriginatorId(Ipv4Addr::new(data[0], data[1], data[2], data[3]))
            }
            CLUSTER_LIST => {
                if len % 4 != 0 {
                    return Err(length_err());
                }
                Attribute::ClusterList(
                    data.chunks_exact(4)
                        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                        .collect(),
                )
            }
            LARGE_COMMUNITIES => {
                if len % 12 != 0 || len == 0 {
                    return Err(length_err());
                }
                Attribute::LargeCommunities(
                    data.chunks_exact(12)
                        .map(|c| LargeCommunity {
                            global: u32_at(&c[0..4]),
                            local1: u32_at(&c[4..8]),
                            local2: u32_at(&c[8..12]),
                        })
                        .collect(),
                )
            }
            MP_REACH => decode_mp_reach(data, raw)?,
            MP_UNREACH => {
                if len < 3 {
                    return Err(length_err());
                }
                let family = Family {
                    afi: u16::from_be_bytes([data[0], data[1]]),
                    safi: data[2],
                };
                let withdrawn = if is_supported(family) {
                    decode_prefixes(&data[3..], family)?
                } else {
                    Vec::new()
                };
                Attribute::MpUnreach { family, withdrawn }
            }
            _ => {
                if flags & FLAG_OPTIONAL == 0 {
                    return Err(DecodeError::UnrecognizedWellKnown {
                        code,
                        raw: raw.to_vec(),
                    });
                }
                Attribute::Unknown {
                    flags: flags & !FLAG_EXTENDED,
                    code,
                    data: data.to_vec(),
                }
            }
        };
        out.push(attr);
    }
    Ok(out)
}

fn is_supported(f: Family) -> bool {
    f == Family::IPV4_UNICAST || f == Family::IPV6_UNICAST
}

fn decode_mp_reach(data: &[u8], raw: &[u8]) -> Result<Attribute, DecodeError> {
    let length_err = || DecodeError::AttributeLength {
        code: attr_code::MP_REACH,
        length: data.len(),
        raw: raw.to_vec(),
    };
    if data.len() < 5 {
        return Err(length_err());
    }
    let family = Family {
        afi: u16::from_be_bytes([data[0], data[1]]),
        safi: data[2],
    };
    let nh_len = usize::from(data[3]);
    if data.len() < 4 + nh_len + 1 {
        return Err(length_err());
    }
    let nh = &data[4..4 + nh_len];
    let bad_nh = || DecodeError::BadMpNextHop {
        afi: family.afi,
        length: nh_len,
        raw: raw.to_vec(),
    };
    let v6 = |b: &[u8]| {
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ipv6Addr::from(a)
    };
    let next_hop = match (family.afi, nh_len) {
        (1, 4) => MpNextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        (2, 16) => MpNextHop::V6 {
            global: v6(nh),
            link_local: None,
        },
        (2, 32) => MpNextHop::V6 {
            global: v6(&nh[..16]),
            link_local: Some(v6(&nh[16..])),
        },
        _ => return Err(bad_nh()),
    };
    // One reserved byte (RFC 4760: formerly SNPA count), then NLRI.
    let nlri_buf = &data[4 + nh_len + 1..];
    let nlri = if is_supported(family) {
        decode_prefixes(nlri_buf, family)?
    } else {
        Vec::new()
    };
    Ok(Attribute::MpReach {
        family,
        next_hop,
        nlri,
    })
}

// ---------------------------------------------------------------- encoding

fn put_prefix(out: &mut Vec<u8>, net: &IpNet) {
    let len = net.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    match net {
        IpNet::V4(n4) => out.extend_from_slice(&n4.network().octets()[..n]),
        IpNet::V6(n6) => out.extend_from_slice(&n6.network().octets()[..n]),
    }
}

/// Encoded size of one prefix in NLRI.
pub fn prefix_wire_len(net: &IpNet) -> usize {
    1 + usize::from(net.prefix_len()).div_ceil(8)
}

fn put_as_path(out: &mut Vec<u8>, path: &AsPath, width: usize) {
    for seg in &path.segments {
        // Segments longer than 255 are split (the decoder never produces them).
        for chunk in seg.asns.chunks(255) {
            out.push(seg.kind as u8);
            out.push(chunk.len() as u8);
            for a in chunk {
                if width == 4 {
                    out.extend_from_slice(&a.to_be_bytes());
                } else {
                    let two = u16::try_from(*a).unwrap_or(AS_TRANS);
                    out.extend_from_slice(&two.to_be_bytes());
                }
            }
        }
    }
}

fn attribute_body(attr: &Attribute, ctx: Ctx) -> Vec<u8> {
    let mut d = Vec::new();
    match attr {
        Attribute::Origin(o) => d.push(*o as u8),
        Attribute::AsPath(p) => put_as_path(&mut d, p, if ctx.four_octet_as { 4 } else { 2 }),
        Attribute::As4Path(p) => put_as_path(&mut d, p, 4),
        Attribute::NextHop(a) | Attribute::OriginatorId(a) => d.extend_from_slice(&a.octets()),
        Attribute::Med(v) | Attribute::LocalPref(v) => d.extend_from_slice(&v.to_be_bytes()),
        Attribute::AtomicAggregate => {}
        Attribute::Communities(cs) => cs
            .iter()
            .for_each(|c| d.extend_from_slice(&c.to_be_bytes())),
        Attribute::ClusterList(ids) => ids.iter().for_each(|c| d.extend_from_slice(&c.octets())),
        Attribute::LargeCommunities(cs) => {
            for c in cs {
                d.extend_from_slice(&c.global.to_be_bytes());
                d.extend_from_slice(&c.local1.to_be_bytes());
                d.extend_from_slice(&c.local2.to_be_bytes());
            }
        }
        Attribute::MpReach {
            family,
            next_hop,
            nlri,
        } => {
            d.extend_from_slice(&family.afi.to_be_bytes());
            d.push(family.safi);
            match next_hop {
                MpNextHop::V4(a) => {
                    d.push(4);
                    d.extend_from_slice(&a.octets());
                }
                MpNextHop::V6 { global, link_local } => {
                    d.push(if link_local.is_some() { 32 } else { 16 });
                    d.extend_from_slice(&global.octets());
                    if let Some(ll) = link_local {
                        d.extend_from_slice(&ll.octets());
                    }
                }
            }
            d.push(0);
            nlri.iter().for_each(|n| put_prefix(&mut d, n));
        }
        Attribute::MpUnreach { family, withdrawn } => {
            d.extend_from_slice(&family.afi.to_be_bytes());
            d.push(family.safi);
            withdrawn.iter().for_each(|n| put_prefix(&mut d, n));
        }
        Attribute::Unknown { data, .. } => d.extend_from_slice(data),
    }
    d
}

fn put_attribute(out: &mut Vec<u8>, attr: &Attribute, ctx: Ctx) -> Result<(), EncodeError> {
    let body = attribute_body(attr, ctx);
    let flags = attr.flags();
    if body.len() > 255 {
        let len = u16::try_from(body.len()).map_err(|_| EncodeError::FieldTooLong {
            what: "path attribute",
            length: body.len(),
        })?;
        out.extend_from_slice(&[flags | FLAG_EXTENDED, attr.code()]);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, attr.code(), body.len() as u8]);
    }
    out.extend_from_slice(&body);
    Ok(())
}

/// Encodes one message with its header.
pub fn encode(msg: &Message, ctx: Ctx) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![0xffu8; 16];
    out.extend_from_slice(&[0, 0, 0]);
    let kind = match msg {
        Message::Open(o) => {
            out.push(4);
            out.extend_from_slice(&o.my_as.to_be_bytes());
            out.extend_from_slice(&o.hold_time.to_be_bytes());
            out.extend_from_slice(&o.router_id.octets());
            let mut params = Vec::new();
            // One capability per optional parameter: every implementation accepts that form.
            for cap in &o.capabilities {
                let body = capability_body(cap);
                let len = u8::try_from(body.len()).map_err(|_| EncodeError::FieldTooLong {
                    what: "capability",
                    length: body.len(),
                })?;
                params.extend_from_slice(&[2, len + 2, capability_code(cap), len]);
                params.extend_from_slice(&body);
            }
            let plen = u8::try_from(params.len()).map_err(|_| EncodeError::FieldTooLong {
                what: "optional parameters",
                length: params.len(),
            })?;
            out.push(plen);
            out.extend_from_slice(&params);
            MSG_OPEN
        }
        Message::Update(u) => {
            let mut w = Vec::new();
            u.withdrawn
                .iter()
                .for_each(|n| put_prefix(&mut w, &IpNet::V4(*n)));
            let mut a = Vec::new();
            for attr in &u.attributes {
                put_attribute(&mut a, attr, ctx)?;
            }
            for (what, part) in [("withdrawn routes", &w), ("path attributes", &a)] {
                let len = u16::try_from(part.len()).map_err(|_| EncodeError::FieldTooLong {
                    what,
                    length: part.len(),
                })?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(part);
            }
            u.nlri
                .iter()
                .for_each(|n| put_prefix(&mut out, &IpNet::V4(*n)));
            MSG_UPDATE
        }
        Message::Notification(n) => {
            out.push(n.code);
            out.push(n.subcode);
            out.extend_from_slice(&n.data);
            MSG_NOTIFICATION
        }
        Message::Keepalive => MSG_KEEPALIVE,
        Message::RouteRefresh(rr) => {
            out.extend_from_slice(&rr.family.afi.to_be_bytes());
            out.push(match rr.subtype {
                RefreshSubtype::Normal => 0,
                RefreshSubtype::Begin => 1,
                RefreshSubtype::End => 2,
            });
            out.push(rr.family.safi);
            MSG_ROUTE_REFRESH
        }
    };
    if out.len() > MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLong { length: out.len() });
    }
    out[18] = kind;
    let len = out.len() as u16;
    out[16..18].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

fn capability_code(cap: &Capability) -> u8 {
    match cap {
        Capability::Multiprotocol(_) => 1,
        Capability::RouteRefresh => 2,
        Capability::GracefulRestart(_) => 64,
        Capability::FourOctetAs(_) => 65,
        Capability::EnhancedRouteRefresh => 70,
        Capability::Unknown { code, .. } => *code,
    }
}

fn capability_body(cap: &Capability) -> Vec<u8> {
    let mut d = Vec::new();
    match cap {
        Capability::Multiprotocol(f) => {
            d.extend_from_slice(&f.afi.to_be_bytes());
            d.push(0);
            d.push(f.safi);
        }
        Capability::RouteRefresh | Capability::EnhancedRouteRefresh => {}
        Capability::GracefulRestart(gr) => {
            let mut head = gr.restart_time & 0x0fff;
            if gr.restarting {
                head |= 0x8000;
            }
            d.extend_from_slice(&head.to_be_bytes());
            for (f, fwd) in &gr.families {
                d.extend_from_slice(&f.afi.to_be_bytes());
                d.push(f.safi);
                d.push(if *fwd { 0x80 } else { 0 });
            }
        }
        Capability::FourOctetAs(a) => d.extend_from_slice(&a.to_be_bytes()),
        Capability::Unknown { data, .. } => d.extend_from_slice(data),
    }
    d
}

/// Encoded size of an UPDATE carrying only `attributes` (no prefixes), for packing NLRI.
pub fn update_overhead(attributes: &[Attribute], ctx: Ctx) -> usize {
    let mut a = Vec::new();
    for attr in attributes {
        // Cannot fail for attribute bodies below 64 KiB, which is all we build.
        let _ = put_attribute(&mut a, attr, ctx);
    }
    HEADER_LEN + 4 + a.len()
}
