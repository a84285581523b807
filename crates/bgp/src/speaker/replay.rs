//! Replay fixtures for the sans-I/O core: a readable JSON form of its events and actions, the
//! recorder that writes them from a live speaker, and the player the replay tests use.
//!
//! A fixture is a JSON-lines file (`crates/bgp/tests/replay/*.jsonl`). Each line is one of
//! - `{"at": 1.5, "in": EVENT}`: an event the core handles at `at` seconds (default 0);
//! - `{"out": ACTION}`: an action the event before it must produce, in order;
//! - a comment (`#` first) or blank.
//!
//! Every event must produce exactly the `out` lines that follow it. UPDATEs appear as the
//! routes they carry (prefixes, next hop, attributes), not as bytes, so a fixture can be
//! written and read by hand; what a message looks like on the wire is `wire`'s and the codec's
//! tests' business.
//!
//! Recording: a speaker built with the `record` feature and run with
//! `CALICO_BGP_RECORD=<dir>` writes every core event with its actions to
//! `<dir>/<pid>.jsonl` (see `tests/replay/README.md`).
//!
//! Lossy on purpose, and said here so nobody relies on it: a NOTIFICATION in a down reason
//! keeps its code and subcode but not its data; an UPDATE carrying both an IPv4 NEXT_HOP and an
//! MP_REACH next hop (no peer we know sends that) is recorded with the MP_REACH one.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::config::SpeakerConfig;
use super::core::{Action, CoreTimer, Event, RouteEvent, SessionEvent, SessionSpec};
use crate::codec::{
    AsPath, Attribute, Capability, Family, GracefulRestart, LargeCommunity, Message, MpNextHop,
    Notification, Origin, RefreshSubtype, RouteRefresh, Segment, SegmentKind, Update,
};
use crate::fsm::{DownReason, FsmConfig, Negotiated, State};
use crate::rib::PathAttrs;

/// One line of a fixture.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<f64>,
    #[serde(rename = "in", default, skip_serializing_if = "Option::is_none")]
    pub input: Option<EventRec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<ActionRec>,
}

/// An [`Event`] as a fixture writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub(crate) enum EventRec {
    Config(Box<SpeakerConfig>),
    State {
        peer: IpAddr,
        #[serde(rename = "gen", default = "one")]
        generation: u64,
        state: String,
    },
    Established {
        peer: IpAddr,
        #[serde(rename = "gen", default = "one")]
        generation: u64,
        local: IpAddr,
        #[serde(flatten)]
        negotiated: NegotiatedRec,
    },
    Down {
        peer: IpAddr,
        #[serde(rename = "gen", default = "one")]
        generation: u64,
        reason: ReasonRec,
    },
    Update {
        peer: IpAddr,
        #[serde(rename = "gen", default = "one")]
        generation: u64,
        #[serde(flatten)]
        update: UpdateRec,
    },
    EndOfRib {
        peer: IpAddr,
        #[serde(rename = "gen", default = "one")]
        generation: u64,
        family: String,
    },
    RouteRefresh {
        peer: IpAddr,
        #[serde(rename = "gen", default = "one")]
        generation: u64,
        family: String,
        /// `normal` (default), `begin` or `end`.
        #[serde(default = "normal")]
        subtype: String,
    },
    Timer(TimerRec),
}

fn one() -> u64 {
    1
}

fn normal() -> String {
    "normal".into()
}

/// What both OPENs agreed on; defaults are what two modern speakers agree on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NegotiatedRec {
    pub peer_as: u32,
    pub peer_router_id: Ipv4Addr,
    #[serde(default = "ninety")]
    pub hold_time: u16,
    #[serde(default = "thirty")]
    pub keepalive: u16,
    #[serde(default = "yes")]
    pub four_octet_as: bool,
    pub families: Vec<String>,
    #[serde(default = "yes")]
    pub route_refresh: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GrRec>,
}

fn ninety() -> u16 {
    90
}

fn thirty() -> u16 {
    30
}

fn yes() -> bool {
    true
}

