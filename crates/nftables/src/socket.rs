//! A `NETLINK_NETFILTER` socket: sends a [`Batch`] and reads the kernel's answer. After the
//! batch we send `NFT_MSG_GETGEN` in its own datagram: its reply comes after every error of the
//! batch, so reading until it arrives collects them all without guessing at timeouts.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use calico_dataplane::netlink_socket::NetlinkSocket;

use crate::batch::{Batch, NLM_F_REQUEST, msg, put_msg};
use crate::netlink::{NLM_F_DUMP, Reply, attr, attrs, be32, be64, comment, rd4, string};

/// What went wrong talking to nf_tables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The socket could not be opened or configured.
    #[error("cannot open a NETLINK_NETFILTER socket: {0}")]
    Open(#[source] io::Error),
    /// The namespace could not be entered to open the socket there.
    #[error("cannot open a netfilter socket in network namespace {path}: {source}")]
    Namespace {
        /// Namespace path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Sending or receiving failed.
    #[error("netlink {op} failed: {source}")]
    Io {
        /// `send` or `recv`.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the transaction (nothing of it was applied).
    #[error("nf_tables refused {what}: {} (errno {errno}); the whole transaction was rolled back", io::Error::from_raw_os_error(*errno))]
    Rejected {
        /// The object the refused message touched.
        what: String,
        /// The kernel's errno.
        errno: i32,
    },
    /// The kernel's answer could not be parsed.
    #[error("malformed netlink answer: {0}")]
    Malformed(String),
}

/// An open netfilter netlink socket (bound to the namespace it was opened in).
#[derive(Debug)]
pub struct NftSocket {
    socket: NetlinkSocket,
    /// Next sequence number (also used by `read`'s dump requests).
    pub(crate) seq: u32,
}

impl NftSocket {
    /// Opens a socket in the current thread's network namespace.
    pub fn open() -> Result<NftSocket, NftError> {
        // Large rulesets make large batches; errors of a large batch make many replies.
        let socket =
            NetlinkSocket::open(libc::NETLINK_NETFILTER, 16 << 20).map_err(NftError::Open)?;
        Ok(NftSocket { socket, seq: 1 })
    }

    /// Opens a socket in the network namespace at `path` (e.g. `/run/netns/x`); the calling
    /// thread stays where it is.
    pub fn open_in(path: &Path) -> Result<NftSocket, NftError> {
        let path = path.to_owned();
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).map_err(|source| NftError::Namespace {
                    path: path.clone(),
                    source,
                })?;
                // SAFETY: setns on a valid fd; it affects only this short-lived thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NftError::Namespace {
                        path: path.clone(),
                        source: io::Error::last_os_error(),
                    });
                }
                NftSocket::open()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NftError::Namespace {
                    path: path.clone(),
                    source: io::Error::other("thread panicked"),
                })
            })
        })
    }

    /// Sends the batch as one transaction and waits for the kernel's verdict. On error nothing
    /// of the batch is applied; the first refused message is named.
    pub fn send(&mut self, batch: &Batch) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        let first = self.seq;
        let (buf, seqs) = batch.encode(first);
        let gen_seq = first + seqs.len() as u32 + 2;
        self.seq = gen_seq + 1;
        self.send_raw(&buf)?;
        // A separate datagram: nfnetlink ignores whatever follows the batch end in one.
        let mut getgen = Vec::new();
        put_msg(
            &mut getgen,
            (10 << 8) | msg::GETGEN,
            NLM_F_REQUEST,
            gen_seq,
            0,
            [0, 0],
            &[],
        );
        self.send_raw(&getgen)?;
        let mut first_error: Option<(u32, i32)> = None;
        let mut rbuf = vec![0u8; 1 << 16];
        loop {
            let n = self.recv_raw(&mut rbuf)?;
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(rd4(&rbuf, off)) as usize;
                let ty = u16::from_ne_bytes([rbuf[off + 4], rbuf[off + 5]]);
                let seq = u32::from_ne_bytes(rd4(&rbuf, off + 8));
                if len < 16 || off + len > n {
                    return Err(NftError::Malformed(format!("message length {len}")));
                }
                if ty == libc::NLMSG_ERROR as u16 {
                    if len < 20 {
                        return Err(NftError::Malformed("short NLMSG_ERROR".into()));
                    }
                    let err = i32::from_ne_bytes(rd4(&rbuf, off + 16));
                    if err != 0 && first_error.is_none_or(|(s, _)| seq < s) {
                        first_error = Some((seq, -err));
                    }
                    if seq == gen_seq && err != 0 {
                        return Err(NftError::Rejected {
                            what: "generation query".into(),
                            errno: -err,
                        });
                    }
                } else if ty == (10 << 8) | msg::NEWGEN && seq == gen_seq {
                    return match first_error {
                        None => Ok(()),
                        Some((seq, errno)) => {
                            let what = seqs
                                .iter()
                                .find(|(s, _)| *s == seq)
                                .map(|(_, w)| w.clone())
                                .unwrap_or_else(|| format!("batch message {seq}"));
                            Err(NftError::Rejected { what, errno })
                        }
                    };
                }
                off += (len + 3) & !3;
            }
        }
    }

    pub(crate) fn send_raw(&self, buf: &[u8]) -> Result<(), NftError> {
        self.socket
            .send(buf)
            .map_err(|source| NftError::Io { op: "send", source })
    }

    pub(crate) fn recv_raw(&self, buf: &mut [u8]) -> Result<usize, NftError> {
        self.socket
            .recv(buf, false)
            .map_err(|source| NftError::Io { op: "recv", source })
    }
}

