//! Many route changes per `sendmsg`, each acknowledged on its own.
//!
//! [`Netlink::apply_route_changes`] encodes replaces and deletes as `RTM_NEWROUTE` /
//! `RTM_DELROUTE` messages, packs up to a socket's worth of them into one datagram, and reads
//! the kernel's acknowledgement of every message (each carries `NLM_F_ACK` and its own
//! sequence number). rtnetlink handles every message of a datagram on its own, in order, and
//! answers each, so one refused route is reported with its prefix and the others still land:
//! there is no transaction to roll back, unlike nf_tables.
//!
//! Why not one request per route: a bulk load of 100,000 BGP routes was one netlink round trip
//! (and one async request through `rtnetlink`) per route; here it is one system call per up to
//! [`MAX_PER_SEND`] routes.
//!
//! The acknowledgements of a datagram are queued by the kernel before `sendmsg` returns
//! (rtnetlink handles a request in the sender's system call), so they must all fit in the
//! socket's receive buffer: the number of messages per datagram is derived from the buffer's
//! size, and a lost acknowledgement (`ENOBUFS`) is reported for its route rather than assumed.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use netlink_packet_core::Emitable;
use netlink_packet_route::route::{RouteMessage, RouteScope, RouteType};

use crate::conn::Netlink;
use crate::netlink_socket::NetlinkSocket;
use crate::route::{Route, RouteError, RouteTarget, route_message};

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
/// In an acknowledgement: the request's payload is not echoed (`NETLINK_CAP_ACK`).
const NLM_F_CAPPED: u16 = 0x100;
/// In an acknowledgement: extended-ack attributes follow (`NETLINK_EXT_ACK`).
const NLM_F_ACK_TLVS: u16 = 0x200;
/// Extended-ack attribute: the kernel's human-readable reason.
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSG_HDRLEN: usize = 16;

/// Most messages in one datagram.
pub const MAX_PER_SEND: usize = 1024;
/// Most bytes in one datagram (well under the send buffer the socket asks for).
const MAX_SEND_BYTES: usize = 256 << 10;
/// Receive-buffer bytes budgeted per acknowledgement: an acknowledgement is a small skb whose
/// accounted size (`truesize`, what counts against the buffer) is under 1 KiB; twice that
/// leaves room for the kernel's reason on a refused route.
const ACK_BUDGET: usize = 2048;
/// Buffers asked for (as root the limit is ignored; otherwise the kernel caps them).
const SOCKET_BUFFER: libc::c_int = 8 << 20;

/// One change of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Add the route, or replace the route to the same destination (and metric), like
    /// [`Netlink::replace_route`].
    Replace(Route),
    /// Delete our route to that destination, like [`Netlink::delete_route`]: its target is not
    /// compared, and a route that is not there is not an error.
    Delete(Route),
}

impl RouteChange {
    pub fn route(&self) -> &Route {
        match self {
            RouteChange::Replace(r) | RouteChange::Delete(r) => r,
        }
    }

    fn op(&self) -> &'static str {
        match self {
            RouteChange::Replace(_) => "replace",
            RouteChange::Delete(_) => "delete",
        }
    }
}

/// The message [`Netlink::delete_route`] sends for `route`: wildcards for the kernel's match
/// (any scope, any type), so our route is found whatever it points at.
pub(crate) fn delete_message(route: &Route) -> Result<RouteMessage, RouteError> {
    let mut msg = route_message(
        &Route {
            target: RouteTarget::Other { kind: 0 },
            ..route.clone()
        },
        None,
    )?;
    msg.header.scope = RouteScope::NoWhere;
    msg.header.kind = RouteType::Unspec;
    Ok(msg)
}

/// One datagram: message `i` has sequence number `first_seq + i` and stands for change
/// `indexes[i]` of the caller's slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Datagram {
    pub(crate) buf: Vec<u8>,
    pub(crate) first_seq: u32,
    pub(crate) indexes: Vec<usize>,
}

