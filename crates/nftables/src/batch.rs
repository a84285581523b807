//! Encoder of nf_tables netlink messages. Each `add_*`/`delete_*` call appends one message;
//! [`Batch::encode`] wraps them in `NFNL_MSG_BATCH_BEGIN`/`END` so the kernel applies all of
//! them or none. Constants are those of `linux/netfilter/nf_tables.h` and `nfnetlink.h`.

/// `NFNL_SUBSYS_NFTABLES`.
const SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` / `END` (`NLMSG_MIN_TYPE` and the next one).
const MSG_BATCH_BEGIN: u16 = 0x10;
const MSG_BATCH_END: u16 = 0x11;

/// `NFT_MSG_*` message types.
pub(crate) mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const GETCHAIN: u16 = 4;
    pub const GETRULE: u16 = 7;
    pub const DELCHAIN: u16 = 5;
    pub const NEWRULE: u16 = 6;
    pub const DELRULE: u16 = 8;
    pub const NEWSET: u16 = 9;
    pub const GETSET: u16 = 10;
    pub const DELSET: u16 = 11;
    pub const NEWSETELEM: u16 = 12;
    pub const GETSETELEM: u16 = 13;
    pub const DELSETELEM: u16 = 14;
    pub const NEWGEN: u16 = 15;
    pub const GETGEN: u16 = 16;
}

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

/// `NFT_REG_VERDICT` and `NFT_REG_1` (a 16-byte register, enough for an IPv6 address).
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;

/// Table family (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `inet`: IPv4 and IPv6 in one table.
    Inet,
    /// `ip`.
    Ipv4,
    /// `ip6`.
    Ipv6,
}

impl Family {
    fn code(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ipv4 => 2,
            Family::Ipv6 => 10,
        }
    }
}

/// `NFPROTO_IPV4`/`NFPROTO_IPV6` as `meta nfproto` reads them.
pub const NFPROTO_IPV4: u8 = 2;
/// See [`NFPROTO_IPV4`].
pub const NFPROTO_IPV6: u8 = 10;

/// Netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `prerouting`.
    Prerouting,
    /// `input`.
    Input,
    /// `forward`.
    Forward,
    /// `output`.
    Output,
    /// `postrouting`.
    Postrouting,
}

/// A verdict, as an `immediate` expression or as a verdict-map value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `accept`: ends this base chain; the next base chain at the hook still runs.
    Accept,
    /// `drop`: final.
    Drop,
    /// `return` to the calling chain.
    Return,
    /// `jump` to a chain (come back on return).
    Jump(String),
    /// `goto` a chain (no coming back).
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }

    fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// `meta` keys we read (`NFT_META_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// Packet mark.
    Mark,
    /// Input interface name (16 bytes, zero padded).
    IifName,
    /// Output interface name.
    OifName,
    /// `NFPROTO_*` of the packet (in `inet` tables).
    NfProto,
    /// Layer-4 protocol (after IPv6 extension headers).
    L4Proto,
}

impl MetaKey {
    fn code(self) -> u32 {
        match self {
            MetaKey::Mark => 3,
            MetaKey::IifName => 6,
            MetaKey::OifName => 7,
            MetaKey::NfProto => 15,
            MetaKey::L4Proto => 16,
        }
    }
}

/// Comparison of `cmp` (`NFT_CMP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`.
    Eq,
    /// `!=`.
    Neq,
    /// `<=` (big-endian byte order).
    Lte,
    /// `>=`.
    Gte,
}

impl CmpOp {
    fn code(self) -> u32 {
        match self {
            CmpOp::Eq => 0,
            CmpOp::Neq => 1,
            CmpOp::Lte => 3,
            CmpOp::Gte => 5,
        }
    }
}

/// Header a `payload` expression reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    /// The IP header.
    Network,
    /// The transport header.
    Transport,
}

