//! Reading a table back from the kernel over netlink: its chains and, per rule, the handle,
//! the comment, the counter and the final verdict. This is what `calicoctl node policy`
//! shows; nothing here changes the kernel.
//!
//! A listing is two dumps (chains, then rules). The ruleset generation is read before and
//! after them, and the listing is retried (bounded) when it changed in between, so a table
//! replaced by the agent while we read is never shown half old, half new.

use crate::batch::{Verdict, msg};
use crate::netlink::{GETTABLE, NLM_F_DUMP, Reply, attr, attrs, be32, be64, comment, string};
use crate::socket::{NftError, NftSocket};

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
        let (chains, intr1) = dump(socket, msg::GETCHAIN, table)?;
        let (rules, intr2) = dump(socket, msg::GETRULE, table)?;
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

/// The sum of the counters of the rules that drop traffic of a workload-prefixed interface
/// without an endpoint (comment [`crate::render::UNKNOWN_INTERFACE`], in the base chains
/// `from-wl`, `to-wl` and `wl-to-host`). Zero when the table does not exist. The counters
/// live as long as their rules: they restart when the agent rewrites those base chains (the
/// first sync after an agent restart, or a change of the interface prefixes).
pub fn unknown_interface_drops(socket: &mut NftSocket) -> Result<Counter, NftError> {
    let mut sum = Counter::default();
    let Some(t) = read_table(socket, crate::render::TABLE_NAME)? else {
        return Ok(sum);
    };
    for c in t.chains.iter().filter(|c| c.base.is_some()) {
        for r in &c.rules {
            if r.comment.as_deref() == Some(crate::render::UNKNOWN_INTERFACE)
                && let Some(n) = r.counter
            {
                sum.packets += n.packets;
                sum.bytes += n.bytes;
            }
        }
    }
    Ok(sum)
}

fn generation(socket: &mut NftSocket) -> Result<u32, NftError> {
    let (replies, _) = socket.request(msg::GETGEN, 0, &[])?;
    replies
        .iter()
        .find(|r| r.ty == msg::NEWGEN)
        .and_then(|r| attr(&r.attrs, 1))
        .and_then(be32)
        .ok_or_else(|| NftError::Malformed("generation reply without NFTA_GEN_ID".into()))
}

fn table_exists(socket: &mut NftSocket, table: &str) -> Result<bool, NftError> {
    match socket.request(GETTABLE, 0, &name_attr(table)) {
        Ok((replies, _)) => Ok(replies.iter().any(|r| r.ty == msg::NEWTABLE)),
        Err(NftError::Rejected { errno, .. }) if errno == libc::ENOENT => Ok(false),
        Err(e) => Err(e),
    }
}

/// A dump of chains or rules, filtered by table (the kernel filters rules; chains are
/// filtered when parsed).
fn dump(socket: &mut NftSocket, ty: u16, table: &str) -> Result<(Vec<Reply>, bool), NftError> {
    socket.request(ty, NLM_F_DUMP, &name_attr(table))
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
    if m.ty != msg::NEWCHAIN {
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
    if m.ty != msg::NEWRULE {
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
            ty: msg::NEWRULE,
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