/// Appends one netlink message (header + payload, padded to 4 bytes).
fn put_message(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, msg: &RouteMessage) {
    let payload = msg.buffer_len();
    let len = NLMSG_HDRLEN + payload;
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    let start = out.len();
    out.resize(start + payload, 0);
    msg.emit(&mut out[start..]);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Packs encoded messages `(index, type, flags, message)` into datagrams of at most
/// `per_send` messages and [`MAX_SEND_BYTES`] bytes, numbering them from `first_seq`. Pure:
/// unit-tested.
pub(crate) fn pack(
    messages: impl IntoIterator<Item = (usize, u16, u16, RouteMessage)>,
    per_send: usize,
    first_seq: u32,
) -> Vec<Datagram> {
    let per_send = per_send.clamp(1, MAX_PER_SEND);
    let mut out: Vec<Datagram> = Vec::new();
    let mut seq = first_seq;
    for (index, ty, flags, msg) in messages {
        let full = out.last().is_none_or(|d| {
            d.indexes.len() >= per_send
                || d.buf.len() + NLMSG_HDRLEN + msg.buffer_len() > MAX_SEND_BYTES
        });
        if full {
            out.push(Datagram {
                buf: Vec::with_capacity(per_send * 64),
                first_seq: seq,
                indexes: Vec::new(),
            });
        }
        let d = out.last_mut().expect("pushed above");
        put_message(&mut d.buf, ty, flags, seq, &msg);
        d.indexes.push(index);
        seq = seq.wrapping_add(1);
    }
    out
}

/// The kernel's answer to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Refused with this errno (positive) and, if the kernel gave one, its reason.
    Refused { errno: i32, reason: Option<String> },
    /// No acknowledgement came back (the error says why); the route's state is unknown.
    Lost(String),
}

/// Reads the acknowledgements in `buf` (one `recv`): `(sequence number, errno, reason)` for
/// each `NLMSG_ERROR` (errno 0 is success). Pure: unit-tested.
pub(crate) fn parse_acks(buf: &[u8]) -> Result<Vec<(u32, i32, Option<String>)>, String> {
    let rd_u32 = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    let rd_u16 = |o: usize| u16::from_ne_bytes([buf[o], buf[o + 1]]);
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = rd_u32(off) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(format!("netlink message length {len} at offset {off}"));
        }
        let ty = rd_u16(off + 4);
        let flags = rd_u16(off + 6);
        let seq = rd_u32(off + 8);
        if ty == NLMSG_ERROR {
            if len < NLMSG_HDRLEN + 4 + NLMSG_HDRLEN {
                return Err(format!("short acknowledgement ({len} bytes)"));
            }
            let errno = -(rd_u32(off + NLMSG_HDRLEN) as i32);
            let orig = off + NLMSG_HDRLEN + 4;
            let mut tlv = if flags & NLM_F_CAPPED != 0 {
                orig + NLMSG_HDRLEN
            } else {
                orig + (rd_u32(orig) as usize).next_multiple_of(4)
            };
            let mut reason = None;
            while flags & NLM_F_ACK_TLVS != 0 && tlv + 4 <= off + len {
                let alen = rd_u16(tlv) as usize;
                if alen < 4 || tlv + alen > off + len {
                    break;
                }
                if rd_u16(tlv + 2) & 0x3fff == NLMSGERR_ATTR_MSG {
                    let text = &buf[tlv + 4..tlv + alen];
                    let text = text.split(|b| *b == 0).next().unwrap_or_default();
                    reason = Some(String::from_utf8_lossy(text).into_owned());
                }
                tlv += alen.next_multiple_of(4);
            }
            out.push((seq, errno, reason));
        }
        off += len.next_multiple_of(4);
    }
    Ok(out)
}

/// A `NETLINK_ROUTE` socket used only for batches (the `rtnetlink` connection keeps its own).
#[derive(Debug)]
pub(crate) struct BatchSocket {
    /// Held for a whole datagram: send, then read its acknowledgements.
    socket: Mutex<NetlinkSocket>,
    next_seq: AtomicU32,
    /// Messages per datagram whose acknowledgements fit in the receive buffer.
    per_send: usize,
}