/// One expression of a rule. Loads go to register 1, comparisons and lookups read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Load a `meta` key.
    Meta(MetaKey),
    /// Store register 1 into the packet mark (`meta mark set`).
    SetMark,
    /// Load `len` bytes at `offset` of a header.
    Payload {
        /// Header.
        base: PayloadBase,
        /// Byte offset.
        offset: u32,
        /// Byte length.
        len: u32,
    },
    /// Compare register 1.
    Cmp(CmpOp, Vec<u8>),
    /// Register 1 = (register 1 & mask) ^ xor.
    Bitwise {
        /// Mask.
        mask: Vec<u8>,
        /// Xor (same length as mask).
        xor: Vec<u8>,
    },
    /// Load into a 32-bit register (`NFT_REG32_00` is 8): the parts of a concatenation.
    PayloadReg {
        /// Header.
        base: PayloadBase,
        /// Byte offset.
        offset: u32,
        /// Byte length.
        len: u32,
        /// Destination register.
        reg: u32,
    },
    /// Look up the concatenation starting at a 32-bit register in a named set.
    LookupReg {
        /// Set name.
        set: String,
        /// First register.
        reg: u32,
        /// Negate.
        inverted: bool,
    },
    /// Register 1 is (or with `inverted`, is not) in a named set.
    Lookup {
        /// Set name.
        set: String,
        /// Negate.
        inverted: bool,
    },
    /// Look register 1 up in a verdict map and apply the verdict found.
    VerdictMap(String),
    /// Load the conntrack state bitmask.
    CtState,
    /// Count packets and bytes.
    Counter,
    /// Log with a prefix.
    Log(String),
    /// Exempt the packet from connection tracking (`notrack`; raw-priority chains only).
    Notrack,
    /// Apply a verdict.
    Verdict(Verdict),
    /// Load a constant into a register (`immediate`): the operands of [`Expr::Masq`] and
    /// [`Expr::Snat`].
    Immediate {
        /// Destination register (`NFT_REG_1`..`NFT_REG_4`: 1..4).
        reg: u32,
        /// Value (network byte order).
        data: Vec<u8>,
    },
    /// Source NAT to the address of the outgoing interface (`masquerade`), with the source
    /// port taken from the range in registers `proto_regs` (min, max) when given. Terminal
    /// (like an `accept`) for the packet's pass through the chain.
    Masq {
        /// Registers holding the lowest and highest source port.
        proto_regs: Option<(u32, u32)>,
    },
    /// Source NAT to the address in register `addr_reg` (`snat to`), with the source port
    /// from `proto_regs` when given. Terminal like [`Expr::Masq`].
    Snat {
        /// `NFPROTO_IPV4` or `NFPROTO_IPV6`: the family of the address.
        family: u8,
        /// Register holding the address.
        addr_reg: u32,
        /// Registers holding the lowest and highest source port.
        proto_regs: Option<(u32, u32)>,
    },
}

/// `NF_NAT_RANGE_MAP_IPS`: the NAT maps the address.
const NAT_RANGE_MAP_IPS: u32 = 1;
/// `NF_NAT_RANGE_PROTO_SPECIFIED`: the NAT maps the port into the given range.
const NAT_RANGE_PROTO_SPECIFIED: u32 = 2;

/// `ct state` bits (`NF_CT_STATE_*_BIT`).
pub mod ct {
    /// invalid.
    pub const INVALID: u32 = 1;
    /// established.
    pub const ESTABLISHED: u32 = 1 << 1;
    /// related.
    pub const RELATED: u32 = 1 << 2;
    /// new.
    pub const NEW: u32 = 1 << 3;
    /// untracked (exempted by `notrack`).
    pub const UNTRACKED: u32 = 1 << 6;
}

/// Type of a base chain (`NFTA_CHAIN_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChainType {
    /// `filter`: sees every packet.
    #[default]
    Filter,
    /// `nat`: sees the first packet of each connection only; its NAT statements set the
    /// connection's mapping, which conntrack then applies to every later packet.
    Nat,
}

impl ChainType {
    /// The kernel's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        }
    }
}

/// A chain to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    /// Name.
    pub name: String,
    /// `Some` for a base chain: hook, priority and policy (only Accept or Drop).
    pub base: Option<(Hook, i32, Verdict)>,
    /// Type of a base chain (ignored for a regular chain).
    pub kind: ChainType,
}

impl ChainSpec {
    /// A regular chain (reached by jump/goto only).
    pub fn regular(name: &str) -> ChainSpec {
        ChainSpec {
            name: name.to_owned(),
            base: None,
            kind: ChainType::Filter,
        }
    }

    /// A `filter` base chain.
    pub fn base(name: &str, hook: Hook, priority: i32, policy: Verdict) -> ChainSpec {
        ChainSpec {
            name: name.to_owned(),
            base: Some((hook, priority, policy)),
            kind: ChainType::Filter,
        }
    }

    /// A `nat` base chain (policy accept: a NAT chain never drops).
    pub fn nat(name: &str, hook: Hook, priority: i32) -> ChainSpec {
        ChainSpec {
            name: name.to_owned(),
            base: Some((hook, priority, Verdict::Accept)),
            kind: ChainType::Nat,
        }
    }
}

