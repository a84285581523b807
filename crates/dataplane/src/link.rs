//! Links: look-up, veth pairs across namespaces, up/down, MAC, MTU, delete.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use calico_dataplane::{Netlink, VethSpec, CALICO_HOST_MAC};
//! let nl = Netlink::connect()?;
//! // Host side `calicce21fc3677` here, `cali0` inside the container's namespace.
//! let pair = nl
//!     .create_veth(&VethSpec {
//!         host_mac: Some(CALICO_HOST_MAC),
//!         ..VethSpec::new("calicce21fc3677", "cali0", "/proc/4242/ns/net")
//!     })
//!     .await?;
//! nl.delete_link("calicce21fc3677").await?; // the peer goes with it
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::conn::{Netlink, errno, is_not_found};
use crate::netns::{NetnsError, NetnsFile};

/// The MAC Calico gives every host-side workload veth.
pub const CALICO_HOST_MAC: [u8; 6] = [0xee; 6];

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Errors changing links.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("interface name {name:?} is not valid: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("no interface {name}")]
    NotFound { name: String },
    #[error("{op} interface {name} failed")]
    Netlink {
        op: &'static str,
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("interface {name} already exists in {netns}")]
    PeerExists { name: String, netns: PathBuf },
    #[error("cannot use network namespace for interface {name}")]
    Netns {
        name: String,
        #[source]
        source: NetnsError,
    },
    #[error("cannot open netlink in {netns} for interface {name}")]
    Connect {
        name: String,
        netns: PathBuf,
        #[source]
        source: Box<crate::conn::ConnectError>,
    },
}

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operationally up (IFF_RUNNING: carrier, peer up for a veth).
    pub running: bool,
    pub mtu: Option<u32>,
}

impl Link {
    pub(crate) fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            up: m.header.flags.contains(LinkFlags::Up),
            running: m.header.flags.contains(LinkFlags::Running),
            mtu: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) if a.len() == 6 => {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(a);
                    link.mac = Some(mac);
                }
                LinkAttribute::Mtu(m) => link.mtu = Some(*m),
                _ => {}
            }
        }
        link
    }
}

/// A veth pair to create: `host_name` stays in the connection's namespace, `peer_name` ends up
/// in the namespace at `peer_netns`.
#[derive(Debug, Clone)]
pub struct VethSpec {
    pub host_name: String,
    pub peer_name: String,
    /// `/run/netns/NAME` or `/proc/PID/ns/net`.
    pub peer_netns: PathBuf,
    pub host_mac: Option<[u8; 6]>,
    pub peer_mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Bring the host side up (the peer is always brought up).
    pub host_up: bool,
}

impl VethSpec {
    pub fn new(host_name: &str, peer_name: &str, peer_netns: impl Into<PathBuf>) -> VethSpec {
        VethSpec {
            host_name: host_name.to_owned(),
            peer_name: peer_name.to_owned(),
            peer_netns: peer_netns.into(),
            host_mac: None,
            peer_mac: None,
            mtu: None,
            host_up: true,
        }
    }
}

/// The pair as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPair {
    pub host: Link,
    pub peer: Link,
}

/// What [`Netlink::create_veth_direct`] made, as requested (nothing is read back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethCreated {
    pub host_name: String,
    pub peer_name: String,
    /// `None`: the kernel picked one (the spec did not ask for a host MAC).
    pub host_mac: Option<[u8; 6]>,
    pub peer_mac: [u8; 6],
}

