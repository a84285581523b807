//! A netlink (rtnetlink) connection bound to one network namespace.
//!
//! A netlink socket belongs to the namespace of the thread that *created* it, forever. So
//! [`Netlink::connect_in`] creates the socket on a short-lived thread that entered the target
//! namespace, and then uses it from the caller's tokio runtime like any other socket: the
//! caller's threads never change namespace.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::Handle;

use crate::netns::{self, NetnsError};
use crate::route_batch::BatchSocket;

/// Errors opening a netlink connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("cannot open a netlink socket in network namespace {path}")]
    SocketIn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("Netlink::connect must be called from inside a tokio runtime")]
    NoRuntime,
}

/// A netlink connection. Cheap to clone (clones share the socket). The connection task runs
/// on the tokio runtime that was current when it was made.
#[derive(Clone, Debug)]
pub struct Netlink {
    pub(crate) handle: Handle,
    /// A second socket in the same namespace for route batches ([`crate::route_batch`]).
    pub(crate) batch: Arc<BatchSocket>,
    netns: Option<PathBuf>,
}

impl Netlink {
    /// A connection in the calling thread's namespace.
    pub fn connect() -> Result<Netlink, ConnectError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ConnectError::NoRuntime)?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(ConnectError::Socket)?;
        let batch = BatchSocket::open().map_err(ConnectError::Socket)?;
        rt.spawn(conn);
        Ok(Netlink {
            handle,
            batch: Arc::new(batch),
            netns: None,
        })
    }

    /// A connection in the namespace at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`).
    pub fn connect_in(path: &Path) -> Result<Netlink, ConnectError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ConnectError::NoRuntime)?;
        let rt2 = rt.clone();
        let (conn, handle, batch) = netns::run_in(path, move || {
            // The socket is registered with the caller's runtime but created in `path`.
            let _guard = rt2.enter();
            let (conn, handle, _) = rtnetlink::new_connection()?;
            Ok::<_, std::io::Error>((conn, handle, BatchSocket::open()?))
        })?
        .map_err(|source| ConnectError::SocketIn {
            path: path.to_owned(),
            source,
        })?;
        rt.spawn(conn);
        Ok(Netlink {
            handle,
            batch: Arc::new(batch),
            netns: Some(path.to_owned()),
        })
    }

    /// The namespace this connection was opened in (`None`: the caller's at the time).
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// The raw rtnetlink handle, for operations this crate does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Every link (index, name) in this namespace.
    pub(crate) async fn link_names(&self) -> Result<Vec<(u32, String)>, rtnetlink::Error> {
        let links: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await?;
        Ok(links
            .into_iter()
            .map(|l| {
                let name = l
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                (l.header.index, name)
            })
            .collect())
    }
}

/// True if a netlink error means "no such object" (deleting what is gone is fine).
pub(crate) fn is_not_found(e: &rtnetlink::Error) -> bool {
    errno(e).is_some_and(|code| {
        [libc::ENOENT, libc::ESRCH, libc::ENODEV, libc::EADDRNOTAVAIL].contains(&code)
    })
}

/// The errno carried by a netlink error, if any.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}