/// Key types of sets, as nft names them (`TYPE_*` of nft's datatype.h, stored so that `nft`
/// can print the set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `ipv4_addr`.
    Ipv4Addr,
    /// `ipv6_addr`.
    Ipv6Addr,
    /// `inet_service` (a port).
    InetService,
    /// `ifname`.
    IfName,
    /// `ipv4_addr . inet_service` (named ports).
    Ipv4AddrPort,
    /// `ipv6_addr . inet_service`.
    Ipv6AddrPort,
}

impl KeyType {
    /// nft's type id, as stored in the kernel.
    pub fn code(self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 7,
            KeyType::Ipv6Addr => 8,
            KeyType::InetService => 13,
            KeyType::IfName => 41,
            // nft's concatenated types: the parts' ids shifted by TYPE_BITS (6) each.
            KeyType::Ipv4AddrPort => (7 << 6) | 13,
            KeyType::Ipv6AddrPort => (8 << 6) | 13,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 4,
            KeyType::Ipv6Addr => 16,
            KeyType::InetService => 2,
            KeyType::IfName => 16,
            // Each part padded to 4 bytes, as registers hold them.
            KeyType::Ipv4AddrPort => 8,
            KeyType::Ipv6AddrPort => 20,
        }
    }
}

/// A named set (or verdict map) to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// Name.
    pub name: String,
    /// Key type.
    pub key: KeyType,
    /// Holds ranges (CIDRs, port ranges): elements come as start / interval-end pairs.
    pub interval: bool,
    /// A verdict map rather than a set.
    pub verdict_map: bool,
}

/// One set element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetElem {
    /// Key bytes (network byte order).
    pub key: Vec<u8>,
    /// Marks the first key after a range (interval sets).
    pub interval_end: bool,
    /// Value of a verdict-map element.
    pub verdict: Option<Verdict>,
}

impl SetElem {
    /// A plain key.
    pub fn key(key: Vec<u8>) -> SetElem {
        SetElem {
            key,
            interval_end: false,
            verdict: None,
        }
    }
}

/// A netlink attribute buffer.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }

    fn str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(ty, &v);
    }

    fn be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    fn be64(&mut self, ty: u16, v: u64) {
        self.put(ty, &v.to_be_bytes());
    }

    fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Attrs)) {
        let mut inner = Attrs::default();
        f(&mut inner);
        self.put(ty | NLA_F_NESTED, &inner.0);
    }

    /// `NFTA_DATA_VALUE` inside a nested data attribute.
    fn data_value(&mut self, ty: u16, value: &[u8]) {
        self.nest(ty, |a| a.put(1, value));
    }

    /// `NFTA_DATA_VERDICT` inside a nested data attribute.
    fn data_verdict(&mut self, ty: u16, v: &Verdict) {
        self.nest(ty, |a| {
            a.nest(2, |a| {
                a.be32(1, v.code() as u32);
                if let Some(chain) = v.chain() {
                    a.str(2, chain);
                }
            })
        });
    }
}

/// One message of a batch, kept with a description of the object it touches so that an
/// error can name it.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub ty: u16,
    pub flags: u16,
    pub family: u8,
    pub attrs: Vec<u8>,
    pub what: String,
}

/// A transaction under construction.
#[derive(Debug, Clone)]
pub struct Batch {
    family: Family,
    pub(crate) messages: Vec<Message>,
}

impl Batch {
    /// An empty batch for tables of `family`.
    pub fn new(family: Family) -> Batch {
        Batch {
            family,
            messages: Vec::new(),
        }
    }

