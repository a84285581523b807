//! Interface addresses (a workload's /32 and /128).

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use crate::conn::{Netlink, is_not_found};
use crate::link::LinkError;

/// Errors changing addresses.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{op} address {addr} on {ifname} failed")]
    Netlink {
        op: &'static str,
        addr: IpNet,
        ifname: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("listing addresses of {ifname} failed")]
    List {
        ifname: String,
        #[source]
        source: rtnetlink::Error,
    },
}

impl Netlink {
    /// Adds `addr` (with its prefix length, e.g. `192.168.166.128/32`) to `ifname`; replace
    /// semantics, so adding it twice is fine.
    pub async fn add_address(&self, ifname: &str, addr: IpNet) -> Result<(), AddrError> {
        let link = self.require_link(ifname).await?;
        self.handle
            .address()
            .add(link.index, addr.addr(), addr.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(|source| AddrError::Netlink {
                op: "add",
                addr,
                ifname: ifname.to_owned(),
                source,
            })
    }

    /// Removes `addr` from `ifname`; returns false if it (or the interface) was not there.
    pub async fn delete_address(&self, ifname: &str, addr: IpNet) -> Result<bool, AddrError> {
        let Some(link) = self.link(ifname).await? else {
            return Ok(false);
        };
        let found = self
            .address_messages(link.index, ifname)
            .await?
            .into_iter()
            .find(|m| message_net(m) == Some(addr));
        let Some(msg) = found else {
            return Ok(false);
        };
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(AddrError::Netlink {
                op: "delete",
                addr,
                ifname: ifname.to_owned(),
                source,
            }),
        }
    }

    /// Addresses on `ifname` (IPv4 and IPv6, link-local included).
    pub async fn addresses(&self, ifname: &str) -> Result<Vec<IpNet>, AddrError> {
        let link = self.require_link(ifname).await?;
        Ok(self
            .address_messages(link.index, ifname)
            .await?
            .iter()
            .filter_map(message_net)
            .collect())
    }

    async fn address_messages(
        &self,
        index: u32,
        ifname: &str,
    ) -> Result<Vec<AddressMessage>, AddrError> {
        let all: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|source| AddrError::List {
                ifname: ifname.to_owned(),
                source,
            })?;
        // The filter is applied in user space by rtnetlink; keep our own check too.
        Ok(all
            .into_iter()
            .filter(|m| m.header.index == index)
            .collect())
    }
}

fn message_net(m: &AddressMessage) -> Option<IpNet> {
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
    let ip = m
        .attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })?;
    IpNet::new(ip, m.header.prefix_len).ok()
}
