//! The read side of the netfilter netlink socket, shared by everything that asks the kernel
//! something (chain and set listings for restart adoption, `read`'s table dump, polling a
//! chain's comments): one request/reply routine and one set of attribute parsers.

use crate::batch::{NLM_F_REQUEST, put_msg};
use crate::socket::{NftError, NftSocket};

/// `NFNL_SUBSYS_NFTABLES`, as the high byte of the message type.
const SUBSYS: u16 = 10 << 8;
/// `NLM_F_DUMP` = `NLM_F_ROOT | NLM_F_MATCH`.
pub(crate) const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NFPROTO_INET`: the family of the table calico-rs owns.
const FAMILY_INET: u8 = 1;
/// Receive datagrams per request before giving up (every recv is also bounded by the
/// socket's receive timeout).
const MAX_RECVS: usize = 1_000_000;

/// One nf_tables message of a reply: type (without the subsystem) and its attributes.
pub(crate) struct Reply {
    pub(crate) ty: u16,
    pub(crate) attrs: Vec<u8>,
}

impl NftSocket {
    /// Sends one `inet`-family request `ty` and collects the replies with its sequence
    /// number: every message of a dump (`flags` with [`NLM_F_DUMP`]), else the first answer.
    /// Also says whether the kernel flagged the dump as interrupted by a concurrent change.
    pub(crate) fn request(
        &mut self,
        ty: u16,
        flags: u16,
        attrs: &[u8],
    ) -> Result<(Vec<Reply>, bool), NftError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
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
        self.send_raw(&buf)?;
        let dumping = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut interrupted = false;
        let mut rbuf = vec![0u8; 1 << 20];
        for _ in 0..MAX_RECVS {
            let n = self.recv_raw(&mut rbuf)?;
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
        Err(NftError::Malformed(format!(
            "no end to the answer of {} after {MAX_RECVS} datagrams",
            describe(ty)
        )))
    }
}

fn describe(ty: u16) -> String {
    use crate::batch::msg;
    match ty {
        msg::GETCHAIN => "chain listing",
        msg::GETRULE => "rule listing",
        msg::GETSET => "set listing",
        msg::GETGEN => "generation query",
        GETTABLE => "table query",
        _ => "query",
    }
    .into()
}

/// `NFT_MSG_GETTABLE`.
pub(crate) const GETTABLE: u16 = 1;

/// The comment of nftnl's rule user data: TLVs of (type u8, length u8, value), the comment
/// being type 0, NUL-terminated.
pub(crate) fn comment(udata: &[u8]) -> Option<String> {
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
pub(crate) fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
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

pub(crate) fn attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

pub(crate) fn string(p: &[u8]) -> Option<String> {
    let text = p.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(text).into_owned())
}

pub(crate) fn be32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

pub(crate) fn be64(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(..8)?.try_into().ok()?))
}

pub(crate) fn rd4(b: &[u8], off: usize) -> [u8; 4] {
    [b[off], b[off + 1], b[off + 2], b[off + 3]]
}
