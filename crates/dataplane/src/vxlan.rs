//! VXLAN tunnel devices and the per-peer entries the kernel needs to use them: one forwarding
//! (FDB) entry per remote VTEP (its MAC → its host address) and one neighbour entry (its
//! tunnel address → its MAC), both permanent, as Felix programs `vxlan.calico`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use calico_dataplane::Netlink;
//! use calico_dataplane::vxlan::{VxlanSpec, Vtep};
//! let nl = Netlink::connect()?;
//! nl.ensure_vxlan(&VxlanSpec {
//!     name: "vxlan.calico".into(),
//!     vni: 4096,
//!     port: 4789,
//!     local: "192.168.33.11".parse()?,
//!     mac: [0x66, 0x1f, 0x2a, 0x00, 0x00, 0x01],
//!     mtu: 1450,
//! })
//! .await?;
//! // node2: VTEP MAC 66:..:02 at 192.168.34.12, tunnel address 10.65.1.0.
//! nl.set_vtep("vxlan.calico", &Vtep {
//!     mac: [0x66, 0x1f, 0x2a, 0x00, 0x00, 0x02],
//!     host: "192.168.34.12".parse()?,
//!     tunnel: "10.65.1.0".parse()?,
//! })
//! .await?;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use rtnetlink::{LinkMessageBuilder, LinkVxlan};

use crate::conn::{Netlink, is_not_found};
use crate::link::{Link, LinkError, check_ifname, format_mac};

/// Errors programming a VXLAN device or its entries.
#[derive(Debug, thiserror::Error)]
pub enum VxlanError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{op} on {ifname} failed")]
    Netlink {
        op: String,
        ifname: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{name} exists and is not a VXLAN device")]
    NotVxlan { name: String },
}

/// The device as it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// This host's underlay address: the source of the encapsulated packets.
    pub local: IpAddr,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// What the kernel has of a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub link: Link,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    pub learning: Option<bool>,
}

/// What [`Netlink::ensure_vxlan`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// Everything was right: nothing was written.
    Unchanged,
    /// Created (or re-created because the VNI, port or local address differed).
    Created,
    /// Fixed in place (MAC, MTU or up).
    Updated,
}

/// A remote VXLAN tunnel endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vtep {
    /// The remote device's MAC.
    pub mac: [u8; 6],
    /// The remote host's underlay address (where encapsulated packets go).
    pub host: IpAddr,
    /// The remote device's tunnel address (the next hop of routes through the tunnel).
    pub tunnel: IpAddr,
}

/// One permanent FDB entry of a VXLAN device: `MAC dst HOST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub host: IpAddr,
}

/// One permanent neighbour entry: `TUNNEL lladdr MAC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighEntry {
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

fn vxlan_info(m: &LinkMessage) -> Option<Vec<InfoVxlan>> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.clone()),
            _ => None,
        }),
        _ => None,
    })
}

fn device_from(m: &LinkMessage, info: &[InfoVxlan]) -> VxlanDevice {
    let mut d = VxlanDevice {
        link: Link::from_message(m),
        vni: None,
        port: None,
        local: None,
        learning: None,
    };
    for i in info {
        match i {
            InfoVxlan::Id(v) => d.vni = Some(*v),
            InfoVxlan::Port(p) => d.port = Some(*p),
            InfoVxlan::Local(a) => d.local = Some(IpAddr::V4(*a)),
            InfoVxlan::Local6(a) => d.local = Some(IpAddr::V6(*a)),
            InfoVxlan::Learning(l) => d.learning = Some(*l),
            _ => {}
        }
    }
    d
}

fn mac_of(bytes: &[u8]) -> Option<[u8; 6]> {
    <[u8; 6]>::try_from(bytes).ok()
}

fn ip_of(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        NeighbourAddress::Other(b) => match b.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(&b[..]).ok()?,
            ))),
            16 => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&b[..]).ok()?,
            ))),
            _ => None,
        },
        _ => None,
    }
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// The delete message for an FDB entry (`bridge fdb del MAC dev IF dst HOST self`).
fn fdb_message(ifindex: u32, e: &FdbEntry) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(e.host)));
    m
}

fn neigh_message(ifindex: u32, e: &NeighEntry) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if e.ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(e.ip)));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
    m
}