impl BatchSocket {
    /// Opens the socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<BatchSocket> {
        let socket = NetlinkSocket::open(libc::NETLINK_ROUTE, SOCKET_BUFFER)?;
        // Acknowledgements without the request echoed, with the kernel's reason on refusal.
        // Both are optional (older kernels): failures only make answers larger or terser.
        socket.set_option(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        socket.set_option(libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
        let per_send = (socket.receive_buffer() / ACK_BUDGET).clamp(16, MAX_PER_SEND);
        Ok(BatchSocket {
            socket: Mutex::new(socket),
            next_seq: AtomicU32::new(1),
            per_send,
        })
    }

    /// Reserves `n` sequence numbers; returns the first.
    fn reserve(&self, n: usize) -> u32 {
        self.next_seq.fetch_add(n as u32, Ordering::Relaxed)
    }

    /// Sends each datagram and collects the answers that were not successes, as
    /// `(index into the caller's changes, outcome)`. `is_delete[index]`: the change is a
    /// delete, for which "no such route" counts as success.
    fn exchange(&self, datagrams: &[Datagram], is_delete: &[bool]) -> Vec<(usize, Outcome)> {
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let mut failures = Vec::new();
        // One acknowledgement per datagram the kernel queues (36 bytes, a little more with a
        // reason): small reads.
        let mut rbuf = vec![0u8; 16 << 10];
        for d in datagrams {
            let n = d.indexes.len();
            let mut answered = vec![false; n];
            let mut missing = n;
            let lost = |answered: &[bool], why: String, failures: &mut Vec<(usize, Outcome)>| {
                for (i, done) in answered.iter().enumerate() {
                    if !done {
                        failures.push((d.indexes[i], Outcome::Lost(why.clone())));
                    }
                }
            };
            if let Err(e) = socket.send(&d.buf) {
                lost(&answered, format!("not sent: {e}"), &mut failures);
                continue;
            }
            // After an overrun the answers that did fit are still queued: read without
            // waiting until none is left.
            let mut overrun = false;
            while missing > 0 {
                let got = match socket.recv(&mut rbuf, overrun) {
                    Ok(got) => got,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        overrun = true;
                        continue;
                    }
                    Err(e) => {
                        let why = if overrun {
                            "acknowledgement lost (receive buffer overrun)".to_owned()
                        } else {
                            format!("no acknowledgement: {e}")
                        };
                        lost(&answered, why, &mut failures);
                        break;
                    }
                };
                let acks = match parse_acks(&rbuf[..got]) {
                    Ok(acks) => acks,
                    Err(e) => {
                        lost(&answered, format!("malformed answer: {e}"), &mut failures);
                        break;
                    }
                };
                for (seq, errno, reason) in acks {
                    // Answers to an earlier, abandoned exchange have other numbers.
                    let i = seq.wrapping_sub(d.first_seq) as usize;
                    if i >= n || answered[i] {
                        continue;
                    }
                    answered[i] = true;
                    missing -= 1;
                    let index = d.indexes[i];
                    let gone = [libc::ENOENT, libc::ESRCH];
                    if errno != 0 && !(is_delete[index] && gone.contains(&errno)) {
                        failures.push((index, Outcome::Refused { errno, reason }));
                    }
                }
            }
        }
        failures
    }
}