    /// Number of messages (without the batch delimiters).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// No message yet.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn push(&mut self, ty: u16, flags: u16, attrs: Attrs, what: String) {
        self.messages.push(Message {
            ty,
            // No NLM_F_ACK: nfnetlink reports every failed message of a batch anyway, and an
            // acknowledgement per message overflows the socket's receive buffer (ENOBUFS)
            // for tables of tens of thousands of rules.
            flags: NLM_F_REQUEST | flags,
            family: self.family.code(),
            attrs: attrs.0,
            what,
        });
    }

    /// Create a table; no error when it exists (so that a following delete always succeeds).
    pub fn add_table(&mut self, name: &str) {
        let mut a = Attrs::default();
        a.str(1, name);
        self.push(msg::NEWTABLE, NLM_F_CREATE, a, format!("table {name}"));
    }

    /// Delete a table with everything in it.
    pub fn delete_table(&mut self, name: &str) {
        let mut a = Attrs::default();
        a.str(1, name);
        self.push(msg::DELTABLE, 0, a, format!("table {name} (delete)"));
    }

    /// Create a chain.
    pub fn add_chain(&mut self, table: &str, chain: &ChainSpec) {
        let mut a = Attrs::default();
        a.str(1, table);
        a.str(3, &chain.name);
        if let Some((hook, prio, policy)) = &chain.base {
            let num = match hook {
                Hook::Prerouting => 0,
                Hook::Input => 1,
                Hook::Forward => 2,
                Hook::Output => 3,
                Hook::Postrouting => 4,
            };
            a.nest(4, |h| {
                h.be32(1, num);
                h.be32(2, *prio as u32);
            });
            a.be32(5, policy.code() as u32);
            a.str(7, chain.kind.name());
        }
        self.push(
            msg::NEWCHAIN,
            NLM_F_CREATE,
            a,
            format!("chain {table} {}", chain.name),
        );
    }

    /// Append a rule to a chain; `comment` is stored as nft's rule comment.
    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr], comment: Option<&str>) {
        let mut a = Attrs::default();
        a.str(1, table);
        a.str(2, chain);
        a.nest(4, |list| {
            for e in exprs {
                list.nest(1, |elem| encode_expr(elem, e));
            }
        });
        if let Some(c) = comment {
            // nftnl user data: TLV of NFTNL_UDATA_RULE_COMMENT (0), NUL-terminated, < 256.
            let mut text: Vec<u8> = c.bytes().take(250).collect();
            text.push(0);
            let mut ud = vec![0u8, text.len() as u8];
            ud.extend_from_slice(&text);
            a.put(7, &ud);
        }
        self.push(
            msg::NEWRULE,
            NLM_F_CREATE | 0x800, // NLM_F_APPEND
            a,
            format!("rule in chain {table} {chain}{}", describe(comment)),
        );
    }

    /// Create a named set or verdict map.
    pub fn add_set(&mut self, table: &str, set: &SetSpec) {
        let mut a = Attrs::default();
        a.str(1, table);
        a.str(2, &set.name);
        let mut flags = 0;
        if set.interval {
            flags |= 0x4;
        }
        if set.verdict_map {
            flags |= 0x8;
        }
        a.be32(3, flags);
        a.be32(4, set.key.code());
        a.be32(5, set.key.key_len());
        if set.verdict_map {
            a.be32(6, 0xffff_ff00); // NFT_DATA_VERDICT
        }
        // nftnl user data NFTNL_UDATA_SET_KEYBYTEORDER: tells `nft` how to print keys (an
        // interface name is a host-order string, addresses and ports are big endian).
        let order: u32 = if set.key == KeyType::IfName { 1 } else { 2 };
        let mut ud = vec![0u8, 4];
        ud.extend_from_slice(&order.to_ne_bytes());
        a.put(13, &ud);
        // NFTA_SET_ID: lets the kernel resolve references within this transaction.
        a.be32(10, self.messages.len() as u32 + 1);
        self.push(
            msg::NEWSET,
            NLM_F_CREATE,
            a,
            format!("set {table} {}", set.name),
        );
    }

    /// Add elements to a set.
    pub fn add_elements(&mut self, table: &str, set: &str, elems: &[SetElem]) {
        // Kernel messages are bounded; split long lists.
        for chunk in elems.chunks(512) {
            let a = elem_list(table, set, chunk);
            self.push(
                msg::NEWSETELEM,
                NLM_F_CREATE,
                a,
                format!("{} elements of set {table} {set}", chunk.len()),
            );
        }
    }

    /// Remove elements from a set.
    pub fn delete_elements(&mut self, table: &str, set: &str, elems: &[SetElem]) {
        for chunk in elems.chunks(512) {
            let a = elem_list(table, set, chunk);
            self.push(
                msg::DELSETELEM,
                0,
                a,
                format!("{} elements of set {table} {set} (delete)", chunk.len()),
            );
        }
    }

    /// Remove every rule of a chain; the chain (and its handle) stays.
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        let mut a = Attrs::default();
        a.str(1, table);
        a.str(2, chain);
        self.push(msg::DELRULE, 0, a, format!("chain {table} {chain} (flush)"));
    }

    /// Delete an empty chain nothing refers to.
    pub fn delete_chain(&mut self, table: &str, chain: &str) {
        let mut a = Attrs::default();
        a.str(1, table);
        a.str(3, chain);
        self.push(
            msg::DELCHAIN,
            0,
            a,
            format!("chain {table} {chain} (delete)"),
        );
    }

    /// Delete a set nothing refers to.
    pub fn delete_set(&mut self, table: &str, set: &str) {
        let mut a = Attrs::default();
        a.str(1, table);
        a.str(2, set);
        self.push(msg::DELSET, 0, a, format!("set {table} {set} (delete)"));
    }

    /// Appends the messages of another batch (same family).
    pub fn append(&mut self, other: Batch) {
        self.messages.extend(other.messages);
    }

    /// Descriptions of the messages, in order (what each one touches; tests and logs).
    pub fn describe(&self) -> Vec<&str> {
        self.messages.iter().map(|m| m.what.as_str()).collect()
    }

    /// Remove every element of a set.
    pub fn flush_set(&mut self, table: &str, set: &str) {
        let mut a = Attrs::default();
        a.str(1, table);
        a.str(2, set);
        self.push(msg::DELSETELEM, 0, a, format!("set {table} {set} (flush)"));
    }

    /// The datagram: batch begin, the messages with sequence numbers from `first_seq`, batch
    /// end. Returns it with, per sequence number, the message's description.
    pub(crate) fn encode(&self, first_seq: u32) -> (Vec<u8>, Vec<(u32, String)>) {
        let mut out = Vec::new();
        let mut seqs = Vec::new();
        let mut seq = first_seq;
        let res_id = SUBSYS_NFTABLES.to_be_bytes();
        put_msg(
            &mut out,
            MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            0,
            res_id,
            &[],
        );
        for m in &self.messages {
            seq += 1;
            let ty = (SUBSYS_NFTABLES << 8) | m.ty;
            put_msg(&mut out, ty, m.flags, seq, m.family, [0, 0], &m.attrs);
            seqs.push((seq, m.what.clone()));
        }
        seq += 1;
        put_msg(&mut out, MSG_BATCH_END, NLM_F_REQUEST, seq, 0, res_id, &[]);
        (out, seqs)
    }
}

