//! Reading a table back from the kernel over netlink: its chains and, per rule, the handle,
//! the comment, the counter and the final verdict. This is what `calicoctl node policy`
//! shows; nothing here changes the kernel.
//!
//! A listing is two dumps (chains, then rules). The ruleset generation is read before and
//! after them, and the listing is retried (bounded) when it changed in between, so a table
//! replaced by the agent while we read is never shown half old, half new.

use crate::batch::{NLM_F_REQUEST, Verdict, put_msg};
use crate::socket::{NftError, NftSocket};

/// `NFNL_SUBSYS_NFTABLES`, as the high byte of the message type.
const SUBSYS: u16 = 10 << 8;
const MSG_NEWTABLE: u16 = 0;
const MSG_GETTABLE: u16 = 1;
const MSG_NEWCHAIN: u16 = 3;
const MSG_GETCHAIN: u16 = 4;
const MSG_NEWRULE: u16 = 6;
const MSG_GETRULE: u16 = 7;
const MSG_NEWGEN: u16 = 15;
const MSG_GETGEN: u16 = 16;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NFPROTO_INET`: the family of the table calico-rs owns.
const FAMILY_INET: u8 = 1;
/// How many times a listing is retried when the ruleset changed while it was read.
const ATTEMPTS: usize = 5;

/// A table as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDump {
    /// Table name.
    pub name: String,
    /// Chains, in the kernel's order (creation order), each with its rules in order.
    pub chains: Vec<ChainDump>,
}

impl TableDump {
    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&ChainDump> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// One chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDump {
    /// Chain name.
    pub name: String,
    /// Hook number and priority of a base chain; `None` for a regular chain.
    pub base: Option<(u32, i32)>,
    /// Rules in evaluation order.
    pub rules: Vec<RuleDump>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDump {
    /// Kernel handle (unique in the table).
    pub handle: u64,
    /// The comment stored in the rule's user data (nft's `comment "…"`).
    pub comment: Option<String>,
    /// The values of the rule's `counter` expression, if it has one.
    pub counter: Option<Counter>,
    /// The rule's `immediate` verdict (accept, drop, return, jump, goto), if any.
    pub verdict: Option<Verdict>,
    /// Names of the rule's expressions in order (`meta`, `cmp`, `lookup`, `log`, …).
    pub expressions: Vec<String>,
}

/// Packets and bytes a `counter` expression has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Reads the `inet` table `table`: `Ok(None)` when it does not exist.
pub fn read_table(socket: &mut NftSocket, table: &str) -> Result<Option<TableDump>, NftError> {
    for _ in 0..ATTEMPTS {
        let before = generation(socket)?;
        if !table_exists(socket, table)? {
            return Ok(None);
        }
        let (chains, intr1) = dump(socket, MSG_GETCHAIN, table)?;
        let (rules, intr2) = dump(socket, MSG_GETRULE, table)?;
        if intr1 || intr2 || generation(socket)? != before {
            continue;
        }
        let mut out = TableDump {
            name: table.to_owned(),
            chains: Vec::new(),
        };
        for m in &chains {
            if let Some(c) = parse_chain(m, table)? {
                out.chains.push(c);
            }
        }
        for m in &rules {
            if let Some((chain, rule)) = parse_rule(m, table)? {
                match out.chains.iter_mut().find(|c| c.name == chain) {
                    Some(c) => c.rules.push(rule),
                    None => {
                        return Err(NftError::Malformed(format!(
                            "rule {} of chain {chain} that the chain dump did not list",
                            rule.handle
                        )));
                    }
                }
            }
        }
        return Ok(Some(out));
    }
    Err(NftError::Malformed(format!(
        "the ruleset kept changing while table {table} was read ({ATTEMPTS} attempts)"
    )))
}

/// One message of a reply: type (without the subsystem) and its attributes.
struct Reply {
    ty: u16,
    attrs: Vec<u8>,
}

fn request(
    socket: &mut NftSocket,
    ty: u16,
    flags: u16,
    attrs: &[u8],
) -> Result<(Vec<Reply>, bool), NftError> {
    let seq = socket.seq;
    socket.seq = socket.seq.wrapping_add(1);
    let mut buf = Vec::new();
    put_msg(
        &mut buf,
        SUBSYS | ty,
        NLM_F_REQUEST | flags,
        seq,
        FAMILY_INET,
        [0, 0],
        attrs,
    );
    socket.send_raw(&buf)?;
    let dumping = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut out = Vec::new();
    let mut interrupted = false;
    let mut rbuf = vec![0u8; 1 << 16];
    loop {
        let n = socket.recv_raw(&mut rbuf)?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(rd4(&rbuf, off)) as usize;
            let mty = u16::from_ne_bytes([rbuf[off + 4], rbuf[off + 5]]);
            let mflags = u16::from_ne_bytes([rbuf[off + 6], rbuf[off + 7]]);
            let mseq = u32::from_ne_bytes(rd4(&rbuf, off + 8));
            if len < 16 || off + len > n {
                return Err(NftError::Malformed(format!("message length {len}")));
            }
            if mseq == seq {
                interrupted |= mflags & NLM_F_DUMP_INTR != 0;
                match mty {
                    NLMSG_DONE => return Ok((out, interrupted)),
                    NLMSG_ERROR => {
                        if len < 20 {
                            return Err(NftError::Malformed("short NLMSG_ERROR".into()));
                        }
                        let err = i32::from_ne_bytes(rd4(&rbuf, off + 16));
                        if err != 0 {
                            return Err(NftError::Rejected {
                                what: describe(ty),
                                errno: -err,
                            });
                        }
                        if !dumping {
                            return Ok((out, interrupted));
                        }
                    }
                    t if t >> 8 == SUBSYS >> 8 && len >= 20 => {
                        out.push(Reply {
                            ty: t & 0xff,
                            attrs: rbuf[off + 20..off + len].to_vec(),
                        });
                        if !dumping {
                            return Ok((out, interrupted));
                        }
                    }
                    _ => {}
                }
            }
            off += (len + 3) & !3;
        }
    }
}

fn describe(ty: u16) -> String {
    match ty {
        MSG_GETTABLE => "table query",
        MSG_GETCHAIN => "chain listing",
        MSG_GETRULE => "rule listing",
        MSG_GETGEN => "generation query",
        _ => "query",
    }
    .into()
}

fn generation(socket: &mut NftSocket) -> Result<u32, NftError> {
    let (replies, _) = request(socket, MSG_GETGEN, 0, &[])?;
    replies
        .iter()
        .find(|r| r.ty == MSG_NEWGEN)
        .and_then(|r| attr(&r.attrs, 1))
        .and_then(be32)
        .ok_or_else(|| NftError::Malformed("generation reply without NFTA_GEN_ID".into()))
}

fn table_exists(socket: &mut NftSocket, table: &str) -> Result<bool, NftError> {
    match request(socket, MSG_GETTABLE, 0, &name_attr(table)) {
        Ok((replies, _)) => Ok(replies.iter().any(|r| r.ty == MSG_NEWTABLE)),
        Err(NftError::Rejected { errno, .. }) if errno == libc::ENOENT => Ok(false),
        Err(e) => Err(e),
    }
}

/// A dump of chains or rules, filtered by table (the kernel filters rules; chains are
/// filtered when parsed).
fn dump(socket: &mut NftSocket, ty: u16, table: &str) -> Result<(Vec<Reply>, bool), NftError> {
    request(socket, ty, NLM_F_DUMP, &name_attr(table))
}

/// `NFTA_*_TABLE` (type 1 in table, chain and rule messages) holding `table`.
fn name_attr(table: &str) -> Vec<u8> {
    let mut v = table.as_bytes().to_vec();
    v.push(0);
    let mut a = Vec::new();
    a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&1u16.to_ne_bytes());
    a.extend_from_slice(&v);
    while !a.len().is_multiple_of(4) {
        a.push(0);
    }
    a
}

fn parse_chain(m: &Reply, table: &str) -> Result<Option<ChainDump>, NftError> {
    if m.ty != MSG_NEWCHAIN {
        return Ok(None);
    }
    if attr(&m.attrs, 1).and_then(string).as_deref() != Some(table) {
        return Ok(None);
    }
    let name = attr(&m.attrs, 3)
        .and_then(string)
        .ok_or_else(|| NftError::Malformed("chain without NFTA_CHAIN_NAME".into()))?;
    let base = attr(&m.attrs, 4).and_then(|hook| {
        let num = attr(hook, 1).and_then(be32)?;
        let prio = attr(hook, 2).and_then(be32)? as i32;
        Some((num, prio))
    });
    Ok(Some(ChainDump {
        name,
        base,
        rules: Vec::new(),
    }))
}

fn parse_rule(m: &Reply, table: &str) -> Result<Option<(String, RuleDump)>, NftError> {
    if m.ty != MSG_NEWRULE {
        return Ok(None);
    }
    if attr(&m.attrs, 1).and_then(string).as_deref() != Some(table) {
        return Ok(None);
    }
    let chain = attr(&m.attrs, 2)
        .and_then(string)
        .ok_or_else(|| NftError::Malformed("rule without NFTA_RULE_CHAIN".into()))?;
    let handle = attr(&m.attrs, 3)
        .and_then(be64)
        .ok_or_else(|| NftError::Malformed(format!("rule of chain {chain} without a handle")))?;
    let mut rule = RuleDump {
        handle,
        comment: attr(&m.attrs, 7).and_then(comment),
        counter: None,
        verdict: None,
        expressions: Vec::new(),
    };
    if let Some(list) = attr(&m.attrs, 4) {
        for (_, elem) in attrs(list) {
            let Some(name) = attr(elem, 1).and_then(string) else {
                continue;
            };
            let data = attr(elem, 2).unwrap_or(&[]);
            match name.as_str() {
                "counter" => {
                    rule.counter = Some(Counter {
                        bytes: attr(data, 1).and_then(be64).unwrap_or(0),
                        packets: attr(data, 2).and_then(be64).unwrap_or(0),
                    })
                }
                // Only a write to the verdict register (0) is a verdict.
                "immediate" if attr(data, 1).and_then(be32) == Some(0) => {
                    rule.verdict = attr(data, 2).and_then(|d| attr(d, 2)).and_then(verdict);
                }
                _ => {}
            }
            rule.expressions.push(name);
        }
    }
    Ok(Some((chain, rule)))
}

/// `NFTA_VERDICT_CODE` (and chain) as a [`Verdict`]; `None` for codes we never write
/// (continue, break, queue).
fn verdict(nested: &[u8]) -> Option<Verdict> {
    let code = attr(nested, 1).and_then(be32)? as i32;
    let chain = || attr(nested, 2).and_then(string);
    Some(match code {
        0 => Verdict::Drop,
        1 => Verdict::Accept,
        -3 => Verdict::Jump(chain()?),
        -4 => Verdict::Goto(chain()?),
        -5 => Verdict::Return,
        _ => return None,
    })
}

/// The comment of nftnl's rule user data: TLVs of (type u8, length u8, value), the comment
/// being type 0, NUL-terminated.
fn comment(udata: &[u8]) -> Option<String> {
    let mut off = 0;
    while off + 2 <= udata.len() {
        let (ty, len) = (udata[off], udata[off + 1] as usize);
        let value = udata.get(off + 2..off + 2 + len)?;
        if ty == 0 {
            let text = value.split(|b| *b == 0).next().unwrap_or(&[]);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        off += 2 + len;
    }
    None
}

/// Netlink attributes as (type without the nested/byte-order flags, payload).
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 4 > buf.len() {
            return None;
        }
        let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & 0x3fff;
        if len < 4 || off + len > buf.len() {
            return None;
        }
        let payload = &buf[off + 4..off + len];
        off += (len + 3) & !3;
        Some((ty, payload))
    })
}

fn attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

fn string(p: &[u8]) -> Option<String> {
    let text = p.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(text).into_owned())
}

fn be32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

fn be64(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(..8)?.try_into().ok()?))
}

fn rd4(b: &[u8], off: usize) -> [u8; 4] {
    [b[off], b[off + 1], b[off + 2], b[off + 3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(payload);
        while !a.len().is_multiple_of(4) {
            a.push(0);
        }
        a
    }

    fn expr(name: &str, data: Vec<u8>) -> Vec<u8> {
        let mut e = nla(1, format!("{name}\0").as_bytes());
        e.extend(nla(2 | 0x8000, &data));
        nla(1 | 0x8000, &e)
    }

    #[test]
    fn a_rule_message_gives_comment_counter_and_verdict() {
        let mut counter = nla(1, &1500u64.to_be_bytes());
        counter.extend(nla(2, &12u64.to_be_bytes()));
        let mut v = nla(1, &(-3i32 as u32).to_be_bytes());
        v.extend(nla(2, b"pol:i:web\0"));
        let mut imm = nla(1, &0u32.to_be_bytes());
        imm.extend(nla(2 | 0x8000, &nla(2 | 0x8000, &v)));
        let mut list = expr("counter", counter);
        list.extend(expr("immediate", imm));
        let mut attrs = nla(1, b"calico-rs\0");
        attrs.extend(nla(2, b"tw-cali1-t0\0"));
        attrs.extend(nla(3, &7u64.to_be_bytes()));
        attrs.extend(nla(4 | 0x8000, &list));
        let mut ud = vec![0u8, 11];
        ud.extend_from_slice(b"policy web\0");
        attrs.extend(nla(7, &ud));
        let m = Reply {
            ty: MSG_NEWRULE,
            attrs,
        };
        let (chain, rule) = parse_rule(&m, "calico-rs").unwrap().unwrap();
        assert_eq!(chain, "tw-cali1-t0");
        assert_eq!(rule.handle, 7);
        assert_eq!(rule.comment.as_deref(), Some("policy web"));
        assert_eq!(
            rule.counter,
            Some(Counter {
                packets: 12,
                bytes: 1500
            })
        );
        assert_eq!(rule.verdict, Some(Verdict::Jump("pol:i:web".into())));
        assert_eq!(rule.expressions, vec!["counter", "immediate"]);
        assert!(parse_rule(&m, "other").unwrap().is_none());
    }

    #[test]
    fn truncated_attributes_end_the_walk_instead_of_panicking() {
        let mut a = nla(1, b"abc\0");
        a.extend_from_slice(&[200, 0, 1, 0, 1]);
        assert_eq!(attrs(&a).count(), 1);
        assert_eq!(comment(&[0, 50, b'x']), None);
    }
}