impl Netlink {
    /// Applies `changes` in order, many per system call; returns the ones that failed, by
    /// index into `changes`, each error naming its route. The others are applied whatever
    /// happened to these. Deleting a route that is not there is not a failure.
    pub async fn apply_route_changes(&self, changes: &[RouteChange]) -> Vec<(usize, RouteError)> {
        let mut failures = Vec::new();
        let mut oifs: HashMap<String, u32> = HashMap::new();
        let mut messages = Vec::with_capacity(changes.len());
        for (index, change) in changes.iter().enumerate() {
            let encoded = match change {
                RouteChange::Replace(route) => self
                    .cached_oif(route, &mut oifs)
                    .await
                    .and_then(|oif| route_message(route, oif))
                    .map(|m| {
                        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
                        (index, RTM_NEWROUTE, flags, m)
                    }),
                RouteChange::Delete(route) => delete_message(route)
                    .map(|m| (index, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, m)),
            };
            match encoded {
                Ok(m) => messages.push(m),
                Err(e) => failures.push((index, e)),
            }
        }
        if messages.is_empty() {
            return failures;
        }
        let first_seq = self.batch.reserve(messages.len());
        let datagrams = pack(messages, self.batch.per_send, first_seq);
        let is_delete: Vec<bool> = changes
            .iter()
            .map(|c| matches!(c, RouteChange::Delete(_)))
            .collect();
        // Blocking system calls on the calling thread, as the nftables dataplane's
        // transactions: the kernel installs the routes inside `sendmsg` and the answers are
        // queued when it returns, so the wait is the kernel's work, about a millisecond per
        // thousand routes. (A blocking-pool thread cost more memory, a malloc arena of its
        // own, than it saved.)
        let answers = self.batch.exchange(&datagrams, &is_delete);
        for (index, outcome) in answers {
            let change = &changes[index];
            let (op, route) = (change.op(), change.route().to_string());
            failures.push((
                index,
                match outcome {
                    Outcome::Refused { errno, reason } => RouteError::Refused {
                        op,
                        route,
                        errno,
                        reason,
                    },
                    Outcome::Lost(why) => RouteError::Unacknowledged { op, route, why },
                },
            ));
        }
        failures.sort_by_key(|f| f.0);
        failures
    }

    /// The interface index `route` needs, resolved once per name per batch.
    async fn cached_oif(
        &self,
        route: &Route,
        cache: &mut HashMap<String, u32>,
    ) -> Result<Option<u32>, RouteError> {
        let name = match &route.target {
            RouteTarget::Device { ifname } => ifname,
            RouteTarget::Gateway {
                ifname: Some(ifname),
                ..
            } => ifname,
            _ => return Ok(None),
        };
        if let Some(i) = cache.get(name) {
            return Ok(Some(*i));
        }
        let oif = self.oif_for(route).await?;
        if let Some(i) = oif {
            cache.insert(name.clone(), i);
        }
        Ok(oif)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{RTPROT_BIRD, parse_route};
    use netlink_packet_core::Parseable;

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap()
    }

    fn gw(i: u32) -> Route {
        let dst = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
        Route::gateway(
            ipnet::IpNet::new(dst.into(), 24).unwrap(),
            "192.0.2.1".parse().unwrap(),
            None,
            RTPROT_BIRD,
        )
    }

    fn new_route(i: u32) -> (usize, u16, u16, RouteMessage) {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let m = route_message(&gw(i), None).unwrap();
        (i as usize, RTM_NEWROUTE, flags, m)
    }