/// A graceful-restart capability: restart time and, per family, whether forwarding state was
/// kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrRec {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarting: bool,
    pub restart_time: u16,
    pub families: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum ReasonRec {
    Stopped,
    ConnectionClosed,
    HoldTimerExpired,
    NotificationReceived { code: u8, subcode: u8 },
    NotificationSent { code: u8, subcode: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub(crate) enum TimerRec {
    SyncDeadline,
    Stale {
        peer: IpAddr,
        #[serde(rename = "gen", default = "one")]
        generation: u64,
    },
}

/// The routes of one UPDATE: what it withdraws and what it announces with which attributes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UpdateRec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdraw: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub announce: Vec<IpNet>,
    /// `igp` (default), `egp` or `incomplete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// ASNs separated by spaces; `{a b}` is an AS_SET, `(a b)` a confederation sequence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub as_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_local: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub atomic_aggregate: bool,
    /// `asn:value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// `global:local1:local2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_communities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originator_id: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_list: Vec<Ipv4Addr>,
    /// Attributes passed on without being understood: `flags/code/hex`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other: Vec<String>,
}

/// An [`Action`] as a fixture writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub(crate) enum ActionRec {
    Route(RouteEvent),
    Listen(SocketAddr),
    ListenerKeys(BTreeMap<IpAddr, String>),
    StartSession(Box<SessionRec>),
    StopSession { peer: IpAddr, subcode: u8 },
    Send { peer: IpAddr, messages: Vec<MsgRec> },
    SetTimer { timer: TimerRec, secs: u64 },
    CancelTimer(TimerRec),
}

/// A session to start: the peer and what we announce in our OPEN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionRec {
    pub peer: IpAddr,
    #[serde(rename = "gen")]
    pub generation: u64,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    pub hold_time: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passive: bool,
    /// Seconds.
    pub connect_retry: u64,
    pub connect_retry_max: u64,
    pub families: Vec<String>,
    pub route_refresh: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GrRec>,
    /// Any other capability, in Debug form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_capabilities: Vec<String>,
}

/// A message the core sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum MsgRec {
    EndOfRib(String),
    RouteRefresh(String),
    Update(Box<UpdateRec>),
    /// Anything else, in Debug form (the core sends nothing else today).
    Other(String),
}

// ------------------------------------------------------------------ families, paths

pub(crate) fn family_name(f: Family) -> String {
    match f {
        Family::IPV4_UNICAST => "ipv4".into(),
        Family::IPV6_UNICAST => "ipv6".into(),
        Family { afi, safi } => format!("{afi}/{safi}"),
    }
}

pub(crate) fn parse_family(s: &str) -> Result<Family, String> {
    match s {
        "ipv4" => Ok(Family::IPV4_UNICAST),
        "ipv6" => Ok(Family::IPV6_UNICAST),
        other => {
            let (afi, safi) = other
                .split_once('/')
                .ok_or_else(|| format!("family {other:?}: want ipv4, ipv6 or afi/safi"))?;
            Ok(Family {
                afi: afi.parse().map_err(|e| format!("family {other:?}: {e}"))?,
                safi: safi.parse().map_err(|e| format!("family {other:?}: {e}"))?,
            })
        }
    }
}