impl Netlink {
    /// The VXLAN device `name`: `None` if there is no link of that name, an error if the link
    /// is something else.
    pub async fn vxlan_device(&self, name: &str) -> Result<Option<VxlanDevice>, VxlanError> {
        check_ifname(name)?;
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let msg = match stream.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(source) => {
                return Err(VxlanError::Netlink {
                    op: "look up".into(),
                    ifname: name.to_owned(),
                    source,
                });
            }
        };
        match vxlan_info(&msg) {
            Some(info) => Ok(Some(device_from(&msg, &info))),
            None => Err(VxlanError::NotVxlan {
                name: name.to_owned(),
            }),
        }
    }

    /// Brings the device to `spec`, writing only what differs: a device whose VNI, port or
    /// local address differs is re-created (the kernel cannot change them in place); MAC,
    /// MTU and the up state are fixed in place. Learning is off (Calico programs every entry).
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<Ensured, VxlanError> {
        check_ifname(&spec.name)?;
        let existing = self.vxlan_device(&spec.name).await?;
        if let Some(d) = &existing {
            let same_tunnel = d.vni == Some(spec.vni)
                && d.port == Some(spec.port)
                && d.local == Some(spec.local)
                && d.learning != Some(true);
            if same_tunnel {
                let mut changed = false;
                if d.link.mac != Some(spec.mac) {
                    self.set_mac(&spec.name, spec.mac).await?;
                    changed = true;
                }
                if d.link.mtu != Some(spec.mtu) {
                    self.set_mtu(&spec.name, spec.mtu).await?;
                    changed = true;
                }
                if !d.link.up {
                    self.set_link_up(&spec.name, true).await?;
                    changed = true;
                }
                return Ok(if changed {
                    Ensured::Updated
                } else {
                    Ensured::Unchanged
                });
            }
            tracing::info!(device = %spec.name, ?d, "VXLAN device differs from its settings; re-creating it");
            self.delete_link(&spec.name).await?;
        }
        let mut b: LinkMessageBuilder<LinkVxlan> =
            LinkVxlan::new(&spec.name, spec.vni).port(spec.port);
        b = match spec.local {
            IpAddr::V4(a) => b.local(a),
            IpAddr::V6(a) => b.local6(a),
        };
        let msg = b
            .learning(false)
            .mtu(spec.mtu)
            .address(spec.mac.to_vec())
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|source| VxlanError::Netlink {
                op: format!(
                    "create VXLAN device (vni {}, dstport {}, local {})",
                    spec.vni, spec.port, spec.local
                ),
                ifname: spec.name.clone(),
                source,
            })?;
        Ok(Ensured::Created)
    }

    /// The permanent FDB entries with a destination on `ifname` (what Calico programs).
    pub async fn fdb_entries(&self, ifname: &str) -> Result<Vec<FdbEntry>, VxlanError> {
        let mut out: Vec<FdbEntry> = self
            .permanent_entries(ifname, Some(AddressFamily::Bridge), "list FDB entries")
            .await?
            .into_iter()
            .map(|(mac, host)| FdbEntry { mac, host })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The permanent neighbour entries on `ifname`.
    pub async fn permanent_neighbours(&self, ifname: &str) -> Result<Vec<NeighEntry>, VxlanError> {
        let mut out: Vec<NeighEntry> = self
            .permanent_entries(ifname, None, "list neighbours")
            .await?
            .into_iter()
            .map(|(mac, ip)| NeighEntry { ip, mac })
            .collect();
        out.sort();
        Ok(out)
    }

    /// (MAC, destination) of the permanent neighbour-table entries on `ifname`: the FDB with
    /// `family` Bridge, the IP neighbours without a family filter.
    async fn permanent_entries(
        &self,
        ifname: &str,
        family: Option<AddressFamily>,
        op: &str,
    ) -> Result<Vec<([u8; 6], IpAddr)>, VxlanError> {
        let link = self.require_link(ifname).await?;
        let mut req = self.handle.neighbours().get();
        if let Some(f) = family {
            req = req.set_address_family(f);
        }
        let msgs: Vec<NeighbourMessage> =
            req.execute()
                .try_collect()
                .await
                .map_err(|source| VxlanError::Netlink {
                    op: op.into(),
                    ifname: ifname.to_owned(),
                    source,
                })?;
        let mut out = Vec::new();
        for m in msgs.iter().filter(|m| {
            m.header.ifindex == link.index && m.header.state == NeighbourState::Permanent
        }) {
            let mut mac = None;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                    NeighbourAttribute::Destination(d) => dst = ip_of(d),
                    _ => {}
                }
            }
            if let (Some(mac), Some(dst)) = (mac, dst) {
                out.push((mac, dst));
            }
        }
        Ok(out)
    }

    /// Adds or replaces the FDB entry `mac dst host` on `ifname`.
    pub async fn set_fdb(&self, ifname: &str, e: &FdbEntry) -> Result<(), VxlanError> {
        let link = self.require_link(ifname).await?;
        self.handle
            .neighbours()
            .add_bridge(link.index, &e.mac)
            .flags(NeighbourFlags::Own)
            .destination(e.host)
            .replace()
            .execute()
            .await
            .map_err(|source| VxlanError::Netlink {
                op: format!("set FDB entry {} dst {}", format_mac(&e.mac), e.host),
                ifname: ifname.to_owned(),
                source,
            })
    }

    /// Deletes the FDB entry; `Ok(false)` if it was not there.
    pub async fn delete_fdb(&self, ifname: &str, e: &FdbEntry) -> Result<bool, VxlanError> {
        let link = self.require_link(ifname).await?;
        match self
            .handle
            .neighbours()
            .del(fdb_message(link.index, e))
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(err) if is_not_found(&err) => Ok(false),
            Err(source) => Err(VxlanError::Netlink {
                op: format!("delete FDB entry {} dst {}", format_mac(&e.mac), e.host),
                ifname: ifname.to_owned(),
                source,
            }),
        }
    }

    /// Adds or replaces the permanent neighbour entry `ip lladdr mac` on `ifname`.
    pub async fn set_neighbour(&self, ifname: &str, e: &NeighEntry) -> Result<(), VxlanError> {
        let link = self.require_link(ifname).await?;
        self.handle
            .neighbours()
            .add(link.index, e.ip)
            .link_layer_address(&e.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|source| VxlanError::Netlink {
                op: format!("set neighbour {} lladdr {}", e.ip, format_mac(&e.mac)),
                ifname: ifname.to_owned(),
                source,
            })
    }

    /// Deletes the neighbour entry; `Ok(false)` if it was not there.
    pub async fn delete_neighbour(&self, ifname: &str, e: &NeighEntry) -> Result<bool, VxlanError> {
        let link = self.require_link(ifname).await?;
        match self
            .handle
            .neighbours()
            .del(neigh_message(link.index, e))
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(err) if is_not_found(&err) => Ok(false),
            Err(source) => Err(VxlanError::Netlink {
                op: format!("delete neighbour {}", e.ip),
                ifname: ifname.to_owned(),
                source,
            }),
        }
    }

    /// Programs the FDB and neighbour entries of one remote VTEP.
    pub async fn set_vtep(&self, ifname: &str, v: &Vtep) -> Result<(), VxlanError> {
        self.set_fdb(
            ifname,
            &FdbEntry {
                mac: v.mac,
                host: v.host,
            },
        )
        .await?;
        self.set_neighbour(
            ifname,
            &NeighEntry {
                ip: v.tunnel,
                mac: v.mac,
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_family_destinations_parse_as_addresses() {
        assert_eq!(
            ip_of(&NeighbourAddress::Other(vec![192, 168, 34, 12])),
            Some("192.168.34.12".parse().unwrap())
        );
        let v6: Ipv6Addr = "fd00::12".parse().unwrap();
        assert_eq!(
            ip_of(&NeighbourAddress::Other(v6.octets().to_vec())),
            Some(IpAddr::V6(v6))
        );
        assert_eq!(ip_of(&NeighbourAddress::Other(vec![1, 2, 3])), None);
    }

    #[test]
    fn delete_messages_name_the_entry() {
        let f = fdb_message(
            7,
            &FdbEntry {
                mac: [0x66; 6],
                host: "192.168.34.12".parse().unwrap(),
            },
        );
        assert_eq!(f.header.family, AddressFamily::Bridge);
        assert_eq!(f.header.flags, NeighbourFlags::Own);
        assert!(
            f.attributes
                .contains(&NeighbourAttribute::LinkLayerAddress(vec![0x66; 6]))
        );
        let n = neigh_message(
            7,
            &NeighEntry {
                ip: "fd00::1".parse().unwrap(),
                mac: [0x66; 6],
            },
        );
        assert_eq!(n.header.family, AddressFamily::Inet6);
    }
}