    /// Walks a datagram: `(type, flags, seq, payload)` per message.
    fn messages(buf: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            let flags = u16::from_ne_bytes(buf[off + 6..off + 8].try_into().unwrap());
            let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
            out.push((ty, flags, seq, buf[off + 16..off + len].to_vec()));
            off += len.next_multiple_of(4);
        }
        assert_eq!(off, buf.len(), "messages fill the datagram exactly");
        out
    }

    #[test]
    fn datagrams_hold_per_send_messages_numbered_in_order() {
        let ds = pack((0..2500).map(new_route), 1000, 7);
        assert_eq!(
            ds.iter().map(|d| d.indexes.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        assert_eq!(ds[1].first_seq, 1007);
        assert_eq!(ds[2].indexes[0], 2000);
        let msgs = messages(&ds[1].buf);
        assert_eq!(msgs.len(), 1000);
        for (i, (ty, flags, seq, payload)) in msgs.iter().enumerate() {
            assert_eq!(*ty, RTM_NEWROUTE);
            assert_eq!(*flags, 0x505, "REQUEST|ACK|REPLACE|CREATE");
            assert_eq!(*seq, 1007 + i as u32);
            // The payload is the route message of change 1000 + i.
            let parsed = RouteMessage::parse(&payload[..]).unwrap();
            assert_eq!(
                parse_route(&parsed, &HashMap::new()),
                Some(gw(1000 + i as u32))
            );
        }
    }

    #[test]
    fn per_send_is_bounded_and_bytes_split_datagrams() {
        assert_eq!(pack((0..5000).map(new_route), 100_000, 1).len(), 5);
        assert_eq!(pack((0..3).map(new_route), 0, 1).len(), 3);
        let big = pack((0..MAX_PER_SEND as u32).map(new_route), MAX_PER_SEND, 1);
        assert!(big.iter().all(|d| d.buf.len() <= MAX_SEND_BYTES));
        assert!(pack(std::iter::empty(), 10, 1).is_empty());
    }

    #[test]
    fn deletes_match_any_target_of_our_protocol() {
        let m = delete_message(&gw(3)).unwrap();
        assert_eq!(m.header.scope, RouteScope::NoWhere);
        assert_eq!(m.header.kind, RouteType::Unspec);
        let back = parse_route(&m, &HashMap::new()).unwrap();
        assert_eq!((back.dst, back.protocol), (net("10.0.3.0/24"), RTPROT_BIRD));
        assert!(!matches!(back.target, RouteTarget::Gateway { .. }));
    }

    /// An acknowledgement as the kernel writes it with `NETLINK_CAP_ACK`, optionally with an
    /// extended-ack reason.
    fn ack(seq: u32, errno: i32, reason: Option<&str>) -> Vec<u8> {
        let mut tlvs = Vec::new();
        if let Some(r) = reason {
            let mut text = r.as_bytes().to_vec();
            text.push(0);
            tlvs.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
            tlvs.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
            tlvs.extend_from_slice(&text);
            tlvs.resize(tlvs.len().next_multiple_of(4), 0);
        }
        let len = 16 + 4 + 16 + tlvs.len();
        let mut flags = NLM_F_CAPPED;
        if reason.is_some() {
            flags |= NLM_F_ACK_TLVS;
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&(-errno).to_ne_bytes());
        // The request's header (capped: no payload).
        out.extend_from_slice(&60u32.to_ne_bytes());
        out.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        out.extend_from_slice(&0x505u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&tlvs);
        out
    }

    #[test]
    fn acknowledgements_give_seq_errno_and_reason() {
        let mut buf = ack(5, 0, None);
        buf.extend(ack(
            6,
            libc::ENETUNREACH,
            Some("Nexthop has invalid gateway"),
        ));
        buf.extend(ack(7, libc::ESRCH, None));
        assert_eq!(
            parse_acks(&buf).unwrap(),
            vec![
                (5, 0, None),
                (
                    6,
                    libc::ENETUNREACH,
                    Some("Nexthop has invalid gateway".into())
                ),
                (7, libc::ESRCH, None)
            ]
        );
    }

    #[test]
    fn uncapped_acknowledgements_skip_the_echoed_request() {
        // Without NETLINK_CAP_ACK a refusal echoes the whole request before the attributes.
        let mut buf = ack(9, libc::EINVAL, Some("bad"));
        // Grow the echoed request by 8 bytes of payload and clear CAPPED.
        buf[6..8].copy_from_slice(&NLM_F_ACK_TLVS.to_ne_bytes());
        buf[20..24].copy_from_slice(&24u32.to_ne_bytes());
        buf.splice(36..36, [0u8; 8]);
        let len = buf.len() as u32;
        buf[0..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(
            parse_acks(&buf).unwrap(),
            vec![(9, libc::EINVAL, Some("bad".into()))]
        );
    }

    #[test]
    fn truncated_answers_are_refused() {
        let buf = ack(5, 0, None);
        let mut bad = buf.clone();
        bad[0..4].copy_from_slice(&400u32.to_ne_bytes());
        assert!(parse_acks(&bad).is_err());
        let mut short = buf[..24].to_vec();
        short[0..4].copy_from_slice(&24u32.to_ne_bytes());
        assert!(parse_acks(&short).is_err());
    }
}