/// A random locally administered unicast MAC (what the kernel's `eth_hw_addr_random` makes).
pub fn random_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// Checks an interface name as the kernel would (`dev_valid_name`).
pub fn check_ifname(name: &str) -> Result<(), LinkError> {
    let bad = |reason| LinkError::BadName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > IFNAME_MAX {
        return Err(bad("longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("reserved name"));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        return Err(bad("contains '/', ':' or whitespace"));
    }
    Ok(())
}

/// Formats a MAC as `ee:ee:ee:ee:ee:ee`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Netlink {
    /// The link called `name`, or `None`.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, LinkError> {
        check_ifname(name)?;
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match stream.try_next().await {
            Ok(Some(m)) => Ok(Some(Link::from_message(&m))),
            Ok(None) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(LinkError::Netlink {
                op: "look up",
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// The link called `name`; an error naming it if there is none.
    pub async fn require_link(&self, name: &str) -> Result<Link, LinkError> {
        self.link(name).await?.ok_or_else(|| LinkError::NotFound {
            name: name.to_owned(),
        })
    }

    /// Every link in this namespace.
    pub async fn links(&self) -> Result<Vec<Link>, LinkError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| LinkError::Netlink {
                op: "list",
                name: "*".into(),
                source,
            })?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// Creates a veth pair with the peer moved into `spec.peer_netns` and named
    /// `spec.peer_name` there, both ends up. Replace semantics: an existing link named
    /// `spec.host_name` here is deleted first (with its peer).
    pub async fn create_veth(&self, spec: &VethSpec) -> Result<VethPair, LinkError> {
        check_ifname(&spec.host_name)?;
        check_ifname(&spec.peer_name)?;
        let ns = NetnsFile::open(&spec.peer_netns).map_err(|source| LinkError::Netns {
            name: spec.peer_name.clone(),
            source,
        })?;
        let peer_nl =
            Netlink::connect_in(&spec.peer_netns).map_err(|source| LinkError::Connect {
                name: spec.peer_name.clone(),
                netns: spec.peer_netns.clone(),
                source: Box::new(source),
            })?;
        self.delete_link(&spec.host_name).await?;
        if peer_nl.link(&spec.peer_name).await?.is_some() {
            return Err(LinkError::PeerExists {
                name: spec.peer_name.clone(),
                netns: spec.peer_netns.clone(),
            });
        }
        // The peer starts here under a unique temporary name, so it cannot collide with a
        // link of the final name in this namespace (every container's `eth0`).
        let tmp = format!("tmp{:08x}", rand::random::<u32>());
        let mut builder = LinkVeth::new(&spec.host_name, &tmp);
        if let Some(mtu) = spec.mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(mac) = spec.host_mac {
            builder = builder.address(mac.to_vec());
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|source| LinkError::Netlink {
                op: "create veth",
                name: spec.host_name.clone(),
                source,
            })?;
        let result = self.finish_veth(spec, &tmp, &ns, &peer_nl).await;
        if result.is_err() {
            // Leave nothing behind: deleting the host side removes the peer too.
            let _ = self.delete_link(&spec.host_name).await;
        }
        result
    }

    async fn finish_veth(
        &self,
        spec: &VethSpec,
        tmp: &str,
        ns: &NetnsFile,
        peer_nl: &Netlink,
    ) -> Result<VethPair, LinkError> {
        let tmp_link = self.require_link(tmp).await?;
        let mut peer_msg = LinkUnspec::new_with_index(tmp_link.index)
            .setns_by_fd(ns.fd())
            .name(spec.peer_name.clone());
        if let Some(mac) = spec.peer_mac {
            peer_msg = peer_msg.address(mac.to_vec());
        }
        if let Some(mtu) = spec.mtu {
            peer_msg = peer_msg.mtu(mtu);
        }
        self.handle
            .link()
            .set(peer_msg.build())
            .execute()
            .await
            .map_err(|source| LinkError::Netlink {
                op: "move veth peer into its namespace",
                name: spec.peer_name.clone(),
                source,
            })?;
        peer_nl.set_link_up(&spec.peer_name, true).await?;
        if spec.host_up {
            self.set_link_up(&spec.host_name, true).await?;
        }
        Ok(VethPair {
            host: self.require_link(&spec.host_name).await?,
            peer: peer_nl.require_link(&spec.peer_name).await?,
        })
    }

    /// Like [`Netlink::create_veth`], in ONE `RTM_NEWLINK` request: the peer is born inside
    /// `spec.peer_netns` under its final name (`IFLA_NET_NS_FD` in the peer's attributes), with
    /// its MAC and MTU; the host end is created up when `spec.host_up`. The peer is left DOWN:
    /// the kernel cannot open a veth end before its pair is linked (`veth_open` says ENOTCONN),
    /// so the caller brings it up from inside its namespace, where it configures it anyway
    /// (unlike [`Netlink::create_veth`], which does that itself). No temporary name, no
    /// rename, no move (a move costs the kernel a `synchronize_net`), no socket in the peer
    /// namespace and no read-back: the peer MAC is generated here when `spec.peer_mac` is `None` (a random
    /// locally administered unicast address, as the kernel would pick), so the caller knows
    /// both MACs without asking. Replace semantics for `spec.host_name` like `create_veth`;
    /// an existing `spec.peer_name` in the peer namespace is [`LinkError::PeerExists`].
    pub async fn create_veth_direct(&self, spec: &VethSpec) -> Result<VethCreated, LinkError> {
        check_ifname(&spec.host_name)?;
        check_ifname(&spec.peer_name)?;
        let ns = NetnsFile::open(&spec.peer_netns).map_err(|source| LinkError::Netns {
            name: spec.peer_name.clone(),
            source,
        })?;
        self.delete_link(&spec.host_name).await?;
        let peer_mac = spec.peer_mac.unwrap_or_else(random_mac);
        let mut peer = LinkUnspec::new_with_name(&spec.peer_name)
            .setns_by_fd(ns.fd())
            .address(peer_mac.to_vec());
        let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.host_name.clone());
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
            host = host.mtu(mtu);
        }
        if let Some(mac) = spec.host_mac {
            host = host.address(mac.to_vec());
        }
        if spec.host_up {
            host = host.up();
        }
        let msg = host
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => {}
            // The host name was free a moment ago (deleted above): the clash is the peer's.
            Err(e) if is_exists(&e) && self.link(&spec.host_name).await?.is_none() => {
                return Err(LinkError::PeerExists {
                    name: spec.peer_name.clone(),
                    netns: spec.peer_netns.clone(),
                });
            }
            Err(source) => {
                return Err(LinkError::Netlink {
                    op: "create veth",
                    name: spec.host_name.clone(),
                    source,
                });
            }
        }
        Ok(VethCreated {
            host_name: spec.host_name.clone(),
            peer_name: spec.peer_name.clone(),
            host_mac: spec.host_mac,
            peer_mac,
        })
    }

    async fn set_link(
        &self,
        name: &str,
        op: &'static str,
        build: impl FnOnce(
            rtnetlink::LinkMessageBuilder<LinkUnspec>,
        ) -> rtnetlink::LinkMessageBuilder<LinkUnspec>,
    ) -> Result<(), LinkError> {
        let link = self.require_link(name).await?;
        let msg = build(LinkUnspec::new_with_index(link.index)).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| LinkError::Netlink {
                op,
                name: name.to_owned(),
                source,
            })
    }

    /// Sets the link administratively up or down.
    pub async fn set_link_up(&self, name: &str, up: bool) -> Result<(), LinkError> {
        if up {
            self.set_link(name, "set up", |b| b.up()).await
        } else {
            self.set_link(name, "set down", |b| b.down()).await
        }
    }

    /// Sets the link's MAC address.
    pub async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), LinkError> {
        self.set_link(name, "set MAC of", |b| b.address(mac.to_vec()))
            .await
    }

    /// Sets the link's MTU.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), LinkError> {
        self.set_link(name, "set MTU of", |b| b.mtu(mtu)).await
    }

    /// Deletes the link; returns false if there was none (deleting what is gone is fine).
    pub async fn delete_link(&self, name: &str) -> Result<bool, LinkError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(LinkError::Netlink {
                op: "delete",
                name: name.to_owned(),
                source,
            }),
        }
    }
}

/// Whether an error is `EEXIST` (used by callers that want create-only semantics).
pub fn is_exists(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(libc::EEXIST)
}