fn format_as_path(p: &AsPath) -> String {
    p.segments
        .iter()
        .map(|s| {
            let asns = s
                .asns
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            match s.kind {
                SegmentKind::Sequence => asns,
                SegmentKind::Set => format!("{{{asns}}}"),
                SegmentKind::ConfedSequence => format!("({asns})"),
                SegmentKind::ConfedSet => format!("[{asns}]"),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_as_path(s: &str) -> Result<AsPath, String> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut kind = SegmentKind::Sequence;
    let mut open = false;
    let mut cur: Vec<u32> = Vec::new();
    let mut num = String::new();
    let flush_num = |num: &mut String, cur: &mut Vec<u32>| -> Result<(), String> {
        if !num.is_empty() {
            cur.push(num.parse().map_err(|e| format!("AS path {s:?}: {e}"))?);
            num.clear();
        }
        Ok(())
    };
    let push = |kind: SegmentKind, asns: Vec<u32>, segments: &mut Vec<Segment>| {
        if asns.is_empty() {
            return;
        }
        match segments.last_mut() {
            Some(last) if last.kind == kind && kind == SegmentKind::Sequence => {
                last.asns.extend(asns)
            }
            _ => segments.push(Segment { kind, asns }),
        }
    };
    for c in s.chars() {
        match c {
            '0'..='9' => num.push(c),
            ' ' => flush_num(&mut num, &mut cur)?,
            '{' | '(' | '[' if !open => {
                flush_num(&mut num, &mut cur)?;
                push(kind, std::mem::take(&mut cur), &mut segments);
                kind = match c {
                    '{' => SegmentKind::Set,
                    '(' => SegmentKind::ConfedSequence,
                    _ => SegmentKind::ConfedSet,
                };
                open = true;
            }
            '}' | ')' | ']' if open => {
                flush_num(&mut num, &mut cur)?;
                push(kind, std::mem::take(&mut cur), &mut segments);
                kind = SegmentKind::Sequence;
                open = false;
            }
            other => return Err(format!("AS path {s:?}: unexpected {other:?}")),
        }
    }
    if open {
        return Err(format!("AS path {s:?}: unclosed bracket"));
    }
    flush_num(&mut num, &mut cur)?;
    push(kind, cur, &mut segments);
    Ok(AsPath { segments })
}

fn origin_name(o: Origin) -> Option<String> {
    match o {
        Origin::Igp => None,
        Origin::Egp => Some("egp".into()),
        Origin::Incomplete => Some("incomplete".into()),
    }
}

fn parse_origin(s: Option<&str>) -> Result<Origin, String> {
    match s {
        None | Some("igp") => Ok(Origin::Igp),
        Some("egp") => Ok(Origin::Egp),
        Some("incomplete") => Ok(Origin::Incomplete),
        Some(other) => Err(format!("origin {other:?}: want igp, egp or incomplete")),
    }
}

fn parse_u32s<const N: usize>(s: &str, what: &str) -> Result<[u32; N], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != N {
        return Err(format!("{what} {s:?}: want {N} numbers separated by ':'"));
    }
    let mut out = [0u32; N];
    for (o, p) in out.iter_mut().zip(parts) {
        *o = p.parse().map_err(|e| format!("{what} {s:?}: {e}"))?;
    }
    Ok(out)
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("hex {s:?}: odd length"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("hex {s:?}: {e}")))
        .collect()
}

impl UpdateRec {
    /// The attributes part, from the form the RIB keeps.
    fn with_attrs(mut self, a: &PathAttrs) -> UpdateRec {
        self.origin = origin_name(a.origin);
        self.as_path = format_as_path(&a.as_path);
        self.next_hop = a.next_hop;
        self.link_local = a.link_local;
        self.med = a.med;
        self.local_pref = a.local_pref;
        self.atomic_aggregate = a.atomic_aggregate;
        self.communities = a
            .communities
            .iter()
            .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
            .collect();
        self.large_communities = a
            .large_communities
            .iter()
            .map(|c| format!("{}:{}:{}", c.global, c.local1, c.local2))
            .collect();
        self.originator_id = a.originator_id;
        self.cluster_list = a.cluster_list.clone();
        self.other = a
            .other
            .iter()
            .filter_map(|o| match o {
                Attribute::Unknown { flags, code, data } => {
                    Some(format!("{flags}/{code}/{}", hex(data)))
                }
                _ => None,
            })
            .collect();
        self
    }

    /// What an UPDATE carries, read the way the core reads it.
    pub(crate) fn from_update(u: &Update) -> UpdateRec {
        let mut a = PathAttrs::from_attributes(&u.attributes);
        let mut rec = UpdateRec {
            withdraw: u.withdrawn.iter().map(|n| IpNet::V4(*n)).collect(),
            announce: u.nlri.iter().map(|n| IpNet::V4(*n)).collect(),
            ..UpdateRec::default()
        };
        for attr in &u.attributes {
            match attr {
                Attribute::MpReach { next_hop, nlri, .. } => {
                    match next_hop {
                        MpNextHop::V4(v4) => a.next_hop = Some(IpAddr::V4(*v4)),
                        MpNextHop::V6 { global, link_local } => {
                            a.next_hop = Some(IpAddr::V6(*global));
                            a.link_local = *link_local;
                        }
                    }
                    rec.announce.extend(nlri.iter().copied());
                }
                Attribute::MpUnreach { withdrawn, .. } => {
                    rec.withdraw.extend(withdrawn.iter().copied())
                }
                _ => {}
            }
        }
        if rec.announce.is_empty() {
            rec
        } else {
            rec.with_attrs(&a)
        }
    }

    /// An UPDATE carrying these routes: IPv4 in the classic fields, IPv6 in MP_REACH and
    /// MP_UNREACH, as every peer we interoperate with sends them.
    pub(crate) fn to_update(&self) -> Result<Update, String> {
        let v4 = |n: &IpNet| match n {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        };
        let v6: Vec<IpNet> = self
            .announce
            .iter()
            .filter(|n| v4(n).is_none())
            .copied()
            .collect();
        let v6_withdrawn: Vec<IpNet> = self
            .withdraw
            .iter()
            .filter(|n| v4(n).is_none())
            .copied()
            .collect();
        let mut u = Update {
            withdrawn: self.withdraw.iter().filter_map(v4).collect(),
            nlri: self.announce.iter().filter_map(v4).collect(),
            attributes: Vec::new(),
        };
        if !self.announce.is_empty() {
            let attrs = &mut u.attributes;
            attrs.push(Attribute::Origin(parse_origin(self.origin.as_deref())?));
            attrs.push(Attribute::AsPath(parse_as_path(&self.as_path)?));
            if !u.nlri.is_empty()
                && let Some(IpAddr::V4(nh)) = self.next_hop
            {
                attrs.push(Attribute::NextHop(nh));
            }
            if let Some(m) = self.med {
                attrs.push(Attribute::Med(m));
            }
            if let Some(l) = self.local_pref {
                attrs.push(Attribute::LocalPref(l));
            }
            if self.atomic_aggregate {
                attrs.push(Attribute::AtomicAggregate);
            }
            if !self.communities.is_empty() {
                let c = self
                    .communities
                    .iter()
                    .map(|c| parse_u32s::<2>(c, "community").map(|[a, v]| (a << 16) | v))
                    .collect::<Result<_, _>>()?;
                attrs.push(Attribute::Communities(c));
            }
            if let Some(o) = self.originator_id {
                attrs.push(Attribute::OriginatorId(o));
            }
            if !self.cluster_list.is_empty() {
                attrs.push(Attribute::ClusterList(self.cluster_list.clone()));
            }
            if !self.large_communities.is_empty() {
                let c = self
                    .large_communities
                    .iter()
                    .map(|c| {
                        parse_u32s::<3>(c, "large community").map(|[g, l1, l2]| LargeCommunity {
                            global: g,
                            local1: l1,
                            local2: l2,
                        })
                    })
                    .collect::<Result<_, _>>()?;
                attrs.push(Attribute::LargeCommunities(c));
            }
            for o in &self.other {
                let mut parts = o.splitn(3, '/');
                let (Some(f), Some(c), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(format!("other attribute {o:?}: want flags/code/hex"));
                };
                attrs.push(Attribute::Unknown {
                    flags: f
                        .parse()
                        .map_err(|e| format!("other attribute {o:?}: {e}"))?,
                    code: c
                        .parse()
                        .map_err(|e| format!("other attribute {o:?}: {e}"))?,
                    data: unhex(d)?,
                });
            }
            if !v6.is_empty() {
                let Some(IpAddr::V6(global)) = self.next_hop else {
                    return Err("IPv6 routes need an IPv6 nextHop".into());
                };
                attrs.push(Attribute::MpReach {
                    family: Family::IPV6_UNICAST,
                    next_hop: MpNextHop::V6 {
                        global,
                        link_local: self.link_local,
                    },
                    nlri: v6,
                });
            }
        }
        if !v6_withdrawn.is_empty() {
            u.attributes.push(Attribute::MpUnreach {
                family: Family::IPV6_UNICAST,
                withdrawn: v6_withdrawn,
            });
        }
        Ok(u)
    }
}

// ------------------------------------------------------------------ events

fn state_name(s: State) -> String {
    s.to_string()
}

fn parse_state(s: &str) -> Result<State, String> {
    Ok(match s {
        "Idle" => State::Idle,
        "Connect" => State::Connect,
        "Active" => State::Active,
        "OpenSent" => State::OpenSent,
        "OpenConfirm" => State::OpenConfirm,
        "Established" => State::Established,
        other => return Err(format!("state {other:?}: not an FSM state")),
    })
}

fn gr_rec(gr: &GracefulRestart) -> GrRec {
    GrRec {
        restarting: gr.restarting,
        restart_time: gr.restart_time,
        families: gr
            .families
            .iter()
            .map(|(f, fwd)| (family_name(*f), *fwd))
            .collect(),
    }
}

fn gr_from(rec: &GrRec) -> Result<GracefulRestart, String> {
    Ok(GracefulRestart {
        restarting: rec.restarting,
        restart_time: rec.restart_time,
        families: rec
            .families
            .iter()
            .map(|(f, fwd)| parse_family(f).map(|f| (f, *fwd)))
            .collect::<Result<_, _>>()?,
    })
}

fn families(v: &[Family]) -> Vec<String> {
    v.iter().map(|f| family_name(*f)).collect()
}

fn parse_families(v: &[String]) -> Result<Vec<Family>, String> {
    v.iter().map(|f| parse_family(f)).collect()
}

fn timer_rec(t: CoreTimer) -> TimerRec {
    match t {
        CoreTimer::SyncDeadline => TimerRec::SyncDeadline,
        CoreTimer::Stale { peer, generation } => TimerRec::Stale { peer, generation },
    }
}

fn timer_from(t: TimerRec) -> CoreTimer {
    match t {
        TimerRec::SyncDeadline => CoreTimer::SyncDeadline,
        TimerRec::Stale { peer, generation } => CoreTimer::Stale { peer, generation },
    }
}

impl EventRec {
    pub(crate) fn from_event(e: &Event) -> EventRec {
        match e {
            Event::Config(cfg) => EventRec::Config(cfg.clone()),
            Event::Timer(t) => EventRec::Timer(timer_rec(*t)),
            Event::Session {
                peer,
                generation,
                event,
            } => {
                let (peer, generation) = (*peer, *generation);
                match event {
                    SessionEvent::State(s) => EventRec::State {
                        peer,
                        generation,
                        state: state_name(*s),
                    },
                    SessionEvent::Established {
                        negotiated: n,
                        local,
                    } => EventRec::Established {
                        peer,
                        generation,
                        local: *local,
                        negotiated: NegotiatedRec {
                            peer_as: n.peer_as,
                            peer_router_id: n.peer_router_id,
                            hold_time: n.hold_time,
                            keepalive: n.keepalive,
                            four_octet_as: n.four_octet_as,
                            families: families(&n.families),
                            route_refresh: n.route_refresh,
                            graceful_restart: n.peer_graceful_restart.as_ref().map(gr_rec),
                        },
                    },
                    SessionEvent::Down(r) => EventRec::Down {
                        peer,
                        generation,
                        reason: match r {
                            DownReason::Stopped => ReasonRec::Stopped,
                            DownReason::ConnectionClosed => ReasonRec::ConnectionClosed,
                            DownReason::HoldTimerExpired => ReasonRec::HoldTimerExpired,
                            DownReason::NotificationReceived(n) => {
                                ReasonRec::NotificationReceived {
                                    code: n.code,
                                    subcode: n.subcode,
                                }
                            }
                            DownReason::NotificationSent(n) => ReasonRec::NotificationSent {
                                code: n.code,
                                subcode: n.subcode,
                            },
                        },
                    },
                    SessionEvent::Update(u) => match u.end_of_rib_family() {
                        Some(f) => EventRec::EndOfRib {
                            peer,
                            generation,
                            family: family_name(f),
                        },
                        None => EventRec::Update {
                            peer,
                            generation,
                            update: UpdateRec::from_update(u),
                        },
                    },
                    SessionEvent::RouteRefresh(rr) => EventRec::RouteRefresh {
                        peer,
                        generation,
                        family: family_name(rr.family),
                        subtype: match rr.subtype {
                            RefreshSubtype::Normal => "normal",
                            RefreshSubtype::Begin => "begin",
                            RefreshSubtype::End => "end",
                        }
                        .into(),
                    },
                }
            }
        }
    }

    pub(crate) fn to_event(&self) -> Result<Event, String> {
        let session = |peer: IpAddr, generation: u64, event: SessionEvent| Event::Session {
            peer,
            generation,
            event,
        };
        Ok(match self {
            EventRec::Config(cfg) => Event::Config(cfg.clone()),
            EventRec::Timer(t) => Event::Timer(timer_from(*t)),
            EventRec::State {
                peer,
                generation,
                state,
            } => session(*peer, *generation, SessionEvent::State(parse_state(state)?)),
            EventRec::Established {
                peer,
                generation,
                local,
                negotiated: n,
            } => session(
                *peer,
                *generation,
                SessionEvent::Established {
                    negotiated: Negotiated {
                        peer_as: n.peer_as,
                        peer_router_id: n.peer_router_id,
                        hold_time: n.hold_time,
                        keepalive: n.keepalive,
                        four_octet_as: n.four_octet_as,
                        families: parse_families(&n.families)?,
                        route_refresh: n.route_refresh,
                        peer_graceful_restart: n
                            .graceful_restart
                            .as_ref()
                            .map(gr_from)
                            .transpose()?,
                    },
                    local: *local,
                },
            ),
            EventRec::Down {
                peer,
                generation,
                reason,
            } => session(
                *peer,
                *generation,
                SessionEvent::Down(match reason {
                    ReasonRec::Stopped => DownReason::Stopped,
                    ReasonRec::ConnectionClosed => DownReason::ConnectionClosed,
                    ReasonRec::HoldTimerExpired => DownReason::HoldTimerExpired,
                    ReasonRec::NotificationReceived { code, subcode } => {
                        DownReason::NotificationReceived(Notification::new(*code, *subcode))
                    }
                    ReasonRec::NotificationSent { code, subcode } => {
                        DownReason::NotificationSent(Notification::new(*code, *subcode))
                    }
                }),
            ),
            EventRec::Update {
                peer,
                generation,
                update,
            } => session(
                *peer,
                *generation,
                SessionEvent::Update(update.to_update()?),
            ),
            EventRec::EndOfRib {
                peer,
                generation,
                family,
            } => session(
                *peer,
                *generation,
                SessionEvent::Update(Update::end_of_rib(parse_family(family)?)),
            ),
            EventRec::RouteRefresh {
                peer,
                generation,
                family,
                subtype,
            } => session(
                *peer,
                *generation,
                SessionEvent::RouteRefresh(RouteRefresh {
                    family: parse_family(family)?,
                    subtype: match subtype.as_str() {
                        "normal" => RefreshSubtype::Normal,
                        "begin" => RefreshSubtype::Begin,
                        "end" => RefreshSubtype::End,
                        other => return Err(format!("route refresh subtype {other:?}")),
                    },
                }),
            ),
        })
    }
}

// ------------------------------------------------------------------ actions

fn session_rec(s: &SessionSpec) -> SessionRec {
    let f: &FsmConfig = &s.fsm;
    let mut rec = SessionRec {
        peer: s.peer,
        generation: s.generation,
        port: s.port,
        password: s.password.clone(),
        ttl_security: s.ttl_security,
        local_as: f.local_as,
        remote_as: f.remote_as,
        router_id: f.router_id,
        hold_time: f.hold_time,
        keepalive: f.keepalive,
        passive: f.passive,
        connect_retry: f.connect_retry.as_secs(),
        connect_retry_max: f.connect_retry_max.as_secs(),
        families: Vec::new(),
        route_refresh: false,
        graceful_restart: None,
        other_capabilities: Vec::new(),
    };
    for c in &f.capabilities {
        match c {
            Capability::Multiprotocol(fam) => rec.families.push(family_name(*fam)),
            Capability::RouteRefresh => rec.route_refresh = true,
            Capability::GracefulRestart(gr) => rec.graceful_restart = Some(gr_rec(gr)),
            other => rec.other_capabilities.push(format!("{other:?}")),
        }
    }
    rec
}

fn msg_rec(m: &Message) -> MsgRec {
    match m {
        Message::Update(u) => match u.end_of_rib_family() {
            Some(f) => MsgRec::EndOfRib(family_name(f)),
            None => MsgRec::Update(Box::new(UpdateRec::from_update(u))),
        },
        Message::RouteRefresh(RouteRefresh {
            family,
            subtype: RefreshSubtype::Normal,
        }) => MsgRec::RouteRefresh(family_name(*family)),
        other => MsgRec::Other(format!("{other:?}")),
    }
}

impl ActionRec {
    pub(crate) fn from_action(a: &Action) -> ActionRec {
        match a {
            Action::Route(r) => ActionRec::Route(r.clone()),
            Action::Listen(addr) => ActionRec::Listen(*addr),
            Action::ListenerKeys(k) => ActionRec::ListenerKeys(k.clone()),
            Action::StartSession(s) => ActionRec::StartSession(Box::new(session_rec(s))),
            Action::StopSession { peer, subcode } => ActionRec::StopSession {
                peer: *peer,
                subcode: *subcode,
            },
            Action::Send { peer, messages } => ActionRec::Send {
                peer: *peer,
                messages: messages.iter().map(msg_rec).collect(),
            },
            Action::SetTimer { timer, after } => ActionRec::SetTimer {
                timer: timer_rec(*timer),
                secs: after.as_secs(),
            },
            Action::CancelTimer(t) => ActionRec::CancelTimer(timer_rec(*t)),
        }
    }
}

/// The time of an event `at` seconds into a fixture.
pub(crate) fn time_at(at: Option<f64>) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(at.unwrap_or(0.0).max(0.0))
}