fn describe(comment: Option<&str>) -> String {
    comment.map(|c| format!(" ({c})")).unwrap_or_default()
}

fn elem_list(table: &str, set: &str, elems: &[SetElem]) -> Attrs {
    let mut a = Attrs::default();
    a.str(1, table);
    a.str(2, set);
    a.nest(3, |list| {
        for e in elems {
            list.nest(1, |el| {
                el.data_value(1, &e.key);
                if let Some(v) = &e.verdict {
                    el.data_verdict(2, v);
                }
                if e.interval_end {
                    el.be32(3, 1);
                }
            });
        }
    });
    a
}

/// Appends one netlink message: nlmsghdr, nfgenmsg, attributes.
pub(crate) fn put_msg(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: [u8; 2],
    attrs: &[u8],
) {
    let len = 16 + 4 + attrs.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0, res_id[0], res_id[1]]);
    out.extend_from_slice(attrs);
}

fn encode_expr(a: &mut Attrs, e: &Expr) {
    let (name, data): (&str, Attrs) = match e {
        Expr::Meta(key) => ("meta", {
            let mut d = Attrs::default();
            d.be32(1, REG_1);
            d.be32(2, key.code());
            d
        }),
        Expr::SetMark => ("meta", {
            let mut d = Attrs::default();
            d.be32(2, MetaKey::Mark.code());
            d.be32(3, REG_1);
            d
        }),
        Expr::Payload { base, offset, len } => ("payload", {
            let mut d = Attrs::default();
            d.be32(1, REG_1);
            d.be32(
                2,
                match base {
                    PayloadBase::Network => 1,
                    PayloadBase::Transport => 2,
                },
            );
            d.be32(3, *offset);
            d.be32(4, *len);
            d
        }),
        Expr::PayloadReg {
            base,
            offset,
            len,
            reg,
        } => ("payload", {
            let mut d = Attrs::default();
            d.be32(1, *reg);
            d.be32(
                2,
                match base {
                    PayloadBase::Network => 1,
                    PayloadBase::Transport => 2,
                },
            );
            d.be32(3, *offset);
            d.be32(4, *len);
            d
        }),
        Expr::LookupReg { set, reg, inverted } => ("lookup", {
            let mut d = Attrs::default();
            d.str(1, set);
            d.be32(2, *reg);
            if *inverted {
                d.be32(5, 1);
            }
            d
        }),
        Expr::Cmp(op, value) => ("cmp", {
            let mut d = Attrs::default();
            d.be32(1, REG_1);
            d.be32(2, op.code());
            d.data_value(3, value);
            d
        }),
        Expr::Bitwise { mask, xor } => ("bitwise", {
            let mut d = Attrs::default();
            d.be32(1, REG_1);
            d.be32(2, REG_1);
            d.be32(3, mask.len() as u32);
            d.data_value(4, mask);
            d.data_value(5, xor);
            d
        }),
        Expr::Lookup { set, inverted } => ("lookup", {
            let mut d = Attrs::default();
            d.str(1, set);
            d.be32(2, REG_1);
            if *inverted {
                d.be32(5, 1); // NFT_LOOKUP_F_INV
            }
            d
        }),
        Expr::VerdictMap(set) => ("lookup", {
            let mut d = Attrs::default();
            d.str(1, set);
            d.be32(2, REG_1);
            d.be32(3, REG_VERDICT);
            d
        }),
        Expr::CtState => ("ct", {
            let mut d = Attrs::default();
            d.be32(1, REG_1);
            d.be32(2, 0); // NFT_CT_STATE
            d
        }),
        Expr::Counter => ("counter", {
            let mut d = Attrs::default();
            d.be64(1, 0);
            d.be64(2, 0);
            d
        }),
        Expr::Log(prefix) => ("log", {
            let mut d = Attrs::default();
            d.str(2, prefix);
            d
        }),
        Expr::Notrack => ("notrack", Attrs::default()),
        Expr::Immediate { reg, data } => ("immediate", {
            let mut d = Attrs::default();
            d.be32(1, *reg);
            d.data_value(2, data);
            d
        }),
        Expr::Masq { proto_regs } => ("masq", {
            let mut d = Attrs::default();
            if let Some((min, max)) = proto_regs {
                d.be32(1, NAT_RANGE_PROTO_SPECIFIED); // NFTA_MASQ_FLAGS
                d.be32(2, *min);
                d.be32(3, *max);
            }
            d
        }),
        Expr::Snat {
            family,
            addr_reg,
            proto_regs,
        } => ("nat", {
            let mut d = Attrs::default();
            d.be32(1, 0); // NFT_NAT_SNAT
            d.be32(2, u32::from(*family));
            d.be32(3, *addr_reg);
            d.be32(4, *addr_reg);
            let mut flags = NAT_RANGE_MAP_IPS;
            if let Some((min, max)) = proto_regs {
                d.be32(5, *min);
                d.be32(6, *max);
                flags |= NAT_RANGE_PROTO_SPECIFIED;
            }
            d.be32(7, flags);
            d
        }),
        Expr::Verdict(v) => ("immediate", {
            let mut d = Attrs::default();
            d.be32(1, REG_VERDICT);
            d.data_verdict(2, v);
            d
        }),
    };
    a.str(1, name);
    a.nest(2, |d| d.0.extend_from_slice(&data.0));
}