/// A chain as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedChain {
    /// Table.
    pub table: String,
    /// Name.
    pub name: String,
    /// Kernel handle.
    pub handle: u64,
    /// Hook number and priority of a base chain.
    pub hook: Option<(u32, i32)>,
    /// Policy verdict code of a base chain (0 drop, 1 accept).
    pub policy: Option<u32>,
    /// Type of a base chain (`filter`, `nat`, `route`).
    pub kind: Option<String>,
}

/// A set as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSet {
    /// Table.
    pub table: String,
    /// Name.
    pub name: String,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// Key type (nft's type id).
    pub key_type: u32,
    /// Key length in bytes.
    pub key_len: u32,
}

/// Top-level attributes of one message: `(type without flags, payload)`.
impl NftSocket {
    /// Every reply of a dump of one kind of object (`NFT_MSG_GET*`) of the `inet` family.
    fn dump(&mut self, get: u16, attrs: &[u8]) -> Result<Vec<Reply>, NftError> {
        Ok(self.request(get, NLM_F_DUMP, attrs)?.0)
    }

    /// Every chain of the `inet` family (all tables; filter by [`ListedChain::table`]).
    pub fn list_chains(&mut self) -> Result<Vec<ListedChain>, NftError> {
        Ok(self
            .dump(msg::GETCHAIN, &[])?
            .iter()
            .map(|m| ListedChain {
                table: attr(&m.attrs, 1).and_then(string).unwrap_or_default(),
                handle: attr(&m.attrs, 2).and_then(be64).unwrap_or(0),
                name: attr(&m.attrs, 3).and_then(string).unwrap_or_default(),
                hook: attr(&m.attrs, 4).map(|hook| {
                    let num = attr(hook, 1).and_then(be32).unwrap_or(0);
                    let prio = attr(hook, 2).and_then(be32).unwrap_or(0) as i32;
                    (num, prio)
                }),
                policy: attr(&m.attrs, 5).and_then(be32),
                kind: attr(&m.attrs, 7).and_then(string),
            })
            .collect())
    }

    /// Every set of the `inet` family.
    pub fn list_sets(&mut self) -> Result<Vec<ListedSet>, NftError> {
        Ok(self
            .dump(msg::GETSET, &[])?
            .iter()
            .map(|m| {
                let field = |ty| attr(&m.attrs, ty).and_then(be32).unwrap_or(0);
                ListedSet {
                    table: attr(&m.attrs, 1).and_then(string).unwrap_or_default(),
                    name: attr(&m.attrs, 2).and_then(string).unwrap_or_default(),
                    flags: field(3),
                    key_type: field(4),
                    key_len: field(5),
                }
            })
            .collect())
    }

    /// The elements of one set, as `(key, interval end)` in the kernel's order: a dump the
    /// kernel filters to that set, so it costs the set's size, not the table's (cheap enough
    /// to poll). For an interval set, an address is a member when the last element whose key
    /// is not above it is a start (not an interval end).
    pub fn set_elements(
        &mut self,
        table: &str,
        set: &str,
    ) -> Result<Vec<(Vec<u8>, bool)>, NftError> {
        const ELEMENTS: u16 = 3;
        const KEY: u16 = 1;
        const FLAGS: u16 = 3;
        const VALUE: u16 = 1;
        const INTERVAL_END: u32 = 1;
        let mut out = Vec::new();
        for m in self.dump(msg::GETSETELEM, &names(&[(1, table), (2, set)]))? {
            let Some(list) = attr(&m.attrs, ELEMENTS) else {
                continue;
            };
            for (_, elem) in attrs(list) {
                let end = attr(elem, FLAGS).and_then(be32).unwrap_or(0) & INTERVAL_END != 0;
                if let Some(key) = attr(elem, KEY).and_then(|k| attr(k, VALUE)) {
                    out.push((key.to_vec(), end));
                }
            }
        }
        Ok(out)
    }

    /// The comments of one chain's rules, in order (a dump the kernel filters to that chain,
    /// so it costs the chain's size, not the table's): cheap enough to poll.
    pub fn rule_comments(&mut self, table: &str, chain: &str) -> Result<Vec<String>, NftError> {
        Ok(self
            .dump(msg::GETRULE, &names(&[(1, table), (2, chain)]))?
            .iter()
            .filter(|m| attr(&m.attrs, 2).and_then(string).as_deref() == Some(chain))
            .filter_map(|m| attr(&m.attrs, 7).and_then(comment))
            .collect())
    }
}

/// String attributes (NUL-terminated, padded to 4 bytes) of a request that names objects.
fn names(attrs: &[(u16, &str)]) -> Vec<u8> {
    let mut req = Vec::new();
    for (ty, v) in attrs {
        let mut data = v.as_bytes().to_vec();
        data.push(0);
        req.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        req.extend_from_slice(&ty.to_ne_bytes());
        req.extend_from_slice(&data);
        while req.len() % 4 != 0 {
            req.push(0);
        }
    }
    req
}