// ------------------------------------------------------------------ recorder

/// Writes every core event and its actions as fixture lines (the `record` feature).
#[cfg(feature = "record")]
pub(crate) struct Recorder {
    file: std::io::BufWriter<std::fs::File>,
    start: std::time::Instant,
}

#[cfg(feature = "record")]
impl Recorder {
    /// A recorder writing to `$CALICO_BGP_RECORD/<pid>.jsonl`, if that variable is set.
    pub(crate) fn from_env() -> Option<Recorder> {
        let dir = std::env::var_os("CALICO_BGP_RECORD")?;
        let path = std::path::Path::new(&dir).join(format!("{}.jsonl", std::process::id()));
        match std::fs::File::create(&path) {
            Ok(f) => {
                tracing::info!(path = %path.display(), "recording core events");
                Some(Recorder {
                    file: std::io::BufWriter::new(f),
                    start: std::time::Instant::now(),
                })
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot record core events");
                None
            }
        }
    }

    pub(crate) fn record(&mut self, event: &EventRec, actions: &[Action]) {
        use std::io::Write;
        let at = (self.start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        let mut lines = vec![Line {
            at: Some(at),
            input: Some(event.clone()),
            out: None,
        }];
        lines.extend(actions.iter().map(|a| Line {
            out: Some(ActionRec::from_action(a)),
            ..Line::default()
        }));
        for l in lines {
            if let Ok(s) = serde_json::to_string(&l) {
                let _ = writeln!(self.file, "{s}");
            }
        }
        let _ = self.file.flush();
    }
}