/// Helpers composing the expressions of common matches.
pub mod matches {
    use super::*;

    /// The interface name as `meta iifname`/`oifname` loads it: 16 bytes, zero padded.
    pub fn ifname_key(name: &str) -> Vec<u8> {
        let mut k = name.as_bytes().to_vec();
        k.resize(16, 0);
        k
    }

    /// `meta <key> == value`.
    pub fn meta_eq(key: MetaKey, value: Vec<u8>) -> Vec<Expr> {
        vec![Expr::Meta(key), Expr::Cmp(CmpOp::Eq, value)]
    }

    /// `ct state & bits != 0`.
    pub fn ct_state_any(bits: u32) -> Vec<Expr> {
        vec![
            Expr::CtState,
            Expr::Bitwise {
                mask: bits.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::Cmp(CmpOp::Neq, vec![0; 4]),
        ]
    }

    /// `meta mark & bits != 0`.
    pub fn mark_any(bits: u32) -> Vec<Expr> {
        vec![
            Expr::Meta(MetaKey::Mark),
            Expr::Bitwise {
                mask: bits.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::Cmp(CmpOp::Neq, vec![0; 4]),
        ]
    }

    /// `meta mark set meta mark & ~bits | (set ? bits : 0)`.
    pub fn mark_update(bits: u32, set: bool) -> Vec<Expr> {
        vec![
            Expr::Meta(MetaKey::Mark),
            Expr::Bitwise {
                mask: (!bits).to_ne_bytes().to_vec(),
                xor: if set { bits } else { 0 }.to_ne_bytes().to_vec(),
            },
            Expr::SetMark,
        ]
    }
}
